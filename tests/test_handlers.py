"""Tests of the effect handlers against closed forms, scipy and plain JAX."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probnn
import probnn.distributions as dist
from probnn.handlers import (
    block,
    condition,
    do,
    infer_config,
    lift,
    mask,
    replay,
    scale,
    scope,
    seed,
    substitute,
    trace,
)
from probnn.infer.util import log_density


def seeded_trace(model, *args, rng_seed=0, **kwargs):
    return trace(seed(model, rng_seed=rng_seed)).get_trace(*args, **kwargs)


def model_xyz():
    w = probnn.param("w", 0.5)
    x = probnn.sample("x", dist.Normal(0.0, 1.0))
    y = probnn.sample("y", dist.Normal(x, 1.0))
    z = probnn.deterministic("z", x + y + w)
    return x, y, z


def two_latents():
    x = probnn.sample("x", dist.Normal(0.0, 1.0))
    y = probnn.sample("y", dist.Normal(0.0, 1.0), obs=1.5)
    return x, y


# -- seed ---------------------------------------------------------------------


def test_seed_same_seed_same_values_different_seed_different_values():
    a = seed(model_xyz, rng_seed=0)()
    b = seed(model_xyz, rng_seed=0)()
    c = seed(model_xyz, rng_seed=1)()
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert float(a[0]) != float(c[0])
    # Distinct sites get distinct keys.
    assert float(a[0]) != float(a[1] - a[0])


def test_seeded_callable_called_twice_gives_same_result():
    seeded = seed(model_xyz, rng_seed=3)
    first = seeded()
    second = seeded()
    for u, v in zip(first, second):
        np.testing.assert_array_equal(u, v)


def test_seed_accepts_typed_and_raw_keys():
    typed = seed(model_xyz, rng_seed=jax.random.key(5))()
    typed_again = seed(model_xyz, rng_seed=jax.random.key(5))()
    raw = seed(model_xyz, rng_seed=jax.random.PRNGKey(5))()
    np.testing.assert_array_equal(typed[0], typed_again[0])
    assert np.isfinite(raw[0])


def test_seed_as_context_manager():
    with seed(rng_seed=0):
        a = probnn.sample("a", dist.Normal(0.0, 1.0))
        b = probnn.sample("b", dist.Normal(0.0, 1.0))
    with seed(rng_seed=0):
        a2 = probnn.sample("a", dist.Normal(0.0, 1.0))
    assert float(a) != float(b)
    assert float(a) == float(a2)


def _batch_and_draw():
    with probnn.plate("rows", 100, subsample_size=5) as idx:
        z = probnn.sample("z", dist.Normal(0.0, 1.0))
    return idx, z


def test_seed_hide_types_leaves_those_sites_to_an_outer_seed():
    # the plates share one inner key, the draws take the outer ones
    inner = seed(_batch_and_draw, rng_seed=7, hide_types=["sample"])
    idx_a, z_a = seed(inner, rng_seed=0)()
    idx_b, z_b = seed(inner, rng_seed=1)()
    np.testing.assert_array_equal(idx_a, idx_b)
    assert not np.allclose(z_a, z_b)
    outer_only = seed(seed(_batch_and_draw, 7, hide_types=["plate"]), rng_seed=1)()
    assert not np.array_equal(outer_only[0], idx_a)
    with pytest.raises(ValueError, match="hide_types"):
        seed(_batch_and_draw, 0, hide_types="sample")


def _leaky_candidate(x):
    w = probnn.param("w", lambda key: jax.random.normal(key, (2,)))
    k = probnn.prng_key()
    with probnn.plate("N", 10, subsample_size=2) as idx:
        z = probnn.sample("z", dist.Normal(x, 1.0))
    return w + z + jax.random.normal(k) + idx


def test_jit_of_seeded_model_created_outside_does_not_leak_tracers():
    seeded = seed(_leaky_candidate, rng_seed=0)
    eager = seeded(1.0)

    @jax.jit
    def f(x):
        return seeded(x)

    @jax.jit
    def g(x):
        return 2.0 * seeded(x)

    with jax.checking_leaks():
        r1 = f(1.0)
        r2 = f(jnp.ones(()))
        r3 = f(jnp.ones((2,)))  # new shape: traced again
        r4 = g(1.0)
    np.testing.assert_allclose(r1, eager, rtol=1e-6)
    np.testing.assert_allclose(r2, eager, rtol=1e-6)
    np.testing.assert_allclose(r3, eager, rtol=1e-6)
    np.testing.assert_allclose(r4, 2.0 * eager, rtol=1e-6)
    # The seeded model still works eagerly after being traced.
    np.testing.assert_allclose(seeded(1.0), eager, rtol=1e-6)


# -- trace --------------------------------------------------------------------


def test_trace_sites_in_execution_order():
    def model():
        probnn.sample("b", dist.Normal(0.0, 1.0))
        probnn.param("a", 1.0)
        with probnn.plate("N", 2):
            probnn.sample("d", dist.Normal(0.0, 1.0))
        probnn.deterministic("c", 0.0)

    assert list(seeded_trace(model)) == ["b", "a", "N", "d", "c"]


def test_trace_site_fields():
    tr = seeded_trace(model_xyz)
    required = {
        "name",
        "type",
        "fn",
        "args",
        "kwargs",
        "value",
        "is_observed",
        "scale",
        "mask",
        "infer",
        "cond_indep_stack",
    }
    for name, site in tr.items():
        assert required <= set(site), name
        assert site["name"] == name
    assert tr["x"]["type"] == "sample" and tr["w"]["type"] == "param"
    assert isinstance(tr["x"]["fn"], dist.Normal)
    assert tr["x"]["is_observed"] is False
    assert tr["x"]["scale"] is None and tr["x"]["mask"] is None
    np.testing.assert_allclose(tr["y"]["fn"].loc, tr["x"]["value"])
    np.testing.assert_allclose(
        tr["z"]["value"], tr["x"]["value"] + tr["y"]["value"] + 0.5, rtol=1e-6
    )


def test_trace_as_context_manager():
    with trace() as tr:
        with seed(rng_seed=0):
            probnn.sample("x", dist.Normal(0.0, 1.0))
    assert list(tr) == ["x"]


# -- substitute ---------------------------------------------------------------


def test_substitute_data_replaces_sample_and_param_sites():
    model = substitute(model_xyz, data={"x": 2.0, "w": -1.0})
    tr = seeded_trace(model)
    assert float(tr["x"]["value"]) == 2.0
    assert tr["x"]["is_observed"] is False
    assert float(tr["w"]["value"]) == -1.0
    # Downstream sites see the substituted values.
    assert float(tr["y"]["fn"].loc) == 2.0
    np.testing.assert_allclose(tr["z"]["value"], 2.0 + tr["y"]["value"] - 1.0)


def test_substitute_fn():
    def fn(site):
        return 7.0 if site["name"] in ("y", "w") else None

    tr = seeded_trace(substitute(model_xyz, substitute_fn=fn))
    assert float(tr["y"]["value"]) == 7.0
    assert float(tr["w"]["value"]) == 7.0
    reference = seeded_trace(model_xyz)
    assert float(tr["x"]["value"]) == float(reference["x"]["value"])


def test_substitute_then_log_density_uses_values():
    log_joint, _ = log_density(model_xyz, (), {}, {"x": 0.2, "y": -0.3})
    expected = stats.norm.logpdf(0.2) + stats.norm.logpdf(-0.3, 0.2, 1.0)
    np.testing.assert_allclose(log_joint, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{}, {"data": {"x": 1.0}, "substitute_fn": lambda site: None}]
)
def test_substitute_needs_exactly_one_of_data_and_fn(kwargs):
    with pytest.raises(ValueError, match="substitute_fn"):
        substitute(model_xyz, **kwargs)


# -- condition ----------------------------------------------------------------


def test_condition_data_observes_site():
    tr = seeded_trace(condition(model_xyz, data={"x": 0.7}))
    assert tr["x"]["is_observed"] is True
    assert float(tr["x"]["value"]) == pytest.approx(0.7)
    assert float(tr["y"]["fn"].loc) == pytest.approx(0.7)


def test_condition_fn_observes_site():
    def fn(site):
        return -0.4 if site["name"] == "y" else None

    tr = seeded_trace(condition(model_xyz, condition_fn=fn))
    assert tr["y"]["is_observed"] is True
    assert float(tr["y"]["value"]) == pytest.approx(-0.4)
    assert tr["x"]["is_observed"] is False


def test_log_density_of_conditioned_model_uses_conditioned_value():
    conditioned = condition(model_xyz, data={"x": 0.7, "y": 1.1})
    log_joint, _ = log_density(conditioned, (), {}, {})
    expected = stats.norm.logpdf(0.7) + stats.norm.logpdf(1.1, 0.7, 1.0)
    np.testing.assert_allclose(log_joint, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{}, {"data": {"x": 1.0}, "condition_fn": lambda site: None}]
)
def test_condition_needs_exactly_one_of_data_and_fn(kwargs):
    with pytest.raises(ValueError, match="condition_fn"):
        condition(model_xyz, **kwargs)


# -- replay -------------------------------------------------------------------


def test_replay_takes_values_from_trace():
    old = seeded_trace(model_xyz, rng_seed=0)
    tr = seeded_trace(replay(model_xyz, trace=old), rng_seed=1)
    fresh = seeded_trace(model_xyz, rng_seed=1)
    assert float(fresh["x"]["value"]) != float(old["x"]["value"])
    for name in ("x", "y", "z"):
        np.testing.assert_array_equal(tr[name]["value"], old[name]["value"])


def test_replay_keeps_observations():
    def model(obs):
        mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
        return mu, probnn.sample("y", dist.Normal(mu, 1.0), obs=obs)

    old = seeded_trace(model, 1.0, rng_seed=0)
    tr = seeded_trace(replay(model, trace=old), 2.0, rng_seed=1)
    assert float(tr["y"]["value"]) == 2.0
    assert tr["y"]["is_observed"] is True
    assert float(tr["mu"]["value"]) == float(old["mu"]["value"])


def test_replay_subsample_indices():
    def model():
        with probnn.plate("N", 50, subsample_size=5) as idx:
            probnn.sample("x", dist.Normal(0.0, 1.0))
        return idx

    old = seeded_trace(model, rng_seed=0)
    idx = seed(replay(model, trace=old), rng_seed=1)()
    np.testing.assert_array_equal(idx, old["N"]["value"])
    assert not np.array_equal(seed(model, rng_seed=1)(), old["N"]["value"])


# -- block --------------------------------------------------------------------


def test_block_hides_everything_by_default():
    outputs = trace(block(seed(model_xyz, rng_seed=0))).get_trace()
    assert outputs == {}
    # The hidden sites still ran and produced values.
    x, y, z = block(seed(model_xyz, rng_seed=0))()
    np.testing.assert_allclose(z, x + y + 0.5, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "visible"),
    [
        ({"hide_fn": lambda site: site["type"] == "sample"}, ["w", "z"]),
        ({"hide": ["x", "z"]}, ["w", "y"]),
        ({"expose": ["x"]}, ["x"]),
        ({"expose_types": ["sample"]}, ["x", "y"]),
        ({"expose_types": ["param", "deterministic"]}, ["w", "z"]),
    ],
)
def test_block_selects_hidden_sites(kwargs, visible):
    tr = trace(block(seed(model_xyz, rng_seed=0), **kwargs)).get_trace()
    assert list(tr) == visible


def test_block_does_not_hide_from_inner_handlers():
    with trace() as outer:
        with block(hide=["x"]):
            with trace() as inner:
                seed(model_xyz, rng_seed=0)()
    assert "x" in inner and "x" not in outer


# -- scale --------------------------------------------------------------------


def test_scale_multiplies_log_density():
    params = {"x": 0.2, "y": -0.3}
    base = stats.norm.logpdf(0.2) + stats.norm.logpdf(-0.3, 0.2, 1.0)
    log_joint, tr = log_density(scale(model_xyz, scale=2.5), (), {}, params)
    np.testing.assert_allclose(log_joint, 2.5 * base, rtol=1e-6)
    assert tr["x"]["scale"] == 2.5
    nested = scale(scale(model_xyz, scale=2.0), scale=3.0)
    np.testing.assert_allclose(
        log_density(nested, (), {}, params)[0], 6.0 * base, rtol=1e-6
    )


def test_scale_array_in_plate():
    weights = jnp.array([1.0, 2.0, 0.5])
    obs = jnp.array([0.1, -0.2, 0.3])

    def model():
        with probnn.plate("N", 3):
            with scale(scale=weights):
                probnn.sample("y", dist.Normal(0.0, 1.0), obs=obs)

    log_joint, _ = log_density(model, (), {}, {})
    expected = np.sum(np.asarray(weights) * stats.norm.logpdf(np.asarray(obs)))
    np.testing.assert_allclose(log_joint, expected, rtol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, jnp.array([1.0, 0.0])])
def test_scale_must_be_positive(bad):
    with pytest.raises(ValueError, match="scale"):
        scale(model_xyz, scale=bad)


# -- mask ---------------------------------------------------------------------


def test_mask_zeroes_log_density_where_false():
    obs = jnp.array([0.1, -0.2, 0.3, 1.4])
    keep = jnp.array([True, False, False, True])

    def model():
        with probnn.plate("N", 4):
            with mask(mask=keep):
                probnn.sample("y", dist.Normal(0.5, 2.0), obs=obs)

    log_joint, tr = log_density(model, (), {}, {})
    expected = stats.norm.logpdf(np.asarray(obs), 0.5, 2.0)[np.asarray(keep)].sum()
    np.testing.assert_allclose(log_joint, expected, rtol=1e-6)
    np.testing.assert_array_equal(tr["y"]["mask"], keep)

    log_joint, _ = log_density(mask(model, mask=False), (), {}, {})
    assert float(log_joint) == 0.0


def test_mask_inside_plate_keeps_independent_draws():
    def model():
        with probnn.plate("N", 4):
            with mask(mask=jnp.array([True, False, True, False])):
                return probnn.sample("x", dist.Normal(0.0, 1.0))

    value = np.asarray(seed(model, rng_seed=0)())
    assert value.shape == (4,)
    assert np.unique(value).size == 4


def test_mask_must_be_boolean():
    with pytest.raises(TypeError, match="boolean"):
        mask(model_xyz, mask=jnp.array([1, 0]))
    with pytest.raises(TypeError, match="boolean"):
        mask(model_xyz, mask=1.0)


# -- scope --------------------------------------------------------------------


def test_scope_prefixes_names():
    tr = seeded_trace(scope(model_xyz, prefix="enc"))
    assert list(tr) == ["enc/w", "enc/x", "enc/y", "enc/z"]
    assert tr["enc/x"]["name"] == "enc/x"
    tr = seeded_trace(scope(model_xyz, prefix="enc", divider="."))
    assert list(tr) == ["enc.w", "enc.x", "enc.y", "enc.z"]
    tr = seeded_trace(scope(scope(model_xyz, prefix="in"), prefix="out"))
    assert list(tr) == ["out/in/w", "out/in/x", "out/in/y", "out/in/z"]


def test_scope_hide_types():
    tr = seeded_trace(scope(model_xyz, prefix="s", hide_types=["param"]))
    assert list(tr) == ["w", "s/x", "s/y", "s/z"]


def test_scope_lets_one_model_be_used_twice():
    def model():
        return scope(two_latents, prefix="a")(), scope(two_latents, prefix="b")()

    tr = seeded_trace(model)
    assert set(tr) == {"a/x", "a/y", "b/x", "b/y"}
    assert float(tr["a/x"]["value"]) != float(tr["b/x"]["value"])


def test_scope_renames_plate_frames_of_sites():
    def model():
        with probnn.plate("N", 3):
            probnn.sample("x", dist.Normal(0.0, 1.0))

    tr = seeded_trace(scope(model, prefix="s"))
    assert set(tr) == {"s/N", "s/x"}
    # The frame names the plate as recorded in the trace.
    assert [f.name for f in tr["s/x"]["cond_indep_stack"]] == ["s/N"]


# -- lift ---------------------------------------------------------------------


def test_lift_turns_param_into_sample_from_prior():
    def model():
        return probnn.param("w", 0.0), probnn.param("v", 1.0)

    lifted = lift(model, prior={"w": dist.Normal(5.0, 0.01)})
    tr = seeded_trace(lifted)
    assert tr["w"]["type"] == "sample"
    assert tr["w"]["is_observed"] is False
    assert abs(float(tr["w"]["value"]) - 5.0) < 0.1
    assert tr["v"]["type"] == "param" and float(tr["v"]["value"]) == 1.0
    other = seeded_trace(lifted, rng_seed=1)
    assert float(other["w"]["value"]) != float(tr["w"]["value"])


def test_lift_with_one_prior_for_all_params_enters_log_density():
    def model(y):
        w = probnn.param("w", 0.0)
        b = probnn.param("b", 0.0)
        probnn.sample("y", dist.Normal(w + b, 1.0), obs=y)

    lifted = lift(model, prior=dist.Normal(0.0, 2.0))
    log_joint, tr = log_density(lifted, (1.0,), {}, {"w": 0.3, "b": -0.1})
    assert tr["w"]["type"] == "sample" and tr["b"]["type"] == "sample"
    expected = (
        stats.norm.logpdf(0.3, 0.0, 2.0)
        + stats.norm.logpdf(-0.1, 0.0, 2.0)
        + stats.norm.logpdf(1.0, 0.2, 1.0)
    )
    np.testing.assert_allclose(log_joint, expected, rtol=1e-6)


def test_lift_prior_key_matching_no_param_raises():
    lifted = lift(model_xyz, prior={"w": dist.Normal(), "nonexistent_w": dist.Normal()})
    with pytest.raises(ValueError, match="nonexistent_w"):
        seed(lifted, rng_seed=0)()


# -- do -----------------------------------------------------------------------


def test_do_intervenes_downstream_and_still_draws_site():
    def model():
        x = probnn.sample("x", dist.Normal(0.0, 1.0))
        y = probnn.deterministic("y", 2.0 * x)
        z = probnn.sample("z", dist.Normal(x, 1.0))
        return x, y, z

    reference = seeded_trace(model)
    tr = seeded_trace(do(model, data={"x": 3.0}))
    assert float(tr["y"]["value"]) == 6.0
    assert float(tr["z"]["fn"].loc) == 3.0
    # The site itself is drawn from its distribution, as without intervention.
    assert tr["x"]["type"] == "sample"
    assert tr["x"]["is_observed"] is False
    assert float(tr["x"]["value"]) != 3.0
    assert float(tr["x"]["value"]) == float(reference["x"]["value"])
    assert "x__CF" not in tr
    x, y, _ = seed(do(model, data={"x": 3.0}), rng_seed=0)()
    assert float(x) == 3.0 and float(y) == 6.0


def test_do_log_density_counts_the_drawn_site_not_the_intervention():
    def model():
        x = probnn.sample("x", dist.Normal(0.0, 1.0))
        probnn.sample("z", dist.Normal(x, 1.0), obs=0.5)

    log_joint, _ = log_density(do(model, data={"x": 3.0}), (), {}, {"x": 0.2})
    expected = stats.norm.logpdf(0.2) + stats.norm.logpdf(0.5, 3.0, 1.0)
    np.testing.assert_allclose(log_joint, expected, rtol=1e-6)


# -- infer_config -------------------------------------------------------------


def test_infer_config_updates_sample_sites_only():
    def config(site):
        return {"enumerate": "parallel", "site": site["name"]}

    tr = seeded_trace(infer_config(model_xyz, config_fn=config))
    assert tr["x"]["infer"] == {"enumerate": "parallel", "site": "x"}
    assert tr["y"]["infer"] == {"enumerate": "parallel", "site": "y"}
    assert tr["w"]["infer"] == {}
    assert tr["z"]["infer"] == {}


def test_infer_config_keeps_existing_hints_and_users_dict():
    hints = {"is_auxiliary": True}

    def model():
        probnn.sample("x", dist.Normal(0.0, 1.0), infer=hints)

    tr = seeded_trace(infer_config(model, config_fn=lambda site: {"a": 1}))
    assert tr["x"]["infer"] == {"is_auxiliary": True, "a": 1}
    assert hints == {"is_auxiliary": True}


def test_handler_made_without_function_applies_as_decorator():
    @scale(scale=3.0)
    def model():
        probnn.sample("x", dist.Normal(0.0, 1.0), obs=1.0)

    (site,) = trace(model).get_trace().values()
    assert site["scale"] == 3.0
    assert model.__name__ == "model"
    with pytest.raises(TypeError, match="without a function to wrap"):
        scale(scale=2.0)(1, 2)
