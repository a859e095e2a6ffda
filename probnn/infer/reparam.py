"""Reparametrizers for :class:`probnn.handlers.reparam`.

A reparametrizer is called as ``reparametrizer(name, fn, obs)`` for a sample
site and returns either ``(None, value)``, and the site becomes a
deterministic site holding ``value``, computed from new sample sites that the
reparametrizer draws (named after the site), or ``(new_fn, None)``, and the
site is drawn from ``new_fn`` instead. Hierarchical models whose
posteriors form funnels sample far better non-centred:

>>> import jax, jax.numpy as jnp, probnn, probnn.distributions as dist
>>> from probnn.handlers import reparam, seed, trace
>>> def schools(sigma):
...     mu = probnn.sample("mu", dist.Normal(0.0, 5.0))
...     tau = probnn.sample("tau", dist.HalfCauchy(5.0))
...     with probnn.plate("J", sigma.shape[0]):
...         theta = probnn.sample("theta", dist.Normal(mu, tau))
...         probnn.sample("y", dist.Normal(theta, sigma))
>>> noncentred = reparam(schools, config={"theta": LocScaleReparam(centered=0)})
>>> tr = trace(seed(noncentred, rng_seed=0)).get_trace(jnp.ones(8))
>>> tr["theta_decentered"]["value"].shape, tr["theta"]["type"]
((8,), 'deterministic')
"""

from __future__ import annotations

import numbers

import jax.numpy as jnp

from probnn.distributions import constraints
from probnn.distributions.distribution import ExpandedDistribution, Independent, Unit
from probnn.distributions.transformed import TransformedDistribution
from probnn.distributions.transforms import biject_to
from probnn.distributions.util import sum_rightmost
from probnn.primitives import factor, get_mask, param, sample

__all__ = ["LocScaleReparam", "NeuTraReparam", "Reparam", "TransformReparam"]


class Reparam:
    """Base class of reparametrizers: ``__call__(name, fn, obs) -> (new_fn,
    value)`` (see the module docstring)."""

    def __call__(self, name: str, fn, obs):
        raise NotImplementedError

    def _latent_only(self, name: str, obs) -> None:
        if obs is not None:
            raise ValueError(
                f"{type(self).__name__}: sample site {name!r} is observed (or "
                "already has a value); only latent sites can be reparametrized"
            )


def _unwrap(fn):
    """``fn`` without its ExpandedDistribution / Independent wrappers, and a
    function putting the same wrappers around another distribution of the
    same batch and event shapes."""
    layers = []
    while isinstance(fn, ExpandedDistribution | Independent):
        layers.append(fn)
        fn = fn.base_dist

    def rewrap(inner):
        for layer in reversed(layers):
            if isinstance(layer, ExpandedDistribution):
                inner = inner.expand(layer.batch_shape)
            else:
                inner = inner.to_event(layer.reinterpreted_batch_ndims)
        return inner

    return fn, rewrap


def _as_transformed(fn):
    """Families that probnn implements directly but NumPyro builds as a
    TransformedDistribution, rewritten as the same law pushed through
    transforms (so TransformReparam treats them as NumPyro does); any other
    distribution is returned unchanged."""
    from probnn.distributions import (
        Exponential,
        Gamma,
        InverseGamma,
        Logistic,
        LogNormal,
        Normal,
        Pareto,
        RelaxedBernoulli,
    )
    from probnn.distributions.transforms import (
        AffineTransform,
        ExpTransform,
        PowerTransform,
        SigmoidTransform,
    )

    if isinstance(fn, TransformedDistribution):
        return fn
    if isinstance(fn, LogNormal):
        return TransformedDistribution(Normal(fn.loc, fn.scale), ExpTransform())
    if isinstance(fn, InverseGamma):
        # 1 / Gamma(concentration, rate)
        return TransformedDistribution(
            Gamma(fn.concentration, fn.rate), PowerTransform(-1.0)
        )
    if isinstance(fn, Pareto):
        # scale * exp(Exponential(alpha))
        return TransformedDistribution(
            Exponential(fn.alpha), [ExpTransform(), AffineTransform(0.0, fn.scale)]
        )
    if isinstance(fn, RelaxedBernoulli):
        # sigmoid of Logistic(logits / T, 1 / T)
        inverse_temperature = 1.0 / fn.temperature
        return TransformedDistribution(
            Logistic(fn.logits * inverse_temperature, inverse_temperature),
            SigmoidTransform(),
        )
    return fn


