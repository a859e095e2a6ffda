"""The `Distribution` base class and the shape wrappers every family shares.

Distributions are pytrees. Each class names its array fields in
``pytree_data_fields`` and its static fields in ``pytree_aux_fields``; the base
class does the flattening. When a distribution comes back from
``jax.lax.scan`` or ``jax.vmap`` with extra leading dims on its arrays, those
dims become leading batch dims: a scan over ``T`` steps of ``Normal(0., 1.)``
is a ``Normal`` with batch shape ``(T,)``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from probnn.distributions import constraints
from probnn.distributions.util import (
    is_concrete,
    lead_ones,
    promote_shapes,
    sum_rightmost,
)

__all__ = [
    "Delta",
    "Distribution",
    "ExpandedDistribution",
    "Independent",
    "MaskedDistribution",
    "Unit",
    "enable_validation",
    "validation_enabled",
]

_VALIDATION = {"enabled": False}


def enable_validation(is_validate: bool = True) -> None:
    """Turn argument and support checks on (or off) for distributions created
    afterwards that do not pass ``validate_args`` themselves.

    Checks run on concrete values only; under ``jit`` they are skipped.
    """
    _VALIDATION["enabled"] = bool(is_validate)


@contextlib.contextmanager
def validation_enabled(is_validate: bool = True) -> Iterator[None]:
    """Within the ``with`` block, validation is on (or off with
    ``is_validate=False``) as if by :func:`enable_validation`; the previous
    setting comes back on exit, also when the block raises.

    >>> import probnn.distributions as dist
    >>> with dist.validation_enabled():
    ...     dist.Normal(0.0, -1.0)
    Traceback (most recent call last):
    ...
    ValueError: Normal: parameter 'scale' must satisfy positive, got -1.0
    """
    previous = _VALIDATION["enabled"]
    enable_validation(is_validate)
    try:
        yield
    finally:
        _VALIDATION["enabled"] = previous


def _as_shape(owner: str, name: str, shape) -> tuple[int, ...]:
    """``shape`` as a tuple of ints, or a TypeError naming ``owner`` and ``name``."""
    if isinstance(shape, tuple | list) and all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 0
        for d in shape
    ):
        return tuple(int(d) for d in shape)
    raise TypeError(
        f"{owner}.infer_shapes: the shape of {name!r} must be a tuple of "
        f"non-negative ints, got {shape!r}"
    )


def _broadcast(owner: str, shapes) -> tuple[int, ...]:
    shapes = [tuple(s) for s in shapes]
    try:
        return tuple(np.broadcast_shapes(*shapes)) if shapes else ()
    except ValueError:
        raise ValueError(
            f"{owner}.infer_shapes: parameter batch shapes {shapes} do not broadcast"
        ) from None


def _not_inferable(cls, why: str):
    raise NotImplementedError(f"{cls.__name__}.infer_shapes is not available: {why}")


def _split_event(owner: str, name: str, shape, event_dim: int):
    """``(batch, event)`` parts of a parameter shape whose rightmost
    ``event_dim`` dims are its event."""
    if len(shape) < event_dim:
        raise ValueError(
            f"{owner}.infer_shapes: parameter {name!r} needs at least "
            f"{event_dim} dims, got shape {tuple(shape)}"
        )
    split = len(shape) - event_dim
    return tuple(shape[:split]), tuple(shape[split:])


def _given_one_of(owner: str, shapes: dict, names: tuple[str, ...]) -> str:
    """The one of ``names`` given in ``shapes``; a ValueError otherwise."""
    given = [name for name in names if name in shapes]
    if len(given) != 1:
        raise ValueError(
            f"{owner}.infer_shapes needs the shape of exactly one of "
            f"{', '.join(names)}; got {given or 'none'}"
        )
    return given[0]


def _bind_shapes(cls, args, kwargs, defaults=None) -> dict[str, tuple[int, ...]]:
    """Name the shapes passed to ``cls.infer_shapes`` after the parameters of
    ``cls.__init__``; drops ``None`` (parameters not given)."""
    owner = cls.__name__
    params = [
        p
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name != "validate_args"
    ]
    positional = [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
    if len(args) > len(positional):
        raise TypeError(
            f"{owner}.infer_shapes takes at most {len(positional)} positional "
            f"shapes ({', '.join(positional)}), got {len(args)}"
        )
    named = dict(zip(positional, args))
    known = {p.name for p in params}
    for name, shape in kwargs.items():
        if name not in known:
            raise TypeError(
                f"{owner}.infer_shapes got an unexpected parameter {name!r}; "
                f"expected some of {sorted(known)}"
            )
        if name in named:
            raise TypeError(
                f"{owner}.infer_shapes got multiple shapes for parameter {name!r}"
            )
        named[name] = shape
    for name, shape in (defaults or {}).items():
        named.setdefault(name, shape)
    return {
        name: _as_shape(owner, name, shape)
        for name, shape in named.items()
        if shape is not None
    }


def _holds(constraint, value) -> bool:
    """False only when ``value`` is known to violate ``constraint``."""
    if not is_concrete(value):
        return True
    with jax.ensure_compile_time_eval():
        inside = constraint(value)
        return not is_concrete(inside) or bool(jnp.all(inside))


def _leaf_ndim(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, Distribution):
        return len(value.batch_shape)
    return np.ndim(value)


def _leaf_shape(value) -> tuple[int, ...]:
    if isinstance(value, Distribution):
        return value.batch_shape
    return tuple(np.shape(value))


# Functions consulted, innermost last, whenever a distribution is constructed;
# one may return a stand-in for the distribution (``handlers.collapse`` defers
# the distributions whose parameters are collapsed sites). Empty outside such a
# handler, so construction costs one list test.
_CONSTRUCTION_HOOKS: list = []


class Distribution:
    """Base class of probnn distributions.

    Subclasses call ``super().__init__(batch_shape, event_shape,
    validate_args=...)`` and implement ``sample`` and ``log_prob``.

    Args:
        batch_shape: shape of independent, not identically distributed draws.
        event_shape: shape of a single draw.
        validate_args: check parameters against ``arg_constraints`` now and
            values against ``support`` in ``log_prob``; ``None`` follows
            :func:`enable_validation`.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support: constraints.Constraint = constraints.real
    has_enumerate_support: ClassVar[bool] = False
    has_rsample: ClassVar[bool] = False
    reparametrized_params: ClassVar[tuple[str, ...]] = ()
    pytree_data_fields: ClassVar[tuple[str, ...]] = ()
    pytree_aux_fields: ClassVar[tuple[str, ...]] = ()

    def __new__(cls, *args, **kwargs):
        if _CONSTRUCTION_HOOKS:
            stand_in = _CONSTRUCTION_HOOKS[-1](cls, args, kwargs)
            if stand_in is not None:
                # not an instance of cls, so __init__ is skipped
                return stand_in
        return object.__new__(cls)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, cls._tree_flatten, cls._tree_unflatten)

    def __init__(
        self,
        batch_shape: tuple[int, ...] = (),
        event_shape: tuple[int, ...] = (),
        *,
        validate_args: bool | None = None,
    ):
        self._batch_shape = tuple(int(d) for d in batch_shape)
        self._event_shape = tuple(int(d) for d in event_shape)
        if validate_args is None:
            validate_args = _VALIDATION["enabled"]
        self._validate_args = bool(validate_args)
        if self._validate_args:
            self._check_args()

    # -- pytree --------------------------------------------------------------
    def _tree_flatten(self):
        children = tuple(getattr(self, name) for name in self.pytree_data_fields)
        aux = (
            tuple(getattr(self, name) for name in self.pytree_aux_fields),
            tuple(_leaf_ndim(child) for child in children),
            self._batch_shape,
            self._event_shape,
            self._validate_args,
        )
        return children, aux

    @classmethod
    def _tree_unflatten(cls, aux, children):
        aux_values, ndims, batch_shape, event_shape, validate_args = aux
        self = cls.__new__(cls)
        for name, value in zip(cls.pytree_aux_fields, aux_values):
            setattr(self, name, value)
        for name, value in zip(cls.pytree_data_fields, children):
            setattr(self, name, value)
        # Leaves may have gained leading dims (stacked by scan, batched by
        # vmap) or lost them (indexed); the batch shape follows.
        for child, ndim in zip(children, ndims):
            if ndim is None:
                continue
            shape = _leaf_shape(child)
            extra = len(shape) - ndim
            if extra > 0:
                batch_shape = shape[:extra] + batch_shape
            elif extra < 0:
                batch_shape = batch_shape[-extra:]
            break
        self._batch_shape = tuple(batch_shape)
        self._event_shape = event_shape
        self._validate_args = validate_args
        return self

    # -- shapes --------------------------------------------------------------
    @classmethod
    def infer_shapes(cls, *args, **kwargs) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(batch_shape, event_shape)`` of the distribution that
        ``cls(*params)`` would build from parameters of the given shapes.

        Pass the shape (a tuple) of each parameter in place of the parameter,
        positionally or by name; leave out (or pass ``None`` for) parameters
        not given. Shapes only: values are never looked at.

        By default each parameter's rightmost ``arg_constraints[name].
        event_dim`` dims are its event and the rest broadcast to the batch
        shape, and draws are scalars. Families whose shapes follow another
        rule override this, or raise ``NotImplementedError``.

        >>> import probnn.distributions as dist
        >>> dist.Normal.infer_shapes((3, 1), (4,))
        ((3, 4), ())
        >>> dist.MultivariateNormal.infer_shapes((2,), scale_tril=(5, 2, 2))
        ((5,), (2,))
        """
        support = cls.__dict__.get("support", None)
        if support is None:
            for klass in cls.__mro__:
                if "support" in klass.__dict__:
                    support = klass.__dict__["support"]
                    break
        if isinstance(support, constraints.Constraint) and support.event_dim > 0:
            raise NotImplementedError(
                f"{cls.__name__}.infer_shapes: draws are not scalars (support "
                f"{support!r}), so shapes cannot be inferred by the default rule"
            )
        arg_constraints = cls._static_arg_constraints()
        shapes = _bind_shapes(cls, args, kwargs)
        batch_shapes = []
        for name, shape in shapes.items():
            event_dim = arg_constraints.get(name, constraints.real).event_dim
            batch_shapes.append(_split_event(cls.__name__, name, shape, event_dim)[0])
        return _broadcast(cls.__name__, batch_shapes), ()

    @classmethod
    def _static_arg_constraints(cls) -> dict[str, constraints.Constraint]:
        """``arg_constraints`` as known from the class alone: ``{}`` where it
        is a property of the instance (every parameter then counts as scalar)."""
        for klass in cls.__mro__:
            if "arg_constraints" in klass.__dict__:
                value = klass.__dict__["arg_constraints"]
                return value if isinstance(value, dict) else {}
        return {}

    @property
    def is_discrete(self) -> bool:
        """Whether the support is discrete (a probability mass function)."""
        return bool(self.support.is_discrete)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self._batch_shape

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self._event_shape

    @property
    def event_dim(self) -> int:
        return len(self._event_shape)

    def shape(self, sample_shape: tuple[int, ...] = ()) -> tuple[int, ...]:
        """``sample_shape + batch_shape + event_shape``."""
        return tuple(sample_shape) + self.batch_shape + self.event_shape

    # -- behaviour -----------------------------------------------------------
    def sample(self, key, sample_shape: tuple[int, ...] = ()):
        """Draw samples of shape ``sample_shape + batch_shape + event_shape``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement sample")

    def rsample(self, key, sample_shape: tuple[int, ...] = ()):
        """A reparameterized draw: differentiable with respect to the parameters."""
        if not self.has_rsample:
            raise NotImplementedError(
                f"{type(self).__name__} has no reparameterized sampler"
            )
        return self.sample(key, sample_shape)

    def sample_with_intermediates(self, key, sample_shape=()):
        return self.sample(key, sample_shape), []

    def __call__(self, *args, rng_key=None, sample_shape=(), **kwargs):
        return self.sample(rng_key, sample_shape)

    def log_prob(self, value):
        """Log density (or mass) of ``value``; shape ``sample_shape + batch_shape``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement log_prob")

    @property
    def mean(self):
        raise NotImplementedError(f"{type(self).__name__} has no closed-form mean")

    @property
    def variance(self):
        raise NotImplementedError(f"{type(self).__name__} has no closed-form variance")

    def cdf(self, value):
        """Cumulative distribution function."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form cdf")

    def icdf(self, q):
        """Inverse of :meth:`cdf`."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form icdf")

    def entropy(self):
        """Differential (or discrete) entropy, shape ``batch_shape``."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form entropy")

    def enumerate_support(self, expand: bool = True):
        """All values of a finite discrete distribution along a new leading dim."""
        raise NotImplementedError(
            f"{type(self).__name__} has no finite support to enumerate"
        )

    def expand(self, batch_shape) -> Distribution:
        """Broadcast to a larger ``batch_shape`` (new draws along new dims)."""
        batch_shape = tuple(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        return ExpandedDistribution(self, batch_shape)

    def expand_by(self, sample_shape) -> Distribution:
        return self.expand(tuple(sample_shape) + self.batch_shape)

    def to_event(self, reinterpreted_batch_ndims: int | None = None) -> Distribution:
        """Treat the rightmost batch dims (all of them by default) as event dims."""
        if reinterpreted_batch_ndims is None:
            reinterpreted_batch_ndims = len(self.batch_shape)
        if reinterpreted_batch_ndims == 0:
            return self
        return Independent(self, reinterpreted_batch_ndims)

    def mask(self, mask) -> Distribution:
        """Zero the log density where the boolean ``mask`` is False."""
        if not isinstance(mask, bool) and jnp.result_type(mask) != jnp.bool_:
            raise TypeError(
                f"{type(self).__name__}.mask expects a boolean mask, "
                f"got dtype {jnp.result_type(mask)}"
            )
        if mask is True:
            return self
        return MaskedDistribution(self, mask)

    # -- validation ----------------------------------------------------------
    # Checks run on concrete values only. Inside a jit trace even operations on
    # constants are staged, so they are evaluated at trace time; a check whose
    # outcome depends on traced values (a traced parameter or value, or a
    # support whose bounds are traced) is skipped.
    def _check_args(self) -> None:
        for name, constraint in self.arg_constraints.items():
            self._check_arg(name, constraint, getattr(self, name, None))

    def _check_arg(self, name: str, constraint, value) -> None:
        """Raise if ``value`` of parameter ``name`` is known to violate
        ``constraint``; families that check other values than their
        attributes (e.g. the matrix they were given) call this directly."""
        if value is None or constraints.is_dependent(constraint):
            return
        if not _holds(constraint, value):
            raise ValueError(
                f"{type(self).__name__}: parameter {name!r} must satisfy "
                f"{constraint!r}, got {value!r}"
            )

    def _validate_sample(self, value) -> None:
        if not self._validate_args or constraints.is_dependent(self.support):
            return
        if not _holds(self.support, value):
            raise ValueError(
                f"{type(self).__name__}: value {value!r} is outside the support "
                f"{self.support!r}"
            )

    def __repr__(self):
        return (
            f"{type(self).__name__}(batch_shape={self.batch_shape}, "
            f"event_shape={self.event_shape})"
        )


class _Wrapper(Distribution):
    """A distribution built on ``base_dist``, sharing its support and sampler kind."""

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        _not_inferable(
            cls, "it wraps a distribution, whose shapes are not parameter shapes"
        )

    @property
    def support(self):
        return self.base_dist.support

    @property
    def has_enumerate_support(self):
        return self.base_dist.has_enumerate_support

    @property
    def has_rsample(self):
        return self.base_dist.has_rsample


class ExpandedDistribution(_Wrapper):
    """``base`` broadcast to a larger batch shape with independent draws."""

    pytree_data_fields = ("base_dist",)
    pytree_aux_fields = ()

    def __init__(self, base_dist: Distribution, batch_shape, *, validate_args=None):
        batch_shape = tuple(batch_shape)
        base_shape = base_dist.batch_shape
        compatible = len(batch_shape) >= len(base_shape) and all(
            b in (1, e)
            for b, e in zip(base_shape[::-1], batch_shape[::-1], strict=False)
        )
        if not compatible:
            raise ValueError(
                f"cannot expand {type(base_dist).__name__} with batch shape "
                f"{base_shape} to batch shape {batch_shape}"
            )
        missing = len(batch_shape) - len(base_shape)
        if missing:
            # Give the base the full batch rank (leading singleton dims) so that
            # dims later added by scan or vmap line up with the expanded ones.
            base_dist = jax.tree.map(lambda leaf: lead_ones(leaf, missing), base_dist)
        self.base_dist = base_dist
        super().__init__(batch_shape, base_dist.event_shape, validate_args=False)

    def sample(self, key, sample_shape=()):
        sample_shape = tuple(sample_shape)
        batch = self.batch_shape
        # The base has the full batch rank; its size-1 dims that the expansion
        # widens get independent draws: draw them as extra sample dims, then
        # move each into the place of the size-1 dim it replaces.
        widened = [
            j
            for j, (b, e) in enumerate(zip(self.base_dist.batch_shape, batch))
            if b == 1 and e != 1
        ]
        widths = tuple(batch[j] for j in widened)
        x = self.base_dist.sample(key, sample_shape + widths)
        front = len(sample_shape)
        x = jnp.squeeze(x, axis=tuple(front + len(widths) + j for j in widened))
        kept = [j for j in range(len(batch)) if j not in widened]
        order = list(range(front))
        for j in range(len(batch)):
            if j in widened:
                order.append(front + widened.index(j))
            else:
                order.append(front + len(widths) + kept.index(j))
        order += list(range(front + len(batch), x.ndim))
        return jnp.transpose(x, order)

    def log_prob(self, value):
        log_prob = self.base_dist.log_prob(value)
        shape = jnp.broadcast_shapes(jnp.shape(log_prob), self.batch_shape)
        return jnp.broadcast_to(log_prob, shape)

    def enumerate_support(self, expand=True):
        values = self.base_dist.enumerate_support(expand=False)
        extra = len(self.batch_shape) - len(self.base_dist.batch_shape)
        values = jnp.reshape(values, values.shape[:1] + (1,) * extra + values.shape[1:])
        if expand:
            values = jnp.broadcast_to(
                values, values.shape[:1] + self.batch_shape + self.event_shape
            )
        return values

    @property
    def mean(self):
        return jnp.broadcast_to(self.base_dist.mean, self.shape())

    @property
    def variance(self):
        return jnp.broadcast_to(self.base_dist.variance, self.shape())


class Independent(_Wrapper):
    """Reinterpret the rightmost ``reinterpreted_batch_ndims`` batch dims of
    ``base_dist`` as event dims.

    >>> import probnn.distributions as dist
    >>> d = dist.Normal(jnp.zeros(3), 1.0).to_event(1)
    >>> d.batch_shape, d.event_shape
    ((), (3,))
    """

    pytree_data_fields = ("base_dist",)
    pytree_aux_fields = ("reinterpreted_batch_ndims",)

    def __init__(
        self,
        base_dist: Distribution,
        reinterpreted_batch_ndims: int,
        *,
        validate_args=None,
    ):
        n = int(reinterpreted_batch_ndims)
        if not 0 <= n <= len(base_dist.batch_shape):
            raise ValueError(
                f"Independent: reinterpreted_batch_ndims={reinterpreted_batch_ndims} "
                f"must be between 0 and the {len(base_dist.batch_shape)} batch dims "
                f"of {type(base_dist).__name__}"
            )
        self.base_dist = base_dist
        self.reinterpreted_batch_ndims = n
        split = len(base_dist.batch_shape) - n
        super().__init__(
            base_dist.batch_shape[:split],
            base_dist.batch_shape[split:] + base_dist.event_shape,
            validate_args=False,
        )

    @property
    def support(self):
        return constraints.independent(
            self.base_dist.support, self.reinterpreted_batch_ndims
        )

    @property
    def has_enumerate_support(self):
        return False

    def sample(self, key, sample_shape=()):
        return self.base_dist.sample(key, sample_shape)

    def log_prob(self, value):
        return sum_rightmost(
            self.base_dist.log_prob(value), self.reinterpreted_batch_ndims
        )

    @property
    def mean(self):
        return self.base_dist.mean

    @property
    def variance(self):
        return self.base_dist.variance


class MaskedDistribution(_Wrapper):
    """``base_dist`` whose log density is zero where ``mask`` is False."""

    pytree_data_fields = ("base_dist", "_mask")

    def __init__(self, base_dist: Distribution, mask, *, validate_args=None):
        batch_shape = jnp.broadcast_shapes(jnp.shape(mask), base_dist.batch_shape)
        # Expand the base so masked-off members still get independent draws,
        # and give the mask the full batch rank so added leading dims align.
        self.base_dist = base_dist.expand(batch_shape)
        self._mask = jnp.reshape(
            jnp.asarray(mask),
            (1,) * (len(batch_shape) - jnp.ndim(mask)) + jnp.shape(mask),
        )
        super().__init__(batch_shape, base_dist.event_shape, validate_args=False)

    def sample(self, key, sample_shape=()):
        return self.base_dist.sample(key, sample_shape)

    def log_prob(self, value):
        return jnp.where(self._mask, self.base_dist.log_prob(value), 0.0)

    def enumerate_support(self, expand=True):
        return self.base_dist.enumerate_support(expand)

    @property
    def mean(self):
        return self.base_dist.mean

    @property
    def variance(self):
        return self.base_dist.variance


class Delta(Distribution):
    """Point mass at ``v``, with an optional extra ``log_density``.

    Args:
        v: the point; its rightmost ``event_dim`` dims are the event.
        log_density: added to ``log_prob`` at ``v``.
        event_dim: number of rightmost dims of ``v`` forming one event.
    """

    support = constraints.real
    pytree_data_fields = ("v", "log_density")
    pytree_aux_fields = ("_event_ndim",)
    has_rsample = True

    def __init__(
        self, v=0.0, log_density=0.0, event_dim: int = 0, *, validate_args=None
    ):
        if event_dim > jnp.ndim(v):
            raise ValueError(
                f"Delta: event_dim={event_dim} exceeds the {jnp.ndim(v)} dims of v"
            )
        shape = jnp.shape(v)
        split = len(shape) - event_dim
        batch_shape = jnp.broadcast_shapes(shape[:split], jnp.shape(log_density))
        self.v, self.log_density = promote_shapes(
            v, log_density, event_ndims=(event_dim, 0)
        )
        self._event_ndim = event_dim
        super().__init__(batch_shape, shape[split:], validate_args=validate_args)

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        """Like :meth:`Distribution.infer_shapes`; ``event_dim`` is the int
        given to ``Delta``, not a shape."""
        names = ("v", "log_density", "event_dim")
        if len(args) > len(names):
            raise TypeError(
                f"Delta.infer_shapes takes at most 3 positional arguments, "
                f"got {len(args)}"
            )
        kwargs = {**dict(zip(names, args)), **kwargs}
        event_dim = kwargs.pop("event_dim", 0)
        if isinstance(event_dim, bool) or not isinstance(event_dim, int | np.integer):
            raise TypeError(
                f"Delta.infer_shapes: event_dim must be an int, got {event_dim!r}"
            )
        shapes = _bind_shapes(cls, (), kwargs, {"v": (), "log_density": ()})
        v = shapes["v"]
        if event_dim > len(v):
            raise ValueError(
                f"Delta.infer_shapes: event_dim={event_dim} exceeds the "
                f"{len(v)} dims of v"
            )
        split = len(v) - event_dim
        batch_shape = _broadcast("Delta", [v[:split], shapes["log_density"]])
        return batch_shape, v[split:]

    def sample(self, key, sample_shape=()):
        return jnp.broadcast_to(self.v, tuple(sample_shape) + self.shape())

    def log_prob(self, value):
        log_prob = jnp.log(value == self.v)
        return sum_rightmost(log_prob, self._event_ndim) + self.log_density

    @property
    def mean(self):
        return jnp.broadcast_to(self.v, self.shape())

    @property
    def variance(self):
        return jnp.zeros(self.shape())


class Unit(Distribution):
    """Trivial distribution over the empty value, with log density
    ``log_factor``; what :func:`probnn.factor` records."""

    support = constraints.real
    pytree_data_fields = ("log_factor",)

    def __init__(self, log_factor, *, validate_args=None):
        self.log_factor = log_factor
        super().__init__(jnp.shape(log_factor), (0,), validate_args=validate_args)

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        """The batch shape is that of ``log_factor``; the event is empty, ``(0,)``."""
        shapes = _bind_shapes(cls, args, kwargs, {"log_factor": ()})
        return shapes["log_factor"], (0,)

    def sample(self, key, sample_shape=()):
        return jnp.empty(tuple(sample_shape) + self.batch_shape + (0,))

    def log_prob(self, value):
        shape = jnp.broadcast_shapes(jnp.shape(value)[:-1], self.batch_shape)
        return jnp.broadcast_to(self.log_factor, shape)
