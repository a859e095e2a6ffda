"""Batched evaluation of traced steps (probnn.infer._vectorize), packed param
dicts (probnn.infer._packed) and SVI steps on packed states, each checked
against the same computation run equation by equation on plain dicts."""

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.control_flow import scan
from probnn.distributions import constraints
from probnn.infer import (
    SVI,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
    _vectorize,
    config_enumerate,
)
from probnn.infer._packed import PackedDict, pack, pack_like, unpack
from probnn.infer.autoguide import AutoNormal

SITES = 12


def primitives(fn, *args) -> list:
    """Names of the equations of fn's jaxpr, the bodies of jit calls
    included."""

    def names(jaxpr):
        found = []
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "jit":
                found += names(eqn.params["jaxpr"].jaxpr)
            else:
                found.append(eqn.primitive.name)
        return found

    return names(jax.make_jaxpr(fn)(*args).jaxpr)


def count_equations(fn, *args):
    return len(primitives(fn, *args))


def run_batched(fn, args, stacked=()):
    avals = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in args]
    given = dict(enumerate(args))
    return _vectorize.call(fn, avals, given, {}, stacked)


# -- the batching evaluator ---------------------------------------------------


def per_site(*xs):
    out = []
    for x in xs:
        y = jnp.sin(x) * 2.0 + jax.nn.softplus(x)
        out.append(jnp.sum(y**2) + jnp.log1p(jnp.abs(x[0])))
    return [*out, sum(out)]


def test_isomorphic_equations_run_once_and_give_the_same_values():
    xs = [jax.random.normal(jax.random.PRNGKey(i), (5,)) for i in range(SITES)]
    expected = per_site(*xs)
    outputs, _ = run_batched(per_site, xs)
    np.testing.assert_allclose(outputs, expected, rtol=1e-6)

    direct = primitives(per_site, *xs)
    batched = primitives(lambda *a: run_batched(per_site, a)[0], *xs)
    # twelve copies of each operation became one
    assert direct.count("sin") == SITES and batched.count("sin") == 1
    assert batched.count("log1p") == 1
    assert len(batched) < len(direct) / 2


def test_slices_of_one_array_become_one_slice_and_outputs_come_back_stacked():
    data = jnp.arange(60.0).reshape(SITES, 5)

    def rows(data):
        return [jnp.exp(-data[i]) * (i + 1.0) for i in range(SITES)]

    outputs, stacks = run_batched(rows, [data], stacked=[list(range(SITES))])
    expected = jnp.stack(rows(data))
    np.testing.assert_allclose(stacks[0], expected, rtol=1e-6)
    assert all(out is None for out in outputs)
    jaxpr = jax.make_jaxpr(
        lambda d: run_batched(rows, [d], stacked=[list(range(SITES))])[1]
    )(data)
    names = [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns]
    assert names.count("slice") <= 2
    assert names.count("exp") == 1


def test_inputs_given_as_rows_of_a_stack():
    stack = jax.random.normal(jax.random.PRNGKey(0), (SITES, 3))

    def fn(*xs):
        return [jnp.tanh(x) + 1.0 for x in xs]

    avals = [jax.ShapeDtypeStruct((3,), stack.dtype)] * SITES
    lanes = {i: (stack, i) for i in range(SITES)}
    # rows in reverse order: the stacked output is a gather of the batched result
    order = list(reversed(range(SITES)))
    outputs, stacks = _vectorize.call(fn, avals, {}, lanes, [order])
    np.testing.assert_allclose(stacks[0], jnp.tanh(stack[::-1]) + 1.0, rtol=1e-6)


def test_repeated_computations_are_computed_once():
    def fn(x):
        return [jnp.cos(x) + 0.5 for _ in range(SITES)]

    x = jnp.linspace(0.0, 1.0, 4)
    outputs, _ = run_batched(fn, [x])
    for out in outputs:
        np.testing.assert_allclose(out, jnp.cos(x) + 0.5, rtol=1e-6)
    jaxpr = jax.make_jaxpr(lambda x: run_batched(fn, [x])[0])(x)
    assert [e.primitive.name for e in jaxpr.jaxpr.eqns].count("cos") == 1


