"""The autoguide base class: the prototype run and what it learns of each
latent site."""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from probnn.distributions import constraints
from probnn.distributions.transforms import (
    IdentityTransform,
    IndependentTransform,
    Transform,
    biject_to,
)
from probnn.distributions.util import is_concrete
from probnn.handlers import block, seed, substitute, trace
from probnn.infer.initialization import (
    init_to_uniform,
    initial_values_of,
)
from probnn.primitives import plate, prng_key
from probnn.runtime import CondIndepStackFrame, Message


class _LatentSite(NamedTuple):
    """What the prototype run taught us about one latent site."""

    support: constraints.Constraint
    transform: Transform
    event_dim: int  # of the constrained value
    value: jax.Array  # constrained initial value
    unconstrained: jax.Array  # its image in unconstrained space
    unconstrained_event_dim: int
    frames: tuple[CondIndepStackFrame, ...]


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


def _inside(support, value) -> bool:
    """False only when a value is known to lie outside the support."""
    if not is_concrete(value) or constraints.is_dependent(support):
        return True
    return bool(jnp.all(support(value)))


def _check_init_scale(owner: str, init_scale) -> None:
    if not init_scale > 0:
        raise ValueError(f"{owner}: init_scale must be positive, got {init_scale!r}")


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

    >>> import jax.numpy as jnp, probnn, probnn.distributions as dist
    >>> from probnn.handlers import seed
    >>> from probnn.infer.autoguide import AutoNormal
    >>> guide = AutoNormal(lambda: probnn.sample("s", dist.LogNormal(0.0, 1.0)))
    >>> _ = seed(guide, rng_seed=0)()  # the first call runs the model once
    >>> params = {"s_auto_loc": jnp.array(0.0), "s_auto_scale": jnp.array(1.0)}
    >>> guide.quantiles(params, [0.5, 0.8413])["s"]  # exp(0), exp(1)
    Array([1.   , 2.718], dtype=float32)
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
                substitute(seeded, substitute_fn=self._initial_value)
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

    def _initial_value(self, site: Message):
        """``init_loc_fn(site)``, checked before the model uses it."""
        value = self.init_loc_fn(site)
        if value is None or site["type"] != "sample" or site["is_observed"]:
            return value
        name, fn = site["name"], site["fn"]
        value = jnp.asarray(value)
        expected = fn.shape(tuple(site["kwargs"].get("sample_shape", ())))
        if jnp.shape(value) != expected:
            raise ValueError(
                f"{type(self).__name__}: initial value of latent site {name!r} has "
                f"shape {jnp.shape(value)}, expected {expected}"
            )
        if not _inside(fn.support, value):
            raise ValueError(
                f"{type(self).__name__}: initial value {value!r} of latent site "
                f"{name!r} is not inside its support {fn.support!r}"
            )
        return value

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
        unconstrained = transform.inv(value)
        if is_concrete(unconstrained) and not bool(
            jnp.all(jnp.isfinite(unconstrained))
        ):
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
