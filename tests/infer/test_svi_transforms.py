"""SVI inside the caller's own JAX transformations: ``init``, ``update``,
``stable_update``, ``evaluate`` and ``get_params`` under ``jax.jit``,
``jax.vmap`` and ``lax.scan``, compared with the same steps taken at top
level, all under ``jax.checking_leaks()``."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.infer import SVI, Trace_ELBO
from probnn.infer.autoguide import AutoNormal

pytestmark = pytest.mark.check_leaks

X = jnp.linspace(-1.0, 1.0, 16)
Y = 1.5 * X + 0.3


def line_model(x, y=None):
    w = probnn.sample("w", dist.Normal(0.0, 2.0))
    b = probnn.sample("b", dist.Normal(0.0, 2.0))
    with probnn.plate("N", x.shape[0]):
        probnn.sample("y", dist.Normal(w * x + b, 0.5), obs=y)


def line_guide(x, y=None):
    loc = probnn.param("loc", jnp.zeros(2))
    scale = probnn.param("scale", jnp.ones(2), constraint=dist.constraints.positive)
    probnn.sample("w", dist.Normal(loc[0], scale[0]))
    probnn.sample("b", dist.Normal(loc[1], scale[1]))


_STEPS: dict = {}


def steps_at_top_level(svi, key, num_steps, *args, stable=False):
    """Reference: init and jitted steps called one by one from Python."""
    state = svi.init(key, *args)
    if (svi, stable) not in _STEPS:
        _STEPS[svi, stable] = jax.jit(svi.stable_update if stable else svi.update)
    step = _STEPS[svi, stable]
    losses = []
    for _ in range(num_steps):
        state, loss = step(state, *args)
        losses.append(loss)
    return state, jnp.stack(losses)


def assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def test_init_then_scanned_updates_inside_one_jit():
    svi = SVI(line_model, line_guide, optax.adam(0.05), Trace_ELBO())

    @jax.jit
    def train(key, x, y):
        state = svi.init(key, x, y)

        def body(state, _):
            return svi.update(state, x, y)

        state, losses = jax.lax.scan(body, state, None, length=30)
        return state, losses, svi.get_params(state), svi.evaluate(state, x, y)

    key = jax.random.PRNGKey(3)
    state, losses, params, final = train(key, X, Y)
    ref_state, ref_losses = steps_at_top_level(svi, key, 30, X, Y)
    assert_trees_close(losses, ref_losses)
    assert_trees_close(state, ref_state)
    assert_trees_close(params, svi.get_params(ref_state))
    np.testing.assert_allclose(final, svi.evaluate(ref_state, X, Y), rtol=1e-5)
    assert isinstance(svi.get_params(state)["scale"], jax.Array)  # usable after
    assert float(losses[-1]) < float(losses[0])


def test_vmap_over_seeds_inside_jit_matches_each_seed_alone():
    svi = SVI(line_model, line_guide, optax.adam(0.05), Trace_ELBO())

    def train(key):
        state = svi.init(key, X, Y)
        state, losses = jax.lax.scan(
            lambda s, _: svi.stable_update(s, X, Y), state, None, length=10
        )
        return state, losses

    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    states, losses = jax.jit(jax.vmap(train))(keys)
    assert losses.shape == (2, 10)
    for i in range(2):
        ref_state, ref_losses = steps_at_top_level(svi, keys[i], 10, X, Y, stable=True)
        lane = jax.tree.map(lambda leaf, i=i: leaf[i], states)
        assert_trees_close(losses[i], ref_losses)
        assert_trees_close(lane, ref_state)
    # different seeds, different noise: the runs differ
    assert not np.allclose(losses[0], losses[1])
    # vmapped init, then vmapped (jitted) steps, then vmapped get_params
    states = jax.vmap(lambda k: svi.init(k, X, Y))(keys)
    states, _ = jax.jit(jax.vmap(lambda s: svi.update(s, X, Y)))(states)
    assert jax.jit(jax.vmap(svi.get_params))(states)["loc"].shape == (2, 2)


class Net(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(2, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, momentum=0.8, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x, train=True):
        h = nnx.relu(self.norm(self.hidden(x), use_running_average=not train))
        return self.out(self.drop(h, deterministic=not train))[..., 0]


NET = Net(nnx.Rngs(0))
XS = jax.random.normal(jax.random.PRNGKey(1), (32, 2)) * 2.0 + 1.0
YS = XS[:, 0] - 2.0 * XS[:, 1]


def net_model(x, y=None):
    mean = probnn.module("net", NET)(x)
    noise = probnn.param("noise", 1.0, constraint=dist.constraints.positive)
    with probnn.plate("data", x.shape[0]):
        probnn.sample("y", dist.Normal(mean, noise), obs=y)


def net_guide(x, y=None):
    pass


def test_nnx_batchnorm_and_dropout_network_trains_inside_jit():
    svi = SVI(net_model, net_guide, optax.adam(0.01), Trace_ELBO())

    @jax.jit
    def train(key, x, y):
        state = svi.init(key, x, y)
        return jax.lax.scan(lambda s, _: svi.update(s, x, y), state, None, length=20)

    key = jax.random.PRNGKey(2)
    state, losses = train(key, XS, YS)
    ref_state, ref_losses = steps_at_top_level(svi, key, 20, XS, YS)
    assert_trees_close(losses, ref_losses, rtol=1e-4)
    assert_trees_close(state, ref_state, rtol=1e-4, atol=1e-5)
    # the BatchNorm statistics moved from their initial values
    initial = svi.init(key, XS, YS).mutable_state["net$state"]["norm"]["mean"]
    moved = state.mutable_state["net$state"]["norm"]["mean"]
    assert float(jnp.max(jnp.abs(moved - initial))) > 0.1


def many_site_model(y):
    locs = [probnn.sample(f"z{i}", dist.Normal(0.0, 1.0)) for i in range(5)]
    with probnn.plate("N", y.shape[0]):
        probnn.sample("y", dist.Normal(sum(locs), 1.0), obs=y)


def test_autoguide_with_packed_params_inside_jit_and_vmap():
    y = jnp.arange(6.0)
    key = jax.random.PRNGKey(4)
    guide = AutoNormal(many_site_model)
    svi = SVI(many_site_model, guide, optax.adam(0.05), Trace_ELBO())
    # the prototype run is kept by the guide, so it needs concrete values:
    # with traced arguments it must have run outside first
    with pytest.raises(ValueError, match="AutoNormal keeps the values of a first"):
        jax.jit(lambda k: svi.init(k, y))(key)
    assert guide.prototype_trace is None
    # concrete arguments inside jit set it up with concrete values
    jax.jit(lambda: svi.get_params(svi.init(key, y)))()
    assert not any(
        isinstance(leaf, jax.core.Tracer)
        for leaf in jax.tree.leaves(guide.prototype_trace)
    )

    @jax.jit
    def train(key, y):
        state = svi.init(key, y)
        return jax.lax.scan(lambda s, _: svi.update(s, y), state, None, length=15)

    state, losses = train(key, y)
    ref_state, ref_losses = steps_at_top_level(svi, key, 15, y)
    assert type(state.optim_state[1][0]).__name__ == "PackedDict"
    assert_trees_close(losses, ref_losses)
    assert_trees_close(svi.get_params(state), svi.get_params(ref_state))

    keys = jnp.stack([key, jax.random.PRNGKey(5)])
    _, lane_losses = jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, y)
    assert_trees_close(lane_losses[0], ref_losses)
    assert not np.allclose(lane_losses[1], ref_losses)


def bounded_guide(x, y=None):
    # bounds computed with jnp: arrays, traced inside a jit
    bounds = dist.constraints.interval(jnp.array(-3.0), jnp.array(3.0))
    loc = probnn.param("loc", jnp.zeros(2), constraint=bounds)
    probnn.sample("w", dist.Normal(loc[0], 0.1))
    probnn.sample("b", dist.Normal(loc[1], 0.1))


def test_param_bounds_computed_by_jnp_do_not_leak_from_init():
    svi = SVI(line_model, bounded_guide, optax.adam(0.05), Trace_ELBO())
    # SVI.init compiles its run of the model: the bijection's bounds come
    # back concrete instead of as tracers of that compilation
    result = svi.run(jax.random.PRNGKey(0), 200, X, Y, progress_bar=False)
    np.testing.assert_allclose(result.params["loc"], [1.5, 0.3], atol=0.15)
    # inside the caller's jit they are tracers of the caller's program,
    # which SVI cannot keep for later steps: a clear error naming the site
    with pytest.raises(ValueError, match=r"param sites \['loc'\] depend on"):
        jax.jit(lambda k: svi.init(k, X, Y))(jax.random.PRNGKey(0))
