"""Param dicts stored with their many small leaves stacked.

An SVI state for a model with fifty scalar sites holds hundreds of scalar
leaves (params, optimiser moments). Each leaf is its own buffer, and XLA
compiles a kernel for every buffer a step writes. :class:`PackedDict` keeps
the leaves of equal shape and dtype as rows of one array, while reading like
the dict it stands for: ``packed[name]``, ``.items()``, ``dict(packed)``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from probnn.infer._vectorize import MIN_GROUP

# leaves with more elements than this are kept as they are
MAX_PACKED_SIZE = 1024


class Layout(NamedTuple):
    """Where each name's value lives: row ``k`` of ``stacks[g]`` for the
    names in ``groups[g]``, else ``loose``; ``names`` keeps the dict order."""

    names: tuple
    groups: tuple
    loose: tuple


@functools.lru_cache(maxsize=256)
def _places(layout: Layout) -> dict:
    places = {}
    for g, group in enumerate(layout.groups):
        for k, name in enumerate(group):
            places[name] = (g, k)
    for i, name in enumerate(layout.loose):
        places[name] = (None, i)
    return places


class PackedDict(Mapping):
    """A read-only mapping from names to arrays whose small leaves of equal
    shape and dtype are rows of shared arrays. It is a pytree whose leaves
    are those shared arrays and the other values."""

    __slots__ = ("layout", "stacks", "loose")

    def __init__(self, layout: Layout, stacks, loose):
        self.layout = layout
        self.stacks = tuple(stacks)
        self.loose = tuple(loose)

    def __getitem__(self, name):
        g, k = _places(self.layout)[name]
        if g is None:
            return self.loose[k]
        return self.stacks[g][k]

    def __iter__(self) -> Iterator:
        return iter(self.layout.names)

    def __len__(self) -> int:
        return len(self.layout.names)

    def __contains__(self, name) -> bool:
        return name in _places(self.layout)

    def to_dict(self) -> dict:
        """The plain dict this stands for."""
        return {name: self[name] for name in self.layout.names}

    def __repr__(self) -> str:
        return f"PackedDict({self.to_dict()!r})"


def _flatten(packed: PackedDict):
    return (*packed.stacks, *packed.loose), packed.layout


def _flatten_with_keys(packed: PackedDict):
    keys = [jax.tree_util.GetAttrKey(f"stacks[{g}]") for g in range(len(packed.stacks))]
    keys += [jax.tree_util.DictKey(name) for name in packed.layout.loose]
    return list(zip(keys, (*packed.stacks, *packed.loose))), packed.layout


def _unflatten(layout: Layout, children) -> PackedDict:
    children = tuple(children)
    count = len(layout.groups)
    return PackedDict(layout, children[:count], children[count:])


jax.tree_util.register_pytree_with_keys(
    PackedDict, _flatten_with_keys, _unflatten, _flatten
)


def _state_dict(packed: PackedDict) -> dict:
    state = {f"stacks_{g}": s for g, s in enumerate(packed.stacks)}
    for name, value in zip(packed.layout.loose, packed.loose):
        state[f"loose_{name}"] = flax.serialization.to_state_dict(value)
    return state


def _from_state_dict(target: PackedDict, state: dict) -> PackedDict:
    stacks = [
        flax.serialization.from_state_dict(s, state[f"stacks_{g}"])
        for g, s in enumerate(target.stacks)
    ]
    loose = [
        flax.serialization.from_state_dict(value, state[f"loose_{name}"])
        for name, value in zip(target.layout.loose, target.loose)
    ]
    return PackedDict(target.layout, stacks, loose)


flax.serialization.register_serialization_state(
    PackedDict, _state_dict, _from_state_dict
)


def _packable(value):
    """``(shape, dtype, weak_type)`` of a small numeric array, else None."""
    if not isinstance(value, jax.Array | np.ndarray):
        return None
    dtype = jnp.result_type(value)
    if not (jnp.issubdtype(dtype, jnp.number) or dtype == jnp.bool_):
        return None
    if np.size(value) > MAX_PACKED_SIZE:
        return None
    return np.shape(value), dtype, bool(getattr(value, "weak_type", False))


def pack(params: dict):
    """``params`` as a :class:`PackedDict` when at least ``MIN_GROUP`` of its
    values are small arrays of one shape and dtype; otherwise unchanged."""
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        return params
    kinds: dict = {}
    for name, value in params.items():
        kind = _packable(value)
        if kind is not None:
            kinds.setdefault(kind, []).append(name)
    groups = tuple(tuple(names) for names in kinds.values() if len(names) >= MIN_GROUP)
    if not groups:
        return params
    grouped = {name for group in groups for name in group}
    loose = tuple(name for name in params if name not in grouped)
    layout = Layout(tuple(params), groups, loose)
    stacks = [jnp.stack([params[name] for name in group]) for group in groups]
    return PackedDict(layout, stacks, [params[name] for name in loose])


def pack_like(tree, params: dict):
    """Every dict in ``tree`` with the same names as ``params`` (optimiser
    moments, for example) packed."""
    names = set(params)

    def like(node) -> bool:
        return isinstance(node, dict) and set(node) == names

    def visit(node):
        # in the params' order, so that rows line up with theirs
        return pack({name: node[name] for name in params}) if like(node) else node

    return jax.tree.map(visit, tree, is_leaf=like)


def is_packed(node) -> bool:
    return isinstance(node, PackedDict)


def unpack(tree):
    """``tree`` with every :class:`PackedDict` replaced by its plain dict."""
    return jax.tree.map(
        lambda node: node.to_dict() if is_packed(node) else node,
        tree,
        is_leaf=is_packed,
    )


def has_packed(tree) -> bool:
    return any(is_packed(leaf) for leaf in jax.tree.leaves(tree, is_leaf=is_packed))
