"""Continuous families on bounded or circular supports, and ImproperUniform."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import (
    betaln,
    digamma,
    i0e,
)

from probnn.distributions import constraints
from probnn.distributions._continuous_special import (
    _HALF_LOG_2PI,
    _LOG_2PI,
    _LOG_HALF,
    _STIRLING_MIN,
    _beta_log_density,
    _clip_unit,
    _digamma_difference,
    _digamma_tail,
    _float_dtype,
    _log_ndtr_difference,
    _log_ndtr_safe,
    _ndtri_of_log,
    _refine_from_bound,
    _stirling_correction,
    _truncated_standard_normal_moments,
    _von_mises_centered,
    _von_mises_circular_variance,
    _wrap_angle,
    regularized_beta,
)
from probnn.distributions.distribution import (
    Distribution,
    _not_inferable,
)
from probnn.distributions.util import (
    BinaryProbsLogits,
    batch_shape_of,
    is_concrete,
    promote_shapes,
)

__all__ = [
    "Beta",
    "ImproperUniform",
    "RelaxedBernoulli",
    "RelaxedBernoulliLogits",
    "TruncatedNormal",
    "Uniform",
    "VonMises",
]


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
        return _beta_log_density(a, b, value, 1 - value)

    def cdf(self, value):
        return regularized_beta(
            self.concentration1, self.concentration0, value, 1 - value
        )

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


class RelaxedBernoulli(BinaryProbsLogits, Distribution):
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

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        _not_inferable(
            cls, "its batch_shape and event_shape are given directly, not inferred"
        )

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
