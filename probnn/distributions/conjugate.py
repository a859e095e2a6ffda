"""Compound discrete families: gamma-Poisson (negative binomial), beta-binomial
and Dirichlet-multinomial.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from probnn.distributions import constraints
from probnn.distributions._continuous_special import regularized_beta
from probnn.distributions._discrete_special import (
    _concrete_scalar,
    _enumerate_range,
    _float,
    _multinomial_draw,
    _negative_binomial_log_prob,
    _one_of,
    _polya_log_prob,
    _promote,
)
from probnn.distributions.distribution import (
    Distribution,
    _bind_shapes,
    _broadcast,
    _split_event,
)
from probnn.distributions.util import (
    BinaryProbsLogits,
    batch_shape_of,
    log_sigmoid_pair,
)

__all__ = [
    "BetaBinomial",
    "DirichletMultinomial",
    "GammaPoisson",
    "NegativeBinomial",
    "NegativeBinomial2",
    "NegativeBinomialLogits",
    "NegativeBinomialProbs",
]


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
        return log_sigmoid_pair(self._log_odds())

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
        log_p, log_q = self._log_probs_pair()
        upper = regularized_beta(
            self._total(), jnp.maximum(k + 1, 1.0), jnp.exp(log_q), jnp.exp(log_p)
        )
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


class NegativeBinomial(BinaryProbsLogits, GammaPoisson):
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

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        """The last dim of ``concentration`` is the event; its batch dims
        broadcast with ``total_count``."""
        owner = cls.__name__
        shapes = _bind_shapes(cls, args, kwargs, {"total_count": ()})
        if "concentration" not in shapes:
            raise ValueError(f"{owner}.infer_shapes needs the concentration shape")
        batch, event = _split_event(owner, "concentration", shapes["concentration"], 1)
        return _broadcast(owner, [batch, shapes["total_count"]]), event

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
