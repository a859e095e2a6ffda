"""The protocol between probnn's module machinery and one kind of network.

A :class:`Bridge` wraps a network given to :func:`probnn.module` or
:func:`probnn.random_module` (a stax pair, a Flax Linen module or a Flax NNX
module) and exposes it as two pure functions over pytrees:

- ``init(key) -> (params, state)``: the network's trainable parameters (a
  nested dict of arrays, the network's own structure) and its non-parameter
  state (a nested dict of arrays, e.g. BatchNorm statistics; ``{}`` when it
  has none);
- ``apply(params, state, key_fn, args, kwargs) -> (output, new_state,
  intermediates)``: one forward pass. ``key_fn()`` returns a fresh PRNG key
  for random streams (dropout); it raises when no ``seed`` handler is
  active, and the bridge then names the stream that needed it.
  ``new_state`` has the structure of ``state``; ``intermediates`` holds the
  values the network recorded for inspection during the pass (Linen
  ``sow``, NNX ``nnx.Intermediate``), ``{}`` when none.

Both must be traceable (jit, vmap, grad) and free of side effects, so the
core can vmap them over the members of a plate ensemble.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


class Bridge:
    """Base class; see the module docstring.

    Args:
        name: the module's site name (for error messages).
        nn: the network.
        input_shape: shape of an example input, when given.
        args: example positional inputs, when given (Linen initialisation).
        kwargs: example keyword arguments.
    """

    kind = "network"

    def __init__(self, name: str, nn, input_shape, args: tuple, kwargs: dict):
        self.name = name
        self.nn = nn
        self.input_shape = input_shape
        # the bridge outlives the trace it was made in (it is cached per
        # network): example inputs that are tracers (a scan body's slice, a
        # jitted function's argument) are kept as shapes only
        self._args = jax.tree.map(_detached, tuple(args))
        self._kwargs = jax.tree.map(_detached, dict(kwargs))

    @property
    def args(self) -> tuple:
        """Example positional inputs (zeros where a tracer was given)."""
        return jax.tree.map(_materialised, self._args)

    @property
    def kwargs(self) -> dict:
        """Example keyword arguments (zeros where a tracer was given)."""
        return jax.tree.map(_materialised, self._kwargs)

    def init(self, key) -> tuple[Any, Any]:
        raise NotImplementedError

    def apply(
        self, params, state, key_fn: Callable[[], Any], args: tuple, kwargs: dict
    ) -> tuple[Any, Any, Any]:
        raise NotImplementedError


def _detached(leaf):
    if isinstance(leaf, jax.core.Tracer):
        return jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf))
    return leaf


def _materialised(leaf):
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jnp.zeros(leaf.shape, leaf.dtype)
    return leaf
