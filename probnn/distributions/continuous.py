"""Continuous families.

Every family keeps NumPyro's constructor signature and attribute names. Log
densities, cdfs and moments are written to stay accurate in float32 at
extreme parameters: large concentrations use Stirling-series forms instead of
differences of large log-gamma terms, and truncated normals work with log
tail probabilities.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import (
    betainc,
    betaln,
    digamma,
    erf,
    erfc,
    erfinv,
    gammainc,
    gammaincc,
    gammaln,
    i0e,
    i1e,
    log_ndtr,
    ndtr,
    ndtri,
    xlog1py,
    xlogy,
)

from probnn.distributions import constraints
from probnn.distributions.distribution import Distribution
from probnn.distributions.util import batch_shape_of, is_concrete, promote_shapes

__all__ = [
    "Beta",
    "Cauchy",
    "Chi2",
    "Exponential",
    "Gamma",
    "Gumbel",
    "HalfCauchy",
    "HalfNormal",
    "ImproperUniform",
    "InverseGamma",
    "Laplace",
    "LogNormal",
    "Logistic",
    "Normal",
    "Pareto",
    "RelaxedBernoulli",
    "RelaxedBernoulliLogits",
    "StudentT",
    "TruncatedNormal",
    "Uniform",
    "VonMises",
    "Weibull",
]

_LOG_2PI = math.log(2 * math.pi)
_HALF_LOG_2PI = 0.5 * _LOG_2PI
_LOG_HALF = math.log(0.5)
_EULER_GAMMA = 0.5772156649015329
_GAUSS_LEGENDRE_NODES, _GAUSS_LEGENDRE_WEIGHTS = (
    array.astype(np.float32) for array in np.polynomial.legendre.leggauss(8)
)
# From this concentration on, log-gamma and digamma are replaced by their
# Stirling series, whose truncation error there is below 1e-12.
_STIRLING_MIN = 10.0
# From this many degrees of freedom on, StudentT.cdf uses Hill's expansion.
_HILL_MIN_DF = 30.0


# -- numerical helpers ---------------------------------------------------------


def _float_dtype(*params):
    return jnp.result_type(*params, float)


def _clip_positive(x):
    """Keep draws strictly positive: float32 draws can underflow to zero."""
    return jnp.maximum(x, jnp.finfo(jnp.result_type(x)).tiny)


def _clip_unit(x):
    """Keep draws strictly inside (0, 1)."""
    finfo = jnp.finfo(jnp.result_type(x))
    return jnp.clip(x, finfo.tiny, 1 - finfo.epsneg)


def _stirling_correction(x):
    """``lgamma(x) - ((x - 1/2) log x - x + log(2 pi) / 2)`` for ``x >= 10``."""
    inv = 1 / x
    inv2 = inv * inv
    return inv * (1 / 12 - inv2 * (1 / 360 - inv2 * (1 / 1260 - inv2 / 1680)))


def _digamma_tail(x):
    """``log x - 1/(2x) - digamma(x)`` for ``x >= 10``."""
    inv2 = 1 / (x * x)
    return inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 / 240)))


def _log1pmx(r, log1p_r, accurate_near_zero=False):
    """``log(1 + r) - r``; ``log1p_r`` is ``log(1 + r)`` computed by the caller
    in a way that stays accurate when ``r`` is near -1 (and, with
    ``accurate_near_zero``, also for ``|r| < 0.5``, saving a second log1p)."""
    # near zero the difference loses its leading digits; the Taylor series
    # -r^2/2 + r^3/3 - ... does not, and to r^12 it is exact in float32 there
    tiny = jnp.abs(r) < 0.1
    rt = jnp.where(tiny, r, 0.0)
    series = 0.0
    for n in range(12, 1, -1):
        series = (series + (-1) ** (n + 1) / n) * rt
    series = series * rt
    if accurate_near_zero:
        return jnp.where(tiny, series, log1p_r - r)
    near = jnp.abs(r) < 0.5
    r_near = jnp.where(near, r, 0.0)
    return jnp.where(
        tiny, series, jnp.where(near, jnp.log1p(r_near) - r_near, log1p_r - r)
    )


def _digamma_difference(a, b):
    """``digamma(a + b) - digamma(a)`` for ``a >= 10`` and ``b > 0``, without
    the cancellation of two nearly equal digammas."""
    n = a + b
    return jnp.log1p(b / a) + b / (2 * a * n) + (_digamma_tail(a) - _digamma_tail(n))


def _standard_gamma_log_prob(concentration, y, log_y):
    """Log density of ``Gamma(concentration, 1)`` at ``y``; ``log_y`` is
    ``log(y)``, computed by the caller so that it stays finite where the
    product or quotient forming ``y`` underflows.

    For large concentrations the textbook form subtracts terms of size
    ``concentration * log(y)`` that nearly cancel; the Stirling form instead
    works with ``y / concentration - 1``.
    """
    y, log_y = jnp.asarray(y), jnp.asarray(log_y)
    # the density vanishes at y = inf, where the terms below give inf - inf
    finite = y < jnp.inf
    y = jnp.where(finite, y, 1.0)
    at_zero = log_y == -jnp.inf
    # (concentration - 1) log y with xlogy's 0 * log 0 = 0; the value at zero
    # (+-inf or 0) carries no gradient
    power = jnp.where(
        at_zero,
        jax.lax.stop_gradient(xlogy(concentration - 1, 0.0)),
        (concentration - 1) * jnp.where(at_zero | ~finite, 0.0, log_y),
    )
    naive = power - y - gammaln(concentration)
    large = concentration >= _STIRLING_MIN
    a = jnp.where(large, concentration, _STIRLING_MIN)
    y = jnp.where(large, y, a)
    r = (y - a) / a
    log_y_large = jnp.where(large & finite, log_y, jnp.log(a))
    log_ratio = log_y_large - jnp.log(a)
    near = jnp.abs(r) < 0.5
    log1p_r = jnp.where(near, jnp.log1p(jnp.where(near, r, 0.0)), log_ratio)
    stable = (
        a * _log1pmx(r, log1p_r, accurate_near_zero=True)
        - log1p_r
        - 0.5 * (_LOG_2PI + jnp.log(a))
        - _stirling_correction(a)
    )
    return jnp.where(finite, jnp.where(large & ~at_zero, stable, naive), -jnp.inf)


def _log_product(product, a, b):
    """``log(a * b)`` given ``product = a * b``, also where the product
    underflows (values below float32's smallest normal number are flushed to
    zero on CPU)."""
    tiny = product < 1e-30
    one = jnp.ones_like(product)
    return jnp.where(
        tiny,
        jnp.log(jnp.where(tiny, a, one)) + jnp.log(jnp.where(tiny, b, one)),
        jnp.log(jnp.where(tiny, one, product)),
    )


def _standard_gamma_entropy(concentration):
    """Entropy of ``Gamma(concentration, 1)``."""
    naive = (
        concentration
        + gammaln(concentration)
        + (1 - concentration) * digamma(concentration)
    )
    large = concentration >= _STIRLING_MIN
    a = jnp.where(large, concentration, _STIRLING_MIN)
    stable = (
        0.5 * (_LOG_2PI + jnp.log(a))
        + _stirling_correction(a)
        + (a - 1) / (2 * a)
        + (a - 1) * _digamma_tail(a)
    )
    return jnp.where(large, stable, naive)


def _log_ratio(x, scale):
    """``log(x / scale)``, accurate also when ``x`` is close to ``scale``."""
    r = (x - scale) / scale
    near = jnp.abs(r) < 0.5
    # Far from scale, a difference of logs cannot overflow as x / scale can.
    far = jnp.log(x) - jnp.log(scale)
    return jnp.where(near, jnp.log1p(jnp.where(near, r, 0.0)), far)


# Taylor coefficients in eta of Temme's c_0 .. c_3 (DLMF 8.12.8-8.12.11),
# computed in exact rational arithmetic by series reversion of
# mu - log(1 + mu) = eta^2 / 2 and the recursion
# c_k = c_{k-1}'(eta) / eta + (-1)^k g_k / mu, g = Stirling coefficients.
_TEMME_SERIES = (
    (
        -0.3333333333333333,
        0.08333333333333333,
        -0.014814814814814815,
        0.0011574074074074073,
        0.0003527336860670194,
        -0.0001787551440329218,
        3.919263178522438e-05,
        -2.185448510679992e-06,
        -1.85406221071516e-06,
        8.296711340953087e-07,
        -1.7665952736826078e-07,
        6.707853543401498e-09,
        1.0261809784240309e-08,
        -4.382036018453353e-09,
        9.14769958223679e-10,
        -2.5514193994946248e-11,
    ),
    (
        -0.001851851851851852,
        -0.003472222222222222,
        0.0026455026455026454,
        -0.0009902263374485596,
        0.00020576131687242798,
        -4.018775720164609e-07,
        -1.8098550334489977e-05,
        7.64916091608111e-06,
        -1.6120900894563446e-06,
        4.647127802807434e-09,
        1.378633446915721e-07,
        -5.752545603517705e-08,
        1.1951628599778148e-08,
        -1.7543241719747647e-11,
        -1.0091543710600413e-09,
        4.162792991842583e-10,
    ),
    (
        0.004133597883597883,
        -0.0026813271604938273,
        0.0007716049382716049,
        2.0093878600823047e-06,
        -0.0001073665322636516,
        5.2923448829120125e-05,
        -1.2760635188618728e-05,
        3.423578734096138e-08,
        1.3721957309062934e-06,
        -6.298992138380055e-07,
        1.4280614206064242e-07,
        -2.0477098421990866e-10,
        -1.409252991086752e-08,
        6.228974084922022e-09,
        -1.3670488396617114e-09,
        9.428356159014678e-13,
    ),
    (
        0.0006494341563786008,
        0.00022947209362139917,
        -0.0004691894943952557,
        0.00026772063206283885,
        -7.561801671883977e-05,
        -2.396505113867297e-07,
        1.1082654115347302e-05,
        -5.6749528269915965e-06,
        1.4230900732435883e-06,
        -2.7861080291528143e-11,
        -1.6958404091930278e-07,
        8.099464905388083e-08,
        -1.9111168485973655e-08,
        2.3928620439808118e-12,
        2.0620131815488797e-09,
    ),
)


def _temme_coefficients(mu, eta):
    """Temme's ``c_0(eta) .. c_3(eta)`` for the incomplete gamma function."""
    near = jnp.abs(eta) < 2.0
    eta_near = jnp.where(near, eta, 0.0)
    series = []
    for coefficients in _TEMME_SERIES:
        value = 0.0
        for coefficient in reversed(coefficients):
            value = value * eta_near + coefficient
        series.append(value)
    # away from eta = 0 the closed forms cancel only mildly
    m = jnp.where(near, 1.0, mu)
    e = jnp.where(near, 1.0, eta)
    im, ie = 1 / m, 1 / e
    closed = (
        im - ie,
        ie**3 - im**3 - im**2 - im / 12,
        -3 * ie**5
        + im * (1 / 288 + im * (1 / 12 + im * (25 / 12 + im * (5 + 3 * im)))),
        15 * ie**7
        + im
        * (
            139 / 51840
            - im
            * (
                1 / 288
                + im
                * (49 / 288 + im * (77 / 12 + im * (105 / 4 + im * (35 + 15 * im))))
            )
        ),
    )
    return [jnp.where(near, a, b) for a, b in zip(series, closed)]