class LocScaleReparam(Reparam):
    """Decentre a location-scale family (Normal, StudentT, Cauchy, Laplace,
    ...): with ``centered = c``, the new site ``{name}_decentered`` is drawn
    from the same family with location ``c * loc`` and scale ``scale**c``,
    and the site's value is ``loc + scale**(1 - c) * (decentered - c * loc)``,
    which has the original distribution. ``c = 0`` is the fully non-centred
    form ``loc + scale * standard draw``; ``c = 1`` leaves the site as it is.

    Args:
        centered: ``c`` in [0, 1] (a number or an array broadcasting with the
            site), or None to learn it: a param ``{name}_centered`` in the
            unit interval, starting at 0.5, with the site's event shape.
        shape_params: names of the family's other parameters to carry over,
            e.g. ``("df",)`` for StudentT.
    """

    def __init__(self, centered=None, shape_params=()):
        if isinstance(centered, numbers.Real) and not 0 <= centered <= 1:
            raise ValueError(
                f"LocScaleReparam: centered must be in [0, 1] or None, got {centered!r}"
            )
        if isinstance(shape_params, str):
            shape_params = (shape_params,)
        self.centered = centered
        self.shape_params = tuple(shape_params)

    def __call__(self, name: str, fn, obs):
        self._latent_only(name, obs)
        if isinstance(self.centered, numbers.Real) and self.centered == 1:
            return fn, None
        base, rewrap = _unwrap(fn)
        family = type(base).__name__
        if not (hasattr(base, "loc") and hasattr(base, "scale")):
            raise TypeError(
                f"LocScaleReparam: sample site {name!r} has a {family}, which has "
                "no loc and scale"
            )
        if base.support is not constraints.real:
            raise TypeError(
                f"LocScaleReparam: sample site {name!r} has a {family} with support "
                f"{base.support}; decentring needs a family on the real line"
            )
        missing = [p for p in self.shape_params if not hasattr(base, p)]
        if missing:
            raise ValueError(
                f"LocScaleReparam: shape_params {missing} are not parameters of the "
                f"{family} at sample site {name!r}"
            )
        centered = self.centered
        if centered is None:
            centered = param(
                f"{name}_centered",
                jnp.full(fn.event_shape, 0.5),
                constraint=constraints.unit_interval,
                event_dim=len(fn.event_shape),
            )
        others = {p: getattr(base, p) for p in self.shape_params}
        decentered_fn = type(base)(
            loc=base.loc * centered, scale=base.scale**centered, **others
        )
        decentered = sample(f"{name}_decentered", rewrap(decentered_fn))
        value = base.loc + base.scale ** (1 - centered) * (
            decentered - centered * base.loc
        )
        return None, value


class TransformReparam(Reparam):
    """Draw a TransformedDistribution's base as the new site ``{name}_base``
    and give the site the transformed value.
    """

    def __call__(self, name: str, fn, obs):
        self._latent_only(name, obs)
        base, rewrap = _unwrap(fn)
        base = _as_transformed(base)
        if not isinstance(base, TransformedDistribution):
            raise TypeError(
                f"TransformReparam: sample site {name!r} has a {type(base).__name__}, "
                "not a TransformedDistribution"
            )
        inner = base.base_dist
        # batch dims of the base that the transforms read as event dims
        absorbed = len(inner.batch_shape) - len(base.batch_shape)
        if absorbed:
            inner = inner.to_event(absorbed)
        value = sample(f"{name}_base", rewrap(inner))
        for transform in base.transforms:
            value = transform(value)
        return None, value


