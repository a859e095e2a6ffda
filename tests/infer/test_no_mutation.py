"""Handlers, Predictive and SVI never write into dicts the caller passed, and
Predictive does not run trained params beside freshly initialised state."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.handlers import seed, substitute, trace
from probnn.infer import SVI, Predictive, Trace_ELBO
from probnn.infer.util import log_density

pytestmark = pytest.mark.check_leaks


class Net(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(2, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, momentum=0.5, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x, train=True):
        h = nnx.relu(self.norm(self.hidden(x), use_running_average=not train))
        return self.out(h)[..., 0]


NET = Net(nnx.Rngs(0))
X = jax.random.normal(jax.random.PRNGKey(1), (48, 2)) * 2.0 + 3.0
Y = X[:, 0] - X[:, 1]


def model(x, y=None, train=True):
    mean = probnn.module("net", NET)(x, train=train)
    probnn.deterministic("mean", mean)
    with probnn.plate("data", x.shape[0]):
        probnn.sample("y", dist.Normal(mean, 0.1), obs=y)


def no_guide(x, y=None, train=True):
    pass


@pytest.fixture(scope="module")
def trained():
    svi = SVI(model, no_guide, optax.adam(0.02), Trace_ELBO())
    return svi.run(jax.random.PRNGKey(0), 300, X, Y, progress_bar=False)


def snapshot(tree):
    """(structure, the leaf objects, their values) of a pytree."""
    leaves = jax.tree.leaves(tree)
    return jax.tree.structure(tree), leaves, [np.asarray(leaf) for leaf in leaves]


def assert_untouched(tree, before):
    structure, leaves, values = before
    assert jax.tree.structure(tree) == structure
    after = jax.tree.leaves(tree)
    assert all(a is b for a, b in zip(after, leaves)), "a leaf was replaced"
    for a, v in zip(after, values):
        np.testing.assert_array_equal(np.asarray(a), v)


def test_predictive_leaves_the_callers_state_dicts_alone(trained):
    state = trained.state.mutable_state
    before = snapshot(state)
    params = {**trained.params, **state}
    predictive = Predictive(model, params=params, num_samples=2)
    # in training mode the model updates the BatchNorm statistics it is given
    predictive(jax.random.PRNGKey(1), X)
    assert_untouched(state, before)
    assert_untouched(trained.state, snapshot(trained.state))
    # the same dicts serve a second Predictive, in eval mode, and its
    # predictions are those of the trained network written back into NNX
    again = Predictive(model, params={**trained.params, **state}, num_samples=1)
    mean = again(jax.random.PRNGKey(2), X, train=False)["mean"][0]
    network = probnn.nn.to_nnx("net", NET, trained.params, state)
    np.testing.assert_allclose(mean, network(X, train=False), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, Y, atol=1.0)
    assert_untouched(state, before)


def test_predictive_without_the_trained_state_is_an_error(trained):
    predictive = Predictive(model, params=trained.params, num_samples=1)
    with pytest.raises(ValueError) as error:
        predictive(jax.random.PRNGKey(1), X, train=False)
    message = str(error.value)
    assert "'net$state'" in message and "module 'net'" in message
    assert "BatchNorm statistics" in message
    assert "params={**result.params, **result.state.mutable_state}" in message
    # with a guide too (its params are the model's here)
    with pytest.raises(ValueError, match=r"mutable site 'net\$state'"):
        Predictive(model, guide=no_guide, params=trained.params, num_samples=1)(
            jax.random.PRNGKey(1), X, train=False
        )
    # the initial statistics, asked for explicitly, give other predictions
    fresh = {**trained.params, "net$state": None}
    out = Predictive(model, params=fresh, num_samples=1)(
        jax.random.PRNGKey(1), X, train=False
    )["mean"][0]
    assert float(jnp.mean(jnp.abs(out - Y))) > 2.0
    # without params (prior predictive) the state is the initial one
    prior = Predictive(model, num_samples=2)(jax.random.PRNGKey(1), X, train=False)
    assert prior["y"].shape == (2, X.shape[0])


def counting_model():
    stats = probnn.mutable("stats", {"inner": {"n": jnp.zeros(())}, "calls": 0})
    stats["inner"]["n"] = stats["inner"]["n"] + 1.0
    stats["calls"] = stats["calls"] + 1
    return probnn.sample("x", dist.Normal(0.0, 1.0), obs=0.5)


def test_substitute_and_log_density_hand_the_model_copies_of_state():
    given = {"inner": {"n": jnp.array(5.0)}, "calls": 2}
    data = {"stats": given}
    tr = trace(substitute(counting_model, data=data)).get_trace()
    assert float(tr["stats"]["value"]["inner"]["n"]) == 6.0
    assert tr["stats"]["value"]["calls"] == 3
    assert data == {"stats": given}
    assert float(given["inner"]["n"]) == 5.0 and given["calls"] == 2
    log_density(counting_model, (), {}, data)
    assert float(given["inner"]["n"]) == 5.0 and given["calls"] == 2
    # substitute_fn's values too
    trace(substitute(counting_model, substitute_fn=lambda m: data.get(m["name"])))()
    assert float(given["inner"]["n"]) == 5.0


def test_svi_steps_leave_the_given_state_alone_and_guide_state_reaches_model():
    def shared_model():
        stats = probnn.mutable("stats", {"inner": {"n": jnp.zeros(())}})
        stats["inner"]["n"] = stats["inner"]["n"] + 1.0
        loc = probnn.sample("z", dist.Normal(0.0, 1.0))
        probnn.sample("x", dist.Normal(loc, 1.0), obs=0.5)

    def shared_guide():
        stats = probnn.mutable("stats", {"inner": {"n": jnp.zeros(())}})
        stats["inner"]["n"] = stats["inner"]["n"] + 10.0
        probnn.sample("z", dist.Normal(probnn.param("loc", 0.0), 1.0))

    svi = SVI(shared_model, shared_guide, optax.sgd(0.1), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0))
    # init ran the guide, then the model, on the initial state
    assert float(state.mutable_state["stats"]["inner"]["n"]) == 11.0
    before = snapshot(state)
    new_state, _ = svi.update(state)  # eager: no jit rebuilding the dicts
    svi.evaluate(state)
    assert_untouched(state, before)
    assert float(new_state.mutable_state["stats"]["inner"]["n"]) == 22.0
    stepped, _ = jax.jit(svi.update)(new_state)
    assert float(stepped.mutable_state["stats"]["inner"]["n"]) == 33.0


def test_seeded_model_run_with_user_state_inside_jit_leaks_nothing(trained):
    state = trained.state.mutable_state
    before = snapshot(state)

    @jax.jit
    def run(key):
        data = {**trained.params, **state}
        return seed(substitute(model, data=data), key)(X, train=True)

    run(jax.random.PRNGKey(0))
    assert_untouched(state, before)
    # the dicts are still plain arrays: a later eager use works
    Predictive(model, params={**trained.params, **state}, num_samples=1)(
        jax.random.PRNGKey(3), X, train=False
    )