def _regularized_gamma(a, x, upper: bool):
    """``P(a, x)`` (or ``Q(a, x)`` when ``upper``) accurate in float32.

    ``jax.scipy.special.gammainc`` loses digits for large ``a`` (relative
    errors near 1e-3 at ``a = 1000``); from ``a = 10`` on Temme's uniform
    asymptotic expansion with four terms is used instead (relative error
    below 1e-6).
    """
    large = a >= _STIRLING_MIN
    a_large = jnp.where(large, a, _STIRLING_MIN)
    x_large = jnp.where(large, x, _STIRLING_MIN)
    mu = (x_large - a_large) / a_large
    finite = jnp.isfinite(mu)
    mu_finite = jnp.where(finite, mu, 1.0)
    half_eta2 = -_log1pmx(mu_finite, jnp.log1p(mu_finite))
    eta = jnp.sign(mu_finite) * jnp.sqrt(2 * half_eta2)
    eta = jnp.where(finite, eta, jnp.inf)
    c0, c1, c2, c3 = _temme_coefficients(mu_finite, jnp.where(finite, eta, 1.0))
    inv_a = 1 / a_large
    series = c0 + inv_a * (c1 + inv_a * (c2 + inv_a * c3))
    remainder = jnp.where(
        finite,
        jnp.exp(-a_large * half_eta2) / jnp.sqrt(2 * math.pi * a_large) * series,
        0.0,
    )
    root = eta * jnp.sqrt(0.5 * a_large)
    if upper:
        temme = 0.5 * erfc(root) + remainder
        small = gammaincc(jnp.where(large, 1.0, a), x)
    else:
        temme = 0.5 * erfc(-root) - remainder
        small = gammainc(jnp.where(large, 1.0, a), x)
    return jnp.where(large, temme, small)


def _log1p_square(v):
    """``log(1 + v^2)`` without overflow of ``v^2`` for huge ``|v|``."""
    big = jnp.abs(v) > 1
    inv = 1 / jnp.where(big, v, 1.0)
    small = jnp.where(big, 0.0, v)
    return jnp.where(
        big, -2 * jnp.log(jnp.abs(inv)) + jnp.log1p(inv * inv), jnp.log1p(small * small)
    )


def _log1mexp(x):
    """``log(1 - exp(x))`` for ``x <= 0``."""
    upper = x > -math.log(2)
    x_upper = jnp.where(upper, x, -1.0)
    x_lower = jnp.where(upper, -1.0, x)
    return jnp.where(upper, jnp.log(-jnp.expm1(x_upper)), jnp.log1p(-jnp.exp(x_lower)))


def _log_ndtr_safe(z):
    """``log_ndtr`` that also takes infinite ``z`` with finite gradients."""
    finite = jnp.isfinite(z)
    value = log_ndtr(jnp.where(finite, z, 0.0))
    return jnp.where(finite, value, jnp.where(z > 0, 0.0, -jnp.inf))


def _log_normal_pdf_safe(z):
    """Log of the standard normal density; ``-inf`` at infinite ``z``."""
    finite = jnp.isfinite(z)
    z = jnp.where(finite, z, 0.0)
    return jnp.where(finite, -0.5 * z * z - _HALF_LOG_2PI, -jnp.inf)


def _log_ndtr_difference(a, b, width=None):
    """``log(ndtr(b) - ndtr(a))`` for ``a <= b``, accurate in both tails.

    When the interval lies right of zero, the symmetric left-tail interval
    ``[-b, -a]`` is used, where ``log_ndtr`` keeps full precision. ``width``
    is ``b - a``, if the caller has it more accurately than the difference.
    """
    if width is None:
        width = b - a
    flip = a > 0
    lower, upper, width = jnp.broadcast_arrays(
        jnp.where(flip, -b, a), jnp.where(flip, -a, b), width
    )
    # For a short interval log ndtr(lower) - log ndtr(upper) is a small
    # difference of two large numbers; there it is computed instead as minus
    # the integral of d/dt log ndtr(t) = pdf(t) / ndtr(t) over [lower, upper],
    # by Gauss-Legendre quadrature. All log_ndtr evaluations share one call
    # (along a trailing axis), which keeps the compiled program small.
    short = jnp.isfinite(lower) & jnp.isfinite(upper) & (width <= 2)
    half_width = 0.5 * jnp.where(short, width, 1.0)
    midpoint = jnp.where(short, lower, -1.0) + half_width
    nodes = midpoint[..., None] + half_width[..., None] * _GAUSS_LEGENDRE_NODES
    points = jnp.concatenate([nodes, lower[..., None], upper[..., None]], axis=-1)
    log_cdfs = _log_ndtr_safe(points)
    log_lower, log_upper = log_cdfs[..., -2], log_cdfs[..., -1]
    finite_nodes = jnp.where(short[..., None], nodes, 0.0)
    slopes = jnp.exp(
        -0.5 * finite_nodes * finite_nodes - _HALF_LOG_2PI - log_cdfs[..., :-2]
    )
    integral = half_width * jnp.sum(slopes * _GAUSS_LEGENDRE_WEIGHTS, axis=-1)
    log_ratio = jnp.where(short, -integral, log_lower - log_upper)
    return log_upper + _log1mexp(log_ratio)


def _ndtri_of_log(log_p):
    """Inverse of ``log_ndtr`` for ``log_p <= log(1/2)``, also far past the
    range where ``exp(log_p)`` is a normal float32."""
    # exp(-60) is well inside float32's normal range.
    direct = log_p > -60.0
    z_direct = ndtri(jnp.exp(jnp.where(direct, log_p, _LOG_HALF)))
    # log ndtr(z) ~ -z^2/2 - log(-z) - log(2 pi)/2 for z -> -inf; a few Newton
    # steps on log_ndtr polish this start.
    finite = jnp.isfinite(log_p)
    log_p_far = jnp.where(direct | ~finite, -100.0, log_p)
    t = -2 * log_p_far

    def newton_step(_, z):
        log_cdf = log_ndtr(z)
        slope = jnp.exp(-0.5 * z * z - _HALF_LOG_2PI - log_cdf)
        return z - (log_cdf - log_p_far) / slope

    z = jax.lax.fori_loop(0, 3, newton_step, -jnp.sqrt(t - jnp.log(t) - _LOG_2PI))
    z = jnp.where(direct, z_direct, z)
    return jnp.where(finite, z, -jnp.inf)


class Normal(Distribution):
    """Normal distribution with mean ``loc`` and standard deviation ``scale``.

    >>> import jax
    >>> d = Normal(0.0, 2.0)
    >>> float(d.log_prob(0.0))  # -log(2 * sqrt(2 pi))
    -1.612...
    >>> d.sample(jax.random.key(0), (3,)).shape
    (3,)
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True
    reparametrized_params = ("loc", "scale")
    pytree_data_fields = ("loc", "scale")

    def __init__(self, loc=0.0, scale=1.0, *, validate_args=None):
        self.loc, self.scale = promote_shapes(loc, scale)
        super().__init__(batch_shape_of(loc, scale), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = jnp.result_type(self.loc, self.scale, float)
        noise = jax.random.normal(key, shape, dtype=dtype)
        return self.loc + self.scale * noise

    def log_prob(self, value):
        self._validate_sample(value)
        z = (value - self.loc) / self.scale
        return -0.5 * jnp.square(z) - jnp.log(self.scale) - _HALF_LOG_2PI

    def cdf(self, value):
        return ndtr((value - self.loc) / self.scale)

    def icdf(self, q):
        return self.loc + self.scale * ndtri(q)

    @property
    def mean(self):
        return jnp.broadcast_to(self.loc, self.batch_shape)

    @property
    def variance(self):
        return jnp.broadcast_to(jnp.square(self.scale), self.batch_shape)

    def entropy(self):
        return jnp.broadcast_to(
            0.5 + _HALF_LOG_2PI + jnp.log(self.scale), self.batch_shape
        )


class _LocScale(Distribution):
    """Shared constructor of the real-valued location-scale families."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True
    reparametrized_params = ("loc", "scale")
    pytree_data_fields = ("loc", "scale")

    def __init__(self, loc=0.0, scale=1.0, *, validate_args=None):
        self.loc, self.scale = promote_shapes(loc, scale)
        super().__init__(batch_shape_of(loc, scale), validate_args=validate_args)

    def _standard_sample(self, key, shape, dtype):
        raise NotImplementedError

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = _float_dtype(self.loc, self.scale)
        return self.loc + self.scale * self._standard_sample(key, shape, dtype)

    def _broadcast(self, x):
        return jnp.broadcast_to(x, self.batch_shape)


