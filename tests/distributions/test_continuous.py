"""Tests of the continuous families against scipy.stats, closed forms, finite
differences and JAX transformations.

Densities are computed in float32 by probnn and in float64 by scipy, both at
the same float32-rounded parameters and values, so the comparison measures
only probnn's own rounding.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

import probnn.distributions as dist
from probnn.distributions import constraints

N_DRAWS = 20000
F32 = np.finfo(np.float32)
HYPOTHESIS = settings(max_examples=25, deadline=None)


def log_uniform(low_exponent, high_exponent):
    """Floats spread evenly in log10 over ``[10**low, 10**high]``."""
    return st.floats(low_exponent, high_exponent).map(lambda e: 10.0**e)


@jax.jit
def log_prob_jit(d, x):
    return d.log_prob(x)


@jax.jit
def cdf_jit(d, x):
    return d.cdf(x)


@jax.jit
def icdf_jit(d, q):
    return d.icdf(q)


@jax.jit
def sample_jit(d, key):
    return d.sample(key, (N_DRAWS,))


@jax.jit
def moments_jit(d):
    return d.mean, d.variance, d.entropy()


# Most of this file's time is XLA compilation. The helpers above are compiled
# once per family (and per None-pattern of TruncatedNormal's bounds) and per
# argument shape, so the tests below keep to few shapes: 7 test values, and
# N_DRAWS draws.
N_VALUES = 7


def assert_close(actual, expected, rtol, atol=0.0):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.broadcast_to(np.asarray(expected, dtype=np.float64), actual.shape)
    # a true value beyond float32's range is an infinity in float32
    expected = np.where(
        np.abs(expected) > F32.max, np.copysign(np.inf, expected), expected
    )
    finite = np.isfinite(expected)
    # no NaN or inf where the true value is finite, and the same infinities
    assert np.all(np.isfinite(actual[finite])), (actual, expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=atol)


# -- the families ----------------------------------------------------------------


def relaxed_bernoulli_log_prob(x, temperature, logits):
    # binary concrete density
    # T a x^(-T-1) (1-x)^(-T-1) / (a x^(-T) + (1-x)^(-T))^2, with a = exp(logits)
    log_x, log_1mx = np.log(x), np.log1p(-x)
    return (
        np.log(temperature)
        + logits
        - (temperature + 1) * (log_x + log_1mx)
        - 2 * np.logaddexp(logits - temperature * log_x, -temperature * log_1mx)
    )


class RelaxedBernoulliReference:
    """A scipy-like frozen distribution for the binary concrete family."""

    def __init__(self, temperature, logits):
        self.temperature, self.logits = temperature, logits

    def logpdf(self, x):
        return relaxed_bernoulli_log_prob(x, self.temperature, self.logits)

    def cdf(self, x):
        return special.expit(self.temperature * special.logit(x) - self.logits)

    def ppf(self, q):
        return special.expit((special.logit(q) + self.logits) / self.temperature)

    def mean(self):
        return np.nan  # no closed form; probnn raises NotImplementedError


class VonMisesReference:
    """The von Mises density in float64, free of scipy's overflow of I0."""

    def __init__(self, loc, concentration):
        self.loc, self.concentration = loc, concentration
        self.frozen = stats.vonmises(concentration, loc)

    def logpdf(self, x):
        k = self.concentration
        return (
            k * (np.cos(x - self.loc) - 1) - np.log(2 * np.pi) - np.log(special.i0e(k))
        )

    def cdf(self, x):
        return self.frozen.cdf(x)

    def mean(self):
        # the circular mean: loc wrapped into [-pi, pi)
        return (self.loc + np.pi) % (2 * np.pi) - np.pi

    def var(self):
        # the circular variance 1 - E cos(X - loc)
        k = self.concentration
        return 1 - special.i1e(k) / special.i0e(k)

    def entropy(self):
        return self.frozen.entropy()


class TruncatedNormalReference:
    """scipy's truncnorm for densities and cdfs. Its closed-form moments and
    entropy cancel badly far in a tail (its entropy is off by 2 at low=8 and
    NaN with an infinite bound), so those come from float64 quadrature."""

    def __init__(self, loc, scale, low, high):
        self.loc, self.scale = loc, scale
        self.a = -np.inf if low is None else (low - loc) / scale
        self.b = np.inf if high is None else (high - loc) / scale
        self.frozen = stats.truncnorm(self.a, self.b, loc=loc, scale=scale)

    def __getattr__(self, name):
        return getattr(self.frozen, name)

    def _standard_moments(self):
        a, b = self.a, self.b
        if a > 0:  # log of the normalizer, from the tail it lies in
            log_z = special.log_ndtr(-a) + np.log1p(
                -np.exp(special.log_ndtr(-b) - special.log_ndtr(-a))
            )
        elif b < 0:
            log_z = special.log_ndtr(b) + np.log1p(
                -np.exp(special.log_ndtr(a) - special.log_ndtr(b))
            )
        else:
            log_z = np.log(special.ndtr(b) - special.ndtr(a))
        # moments about a finite point of the support, over all of the mass
        centre = a if np.isfinite(a) else (b if np.isfinite(b) else 0.0)
        low, high = max(a, centre - 40), min(b, centre + 40)

        def moment(f):
            def integrand(z):
                return f(z) * np.exp(-0.5 * z * z - 0.5 * np.log(2 * np.pi) - log_z)

            return integrate.quad(
                integrand, low, high, epsabs=0, epsrel=1e-10, limit=100
            )[0]

        first = moment(lambda z: z - centre)
        second = moment(lambda z: (z - centre) ** 2)
        entropy = moment(lambda z: 0.5 * z * z + 0.5 * np.log(2 * np.pi) + log_z)
        return centre + first, second - first * first, entropy

    def mean(self):
        return self.loc + self.scale * self._standard_moments()[0]

    def var(self):
        return self.scale**2 * self._standard_moments()[1]

    def std(self):
        return math.sqrt(self.var())

    def entropy(self):
        return np.log(self.scale) + self._standard_moments()[2]


@st.composite
def truncated_normal_params(draw):
    loc = draw(st.floats(-3, 3))
    scale = draw(log_uniform(-1, 1))
    kind = draw(st.sampled_from(["both", "low", "high"]))
    start = draw(st.floats(-10, 10))
    width = draw(log_uniform(-1, 1.3))
    low = loc + scale * start
    high = low + scale * width
    if kind == "low":
        return {"loc": loc, "scale": scale, "low": low, "high": None}
    if kind == "high":
        return {"loc": loc, "scale": scale, "low": None, "high": high}
    return {"loc": loc, "scale": scale, "low": low, "high": high}


