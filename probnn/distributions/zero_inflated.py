"""Zero-inflated distributions: a point mass at zero mixed with a base family."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from probnn.distributions import constraints
from probnn.distributions._discrete_special import _float, _promote
from probnn.distributions.discrete import Poisson
from probnn.distributions.distribution import (
    Distribution,
    _not_inferable,
)
from probnn.distributions.util import log_sigmoid_pair

__all__ = ["ZeroInflatedLogits", "ZeroInflatedPoisson", "ZeroInflatedProbs"]


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

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        _not_inferable(
            cls, "it wraps base_dist, a distribution rather than a parameter shape"
        )

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
        return log_sigmoid_pair(_float(self.gate_logits))


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

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        return Distribution.infer_shapes.__func__(cls, *args, **kwargs)

    def __init__(self, gate, rate=1.0, *, validate_args=None):
        gate, self.rate = _promote(gate, rate)
        super().__init__(Poisson(self.rate), gate, validate_args=validate_args)