class LogNormal(Distribution):
    """Distribution of ``exp(X)`` for ``X ~ Normal(loc, scale)``.

    >>> d = LogNormal(0.0, 1.0)
    >>> float(d.log_prob(1.0))  # -log(sqrt(2 pi))
    -0.9189...
    >>> float(d.cdf(1.0))
    0.5
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.positive
    has_rsample = True
    reparametrized_params = ("loc", "scale")
    pytree_data_fields = ("loc", "scale")

    def __init__(self, loc=0.0, scale=1.0, *, validate_args=None):
        self.loc, self.scale = promote_shapes(loc, scale)
        super().__init__(batch_shape_of(loc, scale), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = _float_dtype(self.loc, self.scale)
        noise = jax.random.normal(key, shape, dtype=dtype)
        return _clip_positive(jnp.exp(self.loc + self.scale * noise))

    def log_prob(self, value):
        self._validate_sample(value)
        log_value = jnp.log(value)
        z = (log_value - self.loc) / self.scale
        return -0.5 * jnp.square(z) - jnp.log(self.scale) - _HALF_LOG_2PI - log_value

    def cdf(self, value):
        return ndtr((jnp.log(value) - self.loc) / self.scale)

    def icdf(self, q):
        return jnp.exp(self.loc + self.scale * ndtri(q))

    @property
    def mean(self):
        return jnp.broadcast_to(
            jnp.exp(self.loc + 0.5 * jnp.square(self.scale)), self.batch_shape
        )

    @property
    def variance(self):
        scale2 = jnp.square(self.scale)
        return jnp.broadcast_to(
            jnp.expm1(scale2) * jnp.exp(2 * self.loc + scale2), self.batch_shape
        )

    def entropy(self):
        return jnp.broadcast_to(
            self.loc + 0.5 + _HALF_LOG_2PI + jnp.log(self.scale), self.batch_shape
        )


class HalfNormal(Distribution):
    """Distribution of ``|X|`` for ``X ~ Normal(0, scale)``.

    >>> d = HalfNormal(1.0)
    >>> float(d.log_prob(0.0))  # log(2 / sqrt(2 pi))
    -0.2257...
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.positive
    has_rsample = True
    reparametrized_params = ("scale",)
    pytree_data_fields = ("scale",)

    def __init__(self, scale=1.0, *, validate_args=None):
        self.scale = scale
        super().__init__(jnp.shape(scale), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        noise = jax.random.normal(key, shape, dtype=_float_dtype(self.scale))
        return _clip_positive(self.scale * jnp.abs(noise))

    def log_prob(self, value):
        self._validate_sample(value)
        z = value / self.scale
        return (
            -0.5 * jnp.square(z) - jnp.log(self.scale) + (math.log(2) - _HALF_LOG_2PI)
        )

    def cdf(self, value):
        return erf(value / (self.scale * math.sqrt(2)))

    def icdf(self, q):
        return self.scale * math.sqrt(2) * erfinv(q)

    @property
    def mean(self):
        return jnp.broadcast_to(self.scale * math.sqrt(2 / math.pi), self.batch_shape)

    @property
    def variance(self):
        return jnp.broadcast_to(
            jnp.square(self.scale) * (1 - 2 / math.pi), self.batch_shape
        )

    def entropy(self):
        return jnp.broadcast_to(
            0.5 * math.log(math.pi / 2) + 0.5 + jnp.log(self.scale), self.batch_shape
        )


class HalfCauchy(Distribution):
    """Distribution of ``|X|`` for ``X ~ Cauchy(0, scale)``; mean and variance
    are infinite.

    >>> d = HalfCauchy(1.0)
    >>> float(d.log_prob(0.0))  # log(2 / pi)
    -0.4515...
    >>> float(d.cdf(1.0))
    0.5
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.positive
    has_rsample = True
    reparametrized_params = ("scale",)
    pytree_data_fields = ("scale",)

    def __init__(self, scale=1.0, *, validate_args=None):
        self.scale = scale
        super().__init__(jnp.shape(scale), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        noise = jax.random.cauchy(key, shape, dtype=_float_dtype(self.scale))
        return _clip_positive(self.scale * jnp.abs(noise))

    def log_prob(self, value):
        self._validate_sample(value)
        return (
            math.log(2 / math.pi)
            - jnp.log(self.scale)
            - _log1p_square(value / self.scale)
        )

    def cdf(self, value):
        return (2 / math.pi) * jnp.arctan(value / self.scale)

    def icdf(self, q):
        # near q = 1 the cotangent of pi (1 - q) / 2 is exact in 1 - q
        q = jnp.asarray(q)
        left = q < 0.5
        return self.scale * jnp.where(
            left,
            jnp.tan((math.pi / 2) * jnp.where(left, q, 0.25)),
            1 / jnp.tan((math.pi / 2) * (1 - jnp.where(left, 0.75, q))),
        )

    @property
    def mean(self):
        return jnp.full(self.batch_shape, jnp.inf, dtype=_float_dtype(self.scale))

    @property
    def variance(self):
        return jnp.full(self.batch_shape, jnp.inf, dtype=_float_dtype(self.scale))

    def entropy(self):
        return jnp.broadcast_to(
            math.log(2 * math.pi) + jnp.log(self.scale), self.batch_shape
        )


class Cauchy(_LocScale):
    """Cauchy distribution; its mean and variance are undefined (NaN).

    >>> d = Cauchy(0.0, 1.0)
    >>> float(d.log_prob(0.0))  # -log(pi)
    -1.1447...
    >>> float(d.icdf(0.75))
    1.0
    """

    def _standard_sample(self, key, shape, dtype):
        return jax.random.cauchy(key, shape, dtype=dtype)

    def log_prob(self, value):
        self._validate_sample(value)
        z = (value - self.loc) / self.scale
        return -math.log(math.pi) - jnp.log(self.scale) - _log1p_square(z)

    def cdf(self, value):
        # atan2(1, -z) / pi equals 1/2 + atan(z) / pi, without the cancellation
        # of that sum in the left tail.
        z = (value - self.loc) / self.scale
        return jnp.arctan2(1.0, -z) / math.pi

    def icdf(self, q):
        # tan(pi (q - 1/2)) is inaccurate near q = 0 and q = 1, where the
        # cotangent forms are exact in q and 1 - q.
        q = jnp.asarray(q)
        centre = jnp.abs(q - 0.5) <= 0.25
        z_centre = jnp.tan(math.pi * (jnp.where(centre, q, 0.5) - 0.5))
        q_tail = jnp.where(centre, 0.25, q)
        left = q_tail < 0.5
        z_tail = jnp.where(
            left,
            -1 / jnp.tan(math.pi * jnp.where(left, q_tail, 0.25)),
            1 / jnp.tan(math.pi * jnp.where(left, 0.25, 1 - q_tail)),
        )
        return self.loc + self.scale * jnp.where(centre, z_centre, z_tail)

    @property
    def mean(self):
        return jnp.full(self.batch_shape, jnp.nan, dtype=_float_dtype(self.loc))

    @property
    def variance(self):
        return jnp.full(self.batch_shape, jnp.nan, dtype=_float_dtype(self.loc))

    def entropy(self):
        return self._broadcast(math.log(4 * math.pi) + jnp.log(self.scale))


class Laplace(_LocScale):
    """Laplace (double exponential) distribution.

    >>> d = Laplace(0.0, 1.0)
    >>> float(d.log_prob(0.0))  # -log(2)
    -0.6931...
    """

    def _standard_sample(self, key, shape, dtype):
        return jax.random.laplace(key, shape, dtype=dtype)

    def log_prob(self, value):
        self._validate_sample(value)
        z = jnp.abs(value - self.loc) / self.scale
        return -z - jnp.log(2 * self.scale)

    def cdf(self, value):
        z = (value - self.loc) / self.scale
        half_tail = 0.5 * jnp.exp(-jnp.abs(z))
        return jnp.where(z < 0, half_tail, 1 - half_tail)

    def icdf(self, q):
        q = jnp.asarray(q)
        left = q < 0.5
        z = jnp.where(
            left,
            jnp.log(2 * jnp.where(left, q, 0.25)),
            -jnp.log(2 * (1 - jnp.where(left, 0.75, q))),
        )
        return self.loc + self.scale * z

    @property
    def mean(self):
        return self._broadcast(self.loc)

    @property
    def variance(self):
        return self._broadcast(2 * jnp.square(self.scale))

    def entropy(self):
        return self._broadcast(1 + jnp.log(2 * self.scale))


class Logistic(_LocScale):
    """Logistic distribution; its cdf is ``sigmoid((x - loc) / scale)``.

    >>> d = Logistic(0.0, 1.0)
    >>> float(d.log_prob(0.0))  # log(1/4)
    -1.3862...
    """

    def _standard_sample(self, key, shape, dtype):
        return jax.random.logistic(key, shape, dtype=dtype)

    def log_prob(self, value):
        self._validate_sample(value)
        # symmetric in z; written in |z| it has no inf - inf at z = -inf
        z = jnp.abs(value - self.loc) / self.scale
        return -z - 2 * jax.nn.softplus(-z) - jnp.log(self.scale)

    def cdf(self, value):
        return jax.nn.sigmoid((value - self.loc) / self.scale)

    def icdf(self, q):
        return self.loc + self.scale * (jnp.log(q) - jnp.log1p(-q))

    @property
    def mean(self):
        return self._broadcast(self.loc)

    @property
    def variance(self):
        return self._broadcast(jnp.square(self.scale) * (math.pi**2 / 3))

    def entropy(self):
        return self._broadcast(jnp.log(self.scale) + 2)


class Gumbel(_LocScale):
    """Gumbel (type I extreme value) distribution of maxima.

    >>> d = Gumbel(0.0, 1.0)
    >>> float(d.log_prob(0.0))  # -(0 + exp(0))
    -1.0
    """

    def _standard_sample(self, key, shape, dtype):
        return jax.random.gumbel(key, shape, dtype=dtype)

    def log_prob(self, value):
        self._validate_sample(value)
        z = (value - self.loc) / self.scale
        # at z = -inf the two terms would give -inf + inf
        log_prob = -(z + jnp.exp(-z)) - jnp.log(self.scale)
        return jnp.where(z > -jnp.inf, log_prob, -jnp.inf)

    def cdf(self, value):
        return jnp.exp(-jnp.exp(-(value - self.loc) / self.scale))

    def icdf(self, q):
        return self.loc - self.scale * jnp.log(-jnp.log(q))

    @property
    def mean(self):
        return self._broadcast(self.loc + self.scale * _EULER_GAMMA)

    @property
    def variance(self):
        return self._broadcast(jnp.square(self.scale) * (math.pi**2 / 6))

    def entropy(self):
        return self._broadcast(jnp.log(self.scale) + _EULER_GAMMA + 1)


class StudentT(Distribution):
    """Student's t distribution with ``df`` degrees of freedom.

    The mean is ``inf`` for ``df <= 1`` and the variance ``inf`` for
    ``1 < df <= 2`` and NaN for ``df <= 1``, as in NumPyro.

    >>> d = StudentT(1.0)  # a standard Cauchy
    >>> float(d.log_prob(0.0))
    -1.1447...
    >>> float(d.cdf(1.0))
    0.75
    """

    arg_constraints = {
        "df": constraints.positive,
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    support = constraints.real
    has_rsample = True
    reparametrized_params = ("df", "loc", "scale")
    pytree_data_fields = ("df", "loc", "scale")

    def __init__(self, df, loc=0.0, scale=1.0, *, validate_args=None):
        self.df, self.loc, self.scale = promote_shapes(df, loc, scale)
        super().__init__(batch_shape_of(df, loc, scale), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = _float_dtype(self.df, self.loc, self.scale)
        key_normal, key_gamma = jax.random.split(key)
        half_df = jnp.broadcast_to(0.5 * self.df, shape).astype(dtype)
        normal = jax.random.normal(key_normal, shape, dtype=dtype)
        # log-space gamma: a gamma draw that underflows to zero would give inf
        log_gamma = jax.random.loggamma(key_gamma, half_df, shape, dtype=dtype)
        z = normal * jnp.exp(0.5 * (jnp.log(half_df) - log_gamma))
        return self.loc + self.scale * z

    def log_prob(self, value):
        self._validate_sample(value)
        z = (value - self.loc) / self.scale
        return (
            -betaln(0.5 * self.df, 0.5)
            - 0.5 * jnp.log(self.df)
            - jnp.log(self.scale)
            - 0.5 * (self.df + 1) * _log1p_square(z / jnp.sqrt(self.df))
        )

    def cdf(self, value):
        z = (value - self.loc) / self.scale
        df = self.df
        # x = df / (df + z^2) and w = 1 - x from v = |z| / sqrt(df), taking
        # 1 / v when v > 1 so that z^2 cannot overflow
        v = jnp.abs(z) / jnp.sqrt(df)
        big = v > 1
        v = jnp.where(big, 1 / jnp.where(big, v, 1.0), v)
        v2 = v * v
        x = jnp.where(big, v2, 1.0) / (1 + v2)
        w = jnp.where(big, 1.0, v2) / (1 + v2)
        log1p_square = jnp.where(big, -2 * jnp.log(v), 0.0) + jnp.log1p(v2)
        # P(T < -|z|) = I_x(df/2, 1/2) / 2 = (1 - I_w(1/2, df/2)) / 2; each
        # form is used where its argument is small, so neither loses the tail.
        use_x = x < 0.5
        half_df = jnp.where(df < _HILL_MIN_DF, 0.5 * df, 1.0)
        tail = jnp.where(
            use_x,
            0.5 * betainc(half_df, 0.5, jnp.where(use_x, x, 0.25)),
            0.5 - 0.5 * betainc(0.5, half_df, jnp.where(use_x, 0.25, w)),
        )
        # Far out x underflows; there I_x(a, 1/2) = x^a / (a B(a, 1/2)) to
        # relative order x.
        far = big & (log1p_square > 40)
        log_x = jnp.where(far, -log1p_square, 0.0)
        tail_far = 0.5 * jnp.exp(
            half_df * log_x - jnp.log(half_df) - betaln(half_df, 0.5)
        )
        tail = jnp.where(far, tail_far, tail)
        # jax's betainc loses digits for large df, where Hill's (1970)
        # normalizing expansion is accurate to 1e-7 and better.
        df_hill = jnp.where(df < _HILL_MIN_DF, _HILL_MIN_DF, df)
        a = df_hill - 0.5
        b = 48 * a * a
        y = a * log1p_square
        root = jnp.sqrt(y) * (
            1
            + (
                ((((-0.4 * y - 3.3) * y - 24.0) * y - 85.5) / (0.8 * y * y + 100 + b))
                + y
                + 3
            )
            / b
        )
        tail = jnp.where(df < _HILL_MIN_DF, tail, ndtr(-root))
        return jnp.where(z < 0, tail, 1 - tail)

    @property
    def mean(self):
        loc = jnp.broadcast_to(self.loc, self.batch_shape)
        return jnp.where(jnp.broadcast_to(self.df, self.batch_shape) <= 1, jnp.inf, loc)

    @property
    def variance(self):
        df = jnp.broadcast_to(self.df, self.batch_shape)
        finite = jnp.square(self.scale) * df / jnp.where(df > 2, df - 2, 1.0)
        return jnp.where(df > 2, finite, jnp.where(df > 1, jnp.inf, jnp.nan))

    def entropy(self):
        half_df = 0.5 * self.df
        large = half_df >= _STIRLING_MIN
        a = jnp.where(large, half_df, _STIRLING_MIN)
        difference = jnp.where(
            large,
            _digamma_difference(a, 0.5),
            digamma(half_df + 0.5) - digamma(half_df),
        )
        value = (
            (half_df + 0.5) * difference
            + 0.5 * jnp.log(self.df)
            + betaln(half_df, 0.5)
            + jnp.log(self.scale)
        )
        return jnp.broadcast_to(value, self.batch_shape)


class Exponential(Distribution):
    """Exponential distribution with ``rate`` (inverse mean).

    >>> d = Exponential(2.0)
    >>> float(d.log_prob(0.5))  # log 2 - 1
    -0.3068...
    """

    arg_constraints = {"rate": constraints.positive}
    support = constraints.positive
    has_rsample = True
    reparametrized_params = ("rate",)
    pytree_data_fields = ("rate",)

    def __init__(self, rate=1.0, *, validate_args=None):
        self.rate = rate
        super().__init__(jnp.shape(rate), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        draws = jax.random.exponential(key, shape, dtype=_float_dtype(self.rate))
        return _clip_positive(draws / self.rate)

    def log_prob(self, value):
        self._validate_sample(value)
        return jnp.log(self.rate) - self.rate * value

    def cdf(self, value):
        return -jnp.expm1(-self.rate * value)

    def icdf(self, q):
        return -jnp.log1p(-q) / self.rate

    @property
    def mean(self):
        return jnp.broadcast_to(1 / self.rate, self.batch_shape)

    @property
    def variance(self):
        return jnp.broadcast_to(1 / jnp.square(self.rate), self.batch_shape)

    def entropy(self):
        return jnp.broadcast_to(1 - jnp.log(self.rate), self.batch_shape)


class Gamma(Distribution):
    """Gamma distribution with shape ``concentration`` and inverse scale ``rate``.

    Draws are reparameterized (implicit gradients through the gamma sampler).

    >>> d = Gamma(2.0, 1.0)
    >>> float(d.log_prob(1.0))  # log(1 * exp(-1) / Gamma(2))
    -1.0
    >>> float(d.mean)
    2.0
    """

    arg_constraints = {
        "concentration": constraints.positive,
        "rate": constraints.positive,
    }
    support = constraints.positive
    has_rsample = True
    reparametrized_params = ("concentration", "rate")
    pytree_data_fields = ("concentration", "rate")

    def __init__(self, concentration, rate=1.0, *, validate_args=None):
        self.concentration, self.rate = promote_shapes(concentration, rate)
        super().__init__(
            batch_shape_of(concentration, rate), validate_args=validate_args
        )

    def _standard_sample(self, key, sample_shape):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = _float_dtype(self.concentration, self.rate)
        concentration = jnp.broadcast_to(self.concentration, shape).astype(dtype)
        return jax.random.gamma(key, concentration, shape, dtype=dtype)

    def sample(self, key, sample_shape=()):
        return _clip_positive(self._standard_sample(key, sample_shape) / self.rate)

    def log_prob(self, value):
        self._validate_sample(value)
        log_rate = jnp.log(self.rate)
        # log(value) + log(rate) stays finite where rate * value underflows
        log_y = jnp.log(value) + log_rate
        return (
            _standard_gamma_log_prob(self.concentration, self.rate * value, log_y)
            + log_rate
        )

    def cdf(self, value):
        y = self.rate * value
        # P(a, y) = y^a / Gamma(a + 1) (1 + O(y)); in log space for y so small
        # that rate * value would underflow, where P can still be sizeable
        tiny = y < 1e-20
        log_y = jnp.log(jnp.where(tiny, value, 1.0)) + jnp.log(self.rate)
        series = jnp.exp(self.concentration * log_y - gammaln(self.concentration + 1))
        return jnp.where(tiny, series, _regularized_gamma(self.concentration, y, False))

    @property
    def mean(self):
        return jnp.broadcast_to(self.concentration / self.rate, self.batch_shape)

    @property
    def variance(self):
        return jnp.broadcast_to(
            self.concentration / jnp.square(self.rate), self.batch_shape
        )

    def entropy(self):
        return jnp.broadcast_to(
            _standard_gamma_entropy(self.concentration) - jnp.log(self.rate),
            self.batch_shape,
        )


class Chi2(Gamma):
    """Chi-squared distribution with ``df`` degrees of freedom:
    ``Gamma(df / 2, 1 / 2)``.

    >>> d = Chi2(2.0)  # an Exponential(1/2)
    >>> float(d.log_prob(2.0))  # log(1/2) - 1
    -1.6931...
    """

    arg_constraints = {"df": constraints.positive}
    reparametrized_params = ("df",)
    pytree_data_fields = ("df", "concentration", "rate")

    def __init__(self, df, *, validate_args=None):
        self.df = df
        half_df = 0.5 * jnp.asarray(df)
        super().__init__(
            half_df, jnp.full_like(half_df, 0.5), validate_args=validate_args
        )


class InverseGamma(Distribution):
    """Distribution of ``1 / X`` for ``X ~ Gamma(concentration, rate)``; ``rate``
    is the scale of the inverse.

    The mean is ``inf`` for ``concentration <= 1`` and the variance ``inf``
    for ``concentration <= 2``.

    >>> d = InverseGamma(3.0, 2.0)
    >>> float(d.mean)
    1.0
    """

    arg_constraints = {
        "concentration": constraints.positive,
        "rate": constraints.positive,
    }
    support = constraints.positive
    has_rsample = True
    reparametrized_params = ("concentration", "rate")
    pytree_data_fields = ("concentration", "rate")

    def __init__(self, concentration, rate=1.0, *, validate_args=None):
        self.concentration, self.rate = promote_shapes(concentration, rate)
        super().__init__(
            batch_shape_of(concentration, rate), validate_args=validate_args
        )

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = _float_dtype(self.concentration, self.rate)
        concentration = jnp.broadcast_to(self.concentration, shape).astype(dtype)
        # In log space a gamma draw that underflows to zero cannot become inf.
        log_gamma = jax.random.loggamma(key, concentration, shape, dtype=dtype)
        log_value = jnp.log(self.rate) - log_gamma
        return jnp.exp(jnp.minimum(log_value, math.log(jnp.finfo(dtype).max)))

    def log_prob(self, value):
        self._validate_sample(value)
        # the density vanishes at zero, where y = rate / value is infinite
        positive = (value > 0) & (value < jnp.inf)
        value = jnp.where(positive, value, 1.0)
        y = self.rate / value
        log_y = _log_product(y, self.rate, 1 / value)
        log_prob = (
            _standard_gamma_log_prob(self.concentration, y, log_y)
            + jnp.log(self.rate)
            - 2 * jnp.log(value)
        )
        return jnp.where(positive, log_prob, -jnp.inf)

    def cdf(self, value):
        return _regularized_gamma(self.concentration, self.rate / value, True)

    @property
    def mean(self):
        a = jnp.broadcast_to(self.concentration, self.batch_shape)
        finite = self.rate / jnp.where(a > 1, a - 1, 1.0)
        return jnp.where(a > 1, finite, jnp.inf)

    @property
    def variance(self):
        a = jnp.broadcast_to(self.concentration, self.batch_shape)
        safe = jnp.where(a > 2, a, 3.0)
        finite = jnp.square(self.rate / (safe - 1)) / (safe - 2)
        return jnp.where(a > 2, finite, jnp.inf)

    def entropy(self):
        a = self.concentration
        value = _standard_gamma_entropy(a) - 2 * digamma(a) + jnp.log(self.rate)
        return jnp.broadcast_to(value, self.batch_shape)


class Beta(Distribution):
    """Beta distribution on the unit interval, with density proportional to
    ``x ** (concentration1 - 1) * (1 - x) ** (concentration0 - 1)``.

    >>> d = Beta(2.0, 2.0)
    >>> float(d.log_prob(0.5))  # log(6 * 0.25)
    0.4054...
    >>> float(d.cdf(0.5))
    0.5
    """

    arg_constraints = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
    }
    support = constraints.unit_interval
    has_rsample = True
    reparametrized_params = ("concentration1", "concentration0")
    pytree_data_fields = ("concentration1", "concentration0")

    def __init__(self, concentration1, concentration0, *, validate_args=None):
        self.concentration1, self.concentration0 = promote_shapes(
            concentration1, concentration0
        )
        super().__init__(
            batch_shape_of(concentration1, concentration0),
            validate_args=validate_args,
        )

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = _float_dtype(self.concentration1, self.concentration0)
        draws = jax.random.beta(
            key, self.concentration1, self.concentration0, shape, dtype=dtype
        )
        return _clip_unit(draws)

    def log_prob(self, value):
        self._validate_sample(value)
        a, b = self.concentration1, self.concentration0
        naive = xlogy(a - 1, value) + xlog1py(b - 1, -value) - betaln(a, b)
        # With both concentrations large, the terms above are of size
        # a * log(x) while the result is of order one; the Stirling form works
        # with the relative deviations of x and 1 - x from the mean instead.
        large = jnp.minimum(a, b) >= _STIRLING_MIN
        a = jnp.where(large, a, _STIRLING_MIN)
        b = jnp.where(large, b, _STIRLING_MIN)
        x = jnp.where(large, value, 0.5)
        n = a + b
        p, q = a / n, b / n
        # x - p from whichever of x and 1 - x is exact in floating point, so
        # that the rounding of the larger of p, q does not enter
        deviation = jnp.where(x < 0.5, x - p, q - (1 - x))
        log_x, log_1mx = jnp.log(x), jnp.log1p(-x)
        stable = (
            a * _log1pmx(deviation / p, log_x - jnp.log(p))
            + b * _log1pmx(-deviation / q, log_1mx - jnp.log(q))
            - log_x
            - log_1mx
            + 0.5 * (jnp.log(a) + jnp.log(b) - jnp.log(n))
            - _HALF_LOG_2PI
            - _stirling_correction(a)
            - _stirling_correction(b)
            + _stirling_correction(n)
        )
        return jnp.where(large, stable, naive)

    def cdf(self, value):
        return betainc(self.concentration1, self.concentration0, value)

    @property
    def mean(self):
        a, b = self.concentration1, self.concentration0
        return jnp.broadcast_to(a / (a + b), self.batch_shape)

    @property
    def variance(self):
        a, b = self.concentration1, self.concentration0
        n = a + b
        return jnp.broadcast_to(a * b / (n * n * (n + 1)), self.batch_shape)

    def entropy(self):
        # symmetric in the two concentrations; order them so that the mixed
        # case below only has to treat a large `big`
        big = jnp.maximum(self.concentration1, self.concentration0)
        small = jnp.minimum(self.concentration1, self.concentration0)
        n = big + small
        naive = (
            betaln(big, small)
            - (big - 1) * digamma(big)
            - (small - 1) * digamma(small)
            + (n - 2) * digamma(n)
        )
        # One large concentration: (n - 2) psi(n) - (big - 1) psi(big) is
        # regrouped around psi(n) - psi(big), which is computed directly.
        big_only = (big >= _STIRLING_MIN) & (small < _STIRLING_MIN)
        big_m = jnp.where(big_only, big, _STIRLING_MIN)
        small_m = jnp.where(big_only, small, 1.0)
        mixed = (
            betaln(big_m, small_m)
            - (small_m - 1) * digamma(small_m)
            + (big_m - 1) * _digamma_difference(big_m, small_m)
            + (small_m - 1) * digamma(big_m + small_m)
        )
        # Both large: the Stirling series of every term, with the large parts
        # cancelled analytically.
        both = small >= _STIRLING_MIN
        a = jnp.where(both, big, _STIRLING_MIN)
        b = jnp.where(both, small, _STIRLING_MIN)
        m = a + b
        stirling = (
            _HALF_LOG_2PI
            + 0.5 * (jnp.log(a) + jnp.log(b))
            - 1.5 * jnp.log(m)
            + 0.5
            - 0.5 / a
            - 0.5 / b
            + 1 / m
            + _stirling_correction(a)
            + _stirling_correction(b)
            - _stirling_correction(m)
            + (a - 1) * _digamma_tail(a)
            + (b - 1) * _digamma_tail(b)
            - (m - 2) * _digamma_tail(m)
        )
        value = jnp.where(both, stirling, jnp.where(big_only, mixed, naive))
        return jnp.broadcast_to(value, self.batch_shape)


class Uniform(Distribution):
    """Uniform distribution on ``[low, high]``; the log density is ``-inf``
    outside.

    >>> d = Uniform(0.0, 4.0)
    >>> float(d.log_prob(1.0))  # -log 4
    -1.3862...
    >>> float(d.variance)
    1.3333...
    """

    arg_constraints = {"low": constraints.dependent, "high": constraints.dependent}
    has_rsample = True
    reparametrized_params = ("low", "high")
    pytree_data_fields = ("low", "high")

    def __init__(self, low=0.0, high=1.0, *, validate_args=None):
        self.low, self.high = promote_shapes(low, high)
        super().__init__(batch_shape_of(low, high), validate_args=validate_args)

    def _check_args(self):
        super()._check_args()
        _check_ordered(type(self).__name__, self.low, self.high)

    @property
    def support(self):
        return constraints.interval(self.low, self.high)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        u = jax.random.uniform(key, shape, dtype=_float_dtype(self.low, self.high))
        return self.low + (self.high - self.low) * u

    def log_prob(self, value):
        self._validate_sample(value)
        inside = (value >= self.low) & (value <= self.high)
        return jnp.where(inside, -jnp.log(self.high - self.low), -jnp.inf)

    def cdf(self, value):
        return jnp.clip((value - self.low) / (self.high - self.low), 0.0, 1.0)

    def icdf(self, q):
        return self.low + q * (self.high - self.low)

    @property
    def mean(self):
        return jnp.broadcast_to(0.5 * (self.low + self.high), self.batch_shape)

    @property
    def variance(self):
        return jnp.broadcast_to(jnp.square(self.high - self.low) / 12, self.batch_shape)

    def entropy(self):
        return jnp.broadcast_to(jnp.log(self.high - self.low), self.batch_shape)


def _check_ordered(name, low, high):
    """Raise if concrete bounds do not satisfy ``low < high``."""
    if low is None or high is None or not is_concrete((low, high)):
        return
    # concrete bounds inside a jit trace would otherwise give a traced result
    with jax.ensure_compile_time_eval():
        ordered = bool(jnp.all(jnp.asarray(low) < jnp.asarray(high)))
    if not ordered:
        raise ValueError(
            f"{name}: parameter 'high' must be greater than 'low', "
            f"got low={low!r}, high={high!r}"
        )


# Coefficients zeta(n) (2^n - 2) / n, n >= 2, of the series
# lgamma(1 + 2x) - 2 lgamma(1 + x) = sum_n (-1)^n zeta(n) (2^n - 2) / n x^n.
_ZETA = (
    1.6449340668482264,
    1.2020569031595943,
    1.0823232337111382,
    1.0369277551433699,
    1.0173430619844491,
    1.0083492773819228,
    1.0040773561979443,
    1.0020083928260822,
    1.0009945751278181,
    1.0004941886041195,
    1.0002460865533080,
) + tuple(sum(k ** (-n) for k in range(1, 60)) for n in range(13, 31))
_LGAMMA_GAP_SERIES = tuple(
    (-1) ** n * z * (2**n - 2) / n for n, z in enumerate(_ZETA, start=2)
)


def _lgamma_gap(x):
    """``lgamma(1 + 2x) - 2 lgamma(1 + x)``, accurate also for small ``x``."""
    # the series converges for 2x < 1; to x^30 it is exact in float32 up to
    # x = 1/4, where the direct difference no longer cancels much
    small = x < 0.25
    xs = jnp.where(small, x, 0.125)
    series = 0.0
    for coefficient in reversed(_LGAMMA_GAP_SERIES):
        series = (series + coefficient) * xs
    series = series * xs
    xl = jnp.where(small, 1.0, x)
    direct = gammaln(1 + 2 * xl) - 2 * gammaln(1 + xl)
    return jnp.where(small, series, direct)


class Weibull(Distribution):
    """Weibull distribution with ``scale`` and shape ``concentration``.

    >>> d = Weibull(1.0, 1.0)  # an Exponential(1)
    >>> float(d.log_prob(2.0))
    -2.0
    """

    arg_constraints = {
        "scale": constraints.positive,
        "concentration": constraints.positive,
    }
    support = constraints.positive
    has_rsample = True
    reparametrized_params = ("scale", "concentration")
    pytree_data_fields = ("scale", "concentration")

    def __init__(self, scale, concentration, *, validate_args=None):
        self.scale, self.concentration = promote_shapes(scale, concentration)
        super().__init__(
            batch_shape_of(scale, concentration), validate_args=validate_args
        )

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = _float_dtype(self.scale, self.concentration)
        draws = jax.random.exponential(key, shape, dtype=dtype)
        return _clip_positive(self.scale * draws ** (1 / self.concentration))

    def log_prob(self, value):
        self._validate_sample(value)
        k = self.concentration
        log_z = _log_ratio(value, self.scale)
        at_zero = log_z == -jnp.inf
        # (k - 1) log z with the convention 0 * log 0 = 0 of xlogy
        # (its value at zero is +-inf or 0 and carries no gradient)
        at_zero_value = jax.lax.stop_gradient(xlogy(k - 1, 0.0))
        power_term = jnp.where(
            at_zero, at_zero_value, (k - 1) * jnp.where(at_zero, 0.0, log_z)
        )
        log_prob = jnp.log(k) - jnp.log(self.scale) + power_term - jnp.exp(k * log_z)
        return jnp.where(value < jnp.inf, log_prob, -jnp.inf)

    def cdf(self, value):
        log_z = _log_ratio(value, self.scale)
        return -jnp.expm1(-jnp.exp(self.concentration * log_z))

    def icdf(self, q):
        return self.scale * (-jnp.log1p(-q)) ** (1 / self.concentration)

    @property
    def mean(self):
        return jnp.broadcast_to(
            self.scale * jnp.exp(gammaln(1 + 1 / self.concentration)),
            self.batch_shape,
        )

    @property
    def variance(self):
        # Gamma(1 + 2/k) - Gamma(1 + 1/k)^2 cancels badly for large k; written
        # as Gamma(1 + 1/k)^2 expm1(lgamma gap) it does not.
        x = 1 / self.concentration
        value = (
            jnp.square(self.scale)
            * jnp.exp(2 * gammaln(1 + x))
            * jnp.expm1(_lgamma_gap(x))
        )
        return jnp.broadcast_to(value, self.batch_shape)

    def entropy(self):
        k = self.concentration
        value = _EULER_GAMMA * (1 - 1 / k) + jnp.log(self.scale / k) + 1
        return jnp.broadcast_to(value, self.batch_shape)


class Pareto(Distribution):
    """Pareto (type I) distribution with minimum ``scale`` and tail index
    ``alpha``; the support is ``[scale, inf)``.

    The mean is ``inf`` for ``alpha <= 1`` and the variance ``inf`` for
    ``alpha <= 2``.

    >>> d = Pareto(1.0, 2.0)
    >>> float(d.log_prob(1.0))  # log 2
    0.6931...
    >>> float(d.mean)
    2.0
    """

    arg_constraints = {"scale": constraints.positive, "alpha": constraints.positive}
    has_rsample = True
    reparametrized_params = ("scale", "alpha")
    pytree_data_fields = ("scale", "alpha")

    def __init__(self, scale, alpha, *, validate_args=None):
        self.scale, self.alpha = promote_shapes(scale, alpha)
        super().__init__(batch_shape_of(scale, alpha), validate_args=validate_args)

    @property
    def support(self):
        # float32 draws within rounding of `scale` come out equal to it, so the
        # lower end is closed.
        return constraints.greater_than_eq(self.scale)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = _float_dtype(self.scale, self.alpha)
        draws = jax.random.exponential(key, shape, dtype=dtype)
        return self.scale * jnp.exp(draws / self.alpha)

    def log_prob(self, value):
        self._validate_sample(value)
        inside = value >= self.scale
        log_ratio = _log_ratio(jnp.where(inside, value, self.scale), self.scale)
        log_prob = (
            jnp.log(self.alpha) - jnp.log(self.scale) - (self.alpha + 1) * log_ratio
        )
        return jnp.where(inside, log_prob, -jnp.inf)

    def cdf(self, value):
        inside = value >= self.scale
        log_ratio = _log_ratio(jnp.where(inside, value, self.scale), self.scale)
        return jnp.where(inside, -jnp.expm1(-self.alpha * log_ratio), 0.0)

    def icdf(self, q):
        return self.scale * jnp.exp(-jnp.log1p(-q) / self.alpha)

    @property
    def mean(self):
        alpha = jnp.broadcast_to(self.alpha, self.batch_shape)
        finite = alpha * self.scale / jnp.where(alpha > 1, alpha - 1, 1.0)
        return jnp.where(alpha > 1, finite, jnp.inf)

    @property
    def variance(self):
        alpha = jnp.broadcast_to(self.alpha, self.batch_shape)
        safe = jnp.where(alpha > 2, alpha, 3.0)
        finite = jnp.square(self.scale / (safe - 1)) * safe / (safe - 2)
        return jnp.where(alpha > 2, finite, jnp.inf)

    def entropy(self):
        value = jnp.log(self.scale / self.alpha) + 1 + 1 / self.alpha
        return jnp.broadcast_to(value, self.batch_shape)


def _upper_tail_moments(a):
    """``(log_sf, hazard, excess, second)`` of a standard normal truncated to
    ``[a, inf)``: ``log_sf = log ndtr(-a)``, ``hazard = pdf(a) / ndtr(-a)``,
    ``excess = E[Z - a] = hazard - a`` and ``second = E[(Z - a)^2] =
    1 - a * excess``.

    From ``a = 2`` on they come from the continued fraction
    ``excess = 1 / (a + 2 / (a + 3 / (a + ...)))``, with ``second = t * excess``
    for its tail ``t = 2 / (a + 3 / ...)``; neither then involves a
    difference of nearly equal numbers.
    """
    far = a >= 2
    a_far = jnp.where(far, a, 2.0)
    tail = 0.0
    # 40 terms give 2e-9 relative accuracy at a = 2, better beyond
    for k in range(41, 1, -1):
        tail = k / (a_far + tail)
    excess_far = 1 / (a_far + tail)
    log_sf = _log_ndtr_safe(-a)
    a_near = jnp.where(far, 0.0, a)
    log_sf_near = jnp.where(far, _LOG_HALF, log_sf)
    hazard_near = jnp.exp(_log_normal_pdf_safe(a_near) - log_sf_near)
    excess_near = hazard_near - a_near
    hazard = jnp.where(far, a_far + excess_far, hazard_near)
    excess = jnp.where(far, excess_far, excess_near)
    second = jnp.where(far, tail * excess_far, 1 - a_near * excess_near)
    return log_sf, hazard, excess, second


def _truncated_standard_normal_moments(alpha, beta, width=None):
    """Mean, variance and entropy of ``Normal(0, 1)`` truncated to
    ``[alpha, beta]``, accurate in float32 also for bounds far in a tail and
    for narrow intervals, where the textbook formulas cancel to nothing.
    ``width`` is ``beta - alpha`` if the caller has it more accurately.
    """
    if width is None:
        width = beta - alpha
    alpha, beta, width = jnp.broadcast_arrays(alpha, beta, width)
    dtype = _float_dtype(alpha, beta)
    # Reflect so that the midpoint is >= 0; the lower bound a is then finite
    # unless both bounds are infinite.
    flip = (alpha + beta) < 0
    sign = jnp.where(flip, -1.0, 1.0)
    a = jnp.where(flip, -beta, alpha)
    b = jnp.where(flip, -alpha, beta)
    unbounded = jnp.isinf(a) & jnp.isinf(b)
    a_finite = jnp.isfinite(a)
    b_finite = jnp.isfinite(b)
    a_safe = jnp.where(a_finite, a, 0.0)
    w = jnp.where(a_finite & b_finite, width, 1.0)

    # Narrow intervals (log density varying by at most about 4 across):
    # moments about the midpoint by 8-point Gauss-Legendre quadrature.
    narrow = a_finite & b_finite & (w * jnp.maximum(jnp.abs(a), jnp.abs(b)) <= 4)
    narrow &= w <= 3
    half = 0.5 * jnp.where(narrow, w, 1.0)
    centre = jnp.where(narrow, a_safe, 0.0) + half
    x = half[..., None] * _GAUSS_LEGENDRE_NODES
    density = _GAUSS_LEGENDRE_WEIGHTS * jnp.exp(-centre[..., None] * x - 0.5 * x * x)
    mass = jnp.sum(density, axis=-1)
    first = jnp.sum(density * x, axis=-1) / mass
    second = jnp.sum(density * x * x, axis=-1) / mass
    narrow_moments = (
        centre + first,
        second - first * first,
        jnp.log(half * mass) + centre * first + 0.5 * second,
    )

    # Intervals with a >= -1: moments of Z - a. The part beyond b enters
    # through rho = ndtr(-b) / ndtr(-a) and one-sided moments at b.
    # one call for both bounds keeps the compiled program small
    b_safe = jnp.where(b_finite, b, a_safe + 1.0)
    log_sf, hazard, excess, second = _upper_tail_moments(jnp.stack([a_safe, b_safe]))
    log_sf_a, hazard_a, excess_a, second_a = log_sf[0], hazard[0], excess[0], second[0]
    excess_b, second_b = excess[1], second[1]
    log_rho = jnp.where(b_finite, log_sf[1] - log_sf_a, -jnp.inf)
    rho = jnp.exp(log_rho)
    w_safe = jnp.where(b_finite, w, 0.0)
    keep = -jnp.expm1(log_rho)
    first = (excess_a - rho * (excess_b + w_safe)) / keep
    second = (second_a - rho * (second_b + w_safe * (2 * excess_b + w_safe))) / keep
    wide_moments = (
        a_safe + first,
        second - first * first,
        0.5 * second + a_safe * first - jnp.log(hazard_a) + jnp.log(keep),
    )

    # a < -1 (so b > 1): the interval holds most of the mass and the
    # textbook formulas lose nothing.
    log_z = log_sf_a + _log1mexp(log_rho)
    pdf_a = jnp.exp(_log_normal_pdf_safe(a) - log_z)
    pdf_b = jnp.exp(_log_normal_pdf_safe(b) - log_z)
    a_pdf = a_safe * pdf_a
    b_pdf = jnp.where(b_finite, b, 0.0) * pdf_b
    mean = pdf_a - pdf_b
    spread = a_pdf - b_pdf
    wide_open_moments = (
        mean,
        1 + spread - mean * mean,
        0.5 * (_LOG_2PI + 1) + log_z + 0.5 * spread,
    )

    normal_moments = (0.0, 1.0, 0.5 * (_LOG_2PI + 1))
    results = []
    for n, w_, o, u in zip(
        narrow_moments, wide_moments, wide_open_moments, normal_moments
    ):
        value = jnp.where(narrow, n, jnp.where(a_safe >= -1, w_, o))
        results.append(jnp.where(unbounded, u, value).astype(dtype))
    mean, variance, entropy = results
    return sign * mean, variance, entropy


def _refine_from_bound(z, q, alpha, beta, log_z):
    """Polish ``z``, the ``q`` quantile of ``Normal(0, 1)`` truncated to
    ``[alpha, beta]``, as a distance from the nearer bound.

    ``z`` from ``ndtri`` is accurate to float32 resolution in ``z`` itself,
    which is poor relative to ``z - alpha`` when the quantile lies close to
    a bound (narrow intervals, small ``q``). Two Newton steps on
    ``mass between the bound and z = q Z``, with that mass from
    :func:`_log_ndtr_difference`, make the distance accurate.
    """
    lower = q <= 0.5
    bound = jnp.where(lower, alpha, beta)
    sign = jnp.where(lower, 1.0, -1.0)
    log_p = jnp.where(lower, jnp.log(q), jnp.log1p(-q)) + log_z
    valid = jnp.isfinite(bound) & jnp.isfinite(log_p)
    bound = jnp.where(valid, bound, 0.0)
    log_p = jnp.where(valid, log_p, _LOG_HALF)
    distance = sign * (z - bound)
    # where z sits on the bound, start from the mass over the bound's density
    start = jnp.exp(log_p + 0.5 * bound * bound + _HALF_LOG_2PI)
    distance = jnp.where(valid & (distance > 0), distance, jnp.where(valid, start, 1.0))

    def newton_step(_, distance):
        end = bound + sign * distance
        log_mass = _log_ndtr_difference(
            jnp.minimum(bound, end), jnp.maximum(bound, end), distance
        )
        # Newton on the mass itself, which is nearly linear in the distance
        # over short distances: (mass - p) / pdf(end), scaled by p
        scale = jnp.exp(log_p + 0.5 * end * end + _HALF_LOG_2PI)
        step = distance - scale * jnp.expm1(log_mass - log_p)
        return jnp.where(step > 0, step, 0.5 * distance)

    distance = jax.lax.fori_loop(0, 2, newton_step, distance)
    return jnp.clip(jnp.where(valid, bound + sign * distance, z), alpha, beta)


class TruncatedNormal(Distribution):
    """``Normal(loc, scale)`` restricted to ``[low, high]``; either bound may be
    ``None`` (unbounded on that side).

    Normalizers, the cdf and the inverse cdf work with log tail probabilities,
    so bounds far in a tail (``low=8`` with unit scale, or farther) stay
    accurate; draws come from the inverse cdf of a uniform and are
    reparameterized in all four parameters.

    >>> d = TruncatedNormal(0.0, 1.0, low=0.0)  # a HalfNormal(1)
    >>> float(d.log_prob(0.0))
    -0.2257...
    >>> float(d.log_prob(-1.0))
    -inf
    """

    arg_constraints = {
        "loc": constraints.real,
        "scale": constraints.positive,
        "low": constraints.dependent,
        "high": constraints.dependent,
    }
    has_rsample = True
    reparametrized_params = ("loc", "scale", "low", "high")
    pytree_data_fields = ("loc", "scale", "low", "high")

    def __init__(self, loc=0.0, scale=1.0, *, low=None, high=None, validate_args=None):
        params = [loc, scale] + [bound for bound in (low, high) if bound is not None]
        promoted = list(promote_shapes(*params))
        self.loc, self.scale = promoted[0], promoted[1]
        rest = iter(promoted[2:])
        self.low = None if low is None else next(rest)
        self.high = None if high is None else next(rest)
        super().__init__(batch_shape_of(*params), validate_args=validate_args)

    def _check_args(self):
        super()._check_args()
        _check_ordered(type(self).__name__, self.low, self.high)

    @property
    def support(self):
        if self.low is None and self.high is None:
            return constraints.real
        if self.high is None:
            return constraints.greater_than_eq(self.low)
        if self.low is None:
            # there is no closed less_than constraint; draws are kept below
            return constraints.less_than(self.high)
        return constraints.interval(self.low, self.high)

    def _clip_to_bounds(self, x, open_high=False):
        """Undo rounding of ``loc + scale * z`` past a bound; with
        ``open_high`` and no lower bound, stay strictly below ``high`` as
        ``support`` requires."""
        if self.low is not None:
            x = jnp.maximum(x, self.low)
        if self.high is not None:
            high = self.high
            if open_high and self.low is None:
                high = jax.lax.stop_gradient(jnp.nextafter(high, -jnp.inf))
            x = jnp.minimum(x, high)
        return x

    def _standard_bounds(self):
        """The bounds in standard units, ``-inf`` / ``inf`` where absent."""
        dtype = _float_dtype(self.loc, self.scale)
        alpha = (
            jnp.asarray(-jnp.inf, dtype)
            if self.low is None
            else (self.low - self.loc) / self.scale
        )
        beta = (
            jnp.asarray(jnp.inf, dtype)
            if self.high is None
            else (self.high - self.loc) / self.scale
        )
        return alpha, beta

    def _log_normalizer(self, alpha, beta):
        width = None
        if self.low is not None and self.high is not None:
            width = (self.high - self.low) / self.scale
        return _log_ndtr_difference(alpha, beta, width)

    def _standard_icdf(self, q, alpha, beta, log_z):
        # Invert from whichever side has the smaller tail mass at the answer:
        # log Phi(z) = log(Phi(alpha) + q Z) on the left, and
        # log Phi(-z) = log(Phi(-beta) + (1 - q) Z) on the right.
        log_left = jnp.logaddexp(_log_ndtr_safe(alpha), jnp.log(q) + log_z)
        log_right = jnp.logaddexp(_log_ndtr_safe(-beta), jnp.log1p(-q) + log_z)
        use_left = log_left <= log_right
        log_tail = jnp.minimum(jnp.minimum(log_left, log_right), _LOG_HALF)
        z = _ndtri_of_log(log_tail)
        z = jnp.clip(jnp.where(use_left, z, -z), alpha, beta)
        return _refine_from_bound(z, q, alpha, beta, log_z)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = _float_dtype(self.loc, self.scale)
        u = jax.random.uniform(key, shape, dtype=dtype, minval=jnp.finfo(dtype).tiny)
        alpha, beta = self._standard_bounds()
        log_z = self._log_normalizer(alpha, beta)
        z = self._standard_icdf(u, alpha, beta, log_z)
        return self._clip_to_bounds(self.loc + self.scale * z, open_high=True)

    def log_prob(self, value):
        self._validate_sample(value)
        alpha, beta = self._standard_bounds()
        z = (value - self.loc) / self.scale
        log_prob = (
            -0.5 * z * z
            - _HALF_LOG_2PI
            - jnp.log(self.scale)
            - self._log_normalizer(alpha, beta)
        )
        return jnp.where((z >= alpha) & (z <= beta), log_prob, -jnp.inf)

    def cdf(self, value):
        alpha, beta = self._standard_bounds()
        z = jnp.clip((value - self.loc) / self.scale, alpha, beta)
        # Near the lower bound the cdf depends on z - alpha, which is
        # computed from value - low rather than by subtracting rounded z's.
        width = None
        if self.low is not None:
            width = (jnp.clip(value, self.low, self.high) - self.low) / self.scale
        log_cdf = _log_ndtr_difference(alpha, z, width) - self._log_normalizer(
            alpha, beta
        )
        return jnp.exp(log_cdf)

    def icdf(self, q):
        alpha, beta = self._standard_bounds()
        log_z = self._log_normalizer(alpha, beta)
        z = self._standard_icdf(jnp.asarray(q), alpha, beta, log_z)
        return self._clip_to_bounds(self.loc + self.scale * z)

    def _standard_moments(self):
        """Mean, variance and entropy of the standardized distribution."""
        alpha, beta = self._standard_bounds()
        width = None
        if self.low is not None and self.high is not None:
            width = (self.high - self.low) / self.scale
        return _truncated_standard_normal_moments(alpha, beta, width)

    @property
    def mean(self):
        mean, _, _ = self._standard_moments()
        return jnp.broadcast_to(self.loc + self.scale * mean, self.batch_shape)

    @property
    def variance(self):
        _, variance, _ = self._standard_moments()
        return jnp.broadcast_to(jnp.square(self.scale) * variance, self.batch_shape)

    def entropy(self):
        _, _, entropy = self._standard_moments()
        return jnp.broadcast_to(entropy + jnp.log(self.scale), self.batch_shape)


def _von_mises_centered(key, concentration, shape, dtype):
    """Draws of ``VonMises(0, concentration)`` by Best and Fisher's (1979)
    rejection sampler with a wrapped Cauchy envelope.

    The envelope parameter enters only through ``delta = r - 1``, computed
    without cancellation, so both tiny and very large concentrations stay
    accurate in float32.
    """
    kappa = jnp.broadcast_to(concentration, shape).astype(dtype)
    s = jnp.sqrt(1 + 4 * kappa * kappa)
    tau = 1 + s
    root = jnp.sqrt(2 * tau)
    rho = 2 * kappa / (tau + root)
    # 1 - rho with tau - 2 kappa = 1 + 1 / (s + 2 kappa)
    one_minus_rho = (1 + 1 / (s + 2 * kappa) + root) / (tau + root)
    delta = jnp.square(one_minus_rho) / (2 * rho)

    def propose(key):
        key_angle, key_accept, key_sign = jax.random.split(key, 3)
        u1 = jax.random.uniform(key_angle, shape, dtype)
        u2 = jax.random.uniform(key_accept, shape, dtype, minval=jnp.finfo(dtype).tiny)
        u3 = jax.random.uniform(key_sign, shape, dtype)
        # with z = cos(pi u1) and w = 1 + z: f = (1 + r z) / (r + z) and
        # 1 - f = delta (2 - w) / (w + delta), r - f = delta (2 + delta) / (w + delta)
        w = 2 * jnp.square(jnp.cos(0.5 * math.pi * u1))
        ratio = delta / (w + delta)
        one_minus_f = ratio * (2 - w)
        c = kappa * (2 + delta) * ratio
        accept = (c * (2 - c) > u2) | (jnp.log(c / u2) + 1 - c >= 0)
        theta = 2 * jnp.arcsin(jnp.sqrt(jnp.clip(0.5 * one_minus_f, 0.0, 1.0)))
        return accept, jnp.where(u3 < 0.5, -theta, theta)

    def cond(state):
        _, done, _ = state
        return ~jnp.all(done)

    def body(state):
        key, done, theta = state
        key, subkey = jax.random.split(key)
        accept, proposal = propose(subkey)
        theta = jnp.where(done, theta, proposal)
        return key, done | accept, theta

    init = (key, jnp.zeros(shape, bool), jnp.zeros(shape, dtype))
    _, _, theta = jax.lax.while_loop(cond, body, init)
    return theta


# 1 - I1(k) / I0(k) = sum_n c_n / k^n, from the asymptotic series of I0, I1
_BESSEL_RATIO_SERIES = (
    1 / 2,
    1 / 8,
    1 / 8,
    25 / 128,
    13 / 32,
    1073 / 1024,
    103 / 32,
    375733 / 32768,
    23797 / 512,
)


def _von_mises_circular_variance(concentration):
    """``1 - I1(k) / I0(k)``; for large ``k`` the ratio is within float32
    rounding of one, so its asymptotic series (to 1e-9 from ``k = 20``) is
    used there."""
    large = concentration >= 20
    inv = 1 / jnp.where(large, concentration, 20.0)
    series = 0.0
    for coefficient in reversed(_BESSEL_RATIO_SERIES):
        series = (series + coefficient) * inv
    k = jnp.where(large, 1.0, concentration)
    return jnp.where(large, series, 1 - i1e(k) / i0e(k))


def _wrap_angle(x):
    """Map angles into [-pi, pi); angles already there are kept exactly (the
    modulo would round small ones to the float32 spacing near pi)."""
    inside = (x >= -math.pi) & (x < math.pi)
    return jnp.where(inside, x, (x + math.pi) % (2 * math.pi) - math.pi)


class VonMises(Distribution):
    """von Mises distribution on the circle ``[-pi, pi]`` with mean direction
    ``loc`` and ``concentration``.

    ``mean`` is ``loc`` wrapped into ``[-pi, pi)`` and ``variance`` is the
    circular variance ``1 - I1(k) / I0(k)``. Draws use a rejection sampler:
    they are differentiable in ``loc`` only, so ``has_rsample`` is False.

    >>> d = VonMises(0.0, 1.0)
    >>> float(d.log_prob(0.0))  # 1 - log(2 pi I0(1))
    -1.0737...
    """

    arg_constraints = {
        "loc": constraints.real,
        "concentration": constraints.positive,
    }
    support = constraints.circular
    has_rsample = False
    reparametrized_params = ("loc",)
    pytree_data_fields = ("loc", "concentration")

    def __init__(self, loc, concentration, *, validate_args=None):
        self.loc, self.concentration = promote_shapes(loc, concentration)
        super().__init__(
            batch_shape_of(loc, concentration), validate_args=validate_args
        )

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = _float_dtype(self.loc, self.concentration)
        theta = _von_mises_centered(
            key, jax.lax.stop_gradient(self.concentration), shape, dtype
        )
        return _wrap_angle(self.loc + theta)

    def log_prob(self, value):
        self._validate_sample(value)
        # cos(d) - 1 = -2 sin(d/2)^2 keeps full precision near the mode
        half_difference = 0.5 * (value - self.loc)
        return (
            -2 * self.concentration * jnp.square(jnp.sin(half_difference))
            - _LOG_2PI
            - jnp.log(i0e(self.concentration))
        )

    @property
    def mean(self):
        return jnp.broadcast_to(_wrap_angle(self.loc), self.batch_shape)

    @property
    def variance(self):
        variance = _von_mises_circular_variance(self.concentration)
        return jnp.broadcast_to(variance, self.batch_shape)

    def entropy(self):
        k = self.concentration
        variance = _von_mises_circular_variance(k)
        value = _LOG_2PI + jnp.log(i0e(k)) + k * variance
        return jnp.broadcast_to(value, self.batch_shape)


class RelaxedBernoulli(Distribution):
    """Binary concrete distribution on ``(0, 1)``: ``sigmoid((logits + L) /
    temperature)`` for standard logistic noise ``L``. Pass exactly one of
    ``probs`` or ``logits``.

    As the temperature goes to zero the draws approach ``Bernoulli`` draws;
    they are reparameterized in ``logits`` and ``temperature``.

    >>> d = RelaxedBernoulli(1.0, logits=0.0)  # uniform on (0, 1)
    >>> float(d.log_prob(0.3))
    0.0
    >>> float(d.cdf(0.3))
    0.3
    """

    support = constraints.unit_interval
    has_rsample = True
    reparametrized_params = ("temperature", "logits")
    pytree_data_fields = ("temperature", "_probs", "_logits")

    def __init__(self, temperature, probs=None, logits=None, *, validate_args=None):
        name = type(self).__name__
        if (probs is None) == (logits is None):
            raise ValueError(f"{name}: pass exactly one of probs= or logits=")
        param = probs if probs is not None else logits
        self.temperature, param = promote_shapes(temperature, param)
        self._probs = param if probs is not None else None
        self._logits = param if logits is not None else None
        super().__init__(
            batch_shape_of(temperature, param), validate_args=validate_args
        )

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {
                "temperature": constraints.positive,
                "probs": constraints.unit_interval,
            }
        return {"temperature": constraints.positive, "logits": constraints.real}

    @property
    def probs(self):
        if self._probs is not None:
            return self._probs
        return jax.nn.sigmoid(self._logits)

    @property
    def logits(self):
        if self._logits is not None:
            return self._logits
        return jnp.log(self._probs) - jnp.log1p(-self._probs)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        dtype = _float_dtype(self.temperature, self.logits)
        noise = jax.random.logistic(key, shape, dtype=dtype)
        return _clip_unit(jax.nn.sigmoid((self.logits + noise) / self.temperature))

    def log_prob(self, value):
        self._validate_sample(value)
        # The logit of the value is Logistic(logits / T, 1 / T); z is its
        # standardized value and the last two terms the sigmoid's Jacobian.
        log_value, log_1m_value = jnp.log(value), jnp.log1p(-value)
        z = self.temperature * (log_value - log_1m_value) - self.logits
        return (
            jnp.log(self.temperature)
            - z
            - 2 * jax.nn.softplus(-z)
            - log_value
            - log_1m_value
        )

    def cdf(self, value):
        logit = jnp.log(value) - jnp.log1p(-value)
        return jax.nn.sigmoid(self.temperature * logit - self.logits)

    def icdf(self, q):
        logit = jnp.log(q) - jnp.log1p(-q)
        return jax.nn.sigmoid((logit + self.logits) / self.temperature)


class RelaxedBernoulliLogits(RelaxedBernoulli):
    """:class:`RelaxedBernoulli` parameterized by ``logits``, as in NumPyro.

    >>> float(RelaxedBernoulliLogits(0.5, 0.0).cdf(0.5))
    0.5
    """

    def __init__(self, temperature, logits, *, validate_args=None):
        super().__init__(temperature, logits=logits, validate_args=validate_args)


class ImproperUniform(Distribution):
    """Improper flat density: ``log_prob`` is zero on ``support``.

    Use it for a latent site whose prior is flat on ``support``; inference
    works on an unconstrained parameter mapped into ``support``. There is no
    way to draw from it, so ``sample`` raises ``NotImplementedError``.

    Args:
        support: the constraint the values satisfy.
        batch_shape: batch shape of the site.
        event_shape: event shape of the site; it must have at least
            ``support.event_dim`` dims.

    >>> d = ImproperUniform(constraints.positive, (2,), ())
    >>> d.log_prob(jnp.ones((3, 2))).tolist()
    [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    """

    pytree_aux_fields = ("support",)

    def __init__(self, support, batch_shape, event_shape, *, validate_args=None):
        event_shape = tuple(event_shape)
        extra = len(event_shape) - support.event_dim
        if extra < 0:
            raise ValueError(
                f"ImproperUniform: event_shape {event_shape} has fewer dims than "
                f"the support {support!r} (event_dim={support.event_dim})"
            )
        self.support = constraints.independent(support, extra) if extra else support
        super().__init__(tuple(batch_shape), event_shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        raise NotImplementedError(
            "ImproperUniform is an improper distribution and cannot be sampled; "
            "use it only for latent sites initialised by the inference algorithm"
        )

    def log_prob(self, value):
        self._validate_sample(value)
        value_shape = jnp.shape(value)
        batch = value_shape[: len(value_shape) - len(self.event_shape)]
        return jnp.zeros(jnp.broadcast_shapes(batch, self.batch_shape))
