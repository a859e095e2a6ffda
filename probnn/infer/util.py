"""Log densities of models, and moving their sites between constrained and
unconstrained space."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from probnn.distributions import constraints
from probnn.distributions.transforms import biject_to
from probnn.distributions.util import sum_rightmost
from probnn.enumeration import enum, is_enumerated
from probnn.handlers import seed, substitute, trace
from probnn.runtime import Message, Messenger

__all__ = [
    "constrain_fn",
    "log_density",
    "potential_energy",
    "site_log_prob",
    "site_transform",
    "transform_fn",
]


def site_transform(site: Message):
    """The bijection from unconstrained space onto a latent sample site's
    support or a param site's ``constraint``."""
    if site["type"] == "param":
        constraint = site["kwargs"].get("constraint", constraints.real)
    else:
        constraint = site["fn"].support
    try:
        return biject_to(constraint)
    except NotImplementedError as error:
        raise NotImplementedError(
            f"{site['type']} site {site['name']!r}: {error}"
        ) from None


def transform_fn(transforms: dict, params: dict, invert: bool = False) -> dict:
    """Apply ``transforms[name]`` (or its inverse) to ``params[name]``;
    entries without a transform pass through unchanged."""
    out = {}
    for name, value in params.items():
        transform = transforms.get(name)
        if transform is None:
            out[name] = value
        else:
            out[name] = transform.inv(value) if invert else transform(value)
    return out


def constrain_fn(
    model: Callable,
    model_args: tuple,
    model_kwargs: dict,
    params: dict,
    return_deterministic: bool = False,
) -> dict:
    """Map unconstrained values of latent sample and param sites onto their
    supports by running the model.

    Args:
        model: the model.
        model_args: positional arguments of the model.
        model_kwargs: keyword arguments of the model.
        params: unconstrained values by site name.
        return_deterministic: also return the model's deterministic sites.

    Returns:
        Constrained values by site name.

    >>> import probnn, probnn.distributions as dist
    >>> model = lambda: probnn.sample("s", dist.LogNormal(0.0, 1.0))
    >>> round(float(constrain_fn(model, (), {}, {"s": 0.0})["s"]), 4)
    1.0
    """

    def constrain_site(site):
        value = params.get(site["name"])
        if value is None or site["type"] not in ("sample", "param"):
            return value
        return site_transform(site)(value)

    # a fixed seed for sites left without a value (e.g. discrete sites that
    # inference sums out): they do not enter the returned values
    seeded = seed(model, rng_seed=0)
    model_trace = trace(substitute(seeded, substitute_fn=constrain_site)).get_trace(
        *model_args, **model_kwargs
    )
    out = {name: model_trace[name]["value"] for name in params}
    if return_deterministic:
        for name, site in model_trace.items():
            if site["type"] == "deterministic":
                out[name] = site["value"]
    return out


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
        model's trace. Sites marked ``infer={"enumerate": "parallel"}`` that
        ``params`` leaves out are summed out exactly (the trace is then the
        enumerated one).

    >>> import probnn, probnn.distributions as dist
    >>> def model(y):
    ...     mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    ...     probnn.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> log_joint, tr = log_density(model, (0.0,), {}, {"mu": 0.0})
    >>> round(float(log_joint), 4)  # 2 * log N(0 | 0, 1)
    -1.8379
    """
    return _log_joint(substitute(model, data=params), model_args, model_kwargs)


class _EnumProbe(Messenger):
    """Notice sites marked for enumeration that nothing else gave a value
    (and give them a placeholder so the probing run completes)."""

    def __init__(self, fn):
        self.found = False
        super().__init__(fn)

    def process_message(self, msg: Message) -> None:
        if msg["value"] is None and is_enumerated(msg):
            self.found = True
            fn = msg["fn"]
            first = fn.enumerate_support(expand=False)[0]
            msg["value"] = jnp.broadcast_to(
                first, fn.shape(msg["kwargs"]["sample_shape"])
            )


def _log_joint(fn: Callable, args: tuple, kwargs: dict):
    """``(log density, trace)`` of ``fn``; sites marked for enumeration and
    left without a value are summed out exactly (see
    :mod:`probnn.infer.enum`)."""
    from probnn.infer.enum import contract_trace

    probe = _EnumProbe(fn)
    model_trace = trace(probe).get_trace(*args, **kwargs)
    if probe.found:
        nesting = max(
            (
                -frame.dim
                for site in model_trace.values()
                for frame in site.get("cond_indep_stack", ())
            ),
            default=0,
        )
        enumerated = enum(fn, first_available_dim=-nesting - 1)
        model_trace = trace(enumerated).get_trace(*args, **kwargs)
        return contract_trace(model_trace), model_trace
    log_joint = jnp.zeros(())
    for site in model_trace.values():
        if site["type"] == "sample":
            log_joint = log_joint + jnp.sum(site_log_prob(site))
    return log_joint, model_trace


def potential_energy(
    model: Callable,
    model_args: tuple,
    model_kwargs: dict,
    params: dict,
    param_values: dict | None = None,
):
    """Negative log joint of ``model`` at latent values given in unconstrained
    space (``params``), including the log Jacobians of the maps onto the
    sites' supports: the potential energy of HMC and the objective of the
    Laplace approximation.

    Args:
        model: the model.
        model_args: positional arguments of the model.
        model_kwargs: keyword arguments of the model.
        params: unconstrained values of latent sample sites, by name.
        param_values: values of ``param`` sites, by name (optional).

    The model runs under a fixed seed, so subsampled plates see the same
    mini-batch on every call.

    >>> import probnn, probnn.distributions as dist
    >>> model = lambda: probnn.sample("s", dist.LogNormal(0.0, 1.0))
    >>> # at s = exp(0): -log N(0 | 0, 1), the Jacobian cancels 1 / s
    >>> round(float(potential_energy(model, (), {}, {"s": 0.0})), 4)
    0.9189
    """
    param_values = param_values or {}

    def is_given(site: Message) -> bool:
        return (
            site["type"] == "sample"
            and not site["is_observed"]
            and site["name"] in params
        )

    def value_of(site: Message):
        if site["type"] == "param":
            return param_values.get(site["name"])
        if not is_given(site):
            return None
        return site_transform(site)(params[site["name"]])

    seeded = seed(model, rng_seed=0)
    log_joint, model_trace = _log_joint(
        substitute(seeded, substitute_fn=value_of), model_args, model_kwargs
    )
    # the Jacobians come from the finished trace, not from value_of: inside a
    # scan body value_of runs in the loop's trace, and sites of a scan are
    # in the finished trace with their whole (constrained) series
    for site in model_trace.values():
        if not is_given(site):
            continue
        value = site["value"]
        given = params[site["name"]]
        if jnp.shape(given)[:1] != jnp.shape(value)[:1] and any(
            other.startswith(("_init", "_PREV_")) and other.endswith("/" + site["name"])
            for other in model_trace
        ):
            raise NotImplementedError(
                f"latent site {site['name']!r} is continuous and sits in a scan "
                "with enumerated sites, whose first steps run unrolled: "
                "potential_energy (and so MCMC) cannot yet pair its series with "
                "those steps. Sample it outside the scan (e.g. in a plate over "
                "time) and index it by the step"
            )
        log_det = site_transform(site).log_abs_det_jacobian(given, value)
        batch_ndim = jnp.ndim(value) - site["fn"].event_dim
        log_det = sum_rightmost(log_det, jnp.ndim(log_det) - batch_ndim)
        if site["scale"] is not None:
            log_det = site["scale"] * log_det
        log_joint = log_joint + jnp.sum(log_det)
    return -log_joint
