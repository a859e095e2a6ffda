"""Constraints: the sets that parameters and supports live in.

A constraint is called on a value and returns a boolean array over the batch
(its ``event_dim`` rightmost dims are reduced). ``feasible_like(x)`` gives a
point inside the set with the shape of ``x``; :func:`probnn.distributions.
transforms.biject_to` maps each constraint that has one to a bijection from
unconstrained space.

>>> import jax.numpy as jnp
>>> from probnn.distributions import constraints
>>> bool(constraints.positive(jnp.array(2.0)))
True
>>> constraints.simplex(jnp.array([0.2, 0.8])).shape
()
"""

from __future__ import annotations

import math

import jax.numpy as jnp

__all__ = [
    "Constraint",
    "boolean",
    "circular",
    "corr_cholesky",
    "corr_matrix",
    "dependent",
    "greater_than",
    "greater_than_eq",
    "independent",
    "integer_greater_than",
    "integer_interval",
    "interval",
    "is_dependent",
    "less_than",
    "lower_cholesky",
    "multinomial",
    "nonnegative",
    "nonnegative_integer",
    "open_interval",
    "ordered_vector",
    "positive",
    "positive_definite",
    "positive_integer",
    "positive_semidefinite",
    "real",
    "real_matrix",
    "real_vector",
    "simplex",
    "softplus_lower_cholesky",
    "softplus_positive",
    "sphere",
    "unit_interval",
]


def _fill(value, prototype):
    dtype = jnp.result_type(prototype, float)
    return jnp.broadcast_to(jnp.asarray(value, dtype), jnp.shape(prototype))


class Constraint:
    """Base class: ``constraint(x)`` is a boolean array over the batch dims of x.

    Its ``event_dim`` rightmost dims are reduced.
    """

    event_dim = 0
    is_discrete = False

    def __call__(self, x):
        raise NotImplementedError

    def feasible_like(self, prototype):
        """A value inside the constraint with the shape of ``prototype``."""
        return jnp.zeros_like(prototype)

    def __repr__(self):
        return type(self).__name__.strip("_").lower()


class _Real(Constraint):
    def __call__(self, x):
        return jnp.isfinite(x)

    def __repr__(self):
        return "real"


class _GreaterThan(Constraint):
    def __init__(self, lower_bound):
        self.lower_bound = lower_bound

    def __call__(self, x):
        return x > self.lower_bound

    def feasible_like(self, prototype):
        return _fill(self.lower_bound + 1, prototype)

    def __repr__(self):
        return f"greater_than({self.lower_bound})"


class _GreaterThanEq(_GreaterThan):
    def __call__(self, x):
        return x >= self.lower_bound

    def __repr__(self):
        return f"greater_than_eq({self.lower_bound})"


class _Positive(_GreaterThan):
    def __init__(self):
        super().__init__(0.0)

    def __repr__(self):
        return "positive"


class _Nonnegative(_GreaterThanEq):
    def __init__(self):
        super().__init__(0.0)

    def __repr__(self):
        return "nonnegative"


class _SoftplusPositive(_Positive):
    def __repr__(self):
        return "softplus_positive"


class _LessThan(Constraint):
    def __init__(self, upper_bound):
        self.upper_bound = upper_bound

    def __call__(self, x):
        return x < self.upper_bound

    def feasible_like(self, prototype):
        return _fill(self.upper_bound - 1, prototype)

    def __repr__(self):
        return f"less_than({self.upper_bound})"


class _Interval(Constraint):
    def __init__(self, lower_bound, upper_bound):
        self.lower_bound = lower_bound
        self.upper_bound = upper_bound

    def __call__(self, x):
        return (x >= self.lower_bound) & (x <= self.upper_bound)

    def feasible_like(self, prototype):
        return _fill((self.lower_bound + self.upper_bound) / 2, prototype)

    def __repr__(self):
        return f"interval({self.lower_bound}, {self.upper_bound})"


class _OpenInterval(_Interval):
    def __call__(self, x):
        return (x > self.lower_bound) & (x < self.upper_bound)

    def __repr__(self):
        return f"open_interval({self.lower_bound}, {self.upper_bound})"


class _UnitInterval(_Interval):
    def __init__(self):
        super().__init__(0.0, 1.0)

    def __repr__(self):
        return "unit_interval"


class _Circular(_Interval):
    def __init__(self):
        super().__init__(-math.pi, math.pi)

    def __repr__(self):
        return "circular"


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


class _IntegerGreaterThan(Constraint):
    is_discrete = True

    def __init__(self, lower_bound):
        self.lower_bound = lower_bound

    def __call__(self, x):
        return (x >= self.lower_bound) & (x == jnp.floor(x))

    def feasible_like(self, prototype):
        return jnp.broadcast_to(self.lower_bound, jnp.shape(prototype))

    def __repr__(self):
        return f"integer_greater_than({self.lower_bound})"


class _Boolean(Constraint):
    is_discrete = True

    def __call__(self, x):
        return (x == 0) | (x == 1)

    def __repr__(self):
        return "boolean"


