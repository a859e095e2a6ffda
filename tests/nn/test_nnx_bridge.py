"""Tests of the Flax NNX bridge against the eager modules and hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from probnn.nn.nnx import NNXBridge, _stream_seed, write_back

GRAPH_MODES = pytest.mark.parametrize("graph", [True, False], ids=["graph", "tree"])


class MLP(nnx.Module):
    def __init__(self, rngs, din=3, dhidden=4, dout=2, rate=0.5):
        self.l1 = nnx.Linear(din, dhidden, rngs=rngs)
        self.bn = nnx.BatchNorm(dhidden, rngs=rngs)
        self.do = nnx.Dropout(rate, rngs=rngs)
        self.l2 = nnx.Linear(dhidden, dout, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.do(nnx.relu(self.bn(self.l1(x)))))


class Plain(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(3, 5, rngs=rngs)
        self.l2 = nnx.Linear(5, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


class Tracker(nnx.Module):
    """Keeps the last mean activation in a user Variable (no stop_gradient)."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 2, rngs=rngs)
        self.last_mean = nnx.Variable(jnp.zeros(2))

    def __call__(self, x):
        out = self.linear(x)
        self.last_mean[...] = out.mean(0)
        return out


class TwoDropouts(nnx.Module):
    def __init__(self, rngs):
        self.first = nnx.Dropout(0.5, rngs=rngs)
        self.second = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.first(x), self.second(x)


class Tied(nnx.Module):
    """Uses one Linear twice (a shared reference)."""

    def __init__(self, rngs):
        self.first = nnx.Linear(3, 3, rngs=rngs)
        self.second = self.first

    def __call__(self, x):
        return self.second(jnp.tanh(self.first(x)))


def mlp(seed=0, **kwargs):
    return MLP(nnx.Rngs(seed, dropout=seed + 100), **kwargs)


def inputs(n=6, d=3, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, d))


def bridge_for(module, graph=None, name="net"):
    return NNXBridge(name, module, None, (), {}, graph=graph)


def keyed(key):
    return lambda: key


def no_seed():
    raise ValueError("prng_key needs a random key: run under probnn.handlers.seed")


def member(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def assert_trees_close(a, b, **kwargs):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kwargs), a, b)


@GRAPH_MODES
def test_init_returns_the_modules_own_values(graph):
    module = mlp()
    params, state = bridge_for(module, graph).init(jax.random.key(9))
    expected_params = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    expected_state = nnx.to_pure_dict(nnx.state(module, nnx.BatchStat))
    assert_trees_close(params, expected_params, rtol=0, atol=0)
    assert_trees_close(state, expected_state, rtol=0, atol=0)
    assert set(params) == {"l1", "bn", "l2"}
    assert set(state) == {"bn"} and set(state["bn"]) == {"mean", "var"}
    assert bridge_for(Plain(nnx.Rngs(0)), graph).init(None)[1] == {}


@GRAPH_MODES
def test_apply_with_init_params_equals_calling_the_module(graph):
    module = Plain(nnx.Rngs(0))
    bridge = bridge_for(module, graph)
    params, state = bridge.init(None)
    x = inputs()
    out, new_state, _ = jax.jit(lambda p: bridge.apply(p, state, None, (x,), {}))(
        params
    )
    np.testing.assert_allclose(out, module(x), rtol=1e-6)
    assert new_state == {}


