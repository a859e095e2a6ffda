"""Continuous families."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr, ndtri

from probnn.distributions import constraints
from probnn.distributions.distribution import Distribution
from probnn.distributions.util import batch_shape_of, promote_shapes

__all__ = ["Normal"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


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
        return -0.5 * z * z - jnp.log(self.scale) - _HALF_LOG_2PI

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
