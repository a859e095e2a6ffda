"""``module`` and ``random_module``: networks as param / sample sites.

One code path serves every kind of network through a :class:`Bridge`
(stax, Flax Linen, Flax NNX). The network's parameters are one param site
``name$params`` holding the network's own nested structure, its non-parameter
state (BatchNorm statistics) one mutable site ``name$state``. A network is
one network wherever it is called, plates included (a param site ignores
plates, as in NumPyro); ``members=`` names the plates whose members each get
their own parameters (leading dims in the order of the plates' dims,
leftmost first), and the network is vmapped over them.
"""

from __future__ import annotations

import fnmatch
import math
import weakref
from collections.abc import Callable

import jax
import jax.numpy as jnp

from probnn.nn._bridge import Bridge
from probnn.nn.eqx import is_equinox
from probnn.nn.stax import StaxBridge, is_stax
from probnn.primitives import (
    _check_name,
    deterministic,
    mutable,
    param,
    plate,
    prng_key,
    sample,
)
from probnn.runtime import _STACK

__all__ = ["bridge_for", "module", "param_paths", "random_module"]

_BRIDGES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BRIDGES_BY_ID: dict = {}


def _make_bridge(name, nn, input_shape, args, kwargs) -> Bridge:
    if is_stax(nn):
        return StaxBridge(name, nn, input_shape, args, kwargs)
    if is_equinox(nn):
        from probnn.nn.eqx import EqxBridge

        return EqxBridge(name, nn, input_shape, args, kwargs)
    import flax.linen
    import flax.nnx

    if isinstance(nn, flax.linen.Module):
        from probnn.nn.linen import LinenBridge

        return LinenBridge(name, nn, input_shape, args, kwargs)
    if isinstance(nn, flax.nnx.Module) or (
        callable(nn) and not isinstance(nn, flax.linen.Module)
    ):
        # an eager NNX module, or a factory rngs -> NNX module
        from probnn.nn.nnx import NNXBridge

        return NNXBridge(name, nn, input_shape, args, kwargs)
    raise TypeError(
        f"module {name!r}: expected a stax (init_fn, apply_fn) pair, a "
        f"flax.linen.Module, a flax.nnx.Module or an equinox.Module, got "
        f"{type(nn).__name__}"
    )


def bridge_for(name, nn, input_shape=None, args=(), kwargs=None) -> Bridge:
    """The (cached) bridge of a network: created once per network object, so
    an NNX module is split once and a Linen module's random streams are
    discovered once."""
    kwargs = kwargs or {}
    try:
        # by network, then by site name: equal Linen modules (dataclasses)
        # registered under several names keep one bridge each
        by_name = _BRIDGES.setdefault(nn, {})
    except TypeError:  # not weak-referenceable (a stax tuple)
        by_name = None
        cached = _BRIDGES_BY_ID.get((name, id(nn)))
        if cached is not None and cached.nn is not nn:
            cached = None
    else:
        cached = by_name.get(name)
    if cached is not None:
        check = getattr(cached, "check_same_graph", None)
        if check is not None:
            check(nn)
        return cached
    bridge = _make_bridge(name, nn, input_shape, args, kwargs)
    if by_name is not None:
        by_name[name] = bridge
    else:
        _BRIDGES_BY_ID[(name, id(nn))] = bridge
    return bridge


# -- plates: ensembles ---------------------------------------------------------


def _member_plates(name: str, members) -> list[plate]:
    """The active plates named by ``members`` (a plate name or a sequence of
    them; None: none), outermost dim (most negative) first."""
    if members is None:
        return []
    if isinstance(members, str):
        wanted = (members,)
    elif isinstance(members, list | tuple):
        wanted = tuple(members)
    else:
        wanted = ()
    if not wanted or not all(isinstance(m, str) for m in wanted):
        raise TypeError(
            f"module {name!r}: members= must be a plate name or a sequence of "
            f"plate names, got {members!r}"
        )
    active = {h.name: h for h in _STACK if isinstance(h, plate)}
    missing = [m for m in wanted if m not in active]
    if missing:
        raise ValueError(
            f"module {name!r}: members= names plate(s) {missing} that are not "
            f"active here; the active plates are {sorted(active)}"
        )
    return sorted((active[m] for m in dict.fromkeys(wanted)), key=lambda p: p.dim)


def _member_shape(plates) -> tuple[int, ...]:
    return tuple(p.subsample_size for p in plates)


