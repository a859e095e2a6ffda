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
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

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
    "zero_sum",
]


def _fill(value, prototype):
    dtype = jnp.result_type(prototype, float)
    return jnp.broadcast_to(jnp.asarray(value, dtype), jnp.shape(prototype))


def _same_value(a, b) -> bool:
    """Static equality of two constraint parameters.

    Concrete values are equal when they broadcast to equal arrays; a traced
    value is only equal to itself.
    """
    if a is b:
        return True
    if isinstance(a, Constraint) or isinstance(b, Constraint):
        return a == b
    if isinstance(a, jax.core.Tracer) or isinstance(b, jax.core.Tracer):
        return False
    try:
        return bool(np.array_equiv(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):
        return False


def _value_hash(value) -> int:
    """A hash that agrees with :func:`_same_value`: equal values hash alike.

    Arrays whose entries all agree hash like that single entry (they equal it
    under broadcasting); other arrays and traced values share one hash.
    """
    if isinstance(value, Constraint):
        return hash(value)
    if isinstance(value, jax.core.Tracer):
        return 0
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return 0
    if array.size == 0:
        return 0
    first = array.reshape(-1)[0]
    if array.size > 1 and not bool(np.all(array == first)):
        return 0
    try:
        return hash(first.item())
    except TypeError:
        return 0


class Constraint:
    """Base class: ``constraint(x)`` is a boolean array over the batch dims of x.

    Its ``event_dim`` rightmost dims are reduced. Constraints are pytrees:
    the bounds of parametrised constraints (``interval``, ``greater_than``,
    ...) are leaves, so those constraints pass through ``jax.jit`` and
    ``jax.vmap``; parameter-free ones (``real``, ``positive``, ...) have no
    leaves and are singletons. Two constraints are equal when they describe
    the same set: same kind, equal parameters.

    Subclasses name their array parameters in ``_leaf_names`` and their
    static ones in ``_aux_names``; ``_family`` is the class whose parameters
    define equality (``positive`` is ``greater_than(0.)``).
    """

    event_dim = 0
    is_discrete = False
    _leaf_names: ClassVar[tuple[str, ...]] = ()
    _aux_names: ClassVar[tuple[str, ...]] = ()
    _family: ClassVar[type]
    _singleton: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_family" not in cls.__dict__:
            cls._family = cls
        jax.tree_util.register_pytree_node(cls, cls._tree_flatten, cls._tree_unflatten)

    def __new__(cls, *args, **kwargs):
        if not cls.__dict__.get("_singleton", False):
            return super().__new__(cls)
        instance = cls.__dict__.get("_instance")
        if instance is None:
            instance = super().__new__(cls)
            cls._instance = instance
        return instance

    # -- pytree --------------------------------------------------------------
    def _tree_flatten(self):
        leaves = tuple(getattr(self, name) for name in self._leaf_names)
        aux = tuple(getattr(self, name) for name in self._aux_names)
        return leaves, aux

    @classmethod
    def _tree_unflatten(cls, aux, leaves):
        if cls.__dict__.get("_singleton", False):
            return cls()
        self = object.__new__(cls)
        for name, value in zip(cls._aux_names, aux):
            setattr(self, name, value)
        for name, value in zip(cls._leaf_names, leaves):
            setattr(self, name, value)
        return self

    # -- checking ------------------------------------------------------------
    def __call__(self, x):
        raise NotImplementedError

    def check(self, value):
        """Boolean array over ``sample_shape + batch_shape``: whether each
        event of ``value`` lies in the set (the same as calling the
        constraint)."""
        return self(value)

    def feasible_like(self, prototype):
        """A value inside the constraint with the shape of ``prototype``."""
        return jnp.zeros_like(prototype)

    # -- equality ------------------------------------------------------------
    def _key(self):
        """``(family, reinterpreted dims, parameters)`` deciding equality."""
        family = self._family
        names = family._leaf_names + family._aux_names
        return family, 0, tuple(getattr(self, name) for name in names)

    def __eq__(self, other):
        if self is other:
            return True
        if not isinstance(other, Constraint):
            return NotImplemented
        family, ndims, params = self._key()
        other_family, other_ndims, other_params = other._key()
        if family is not other_family or ndims != other_ndims:
            return False
        return all(_same_value(a, b) for a, b in zip(params, other_params))

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self):
        family, ndims, params = self._key()
        return hash((family, ndims, tuple(_value_hash(p) for p in params)))

    def __repr__(self):
        return type(self).__name__.strip("_").lower()


class _Real(Constraint):
    _singleton = True

    def __call__(self, x):
        return jnp.isfinite(x)

    def __repr__(self):
        return "real"