class _Multinomial(Constraint):
    """Non-negative integer vectors summing to ``upper_bound``."""

    is_discrete = True
    event_dim = 1

    def __init__(self, upper_bound):
        self.upper_bound = upper_bound

    def __call__(self, x):
        whole = jnp.all((x >= 0) & (x == jnp.floor(x)), axis=-1)
        return whole & (jnp.sum(x, axis=-1) == self.upper_bound)

    def feasible_like(self, prototype):
        first = jnp.zeros_like(prototype).at[..., 0].set(1)
        return first * jnp.expand_dims(jnp.asarray(self.upper_bound), -1)

    def __repr__(self):
        return f"multinomial({self.upper_bound})"


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


class _OrderedVector(Constraint):
    event_dim = 1

    def __call__(self, x):
        finite = jnp.all(jnp.isfinite(x), axis=-1)
        return finite & jnp.all(x[..., 1:] > x[..., :-1], axis=-1)

    def feasible_like(self, prototype):
        steps = jnp.arange(jnp.shape(prototype)[-1], dtype=jnp.result_type(float))
        return jnp.broadcast_to(steps - steps.mean(), jnp.shape(prototype))

    def __repr__(self):
        return "ordered_vector"


class _Sphere(Constraint):
    event_dim = 1

    def __call__(self, x):
        return jnp.abs(jnp.linalg.norm(x, axis=-1) - 1) < 1e-5

    def feasible_like(self, prototype):
        return jnp.zeros_like(prototype).at[..., 0].set(1)

    def __repr__(self):
        return "sphere"


def _identity_like(prototype):
    n = jnp.shape(prototype)[-1]
    return jnp.broadcast_to(
        jnp.eye(n, dtype=jnp.result_type(float)), jnp.shape(prototype)
    )


class _LowerCholesky(Constraint):
    """Lower-triangular matrices with positive diagonal."""

    event_dim = 2

    def __call__(self, x):
        lower = jnp.all(jnp.triu(x, 1) == 0, axis=(-2, -1))
        diagonal = jnp.diagonal(x, axis1=-2, axis2=-1)
        return lower & jnp.all(diagonal > 0, axis=-1)

    def feasible_like(self, prototype):
        return _identity_like(prototype)

    def __repr__(self):
        return "lower_cholesky"


class _SoftplusLowerCholesky(_LowerCholesky):
    def __repr__(self):
        return "softplus_lower_cholesky"


class _CorrCholesky(Constraint):
    """Cholesky factors of correlation matrices: lower triangular, positive
    diagonal, rows of unit norm."""

    event_dim = 2

    def __call__(self, x):
        unit_rows = jnp.all(jnp.abs(jnp.linalg.norm(x, axis=-1) - 1) < 1e-4, axis=-1)
        return _LowerCholesky()(x) & unit_rows

    def feasible_like(self, prototype):
        return _identity_like(prototype)

    def __repr__(self):
        return "corr_cholesky"


def _is_symmetric(x):
    # Relative to the entries' size, so large float32 matrices are not rejected.
    gap = jnp.abs(x - jnp.swapaxes(x, -2, -1))
    return jnp.all(gap <= 1e-6 * (1 + jnp.abs(x)), axis=(-2, -1))


class _PositiveDefinite(Constraint):
    event_dim = 2

    def __call__(self, x):
        return _is_symmetric(x) & jnp.all(jnp.linalg.eigvalsh(x) > 0, axis=-1)

    def feasible_like(self, prototype):
        return _identity_like(prototype)

    def __repr__(self):
        return "positive_definite"


class _PositiveSemidefinite(_PositiveDefinite):
    def __call__(self, x):
        return _is_symmetric(x) & jnp.all(jnp.linalg.eigvalsh(x) >= 0, axis=-1)

    def __repr__(self):
        return "positive_semidefinite"


class _CorrMatrix(_PositiveDefinite):
    def __call__(self, x):
        unit_diagonal = jnp.all(
            jnp.abs(jnp.diagonal(x, axis1=-2, axis2=-1) - 1) < 1e-6, axis=-1
        )
        return super().__call__(x) & unit_diagonal

    def __repr__(self):
        return "corr_matrix"


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
    """Support that depends on other variables; it cannot be checked."""

    def __init__(self, is_discrete: bool = False, event_dim: int = 0):
        self.is_discrete = is_discrete
        self.event_dim = event_dim

    def __call__(self, x):
        raise ValueError("cannot check a dependent constraint")

    def __repr__(self):
        return "dependent"


def is_dependent(constraint: Constraint) -> bool:
    return isinstance(constraint, _Dependent)


boolean = _Boolean()
circular = _Circular()
corr_cholesky = _CorrCholesky()
corr_matrix = _CorrMatrix()
dependent = _Dependent()
greater_than = _GreaterThan
greater_than_eq = _GreaterThanEq
independent = _Independent
integer_greater_than = _IntegerGreaterThan
integer_interval = _IntegerInterval
interval = _Interval
less_than = _LessThan
lower_cholesky = _LowerCholesky()
multinomial = _Multinomial
nonnegative = _Nonnegative()
nonnegative_integer = _IntegerGreaterThan(0)
open_interval = _OpenInterval
ordered_vector = _OrderedVector()
positive = _Positive()
positive_definite = _PositiveDefinite()
positive_integer = _IntegerGreaterThan(1)
positive_semidefinite = _PositiveSemidefinite()
real = _Real()
real_matrix = _Independent(real, 2)
real_vector = _Independent(real, 1)
simplex = _Simplex()
softplus_lower_cholesky = _SoftplusLowerCholesky()
softplus_positive = _SoftplusPositive()
sphere = _Sphere()
unit_interval = _UnitInterval()
