"""Multivariate continuous families."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import betaln, digamma, gammaln

from probnn.distributions import constraints
from probnn.distributions.continuous import Normal
from probnn.distributions.distribution import (
    Distribution,
    _bind_shapes,
    _broadcast,
    _given_one_of,
    _not_inferable,
    _split_event,
)
from probnn.distributions.transformed import TransformedDistribution
from probnn.distributions.transforms import ZeroSumTransform
from probnn.distributions.util import (
    batch_shape_of,
    promote_shapes,
    sum_rightmost,
    xlogy,
)

__all__ = [
    "Dirichlet",
    "GaussianRandomWalk",
    "LKJCholesky",
    "LowRankMultivariateNormal",
    "MultivariateNormal",
    "MultivariateStudentT",
    "ZeroSumNormal",
]

_LOG_2PI = math.log(2 * math.pi)


# -- linear algebra helpers ----------------------------------------------------


def _as_float(x):
    return jnp.asarray(x, dtype=jnp.result_type(x, float))


def _solve_lower(tril, rhs):
    """Solve ``tril @ y = rhs`` for vectors ``rhs`` (..., n), broadcasting batches.

    Leading dims of ``rhs`` that ``tril`` lacks (sample dims, typically) become
    extra right-hand-side columns of a single solve, so ``tril`` is not copied
    once per draw.
    """
    n = tril.shape[-1]
    batch = jnp.broadcast_shapes(tril.shape[:-2], rhs.shape[:-1])
    n_lead = len(batch) - (tril.ndim - 2)
    lead, rest = batch[:n_lead], batch[n_lead:]
    tril = jnp.broadcast_to(tril, rest + (n, n))
    rhs = jnp.broadcast_to(rhs, batch + (n,))
    columns = math.prod(lead)
    # (lead..., rest..., n) -> (rest..., n, columns)
    rhs = jnp.reshape(rhs, (columns,) + rest + (n,))
    rhs = jnp.moveaxis(rhs, 0, -1)
    solution = solve_triangular(tril, rhs, lower=True)
    solution = jnp.moveaxis(solution, -1, 0)
    return jnp.reshape(solution, batch + (n,))


def _half_log_det(tril):
    """``log |det(tril)|`` of a triangular matrix: half the log-determinant of
    ``tril @ tril.T``."""
    return jnp.sum(jnp.log(jnp.diagonal(tril, axis1=-2, axis2=-1)), axis=-1)


def _outer_self(tril):
    return jnp.matmul(tril, jnp.swapaxes(tril, -2, -1))


def _inverse_from_tril(tril):
    """``inv(tril @ tril.T)`` from two triangular solves."""
    n = tril.shape[-1]
    identity = jnp.broadcast_to(jnp.eye(n, dtype=tril.dtype), tril.shape)
    tril_inv = solve_triangular(tril, identity, lower=True)
    return jnp.matmul(jnp.swapaxes(tril_inv, -2, -1), tril_inv)


def _cholesky_of_inverse(precision):
    """Lower Cholesky factor of ``inv(precision)`` without forming the inverse.

    With ``J`` the exchange matrix, ``chol(J P J) = F`` gives ``P = U U^T`` with
    ``U = J F J`` upper triangular, hence ``inv(P) = U^{-T} U^{-1}`` and
    ``U^{-T}`` is the lower factor sought.
    """
    flipped = jnp.flip(precision, axis=(-2, -1))
    upper = jnp.flip(jnp.linalg.cholesky(flipped), axis=(-2, -1))
    n = precision.shape[-1]
    identity = jnp.broadcast_to(jnp.eye(n, dtype=upper.dtype), upper.shape)
    upper_inv = solve_triangular(upper, identity, lower=False)
    return jnp.swapaxes(upper_inv, -2, -1)


def _matvec(matrix, vector):
    return jnp.squeeze(jnp.matmul(matrix, vector[..., None]), axis=-1)


def _check_square(name, owner, matrix):
    shape = jnp.shape(matrix)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(
            f"{owner}: {name} must be a (batch of) square matrices, got shape {shape}"
        )


# -- Dirichlet -------------------------------------------------------------------


class Dirichlet(Distribution):
    """Dirichlet distribution over the probability simplex.

    Args:
        concentration: positive concentrations; the rightmost dim is the event.

    >>> import jax.numpy as jnp
    >>> d = Dirichlet(jnp.ones(3))
    >>> float(d.log_prob(jnp.array([0.2, 0.3, 0.5])))  # log Gamma(3) = log 2
    0.693...
    """

    arg_constraints = {
        "concentration": constraints.independent(constraints.positive, 1)
    }
    support = constraints.simplex
    has_rsample = True
    reparametrized_params = ("concentration",)
    pytree_data_fields = ("concentration",)

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        """The last dim of ``concentration`` is the event."""
        shapes = _bind_shapes(cls, args, kwargs)
        if "concentration" not in shapes:
            raise ValueError("Dirichlet.infer_shapes needs the concentration shape")
        return _split_event(cls.__name__, "concentration", shapes["concentration"], 1)

    def __init__(self, concentration, *, validate_args=None):
        if jnp.ndim(concentration) < 1:
            raise ValueError(
                "Dirichlet: concentration must have at least one dim (the event), "
                f"got shape {jnp.shape(concentration)}"
            )
        self.concentration = _as_float(concentration)
        shape = jnp.shape(concentration)
        super().__init__(shape[:-1], shape[-1:], validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        draws = jax.random.dirichlet(key, self.concentration, shape=shape)
        # Small concentrations underflow to exact zeros (log density -inf or
        # nan); keep draws strictly inside the simplex.
        finfo = jnp.finfo(draws.dtype)
        return jnp.clip(draws, finfo.tiny, 1 - finfo.eps)

    def log_prob(self, value):
        self._validate_sample(value)
        alpha = self.concentration
        log_norm = jnp.sum(gammaln(alpha), axis=-1) - gammaln(jnp.sum(alpha, -1))
        return jnp.sum(xlogy(alpha - 1, value), axis=-1) - log_norm

    @property
    def mean(self):
        alpha = self.concentration
        return alpha / jnp.sum(alpha, axis=-1, keepdims=True)

    @property
    def variance(self):
        alpha = self.concentration
        total = jnp.sum(alpha, axis=-1, keepdims=True)
        return alpha * (total - alpha) / (jnp.square(total) * (total + 1))

    def entropy(self):
        alpha = self.concentration
        total = jnp.sum(alpha, axis=-1)
        k = alpha.shape[-1]
        log_norm = jnp.sum(gammaln(alpha), axis=-1) - gammaln(total)
        return (
            log_norm
            + (total - k) * digamma(total)
            - jnp.sum((alpha - 1) * digamma(alpha), axis=-1)
        )


# -- MultivariateNormal ----------------------------------------------------------


def _vector_loc(owner, loc, n):
    """``loc`` with a trailing event dim of size ``n`` (scalars broadcast)."""
    loc = _as_float(loc)
    if loc.ndim == 0:
        loc = loc[None]
    if loc.shape[-1] not in (1, n):
        raise ValueError(
            f"{owner}: loc has event size {loc.shape[-1]}, but the matrix "
            f"parameter has size {n}"
        )
    return jnp.broadcast_to(loc, loc.shape[:-1] + (n,))


class MultivariateNormal(Distribution):
    """Multivariate normal distribution with mean ``loc``.

    Give exactly one of ``covariance_matrix``, ``precision_matrix`` or
    ``scale_tril`` (the lower Cholesky factor of the covariance). The
    distribution keeps ``loc`` and ``scale_tril``; ``covariance_matrix`` and
    ``precision_matrix`` are computed from ``scale_tril`` on access.

    >>> import jax.numpy as jnp
    >>> d = MultivariateNormal(jnp.zeros(2), covariance_matrix=jnp.eye(2))
    >>> d.batch_shape, d.event_shape
    ((), (2,))
    >>> float(d.log_prob(jnp.zeros(2)))  # -log(2 pi)
    -1.837...
    """

    arg_constraints = {
        "loc": constraints.real_vector,
        "covariance_matrix": constraints.positive_definite,
        "precision_matrix": constraints.positive_definite,
        "scale_tril": constraints.lower_cholesky,
    }
    support = constraints.real_vector
    has_rsample = True
    reparametrized_params = (
        "loc",
        "covariance_matrix",
        "precision_matrix",
        "scale_tril",
    )
    pytree_data_fields = ("loc", "scale_tril")

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        """Batch dims of ``loc`` (all but its last) broadcast with those of the
        one matrix given (all but its last two)."""
        owner = cls.__name__
        shapes = _bind_shapes(cls, args, kwargs, {"loc": ()})
        name = _given_one_of(
            owner, shapes, ("covariance_matrix", "precision_matrix", "scale_tril")
        )
        loc_batch, loc_event = _split_event(
            owner, "loc", shapes["loc"], min(1, len(shapes["loc"]))
        )
        matrix_batch, matrix_event = _split_event(owner, name, shapes[name], 2)
        batch_shape = _broadcast(owner, [loc_batch, matrix_batch])
        event_shape = _broadcast(owner, [loc_event, matrix_event[-1:]])
        return batch_shape, event_shape

    def __init__(
        self,
        loc=0.0,
        covariance_matrix=None,
        precision_matrix=None,
        scale_tril=None,
        *,
        validate_args=None,
    ):
        given = {
            name: value
            for name, value in (
                ("covariance_matrix", covariance_matrix),
                ("precision_matrix", precision_matrix),
                ("scale_tril", scale_tril),
            )
            if value is not None
        }
        if len(given) != 1:
            got = " and ".join(given) if given else "none"
            raise ValueError(
                "MultivariateNormal: give exactly one of covariance_matrix, "
                f"precision_matrix, scale_tril; got {got}"
            )
        ((name, matrix),) = given.items()
        _check_square(name, "MultivariateNormal", matrix)
        matrix = _as_float(matrix)
        # Kept only for argument checks in _check_args.
        self._given_matrix = (name, matrix)
        if name == "covariance_matrix":
            tril = jnp.linalg.cholesky(matrix)
        elif name == "precision_matrix":
            tril = _cholesky_of_inverse(matrix)
        else:
            tril = matrix
        n = tril.shape[-1]
        loc = _vector_loc("MultivariateNormal", loc, n)
        self.loc, self.scale_tril = promote_shapes(loc, tril, event_ndims=(1, 2))
        batch_shape = batch_shape_of(loc, tril, event_ndims=(1, 2))
        super().__init__(batch_shape, (n,), validate_args=validate_args)
        del self._given_matrix

    def _check_args(self) -> None:
        name, matrix = self._given_matrix
        checks = [(name, matrix), ("loc", self.loc)]
        if name != "scale_tril":
            checks.append(("scale_tril", self.scale_tril))
        for arg, value in checks:
            self._check_arg(arg, self.arg_constraints[arg], value)

    @property
    def covariance_matrix(self):
        n = self.event_shape[0]
        return jnp.broadcast_to(_outer_self(self.scale_tril), self.batch_shape + (n, n))

    @property
    def precision_matrix(self):
        n = self.event_shape[0]
        return jnp.broadcast_to(
            _inverse_from_tril(self.scale_tril), self.batch_shape + (n, n)
        )

    def sample(self, key, sample_shape=()):
        dtype = jnp.result_type(self.loc, self.scale_tril)
        noise = jax.random.normal(key, self.shape(sample_shape), dtype=dtype)
        return self.loc + _matvec(self.scale_tril, noise)

    def log_prob(self, value):
        self._validate_sample(value)
        white = _solve_lower(self.scale_tril, value - self.loc)
        n = self.event_shape[0]
        return (
            -0.5 * jnp.sum(jnp.square(white), axis=-1)
            - _half_log_det(self.scale_tril)
            - 0.5 * n * _LOG_2PI
        )

    @property
    def mean(self):
        return jnp.broadcast_to(self.loc, self.shape())

    @property
    def variance(self):
        return jnp.broadcast_to(
            jnp.sum(jnp.square(self.scale_tril), axis=-1), self.shape()
        )

    def entropy(self):
        n = self.event_shape[0]
        entropy = 0.5 * n * (1 + _LOG_2PI) + _half_log_det(self.scale_tril)
        return jnp.broadcast_to(entropy, self.batch_shape)


# -- LowRankMultivariateNormal ---------------------------------------------------


class LowRankMultivariateNormal(Distribution):
    """Multivariate normal whose covariance is ``cov_factor @ cov_factor.T +
    diag(cov_diag)``.

    ``log_prob`` and ``sample`` cost ``O(d r^2)`` for event size ``d`` and rank
    ``r`` (Woodbury identity and matrix determinant lemma); the dense ``d x d``
    covariance is never factorised.

    Args:
        loc: mean, shape ``batch + (d,)``.
        cov_factor: shape ``batch + (d, r)``.
        cov_diag: positive diagonal part, shape ``batch + (d,)``.

    >>> import jax.numpy as jnp
    >>> d = LowRankMultivariateNormal(jnp.zeros(3), jnp.ones((3, 1)), jnp.ones(3))
    >>> d.variance
    Array([2., 2., 2.], dtype=float32)
    """

    arg_constraints = {
        "loc": constraints.real_vector,
        "cov_factor": constraints.independent(constraints.real, 2),
        "cov_diag": constraints.independent(constraints.positive, 1),
    }
    support = constraints.real_vector
    has_rsample = True
    reparametrized_params = ("loc", "cov_factor", "cov_diag")
    pytree_data_fields = ("loc", "cov_factor", "cov_diag")

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        owner = cls.__name__
        shapes = _bind_shapes(cls, args, kwargs)
        missing = [n for n in ("loc", "cov_factor", "cov_diag") if n not in shapes]
        if missing:
            raise ValueError(f"{owner}.infer_shapes needs the shapes of {missing}")
        loc_batch, event_shape = _split_event(owner, "loc", shapes["loc"], 1)
        factor_batch = _split_event(owner, "cov_factor", shapes["cov_factor"], 2)[0]
        diag_batch = _split_event(owner, "cov_diag", shapes["cov_diag"], 1)[0]
        return _broadcast(owner, [loc_batch, factor_batch, diag_batch]), event_shape

    def __init__(self, loc, cov_factor, cov_diag, *, validate_args=None):
        name = "LowRankMultivariateNormal"
        if jnp.ndim(loc) < 1:
            raise ValueError(f"{name}: loc must have at least one dim (the event)")
        n = jnp.shape(loc)[-1]
        if jnp.ndim(cov_factor) < 2 or jnp.shape(cov_factor)[-2] != n:
            raise ValueError(
                f"{name}: cov_factor must have shape batch + ({n}, rank) to match "
                f"loc, got {jnp.shape(cov_factor)}"
            )
        if jnp.ndim(cov_diag) < 1 or jnp.shape(cov_diag)[-1] != n:
            raise ValueError(
                f"{name}: cov_diag must have shape batch + ({n},) to match loc, "
                f"got {jnp.shape(cov_diag)}"
            )
        loc, cov_factor, cov_diag = (_as_float(x) for x in (loc, cov_factor, cov_diag))
        event_ndims = (1, 2, 1)
        self.loc, self.cov_factor, self.cov_diag = promote_shapes(
            loc, cov_factor, cov_diag, event_ndims=event_ndims
        )
        batch_shape = batch_shape_of(loc, cov_factor, cov_diag, event_ndims=event_ndims)
        super().__init__(batch_shape, (n,), validate_args=validate_args)

    def _capacitance_tril(self):
        """Cholesky factor of ``I + W^T D^{-1} W`` (r x r)."""
        factor = self.cov_factor
        scaled = factor / self.cov_diag[..., None]
        capacitance = jnp.matmul(jnp.swapaxes(factor, -2, -1), scaled)
        rank = factor.shape[-1]
        capacitance = capacitance + jnp.eye(rank, dtype=capacitance.dtype)
        return jnp.linalg.cholesky(capacitance)

    def _half_log_det(self, capacitance_tril):
        # det(W W^T + D) = det(I + W^T D^{-1} W) det(D)
        return _half_log_det(capacitance_tril) + 0.5 * jnp.sum(
            jnp.log(self.cov_diag), axis=-1
        )

    def sample(self, key, sample_shape=()):
        key_factor, key_diag = jax.random.split(key)
        shape = tuple(sample_shape) + self.batch_shape
        dtype = jnp.result_type(self.loc, self.cov_factor, self.cov_diag)
        rank = self.cov_factor.shape[-1]
        noise_factor = jax.random.normal(key_factor, shape + (rank,), dtype=dtype)
        noise_diag = jax.random.normal(key_diag, self.shape(sample_shape), dtype=dtype)
        return (
            self.loc
            + _matvec(self.cov_factor, noise_factor)
            + jnp.sqrt(self.cov_diag) * noise_diag
        )

    def log_prob(self, value):
        self._validate_sample(value)
        capacitance_tril = self._capacitance_tril()
        diff = value - self.loc
        scaled = diff / self.cov_diag
        # Woodbury: x^T inv(W W^T + D) x
        #   = x^T D^{-1} x - |K^{-1} W^T D^{-1} x|^2, K K^T = I + W^T D^{-1} W
        projected = jnp.squeeze(jnp.matmul(scaled[..., None, :], self.cov_factor), -2)
        white = _solve_lower(capacitance_tril, projected)
        mahalanobis = jnp.sum(diff * scaled, axis=-1) - jnp.sum(
            jnp.square(white), axis=-1
        )
        n = self.event_shape[0]
        return (
            -0.5 * mahalanobis
            - self._half_log_det(capacitance_tril)
            - 0.5 * n * _LOG_2PI
        )

    @property
    def mean(self):
        return jnp.broadcast_to(self.loc, self.shape())

    @property
    def variance(self):
        variance = jnp.sum(jnp.square(self.cov_factor), axis=-1) + self.cov_diag
        return jnp.broadcast_to(variance, self.shape())

    @property
    def covariance_matrix(self):
        n = self.event_shape[0]
        dense = _outer_self(self.cov_factor) + self.cov_diag[..., None] * jnp.eye(n)
        return jnp.broadcast_to(dense, self.batch_shape + (n, n))

    @property
    def precision_matrix(self):
        # Woodbury: D^{-1} - D^{-1} W inv(I + W^T D^{-1} W) W^T D^{-1}
        n = self.event_shape[0]
        capacitance_tril = self._capacitance_tril()
        scaled = self.cov_factor / self.cov_diag[..., None]
        rank = scaled.shape[-1]
        capacitance_tril = jnp.broadcast_to(
            capacitance_tril, scaled.shape[:-2] + (rank, rank)
        )
        half = solve_triangular(
            capacitance_tril, jnp.swapaxes(scaled, -2, -1), lower=True
        )
        precision = jnp.eye(n) / self.cov_diag[..., None] - jnp.matmul(
            jnp.swapaxes(half, -2, -1), half
        )
        return jnp.broadcast_to(precision, self.batch_shape + (n, n))

    @property
    def scale_tril(self):
        # W W^T + D = D^{1/2} (I + D^{-1/2} W W^T D^{-1/2}) D^{1/2}: the inner
        # matrix has eigenvalues >= 1, so its Cholesky factorisation is stable.
        n = self.event_shape[0]
        root = jnp.sqrt(self.cov_diag)
        whitened = self.cov_factor / root[..., None]
        inner = _outer_self(whitened) + jnp.eye(n)
        tril = root[..., None] * jnp.linalg.cholesky(inner)
        return jnp.broadcast_to(tril, self.batch_shape + (n, n))

    def entropy(self):
        n = self.event_shape[0]
        entropy = 0.5 * n * (1 + _LOG_2PI) + self._half_log_det(
            self._capacitance_tril()
        )
        return jnp.broadcast_to(entropy, self.batch_shape)


# -- MultivariateStudentT --------------------------------------------------------


class MultivariateStudentT(Distribution):
    """Multivariate Student's t distribution with ``df`` degrees of freedom,
    location ``loc`` and scale matrix ``scale_tril @ scale_tril.T``.

    ``covariance_matrix`` is that scale matrix, as in NumPyro; the covariance of
    the distribution is ``df / (df - 2)`` times it (see ``variance``). ``mean``
    is ``inf`` where ``df <= 1``.

    >>> import jax.numpy as jnp
    >>> d = MultivariateStudentT(4.0, jnp.zeros(2), jnp.eye(2))
    >>> d.variance
    Array([2., 2.], dtype=float32)
    """

    arg_constraints = {
        "df": constraints.positive,
        "loc": constraints.real_vector,
        "scale_tril": constraints.lower_cholesky,
    }
    support = constraints.real_vector
    has_rsample = True
    reparametrized_params = ("df", "loc", "scale_tril")
    pytree_data_fields = ("df", "loc", "scale_tril")

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        owner = cls.__name__
        shapes = _bind_shapes(cls, args, kwargs, {"df": (), "loc": ()})
        if "scale_tril" not in shapes:
            raise ValueError(f"{owner}.infer_shapes needs the scale_tril shape")
        loc_batch, loc_event = _split_event(
            owner, "loc", shapes["loc"], min(1, len(shapes["loc"]))
        )
        tril_batch, tril_event = _split_event(
            owner, "scale_tril", shapes["scale_tril"], 2
        )
        batch_shape = _broadcast(owner, [shapes["df"], loc_batch, tril_batch])
        return batch_shape, _broadcast(owner, [loc_event, tril_event[-1:]])

    def __init__(self, df, loc=0.0, scale_tril=None, *, validate_args=None):
        if scale_tril is None:
            raise ValueError("MultivariateStudentT: scale_tril is required")
        _check_square("scale_tril", "MultivariateStudentT", scale_tril)
        scale_tril = _as_float(scale_tril)
        df = _as_float(df)
        n = scale_tril.shape[-1]
        loc = _vector_loc("MultivariateStudentT", loc, n)
        event_ndims = (0, 1, 2)
        self.df, self.loc, self.scale_tril = promote_shapes(
            df, loc, scale_tril, event_ndims=event_ndims
        )
        batch_shape = batch_shape_of(df, loc, scale_tril, event_ndims=event_ndims)
        super().__init__(batch_shape, (n,), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        key_normal, key_gamma = jax.random.split(key)
        shape = tuple(sample_shape) + self.batch_shape
        dtype = jnp.result_type(self.df, self.loc, self.scale_tril)
        noise = jax.random.normal(key_normal, shape + self.event_shape, dtype=dtype)
        # chi2(df) = 2 Gamma(df / 2); jax's gamma sampler has implicit gradients.
        half_df = jnp.broadcast_to(0.5 * self.df, shape)
        chi2 = 2 * jax.random.gamma(key_gamma, half_df, dtype=dtype)
        scaled = noise * jnp.sqrt(self.df / chi2)[..., None]
        return self.loc + _matvec(self.scale_tril, scaled)

    def log_prob(self, value):
        self._validate_sample(value)
        n = self.event_shape[0]
        df = self.df
        white = _solve_lower(self.scale_tril, value - self.loc)
        mahalanobis = jnp.sum(jnp.square(white), axis=-1)
        log_norm = (
            _half_log_det(self.scale_tril)
            + 0.5 * n * (jnp.log(df) + math.log(math.pi))
            + gammaln(0.5 * df)
            - gammaln(0.5 * (df + n))
        )
        return -0.5 * (df + n) * jnp.log1p(mahalanobis / df) - log_norm

    @property
    def covariance_matrix(self):
        n = self.event_shape[0]
        return jnp.broadcast_to(_outer_self(self.scale_tril), self.batch_shape + (n, n))

    @property
    def precision_matrix(self):
        n = self.event_shape[0]
        return jnp.broadcast_to(
            _inverse_from_tril(self.scale_tril), self.batch_shape + (n, n)
        )

    @property
    def mean(self):
        df = jnp.asarray(self.df)[..., None]
        return jnp.broadcast_to(jnp.where(df <= 1, jnp.inf, self.loc), self.shape())

    @property
    def variance(self):
        df = jnp.asarray(self.df)[..., None]
        scale = jnp.sum(jnp.square(self.scale_tril), axis=-1)
        variance = jnp.where(df > 2, scale * df / (df - 2), jnp.inf)
        variance = jnp.where(df <= 1, jnp.nan, variance)
        return jnp.broadcast_to(variance, self.shape())

    def entropy(self):
        n = self.event_shape[0]
        df = self.df
        half_total = 0.5 * (df + n)
        entropy = (
            _half_log_det(self.scale_tril)
            + 0.5 * n * (jnp.log(df) + math.log(math.pi))
            + gammaln(0.5 * df)
            - gammaln(half_total)
            + half_total * (digamma(half_total) - digamma(0.5 * df))
        )
        return jnp.broadcast_to(entropy, self.batch_shape)


# -- LKJCholesky -----------------------------------------------------------------


def _strictly_lower_mask(n):
    return np.tril(np.ones((n, n), dtype=bool), -1)


class LKJCholesky(Distribution):
    """LKJ distribution over Cholesky factors ``L`` of ``dimension x dimension``
    correlation matrices ``C = L L^T``, with density of ``C`` proportional to
    ``det(C) ** (concentration - 1)``.

    ``log_prob`` is the density of ``L`` with respect to Lebesgue measure on its
    strictly lower-triangular entries (the diagonal is fixed by unit row norms).

    Args:
        dimension: size of the matrices, at least 2.
        concentration: ``eta > 0``; 1 is uniform over correlation matrices,
            larger values concentrate near the identity.
        sample_method: ``"onion"`` or ``"cvine"`` (Lewandowski, Kurowicka and
            Joe, 2009). Both draw from the same distribution.

    >>> import jax
    >>> d = LKJCholesky(3, 2.0)
    >>> L = d.sample(jax.random.key(0))
    >>> L.shape
    (3, 3)
    """

    arg_constraints = {"concentration": constraints.positive}
    support = constraints.corr_cholesky
    has_rsample = False
    reparametrized_params = ("concentration",)
    pytree_data_fields = ("concentration",)
    pytree_aux_fields = ("dimension", "sample_method")

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        _not_inferable(cls, "its event shape depends on the value of dimension")

    def __init__(
        self,
        dimension: int,
        concentration=1.0,
        sample_method: str = "onion",
        *,
        validate_args=None,
    ):
        if isinstance(dimension, bool) or not isinstance(dimension, int | np.integer):
            raise TypeError(f"LKJCholesky: dimension must be an int, got {dimension!r}")
        if dimension < 2:
            raise ValueError(f"LKJCholesky: dimension must be >= 2, got {dimension}")
        if sample_method not in ("onion", "cvine"):
            raise ValueError(
                "LKJCholesky: sample_method must be 'onion' or 'cvine', "
                f"got {sample_method!r}"
            )
        self.dimension = int(dimension)
        self.sample_method = sample_method
        self.concentration = _as_float(concentration)
        super().__init__(
            jnp.shape(concentration),
            (self.dimension, self.dimension),
            validate_args=validate_args,
        )

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        if self.sample_method == "onion":
            return self._onion(key, shape)
        return self._cvine(key, shape)

    # Both samplers draw Beta variables without a Beta sampler: for X ~ N(0, I_k)
    # and G ~ Gamma(b), |X|^2 / (|X|^2 + 2 G) ~ Beta(k / 2, b) independently of
    # the direction X / |X|, so X / sqrt(|X|^2 + 2 G) is sqrt(Beta(k/2, b))
    # times a uniform unit vector. Working with log(2 G) keeps the split
    # accurate when G is tiny (small concentrations).

    def _onion(self, key, shape):
        # Row i (i = 1..d-1) of L is (sqrt(y_i) u_i, sqrt(1 - y_i), 0, ...) with
        # u_i uniform on the unit sphere in R^i and
        # y_i ~ Beta(i / 2, eta + (d - 1 - i) / 2) (Lewandowski et al., 2009).
        d = self.dimension
        eta = jnp.broadcast_to(self.concentration, shape)
        key_normal, key_gamma = jax.random.split(key)
        normal = jax.random.normal(key_normal, shape + (d, d), dtype=eta.dtype)
        normal = jnp.where(_strictly_lower_mask(d), normal, 0.0)
        # row 0 has no free entries: its squared norm is 0 and its diagonal 1
        i = jnp.arange(d, dtype=eta.dtype)
        concentration = eta[..., None] + 0.5 * (d - 1 - i)
        log_two_gamma = math.log(2) + jax.random.loggamma(key_gamma, concentration)
        log_square_norm = jnp.log(jnp.sum(jnp.square(normal), axis=-1))
        log_total = jnp.logaddexp(log_square_norm, log_two_gamma)
        off_diagonal = normal * jnp.exp(-0.5 * log_total)[..., None]
        diagonal = jnp.exp(0.5 * (log_two_gamma - log_total))
        diagonal = jnp.maximum(diagonal, jnp.finfo(diagonal.dtype).tiny)
        return off_diagonal + diagonal[..., None] * jnp.eye(d, dtype=eta.dtype)

    def _cvine(self, key, shape):
        # Canonical partial correlations z_ij (i > j) are independent with
        # density proportional to (1 - z^2)^(b_j - 1), b_j = eta + (d - 2 - j) / 2,
        # i.e. z_ij^2 ~ Beta(1/2, b_j) with a random sign; then
        # L_ij = z_ij prod_{m<j} sqrt(1 - z_im^2), L_ii = prod_{m<i} sqrt(1 - z_im^2).
        d = self.dimension
        eta = jnp.broadcast_to(self.concentration, shape)
        key_normal, key_gamma = jax.random.split(key)
        normal = jax.random.normal(key_normal, shape + (d, d), dtype=eta.dtype)
        j = jnp.arange(d, dtype=eta.dtype)
        # the last column is never strictly lower; any positive value will do
        concentration = eta[..., None] + 0.5 * jnp.maximum(d - 2 - j, 0)
        concentration = jnp.broadcast_to(concentration[..., None, :], shape + (d, d))
        log_two_gamma = math.log(2) + jax.random.loggamma(key_gamma, concentration)
        log_total = jnp.logaddexp(jnp.log(jnp.square(normal)), log_two_gamma)
        mask = _strictly_lower_mask(d)
        z = jnp.where(mask, normal * jnp.exp(-0.5 * log_total), 0.0)
        log_root = jnp.where(mask, 0.5 * (log_two_gamma - log_total), 0.0)
        # prod over m < j, in log space
        before = jnp.exp(jnp.cumsum(log_root, axis=-1) - log_root)
        diagonal = jnp.diagonal(before, axis1=-2, axis2=-1)
        diagonal = jnp.maximum(diagonal, jnp.finfo(diagonal.dtype).tiny)
        return z * before + diagonal[..., None] * jnp.eye(d, dtype=eta.dtype)

    def log_prob(self, value):
        self._validate_sample(value)
        d = self.dimension
        eta = self.concentration
        # With C = L L^T: det(C)^(eta - 1) = prod L_ii^(2 eta - 2) and the
        # Jacobian from the free entries of L to those of C is prod L_ii^(d - i)
        # (rows i = 1..d).
        diagonal = jnp.diagonal(value, axis1=-2, axis2=-1)[..., 1:]
        i = jnp.arange(2, d + 1, dtype=diagonal.dtype)
        order = 2 * (eta[..., None] - 1) + d - i
        unnormalized = jnp.sum(xlogy(order, diagonal), axis=-1)
        return unnormalized - self._log_normalizer()

    def _log_normalizer(self):
        # log of the integral of det(C)^(eta - 1) over correlation matrices
        # (Lewandowski, Kurowicka and Joe, 2009, eq. 16):
        # sum_{k=1}^{d-1} (d-k) [(2 eta - 2 + d - k) log 2 + B(a_k, a_k)],
        # a_k = eta + (d - k - 1) / 2.
        d = self.dimension
        eta = self.concentration[..., None]
        k = jnp.arange(1, d, dtype=eta.dtype)
        a = eta + 0.5 * (d - k - 1)
        terms = (d - k) * ((2 * eta - 2 + d - k) * math.log(2) + betaln(a, a))
        return jnp.sum(terms, axis=-1)


# -- GaussianRandomWalk ----------------------------------------------------------


class GaussianRandomWalk(Distribution):
    """Random walk of ``num_steps`` steps with independent ``Normal(0, scale)``
    increments, starting from 0 (so the first value is ``Normal(0, scale)``).

    >>> import jax
    >>> d = GaussianRandomWalk(scale=2.0, num_steps=4)
    >>> d.event_shape, d.variance
    ((4,), Array([ 4.,  8., 12., 16.], dtype=float32))
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.real_vector
    has_rsample = True
    reparametrized_params = ("scale",)
    pytree_data_fields = ("scale",)
    pytree_aux_fields = ("num_steps",)

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        _not_inferable(cls, "its event shape depends on the value of num_steps")

    def __init__(self, scale=1.0, num_steps: int = 1, *, validate_args=None):
        if (
            isinstance(num_steps, bool)
            or not isinstance(num_steps, int | np.integer)
            or num_steps < 1
        ):
            raise ValueError(
                "GaussianRandomWalk: num_steps must be a positive int, "
                f"got {num_steps!r}"
            )
        self.scale = _as_float(scale)
        self.num_steps = int(num_steps)
        super().__init__(
            jnp.shape(scale), (self.num_steps,), validate_args=validate_args
        )

    def sample(self, key, sample_shape=()):
        dtype = jnp.result_type(self.scale)
        steps = jax.random.normal(key, self.shape(sample_shape), dtype=dtype)
        return jnp.cumsum(steps, axis=-1) * self.scale[..., None]

    def log_prob(self, value):
        self._validate_sample(value)
        value = jnp.asarray(value)
        increments = jnp.concatenate(
            [value[..., :1], jnp.diff(value, axis=-1)], axis=-1
        )
        scale = self.scale[..., None]
        log_density = (
            -0.5 * jnp.square(increments / scale) - jnp.log(scale) - 0.5 * _LOG_2PI
        )
        return jnp.sum(log_density, axis=-1)

    @property
    def mean(self):
        return jnp.zeros(self.shape(), dtype=jnp.result_type(self.scale))

    @property
    def variance(self):
        steps = jnp.arange(1, self.num_steps + 1, dtype=jnp.result_type(self.scale))
        return jnp.broadcast_to(jnp.square(self.scale)[..., None] * steps, self.shape())


