"""Autoguides with params per latent site: AutoNormal and AutoDelta."""

import contextlib
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import probnn.distributions as dist
from probnn.distributions import constraints
from probnn.infer.autoguide._base import (
    AutoGuide,
    _check_init_scale,
    _is_identity,
    _repeat_to_full_size,
)
from probnn.infer.initialization import (
    init_to_median,
    init_to_uniform,
)
from probnn.primitives import param, prng_key, sample
from probnn.runtime import Message, Messenger


def _standard_normal(key, size: int):
    """``size`` standard normal draws by the Box-Muller transform.

    Each site reads a slice of the draw. XLA copies cheap elementwise code
    into every consumer that reads part of its result, so the polynomial
    inverse-erf sampler of ``jax.random.normal`` would be compiled once per
    site; the logarithm, square root and cosine here count as expensive, so
    the draw is computed once.
    """
    tiny = jnp.finfo(jnp.result_type(float)).tiny
    u1, u2 = jax.random.uniform(key, (2, size), minval=tiny, maxval=1.0)
    return jnp.sqrt(-2.0 * jnp.log(u1)) * jnp.cos(2.0 * jnp.pi * u2)


class _Given(Messenger):
    """Give one sample site a value drawn beforehand. Being innermost, it acts
    before ``seed`` (which then draws no key for the site) and before any
    handler that sets the value itself (substitute, replay, condition)."""

    def __init__(self, name: str, value):
        self.name = name
        self.value = value
        super().__init__()

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "sample" and msg["name"] == self.name:
            msg["value"] = self.value


class AutoNormal(AutoGuide):
    """Independent Normal distributions over every latent site in
    unconstrained space, with params ``{site}_{prefix}_loc`` and
    ``{site}_{prefix}_scale``.

    Local latent sites inside (subsampled) plates get params of the plates'
    full sizes; the guide recreates the plates so that each step trains the
    rows of the current mini-batch.

    Args:
        model: the model to guide.
        prefix: prefix of the param names.
        init_loc_fn: initialization strategy for the locations.
        init_scale: initial scale in unconstrained space.
        create_plates: see :class:`AutoGuide`.
        forward_mode_differentiation: see :class:`AutoGuide`.

    >>> import jax, jax.numpy as jnp, optax, probnn, probnn.distributions as dist
    >>> from probnn.infer.svi import SVI
    >>> from probnn.infer.elbo import Trace_ELBO
    >>> def model(y):
    ...     mu = probnn.sample("mu", dist.Normal(0.0, 10.0))
    ...     with probnn.plate("N", y.shape[0]):
    ...         probnn.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> guide = AutoNormal(model)
    >>> svi = SVI(model, guide, optax.adam(0.05), Trace_ELBO())
    >>> y = jnp.array([1.0, 2.0, 3.0])
    >>> result = svi.run(jax.random.PRNGKey(0), 1000, y, progress_bar=False)
    >>> sorted(result.params)
    ['mu_auto_loc', 'mu_auto_scale']
    >>> abs(float(guide.median(result.params)["mu"]) - 6 / 3.01) < 0.2
    True
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self,
        model: Callable,
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        init_scale: float = 0.1,
        create_plates: Callable | None = None,
        forward_mode_differentiation: bool = False,
    ):
        _check_init_scale(type(self).__name__, init_scale)
        self._init_scale = init_scale
        super().__init__(
            model,
            prefix=prefix,
            init_loc_fn=init_loc_fn,
            create_plates=create_plates,
            forward_mode_differentiation=forward_mode_differentiation,
        )

    def _setup(self) -> None:
        self._init_locs = {
            name: _repeat_to_full_size(
                latent.unconstrained, latent.frames, latent.unconstrained_event_dim
            )
            for name, latent in self._latents.items()
        }

    def _guide(self, *args, **kwargs) -> dict:
        plates = self._make_plates(*args, **kwargs)
        # One standard-normal draw for every site: per-site keys would add a
        # random-bit generator to the compiled step for each site.
        shapes = {name: self._batch_shape_in(plates, name) for name in self._latents}
        sizes = [math.prod(shape) for shape in shapes.values()]
        noise = _standard_normal(prng_key(), sum(sizes))
        offsets = np.cumsum([0] + sizes)
        indices: dict = {}
        result = {}
        for i, (name, latent) in enumerate(self._latents.items()):
            init_loc = self._init_locs[name]
            event_dim = latent.unconstrained_event_dim
            with contextlib.ExitStack() as stack:
                self._enter_plates(stack, latent.frames, plates, indices)
                loc = param(f"{name}_{self.prefix}_loc", init_loc, event_dim=event_dim)
                scale = param(
                    f"{name}_{self.prefix}_scale",
                    jnp.full(jnp.shape(init_loc), self._init_scale),
                    constraint=self.scale_constraint,
                    event_dim=event_dim,
                )
                eps = jnp.reshape(noise[offsets[i] : offsets[i + 1]], shapes[name])
                value = loc + scale * eps
                fn = dist.Normal(loc, scale).to_event(event_dim)
                if not _is_identity(latent.transform):
                    fn = dist.TransformedDistribution(fn, latent.transform)
                    value = latent.transform(value)
                with _Given(name, value):
                    result[name] = sample(name, fn)
        return result

    def _batch_shape_in(self, plates: dict, name: str) -> tuple:
        """Shape of a site's unconstrained value inside its (subsampled) plates."""
        latent = self._latents[name]
        shape = list(jnp.shape(self._init_locs[name]))
        for frame in latent.frames:
            axis = frame.dim - latent.unconstrained_event_dim
            if len(shape) >= -axis:
                shape[axis] = plates[frame.name].subsample_size
        return tuple(shape)

    def _loc_scale(self, params: dict, name: str):
        return (
            self._param(params, f"{name}_{self.prefix}_loc"),
            self._param(params, f"{name}_{self.prefix}_scale"),
        )

    def sample_posterior(self, rng_key, params: dict, *args, sample_shape=(), **kwargs):
        self._require_prototype("sample_posterior")
        keys = jax.random.split(rng_key, len(self._latents))
        draws = {}
        for key, name in zip(keys, self._latents):
            loc, scale = self._loc_scale(params, name)
            draws[name] = dist.Normal(loc, scale).sample(key, tuple(sample_shape))
        return self._constrain(draws)

    def median(self, params: dict) -> dict:
        self._require_prototype("median")
        return self._constrain(
            {name: self._loc_scale(params, name)[0] for name in self._latents}
        )

    def quantiles(self, params: dict, quantiles) -> dict:
        self._require_prototype("quantiles")
        quantiles = jnp.asarray(quantiles, dtype=jnp.result_type(float))
        latent = {}
        for name in self._latents:
            loc, scale = self._loc_scale(params, name)
            q = jnp.reshape(quantiles, (-1,) + (1,) * jnp.ndim(loc))
            latent[name] = dist.Normal(loc, scale).icdf(q)
        return self._constrain(latent)


