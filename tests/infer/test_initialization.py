"""Tests of the initialization strategies in probnn.infer.initialization."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.distributions.transforms import biject_to
from probnn.handlers import seed, substitute, trace
from probnn.infer.initialization import (
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
    initial_values_of,
)

STRATEGIES = [
    init_to_uniform,
    init_to_uniform(radius=0.5),
    init_to_feasible,
    init_to_median,
    init_to_median(num_samples=3),
    init_to_sample,
    init_to_mean,
    init_to_value(values={"normal": 0.25}),
]
# strategies that draw nothing from the prior (Gamma-based samplers are slow
# to compile, so the constrained model is drawn from once only)
NON_SAMPLING = [init_to_uniform, init_to_feasible, init_to_mean, init_to_median]


def model(y=None):
    probnn.sample("normal", dist.Normal(1.0, 2.0))
    probnn.sample("half", dist.HalfNormal(1.0), sample_shape=(2,))
    probnn.sample("uniform", dist.Uniform(-1.0, 3.0))
    probnn.sample("cauchy", dist.Cauchy(0.0, 1.0))
    with probnn.plate("N", 5):
        probnn.sample("local", dist.LogNormal(0.0, 1.0))
        probnn.sample("y", dist.Normal(0.0, 1.0), obs=y)
    probnn.deterministic("det", jnp.ones(2))
    probnn.param("w", 3.0)


def constrained_model(y=None):
    probnn.sample("beta", dist.Beta(2.0, 5.0))
    probnn.sample("gamma", dist.Gamma(jnp.array([1.0, 2.0, 3.0]), 1.0))
    probnn.sample("simplex", dist.Dirichlet(jnp.ones(4)))


LATENT = {
    model: ["normal", "half", "uniform", "cauchy", "local"],
    constrained_model: ["beta", "gamma", "simplex"],
}
Y = jnp.arange(5.0)


def initial_trace(strategy, rng_seed=0, fn=model):
    seeded = seed(fn, rng_seed=rng_seed)
    return trace(substitute(seeded, substitute_fn=strategy)).get_trace(Y)


def check_in_support_with_site_shapes(fn, strategy):
    tr = initial_trace(strategy, fn=fn)
    for name in LATENT[fn]:
        site = tr[name]
        value = site["value"]
        expected = site["fn"].shape(site["kwargs"]["sample_shape"])
        assert jnp.shape(value) == expected, name
        assert bool(jnp.all(site["fn"].support(value))), name
        assert bool(jnp.all(jnp.isfinite(value))), name
    return tr


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_land_in_support_with_site_shapes(strategy):
    tr = check_in_support_with_site_shapes(model, strategy)
    # observed sites, params and deterministic sites are left alone
    np.testing.assert_array_equal(tr["y"]["value"], Y)
    assert float(tr["w"]["value"]) == 3.0
    np.testing.assert_array_equal(tr["det"]["value"], jnp.ones(2))


@pytest.mark.parametrize("strategy", NON_SAMPLING)
def test_strategies_land_in_constrained_supports(strategy):
    check_in_support_with_site_shapes(constrained_model, strategy)


def test_init_to_feasible_is_image_of_unconstrained_origin():
    tr = initial_trace(init_to_feasible)
    np.testing.assert_allclose(tr["normal"]["value"], 0.0)
    np.testing.assert_allclose(tr["half"]["value"], [1.0, 1.0])  # exp(0)
    np.testing.assert_allclose(tr["uniform"]["value"], 1.0)  # middle of (-1, 3)
    np.testing.assert_allclose(tr["local"]["value"], np.ones(5))
    tr = initial_trace(init_to_feasible, fn=constrained_model)
    np.testing.assert_allclose(tr["beta"]["value"], 0.5)  # sigmoid(0)
    np.testing.assert_allclose(tr["simplex"]["value"], np.full(4, 0.25), rtol=1e-6)


def test_init_to_uniform_stays_in_the_radius_box_and_uses_the_key():
    radius = 0.3
    for fn, names in LATENT.items():
        tr = initial_trace(init_to_uniform(radius=radius), fn=fn)
        for name in names:
            site = tr[name]
            unconstrained = biject_to(site["fn"].support).inv(site["value"])
            assert bool(jnp.all(jnp.abs(unconstrained) <= radius + 1e-5)), name
    tr = initial_trace(init_to_uniform(radius=radius))
    other = initial_trace(init_to_uniform(radius=radius), rng_seed=1)
    assert float(tr["normal"]["value"]) != float(other["normal"]["value"])
    again = initial_trace(init_to_uniform(radius=radius))
    assert float(tr["normal"]["value"]) == float(again["normal"]["value"])


def test_init_to_median_approaches_the_prior_median():
    tr = initial_trace(init_to_median(num_samples=2001))
    np.testing.assert_allclose(tr["normal"]["value"], 1.0, atol=0.15)
    np.testing.assert_allclose(tr["local"]["value"], np.ones(5), atol=0.12)
    # median of HalfNormal(1): the 3/4 quantile of N(0, 1)
    np.testing.assert_allclose(tr["half"]["value"], [0.6745, 0.6745], atol=0.08)


def test_init_to_sample_is_a_prior_draw():
    tr = initial_trace(init_to_sample)
    site = tr["normal"]
    draw = site["fn"].sample(site["kwargs"]["rng_key"], (1,))[0]
    np.testing.assert_allclose(site["value"], draw, rtol=1e-6)


def test_init_to_mean_uses_the_mean_and_falls_back_where_it_is_not_finite():
    constrained = initial_trace(init_to_mean, fn=constrained_model)
    np.testing.assert_allclose(constrained["beta"]["value"], 2.0 / 7.0, rtol=1e-6)
    np.testing.assert_allclose(constrained["gamma"]["value"], [1, 2, 3], rtol=1e-6)
    np.testing.assert_allclose(constrained["simplex"]["value"], np.full(4, 0.25))
    tr = initial_trace(init_to_mean)
    np.testing.assert_allclose(tr["normal"]["value"], 1.0)
    np.testing.assert_allclose(tr["half"]["value"], np.full(2, np.sqrt(2 / np.pi)))
    np.testing.assert_allclose(tr["uniform"]["value"], 1.0)
    # Cauchy has no mean: the median strategy gives a finite value instead
    assert bool(jnp.isfinite(tr["cauchy"]["value"]))

    # under jit the finiteness check is traced and must give the same values
    @jax.jit
    def jitted(key):
        seeded = seed(model, rng_seed=key)
        tr = trace(substitute(seeded, substitute_fn=init_to_mean)).get_trace(Y)
        return tr["normal"]["value"], tr["cauchy"]["value"]

    normal, cauchy = jitted(jax.random.PRNGKey(0))
    np.testing.assert_allclose(normal, 1.0)
    np.testing.assert_allclose(cauchy, tr["cauchy"]["value"], rtol=1e-6)


def test_init_to_value_sets_given_sites_and_draws_the_others():
    strategy = init_to_value(values={"normal": 0.25, "local": jnp.arange(1.0, 6)})
    tr = initial_trace(strategy)
    np.testing.assert_allclose(tr["normal"]["value"], 0.25)
    np.testing.assert_allclose(tr["local"]["value"], [1.0, 2.0, 3.0, 4.0, 5.0])
    uniform = initial_trace(init_to_uniform)
    np.testing.assert_allclose(tr["uniform"]["value"], uniform["uniform"]["value"])
    assert set(strategy.values) == {"normal", "local"}
    assert initial_values_of(strategy) is strategy.values
    assert initial_values_of(init_to_uniform) is None
    # a hand-made partial, as NumPyro users may write, is recognised too
    handmade = functools.partial(init_to_value, values={"normal": 0.0})
    assert initial_values_of(handmade) == {"normal": 0.0}


def test_init_to_value_copies_its_dict():
    values = {"normal": 0.25}
    strategy = init_to_value(values=values)
    values["normal"] = 0.75
    np.testing.assert_allclose(initial_trace(strategy)["normal"]["value"], 0.25)


def test_strategies_leave_discrete_sites_to_their_own_draw():
    def discrete_model():
        return probnn.sample("k", dist.Poisson(3.0))

    drawn = seed(discrete_model, rng_seed=0)()
    for strategy in (init_to_uniform, init_to_median, init_to_mean, init_to_feasible):
        value = substitute(seed(discrete_model, rng_seed=0), substitute_fn=strategy)()
        assert float(value) == float(drawn)


def test_strategies_keep_values_set_by_inner_handlers():
    inner = substitute(model, data={"normal": 7.0})
    seeded = seed(inner, rng_seed=0)
    tr = trace(substitute(seeded, substitute_fn=init_to_median)).get_trace(Y)
    assert float(tr["normal"]["value"]) == 7.0


def test_strategy_without_seed_asks_for_one():
    def one_site():
        probnn.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'x'.*seed"):
        substitute(one_site, substitute_fn=init_to_uniform)()


def test_partials_bind_their_options():
    strategy = init_to_median(num_samples=7)
    assert strategy.keywords == {"num_samples": 7}
    assert init_to_uniform(radius=1.5).keywords == {"radius": 1.5}
