"""Mixtures and zero-inflated distributions against scipy and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

import probnn.distributions as dist
from probnn.distributions import constraints

N_DRAWS = 20000
FEW = settings(max_examples=25, deadline=None)

# Laplace arrives with the continuous families; two Normals otherwise.
if hasattr(dist, "Laplace"):
    SECOND_FAMILY, SECOND_REFERENCE = dist.Laplace, stats.laplace
    SECOND_VARIANCE_PER_SCALE2 = 2.0
else:  # pragma: no cover - depends on which families exist
    SECOND_FAMILY, SECOND_REFERENCE = dist.Normal, stats.norm
    SECOND_VARIANCE_PER_SCALE2 = 1.0


def f64(x):
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def _assert_mean_var(draws, mean, var):
    """Sample mean and variance within 5 standard errors of the closed forms."""
    draws = np.asarray(draws, dtype=np.float64)
    n = draws.shape[0]
    mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    np.testing.assert_array_less(
        np.abs(draws.mean(0) - mean), 5 * np.sqrt(var / n) + 1e-12
    )
    fourth = np.mean((draws - mean) ** 4, axis=0)
    se_var = np.sqrt(np.maximum(fourth - var**2, 0.0) / n)
    tolerance = 5 * se_var + 25 * var / n + 1e-12
    np.testing.assert_array_less(np.abs(draws.var(0) - var), tolerance)


def mixture_moments(weights, means, variances):
    """Mean and variance of a mixture, components along the last axis."""
    mean = np.sum(weights * means, -1)
    second = np.sum(weights * (variances + means**2), -1)
    return mean, second - mean**2


POSITIVE = st.floats(1e-3, 1e3).map(np.float32)
LOCS = st.floats(-10.0, 10.0, width=32)
SCALES = st.floats(0.1, 5.0).map(np.float32)


# -- MixtureSameFamily --------------------------------------------------------------


@FEW
@given(
    weights=st.lists(POSITIVE, min_size=3, max_size=3),
    locs=st.lists(LOCS, min_size=3, max_size=3),
    scales=st.lists(SCALES, min_size=3, max_size=3),
    value=st.floats(-30.0, 30.0, width=32),
)
def test_mixture_same_family_log_prob_matches_scipy(weights, locs, scales, value):
    weights, locs, scales = (np.array(x, np.float32) for x in (weights, locs, scales))
    probs = weights / weights.sum()
    d = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.asarray(probs)),
        dist.Normal(jnp.asarray(locs), jnp.asarray(scales)),
    )
    expected = special.logsumexp(
        np.log(f64(probs)) + stats.norm.logpdf(f64(value), f64(locs), f64(scales))
    )
    np.testing.assert_allclose(float(d.log_prob(value)), expected, rtol=1e-5, atol=1e-5)
    # the logits form gives the same mixture
    d = dist.MixtureSameFamily(
        dist.Categorical(logits=jnp.log(jnp.asarray(weights))),
        dist.Normal(jnp.asarray(locs), jnp.asarray(scales)),
    )
    np.testing.assert_allclose(float(d.log_prob(value)), expected, rtol=1e-5, atol=1e-5)


def _batched_same_family():
    """Mixing batch (2,) against components with batch (4, 1, 3)."""
    probs = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], np.float32)
    locs = np.linspace(-3, 3, 12, dtype=np.float32).reshape(4, 1, 3)
    scales = np.linspace(0.5, 2.0, 12, dtype=np.float32).reshape(4, 1, 3)
    d = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.asarray(probs)),
        dist.Normal(jnp.asarray(locs), jnp.asarray(scales)),
    )
    return d, probs, locs, scales


def test_mixture_same_family_broadcasts_batch_shapes():
    d, probs, locs, scales = _batched_same_family()
    assert d.batch_shape == (4, 2) and d.event_shape == ()
    assert d.mixture_size == 3 and d.mixture_dim == -1
    values = np.array([[-1.0], [0.5], [2.0]], np.float32)[:, :, None]  # (3, 1, 1)
    actual = np.asarray(d.log_prob(values))
    assert actual.shape == (3, 4, 2)
    expected = special.logsumexp(
        np.log(f64(probs))
        + stats.norm.logpdf(f64(values)[..., None], f64(locs), f64(scales)),
        axis=-1,
    )
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    mean, var = mixture_moments(f64(probs), f64(locs), f64(scales) ** 2)
    np.testing.assert_allclose(np.asarray(d.mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(d.variance), var, rtol=1e-5)


def test_mixture_same_family_sample_moments():
    d, probs, locs, scales = _batched_same_family()
    draws = d.sample(jax.random.PRNGKey(0), (N_DRAWS,))
    assert draws.shape == (N_DRAWS, 4, 2)
    mean, var = mixture_moments(f64(probs), f64(locs), f64(scales) ** 2)
    _assert_mean_var(draws, mean, var)


def test_sample_with_intermediates_reports_the_component_drawn():
    probs = np.array([0.2, 0.5, 0.3], np.float32)
    d = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.asarray(probs)),
        dist.Normal(jnp.array([0.0, 100.0, 200.0]), 1e-3),
    )
    draws, (indices,) = d.sample_with_intermediates(jax.random.PRNGKey(1), (N_DRAWS,))
    draws, indices = np.asarray(draws), np.asarray(indices)
    assert draws.shape == indices.shape == (N_DRAWS,)
    np.testing.assert_allclose(draws, 100.0 * indices, atol=0.01)
    freq = np.bincount(indices, minlength=3) / N_DRAWS
    se = np.sqrt(probs * (1 - probs) / N_DRAWS)
    np.testing.assert_array_less(np.abs(freq - probs), 5 * se)
    # sample() draws the same way from the same key
    np.testing.assert_array_equal(
        np.asarray(d.sample(jax.random.PRNGKey(1), (N_DRAWS,))), draws
    )


def test_mixture_same_family_with_event_shape():
    probs = np.array([0.3, 0.7], np.float32)
    locs = np.array([[0.0, 1.0, 2.0], [-1.0, 0.0, 4.0]], np.float32)
    components = dist.Normal(jnp.asarray(locs), 1.0).to_event(1)
    d = dist.MixtureSameFamily(dist.Categorical(probs=jnp.asarray(probs)), components)
    assert d.batch_shape == () and d.event_shape == (3,)
    assert d.mixture_dim == -2
    values = np.array([[0.5, 0.5, 3.0], [0.0, 0.0, 0.0]], np.float32)
    expected = special.logsumexp(
        np.log(f64(probs))
        + stats.norm.logpdf(f64(values)[:, None, :], f64(locs)).sum(-1),
        axis=-1,
    )
    np.testing.assert_allclose(np.asarray(d.log_prob(values)), expected, rtol=1e-5)
    draws = d.sample(jax.random.PRNGKey(2), (N_DRAWS,))
    assert draws.shape == (N_DRAWS, 3)
    mean, var = mixture_moments(f64(probs), f64(locs).T, np.ones((3, 2)))
    np.testing.assert_allclose(np.asarray(d.mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(d.variance), var, rtol=1e-5)
    _assert_mean_var(draws, mean, var)


def test_discrete_mixture_sums_to_one_and_cdf():
    probs = np.array([0.25, 0.75], np.float32)
    rates = np.array([1.5, 40.0], np.float32)
    d = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.asarray(probs)), dist.Poisson(jnp.asarray(rates))
    )
    assert d.support is constraints.nonnegative_integer
    values = np.arange(200.0)
    mass = np.exp(np.asarray(d.log_prob(values), np.float64))
    expected = np.sum(f64(probs) * stats.poisson.pmf(values[:, None], f64(rates)), -1)
    np.testing.assert_allclose(mass, expected, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(mass.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(d.cdf(values[:60])), np.cumsum(expected)[:60], rtol=1e-4, atol=1e-6
    )


def test_zero_weight_component_is_never_drawn_and_has_finite_gradients():
    mixing = dist.Categorical(probs=jnp.array([0.0, 1.0]))
    d = dist.MixtureSameFamily(mixing, dist.Normal(jnp.array([-50.0, 50.0]), 1.0))
    draws = np.asarray(d.sample(jax.random.PRNGKey(3), (1000,)))
    assert np.all(draws > 40)

    def log_prob(loc):
        return dist.MixtureSameFamily(mixing, dist.Normal(loc, 1.0)).log_prob(49.0)

    grad = np.asarray(jax.grad(log_prob)(jnp.array([-50.0, 50.0])))
    np.testing.assert_allclose(grad, [0.0, -1.0], atol=1e-6)


# -- MixtureGeneral and Mixture -----------------------------------------------------


@FEW
@given(
    weight=st.floats(0.01, 0.99).map(np.float32),
    locs=st.lists(LOCS, min_size=2, max_size=2),
    scales=st.lists(SCALES, min_size=2, max_size=2),
    value=st.floats(-30.0, 30.0, width=32),
)
def test_mixture_general_log_prob_matches_scipy(weight, locs, scales, value):
    probs = np.array([weight, 1 - weight], np.float32)
    d = dist.Mixture(
        dist.Categorical(probs=jnp.asarray(probs)),
        [dist.Normal(locs[0], scales[0]), SECOND_FAMILY(locs[1], scales[1])],
    )
    assert isinstance(d, dist.MixtureGeneral)
    log_densities = [
        stats.norm.logpdf(f64(value), f64(locs[0]), f64(scales[0])),
        SECOND_REFERENCE.logpdf(f64(value), f64(locs[1]), f64(scales[1])),
    ]
    expected = special.logsumexp(np.log(f64(probs)) + np.array(log_densities))
    np.testing.assert_allclose(float(d.log_prob(value)), expected, rtol=1e-5, atol=1e-5)


def _general_example():
    probs = np.array([0.3, 0.7], np.float32)
    locs = np.array([-2.0, 3.0], np.float32)
    scales = np.array([1.0, 0.5], np.float32)
    first = dist.Normal(jnp.full(3, locs[0]), scales[0])  # batch (3,)
    second = SECOND_FAMILY(locs[1], scales[1])  # batch ()
    d = dist.MixtureGeneral(dist.Categorical(probs=jnp.asarray(probs)), [first, second])
    variances = f64(scales) ** 2 * np.array([1.0, SECOND_VARIANCE_PER_SCALE2])
    return d, probs, locs, scales, variances


def test_mixture_general_moments_cdf_and_shapes():
    d, probs, locs, scales, variances = _general_example()
    assert d.batch_shape == (3,) and d.event_shape == ()
    assert len(d.component_distributions) == 2
    mean, var = mixture_moments(f64(probs), f64(locs), variances)
    np.testing.assert_allclose(np.asarray(d.mean), np.full(3, mean), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(d.variance), np.full(3, var), rtol=1e-5)
    draws = d.sample(jax.random.PRNGKey(4), (N_DRAWS,))
    assert draws.shape == (N_DRAWS, 3)
    _assert_mean_var(draws, np.full(3, mean), np.full(3, var))
    x = np.array([-3.0, 0.0, 3.2], np.float32)
    expected = probs[0] * stats.norm.cdf(f64(x), locs[0], scales[0]) + probs[
        1
    ] * SECOND_REFERENCE.cdf(f64(x), locs[1], scales[1])
    np.testing.assert_allclose(np.asarray(d.cdf(x)), expected, rtol=1e-5)
    assert d.component_sample(jax.random.PRNGKey(0), (5,)).shape == (5, 3, 2)


def test_mixture_general_with_explicit_support_masks_each_component():
    mixing = dist.Categorical(probs=jnp.array([0.4, 0.6]))
    components = [dist.Poisson(3.0), dist.Binomial(5, probs=0.5)]
    with pytest.raises(ValueError, match="support"):
        dist.MixtureGeneral(mixing, components)
    d = dist.MixtureGeneral(mixing, components, support=constraints.nonnegative_integer)
    assert d.support is constraints.nonnegative_integer
    values = np.arange(30.0)
    expected = np.log(
        0.4 * stats.poisson.pmf(values, 3.0) + 0.6 * stats.binom.pmf(values, 5, 0.5)
    )
    np.testing.assert_allclose(np.asarray(d.log_prob(values)), expected, rtol=1e-5)
    np.testing.assert_allclose(np.exp(expected).sum(), 1.0, rtol=1e-5)


def test_mixture_dispatches_on_the_kind_of_components():
    mixing = dist.Categorical(logits=jnp.zeros(2))
    same = dist.Mixture(mixing, dist.Normal(jnp.zeros(2), 1.0))
    assert type(same) is dist.MixtureSameFamily
    general = dist.Mixture(mixing, (dist.Normal(0.0, 1.0), dist.Normal(1.0, 1.0)))
    assert type(general) is dist.MixtureGeneral


def test_mixture_construction_errors():
    normals = dist.Normal(jnp.zeros(3), 1.0)
    with pytest.raises(ValueError, match="MixtureSameFamily.*Categorical"):
        dist.MixtureSameFamily(dist.Bernoulli(probs=0.5), normals)
    with pytest.raises(ValueError, match="MixtureSameFamily.*last batch dim"):
        dist.MixtureSameFamily(dist.Categorical(logits=jnp.zeros(2)), normals)
    with pytest.raises(ValueError, match="MixtureSameFamily.*Distribution"):
        dist.MixtureSameFamily(dist.Categorical(logits=jnp.zeros(3)), jnp.zeros(3))
    mixing = dist.Categorical(logits=jnp.zeros(2))
    with pytest.raises(ValueError, match="MixtureGeneral.*2 categories"):
        dist.MixtureGeneral(mixing, [dist.Normal(0.0, 1.0)])
    with pytest.raises(ValueError, match="MixtureGeneral.*event shape"):
        dist.MixtureGeneral(
            mixing, [dist.Normal(0.0, 1.0), dist.Normal(jnp.zeros(2), 1.0).to_event(1)]
        )
    with pytest.raises(ValueError, match="MixtureGeneral.*Distribution"):
        dist.MixtureGeneral(mixing, [dist.Normal(0.0, 1.0), 3.0])
    with pytest.raises(ValueError, match="MixtureGeneral.*Categorical"):
        dist.MixtureGeneral(dist.Normal(0.0, 1.0), [normals, normals])


# -- zero inflation -----------------------------------------------------------------


def zero_inflated_poisson_log_pmf(value, gate, rate):
    value, gate, rate = np.asarray(value), f64(gate), f64(rate)
    with np.errstate(divide="ignore"):
        nonzero = np.log1p(-gate) + stats.poisson.logpmf(value, rate)
        zero = np.logaddexp(np.log(gate), np.log1p(-gate) - rate)
    return np.where(value == 0, zero, nonzero)


@FEW
@given(
    gate=st.floats(0.0, 1.0, width=32, allow_subnormal=False),
    rate=st.floats(1e-3, 1e4).map(np.float32),
    value=st.integers(0, 20000),
)
def test_zero_inflated_distribution_of_poisson_is_zero_inflated_poisson(
    gate, rate, value
):
    generic = dist.ZeroInflatedDistribution(dist.Poisson(rate), gate=gate)
    special_case = dist.ZeroInflatedPoisson(gate, rate)
    expected = zero_inflated_poisson_log_pmf(value, gate, rate)
    for d in (generic, special_case):
        actual = float(d.log_prob(value))
        if np.isfinite(expected):
            np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=2e-5)
        else:
            assert actual == expected
    np.testing.assert_allclose(float(generic.mean), float(special_case.mean), rtol=1e-6)
    np.testing.assert_allclose(
        float(generic.variance), float(special_case.variance), rtol=1e-6
    )


def test_zero_inflated_classes_and_gate_forms():
    rates = jnp.array([0.5, 3.0, 50.0])
    values = jnp.arange(8.0)[:, None]
    by_gate = dist.ZeroInflatedDistribution(dist.Poisson(rates), gate=0.25)
    by_logits = dist.ZeroInflatedDistribution(
        dist.Poisson(rates), gate_logits=float(special.logit(0.25))
    )
    assert isinstance(by_gate, dist.ZeroInflatedProbs)
    assert isinstance(by_logits, dist.ZeroInflatedLogits)
    assert isinstance(dist.ZeroInflatedPoisson(0.2, 1.0), dist.ZeroInflatedProbs)
    np.testing.assert_allclose(
        np.asarray(by_logits.log_prob(values)),
        np.asarray(by_gate.log_prob(values)),
        rtol=1e-5,
    )
    np.testing.assert_allclose(np.asarray(by_logits.gate), 0.25, rtol=1e-6)
    # the positional gate of the brief and NumPyro's keyword both work
    positional = dist.ZeroInflatedDistribution(dist.Poisson(rates), 0.25)
    np.testing.assert_allclose(
        np.asarray(positional.log_prob(values)), np.asarray(by_gate.log_prob(values))
    )
    with pytest.raises(ValueError, match="exactly one"):
        dist.ZeroInflatedDistribution(dist.Poisson(1.0))
    with pytest.raises(ValueError, match="exactly one"):
        dist.ZeroInflatedDistribution(dist.Poisson(1.0), gate=0.5, gate_logits=0.0)


def test_zero_inflated_extreme_gate_logits_stay_finite():
    gate_logits = jnp.array([-30.0, 0.0, 30.0])
    d = dist.ZeroInflatedDistribution(dist.Poisson(4.0), gate_logits=gate_logits)
    values = np.array([0.0, 1.0, 9.0])[:, None]
    actual = np.asarray(d.log_prob(values))
    log_gate = special.log_expit(f64(gate_logits))
    log_keep = special.log_expit(-f64(gate_logits))
    poisson = stats.poisson.logpmf(values, 4.0)
    expected = np.where(
        values == 0, np.logaddexp(log_gate, log_keep + poisson), log_keep + poisson
    )
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    grad = jax.grad(
        lambda g: dist.ZeroInflatedLogits(dist.Poisson(4.0), g).log_prob(values).sum()
    )(gate_logits)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_zero_inflated_sample_moments_and_enumeration():
    gate = np.array([0.0, 0.4, 0.9], np.float32)
    d = dist.ZeroInflatedDistribution(dist.NegativeBinomial2(6.0, 2.0), gate=gate)
    mean, var = 6.0, 6.0 + 36.0 / 2.0
    expected_mean = (1 - f64(gate)) * mean
    expected_var = (1 - f64(gate)) * (var + mean**2) - expected_mean**2
    np.testing.assert_allclose(np.asarray(d.mean), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(d.variance), expected_var, rtol=1e-5)
    draws = np.asarray(d.sample(jax.random.PRNGKey(5), (N_DRAWS,)))
    assert draws.shape == (N_DRAWS, 3) and draws.dtype == np.int32
    assert np.all(draws >= 0)
    _assert_mean_var(draws, expected_mean, expected_var)
    np.testing.assert_allclose((draws == 0).mean(0)[2], 0.9 + 0.1 * 0.0625, atol=0.01)

    finite = dist.ZeroInflatedDistribution(dist.Binomial(6, probs=0.3), gate=gate)
    assert finite.has_enumerate_support
    support = finite.enumerate_support(expand=False)
    assert support.shape == (7, 1)
    assert finite.enumerate_support().shape == (7, 3)
    total = np.exp(np.asarray(finite.log_prob(support), np.float64)).sum(0)
    np.testing.assert_allclose(total, 1.0, rtol=1e-5)
    assert not dist.ZeroInflatedPoisson(0.3, 2.0).has_enumerate_support


def test_zero_inflated_negative_binomial2():
    d = dist.ZeroInflatedNegativeBinomial2(5.0, 1.5, gate=0.3)
    values = np.arange(6.0)
    nb = stats.nbinom.logpmf(values, 1.5, 1.5 / 6.5)
    expected = np.where(values == 0, np.log(0.3 + 0.7 * np.exp(nb)), np.log(0.7) + nb)
    np.testing.assert_allclose(np.asarray(d.log_prob(values)), expected, rtol=1e-5)


def test_zero_inflated_validation():
    with pytest.raises(ValueError, match=r"ZeroInflatedProbs\b.*'gate'"):
        dist.ZeroInflatedDistribution(dist.Poisson(2.0), gate=1.5, validate_args=True)
    with pytest.raises(ValueError, match=r"ZeroInflatedPoisson\b.*'gate'"):
        dist.ZeroInflatedPoisson(-0.1, 2.0, validate_args=True)
    with pytest.raises(ValueError, match="discrete"):
        dist.ZeroInflatedDistribution(dist.Normal(0.0, 1.0), gate=0.5)
    with pytest.raises(ValueError, match="event shape"):
        dist.ZeroInflatedDistribution(
            dist.Multinomial(3, probs=jnp.array([0.5, 0.5])), gate=0.5
        )
    d = dist.ZeroInflatedDistribution(dist.Poisson(2.0), gate=0.5, validate_args=True)
    with pytest.raises(ValueError, match="outside the support"):
        d.log_prob(-1.0)


# -- jit, vmap and scan -------------------------------------------------------------


def _pytree_examples():
    mixing = dist.Categorical(probs=jnp.array([0.3, 0.7]))
    return {
        "same_family": dist.MixtureSameFamily(
            mixing, dist.Normal(jnp.array([[-1.0, 1.0], [0.0, 2.0]]), 1.0)
        ),
        "general": dist.MixtureGeneral(
            mixing, [dist.Normal(jnp.zeros(2), 1.0), SECOND_FAMILY(1.0, 2.0)]
        ),
        "zero_inflated": dist.ZeroInflatedDistribution(
            dist.Poisson(jnp.array([1.0, 4.0])), gate=0.3
        ),
        "zero_inflated_logits": dist.ZeroInflatedDistribution(
            dist.Poisson(jnp.array([1.0, 4.0])), gate_logits=jnp.array([0.0, -1.0])
        ),
    }


VALUE = jnp.array([0.0, 2.0])


@pytest.mark.parametrize("name", list(_pytree_examples()))
def test_mixtures_pass_through_jit(name):
    d = _pytree_examples()[name]

    @jax.jit
    def f(d, value, key):
        return d, d.log_prob(value), d.sample(key, (3,))

    d2, log_prob, draws = f(d, VALUE, jax.random.PRNGKey(0))
    assert type(d2) is type(d) and d2.batch_shape == d.batch_shape == (2,)
    expected = np.asarray(d.log_prob(VALUE))
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(np.asarray(log_prob), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(d2.log_prob(VALUE)), expected, rtol=1e-6)
    assert draws.shape == (3, 2)
    assert np.all(np.isfinite(np.asarray(d.log_prob(draws))))


@pytest.mark.parametrize("name", list(_pytree_examples()))
def test_mixtures_stack_under_vmap_and_scan(name):
    d = _pytree_examples()[name]
    stacked = jax.tree.map(lambda leaf: jnp.stack([leaf] * 4), d)
    assert type(stacked) is type(d) and stacked.batch_shape == (4, 2)
    single = np.asarray(d.log_prob(VALUE))
    np.testing.assert_allclose(
        np.asarray(stacked.log_prob(VALUE)), np.broadcast_to(single, (4, 2)), rtol=1e-6
    )
    per_row = jax.vmap(lambda d: d.log_prob(VALUE))(stacked)
    np.testing.assert_allclose(
        np.asarray(per_row), np.broadcast_to(single, (4, 2)), rtol=1e-6
    )
    draws = jax.eval_shape(lambda k: stacked.sample(k, (5,)), jax.random.PRNGKey(0))
    assert draws.shape == (5, 4, 2)

    def step(carry, _):
        return carry, d

    _, scanned = jax.lax.scan(step, 0.0, None, length=3)
    assert scanned.batch_shape == (3, 2)
    at_two = jax.tree.map(lambda leaf: leaf[2], scanned)
    np.testing.assert_allclose(np.asarray(at_two.log_prob(VALUE)), single, rtol=1e-6)


def test_mixture_built_inside_vmap():
    locs = jnp.array([0.0, 1.0, 2.0])

    def make(loc):
        return dist.MixtureSameFamily(
            dist.Categorical(logits=jnp.zeros(2)),
            dist.Normal(jnp.stack([loc, -loc]), 1.0),
        )

    d = jax.vmap(make)(locs)
    assert isinstance(d, dist.MixtureSameFamily) and d.batch_shape == (3,)
    expected = special.logsumexp(
        np.log(0.5) + stats.norm.logpdf(0.5, np.stack([locs, -locs], -1), 1.0),
        axis=-1,
    )
    np.testing.assert_allclose(np.asarray(d.log_prob(0.5)), expected, rtol=1e-5)
    per_loc = jax.vmap(lambda loc: make(loc).log_prob(0.5))(locs)
    np.testing.assert_allclose(np.asarray(per_loc), expected, rtol=1e-5)
    zi = jax.vmap(lambda g: dist.ZeroInflatedPoisson(g, jnp.array([1.0, 2.0])))(
        jnp.array([0.1, 0.5, 0.9])
    )
    assert zi.batch_shape == (3, 2)
    np.testing.assert_allclose(
        np.asarray(zi.log_prob(0.0)),
        zero_inflated_poisson_log_pmf(0, [[0.1], [0.5], [0.9]], [1.0, 2.0]),
        rtol=1e-5,
    )
