"""Log densities of models, and moving their sites between constrained and
unconstrained space."""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from probnn.distributions import constraints
from probnn.distributions.transforms import biject_to
from probnn.distributions.util import sum_rightmost
from probnn.enumeration import enum, is_enumerated
from probnn.handlers import block, is_typed_key, seed, substitute, trace
from probnn.infer.initialization import init_to_uniform
from probnn.runtime import Message, Messenger

__all__ = [
    "ModelInfo",
    "ParamInfo",
    "compute_log_probs",
    "constrain_fn",
    "get_potential_fn",
    "initialize_model",
    "log_density",
    "potential_energy",
    "site_log_prob",
    "site_transform",
    "transform_fn",
    "unconstrain_fn",
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
    if any(
        "_enumerate_dim" in (site.get("infer") or {}) for site in model_trace.values()
    ):
        # an enum handler inside fn enumerated sites already: sum them out
        # (adding up the enumerated values' densities would be no density)
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


# -- starting points for gradient-based samplers ---------------------------------------

ModelInfo = namedtuple(
    "ModelInfo", ["param_info", "potential_fn", "postprocess_fn", "model_trace"]
)
ModelInfo.__doc__ = """What :func:`initialize_model` finds: the starting point
(a :class:`ParamInfo`), the potential and postprocessing functions, and the
trace of the model at its initial values."""

ParamInfo = namedtuple("ParamInfo", ["z", "potential_energy", "z_grad"])
ParamInfo.__doc__ = """A point in unconstrained space by site name (``z``),
with the potential energy there and its gradient (shaped like ``z``)."""


def latent_site_names(model_trace) -> list:
    """The sites a gradient-based sampler moves: unobserved, continuous
    sample sites that are not summed out by enumeration. A discrete site
    that is not marked for enumeration is an error."""
    names = []
    for name, site in model_trace.items():
        if site["type"] != "sample" or site["is_observed"] or is_enumerated(site):
            continue
        if site["fn"].support.is_discrete:
            raise ValueError(
                f"sample site {name!r} is discrete; HMC and NUTS need it summed "
                "out: mark it infer={'enumerate': 'parallel'} (or use "
                "config_enumerate)"
            )
        names.append(name)
    return names


def unconstrained_point(model_trace, names) -> dict:
    """The values of the sites ``names`` of a trace, in unconstrained space."""
    return {
        n: site_transform(model_trace[n]).inv(model_trace[n]["value"]) for n in names
    }


def strategy_point(model, strategy, names, model_args, model_kwargs):
    """A function of a random key: the unconstrained point the initialization
    ``strategy`` picks for the sites ``names``."""

    def propose(key):
        seeded = seed(model, rng_seed=key)
        with block():
            model_trace = trace(substitute(seeded, substitute_fn=strategy)).get_trace(
                *model_args, **model_kwargs
            )
        return unconstrained_point(model_trace, names)

    return propose


def value_and_grad_fn(fn: Callable, forward_mode: bool = False) -> Callable:
    """``x -> (fn(x), gradient)`` by reverse mode, or by forward mode (which
    also differentiates through ``while_loop``)."""
    if not forward_mode:
        return jax.value_and_grad(fn)

    def value_and_grad(x):
        return fn(x), jax.jacfwd(fn)(x)

    return value_and_grad


def search_valid_point(key, propose, evaluate, prototype, max_tries: int = 100):
    """Draw points with ``propose(key)`` until ``evaluate(point)`` says they
    are usable, at most ``max_tries`` times, inside one ``while_loop``.

    ``evaluate`` returns ``(value, grad, ok)``; ``prototype`` is a point of
    the right structure. Returns ``(point, value, grad, ok)`` of the last
    attempt."""

    def not_done(carry):
        _, (_, _, _, ok), count = carry
        return (count == 0) | (~ok & (count < max_tries))

    def retry(carry):
        key, _, count = carry
        key, sub = jax.random.split(key)
        point = propose(sub)
        return key, (point, *evaluate(point)), count + 1

    zeros = jax.tree.map(jnp.zeros_like, prototype)
    dtype = jnp.result_type(*jax.tree.leaves(prototype), float)
    start = (key, (zeros, jnp.zeros((), dtype), zeros, jnp.zeros((), bool)), 0)
    _, result, _ = jax.lax.while_loop(not_done, retry, start)
    return result


def warn_missing_plates(model_trace: dict, stacklevel: int = 3) -> None:
    """Warn about each of :func:`missing_plates`, as NumPyro's MCMC set-up
    does."""
    import warnings

    for message in missing_plates(model_trace):
        warnings.warn(message, UserWarning, stacklevel=stacklevel)


def missing_plates(model_trace: dict) -> list:
    """Messages naming the batch dims of sample sites that no plate
    declares, where the site sits in some plate (a site outside every plate
    may broadcast freely). The leading time dim of a site stacked by
    ``scan`` is not a missing plate."""
    messages = []
    for name, site in model_trace.items():
        if site["type"] != "sample":
            continue
        frames = site.get("cond_indep_stack") or ()
        if not frames:
            continue
        fn = site["fn"]
        event_ndim = len(getattr(fn, "event_shape", ()))
        value_shape = jnp.shape(site["value"])
        batch = jnp.broadcast_shapes(
            tuple(getattr(fn, "batch_shape", ())),
            value_shape[: len(value_shape) - event_ndim],
        )
        declared = {frame.dim for frame in frames}
        for dim in range(-len(batch), 0):
            if batch[dim] == 1 or dim in declared:
                continue
            if dim == -len(batch) and site.get("_control_flow_done"):
                continue  # the steps of a scan
            messages.append(
                f"Missing a plate statement for batch dim {dim} (size "
                f"{batch[dim]}) of site {name!r}, which sits in plates "
                f"{sorted(frame.name for frame in frames)}: declare a plate "
                "for that dim"
            )
    return messages


def initialize_model(
    rng_key,
    model: Callable,
    *,
    init_strategy: Callable = init_to_uniform,
    dynamic_args: bool = False,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    forward_mode_differentiation: bool = False,
    validate_grad: bool = True,
) -> ModelInfo:
    """Find a starting point for a gradient-based sampler, with the functions
    it needs: the potential energy and the map back to constrained values.

    Args:
        rng_key: a random key; a batch of keys (leading axis) gives a batch
            of starting points.
        model: the model.
        init_strategy: where the latent sites start (see
            :mod:`probnn.infer.initialization`); points whose potential (or
            gradient, with ``validate_grad``) is not finite are redrawn, up
            to 100 times.
        dynamic_args: return ``potential_fn`` and ``postprocess_fn`` as
            functions of ``(*model_args, **model_kwargs)`` that return the
            functions of the latent values, so one can change the data.
        model_args: positional arguments of the model.
        model_kwargs: keyword arguments of the model.
        forward_mode_differentiation: compute the initial gradient by forward
            mode.
        validate_grad: require a finite gradient at the starting point.

    Returns:
        A :class:`ModelInfo` ``(param_info, potential_fn, postprocess_fn,
        model_trace)``: ``param_info`` is a :class:`ParamInfo` of
        unconstrained values by site name, ``potential_fn`` maps such a dict
        to the potential energy, ``postprocess_fn`` maps it to constrained
        values together with the deterministic sites, and ``model_trace`` is
        the model's trace at the strategy's (first) values.

    >>> import jax, probnn, probnn.distributions as dist
    >>> def model():
    ...     probnn.sample("s", dist.LogNormal(0.0, 1.0))
    >>> info = initialize_model(jax.random.PRNGKey(0), model)
    >>> sorted(info.param_info.z)
    ['s']
    >>> z = {"s": 0.0}
    >>> round(float(info.potential_fn(z)), 4), float(info.postprocess_fn(z)["s"])
    (0.9189, 1.0)
    """
    model_kwargs = {} if model_kwargs is None else model_kwargs
    keys = jnp.asarray(rng_key)
    batch_shape = keys.shape if is_typed_key(keys) else keys.shape[:-1]
    if len(batch_shape) > 1:
        raise ValueError(
            f"initialize_model: rng_key must be one key or a batch of keys along "
            f"one axis, got shape {keys.shape}"
        )
    first_key = keys[0] if batch_shape else keys
    model_trace = trace(
        substitute(seed(model, first_key), substitute_fn=init_strategy)
    ).get_trace(*model_args, **model_kwargs)
    warn_missing_plates(model_trace)
    names = latent_site_names(model_trace)
    # param sites (e.g. network weights) keep the values the trace drew
    param_values = {
        name: site["value"]
        for name, site in model_trace.items()
        if site["type"] == "param"
    }
    fixed = substitute(model, data=param_values) if param_values else model

    def potential_of(args, kwargs):
        def potential_fn(params):
            return potential_energy(fixed, args, kwargs, params)

        return potential_fn

    def postprocess_of(args, kwargs):
        def postprocess_fn(params):
            return constrain_fn(fixed, args, kwargs, params, return_deterministic=True)

        return postprocess_fn

    potential = potential_of(model_args, model_kwargs)
    value_and_grad = value_and_grad_fn(potential, forward_mode_differentiation)

    def evaluate(params):
        value, grad = value_and_grad(params)
        ok = jnp.isfinite(value)
        if validate_grad:
            ok = ok & jnp.all(jnp.isfinite(ravel_pytree(grad)[0]))
        return value, grad, ok

    propose = strategy_point(fixed, init_strategy, names, model_args, model_kwargs)
    prototype = unconstrained_point(model_trace, names)

    def search(key):
        return search_valid_point(key, propose, evaluate, prototype)

    if batch_shape:
        search = jax.vmap(search)
    z, value, grad, ok = search(keys)
    if not isinstance(ok, jax.core.Tracer) and not bool(jnp.all(ok)):
        raise RuntimeError(
            "initialize_model: found no initial point with a finite potential "
            "energy" + (" and gradient" if validate_grad else "") + " after 100 "
            "attempts; check the model and its data, or the init strategy"
        )
    if dynamic_args:

        def potential_fn(*args, **kwargs):
            return potential_of(args, kwargs)

        def postprocess_fn(*args, **kwargs):
            return postprocess_of(args, kwargs)

    else:
        potential_fn = potential
        postprocess_fn = postprocess_of(model_args, model_kwargs)
    return ModelInfo(
        ParamInfo(z, value, grad), potential_fn, postprocess_fn, model_trace
    )


def get_potential_fn(
    model: Callable,
    inv_transforms: dict,
    *,
    enum: bool = False,
    replay_model: bool = False,
    dynamic_args: bool = False,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
):
    """``(potential_fn, postprocess_fn)`` of ``model`` (NumPyro's function of
    that name).

    ``potential_fn`` maps unconstrained latent values (a dict by site name)
    to the potential energy, :func:`potential_energy`; ``postprocess_fn``
    maps them to constrained values: by ``inv_transforms`` (a dict of
    bijections by site name, as :func:`transform_fn` takes them), or, with
    ``replay_model``, by running the model, which also gives its
    deterministic sites (:func:`constrain_fn`). With ``dynamic_args`` both
    are functions of ``(*model_args, **model_kwargs)`` returning those
    functions. Sites marked for enumeration are summed out whatever
    ``enum`` says (the argument is accepted for NumPyro's signature).

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.distributions.transforms import ExpTransform
    >>> model = lambda: probnn.sample("s", dist.LogNormal(0.0, 1.0))
    >>> potential_fn, postprocess_fn = get_potential_fn(model, {"s": ExpTransform()})
    >>> z = {"s": 0.0}
    >>> round(float(potential_fn(z)), 4), float(postprocess_fn(z)["s"])
    (0.9189, 1.0)
    """
    del enum  # enumerated sites are always summed out
    if not isinstance(inv_transforms, dict):
        raise TypeError(
            "get_potential_fn: inv_transforms must be a dict of bijections by "
            f"site name, got {type(inv_transforms).__name__}"
        )

    def potential_of(args, kwargs):
        return functools.partial(potential_energy, model, args, kwargs)

    def postprocess_of(args, kwargs):
        if replay_model:
            return functools.partial(
                constrain_fn, model, args, kwargs, return_deterministic=True
            )
        return functools.partial(transform_fn, inv_transforms)

    if dynamic_args:
        return (
            lambda *args, **kwargs: potential_of(args, kwargs),
            lambda *args, **kwargs: postprocess_of(args, kwargs),
        )
    model_kwargs = {} if model_kwargs is None else model_kwargs
    return potential_of(model_args, model_kwargs), postprocess_of(
        model_args, model_kwargs
    )


def compute_log_probs(
    model: Callable,
    model_args: tuple,
    model_kwargs: dict,
    params: dict,
    sum_log_prob: bool = True,
) -> tuple:
    """``(log densities by sample site, trace)`` of ``model`` run with
    ``params`` substituted (NumPyro's function of that name): each site's
    scaled, masked log density, summed over its dims unless
    ``sum_log_prob=False``.

    >>> import probnn, probnn.distributions as dist
    >>> model = lambda: probnn.sample("x", dist.Normal(0.0, 1.0))
    >>> logs, tr = compute_log_probs(model, (), {}, {"x": 0.0})
    >>> round(float(logs["x"]), 4)
    -0.9189
    """
    model_trace = trace(substitute(model, data=params)).get_trace(
        *model_args, **model_kwargs
    )
    logs = {}
    for name, site in model_trace.items():
        if site["type"] == "sample":
            log_prob = site_log_prob(site)
            logs[name] = jnp.sum(log_prob) if sum_log_prob else log_prob
    return logs, model_trace


def unconstrain_fn(
    model: Callable, model_args: tuple, model_kwargs: dict, params: dict
) -> dict:
    """Map constrained values of latent sample and param sites to
    unconstrained space, the inverse of :func:`constrain_fn`.

    >>> import probnn, probnn.distributions as dist
    >>> model = lambda: probnn.sample("s", dist.LogNormal(0.0, 1.0))
    >>> float(unconstrain_fn(model, (), {}, {"s": 1.0})["s"])
    0.0
    """
    model_trace = trace(substitute(seed(model, rng_seed=0), data=params)).get_trace(
        *model_args, **model_kwargs
    )
    transforms = {}
    for name in params:
        site = model_trace.get(name)
        if site is None or site["type"] not in ("sample", "param"):
            raise ValueError(
                f"unconstrain_fn: {name!r} is not a sample or param site of the "
                f"model (its sites: {sorted(model_trace)})"
            )
        transforms[name] = site_transform(site)
    return transform_fn(transforms, params, invert=True)


def __getattr__(name):
    # NumPyro defines Predictive and log_likelihood in numpyro.infer.util;
    # probnn's live in probnn.infer.predictive, which imports this module
    if name in ("Predictive", "log_likelihood"):
        from probnn.infer import predictive

        return getattr(predictive, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
