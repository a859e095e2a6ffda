"""Constraints: the sets that parameters and supports live in.

A constraint is called on a value and returns a boolean array over the batch
(its ``event_dim`` rightmost dims are reduced).

>>> import jax.numpy as jnp
>>> from probnn.distributions import constraints
>>> bool(constraints.positive(jnp.array(2.0)))
True
>>> constraints.simplex(jnp.array([0.2, 0.8])).shape
()
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = [
    "Constraint",
    "boolean",
    "dependent",
    "greater_than",
    "independent",
    "integer_interval",
    "interval",
    "nonnegative_integer",
    "positive",
    "real",
    "real_vector",
    "simplex",
    "unit_interval",
]


class Constraint:
    """Base class: ``constraint(x)`` is a boolean array over the batch dims of x.

    Its ``event_dim`` rightmost dims are reduced.
    """

    event_dim = 0
    is_discrete = False

    def __call__(self, x):
        raise NotImplementedError

    def feasible_like(self, prototype):
        """A value inside the constraint with the shape and dtype of ``prototype``."""
        return jnp.zeros_like(prototype)

    def __repr__(self):
        return type(self).__name__.strip("_").lower()


class _Real(Constraint):
    def __call__(self, x):
        return (x == x) & (x != jnp.inf) & (x != -jnp.inf)

    def __repr__(self):
        return "real"


class _GreaterThan(Constraint):
    def __init__(self, lower_bound):
        self.lower_bound = lower_bound

    def __call__(self, x):
        return x > self.lower_bound

    def feasible_like(self, prototype):
        return jnp.broadcast_to(self.lower_bound + 1, jnp.shape(prototype)).astype(
            jnp.result_type(prototype, float)
        )

    def __repr__(self):
        return f"greater_than({self.lower_bound})"


class _Positive(_GreaterThan):
    def __init__(self):
        super().__init__(0.0)

    def __repr__(self):
        return "positive"


class _Interval(Constraint):
    def __init__(self, lower_bound, upper_bound):
        self.lower_bound = lower_bound
        self.upper_bound = upper_bound

    def __call__(self, x):
        return (x >= self.lower_bound) & (x <= self.upper_bound)

    def feasible_like(self, prototype):
        middle = (self.lower_bound + self.upper_bound) / 2
        return jnp.broadcast_to(middle, jnp.shape(prototype)).astype(
            jnp.result_type(prototype, float)
        )

    def __repr__(self):
        return f"interval({self.lower_bound}, {self.upper_bound})"


class _UnitInterval(_Interval):
    def __init__(self):
        super().__init__(0.0, 1.0)

    def __repr__(self):
        return "unit_interval"


class _IntegerInterval(Constraint):
    is_discrete = True

    def __init__(self, lower_bound, upper_bound):
        self.lower_bound = lower_bound
        self.upper_bound = upper_bound

    def __call__(self, x):
        return (x >= self.lower_bound) & (x <= self.upper_bound) & (x == jnp.floor(x))

    def feasible_like(self, prototype):
        return jnp.broadcast_to(self.lower_bound, jnp.shape(prototype))

    def __repr__(self):
        return f"integer_interval({self.lower_bound}, {self.upper_bound})"


class _NonnegativeInteger(Constraint):
    is_discrete = True

    def __call__(self, x):
        return (x >= 0) & (x == jnp.floor(x))

    def __repr__(self):
        return "nonnegative_integer"


class _Boolean(Constraint):
    is_discrete = True

    def __call__(self, x):
        return (x == 0) | (x == 1)

    def __repr__(self):
        return "boolean"


class _Simplex(Constraint):
    event_dim = 1

    def __call__(self, x):
        x = jnp.asarray(x)
        total = jnp.sum(x, axis=-1)
        return jnp.all(x >= 0, axis=-1) & (jnp.abs(total - 1) < 1e-4 * x.shape[-1])

    def feasible_like(self, prototype):
        return jnp.full_like(prototype, 1 / jnp.shape(prototype)[-1])

    def __repr__(self):
        return "simplex"


class _Independent(Constraint):
    """Treat ``reinterpreted_batch_ndims`` batch dims of ``base`` as event dims."""

    def __init__(self, base: Constraint, reinterpreted_batch_ndims: int):
        if reinterpreted_batch_ndims < 0:
            raise ValueError(
                "independent(): reinterpreted_batch_ndims must be >= 0, "
                f"got {reinterpreted_batch_ndims}"
            )
        self.base = base
        self.reinterpreted_batch_ndims = reinterpreted_batch_ndims
        self.event_dim = base.event_dim + reinterpreted_batch_ndims
        self.is_discrete = base.is_discrete

    def __call__(self, x):
        result = self.base(x)
        if self.reinterpreted_batch_ndims:
            axes = tuple(range(-self.reinterpreted_batch_ndims, 0))
            result = jnp.all(result, axis=axes)
        return result

    def feasible_like(self, prototype):
        return self.base.feasible_like(prototype)

    def __repr__(self):
        return f"independent({self.base!r}, {self.reinterpreted_batch_ndims})"


class _Dependent(Constraint):
    """Placeholder for supports that depend on other variables; not checkable."""

    def __call__(self, x):
        raise ValueError("cannot check a dependent constraint")

    def __repr__(self):
        return "dependent"


boolean = _Boolean()
dependent = _Dependent()
greater_than = _GreaterThan
independent = _Independent
integer_interval = _IntegerInterval
interval = _Interval
nonnegative_integer = _NonnegativeInteger()
positive = _Positive()
real = _Real()
real_vector = _Independent(real, 1)
simplex = _Simplex()
unit_interval = _UnitInterval()
