"""Bijective transforms and `biject_to`, the map from a constraint to the
transform that carries unconstrained space onto it.

Every transform has ``__call__``, ``inv``, ``log_abs_det_jacobian(x, y)``
(summed over the transform's event dims), ``forward_shape`` /
``inverse_shape`` and ``domain`` / ``codomain`` constraints whose
``event_dim`` is the transform's input / output event rank.

>>> import jax.numpy as jnp
>>> from jax.scipy.linalg import solve_triangular

from probnn.distributions import constraints
>>> t = biject_to(constraints.positive)
>>> float(t(jnp.array(0.0))), float(t.inv(jnp.array(1.0)))
(1.0, 0.0)
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from probnn.distributions import constraints
from probnn.distributions.util import sum_rightmost

__all__ = [
    "AffineTransform",
    "CholeskyTransform",
    "ComposeTransform",
    "CorrCholeskyTransform",
    "ExpTransform",
    "IdentityTransform",
    "IndependentTransform",
    "LowerCholeskyAffine",
    "LowerCholeskyTransform",
    "OrderedTransform",
    "PermuteTransform",
    "PowerTransform",
    "SigmoidTransform",
    "SoftplusLowerCholeskyTransform",
    "SoftplusTransform",
    "StickBreakingTransform",
    "TanhTransform",
    "Transform",
    "ZeroSumTransform",
    "biject_to",
]


def _clip_unit(y):
    """Keep a value strictly inside (0, 1) in its float precision."""
    finfo = jnp.finfo(jnp.result_type(y, float))
    return jnp.clip(y, finfo.tiny, 1.0 - finfo.eps)


class Transform:
    """Base class of bijections. Subclasses name array fields in
    ``pytree_data_fields`` so transforms pass through ``jit`` and ``vmap``."""

    domain: constraints.Constraint = constraints.real
    codomain: constraints.Constraint = constraints.real
    pytree_data_fields: ClassVar[tuple[str, ...]] = ()
    pytree_aux_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, cls._flatten, cls._unflatten)

    def _flatten(self):
        children = tuple(getattr(self, name) for name in self.pytree_data_fields)
        aux = tuple(getattr(self, name) for name in self.pytree_aux_fields)
        return children, aux

    @classmethod
    def _unflatten(cls, aux, children):
        self = cls.__new__(cls)
        for name, value in zip(cls.pytree_aux_fields, aux):
            setattr(self, name, value)
        for name, value in zip(cls.pytree_data_fields, children):
            setattr(self, name, value)
        return self

    @property
    def inv(self) -> Transform:
        return _InverseTransform(self)

    @property
    def sign(self):
        """``+1`` where the transform is increasing, ``-1`` where decreasing
        (elementwise transforms only)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define a sign (it is not a known "
            "monotone elementwise transform)"
        )

    def __call__(self, x):
        raise NotImplementedError

    def _inverse(self, y):
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        raise NotImplementedError(
            f"{type(self).__name__} does not implement log_abs_det_jacobian"
        )

    def call_with_intermediates(self, x):
        return self(x), None

    def forward_shape(self, shape):
        return tuple(shape)

    def inverse_shape(self, shape):
        return tuple(shape)

    def __repr__(self):
        return f"{type(self).__name__}()"


class _InverseTransform(Transform):
    pytree_data_fields = ("base",)

    def __init__(self, base: Transform):
        self.base = base

    @property
    def domain(self):
        return self.base.codomain

    @property
    def codomain(self):
        return self.base.domain

    @property
    def inv(self):
        return self.base

    @property
    def sign(self):
        return self.base.sign

    def __call__(self, y):
        return self.base._inverse(y)

    def _inverse(self, x):
        return self.base(x)

    def log_abs_det_jacobian(self, y, x, intermediates=None):
        return -self.base.log_abs_det_jacobian(x, y)

    def forward_shape(self, shape):
        return self.base.inverse_shape(shape)

    def inverse_shape(self, shape):
        return self.base.forward_shape(shape)

    def __repr__(self):
        return f"{self.base!r}.inv"


class IdentityTransform(Transform):
    sign = 1

    def __call__(self, x):
        return x

    def _inverse(self, y):
        return y

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return jnp.zeros(jnp.shape(x))