@GRAPH_MODES
def test_batch_stats_update_in_training_mode(graph):
    module = mlp()
    bridge = bridge_for(module, graph)
    params, state = bridge.init(None)
    x = inputs()
    key = jax.random.key(3)
    out, new_state, _ = jax.jit(lambda p, s: bridge.apply(p, s, keyed(key), (x,), {}))(
        params, state
    )

    # The momentum rule by hand: running = m * running + (1 - m) * batch.
    hidden = x @ params["l1"]["kernel"] + params["l1"]["bias"]
    momentum = module.bn.momentum
    expected_mean = momentum * state["bn"]["mean"] + (1 - momentum) * hidden.mean(0)
    expected_var = momentum * state["bn"]["var"] + (1 - momentum) * hidden.var(0)
    np.testing.assert_allclose(new_state["bn"]["mean"], expected_mean, atol=1e-6)
    np.testing.assert_allclose(new_state["bn"]["var"], expected_var, atol=1e-6)
    assert not np.allclose(new_state["bn"]["mean"], state["bn"]["mean"])

    # The eager module in train mode, its dropout stream given the key the
    # bridge derives, computes the same output and statistics.
    eager = nnx.clone(module)
    eager.do.rngs.key[...] = jax.random.fold_in(key, _stream_seed(("do", "rngs")))
    eager.do.rngs.count[...] = 0
    np.testing.assert_allclose(out, eager(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state["bn"]["mean"], eager.bn.mean[...], atol=1e-6)
    np.testing.assert_allclose(new_state["bn"]["var"], eager.bn.var[...], atol=1e-6)
    # The bridge did not touch the module it was given.
    assert_trees_close(nnx.to_pure_dict(nnx.state(module, nnx.BatchStat)), state)


@GRAPH_MODES
def test_eval_mode_uses_running_statistics_and_needs_no_key(graph):
    module = mlp()
    module.bn.mean[...] = jnp.array([0.5, -1.0, 0.0, 2.0])
    module.bn.var[...] = jnp.array([2.0, 0.5, 1.0, 3.0])
    module.eval()
    bridge = bridge_for(module, graph)
    params, state = bridge.init(None)
    x = inputs()
    out, new_state, _ = bridge.apply(params, state, no_seed, (x,), {})
    assert_trees_close(new_state, state, rtol=0, atol=0)

    hidden = x @ params["l1"]["kernel"] + params["l1"]["bias"]
    bn = params["bn"]
    normed = (hidden - state["bn"]["mean"]) / jnp.sqrt(state["bn"]["var"] + 1e-5)
    hidden = jax.nn.relu(normed * bn["scale"] + bn["bias"])
    expected = hidden @ params["l2"]["kernel"] + params["l2"]["bias"]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, module(x), rtol=1e-6)


def test_switching_to_eval_view_keeps_the_sites_values():
    module = mlp()
    bridge = bridge_for(module)
    params, state = bridge.init(None)
    x = inputs()
    _, trained_state, _ = bridge.apply(
        params, state, keyed(jax.random.key(0)), (x,), {}
    )
    bridge.check_same_graph(
        nnx.view(module, deterministic=True, use_running_average=True)
    )
    out1, after, _ = bridge.apply(params, trained_state, None, (x,), {})
    out2, _, _ = bridge.apply(params, trained_state, None, (x,), {})
    assert_trees_close(after, trained_state, rtol=0, atol=0)
    np.testing.assert_array_equal(out1, out2)
    # The same object switched in place: the site follows it back and forth.
    module.train()
    bridge.check_same_graph(module)
    with pytest.raises(ValueError, match="'dropout' at do.rngs"):
        bridge.apply(params, trained_state, None, (x,), {})
    module.eval()
    bridge.check_same_graph(module)
    np.testing.assert_array_equal(
        bridge.apply(params, trained_state, None, (x,), {})[0], out1
    )


@GRAPH_MODES
def test_dropout_masks_follow_the_key(graph):
    bridge = bridge_for(mlp(), graph)
    params, state = bridge.init(None)
    x = inputs(n=4)
    apply = jax.jit(lambda k: bridge.apply(params, state, keyed(k), (x,), {})[0])
    out_a, out_a_again = apply(jax.random.key(1)), apply(jax.random.key(1))
    out_b = apply(jax.random.key(2))
    np.testing.assert_array_equal(out_a, out_a_again)
    assert not np.allclose(out_a, out_b)
    # A raw uint32 key (what a seed handler gives) works like a typed one.
    np.testing.assert_array_equal(apply(jax.random.PRNGKey(1)), out_a)
    # A new bridge on an equal module reproduces the noise for the same key.
    other = bridge_for(mlp(), graph)
    again = jax.jit(lambda k: other.apply(params, state, keyed(k), (x,), {})[0])
    np.testing.assert_array_equal(again(jax.random.key(1)), out_a)


