"""Discrete families.

Families with a success probability take exactly one of ``probs`` or ``logits``
and compute the other on demand. NumPyro's one-form class names
(``BinomialProbs``, ``NegativeBinomialLogits``, ...) are thin subclasses with
NumPyro's argument order.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betainc, gammaincc, gammaln, xlog1py, xlogy

from probnn.distributions import constraints
from probnn.distributions.distribution import Distribution
from probnn.distributions.util import batch_shape_of, is_concrete

__all__ = [
    "Bernoulli",
    "BernoulliLogits",
    "BernoulliProbs",
    "BetaBinomial",
    "Binomial",
    "BinomialLogits",
    "BinomialProbs",
    "Categorical",
    "CategoricalLogits",
    "CategoricalProbs",
    "DirichletMultinomial",
    "DiscreteUniform",
    "GammaPoisson",
    "Geometric",
    "GeometricLogits",
    "GeometricProbs",
    "Multinomial",
    "MultinomialLogits",
    "MultinomialProbs",
    "NegativeBinomial",
    "NegativeBinomial2",
    "NegativeBinomialLogits",
    "NegativeBinomialProbs",
    "OrderedLogistic",
    "Poisson",
    "ZeroInflatedLogits",
    "ZeroInflatedPoisson",
    "ZeroInflatedProbs",
]


def _one_of(name: str, probs, logits):
    if (probs is None) == (logits is None):
        raise ValueError(f"{name}: pass exactly one of probs= or logits=")


def _promote(*params, event_ndims=None):
    """Give every parameter the same number of batch dims (leading 1s).

    Like :func:`probnn.distributions.util.promote_shapes`, but host values
    (Python numbers, numpy arrays) are reshaped with numpy, so counts and
    bounds given as constants stay concrete inside ``jit`` and can still be
    enumerated there.
    """
    event_ndims = event_ndims or (0,) * len(params)
    batch_ndims = [np.ndim(p) - k for p, k in zip(params, event_ndims)]
    target = max(batch_ndims)
    promoted = []
    for p, b in zip(params, batch_ndims):
        if b == target:
            promoted.append(p)
            continue
        shape = (1,) * (target - b) + np.shape(p)
        if isinstance(p, jax.Array):
            promoted.append(jnp.reshape(p, shape))
        else:
            promoted.append(np.reshape(np.asarray(p), shape))
    return tuple(promoted)


def _float(x):
    return jnp.asarray(x, dtype=jnp.result_type(float))


# Saddle-point forms of the binomial, negative binomial and Poisson masses
# (C. Loader, "Fast and accurate computation of binomial probabilities", 2000).
# The textbook formulas subtract log-gammas of size n log n to get results of
# size 1, which in float32 loses about log10(n log n) digits: at n = 1e4 the
# log mass is off by 1e-3. Written with Stirling's remainder and the deviance
# term below, every piece is either small or exact where the others cancel.

# The log-mass helpers below are jitted: called eagerly, each then compiles
# to one fused kernel per shape rather than one kernel per primitive; inside an
# outer jit, vmap or grad they inline as usual.

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _stirling_error(x):
    """log Gamma(x + 1) - [(x + 1/2) log x - x + log sqrt(2 pi)], for x > 0."""
    big = x >= 10
    # safe arguments in each unused branch keep gradients free of NaN
    inverse = 1.0 / jnp.where(big, x, 10.0)
    inverse2 = inverse * inverse
    series = inverse * (
        1 / 12 - inverse2 * (1 / 360 - inverse2 * (1 / 1260 - inverse2 / 1680))
    )
    small = jnp.where(big | (x <= 0), 1.0, x)
    direct = gammaln(small + 1) - (small + 0.5) * jnp.log(small) + small
    return jnp.where(big, series, direct - _HALF_LOG_2PI)


def _deviance(x, m, log_m):
    """x log(x / m) + m - x (>= 0) for x >= 0, m >= 0; ``log_m`` is log(m),
    passed in so that tiny means keep their precision."""
    positive_m = m > 0
    m_safe = jnp.where(positive_m, m, 1.0)
    t = (x - m_safe) / m_safe
    # m [(1 + t) log(1 + t) - t]: its error is eps |x - m|, not eps x log x.
    # Away from t = 0 the direct form cancels little, and it is needed there:
    # below t = -1/2, 1 + t would lose digits, and for very large t (tiny m)
    # (1 + t) log(1 + t) would overflow
    near = positive_m & (t > -0.5) & (t < 10.0)
    t = jnp.where(near, t, 0.0)
    near_value = m_safe * ((1 + t) * jnp.log1p(t) - t)
    x_safe = jnp.where(x > 0, x, 1.0)
    far_value = jnp.where(x > 0, x * (jnp.log(x_safe) - log_m), 0.0) + m - x
    return jnp.where(near, near_value, far_value)


def _binomial_interior(n, s, f, log_ps, log_pf):
    """log[C(n, s) ps^s pf^f] for s, f > 0 with s + f = n (f passed exactly)."""
    log_n = jnp.log(n)
    return (
        _stirling_error(n)
        - _stirling_error(s)
        - _stirling_error(f)
        - _deviance(s, n * jnp.exp(log_ps), log_n + log_ps)
        - _deviance(f, n * jnp.exp(log_pf), log_n + log_pf)
        + 0.5 * (log_n - jnp.log(s) - jnp.log(f))
        - _HALF_LOG_2PI
    )


@jax.jit
def _binomial_log_prob(n, k, log_p, log_q):
    """log Binomial(k | n, p) from log p and log(1 - p); -inf for k outside
    [0, n]."""
    interior = (k > 0) & (k < n)
    core = _binomial_interior(
        jnp.where(interior, n, 2.0),
        jnp.where(interior, k, 1.0),
        jnp.where(interior, n - k, 1.0),
        log_p,
        log_q,
    )
    empty = n == 0
    at_zero = jnp.where(empty, 0.0, n * log_q)
    at_n = jnp.where(empty, 0.0, n * log_p)
    log_prob = jnp.where(k == 0, at_zero, jnp.where(k == n, at_n, core))
    return jnp.where((k < 0) | (k > n), -jnp.inf, log_prob)


@jax.jit
def _negative_binomial_log_prob(r, k, log_p, log_q):
    """log of Gamma(k + r) / (Gamma(r) k!) p^k (1 - p)^r, the number k of
    successes (probability p each) before the r-th failure."""
    # NB(k | r, p) = r / (r + k) Binomial(r | r + k, 1 - p)
    positive = k > 0
    count = jnp.where(positive, k, 1.0)
    n = r + count
    core = _binomial_interior(n, r, count, log_q, log_p) + jnp.log(r) - jnp.log(n)
    log_prob = jnp.where(positive, core, r * log_q)
    return jnp.where(k < 0, -jnp.inf, log_prob)


@jax.jit
def _poisson_log_prob(k, rate):
    """log(rate^k e^-rate / k!)."""
    positive = k > 0
    count = jnp.where(positive, k, 1.0)
    has_rate = rate > 0
    log_rate = jnp.where(has_rate, jnp.log(jnp.where(has_rate, rate, 1.0)), -jnp.inf)
    core = (
        -_stirling_error(count)
        - _deviance(count, rate, log_rate)
        - 0.5 * jnp.log(count)
        - _HALF_LOG_2PI
    )
    log_prob = jnp.where(positive, core, -rate)
    return jnp.where(k < 0, -jnp.inf, log_prob)


def _rising_residual(x, m):
    """log[Gamma(x + m) / (Gamma(x) m!)] less its leading part
    (x + m) log(x + m) - x log x - m log m; for x > 0, m >= 0."""
    positive = m > 0
    m = jnp.where(positive, m, 1.0)
    n = x + m
    residual = (
        _stirling_error(n)
        - _stirling_error(x)
        - _stirling_error(m)
        + 0.5 * (jnp.log(x) - jnp.log(n) - jnp.log(m))
        - _HALF_LOG_2PI
    )
    return jnp.where(positive, residual, 0.0)


@jax.jit
def _polya_log_prob(alpha, x):
    """log of the Dirichlet-multinomial mass of counts ``x`` (last dim) under
    concentrations ``alpha``; the beta-binomial has two categories.

    The mass is prod_i R(alpha_i, x_i) / R(A, n) with R(a, m) = Gamma(a + m) /
    (Gamma(a) m!), A = sum(alpha), n = sum(x). The leading parts of the log R
    combine into deviances against w_i = (alpha_i + x_i) / (A + n), all
    non-negative, so nothing of size n log n is left to cancel.
    """
    total, n = jnp.sum(alpha, -1), jnp.sum(x, -1)
    log_w = jnp.log(alpha + x) - jnp.log(total + n)[..., None]
    w = jnp.exp(log_w)
    log_total, log_n = jnp.log(total)[..., None], jnp.log(n)[..., None]
    deviances = _deviance(alpha, total[..., None] * w, log_total + log_w) + _deviance(
        x, n[..., None] * w, log_n + log_w
    )
    residual = jnp.sum(_rising_residual(alpha, x), -1) - _rising_residual(total, n)
    log_prob = residual - jnp.sum(deviances, -1)
    return jnp.where(jnp.any(x < 0, -1), -jnp.inf, log_prob)


@jax.jit
def _multinomial_log_prob(x, log_probs):
    """log Multinomial(x | n = sum(x), p) from log p (last dim), in the
    saddle-point form: log n! / prod x_i! + sum x_i log p_i with the Stirling
    parts split off and sum_i x_i log(n p_i / x_i) written as deviances."""
    n = jnp.sum(x, -1)
    occupied = x > 0
    x_safe = jnp.where(occupied, x, 1.0)
    n_safe = jnp.where(n > 0, n, 1.0)
    log_n = jnp.log(n_safe)
    stirling = _stirling_error(n_safe) - jnp.sum(
        jnp.where(occupied, _stirling_error(x_safe) + 0.5 * jnp.log(x_safe), 0.0), -1
    )
    cells = jnp.sum(occupied, -1)
    gaussian = 0.5 * log_n - _HALF_LOG_2PI * (cells - 1)
    mean = n_safe[..., None] * jnp.exp(log_probs)
    deviance = jnp.sum(_deviance(x, mean, log_n[..., None] + log_probs), -1)
    log_prob = jnp.where(n > 0, stirling + gaussian - deviance, 0.0)
    return jnp.where(jnp.any(x < 0, -1), -jnp.inf, log_prob)


def _log1mexp(x):
    """log(1 - exp(x)) for x <= 0, accurate near 0 and for very negative x."""
    return jnp.where(x > -0.6931472, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def _concrete_scalar(name: str, what: str, value):
    """The single value of a homogeneous, concrete parameter (for enumeration)."""
    if not is_concrete(value):
        raise NotImplementedError(
            f"{name}.enumerate_support needs a concrete {what}, not a traced value"
        )
    value = np.asarray(value)
    if value.size == 0:
        raise NotImplementedError(f"{name}.enumerate_support: empty {what}")
    if np.any(value != value.flat[0]):
        raise NotImplementedError(
            f"{name}.enumerate_support needs the same {what} across the batch, "
            f"got {value}"
        )
    return value.flat[0]


def _enumerate_range(low, high, batch_shape, expand):
    values = jnp.arange(int(low), int(high) + 1)
    values = values.reshape((-1,) + (1,) * len(batch_shape))
    if expand:
        values = jnp.broadcast_to(values, values.shape[:1] + tuple(batch_shape))
    return values


@jax.jit
def _multinomial_counts(key, n, p):
    # jitted on broadcast inputs so that every caller with the same shapes
    # shares one compiled sampler
    return jax.random.multinomial(key, n, p).astype(jnp.int32)


def _multinomial_draw(key, total_count, probs, shape):
    """Multinomial counts of shape ``shape + probs.shape[-1:]`` (int32).

    Drawn as a chain of binomials, so ``total_count`` may be traced and needs no
    upper bound.
    """
    shape = tuple(shape)
    k = jnp.shape(probs)[-1]
    n = jnp.broadcast_to(_float(total_count), shape)
    p = jnp.broadcast_to(_float(probs), shape + (k,))
    return _multinomial_counts(key, n, p)


# -- Bernoulli and Categorical ------------------------------------------------------


class Bernoulli(Distribution):
    """Bernoulli distribution over {0, 1}.

    >>> d = Bernoulli(logits=0.0)
    >>> float(d.log_prob(1))  # log(1/2)
    -0.693...
    >>> d.enumerate_support().tolist()
    [0, 1]
    """

    support = constraints.boolean
    has_enumerate_support = True
    pytree_data_fields = ("_probs", "_logits")

    def __init__(self, probs=None, logits=None, *, validate_args=None):
        _one_of("Bernoulli", probs, logits)
        self._probs = probs
        self._logits = logits
        param = probs if probs is not None else logits
        super().__init__(jnp.shape(param), validate_args=validate_args)

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {"probs": constraints.unit_interval}
        return {"logits": constraints.real}

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
        return jax.random.bernoulli(key, self.probs, shape).astype(jnp.int32)

    def log_prob(self, value):
        self._validate_sample(value)
        if self._logits is not None:
            logits = self._logits
            return value * jax.nn.log_sigmoid(logits) + (1 - value) * (
                jax.nn.log_sigmoid(-logits)
            )
        return xlogy(value, self._probs) + xlog1py(1 - value, -self._probs)

    def enumerate_support(self, expand=True):
        values = jnp.arange(2).reshape((2,) + (1,) * len(self.batch_shape))
        if expand:
            values = jnp.broadcast_to(values, (2,) + self.batch_shape)
        return values

    @property
    def mean(self):
        return jnp.broadcast_to(self.probs, self.batch_shape)

    @property
    def variance(self):
        p = self.probs
        return jnp.broadcast_to(p * (1 - p), self.batch_shape)

    def entropy(self):
        if self._logits is not None:
            logits = self._logits
            p = jax.nn.sigmoid(logits)
            entropy = -p * jax.nn.log_sigmoid(logits) - (1 - p) * jax.nn.log_sigmoid(
                -logits
            )
        else:
            p = self._probs
            entropy = -xlogy(p, p) - xlog1py(1 - p, -p)
        return jnp.broadcast_to(entropy, self.batch_shape)


class BernoulliProbs(Bernoulli):
    """:class:`Bernoulli` from ``probs`` (NumPyro's name)."""

    def __init__(self, probs, *, validate_args=None):
        super().__init__(probs=probs, validate_args=validate_args)


class BernoulliLogits(Bernoulli):
    """:class:`Bernoulli` from ``logits`` (NumPyro's name)."""

    def __init__(self, logits, *, validate_args=None):
        super().__init__(logits=logits, validate_args=validate_args)


class Categorical(Distribution):
    """Categorical distribution over ``{0, ..., K-1}``; the last dim of
    ``probs`` / ``logits`` indexes the categories.

    >>> d = Categorical(probs=jnp.array([0.25, 0.75]))
    >>> float(jnp.exp(d.log_prob(1)))
    0.75
    """

    has_enumerate_support = True
    pytree_data_fields = ("_probs", "_logits")

    def __init__(self, probs=None, logits=None, *, validate_args=None):
        _one_of(type(self).__name__, probs, logits)
        param = probs if probs is not None else logits
        if jnp.ndim(param) < 1:
            name = "probs" if probs is not None else "logits"
            raise ValueError(
                f"{type(self).__name__}: {name} needs a last dim indexing the "
                f"categories, got shape {jnp.shape(param)}"
            )
        self._probs = probs
        self._logits = logits
        super().__init__(jnp.shape(param)[:-1], validate_args=validate_args)

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {"probs": constraints.simplex}
        return {"logits": constraints.real_vector}

    @property
    def num_categories(self) -> int:
        param = self._probs if self._probs is not None else self._logits
        return jnp.shape(param)[-1]

    @property
    def support(self):
        return constraints.integer_interval(0, self.num_categories - 1)

    @property
    def probs(self):
        if self._probs is not None:
            return self._probs
        return jax.nn.softmax(self._logits, axis=-1)

    @property
    def logits(self):
        """Normalised log probabilities."""
        if self._logits is not None:
            return jax.nn.log_softmax(self._logits, axis=-1)
        return jnp.log(self._probs)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        return jax.random.categorical(key, self.logits, axis=-1, shape=shape)

    def log_prob(self, value):
        self._validate_sample(value)
        value = jnp.asarray(value)
        logits = self.logits
        shape = jnp.broadcast_shapes(jnp.shape(value), self.batch_shape)
        logits = jnp.broadcast_to(logits, shape + logits.shape[-1:])
        index = jnp.broadcast_to(value, shape).astype(jnp.int32)[..., None]
        return jnp.take_along_axis(logits, index, axis=-1)[..., 0]

    def enumerate_support(self, expand=True):
        k = self.num_categories
        values = jnp.arange(k).reshape((k,) + (1,) * len(self.batch_shape))
        if expand:
            values = jnp.broadcast_to(values, (k,) + self.batch_shape)
        return values

    @property
    def mean(self):
        return jnp.full(self.batch_shape, jnp.nan)

    @property
    def variance(self):
        return jnp.full(self.batch_shape, jnp.nan)

    def entropy(self):
        logits = self.logits
        probs = jnp.exp(logits)
        # zero-probability categories contribute 0, not 0 * -inf
        terms = jnp.where(probs > 0, probs * logits, 0.0)
        return jnp.broadcast_to(-jnp.sum(terms, axis=-1), self.batch_shape)


class CategoricalProbs(Categorical):
    """:class:`Categorical` from ``probs`` (NumPyro's name)."""

    def __init__(self, probs, *, validate_args=None):
        super().__init__(probs=probs, validate_args=validate_args)


class CategoricalLogits(Categorical):
    """:class:`Categorical` from ``logits`` (NumPyro's name)."""

    def __init__(self, logits, *, validate_args=None):
        super().__init__(logits=logits, validate_args=validate_args)


# -- Binomial and Multinomial -------------------------------------------------------


class Binomial(Distribution):
    """Number of successes in ``total_count`` independent trials, each a success
    with probability ``probs`` (or ``sigmoid(logits)``).

    Args:
        total_count: number of trials, a non-negative integer.
        probs: success probability of each trial.
        logits: log-odds of success of each trial.

    >>> d = Binomial(4, probs=0.5)
    >>> round(float(jnp.exp(d.log_prob(2))), 4)  # 6 / 16
    0.375
    >>> d.enumerate_support().tolist()
    [0, 1, 2, 3, 4]
    """

    has_enumerate_support = True
    pytree_data_fields = ("total_count", "_probs", "_logits")

    def __init__(self, total_count=1, probs=None, logits=None, *, validate_args=None):
        _one_of(type(self).__name__, probs, logits)
        if probs is not None:
            self._probs, self.total_count = _promote(probs, total_count)
            self._logits = None
        else:
            self._logits, self.total_count = _promote(logits, total_count)
            self._probs = None
        param = probs if probs is not None else logits
        super().__init__(
            batch_shape_of(param, total_count), validate_args=validate_args
        )

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {
                "probs": constraints.unit_interval,
                "total_count": constraints.nonnegative_integer,
            }
        return {
            "logits": constraints.real,
            "total_count": constraints.nonnegative_integer,
        }

    @property
    def support(self):
        return constraints.integer_interval(0, self.total_count)

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

    def _log_probs_pair(self):
        """(log p, log(1 - p)), each accurate in its own tail."""
        if self._logits is not None:
            logits = _float(self._logits)
            return jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
        probs = _float(self._probs)
        return jnp.log(probs), jnp.log1p(-probs)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        n = jnp.broadcast_to(_float(self.total_count), shape)
        p = jnp.broadcast_to(_float(self.probs), shape)
        return jax.random.binomial(key, n, p).astype(jnp.int32)

    def log_prob(self, value):
        self._validate_sample(value)
        log_p, log_q = self._log_probs_pair()
        return _binomial_log_prob(_float(self.total_count), _float(value), log_p, log_q)

    def cdf(self, value):
        k = jnp.floor(_float(value))
        n = _float(self.total_count)
        inside = (k >= 0) & (k < n)
        # P(X <= k) = I_{1-p}(n - k, k + 1); arguments made valid off the interior
        a = jnp.where(inside, n - k, 1.0)
        b = jnp.where(inside, k + 1, 1.0)
        q = jnp.exp(self._log_probs_pair()[1])
        interior = betainc(a, b, q)
        return jnp.where(k < 0, 0.0, jnp.where(k >= n, 1.0, interior))

    def enumerate_support(self, expand=True):
        n = _concrete_scalar(type(self).__name__, "total_count", self.total_count)
        return _enumerate_range(0, n, self.batch_shape, expand)

    @property
    def mean(self):
        return jnp.broadcast_to(self.total_count * self.probs, self.batch_shape)

    @property
    def variance(self):
        p = self.probs
        return jnp.broadcast_to(self.total_count * p * (1 - p), self.batch_shape)


class BinomialProbs(Binomial):
    """:class:`Binomial` from ``probs`` (NumPyro's name and argument order)."""

    def __init__(self, probs, total_count=1, *, validate_args=None):
        super().__init__(total_count, probs=probs, validate_args=validate_args)


class BinomialLogits(Binomial):
    """:class:`Binomial` from ``logits`` (NumPyro's name and argument order)."""

    def __init__(self, logits, total_count=1, *, validate_args=None):
        super().__init__(total_count, logits=logits, validate_args=validate_args)


class Multinomial(Distribution):
    """Counts of each of ``K`` categories in ``total_count`` independent draws
    from ``Categorical(probs)``; the event is the vector of ``K`` counts.

    Args:
        total_count: number of draws, a non-negative integer.
        probs: category probabilities along the last dim.
        logits: unnormalised log probabilities along the last dim.
        total_count_max: accepted for NumPyro compatibility; the sampler draws
            a chain of binomials, so it needs no bound even when
            ``total_count`` is traced.

    >>> d = Multinomial(2, probs=jnp.array([0.5, 0.5]))
    >>> float(jnp.exp(d.log_prob(jnp.array([1, 1]))))
    0.5
    """

    pytree_data_fields = ("total_count", "_probs", "_logits")
    pytree_aux_fields = ("total_count_max",)

    def __init__(
        self,
        total_count=1,
        probs=None,
        logits=None,
        *,
        total_count_max=None,
        validate_args=None,
    ):
        _one_of(type(self).__name__, probs, logits)
        name = "probs" if probs is not None else "logits"
        param = probs if probs is not None else logits
        if jnp.ndim(param) < 1:
            raise ValueError(
                f"{type(self).__name__}: {name} needs a last dim indexing the "
                f"categories, got shape {jnp.shape(param)}"
            )
        param, self.total_count = _promote(param, total_count, event_ndims=(1, 0))
        self._probs = param if probs is not None else None
        self._logits = param if logits is not None else None
        self.total_count_max = total_count_max
        batch_shape = batch_shape_of(param, total_count, event_ndims=(1, 0))
        super().__init__(
            batch_shape, jnp.shape(param)[-1:], validate_args=validate_args
        )

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {
                "probs": constraints.simplex,
                "total_count": constraints.nonnegative_integer,
            }
        return {
            "logits": constraints.real_vector,
            "total_count": constraints.nonnegative_integer,
        }

    @property
    def support(self):
        return constraints.multinomial(self.total_count)

    @property
    def probs(self):
        if self._probs is not None:
            return self._probs
        return jax.nn.softmax(self._logits, axis=-1)

    @property
    def logits(self):
        """Normalised log probabilities."""
        if self._logits is not None:
            return jax.nn.log_softmax(self._logits, axis=-1)
        return jnp.log(self._probs)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        return _multinomial_draw(key, self.total_count, self.probs, shape)

    def log_prob(self, value):
        self._validate_sample(value)
        if self._logits is not None:
            log_probs = jax.nn.log_softmax(_float(self._logits), axis=-1)
        else:
            log_probs = jnp.log(_float(self._probs))
        value = _float(value)
        log_prob = _multinomial_log_prob(value, log_probs)
        # counts that do not add up to total_count have no mass
        matches = jnp.sum(value, -1) == _float(self.total_count)
        return jnp.where(matches, log_prob, -jnp.inf)

    @property
    def mean(self):
        n = jnp.expand_dims(_float(self.total_count), -1)
        return jnp.broadcast_to(n * self.probs, self.shape())

    @property
    def variance(self):
        n = jnp.expand_dims(_float(self.total_count), -1)
        p = self.probs
        return jnp.broadcast_to(n * p * (1 - p), self.shape())


class MultinomialProbs(Multinomial):
    """:class:`Multinomial` from ``probs`` (NumPyro's name and argument order)."""

    def __init__(
        self, probs, total_count=1, *, total_count_max=None, validate_args=None
    ):
        super().__init__(
            total_count,
            probs=probs,
            total_count_max=total_count_max,
            validate_args=validate_args,
        )


class MultinomialLogits(Multinomial):
    """:class:`Multinomial` from ``logits`` (NumPyro's name and argument order)."""

    def __init__(
        self, logits, total_count=1, *, total_count_max=None, validate_args=None
    ):
        super().__init__(
            total_count,
            logits=logits,
            total_count_max=total_count_max,
            validate_args=validate_args,
        )


# -- Poisson and its gamma mixtures -------------------------------------------------


class Poisson(Distribution):
    """Poisson distribution with mean ``rate``.

    Args:
        rate: the mean, non-negative.
        is_sparse: accepted for NumPyro compatibility (a speed hint there); the
            log mass is the same either way.

    >>> d = Poisson(2.0)
    >>> float(d.log_prob(0))  # -rate
    -2.0
    """

    arg_constraints = {"rate": constraints.nonnegative}
    support = constraints.nonnegative_integer
    pytree_data_fields = ("rate",)
    pytree_aux_fields = ("is_sparse",)

    def __init__(self, rate, *, is_sparse=False, validate_args=None):
        self.rate = rate
        self.is_sparse = bool(is_sparse)
        super().__init__(jnp.shape(rate), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        return jax.random.poisson(key, _float(self.rate), shape)

    def log_prob(self, value):
        self._validate_sample(value)
        return _poisson_log_prob(_float(value), _float(self.rate))

    def cdf(self, value):
        k = jnp.floor(_float(value))
        upper = gammaincc(jnp.maximum(k + 1, 1.0), _float(self.rate))
        return jnp.where(k < 0, 0.0, upper)

    @property
    def mean(self):
        return jnp.broadcast_to(_float(self.rate), self.batch_shape)

    @property
    def variance(self):
        return jnp.broadcast_to(_float(self.rate), self.batch_shape)


class GammaPoisson(Distribution):
    """Poisson distribution whose rate is drawn from
    ``Gamma(concentration, rate)``: a negative binomial with mean
    ``concentration / rate``.

    >>> d = GammaPoisson(1.0, 1.0)  # Geometric(probs=1/2)
    >>> float(jnp.exp(d.log_prob(1)))
    0.25
    """

    arg_constraints = {
        "concentration": constraints.positive,
        "rate": constraints.positive,
    }
    support = constraints.nonnegative_integer
    pytree_data_fields = ("concentration", "rate")

    def __init__(self, concentration, rate=1.0, *, validate_args=None):
        self.concentration, self.rate = _promote(concentration, rate)
        super().__init__(
            batch_shape_of(concentration, rate), validate_args=validate_args
        )

    # The count is NB(r, p) with r = concentration and p = 1 / (1 + rate), the
    # probability attached to each count; subclasses give p in their own terms.
    def _total(self):
        return _float(self.concentration)

    def _log_odds(self):
        """log(p / (1 - p)) = -log(rate): the log scale of the Poisson rate."""
        return -jnp.log(_float(self.rate))

    def _log_probs_pair(self):
        """(log p, log(1 - p))."""
        z = self._log_odds()
        return jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        key_gamma, key_poisson = jax.random.split(key)
        r = jnp.broadcast_to(self._total(), shape)
        # the gamma draw stays in log space so tiny concentrations do not
        # underflow to exactly zero before scaling
        log_rate = jax.random.loggamma(key_gamma, r) + self._log_odds()
        return jax.random.poisson(key_poisson, jnp.exp(log_rate), shape)

    def log_prob(self, value):
        self._validate_sample(value)
        log_p, log_q = self._log_probs_pair()
        return _negative_binomial_log_prob(self._total(), _float(value), log_p, log_q)

    def cdf(self, value):
        k = jnp.floor(_float(value))
        q = jnp.exp(self._log_probs_pair()[1])
        upper = betainc(self._total(), jnp.maximum(k + 1, 1.0), q)
        return jnp.where(k < 0, 0.0, upper)

    @property
    def mean(self):
        return jnp.broadcast_to(
            self._total() * jnp.exp(self._log_odds()), self.batch_shape
        )

    @property
    def variance(self):
        mean = self.mean
        return mean + jnp.square(mean) / jnp.broadcast_to(
            self._total(), self.batch_shape
        )


class NegativeBinomial(GammaPoisson):
    """Number of successes before ``total_count`` failures, each trial a
    success with probability ``probs`` (or ``sigmoid(logits)``); NumPyro's
    convention, which is ``GammaPoisson(total_count, 1 / probs - 1)``.

    In scipy's terms this is ``scipy.stats.nbinom(total_count, 1 - probs)``.

    Args:
        total_count: number of failures to stop at, positive (need not be an
            integer).
        probs: success probability of each trial.
        logits: log-odds of success.

    >>> d = NegativeBinomial(2.0, probs=0.5)
    >>> float(jnp.exp(d.log_prob(0)))
    0.25
    """

    pytree_data_fields = ("total_count", "_probs", "_logits")

    def __init__(self, total_count, probs=None, logits=None, *, validate_args=None):
        _one_of(type(self).__name__, probs, logits)
        param = probs if probs is not None else logits
        param, self.total_count = _promote(param, total_count)
        self._probs = param if probs is not None else None
        self._logits = param if logits is not None else None
        Distribution.__init__(
            self, batch_shape_of(param, total_count), validate_args=validate_args
        )

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {
                "total_count": constraints.positive,
                "probs": constraints.unit_interval,
            }
        return {"total_count": constraints.positive, "logits": constraints.real}

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

    @property
    def concentration(self):
        return self.total_count

    @property
    def rate(self):
        return jnp.exp(-self._log_odds())

    def _total(self):
        return _float(self.total_count)

    def _log_odds(self):
        if self._logits is not None:
            return _float(self._logits)
        p = _float(self._probs)
        return jnp.log(p) - jnp.log1p(-p)

    def _log_probs_pair(self):
        if self._logits is not None:
            return super()._log_probs_pair()
        p = _float(self._probs)
        return jnp.log(p), jnp.log1p(-p)


class NegativeBinomialProbs(NegativeBinomial):
    """:class:`NegativeBinomial` from ``probs`` (NumPyro's name)."""

    def __init__(self, total_count, probs, *, validate_args=None):
        super().__init__(total_count, probs=probs, validate_args=validate_args)


class NegativeBinomialLogits(NegativeBinomial):
    """:class:`NegativeBinomial` from ``logits`` (NumPyro's name)."""

    def __init__(self, total_count, logits, *, validate_args=None):
        super().__init__(total_count, logits=logits, validate_args=validate_args)


class NegativeBinomial2(GammaPoisson):
    """Negative binomial with the given ``mean`` and ``concentration`` (its
    variance is ``mean + mean**2 / concentration``); the same distribution as
    ``GammaPoisson(concentration, concentration / mean)``.

    >>> d = NegativeBinomial2(3.0, 2.0)
    >>> float(d.mean), round(float(d.variance), 4)
    (3.0, 7.5)
    """

    arg_constraints = {
        "mean": constraints.nonnegative,
        "concentration": constraints.positive,
    }
    pytree_data_fields = ("_mean", "concentration")

    def __init__(self, mean, concentration, *, validate_args=None):
        self._mean, self.concentration = _promote(mean, concentration)
        Distribution.__init__(
            self, batch_shape_of(mean, concentration), validate_args=validate_args
        )

    @property
    def rate(self):
        return _float(self.concentration) / _float(self._mean)

    def _log_odds(self):
        return jnp.log(_float(self._mean)) - jnp.log(_float(self.concentration))

    @property
    def mean(self):
        return jnp.broadcast_to(_float(self._mean), self.batch_shape)


# -- Geometric ----------------------------------------------------------------------


class Geometric(Distribution):
    """Number of failures before the first success, each trial a success with
    probability ``probs`` (or ``sigmoid(logits)``). Samples are floats, as in
    NumPyro.

    >>> d = Geometric(probs=0.5)
    >>> float(jnp.exp(d.log_prob(2)))  # 0.5 ** 3
    0.125
    >>> float(d.cdf(1.0))
    0.75
    """

    support = constraints.nonnegative_integer
    pytree_data_fields = ("_probs", "_logits")

    def __init__(self, probs=None, logits=None, *, validate_args=None):
        _one_of(type(self).__name__, probs, logits)
        self._probs = probs
        self._logits = logits
        param = probs if probs is not None else logits
        super().__init__(jnp.shape(param), validate_args=validate_args)

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {"probs": constraints.unit_interval}
        return {"logits": constraints.real}

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

    def _log_probs_pair(self):
        """(log p, log(1 - p)) for the success probability p."""
        if self._logits is not None:
            logits = _float(self._logits)
            return jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
        p = _float(self._probs)
        return jnp.log(p), jnp.log1p(-p)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        _, log_q = self._log_probs_pair()
        # inverse cdf: floor(log U / log(1 - p)), with -log U ~ Exponential(1)
        return jnp.floor(jax.random.exponential(key, shape) / -log_q)

    def log_prob(self, value):
        self._validate_sample(value)
        value = _float(value)
        log_p, log_q = self._log_probs_pair()
        failures = jnp.where(value == 0, 0.0, value * log_q)
        return failures + log_p

    def cdf(self, value):
        k = jnp.floor(_float(value))
        _, log_q = self._log_probs_pair()
        # 1 - (1 - p) ** (k + 1)
        upper = -jnp.expm1(jnp.maximum(k + 1, 0.0) * log_q)
        return jnp.where(k < 0, 0.0, upper)

    @property
    def mean(self):
        log_p, log_q = self._log_probs_pair()
        return jnp.broadcast_to(jnp.exp(log_q - log_p), self.batch_shape)

    @property
    def variance(self):
        log_p, log_q = self._log_probs_pair()
        return jnp.broadcast_to(jnp.exp(log_q - 2 * log_p), self.batch_shape)

    def entropy(self):
        log_p, log_q = self._log_probs_pair()
        # -log p - (1 - p) / p * log(1 - p); the second term is 0 when p = 1
        odds = jnp.exp(log_q - log_p)
        entropy = -log_p - jnp.where(log_q == 0, 0.0, odds * log_q)
        return jnp.broadcast_to(entropy, self.batch_shape)


class GeometricProbs(Geometric):
    """:class:`Geometric` from ``probs`` (NumPyro's name)."""

    def __init__(self, probs, *, validate_args=None):
        super().__init__(probs=probs, validate_args=validate_args)


class GeometricLogits(Geometric):
    """:class:`Geometric` from ``logits`` (NumPyro's name)."""

    def __init__(self, logits, *, validate_args=None):
        super().__init__(logits=logits, validate_args=validate_args)


# -- finite supports ----------------------------------------------------------------


class DiscreteUniform(Distribution):
    """Uniform distribution over the integers ``low, low + 1, ..., high``
    (both ends included).

    >>> d = DiscreteUniform(1, 4)
    >>> float(jnp.exp(d.log_prob(3)))
    0.25
    >>> d.enumerate_support().tolist()
    [1, 2, 3, 4]
    """

    arg_constraints = {
        "low": constraints.dependent,
        "high": constraints.dependent,
    }
    has_enumerate_support = True
    pytree_data_fields = ("low", "high")

    def __init__(self, low=0, high=1, *, validate_args=None):
        self.low, self.high = _promote(low, high)
        super().__init__(batch_shape_of(low, high), validate_args=validate_args)

    def _check_args(self):
        super()._check_args()
        low, high = self.low, self.high
        if not is_concrete((low, high)):
            return
        low, high = np.asarray(low), np.asarray(high)
        for name, value in (("low", low), ("high", high)):
            if not np.all(np.floor(value) == value):
                raise ValueError(
                    f"DiscreteUniform: parameter {name!r} must be an integer, "
                    f"got {value!r}"
                )
        if not np.all(low <= high):
            raise ValueError(
                f"DiscreteUniform: parameter 'high' must be >= low, got "
                f"low={low!r}, high={high!r}"
            )

    @property
    def support(self):
        return constraints.integer_interval(self.low, self.high)

    def _size(self):
        return _float(self.high) - _float(self.low) + 1

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        low = jnp.asarray(self.low).astype(jnp.int32)
        high = jnp.asarray(self.high).astype(jnp.int32)
        return jax.random.randint(key, shape, low, high + 1)

    def log_prob(self, value):
        self._validate_sample(value)
        shape = jnp.broadcast_shapes(jnp.shape(value), self.batch_shape)
        return jnp.broadcast_to(-jnp.log(self._size()), shape)

    def cdf(self, value):
        steps = jnp.floor(_float(value)) + 1 - _float(self.low)
        return jnp.clip(steps / self._size(), 0.0, 1.0)

    def icdf(self, q):
        """The smallest support point whose cdf reaches ``q``."""
        steps = jnp.ceil(_float(q) * self._size()) - 1
        return jnp.clip(_float(self.low) + steps, self.low, self.high)

    def enumerate_support(self, expand=True):
        low = _concrete_scalar("DiscreteUniform", "low", self.low)
        high = _concrete_scalar("DiscreteUniform", "high", self.high)
        return _enumerate_range(low, high, self.batch_shape, expand)

    @property
    def mean(self):
        return jnp.broadcast_to((_float(self.low) + self.high) / 2, self.batch_shape)

    @property
    def variance(self):
        return jnp.broadcast_to((jnp.square(self._size()) - 1) / 12, self.batch_shape)

    def entropy(self):
        return jnp.broadcast_to(jnp.log(self._size()), self.batch_shape)


class BetaBinomial(Distribution):
    """Binomial distribution whose success probability is drawn from
    ``Beta(concentration1, concentration0)``.

    >>> d = BetaBinomial(1.0, 1.0, total_count=3)  # uniform on {0, ..., 3}
    >>> float(jnp.exp(d.log_prob(2)))
    0.25
    """

    arg_constraints = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
        "total_count": constraints.nonnegative_integer,
    }
    has_enumerate_support = True
    pytree_data_fields = ("concentration1", "concentration0", "total_count")

    def __init__(
        self, concentration1, concentration0, total_count=1, *, validate_args=None
    ):
        self.concentration1, self.concentration0, self.total_count = _promote(
            concentration1, concentration0, total_count
        )
        batch_shape = batch_shape_of(concentration1, concentration0, total_count)
        super().__init__(batch_shape, validate_args=validate_args)

    @property
    def support(self):
        return constraints.integer_interval(0, self.total_count)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        key_beta, key_binomial = jax.random.split(key)
        a = jnp.broadcast_to(_float(self.concentration1), shape)
        b = jnp.broadcast_to(_float(self.concentration0), shape)
        probs = jax.random.beta(key_beta, a, b)
        n = jnp.broadcast_to(_float(self.total_count), shape)
        return jax.random.binomial(key_binomial, n, probs).astype(jnp.int32)

    def log_prob(self, value):
        self._validate_sample(value)
        value, n = _float(value), _float(self.total_count)
        a, b = _float(self.concentration1), _float(self.concentration0)
        shape = jnp.broadcast_shapes(
            jnp.shape(value), jnp.shape(n), jnp.shape(a), jnp.shape(b)
        )
        alpha = jnp.stack([jnp.broadcast_to(a, shape), jnp.broadcast_to(b, shape)], -1)
        counts = jnp.stack(
            [jnp.broadcast_to(value, shape), jnp.broadcast_to(n - value, shape)], -1
        )
        return _polya_log_prob(alpha, counts)

    def enumerate_support(self, expand=True):
        n = _concrete_scalar("BetaBinomial", "total_count", self.total_count)
        return _enumerate_range(0, n, self.batch_shape, expand)

    @property
    def mean(self):
        a, b = _float(self.concentration1), _float(self.concentration0)
        return jnp.broadcast_to(self.total_count * a / (a + b), self.batch_shape)

    @property
    def variance(self):
        a, b = _float(self.concentration1), _float(self.concentration0)
        n = _float(self.total_count)
        total = a + b
        variance = n * a * b * (total + n) / (jnp.square(total) * (total + 1))
        return jnp.broadcast_to(variance, self.batch_shape)


class DirichletMultinomial(Distribution):
    """Multinomial distribution whose category probabilities are drawn from
    ``Dirichlet(concentration)``; the event is the vector of counts.

    Args:
        concentration: positive Dirichlet concentration, categories along the
            last dim.
        total_count: number of draws.
        total_count_max: accepted for NumPyro compatibility; not needed.

    >>> d = DirichletMultinomial(jnp.ones(2), total_count=2)  # uniform on 3 vectors
    >>> round(float(jnp.exp(d.log_prob(jnp.array([1, 1])))), 6)
    0.333333
    """

    arg_constraints = {
        "concentration": constraints.independent(constraints.positive, 1),
        "total_count": constraints.nonnegative_integer,
    }
    pytree_data_fields = ("concentration", "total_count")
    pytree_aux_fields = ("total_count_max",)

    def __init__(
        self, concentration, total_count=1, *, total_count_max=None, validate_args=None
    ):
        if jnp.ndim(concentration) < 1:
            raise ValueError(
                "DirichletMultinomial: concentration needs a last dim indexing the "
                f"categories, got shape {jnp.shape(concentration)}"
            )
        self.concentration, self.total_count = _promote(
            concentration, total_count, event_ndims=(1, 0)
        )
        self.total_count_max = total_count_max
        batch_shape = batch_shape_of(concentration, total_count, event_ndims=(1, 0))
        super().__init__(
            batch_shape, jnp.shape(concentration)[-1:], validate_args=validate_args
        )

    @property
    def support(self):
        return constraints.multinomial(self.total_count)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        key_dirichlet, key_multinomial = jax.random.split(key)
        alpha = jnp.broadcast_to(_float(self.concentration), shape + self.event_shape)
        probs = jax.random.dirichlet(key_dirichlet, alpha)
        return _multinomial_draw(key_multinomial, self.total_count, probs, shape)

    def log_prob(self, value):
        self._validate_sample(value)
        value, alpha = _float(value), _float(self.concentration)
        shape = jnp.broadcast_shapes(jnp.shape(value), jnp.shape(alpha))
        log_prob = _polya_log_prob(
            jnp.broadcast_to(alpha, shape), jnp.broadcast_to(value, shape)
        )
        # counts that do not add up to total_count have no mass
        matches = jnp.sum(value, -1) == _float(self.total_count)
        return jnp.where(matches, log_prob, -jnp.inf)

    @property
    def mean(self):
        alpha = _float(self.concentration)
        n = jnp.expand_dims(_float(self.total_count), -1)
        mean = n * alpha / jnp.sum(alpha, axis=-1, keepdims=True)
        return jnp.broadcast_to(mean, self.shape())

    @property
    def variance(self):
        alpha = _float(self.concentration)
        n = jnp.expand_dims(_float(self.total_count), -1)
        total = jnp.sum(alpha, axis=-1, keepdims=True)
        share = alpha / total
        variance = n * share * (1 - share) * (n + total) / (1 + total)
        return jnp.broadcast_to(variance, self.shape())


@jax.jit
def _ordered_logistic_log_probs(predictor, cutpoints):
    """log P(category k), k = 0..K-1, for K - 1 increasing cutpoints."""
    inf = jnp.full(cutpoints.shape[:-1] + (1,), jnp.inf, cutpoints.dtype)
    below = jnp.concatenate([-inf, cutpoints], axis=-1)
    above = jnp.concatenate([cutpoints, inf], axis=-1)
    x = predictor[..., None]
    # sigmoid(u) - sigmoid(l) = sigmoid(u) sigmoid(-l) (1 - exp(l - u)), with
    # u = x - below and l = x - above: each factor in log space, and l - u
    # taken from the cutpoints alone
    return (
        jax.nn.log_sigmoid(x - below)
        + jax.nn.log_sigmoid(above - x)
        + _log1mexp(below - above)
    )


class OrderedLogistic(Categorical):
    """Ordinal regression: category ``k`` of ``K`` has probability
    ``sigmoid(predictor - c[k-1]) - sigmoid(predictor - c[k])`` for the
    increasing ``cutpoints`` ``c`` (``K - 1`` of them, with ``c[-1] = -inf`` and
    ``c[K-1] = +inf``).

    >>> d = OrderedLogistic(0.0, jnp.array([0.0]))
    >>> d.probs.tolist()
    [0.5, 0.5]
    """

    arg_constraints = {
        "predictor": constraints.real,
        "cutpoints": constraints.ordered_vector,
    }
    pytree_data_fields = ("predictor", "cutpoints", "_probs", "_logits")

    def __init__(self, predictor, cutpoints, *, validate_args=None):
        if jnp.ndim(cutpoints) < 1:
            raise ValueError(
                "OrderedLogistic: cutpoints needs a last dim, got shape "
                f"{jnp.shape(cutpoints)}"
            )
        self.predictor, self.cutpoints = _promote(
            predictor, cutpoints, event_ndims=(0, 1)
        )
        batch_shape = batch_shape_of(predictor, cutpoints, event_ndims=(0, 1))
        predictor = jnp.broadcast_to(_float(self.predictor), batch_shape)
        cutpoints = _float(self.cutpoints)
        cutpoints = jnp.broadcast_to(cutpoints, batch_shape + cutpoints.shape[-1:])
        log_probs = _ordered_logistic_log_probs(predictor, cutpoints)
        super().__init__(logits=log_probs, validate_args=validate_args)


# -- zero inflation -----------------------------------------------------------------


class ZeroInflatedProbs(Distribution):
    """``base_dist`` with extra zeros: zero with probability ``gate``,
    otherwise a draw from ``base_dist`` (which may itself be zero).

    Usually built with :func:`probnn.distributions.ZeroInflatedDistribution`.

    >>> d = ZeroInflatedProbs(Poisson(1.0), 0.5)
    >>> round(float(jnp.exp(d.log_prob(0))), 4)  # 0.5 + 0.5 * exp(-1)
    0.6839
    """

    arg_constraints = {"gate": constraints.unit_interval}
    pytree_data_fields = ("base_dist", "gate")

    def __init__(self, base_dist, gate, *, validate_args=None):
        self.base_dist, self.gate, batch_shape = self._setup(base_dist, gate)
        super().__init__(batch_shape, validate_args=validate_args)

    def _setup(self, base_dist, gate):
        name = type(self).__name__
        if not isinstance(base_dist, Distribution):
            raise TypeError(
                f"{name}: base_dist must be a Distribution, got {base_dist!r}"
            )
        if base_dist.event_shape:
            raise ValueError(
                f"{name}: base_dist must have an empty event shape, got "
                f"{base_dist.event_shape}"
            )
        if not getattr(base_dist.support, "is_discrete", False):
            raise ValueError(
                f"{name}: base_dist must be discrete, got "
                f"{type(base_dist).__name__} with support {base_dist.support!r}"
            )
        batch_shape = tuple(
            jnp.broadcast_shapes(jnp.shape(gate), base_dist.batch_shape)
        )
        # the gate gets the full batch rank, so dims later added by vmap or scan
        # line up with those of the expanded base
        missing = len(batch_shape) - np.ndim(gate)
        if missing:
            gate = _promote(gate, np.zeros((1,) * len(batch_shape)))[0]
        return base_dist.expand(batch_shape), gate, batch_shape

    @property
    def support(self):
        return self.base_dist.support

    @property
    def has_enumerate_support(self):
        return self.base_dist.has_enumerate_support

    def enumerate_support(self, expand=True):
        return self.base_dist.enumerate_support(expand)

    def _log_gates(self):
        """(log gate, log(1 - gate))."""
        gate = _float(self.gate)
        return jnp.log(gate), jnp.log1p(-gate)

    def sample(self, key, sample_shape=()):
        key_gate, key_base = jax.random.split(key)
        shape = tuple(sample_shape) + self.batch_shape
        log_gate, _ = self._log_gates()
        zero = jax.random.bernoulli(key_gate, jnp.exp(log_gate), shape)
        draws = self.base_dist.sample(key_base, sample_shape)
        return jnp.where(zero, jnp.zeros_like(draws), draws)

    def log_prob(self, value):
        self._validate_sample(value)
        log_gate, log_keep = self._log_gates()
        base = log_keep + self.base_dist.log_prob(value)
        return jnp.where(jnp.asarray(value) == 0, jnp.logaddexp(log_gate, base), base)

    @property
    def mean(self):
        keep = 1 - jnp.exp(self._log_gates()[0])
        return jnp.broadcast_to(keep * self.base_dist.mean, self.batch_shape)

    @property
    def variance(self):
        keep = 1 - jnp.exp(self._log_gates()[0])
        mean = self.base_dist.mean
        second = self.base_dist.variance + jnp.square(mean)
        return jnp.broadcast_to(
            keep * second - jnp.square(keep * mean), self.batch_shape
        )


class ZeroInflatedLogits(ZeroInflatedProbs):
    """:class:`ZeroInflatedProbs` with the gate given as log-odds ``gate_logits``."""

    arg_constraints = {"gate_logits": constraints.real}
    pytree_data_fields = ("base_dist", "gate_logits")

    def __init__(self, base_dist, gate_logits, *, validate_args=None):
        self.base_dist, self.gate_logits, batch_shape = self._setup(
            base_dist, gate_logits
        )
        Distribution.__init__(self, batch_shape, validate_args=validate_args)

    @property
    def gate(self):
        return jax.nn.sigmoid(self.gate_logits)

    def _log_gates(self):
        logits = _float(self.gate_logits)
        return jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)


class ZeroInflatedPoisson(ZeroInflatedProbs):
    """Poisson with extra zeros: zero with probability ``gate``, otherwise a
    ``Poisson(rate)`` draw.

    >>> d = ZeroInflatedPoisson(0.5, 1.0)
    >>> round(float(d.mean), 4)
    0.5
    """

    arg_constraints = {"gate": constraints.unit_interval, "rate": constraints.positive}
    support = constraints.nonnegative_integer
    pytree_data_fields = ("base_dist", "gate", "rate")

    def __init__(self, gate, rate=1.0, *, validate_args=None):
        gate, self.rate = _promote(gate, rate)
        super().__init__(Poisson(self.rate), gate, validate_args=validate_args)
