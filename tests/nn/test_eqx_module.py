"""Equinox modules through ``probnn.module``: one param site with the
module's arrays, trained by SVI, dropout keys from the enclosing seed,
shared inside data plates, and clear errors for what the bridge does not
take (stateful layers, per-member initialisation)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.handlers import seed, substitute, trace
from probnn.infer import SVI, Trace_ELBO

eqx = pytest.importorskip("equinox")

X = jax.random.normal(jax.random.PRNGKey(0), (40, 3))
Y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3


class Noisy(eqx.Module):
    linear: eqx.nn.Linear
    drop: eqx.nn.Dropout

    def __init__(self, key):
        self.linear = eqx.nn.Linear(3, 1, key=key)
        self.drop = eqx.nn.Dropout(0.5)

    def __call__(self, x, key=None):
        return self.drop(jax.vmap(self.linear)(x), key=key)[:, 0]


def test_linear_module_trains_and_is_shared_in_a_data_plate():
    net = eqx.nn.Linear(3, 1, key=jax.random.PRNGKey(1))

    def model(x, y=None):
        with probnn.plate("data", x.shape[0]):
            mean = jax.vmap(probnn.module("net", net))(x)[:, 0]
            probnn.sample("y", dist.Normal(mean, 0.1), obs=y)

    tr = trace(seed(model, 0)).get_trace(X)
    params = tr["net$params"]["value"]
    assert params.weight.shape == (1, 3)  # one network, not one per row
    svi = SVI(model, lambda x, y=None: None, optax.adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 500, X, Y, progress_bar=False)
    trained = result.params["net$params"]
    np.testing.assert_allclose(trained.weight[0], [1.0, -2.0, 0.5], atol=0.05)
    np.testing.assert_allclose(trained.bias, [0.3], atol=0.05)
    assert net.weight.shape == (1, 3) and not np.allclose(net.weight, trained.weight)


def test_dropout_key_from_the_seed_when_asked_with_key_true():
    noisy = Noisy(jax.random.PRNGKey(2))

    def model(x):
        return probnn.module("noisy", noisy)(x, key=True)

    first, again = seed(model, 0)(X), seed(model, 0)(X)
    other = seed(model, 1)(X)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.any(first == 0.0)
    with pytest.raises(ValueError, match="noisy.*random key.*seed"):
        model(X)


def test_substituted_params_are_used():
    net = eqx.nn.Linear(3, 2, key=jax.random.PRNGKey(3))

    def model(x):
        return jax.vmap(probnn.module("net", net))(x)

    params = eqx.filter(net, eqx.is_inexact_array)
    doubled = jax.tree.map(lambda a: 2 * a, params)
    out = substitute(seed(model, 0), data={"net$params": doubled})(X)
    np.testing.assert_allclose(out, 2 * jax.vmap(net)(X), rtol=1e-5)


def test_stateful_layers_and_members_are_clear_errors():
    stateful, _ = eqx.nn.make_with_state(eqx.nn.BatchNorm)(
        3, axis_name="batch", mode="batch"
    )
    with pytest.raises(ValueError, match="'bn'.*stateful.*eqx_module"):
        seed(lambda: probnn.module("bn", stateful), 0)()

    net = eqx.nn.Linear(3, 1, key=jax.random.PRNGKey(4))

    def ensemble(x):
        with probnn.plate("members", 3):
            return probnn.module("ens", net, members="members")(x)

    with pytest.raises(ValueError, match="'ens'.*eager equinox module.*start equal"):
        seed(ensemble, 0)(X[0])
