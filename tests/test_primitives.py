"""Tests of the modelling primitives against closed forms, scipy and plain JAX."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax
from scipy import stats

import probnn
import probnn.distributions as dist
from probnn import handlers
from probnn.distributions import constraints
from probnn.infer.util import log_density


def seeded_trace(model, *args, rng_seed=0, **kwargs):
    seeded = handlers.seed(model, rng_seed=rng_seed)
    return handlers.trace(seeded).get_trace(*args, **kwargs)


def frames(site):
    return {(f.name, f.dim, f.size, f.subsample_size) for f in site["cond_indep_stack"]}


# -- sample -------------------------------------------------------------------


def test_sample_shape_prepends_sample_shape_to_batch_shape():
    def model():
        return probnn.sample("x", dist.Normal(jnp.zeros(4), 1.0), sample_shape=(2, 3))

    tr = seeded_trace(model)
    assert tr["x"]["value"].shape == (2, 3, 4)
    assert tr["x"]["kwargs"]["sample_shape"] == (2, 3)
    # Independent draws: no two entries coincide.
    assert np.unique(np.asarray(tr["x"]["value"])).size == 24


def test_sample_obs_returns_obs_and_marks_site_observed():
    obs = jnp.array([0.5, -1.0, 2.0])

    def model():
        return probnn.sample("y", dist.Normal(0.0, 1.0), obs=obs)

    # No handler at all: plain return of obs.
    np.testing.assert_array_equal(model(), obs)
    tr = handlers.trace(model).get_trace()
    np.testing.assert_array_equal(tr["y"]["value"], obs)
    assert tr["y"]["is_observed"] is True
    assert tr["y"]["type"] == "sample"


def test_sample_with_rng_key_needs_no_seed():
    key = jax.random.PRNGKey(3)
    expected = 2.0 + 3.0 * jax.random.normal(key, (5,))

    def model():
        return probnn.sample("x", dist.Normal(2.0, 3.0), rng_key=key, sample_shape=(5,))

    np.testing.assert_allclose(model(), expected, rtol=1e-6)
    tr = handlers.trace(model).get_trace()
    np.testing.assert_allclose(tr["x"]["value"], expected, rtol=1e-6)
    # An explicit rng_key is kept even under seed.
    np.testing.assert_allclose(handlers.seed(model, rng_seed=0)(), expected, rtol=1e-6)


def test_sample_infer_is_recorded_and_users_dict_is_not_mutated():
    user_infer = {"enumerate": "parallel"}

    def model():
        probnn.sample("x", dist.Bernoulli(0.3), infer=user_infer)

    configured = handlers.infer_config(model, lambda site: {"extra": 1})
    tr = seeded_trace(configured)
    assert tr["x"]["infer"] == {"enumerate": "parallel", "extra": 1}
    assert user_infer == {"enumerate": "parallel"}
    assert tr["x"]["infer"] is not user_infer


def _obs_mask_model(obs, obs_mask):
    with probnn.plate("N", obs.shape[0]):
        return probnn.sample("y", dist.Normal(1.0, 2.0), obs=obs, obs_mask=obs_mask)


OBS = jnp.array([0.5, -1.0, 2.0, 3.0, -0.25, 1.5])
OBS_MASK = jnp.array([True, False, True, False, False, True])


def test_obs_mask_splits_into_observed_unobserved_and_deterministic_sites():
    tr = seeded_trace(_obs_mask_model, OBS, OBS_MASK)
    assert tr["y_observed"]["type"] == "sample"
    assert tr["y_observed"]["is_observed"] is True
    np.testing.assert_array_equal(tr["y_observed"]["value"], OBS)
    assert tr["y_unobserved"]["type"] == "sample"
    assert tr["y_unobserved"]["is_observed"] is False
    assert tr["y"]["type"] == "deterministic"
    unobserved = np.asarray(tr["y_unobserved"]["value"])
    assert unobserved.shape == (6,)
    expected = np.where(np.asarray(OBS_MASK), np.asarray(OBS), unobserved)
    np.testing.assert_array_equal(tr["y"]["value"], expected)


def test_obs_mask_unobserved_entries_are_independent_draws():
    tr = seeded_trace(_obs_mask_model, OBS, OBS_MASK)
    missing = np.asarray(tr["y"]["value"])[~np.asarray(OBS_MASK)]
    # Three missing entries imputed by three independent Normal draws.
    assert np.unique(missing).size == 3


def test_obs_mask_log_density_matches_hand_computation():
    draw = jnp.array([9.0, 0.1, 9.0, -0.7, 2.2, 9.0])
    log_joint, tr = log_density(
        _obs_mask_model, (OBS, OBS_MASK), {}, {"y_unobserved": draw}
    )
    mask = np.asarray(OBS_MASK)
    expected = stats.norm.logpdf(np.asarray(OBS)[mask], 1.0, 2.0).sum()
    expected += stats.norm.logpdf(np.asarray(draw)[~mask], 1.0, 2.0).sum()
    np.testing.assert_allclose(log_joint, expected, rtol=1e-5)
    np.testing.assert_array_equal(
        tr["y"]["value"], np.where(mask, np.asarray(OBS), np.asarray(draw))
    )


# -- param --------------------------------------------------------------------


def test_param_returns_init_value_with_and_without_handlers():
    init = jnp.array([1.0, 2.0])
    np.testing.assert_array_equal(probnn.param("w", init), init)
    tr = handlers.trace(lambda: probnn.param("w", init)).get_trace()
    assert tr["w"]["type"] == "param"
    np.testing.assert_array_equal(tr["w"]["value"], init)


def test_param_records_constraint_and_event_dim():
    def model():
        probnn.param("s", jnp.ones(3), constraint=constraints.positive, event_dim=1)
        probnn.param("w", 0.0)

    tr = handlers.trace(model).get_trace()
    assert tr["s"]["kwargs"]["constraint"] is constraints.positive
    assert tr["s"]["kwargs"]["event_dim"] == 1
    assert tr["w"]["kwargs"]["constraint"] is constraints.real


def test_param_callable_init_receives_a_key_under_seed():
    keys = []

    def init(key):
        keys.append(key)
        return jax.random.normal(key, (3,))

    def model():
        return probnn.param("w", init)

    a = handlers.seed(model, rng_seed=0)()
    assert a.shape == (3,)
    np.testing.assert_array_equal(a, jax.random.normal(keys[-1], (3,)))
    np.testing.assert_array_equal(handlers.seed(model, rng_seed=0)(), a)
    assert not np.allclose(handlers.seed(model, rng_seed=1)(), a)


def test_param_callable_init_without_seed_raises():
    with pytest.raises(ValueError, match="'w'.*seed"):
        probnn.param("w", lambda key: jnp.zeros(2))


def test_param_callable_init_without_seed_under_trace_names_site():
    model = lambda: probnn.param("w", lambda key: jnp.zeros(2))
    with pytest.raises(ValueError, match="'w'"):
        handlers.trace(model).get_trace()


# -- plate --------------------------------------------------------------------


def test_plate_broadcasts_sites_inside():
    def model():
        with probnn.plate("N", 4):
            a = probnn.sample("a", dist.Normal(0.0, 1.0))
            b = probnn.sample("b", dist.Normal(jnp.zeros(4), 1.0))
            c = probnn.sample("c", dist.Normal(jnp.zeros((3, 1)), 1.0))
        return a, b, c

    tr = seeded_trace(model)
    assert tr["a"]["value"].shape == (4,)
    assert tr["a"]["fn"].batch_shape == (4,)
    assert tr["b"]["value"].shape == (4,)
    assert tr["c"]["value"].shape == (3, 4)
    assert tr["c"]["fn"].batch_shape == (3, 4)
    assert np.unique(np.asarray(tr["a"]["value"])).size == 4
    assert np.unique(np.asarray(tr["c"]["value"])).size == 12


def test_nested_plates_allocate_dims_automatically():
    def model():
        with probnn.plate("outer", 3):
            with probnn.plate("inner", 2):
                return probnn.sample("x", dist.Normal(0.0, 1.0))

    tr = seeded_trace(model)
    assert tr["x"]["value"].shape == (2, 3)
    assert frames(tr["x"]) == {("outer", -1, 3, 3), ("inner", -2, 2, 2)}
    assert np.unique(np.asarray(tr["x"]["value"])).size == 6


def test_plate_explicit_dim():
    def model():
        with probnn.plate("N", 3, dim=-2):
            x = probnn.sample("x", dist.Normal(0.0, 1.0))
            with probnn.plate("M", 4):
                y = probnn.sample("y", dist.Normal(0.0, 1.0))
        return x, y

    tr = seeded_trace(model)
    assert tr["x"]["value"].shape == (3, 1)
    assert tr["y"]["value"].shape == (3, 4)
    assert frames(tr["y"]) == {("N", -2, 3, 3), ("M", -1, 4, 4)}


def test_cond_indep_stack_frame_fields():
    def model():
        with probnn.plate("N", 10, subsample_size=4):
            probnn.sample("x", dist.Normal(0.0, 1.0))

    (frame,) = seeded_trace(model)["x"]["cond_indep_stack"]
    assert frame.name == "N"
    assert frame.dim == -1
    assert frame.size == 10
    assert frame.subsample_size == 4


def test_plate_without_subsampling_yields_all_indices():
    def model():
        with probnn.plate("N", 5) as idx:
            return idx

    np.testing.assert_array_equal(model(), np.arange(5))


def _subsampled_indices(rng_seed):
    def model():
        with probnn.plate("N", 100, subsample_size=10) as idx:
            return idx

    return np.asarray(handlers.seed(model, rng_seed=rng_seed)())


def test_subsampled_plate_gives_unique_indices_in_range():
    idx = _subsampled_indices(0)
    assert idx.shape == (10,)
    assert np.unique(idx).size == 10
    assert idx.min() >= 0 and idx.max() < 100
    assert np.issubdtype(idx.dtype, np.integer)
    np.testing.assert_array_equal(_subsampled_indices(0), idx)
    assert not np.array_equal(_subsampled_indices(1), idx)


def test_subsampled_plate_scales_log_density():
    data = jnp.linspace(-2.0, 3.0, 100)

    def model(data):
        mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
        with probnn.plate("N", 100, subsample_size=10):
            batch = probnn.subsample(data, event_dim=0)
            probnn.sample("y", dist.Normal(mu, 2.0), obs=batch)

    seeded = handlers.seed(model, rng_seed=0)
    log_joint, tr = log_density(seeded, (data,), {}, {"mu": 0.3})
    idx = np.asarray(tr["N"]["value"])
    assert np.unique(idx).size == 10
    assert tr["y"]["scale"] == pytest.approx(10.0)
    y = np.asarray(data)[idx]
    expected = stats.norm.logpdf(0.3) + 10.0 * stats.norm.logpdf(y, 0.3, 2.0).sum()
    np.testing.assert_allclose(log_joint, expected, rtol=1e-5)


def test_nested_subsampled_plates_multiply_scales():
    def model():
        with probnn.plate("a", 20, subsample_size=5):
            with probnn.plate("b", 6, subsample_size=3):
                probnn.sample("y", dist.Normal(0.0, 1.0), obs=jnp.full((3, 5), 0.5))

    log_joint, tr = log_density(handlers.seed(model, rng_seed=0), (), {}, {})
    assert tr["y"]["scale"] == pytest.approx(8.0)
    np.testing.assert_allclose(log_joint, 8.0 * 15 * stats.norm.logpdf(0.5), rtol=1e-5)


def test_subsample_returns_data_at_plate_indices():
    x = jnp.arange(100.0)
    xy = jnp.arange(300.0).reshape(100, 3)

    def model():
        with probnn.plate("N", 100, subsample_size=10) as idx:
            return idx, probnn.subsample(x, event_dim=0), probnn.subsample(xy, 1)

    idx, sx, sxy = handlers.seed(model, rng_seed=0)()
    idx = np.asarray(idx)
    np.testing.assert_array_equal(sx, np.asarray(x)[idx])
    assert sxy.shape == (10, 3)
    np.testing.assert_array_equal(sxy, np.asarray(xy)[idx])


def test_subsample_along_a_non_rightmost_plate_dim():
    data = jnp.arange(60.0).reshape(20, 3)

    def model():
        with probnn.plate("N", 20, subsample_size=5, dim=-2) as idx:
            return idx, probnn.subsample(data, event_dim=0)

    idx, sub = handlers.seed(model, rng_seed=0)()
    np.testing.assert_array_equal(sub, np.asarray(data)[np.asarray(idx)])


def test_subsample_without_subsampling_is_identity():
    data = jnp.arange(6.0)

    def model():
        with probnn.plate("N", 6):
            return probnn.subsample(data, event_dim=0)

    np.testing.assert_array_equal(handlers.seed(model, rng_seed=0)(), data)
    np.testing.assert_array_equal(probnn.subsample(data, event_dim=0), data)


# -- plate_stack --------------------------------------------------------------


def test_plate_stack_dims_names_and_shapes():
    def model():
        with probnn.plate_stack("p", (2, 3)):
            return probnn.sample("x", dist.Normal(0.0, 1.0))

    tr = seeded_trace(model)
    assert tr["x"]["value"].shape == (2, 3)
    assert frames(tr["x"]) == {("p_0", -1, 3, 3), ("p_1", -2, 2, 2)}
    assert tr["p_0"]["type"] == "plate" and tr["p_1"]["type"] == "plate"


def test_plate_stack_rightmost_dim():
    def model():
        with probnn.plate_stack("p", [4, 2, 3], rightmost_dim=-2):
            return probnn.sample("x", dist.Normal(0.0, 1.0))

    tr = seeded_trace(model)
    assert tr["x"]["value"].shape == (4, 2, 3, 1)
    assert frames(tr["x"]) == {
        ("p_0", -2, 3, 3),
        ("p_1", -3, 2, 2),
        ("p_2", -4, 4, 4),
    }


# -- deterministic, factor, prng_key -----------------------------------------


def test_deterministic_is_recorded():
    def model():
        x = probnn.sample("x", dist.Normal(0.0, 1.0))
        return probnn.deterministic("y", 2.0 * x + 1.0)

    tr = seeded_trace(model)
    assert tr["y"]["type"] == "deterministic"
    np.testing.assert_allclose(tr["y"]["value"], 2.0 * tr["x"]["value"] + 1.0)
    assert float(probnn.deterministic("z", 4.0)) == 4.0


def test_factor_adds_log_factor_to_log_density():
    def model():
        mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
        probnn.factor("f", -0.5 * mu**2 + 1.25)

    log_joint, tr = log_density(model, (), {}, {"mu": 0.8})
    expected = stats.norm.logpdf(0.8) - 0.5 * 0.64 + 1.25
    np.testing.assert_allclose(log_joint, expected, rtol=1e-6)
    assert tr["f"]["is_observed"] is True


def test_factor_batched_inside_plate():
    log_factor = jnp.array([0.5, -1.0, 2.25])

    def model():
        with probnn.plate("N", 3):
            probnn.factor("f", log_factor)

    log_joint, _ = log_density(model, (), {}, {})
    np.testing.assert_allclose(log_joint, 1.75, rtol=1e-6)

    def scaled():
        with probnn.plate("N", 30, subsample_size=3):
            probnn.factor("f", log_factor)

    log_joint, _ = log_density(handlers.seed(scaled, rng_seed=0), (), {}, {})
    np.testing.assert_allclose(log_joint, 17.5, rtol=1e-6)


def test_prng_key_under_seed():
    def model():
        return probnn.prng_key(), probnn.prng_key()

    k1, k2 = handlers.seed(model, rng_seed=0)()
    j1, _ = handlers.seed(model, rng_seed=0)()
    np.testing.assert_array_equal(jax.random.key_data(k1), jax.random.key_data(j1))
    assert not np.array_equal(jax.random.key_data(k1), jax.random.key_data(k2))
    # The key is usable by jax.random.
    assert jax.random.normal(k1, (2,)).shape == (2,)


def test_prng_key_without_seed_raises():
    with pytest.raises(ValueError, match="seed"):
        probnn.prng_key()


# -- module -------------------------------------------------------------------


def _mlp_by_hand(params, x):
    (w1, b1), _, (w2, b2) = params
    return jnp.maximum(x @ w1 + b1, 0.0) @ w2 + b2


def _net_model(x):
    net = probnn.module(
        "net", stax.serial(stax.Dense(4), stax.Relu, stax.Dense(1)), (-1, 3)
    )
    return net(x)


def test_module_registers_params_and_applies_network():
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    tr = seeded_trace(_net_model, x)
    assert tr["net$params"]["type"] == "param"
    params = tr["net$params"]["value"]
    assert params[0][0].shape == (3, 4) and params[2][0].shape == (4, 1)
    out = handlers.seed(_net_model, rng_seed=0)(x)
    assert out.shape == (5, 1)
    np.testing.assert_allclose(out, _mlp_by_hand(params, x), rtol=1e-5, atol=1e-6)


def test_module_params_can_be_substituted():
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(7), 4)
    params = [
        (jax.random.normal(k1, (3, 4)), jax.random.normal(k2, (4,))),
        (),
        (jax.random.normal(k3, (4, 1)), jax.random.normal(k4, (1,))),
    ]
    out = handlers.substitute(_net_model, data={"net$params": params})(x)
    np.testing.assert_allclose(out, _mlp_by_hand(params, x), rtol=1e-5, atol=1e-6)


def test_module_without_input_shape_names_module():
    def model():
        return probnn.module("net", stax.Dense(2))

    with pytest.raises(ValueError, match="'net'"):
        handlers.seed(model, rng_seed=0)()


# -- jit and grad -------------------------------------------------------------


def _normal_normal(y):
    mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    with probnn.plate("N", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, 1.0), obs=y)


Y = jnp.array([0.3, -1.2, 2.0, 0.7])


def test_jit_of_seeded_model_matches_eager():
    def model(loc):
        with probnn.plate("N", 3):
            return probnn.sample("x", dist.Normal(loc, 1.0))

    seeded = handlers.seed(model, rng_seed=4)
    np.testing.assert_allclose(jax.jit(seeded)(1.5), seeded(1.5), rtol=1e-6)


def test_grad_through_seeded_reparameterised_sample():
    def total(loc):
        model = lambda: probnn.sample("x", dist.Normal(loc, 2.0), sample_shape=(7,))
        return jnp.sum(handlers.seed(model, rng_seed=0)())

    np.testing.assert_allclose(jax.grad(total)(0.3), 7.0, rtol=1e-6)


def test_grad_of_log_density_matches_closed_form():
    def potential(mu):
        return log_density(_normal_normal, (Y,), {}, {"mu": mu})[0]

    for mu in (0.0, 0.4, -1.3):
        expected = -mu + float(jnp.sum(Y - mu))
        np.testing.assert_allclose(jax.grad(potential)(mu), expected, rtol=1e-5)
        np.testing.assert_allclose(
            jax.jit(jax.grad(potential))(mu), expected, rtol=1e-5
        )
        value = stats.norm.logpdf(mu) + stats.norm.logpdf(np.asarray(Y), mu).sum()
        np.testing.assert_allclose(jax.jit(potential)(mu), value, rtol=1e-5)


def test_grad_of_log_density_wrt_substituted_param():
    def model(x, y):
        w = probnn.param("w", 0.0)
        with probnn.plate("N", x.shape[0]):
            probnn.sample("y", dist.Normal(w * x, 0.5), obs=y)

    x = jnp.array([1.0, 2.0, -1.0])
    y = jnp.array([0.5, 1.5, -0.2])

    def objective(w):
        return log_density(model, (x, y), {}, {"w": w})[0]

    w = 0.8
    expected = float(jnp.sum((y - w * x) * x) / 0.25)
    np.testing.assert_allclose(jax.jit(jax.grad(objective))(w), expected, rtol=1e-5)


# -- bad input ----------------------------------------------------------------


def test_duplicate_sample_site_names_raise():
    def model():
        probnn.sample("x", dist.Normal(0.0, 1.0))
        probnn.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'x'"):
        seeded_trace(model)


def test_duplicate_deterministic_site_names_raise():
    def model():
        probnn.deterministic("d", 1.0)
        probnn.deterministic("d", 2.0)

    with pytest.raises(ValueError, match="'d'"):
        handlers.trace(model).get_trace()


def test_sample_without_seed_or_rng_key_names_site():
    model = lambda: probnn.sample("latent_z", dist.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="'latent_z'.*seed"):
        model()
    with pytest.raises(ValueError, match="'latent_z'.*seed"):
        handlers.trace(model).get_trace()


def test_batch_shape_that_cannot_broadcast_with_plate_names_site_and_plate():
    def model():
        with probnn.plate("data_plate", 4):
            probnn.sample("bad_site", dist.Normal(jnp.zeros(3), 1.0))

    with pytest.raises(ValueError, match="'bad_site'.*'data_plate'"):
        handlers.seed(model, rng_seed=0)()


def test_two_plates_claiming_one_dim_raise():
    def model():
        with probnn.plate("first", 3, dim=-1):
            with probnn.plate("second", 2, dim=-1):
                probnn.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'second'.*-1.*'first'"):
        handlers.seed(model, rng_seed=0)()


def test_subsample_size_larger_than_size_raises():
    with pytest.raises(ValueError, match="'N'.*subsample_size=11.*size=10"):
        probnn.plate("N", 10, subsample_size=11)


@pytest.mark.parametrize(
    "make",
    [
        lambda: probnn.sample(3, dist.Normal(0.0, 1.0), rng_key=jax.random.PRNGKey(0)),
        lambda: probnn.param(3, 1.0),
        lambda: probnn.deterministic(3, 1.0),
        lambda: probnn.plate(3, 2),
    ],
    ids=["sample", "param", "deterministic", "plate"],
)
def test_non_string_site_name_raises(make):
    with pytest.raises(TypeError, match=r"names must be strings, got 3"):
        make()
    with pytest.raises(TypeError, match=r"names must be strings, got 3"):
        handlers.trace(make).get_trace()


def test_subsampled_plate_without_seed_names_plate():
    def model():
        with probnn.plate("minibatch", 10, subsample_size=3):
            pass

    with pytest.raises(ValueError, match="'minibatch'.*seed"):
        model()


def test_plate_stack_with_a_positive_rightmost_dim_names_the_prefix():
    with pytest.raises(ValueError, match="'my_plates'.*rightmost_dim"):
        with probnn.plate_stack("my_plates", [2], rightmost_dim=1):
            pass