class _GreaterThan(Constraint):
    _leaf_names = ("lower_bound",)

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
    _family = _GreaterThan
    _leaf_names = ()
    _singleton = True

    def __init__(self):
        super().__init__(0.0)

    def __repr__(self):
        return "positive"


class _Nonnegative(_GreaterThanEq):
    _family = _GreaterThanEq
    _leaf_names = ()
    _singleton = True

    def __init__(self):
        super().__init__(0.0)

    def __repr__(self):
        return "nonnegative"


class _SoftplusPositive(_Positive):
    _singleton = True

    def __repr__(self):
        return "softplus_positive"


class _LessThan(Constraint):
    _leaf_names = ("upper_bound",)

    def __init__(self, upper_bound):
        self.upper_bound = upper_bound

    def __call__(self, x):
        return x < self.upper_bound

    def feasible_like(self, prototype):
        return _fill(self.upper_bound - 1, prototype)

    def __repr__(self):
        return f"less_than({self.upper_bound})"


class _Interval(Constraint):
    _leaf_names = ("lower_bound", "upper_bound")

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
    _family = _Interval
    _leaf_names = ()
    _singleton = True

    def __init__(self):
        super().__init__(0.0, 1.0)

    def __repr__(self):
        return "unit_interval"


class _Circular(_Interval):
    _family = _Interval
    _leaf_names = ()
    _singleton = True

    def __init__(self):
        super().__init__(-math.pi, math.pi)

    def __repr__(self):
        return "circular"


class _IntegerInterval(Constraint):
    is_discrete = True
    _leaf_names = ("lower_bound", "upper_bound")

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
    _leaf_names = ("lower_bound",)

    def __init__(self, lower_bound):
        self.lower_bound = lower_bound

    def __call__(self, x):
        return (x >= self.lower_bound) & (x == jnp.floor(x))

    def feasible_like(self, prototype):
        return jnp.broadcast_to(self.lower_bound, jnp.shape(prototype))

    def __repr__(self):
        return f"integer_greater_than({self.lower_bound})"


class _NonnegativeInteger(_IntegerGreaterThan):
    _family = _IntegerGreaterThan
    _leaf_names = ()
    _singleton = True

    def __init__(self):
        super().__init__(0)


class _PositiveInteger(_IntegerGreaterThan):
    _family = _IntegerGreaterThan
    _leaf_names = ()
    _singleton = True

    def __init__(self):
        super().__init__(1)


class _Boolean(Constraint):
    is_discrete = True
    _singleton = True

    def __call__(self, x):
        return (x == 0) | (x == 1)

    def __repr__(self):
        return "boolean"


class _Multinomial(Constraint):
    """Non-negative integer vectors summing to ``upper_bound``."""

    is_discrete = True
    _leaf_names = ("upper_bound",)
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
    _singleton = True

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
    _singleton = True

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
    _singleton = True

    def __call__(self, x):
        return jnp.abs(jnp.linalg.norm(x, axis=-1) - 1) < 1e-5

    def feasible_like(self, prototype):
        return jnp.zeros_like(prototype).at[..., 0].set(1)

    def __repr__(self):
        return "sphere"


class _ZeroSum(Constraint):
    """Arrays whose sum along each of their ``event_dim`` rightmost axes is
    zero (up to float rounding): ``x.sum(axis=a) == 0`` for every event axis
    ``a``.

    A sum counts as zero when it is within ``10 * eps * n * max(1, max|x|)``
    of it, ``n`` the length of the axis summed and ``max|x|`` taken over the
    event, the tolerance NumPyro uses; non-finite entries are never inside.

    >>> import jax.numpy as jnp
    >>> bool(zero_sum(1)(jnp.array([1.0, -3.0, 2.0])))
    True
    >>> zero_sum(2)(jnp.zeros((4, 2, 3))).shape
    (4,)
    """

    _aux_names = ("event_dim",)

    def __init__(self, event_dim: int = 1):
        if isinstance(event_dim, bool) or not isinstance(event_dim, int | np.integer):
            raise TypeError(f"zero_sum(): event_dim must be an int, got {event_dim!r}")
        if event_dim < 1:
            raise ValueError(f"zero_sum(): event_dim must be >= 1, got {event_dim}")
        self.event_dim = int(event_dim)

    def __call__(self, x):
        x = jnp.asarray(x)
        if x.ndim < self.event_dim:
            raise ValueError(
                f"zero_sum({self.event_dim}): a value needs at least "
                f"{self.event_dim} dims, got shape {x.shape}"
            )
        axes = tuple(range(-self.event_dim, 0))
        eps = jnp.finfo(jnp.result_type(x, float)).eps
        largest = jnp.max(jnp.abs(x), axis=axes, keepdims=True, initial=0.0)
        magnitude = jnp.maximum(largest, 1.0)
        inside = jnp.ones(x.shape[: x.ndim - self.event_dim], dtype=bool)
        for axis in axes:
            total = jnp.sum(x, axis=axis, keepdims=True)
            tolerance = 10 * eps * x.shape[axis] * magnitude
            small = jnp.isfinite(total) & (jnp.abs(total) <= tolerance)
            inside = inside & jnp.all(small, axis=axes)
        return inside

    def feasible_like(self, prototype):
        return jnp.zeros_like(prototype)

    def __repr__(self):
        return f"zero_sum({self.event_dim})"