class AutoDelta(AutoGuide):
    """Point estimates (MAP in constrained space): a ``Delta`` at the param
    ``{site}_{prefix}_loc``, which lives in the site's support.

    Like :class:`AutoNormal` it recreates the model's plates, so local latents
    in subsampled plates are supported.

    Args:
        model: the model to guide.
        prefix: prefix of the param names.
        init_loc_fn: initialization strategy (default :func:`init_to_median`).
        create_plates: see :class:`AutoGuide`.
        forward_mode_differentiation: see :class:`AutoGuide`.

    >>> import jax, jax.numpy as jnp, optax, probnn, probnn.distributions as dist
    >>> from probnn.infer.svi import SVI
    >>> from probnn.infer.elbo import Trace_ELBO
    >>> def model(y):
    ...     p = probnn.sample("p", dist.Beta(2.0, 2.0))
    ...     with probnn.plate("N", y.shape[0]):
    ...         probnn.sample("y", dist.Bernoulli(p), obs=y)
    >>> guide = AutoDelta(model)
    >>> svi = SVI(model, guide, optax.adam(0.05), Trace_ELBO())
    >>> y = jnp.array([1.0, 1.0, 1.0, 0.0])
    >>> result = svi.run(jax.random.PRNGKey(0), 500, y, progress_bar=False)
    >>> round(float(result.params["p_auto_loc"]), 3)  # mode (2+3-1)/(4+4-2)
    0.667
    """

    def __init__(
        self,
        model: Callable,
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_median,
        create_plates: Callable | None = None,
        forward_mode_differentiation: bool = False,
    ):
        super().__init__(
            model,
            prefix=prefix,
            init_loc_fn=init_loc_fn,
            create_plates=create_plates,
            forward_mode_differentiation=forward_mode_differentiation,
        )

    def _setup(self) -> None:
        self._init_locs = {
            name: _repeat_to_full_size(latent.value, latent.frames, latent.event_dim)
            for name, latent in self._latents.items()
        }

    def _guide(self, *args, **kwargs) -> dict:
        plates = self._make_plates(*args, **kwargs)
        indices: dict = {}
        result = {}
        for name, latent in self._latents.items():
            with contextlib.ExitStack() as stack:
                self._enter_plates(stack, latent.frames, plates, indices)
                loc = param(
                    f"{name}_{self.prefix}_loc",
                    self._init_locs[name],
                    constraint=latent.support,
                    event_dim=latent.event_dim,
                )
                fn = dist.Delta(loc, event_dim=latent.event_dim)
                result[name] = sample(name, fn)
        return result

    def _locs(self, params: dict) -> dict:
        return {
            name: self._param(params, f"{name}_{self.prefix}_loc")
            for name in self._latents
        }

    def sample_posterior(self, rng_key, params: dict, *args, sample_shape=(), **kwargs):
        self._require_prototype("sample_posterior")
        shape = tuple(sample_shape)
        return {
            name: jnp.broadcast_to(loc, shape + jnp.shape(loc))
            for name, loc in self._locs(params).items()
        }

    def median(self, params: dict) -> dict:
        self._require_prototype("median")
        return self._locs(params)

    def quantiles(self, params: dict, quantiles) -> dict:
        """Every quantile of a point mass is the point itself."""
        self._require_prototype("quantiles")
        count = jnp.size(jnp.asarray(quantiles))
        return {
            name: jnp.broadcast_to(loc, (count,) + jnp.shape(loc))
            for name, loc in self._locs(params).items()
        }