class ExpTransform(Transform):
    codomain = constraints.positive
    sign = 1

    def __call__(self, x):
        return jnp.exp(x)

    def _inverse(self, y):
        return jnp.log(y)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return jnp.asarray(x)


class AffineTransform(Transform):
    """``y = loc + scale * x``; ``domain`` sets the event rank (default real)."""

    pytree_data_fields = ("loc", "scale")
    pytree_aux_fields = ("domain",)

    def __init__(self, loc, scale, domain: constraints.Constraint = constraints.real):
        self.loc = loc
        self.scale = scale
        self.domain = domain

    @property
    def codomain(self):
        base = self.domain
        event_dim = base.event_dim
        if isinstance(base, constraints._Independent):
            base = base.base
        if base is constraints.real:
            codomain = constraints.real
        elif isinstance(base, constraints._GreaterThan | constraints._LessThan):
            # The sign of scale decides the side; it must be a known number.
            lower = isinstance(base, constraints._GreaterThan)
            bound = base.lower_bound if lower else base.upper_bound
            image = self.loc + self.scale * bound
            if lower == bool(jnp.all(jnp.asarray(self.scale) > 0)):
                codomain = constraints.greater_than(image)
            else:
                codomain = constraints.less_than(image)
        elif isinstance(base, constraints._Interval):
            low = self.loc + self.scale * base.lower_bound
            high = self.loc + self.scale * base.upper_bound
            codomain = constraints.interval(
                jnp.minimum(low, high), jnp.maximum(low, high)
            )
        else:
            raise NotImplementedError(
                f"AffineTransform: no codomain for domain {self.domain!r}"
            )
        return constraints.independent(codomain, event_dim) if event_dim else codomain

    @property
    def sign(self):
        return jnp.sign(self.scale)

    def __call__(self, x):
        return self.loc + self.scale * x

    def _inverse(self, y):
        return (y - self.loc) / self.scale

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        shape = jnp.broadcast_shapes(jnp.shape(x), jnp.shape(y))
        log_scale = jnp.broadcast_to(jnp.log(jnp.abs(self.scale)), shape)
        return sum_rightmost(log_scale, self.domain.event_dim)

    def forward_shape(self, shape):
        return tuple(
            jnp.broadcast_shapes(shape, jnp.shape(self.loc), jnp.shape(self.scale))
        )

    def inverse_shape(self, shape):
        return self.forward_shape(shape)


class SigmoidTransform(Transform):
    codomain = constraints.unit_interval
    sign = 1

    def __call__(self, x):
        return _clip_unit(jax.nn.sigmoid(x))

    def _inverse(self, y):
        y = _clip_unit(y)
        return jnp.log(y) - jnp.log1p(-y)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return -jax.nn.softplus(x) - jax.nn.softplus(-x)


class SoftplusTransform(Transform):
    codomain = constraints.softplus_positive
    sign = 1

    def __call__(self, x):
        return jax.nn.softplus(x)

    def _inverse(self, y):
        # log(exp(y) - 1), stable for small and large y.
        return y + jnp.log(-jnp.expm1(-y))

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return -jax.nn.softplus(-x)


class TanhTransform(Transform):
    codomain = constraints.interval(-1.0, 1.0)

    def __call__(self, x):
        finfo = jnp.finfo(jnp.result_type(x, float))
        return jnp.clip(jnp.tanh(x), -1 + finfo.eps, 1 - finfo.eps)

    def _inverse(self, y):
        finfo = jnp.finfo(jnp.result_type(y, float))
        return jnp.arctanh(jnp.clip(y, -1 + finfo.eps, 1 - finfo.eps))

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        # log(1 - tanh(x)^2) written without cancellation.
        return 2.0 * (math.log(2.0) - x - jax.nn.softplus(-2.0 * x))


class PowerTransform(Transform):
    """``y = x ** exponent`` on the positive reals."""

    domain = constraints.positive
    codomain = constraints.positive
    pytree_data_fields = ("exponent",)

    def __init__(self, exponent):
        self.exponent = exponent

    @property
    def sign(self):
        return jnp.sign(self.exponent)

    def __call__(self, x):
        return jnp.power(x, self.exponent)

    def _inverse(self, y):
        return jnp.power(y, 1.0 / self.exponent)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return jnp.log(jnp.abs(self.exponent * y / x))

    def forward_shape(self, shape):
        return tuple(jnp.broadcast_shapes(shape, jnp.shape(self.exponent)))

    def inverse_shape(self, shape):
        return self.forward_shape(shape)