def test_control_flow_and_custom_derivatives_inside_batched_groups():
    def fn(*xs):
        outs = []
        for x in xs:
            total, _ = jax.lax.scan(lambda c, v: (c + jnp.exp(v), None), 0.0, x)
            big = jax.lax.cond(total > 5.0, lambda t: t * 2.0, lambda t: -t, total)
            outs.append(big + jax.nn.logsumexp(x))
        return outs

    xs = [jnp.linspace(-1.0, i / 3.0, 4) for i in range(SITES)]
    outputs, _ = run_batched(fn, xs)
    np.testing.assert_allclose(outputs, fn(*xs), rtol=1e-6)


def test_effects_keep_program_order():
    seen = []

    def fn(*xs):
        outs = []
        for i, x in enumerate(xs):
            jax.debug.callback(lambda v, i=i: seen.append((i, float(v))), x)
            outs.append(x * 2.0)
        return outs

    xs = [jnp.float32(i) for i in range(SITES)]
    outputs, _ = run_batched(fn, xs)
    jax.effects_barrier()
    np.testing.assert_allclose(outputs, [2.0 * i for i in range(SITES)])
    assert seen == [(i, float(i)) for i in range(SITES)]


def test_big_arrays_are_not_copied_into_new_stacks():
    size = _vectorize.MAX_COPY + 1

    def fn(*xs):
        return [jnp.exp(x) for x in xs]

    xs = [jnp.full((size,), float(i)) for i in range(SITES)]
    jaxpr = jax.make_jaxpr(lambda *a: run_batched(fn, a)[0])(*xs)
    names = [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns]
    assert "concatenate" not in names
    assert names.count("exp") == SITES


# -- packed dicts ---------------------------------------------------------------


def small_params():
    params = {f"z{i}": jnp.float32(i) for i in range(6)}
    params["big"] = jnp.ones(5000)
    params["pair_a"] = jnp.ones(2)
    params["pair_b"] = jnp.zeros(2)
    params["net"] = {"w": jnp.ones((2, 2))}
    return params


def test_pack_stacks_small_leaves_of_one_kind_and_reads_like_the_dict():
    params = small_params()
    packed = pack(params)
    assert isinstance(packed, PackedDict)
    assert packed.layout.groups == (tuple(f"z{i}" for i in range(6)),)
    assert set(packed.layout.loose) == {"big", "pair_a", "pair_b", "net"}
    assert list(packed) == list(params) and len(packed) == len(params)
    assert "z3" in packed and "nope" not in packed
    for name, value in params.items():
        jax.tree.map(np.testing.assert_array_equal, packed[name], value)
    jax.tree.map(np.testing.assert_array_equal, unpack(packed), params)
    # leaves: one stack, then the loose values
    leaves = jax.tree.leaves(packed)
    assert leaves[0].shape == (6,)
    doubled = jax.tree.map(lambda x: 2 * x, packed)
    assert float(doubled["z4"]) == 8.0


def test_pack_leaves_dicts_without_enough_alike_leaves_unchanged():
    params = {"a": jnp.zeros(3), "b": jnp.zeros(3), "c": jnp.zeros(()), "d": 1.0}
    assert pack(params) is params


def test_pack_like_packs_optimiser_moments_and_serialises():
    params = small_params()
    opt_state = pack_like(optax.adam(0.1).init(params), params)
    mu = opt_state[0].mu
    assert isinstance(mu, PackedDict) and mu.layout == pack(params).layout
    restored = flax.serialization.from_bytes(
        opt_state, flax.serialization.to_bytes(jax.tree.map(lambda x: x + 1, opt_state))
    )
    assert isinstance(restored[0].mu, PackedDict)
    np.testing.assert_array_equal(restored[0].mu["z2"], 1.0)
    np.testing.assert_array_equal(restored[0].nu["big"], np.ones(5000))


