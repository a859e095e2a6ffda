"""Tests of probnn.distributions against scipy.stats, closed forms and plain JAX."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import probnn
import probnn.distributions as dist

N_DRAWS = 20000


def assert_no_nan_where_finite(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    finite = np.isfinite(expected)
    assert np.all(np.isfinite(actual[finite])), actual


# -- log densities against scipy ---------------------------------------------------


@pytest.mark.parametrize("loc", [-2.0, 0.0, 3.0])
@pytest.mark.parametrize("scale", [1e-3, 0.5, 1.0, 10.0])
def test_normal_log_prob_matches_scipy(loc, scale):
    values = np.array([-3.0, -0.5, 0.0, 1e-3, 2.0, 3.0, 3.001], dtype=np.float32)
    actual = dist.Normal(loc, scale).log_prob(values)
    expected = stats.norm.logpdf(values.astype(np.float64), loc, scale)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=2e-5, atol=1e-5)
    assert_no_nan_where_finite(actual, expected)


def test_normal_log_prob_broadcasts_value_against_batch():
    loc = jnp.array([0.0, 1.0, -1.0])
    scale = jnp.array([1.0, 2.0, 0.5])
    values = np.linspace(-2, 2, 4, dtype=np.float32)[:, None]
    actual = dist.Normal(loc, scale).log_prob(values)
    assert actual.shape == (4, 3)
    expected = stats.norm.logpdf(values, np.asarray(loc), np.asarray(scale))
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5)


LOGITS = np.array([-100.0, -30.0, -5.0, -1e-3, 0.0, 0.7, 5.0, 30.0, 100.0])


def bernoulli_log_pmf_from_logits(value, logits):
    # log P(X = k) = log sigmoid((2k - 1) * logits), evaluated with scipy so that
    # neither tail loses precision
    logits = np.asarray(logits, dtype=np.float64)
    return stats.bernoulli.logpmf(1, special.expit((2 * value - 1) * logits))


@pytest.mark.parametrize("value", [0, 1])
def test_bernoulli_logits_log_prob_matches_scipy(value):
    actual = dist.Bernoulli(logits=jnp.asarray(LOGITS)).log_prob(value)
    expected = bernoulli_log_pmf_from_logits(value, LOGITS)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-12)
    assert_no_nan_where_finite(actual, expected)


PROBS = np.array([0.0, 1e-6, 0.1, 0.5, 0.9, 1 - 1e-6, 1.0], dtype=np.float32)


@pytest.mark.parametrize("value", [0, 1])
def test_bernoulli_probs_log_prob_matches_scipy(value):
    actual = dist.Bernoulli(probs=jnp.asarray(PROBS)).log_prob(value)
    with np.errstate(divide="ignore"):
        expected = stats.bernoulli.logpmf(value, PROBS.astype(np.float64))
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-12)
    assert_no_nan_where_finite(actual, expected)


def test_bernoulli_probs_and_logits_forms_agree():
    logits = jnp.array([-3.0, 0.0, 2.0])
    probs = jax.nn.sigmoid(logits)
    values = jnp.array([[0.0], [1.0]])
    np.testing.assert_allclose(
        np.asarray(dist.Bernoulli(logits=logits).log_prob(values)),
        np.asarray(dist.Bernoulli(probs=probs).log_prob(values)),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        np.asarray(dist.Bernoulli(logits=logits).probs),
        special.expit(np.asarray(logits)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(dist.Bernoulli(probs=probs).logits), np.asarray(logits), atol=1e-5
    )


@pytest.mark.parametrize(
    "probs",
    [
        [0.2, 0.3, 0.5],
        [0.0, 0.25, 0.75],
        [1e-7, 1 - 2e-7, 1e-7],
        [[0.1, 0.6, 0.3], [1.0, 0.0, 0.0]],
    ],
)
def test_categorical_probs_log_prob_is_log_of_probs(probs):
    probs = np.asarray(probs, dtype=np.float32)
    d = dist.Categorical(probs=jnp.asarray(probs))
    assert d.batch_shape == probs.shape[:-1]
    for k in range(3):
        actual = d.log_prob(k)
        with np.errstate(divide="ignore"):
            expected = np.log(probs[..., k].astype(np.float64))
        np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-6)
        assert_no_nan_where_finite(actual, expected)


@pytest.mark.parametrize(
    "logits",
    [
        [0.0, 0.0, 0.0],
        [1.0, -2.0, 0.5],
        [30.0, -30.0, 0.0],
        [100.0, -100.0, 50.0],
        [[-30.0, 30.0, 0.0], [2.0, 2.0, -1.0]],
    ],
)
def test_categorical_logits_log_prob_matches_log_softmax(logits):
    logits = np.asarray(logits, dtype=np.float32)
    d = dist.Categorical(logits=jnp.asarray(logits))
    expected_all = special.log_softmax(logits.astype(np.float64), axis=-1)
    for k in range(3):
        actual = d.log_prob(k)
        np.testing.assert_allclose(
            np.asarray(actual), expected_all[..., k], rtol=1e-5, atol=1e-6
        )
        assert_no_nan_where_finite(actual, expected_all[..., k])
    np.testing.assert_allclose(
        np.asarray(d.probs), np.exp(expected_all), rtol=1e-5, atol=1e-30
    )


def test_categorical_log_prob_broadcasts_values():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]], dtype=np.float32)
    values = np.array([[0], [1], [2], [1]])
    actual = dist.Categorical(probs=jnp.asarray(probs)).log_prob(values)
    assert actual.shape == (4, 2)
    expected = np.log(probs[np.arange(2)[None, :], values])
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-6)


# -- sampling ----------------------------------------------------------------------

SAMPLE_SHAPES = [(), (4,), (2, 3)]
BATCH_SHAPES = [(), (3,), (2, 3)]


def _shape_examples(batch_shape):
    return {
        "normal": dist.Normal(jnp.zeros(batch_shape), 1.0),
        "bernoulli_probs": dist.Bernoulli(probs=jnp.full(batch_shape, 0.3)),
        "bernoulli_logits": dist.Bernoulli(logits=jnp.zeros(batch_shape)),
        "categorical_probs": dist.Categorical(probs=jnp.full(batch_shape + (4,), 0.25)),
        "categorical_logits": dist.Categorical(logits=jnp.zeros(batch_shape + (4,))),
    }


@pytest.mark.parametrize("sample_shape", SAMPLE_SHAPES)
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_sample_shapes(sample_shape, batch_shape):
    # shapes only: evaluated abstractly, so the grid costs no compilation
    key = jax.random.PRNGKey(0)
    expected = sample_shape + batch_shape
    for name, d in _shape_examples(batch_shape).items():
        assert d.batch_shape == batch_shape, name
        assert d.event_shape == (), name
        assert d.shape(sample_shape) == expected, name
        x = jax.eval_shape(lambda k, d=d: d.sample(k, sample_shape), key)
        assert x.shape == expected, name
        lp = jax.eval_shape(lambda v, d=d: d.log_prob(v), x)
        assert lp.shape == expected, name


@pytest.mark.parametrize("name", list(_shape_examples(())))
def test_concrete_sample_shape_and_support(name):
    d = _shape_examples((2, 3))[name]
    x = np.asarray(d.sample(jax.random.PRNGKey(0), (4,)))
    assert x.shape == (4, 2, 3)
    if name != "normal":
        upper = 1 if name.startswith("bernoulli") else 3
        assert np.all((x >= 0) & (x <= upper) & (x == np.floor(x)))
    assert np.all(np.isfinite(np.asarray(d.log_prob(x))))


def test_normal_sample_shape_broadcasts_loc_and_scale():
    d = dist.Normal(jnp.zeros((2, 1)), jnp.ones(3))
    assert d.batch_shape == (2, 3)
    assert d.sample(jax.random.PRNGKey(0), (5,)).shape == (5, 2, 3)


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
    # second term: the squared error of the sample mean, which dominates when the
    # fourth central moment equals var**2 (e.g. Bernoulli(0.5))
    tolerance = 5 * se_var + 25 * var / n + 1e-12
    np.testing.assert_array_less(np.abs(draws.var(0) - var), tolerance)


def test_normal_sample_moments():
    loc = jnp.array([-1.0, 0.0, 2.0])
    scale = jnp.array([0.5, 1.0, 3.0])
    d = dist.Normal(loc, scale)
    draws = d.sample(jax.random.PRNGKey(1), (N_DRAWS,))
    _assert_mean_var(draws, loc, scale**2)
    np.testing.assert_allclose(np.asarray(d.mean), np.asarray(loc))
    np.testing.assert_allclose(np.asarray(d.variance), np.asarray(scale) ** 2)


@pytest.mark.parametrize("form", ["probs", "logits"])
def test_bernoulli_sample_moments(form):
    p = np.array([0.05, 0.3, 0.5, 0.9], dtype=np.float32)
    if form == "probs":
        d = dist.Bernoulli(probs=jnp.asarray(p))
    else:
        d = dist.Bernoulli(logits=jnp.asarray(special.logit(p)))
    draws = d.sample(jax.random.PRNGKey(2), (N_DRAWS,))
    assert set(np.unique(np.asarray(draws))) <= {0, 1}
    _assert_mean_var(draws, p, p * (1 - p))
    np.testing.assert_allclose(np.asarray(d.mean), p, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(d.variance), p * (1 - p), rtol=1e-5)


@pytest.mark.parametrize("form", ["probs", "logits"])
def test_categorical_sample_frequencies(form):
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0]], dtype=np.float32)
    if form == "probs":
        d = dist.Categorical(probs=jnp.asarray(probs))
    else:
        with np.errstate(divide="ignore"):
            d = dist.Categorical(logits=jnp.asarray(np.log(probs)))
    draws = np.asarray(d.sample(jax.random.PRNGKey(3), (N_DRAWS,)))
    assert draws.shape == (N_DRAWS, 2)
    for k in range(3):
        freq = (draws == k).mean(0)
        se = np.sqrt(probs[:, k] * (1 - probs[:, k]) / N_DRAWS)
        np.testing.assert_array_less(np.abs(freq - probs[:, k]), 5 * se + 1e-12)
    assert not np.any(draws[:, 1] == 2)  # zero probability is never drawn


# -- Normal cdf, icdf, entropy -----------------------------------------------------


def test_normal_cdf_icdf_match_scipy():
    loc, scale = 1.5, 2.0
    d = dist.Normal(loc, scale)
    values = np.linspace(-6, 8, 15).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(d.cdf(values)),
        stats.norm.cdf(values, loc, scale),
        rtol=1e-5,
        atol=1e-7,
    )
    q = np.array([1e-4, 0.01, 0.2, 0.5, 0.8, 0.99, 0.9999], dtype=np.float32)
    np.testing.assert_allclose(
        np.asarray(d.icdf(q)), stats.norm.ppf(q, loc, scale), rtol=1e-4, atol=1e-5
    )
    # round trip
    np.testing.assert_allclose(np.asarray(d.cdf(d.icdf(q))), q, rtol=1e-4)


def test_normal_entropy_matches_scipy():
    scale = np.array([1e-3, 0.5, 1.0, 10.0], dtype=np.float32)
    d = dist.Normal(jnp.zeros(4), jnp.asarray(scale))
    np.testing.assert_allclose(
        np.asarray(d.entropy()), stats.norm.entropy(0.0, scale), rtol=1e-5
    )
    assert dist.Normal(jnp.zeros((2, 3)), 1.0).entropy().shape == (2, 3)


# -- enumerate_support -------------------------------------------------------------


def test_bernoulli_enumerate_support():
    d = dist.Bernoulli(probs=0.3)
    np.testing.assert_array_equal(np.asarray(d.enumerate_support()), [0, 1])
    d = dist.Bernoulli(probs=jnp.full((2, 3), 0.3))
    full = np.asarray(d.enumerate_support(expand=True))
    assert full.shape == (2, 2, 3)
    np.testing.assert_array_equal(full[0], np.zeros((2, 3)))
    np.testing.assert_array_equal(full[1], np.ones((2, 3)))
    small = np.asarray(d.enumerate_support(expand=False))
    assert small.shape == (2, 1, 1)
    np.testing.assert_array_equal(small.reshape(-1), [0, 1])
    # the enumerated values broadcast against the batch in log_prob
    expected = stats.bernoulli.logpmf(np.array([0, 1])[:, None, None], 0.3)
    np.testing.assert_allclose(
        np.asarray(d.log_prob(small)), np.broadcast_to(expected, (2, 2, 3)), rtol=1e-5
    )


def test_categorical_enumerate_support():
    probs = jnp.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    d = dist.Categorical(probs=probs)
    full = np.asarray(d.enumerate_support(expand=True))
    assert full.shape == (4, 2)
    np.testing.assert_array_equal(full, np.repeat(np.arange(4)[:, None], 2, axis=1))
    small = np.asarray(d.enumerate_support(expand=False))
    assert small.shape == (4, 1)
    np.testing.assert_array_equal(small[:, 0], np.arange(4))
    np.testing.assert_allclose(
        np.asarray(d.log_prob(small)), np.log(np.asarray(probs)).T, rtol=1e-6
    )
    single = dist.Categorical(logits=jnp.zeros(3))
    np.testing.assert_array_equal(np.asarray(single.enumerate_support()), [0, 1, 2])


# -- Delta and Unit ----------------------------------------------------------------


def test_delta_log_prob():
    d = dist.Delta(2.0)
    assert d.batch_shape == () and d.event_shape == ()
    assert float(d.log_prob(2.0)) == 0.0
    assert float(d.log_prob(2.5)) == -np.inf
    d = dist.Delta(jnp.array([1.0, 2.0]), log_density=-1.5)
    np.testing.assert_array_equal(
        np.asarray(d.log_prob(jnp.array([1.0, 0.0]))), [-1.5, -np.inf]
    )
    np.testing.assert_array_equal(
        np.asarray(d.sample(jax.random.PRNGKey(0), (3,))), np.tile([1.0, 2.0], (3, 1))
    )


def test_delta_event_dim():
    v = jnp.arange(6.0).reshape(2, 3)
    d = dist.Delta(v, event_dim=1)
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    np.testing.assert_array_equal(np.asarray(d.log_prob(v)), [0.0, 0.0])
    off = v.at[0, 1].set(-1.0)
    np.testing.assert_array_equal(np.asarray(d.log_prob(off)), [-np.inf, 0.0])
    assert d.sample(jax.random.PRNGKey(0), (4,)).shape == (4, 2, 3)
    with pytest.raises(ValueError):
        dist.Delta(1.0, event_dim=1)


def test_unit_log_prob():
    log_factor = jnp.array([-1.0, 0.5, 2.0])
    d = dist.Unit(log_factor)
    assert d.batch_shape == (3,) and d.event_shape == (0,)
    value = d.sample(jax.random.PRNGKey(0))
    assert value.shape == (3, 0)
    np.testing.assert_array_equal(np.asarray(d.log_prob(value)), [-1.0, 0.5, 2.0])
    assert d.sample(None, (2,)).shape == (2, 3, 0)
    scalar = dist.Unit(-2.5)
    assert float(scalar.log_prob(scalar.sample(None))) == -2.5


# -- expand, to_event, mask --------------------------------------------------------


def test_expand_adds_independent_leading_dims():
    loc = jnp.array([0.0, 1.0, 2.0])
    d = dist.Normal(loc, 1.0).expand((4, 3))
    assert isinstance(d, dist.ExpandedDistribution)
    assert d.batch_shape == (4, 3)
    x = np.asarray(d.sample(jax.random.PRNGKey(0), (5,)))
    assert x.shape == (5, 4, 3)
    assert len(np.unique(x)) == x.size  # fresh draws everywhere
    values = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_allclose(
        np.asarray(d.log_prob(values)),
        stats.norm.logpdf(values, np.asarray(loc), 1.0),
        rtol=1e-5,
    )
    assert d.log_prob(0.0).shape == (4, 3)
    np.testing.assert_allclose(np.asarray(d.mean), np.broadcast_to(loc, (4, 3)))


def test_expand_size_one_batch_dim_draws_differ():
    d = dist.Normal(jnp.zeros(1), 1.0).expand((6,))
    x = np.asarray(d.sample(jax.random.PRNGKey(0)))
    assert x.shape == (6,)
    assert len(np.unique(x)) == 6
    d = dist.Normal(jnp.array([[0.0], [100.0]]), 1.0).expand((2, 5))
    x = np.asarray(d.sample(jax.random.PRNGKey(1), (3,)))
    assert x.shape == (3, 2, 5)
    assert len(np.unique(x)) == x.size
    # row i is drawn around loc[i]
    assert np.all(np.abs(x[:, 0]) < 10) and np.all(np.abs(x[:, 1] - 100) < 10)


def test_expand_size_one_dim_sample_moments():
    loc = jnp.array([[0.0], [3.0]])
    d = dist.Normal(loc, 2.0).expand((2, 4))
    x = np.asarray(d.sample(jax.random.PRNGKey(4), (N_DRAWS,)))
    _assert_mean_var(x, np.broadcast_to(loc, (2, 4)), np.full((2, 4), 4.0))
    # different columns of one row are independent draws: sample correlation ~ 0
    corr = np.corrcoef(x[:, 0, 0], x[:, 0, 1])[0, 1]
    assert abs(corr) < 5 / np.sqrt(N_DRAWS)


def test_expand_bernoulli_and_categorical():
    d = dist.Bernoulli(probs=jnp.array([0.2, 0.9])).expand((3, 2))
    assert d.sample(jax.random.PRNGKey(0)).shape == (3, 2)
    expected = stats.bernoulli.logpmf(1, [0.2, 0.9])
    np.testing.assert_allclose(
        np.asarray(d.log_prob(1)), np.broadcast_to(expected, (3, 2)), rtol=1e-6
    )
    c = dist.Categorical(probs=jnp.array([0.2, 0.8])).expand((5,))
    assert c.batch_shape == (5,)
    assert c.sample(jax.random.PRNGKey(0), (2,)).shape == (2, 5)
    np.testing.assert_allclose(np.asarray(c.log_prob(1)), np.full(5, np.log(0.8)))


def test_expand_incompatible_shape_raises():
    with pytest.raises(ValueError):
        dist.Normal(jnp.zeros(3), 1.0).expand((4,))
    with pytest.raises(ValueError):
        dist.Normal(jnp.zeros((2, 3)), 1.0).expand((3,))


def test_to_event_shapes_and_log_prob():
    loc = jnp.arange(6.0).reshape(2, 3)
    base = dist.Normal(loc, 2.0)
    d = base.to_event(1)
    assert isinstance(d, dist.Independent)
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    values = np.ones((4, 2, 3), dtype=np.float32)
    base_lp = stats.norm.logpdf(values, np.asarray(loc), 2.0)
    np.testing.assert_allclose(
        np.asarray(d.log_prob(values)), base_lp.sum(-1), rtol=1e-5
    )
    full = base.to_event()
    assert full.batch_shape == () and full.event_shape == (2, 3)
    np.testing.assert_allclose(
        np.asarray(full.log_prob(values)), base_lp.sum((-1, -2)), rtol=1e-5
    )
    assert full.sample(jax.random.PRNGKey(0), (5,)).shape == (5, 2, 3)
    assert base.to_event(0) is base
    with pytest.raises(ValueError):
        dist.Independent(base, 3)


def test_mask_zeroes_log_prob_where_false():
    loc = jnp.array([0.0, 1.0, 2.0, 3.0])
    m = jnp.array([True, False, True, False])
    d = dist.Normal(loc, 1.0).mask(m)
    assert isinstance(d, dist.MaskedDistribution)
    assert d.batch_shape == (4,)
    value = np.full(4, 0.5, dtype=np.float32)
    expected = np.where(
        np.asarray(m), stats.norm.logpdf(value, np.asarray(loc), 1.0), 0.0
    )
    np.testing.assert_allclose(np.asarray(d.log_prob(value)), expected, rtol=1e-6)
    # even an impossible value has zero log density where masked
    delta = dist.Delta(jnp.zeros(4)).mask(m)
    np.testing.assert_array_equal(
        np.asarray(delta.log_prob(jnp.ones(4))), [-np.inf, 0.0, -np.inf, 0.0]
    )
    off = dist.Normal(loc, 1.0).mask(False)
    np.testing.assert_array_equal(np.asarray(off.log_prob(value)), np.zeros(4))
    assert dist.Normal(loc, 1.0).mask(True).log_prob(value).shape == (4,)


def test_mask_broadcasts_batch_shape():
    d = dist.Normal(jnp.zeros(3), 1.0).mask(jnp.array([[True], [False]]))
    assert d.batch_shape == (2, 3)
    lp = np.asarray(d.log_prob(jnp.zeros(3)))
    assert lp.shape == (2, 3)
    np.testing.assert_allclose(lp[0], np.full(3, stats.norm.logpdf(0.0)), rtol=1e-6)
    np.testing.assert_array_equal(lp[1], np.zeros(3))
    assert d.sample(jax.random.PRNGKey(0), (4,)).shape == (4, 2, 3)


def test_mask_rejects_non_boolean():
    with pytest.raises(TypeError):
        dist.Normal(0.0, 1.0).mask(jnp.array([1.0, 0.0]))


# -- pytrees -----------------------------------------------------------------------


def _wrapped_examples():
    loc = jnp.array([0.5, -1.0, 2.0])
    return {
        "normal": dist.Normal(loc, jnp.array([1.0, 2.0, 0.5])),
        "independent": dist.Normal(loc, jnp.ones(3)).to_event(1),
        "expanded": dist.Normal(loc[:1], jnp.ones(1)).expand((2, 3)),
        "masked": dist.Normal(loc, jnp.ones(3)).mask(jnp.array([True, False, True])),
        "bernoulli": dist.Bernoulli(logits=loc),
        "categorical": dist.Categorical(probs=jnp.array([[0.2, 0.8], [0.6, 0.4]])),
    }


@pytest.mark.parametrize("name", list(_wrapped_examples()))
def test_distribution_passes_through_jit(name):
    d = _wrapped_examples()[name]
    value = d.sample(jax.random.PRNGKey(0))

    @jax.jit
    def f(d, value):
        return d, d.log_prob(value)

    d2, lp = f(d, value)
    assert type(d2) is type(d)
    assert d2.batch_shape == d.batch_shape
    assert d2.event_shape == d.event_shape
    np.testing.assert_allclose(np.asarray(lp), np.asarray(d.log_prob(value)))
    np.testing.assert_allclose(
        np.asarray(d2.log_prob(value)), np.asarray(d.log_prob(value))
    )


def test_jit_returns_distribution_built_inside():
    @jax.jit
    def make(loc):
        return dist.Normal(loc, 2.0)

    d = make(jnp.array([0.0, 1.0]))
    assert isinstance(d, dist.Normal) and d.batch_shape == (2,)
    np.testing.assert_allclose(
        np.asarray(d.log_prob(1.0)), stats.norm.logpdf(1.0, [0.0, 1.0], 2.0), rtol=1e-6
    )


def test_vmap_over_scalar_normal():
    xs = jnp.array([0.0, 1.0, 2.0, 3.0])
    d = jax.vmap(lambda x: dist.Normal(x, 1.0))(xs)
    assert isinstance(d, dist.Normal)
    assert d.batch_shape == (4,)
    np.testing.assert_allclose(
        np.asarray(d.log_prob(0.5)), stats.norm.logpdf(0.5, np.asarray(xs), 1.0)
    )


def test_vmap_over_vector_normal_batch_shape():
    xs = jnp.arange(12.0).reshape(4, 3)
    d = jax.vmap(lambda x: dist.Normal(x, 1.0))(xs)
    assert d.batch_shape == (4, 3)
    assert jax.tree.map(lambda leaf: leaf[0], d).batch_shape == (3,)


def test_vmap_over_vector_normal_log_prob_and_sample():
    xs = jnp.arange(12.0).reshape(4, 3)
    d = jax.vmap(lambda x: dist.Normal(x, 1.0))(xs)
    np.testing.assert_allclose(
        np.asarray(d.log_prob(xs + 0.5)),
        np.full((4, 3), stats.norm.logpdf(0.5)),
        rtol=1e-6,
    )
    assert d.sample(jax.random.PRNGKey(0), (2,)).shape == (2, 4, 3)


T_STEPS = 4


def _stack_with_lax_scan(make, value):
    """Stack make(c) over T_STEPS steps, with the per-step log_prob of value."""

    def step(c, _):
        d = make(c)
        return c + 1.0, (d, d.log_prob(value))

    _, (stacked, step_log_probs) = jax.lax.scan(step, 0.0, None, length=T_STEPS)
    return stacked, step_log_probs


STACKABLE = {
    # name: (make(c), per-step batch_shape, per-step event_shape)
    "normal": (lambda c: dist.Normal(c * jnp.ones(3), jnp.full(3, 2.0)), (3,), ()),
    "normal_scalar_scale": (lambda c: dist.Normal(c * jnp.ones(3), 2.0), (3,), ()),
    "independent": (
        lambda c: dist.Normal(c * jnp.ones((2, 3)), jnp.ones((2, 3))).to_event(1),
        (2,),
        (3,),
    ),
    "expanded_size_one": (
        lambda c: dist.Normal(c * jnp.ones(1), jnp.ones(1)).expand((2, 3)),
        (2, 3),
        (),
    ),
    "expanded_scalar": (lambda c: dist.Normal(c, 1.0).expand((3,)), (3,), ()),
    "masked": (
        lambda c: dist.Normal(c * jnp.ones(3), jnp.ones(3)).mask(
            jnp.array([True, False, True])
        ),
        (3,),
        (),
    ),
    "bernoulli": (lambda c: dist.Bernoulli(logits=c - jnp.arange(3.0)), (3,), ()),
    "categorical": (lambda c: dist.Categorical(logits=c * jnp.arange(3.0)), (), ()),
    "normal_constant": (lambda c: dist.Normal(0.0, 1.0), (), ()),
    "delta_event": (
        lambda c: dist.Delta(c * jnp.ones((2, 3)), event_dim=1),
        (2,),
        (3,),
    ),
    "unit": (lambda c: dist.Unit(-c * jnp.ones(2)), (2,), (0,)),
}


@pytest.mark.parametrize("name", list(STACKABLE))
def test_lax_scan_stacks_distribution_batch_shape(name):
    make, batch_shape, event_shape = STACKABLE[name]
    value = jnp.zeros(batch_shape + event_shape)
    stacked, _ = _stack_with_lax_scan(make, value)
    assert type(stacked) is type(make(0.0))
    assert stacked.batch_shape == (T_STEPS,) + batch_shape
    assert stacked.event_shape == event_shape
    first = jax.tree.map(lambda leaf: leaf[0], stacked)
    assert first.batch_shape == batch_shape
    assert first.event_shape == event_shape


@pytest.mark.parametrize("name", list(STACKABLE))
def test_lax_scan_stacked_distribution_log_prob_and_sample(name):
    make, batch_shape, event_shape = STACKABLE[name]
    value = jnp.linspace(-1.0, 1.0, int(np.prod(batch_shape + event_shape)))
    value = value.reshape(batch_shape + event_shape)
    stacked, step_log_probs = _stack_with_lax_scan(make, value)
    # log_prob of the stacked distribution = the per-step log_probs, stacked
    np.testing.assert_allclose(
        np.asarray(stacked.log_prob(value)), np.asarray(step_log_probs), rtol=1e-6
    )
    draws = stacked.sample(jax.random.PRNGKey(0), (2,))
    assert draws.shape == (2, T_STEPS) + batch_shape + event_shape
    # indexing step t gives back step t's distribution
    t = 2
    at_t = jax.tree.map(lambda leaf: leaf[t], stacked)
    np.testing.assert_allclose(
        np.asarray(at_t.log_prob(value)),
        np.asarray(make(float(t)).log_prob(value)),
        rtol=1e-6,
    )


# -- validation --------------------------------------------------------------------


def test_validate_args_normal_negative_scale():
    with pytest.raises(ValueError, match="scale"):
        dist.Normal(0.0, -1.0, validate_args=True)
    with pytest.raises(ValueError, match="scale"):
        dist.Normal(jnp.zeros(2), jnp.array([1.0, 0.0]), validate_args=True)
    # without validation, construction succeeds
    assert dist.Normal(0.0, -1.0).batch_shape == ()


def test_validate_args_bernoulli_and_categorical_parameters():
    with pytest.raises(ValueError, match="probs"):
        dist.Bernoulli(probs=1.5, validate_args=True)
    with pytest.raises(ValueError, match="probs"):
        dist.Bernoulli(probs=jnp.array([0.5, -0.1]), validate_args=True)
    with pytest.raises(ValueError, match="probs"):
        dist.Categorical(probs=jnp.array([0.5, 0.6]), validate_args=True)
    dist.Bernoulli(probs=jnp.array([0.0, 1.0]), validate_args=True)
    dist.Categorical(probs=jnp.array([0.25, 0.75]), validate_args=True)


def test_validate_args_value_outside_support():
    with pytest.raises(ValueError):
        dist.Bernoulli(probs=0.5, validate_args=True).log_prob(2)
    with pytest.raises(ValueError):
        dist.Bernoulli(logits=0.0, validate_args=True).log_prob(0.5)
    with pytest.raises(ValueError):
        dist.Categorical(probs=jnp.array([0.5, 0.5]), validate_args=True).log_prob(2)
    ok = dist.Bernoulli(probs=0.25, validate_args=True).log_prob(1)
    np.testing.assert_allclose(float(ok), np.log(0.25), rtol=1e-6)


def test_enable_validation_globally():
    try:
        probnn.enable_validation()
        with pytest.raises(ValueError, match="scale"):
            dist.Normal(0.0, -1.0)
        with pytest.raises(ValueError):
            dist.Bernoulli(probs=1.5)
        with pytest.raises(ValueError):
            dist.Bernoulli(probs=0.5).log_prob(2)
        # an explicit validate_args=False wins
        dist.Normal(0.0, -1.0, validate_args=False)
    finally:
        probnn.enable_validation(False)
    # off again: no checks
    assert dist.Normal(0.0, -1.0).batch_shape == ()
    assert dist.Bernoulli(probs=0.5).log_prob(2).shape == ()


# -- gradients ---------------------------------------------------------------------


def test_normal_log_prob_gradients_closed_form_and_finite_differences():
    x = 0.7

    def lp(loc, scale):
        return dist.Normal(loc, scale).log_prob(x)

    for loc, scale in [(0.0, 1.0), (1.5, 0.5), (-2.0, 3.0)]:
        g_loc, g_scale = jax.grad(lp, argnums=(0, 1))(loc, scale)
        z = (x - loc) / scale
        np.testing.assert_allclose(float(g_loc), z / scale, rtol=1e-5)
        np.testing.assert_allclose(float(g_scale), (z**2 - 1) / scale, rtol=1e-5)
        eps = 1e-3
        fd_loc = (lp(loc + eps, scale) - lp(loc - eps, scale)) / (2 * eps)
        fd_scale = (lp(loc, scale + eps) - lp(loc, scale - eps)) / (2 * eps)
        np.testing.assert_allclose(float(g_loc), float(fd_loc), rtol=1e-2, atol=1e-3)
        np.testing.assert_allclose(
            float(g_scale), float(fd_scale), rtol=1e-2, atol=1e-3
        )


def test_normal_reparameterized_sample_gradients():
    key = jax.random.PRNGKey(5)
    loc, scale = 0.3, 2.0

    def draw(loc, scale):
        return dist.Normal(loc, scale).sample(key)

    g_loc, g_scale = jax.grad(draw, argnums=(0, 1))(loc, scale)
    assert float(g_loc) == pytest.approx(1.0)
    noise = (float(draw(loc, scale)) - loc) / scale
    assert float(g_scale) == pytest.approx(noise, rel=1e-5)
    # many draws: d sum(x) / d loc is the number of draws
    total = jax.grad(lambda loc: jnp.sum(dist.Normal(loc, scale).sample(key, (10,))))(
        loc
    )
    assert float(total) == pytest.approx(10.0)


def test_validation_inside_jit_checks_concrete_values_only():
    # Concrete invalid parameters and values are caught while tracing...
    with pytest.raises(ValueError, match="Normal.*'scale'"):
        jax.jit(lambda x: dist.Normal(0.0, -1.0, validate_args=True).log_prob(x))(0.0)
    with pytest.raises(ValueError, match="Bernoulli.*support"):
        jax.jit(lambda p: dist.Bernoulli(probs=p, validate_args=True).log_prob(2))(0.5)
    # ...while checks that depend on traced values are skipped, not crashed on.
    traced = jax.jit(lambda s: dist.Normal(0.0, s, validate_args=True).log_prob(0.0))
    np.testing.assert_allclose(traced(1.0), -0.5 * np.log(2 * np.pi), rtol=1e-6)
