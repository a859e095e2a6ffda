"""Discrete families against scipy.stats, closed forms and brute-force sums."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

import probnn.distributions as dist

N_DRAWS = 20000
FEW = settings(max_examples=25, deadline=None)

PROBS = st.floats(0.0, 1.0, width=32, allow_subnormal=False)
INNER_PROBS = st.floats(
    float(np.float32(1e-6)),
    float(np.float32(1 - 1e-6)),
    width=32,
    allow_subnormal=False,
)
LOGITS = st.floats(-30.0, 30.0, width=32)
COUNTS = st.integers(0, 1000)


def positive(low, high):
    """Log-uniformly spread positive float32 values in [low, high]."""
    return st.floats(np.log(low), np.log(high)).map(
        lambda x: float(np.float32(np.exp(x)))
    )


def f64(x):
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def assert_log_prob_close(actual, expected, rtol=2e-5):
    """Within ``rtol`` of the reference relative to max(1, |reference|), with
    -inf exactly where the reference has it and no NaN or inf where it is
    finite."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    actual, expected = np.broadcast_arrays(actual, expected)
    finite = np.isfinite(expected)
    assert np.all(np.isfinite(actual[finite])), (actual, expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=rtol)


def log_binomial_coefficient(n, k):
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


# -- log mass against scipy, hypothesis-drawn --------------------------------------


@FEW
@given(st.data())
def test_binomial_probs_log_prob_matches_scipy(data):
    n = data.draw(COUNTS)
    k = data.draw(st.integers(0, n))
    p = data.draw(PROBS)
    actual = dist.Binomial(n, probs=np.float32(p)).log_prob(k)
    with np.errstate(divide="ignore"):
        expected = stats.binom.logpmf(k, n, f64(p))
    assert_log_prob_close(actual, expected)


@FEW
@given(st.data())
def test_binomial_logits_log_prob_matches_scipy(data):
    n = data.draw(COUNTS)
    k = data.draw(st.integers(0, n))
    logits = f64(data.draw(LOGITS))
    actual = dist.Binomial(n, logits=np.float32(logits)).log_prob(k)
    # in log space throughout: scipy's binom would first round sigmoid(30) to 1
    expected = (
        log_binomial_coefficient(n, k)
        + k * special.log_expit(logits)
        + (n - k) * special.log_expit(-logits)
    )
    assert_log_prob_close(actual, expected)


@FEW
@given(st.data())
def test_multinomial_log_prob_matches_scipy(data):
    weights = np.array(data.draw(st.lists(positive(1e-3, 1e3), min_size=3, max_size=3)))
    probs = (weights / weights.sum()).astype(np.float32)
    n = data.draw(st.integers(0, 1000))
    first = data.draw(st.integers(0, n))
    second = data.draw(st.integers(0, n - first))
    value = np.array([first, second, n - first - second])
    actual = dist.Multinomial(n, probs=jnp.asarray(probs)).log_prob(value)
    p64 = f64(probs) / f64(probs).sum()
    assert_log_prob_close(actual, stats.multinomial.logpmf(value, n, p64))

    logits = np.array(data.draw(st.lists(LOGITS, min_size=3, max_size=3)), np.float32)
    actual = dist.Multinomial(n, logits=jnp.asarray(logits)).log_prob(value)
    expected = stats.multinomial.logpmf(value, n, special.softmax(f64(logits)))
    assert_log_prob_close(actual, expected)


@FEW
@given(rate=positive(1e-3, 1e4), value=st.integers(0, 20000))
def test_poisson_log_prob_matches_scipy(rate, value):
    actual = dist.Poisson(rate).log_prob(value)
    assert_log_prob_close(actual, stats.poisson.logpmf(value, f64(rate)))


@FEW
@given(total_count=positive(1e-2, 1e3), probs=INNER_PROBS, value=st.integers(0, 5000))
def test_negative_binomial_probs_log_prob_matches_scipy(total_count, probs, value):
    # NumPyro's probs is the probability attached to each count: scipy's 1 - p
    d = dist.NegativeBinomial(total_count, probs=probs)
    expected = stats.nbinom.logpmf(value, f64(total_count), 1 - f64(probs))
    assert_log_prob_close(d.log_prob(value), expected)
    assert isinstance(d, dist.GammaPoisson)


@FEW
@given(total_count=positive(1e-2, 1e3), logits=LOGITS, value=st.integers(0, 5000))
def test_negative_binomial_logits_log_prob_matches_reference(
    total_count, logits, value
):
    r, logits = f64(total_count), f64(logits)
    d = dist.NegativeBinomial(np.float32(r), logits=np.float32(logits))
    expected = (
        special.gammaln(value + r)
        - special.gammaln(r)
        - special.gammaln(value + 1)
        + r * special.log_expit(-logits)
        + value * special.log_expit(logits)
    )
    assert_log_prob_close(d.log_prob(value), expected)


@FEW
@given(
    concentration=positive(1e-3, 1e3),
    rate=positive(1e-3, 1e4),
    value=st.integers(0, 5000),
)
def test_gamma_poisson_log_prob_matches_scipy_nbinom(concentration, rate, value):
    a, b = f64(concentration), f64(rate)
    actual = dist.GammaPoisson(concentration, rate).log_prob(value)
    assert_log_prob_close(actual, stats.nbinom.logpmf(value, a, b / (1 + b)))


@FEW
@given(
    mean=positive(1e-3, 1e4),
    concentration=positive(1e-3, 1e3),
    value=st.integers(0, 20000),
)
def test_negative_binomial2_log_prob_matches_scipy_nbinom(mean, concentration, value):
    mu, a = f64(mean), f64(concentration)
    actual = dist.NegativeBinomial2(mean, concentration).log_prob(value)
    assert_log_prob_close(actual, stats.nbinom.logpmf(value, a, a / (a + mu)))


@FEW
@given(probs=PROBS.filter(lambda p: p > 0), logits=LOGITS, value=st.integers(0, 10000))
def test_geometric_log_prob_matches_scipy(probs, logits, value):
    # scipy's geom counts trials up to and including the first success
    with np.errstate(divide="ignore"):
        expected = stats.geom.logpmf(value + 1, f64(probs))
    assert_log_prob_close(dist.Geometric(probs=probs).log_prob(value), expected)
    logits64 = f64(logits)
    expected = special.log_expit(logits64) + value * special.log_expit(-logits64)
    assert_log_prob_close(dist.Geometric(logits=logits).log_prob(value), expected)


@FEW
@given(st.data())
def test_discrete_uniform_log_prob_matches_scipy(data):
    low = data.draw(st.integers(-50, 50))
    high = data.draw(st.integers(low, 100))
    value = data.draw(st.integers(low, high))
    actual = dist.DiscreteUniform(low, high).log_prob(value)
    assert_log_prob_close(actual, stats.randint.logpmf(value, low, high + 1))


@FEW
@given(
    data=st.data(),
    concentration1=positive(1e-3, 1e3),
    concentration0=positive(1e-3, 1e3),
)
def test_beta_binomial_log_prob_matches_scipy(data, concentration1, concentration0):
    n = data.draw(COUNTS)
    k = data.draw(st.integers(0, n))
    actual = dist.BetaBinomial(concentration1, concentration0, n).log_prob(k)
    a, b = f64(concentration1), f64(concentration0)
    assert_log_prob_close(actual, stats.betabinom.logpmf(k, n, a, b))


