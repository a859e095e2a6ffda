"""Control flow for model code at NumPyro's ``numpyro.contrib.control_flow``
import path: :func:`scan` (see :mod:`probnn.control_flow`) and :func:`cond`.

:func:`cond` runs ``jax.lax.cond`` over branches that contain probnn sites.
Both branches are traced, under stand-ins for the active handlers: each
``seed`` hands the branches a key of their own, each ``trace`` records the
branch's sites, and every other handler (``substitute``, ``condition``,
``replay``, ``block``, ``scale``, ``mask``, plates, ...) acts in the
branches as itself. The recorded sites leave ``lax.cond`` as outputs, so
the trace holds the sites of the branch that was taken: their values and
their distributions, whose parameters are selected by the predicate.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from probnn.control_flow import scan
from probnn.handlers import seed, trace
from probnn.runtime import _STACK, Message, apply_stack, handler_stack, make_message

__all__ = ["cond", "scan"]

# fields of a site whose Python numbers become arrays, so that branches
# with different constants (Normal(4., 1.) and Normal(0., 1.)) give sites
# of one structure
_NUMERIC_FIELDS = ("fn", "value", "intermediates")


def _to_array(leaf):
    if isinstance(leaf, bool | int | float | complex):
        return jnp.asarray(leaf)
    return leaf


def _is_array(leaf) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray | np.generic)


def _same(a, b) -> bool:
    """Equality of the static parts of two branches' sites; partials (plate
    sites carry one as their ``fn``) compare by function and arguments."""
    if a is b:
        return True
    if isinstance(a, functools.partial) and isinstance(b, functools.partial):
        return (
            _same(a.func, b.func)
            and _same(a.args, b.args)
            and _same(a.keywords, b.keywords)
        )
    if isinstance(a, list | tuple) and type(a) is type(b):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # e.g. objects whose == is elementwise
        return False


class _Static:
    """The non-array parts of recorded sites, as pytree aux data: the two
    branches of a ``lax.cond`` must produce equal ones."""

    def __init__(self, names: tuple[str, ...], parts: tuple):
        self.names = names
        self.parts = parts

    def __eq__(self, other):
        return (
            isinstance(other, _Static)
            and self.names == other.names
            and _same(self.parts, other.parts)
        )

    def __hash__(self):
        return hash(self.names)


def _split(site: Message):
    site = dict(site)
    site.pop("stop", None)
    site["kwargs"] = dict(site["kwargs"])
    if "rng_key" in site["kwargs"]:
        # the branch's key: not needed outside, and not worth an output
        site["kwargs"]["rng_key"] = None
    for field in _NUMERIC_FIELDS:
        if site.get(field) is not None:
            site[field] = jax.tree.map(_to_array, site[field])
    leaves, treedef = jax.tree.flatten(site)
    arrays = [leaf for leaf in leaves if _is_array(leaf)]
    static = tuple(None if _is_array(leaf) else leaf for leaf in leaves)
    mask = tuple(_is_array(leaf) for leaf in leaves)
    return arrays, (treedef, mask, static)


def _join(arrays, part) -> Message:
    treedef, mask, static = part
    arrays = iter(arrays)
    leaves = [next(arrays) if keep else leaf for keep, leaf in zip(mask, static)]
    return jax.tree.unflatten(treedef, leaves)


@jax.tree_util.register_pytree_node_class
class _BranchSites:
    """Sites recorded in one branch, as a pytree whose leaves are arrays."""

    def __init__(self, sites: dict[str, Message]):
        self.sites = sites

    def tree_flatten(self):
        names = tuple(self.sites)
        split = [_split(self.sites[name]) for name in names]
        children = [arrays for arrays, _ in split]
        return children, _Static(names, tuple(part for _, part in split))

    @classmethod
    def tree_unflatten(cls, static: _Static, children):
        return cls(
            {
                name: _join(arrays, part)
                for name, arrays, part in zip(static.names, children, static.parts)
            }
        )


def _branch_images(handlers, keys):
    """Stand-ins for ``handlers`` inside one branch."""
    images = []
    for handler in handlers:
        if isinstance(handler, seed):
            image = copy.copy(handler)
            image._initial_key = image._key = keys[id(handler)]
        elif isinstance(handler, trace):
            image = copy.copy(handler)
            image.trace = {}
        else:
            image = handler
        images.append(image)
    return images


def _run(pred, true_fun: Callable, false_fun: Callable, operand):
    handlers = list(_STACK)
    if any(getattr(handler, "open_scan", None) for handler in handlers):
        raise RuntimeError(
            "cond does not support enumeration (TraceEnum_ELBO, enum, "
            "infer_discrete, enumerated log densities): the predicate of "
            "lax.cond must be a scalar"
        )
    # one key per seed handler, the same in both branches (only one runs)
    keys = {id(h): h._next_key() for h in handlers if isinstance(h, seed)}

    def branch(fn):
        def run(operand):
            images = _branch_images(handlers, keys)
            with handler_stack(images):
                value = fn(operand)
            sites = [
                _BranchSites(image.trace) if isinstance(image, trace) else None
                for image in images
            ]
            return value, sites

        return run

    try:
        value, sites = jax.lax.cond(pred, branch(true_fun), branch(false_fun), operand)
    except TypeError as error:
        raise TypeError(
            "cond: the two branches must return values of one structure and "
            "contain the same sites, with distributions of one type and "
            f"shape ({error})"
        ) from error
    for handler, recorded in zip(handlers, sites, strict=True):
        if recorded is not None:
            for name, site in recorded.sites.items():
                handler._record(name, site)
    return value


def cond(pred, true_fun: Callable, false_fun: Callable, operand: Any) -> Any:
    """``true_fun(operand)`` if ``pred`` else ``false_fun(operand)``, like
    :func:`jax.lax.cond`, with probnn sites allowed in both functions.

    Both functions are traced; they must create the same sites (same names
    and types; sample sites with distributions of one class and shape) and
    return values of one structure. The trace records the sites of the
    branch taken. Works under ``seed``, ``trace``, ``substitute``,
    ``condition``, ``replay`` and the handlers that SVI, MCMC and
    Predictive use; not under enumeration.

    Args:
        pred: boolean scalar.
        true_fun: ``operand -> value``, run when ``pred`` is true.
        false_fun: ``operand -> value``, run otherwise.
        operand: pytree passed to the branch.

    Returns:
        The value of the branch taken.

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.handlers import seed, trace
    >>> def model(shift):
    ...     big = lambda _: probnn.sample("x", dist.Normal(20.0, 1.0))
    ...     small = lambda _: probnn.sample("x", dist.Normal(0.0, 1.0))
    ...     return cond(shift > 0, big, small, None)
    >>> tr = trace(seed(model, rng_seed=0)).get_trace(1.0)
    >>> float(tr["x"]["fn"].loc), bool(tr["x"]["value"] > 10)
    (20.0, True)
    """
    msg = make_message("control_flow", None, None)
    msg["fn"] = functools.partial(_run, pred, true_fun, false_fun, operand)
    return apply_stack(msg)["value"]
