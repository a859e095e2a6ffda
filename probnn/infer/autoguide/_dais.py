"""AutoDAIS: differentiable annealed importance sampling (Geffner and Domke,
2021; Zhang et al., 2021) as a guide over the flattened unconstrained
latents."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import probnn.distributions as dist
from probnn.distributions import constraints
from probnn.handlers import block, seed, substitute
from probnn.infer.autoguide._base import _check_init_scale
from probnn.infer.autoguide._continuous import AutoContinuous
from probnn.infer.initialization import init_to_uniform
from probnn.infer.util import potential_energy
from probnn.primitives import factor, param, sample


class AutoDAIS(AutoContinuous):
    """A guide that starts from a Normal ``q0`` and moves its draw through
    ``K`` steps of underdamped Langevin dynamics whose target anneals from
    ``q0`` to the model's posterior (inverse temperatures ``beta_1 < ... <
    beta_K = 1``, learned), with learned step size ``eta``, damping
    ``gamma`` and mass matrix. The momentum terms' log-density ratios enter
    the guide's density as the factor ``{prefix}_factor``, so that Trace_ELBO
    optimises the DAIS bound, which tightens as K grows.

    Args:
        model: the model.
        K: number of annealing steps (at least 1).
        base_dist: ``"diagonal"`` or ``"cholesky"`` (full-covariance ``q0``;
            its lower Cholesky factor has a softplus diagonal).
        eta_init: initial step size, in ``(0, eta_max)``.
        eta_max: largest step size.
        gamma_init: initial damping, in ``(0, 1)``.
        prefix: prefix of the param sites.
        init_loc_fn: initialization strategy of ``q0``'s location.
        init_scale: initial scale of ``q0``.
        forward_mode_differentiation: accepted for NumPyro compatibility.

    The model's own ``param`` sites enter the dynamics at their initial
    values. Models with subsampled plates are refused. Called without the
    model's arguments (e.g. ``sample_posterior(key, params)``), the dynamics
    use those of the guide's first run.
    """

    def __init__(
        self,
        model: Callable,
        *,
        K: int = 4,
        base_dist: str = "diagonal",
        eta_init: float = 0.01,
        eta_max: float = 0.1,
        gamma_init: float = 0.9,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        init_scale: float = 0.1,
        forward_mode_differentiation: bool = False,
    ):
        if not isinstance(K, int | np.integer) or K < 1:
            raise ValueError(f"AutoDAIS: K must be an int >= 1, got {K!r}")
        if base_dist not in ("diagonal", "cholesky"):
            raise ValueError(
                "AutoDAIS: base_dist must be 'diagonal' or 'cholesky', got "
                f"{base_dist!r}"
            )
        if not eta_max > 0:
            raise ValueError(f"AutoDAIS: eta_max must be positive, got {eta_max!r}")
        if not 0 < eta_init < eta_max:
            raise ValueError(
                f"AutoDAIS: eta_init must lie in (0, eta_max={eta_max}), got "
                f"{eta_init!r}"
            )
        if not 0 < gamma_init < 1:
            raise ValueError(
                f"AutoDAIS: gamma_init must lie in (0, 1), got {gamma_init!r}"
            )
        _check_init_scale("AutoDAIS", init_scale)
        self.K = int(K)
        self.base_dist = base_dist
        self.eta_init = eta_init
        self.eta_max = eta_max
        self.gamma_init = gamma_init
        self._init_scale = init_scale
        super().__init__(
            model,
            prefix=prefix,
            init_loc_fn=init_loc_fn,
            forward_mode_differentiation=forward_mode_differentiation,
        )

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        for site in self.prototype_trace.values():
            for frame in site.get("cond_indep_stack") or ():
                if frame.subsample_size < frame.size:
                    raise ValueError(
                        f"AutoDAIS cannot guide a model with subsampled plate "
                        f"{frame.name!r} (size {frame.size}, subsample_size "
                        f"{frame.subsample_size}): its dynamics need the full "
                        "log density"
                    )

    def _base(self):
        loc = param(f"{self.prefix}_z_0_loc", self._init_latent)
        if self.base_dist == "diagonal":
            scale = param(
                f"{self.prefix}_z_0_scale",
                jnp.full(self.latent_dim, self._init_scale),
                constraint=constraints.positive,
            )
            return dist.Normal(loc, scale).to_event(1)
        scale_tril = param(
            f"{self.prefix}_z_0_scale_tril",
            jnp.eye(self.latent_dim) * self._init_scale,
            constraint=constraints.softplus_lower_cholesky,
        )
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)

    def _sample_latent(self, *args, **kwargs):
        p = self.prefix
        eta0 = param(
            f"{p}_eta0",
            self.eta_init,
            constraint=constraints.interval(0.0, self.eta_max),
        )
        eta_slope = param(f"{p}_eta_coeff", 0.0)
        gamma = param(
            f"{p}_gamma", self.gamma_init, constraint=constraints.interval(0.0, 1.0)
        )
        increments = param(
            f"{p}_beta_increments", jnp.ones(self.K), constraint=constraints.positive
        )
        betas = jnp.cumsum(increments)
        betas = betas / betas[-1]
        mass = param(
            f"{p}_mass_matrix",
            jnp.ones(self.latent_dim),
            constraint=constraints.positive,
        )
        # the momentum's density is Normal(0, mass) per dim; positions move by
        # eta * v / (2 mass)
        velocity_scale = 0.5 / mass
        base = self._base()
        z0 = sample(f"{p}_z_0", base, infer={"is_auxiliary": True})
        momentum = dist.Normal(0.0, mass).to_event(1)
        # K fresh momenta; they carry no density of their own (the factor
        # below accounts for the momentum terms)
        noise = sample(
            f"{p}_momentum",
            momentum.expand((self.K,)).to_event(1).mask(False),
            infer={"is_auxiliary": True},
        )

        if not args and not kwargs:
            # called without the model's arguments (sample_posterior after
            # training, as NumPyro allows): those of the prototype run
            args, kwargs = self._model_args

        def log_target(z):
            unpacked = self._unpack_latent(z)
            with block():
                return -potential_energy(self.model, args, kwargs, unpacked)

        grad_base = jax.grad(base.log_prob)
        grad_target = jax.grad(log_target)

        def step(carry, inputs):
            z, v, log_weight = carry
            fresh, beta = inputs
            eta = jnp.clip(eta0 + eta_slope * beta, 0.0, self.eta_max)
            z_mid = z + eta * velocity_scale * v
            force = (1.0 - beta) * grad_base(z_mid) + beta * grad_target(z_mid)
            v_mid = v + eta * force
            z_next = z_mid + eta * velocity_scale * v_mid
            v_next = gamma * v_mid + jnp.sqrt(1.0 - gamma**2) * fresh
            log_weight = log_weight + momentum.log_prob(v) - momentum.log_prob(v_mid)
            return (z_next, v_next, log_weight), None

        # the first momentum is the last fresh draw (that draw is never
        # used as refreshment: the last step's new momentum is discarded)
        start = (z0, noise[-1], jnp.zeros(()))
        (z, _, log_weight), _ = jax.lax.scan(step, start, (noise, betas))
        factor(f"{p}_factor", log_weight)
        return z

    def sample_posterior(self, rng_key, params: dict, *args, sample_shape=(), **kwargs):
        self._require_prototype("sample_posterior")

        def one(key):
            latent = substitute(seed(self._sample_latent, rng_seed=key), data=params)(
                *args, **kwargs
            )
            return self._unpack_and_constrain(latent)

        if not sample_shape:
            return one(rng_key)
        count = int(np.prod(sample_shape))
        draws = jax.lax.map(one, jax.random.split(rng_key, count))
        return jax.tree.map(
            lambda x: jnp.reshape(x, tuple(sample_shape) + jnp.shape(x)[1:]), draws
        )

    def median(self, params: dict) -> dict:
        raise NotImplementedError(
            "AutoDAIS.median: the DAIS posterior has no closed form; use "
            "sample_posterior and take the draws' median"
        )

    def quantiles(self, params: dict, quantiles) -> dict:
        raise NotImplementedError(
            "AutoDAIS.quantiles: the DAIS posterior has no closed form; use "
            "sample_posterior and take the draws' quantiles"
        )