@FEW
@given(st.data())
def test_dirichlet_multinomial_log_prob_matches_scipy(data):
    alpha = np.array(
        data.draw(st.lists(positive(1e-3, 1e3), min_size=3, max_size=3)), np.float32
    )
    n = data.draw(st.integers(0, 1000))
    first = data.draw(st.integers(0, n))
    second = data.draw(st.integers(0, n - first))
    value = np.array([first, second, n - first - second])
    actual = dist.DirichletMultinomial(jnp.asarray(alpha), n).log_prob(value)
    expected = stats.dirichlet_multinomial.logpmf(value, f64(alpha), n)
    assert_log_prob_close(actual, expected)


def zero_inflated_poisson_log_pmf(value, gate, rate):
    value, gate, rate = np.asarray(value), f64(gate), f64(rate)
    with np.errstate(divide="ignore"):
        nonzero = np.log1p(-gate) + stats.poisson.logpmf(value, rate)
        zero = np.logaddexp(np.log(gate), np.log1p(-gate) - rate)
    return np.where(value == 0, zero, nonzero)


@FEW
@given(gate=PROBS, rate=positive(1e-3, 1e4), value=st.integers(0, 20000))
def test_zero_inflated_poisson_log_prob_matches_hand_written_pmf(gate, rate, value):
    actual = dist.ZeroInflatedPoisson(gate, rate).log_prob(value)
    expected = zero_inflated_poisson_log_pmf(value, gate, rate)
    assert_log_prob_close(actual, expected)


def ordered_logistic_probs(predictor, cutpoints):
    """Difference of sigmoids, in float64."""
    predictor = f64(predictor)[..., None]
    cutpoints = f64(cutpoints)
    pad = np.full(cutpoints.shape[:-1] + (1,), np.inf)
    below = np.concatenate([-pad, cutpoints], -1)
    above = np.concatenate([cutpoints, pad], -1)
    return special.expit(predictor - below) - special.expit(predictor - above)


@FEW
@given(
    predictor=st.floats(-10.0, 10.0, width=32),
    start=st.floats(-5.0, 5.0, width=32),
    gaps=st.lists(st.floats(0.05, 4.0), min_size=1, max_size=4),
)
def test_ordered_logistic_matches_difference_of_sigmoids(predictor, start, gaps):
    cutpoints = (start + np.cumsum([0.0] + gaps)).astype(np.float32)
    d = dist.OrderedLogistic(predictor, jnp.asarray(cutpoints))
    expected = ordered_logistic_probs(predictor, cutpoints)
    values = np.arange(len(cutpoints) + 1)
    np.testing.assert_allclose(np.asarray(d.probs), expected, rtol=1e-4, atol=1e-7)
    assert_log_prob_close(d.log_prob(values), np.log(expected), rtol=1e-4)


# -- log mass at a fixed grid of extreme values -----------------------------------


EXTREME_LOGITS = np.array([-30.0, -5.0, 0.0, 5.0, 30.0], np.float32)
EXTREME_PROBS = np.array([0.0, 1e-6, 0.5, 1 - 1e-6, 1.0], np.float32)
EXTREME_RATES = np.array([1e-3, 1.0, 1e4], np.float32)


def test_binomial_extreme_grid():
    n = 1000
    k = np.array([0, 1, 500, 999, 1000])[:, None]
    actual = dist.Binomial(n, logits=jnp.asarray(EXTREME_LOGITS)).log_prob(k)
    logits = f64(EXTREME_LOGITS)
    expected = (
        log_binomial_coefficient(n, k)
        + k * special.log_expit(logits)
        + (n - k) * special.log_expit(-logits)
    )
    assert_log_prob_close(actual, expected)
    actual = dist.Binomial(n, probs=jnp.asarray(EXTREME_PROBS)).log_prob(k)
    with np.errstate(divide="ignore"):
        expected = stats.binom.logpmf(k, n, f64(EXTREME_PROBS))
    assert_log_prob_close(actual, expected)


def test_poisson_and_zero_inflated_poisson_extreme_grid():
    k = np.array([0, 1, 10, 100, 9000, 10000, 11000, 100000])[:, None]
    actual = dist.Poisson(jnp.asarray(EXTREME_RATES)).log_prob(k)
    expected = stats.poisson.logpmf(k, f64(EXTREME_RATES))
    assert_log_prob_close(actual, expected)
    gate = np.array([0.0, 0.5, 1.0], np.float32)[:, None, None]
    actual = dist.ZeroInflatedPoisson(jnp.asarray(gate), jnp.asarray(EXTREME_RATES))
    assert_log_prob_close(
        actual.log_prob(k),
        zero_inflated_poisson_log_pmf(k, gate, EXTREME_RATES),
    )


def test_negative_binomial_family_extreme_grid():
    k = np.array([0, 1, 10, 1000, 10000])[:, None]
    logits = f64(EXTREME_LOGITS)
    # mean r exp(logits) of at most 1e4 keeps float32 draws meaningful
    r = np.float32(2.0)
    actual = dist.NegativeBinomial(r, logits=jnp.asarray(EXTREME_LOGITS)).log_prob(k)
    expected = (
        special.gammaln(k + 2.0)
        - special.gammaln(2.0)
        - special.gammaln(k + 1)
        + 2.0 * special.log_expit(-logits)
        + k * special.log_expit(logits)
    )
    assert_log_prob_close(actual, expected)
    rates = f64(EXTREME_RATES)
    actual = dist.GammaPoisson(jnp.asarray(EXTREME_RATES), jnp.asarray(EXTREME_RATES))
    expected = stats.nbinom.logpmf(k, rates, rates / (1 + rates))
    assert_log_prob_close(actual.log_prob(k), expected)
    actual = dist.NegativeBinomial2(jnp.asarray(EXTREME_RATES), 1e-3).log_prob(k)
    expected = stats.nbinom.logpmf(k, 1e-3, f64(1e-3) / (f64(1e-3) + rates))
    assert_log_prob_close(actual, expected)


def test_geometric_and_ordered_logistic_extreme_grid():
    k = np.array([0, 1, 100, 10000])[:, None]
    logits = f64(EXTREME_LOGITS)
    actual = dist.Geometric(logits=jnp.asarray(EXTREME_LOGITS)).log_prob(k)
    expected = special.log_expit(logits) + k * special.log_expit(-logits)
    assert_log_prob_close(actual, expected)
    cutpoints = np.array([-1.0, 0.0, 2.0], np.float32)
    d = dist.OrderedLogistic(jnp.asarray(EXTREME_LOGITS), jnp.asarray(cutpoints))
    values = np.arange(4)[:, None]
    expected = np.log(ordered_logistic_probs(EXTREME_LOGITS, cutpoints)).T
    assert_log_prob_close(d.log_prob(values), expected, rtol=1e-4)


# -- closed-form moments and sampling ----------------------------------------------


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