# -- SVI on packed states ---------------------------------------------------------


# five rows: five sites of each kind, enough to be packed (MIN_GROUP is 4)
# and few enough that the steps compile quickly
DATA = jax.random.normal(jax.random.PRNGKey(5), (5, 8)) + jnp.arange(5)[:, None]


def many_sites(data):
    for i in range(data.shape[0]):
        z = probnn.sample(f"z{i}", dist.Normal(0.0, 3.0))
        s = probnn.sample(f"s{i}", dist.LogNormal(0.0, 0.5))
        with probnn.plate(f"points{i}", data.shape[1]):
            probnn.sample(f"y{i}", dist.Normal(z, s), obs=data[i])


def states_close(a, b, rtol=1e-5):
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-6),
        unpack(a),
        unpack(b),
    )


def steps(svi, state, count, stable=False):
    update = jax.jit(svi.stable_update if stable else svi.update)
    losses = []
    for _ in range(count):
        state, loss = update(state, DATA)
        losses.append(float(loss))
    return state, np.array(losses)


@pytest.mark.parametrize(
    "optim",
    [
        optax.adam(0.05),
        # per-leaf norms: optax must still see one leaf per param
        optax.lamb(0.05),
        optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.05)),
    ],
    ids=["adam", "lamb", "clip+sgd"],
)
def test_vectorized_steps_match_plain_steps(optim):
    svi = SVI(many_sites, AutoNormal(many_sites), optim, Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), DATA)
    assert isinstance(state.optim_state[1][0], PackedDict)
    packed_state, packed_losses = steps(svi, state, 15)

    plain = SVI(many_sites, AutoNormal(many_sites), optim, Trace_ELBO())
    plain_state = plain.init(jax.random.PRNGKey(0), DATA)
    plain_state = plain_state._replace(optim_state=unpack(plain_state.optim_state))
    plain_state, plain_losses = steps(plain, plain_state, 15)

    np.testing.assert_allclose(packed_losses, plain_losses, rtol=1e-5)
    states_close(packed_state, plain_state)
    assert isinstance(packed_state.optim_state[1][0], PackedDict)
    params = svi.get_params(packed_state)
    assert type(params) is dict and set(params) == set(plain.get_params(plain_state))


def test_vectorized_step_traces_far_fewer_equations():
    # tracing only (nothing compiles): twelve sites of each kind
    data = jax.random.normal(jax.random.PRNGKey(5), (12, 8))
    svi = SVI(many_sites, AutoNormal(many_sites), optax.adam(0.05), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), data)
    batched = count_equations(svi.update, state, data)
    svi.vectorize_steps = False
    plain = count_equations(svi.update, state, data)
    assert batched < plain / 3


def test_vectorize_steps_off_gives_the_same_steps():
    svi = SVI(many_sites, AutoNormal(many_sites), optax.adam(0.05), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(2), DATA)
    batched, batched_losses = steps(svi, state, 10)
    svi.vectorize_steps = False
    plain, plain_losses = steps(svi, state, 10)
    np.testing.assert_allclose(batched_losses, plain_losses, rtol=1e-5)
    states_close(batched, plain)


def test_multi_transform_labels_by_name_on_a_packed_state():
    def labels(params):
        return {
            name: "frozen" if name.endswith("scale") else "train" for name in params
        }

    optim = optax.multi_transform(
        {"train": optax.adam(0.1), "frozen": optax.set_to_zero()}, labels
    )
    svi = SVI(many_sites, AutoNormal(many_sites), optim, Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), DATA)
    new_state, _ = steps(svi, state, 5)
    before, after = unpack(state.optim_state[1][0]), unpack(new_state.optim_state[1][0])
    for name in before:
        if name.endswith("scale"):
            np.testing.assert_array_equal(after[name], before[name])
        else:
            assert not np.allclose(after[name], before[name])


