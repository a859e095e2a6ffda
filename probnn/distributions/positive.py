"""Continuous families on the positive reals: the gamma family, Weibull and Pareto."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import (
    digamma,
    gammaln,
)

from probnn.distributions import constraints
from probnn.distributions._continuous_special import (
    _EULER_GAMMA,
    _clip_positive,
    _float_dtype,
    _lgamma_gap,
    _log_product,
    _log_ratio,
    _regularized_gamma,
    _standard_gamma_entropy,
    _standard_gamma_log_prob,
)
from probnn.distributions.distribution import Distribution
from probnn.distributions.util import batch_shape_of, promote_shapes, xlogy

__all__ = ["Chi2", "Exponential", "Gamma", "InverseGamma", "Pareto", "Weibull"]


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
        y = self.rate * value
        log_y = _log_product(y, value, log_rate)
        return _standard_gamma_log_prob(self.concentration, y, log_y) + log_rate

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
        log_value = jnp.log(value)
        log_y = _log_product(y, self.rate, -log_value)
        log_prob = (
            _standard_gamma_log_prob(self.concentration, y, log_y)
            + jnp.log(self.rate)
            - 2 * log_value
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