def _moment_cases():
    """name: (distribution, scipy frozen distribution or (mean, var), upper bound)"""
    p = np.array([0.05, 0.5, 0.9], np.float32)
    logits = special.logit(f64(p)).astype(np.float32)
    n = np.array([1, 20, 1000])
    r = np.array([0.5, 3.0, 20.0], np.float32)
    rate = np.array([1e-3, 2.5, 1e4], np.float32)
    a = np.array([0.5, 2.0, 30.0], np.float32)
    b = np.array([2.0, 0.5, 30.0], np.float32)
    gate = np.array([0.0, 0.3, 0.9], np.float32)
    return {
        "binomial_probs": (
            dist.Binomial(jnp.asarray(n), probs=jnp.asarray(p)),
            stats.binom(n, f64(p)),
            n,
        ),
        "binomial_logits": (
            dist.Binomial(jnp.asarray(n), logits=jnp.asarray(logits)),
            stats.binom(n, special.expit(f64(logits))),
            n,
        ),
        "poisson": (dist.Poisson(jnp.asarray(rate)), stats.poisson(f64(rate)), None),
        "negative_binomial_probs": (
            dist.NegativeBinomial(jnp.asarray(r), probs=jnp.asarray(p)),
            stats.nbinom(f64(r), 1 - f64(p)),
            None,
        ),
        "negative_binomial_logits": (
            dist.NegativeBinomial(jnp.asarray(r), logits=jnp.asarray(logits)),
            stats.nbinom(f64(r), special.expit(-f64(logits))),
            None,
        ),
        "negative_binomial2": (
            dist.NegativeBinomial2(jnp.asarray(rate), jnp.asarray(r)),
            stats.nbinom(f64(r), f64(r) / (f64(r) + f64(rate))),
            None,
        ),
        "gamma_poisson": (
            dist.GammaPoisson(jnp.asarray(a), jnp.asarray(b)),
            stats.nbinom(f64(a), f64(b) / (1 + f64(b))),
            None,
        ),
        "geometric_probs": (
            dist.Geometric(probs=jnp.asarray(p)),
            stats.geom(f64(p), loc=-1),
            None,
        ),
        "geometric_logits": (
            dist.Geometric(logits=jnp.asarray(logits)),
            stats.geom(special.expit(f64(logits)), loc=-1),
            None,
        ),
        "discrete_uniform": (
            dist.DiscreteUniform(jnp.array([-3, 0, 10]), jnp.array([3, 0, 1000])),
            stats.randint(np.array([-3, 0, 10]), np.array([4, 1, 1001])),
            np.array([3, 0, 1000]),
        ),
        "beta_binomial": (
            dist.BetaBinomial(jnp.asarray(a), jnp.asarray(b), jnp.asarray(n)),
            stats.betabinom(n, f64(a), f64(b)),
            n,
        ),
        "zero_inflated_poisson": (
            dist.ZeroInflatedPoisson(jnp.asarray(gate), jnp.asarray(rate)),
            (
                (1 - f64(gate)) * f64(rate),
                (1 - f64(gate)) * f64(rate) * (1 + f64(gate) * f64(rate)),
            ),
            None,
        ),
    }


MOMENT_CASES = list(_moment_cases())


def reference_moments(reference):
    if isinstance(reference, tuple):
        return reference
    with np.errstate(divide="ignore", invalid="ignore"):
        return reference.mean(), reference.var()


@pytest.mark.parametrize("name", MOMENT_CASES)
def test_mean_and_variance_match_closed_form(name):
    d, reference, _ = _moment_cases()[name]
    mean, var = reference_moments(reference)
    np.testing.assert_allclose(np.asarray(d.mean), mean, rtol=2e-5)
    np.testing.assert_allclose(np.asarray(d.variance), var, rtol=2e-5)


@pytest.mark.parametrize("name", MOMENT_CASES)
def test_sample_moments_and_support(name):
    d, reference, upper = _moment_cases()[name]
    mean, var = reference_moments(reference)
    draws = np.asarray(d.sample(jax.random.PRNGKey(7), (N_DRAWS,)))
    assert draws.shape == (N_DRAWS, 3)
    expected_dtype = np.float32 if name.startswith("geometric") else np.int32
    assert draws.dtype == expected_dtype
    assert np.all(draws == np.floor(draws))
    lower = -3 if name == "discrete_uniform" else 0
    assert np.all(draws >= np.array([lower, 0, 0] if lower else 0))
    if upper is not None:
        assert np.all(draws <= upper)
    _assert_mean_var(draws, mean, var)
    assert np.all(np.isfinite(np.asarray(d.log_prob(draws[:100]))))


def test_multinomial_sample_moments_and_support():
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0]], np.float32)
    n = np.array([10, 1000])
    for d in (
        dist.Multinomial(jnp.asarray(n), probs=jnp.asarray(probs)),
        dist.Multinomial(jnp.asarray(n), logits=jnp.log(jnp.asarray(probs))),
    ):
        draws = np.asarray(d.sample(jax.random.PRNGKey(3), (N_DRAWS,)))
        assert draws.shape == (N_DRAWS, 2, 3) and draws.dtype == np.int32
        np.testing.assert_array_equal(draws.sum(-1), np.broadcast_to(n, (N_DRAWS, 2)))
        assert np.all(draws[:, 1, 2] == 0)
        mean = n[:, None] * f64(probs)
        var = n[:, None] * f64(probs) * (1 - f64(probs))
        _assert_mean_var(draws, mean, var)
        np.testing.assert_allclose(np.asarray(d.mean), mean, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(d.variance), var, rtol=1e-5)


def test_dirichlet_multinomial_sample_moments_and_support():
    alpha = np.array([[0.5, 1.0, 2.0], [10.0, 1e-2, 3.0]], np.float32)
    n = np.array([7, 200])
    d = dist.DirichletMultinomial(jnp.asarray(alpha), jnp.asarray(n))
    draws = np.asarray(d.sample(jax.random.PRNGKey(4), (N_DRAWS,)))
    assert draws.shape == (N_DRAWS, 2, 3) and draws.dtype == np.int32
    np.testing.assert_array_equal(draws.sum(-1), np.broadcast_to(n, (N_DRAWS, 2)))
    reference = [stats.dirichlet_multinomial(f64(a), m) for a, m in zip(alpha, n)]
    mean = np.stack([ref.mean() for ref in reference])
    var = np.stack([ref.var() for ref in reference])
    _assert_mean_var(draws, mean, var)
    np.testing.assert_allclose(np.asarray(d.mean), mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(d.variance), var, rtol=1e-5)


def test_ordered_logistic_sample_frequencies():
    predictor = np.array([-2.0, 0.5], np.float32)
    cutpoints = np.array([-1.0, 0.0, 1.5], np.float32)
    d = dist.OrderedLogistic(jnp.asarray(predictor), jnp.asarray(cutpoints))
    draws = np.asarray(d.sample(jax.random.PRNGKey(5), (N_DRAWS,)))
    assert draws.shape == (N_DRAWS, 2)
    probs = ordered_logistic_probs(predictor, cutpoints)
    for k in range(4):
        freq = (draws == k).mean(0)
        se = np.sqrt(probs[:, k] * (1 - probs[:, k]) / N_DRAWS)
        np.testing.assert_array_less(np.abs(freq - probs[:, k]), 5 * se + 1e-12)