@dataclass
class Family:
    """How to build a family in probnn and its float64 reference."""

    build: Callable  # float32-rounded params -> probnn distribution
    reference: Callable  # float64 params -> scipy-like frozen distribution
    params: st.SearchStrategy  # hypothesis strategy for a dict of params
    extreme: list = field(default_factory=list)  # param dicts at extreme values
    moderate: dict = field(default_factory=dict)  # params used for sampling tests
    has_icdf: bool = True
    # test values: quantiles ("ppf"), quantiles kept inside (0, 1)
    # ("open_unit"), or spread over [-pi, pi] ("circle")
    values: str = "ppf"
    # parameters for the hypothesis cdf test when they differ from `params`
    cdf_params: st.SearchStrategy | None = None
    cdf_rtol: float = 1e-4
    extreme_cdf_rtol: float = 1e-4


def loc_scale(loc=None, scale=None):
    return st.fixed_dictionaries(
        {
            "loc": st.floats(-5, 5) if loc is None else loc,
            "scale": log_uniform(-2, 1) if scale is None else scale,
        }
    )


LOC_SCALE_EXTREMES = [
    {"loc": 0.0, "scale": 1e-3},
    {"loc": 100.0, "scale": 1e-3},
    {"loc": -3.0, "scale": 1e3},
]

FAMILIES = {
    "LogNormal": Family(
        lambda p: dist.LogNormal(p["loc"], p["scale"]),
        lambda p: stats.lognorm(s=p["scale"], scale=np.exp(p["loc"])),
        loc_scale(st.floats(-3, 3), log_uniform(-2, 0.5)),
        [{"loc": 0.0, "scale": 1e-3}, {"loc": 5.0, "scale": 3.0}],
        {"loc": 0.3, "scale": 0.5},
    ),
    "HalfNormal": Family(
        lambda p: dist.HalfNormal(p["scale"]),
        lambda p: stats.halfnorm(scale=p["scale"]),
        st.fixed_dictionaries({"scale": log_uniform(-2, 2)}),
        [{"scale": 1e-3}, {"scale": 1e3}],
        {"scale": 2.0},
    ),
    "HalfCauchy": Family(
        lambda p: dist.HalfCauchy(p["scale"]),
        lambda p: stats.halfcauchy(scale=p["scale"]),
        st.fixed_dictionaries({"scale": log_uniform(-2, 2)}),
        [{"scale": 1e-3}, {"scale": 1e3}],
        {"scale": 2.0},
    ),
    "Cauchy": Family(
        lambda p: dist.Cauchy(p["loc"], p["scale"]),
        lambda p: stats.cauchy(p["loc"], p["scale"]),
        loc_scale(),
        LOC_SCALE_EXTREMES,
        {"loc": 1.0, "scale": 2.0},
    ),
    "StudentT": Family(
        lambda p: dist.StudentT(p["df"], p["loc"], p["scale"]),
        lambda p: stats.t(p["df"], p["loc"], p["scale"]),
        st.fixed_dictionaries(
            {
                "df": log_uniform(-0.5, 3),
                "loc": st.floats(-5, 5),
                "scale": log_uniform(-2, 1),
            }
        ),
        [
            {"df": 1e3, "loc": 0.0, "scale": 1.0},
            {"df": 1e5, "loc": 1.0, "scale": 1e-3},
            {"df": 0.1, "loc": 0.0, "scale": 1.0},
        ],
        {"df": 10.0, "loc": 1.0, "scale": 2.0},
        has_icdf=False,
    ),
    "Laplace": Family(
        lambda p: dist.Laplace(p["loc"], p["scale"]),
        lambda p: stats.laplace(p["loc"], p["scale"]),
        loc_scale(),
        LOC_SCALE_EXTREMES,
        {"loc": 1.0, "scale": 2.0},
    ),
    "Logistic": Family(
        lambda p: dist.Logistic(p["loc"], p["scale"]),
        lambda p: stats.logistic(p["loc"], p["scale"]),
        loc_scale(),
        LOC_SCALE_EXTREMES,
        {"loc": 1.0, "scale": 2.0},
    ),
    "Gumbel": Family(
        lambda p: dist.Gumbel(p["loc"], p["scale"]),
        lambda p: stats.gumbel_r(p["loc"], p["scale"]),
        loc_scale(),
        LOC_SCALE_EXTREMES,
        {"loc": 1.0, "scale": 2.0},
    ),
    "Exponential": Family(
        lambda p: dist.Exponential(p["rate"]),
        lambda p: stats.expon(scale=1 / p["rate"]),
        st.fixed_dictionaries({"rate": log_uniform(-2, 2)}),
        [{"rate": 1e-3}, {"rate": 1e3}],
        {"rate": 2.0},
    ),
    "Gamma": Family(
        lambda p: dist.Gamma(p["concentration"], p["rate"]),
        lambda p: stats.gamma(p["concentration"], scale=1 / p["rate"]),
        st.fixed_dictionaries(
            {"concentration": log_uniform(-1, 3), "rate": log_uniform(-2, 2)}
        ),
        [
            {"concentration": 1e3, "rate": 1.0},
            {"concentration": 1e4, "rate": 1e-3},
            {"concentration": 1e-2, "rate": 1.0},
            {"concentration": 10.0, "rate": 1e3},
        ],
        {"concentration": 3.0, "rate": 2.0},
        has_icdf=False,
    ),
    "InverseGamma": Family(
        lambda p: dist.InverseGamma(p["concentration"], p["rate"]),
        lambda p: stats.invgamma(p["concentration"], scale=p["rate"]),
        st.fixed_dictionaries(
            {"concentration": log_uniform(-1, 3), "rate": log_uniform(-2, 2)}
        ),
        [
            {"concentration": 1e3, "rate": 1.0},
            {"concentration": 0.1, "rate": 1e-3},
            {"concentration": 12.0, "rate": 1e3},
        ],
        {"concentration": 6.0, "rate": 2.0},
        has_icdf=False,
    ),
    "Chi2": Family(
        lambda p: dist.Chi2(p["df"]),
        lambda p: stats.chi2(p["df"]),
        st.fixed_dictionaries({"df": log_uniform(-1, 3)}),
        [{"df": 2e3}, {"df": 1e-2}],
        {"df": 5.0},
        has_icdf=False,
    ),
    "Beta": Family(
        lambda p: dist.Beta(p["concentration1"], p["concentration0"]),
        lambda p: stats.beta(p["concentration1"], p["concentration0"]),
        st.fixed_dictionaries(
            {"concentration1": log_uniform(-1, 3), "concentration0": log_uniform(-1, 3)}
        ),
        [
            {"concentration1": 1e3, "concentration0": 1e3},
            {"concentration1": 1e3, "concentration0": 0.5},
            {"concentration1": 0.1, "concentration0": 0.2},
            {"concentration1": 5e3, "concentration0": 20.0},
        ],
        {"concentration1": 2.0, "concentration0": 5.0},
        has_icdf=False,
        values="open_unit",
        # concentrations up to 1e3; near the mean of a Beta with one large
        # and one small concentration the float32 continued fraction is good
        # to 3e-4 relative (5e-4 at 1e4; jax's betainc, used by NumPyro, is
        # off by 3e-3 at 1e3)
        cdf_params=st.fixed_dictionaries(
            {
                "concentration1": log_uniform(-1, 3),
                "concentration0": log_uniform(-1, 3),
            }
        ),
        cdf_rtol=3e-4,
        extreme_cdf_rtol=3e-4,
    ),
    "Uniform": Family(
        lambda p: dist.Uniform(p["low"], p["high"]),
        lambda p: stats.uniform(p["low"], p["high"] - p["low"]),
        st.builds(
            lambda low, width: {"low": low, "high": low + width},
            st.floats(-5, 5),
            log_uniform(-2, 1),
        ),
        [{"low": 0.0, "high": 1e-3}, {"low": -1e3, "high": 1e3}],
        {"low": -1.0, "high": 3.0},
    ),
    "Weibull": Family(
        lambda p: dist.Weibull(p["scale"], p["concentration"]),
        lambda p: stats.weibull_min(p["concentration"], scale=p["scale"]),
        st.fixed_dictionaries(
            {"scale": log_uniform(-2, 2), "concentration": log_uniform(-0.5, 2)}
        ),
        [
            {"scale": 1.0, "concentration": 1e3},
            {"scale": 1e-3, "concentration": 0.5},
            {"scale": 1e3, "concentration": 30.0},
        ],
        {"scale": 2.0, "concentration": 1.5},
    ),
    "Pareto": Family(
        lambda p: dist.Pareto(p["scale"], p["alpha"]),
        lambda p: stats.pareto(p["alpha"], scale=p["scale"]),
        st.fixed_dictionaries(
            {"scale": log_uniform(-2, 2), "alpha": log_uniform(-1, 2)}
        ),
        [{"scale": 1e-3, "alpha": 1e3}, {"scale": 1e3, "alpha": 0.1}],
        {"scale": 2.0, "alpha": 6.0},
    ),
    "TruncatedNormal": Family(
        lambda p: dist.TruncatedNormal(
            p["loc"], p["scale"], low=p["low"], high=p["high"]
        ),
        lambda p: TruncatedNormalReference(p["loc"], p["scale"], p["low"], p["high"]),
        truncated_normal_params(),
        [
            {"loc": 0.0, "scale": 1.0, "low": 8.0, "high": None},
            {"loc": 0.0, "scale": 1.0, "low": None, "high": -8.0},
            {"loc": 0.0, "scale": 1.0, "low": 8.0, "high": 9.0},
            {"loc": 0.0, "scale": 1.0, "low": -9.0, "high": -8.0},
            {"loc": 0.0, "scale": 1.0, "low": 20.0, "high": None},
            {"loc": 0.0, "scale": 1.0, "low": -1.0, "high": 1.0},
            {"loc": 1.0, "scale": 1e-3, "low": 0.99, "high": 1.0},
            {"loc": 0.0, "scale": 1.0, "low": -0.5, "high": None},
        ],
        {"loc": 0.5, "scale": 2.0, "low": -1.0, "high": 4.0},
    ),
    "VonMises": Family(
        lambda p: dist.VonMises(p["loc"], p["concentration"]),
        lambda p: VonMisesReference(p["loc"], p["concentration"]),
        st.fixed_dictionaries(
            {"loc": st.floats(-3, 3), "concentration": log_uniform(-3, 3)}
        ),
        [
            {"loc": 0.0, "concentration": 1e-3},
            {"loc": 3.0, "concentration": 1e3},
            {"loc": -1.0, "concentration": 1e5},
        ],
        {"loc": 0.5, "concentration": 2.0},
        has_icdf=False,
        values="circle",
    ),
    "RelaxedBernoulli": Family(
        lambda p: dist.RelaxedBernoulli(p["temperature"], logits=p["logits"]),
        lambda p: RelaxedBernoulliReference(p["temperature"], p["logits"]),
        st.fixed_dictionaries(
            {"temperature": log_uniform(-1, 1), "logits": st.floats(-10, 10)}
        ),
        [
            {"temperature": 0.5, "logits": 30.0},
            {"temperature": 0.5, "logits": -30.0},
            {"temperature": 5.0, "logits": 30.0},
            {"temperature": 0.1, "logits": 0.0},
        ],
        {"temperature": 0.7, "logits": 0.5},
        values="open_unit",
    ),
}