# -- ZeroSumNormal -----------------------------------------------------------------


def _zero_sum_event_shape(event_shape) -> tuple[int, ...]:
    """``event_shape`` as a tuple of ints >= 1, or an error naming it."""
    if not isinstance(event_shape, tuple | list) or not all(
        isinstance(size, int | np.integer) and not isinstance(size, bool)
        for size in event_shape
    ):
        raise TypeError(
            f"ZeroSumNormal: event_shape must be a tuple of ints, got {event_shape!r}"
        )
    if len(event_shape) == 0:
        raise ValueError(
            "ZeroSumNormal: event_shape must have at least one axis (the axes "
            "that sum to zero), got ()"
        )
    if any(size < 1 for size in event_shape):
        raise ValueError(
            "ZeroSumNormal: every size in event_shape must be >= 1, got "
            f"{tuple(event_shape)}"
        )
    return tuple(int(size) for size in event_shape)


class ZeroSumNormal(TransformedDistribution):
    """Normal distribution of arrays that sum to zero along every axis of
    ``event_shape`` (a sum-to-zero constraint for, e.g., category effects).

    A draw is :class:`~probnn.distributions.transforms.ZeroSumTransform`
    applied to independent ``Normal(0, scale)`` noise whose shape is
    ``event_shape`` less one along each axis. With one axis of length ``n``
    that is ``N(0, scale**2 * (I - J / n))``, ``J`` the matrix of ones; in
    general each entry has variance ``scale**2`` times ``1 - 1 / n`` for
    every axis length ``n``. The transform is an isometry onto the zero-sum
    subspace, so ``log_prob`` is the density with respect to volume on that
    subspace: the normal density of the noise that maps to the value.

    Args:
        scale: positive standard deviation of the noise. Its shape is the
            batch shape: one scale per event, shared by all its entries.
        event_shape: tuple of ints >= 1; each of its axes sums to zero.

    >>> import jax
    >>> d = ZeroSumNormal(2.0, event_shape=(4,))
    >>> x = d.sample(jax.random.key(0), (5,))
    >>> x.shape, bool(jax.numpy.allclose(x.sum(-1), 0.0, atol=1e-5))
    ((5, 4), True)
    >>> d.variance  # 2**2 * (1 - 1/4)
    Array([3., 3., 3., 3.], dtype=float32)
    """

    arg_constraints = {"scale": constraints.positive}
    has_rsample = True
    reparametrized_params = ("scale",)
    pytree_data_fields = ("scale",)

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        _not_inferable(cls, "its event shape is the value of event_shape")

    def __init__(self, scale, event_shape, *, validate_args=None):
        event_shape = _zero_sum_event_shape(event_shape)
        self.scale = _as_float(scale)
        # The base distribution and transform are rebuilt from ``scale`` when
        # asked for, so ``scale`` is the only pytree leaf.
        Distribution.__init__(
            self, jnp.shape(self.scale), event_shape, validate_args=validate_args
        )

    @property
    def support(self):
        return constraints.zero_sum(self.event_dim)

    @property
    def transforms(self):
        return [ZeroSumTransform(self.event_dim)]

    @property
    def base_dist(self):
        """``Normal(0, scale)`` over the reduced event (one less per axis)."""
        shape = self.batch_shape + self._reduced_shape()
        return Normal(0.0, self._event_scale()).expand(shape).to_event(self.event_dim)

    def _reduced_shape(self):
        return tuple(size - 1 for size in self.event_shape)

    def _event_scale(self):
        """``scale`` with a size-1 dim for each event axis."""
        scale = jnp.broadcast_to(self.scale, self.batch_shape)
        return jnp.reshape(scale, self.batch_shape + (1,) * self.event_dim)

    def sample_with_intermediates(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape + self._reduced_shape()
        noise = jax.random.normal(key, shape, dtype=jnp.result_type(self.scale))
        x = noise * self._event_scale()
        return self.transforms[0](x), [x]

    def log_prob(self, value, intermediates=None):
        self._validate_sample(value)
        if intermediates is None:
            x = self.transforms[0]._inverse(value)
        else:
            x = intermediates[0]
        count = math.prod(self._reduced_shape())
        squares = sum_rightmost(jnp.square(x / self._event_scale()), self.event_dim)
        return -0.5 * squares - count * (jnp.log(self.scale) + 0.5 * _LOG_2PI)

    @property
    def mean(self):
        return jnp.zeros(self.shape(), dtype=jnp.result_type(self.scale))

    @property
    def variance(self):
        shrink = math.prod(1.0 - 1.0 / size for size in self.event_shape)
        return jnp.broadcast_to(jnp.square(self._event_scale()) * shrink, self.shape())