@GRAPH_MODES
def test_each_stream_gets_its_own_key(graph):
    bridge = bridge_for(TwoDropouts(nnx.Rngs(dropout=0)), graph)
    assert bridge.init(None) == ({}, {})
    first, second, _ = bridge.apply(
        {}, {}, keyed(jax.random.key(0)), (jnp.ones(64),), {}
    )
    assert set(np.unique(first)) == {0.0, 2.0}
    assert not np.array_equal(first, second)
    with pytest.raises(
        ValueError, match=r"'dropout' at first.rngs, 'dropout' at second"
    ):
        bridge.apply({}, {}, no_seed, (jnp.ones(4),), {})


@GRAPH_MODES
def test_missing_key_names_the_site_and_stream(graph):
    bridge = bridge_for(mlp(), graph, name="encoder")
    params, state = bridge.init(None)
    for key_fn in (no_seed, None):
        with pytest.raises(ValueError, match=r"'encoder'.*'dropout' at do\.rngs"):
            bridge.apply(params, state, key_fn, (inputs(),), {})
    # A module without RNG streams never asks for a key.
    plain = bridge_for(Plain(nnx.Rngs(0)), graph)
    plain.apply(*plain.init(None), no_seed, (inputs(),), {})


@GRAPH_MODES
def test_jit_grad_reaches_every_parameter(graph):
    bridge = bridge_for(mlp(), graph)
    params, state = bridge.init(None)
    x = inputs(n=8)

    def loss(p):
        out, new_state, _ = bridge.apply(p, state, keyed(jax.random.key(5)), (x,), {})
        return jnp.sum(out**2) + sum(jnp.sum(v) for v in jax.tree.leaves(new_state))

    grads = jax.jit(jax.grad(loss))(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        assert jnp.all(jnp.isfinite(grad)), path
        assert jnp.any(grad != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"

    # Central difference of one first-layer entry (float32, so loose).
    @jax.jit
    def loss_at(delta):
        kernel = params["l1"]["kernel"].at[0, 1].add(delta)
        return loss(dict(params, l1=dict(params["l1"], kernel=kernel)))

    numeric = (loss_at(1e-2) - loss_at(-1e-2)) / 2e-2
    np.testing.assert_allclose(grads["l1"]["kernel"][0, 1], numeric, rtol=2e-2)


@GRAPH_MODES
def test_user_variables_are_state_without_gradient(graph):
    module = Tracker(nnx.Rngs(0))
    bridge = bridge_for(module, graph)
    params, state = bridge.init(None)
    assert set(params) == {"linear"}
    assert set(state) == {"last_mean"}
    x = inputs()
    _, new_state, _ = bridge.apply(params, state, None, (x,), {})
    np.testing.assert_allclose(new_state["last_mean"], module(x).mean(0), rtol=1e-6)

    def state_sum(p):
        return jnp.sum(bridge.apply(p, state, None, (x,), {})[1]["last_mean"])

    for grad in jax.tree.leaves(jax.jit(jax.grad(state_sum))(params)):
        np.testing.assert_array_equal(grad, 0)


@GRAPH_MODES
def test_vmap_over_stacked_params_and_state(graph):
    bridge = bridge_for(mlp(), graph)
    members = [bridge_for(mlp(seed), graph).init(None) for seed in range(3)]
    params = jax.tree.map(lambda *a: jnp.stack(a), *[p for p, _ in members])
    state = jax.tree.map(lambda *a: jnp.stack(a), *[s for _, s in members])
    x = inputs()
    key = jax.random.key(7)
    outs, states, _ = jax.jit(
        jax.vmap(lambda p, s: bridge.apply(p, s, keyed(key), (x,), {}))
    )(params, state)
    for i, (p, s) in enumerate(members):
        out, new_state, _ = bridge.apply(p, s, keyed(key), (x,), {})
        np.testing.assert_allclose(outs[i], out, rtol=1e-5, atol=1e-6)
        assert_trees_close(member(states, i), new_state, atol=1e-6)


def test_mode_is_taken_from_set_graph_mode():
    with nnx.set_graph_mode(False):
        assert bridge_for(Plain(nnx.Rngs(0))).graph is False
    assert bridge_for(Plain(nnx.Rngs(0))).graph is nnx.set_graph_mode.current_value()


def test_shared_layers_work_in_graph_mode_only():
    module = Tied(nnx.Rngs(0))
    bridge = bridge_for(module, graph=True)
    params, state = bridge.init(None)
    assert set(params) == {"first"}  # the shared Linear appears once
    x = inputs(d=3)
    out, _, _ = bridge.apply(params, state, None, (x,), {})
    np.testing.assert_allclose(out, module(x), rtol=1e-6)
    with pytest.raises(ValueError, match="shared references"):
        bridge_for(module, graph=False)


@GRAPH_MODES
def test_check_same_graph(graph):
    bridge = bridge_for(mlp(), graph, name="body")
    bridge.check_same_graph(mlp(seed=4))  # same architecture, other values
    with pytest.raises(ValueError, match=r"'body'.*different structure"):
        bridge.check_same_graph(mlp(dhidden=5))
    with pytest.raises(ValueError, match=r"'body'.*different structure"):
        bridge.check_same_graph(Plain(nnx.Rngs(0)))
    with pytest.raises(TypeError, match="'body'"):
        bridge.check_same_graph(lambda x: x)


def test_params_of_the_wrong_shape_name_the_site():
    bridge = bridge_for(Plain(nnx.Rngs(0)), name="head")
    params, state = bridge.init(None)
    bad = dict(params, l2=dict(params["l2"], bias=jnp.zeros(3)))
    with pytest.raises(ValueError, match=r"'head'.*l2\.bias.*\(3,\)"):
        bridge.apply(bad, state, None, (inputs(),), {})
    with pytest.raises(ValueError, match=r"'head'.*missing \['l1.bias'\]"):
        bridge.apply(
            {"l1": {"kernel": params["l1"]["kernel"]}, "l2": params["l2"]},
            state,
            None,
            (inputs(),),
            {},
        )
    with pytest.raises(TypeError, match="flax.nnx.Module"):
        NNXBridge("head", lambda x: x, None, (), {})


@GRAPH_MODES
def test_write_back_reproduces_the_bridge_and_leaves_the_module(graph):
    module = mlp()
    bridge = bridge_for(module, graph)
    params, state = bridge.init(None)
    x = inputs()
    # "Trained" values: shifted parameters and one training step of statistics.
    params = jax.tree.map(lambda a: a + 0.1, params)
    _, state, _ = bridge.apply(params, state, keyed(jax.random.key(0)), (x,), {})
    before = nnx.to_pure_dict(nnx.state(module))

    new = write_back(module, params, state, graph=graph)
    assert new is not module
    new.eval()
    bridge.check_same_graph(
        nnx.view(module, deterministic=True, use_running_average=True)
    )
    expected, _, _ = bridge.apply(params, state, None, (x,), {})
    np.testing.assert_allclose(new(x), expected, rtol=1e-6)
    assert_trees_close(nnx.to_pure_dict(nnx.state(new, nnx.Param)), params)
    assert_trees_close(nnx.to_pure_dict(nnx.state(new, nnx.BatchStat)), state)

    # Training-mode calls on the copy change neither the original's values
    # nor its RNG stream.
    new.train()
    new(x)
    after = nnx.to_pure_dict(nnx.state(module))
    assert jax.tree.structure(after) == jax.tree.structure(before)
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(*map(_data, (a, b))), after, before
    )


def _data(x):
    return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
