"""Autoguides over one flattened vector of all latents: diagonal, full and
low-rank normal, and the Laplace approximation."""

import math
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import probnn.distributions as dist
from probnn.distributions import constraints
from probnn.distributions.transforms import (
    AffineTransform,
    IndependentTransform,
    LowerCholeskyAffine,
    Transform,
)
from probnn.distributions.util import is_concrete, sum_rightmost
from probnn.infer.autoguide._base import AutoGuide, _check_init_scale
from probnn.infer.initialization import (
    init_to_uniform,
)
from probnn.infer.util import potential_energy
from probnn.primitives import param, sample


class AutoContinuous(AutoGuide):
    """Base class of guides over the vector of all latent sites, flattened
    and in unconstrained space (``latent_dim`` entries).

    The vector is drawn at the auxiliary site ``_{prefix}_latent``; each model
    site then gets a ``Delta`` at its constrained value with log density
    ``-log|det J|`` of the map onto its support. Subclasses implement
    ``_get_posterior()`` (declaring their params), ``get_posterior(params)``
    and ``get_transform(params)``.

    Local latent sites in subsampled plates cannot be flattened into one
    fixed-size vector: such models raise a ValueError (global latents with
    subsampled observations are fine).

    >>> import jax.numpy as jnp, probnn, probnn.distributions as dist
    >>> from probnn.handlers import seed
    >>> def model():
    ...     probnn.sample("x", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
    ...     probnn.sample("s", dist.LogNormal(0.0, 1.0))
    >>> guide = AutoDiagonalNormal(model)
    >>> _ = seed(guide, rng_seed=0)()
    >>> params = {"auto_loc": jnp.array([1.0, 2.0, 0.0]), "auto_scale": jnp.ones(3)}
    >>> guide.median(params)
    {'x': Array([1., 2.], dtype=float32), 's': Array(1., dtype=float32)}
    """

    def _setup(self) -> None:
        if not self._latents:
            raise ValueError(
                f"{type(self).__name__}: the model has no latent sample sites "
                "(every sample site is observed or auxiliary), so there is no "
                "vector to flatten them into; AutoNormal or AutoDelta guide "
                "such a model (they guide nothing and its params train alone)"
            )
        for name, latent in self._latents.items():
            for frame in latent.frames:
                if frame.subsample_size < frame.size:
                    raise ValueError(
                        f"{type(self).__name__} cannot guide latent site {name!r} "
                        f"in subsampled plate {frame.name!r} (size {frame.size}, "
                        f"subsample_size {frame.subsample_size}): local latents "
                        "of mini-batches need AutoNormal or AutoDelta"
                    )
        self._latent_shapes = {
            name: jnp.shape(latent.unconstrained)
            for name, latent in self._latents.items()
        }
        self._init_latent = jnp.concatenate(
            [jnp.ravel(latent.unconstrained) for latent in self._latents.values()]
        )
        self.latent_dim = int(self._init_latent.shape[0])
        if self.latent_dim == 0:
            raise ValueError(
                f"{type(self).__name__}: the model's latent sites "
                f"{sorted(self._latents)} have no elements"
            )

    def _unpack_latent(self, latent) -> dict:
        batch = jnp.shape(latent)[:-1]
        out, start = {}, 0
        for name, shape in self._latent_shapes.items():
            size = math.prod(shape)
            out[name] = jnp.reshape(latent[..., start : start + size], batch + shape)
            start += size
        return out

    def _unpack_and_constrain(self, latent) -> dict:
        return self._constrain(self._unpack_latent(latent))

    def _get_posterior(self):
        raise NotImplementedError

    def _sample_latent(self, *args, **kwargs):
        """Draw the flattened unconstrained latent vector (at the auxiliary
        site ``_{prefix}_latent``)."""
        return sample(
            f"_{self.prefix}_latent",
            self._get_posterior(),
            infer={"is_auxiliary": True},
        )

    def _guide(self, *args, **kwargs) -> dict:
        latent = self._sample_latent(*args, **kwargs)
        result = {}
        for name, unconstrained in self._unpack_latent(latent).items():
            site = self._latents[name]
            value = site.transform(unconstrained)
            log_density = -site.transform.log_abs_det_jacobian(unconstrained, value)
            batch_ndim = jnp.ndim(value) - site.event_dim
            log_density = sum_rightmost(log_density, jnp.ndim(log_density) - batch_ndim)
            fn = dist.Delta(value, log_density, site.event_dim)
            result[name] = sample(name, fn)
        return result

    def get_base_dist(self):
        """The standard Normal that :meth:`get_transform` maps onto the
        posterior in unconstrained space."""
        self._require_prototype("get_base_dist")
        return dist.Normal(jnp.zeros(self.latent_dim), 1.0).to_event(1)

    def get_transform(self, params: dict) -> Transform:
        """The map from :meth:`get_base_dist` onto the posterior of the
        flattened unconstrained latent vector."""
        raise NotImplementedError

    def get_posterior(self, params: dict):
        """The posterior of the flattened unconstrained latent vector."""
        raise NotImplementedError

    def _loc(self, params: dict):
        return self._param(params, f"{self.prefix}_loc")

    def sample_posterior(self, rng_key, params: dict, *args, sample_shape=(), **kwargs):
        self._require_prototype("sample_posterior")
        latent = self.get_posterior(params).sample(rng_key, tuple(sample_shape))
        return self._unpack_and_constrain(latent)

    def median(self, params: dict) -> dict:
        self._require_prototype("median")
        return self._unpack_and_constrain(self._loc(params))

    def quantiles(self, params: dict, quantiles) -> dict:
        self._require_prototype("quantiles")
        posterior = self.get_posterior(params)
        q = jnp.asarray(quantiles, dtype=jnp.result_type(float))[..., None]
        marginal = dist.Normal(posterior.mean, jnp.sqrt(posterior.variance))
        return self._unpack_and_constrain(marginal.icdf(q))


