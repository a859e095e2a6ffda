"""LinenBridge against calling Flax Linen directly."""

import zlib

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probnn.nn.linen import LinenBridge, linen_variables

KEY = jax.random.PRNGKey(0)
X = jnp.arange(12.0).reshape(4, 3) / 10.0


def stream_key(key, stream):
    # The documented derivation: fold a CRC-32 of the stream name into the key.
    return jax.random.fold_in(key, zlib.crc32(stream.encode()) & 0x7FFFFFFF)


def no_key():
    raise ValueError("prng_key needs a random key")


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(5)(x))
        return nn.Dense(2)(x)


class BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Dense(3)(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)


class DropoutNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(8)(x)
        return nn.Dropout(0.5, deterministic=not train)(h)


class NoiseNet(nn.Module):
    """Asks for a custom 'noise' stream at every call."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(3)(x)
        return h + jax.random.normal(self.make_rng("noise"), h.shape)


def assert_trees_close(a, b, **kw):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **kw), a, b)


def test_mlp_init_and_apply_match_flax():
    bridge = LinenBridge("net", MLP(), (-1, 3), (), {})
    params, state = bridge.init(KEY)
    expected = MLP().init({"params": stream_key(KEY, "params")}, jnp.zeros((1, 3)))
    assert state == {}
    assert isinstance(params, dict) and isinstance(params["Dense_0"], dict)
    assert_trees_close(params, expected["params"], rtol=0, atol=0)

    out, new_state, _ = bridge.apply(params, state, no_key, (X,), {})
    assert new_state == {}
    np.testing.assert_allclose(out, MLP().apply(expected, X), rtol=1e-6)
    # and by hand
    p = params
    hand = jnp.tanh(X @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    hand = hand @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    np.testing.assert_allclose(out, hand, rtol=1e-5)


def test_init_from_input_shape_or_example_args():
    from_shape, _ = LinenBridge("net", MLP(), (-1, 3), (), {}).init(KEY)
    from_none, _ = LinenBridge("net", MLP(), (None, 3), (), {}).init(KEY)
    from_args, _ = LinenBridge("net", MLP(), None, (X,), {}).init(KEY)
    assert_trees_close(from_shape, from_none, rtol=0, atol=0)
    assert_trees_close(from_shape, from_args, rtol=0, atol=0)
    # example args win over input_shape
    wide, _ = LinenBridge("net", MLP(), (-1, 7), (X,), {}).init(KEY)
    assert wide["Dense_0"]["kernel"].shape == (3, 5)


def test_init_passes_call_kwargs():
    class Scaled(nn.Module):
        @nn.compact
        def __call__(self, x, *, scale):
            return scale * nn.Dense(2)(x)

    bridge = LinenBridge("net", Scaled(), (-1, 3), (), {"scale": 2.0})
    params, _ = bridge.init(KEY)
    out, _, _ = bridge.apply(params, {}, no_key, (X,), {"scale": 3.0})
    expected = Scaled().apply({"params": params}, X, scale=3.0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_init_needs_input_shape_or_args():
    bridge = LinenBridge("encoder", MLP(), None, (), {})
    with pytest.raises(ValueError, match=r"'encoder'.*input_shape"):
        bridge.init(KEY)


def test_init_failure_names_site_and_shapes():
    class Flatten4(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x.reshape((4,)))

    bridge = LinenBridge("encoder", Flatten4(), (-1, 5), (), {})
    with pytest.raises(ValueError, match=r"'encoder'.*\(1, 5\)") as info:
        bridge.init(KEY)
    assert "input_shape=(-1, 5)" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)


def test_not_a_linen_module():
    with pytest.raises(TypeError, match="'net'.*flax.linen.Module"):
        LinenBridge("net", lambda x: x, (-1, 3), (), {})


def test_init_discovers_streams_flax_reports_missing():
    class StrictNoise(nn.Module):
        # Flax falls back to the "params" stream for a missing one during
        # init, so a module that insists on its own stream must say so.
        @nn.compact
        def __call__(self, x):
            if not self.has_rng("noise"):
                raise flax.errors.InvalidRngError('StrictNoise needs PRNG for "noise"')
            draw = lambda: jax.random.normal(self.make_rng("noise"), (3,))
            eps = self.variable("noise_draw", "eps", draw)
            return nn.Dense(3)(x) + eps.value

    params, state = LinenBridge("net", StrictNoise(), (-1, 3), (), {}).init(KEY)
    rngs = {s: stream_key(KEY, s) for s in ("params", "dropout", "noise")}
    expected = StrictNoise().init(rngs, jnp.zeros((1, 3)))
    assert_trees_close(state, {"noise_draw": expected["noise_draw"]}, rtol=0)
    assert set(params) == {"Dense_0"}


def test_batchnorm_train_updates_statistics_like_flax():
    module = BatchNormNet()
    bridge = LinenBridge("net", module, (-1, 3), (), {"train": True})
    params, state = bridge.init(KEY)
    assert set(state) == {"batch_stats"}
    np.testing.assert_allclose(state["batch_stats"]["BatchNorm_0"]["mean"], 0.0)

    out, new_state, _ = bridge.apply(params, state, no_key, (X,), {"train": True})
    ref_out, ref_vars = module.apply(
        {"params": params, **state}, X, train=True, mutable=["batch_stats"]
    )
    np.testing.assert_allclose(out, ref_out, rtol=1e-6)
    assert_trees_close(new_state, dict(ref_vars), rtol=1e-6)
    # closed form: running mean moves 10% of the way to the batch mean
    dense = params["Dense_0"]
    h = X @ dense["kernel"] + dense["bias"]
    np.testing.assert_allclose(
        new_state["batch_stats"]["BatchNorm_0"]["mean"], 0.1 * h.mean(0), rtol=1e-5
    )


def test_batchnorm_eval_leaves_statistics():
    module = BatchNormNet()
    bridge = LinenBridge("net", module, (-1, 3), (), {"train": False})
    params, state = bridge.init(KEY)
    stats = {"BatchNorm_0": {"mean": jnp.full(3, 0.5), "var": jnp.full(3, 2.0)}}
    state = {"batch_stats": stats}

    out, new_state, _ = bridge.apply(params, state, no_key, (X,), {"train": False})
    assert_trees_close(new_state, state, rtol=0, atol=0)
    ref_out = module.apply({"params": params, **state}, X, train=False)
    np.testing.assert_allclose(out, ref_out, rtol=1e-6)
    dense, bn = params["Dense_0"], params["BatchNorm_0"]
    h = X @ dense["kernel"] + dense["bias"]
    hand = (h - 0.5) / jnp.sqrt(2.0 + 1e-5) * bn["scale"] + bn["bias"]
    np.testing.assert_allclose(out, hand, rtol=1e-5)


def test_dropout_key_comes_from_key_fn():
    module = DropoutNet()
    bridge = LinenBridge("net", module, (-1, 3), (), {})
    params, state = bridge.init(KEY)
    calls = []

    def key_fn_for(seed):
        def key_fn():
            calls.append(seed)
            return jax.random.PRNGKey(seed)

        return key_fn

    train = {"train": True}
    out_a, _, _ = bridge.apply(params, state, key_fn_for(1), (X,), train)
    out_a2, _, _ = bridge.apply(params, state, key_fn_for(1), (X,), train)
    out_b, _, _ = bridge.apply(params, state, key_fn_for(2), (X,), train)
    assert calls == [1, 1, 2]  # one key per forward pass
    assert bridge.rng_streams == ("dropout",)
    np.testing.assert_array_equal(out_a, out_a2)
    assert not np.array_equal(out_a, out_b)
    dropout_key = stream_key(jax.random.PRNGKey(1), "dropout")
    expected = module.apply(
        {"params": params}, X, train=True, rngs={"dropout": dropout_key}
    )
    np.testing.assert_allclose(out_a, expected, rtol=1e-6)
    # about half the units are dropped, the rest scaled by 2
    full = module.apply({"params": params}, X)
    kept = out_a != 0
    np.testing.assert_allclose(out_a[kept], 2 * full[kept], rtol=1e-5)
    assert 0.25 < kept.mean() < 0.75


def test_deterministic_dropout_needs_no_key():
    module = DropoutNet()
    bridge = LinenBridge("net", module, (-1, 3), (), {})
    params, state = bridge.init(KEY)
    out, _, _ = bridge.apply(params, state, no_key, (X,), {"train": False})
    np.testing.assert_allclose(out, module.apply({"params": params}, X), rtol=1e-6)
    # still true once the bridge has learnt that training mode needs a key
    bridge.apply(params, state, lambda: KEY, (X,), {"train": True})
    out, _, _ = bridge.apply(params, state, no_key, (X,), {"train": False})
    np.testing.assert_allclose(out, module.apply({"params": params}, X), rtol=1e-6)


def test_missing_key_names_site_and_stream():
    bridge = LinenBridge("net", DropoutNet(), (-1, 3), (), {})
    params, state = bridge.init(KEY)
    message = r"module 'net'.*'dropout' stream.*probnn.handlers.seed"
    with pytest.raises(ValueError, match=message) as info:
        bridge.apply(params, state, no_key, (X,), {"train": True})
    assert "prng_key needs a random key" in str(info.value.__cause__)
    bridge.apply(params, state, lambda: KEY, (X,), {"train": True})
    with pytest.raises(ValueError, match=message):
        bridge.apply(params, state, no_key, (X,), {"train": True})


def test_custom_stream_discovered_at_apply():
    module = NoiseNet()
    bridge = LinenBridge("net", module, (-1, 3), (), {})
    params, state = bridge.init(KEY)
    key = jax.random.PRNGKey(5)
    out, _, _ = bridge.apply(params, state, lambda: key, (X,), {})
    assert bridge.rng_streams == ("noise",)
    expected = module.apply(
        {"params": params}, X, rngs={"noise": stream_key(key, "noise")}
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="'noise' stream"):
        bridge.apply(params, state, no_key, (X,), {})


def test_jit_and_grad_of_apply():
    module = DropoutNet()
    bridge = LinenBridge("net", module, (-1, 3), (), {})
    params, state = bridge.init(KEY)
    key = jax.random.PRNGKey(3)

    def loss(p, x):
        out, _, _ = bridge.apply(p, state, lambda: key, (x,), {"train": True})
        return jnp.sum(out**2)

    def ref_loss(p, x):
        rngs = {"dropout": stream_key(key, "dropout")}
        return jnp.sum(module.apply({"params": p}, x, train=True, rngs=rngs) ** 2)

    np.testing.assert_allclose(jax.jit(loss)(params, X), ref_loss(params, X), 1e-5)
    grads = jax.jit(jax.grad(loss))(params, X)
    assert_trees_close(grads, jax.grad(ref_loss)(params, X), rtol=1e-5)


def test_jit_with_batchnorm_state():
    bridge = LinenBridge("net", BatchNormNet(), (-1, 3), (), {"train": True})
    params, state = bridge.init(KEY)
    step = jax.jit(lambda p, s, x: bridge.apply(p, s, no_key, (x,), {"train": True}))
    out, new_state, _ = step(params, state, X)
    eager_out, eager_state, _ = bridge.apply(
        params, state, no_key, (X,), {"train": True}
    )
    np.testing.assert_allclose(out, eager_out, rtol=1e-6)
    assert_trees_close(new_state, eager_state, rtol=1e-6)


def test_vmap_over_stacked_params_and_state():
    module = BatchNormNet()
    bridge = LinenBridge("net", module, (-1, 3), (), {"train": True})
    members = [bridge.init(k) for k in jax.random.split(KEY, 3)]
    params = jax.tree.map(lambda *a: jnp.stack(a), *[m[0] for m in members])
    state = jax.tree.map(lambda *a: jnp.stack(a), *[m[1] for m in members])

    def apply(p, s):
        return bridge.apply(p, s, no_key, (X,), {"train": True})

    outs, new_states, _ = jax.vmap(apply)(params, state)
    assert outs.shape == (3, 4, 3)
    for i, (p, s) in enumerate(members):
        ref_out, ref_vars = module.apply(
            {"params": p, **s}, X, train=True, mutable=["batch_stats"]
        )
        np.testing.assert_allclose(outs[i], ref_out, rtol=1e-5, atol=1e-6)
        member_state = jax.tree.map(lambda a, i=i: a[i], new_states)
        assert_trees_close(member_state, dict(ref_vars), rtol=1e-5)


def test_linen_variables_round_trip():
    module = BatchNormNet()
    bridge = LinenBridge("net", module, (-1, 3), (), {"train": True})
    params, state = bridge.init(KEY)
    _, state, _ = bridge.apply(params, state, no_key, (X,), {"train": True})
    variables = linen_variables(params, state)
    assert set(variables) == {"params", "batch_stats"}
    assert type(variables["batch_stats"]["BatchNorm_0"]) is dict
    out, _, _ = bridge.apply(params, state, no_key, (X,), {"train": False})
    np.testing.assert_array_equal(module.apply(variables, X, train=False), out)