def _vmap_members(fn, ndim: int):
    """``fn(params, state, member_index, ...)`` vmapped over ``ndim`` leading
    member dims of params, state and the index."""
    for _ in range(ndim):
        fn = jax.vmap(fn, in_axes=(0, 0, 0))
    return fn


def _init_members(bridge: Bridge, key, shape: tuple[int, ...]):
    if not shape:
        return bridge.init(key)
    keys = jax.random.split(key, math.prod(shape)).reshape(shape + key.shape[-1:])
    init = bridge.init
    for _ in shape:
        init = jax.vmap(init)
    return init(keys)


def _apply_members(bridge, params, state, shape, args, kwargs):
    """One forward pass per plate member (or just one outside plates)."""
    key_cache = {}

    def base_key():
        if "key" not in key_cache:
            key_cache["key"] = prng_key()
        return key_cache["key"]

    if not shape:
        return bridge.apply(params, state, base_key, args, kwargs)

    def one(member_params, member_state, index):
        def key_fn():
            return jax.random.fold_in(base_key(), index)

        return bridge.apply(member_params, member_state, key_fn, args, kwargs)

    index = jnp.arange(math.prod(shape)).reshape(shape)
    return _vmap_members(one, len(shape))(params, state, index)


# -- one network per name -------------------------------------------------------


def _run_record(handler, kind: str) -> dict:
    """A record kept for the current run of the model that a ``trace``
    handler records (a new run starts a new record)."""
    held = getattr(handler, "_module_records", None)
    if held is None or held[0] is not handler.trace:
        held = handler._module_records = (handler.trace, {})
    return held[1].setdefault(kind, {})


def _intermediates_site(name: str) -> str:
    """``name$intermediates`` for a network's first call in a traced run,
    ``name$intermediates_1``, ... for later calls."""
    from probnn.handlers import trace

    calls = 0
    for handler in _STACK:
        if isinstance(handler, trace):
            counts = _run_record(handler, "calls")
            calls = max(calls, counts.get(name, 0))
    for handler in _STACK:
        if isinstance(handler, trace):
            _run_record(handler, "calls")[name] = calls + 1
    return f"{name}$intermediates" + (f"_{calls}" if calls else "")


def _claim_name(name: str, bridge: Bridge) -> None:
    """Raise when another network already holds ``name`` in the model run
    that the active ``trace`` handlers record (the same network met again
    shares its parameters, by design)."""
    from probnn.handlers import trace

    for handler in _STACK:
        if not isinstance(handler, trace):
            continue
        owner = _run_record(handler, "networks").setdefault(name, bridge)
        if owner is not bridge:
            raise ValueError(
                f"module {name!r}: two different networks are registered under "
                f"one name in one model ({owner.kind} {type(owner.nn).__name__} "
                f"and {bridge.kind} {type(bridge.nn).__name__}); they would "
                "share one parameter site. Give each network its own name (the "
                "same network object called twice shares its weights by design)"
            )


# -- module ---------------------------------------------------------------------


