"""Log densities of models."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from probnn.handlers import substitute, trace
from probnn.runtime import Message

__all__ = ["log_density", "site_log_prob"]


def site_log_prob(site: Message):
    """Scaled (and masked) log density of one sample site, not yet summed."""
    log_prob = site["fn"].log_prob(site["value"])
    if site["scale"] is not None:
        log_prob = site["scale"] * log_prob
    return log_prob


def log_density(
    model: Callable, model_args: tuple, model_kwargs: dict, params: dict
) -> tuple:
    """Joint log density of ``model`` with its sites substituted by ``params``.

    Args:
        model: the model.
        model_args: positional arguments of the model.
        model_kwargs: keyword arguments of the model.
        params: values for latent sites (and params), by site name.

    Returns:
        ``(log_joint, trace)``: the summed log density of every sample site
        (with plate subsampling scales, ``scale`` and ``mask`` applied) and the
        model's trace.

    >>> import probnn, probnn.distributions as dist
    >>> def model(y):
    ...     mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    ...     probnn.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> log_joint, tr = log_density(model, (0.0,), {}, {"mu": 0.0})
    >>> round(float(log_joint), 4)  # 2 * log N(0 | 0, 1)
    -1.8379
    """
    model_trace = trace(substitute(model, data=params)).get_trace(
        *model_args, **model_kwargs
    )
    log_joint = jnp.zeros(())
    for site in model_trace.values():
        if site["type"] == "sample":
            log_joint = log_joint + jnp.sum(site_log_prob(site))
    return log_joint, model_trace
