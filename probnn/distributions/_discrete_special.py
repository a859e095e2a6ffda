"""Log-probability helpers behind the discrete families, accurate in float32.

Large counts use saddle-point (deviance plus Stirling error) forms instead of
cancelling log-gamma differences.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from probnn.distributions.util import is_concrete, lead_ones


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
    return tuple(
        p if b == target else lead_ones(p, target - b)
        for p, b in zip(params, batch_ndims)
    )


def _float(x):
    return jnp.asarray(x, dtype=jnp.result_type(float))


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