def module(name: str, nn, input_shape=None, *args, members=None, **kwargs) -> Callable:
    """Register a network's parameters as the param site ``name + "$params"``.

    Args:
        name: name of the module.
        nn: a stax ``(init_fn, apply_fn)`` pair, a ``flax.linen.Module``, an
            eager ``flax.nnx.Module`` instance, a function ``rngs -> NNX
            module`` (defined anywhere; with ``members=`` each member is
            built from its own key), or an ``equinox.Module`` (calls that
            need a key pass ``key=True``; stateful Equinox layers go through
            ``probnn.contrib.module.eqx_module``).
        input_shape: input shape used to initialise stax and Linen networks.
        *args: example inputs for initialisation (Linen), in place of
            ``input_shape``.
        members: the name of an enclosing plate (or a sequence of names)
            whose members each get their own parameters, initialised from
            their own keys: ``with plate("members", 8): module(...,
            members="members")`` is a deep ensemble. By default the network
            is one network shared by every plate member, as a param site is
            in NumPyro (a network called next to the likelihood inside a
            data plate is not one network per data point). An eager NNX
            module cannot be re-initialised per member: pass a function
            ``rngs -> module`` instead.
        **kwargs: keyword arguments for Linen initialisation (e.g.
            ``train=False``).

    Returns:
        The network with its parameters bound: call it on inputs (call-time
        keywords such as ``train=`` or ``deterministic=`` pass through).
        Non-parameter state (BatchNorm statistics, other Flax collections or
        NNX variables) lives in the mutable site ``name + "$state"``; random
        streams (dropout) draw from the enclosing ``seed`` on every call.
        With ``members=`` the outputs gain the member plates' sizes as
        leading dims (inputs are shared).

    >>> import jax.numpy as jnp, probnn
    >>> from jax.example_libraries import stax
    >>> def model(x):
    ...     net = probnn.module("net", stax.Dense(2), input_shape=(-1, 3))
    ...     return net(x)
    >>> probnn.handlers.seed(model, rng_seed=0)(jnp.ones((5, 3))).shape
    (5, 2)
    """
    _check_name(name, "module")
    bridge = bridge_for(name, nn, input_shape, args, kwargs)
    _claim_name(name, bridge)
    shape = _member_shape(_member_plates(name, members))
    if shape and getattr(bridge, "factory", False) is None:
        raise ValueError(
            f"module {name!r}: an eager {bridge.kind} module has one set of "
            f"initial parameters, so the members of {members!r} would all start "
            "equal; for NNX pass a function rngs -> module (e.g. lambda rngs: "
            "MLP(rngs=rngs)) so that each member is initialised from its own key"
        )
    initial = {}

    def init_params(key):
        initial["params"], initial["state"] = _init_members(bridge, key, shape)
        return initial["params"]

    params = param(f"{name}$params", init_params)
    state = _state_site(bridge, name, shape, initial)

    return _bound(bridge, params, state, shape)


def _bound(bridge, params, state, shape) -> Callable:
    """The network with its parameters (and state site) bound."""

    def network(*call_args, **call_kwargs):
        try:
            output, new_state, intermediates = _apply_members(
                bridge,
                params,
                {} if state is None else state,
                shape,
                call_args,
                call_kwargs,
            )
        except Exception as error:
            located = _located(error, bridge, params, call_args)
            if located is error:
                raise
            raise located from error
        if state is not None:
            state.update(new_state)
        if jax.tree.leaves(intermediates):
            # values the network sowed for inspection: a deterministic site
            deterministic(_intermediates_site(bridge.name), intermediates)
        return output

    return network


def _located(error: Exception, bridge: Bridge, params, call_args) -> Exception:
    """``error`` from a network's forward pass, restated with the site, the
    input shapes and the parameter shapes by path (errors of JAX's tracing
    machinery, and errors that already name the site, pass unchanged)."""
    shape_like = isinstance(error, TypeError | ValueError) or type(
        error
    ).__module__.startswith("flax")
    if (
        not shape_like
        or isinstance(error, jax.errors.ConcretizationTypeError)
        or f"{bridge.name!r}" in str(error)
    ):
        return error
    inputs = [tuple(jnp.shape(a)) for a in jax.tree.leaves(call_args)]
    try:
        shapes = {path: tuple(jnp.shape(v)) for path, v in param_paths(params).items()}
    except Exception:  # parameters of an unexpected structure
        shapes = {}
    listed = ", ".join(f"{path} {shape}" for path, shape in shapes.items())
    kind = TypeError if isinstance(error, TypeError) else ValueError
    return kind(
        f"module {bridge.name!r} (site {bridge.name}$params): the {bridge.kind} "
        f"network failed on inputs of shapes {inputs}"
        + (f" with parameters {listed}" if listed else "")
        + f": {type(error).__name__}: {error}"
    )


def _state_site(bridge, name, shape, initial):
    """The mutable site of a network's non-parameter state (None without)."""
    if "state" in initial:
        init_state = initial["state"]
    elif getattr(bridge, "_has_state", None) is False:
        return None
    else:
        # params came from elsewhere (SVI, Predictive): the shapes of a fresh
        # initialisation are the state's initial value
        init_state = _init_members(bridge, jax.random.PRNGKey(0), shape)[1]
    bridge._has_state = bool(jax.tree.leaves(init_state))
    if not bridge._has_state:
        return None
    return mutable(f"{name}$state", dict(init_state))


# -- random_module ------------------------------------------------------------


def _path_name(path) -> str:
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return ".".join(parts)


