"""Shape helpers shared by the distribution families."""

from __future__ import annotations

import math

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


def promote_shapes(*params, event_ndims=None):
    """Give every parameter the same number of batch dims (leading 1s).

    Leading dims that ``jax.vmap`` or ``jax.lax.scan`` later add to all
    parameters then line up, as broadcasting requires. Parameters that are
    already of the full rank are returned unchanged.
    """
    event_ndims = event_ndims or (0,) * len(params)
    batch_ndims = [np.ndim(p) - k for p, k in zip(params, event_ndims)]
    target = max(batch_ndims)

    def reshape(p, extra):
        shape = (1,) * extra + np.shape(p)
        # Concrete inputs stay concrete (numpy), so static values such as an
        # integer total_count are not turned into traced values under jit.
        if isinstance(p, jax.Array):
            return jnp.reshape(p, shape)
        return np.reshape(p, shape)

    return tuple(
        p if b == target else reshape(p, target - b)
        for p, b in zip(params, batch_ndims)
    )


def log1mexp(x):
    """``log(1 - exp(x))`` for ``x <= 0``, accurate near 0 and far below it;
    each branch sees only safe inputs, so gradients stay finite."""
    upper = x > -math.log(2)
    x_upper = jnp.where(upper, x, -1.0)
    x_lower = jnp.where(upper, -1.0, x)
    return jnp.where(upper, jnp.log(-jnp.expm1(x_upper)), jnp.log1p(-jnp.exp(x_lower)))


def _log1p_unit(u):
    """``log(1 + u)`` for ``0 <= u <= 1`` to float precision.

    ``log1p(u) = 2 atanh(s)`` with ``s = u / (2 + u)`` in ``[0, 1/3]``; the
    odd series of atanh has only positive terms, so nothing cancels, and seven
    terms leave a relative error near 1e-8. No intermediate is smaller than
    ``u / 2``, so it stays exact down to the smallest normal ``u``. About half
    the cost of ``jnp.log1p``, whose general range needs more work.
    """
    t = 2.0 * u / (2.0 + u)  # 2 s
    s2 = 0.25 * t * t
    series = 1.0 / 13.0
    for k in (11.0, 9.0, 7.0, 5.0, 3.0):
        series = series * s2 + 1.0 / k
    return t * (1.0 + s2 * series)


@jax.custom_jvp
def log1p_exp_neg_abs(x):
    """``log(1 + exp(-|x|))``: the part of ``softplus(x)`` beyond
    ``max(x, 0)``, accurate in both tails.

    Its derivative reuses the exponential instead of differentiating through
    the logarithm, and is exact at ``x = 0`` too, where ``|x|`` has a kink:
    added to ``max(x, 0)`` (whose derivative JAX takes as 1/2 there) it gives
    ``sigmoid(x)`` everywhere, and the second derivative ``sigmoid'(x)``.
    """
    return _log1p_unit(jnp.exp(-jnp.abs(x)))


@log1p_exp_neg_abs.defjvp
def _log1p_exp_neg_abs_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return log1p_exp_neg_abs(x), _tail_slope(x) * dx


@jax.custom_jvp
def _tail_slope(x):
    """Derivative of :func:`log1p_exp_neg_abs`: ``sigmoid(x) - step(x)``
    with ``step(0) = 1/2``, that is ``-sign(x) sigmoid(-|x|)``."""
    u = jnp.exp(-jnp.abs(x))
    return -jnp.sign(x) * (u / (1.0 + u))


@_tail_slope.defjvp
def _tail_slope_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    u = jnp.exp(-jnp.abs(x))
    return _tail_slope(x), u / jnp.square(1.0 + u) * dx


def log_sigmoid_pair(logits):
    """``(log sigmoid(l), log sigmoid(-l))``, each accurate in its own tail,
    sharing one exponential and one logarithm."""
    tail = log1p_exp_neg_abs(logits)
    return -(jnp.maximum(-logits, 0.0) + tail), -(jnp.maximum(logits, 0.0) + tail)


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