def _shape_examples(batch_shape):
    ones = jnp.ones(batch_shape)
    return {
        "binomial": (dist.Binomial(10, probs=0.3 * ones), ()),
        "binomial_logits": (dist.Binomial(10 * ones, logits=ones), ()),
        "multinomial": (
            dist.Multinomial(10, probs=jnp.full(batch_shape + (4,), 0.25)),
            (4,),
        ),
        "poisson": (dist.Poisson(2.0 * ones), ()),
        "negative_binomial": (dist.NegativeBinomial(2.0, probs=0.5 * ones), ()),
        "negative_binomial2": (dist.NegativeBinomial2(3.0 * ones, 2.0), ()),
        "gamma_poisson": (dist.GammaPoisson(ones, 2.0), ()),
        "geometric": (dist.Geometric(logits=ones), ()),
        "discrete_uniform": (dist.DiscreteUniform(0, 5 * ones.astype(int)), ()),
        "beta_binomial": (dist.BetaBinomial(ones, 2.0, 5), ()),
        "dirichlet_multinomial": (
            dist.DirichletMultinomial(jnp.ones(batch_shape + (3,)), 6),
            (3,),
        ),
        "zero_inflated_poisson": (dist.ZeroInflatedPoisson(0.3, 2.0 * ones), ()),
        "ordered_logistic": (dist.OrderedLogistic(ones, jnp.array([-1.0, 1.0])), ()),
    }


SHAPE_FAMILIES = list(_shape_examples(()))


@pytest.mark.parametrize(
    "sample_shape, batch_shape",
    [((), ()), ((4,), (3,)), ((2, 3), (2, 3)), ((), (2, 3))],
)
def test_sample_and_log_prob_shapes(sample_shape, batch_shape):
    key = jax.random.PRNGKey(0)
    for name, (d, event_shape) in _shape_examples(batch_shape).items():
        assert d.batch_shape == batch_shape, name
        assert d.event_shape == event_shape, name
        x = jax.eval_shape(lambda k, d=d: d.sample(k, sample_shape), key)
        assert x.shape == sample_shape + batch_shape + event_shape, name
        lp = jax.eval_shape(lambda v, d=d: d.log_prob(v), x)
        assert lp.shape == sample_shape + batch_shape, name


def test_parameters_broadcast_to_batch_shape():
    key = jax.random.PRNGKey(0)
    d = dist.Binomial(jnp.array([[5], [10]]), probs=jnp.array([0.1, 0.5, 0.9]))
    assert d.batch_shape == (2, 3)
    assert jax.eval_shape(lambda k: d.sample(k, (4,)), key).shape == (4, 2, 3)
    np.testing.assert_allclose(
        np.asarray(d.log_prob(3.0)),
        stats.binom.logpmf(3, [[5], [10]], f64([0.1, 0.5, 0.9])),
        rtol=1e-5,
    )
    d = dist.Multinomial(jnp.array([3, 4]), probs=jnp.full((5, 1, 3), 1 / 3))
    assert d.batch_shape == (5, 2) and d.event_shape == (3,)
    d = dist.OrderedLogistic(jnp.zeros((4, 1)), jnp.zeros((3, 2)) + jnp.array([0, 1]))
    assert d.batch_shape == (4, 3)
    d = dist.ZeroInflatedPoisson(jnp.array([0.1, 0.2]), jnp.ones((3, 1)))
    assert d.batch_shape == (3, 2)
    assert jax.eval_shape(lambda k: d.sample(k, (5,)), key).shape == (5, 3, 2)


# -- enumerate_support --------------------------------------------------------------


def test_binomial_enumerate_support_values_and_shapes():
    d = dist.Binomial(5, probs=jnp.full((2, 3), 0.3))
    full = np.asarray(d.enumerate_support(expand=True))
    assert full.shape == (6, 2, 3)
    np.testing.assert_array_equal(
        full, np.broadcast_to(np.arange(6)[:, None, None], (6, 2, 3))
    )
    small = np.asarray(d.enumerate_support(expand=False))
    assert small.shape == (6, 1, 1)
    np.testing.assert_array_equal(small.ravel(), np.arange(6))
    np.testing.assert_allclose(
        np.asarray(d.log_prob(small)),
        np.broadcast_to(
            stats.binom.logpmf(np.arange(6), 5, 0.3)[:, None, None], (6, 2, 3)
        ),
        rtol=1e-5,
    )


def test_discrete_uniform_and_beta_binomial_enumerate_support():
    d = dist.DiscreteUniform(-2, jnp.array([3, 3]))
    np.testing.assert_array_equal(
        np.asarray(d.enumerate_support()), np.repeat(np.arange(-2, 4)[:, None], 2, 1)
    )
    assert d.enumerate_support(expand=False).shape == (6, 1)
    d = dist.BetaBinomial(jnp.ones(3), 2.0, 4)
    assert d.enumerate_support().shape == (5, 3)
    assert d.enumerate_support(expand=False).shape == (5, 1)
    np.testing.assert_array_equal(
        np.asarray(d.enumerate_support(False)).ravel(), np.arange(5)
    )


