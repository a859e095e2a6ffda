"""Shape helpers shared by the distribution families."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds actual numbers (not a tracer under jit/grad/vmap)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def _inexact_pair(x, y):
    dtype = jnp.result_type(x, y, float)
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


def xlogy(x, y):
    """``x * log(y)`` with ``0 * log 0 = 0``, as ``jax.scipy.special.xlogy``,
    but integer arguments (``Beta(1, 1)``'s ``concentration - 1``, count
    data) become floats first, so that differentiating with respect to the
    other argument works (JAX's rule otherwise meets a float0 tangent)."""
    return jax.scipy.special.xlogy(*_inexact_pair(x, y))


def xlog1py(x, y):
    """``x * log1p(y)`` with ``0 * log1p(-1) = 0``; integer arguments become
    floats first (see :func:`xlogy`)."""
    return jax.scipy.special.xlog1py(*_inexact_pair(x, y))


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


def promote_shapes(*params, event_ndims=None):
    """Give every parameter the same number of batch dims (leading 1s).

    Leading dims that ``jax.vmap`` or ``jax.lax.scan`` later add to all
    parameters then line up, as broadcasting requires. Parameters that are
    already of the full rank are returned unchanged.
    """
    event_ndims = event_ndims or (0,) * len(params)
    batch_ndims = [np.ndim(p) - k for p, k in zip(params, event_ndims)]
    target = max(batch_ndims)

    return tuple(
        p if b == target else lead_ones(p, target - b)
        for p, b in zip(params, batch_ndims)
    )


def lead_ones(p, extra: int):
    """``p`` with ``extra`` leading singleton dims. Host values (Python
    numbers, numpy arrays) are reshaped with numpy, so static values such as
    an integer total_count or the bounds of an enumerated support stay
    concrete inside ``jit``."""
    shape = (1,) * extra + np.shape(p)
    if isinstance(p, jax.Array):
        return jnp.reshape(p, shape)
    return np.reshape(np.asarray(p), shape)


def log1mexp(x):
    """``log(1 - exp(x))`` for ``x <= 0``, accurate near 0 and far below it;
    each branch sees only safe inputs, so gradients stay finite."""
    upper = x > -math.log(2)
    x_upper = jnp.where(upper, x, -1.0)
    x_lower = jnp.where(upper, -1.0, x)
    return jnp.where(upper, jnp.log(-jnp.expm1(x_upper)), jnp.log1p(-jnp.exp(x_lower)))


def softplus_parts(x):
    """``(max(x, 0), max(-x, 0), log(1 + exp(-|x|)))``, so that
    ``softplus(x)`` is the first plus the third and ``softplus(-x)`` the
    second plus the third, each keeping its digits in both tails.

    All three take their ``x >= 0`` branch at ``x = 0``, so the derivatives
    that autodiff gives add up to ``sigmoid(+-x)`` there too (``jnp.maximum``
    splits a tie as 1/2 while ``jnp.abs`` takes 1, which summed to 0 or 1
    instead of 1/2). ``where`` also differentiates more cheaply than
    ``maximum``, whose tie rule costs a division per element.
    """
    nonneg = x >= 0
    tail = jnp.log1p(jnp.exp(-jnp.where(nonneg, x, -x)))
    return jnp.where(nonneg, x, 0.0), jnp.where(nonneg, 0.0, -x), tail


def log_sigmoid_pair(logits):
    """``(log sigmoid(l), log sigmoid(-l))``, each accurate in its own tail,
    sharing one exponential and one logarithm."""
    positive, negative, tail = softplus_parts(logits)
    return -(negative + tail), -(positive + tail)


class BinaryProbsLogits:
    """``probs`` and ``logits`` of a success probability given as exactly one
    of ``self._probs`` or ``self._logits``; the other is computed on demand."""

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
        """``(log p, log(1 - p))``, each accurate in its own tail."""
        dtype = jnp.result_type(float)
        if self._logits is not None:
            return log_sigmoid_pair(jnp.asarray(self._logits, dtype))
        probs = jnp.asarray(self._probs, dtype)
        return jnp.log(probs), jnp.log1p(-probs)


def is_identically_one(x) -> bool:
    """True exactly when ``x`` is a Python ``int`` or ``float`` equal to 1
    (``True`` counts, being an int); False for every array, even an array
    of ones, and for numbers of other types, so callers can skip a
    multiplication only when it is statically known to be a no-op."""
    if isinstance(x, int | float):
        return bool(x == 1)
    return False


def clamp_probs(probs):
    """Clip probabilities into ``[tiny, 1 - eps]`` of their floating dtype
    (the default float dtype for integer or Python inputs), so that their
    logarithms and those of their complements stay finite."""
    info = jnp.finfo(jnp.result_type(probs, float))
    return jnp.clip(probs, info.tiny, 1.0 - info.eps)


def matrix_to_tril_vec(x, diagonal: int = 0):
    """The entries of the last two dims' lower triangle (below the
    ``diagonal``-th diagonal), row by row, as a vector.

    >>> import jax.numpy as jnp
    >>> matrix_to_tril_vec(jnp.arange(9.0).reshape(3, 3))
    Array([0., 3., 4., 6., 7., 8.], dtype=float32)
    """
    rows, cols = jnp.tril_indices(jnp.shape(x)[-1], k=diagonal, m=jnp.shape(x)[-2])
    return x[..., rows, cols]


def vec_to_tril_matrix(t, diagonal: int = 0):
    """Inverse of :func:`matrix_to_tril_vec` for a square matrix: the
    vector's entries written row by row into the lower triangle, zeros
    elsewhere.

    >>> import jax.numpy as jnp
    >>> vec_to_tril_matrix(jnp.array([1.0, 2.0, 3.0]))
    Array([[1., 0.],
           [2., 3.]], dtype=float32)
    """
    size = jnp.shape(t)[-1]
    # a lower triangle with diagonal d <= 0 of an n x n matrix holds
    # m (m + 1) / 2 entries, m = n + d
    n = int(round((math.sqrt(1 + 8 * size) - 1) / 2)) - diagonal
    rows, cols = jnp.tril_indices(n, k=diagonal)
    if rows.shape[0] != size:
        raise ValueError(
            f"vec_to_tril_matrix: {size} entries fill no square lower triangle "
            f"with diagonal={diagonal}"
        )
    out = jnp.zeros(jnp.shape(t)[:-1] + (n, n), jnp.result_type(t))
    return out.at[..., rows, cols].set(t)
