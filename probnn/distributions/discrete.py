"""Discrete families. Each is parameterised by exactly one of ``probs`` or
``logits``; the other is computed on demand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlog1py, xlogy

from probnn.distributions import constraints
from probnn.distributions.distribution import Distribution

__all__ = ["Bernoulli", "Categorical"]


def _one_of(name: str, probs, logits):
    if (probs is None) == (logits is None):
        raise ValueError(f"{name}: pass exactly one of probs= or logits=")


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
        _one_of("Categorical", probs, logits)
        param = probs if probs is not None else logits
        if jnp.ndim(param) < 1:
            name = "probs" if probs is not None else "logits"
            raise ValueError(
                f"Categorical: {name} needs a last dim indexing the categories, "
                f"got shape {jnp.shape(param)}"
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