NAMES = sorted(FAMILIES)


def as_float32(params):
    return {k: None if v is None else np.float32(v) for k, v in params.items()}


def as_float64(params):
    return {k: None if v is None else float(v) for k, v in params.items()}


def build(name, params, **kwargs):
    """The probnn distribution at float32-rounded ``params``."""
    return FAMILIES[name].build(as_float32(params), **kwargs)


def reference(name, params):
    """The float64 reference at the same float32-rounded ``params``."""
    return FAMILIES[name].reference(as_float64(as_float32(params)))


def values_for(name, params, quantiles):
    """Float32 test values inside the support, and their float64 copies."""
    family = FAMILIES[name]
    if family.values == "circle":
        values = -np.pi + 2 * np.pi * np.asarray(quantiles)
    else:
        with np.errstate(over="ignore"):
            values = reference(name, params).ppf(np.asarray(quantiles))
    with np.errstate(over="ignore"):
        values32 = np.asarray(values, dtype=np.float32)
    # subnormal floats are flushed to zero on XLA's CPU backend
    subnormal = (values32 != 0) & (np.abs(values32) < F32.tiny)
    values32 = np.where(subnormal, np.sign(values32) * F32.tiny, values32)
    if family.values == "open_unit":
        values32 = np.clip(values32, F32.tiny, 1 - F32.epsneg)
    values32 = values32.astype(np.float32)
    return values32, values32.astype(np.float64)


