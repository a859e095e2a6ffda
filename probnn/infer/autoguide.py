"""Automatic guides: variational families built from a model's latent sites.

An autoguide runs the model once, on its first call (the *prototype* run,
under ``seed`` with a key from :func:`probnn.prng_key` and the
``init_loc_fn`` strategy), to find the latent sites: the unobserved,
non-auxiliary sample sites. Each latent site is guided in unconstrained space
through ``biject_to(site's support)``:

- :class:`AutoNormal` and :class:`AutoDelta` give every site its own params
  (``{site}_{prefix}_loc``, ``{site}_{prefix}_scale``) and recreate the
  model's plates, so they support subsampled (mini-batched) local latents.
- :class:`AutoDiagonalNormal`, :class:`AutoMultivariateNormal`,
  :class:`AutoLowRankMultivariateNormal` and
  :class:`AutoLaplaceApproximation` flatten all latents into one vector drawn
  at the auxiliary site ``_{prefix}_latent``; each model site then gets a
  ``Delta`` at its constrained value, carrying the log Jacobian.

Every guide offers ``median(params)``, ``quantiles(params, quantiles)`` and
``sample_posterior(rng_key, params, ...)`` with ``params`` the constrained
values from ``SVI.get_params``. The constrained values these return use each
site's support as it was in the prototype run.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

import probnn.distributions as dist
from probnn.distributions import constraints
from probnn.distributions.transforms import (
    AffineTransform,
    IdentityTransform,
    IndependentTransform,
    Transform,
    biject_to,
)
from probnn.distributions.util import is_concrete, sum_rightmost
from probnn.handlers import block, seed, substitute, trace
from probnn.infer.initialization import (
    init_to_median,
    init_to_uniform,
    initial_values_of,
)
from probnn.infer.util import site_log_prob
from probnn.primitives import param, plate, prng_key, sample
from probnn.runtime import CondIndepStackFrame, Message

__all__ = [
    "AutoContinuous",
    "AutoDelta",
    "AutoDiagonalNormal",
    "AutoGuide",
    "AutoLaplaceApproximation",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
    "AutoNormal",
]


class _LatentSite(NamedTuple):
    """What the prototype run taught us about one latent site."""

    support: constraints.Constraint
    transform: Transform
    event_dim: int  # of the constrained value
    value: jax.Array  # constrained initial value
    unconstrained: jax.Array  # its image in unconstrained space
    unconstrained_event_dim: int
    frames: tuple[CondIndepStackFrame, ...]


class _PointMass(dist.Delta):
    """A ``Delta`` that declares the support of the model site it stands for,
    so that SVI's model/guide support check sees matching sites."""

    pytree_aux_fields = ("_event_ndim", "_support")

    def __init__(self, v, log_density=0.0, event_dim=0, support=constraints.real):
        self._support = support
        super().__init__(v, log_density, event_dim)

    @property
    def support(self):
        return self._support


class _LowerCholeskyAffine(Transform):
    """``y = loc + scale_tril @ x`` on vectors (what ``get_transform`` of the
    multivariate guides returns)."""

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


def _is_identity(transform: Transform) -> bool:
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, IdentityTransform)


def _repeat_to_full_size(value, frames, event_dim: int):
    """Tile a value drawn inside subsampled plates to the plates' full sizes."""
    for frame in frames:
        if frame.subsample_size < frame.size:
            axis = frame.dim - event_dim
            rows = jnp.shape(value)[axis]
            value = jnp.take(value, jnp.arange(frame.size) % rows, axis=axis)
    return value


def _inside(support, value, unconstrained) -> bool:
    """False only when an initial value is known to lie outside the support."""
    if not is_concrete((value, unconstrained)):
        return True
    if not bool(jnp.all(jnp.isfinite(unconstrained))):
        return False
    if constraints.is_dependent(support):
        return True
    return bool(jnp.all(support(value)))


def _check_init_scale(owner: str, init_scale) -> None:
    if not init_scale > 0:
        raise ValueError(f"{owner}: init_scale must be positive, got {init_scale!r}")


def _unconstrained_log_joint(model, args, kwargs, unconstrained: dict, params: dict):
    """Log joint of ``model`` at latent values given in unconstrained space,
    plus the log Jacobians of the maps onto the supports."""
    log_jacobians = []

    def value_of(site: Message):
        name = site["name"]
        if site["type"] == "param":
            return params.get(name)
        if site["type"] != "sample" or site["is_observed"] or name not in unconstrained:
            return None
        transform = biject_to(site["fn"].support)
        u = unconstrained[name]
        value = transform(u)
        log_det = transform.log_abs_det_jacobian(u, value)
        batch_ndim = jnp.ndim(value) - site["fn"].event_dim
        log_det = sum_rightmost(log_det, jnp.ndim(log_det) - batch_ndim)
        if site["scale"] is not None:
            log_det = site["scale"] * log_det
        log_jacobians.append(jnp.sum(log_det))
        return value

    # fixed key: subsampled plates then see the same mini-batch on every call
    seeded = seed(model, rng_seed=0)
    model_trace = trace(substitute(seeded, substitute_fn=value_of)).get_trace(
        *args, **kwargs
    )
    log_joint = sum(log_jacobians, jnp.zeros(()))
    for site in model_trace.values():
        if site["type"] == "sample":
            log_joint = log_joint + jnp.sum(site_log_prob(site))
    return log_joint


