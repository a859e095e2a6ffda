"""Which named inputs each output of a JAX computation is computed from.

:class:`~probnn.infer.elbo.TraceGraph_ELBO` multiplies the score of each
guide draw that is not reparameterizable only by the cost terms that depend
on it. :func:`input_dependencies` finds those dependencies without computing
anything: it traces a function of the draws to a jaxpr (from their shapes and
dtypes alone) and carries through every equation the set of inputs each
intermediate value was computed from. Calls (``jit``, custom derivatives,
``checkpoint``), ``cond`` and ``scan`` are followed inside; any other
equation makes each of its outputs depend on all of its operands. The sets
may therefore overstate a dependency, never miss one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

__all__ = ["input_dependencies"]

_NOTHING: frozenset = frozenset()

# primitives that run a sub-program once on exactly their own operands
_CALLS = frozenset(
    {
        "checkpoint",
        "closed_call",
        "core_call",
        "custom_jvp_call",
        "custom_vjp_call",
        "custom_vjp_call_jaxpr",
        "jit",
        "pjit",
        "remat",
        "remat2",
    }
)


def input_dependencies(fn: Callable, inputs: dict):
    """The inputs that each output of ``fn(inputs)`` depends on.

    ``fn`` is traced once with abstract values of the shapes and dtypes of
    ``inputs`` (a dict of arrays, or pytrees of arrays, by name); nothing is
    evaluated. Values ``fn`` closes over count as constants.

    Returns:
        ``fn``'s output pytree with each array leaf replaced by the
        frozenset of the names in ``inputs`` it was computed from.

    >>> deps = input_dependencies(
    ...     lambda v: {"s": v["a"] + 1.0, "t": v["a"] * v["b"], "u": 2.0},
    ...     {"a": 0.0, "b": 1.0},
    ... )
    >>> sorted(deps["s"]), sorted(deps["t"]), sorted(deps["u"])
    (['a'], ['a', 'b'], [])
    """
    # the same dict structure flattens in the same (sorted) order
    labels = jax.tree.leaves(
        {
            name: jax.tree.map(lambda _, n=name: n, value)
            for name, value in inputs.items()
        }
    )
    avals = jax.tree.map(
        lambda value: jax.ShapeDtypeStruct(jnp.shape(value), jnp.result_type(value)),
        inputs,
    )
    closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(avals)
    found = _propagate(closed.jaxpr, [frozenset({label}) for label in labels])
    return jax.tree.unflatten(jax.tree.structure(out_shapes), found)


def _propagate(jaxpr: Jaxpr, sources: Sequence[frozenset]) -> list[frozenset]:
    """The sources of each output of ``jaxpr`` given those of its inputs
    (constants and literals have none)."""
    env = dict(zip(jaxpr.invars, sources, strict=True))

    def read(atom):
        return _NOTHING if isinstance(atom, Literal) else env.get(atom, _NOTHING)

    for eqn in jaxpr.eqns:
        env.update(zip(eqn.outvars, _equation(eqn, [read(a) for a in eqn.invars])))
    return [read(atom) for atom in jaxpr.outvars]


def _equation(eqn, sources: list[frozenset]) -> list[frozenset]:
    kind = eqn.primitive.name
    if kind in _CALLS:
        program = _called_program(eqn)
        if program is not None:
            return _propagate(program, sources)
    elif kind == "cond":
        return _cond(eqn, sources)
    elif kind == "scan":
        return _scan(eqn, sources)
    everything = _NOTHING.union(*sources)
    return [everything] * len(eqn.outvars)


def _called_program(eqn) -> Jaxpr | None:
    for key in ("jaxpr", "call_jaxpr"):
        program = eqn.params.get(key)
        if isinstance(program, ClosedJaxpr):
            program = program.jaxpr
        if (
            isinstance(program, Jaxpr)
            and len(program.invars) == len(eqn.invars)
            and len(program.outvars) == len(eqn.outvars)
        ):
            return program
    return None


def _cond(eqn, sources):
    """Each output: the branch index's sources and the output's in any branch."""
    index, operands = sources[0], sources[1:]
    found = [index] * len(eqn.outvars)
    for branch in eqn.params["branches"]:
        found = [
            old | new for old, new in zip(found, _propagate(branch.jaxpr, operands))
        ]
    return found


def _scan(eqn, sources):
    """Run the body's dependencies until the carry's stop growing: a carry
    depends on whatever reaches it in any number of steps."""
    n_consts, n_carry = eqn.params["num_consts"], eqn.params["num_carry"]
    body = eqn.params["jaxpr"].jaxpr
    consts = sources[:n_consts]
    carry = sources[n_consts : n_consts + n_carry]
    xs = sources[n_consts + n_carry :]
    while True:
        found = _propagate(body, [*consts, *carry, *xs])
        grown = [old | new for old, new in zip(carry, found[:n_carry])]
        if grown == carry:
            return [*carry, *found[n_carry:]]
        carry = grown
