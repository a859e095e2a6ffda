"""``probnn.optim.Minimize``: one SVI update is a whole BFGS minimisation,
checked against closed-form least squares."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.infer import SVI, Trace_ELBO
from probnn.infer.autoguide import AutoDelta, AutoLaplaceApproximation
from probnn.optim import Minimize

X = jnp.linspace(0.0, 10.0, 50)
Y = 3.0 * X + 2.0 + 0.3 * jnp.sin(7.0 * X)


def regression(x, y):
    a = probnn.sample("a", dist.Normal(0.0, 10.0))
    b = probnn.sample("b", dist.Normal(0.0, 10.0))
    with probnn.plate("N", y.shape[0]):
        probnn.sample("obs", dist.Normal(a + b * x, 0.1), obs=y)


def least_squares(prior_scale=10.0, noise=0.1):
    # MAP of the Gaussian regression: ridge with penalty (noise / prior)^2
    design = np.stack([np.ones_like(X), np.asarray(X)], axis=1)
    penalty = (noise / prior_scale) ** 2 * np.eye(2)
    return np.linalg.solve(design.T @ design + penalty, design.T @ np.asarray(Y))


@pytest.mark.parametrize("guide", [AutoDelta, AutoLaplaceApproximation])
def test_one_update_reaches_the_map(guide):
    svi = SVI(regression, guide(regression), Minimize(), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), X, Y)
    state, loss = jax.jit(svi.update)(state, X, Y)
    assert int(state.optim_state[0]) == 1
    median = svi.guide.median(svi.get_params(state))
    np.testing.assert_allclose([median["a"], median["b"]], least_squares(), atol=1e-3)
    assert np.isfinite(float(loss))


def test_maximum_likelihood_with_an_empty_guide_and_many_scalar_params():
    # four or more scalar params are stored packed in the state
    def model(x, y):
        coefs = [probnn.param(f"c{i}", 0.0) for i in range(4)]
        mean = sum(c * x**i for i, c in enumerate(coefs))
        with probnn.plate("N", y.shape[0]):
            probnn.sample("obs", dist.Normal(mean, 1.0), obs=y)

    x = jnp.linspace(-1.0, 1.0, 30)
    y = 1.0 - 2.0 * x + 0.5 * x**3
    svi = SVI(model, lambda x, y: None, Minimize(), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), x, y)
    state, _ = svi.update(state, x, y)
    params = svi.get_params(state)
    np.testing.assert_allclose(
        [params[f"c{i}"] for i in range(4)], [1.0, -2.0, 0.0, 0.5], atol=1e-3
    )


def test_standalone_interface_and_errors():
    opt = Minimize()
    state = opt.init({"w": jnp.array([3.0, -1.0])})
    (loss, aux), state = opt.eval_and_update(
        lambda p: (jnp.sum((p["w"] - jnp.array([1.0, 2.0])) ** 2), None), state
    )
    np.testing.assert_allclose(opt.get_params(state)["w"], [1.0, 2.0], atol=1e-5)
    assert aux is None and float(loss) < 1e-8 and int(state[0]) == 1
    with pytest.raises(TypeError, match="eval_and_update"):
        opt.update({"w": jnp.zeros(2)}, state)
    with pytest.raises(ValueError, match="BFGS"):
        Minimize(method="Nelder-Mead")


def test_mutable_state_is_an_error_naming_the_site():
    def model():
        counter = probnn.mutable("counter", {"n": jnp.zeros(())})
        counter["n"] = counter["n"] + 1.0
        probnn.param("w", 0.0)

    svi = SVI(model, lambda: None, Minimize(), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="counter"):
        svi.update(state)