class AutoGuide:
    """Base class of the automatic guides.

    Args:
        model: the model to guide.
        prefix: prefix of the guide's param site names.
        init_loc_fn: initialization strategy for the guide's locations (see
            :mod:`probnn.infer.initialization`).
        create_plates: optional function of the model's ``*args, **kwargs``
            returning a :class:`probnn.plate` (or a list of them) to use in
            place of the plates the guide would recreate, by name.
        forward_mode_differentiation: accepted for NumPyro compatibility; the
            prototype run takes no gradients, so it has no effect.
    """

    def __init__(
        self,
        model: Callable,
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        create_plates: Callable | None = None,
        forward_mode_differentiation: bool = False,
    ):
        if not callable(model):
            raise TypeError(
                f"{type(self).__name__}: model must be callable, got "
                f"{type(model).__name__}"
            )
        if not isinstance(prefix, str):
            raise TypeError(
                f"{type(self).__name__}: prefix must be a string, got {prefix!r}"
            )
        self.model = model
        self.prefix = prefix
        self.init_loc_fn = init_loc_fn
        self.create_plates = create_plates
        self._forward_mode_differentiation = forward_mode_differentiation
        self.prototype_trace: dict[str, Message] | None = None
        self._latents: dict[str, _LatentSite] = {}
        self._frames: dict[str, CondIndepStackFrame] = {}
        self._model_args: tuple[tuple, dict] = ((), {})

    def __call__(self, *args, **kwargs) -> dict:
        """Draw every latent site of the model; returns ``{site: value}``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return self._guide(*args, **kwargs)

    # -- the prototype run ----------------------------------------------------

    def _setup_prototype(self, *args, **kwargs) -> None:
        key = prng_key()
        with block():
            seeded = seed(self.model, rng_seed=key)
            prototype = trace(
                substitute(seeded, substitute_fn=self.init_loc_fn)
            ).get_trace(*args, **kwargs)
        latents = [
            site
            for site in prototype.values()
            if site["type"] == "sample"
            and not site["is_observed"]
            and not site["infer"].get("is_auxiliary")
        ]
        names = sorted(site["name"] for site in latents)
        values = initial_values_of(self.init_loc_fn)
        unknown = sorted(set(values or ()) - set(names))
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: init_to_value has values for {unknown}, "
                f"which match no latent sample site of the model; the latent "
                f"sites are {names}"
            )
        if not latents:
            raise ValueError(
                f"{type(self).__name__}: the model has no latent sample sites "
                "(every sample site is observed or auxiliary), so there is "
                "nothing to guide"
            )
        self._latents = {site["name"]: self._describe(site) for site in latents}
        self._frames = {}
        for name, latent in self._latents.items():
            for frame in latent.frames:
                known = self._frames.setdefault(frame.name, frame)
                if known != frame:
                    raise ValueError(
                        f"{type(self).__name__}: plate {frame.name!r} at latent "
                        f"site {name!r} is {frame}, but {known} at an earlier site"
                    )
        self._model_args = (args, kwargs)
        self._setup()
        self.prototype_trace = prototype

    def _describe(self, site: Message) -> _LatentSite:
        name, fn = site["name"], site["fn"]
        owner = type(self).__name__
        support = fn.support
        if support.is_discrete:
            raise ValueError(
                f"{owner}: latent site {name!r} ({type(fn).__name__}) is discrete "
                f"with support {support!r}; autoguides cover continuous latent "
                "sites only: marginalise it out or guide it separately"
            )
        try:
            transform = biject_to(support)
        except NotImplementedError as error:
            raise ValueError(
                f"{owner}: latent site {name!r} ({type(fn).__name__}): {error}"
            ) from None
        value = jnp.asarray(site["value"])
        expected = fn.shape(tuple(site["kwargs"].get("sample_shape", ())))
        if jnp.shape(value) != expected:
            raise ValueError(
                f"{owner}: initial value of latent site {name!r} has shape "
                f"{jnp.shape(value)}, expected {expected}"
            )
        unconstrained = transform.inv(value)
        if not _inside(support, value, unconstrained):
            raise ValueError(
                f"{owner}: initial value {value!r} of latent site {name!r} is not "
                f"inside its support {support!r}"
            )
        event_dim = fn.event_dim
        return _LatentSite(
            support=support,
            transform=transform,
            event_dim=event_dim,
            value=value,
            unconstrained=unconstrained,
            unconstrained_event_dim=event_dim
            + jnp.ndim(unconstrained)
            - jnp.ndim(value),
            frames=tuple(site["cond_indep_stack"]),
        )

    def _setup(self) -> None:
        """Subclass hook, run once the latent sites are known."""

    # -- helpers for subclasses -----------------------------------------------

    def _make_plates(self, *args, **kwargs) -> dict[str, plate]:
        plates = {}
        if self.create_plates is not None:
            made = self.create_plates(*args, **kwargs)
            made = [made] if isinstance(made, plate) else list(made)
            for p in made:
                if not isinstance(p, plate):
                    raise TypeError(
                        f"{type(self).__name__}: create_plates must return plates, "
                        f"got {type(p).__name__}"
                    )
                plates[p.name] = p
        for name, frame in self._frames.items():
            if name not in plates:
                plates[name] = plate(
                    name, frame.size, subsample_size=frame.subsample_size, dim=frame.dim
                )
        return plates

    @staticmethod
    def _enter_plates(stack, frames, plates: dict, indices: dict) -> None:
        # A plate draws its mini-batch each time it is entered: the first
        # entry of each plate draws, later ones (for other sites) reuse it.
        stack.enter_context(substitute(data=indices))
        for frame in frames:
            indices[frame.name] = stack.enter_context(plates[frame.name])

    def _require_prototype(self, method: str) -> None:
        if self.prototype_trace is None:
            raise RuntimeError(
                f"{type(self).__name__}.{method}: the guide has not seen the model "
                "yet; run it once first (svi.init or svi.run does)"
            )

    def _param(self, params: dict, name: str):
        try:
            return params[name]
        except KeyError:
            raise ValueError(
                f"{type(self).__name__}: params has no {name!r}; pass this "
                "guide's constrained params, e.g. svi.get_params(state)"
            ) from None

    def _constrain(self, unconstrained: dict) -> dict:
        return {
            name: self._latents[name].transform(value)
            for name, value in unconstrained.items()
        }

    # -- the interface ----------------------------------------------------------

    def _guide(self, *args, **kwargs) -> dict:
        raise NotImplementedError

    def sample_posterior(self, rng_key, params: dict, *args, sample_shape=(), **kwargs):
        """Draws of the constrained latent sites, each of shape
        ``sample_shape + site shape``.

        Args:
            rng_key: random key.
            params: the guide's constrained params (``SVI.get_params``).
            *args: the model's positional arguments (unused by these guides).
            sample_shape: leading shape of the draws.
            **kwargs: the model's keyword arguments (unused by these guides).
        """
        raise NotImplementedError

    def median(self, params: dict) -> dict:
        """Posterior median of each latent site, in constrained space."""
        raise NotImplementedError

    def quantiles(self, params: dict, quantiles) -> dict:
        """Posterior quantiles of each latent site: ``{site: array}`` with a
        leading dim over ``quantiles``."""
        raise NotImplementedError


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
        indices: dict = {}
        result = {}
        for name, latent in self._latents.items():
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
                fn = dist.Normal(loc, scale).to_event(event_dim)
                if not _is_identity(latent.transform):
                    fn = dist.TransformedDistribution(fn, latent.transform)
                result[name] = sample(name, fn)
        return result

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
                fn = _PointMass(loc, event_dim=latent.event_dim, support=latent.support)
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
    """

    def _setup(self) -> None:
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

    def _guide(self, *args, **kwargs) -> dict:
        latent = sample(
            f"_{self.prefix}_latent",
            self._get_posterior(),
            infer={"is_auxiliary": True},
        )
        result = {}
        for name, unconstrained in self._unpack_latent(latent).items():
            site = self._latents[name]
            value = site.transform(unconstrained)
            log_density = -site.transform.log_abs_det_jacobian(unconstrained, value)
            batch_ndim = jnp.ndim(value) - site.event_dim
            log_density = sum_rightmost(log_density, jnp.ndim(log_density) - batch_ndim)
            fn = _PointMass(value, log_density, site.event_dim, site.support)
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
    >>> guide.latent_dim, state.optim_state[0]["auto_scale"].shape
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
        return _LowerCholeskyAffine(self._loc(params), scale_tril)

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
    >>> state.optim_state[0]["auto_cov_factor"].shape
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
        return _LowerCholeskyAffine(posterior.loc, posterior.scale_tril)


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
        return -_unconstrained_log_joint(
            self.model, args, kwargs, unconstrained, params
        )

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
        return _LowerCholeskyAffine(loc, jnp.where(broken, 0.0, scale_tril))

    def get_posterior(self, params: dict):
        transform = self.get_transform(params)
        return dist.MultivariateNormal(
            transform.loc, scale_tril=transform.scale_tril, validate_args=False
        )
