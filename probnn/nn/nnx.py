"""Bridge for Flax NNX modules, and writing trained values back into one.

An eager :class:`flax.nnx.Module` is split once, when its bridge is made, into
a cached ``GraphDef`` and three groups of Variables:

- parameters (:class:`nnx.Param` and its subclasses): the bridge's ``params``;
- RNG state (:class:`nnx.RngKey` / :class:`nnx.RngCount`, both
  :class:`nnx.RngState`, held by :class:`nnx.Rngs` and the ``RngStream`` that
  ``Dropout`` keeps): never exposed, re-keyed from ``key_fn()`` on every call;
- everything else (:class:`nnx.BatchStat`, :class:`nnx.Cache`, user
  Variables, plain array attributes): the bridge's ``state``.

Inside traced code the module is rebuilt with :func:`nnx.merge`, called, and
its state read back, so jit / grad / vmap see only pure nested dicts.

Flax 0.12 can traverse a module in *graph mode* (the default; shared
Variables and modules allowed) or *tree mode* (``graph=False``; the module is
an ordinary pytree, shared references are an error). A bridge uses the mode
that is current when it is made (``nnx.set_graph_mode``) unless told by its
``graph`` argument, and keeps to it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from probnn.handlers import is_typed_key
from probnn.nn._bridge import Bridge

__all__ = ["NNXBridge", "write_back"]

# A Variable goes to the first group whose filter it matches: parameters, RNG
# state, then the module's remaining (persistent) state.
_GROUPS = (nnx.Param, nnx.RngState, ...)


def _resolve_graph(graph: bool | None) -> bool:
    return nnx.set_graph_mode.current_value() if graph is None else bool(graph)


def _split(module: nnx.Module, graph: bool):
    """``(graphdef, params, rng_state, state)`` of ``module``, all nnx.States."""
    return nnx.split(module, *_GROUPS, graph=graph)


def _path_str(path: tuple) -> str:
    return ".".join(str(part) for part in path) or "<root>"


def _pure(state) -> dict:
    """A captured ``nnx.State`` as nested dicts of arrays."""
    flat = {path: _value(leaf) for path, leaf in nnx.to_flat_state(state)}
    return nnx.traversals.unflatten_mapping(flat) if flat else {}


def _value(leaf):
    return leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf


def _layout(state: nnx.State) -> dict[tuple, tuple]:
    """Path -> (Variable type, shape) for every leaf of ``state``."""
    return {
        path: (type(leaf), jnp.shape(_value(leaf)))
        for path, leaf in nnx.to_flat_state(state)
    }


def _check_like(tree, template: nnx.State, what: str, where: str) -> None:
    """Raise unless pure dict ``tree`` has the paths and shapes of ``template``."""
    expected = {path: shape for path, (_, shape) in _layout(template).items()}
    if not isinstance(tree, Mapping):
        raise TypeError(
            f"{where}: expected {what} as a nested dict of arrays, "
            f"got {type(tree).__name__}"
        )
    given = {
        path: jnp.shape(leaf)
        for path, leaf in nnx.traversals.flatten_mapping(tree).items()
    }
    missing = sorted(map(_path_str, expected.keys() - given.keys()))
    extra = sorted(map(_path_str, given.keys() - expected.keys()))
    if missing or extra:
        raise ValueError(
            f"{where}: {what} do not match the module's structure; "
            f"missing {missing or 'nothing'}, unexpected {extra or 'nothing'}"
        )
    for path, shape in expected.items():
        if given[path] != shape:
            raise ValueError(
                f"{where}: {what} entry {_path_str(path)!r} has shape "
                f"{given[path]}, the module expects {shape}"
            )


def _filled(template: nnx.State, values) -> nnx.State:
    """A new State like ``template`` holding ``values`` (template untouched)."""
    filled = nnx.from_flat_state(nnx.to_flat_state(template))
    nnx.replace_by_pure_dict(filled, values)
    return filled


def _stream_seed(path: tuple) -> int:
    # Stable across processes (unlike hash()), so a fixed seed reproduces the
    # same noise in every run.
    return zlib.crc32(_path_str(path).encode()) & 0x7FFFFFFF


def _typed_key(key) -> jax.Array:
    key = jnp.asarray(key)
    if is_typed_key(key):
        return key
    return jax.random.wrap_key_data(key)


class NNXBridge(Bridge):
    """Exposes an eager Flax NNX module as pure ``init`` / ``apply`` functions.

    Args:
        name: the module's site name (for error messages).
        nn: an initialised :class:`flax.nnx.Module`.
        input_shape: unused (an NNX module is already initialised).
        args: unused.
        kwargs: unused.
        graph: NNX traversal mode, ``True`` for graph mode and ``False`` for
            tree mode; ``None`` (default) takes the mode current when the
            bridge is made (``nnx.set_graph_mode``).

    Attributes:
        graph: the traversal mode in use.
        graphdef: the cached ``nnx.GraphDef`` the module is rebuilt from.
        streams: one description per RNG stream the module holds, e.g.
            ``"'dropout' at dropout.rngs"``; empty when it holds none.

    Each ``apply`` draws one key from ``key_fn()`` when the module holds RNG
    streams, gives every stream its own key (folded in by a stable hash of the
    stream's path) with its count reset to 0, so each call sees fresh noise
    and a fixed seed reproduces it. A module in eval mode that holds streams
    but draws nothing needs no key.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from probnn.nn.nnx import NNXBridge
        >>> net = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> bridge = NNXBridge("net", net, None, (), {})
        >>> params, state = bridge.init(jax.random.key(0))
        >>> sorted(params), state
        (['bias', 'kernel'], {})
        >>> x = jnp.ones((4, 3))
        >>> y, _, _ = bridge.apply(params, state, None, (x,), {})
        >>> bool(jnp.allclose(y, net(x)))
        True
    """

    kind = "nnx"

    def __init__(
        self,
        name: str,
        nn,
        input_shape,
        args: tuple,
        kwargs: dict,
        *,
        graph: bool | None = None,
    ):
        self.factory = None
        if not isinstance(nn, nnx.Module) and callable(nn):
            # a factory rngs -> module: members of a plate ensemble are built
            # (initialised) from their own keys
            self.factory = nn
            # the bridge is cached with the factory and outlives this trace:
            # the template module is built from concrete values, never from
            # tracers of the trace that first meets the site
            with jax.ensure_compile_time_eval():
                nn = self.factory(nnx.Rngs(0))
        if not isinstance(nn, nnx.Module):
            raise TypeError(
                f"module site {name!r}: expected a flax.nnx.Module instance "
                f"(or a function rngs -> Module), got {type(nn).__name__}"
            )
        super().__init__(name, nn, input_shape, args, kwargs)
        self.graph = _resolve_graph(graph)
        self._adopt(nn)

    def _adopt(self, nn: nnx.Module) -> None:
        self.nn = nn
        graphdef, params, rng_state, state = _split(nn, self.graph)
        self.graphdef = graphdef
        self._params = params
        self._rng_state = rng_state
        self._state = state
        self._state_paths = [path for path, _ in nnx.to_flat_state(state)]
        self.streams = tuple(
            f"{leaf.tag!r} at {_path_str(path[:-1])}"
            for path, leaf in nnx.to_flat_state(rng_state)
            if isinstance(leaf, nnx.RngKey)
        )

    def init(self, key) -> tuple[dict, dict]:
        """The module's parameters and non-parameter state as nested dicts.

        For an eager module ``key`` is unused: the module was initialised when
        it was made, so this returns the values it held when the bridge was
        made. For a factory ``rngs -> module`` the module is built from
        ``nnx.Rngs(key)``, so each key (each plate member) gets its own
        initialisation.
        """
        if self.factory is None:
            return nnx.to_pure_dict(self._params), nnx.to_pure_dict(self._state)
        _, params, _, state = _split(self.factory(nnx.Rngs(key)), self.graph)
        return nnx.to_pure_dict(params), nnx.to_pure_dict(state)

    def apply(
        self,
        params,
        state,
        key_fn: Callable[[], Any] | None,
        args: tuple,
        kwargs: dict,
    ) -> tuple[Any, dict, dict]:
        """One forward pass of the rebuilt module; see :class:`Bridge`.

        Returns the module's output, its updated non-parameter state (e.g.
        BatchNorm running statistics in training mode) with the structure of
        ``state``, gradients stopped, and the ``nnx.Intermediate`` values the
        call sowed (nested by attribute path).
        """
        where = f"module site {self.name!r}"
        _check_like(params, self._params, "params", where)
        _check_like(state, self._state, "state", where)
        no_key = None
        rng_state = self._rng_state
        if self.streams:
            try:
                key = _typed_key(key_fn())
            except Exception as err:  # no seed handler, or no key_fn at all
                no_key, key = err, jax.random.key(0)
            rng_state = self._fresh_rng_state(key)
        # Snapshot the counts: the module updates its Variables in place.
        counts_before = {
            path: leaf.get_raw_value() for path, leaf in nnx.to_flat_state(rng_state)
        }
        module = nnx.merge(
            self.graphdef,
            _filled(self._params, params),
            rng_state,
            _filled(self._state, state),
        )
        captured = {}
        if hasattr(nnx, "capture"):
            # values sown with self.sow(nnx.Intermediate, ...) come back here
            output, captured = nnx.capture(module, nnx.Intermediate)(*args, **kwargs)
            captured = _pure(captured)
        else:  # older Flax: sown values stay on the module (see below)
            output = module(*args, **kwargs)
        _, _, used_rng, new_state = _split(module, self.graph)
        if no_key is not None:
            self._raise_if_drawn(counts_before, used_rng, no_key)
        flat = dict(nnx.to_flat_state(new_state))
        missing = [path for path in self._state_paths if path not in flat]
        if missing:
            raise ValueError(
                f"{where}: the module's call removed state "
                f"{[_path_str(path) for path in missing]}"
            )
        # Variables the call created (not in `state`) are not state, so the
        # returned state keeps the structure the caller passed in; those it
        # sowed for inspection (nnx.Intermediate) are returned beside it.
        new_values = {path: _value(flat[path]) for path in self._state_paths}
        new_state = nnx.traversals.unflatten_mapping(new_values)
        known = set(self._state_paths)
        sown = {
            path: _value(leaf)
            for path, leaf in flat.items()
            if path not in known and isinstance(leaf, nnx.Intermediate)
        }
        if sown:
            captured = {**captured, **nnx.traversals.unflatten_mapping(sown)}
        return output, jax.lax.stop_gradient(new_state), captured

    def _fresh_rng_state(self, key: jax.Array) -> nnx.State:
        fresh = []
        for path, leaf in nnx.to_flat_state(self._rng_state):
            shape = jnp.shape(leaf.get_value())
            if isinstance(leaf, nnx.RngKey):
                stream_key = jax.random.fold_in(key, _stream_seed(path[:-1]))
                if shape:  # a stream split over a batch (nnx.split_rngs)
                    stream_key = jax.random.split(stream_key, shape)
                leaf = leaf.replace(stream_key)
            elif isinstance(leaf, nnx.RngCount):
                leaf = leaf.replace(jnp.zeros(shape, jnp.uint32))
            else:  # a new Variable, so the traced call may update it
                leaf = leaf.replace(leaf.get_value())
            fresh.append((path, leaf))
        return nnx.from_flat_state(fresh)

    def _raise_if_drawn(self, counts_before: dict, after: nnx.State, err) -> None:
        # A stream that handed out a key has a new count value; one that was
        # never called (e.g. Dropout in eval mode) still holds the same zeros.
        drawn = [
            f"{leaf.tag!r} at {_path_str(path[:-1])}"
            for path, leaf in nnx.to_flat_state(after)
            if isinstance(leaf, nnx.RngCount)
            and leaf.get_raw_value() is not counts_before[path]
        ]
        if drawn:
            raise ValueError(
                f"module site {self.name!r}: the NNX module draws random numbers "
                f"from RNG stream(s) {', '.join(drawn)} but no PRNG key is "
                "available; run the model under probnn.handlers.seed, or put "
                "the module in eval mode (module.eval() or nnx.view)"
            ) from err

    def check_same_graph(self, nn) -> None:
        """Raise if ``nn`` cannot use this site's parameters and state.

        Called when the site is met again, possibly with another module
        instance. A module whose Variables differ from the cached ones (other
        layers, other sizes) raises ValueError naming the site. A module with
        the same Variables but other static settings, such as the same
        network after ``module.eval()`` or from ``nnx.view(...)``, is
        adopted: later calls use its settings with the site's values.

        Args:
            nn: the module given at this site now.
        """
        if self.factory is not None and nn is self.factory:
            return  # the same factory met again (one defined at module level)
        if not isinstance(nn, nnx.Module):
            raise TypeError(
                f"module site {self.name!r}: expected a flax.nnx.Module "
                f"instance, got {type(nn).__name__}"
            )
        if nnx.graphdef(nn, graph=self.graph) == self.graphdef:
            return
        _, params, _, state = _split(nn, self.graph)
        changed = sorted(
            _path_str(path)
            for old, new in ((self._params, params), (self._state, state))
            for path, _ in _layout(old).items() ^ _layout(new).items()
        )
        if changed:
            raise ValueError(
                f"module site {self.name!r}: the NNX module has a different "
                f"structure from the one this site was created with (changed "
                f"or new Variables: {sorted(set(changed))}); use a new site "
                "name for a different network"
            )
        self._adopt(nn)


def write_back(
    module: nnx.Module,
    params: Mapping,
    state: Mapping | None = None,
    *,
    graph: bool | None = None,
) -> nnx.Module:
    """A copy of ``module`` holding ``params`` and ``state``.

    Use it to carry values learned by probnn (e.g. ``svi_result.params`` of a
    ``module`` site, and its BatchNorm statistics) back into an ordinary NNX
    module; calling the copy gives the probnn model's predictions. ``module``
    itself is not changed. For a plate ensemble pick one member first, e.g.
    ``jax.tree.map(lambda a: a[i], params)``.

    Args:
        module: an NNX module with the structure the values came from.
        params: nested dict of parameter arrays (a bridge's ``params``).
        state: nested dict of non-parameter state (a bridge's ``state``);
            ``None`` keeps the module's own.
        graph: NNX traversal mode; ``None`` takes the current one.

    Returns:
        A new module; its RNG streams continue from copies of ``module``'s.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from probnn.nn.nnx import write_back
        >>> net = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> trained = {"kernel": jnp.ones((2, 1)), "bias": jnp.full((1,), 0.5)}
        >>> new = write_back(net, trained)
        >>> new(jnp.ones((1, 2))).tolist(), bool((net.bias[...] == 0).all())
        ([[2.5]], True)
    """
    graphdef, params_t, rng_state, state_t = _split(module, _resolve_graph(graph))
    _check_like(params, params_t, "params", "write_back")
    new_params = _filled(params_t, params)
    new_state = state_t
    if state is not None:
        _check_like(state, state_t, "state", "write_back")
        new_state = _filled(state_t, state)
    return nnx.merge(graphdef, new_params, rng_state, new_state, copy=True)
