"""Kullback-Leibler divergences with a registry keyed by the pair of types.

>>> from probnn.distributions import Normal, kl_divergence
>>> float(kl_divergence(Normal(0.0, 1.0), Normal(0.0, 1.0)))
0.0
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import betaln, digamma, gammaln

from probnn.distributions.bounded import Beta
from probnn.distributions.continuous import Normal
from probnn.distributions.discrete import Bernoulli, Categorical
from probnn.distributions.distribution import (
    Delta,
    Distribution,
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
)
from probnn.distributions.multivariate import Dirichlet, MultivariateNormal
from probnn.distributions.positive import Gamma
from probnn.distributions.util import sum_rightmost

__all__ = ["kl_divergence", "register_kl"]

_REGISTRY: dict[tuple[type, type], Callable] = {}


def register_kl(type_p: type, type_q: type):
    """Register ``fn(p, q)`` as the KL divergence between the two types.

    The most specific registration wins: the pair whose classes are nearest
    to ``type(p)`` and ``type(q)`` in their method resolution orders.
    """

    def decorator(fn):
        _REGISTRY[type_p, type_q] = fn
        _lookup.cache_clear()
        return fn

    return decorator


@functools.cache
def _lookup(type_p: type, type_q: type) -> Callable | None:
    best, best_distance = None, None
    for i, tp in enumerate(type_p.__mro__):
        for j, tq in enumerate(type_q.__mro__):
            fn = _REGISTRY.get((tp, tq))
            if fn is not None and (best_distance is None or i + j < best_distance):
                best, best_distance = fn, i + j
    return best


def kl_divergence(p: Distribution, q: Distribution):
    """``KL(p || q)``, batched over the broadcast batch shape of ``p`` and ``q``.

    Raises:
        NotImplementedError: no formula is registered for the pair of types.
    """
    fn = _lookup(type(p), type(q))
    if fn is None:
        raise NotImplementedError(
            f"no KL divergence registered for {type(p).__name__} and {type(q).__name__}"
        )
    return fn(p, q)


def _broadcast_to_batches(kl, p, q):
    return jnp.broadcast_to(kl, jnp.broadcast_shapes(p.batch_shape, q.batch_shape))


@register_kl(ExpandedDistribution, Distribution)
def _kl_expanded_left(p, q):
    return _broadcast_to_batches(kl_divergence(p.base_dist, q), p, q)


@register_kl(Distribution, ExpandedDistribution)
def _kl_expanded_right(p, q):
    return _broadcast_to_batches(kl_divergence(p, q.base_dist), p, q)


@register_kl(ExpandedDistribution, ExpandedDistribution)
def _kl_expanded_both(p, q):
    return _broadcast_to_batches(kl_divergence(p.base_dist, q.base_dist), p, q)


@register_kl(MaskedDistribution, Distribution)
def _kl_masked(p, q):
    return jnp.where(p._mask, kl_divergence(p.base_dist, q), 0.0)


@register_kl(Independent, Independent)
def _kl_independent(p, q):
    shared = min(p.reinterpreted_batch_ndims, q.reinterpreted_batch_ndims)
    base_p = p.base_dist.to_event(p.reinterpreted_batch_ndims - shared)
    base_q = q.base_dist.to_event(q.reinterpreted_batch_ndims - shared)
    return sum_rightmost(kl_divergence(base_p, base_q), shared)


@register_kl(Delta, Distribution)
def _kl_delta(p, q):
    return p.log_density - q.log_prob(p.v)


@register_kl(Normal, Normal)
def _kl_normal(p, q):
    ratio = p.scale / q.scale
    z = (p.loc - q.loc) / q.scale
    return 0.5 * (ratio * ratio + z * z - 1.0) - jnp.log(ratio)


@register_kl(MultivariateNormal, MultivariateNormal)
def _kl_multivariate_normal(p, q):
    batch = jnp.broadcast_shapes(p.batch_shape, q.batch_shape)
    d = p.event_shape[-1]
    tril_p = jnp.broadcast_to(p.scale_tril, batch + (d, d))
    tril_q = jnp.broadcast_to(q.scale_tril, batch + (d, d))
    shift = jnp.broadcast_to(q.loc - p.loc, batch + (d,))
    whitened = solve_triangular(tril_q, tril_p, lower=True)
    offset = solve_triangular(tril_q, shift[..., None], lower=True)[..., 0]

    def log_det(tril):
        return jnp.sum(jnp.log(jnp.diagonal(tril, axis1=-2, axis2=-1)), -1)

    trace_term = jnp.sum(whitened * whitened, axis=(-2, -1))
    mahalanobis = jnp.sum(offset * offset, axis=-1)
    return 0.5 * (trace_term + mahalanobis - d) + log_det(tril_q) - log_det(tril_p)


@register_kl(Beta, Beta)
def _kl_beta(p, q):
    a1, b1 = p.concentration1, p.concentration0
    a2, b2 = q.concentration1, q.concentration0
    return (
        betaln(a2, b2)
        - betaln(a1, b1)
        + (a1 - a2) * digamma(a1)
        + (b1 - b2) * digamma(b1)
        + (a2 - a1 + b2 - b1) * digamma(a1 + b1)
    )


@register_kl(Gamma, Gamma)
def _kl_gamma(p, q):
    a1, r1 = p.concentration, p.rate
    a2, r2 = q.concentration, q.rate
    return (
        (a1 - a2) * digamma(a1)
        - gammaln(a1)
        + gammaln(a2)
        + a2 * (jnp.log(r1) - jnp.log(r2))
        + a1 * (r2 - r1) / r1
    )


@register_kl(Dirichlet, Dirichlet)
def _kl_dirichlet(p, q):
    a, b = p.concentration, q.concentration
    a0 = jnp.sum(a, -1)
    return (
        gammaln(a0)
        - jnp.sum(gammaln(a), -1)
        - gammaln(jnp.sum(b, -1))
        + jnp.sum(gammaln(b), -1)
        + jnp.sum((a - b) * (digamma(a) - digamma(a0)[..., None]), -1)
    )


@register_kl(Categorical, Categorical)
def _kl_categorical(p, q):
    log_p, log_q = p.logits, q.logits
    probs = jnp.exp(log_p)
    # Categories with zero probability under p contribute nothing.
    terms = jnp.where(probs > 0, probs * (log_p - log_q), 0.0)
    return jnp.sum(terms, axis=-1)


@register_kl(Bernoulli, Bernoulli)
def _kl_bernoulli(p, q):
    lp, lq = p.logits, q.logits
    prob = jax.nn.sigmoid(lp)
    on = prob * (jax.nn.log_sigmoid(lp) - jax.nn.log_sigmoid(lq))
    off = (1 - prob) * (jax.nn.log_sigmoid(-lp) - jax.nn.log_sigmoid(-lq))
    return on + off