class StickBreakingTransform(Transform):
    """``R^(K-1)`` onto the ``K``-simplex by breaking a unit stick."""

    domain = constraints.real_vector
    codomain = constraints.simplex

    @staticmethod
    def _offset(k):
        # Centre the map so that x = 0 lands on the uniform simplex point.
        return jnp.log(jnp.arange(k, 0, -1, dtype=jnp.result_type(float)))

    def __call__(self, x):
        u = x - self._offset(x.shape[-1])
        z = jax.nn.sigmoid(u)
        # Remaining stick before each break, in log space for stability.
        log_remaining = jnp.cumsum(-jax.nn.softplus(u), axis=-1)
        remaining = jnp.exp(log_remaining)
        ones = jnp.ones(x.shape[:-1] + (1,), remaining.dtype)
        before = jnp.concatenate([ones, remaining[..., :-1]], -1)
        # the last piece is what is left of the stick (all of it when K = 1)
        last = remaining[..., -1:] if x.shape[-1] else ones
        return jnp.concatenate([z * before, last], axis=-1)

    def _inverse(self, y):
        head = y[..., :-1]
        remaining = 1.0 - jnp.cumsum(head, axis=-1) + head
        z = _clip_unit(head / remaining)
        return jnp.log(z) - jnp.log1p(-z) + self._offset(head.shape[-1])

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        u = x - self._offset(x.shape[-1])
        log_remaining = jnp.cumsum(-jax.nn.softplus(u), axis=-1) + jax.nn.softplus(u)
        return jnp.sum(log_remaining - jax.nn.softplus(-u) - jax.nn.softplus(u), -1)

    def forward_shape(self, shape):
        return tuple(shape[:-1]) + (shape[-1] + 1,)

    def inverse_shape(self, shape):
        return tuple(shape[:-1]) + (shape[-1] - 1,)


def _zero_sum_extend(x):
    """``R^m`` onto the zero-sum hyperplane of ``R^(m+1)``, along the last axis.

    The image of ``x`` is ``H (x, 0)`` with ``H`` the Householder reflection
    that swaps the last unit vector with ``-1 / sqrt(n)`` times the vector of
    ones (``n = m + 1``), so lengths and volumes are kept.
    """
    n = x.shape[-1] + 1
    root_n = math.sqrt(n)
    total = jnp.sum(x, axis=-1, keepdims=True)
    return jnp.concatenate([x - total / (n + root_n), -total / root_n], axis=-1)


def _zero_sum_drop(y):
    """Inverse of :func:`_zero_sum_extend`: reflect back, drop the last entry."""
    n = y.shape[-1]
    return y[..., :-1] - y[..., -1:] / (1.0 + math.sqrt(n))


def _along(function, x, axis):
    """Apply ``function`` (which works on the last axis) along ``axis``."""
    return jnp.moveaxis(function(jnp.moveaxis(x, axis, -1)), -1, axis)