class NeuTraReparam(Reparam):
    """Neural transport (Hoffman et al., 2019): sample a model's latent
    sites through a trained :class:`~probnn.infer.autoguide.AutoContinuous`
    guide's map from a standard Normal onto its posterior.

    Every latent site of the guide's model is reparametrized at once: at the
    first one, a standard Normal vector ``{prefix}_shared_latent`` is drawn
    (outside every plate; it carries no density of its own), pushed through
    ``guide.get_transform(params)`` and split into the sites' unconstrained
    values. Each site then holds its constrained value, and factors named
    ``_{site}_log_prob`` add the site's density with the Jacobian terms, so
    that the model's density over the shared latent is the pushed-back
    posterior. Where the guide fits well, that density is close to a
    standard Normal, which HMC and NUTS sample easily.

    Args:
        guide: a trained AutoContinuous guide (run at least once, e.g. by
            ``svi.init``).
        params: the guide's params (``svi.get_params(state)``).

    ``reparam(model)`` returns the model with every latent site
    reparametrized; :meth:`transform_sample` maps draws of the shared latent
    back onto the model's sites.
    """

    def __init__(self, guide, params: dict):
        from probnn.infer.autoguide import AutoContinuous

        if not isinstance(guide, AutoContinuous):
            raise TypeError(
                "NeuTraReparam expected an AutoContinuous guide (AutoDiagonalNormal, "
                f"AutoMultivariateNormal, ...), got {type(guide).__name__}"
            )
        guide._require_prototype("get_transform (asked by NeuTraReparam)")
        try:
            self.transform = guide.get_transform(params)
        except (NotImplementedError, TypeError) as error:
            raise ValueError(
                f"NeuTraReparam: {type(guide).__name__}.get_transform(params) is "
                "not available; NeuTraReparam needs a guide whose transform "
                "does not depend on the model's arguments"
            ) from error
        self.guide = guide
        self.params = params
        self._latent_names = tuple(guide._latent_shapes)
        self._pending: dict = {}

    def _config(self, msg):
        return self if msg["name"] in self._latent_names else None

    def reparam(self, fn=None):
        """``fn`` (or, without it, a decorator) with every latent site of the
        guide's model reparametrized."""
        from probnn.handlers import reparam

        return reparam(fn, config=self._config)

    def __call__(self, name: str, fn, obs):
        self._latent_only(name, obs)
        if name not in self._latent_names:
            raise ValueError(
                f"NeuTraReparam: sample site {name!r} is not a latent site of the "
                f"guide's model (those are {list(self._latent_names)})"
            )
        with_density = get_mask() is not False
        if name == self._latent_names[0]:
            # the first latent site of a run draws the shared latent
            plates = tuple(
                site["name"]
                for site in self.guide.prototype_trace.values()
                if site["type"] == "plate"
            )
            outside = {"block_plates": plates}
            z = sample(
                f"{self.guide.prefix}_shared_latent",
                self.guide.get_base_dist().mask(False),
                infer=outside,
            )
            x = self.transform(z)
            self._pending = self.guide._unpack_latent(x)
            if with_density:
                log_det = self.transform.log_abs_det_jacobian(z, x)
                unit = Unit(log_det)
                sample(
                    f"_{self.guide.prefix}_shared_latent_log_det",
                    unit,
                    obs=unit.sample(None),
                    infer={"is_auxiliary": True, **outside},
                )
        if name not in self._pending:
            raise ValueError(
                f"NeuTraReparam: sample site {name!r} came before the model's first "
                f"latent site {self._latent_names[0]!r} in this run; the model must "
                "visit its latent sites in the order of the guide's prototype run"
            )
        unconstrained = self._pending.pop(name)
        to_support = biject_to(fn.support)
        value = to_support(unconstrained)
        if with_density:
            log_det = to_support.log_abs_det_jacobian(unconstrained, value)
            log_det = sum_rightmost(
                log_det, jnp.ndim(log_det) - jnp.ndim(value) + len(fn.event_shape)
            )
            factor(f"_{name}_log_prob", fn.log_prob(value) + log_det)
        return None, value

    def transform_sample(self, latent) -> dict:
        """The model's latent sites (constrained) for draws ``latent`` of the
        shared latent (any batch shape in front)."""
        return self.guide._unpack_and_constrain(self.transform(latent))
