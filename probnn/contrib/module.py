"""Neural networks in models with NumPyro's ``numpyro.contrib.module`` API.

A NumPyro program that declares its networks with ``flax_module``,
``random_flax_module``, ``nnx_module``, ``random_nnx_module``, ``eqx_module``
or ``random_eqx_module`` runs on probnn once the import reads
``from probnn.contrib.module import ...``. The site names, the values stored
at them and the call conventions are NumPyro's:

- a network's trainable parameters are one ``param`` site ``name + "$params"``
  (Linen and NNX: the nested dict of parameters; Equinox: the module's
  inexact arrays, as returned by ``eqx.partition``);
- non-parameter state is one ``mutable`` site ``name + "$state"``: the Linen
  collections listed in ``mutable=`` (``{"batch_stats": ...}``) or every NNX
  variable that is not an ``nnx.Param`` (``{"state": ...}``), updated by each
  forward pass and carried by SVI from step to step;
- the ``random_*`` variants draw every parameter that ``prior`` covers at a
  sample site named after its path (``name/Dense_0.kernel``, with
  ``scope_divider`` between the two parts for NNX and Equinox); the param
  site keeps the remaining parameters and holds a :class:`ParamShape` in
  place of each drawn one, so optimisers leave them alone.

:func:`probnn.module` and :func:`probnn.random_module` are probnn's own,
broader versions of the same idea (stax networks, plate ensembles, glob
patterns in priors).

Departures from NumPyro, all where NumPyro fails or stays silent: bad
arguments (a prior key that names no parameter, a prior that is not a
distribution, ``mutable=`` naming a collection the module lacks, a Linen
network that needs a key it was not given) raise errors naming the site; a
Linen network declared with ``apply_rng=`` and called without ``rngs=`` draws
its keys from the enclosing ``seed``, fresh on every call; nothing the caller
passes in (modules, parameter dicts given to ``substitute``) is changed.
Smaller differences: NNX RNG streams are kept in the state site as raw key
data (``jax.random.key_data``), not typed keys; ``random_eqx_module``'s param
site holds :class:`ParamShape` entries for the drawn parameters like the
other two (NumPyro keeps the initial arrays there); a callable ``prior`` may
return None to keep a parameter trainable.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from probnn import handlers
from probnn.primitives import mutable as mutable_site
from probnn.primitives import param, prng_key, sample

__all__ = [
    "ParamShape",
    "eqx_from_dict",
    "eqx_module",
    "eqx_to_dict",
    "flax_module",
    "nnx_module",
    "random_eqx_module",
    "random_flax_module",
    "random_nnx_module",
]


class ParamShape(NamedTuple):
    """The entry a ``random_*`` module leaves at its param site in place of a
    parameter that the prior draws: only the parameter's shape.

    It is a pytree node without leaves, so optimisers and ``jax.tree``
    functions pass over it while the shape survives SVI's updates.

    >>> import jax
    >>> jax.tree.leaves({"w": ParamShape((3, 2)), "b": 1.0})
    [1.0]
    """

    shape: tuple


jax.tree_util.register_pytree_node(
    ParamShape, lambda node: ((), node.shape), lambda shape, _: ParamShape(shape)
)


# -- small helpers ---------------------------------------------------------------


def _check_name(name, function: str) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"{function}: name must be a non-empty string, got {name!r} "
            f"of type {type(name).__name__}"
        )


def _is_distribution(obj) -> bool:
    return all(
        hasattr(obj, attr)
        for attr in ("sample", "log_prob", "expand", "to_event", "event_shape")
    )


def _shape_of(leaf) -> tuple:
    if isinstance(leaf, ParamShape):
        return tuple(leaf.shape)
    return tuple(jnp.shape(leaf))


def _leaves(tree: Mapping, prefix: tuple = ()) -> dict[tuple, Any]:
    """Leaves of a nested dict by key path; a ParamShape counts as a leaf."""
    found = {}
    for key, item in tree.items():
        path = prefix + (key,)
        if isinstance(item, Mapping):
            found.update(_leaves(item, path))
        else:
            found[path] = item
    return found


def _groups(tree: Mapping, prefix: tuple = ()) -> list[tuple]:
    """Key paths of the nested dicts inside ``tree``."""
    found = []
    for key, item in tree.items():
        if isinstance(item, Mapping):
            found.append(prefix + (key,))
            found.extend(_groups(item, prefix + (key,)))
    return found


def _dotted(path: tuple, prefix: str = "") -> str:
    parts = [str(key) for key in path]
    return ".".join([prefix, *parts] if prefix else parts)


def _rebuild(tree: Mapping, fn: Callable, prefix: tuple = ()) -> dict:
    """A new nested dict like ``tree`` with leaf ``x`` at ``path`` replaced
    by ``fn(path, x)``; ``tree`` is not changed."""
    return {
        key: (
            _rebuild(item, fn, prefix + (key,))
            if isinstance(item, Mapping)
            else fn(prefix + (key,), item)
        )
        for key, item in tree.items()
    }


def _set_leaf(tree, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def _canonical(tree):
    """``tree`` with its dicts in JAX's (sorted-key) order, the order SVI
    hands parameters back in, so sites keep their order between steps."""
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, leaves)


def _param_with_key(name: str, make: Callable):
    """``param(name, make)``: ``make(key)`` builds the initial value with a
    key from the enclosing ``seed``, or from key 0 where no ``seed`` reaches
    the site (NumPyro's behaviour for module initialisation)."""
    called = []

    def init(key):
        called.append(True)
        return make(key)

    try:
        return param(name, init)
    except ValueError:
        if called:  # the error came from the initialisation itself
            raise
    with handlers.seed(rng_seed=0):
        return param(name, init)


# -- priors ---------------------------------------------------------------------


def _resolve_prior(where: str, leaves: dict, groups, prior, prefix: str = "") -> dict:
    """The distribution (or None: not drawn) of each leaf path."""
    names = {path: _dotted(path, prefix) for path in leaves}
    if _is_distribution(prior):
        return dict.fromkeys(leaves, prior)
    if isinstance(prior, Mapping):
        known = set(names.values())
        group_names = {_dotted(path, prefix) for path in groups}
        for key, distribution in prior.items():
            if key in group_names:
                inside = sorted(n for n in known if n.startswith(f"{key}."))
                raise ValueError(
                    f"{where}: prior key {key!r} names a group of parameters; "
                    f"give each parameter its own key: {inside}"
                )
            if key not in known:
                raise ValueError(
                    f"{where}: prior key {key!r} matches no parameter; the "
                    f"parameters are {sorted(known)}"
                )
            if not _is_distribution(distribution):
                raise TypeError(
                    f"{where}: prior[{key!r}] must be a distribution, got "
                    f"{type(distribution).__name__}"
                )
        return {path: prior.get(names[path]) for path in leaves}
    if callable(prior):
        chosen = {}
        for path, leaf in leaves.items():
            shape = _shape_of(leaf)
            distribution = prior(names[path], shape)
            if distribution is not None and not _is_distribution(distribution):
                raise TypeError(
                    f"{where}: prior({names[path]!r}, {shape}) returned "
                    f"{type(distribution).__name__}; expected a distribution "
                    "(or None to keep the parameter trainable)"
                )
            chosen[path] = distribution
        return chosen
    raise TypeError(
        f"{where}: prior must be a distribution, a dict from parameter name "
        "to distribution or a callable (name, shape) -> distribution; got "
        f"{type(prior).__name__}"
    )


def _draw(where: str, site: str, shape: tuple, distribution):
    """Sample site ``site`` for a parameter of ``shape``: the prior broadcast
    to the parameter's shape, all of it one event."""
    event_shape = tuple(distribution.event_shape)
    batch_ndim = len(shape) - len(event_shape)
    if batch_ndim < 0 or tuple(shape[batch_ndim:]) != event_shape:
        raise ValueError(
            f"{where}: the prior of parameter {site!r} has event shape "
            f"{event_shape}, which does not fit the parameter's shape {shape}"
        )
    try:
        fn = distribution.expand(tuple(shape[:batch_ndim]))
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{where}: the prior of parameter {site!r} (batch shape "
            f"{tuple(distribution.batch_shape)}) cannot be broadcast to the "
            f"parameter's shape {shape}: {error}"
        ) from error
    return sample(site, fn.to_event())


def _mark(params: Mapping, priors: dict) -> dict:
    """A copy of ``params`` with a ParamShape for every parameter drawn."""
    return _rebuild(
        params,
        lambda path, leaf: (
            leaf if priors[path] is None else ParamShape(_shape_of(leaf))
        ),
    )


def _sample_params(where, name, divider, params: Mapping, priors: dict) -> dict:
    """A copy of ``params`` with every parameter that has a prior drawn at
    site ``name + divider + path``; the other leaves are shared."""

    def one(path, leaf):
        if priors[path] is None:
            return leaf
        return _draw(where, _dotted(path), _shape_of(leaf), priors[path])

    with handlers.scope(prefix=name, divider=divider):
        return _rebuild(params, one)


def _update_params(params, new_params, prior, prefix=""):
    """Draw the parameters of the nested dict ``params`` that ``prior``
    covers, in place: ``new_params`` (a nested dict of the same structure)
    receives the draws and ``params`` a :class:`ParamShape` for each.

    Sample sites are named by the dotted path of the parameter, after
    ``prefix``. NumPyro's private helper of the same name works this way and
    its tests call it; the public functions here work on copies instead.
    """
    leaves = _leaves(params)
    priors = _resolve_prior("_update_params", leaves, _groups(params), prior, prefix)
    for path, distribution in priors.items():
        if distribution is None:
            continue
        shape = _shape_of(leaves[path])
        site = _dotted(path, prefix)
        _set_leaf(new_params, path, _draw("_update_params", site, shape, distribution))
        _set_leaf(params, path, ParamShape(shape))


def _check_divider(where: str, scope_divider) -> None:
    if not isinstance(scope_divider, str):
        raise TypeError(
            f"{where}: scope_divider must be a string, got {scope_divider!r}"
        )


def _check_paths(where: str, site: str, given, expected: dict) -> None:
    """Raise unless the nested dict ``given`` has the leaf paths and shapes
    of ``expected`` (a dict path -> leaf)."""
    if not isinstance(given, Mapping):
        raise TypeError(
            f"{where}: the value of site {site!r} must be a nested dict like the "
            f"module's, got {type(given).__name__}"
        )
    found = _leaves(given)
    missing = sorted(_dotted(p) for p in expected.keys() - found.keys())
    extra = sorted(_dotted(p) for p in found.keys() - expected.keys())
    if missing or extra:
        raise ValueError(
            f"{where}: the value of site {site!r} does not match the module: "
            f"missing {missing or 'nothing'}, unexpected {extra or 'nothing'}"
        )
    for path, leaf in expected.items():
        if _shape_of(found[path]) != _shape_of(leaf):
            raise ValueError(
                f"{where}: the value of site {site!r} has shape "
                f"{_shape_of(found[path])} at {_dotted(path)!r}, the module "
                f"has {_shape_of(leaf)}"
            )


# -- Flax Linen ---------------------------------------------------------------

_MISSING_STREAM = re.compile(r'needs PRNG for "([^"]+)"')
_COLLECTION = re.compile(r'collection "([^"]+)"')


def _name_list(where: str, argument: str, value, example: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(
        f"{where}: {argument} must be a list of names such as {example}, got {value!r}"
    )


def _check_input_shape(where: str, input_shape) -> tuple | None:
    if input_shape is None:
        return None
    shape = tuple(input_shape) if isinstance(input_shape, list | tuple) else None
    if shape is None or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise TypeError(
            f"{where}: input_shape must be a tuple of non-negative ints, "
            f"got {input_shape!r}"
        )
    return shape


def _call_keys(kinds: list[str]):
    """``{kind: key}`` from the enclosing seed, or None without one."""
    try:
        key = prng_key()
    except ValueError:
        return None
    return dict(zip(kinds, jax.random.split(key, len(kinds))))


def _flax_setup(function, name, nn_module, args, kwargs, options, prior):
    """Register a Linen module's sites. Returns ``(call, params, priors)``:
    ``call(params, *args, **kwargs)`` runs the network, ``params`` is the
    param site's value and ``priors`` the distribution of each leaf path
    (None without ``prior``)."""
    import flax.linen as linen
    from flax import errors as flax_errors
    from flax.core import unfreeze

    _check_name(name, function)
    where = f"{function} {name!r}"
    if not isinstance(nn_module, linen.Module):
        raise TypeError(
            f"{where}: nn_module must be a flax.linen.Module, got "
            f"{type(nn_module).__name__} (use nnx_module for a flax.nnx.Module "
            "and eqx_module for an Equinox module)"
        )
    input_shape = _check_input_shape(where, options["input_shape"])
    apply_rng = _name_list(where, "apply_rng", options["apply_rng"], '["dropout"]')
    mutable = _name_list(where, "mutable", options["mutable"], '["batch_stats"]')
    example_args = (jnp.ones(input_shape),) if input_shape is not None else args

    def initialise(key):
        rngs = {}
        for kind in apply_rng:
            key, rngs[kind] = jax.random.split(key)
        rngs["params"] = key
        try:
            variables = nn_module.init(rngs, *example_args, **kwargs)
        except Exception as error:
            how = (
                f"input_shape={input_shape}"
                if input_shape is not None
                else f"{len(args)} example argument(s) and keywords {sorted(kwargs)}"
            )
            raise ValueError(
                f"{where}: initialising {type(nn_module).__name__} with {how} "
                f"failed: {type(error).__name__}: {error}"
            ) from error
        variables = unfreeze(variables)
        if not jax.tree.leaves(variables.get("params", {})):
            raise ValueError(
                f"{where}: {type(nn_module).__name__} has no parameters (its "
                f"collections are {sorted(variables)}); a module site needs at "
                "least one"
            )
        absent = [c for c in mutable if c not in variables]
        if absent:
            raise ValueError(
                f"{where}: mutable={mutable} names {absent}, which "
                f"{type(nn_module).__name__} does not create; its collections "
                f"are {sorted(variables)}"
            )
        return variables

    found = {}

    def init_params(key):
        variables = initialise(key)
        params = _canonical(variables["params"])
        found["state"] = {c: variables[c] for c in mutable}
        if prior is not None:
            found["priors"] = _resolve_prior(
                where, _leaves(params), _groups(params), prior
            )
            params = _mark(params, found["priors"])
        return params

    params = _param_with_key(f"{name}$params", init_params)
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{where}: the value of site '{name}$params' must be the module's "
            f"nested dict of parameters, got {type(params).__name__}"
        )
    priors = None
    if prior is not None:
        priors = found.get("priors")
        if priors is None:  # the params came from SVI, substitute, ...
            priors = _resolve_prior(where, _leaves(params), _groups(params), prior)

    state = None
    if mutable:
        initial_state = found.get("state")
        if initial_state is None:
            # params from elsewhere: a fresh initialisation gives the state's
            # starting value, used unless the state is supplied as well
            variables = initialise(jax.random.PRNGKey(0))
            initial_state = {c: variables[c] for c in mutable}
        state = mutable_site(f"{name}$state", initial_state)
        if not isinstance(state, dict):
            raise TypeError(
                f"{where}: the value of site '{name}$state' must be a dict of "
                f"collections {mutable}, got {type(state).__name__}"
            )

    def call(params, *call_args, **call_kwargs):
        if apply_rng and "rngs" not in call_kwargs:
            keys = _call_keys(apply_rng)
            if keys is not None:
                call_kwargs["rngs"] = keys
        variables = {"params": params}
        try:
            if state is None:
                return nn_module.apply(variables, *call_args, **call_kwargs)
            variables.update(state)
            output, updates = nn_module.apply(
                variables, *call_args, mutable=mutable, **call_kwargs
            )
        except flax_errors.InvalidRngError as error:
            match = _MISSING_STREAM.search(str(error))
            stream = match.group(1) if match else "dropout"
            raise ValueError(
                f"{where}: the network needs a random key for its {stream!r} "
                f"stream: declare it with apply_rng=[{stream!r}] and run the "
                f"model under probnn.handlers.seed, or call the network with "
                f"rngs={{{stream!r}: key}} ({error})"
            ) from error
        except (
            flax_errors.ScopeCollectionNotFound,
            flax_errors.ModifyScopeVariableError,
        ) as error:
            match = _COLLECTION.search(str(error))
            collection = match.group(1) if match else "batch_stats"
            raise ValueError(
                f"{where}: the network uses collection {collection!r} as "
                f"state; declare it with mutable=[{collection!r}] ({error})"
            ) from error
        state.update(jax.lax.stop_gradient(unfreeze(updates)))
        return output

    return call, params, priors


def flax_module(
    name, nn_module, *args, input_shape=None, apply_rng=None, mutable=None, **kwargs
):
    """Declare a Flax Linen network in a model; its parameters become the
    param site ``name + "$params"``.

    The network is initialised the first time the site has no value (with a
    key from the enclosing ``seed``, or key 0 without one) from example
    inputs: ``*args`` and ``**kwargs`` as for ``nn_module.init``, or an array
    of ones of ``input_shape``. Afterwards the site's value (SVI's current
    parameters, say) is used.

    Args:
        name: the site's name.
        nn_module: a ``flax.linen.Module``.
        *args: example inputs for initialisation.
        input_shape: shape of an example input, instead of ``args``.
        apply_rng: random streams the network draws from when called, e.g.
            ``["dropout"]``. Call the network with ``rngs={"dropout": key}``
            (``probnn.prng_key()`` gives a fresh key); without ``rngs=`` it
            draws the keys from the enclosing ``seed`` on every call.
        mutable: collections that are state, e.g. ``["batch_stats"]``. They
            live in the mutable site ``name + "$state"`` (a dict by
            collection) and every call stores their new values there.
        **kwargs: example keyword inputs for initialisation.

    Returns:
        ``functools.partial(apply, params)``: call it like the network.

    >>> import flax.linen as nn, jax.numpy as jnp, probnn
    >>> def model(x):
    ...     return flax_module("net", nn.Dense(2), input_shape=(3,))(x)
    >>> tr = probnn.handlers.trace(probnn.handlers.seed(model, 0)).get_trace(
    ...     jnp.ones((5, 3)))
    >>> tr["net$params"]["value"]["kernel"].shape
    (3, 2)
    """
    options = {"input_shape": input_shape, "apply_rng": apply_rng, "mutable": mutable}
    call, params, _ = _flax_setup(
        "flax_module", name, nn_module, args, kwargs, options, None
    )
    return functools.partial(call, params)


def random_flax_module(
    name,
    nn_module,
    prior,
    *args,
    input_shape=None,
    apply_rng=None,
    mutable=None,
    **kwargs,
):
    """A Flax Linen network whose parameters are drawn from ``prior``.

    Each parameter the prior covers is a sample site ``name/<path>``, the
    path being the parameter's keys joined by dots (``"Dense_0.kernel"``);
    its distribution is broadcast to the parameter's shape and the whole
    parameter is one event. The other parameters stay in the param site
    ``name + "$params"``, which holds a :class:`ParamShape` for each drawn
    one. The remaining arguments are those of :func:`flax_module`.

    Args:
        name: the module's name.
        nn_module: a ``flax.linen.Module``.
        prior: one distribution for every parameter; a dict from parameter
            path to distribution (parameters not named keep their trainable
            values); or a callable ``(path, shape) -> distribution`` (None
            keeps that parameter trainable).

    Returns:
        ``functools.partial(apply, drawn_params)``.

    >>> import flax.linen as nn, probnn, probnn.distributions as dist
    >>> def model():
    ...     return random_flax_module("net", nn.Dense(2), dist.Normal(0.0, 1.0),
    ...                               input_shape=(3,))
    >>> tr = probnn.handlers.trace(probnn.handlers.seed(model, 0)).get_trace()
    >>> tr["net/kernel"]["value"].shape, tr["net$params"]["value"]["bias"]
    ((3, 2), ParamShape(shape=(2,)))
    """
    options = {"input_shape": input_shape, "apply_rng": apply_rng, "mutable": mutable}
    call, params, priors = _flax_setup(
        "random_flax_module", name, nn_module, args, kwargs, options, prior
    )
    where = f"random_flax_module {name!r}"
    drawn = _sample_params(where, name, "/", params, priors)
    return functools.partial(call, drawn)


# -- Flax NNX -------------------------------------------------------------------


def _nnx_filled(template, values):
    """A new nnx.State like ``template`` holding the pure dict ``values``."""
    from flax import nnx

    state = nnx.from_flat_state(nnx.to_flat_state(template))
    nnx.replace_by_pure_dict(state, values)
    return state


def _nnx_setup(function, name, nn_module, prior, scope_divider):
    from flax import nnx

    _check_name(name, function)
    where = f"{function} {name!r}"
    if not isinstance(nn_module, nnx.Module):
        raise TypeError(
            f"{where}: nn_module must be an initialised flax.nnx.Module, got "
            f"{type(nn_module).__name__} (use flax_module for a "
            "flax.linen.Module)"
        )
    _check_divider(where, scope_divider)
    graphdef, param_state, other_state = nnx.split(nn_module, nnx.Param, ...)
    eager = _canonical(nnx.to_pure_dict(param_state))
    priors = None
    initial = eager
    if prior is not None:
        priors = _resolve_prior(where, _leaves(eager), _groups(eager), prior)
        initial = _mark(eager, priors)
    site = f"{name}$params"
    params = param(site, initial)
    _check_paths(where, site, params, _leaves(initial))

    eager_other = _leaves(nnx.to_pure_dict(other_state))
    # RNG streams (Dropout's) hold typed PRNG keys; the state site keeps their
    # raw key data, so that it is an ordinary pytree of numbers for SVI
    key_impls = {
        path: jax.random.key_impl(leaf)
        for path, leaf in eager_other.items()
        if _is_typed_key(leaf)
    }

    def stored(flat: dict) -> dict:
        tree = {}
        for path in eager_other:
            leaf = flat[path]
            if path in key_impls:
                leaf = jax.random.key_data(leaf)
            _set_nested(tree, path, leaf)
        return tree

    def restored(tree: Mapping) -> dict:
        flat = _leaves(tree)
        out = {}
        for path in eager_other:
            leaf = flat[path]
            if path in key_impls:
                leaf = jax.random.wrap_key_data(leaf, impl=key_impls[path])
            _set_nested(out, path, leaf)
        return out

    holder = None
    if eager_other:
        state_site = f"{name}$state"
        initial_state = stored(eager_other)
        holder = mutable_site(state_site, {"state": initial_state})
        if not isinstance(holder, dict) or "state" not in holder:
            raise TypeError(
                f"{where}: the value of site {state_site!r} must be a dict "
                f"{{'state': <the module's non-parameter state>}}, got {holder!r}"
            )
        _check_paths(where, state_site, holder["state"], _leaves(initial_state))

    def call(params, *call_args, **call_kwargs):
        filled_params = _nnx_filled(param_state, params)
        if holder is None:
            filled_other = other_state
        else:
            filled_other = _nnx_filled(other_state, restored(holder["state"]))
        network = nnx.merge(graphdef, filled_params, filled_other, copy=True)
        output = network(*call_args, **call_kwargs)
        if holder is not None:
            _, _, updated = nnx.split(network, nnx.Param, ...)
            # the state keeps its structure: variables the call created are
            # not carried over
            new_state = stored(_leaves(nnx.to_pure_dict(updated)))
            holder["state"] = jax.lax.stop_gradient(new_state)
        return output

    return call, params, priors


def _is_typed_key(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _set_nested(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def nnx_module(name, nn_module):
    """Declare an initialised Flax NNX network in a model; its ``nnx.Param``
    values become the param site ``name + "$params"`` (a nested dict).

    Every other variable of the module (BatchNorm statistics, the RNG
    streams of Dropout, user variables) is the mutable site
    ``name + "$state"`` with value ``{"state": <nested dict>}``, updated by
    each call. ``nn_module`` itself is never changed: each call runs a copy
    holding the site's values.

    Args:
        name: the site's name.
        nn_module: an eager ``flax.nnx.Module`` instance.

    Returns:
        ``functools.partial(apply, params)``: call it like the module.

    >>> import flax.nnx as nnx, jax.numpy as jnp, probnn
    >>> linear = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    >>> def model(x):
    ...     return nnx_module("net", linear)(x)
    >>> tr = probnn.handlers.trace(model).get_trace(jnp.ones((5, 3)))
    >>> sorted(tr["net$params"]["value"])
    ['bias', 'kernel']
    """
    call, params, _ = _nnx_setup("nnx_module", name, nn_module, None, "/")
    return functools.partial(call, params)


def random_nnx_module(name, nn_module, prior, scope_divider="/"):
    """An initialised Flax NNX network whose parameters are drawn from
    ``prior``, at sample sites ``name + scope_divider + path`` (the path is
    the parameter's keys joined by dots, e.g. ``"layers.0.kernel"``).

    ``prior`` is as in :func:`random_flax_module`. Parameters it does not
    cover stay in the param site ``name + "$params"``; non-parameter state is
    handled as in :func:`nnx_module`.

    Returns:
        ``functools.partial(apply, drawn_params)``.
    """
    call, params, priors = _nnx_setup(
        "random_nnx_module", name, nn_module, prior, scope_divider
    )
    where = f"random_nnx_module {name!r}"
    drawn = _sample_params(where, name, scope_divider, params, priors)
    return functools.partial(call, drawn)


# -- Equinox --------------------------------------------------------------------


def _import_equinox(where: str):
    try:
        import equinox
    except ImportError as error:
        raise ImportError(
            f"{where} needs the equinox package: pip install equinox "
            "(or probnn[equinox])"
        ) from error
    return equinox


def _eqx_path(path) -> str:
    name = jax.tree_util.keystr(path)
    return name[1:] if name.startswith(".") else name


def eqx_to_dict(tree) -> dict:
    """The leaves of a pytree by key path, e.g. ``{"weight": ..., "bias":
    ...}`` for an ``eqx.nn.Linear`` or ``"layers[0].bias"`` for a list field.

    These are the names that :func:`random_eqx_module` gives its sample
    sites and expects as ``prior`` keys.

    >>> import jax.numpy as jnp
    >>> eqx_to_dict({"a": jnp.zeros(2), "b": [jnp.ones(3)]}).keys()
    dict_keys(["['a']", "['b'][0]"])
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_eqx_path(path): leaf for path, leaf in leaves}


def eqx_from_dict(data: dict, tree):
    """``tree`` with each leaf replaced by ``data[path]`` (the inverse of
    :func:`eqx_to_dict`); a path missing from ``data`` is a KeyError."""

    def lookup(path, _):
        key = _eqx_path(path)
        if key not in data:
            raise KeyError(f"eqx_from_dict: no entry for leaf {key!r}")
        return data[key]

    return jax.tree_util.tree_map_with_path(lookup, tree)


def _eqx_split(where: str, nn_module):
    eqx = _import_equinox(where)
    if not isinstance(nn_module, eqx.Module):
        raise TypeError(
            f"{where}: nn_module must be an initialised equinox.Module, got "
            f"{type(nn_module).__name__}"
        )
    params, static = eqx.partition(nn_module, eqx.is_inexact_array)
    return eqx, params, static


def eqx_module(name, nn_module):
    """Declare an initialised Equinox network in a model; its inexact arrays
    (``eqx.partition(nn_module, eqx.is_inexact_array)``) become the param site
    ``name + "$params"``.

    Returns the module rebuilt with the site's values (call it, or
    ``jax.vmap`` it, as usual). Stateful layers keep their state outside,
    as in Equinox: hold it in ``probnn.mutable(name + "$state", {"state":
    state})`` and store the new state back in that dict after each call.

    >>> import equinox as eqx, jax, probnn
    >>> linear = eqx.nn.Linear(3, 2, key=jax.random.PRNGKey(0))
    >>> def model():
    ...     return eqx_module("net", linear)
    >>> tr = probnn.handlers.trace(model).get_trace()
    >>> tr["net$params"]["value"].weight.shape
    (2, 3)
    """
    _check_name(name, "eqx_module")
    where = f"eqx_module {name!r}"
    eqx, params, static = _eqx_split(where, nn_module)
    site = f"{name}$params"
    value = _param_with_key(site, lambda _key: params)
    _check_paths(where, site, eqx_to_dict(value), _flat_paths(eqx_to_dict(params)))
    if jax.tree.structure(value) != jax.tree.structure(params):
        raise ValueError(
            f"{where}: the value of site {site!r} does not have the structure "
            "of the module's parameters"
        )
    return eqx.combine(value, static)


def _flat_paths(flat: dict) -> dict:
    return {(key,): leaf for key, leaf in flat.items()}


def random_eqx_module(name, nn_module, prior, scope_divider="/"):
    """An initialised Equinox network whose parameters are drawn from
    ``prior``, at sample sites ``name + scope_divider + path`` with the paths
    of :func:`eqx_to_dict` (``"weight"``, ``"layers[0].bias"``).

    ``prior`` is as in :func:`random_flax_module`, keyed by those paths.
    Parameters it does not cover stay in the param site ``name + "$params"``,
    which holds a :class:`ParamShape` for each drawn one.

    Returns:
        The module rebuilt with the drawn parameters.
    """
    _check_name(name, "random_eqx_module")
    where = f"random_eqx_module {name!r}"
    _check_divider(where, scope_divider)
    eqx, params, static = _eqx_split(where, nn_module)
    flat = eqx_to_dict(params)
    priors = _resolve_prior(where, _flat_paths(flat), (), prior)
    marked = eqx_from_dict(
        {
            key: leaf if priors[(key,)] is None else ParamShape(_shape_of(leaf))
            for key, leaf in flat.items()
        },
        params,
    )
    site = f"{name}$params"
    value = eqx_to_dict(_param_with_key(site, lambda _key: marked))
    # the parameters without a prior must be there (drawn ones may be
    # ParamShapes, which have no leaves, or arrays that are not used)
    kept = {key: leaf for key, leaf in flat.items() if priors[(key,)] is None}
    given = {key: leaf for key, leaf in value.items() if key in kept}
    _check_paths(where, site, given, _flat_paths(kept))
    with handlers.scope(prefix=name, divider=scope_divider):
        drawn = {
            key: (
                value[key]
                if priors[(key,)] is None
                else _draw(where, key, _shape_of(leaf), priors[(key,)])
            )
            for key, leaf in flat.items()
        }
    return eqx.combine(eqx_from_dict(drawn, params), static)