def _identity_like(prototype):
    n = jnp.shape(prototype)[-1]
    return jnp.broadcast_to(
        jnp.eye(n, dtype=jnp.result_type(float)), jnp.shape(prototype)
    )


class _LowerCholesky(Constraint):
    """Lower-triangular matrices with positive diagonal."""

    event_dim = 2
    _singleton = True

    def __call__(self, x):
        lower = jnp.all(jnp.triu(x, 1) == 0, axis=(-2, -1))
        diagonal = jnp.diagonal(x, axis1=-2, axis2=-1)
        return lower & jnp.all(diagonal > 0, axis=-1)

    def feasible_like(self, prototype):
        return _identity_like(prototype)

    def __repr__(self):
        return "lower_cholesky"


class _SoftplusLowerCholesky(_LowerCholesky):
    _family = _LowerCholesky
    _singleton = True

    def __repr__(self):
        return "softplus_lower_cholesky"


class _CorrCholesky(Constraint):
    """Cholesky factors of correlation matrices: lower triangular, positive
    diagonal, rows of unit norm."""

    event_dim = 2
    _singleton = True

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
    _singleton = True

    def __call__(self, x):
        return _is_symmetric(x) & jnp.all(jnp.linalg.eigvalsh(x) > 0, axis=-1)

    def feasible_like(self, prototype):
        return _identity_like(prototype)

    def __repr__(self):
        return "positive_definite"


class _PositiveSemidefinite(_PositiveDefinite):
    _singleton = True

    def __call__(self, x):
        return _is_symmetric(x) & jnp.all(jnp.linalg.eigvalsh(x) >= 0, axis=-1)

    def __repr__(self):
        return "positive_semidefinite"


class _CorrMatrix(_PositiveDefinite):
    _singleton = True

    def __call__(self, x):
        unit_diagonal = jnp.all(
            jnp.abs(jnp.diagonal(x, axis1=-2, axis2=-1) - 1) < 1e-6, axis=-1
        )
        return super().__call__(x) & unit_diagonal

    def __repr__(self):
        return "corr_matrix"


class _Independent(Constraint):
    """Treat ``reinterpreted_batch_ndims`` batch dims of ``base`` as event dims."""

    _leaf_names = ("base",)
    _aux_names = ("reinterpreted_batch_ndims",)

    def __init__(self, base: Constraint, reinterpreted_batch_ndims: int):
        if not isinstance(base, Constraint):
            raise TypeError(
                f"independent(): base must be a Constraint, got {type(base).__name__}"
            )
        if (
            isinstance(reinterpreted_batch_ndims, bool)
            or not isinstance(reinterpreted_batch_ndims, int | np.integer)
            or reinterpreted_batch_ndims < 0
        ):
            raise ValueError(
                "independent(): reinterpreted_batch_ndims must be an int >= 0, "
                f"got {reinterpreted_batch_ndims!r}"
            )
        self.base = base
        self.reinterpreted_batch_ndims = int(reinterpreted_batch_ndims)

    @property
    def base_constraint(self) -> Constraint:
        """The wrapped constraint (NumPyro's name for :attr:`base`)."""
        return self.base

    @property
    def event_dim(self) -> int:
        return self.base.event_dim + self.reinterpreted_batch_ndims

    @property
    def is_discrete(self) -> bool:
        return self.base.is_discrete

    def _key(self):
        # independent(independent(c, 1), 1) is the same set as independent(c, 2).
        family, ndims, params = self.base._key()
        return family, ndims + self.reinterpreted_batch_ndims, params

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

    _aux_names = ("is_discrete", "event_dim")

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
nonnegative_integer = _NonnegativeInteger()
open_interval = _OpenInterval
ordered_vector = _OrderedVector()
positive = _Positive()
positive_definite = _PositiveDefinite()
positive_integer = _PositiveInteger()
positive_semidefinite = _PositiveSemidefinite()
real = _Real()
real_matrix = _Independent(real, 2)
real_vector = _Independent(real, 1)
simplex = _Simplex()
softplus_lower_cholesky = _SoftplusLowerCholesky()
softplus_positive = _SoftplusPositive()
sphere = _Sphere()
unit_interval = _UnitInterval()
zero_sum = _ZeroSum