@pytest.mark.parametrize("name", NAMES)
def test_python_scalars_as_parameters_and_values(name):
    # plain Python floats, as users often write them (weakly typed in JAX)
    params = FAMILIES[name].moderate
    values32, values64 = values_for(name, params, [0.3])
    d = FAMILIES[name].build(
        {k: None if v is None else float(v) for k, v in params.items()}
    )
    ref = reference(name, params)
    assert_close(d.log_prob(float(values32[0])), ref.logpdf(values64[0]), 1e-5, 1e-6)
    if name != "VonMises":
        assert_close(d.cdf(float(values32[0])), ref.cdf(values64[0]), 1e-5, 1e-6)


def test_every_family_is_exported():
    for name in [*NAMES, "ImproperUniform", "RelaxedBernoulliLogits"]:
        assert name in dist.__all__
        module = getattr(dist, name).__module__
        assert module in {
            "probnn.distributions.continuous",
            "probnn.distributions.positive",
            "probnn.distributions.bounded",
        }, (name, module)


# -- log densities, cdfs and inverse cdfs against float64 references ------------

QUANTILES = st.lists(st.floats(1e-4, 1 - 1e-4), min_size=N_VALUES, max_size=N_VALUES)
TAIL_QUANTILES = [1e-6, 1e-3, 0.1, 0.5, 0.9, 0.999, 1 - 1e-6]
EXTREME_CASES = [(name, params) for name in NAMES for params in FAMILIES[name].extreme]

# Rounding float32 intermediates such as z * z or concentration * log(x) costs
# a few 1e-7 relative to the largest term; the tolerances below allow that and
# nothing like the 1e-3 errors of textbook formulas at extreme parameters.
LOG_PROB_RTOL = 2e-5
LOG_PROB_ATOL = 2e-5


def check_log_prob(name, params, quantiles):
    values32, values64 = values_for(name, params, quantiles)
    actual = log_prob_jit(build(name, params), jnp.asarray(values32))
    assert actual.dtype == jnp.float32
    expected = reference(name, params).logpdf(values64)
    assert_close(actual, expected, rtol=LOG_PROB_RTOL, atol=LOG_PROB_ATOL)


@pytest.mark.parametrize("name", NAMES)
@HYPOTHESIS
@given(data=st.data())
def test_log_prob_matches_reference(name, data):
    params = data.draw(FAMILIES[name].params)
    check_log_prob(name, params, data.draw(QUANTILES))


@pytest.mark.parametrize("name,params", EXTREME_CASES)
def test_log_prob_at_extreme_parameters(name, params):
    check_log_prob(name, params, TAIL_QUANTILES)


def check_cdf(name, params, quantiles, rtol=1e-4):
    family = FAMILIES[name]
    d = build(name, params)
    values32, values64 = values_for(name, params, quantiles)
    ref = reference(name, params)
    if name == "VonMises":
        with pytest.raises(NotImplementedError, match="VonMises"):
            d.cdf(values32)
        return
    actual = cdf_jit(d, jnp.asarray(values32))
    assert_close(actual, ref.cdf(values64), rtol=rtol, atol=1e-6)
    if family.has_icdf:
        q32 = np.asarray(quantiles, dtype=np.float32)
        with np.errstate(over="ignore"):
            expected = ref.ppf(q32.astype(np.float64))
        # near a bound of the support the inverse cdf is a small number
        # obtained from differences of O(1) ones; allow an absolute error
        # relative to the spread of the distribution there, and float32's
        # rounding of loc + scale * z, which cancels when the support lies
        # far out in loc's tail (e.g. a TruncatedNormal ten scales away)
        spread = ref.ppf(0.75) - ref.ppf(0.25)
        rounding = 2 * np.finfo(np.float32).eps * abs(params.get("loc", 0.0))
        actual = icdf_jit(d, jnp.asarray(q32))
        assert_close(actual, expected, rtol=1e-4, atol=1e-6 * spread + rounding)
    else:
        with pytest.raises(NotImplementedError, match=name):
            d.icdf(0.5)


@pytest.mark.parametrize("name", NAMES)
@HYPOTHESIS
@given(data=st.data())
def test_cdf_and_icdf_match_reference(name, data):
    family = FAMILIES[name]
    strategy = family.params if family.cdf_params is None else family.cdf_params
    params = data.draw(strategy)
    check_cdf(name, params, data.draw(QUANTILES), rtol=family.cdf_rtol)


@pytest.mark.parametrize("name,params", EXTREME_CASES)
def test_cdf_and_icdf_at_extreme_parameters(name, params):
    check_cdf(name, params, TAIL_QUANTILES, rtol=FAMILIES[name].extreme_cdf_rtol)


def test_truncated_normal_far_tail_round_trip():
    # Twenty standard deviations out, where ndtr itself underflows in float32,
    # icdf(q) is within two float32 steps of the exact quantile: q lies
    # between the cdf two steps below and two steps above it.
    q = np.array(TAIL_QUANTILES, np.float32)
    for low, high, sample in [
        (20.0, None, True),
        (None, -20.0, True),
        (-60.0, -59.0, False),
    ]:
        d = dist.TruncatedNormal(
            np.float32(0.0),
            np.float32(1.0),
            low=None if low is None else np.float32(low),
            high=None if high is None else np.float32(high),
        )
        x = np.asarray(icdf_jit(d, jnp.asarray(q)))
        assert np.all(np.isfinite(x))
        below, above = x, x
        for _ in range(2):
            below = np.nextafter(below, np.float32(-np.inf))
            above = np.nextafter(above, np.float32(np.inf))
        assert np.all(np.asarray(cdf_jit(d, jnp.asarray(below))) <= q * (1 + 1e-5))
        assert np.all(np.asarray(cdf_jit(d, jnp.asarray(above))) >= q * (1 - 1e-5))
        if sample:
            draws = sample_jit(d, jax.random.key(0))
            assert bool(jnp.all(d.support(draws)))
            assert np.all(np.isfinite(np.asarray(log_prob_jit(d, draws))))


def test_truncated_normal_without_bounds_is_normal():
    x = jnp.linspace(-4.0, 4.0, N_VALUES)
    d = dist.TruncatedNormal(np.float32(0.5), np.float32(2.0))
    normal = dist.Normal(0.5, 2.0)
    np.testing.assert_allclose(log_prob_jit(d, x), normal.log_prob(x), rtol=1e-6)
    np.testing.assert_allclose(cdf_jit(d, x), normal.cdf(x), rtol=1e-6, atol=1e-7)
    assert d.support is constraints.real


# -- moments and entropy --------------------------------------------------------

