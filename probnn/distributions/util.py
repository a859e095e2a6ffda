"""Shape helpers shared by the distribution families."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds actual numbers (not a tracer under jit/grad/vmap)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def sum_rightmost(x, n: int):
    """Sum the ``n`` rightmost dims of ``x``."""
    if n <= 0:
        return x
    return jnp.sum(x, axis=tuple(range(-n, 0)))


def batch_shape_of(*params, event_ndims=None) -> tuple[int, ...]:
    """Broadcast batch shape of parameters whose ``event_ndims`` rightmost dims
    (0 by default) belong to the event."""
    event_ndims = event_ndims or (0,) * len(params)
    shapes = [np.shape(p)[: np.ndim(p) - k] for p, k in zip(params, event_ndims)]
    return tuple(jnp.broadcast_shapes(*shapes))
