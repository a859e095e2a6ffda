"""Vectorised indexing (``Vindex``) for code that must work under batching
and enumeration.

Plain ``x[i, j]`` with array indices ``i`` and ``j`` selects along the
leading dims of ``x``, and a slice between two array indices moves the
selected dims to the front. In model code the indices usually carry batch
dims (plates, enumeration dims on the left) while the indexed dims are the
rightmost ones of ``x``, so :func:`vindex` reads the index from the right:

* a leading ``...`` stands for the batch dims of ``x``; the remaining
  entries address the rightmost dims of ``x`` (its "event" dims);
* without ``...``, the entries address all dims of ``x``, missing trailing
  entries being ``:``;
* the batch dims of every array index and the batch dims of ``x``
  broadcast together (aligned on the right) into the result's batch dims;
* each ``:`` keeps its dim, and the kept dims form the right end of the
  result, in order.

>>> import jax.numpy as jnp
>>> x = jnp.arange(2 * 3 * 4).reshape(2, 3, 4)
>>> i = jnp.array([[0], [2]])          # shape (2, 1): an enumeration dim
>>> Vindex(x)[..., i, :].shape         # batch (2,) with (2, 1) -> (2, 2)
(2, 2, 4)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["Vindex", "vindex"]


def _is_array_index(arg) -> bool:
    """An index entry with dims of its own (which then broadcast)."""
    if arg is None or arg is Ellipsis or isinstance(arg, slice):
        return False
    return np.ndim(arg) > 0


def _slice_positions(size: int, entry: slice):
    return jnp.arange(*entry.indices(size))


def vindex(tensor, args):
    """Index ``tensor`` by ``args`` with broadcasting batch semantics (see
    the module docstring and :class:`Vindex`).

    Args:
        tensor: the array to index.
        args: an index as passed to ``__getitem__``. Entries may be
            integers, integer arrays, slices, and a leading ``Ellipsis``.

    Returns:
        An array of shape ``broadcast(batch shapes) + kept dims``, where the
        batch shapes are those of the array indices and (with a leading
        ``...``) the batch dims of ``tensor``, and the kept dims are the
        sizes of the dims indexed by slices.
    """
    if not isinstance(args, tuple):
        return tensor[args]
    if not args:
        return tensor
    ndim = jnp.ndim(tensor)
    if ndim == 0:
        raise IndexError("vindex: cannot index a 0-dim array")
    if args[0] is Ellipsis:
        entries = args[1:]
        if not entries:
            return tensor
    else:
        # no batch dims: the entries cover every dim, missing ones are ':'
        entries = args + (slice(None),) * (ndim - len(args))
    if any(entry is Ellipsis for entry in entries):
        raise NotImplementedError("vindex: only a leading Ellipsis is supported")
    if any(entry is None for entry in entries):
        raise NotImplementedError("vindex: None (new axis) entries are not supported")
    if len(entries) > ndim:
        raise IndexError(
            f"vindex: {len(entries)} indexed dims but the array has only {ndim}"
        )
    batch_ndim = ndim - len(entries)
    if not any(_is_array_index(entry) for entry in entries):
        # only integers and slices: ordinary basic indexing already keeps
        # the batch dims on the left and the sliced dims in order
        return tensor[(slice(None),) * batch_ndim + entries]

    # Every dim becomes an advanced (array) index so that numpy's rule "all
    # array indices broadcast together" applies to all of them: kept dims
    # get position arrays with trailing singleton dims that place them at
    # the right end, in order; array indices and the batch dims of
    # ``tensor`` get trailing singleton dims for all kept dims.
    shape = jnp.shape(tensor)
    num_kept = sum(isinstance(entry, slice) for entry in entries)
    index = []
    for dim in range(batch_ndim):
        positions = jnp.arange(shape[dim])
        trailing = batch_ndim - 1 - dim + num_kept
        index.append(positions.reshape((-1,) + (1,) * trailing))
    kept_before = 0
    for offset, entry in enumerate(entries):
        size = shape[batch_ndim + offset]
        if isinstance(entry, slice):
            kept_before += 1
            positions = _slice_positions(size, entry)
            index.append(positions.reshape((-1,) + (1,) * (num_kept - kept_before)))
        elif _is_array_index(entry):
            entry = jnp.asarray(entry)
            index.append(entry.reshape(entry.shape + (1,) * num_kept))
        else:
            index.append(entry)
    return tensor[tuple(index)]


class Vindex:
    """``Vindex(x)[args]`` is :func:`vindex` ``(x, args)``.

    >>> import jax.numpy as jnp
    >>> x = jnp.arange(12.0).reshape(3, 4)
    >>> i = jnp.array([0, 2])
    >>> j = jnp.array([[1], [3]])
    >>> Vindex(x)[i, j].tolist()  # x[i[b], j[a, 0]] for batch shape (2, 2)
    [[1.0, 9.0], [3.0, 11.0]]
    """

    def __init__(self, tensor):
        self._tensor = tensor

    def __getitem__(self, args):
        return vindex(self._tensor, args)