def test_stable_update_on_a_packed_state_skips_non_finite_steps():
    def spiky(data):
        many_sites(data)
        z0 = probnn.sample("z_extra", dist.Normal(0.0, 1.0))
        probnn.factor("spike", jnp.where(z0 > -10.0, jnp.nan, 0.0))

    svi = SVI(spiky, AutoNormal(spiky), optax.adam(0.05), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), DATA)
    new_state, losses = steps(svi, state, 3, stable=True)
    assert np.all(np.isnan(losses))
    jax.tree.map(
        np.testing.assert_array_equal, new_state.optim_state, state.optim_state
    )


def test_packed_run_converges_to_the_conjugate_posteriors():
    """Normal-Normal with known noise, twelve independent sites."""
    data = jax.random.normal(jax.random.PRNGKey(5), (SITES, 8))
    data = data + jnp.arange(SITES)[:, None]

    def model(data):
        for i in range(data.shape[0]):
            z = probnn.sample(f"z{i}", dist.Normal(0.0, 3.0))
            with probnn.plate(f"points{i}", data.shape[1]):
                probnn.sample(f"y{i}", dist.Normal(z, 1.0), obs=data[i])

    guide = AutoNormal(model)
    svi = SVI(
        model,
        guide,
        optax.adam(optax.exponential_decay(0.05, 3000, 0.05)),
        TraceMeanField_ELBO(),
    )
    result = svi.run(jax.random.PRNGKey(1), 3000, data, progress_bar=False)
    assert isinstance(result.state.optim_state[1][0], PackedDict)
    precision = 1 / 9.0 + data.shape[1]
    mean = data.sum(1) / precision
    median = guide.median(result.params)
    np.testing.assert_allclose(
        [median[f"z{i}"] for i in range(SITES)], mean, rtol=0.03, atol=0.03
    )
    scales = [result.params[f"z{i}_auto_scale"] for i in range(SITES)]
    np.testing.assert_allclose(scales, 1 / np.sqrt(precision), rtol=0.1)


def test_eager_update_and_evaluate_on_a_packed_state():
    svi = SVI(many_sites, AutoNormal(many_sites), optax.adam(0.05), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), DATA)
    eager_state, eager_loss = svi.update(state, DATA)
    jit_state, jit_loss = jax.jit(svi.update)(state, DATA)
    np.testing.assert_allclose(eager_loss, jit_loss, rtol=1e-5)
    states_close(eager_state, jit_state)
    assert np.isfinite(float(svi.evaluate(state, DATA)))


def test_shard_state_accepts_a_packed_state():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from probnn.infer import shard_state

    svi = SVI(many_sites, AutoNormal(many_sites), optax.adam(0.05), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), DATA)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    placed = shard_state(state, {"z0_auto_loc": NamedSharding(mesh, PartitionSpec())})
    assert type(placed.optim_state[1][0]) is dict
    new_state, loss = jax.jit(svi.update)(placed, DATA)
    reference, reference_loss = jax.jit(svi.update)(state, DATA)
    np.testing.assert_allclose(loss, reference_loss, rtol=1e-5)
    states_close(new_state, reference)


# -- other ELBOs and model features under batched steps -----------------------------


class Regressor(nn.Module):
    @nn.compact
    def __call__(self, x):
        # no bias before BatchNorm: its gradient is rounding noise, which
        # Adam would scale up to full steps
        h = nn.Dense(4, use_bias=False)(x)
        h = nn.BatchNorm(use_running_average=False, momentum=0.9)(h)
        return nn.Dense(1)(jax.nn.relu(h))[..., 0]


X = jax.random.normal(jax.random.PRNGKey(7), (16, 3))
Y = X @ jnp.array([1.0, -1.0, 0.5]) + 1.0