class AutoDiagonalNormal(AutoContinuous):
    """A Normal with diagonal covariance over the flattened unconstrained
    latents: params ``{prefix}_loc`` and ``{prefix}_scale``.

    >>> import jax, jax.numpy as jnp, optax, probnn, probnn.distributions as dist
    >>> from probnn.infer.svi import SVI
    >>> from probnn.infer.elbo import Trace_ELBO
    >>> def model():
    ...     probnn.sample("x", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
    ...     probnn.sample("s", dist.LogNormal(0.0, 1.0))
    >>> guide = AutoDiagonalNormal(model)
    >>> state = SVI(model, guide, optax.adam(0.01), Trace_ELBO()).init(
    ...     jax.random.PRNGKey(0))
    >>> guide.latent_dim, state.optim_state[1][0]["auto_scale"].shape
    (3, (3,))
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self,
        model: Callable,
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        init_scale: float = 0.1,
    ):
        _check_init_scale(type(self).__name__, init_scale)
        self._init_scale = init_scale
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    def _get_posterior(self):
        loc = param(f"{self.prefix}_loc", self._init_latent)
        scale = param(
            f"{self.prefix}_scale",
            jnp.full(self.latent_dim, self._init_scale),
            constraint=self.scale_constraint,
        )
        return dist.Normal(loc, scale).to_event(1)

    def get_transform(self, params: dict) -> Transform:
        scale = self._param(params, f"{self.prefix}_scale")
        return IndependentTransform(AffineTransform(self._loc(params), scale), 1)

    def get_posterior(self, params: dict):
        """A Normal with batch shape ``(latent_dim,)``, as in NumPyro."""
        return dist.Normal(
            self._loc(params), self._param(params, f"{self.prefix}_scale")
        )


class AutoMultivariateNormal(AutoContinuous):
    """A MultivariateNormal over the flattened unconstrained latents:
    params ``{prefix}_loc`` and ``{prefix}_scale_tril`` (lower Cholesky
    factor of the covariance, softplus diagonal).

    >>> import jax, jax.numpy as jnp, optax, probnn, probnn.distributions as dist
    >>> from probnn.infer.svi import SVI
    >>> from probnn.infer.elbo import Trace_ELBO
    >>> def model():
    ...     probnn.sample("x", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
    >>> guide = AutoMultivariateNormal(model, init_scale=0.5)
    >>> svi = SVI(model, guide, optax.adam(0.01), Trace_ELBO())
    >>> params = svi.get_params(svi.init(jax.random.PRNGKey(0)))
    >>> guide.get_posterior(params).covariance_matrix
    Array([[0.25, 0.  ],
           [0.  , 0.25]], dtype=float32)
    """

    scale_tril_constraint = constraints.softplus_lower_cholesky

    def __init__(
        self,
        model: Callable,
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        init_scale: float = 0.1,
    ):
        _check_init_scale(type(self).__name__, init_scale)
        self._init_scale = init_scale
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    def _get_posterior(self):
        loc = param(f"{self.prefix}_loc", self._init_latent)
        scale_tril = param(
            f"{self.prefix}_scale_tril",
            jnp.eye(self.latent_dim) * self._init_scale,
            constraint=self.scale_tril_constraint,
        )
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)

    def get_transform(self, params: dict) -> Transform:
        scale_tril = self._param(params, f"{self.prefix}_scale_tril")
        return LowerCholeskyAffine(self._loc(params), scale_tril)

    def get_posterior(self, params: dict):
        scale_tril = self._param(params, f"{self.prefix}_scale_tril")
        return dist.MultivariateNormal(self._loc(params), scale_tril=scale_tril)


class AutoLowRankMultivariateNormal(AutoContinuous):
    """A LowRankMultivariateNormal over the flattened unconstrained latents,
    covariance ``diag(s) (W W^T + I) diag(s)``: params ``{prefix}_loc``,
    ``{prefix}_cov_factor`` (``W``, ``latent_dim x rank``) and
    ``{prefix}_scale`` (``s``), as in NumPyro.

    Args:
        model: the model to guide.
        prefix: prefix of the param names.
        init_loc_fn: initialization strategy for the location.
        init_scale: initial ``s``.
        rank: rank of ``W``; default ``round(sqrt(latent_dim))``.

    >>> import jax, jax.numpy as jnp, optax, probnn, probnn.distributions as dist
    >>> from probnn.infer.svi import SVI
    >>> from probnn.infer.elbo import Trace_ELBO
    >>> def model():
    ...     probnn.sample("x", dist.Normal(jnp.zeros(9), 1.0).to_event(1))
    >>> guide = AutoLowRankMultivariateNormal(model)
    >>> state = SVI(model, guide, optax.adam(0.01), Trace_ELBO()).init(
    ...     jax.random.PRNGKey(0))
    >>> state.optim_state[1][0]["auto_cov_factor"].shape
    (9, 3)
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self,
        model: Callable,
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        init_scale: float = 0.1,
        rank: int | None = None,
    ):
        _check_init_scale(type(self).__name__, init_scale)
        if rank is not None and (not isinstance(rank, int) or rank < 1):
            raise ValueError(
                f"{type(self).__name__}: rank must be a positive int or None, "
                f"got {rank!r}"
            )
        self._init_scale = init_scale
        self.rank = rank
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    def _low_rank(self, loc, cov_factor, scale):
        return dist.LowRankMultivariateNormal(
            loc, cov_factor * scale[..., None], scale * scale
        )

    def _get_posterior(self):
        rank = self.rank if self.rank is not None else round(self.latent_dim**0.5)
        loc = param(f"{self.prefix}_loc", self._init_latent)
        cov_factor = param(
            f"{self.prefix}_cov_factor", jnp.zeros((self.latent_dim, max(rank, 1)))
        )
        scale = param(
            f"{self.prefix}_scale",
            jnp.full(self.latent_dim, self._init_scale),
            constraint=self.scale_constraint,
        )
        return self._low_rank(loc, cov_factor, scale)

    def get_posterior(self, params: dict):
        return self._low_rank(
            self._loc(params),
            self._param(params, f"{self.prefix}_cov_factor"),
            self._param(params, f"{self.prefix}_scale"),
        )

    def get_transform(self, params: dict) -> Transform:
        posterior = self.get_posterior(params)
        return LowerCholeskyAffine(posterior.loc, posterior.scale_tril)


