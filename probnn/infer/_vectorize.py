"""Horizontal batching of a traced step.

A model written site by site (``for i in range(50): sample(f"z{i}", ...)``)
traces to the same few equations repeated once per site, and optax updates
every param leaf on its own. XLA compiles each of those repetitions as its
own kernel, so compile time grows with the number of sites. :func:`call`
traces a function to a jaxpr and evaluates it with every group of
independent, isomorphic equations (the same primitive with the same
parameters on inputs of the same types, at the same depth of the graph)
bound once, through ``jax.vmap``, on the stacked inputs. Values computed by a
batched equation stay stacked ("lanes" of one array) until something needs
them one by one, so chains of isomorphic equations stay batched end to end.

Each batched equation computes every member's result with the same
primitive and parameters, so results equal the unbatched ones (up to the
association order of reductions inside XLA).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

# groups smaller than this run equation by equation: stacking two or three
# values costs about what it saves
MIN_GROUP = 4
# values larger than this (elements per member) are batched only when they
# are already lanes of one array, never copied into a new stack
MAX_COPY = 4096
# primitives that are never batched or merged (batched, a ``cond`` would run
# both branches and a ``while`` every member's iterations)
_OPAQUE = frozenset(
    {
        "cond",
        "while",
        "rng_uniform",
        "sharding_constraint",
        "device_put",
        "mesh_cast",
        "reshard",
        "optimization_barrier",
    }
)


class _Op:
    __slots__ = ("prim", "params", "ins", "outs", "ctx", "key", "index")


def _hashable(value):
    if isinstance(value, jcore.Jaxpr | jcore.ClosedJaxpr):
        return ("jaxpr", id(value))
    try:
        hash(value)
    except TypeError:
        if isinstance(value, np.ndarray) and value.size <= 16:
            return ("array", value.dtype.str, value.shape, value.tobytes())
        return ("object", id(value))
    if isinstance(value, tuple):
        return tuple(_hashable(v) for v in value)
    return value


def _literal_key(value, dtype):
    """Scalar literals of one dtype batch together (differing values
    become a constant operand); other literals only with themselves."""
    if np.ndim(value) == 0:
        return ("literal", np.dtype(dtype).str)
    return ("object", id(value))


def _unspecified(sharding) -> bool:
    return type(sharding).__name__ == "UnspecifiedValue"


class _Program:
    """A closed jaxpr flattened into ops on integer value ids, with plain
    ``jit`` calls inlined (their bodies batch with the code around them)."""

    def __init__(self, closed: jcore.ClosedJaxpr):
        self.ops: list[_Op] = []
        self.avals: list = []
        self.consts: dict[int, object] = {}
        self.effects = False
        env: dict = {}
        self._bind_consts(closed, env)
        self.inputs = [self._define(v, env) for v in closed.jaxpr.invars]
        self._flatten(closed.jaxpr, env)
        self.outputs = [self._atom(v, env) for v in closed.jaxpr.outvars]

    def _new(self, aval) -> int:
        self.avals.append(aval)
        return len(self.avals) - 1

    def _define(self, var, env) -> int:
        index = self._new(var.aval)
        env[var] = ("var", index)
        return index

    def _bind_consts(self, closed, env):
        for var, value in zip(closed.jaxpr.constvars, closed.consts):
            self.consts[self._define(var, env)] = value

    @staticmethod
    def _atom(var, env):
        if isinstance(var, jcore.Literal):
            return ("literal", var.val, var.aval.dtype)
        return env[var]

    def _inlinable(self, eqn) -> bool:
        params = eqn.params
        return (
            eqn.primitive.name in ("jit", "pjit")
            and not params.get("compiler_options_kvs")
            and all(_unspecified(s) for s in params["in_shardings"])
            and all(_unspecified(s) for s in params["out_shardings"])
        )

    def _flatten(self, jaxpr, env):
        for eqn in jaxpr.eqns:
            if eqn.effects:
                self.effects = True
            ins = [self._atom(v, env) for v in eqn.invars]
            if self._inlinable(eqn):
                inner = eqn.params["jaxpr"]
                sub: dict = {}
                self._bind_consts(inner, sub)
                sub.update(zip(inner.jaxpr.invars, ins))
                self._flatten(inner.jaxpr, sub)
                for var, out in zip(eqn.outvars, inner.jaxpr.outvars):
                    if not isinstance(var, jcore.DropVar):
                        env[var] = self._atom(out, sub)
                continue
            op = _Op()
            op.prim, op.params, op.ins, op.ctx = eqn.primitive, eqn.params, ins, eqn.ctx
            op.outs = [self._define(v, env) for v in eqn.outvars]
            op.index = len(self.ops)
            op.key = self._key(eqn, ins)
            self.ops.append(op)

    def _key(self, eqn, ins):
        """Ops with equal keys (at equal depth) are batched together; None
        keeps an op on its own. (A jaxpr with effects is never batched.)"""
        name = eqn.primitive.name
        if name in _OPAQUE or "callback" in name:  # pure_callback has no effect
            return None
        params = eqn.params
        if name == "slice" and ins[0][0] == "var":
            strides = params["strides"]
            if strides is None or all(s == 1 for s in strides):
                # slices of one array at different offsets: one wider slice
                return ("slice", ins[0][1], eqn.outvars[0].aval)
            return None
        try:
            key = (
                eqn.primitive,
                tuple(sorted((k, _hashable(v)) for k, v in params.items())),
                tuple(
                    _literal_key(a[1], a[2]) if a[0] == "literal" else self.avals[a[1]]
                    for a in ins
                ),
            )
            hash(key)
        except TypeError:
            return None
        return key


def _runs(lanes):
    """Consecutive lanes of one source merged: ``[source, start, stop]``."""
    runs: list = []
    for source, k in lanes:
        last = runs[-1] if runs else None
        if last is not None and last[0] is source and last[2] == k:
            last[2] += 1
        else:
            runs.append([source, k, k + 1])
    return runs


class _Evaluator:
    def __init__(self, program: _Program):
        self.program = program
        self.values: dict[int, object] = dict(program.consts)
        self.lanes: dict[int, tuple] = {}
        # outputs of repeated computations -> the id that holds the value
        self.same: dict[int, int] = {}

    # -- values -------------------------------------------------------------

    def value(self, index: int):
        index = self.same.get(index, index)
        try:
            return self.values[index]
        except KeyError:
            source, k = self.lanes[index]
            value = lax.index_in_dim(source, k, keepdims=False)
            self.values[index] = value
            return value

    def read(self, atom):
        return atom[1] if atom[0] == "literal" else self.value(atom[1])

    def _size(self, index: int) -> int:
        return math.prod(self.program.avals[index].shape)

    def _free(self, indices) -> bool:
        """Whether stacking these values needs no copy of a big array."""
        if self._size(indices[0]) <= MAX_COPY:
            return True
        lanes = [self.lanes.get(self.same.get(i, i)) for i in indices]
        return None not in lanes and len(_runs(lanes)) == 1

    def stack(self, indices: Sequence[int]):
        """The values of ``indices`` stacked along a new leading axis, built
        from the arrays they are lanes of where possible."""
        indices = [self.same.get(i, i) for i in indices]
        lanes = [self.lanes.get(i) for i in indices]
        loose = list(
            dict.fromkeys(i for i, lane in zip(indices, lanes) if lane is None)
        )
        if len(loose) == len(indices):
            return jnp.stack([self.value(i) for i in indices])
        if loose:
            # the values that are no lanes become the rows of one more source
            extra = jnp.stack([self.value(i) for i in loose])
            rows = {i: k for k, i in enumerate(loose)}
            lanes = [
                (extra, rows[i]) if lane is None else lane
                for i, lane in zip(indices, lanes)
            ]
        runs = _runs(lanes)
        if len(runs) <= 4:
            parts = [
                source
                if start == 0 and stop == source.shape[0]
                else lax.slice_in_dim(source, start, stop)
                for source, start, stop in runs
            ]
            return parts[0] if len(parts) == 1 else jnp.concatenate(parts)
        # scattered lanes: one gather from the sources laid end to end
        offsets: dict[int, int] = {}
        sources = []
        for source, _ in lanes:
            if id(source) not in offsets:
                offsets[id(source)] = sum(s.shape[0] for s in sources)
                sources.append(source)
        joined = sources[0] if len(sources) == 1 else jnp.concatenate(sources)
        positions = np.array([offsets[id(s)] + k for s, k in lanes])
        return jnp.take(
            joined,
            positions,
            axis=0,
            unique_indices=len(set(positions.tolist())) == len(positions),
            indices_are_sorted=bool(np.all(np.diff(positions) > 0)),
        )

    # -- ops ----------------------------------------------------------------

    def run(self) -> None:
        depth: dict[int, int] = {}
        groups: dict = {}
        for op in self.program.ops:
            level = 1 + max(
                (depth.get(a[1], 0) for a in op.ins if a[0] == "var"), default=0
            )
            for out in op.outs:
                depth[out] = level
            key = (level, op.key) if op.key is not None else (level, op.index)
            groups.setdefault(key, []).append(op)
        for (_level, _), ops in sorted(
            groups.items(), key=lambda item: (item[0][0], item[1][0].index)
        ):
            if len(ops) == 1:
                self.single(ops[0])
            elif ops[0].prim.name == "slice":
                self.slices(ops)
            else:
                self.batch(ops)

    def single(self, op: _Op) -> None:
        with op.ctx.manager:
            out = op.prim.bind(
                *map(self.read, op.ins), **op.prim.get_bind_params(op.params)
            )
        if not op.prim.multiple_results:
            out = [out]
        self.values.update(zip(op.outs, out))

    def _alias(self, ops: list[_Op]) -> None:
        """The same computation repeated: computed once."""
        self.single(ops[0])
        for op in ops[1:]:
            for out, first in zip(op.outs, ops[0].outs):
                self.same[out] = first

    def _canonical(self, atom):
        if atom[0] == "var" and atom[1] in self.same:
            return ("var", self.same[atom[1]])
        return atom

    def batch(self, ops: list[_Op]) -> None:
        first = ops[0]
        columns = []
        constants = {}
        for j in range(len(first.ins)):
            column = [self._canonical(op.ins[j]) for op in ops]
            atom = column[0]
            if atom[0] == "literal":
                values = np.array([np.asarray(a[1]) for a in column], atom[2])
                if np.all(values == values[0]) or np.all(values != values):
                    columns.append(None)
                else:
                    constants[j] = values
                    columns.append([])
                continue
            shared = all(a == atom for a in column)
            columns.append(None if shared else [a[1] for a in column])
        if all(column is None for column in columns):
            self._alias(ops)
            return
        if len(ops) < MIN_GROUP or not all(
            self._free(c)
            for c in columns
            if c  # constants are small
        ):
            for op in ops:
                self.single(op)
            return
        inputs = [
            self.read(self._canonical(atom))
            if column is None
            else constants[j]
            if j in constants
            else self.stack(column)
            for j, (atom, column) in enumerate(zip(first.ins, columns))
        ]
        axes = [None if column is None else 0 for column in columns]
        params = first.prim.get_bind_params(first.params)

        def bind(*args):
            return first.prim.bind(*args, **params)

        with first.ctx.manager:
            out = jax.vmap(bind, in_axes=axes)(*inputs)
        if not first.prim.multiple_results:
            out = [out]
        for k, op in enumerate(ops):
            for index, stacked in zip(op.outs, out):
                self.lanes[index] = (stacked, k)

    def slices(self, ops: list[_Op]) -> None:
        """Slices of one array at offsets stepping by the slice width along
        one axis: one slice of the whole range, reshaped."""
        starts = np.array([op.params["start_indices"] for op in ops])
        width = np.array(ops[0].params["limit_indices"]) - starts[0]
        varying = np.flatnonzero(np.any(starts != starts[0], axis=0))
        if len(ops) >= MIN_GROUP and len(varying) == 1:
            axis = int(varying[0])
            if np.all(np.diff(starts[:, axis]) == width[axis]):
                source = self.value(ops[0].ins[0][1])
                lower = [int(s) for s in starts[0]]
                upper = [int(s + w) for s, w in zip(starts[0], width)]
                upper[axis] = lower[axis] + len(ops) * int(width[axis])
                whole = lax.slice(source, lower, upper)
                shape = list(whole.shape)
                shape[axis : axis + 1] = [len(ops), int(width[axis])]
                stacked = jnp.moveaxis(whole.reshape(shape), axis, 0)
                for k, op in enumerate(ops):
                    self.lanes[op.outs[0]] = (stacked, k)
                return
        for op in ops:
            self.single(op)


def call(
    fn: Callable,
    avals: Sequence,
    given: dict,
    lanes: dict,
    stacked_outputs: Sequence[Sequence[int]] = (),
):
    """Evaluate ``fn`` with isomorphic equations batched.

    Args:
        fn: a function of ``len(avals)`` arrays returning a list of arrays.
        avals: ``jax.ShapeDtypeStruct`` (or arrays) of every input.
        given: input position -> its value.
        lanes: input position -> ``(stack, k)``: the input is ``stack[k]``.
        stacked_outputs: groups of output positions to return stacked.

    Returns:
        ``(outputs, stacks)``: every output not in a group (None for those
        that are), and one stacked array per group.
    """
    closed = jax.make_jaxpr(fn)(*avals)
    program = _Program(closed)
    grouped = {p for group in stacked_outputs for p in group}
    evaluator = _Evaluator(program)
    for position, index in enumerate(program.inputs):
        if position in lanes:
            evaluator.lanes[index] = lanes[position]
        else:
            evaluator.values[index] = given[position]
    if program.effects:
        # effects keep their program order: evaluate equation by equation
        for op in program.ops:
            evaluator.single(op)
    else:
        evaluator.run()
    outputs = [
        None if p in grouped else evaluator.read(atom)
        for p, atom in enumerate(program.outputs)
    ]
    stacks = []
    for group in stacked_outputs:
        atoms = [evaluator._canonical(program.outputs[p]) for p in group]
        if all(atom[0] == "var" for atom in atoms):
            stacks.append(evaluator.stack([atom[1] for atom in atoms]))
        else:
            stacks.append(jnp.stack([evaluator.read(atom) for atom in atoms]))
    return outputs, stacks