def test_ordered_logistic_enumerate_support():
    d = dist.OrderedLogistic(jnp.zeros(2), jnp.array([-1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(
        np.asarray(d.enumerate_support()), np.repeat(np.arange(4)[:, None], 2, 1)
    )
    assert d.enumerate_support(expand=False).shape == (4, 1)


def test_enumerate_support_needs_one_concrete_count():
    with pytest.raises(NotImplementedError, match="total_count"):
        dist.Binomial(jnp.array([3, 4]), probs=0.5).enumerate_support()

    @jax.jit
    def traced(n):
        return dist.Binomial(n, probs=0.5).enumerate_support()

    with pytest.raises(NotImplementedError, match="total_count"):
        traced(3)

    # a constant count stays concrete inside jit, so enumeration works there
    @jax.jit
    def constant(p):
        return dist.Binomial(4, probs=p).enumerate_support()

    assert constant(jnp.full(3, 0.5)).shape == (5, 3)


def _finite_families():
    logits = jnp.asarray(EXTREME_LOGITS)
    return {
        "binomial_logits": dist.Binomial(1000, logits=logits),
        "binomial_probs": dist.Binomial(7, probs=jnp.asarray(EXTREME_PROBS)),
        "discrete_uniform": dist.DiscreteUniform(jnp.full(3, -4), 9),
        "beta_binomial": dist.BetaBinomial(
            jnp.array([1e-3, 1.0, 50.0]), jnp.array([2.0, 1e-3, 50.0]), 1000
        ),
        "ordered_logistic": dist.OrderedLogistic(logits, jnp.array([-1.0, 0.0, 2.0])),
        "bernoulli": dist.Bernoulli(logits=logits),
        "categorical": dist.Categorical(
            logits=jnp.stack([logits, -logits, 0 * logits])
        ),
    }


@pytest.mark.parametrize("name", list(_finite_families()))
def test_enumerated_support_probabilities_sum_to_one(name):
    d = _finite_families()[name]
    values = d.enumerate_support(expand=False)
    log_probs = np.asarray(d.log_prob(values), np.float64)
    assert log_probs.shape == values.shape[:1] + d.batch_shape
    assert not np.any(np.isnan(log_probs))
    np.testing.assert_allclose(np.exp(log_probs).sum(0), 1.0, rtol=2e-5)
    # the expanded form holds the same values
    full = d.enumerate_support(expand=True)
    assert full.shape == values.shape[:1] + d.batch_shape
    np.testing.assert_array_equal(np.asarray(full), np.broadcast_to(values, full.shape))


def _countable_families():
    return {
        "poisson": dist.Poisson(jnp.array([1e-3, 2.0, 100.0])),
        "geometric_probs": dist.Geometric(probs=jnp.array([0.05, 0.5, 1.0])),
        "geometric_logits": dist.Geometric(logits=jnp.array([-2.0, 0.0, 30.0])),
        "negative_binomial_probs": dist.NegativeBinomial(
            jnp.array([1e-3, 3.0, 50.0]), probs=jnp.array([0.9, 0.5, 0.1])
        ),
        "negative_binomial_logits": dist.NegativeBinomial(
            3.0, logits=jnp.array([-30.0, 0.0, 2.0])
        ),
        "negative_binomial2": dist.NegativeBinomial2(
            jnp.array([1e-3, 5.0, 100.0]), jnp.array([1e-3, 2.0, 1e3])
        ),
        "gamma_poisson": dist.GammaPoisson(jnp.array([0.5, 2.0, 40.0]), 0.5),
        "zero_inflated_poisson": dist.ZeroInflatedPoisson(
            jnp.array([0.0, 0.3, 1.0]), 20.0
        ),
    }


@pytest.mark.parametrize("name", list(_countable_families()))
def test_countable_support_probabilities_sum_to_one(name):
    d = _countable_families()[name]
    values = jnp.arange(3000.0)[:, None]
    log_probs = np.asarray(d.log_prob(values), np.float64)
    assert not np.any(np.isnan(log_probs))
    # the tails beyond 3000 hold less than 1e-6 for these parameters
    np.testing.assert_allclose(np.exp(log_probs).sum(0), 1.0, rtol=2e-5)


def _compositions(n, k):
    for cuts in itertools.combinations(range(n + k - 1), k - 1):
        edges = (-1,) + cuts + (n + k - 1,)
        yield [edges[i + 1] - edges[i] - 1 for i in range(k)]


@pytest.mark.parametrize(
    "d",
    [
        dist.Multinomial(6, probs=jnp.array([0.1, 0.3, 0.6])),
        dist.Multinomial(6, logits=jnp.array([-30.0, 0.0, 30.0])),
        dist.DirichletMultinomial(jnp.array([1e-2, 1.0, 20.0]), 6),
    ],
    ids=["multinomial_probs", "multinomial_logits", "dirichlet_multinomial"],
)
def test_multivariate_counts_sum_to_one_over_all_count_vectors(d):
    values = np.array(list(_compositions(6, 3)))
    assert len(values) == 28
    log_probs = np.asarray(d.log_prob(values), np.float64)
    assert not np.any(np.isnan(log_probs))
    np.testing.assert_allclose(np.exp(log_probs).sum(), 1.0, rtol=2e-5)


# -- cdf and icdf -------------------------------------------------------------------


@jax.jit
def jitted_cdf(d, value):
    # one compiled kernel per family instead of op-by-op dispatch
    return d.cdf(value)


# a few off-grid points, then 0..59 for the cumulative sums
CDF_POINTS = np.concatenate(
    [np.array([-3.0, -0.5, 2.7, 5000.0], np.float32), np.arange(60, dtype=np.float32)]
)


@jax.jit
def jitted_log_prob(d, value):
    return d.log_prob(value)


def test_cdf_matches_scipy_and_sums_the_mass():
    x = CDF_POINTS[:, None]
    integers = x[4:]
    geometric_probs = np.array([0.01, 0.5, 1.0], np.float32)
    geometric_logits = np.array([-30.0, 0.0, 5.0], np.float32)
    gamma_shape = f64([0.5, 2.0, 40.0])
    gamma_rate = f64([0.1, 1.0, 4.0])
    cases = [
        (dist.Poisson(jnp.asarray(EXTREME_RATES)), stats.poisson(f64(EXTREME_RATES))),
        (
            dist.Geometric(probs=jnp.asarray(geometric_probs)),
            stats.geom(f64(geometric_probs), loc=-1),
        ),
        (
            dist.Geometric(logits=jnp.asarray(geometric_logits)),
            stats.geom(special.expit(f64(geometric_logits)), loc=-1),
        ),
        (
            dist.DiscreteUniform(jnp.array([-2, 0, 3]), jnp.array([2, 0, 100])),
            stats.randint(np.array([-2, 0, 3]), np.array([3, 1, 101])),
        ),
        (
            dist.Binomial(jnp.array([1, 10, 1000]), probs=jnp.array([0.3, 0.5, 0.01])),
            stats.binom(np.array([1, 10, 1000]), f64([0.3, 0.5, 0.01])),
        ),
        (
            dist.GammaPoisson(jnp.asarray(gamma_shape), jnp.asarray(gamma_rate)),
            stats.nbinom(gamma_shape, gamma_rate / (1 + gamma_rate)),
        ),
        (
            dist.NegativeBinomial(3.0, probs=jnp.array([0.2, 0.5, 0.9])),
            stats.nbinom(3.0, 1 - f64([0.2, 0.5, 0.9])),
        ),
        (
            dist.NegativeBinomial2(jnp.array([0.5, 5.0, 1e3]), 2.0),
            stats.nbinom(2.0, 2.0 / (2.0 + f64([0.5, 5.0, 1e3]))),
        ),
    ]
    for d, reference in cases:
        actual = np.asarray(jitted_cdf(d, x))
        assert actual.shape == (len(CDF_POINTS), 3)
        with np.errstate(divide="ignore"):
            expected = reference.cdf(x)
        # 1e-4: the float32 continued fraction of the incomplete beta
        # function (binomial and negative binomial cdfs) near the mean of
        # 1000 trials (jax's betainc is off by 5e-4 there)
        np.testing.assert_allclose(
            actual, expected, rtol=1e-4, atol=1e-6, err_msg=repr(d)
        )
        checked = (dist.Poisson, dist.Geometric, dist.Binomial, dist.NegativeBinomial2)
        if type(d) not in checked:
            # DiscreteUniform's log_prob is not masked outside its support (as
            # in NumPyro); the other two share their cdf with NegativeBinomial2
            continue
        mass = np.exp(np.asarray(jitted_log_prob(d, integers), np.float64))
        np.testing.assert_allclose(
            actual[4:], np.cumsum(mass, 0), rtol=1e-3, atol=1e-6, err_msg=repr(d)
        )


def test_discrete_uniform_icdf_is_the_quantile():
    d = dist.DiscreteUniform(2, 5)
    q = np.array([0.0, 0.1, 0.25, 0.26, 0.5, 0.75, 0.99, 1.0], np.float32)
    np.testing.assert_array_equal(
        np.asarray(d.icdf(q)), stats.randint(2, 6).ppf(q).clip(2)
    )


# -- entropy -----------------------------------------------------------------------


def test_entropy_matches_scipy():
    p = np.array([1e-3, 0.3, 0.5, 1.0], np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = stats.geom(f64(p)).entropy()
    np.testing.assert_allclose(
        np.asarray(dist.Geometric(probs=jnp.asarray(p)).entropy()),
        expected,
        rtol=1e-5,
        atol=1e-7,
    )
    logits = np.array([-5.0, 0.0, 5.0, 30.0], np.float32)
    np.testing.assert_allclose(
        np.asarray(dist.Geometric(logits=jnp.asarray(logits)).entropy()),
        stats.geom(special.expit(f64(logits))).entropy(),
        rtol=1e-4,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        np.asarray(dist.DiscreteUniform(jnp.array([0, -3]), 7).entropy()),
        stats.randint([0, -3], 8).entropy(),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(dist.Bernoulli(logits=jnp.asarray(logits)).entropy()),
        stats.bernoulli(special.expit(f64(logits))).entropy(),
        rtol=1e-4,
        atol=1e-7,
    )
    probs = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(
        np.asarray(dist.Categorical(probs=jnp.asarray(probs)).entropy()),
        [stats.entropy(row) for row in f64(probs)],
        rtol=1e-5,
        atol=1e-7,
    )


# -- alternative forms and NumPyro's class names -----------------------------------


def test_numpyro_class_names_and_argument_orders():
    value = jnp.array([0.0, 2.0, 5.0])
    pairs = [
        (dist.BinomialProbs(0.3, 5), dist.Binomial(5, probs=0.3)),
        (dist.BinomialLogits(-0.4, 5), dist.Binomial(5, logits=-0.4)),
        (dist.NegativeBinomialProbs(2.0, 0.3), dist.NegativeBinomial(2.0, probs=0.3)),
        (dist.NegativeBinomialLogits(2.0, 0.3), dist.NegativeBinomial(2.0, logits=0.3)),
        (dist.GeometricProbs(0.3), dist.Geometric(probs=0.3)),
        (dist.GeometricLogits(0.3), dist.Geometric(logits=0.3)),
        (dist.BernoulliProbs(0.3), dist.Bernoulli(probs=0.3)),
        (dist.BernoulliLogits(0.3), dist.Bernoulli(logits=0.3)),
    ]
    for alias, original in pairs:
        assert isinstance(alias, type(original))
        v = jnp.minimum(value, 1.0) if isinstance(original, dist.Bernoulli) else value
        np.testing.assert_allclose(
            np.asarray(alias.log_prob(v)), np.asarray(original.log_prob(v))
        )
    probs = jnp.array([0.2, 0.8])
    counts = jnp.array([1.0, 3.0])
    np.testing.assert_allclose(
        np.asarray(dist.MultinomialProbs(probs, 4).log_prob(counts)),
        np.asarray(dist.Multinomial(4, probs=probs).log_prob(counts)),
    )
    np.testing.assert_allclose(
        np.asarray(dist.MultinomialLogits(jnp.log(probs), 4).log_prob(counts)),
        np.asarray(dist.Multinomial(4, probs=probs).log_prob(counts)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(dist.CategoricalLogits(jnp.log(probs)).log_prob(1)),
        np.asarray(dist.CategoricalProbs(probs).log_prob(1)),
        rtol=1e-6,
    )


def test_probs_and_logits_forms_agree():
    logits = jnp.array([-3.0, 0.0, 2.0])
    probs = jax.nn.sigmoid(logits)
    values = jnp.arange(6.0)[:, None]
    for make in [
        lambda **kw: dist.Binomial(5, **kw),
        lambda **kw: dist.NegativeBinomial(2.5, **kw),
        dist.Geometric,
    ]:
        a, b = make(probs=probs), make(logits=logits)
        np.testing.assert_allclose(
            np.asarray(a.log_prob(values)), np.asarray(b.log_prob(values)), rtol=1e-5
        )
        np.testing.assert_allclose(np.asarray(a.probs), np.asarray(b.probs), rtol=1e-6)
        np.testing.assert_allclose(
            np.asarray(a.logits), np.asarray(b.logits), atol=1e-5
        )
    for cls in [dist.Binomial, dist.Multinomial, dist.Geometric]:
        with pytest.raises(ValueError, match="exactly one"):
            cls(probs=jnp.ones(2) / 2, logits=jnp.zeros(2))


def test_negative_binomial_parameterisations_are_one_distribution():
    # NB(r, p) = GammaPoisson(r, 1/p - 1) = NegativeBinomial2(r p / (1 - p), r)
    r, p = 2.5, 0.3
    values = jnp.arange(30.0)
    reference = np.asarray(dist.NegativeBinomial(r, probs=p).log_prob(values))
    for d in [
        dist.GammaPoisson(r, 1 / p - 1),
        dist.NegativeBinomial2(r * p / (1 - p), r),
        dist.NegativeBinomial(r, logits=float(special.logit(p))),
    ]:
        np.testing.assert_allclose(np.asarray(d.log_prob(values)), reference, rtol=1e-5)
        np.testing.assert_allclose(float(d.concentration), r, rtol=1e-6)
        np.testing.assert_allclose(float(d.rate), 1 / p - 1, rtol=1e-5)


# -- validation ---------------------------------------------------------------------


INVALID_PARAMETERS = [
    ("Poisson", "rate", lambda: dist.Poisson(-1.0, validate_args=True)),
    ("Binomial", "probs", lambda: dist.Binomial(5, probs=1.5, validate_args=True)),
    (
        "Binomial",
        "total_count",
        lambda: dist.Binomial(-2, probs=0.5, validate_args=True),
    ),
    (
        "Binomial",
        "total_count",
        lambda: dist.Binomial(2.5, logits=0.0, validate_args=True),
    ),
    (
        "Multinomial",
        "probs",
        lambda: dist.Multinomial(3, probs=jnp.array([0.5, 0.6]), validate_args=True),
    ),
    (
        "NegativeBinomial",
        "total_count",
        lambda: dist.NegativeBinomial(0.0, probs=0.5, validate_args=True),
    ),
    (
        "NegativeBinomial2",
        "mean",
        lambda: dist.NegativeBinomial2(-1.0, 2.0, validate_args=True),
    ),
    ("GammaPoisson", "rate", lambda: dist.GammaPoisson(1.0, 0.0, validate_args=True)),
    ("Geometric", "probs", lambda: dist.Geometric(probs=-0.1, validate_args=True)),
    ("DiscreteUniform", "high", lambda: dist.DiscreteUniform(3, 1, validate_args=True)),
    (
        "DiscreteUniform",
        "low",
        lambda: dist.DiscreteUniform(0.5, 3, validate_args=True),
    ),
    (
        "BetaBinomial",
        "concentration0",
        lambda: dist.BetaBinomial(1.0, -1.0, 3, validate_args=True),
    ),
    (
        "DirichletMultinomial",
        "concentration",
        lambda: dist.DirichletMultinomial(jnp.array([1.0, 0.0]), 3, validate_args=True),
    ),
    (
        "ZeroInflatedPoisson",
        "gate",
        lambda: dist.ZeroInflatedPoisson(1.5, 2.0, validate_args=True),
    ),
    (
        "ZeroInflatedPoisson",
        "rate",
        lambda: dist.ZeroInflatedPoisson(0.5, 0.0, validate_args=True),
    ),
    (
        "OrderedLogistic",
        "cutpoints",
        lambda: dist.OrderedLogistic(0.0, jnp.array([1.0, -1.0]), validate_args=True),
    ),
]


@pytest.mark.parametrize(
    "family, parameter, make",
    INVALID_PARAMETERS,
    ids=[f"{f}-{p}" for f, p, _ in INVALID_PARAMETERS],
)
def test_invalid_parameters_raise_naming_family_and_parameter(family, parameter, make):
    with pytest.raises(ValueError, match=rf"{family}\b.*'{parameter}'"):
        make()


def test_valid_boundary_parameters_pass_validation():
    dist.Poisson(0.0, validate_args=True)
    dist.Binomial(0, probs=jnp.array([0.0, 1.0]), validate_args=True)
    dist.DiscreteUniform(2, 2, validate_args=True)
    dist.ZeroInflatedPoisson(jnp.array([0.0, 1.0]), 3.0, validate_args=True)
    dist.NegativeBinomial2(0.0, 1.0, validate_args=True)
    # unchecked without validate_args
    assert dist.Poisson(-1.0).batch_shape == ()


OUT_OF_SUPPORT = [
    ("poisson_negative", lambda: dist.Poisson(2.0, validate_args=True), -1.0),
    ("poisson_fraction", lambda: dist.Poisson(2.0, validate_args=True), 1.5),
    (
        "binomial_above_count",
        lambda: dist.Binomial(3, probs=0.5, validate_args=True),
        4,
    ),
    (
        "binomial_fraction",
        lambda: dist.Binomial(3, logits=0.5, validate_args=True),
        0.5,
    ),
    (
        "multinomial_wrong_total",
        lambda: dist.Multinomial(3, probs=jnp.array([0.5, 0.5]), validate_args=True),
        jnp.array([1.0, 1.0]),
    ),
    ("geometric_negative", lambda: dist.Geometric(probs=0.5, validate_args=True), -1.0),
    (
        "negative_binomial_fraction",
        lambda: dist.NegativeBinomial2(2.0, 1.0, validate_args=True),
        0.5,
    ),
    (
        "discrete_uniform_outside",
        lambda: dist.DiscreteUniform(0, 3, validate_args=True),
        4,
    ),
    (
        "beta_binomial_above_count",
        lambda: dist.BetaBinomial(1.0, 1.0, 2, validate_args=True),
        3,
    ),
    (
        "dirichlet_multinomial_fraction",
        lambda: dist.DirichletMultinomial(jnp.ones(2), 2, validate_args=True),
        jnp.array([0.5, 1.5]),
    ),
    (
        "zero_inflated_poisson_negative",
        lambda: dist.ZeroInflatedPoisson(0.5, 2.0, validate_args=True),
        -2.0,
    ),
    (
        "ordered_logistic_outside",
        lambda: dist.OrderedLogistic(0.0, jnp.array([-1.0, 1.0]), validate_args=True),
        3,
    ),
]


@pytest.mark.parametrize(
    "name, make, value", OUT_OF_SUPPORT, ids=[c[0] for c in OUT_OF_SUPPORT]
)
def test_log_prob_outside_support_raises(name, make, value):
    d = make()
    with pytest.raises(ValueError, match="outside the support"):
        d.log_prob(value)


# -- jit, vmap, scan, gradients ----------------------------------------------------


def _pytree_examples():
    return {
        "binomial": (
            dist.Binomial(jnp.array([3, 8]), logits=jnp.array([0.1, -2.0])),
            jnp.array([1.0, 7.0]),
        ),
        "multinomial": (
            dist.Multinomial(4, probs=jnp.array([[0.2, 0.8], [0.5, 0.5]])),
            jnp.array([1.0, 3.0]),
        ),
        "poisson": (dist.Poisson(jnp.array([0.5, 3.0])), jnp.array([0.0, 4.0])),
        "negative_binomial": (
            dist.NegativeBinomial(2.0, probs=jnp.array([0.2, 0.7])),
            jnp.array([3.0, 1.0]),
        ),
        "negative_binomial2": (
            dist.NegativeBinomial2(jnp.array([0.5, 9.0]), 2.0),
            jnp.array([3.0, 1.0]),
        ),
        "gamma_poisson": (
            dist.GammaPoisson(jnp.array([0.5, 9.0]), 2.0),
            jnp.array([3.0, 1.0]),
        ),
        "geometric": (
            dist.Geometric(logits=jnp.array([0.5, -1.0])),
            jnp.array([3.0, 1.0]),
        ),
        "discrete_uniform": (
            dist.DiscreteUniform(jnp.array([0, -2]), 4),
            jnp.array([3, -1]),
        ),
        "beta_binomial": (
            dist.BetaBinomial(jnp.array([0.5, 2.0]), 1.0, 6),
            jnp.array([3.0, 1.0]),
        ),
        "dirichlet_multinomial": (
            dist.DirichletMultinomial(jnp.array([[0.5, 2.0], [1.0, 1.0]]), 5),
            jnp.array([2.0, 3.0]),
        ),
        "zero_inflated_poisson": (
            dist.ZeroInflatedPoisson(jnp.array([0.2, 0.6]), 3.0),
            jnp.array([0.0, 2.0]),
        ),
        "ordered_logistic": (
            dist.OrderedLogistic(jnp.array([0.2, 1.0]), jnp.array([-1.0, 0.5])),
            jnp.array([0, 2]),
        ),
    }


PYTREE_FAMILIES = list(_pytree_examples())


@pytest.mark.parametrize("name", PYTREE_FAMILIES)
def test_distribution_passes_through_jit(name):
    d, value = _pytree_examples()[name]

    @jax.jit
    def f(d, value):
        return d, d.log_prob(value)

    d2, lp = f(d, value)
    assert type(d2) is type(d)
    assert d2.batch_shape == d.batch_shape and d2.event_shape == d.event_shape
    expected = np.asarray(d.log_prob(value))
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(np.asarray(lp), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(d2.log_prob(value)), expected, rtol=1e-6)
    # the sampler traces under jit (no Python control flow on traced values);
    # its draws are checked eagerly in the moment tests, from the same code
    draws = jax.eval_shape(
        jax.jit(lambda d, key: d.sample(key, (3,))), d, jax.random.PRNGKey(0)
    )
    assert draws.shape == (3,) + d.batch_shape + d.event_shape


@pytest.mark.parametrize("name", PYTREE_FAMILIES)
def test_vmap_and_scan_stack_distributions(name):
    d, value = _pytree_examples()[name]
    # leaves stacked along a new leading dim give a new leading batch dim
    stacked = jax.tree.map(lambda leaf: jnp.stack([leaf] * 4), d)
    assert type(stacked) is type(d)
    assert stacked.batch_shape == (4,) + d.batch_shape
    single = np.asarray(d.log_prob(value))
    per_row = jax.vmap(lambda d: d.log_prob(value))(stacked)
    np.testing.assert_allclose(
        np.asarray(per_row), np.broadcast_to(single, per_row.shape), rtol=1e-6
    )
    returned = jax.vmap(lambda d: d)(stacked)
    assert type(returned) is type(d) and returned.batch_shape == stacked.batch_shape
    draws = jax.eval_shape(lambda k: stacked.sample(k, (2,)), jax.random.PRNGKey(1))
    assert draws.shape == (2, 4) + d.batch_shape + d.event_shape

    def step(carry, _):
        return carry, d

    _, scanned = jax.lax.scan(step, 0.0, None, length=3)
    assert type(scanned) is type(d)
    assert scanned.batch_shape == (3,) + d.batch_shape
    at_one = jax.tree.map(lambda leaf: leaf[1], scanned)
    np.testing.assert_allclose(np.asarray(at_one.log_prob(value)), single, rtol=1e-6)


def test_vmap_over_constructor_parameters():
    rates = jnp.array([0.5, 2.0, 7.0])
    d = jax.vmap(lambda r: dist.ZeroInflatedPoisson(0.25, r))(rates)
    assert d.batch_shape == (3,)
    np.testing.assert_allclose(
        np.asarray(d.log_prob(2.0)),
        zero_inflated_poisson_log_pmf(2, 0.25, np.asarray(rates)),
        rtol=1e-5,
    )
    d = jax.vmap(lambda x: dist.OrderedLogistic(x, jnp.array([-1.0, 1.0])))(rates)
    assert d.batch_shape == (3,)
    np.testing.assert_allclose(
        np.asarray(d.probs),
        ordered_logistic_probs(rates, np.array([-1.0, 1.0])),
        rtol=1e-5,
    )
    counts = jax.eval_shape(
        jax.vmap(lambda p: dist.Binomial(10, probs=p).sample(jax.random.PRNGKey(0))),
        jnp.array([0.0, 1.0]),
    )
    assert counts.shape == (2,) and counts.dtype == jnp.int32


def test_log_prob_gradients_are_finite_at_extremes():
    k = jnp.array([0.0, 1.0, 500.0, 1000.0])[:, None]
    cutpoints = jnp.array([-1.0, 0.0, 2.0])
    categories = jnp.arange(4)[:, None]
    gates = jnp.array([1e-6, 0.5, 1 - 1e-6])
    cases = {
        "binomial": (lambda x: dist.Binomial(1000, logits=x).log_prob(k), "logits"),
        "negative_binomial": (
            lambda x: dist.NegativeBinomial(2.0, logits=x).log_prob(k),
            "logits",
        ),
        "poisson": (lambda x: dist.Poisson(x).log_prob(k), "rates"),
        "gamma_poisson": (lambda x: dist.GammaPoisson(x, x).log_prob(k), "rates"),
        "beta_binomial": (
            lambda x: dist.BetaBinomial(x, 1.0, 1000).log_prob(k),
            "rates",
        ),
        "zero_inflated_poisson": (
            lambda x: dist.ZeroInflatedPoisson(x, 3.0).log_prob(k),
            "gates",
        ),
        "ordered_logistic_predictor": (
            lambda x: dist.OrderedLogistic(x, cutpoints).log_prob(categories),
            "logits",
        ),
        "ordered_logistic_cutpoints": (
            lambda x: dist.OrderedLogistic(jnp.asarray(EXTREME_LOGITS), x).log_prob(
                categories
            ),
            "cutpoints",
        ),
    }
    arguments = {
        "logits": jnp.asarray(EXTREME_LOGITS),
        "rates": jnp.asarray(EXTREME_RATES),
        "gates": gates,
        "cutpoints": cutpoints,
    }

    @jax.jit
    def all_gradients(arguments):
        return {
            name: jax.grad(lambda x, f=f: jnp.sum(f(x)))(arguments[kind])
            for name, (f, kind) in cases.items()
        }

    for name, g in all_gradients(arguments).items():
        assert np.all(np.isfinite(np.asarray(g))), (name, g)


def test_log_prob_gradients_match_closed_forms():
    k = jnp.array([0.0, 3.0, 40.0, 1e4])
    cutpoints = np.array([-1.0, 0.3, 2.0])

    @jax.jit
    def gradients(rate, logits, predictor):
        poisson = jax.grad(lambda r: dist.Poisson(r).log_prob(k).sum())(rate)
        binomial = jax.grad(lambda x: dist.Binomial(20, logits=x).log_prob(7.0))(logits)
        ordered = jax.grad(
            lambda x: dist.OrderedLogistic(
                x, jnp.asarray(cutpoints, jnp.float32)
            ).log_prob(1)
        )(predictor)
        return poisson, binomial, ordered

    poisson, binomial, ordered = gradients(5.0, 0.4, 0.2)
    # d/drate Poisson log mass = k / rate - 1
    np.testing.assert_allclose(
        float(poisson), np.sum(np.asarray(k) / 5.0 - 1), rtol=1e-5
    )
    # d/dlogits Binomial log mass = k - n sigmoid(logits)
    np.testing.assert_allclose(float(binomial), 7 - 20 * special.expit(0.4), rtol=1e-5)
    # OrderedLogistic against central differences in float64 numpy
    eps = 1e-5
    fd = (
        np.log(ordered_logistic_probs(0.2 + eps, cutpoints)[1])
        - np.log(ordered_logistic_probs(0.2 - eps, cutpoints)[1])
    ) / (2 * eps)
    np.testing.assert_allclose(float(ordered), fd, rtol=1e-3)


def test_constructor_errors_are_clear():
    with pytest.raises(ValueError, match="Multinomial.*last dim"):
        dist.Multinomial(3, probs=0.5)
    with pytest.raises(ValueError, match="DirichletMultinomial.*last dim"):
        dist.DirichletMultinomial(1.0, 3)
    with pytest.raises(ValueError, match="OrderedLogistic.*last dim"):
        dist.OrderedLogistic(0.0, 1.0)
    with pytest.raises(ValueError, match="ZeroInflatedProbs.*discrete"):
        dist.ZeroInflatedProbs(dist.Normal(0.0, 1.0), 0.5)


# -- the softplus pieces shared by the logits families ---------------------------------


def _logits_grid():
    dense = np.linspace(-87.0, 87.0, 174001)
    tiny = np.geomspace(1e-30, 1.0, 2001)
    return np.concatenate([dense, tiny, -tiny, [0.0]]).astype(np.float32)


def test_softplus_parts_match_float64():
    from probnn.distributions.util import log_sigmoid_pair, softplus_parts

    x = _logits_grid()
    x64 = f64(x)
    positive, negative, tail = jax.jit(softplus_parts)(x)
    np.testing.assert_array_equal(positive, np.maximum(x, 0))
    np.testing.assert_array_equal(negative, np.maximum(-x, 0))
    np.testing.assert_allclose(f64(tail), np.log1p(np.exp(-np.abs(x64))), rtol=5e-7)
    # log sigmoid of +-x share that tail and keep their digits in both tails
    log_p, log_q = jax.jit(log_sigmoid_pair)(x)
    np.testing.assert_allclose(f64(log_p), -np.logaddexp(0.0, -x64), rtol=5e-7)
    np.testing.assert_allclose(f64(log_q), -np.logaddexp(0.0, x64), rtol=5e-7)


@pytest.mark.parametrize("sign", [1, -1])
def test_softplus_parts_derivatives_are_sigmoid_also_at_zero(sign):
    # softplus(+-x) from the parts: first derivative +-sigmoid(+-x), second
    # sigmoid', also at x = 0 exactly, where |x| and max(x, 0) have kinks
    from probnn.distributions.util import softplus_parts

    def softplus(t):
        positive, negative, tail = softplus_parts(t)
        return (positive if sign > 0 else negative) + tail

    x = _logits_grid()
    sigmoid = special.expit(f64(x))
    first = jax.jit(jax.vmap(jax.grad(softplus)))(x)
    second = jax.jit(jax.vmap(jax.grad(jax.grad(softplus))))(x)
    expected = sign * special.expit(sign * f64(x))
    np.testing.assert_allclose(f64(first), expected, rtol=5e-7, atol=1e-30)
    np.testing.assert_allclose(
        f64(second), sigmoid * (1 - sigmoid), rtol=1e-6, atol=1e-12
    )


@pytest.mark.parametrize("value", [0.0, 1.0, 0.3])
def test_bernoulli_logits_gradient_at_zero_logits(value):
    # d/dl [v l - softplus(l)] = v - sigmoid(l) = v - 1/2 at l = 0; autodiff
    # through |l| and max(l, 0) used to give v (the kinks summed to 1 there)
    def log_prob(logits):
        return dist.Bernoulli(logits=logits).log_prob(value)

    grad = jax.grad(log_prob)(0.0)
    assert float(grad) == pytest.approx(value - 0.5, abs=1e-7)
    hess = jax.grad(jax.grad(log_prob))(0.0)
    assert float(hess) == pytest.approx(-0.25, abs=1e-7)
