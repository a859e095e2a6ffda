"""The bridge between probnn and Flax Linen modules.

A Linen module is a description of a network; its variables live outside it,
in a dict of collections (``{"params": ..., "batch_stats": ...}``). The bridge
keeps that split: ``params`` are the trainable parameters, and every other
collection is state that a forward pass may update.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
from flax import errors as flax_errors
from flax.core import unfreeze

from probnn.nn._bridge import Bridge

__all__ = ["LinenBridge", "linen_variables"]

# The rng streams given at initialisation even when not asked for: flax falls
# back to the "params" stream for any stream it lacks while "params" is
# present, so it never reports a missing stream during ``init`` and only a
# stream we pass explicitly gets a key of its own.
_INIT_STREAMS = ("params", "dropout")

# Flax reports a missing stream as '<scope> needs PRNG for "<stream>"'.
_MISSING_STREAM = re.compile(r'needs PRNG for "([^"]+)"')


def linen_variables(params, state) -> dict:
    """The variable dict that ``module.apply`` expects.

    Args:
        params: the module's parameters (its ``"params"`` collection).
        state: its other collections, e.g. ``{"batch_stats": ...}``.

    Returns:
        ``{"params": params, **state}`` with every level a plain dict.

    >>> import jax, jax.numpy as jnp
    >>> import flax.linen as nn
    >>> dense = nn.Dense(2)
    >>> variables = dense.init(jax.random.PRNGKey(0), jnp.ones((1, 3)))
    >>> params = variables["params"]
    >>> out = dense.apply(linen_variables(params, {}), jnp.ones((1, 3)))
    >>> out.shape
    (1, 2)
    """
    return {"params": unfreeze(params), **{k: unfreeze(v) for k, v in state.items()}}


def _stream_key(key, stream: str):
    """A key for ``stream`` that depends only on ``key`` and the stream's name.

    Folding in a fixed hash of the name (Python's ``hash`` changes between
    processes) keeps every stream's key the same whichever other streams are
    in use, so discovering a stream later never reshuffles the others.
    """
    return jax.random.fold_in(key, zlib.crc32(stream.encode()) & 0x7FFFFFFF)


def _missing_stream(error: Exception) -> str | None:
    match = _MISSING_STREAM.search(str(error))
    return match.group(1) if match else None


def _draw_key(key_fn: Callable[[], Any]):
    """``(key, None)``, or ``(None, error)`` when ``key_fn`` has no key to give."""
    try:
        key = key_fn()
    except Exception as error:
        return None, error
    if key is None:
        return None, ValueError("key_fn() returned no key")
    return key, None


def _shapes(tree) -> list:
    return [tuple(np.shape(leaf)) for leaf in jax.tree.leaves(tree)]


class LinenBridge(Bridge):
    """Exposes a Flax Linen module as pure ``init``/``apply`` functions.

    Parameters are the module's ``"params"`` collection; every other
    collection (``"batch_stats"``, ...) is state, mutable in every forward
    pass and handed back updated. Random streams (``"dropout"``, ...) get keys
    derived from one ``key_fn()`` call per forward pass; the bridge learns
    which streams the module needs from flax's own missing-rng errors and
    remembers them.

    Args:
        name: the module's site name (for error messages).
        nn: an unbound ``flax.linen.Module``.
        input_shape: shape of an example input; ``-1`` or ``None`` entries
            (a batch dim) become 1. Used when ``args`` is empty.
        args: example positional inputs for initialisation.
        kwargs: keyword arguments for the call, passed to ``init`` as well
            (e.g. ``train=False``).

    >>> import jax, jax.numpy as jnp
    >>> import flax.linen as nn
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x, train: bool = False):
    ...         x = nn.Dense(4)(x)
    ...         return nn.Dropout(0.5, deterministic=not train)(x)
    >>> bridge = LinenBridge("net", Net(), (-1, 3), (), {})
    >>> params, state = bridge.init(jax.random.PRNGKey(0))
    >>> params["Dense_0"]["kernel"].shape, state
    ((3, 4), {})
    >>> key_fn = lambda: jax.random.PRNGKey(1)
    >>> x = jnp.ones((5, 3))
    >>> out, _, _ = bridge.apply(params, state, key_fn, (x,), {"train": True})
    >>> out.shape
    (5, 4)
    >>> bridge.rng_streams
    ('dropout',)
    """

    kind = "linen"

    def __init__(
        self,
        name: str,
        nn: linen.Module,
        input_shape: Iterable[int | None] | None,
        args: tuple,
        kwargs: dict,
    ):
        if not isinstance(nn, linen.Module):
            raise TypeError(
                f"module {name!r}: expected a flax.linen.Module, "
                f"got {type(nn).__name__}"
            )
        super().__init__(name, nn, input_shape, tuple(args or ()), dict(kwargs or {}))
        self._rng_streams: set[str] = set()

    @property
    def rng_streams(self) -> tuple[str, ...]:
        """The random streams the module has asked for in forward passes."""
        return tuple(sorted(self._rng_streams))

    def _example_args(self) -> tuple:
        if self.args:
            return self.args
        if self.input_shape is None:
            raise ValueError(
                f"module {self.name!r}: the Linen module needs example inputs to "
                "initialise its parameters: pass input_shape= or call it with "
                "example arguments"
            )
        shape = tuple(1 if d is None or d == -1 else d for d in self.input_shape)
        return (jnp.zeros(shape, jnp.float32),)

    def init(self, key) -> tuple[dict, dict]:
        """Initialise the module's variables.

        Args:
            key: PRNG key; each stream (``"params"``, ``"dropout"``, ...)
                gets ``fold_in(key, crc32(stream))``.

        Returns:
            ``(params, state)``: the ``"params"`` collection and a dict of the
            other collections (``{}`` when there are none), as plain dicts.
        """
        args = self._example_args()
        streams = set(_INIT_STREAMS)
        while True:
            rngs = {s: _stream_key(key, s) for s in sorted(streams)}
            try:
                variables = self.nn.init(rngs, *args, **self.kwargs)
                break
            except flax_errors.InvalidRngError as error:
                stream = _missing_stream(error)
                if stream is None or stream in streams:
                    raise self._init_error(args, error) from error
                streams.add(stream)
            except Exception as error:
                raise self._init_error(args, error) from error
        variables = unfreeze(variables)
        params = variables.pop("params", {})
        return params, variables

    def _init_error(self, args: tuple, error: Exception) -> ValueError:
        how = (
            "the example arguments"
            if self.args
            else f"input_shape={tuple(self.input_shape)}"
        )
        keywords = (
            f" and keyword arguments {sorted(self.kwargs)}" if self.kwargs else ""
        )
        return ValueError(
            f"module {self.name!r}: initialising the Linen module "
            f"{type(self.nn).__name__} failed with inputs of shapes "
            f"{_shapes(args)} (from {how}){keywords}: "
            f"{type(error).__name__}: {error}"
        )

    def apply(
        self,
        params,
        state,
        key_fn: Callable[[], Any],
        args: tuple,
        kwargs: dict,
    ) -> tuple[Any, dict]:
        """One forward pass.

        Args:
            params: the ``"params"`` collection.
            state: the other collections; all are mutable during the pass.
            key_fn: returns a fresh PRNG key; called at most once per pass,
                and not at all until the module has asked for a stream.
            args: positional inputs.
            kwargs: keyword inputs.

        Returns:
            ``(output, new_state, intermediates)``: ``new_state`` with the
            keys of ``state``; ``intermediates`` the values the pass sowed
            into collections that are not state (``self.sow(
            "intermediates", ...)``), by collection.
        """
        variables = linen_variables(params, state)
        # every collection is mutable: state is updated, and whatever the
        # pass sows elsewhere is returned as intermediates
        mutable = True
        # Streams learnt in earlier passes may not be needed in this one (e.g.
        # dropout in eval mode): when no key can be had, try without keys and
        # fail only if flax then asks for a stream.
        streams = set(self._rng_streams)
        key = key_error = None
        while True:
            rngs = None
            if streams and key_error is None:
                if key is None:
                    key, key_error = _draw_key(key_fn)
                if key_error is None:
                    rngs = {s: _stream_key(key, s) for s in sorted(streams)}
            try:
                result = self.nn.apply(
                    variables, *args, rngs=rngs, mutable=mutable, **kwargs
                )
                break
            except flax_errors.InvalidRngError as error:
                stream = _missing_stream(error)
                if stream is None or (stream in streams and rngs is not None):
                    raise
                if key_error is not None:
                    raise ValueError(
                        f"module {self.name!r}: the Linen module needs a random "
                        f"key for its {stream!r} stream; run the model under "
                        "probnn.handlers.seed"
                    ) from key_error
                streams.add(stream)
                self._rng_streams.add(stream)
        output, updated = result
        updated = unfreeze(updated)
        updated.pop("params", None)
        new_state = {k: updated.pop(k, unfreeze(v)) for k, v in state.items()}
        return output, new_state, updated