class ZeroSumTransform(Transform):
    """Unconstrained arrays onto arrays that sum to zero along each of their
    ``transform_ndims`` rightmost axes; each of those axes grows by one.

    Along every such axis, ``R^(n-1)`` is carried onto the hyperplane
    ``{y in R^n : sum(y) = 0}`` by a rotation-like isometry (a Householder
    reflection of ``(x, 0)``), the construction behind PyMC's and NumPyro's
    zero-sum normal. Being an isometry onto its image it has a log Jacobian
    of zero, taken with respect to the volume of the hyperplane.

    Args:
        transform_ndims: how many rightmost axes are constrained (>= 1).

    >>> import jax.numpy as jnp
    >>> t = ZeroSumTransform()
    >>> y = t(jnp.array([1.0, 2.0]))
    >>> y.shape, round(float(y.sum()), 5)
    ((3,), 0.0)
    >>> t.inv(y)
    Array([1., 2.], dtype=float32)
    """

    pytree_aux_fields = ("transform_ndims",)

    def __init__(self, transform_ndims: int = 1):
        if isinstance(transform_ndims, bool) or not isinstance(
            transform_ndims, int | np.integer
        ):
            raise TypeError(
                "ZeroSumTransform: transform_ndims must be an int, "
                f"got {transform_ndims!r}"
            )
        if transform_ndims < 1:
            raise ValueError(
                f"ZeroSumTransform: transform_ndims must be >= 1, got {transform_ndims}"
            )
        self.transform_ndims = int(transform_ndims)

    @property
    def domain(self):
        return constraints.independent(constraints.real, self.transform_ndims)

    @property
    def codomain(self):
        return constraints.zero_sum(self.transform_ndims)

    def _axes(self, ndim):
        if ndim < self.transform_ndims:
            raise ValueError(
                f"ZeroSumTransform: an input needs at least {self.transform_ndims} "
                f"dims, got {ndim}"
            )
        return range(ndim - self.transform_ndims, ndim)

    def __call__(self, x):
        x = jnp.asarray(x)
        for axis in self._axes(x.ndim):
            x = _along(_zero_sum_extend, x, axis)
        return x

    def _inverse(self, y):
        y = jnp.asarray(y)
        for axis in self._axes(y.ndim):
            y = _along(_zero_sum_drop, y, axis)
        return y

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        k = self.transform_ndims
        x_shape, y_shape = jnp.shape(x), jnp.shape(y)
        shape = jnp.broadcast_shapes(
            x_shape[: len(x_shape) - k], y_shape[: len(y_shape) - k]
        )
        return jnp.zeros(shape, dtype=jnp.result_type(x, float))

    def forward_shape(self, shape):
        shape = tuple(shape)
        split = len(shape) - self.transform_ndims
        if split < 0:
            raise ValueError(
                f"ZeroSumTransform: a shape needs at least {self.transform_ndims} "
                f"dims, got {shape}"
            )
        return shape[:split] + tuple(size + 1 for size in shape[split:])

    def inverse_shape(self, shape):
        shape = tuple(shape)
        split = len(shape) - self.transform_ndims
        if split < 0 or any(size < 1 for size in shape[split:]):
            raise ValueError(
                f"ZeroSumTransform: the last {self.transform_ndims} dims of an "
                f"output shape must exist and be >= 1, got {shape}"
            )
        return shape[:split] + tuple(size - 1 for size in shape[split:])

    def __repr__(self):
        return f"ZeroSumTransform(transform_ndims={self.transform_ndims})"


def _matrix_size(vector_size: int, strict: bool) -> int:
    # vector_size = n(n+1)/2 (with diagonal) or n(n-1)/2 (strictly lower).
    root = math.sqrt(1 + 8 * vector_size)
    n = round((root - 1) / 2) if not strict else round((root + 1) / 2)
    expected = n * (n + 1) // 2 if not strict else n * (n - 1) // 2
    if expected != vector_size:
        raise ValueError(
            f"a vector of length {vector_size} does not fill a triangular matrix"
        )
    return n


def _strict_lower(vector, n):
    rows, cols = jnp.tril_indices(n, -1)
    matrix = jnp.zeros(vector.shape[:-1] + (n, n), vector.dtype)
    return matrix.at[..., rows, cols].set(vector)


def _strict_lower_vector(matrix):
    n = matrix.shape[-1]
    rows, cols = jnp.tril_indices(n, -1)
    return matrix[..., rows, cols]