MOMENT_NAMES = [name for name in NAMES if name != "RelaxedBernoulli"]


def check_moments(name, params):
    if name in ("Cauchy", "HalfCauchy"):
        return  # undefined moments; see test_undefined_moments_follow_numpyro
    mean, variance, entropy = moments_jit(build(name, params))
    ref = reference(name, params)
    with np.errstate(all="ignore"):
        ref_mean, ref_var = ref.mean(), ref.var()
    # where scipy's moment is undefined or infinite, probnn follows NumPyro's
    # convention, checked in test_undefined_moments_follow_numpyro
    if np.isfinite(ref_mean):
        scale = math.sqrt(ref_var) if np.isfinite(ref_var) else 1.0
        assert_close(mean, ref_mean, rtol=1e-4, atol=1e-6 * scale)
    if np.isfinite(ref_var):
        assert_close(variance, ref_var, rtol=1e-4)
    assert_close(entropy, ref.entropy(), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("name", MOMENT_NAMES)
@HYPOTHESIS
@given(data=st.data())
def test_mean_variance_and_entropy_match_reference(name, data):
    check_moments(name, data.draw(FAMILIES[name].params))


@pytest.mark.parametrize(
    "name,params", [case for case in EXTREME_CASES if case[0] in MOMENT_NAMES]
)
def test_mean_variance_and_entropy_at_extreme_parameters(name, params):
    check_moments(name, params)


def test_undefined_moments_follow_numpyro():
    nan, inf = np.nan, np.inf
    cases = [
        (dist.Cauchy(0.0, 1.0), nan, nan),
        (dist.HalfCauchy(1.0), inf, inf),
        (dist.StudentT(0.5), inf, nan),
        (dist.StudentT(1.5, 2.0), 2.0, inf),
        (dist.InverseGamma(0.5, 1.0), inf, inf),
        (dist.InverseGamma(1.5, 1.0), 2.0, inf),
        (dist.Pareto(1.0, 0.5), inf, inf),
        (dist.Pareto(1.0, 1.5), 3.0, inf),
    ]
    for d, mean, variance in cases:
        np.testing.assert_array_equal(np.asarray(d.mean), mean)
        np.testing.assert_array_equal(np.asarray(d.variance), variance)
    with pytest.raises(NotImplementedError, match="RelaxedBernoulli"):
        _ = dist.RelaxedBernoulli(0.5, logits=0.0).mean


# -- sampling -----------------------------------------------------------------------


def standard_errors(x):
    """Standard errors of the sample mean and of the sample variance."""
    n = x.shape[0]
    centred = x - x.mean(0)
    return x.std(0) / math.sqrt(n), (centred**2).std(0) / math.sqrt(n)


@pytest.mark.parametrize("name", NAMES)
def test_samples_match_moments_and_cdf(name):
    params = FAMILIES[name].moderate
    d = build(name, params)
    ref = reference(name, params)
    key = jax.random.key(1)
    x = d.sample(key, (N_DRAWS,))
    assert x.shape == (N_DRAWS,) and x.dtype == jnp.float32
    # the same draws under jit, with the distribution passed as a pytree (XLA
    # may fuse differently: allow float32 rounding of loc + scale * z); Chi2
    # draws through Gamma's sampler, checked there
    if name != "Chi2":
        np.testing.assert_allclose(
            np.asarray(sample_jit(d, key)), np.asarray(x), rtol=1e-5, atol=1e-6
        )
    assert bool(jnp.all(d.support(x)))
    np.testing.assert_allclose(
        np.asarray(log_prob_jit(d, x[:N_VALUES])),
        np.asarray(d.log_prob(x[:N_VALUES])),
        rtol=1e-5,
        atol=1e-6,
    )
    x = np.asarray(x, dtype=np.float64)
    assert np.all(np.isfinite(x))
    mean, variance = None, None
    if name != "RelaxedBernoulli":
        mean, variance, _ = (float(v) for v in moments_jit(d))
    if name == "VonMises":
        # circular statistics: E sin(X - loc) = 0, E cos(X - loc) = 1 - variance
        angle = x - params["loc"]
        se = 1 / math.sqrt(N_DRAWS)
        assert abs(np.sin(angle).mean()) < 5 * se
        cos = np.cos(angle)
        assert abs(1 - cos.mean() - variance) < 5 * cos.std() * se
        x = (angle + np.pi) % (2 * np.pi) - np.pi
        ref = stats.vonmises(params["concentration"])
    elif name in ("Cauchy", "HalfCauchy"):
        pass  # mean and variance are undefined or infinite; the KS test remains
    elif name == "RelaxedBernoulli":
        pass  # no closed-form moments; the KS test remains
    else:
        se_mean, se_var = standard_errors(x)
        assert abs(x.mean() - mean) < 5 * se_mean
        assert abs(x.var() - variance) < 5 * se_var
    # the whole distribution: Kolmogorov-Smirnov against the reference cdf
    assert stats.kstest(x, ref.cdf).pvalue > 1e-4


def test_von_mises_samples_at_extreme_concentrations():
    # near-uniform and sharply peaked: the rejection sampler's envelope
    # parameter is computed without cancellation at both ends
    for concentration in (1e-3, 1e3, 1e5):
        d = dist.VonMises(np.float32(0.5), np.float32(concentration))
        x = np.asarray(sample_jit(d, jax.random.key(11)), dtype=np.float64)
        assert np.all(np.abs(x) <= np.pi)
        angle = (x - 0.5 + np.pi) % (2 * np.pi) - np.pi
        cos = np.cos(angle)
        se = cos.std() / math.sqrt(N_DRAWS)
        variance = float(moments_jit(d)[1])
        assert abs(1 - cos.mean() - variance) < 5 * se + 1e-7
        if concentration < 1e4:
            assert stats.kstest(angle, stats.vonmises(concentration).cdf).pvalue > 1e-4


SAMPLE_SHAPES = [(), (3,), (2, 4)]


@pytest.mark.parametrize("name", NAMES)
def test_sample_and_log_prob_shapes(name):
    params = FAMILIES[name].moderate
    key = jax.random.key(2)
    for batch_shape in [(), (2, 3)]:
        batched = {
            k: None if v is None else np.full(batch_shape, v, np.float32)
            for k, v in params.items()
        }
        d = FAMILIES[name].build(batched)
        assert d.batch_shape == batch_shape and d.event_shape == ()
        for sample_shape in SAMPLE_SHAPES:
            # shapes are fixed while tracing: checking them abstractly saves
            # compiling each gamma-type sampler six times
            x = jax.eval_shape(lambda d, key, s=sample_shape: d.sample(key, s), d, key)
            assert x.shape == sample_shape + batch_shape
            assert x.dtype == jnp.float32
            log_prob = jax.eval_shape(lambda d, x: d.log_prob(x), d, x)
            assert log_prob.shape == sample_shape + batch_shape
        if name == "RelaxedBernoulli":
            with pytest.raises(NotImplementedError):
                _ = d.mean
        else:
            for moment in jax.eval_shape(
                lambda d: (d.mean, d.variance, d.entropy()), d
            ):
                assert moment.shape == batch_shape


def test_parameters_broadcast_against_each_other():
    key = jax.random.key(0)
    d = dist.Gamma(jnp.ones((3, 1)), jnp.ones(4))
    assert d.batch_shape == (3, 4)
    assert jax.eval_shape(lambda k: d.sample(k, (2,)), key).shape == (2, 3, 4)
    d = dist.TruncatedNormal(jnp.zeros(2), 1.0, low=jnp.zeros((3, 1)), high=None)
    assert d.batch_shape == (3, 2)
    assert jax.eval_shape(d.sample, key).shape == (3, 2)
    assert jax.eval_shape(lambda d: d.mean, d).shape == (3, 2)


# -- gradients ------------------------------------------------------------------------


def central_difference(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


GRADIENT_CASES = [
    ("Gamma", {"concentration": 2.5, "rate": 1.5}, 1.3),
    ("Gamma", {"concentration": 40.0, "rate": 0.5}, 70.0),
    ("Beta", {"concentration1": 0.7, "concentration0": 2.5}, 0.2),
    ("Beta", {"concentration1": 30.0, "concentration0": 12.0}, 0.75),
    ("StudentT", {"df": 3.5, "loc": 0.5, "scale": 2.0}, 3.0),
    ("StudentT", {"df": 80.0, "loc": 0.5, "scale": 2.0}, -1.0),
    ("TruncatedNormal", {"loc": 0.5, "scale": 1.5, "low": -1.0, "high": 2.0}, 0.2),
    ("TruncatedNormal", {"loc": 0.0, "scale": 1.0, "low": 8.0, "high": None}, 8.1),
    ("Weibull", {"scale": 2.0, "concentration": 1.0}, 1.5),
]


@pytest.mark.parametrize("name,params,value", GRADIENT_CASES)
def test_log_prob_gradient_matches_finite_differences(name, params, value):
    # jax.grad of the float32 log density against central differences of the
    # float64 reference log density
    names = [k for k, v in params.items() if v is not None]

    def log_prob(*args):
        return (
            FAMILIES[name]
            .build(dict(params, **dict(zip(names, args))))
            .log_prob(jnp.float32(value))
        )

    args = [jnp.float32(params[k]) for k in names]
    grads = jax.jit(jax.grad(log_prob, argnums=tuple(range(len(names)))))(*args)
    for i, k in enumerate(names):
        p64 = as_float64(as_float32(params))

        def reference_log_prob(x, k=k, p64=p64):
            return FAMILIES[name].reference(dict(p64, **{k: x})).logpdf(value)

        h = 1e-6 * max(abs(p64[k]), 1.0)
        expected = central_difference(reference_log_prob, p64[k], h)
        assert np.isfinite(float(grads[i]))
        np.testing.assert_allclose(float(grads[i]), expected, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["Cauchy", "Gumbel", "Laplace", "Logistic", "StudentT"]
)
def test_reparameterized_samples_move_with_loc(name):
    params = FAMILIES[name].moderate

    def draw(loc):
        return (
            FAMILIES[name].build(dict(params, loc=loc)).sample(jax.random.key(3), (50,))
        )

    jacobian = jax.jit(jax.jacfwd(draw))(jnp.float32(params["loc"]))
    np.testing.assert_allclose(np.asarray(jacobian), 1.0, rtol=1e-6)
    assert FAMILIES[name].build(params).has_rsample


def test_von_mises_samples_move_with_loc_only():
    d = dist.VonMises(0.3, 2.0)
    assert not d.has_rsample
    with pytest.raises(NotImplementedError, match="VonMises"):
        d.rsample(jax.random.key(0))
    jacobian = jax.jit(
        jax.jacfwd(lambda loc: dist.VonMises(loc, 2.0).sample(jax.random.key(3), (50,)))
    )(jnp.float32(0.3))
    np.testing.assert_allclose(np.asarray(jacobian), 1.0, rtol=1e-6)


def mean_gradient(a, b):
    """d E[X] / d a and d E[X] / d b for Gamma(a, b) and Beta(a, b)."""
    return {
        "Gamma": (1 / b, -a / b**2),
        "Beta": (b / (a + b) ** 2, -a / (a + b) ** 2),
    }


@pytest.mark.parametrize("name", ["Gamma", "Beta"])
def test_reparameterized_gradient_of_sample_mean(name):
    # One copy of the parameters per draw gives per-draw derivatives; their
    # average estimates the derivative of the mean. Two parameter settings,
    # one with concentrations below one, share a single compiled sampler.
    settings_ = [(0.3, 0.6), (2.0, 3.0)] if name == "Beta" else [(0.5, 2.0), (3.0, 0.7)]
    n = 4000
    a = jnp.asarray(np.repeat([s[0] for s in settings_], n), jnp.float32)
    b = jnp.asarray(np.repeat([s[1] for s in settings_], n), jnp.float32)
    family = getattr(dist, name)

    def total(a, b):
        return family(a, b).sample(jax.random.key(4)).sum()

    grads = jax.jit(jax.grad(total, argnums=(0, 1)))(a, b)
    for i, (a0, b0) in enumerate(settings_):
        expected = mean_gradient(a0, b0)[name]
        for per_draw, target in zip(grads, expected):
            per_draw = np.asarray(per_draw[i * n : (i + 1) * n], dtype=np.float64)
            assert np.all(np.isfinite(per_draw))
            se = per_draw.std() / math.sqrt(n)
            assert abs(per_draw.mean() - target) < 5 * se + 1e-6


def test_truncated_normal_reparameterized_gradient_of_sample_mean():
    n = 4000
    key = jax.random.key(5)

    def mean_of_draws(loc, scale, low, high):
        d = dist.TruncatedNormal(loc, scale, low=low, high=high)
        return d.sample(key, (n,))

    args = (jnp.float32(0.3), jnp.float32(1.5), jnp.float32(-1.0), jnp.float32(2.0))
    jacobians = jax.jit(jax.jacfwd(mean_of_draws, argnums=(0, 1, 2, 3)))(*args)
    # d E[X] / d parameter by central differences of the closed-form mean
    expected = []
    for i in range(4):
        h = np.float32(1e-2)
        shifted = [list(args), list(args)]
        shifted[0][i] = args[i] + h
        shifted[1][i] = args[i] - h
        means = [
            float(moments_jit(dist.TruncatedNormal(p[0], p[1], low=p[2], high=p[3]))[0])
            for p in shifted
        ]
        expected.append((means[0] - means[1]) / (2 * h))
    for jacobian, target in zip(jacobians, expected):
        jacobian = np.asarray(jacobian, dtype=np.float64)
        assert np.all(np.isfinite(jacobian))
        se = jacobian.std() / math.sqrt(n)
        assert abs(jacobian.mean() - float(target)) < 5 * se + 1e-6


# -- jit, vmap and pytrees ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_a_parameter(name):
    params = as_float32(FAMILIES[name].moderate)
    first = next(k for k, v in params.items() if v is not None)
    grid = params[first] * np.array([0.5, 1.0, 1.5], np.float32)
    if name == "Uniform":
        grid = np.array([-3.0, -1.0, 0.0], np.float32)  # low must stay below high
    x = jnp.asarray(values_for(name, FAMILIES[name].moderate, TAIL_QUANTILES[1:-1])[0])
    x = jnp.concatenate([x, x[:2]])  # N_VALUES values

    def with_first(value):
        return FAMILIES[name].build(dict(params, **{first: value}))

    batched = jax.jit(jax.vmap(lambda v: with_first(v).log_prob(x)))(jnp.asarray(grid))
    looped = np.stack([np.asarray(log_prob_jit(with_first(v), x)) for v in grid])
    assert batched.shape == (3, N_VALUES)
    np.testing.assert_allclose(np.asarray(batched), looped, rtol=1e-5, atol=1e-6)
    # sampling under vmap: the batching rules are checked by tracing, which
    # is enough to catch a sampler that cannot be batched
    draws = jax.eval_shape(
        jax.vmap(lambda v, key: with_first(v).sample(key, (2,))),
        jnp.asarray(grid),
        jax.random.split(jax.random.key(8), 3),
    )
    assert draws.shape == (3, 2)


def test_vmap_of_rejection_sampler_runs():
    keys = jax.random.split(jax.random.key(8), 3)
    concentrations = jnp.array([1e-3, 2.0, 1e3])
    draws = jax.jit(jax.vmap(lambda c, k: dist.VonMises(0.5, c).sample(k, (5,))))(
        concentrations, keys
    )
    assert draws.shape == (3, 5) and bool(jnp.all(jnp.abs(draws) <= math.pi))


def test_distribution_pytree_round_trip_keeps_static_fields():
    d = dist.TruncatedNormal(jnp.zeros(3), 1.0, low=None, high=2.0)
    leaves, treedef = jax.tree.flatten(d)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert rebuilt.low is None and rebuilt.batch_shape == (3,)
    stacked = jax.vmap(lambda loc: dist.Gamma(loc, 2.0))(jnp.ones(4))
    assert stacked.batch_shape == (4,)
    chi2 = jax.jit(lambda d: d)(dist.Chi2(jnp.ones(2)))
    assert chi2.df.shape == (2,) and chi2.batch_shape == (2,)


# -- argument and support validation ------------------------------------------------

INVALID_PARAMETERS = [
    (lambda: dist.Gamma(-1.0, 1.0, validate_args=True), "Gamma", "concentration"),
    (lambda: dist.Gamma(1.0, 0.0, validate_args=True), "Gamma", "rate"),
    (lambda: dist.Beta(1.0, -2.0, validate_args=True), "Beta", "concentration0"),
    (lambda: dist.StudentT(0.0, validate_args=True), "StudentT", "df"),
    (lambda: dist.LogNormal(0.0, -1.0, validate_args=True), "LogNormal", "scale"),
    (lambda: dist.Cauchy(jnp.nan, 1.0, validate_args=True), "Cauchy", "loc"),
    (
        lambda: dist.Exponential(jnp.array([1.0, -1.0]), validate_args=True),
        "Exponential",
        "rate",
    ),
    (lambda: dist.Weibull(1.0, 0.0, validate_args=True), "Weibull", "concentration"),
    (lambda: dist.Pareto(-1.0, 2.0, validate_args=True), "Pareto", "scale"),
    (lambda: dist.Uniform(1.0, 0.0, validate_args=True), "Uniform", "high"),
    (
        lambda: dist.TruncatedNormal(low=2.0, high=1.0, validate_args=True),
        "TruncatedNormal",
        "high",
    ),
    (lambda: dist.VonMises(0.0, -1.0, validate_args=True), "VonMises", "concentration"),
    (lambda: dist.Chi2(-3.0, validate_args=True), "Chi2", "df"),
    (
        lambda: dist.RelaxedBernoulli(0.0, logits=1.0, validate_args=True),
        "RelaxedBernoulli",
        "temperature",
    ),
    (
        lambda: dist.RelaxedBernoulli(1.0, probs=1.5, validate_args=True),
        "RelaxedBernoulli",
        "probs",
    ),
]


@pytest.mark.parametrize("make,family,parameter", INVALID_PARAMETERS)
def test_invalid_parameter_raises_naming_family_and_parameter(make, family, parameter):
    with pytest.raises(ValueError) as error:
        make()
    assert family in str(error.value) and parameter in str(error.value)


OUT_OF_SUPPORT = [
    (dist.Gamma(2.0, validate_args=True), -1.0),
    (dist.HalfNormal(1.0, validate_args=True), -0.5),
    (dist.Beta(2.0, 2.0, validate_args=True), 1.5),
    (dist.Uniform(0.0, 1.0, validate_args=True), 2.0),
    (dist.Pareto(1.0, 2.0, validate_args=True), 0.5),
    (dist.TruncatedNormal(0.0, 1.0, low=0.0, validate_args=True), -1.0),
    (dist.VonMises(0.0, 1.0, validate_args=True), 4.0),
    (dist.RelaxedBernoulli(0.5, probs=0.3, validate_args=True), 1.5),
    (dist.Cauchy(0.0, 1.0, validate_args=True), jnp.inf),
    (dist.ImproperUniform(constraints.positive, (), (), validate_args=True), -1.0),
]


@pytest.mark.parametrize("d,value", OUT_OF_SUPPORT)
def test_out_of_support_value_raises(d, value):
    with pytest.raises(ValueError, match=type(d).__name__):
        d.log_prob(value)


def test_valid_arguments_pass_and_traced_ones_are_not_checked():
    d = dist.Gamma(2.0, 3.0, validate_args=True)
    assert np.isfinite(float(d.log_prob(0.5)))
    dist.TruncatedNormal(low=None, high=1.0, validate_args=True)
    # concrete bounds are checked also while tracing, traced ones cannot be
    uniform = jax.jit(lambda x: dist.Uniform(0.0, 1.0, validate_args=True).log_prob(x))
    assert float(uniform(0.5)) == 0.0
    with pytest.raises(ValueError, match="Uniform"):
        jax.jit(lambda x: dist.Uniform(1.0, 0.0, validate_args=True).log_prob(x))(0.5)
    jax.jit(lambda h: dist.Uniform(1.0, h, validate_args=True).log_prob(1.5))(0.0)
    with pytest.raises(ValueError, match="TruncatedNormal"):
        jax.jit(
            lambda x: dist.TruncatedNormal(low=0.0, validate_args=True).log_prob(-1.0)
        )(0.0)


# -- family-specific behaviour ------------------------------------------------------


def test_out_of_support_log_density_is_minus_infinity():
    assert float(dist.Uniform(0.0, 1.0).log_prob(1.5)) == -np.inf
    assert float(dist.Pareto(1.0, 2.0).log_prob(0.5)) == -np.inf
    assert float(dist.TruncatedNormal(low=-1.0, high=1.0).log_prob(1.5)) == -np.inf
    assert float(dist.InverseGamma(2.0, 1.0).log_prob(0.0)) == -np.inf


def test_chi2_is_gamma_with_half_rate():
    x = jnp.array([0.1, 1.0, 4.0, 20.0])
    chi2 = dist.Chi2(5.0)
    gamma = dist.Gamma(2.5, 0.5)
    np.testing.assert_allclose(chi2.log_prob(x), gamma.log_prob(x), rtol=1e-6)
    assert float(chi2.df) == 5.0 and float(chi2.concentration) == 2.5
    assert float(chi2.rate) == 0.5


def test_relaxed_bernoulli_parameterizations_agree():
    x = jnp.array([1e-3, 0.2, 0.5, 0.9])
    by_probs = dist.RelaxedBernoulli(0.5, probs=0.3)
    by_logits = dist.RelaxedBernoulli(0.5, logits=math.log(0.3 / 0.7))
    logits_class = dist.RelaxedBernoulliLogits(0.5, math.log(0.3 / 0.7))
    np.testing.assert_allclose(by_probs.log_prob(x), by_logits.log_prob(x), rtol=1e-5)
    np.testing.assert_allclose(
        logits_class.log_prob(x), by_logits.log_prob(x), rtol=1e-6
    )
    np.testing.assert_allclose(float(by_logits.probs), 0.3, rtol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        dist.RelaxedBernoulli(0.5)
    with pytest.raises(ValueError, match="exactly one"):
        dist.RelaxedBernoulli(0.5, probs=0.3, logits=0.0)


def test_relaxed_bernoulli_approaches_bernoulli_at_low_temperature():
    d = dist.RelaxedBernoulli(0.02, probs=0.3)
    x = np.asarray(d.sample(jax.random.key(9), (N_DRAWS,)))
    assert np.all((x > 0) & (x < 1))
    assert np.mean((x > 0.01) & (x < 0.99)) < 0.05
    se = math.sqrt(0.3 * 0.7 / N_DRAWS)
    assert abs(np.mean(x > 0.5) - 0.3) < 5 * se


def test_relaxed_bernoulli_draws_stay_inside_at_extreme_logits():
    for logits in (-30.0, 30.0):
        d = dist.RelaxedBernoulli(0.5, logits=logits)
        x = d.sample(jax.random.key(10), (1000,))
        assert bool(jnp.all((x > 0) & (x < 1)))
        assert np.all(np.isfinite(np.asarray(d.log_prob(x))))


def test_improper_uniform():
    d = dist.ImproperUniform(constraints.positive, (2,), (3,))
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    assert d.support.event_dim == 1
    log_prob = d.log_prob(jnp.ones((4, 2, 3)))
    assert log_prob.shape == (4, 2)
    np.testing.assert_array_equal(np.asarray(log_prob), 0.0)
    with pytest.raises(NotImplementedError, match="ImproperUniform"):
        d.sample(jax.random.key(0))
    with pytest.raises(ValueError, match="ImproperUniform"):
        dist.ImproperUniform(constraints.simplex, (), ())
    jitted = jax.jit(lambda d, x: d.log_prob(x))(d, jnp.ones((2, 3)))
    assert jitted.shape == (2,)


def test_pareto_log_prob_finite_near_float32_max():
    # x / scale would overflow float32 here; the density itself is finite.
    alpha, scale = 0.1036632928437698, 0.1
    x = np.float32(3.8589112e37)
    expected = stats.pareto(b=alpha, scale=scale).logpdf(np.float64(x))
    actual = dist.Pareto(scale, alpha).log_prob(jnp.asarray(x))
    np.testing.assert_allclose(float(actual), expected, rtol=1e-5)


def test_log_gamma_matches_scipy_and_its_gradient_is_digamma():
    from probnn.distributions._continuous_special import log_gamma

    x = np.concatenate(
        [np.geomspace(1e-30, 1e-3, 50), np.linspace(1e-3, 12, 4001)]
        + [np.geomspace(12, 1e30, 50)]
    ).astype(np.float32)
    truth = special.gammaln(x.astype(np.float64))
    got = np.asarray(jax.jit(log_gamma)(jnp.asarray(x)), dtype=np.float64)
    np.testing.assert_allclose(got, truth, rtol=2e-6, atol=2e-6)
    grad = jax.vmap(jax.grad(log_gamma))(jnp.asarray(x[50:4051]))
    np.testing.assert_allclose(
        grad, special.digamma(x[50:4051].astype(np.float64)), rtol=2e-5, atol=2e-5
    )


def test_beta_cdf_gradient_is_the_density_and_concentrations_raise():
    d = dist.Beta(2.5, 4.0)
    values = jnp.array([0.05, 0.3, 0.7, 0.99])
    grads = jax.vmap(jax.grad(d.cdf))(values)
    np.testing.assert_allclose(
        grads, stats.beta(2.5, 4.0).pdf(np.asarray(values, np.float64)), rtol=1e-5
    )
    with pytest.raises(NotImplementedError, match="concentration a"):
        jax.grad(lambda a: dist.Beta(a, 4.0).cdf(0.3))(2.5)
