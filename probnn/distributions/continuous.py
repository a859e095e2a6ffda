"""Continuous families on the real line: location-scale families and Student's t."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import (
    betainc,
    betaln,
    digamma,
    erf,
    erfinv,
    ndtr,
    ndtri,
)

from probnn.distributions import constraints
from probnn.distributions._continuous_special import (
    _EULER_GAMMA,
    _HALF_LOG_2PI,
    _HILL_MIN_DF,
    _STIRLING_MIN,
    _clip_positive,
    _digamma_difference,
    _float_dtype,
    _log1p_square,
)
from probnn.distributions.distribution import Distribution
from probnn.distributions.util import batch_shape_of, promote_shapes

__all__ = [
    "Cauchy",
    "Gumbel",
    "HalfCauchy",
    "HalfNormal",
    "Laplace",
    "LogNormal",
    "Logistic",
    "Normal",
    "StudentT",
]


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