class LowerCholeskyTransform(Transform):
    """A vector of ``n(n+1)/2`` reals onto lower-triangular matrices with
    positive diagonal: the first ``n(n-1)/2`` entries fill the strictly lower
    part row by row, the last ``n`` are the log of the diagonal."""

    domain = constraints.real_vector
    codomain = constraints.lower_cholesky

    def _diagonal(self, x):
        return jnp.exp(x)

    def _inverse_diagonal(self, d):
        return jnp.log(d)

    def _log_diagonal_jacobian(self, x):
        return jnp.sum(x, axis=-1)

    def __call__(self, x):
        n = _matrix_size(x.shape[-1], strict=False)
        lower = _strict_lower(x[..., :-n], n)
        diagonal = self._diagonal(x[..., -n:])
        return lower + diagonal[..., None] * jnp.eye(n, dtype=x.dtype)

    def _inverse(self, y):
        diagonal = jnp.diagonal(y, axis1=-2, axis2=-1)
        return jnp.concatenate(
            [_strict_lower_vector(y), self._inverse_diagonal(diagonal)], axis=-1
        )

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        n = _matrix_size(x.shape[-1], strict=False)
        return self._log_diagonal_jacobian(x[..., -n:])

    def forward_shape(self, shape):
        n = _matrix_size(shape[-1], strict=False)
        return tuple(shape[:-1]) + (n, n)

    def inverse_shape(self, shape):
        n = shape[-1]
        return tuple(shape[:-2]) + (n * (n + 1) // 2,)


class SoftplusLowerCholeskyTransform(LowerCholeskyTransform):
    """As :class:`LowerCholeskyTransform` with a softplus diagonal."""

    codomain = constraints.softplus_lower_cholesky

    def _diagonal(self, x):
        return jax.nn.softplus(x)

    def _inverse_diagonal(self, d):
        return d + jnp.log(-jnp.expm1(-d))

    def _log_diagonal_jacobian(self, x):
        return jnp.sum(-jax.nn.softplus(-x), axis=-1)


class CorrCholeskyTransform(Transform):
    """A vector of ``n(n-1)/2`` reals onto Cholesky factors of correlation
    matrices: ``tanh`` gives partial correlations, and each row of the factor
    spends what is left of its unit norm on them in turn."""

    domain = constraints.real_vector
    codomain = constraints.corr_cholesky

    def __call__(self, x):
        n = _matrix_size(x.shape[-1], strict=True)
        z = _strict_lower(jnp.tanh(x), n)
        # Left over squared norm of each row before each column.
        leftover = jnp.cumprod(1.0 - z * z, axis=-1)
        before = jnp.concatenate(
            [jnp.ones(z.shape[:-1] + (1,), z.dtype), leftover[..., :-1]], axis=-1
        )
        scale = jnp.sqrt(before)
        eye = jnp.eye(n, dtype=z.dtype)
        return z * scale + eye * scale

    def _inverse(self, y):
        strict = jnp.tril(y, -1)
        used = jnp.cumsum(strict * strict, axis=-1) - strict * strict
        z = strict / jnp.sqrt(jnp.clip(1.0 - used, jnp.finfo(y.dtype).tiny))
        finfo = jnp.finfo(y.dtype)
        z = jnp.clip(z, -1 + finfo.eps, 1 - finfo.eps)
        return jnp.arctanh(_strict_lower_vector(z))

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        n = _matrix_size(x.shape[-1], strict=True)
        tanh_x = jnp.tanh(x)
        # d tanh / dx = 1 - tanh^2, written stably.
        log_tanh_term = 2.0 * (math.log(2.0) - x - jax.nn.softplus(-2.0 * x))
        log_one_minus = _strict_lower(jnp.log1p(-tanh_x * tanh_x), n)
        exclusive = jnp.cumsum(log_one_minus, axis=-1) - log_one_minus
        mask = jnp.tril(jnp.ones((n, n), bool), -1)
        stick = 0.5 * jnp.sum(jnp.where(mask, exclusive, 0.0), axis=(-2, -1))
        return jnp.sum(log_tanh_term, axis=-1) + stick

    def forward_shape(self, shape):
        n = _matrix_size(shape[-1], strict=True)
        return tuple(shape[:-1]) + (n, n)

    def inverse_shape(self, shape):
        n = shape[-1]
        return tuple(shape[:-2]) + (n * (n - 1) // 2,)


class CholeskyTransform(Transform):
    """Positive-definite matrices onto their lower Cholesky factors."""

    domain = constraints.positive_definite
    codomain = constraints.lower_cholesky

    def __call__(self, x):
        return jnp.linalg.cholesky(x)

    def _inverse(self, y):
        return y @ jnp.swapaxes(y, -2, -1)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        # For x = y y^T over the lower-triangular entries:
        # |dx/dy| = 2^n prod_i y_ii^(n - i), i counted from 0.
        n = y.shape[-1]
        powers = jnp.arange(n, 0, -1, dtype=y.dtype)
        log_diagonal = jnp.log(jnp.diagonal(y, axis1=-2, axis2=-1))
        return -(n * math.log(2.0) + jnp.sum(powers * log_diagonal, axis=-1))


class OrderedTransform(Transform):
    """``R^n`` onto increasing vectors: ``y_0 = x_0``, ``y_i = y_{i-1} + exp(x_i)``."""

    domain = constraints.real_vector
    codomain = constraints.ordered_vector

    def __call__(self, x):
        steps = jnp.concatenate([x[..., :1], jnp.exp(x[..., 1:])], axis=-1)
        return jnp.cumsum(steps, axis=-1)

    def _inverse(self, y):
        return jnp.concatenate([y[..., :1], jnp.log(y[..., 1:] - y[..., :-1])], axis=-1)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return jnp.sum(x[..., 1:], axis=-1)


class IndependentTransform(Transform):
    """Treat ``reinterpreted_batch_ndims`` batch dims of ``base_transform`` as
    event dims: the log Jacobian is summed over them."""

    pytree_data_fields = ("base_transform",)
    pytree_aux_fields = ("reinterpreted_batch_ndims",)

    def __init__(self, base_transform: Transform, reinterpreted_batch_ndims: int):
        if reinterpreted_batch_ndims < 0:
            raise ValueError(
                "IndependentTransform: reinterpreted_batch_ndims must be >= 0, "
                f"got {reinterpreted_batch_ndims}"
            )
        self.base_transform = base_transform
        self.reinterpreted_batch_ndims = reinterpreted_batch_ndims

    @property
    def domain(self):
        return constraints.independent(
            self.base_transform.domain, self.reinterpreted_batch_ndims
        )

    @property
    def codomain(self):
        return constraints.independent(
            self.base_transform.codomain, self.reinterpreted_batch_ndims
        )

    def __call__(self, x):
        return self.base_transform(x)

    def _inverse(self, y):
        return self.base_transform._inverse(y)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return sum_rightmost(
            self.base_transform.log_abs_det_jacobian(x, y),
            self.reinterpreted_batch_ndims,
        )

    def forward_shape(self, shape):
        return self.base_transform.forward_shape(shape)

    def inverse_shape(self, shape):
        return self.base_transform.inverse_shape(shape)


class LowerCholeskyAffine(Transform):
    """``y = loc + scale_tril @ x`` on vectors, ``scale_tril`` lower triangular
    (the map from white noise to a multivariate normal).

    >>> import jax.numpy as jnp
    >>> t = LowerCholeskyAffine(jnp.zeros(2), jnp.array([[2.0, 0.0], [1.0, 1.0]]))
    >>> t(jnp.array([1.0, 1.0]))
    Array([2., 2.], dtype=float32)
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    pytree_data_fields = ("loc", "scale_tril")

    def __init__(self, loc, scale_tril):
        self.loc = loc
        self.scale_tril = scale_tril

    def __call__(self, x):
        return self.loc + jnp.einsum("ij,...j->...i", self.scale_tril, x)

    def _inverse(self, y):
        centred = jnp.asarray(y - self.loc)
        flat = jnp.reshape(centred, (-1, centred.shape[-1])).T
        white = solve_triangular(self.scale_tril, flat, lower=True)
        return jnp.reshape(white.T, centred.shape)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(self.scale_tril))))
        return jnp.broadcast_to(log_det, jnp.shape(x)[:-1])


class PermuteTransform(Transform):
    """Reorder the last dim: ``y = x[..., permutation]`` (volume preserving).

    >>> import jax.numpy as jnp
    >>> PermuteTransform(jnp.array([2, 0, 1]))(jnp.array([10.0, 20.0, 30.0]))
    Array([30., 10., 20.], dtype=float32)
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    pytree_aux_fields = ("_order",)

    def __init__(self, permutation):
        order = tuple(int(i) for i in np.asarray(permutation).reshape(-1))
        if sorted(order) != list(range(len(order))):
            raise ValueError(
                "PermuteTransform: permutation must hold each of 0..n-1 once, got "
                f"{list(order)!r}"
            )
        self._order = order

    @property
    def permutation(self):
        return jnp.asarray(self._order)

    def __call__(self, x):
        return jnp.take(x, self.permutation, axis=-1)

    def _inverse(self, y):
        return jnp.take(y, jnp.argsort(self.permutation), axis=-1)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return jnp.zeros(jnp.shape(x)[:-1], jnp.result_type(x, float))


class ComposeTransform(Transform):
    """Apply ``parts`` in order; log Jacobians add up at a common event rank."""

    pytree_data_fields = ("parts",)

    def __init__(self, parts: list[Transform]):
        if not parts:
            raise ValueError("ComposeTransform: parts must not be empty")
        self.parts = list(parts)

    @property
    def sign(self):
        sign = 1
        for part in self.parts:
            sign = sign * part.sign
        return sign

    def _event_dims(self):
        """Input event rank of the composition, and of each part's input."""
        rank = self.parts[0].domain.event_dim
        ranks = []
        for part in self.parts:
            rank = max(rank, part.domain.event_dim)
            ranks.append(rank)
            rank += part.codomain.event_dim - part.domain.event_dim
        return ranks[0], ranks, rank

    @property
    def domain(self):
        input_rank, _, _ = self._event_dims()
        domain = self.parts[0].domain
        extra = input_rank - domain.event_dim
        return constraints.independent(domain, extra) if extra else domain

    @property
    def codomain(self):
        _, _, output_rank = self._event_dims()
        codomain = self.parts[-1].codomain
        extra = output_rank - codomain.event_dim
        return constraints.independent(codomain, extra) if extra else codomain

    def __call__(self, x):
        for part in self.parts:
            x = part(x)
        return x

    def _inverse(self, y):
        for part in reversed(self.parts):
            y = part._inverse(y)
        return y

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        _, ranks, _ = self._event_dims()
        total = 0.0
        for part, rank in zip(self.parts, ranks):
            out = part(x)
            term = part.log_abs_det_jacobian(x, out)
            total = total + sum_rightmost(term, rank - part.domain.event_dim)
            x = out
        return total

    def forward_shape(self, shape):
        for part in self.parts:
            shape = part.forward_shape(shape)
        return tuple(shape)

    def inverse_shape(self, shape):
        for part in reversed(self.parts):
            shape = part.inverse_shape(shape)
        return tuple(shape)


def biject_to(constraint: constraints.Constraint) -> Transform:
    """The transform from unconstrained reals onto ``constraint``.

        >>> from jax.scipy.linalg import solve_triangular

    from probnn.distributions import constraints
        >>> type(biject_to(constraints.simplex)).__name__
        'StickBreakingTransform'
    """
    c = constraint
    if c is constraints.real:
        return IdentityTransform()
    if isinstance(c, constraints._Independent):
        return IndependentTransform(biject_to(c.base), c.reinterpreted_batch_ndims)
    if c is constraints.softplus_positive:
        return SoftplusTransform()
    if c is constraints.positive or c is constraints.nonnegative:
        return ExpTransform()
    if isinstance(c, constraints._GreaterThan):
        shift = AffineTransform(c.lower_bound, 1.0, domain=constraints.positive)
        return ComposeTransform([ExpTransform(), shift])
    if isinstance(c, constraints._LessThan):
        flip = AffineTransform(c.upper_bound, -1.0, domain=constraints.positive)
        return ComposeTransform([ExpTransform(), flip])
    if c is constraints.unit_interval:
        return SigmoidTransform()
    if isinstance(c, constraints._Interval):
        width = c.upper_bound - c.lower_bound
        stretch = AffineTransform(
            c.lower_bound, width, domain=constraints.unit_interval
        )
        return ComposeTransform([SigmoidTransform(), stretch])
    if c is constraints.simplex:
        return StickBreakingTransform()
    if c is constraints.ordered_vector:
        return OrderedTransform()
    if c is constraints.softplus_lower_cholesky:
        return SoftplusLowerCholeskyTransform()
    if c is constraints.lower_cholesky:
        return LowerCholeskyTransform()
    if c is constraints.corr_cholesky:
        return CorrCholeskyTransform()
    if isinstance(c, constraints._ZeroSum):
        return ZeroSumTransform(c.event_dim)
    if c is constraints.positive_definite:
        return ComposeTransform([LowerCholeskyTransform(), CholeskyTransform().inv])
    raise NotImplementedError(
        f"biject_to: no bijection from unconstrained space onto {c!r}"
        + (" (a discrete constraint)" if c.is_discrete else "")
    )