class AutoLaplaceApproximation(AutoContinuous):
    r"""Laplace approximation: during SVI a point estimate (MAP in
    unconstrained space) at the param ``{prefix}_loc``; afterwards the
    posterior is the MultivariateNormal at that point whose precision is the
    Hessian of the negative log joint :math:`-\log p(x, z)` in unconstrained
    space (log Jacobians of the maps onto the supports included).

    Args:
        model: the model to guide.
        prefix: prefix of the param names.
        init_loc_fn: initialization strategy for the location.
        create_plates: accepted for NumPyro compatibility (flattened guides
            need no plates).
        hessian_fn: ``hessian_fn(f, x)`` returning the Hessian of ``f`` at
            ``x``; default ``jax.hessian(f)(x)``. Add a small multiple of the
            identity where the Hessian may be singular.

    >>> import jax, jax.numpy as jnp, optax, probnn, probnn.distributions as dist
    >>> from probnn.infer.svi import SVI
    >>> from probnn.infer.elbo import Trace_ELBO
    >>> def model(y):
    ...     mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    ...     with probnn.plate("N", y.shape[0]):
    ...         probnn.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> guide = AutoLaplaceApproximation(model)
    >>> svi = SVI(model, guide, optax.adam(0.1), Trace_ELBO())
    >>> y = jnp.array([0.5, 1.5, 1.0])
    >>> result = svi.run(jax.random.PRNGKey(0), 300, y, progress_bar=False)
    >>> posterior = guide.get_posterior(result.params)
    >>> round(float(posterior.mean[0]), 3), round(float(posterior.variance[0]), 3)
    (0.75, 0.25)
    """

    def __init__(
        self,
        model: Callable,
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        create_plates: Callable | None = None,
        hessian_fn: Callable | None = None,
    ):
        super().__init__(
            model, prefix=prefix, init_loc_fn=init_loc_fn, create_plates=create_plates
        )
        self._hessian_fn = (
            hessian_fn if hessian_fn is not None else lambda f, x: jax.hessian(f)(x)
        )

    def _get_posterior(self):
        loc = param(f"{self.prefix}_loc", self._init_latent)
        return dist.Delta(loc, event_dim=1)

    def _negative_log_joint(self, latent, params: dict):
        args, kwargs = self._model_args
        unconstrained = self._unpack_latent(latent)
        return potential_energy(self.model, args, kwargs, unconstrained, params)

    def get_transform(self, params: dict) -> Transform:
        self._require_prototype("get_transform")
        loc = self._loc(params)
        precision = self._hessian_fn(lambda z: self._negative_log_joint(z, params), loc)
        scale_tril = dist.MultivariateNormal(
            loc, precision_matrix=precision, validate_args=False
        ).scale_tril
        broken = jnp.isnan(scale_tril)
        if is_concrete(broken) and bool(np.any(np.asarray(broken))):
            warnings.warn(
                f"{type(self).__name__}: the Hessian of the negative log joint at "
                "the MAP point is not positive definite; posterior draws will all "
                "equal the MAP point. Consider AutoNormal, or a hessian_fn that "
                "adds a small multiple of the identity",
                RuntimeWarning,
                stacklevel=2,
            )
        return LowerCholeskyAffine(loc, jnp.where(broken, 0.0, scale_tril))

    def get_posterior(self, params: dict):
        transform = self.get_transform(params)
        return dist.MultivariateNormal(
            transform.loc, scale_tril=transform.scale_tril, validate_args=False
        )