def param_paths(params) -> dict[str, jax.Array]:
    """Leaves of a parameter pytree by dotted path (``"Dense_0.kernel"``)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {_path_name(path): leaf for path, leaf in leaves}


def _resolve_priors(name, paths: dict, prior, strict: bool) -> dict:
    """Map each parameter path to its prior distribution (or None)."""
    if callable(prior) and not hasattr(prior, "log_prob"):
        chosen = {path: prior(path, jnp.shape(leaf)) for path, leaf in paths.items()}
    elif isinstance(prior, dict):
        chosen = dict.fromkeys(paths)
        for key, distribution in prior.items():
            matched = [
                path for path in paths if path == key or fnmatch.fnmatchcase(path, key)
            ]
            if not matched:
                raise ValueError(
                    f"random_module {name!r}: prior key {key!r} matches no "
                    f"parameter; the parameter paths are {sorted(paths)}"
                )
            for path in matched:
                if chosen[path] is None:
                    chosen[path] = distribution
    elif hasattr(prior, "log_prob"):
        chosen = dict.fromkeys(paths, prior)
    else:
        raise TypeError(
            f"random_module {name!r}: prior must be a distribution, a dict of "
            f"them or a callable (path, shape) -> distribution, got "
            f"{type(prior).__name__}"
        )
    uncovered = sorted(path for path, d in chosen.items() if d is None)
    if strict and uncovered:
        raise ValueError(
            f"random_module {name!r}: strict=True and no prior covers {uncovered}"
        )
    return chosen


def random_module(
    name: str, nn, prior, input_shape=None, *args, strict: bool = False, **kwargs
) -> Callable:
    """A Bayesian network: its parameters are sample sites ``name/<path>``.

    Args:
        name: name of the module.
        nn: a stax pair, a ``flax.linen.Module`` or an eager ``flax.nnx.Module``.
        prior: a distribution for every parameter; a dict from parameter path
            (``"Dense_0.kernel"``) or glob pattern (``"*.bias"``) to
            distribution; or a callable ``(path, shape) -> distribution or
            None``. A dict key that matches no parameter raises an error listing
            the valid paths.
        input_shape: as in :func:`module`.
        *args: as in :func:`module`.
        strict: raise when a parameter has no prior; otherwise such
            parameters stay trainable in the param site ``name + "$params"``.
        **kwargs: as in :func:`module`.

    Returns:
        The network with sampled parameters bound.

    >>> import jax.numpy as jnp, probnn, probnn.distributions as dist
    >>> from jax.example_libraries import stax
    >>> def model(x):
    ...     net = probnn.random_module("net", stax.Dense(1), dist.Normal(0.0, 1.0),
    ...                                input_shape=(-1, 2))
    ...     return net(x)
    >>> tr = probnn.handlers.trace(probnn.handlers.seed(model, 0)).get_trace(
    ...     jnp.ones((3, 2)))
    >>> [n for n, s in tr.items() if s["type"] == "sample"]
    ['net/0', 'net/1']
    """
    _check_name(name, "random_module")
    bridge = bridge_for(name, nn, input_shape, args, kwargs)
    _claim_name(name, bridge)
    plates = [h for h in _STACK if isinstance(h, plate)]
    shape = _member_shape(sorted(plates, key=lambda p: p.dim))
    # the structure and shapes of one member's parameters, without running
    # the initialisation for real
    template, template_state = jax.eval_shape(bridge.init, jax.random.PRNGKey(0))
    paths = param_paths(template)
    priors = _resolve_priors(name, paths, prior, strict)
    initial = {}

    def init_rest(key):
        params, initial["state"] = _init_members(bridge, key, shape)
        full = param_paths(params)
        return {path: full[path] for path, d in priors.items() if d is None}

    rest = {}
    if any(d is None for d in priors.values()):
        rest = param(f"{name}$params", init_rest)
    # batch shape of a sample inside the plates: plate sizes at their dims
    rank = max((-p.dim for p in plates), default=0)
    batch = [1] * rank
    for p in plates:
        batch[rank + p.dim] = p.subsample_size
    leaves = {}
    for path, leaf in paths.items():
        distribution = priors[path]
        if distribution is None:
            leaves[path] = rest[path]
            continue
        fn = distribution.expand(tuple(batch) + leaf.shape).to_event(len(leaf.shape))
        value = sample(f"{name}/{path}", fn)
        leaves[path] = jnp.reshape(value, shape + leaf.shape)
    treedef = jax.tree.structure(template)
    params = jax.tree.unflatten(treedef, [leaves[path] for path in paths])
    state = _state_site(bridge, name, shape, initial) if template_state else None

    return _bound(bridge, params, state, shape)