def network_model(x, y):
    """A Flax network with BatchNorm state, scalar offsets and latents, and a
    latent chain inside a scan."""
    net = probnn.module("net", Regressor(), input_shape=(-1, 3))
    offsets = [probnn.param(f"b{i}", 0.1 * i) for i in range(4)]
    weights = [probnn.sample(f"w{i}", dist.Normal(0.0, 1.0)) for i in range(4)]

    def step(carry, _):
        c = probnn.sample("c", dist.Normal(0.5 * carry, 1.0))
        return c, c

    _, chain = scan(step, 0.0, None, length=3)
    mean = net(x) + sum(offsets) + sum(weights) * x[:, 0] + jnp.sum(chain)
    with probnn.plate("data", x.shape[0]):
        probnn.sample("y", dist.Normal(mean, 0.5), obs=y)


def network_guide(x, y):
    for i in range(4):
        loc = probnn.param(f"w{i}_loc", 0.0)
        scale = probnn.param(f"w{i}_scale", 0.5, constraint=constraints.positive)
        probnn.sample(f"w{i}", dist.Normal(loc, scale))
    chain_loc = probnn.param("c_loc", jnp.zeros(3))

    def step(carry, t):
        probnn.sample("c", dist.Normal(chain_loc[t], 0.3))
        return carry, None

    scan(step, 0.0, jnp.arange(3))


@config_enumerate
def mixture_model(x, y):
    """Enumerated discrete sites beside continuous ones."""
    for i in range(5):
        flip = probnn.sample(f"flip{i}", dist.Bernoulli(0.3))
        mu = probnn.sample(f"mu{i}", dist.Normal(0.0, 3.0))
        probnn.sample(f"y{i}", dist.Normal(jnp.where(flip, mu, -mu), 1.0), obs=y[i])


def mixture_guide(x, y):
    for i in range(5):
        loc = probnn.param(f"mu{i}_loc", 0.5)
        scale = probnn.param(f"mu{i}_scale", 1.0, constraint=constraints.positive)
        probnn.sample(f"mu{i}", dist.Normal(loc, scale))


@pytest.mark.parametrize(
    "model, guide, loss",
    [
        (network_model, network_guide, Trace_ELBO()),
        (mixture_model, mixture_guide, TraceEnum_ELBO(max_plate_nesting=0)),
        (many_sites, None, Trace_ELBO(num_particles=3)),
        (many_sites, None, RenyiELBO(alpha=0.5, num_particles=2)),
    ],
    ids=["flax-bn-scan", "enumerated", "particles", "renyi"],
)
def test_batched_steps_equal_plain_steps_across_features(model, guide, loss):
    guide = AutoNormal(model) if guide is None else guide
    data = (X, Y) if model is network_model else (None, Y[:5])
    if model is many_sites:
        data = (DATA,)
    svi = SVI(model, guide, optax.adam(0.05), loss)
    state = svi.init(jax.random.PRNGKey(0), *data)
    assert isinstance(state.optim_state[1][0], PackedDict)

    def run(vectorize):
        svi.vectorize_steps = vectorize
        current, losses = state, []
        update = jax.jit(svi.update)
        for _ in range(4):
            current, loss_value = update(current, *data)
            losses.append(float(loss_value))
        return current, np.array(losses)

    batched, batched_losses = run(True)
    plain, plain_losses = run(False)
    assert np.all(np.isfinite(batched_losses))
    np.testing.assert_allclose(batched_losses, plain_losses, rtol=1e-5)
    states_close(batched, plain)
    if model is network_model:  # the BatchNorm statistics moved
        stats = batched.mutable_state["net$state"]["batch_stats"]
        initial = state.mutable_state["net$state"]["batch_stats"]
        assert not np.allclose(
            stats["BatchNorm_0"]["mean"], initial["BatchNorm_0"]["mean"]
        )
