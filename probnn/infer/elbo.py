"""Evidence lower bounds: Trace_ELBO, TraceMeanField_ELBO and RenyiELBO.

Each ELBO runs the guide, replays the model against the guide's draws, and
returns a loss to minimise whose gradient is an unbiased estimate of the
gradient of the true objective: reparameterized guide sites differentiate
through their samples, the others contribute score-function terms
``stop_gradient(elbo) * grad log q(z)``.

Non-parameter state declared with :func:`probnn.mutable` (or by Flax modules)
comes back as ``mutable_state``. With several particles every particle starts
from the same state and the kept state is the mean of the particles' updated
floating-point leaves (their first particle's value for other leaves, such as
integer counters); with one particle it is that particle's state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from probnn import enumeration
from probnn.distributions.kl import kl_divergence
from probnn.enumeration import enum
from probnn.handlers import replay, seed, substitute, trace
from probnn.infer.enum import contract_trace
from probnn.infer.util import site_log_prob
from probnn.runtime import Message

__all__ = ["ELBO", "RenyiELBO", "TraceEnum_ELBO", "TraceMeanField_ELBO", "Trace_ELBO"]


def _after_guide(param_map: dict, guide_trace) -> dict:
    """What the model's sites are substituted with: ``param_map``, with the
    state the guide updated in place of a ``mutable`` site both share (each
    run updates its own copy: ``substitute`` never hands out the caller's
    dicts, so the caller's SVIState is never mutated)."""
    return {**param_map, **(mutable_state_of(guide_trace) or {})}


def get_traces(rng_key, param_map: dict, model, guide, args, kwargs):
    """Run the guide, then the model replayed against the guide's draws,
    both with ``param_map`` substituted; returns ``(model_trace, guide_trace)``."""
    guide_key, model_key = jax.random.split(rng_key)
    # seed outermost: sites whose value is substituted or replayed draw no key
    guide_trace = trace(seed(substitute(guide, data=param_map), guide_key)).get_trace(
        *args, **kwargs
    )
    data = _after_guide(param_map, guide_trace)
    replayed = replay(substitute(model, data=data), trace=guide_trace)
    model_trace = trace(seed(replayed, model_key)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def mutable_state_of(*traces) -> dict | None:
    """Values of the ``mutable`` sites of the traces (None when there are
    none); a site in several traces takes its value from the first (the
    model's trace, run after the guide's, holds both runs' updates)."""
    state = {}
    for tr in traces:
        for name, site in tr.items():
            if site["type"] == "mutable":
                state.setdefault(name, site["value"])
    return state or None


def is_latent(site: Message) -> bool:
    return site["type"] == "sample" and not site["is_observed"]


def _is_reparameterized(site: Message) -> bool:
    return bool(getattr(site["fn"], "has_rsample", False))


def _score_term(guide_trace) -> jnp.ndarray:
    """Sum of ``log q(z)`` over guide sites that are not reparameterizable,
    unscaled by plate subsampling (it is the density the draws came from)."""
    total = jnp.zeros(())
    for site in guide_trace.values():
        if (
            is_latent(site)
            and not _is_reparameterized(site)
            and "_enumerate_dim" not in site["infer"]
        ):
            total = total + jnp.sum(site["fn"].log_prob(site["value"]))
    return total


def _with_score_gradient(objective, score):
    """``objective`` in value; in gradient also ``objective * grad(score)``."""
    return objective + jax.lax.stop_gradient(objective) * (
        score - jax.lax.stop_gradient(score)
    )


def _model_site_logs(model_trace, skip=()) -> dict:
    """Summed log density of each sample site of the model, by name."""
    return {
        name: jnp.sum(site_log_prob(site))
        for name, site in model_trace.items()
        if site["type"] == "sample" and name not in skip
    }


def _guide_site_logs(guide_trace, skip=()) -> dict:
    """Summed log density of each latent site of the guide, by name."""
    return {
        name: jnp.sum(site_log_prob(site))
        for name, site in guide_trace.items()
        if is_latent(site) and name not in skip
    }


def _total(logs: dict) -> jnp.ndarray:
    total = jnp.zeros(())
    for value in logs.values():
        total = total + value
    return total


def _model_log_density(model_trace, analytic_kl_from=None) -> jnp.ndarray:
    return _total(_model_site_logs(model_trace, analytic_kl_from or ()))


def _guide_log_density(guide_trace, skip=()) -> jnp.ndarray:
    return _total(_guide_site_logs(guide_trace, skip))


def _mean_state(states):
    """Particles' mutable states stacked along a leading dim -> one state."""
    if states is None:
        return None

    def reduce(leaf):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            return jnp.mean(leaf, axis=0)
        return leaf[0]

    return jax.tree.map(reduce, states)


class ELBO:
    """Base class: ``num_particles`` independent draws from the guide per step,
    evaluated with ``vmap`` (``vectorize_particles=True``) or one after another
    (``lax.map``).

    Subclasses implement ``_particle(rng_key, param_map, model, guide, args,
    kwargs) -> (objective, mutable_state)`` where the objective is maximised.
    """

    can_infer_discrete = False

    def __init__(self, num_particles: int = 1, vectorize_particles: bool = True):
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(
                f"{type(self).__name__}: num_particles must be a positive int, "
                f"got {num_particles!r}"
            )
        self.num_particles = num_particles
        self.vectorize_particles = vectorize_particles

    def _particle(self, rng_key, param_map, model, guide, args, kwargs):
        raise NotImplementedError

    def _particles(self, rng_key, param_map, model, guide, args, kwargs):
        """Objectives of all particles (leading dim) and their mutable states."""

        def one(key):
            return self._particle(key, param_map, model, guide, args, kwargs)

        if self.num_particles == 1:
            objective, state = one(rng_key)
            return jax.tree.map(lambda leaf: leaf[None], objective), state, False
        keys = jax.random.split(rng_key, self.num_particles)
        if self.vectorize_particles:
            objectives, states = jax.vmap(one)(keys)
        else:
            objectives, states = jax.lax.map(one, keys)
        return objectives, states, True

    def _combine(self, objectives):
        """Loss (to minimise) from the particles' objectives."""
        return -jnp.mean(objectives)

    def loss_with_mutable_state(
        self,
        rng_key,
        param_map: dict,
        model: Callable,
        guide: Callable,
        *args,
        **kwargs,
    ) -> dict:
        """``{"loss": loss, "mutable_state": state}`` for one step.

        Args:
            rng_key: key for the guide's and model's draws.
            param_map: constrained values of param sites and the current
                mutable state, by site name.
            model: the model.
            guide: the guide.
            *args: positional arguments of model and guide.
            **kwargs: keyword arguments of model and guide.
        """
        objectives, states, stacked = self._particles(
            rng_key, param_map, model, guide, args, kwargs
        )
        state = _mean_state(states) if stacked else states
        return {"loss": self._combine(objectives), "mutable_state": state}

    def loss(
        self,
        rng_key,
        param_map: dict,
        model: Callable,
        guide: Callable,
        *args,
        **kwargs,
    ):
        """The loss (negative ELBO estimate) for one step; see
        :meth:`loss_with_mutable_state`."""
        return self.loss_with_mutable_state(
            rng_key, param_map, model, guide, *args, **kwargs
        )["loss"]


class Trace_ELBO(ELBO):
    """The standard ELBO, ``E_q[log p(x, z) - log q(z)]``, estimated from
    ``num_particles`` draws of the guide.

    Args:
        num_particles: draws of the guide per estimate.
        vectorize_particles: evaluate the particles with ``vmap`` (else
            ``lax.map``).
        multi_sample_guide: the guide draws several samples of its latents
            at once, along a leading dim of every latent site; the model is
            then run once per sample (vectorized) with that sample and the
            guide's plate indices substituted, and its log densities are
            summed over the samples (as NumPyro's option of that name).
        sum_sites: with False, ``loss`` returns a dict: each site's
            contribution to the loss (``log q - log p`` of that site,
            averaged over particles), which sum to the loss. For
            inspection: SVI needs the summed loss.

    >>> import jax, optax, probnn, probnn.distributions as dist
    >>> from probnn.infer import SVI, Trace_ELBO
    >>> def model():
    ...     probnn.sample("x", dist.Normal(0.0, 1.0))
    >>> def guide():
    ...     loc = probnn.param("loc", 0.0)
    ...     probnn.sample("x", dist.Normal(loc, 1.0))
    >>> elbo = Trace_ELBO(num_particles=1000)
    >>> loss = elbo.loss(jax.random.PRNGKey(0), {"loc": 0.0}, model, guide)
    >>> abs(float(loss)) < 0.01  # the guide equals the posterior: ELBO = log Z = 0
    True
    """

    def __init__(
        self,
        num_particles: int = 1,
        vectorize_particles: bool = True,
        multi_sample_guide: bool = False,
        sum_sites: bool = True,
    ):
        super().__init__(num_particles, vectorize_particles)
        self.multi_sample_guide = bool(multi_sample_guide)
        self.sum_sites = bool(sum_sites)

    def _particle(self, rng_key, param_map, model, guide, args, kwargs):
        if self.multi_sample_guide:
            model_logs, guide_trace, state = _multi_sample_logs(
                rng_key, param_map, model, guide, args, kwargs
            )
        else:
            model_trace, guide_trace = get_traces(
                rng_key, param_map, model, guide, args, kwargs
            )
            model_logs = _model_site_logs(model_trace)
            state = mutable_state_of(model_trace, guide_trace)
        guide_logs = _guide_site_logs(guide_trace)
        score = _score_term(guide_trace)
        if self.sum_sites:
            elbo = _total(model_logs) - _total(guide_logs)
            return _with_score_gradient(elbo, score), state
        zero = jnp.zeros(())
        per_site = {
            name: _with_score_gradient(
                model_logs.get(name, zero) - guide_logs.get(name, zero), score
            )
            for name in {**model_logs, **guide_logs}
        }
        return per_site, state

    def _combine(self, objectives):
        # with sum_sites=False: a dict of each site's contribution to the loss
        return jax.tree.map(lambda objective: -jnp.mean(objective), objectives)


def _multi_sample_logs(rng_key, param_map, model, guide, args, kwargs):
    """For a guide that draws several samples of its latents at once (a
    leading sample dim on every latent site): run the guide once, the model
    once per sample (vectorized, each sample substituted along with the
    guide's plate indices), and sum each model site's log density over the
    samples. Returns ``(model site logs, guide trace, mutable state)``."""
    guide_key, model_key = jax.random.split(rng_key)
    guide_trace = trace(seed(substitute(guide, data=param_map), guide_key)).get_trace(
        *args, **kwargs
    )
    values = {
        name: site["value"]
        for name, site in guide_trace.items()
        if (is_latent(site) and jnp.size(site["value"]) > 0)
        or site["type"] == "deterministic"
    }
    sizes = {name: jnp.shape(value)[:1] for name, value in values.items()}
    if not any(is_latent(site) for site in guide_trace.values()):
        raise ValueError(
            "Trace_ELBO(multi_sample_guide=True): the guide has no latent "
            "sample sites to take the samples from"
        )
    if len(set(sizes.values())) != 1 or () in sizes.values():
        raise ValueError(
            "Trace_ELBO(multi_sample_guide=True): every latent and deterministic "
            "site of the guide must carry the same leading number of samples; "
            f"got leading dims {sizes}"
        )
    (num_samples,) = next(iter(sizes.values()))
    plates = {
        name: site["value"]
        for name, site in guide_trace.items()
        if site["type"] == "plate"
    }
    data = {**_after_guide(param_map, guide_trace), **plates}

    def one(key, sample):
        model_trace = trace(
            seed(substitute(model, data={**data, **sample}), key)
        ).get_trace(*args, **kwargs)
        mutable = sorted(
            name for name, site in model_trace.items() if site["type"] == "mutable"
        )
        if mutable:
            raise ValueError(
                "Trace_ELBO(multi_sample_guide=True): the model's mutable sites "
                f"{mutable} would be updated once per guide sample; use a "
                "single-sample guide for a model with mutable state"
            )
        return _model_site_logs(model_trace)

    keys = jax.random.split(model_key, num_samples)
    per_sample = jax.vmap(one)(keys, values)
    model_logs = {name: jnp.sum(logs) for name, logs in per_sample.items()}
    return model_logs, guide_trace, mutable_state_of(guide_trace)


def _analytic_kl(model_site: Message, guide_site: Message):
    """Scaled ``KL(q || p)`` summed over the site, or None when no formula is
    registered for the pair."""
    try:
        kl = kl_divergence(guide_site["fn"], model_site["fn"])
    except NotImplementedError:
        return None
    if model_site["scale"] is not None:
        kl = model_site["scale"] * kl
    return jnp.sum(kl)


class TraceMeanField_ELBO(ELBO):
    """Trace_ELBO with the expectation of ``log p(z) - log q(z)`` replaced by
    ``-KL(q(z) || p(z))`` in closed form wherever ``kl_divergence`` knows the
    pair of distributions (other sites use the Monte Carlo estimate).

    Exact for guides whose latent sites are independent of each other (mean
    field) and model sites whose distribution does not depend on other
    latents through the guide's draws; it then has lower variance than
    :class:`Trace_ELBO` and the same expectation.
    """

    def _particle(self, rng_key, param_map, model, guide, args, kwargs):
        model_trace, guide_trace = get_traces(
            rng_key, param_map, model, guide, args, kwargs
        )
        analytic = {}
        for name, site in model_trace.items():
            guide_site = guide_trace.get(name)
            if is_latent(site) and guide_site is not None and is_latent(guide_site):
                kl = _analytic_kl(site, guide_site)
                if kl is not None:
                    analytic[name] = kl
        elbo = (
            _model_log_density(model_trace, analytic_kl_from=analytic)
            - _guide_log_density(guide_trace, skip=analytic)
            - sum(analytic.values(), jnp.zeros(()))
        )
        elbo = _with_score_gradient(elbo, _score_term(guide_trace))
        return elbo, mutable_state_of(model_trace, guide_trace)


class RenyiELBO(ELBO):
    """The Renyi alpha-divergence bound of Li and Turner (2016):
    ``1 / (1 - alpha) * log mean_k exp((1 - alpha) * w_k)`` with importance
    log weights ``w_k = log p(x, z_k) - log q(z_k)`` of ``num_particles``
    guide draws. ``alpha = 0`` is the importance-weighted bound (IWAE); as
    ``alpha -> 1`` it tends to the ELBO.

    Args:
        alpha: the divergence's order; any real number except 1.
        num_particles: number of guide draws (at least 2 for the bound to
            differ from the ELBO).
    """

    def __init__(
        self,
        alpha: float = 0.0,
        num_particles: int = 2,
        vectorize_particles: bool = True,
    ):
        if alpha == 1:
            raise ValueError(
                "RenyiELBO: alpha=1 is the ordinary ELBO; use Trace_ELBO instead"
            )
        self.alpha = alpha
        super().__init__(num_particles, vectorize_particles)

    def _particle(self, rng_key, param_map, model, guide, args, kwargs):
        model_trace, guide_trace = get_traces(
            rng_key, param_map, model, guide, args, kwargs
        )
        log_weight = _model_log_density(model_trace) - _guide_log_density(guide_trace)
        # the score terms of all particles are combined with the whole bound
        return (log_weight, _score_term(guide_trace)), mutable_state_of(
            model_trace, guide_trace
        )

    def _particles(self, rng_key, param_map, model, guide, args, kwargs):
        (log_weights, scores), states, stacked = super()._particles(
            rng_key, param_map, model, guide, args, kwargs
        )
        return (log_weights, jnp.sum(scores)), states, stacked

    def _combine(self, objectives):
        log_weights, score = objectives
        scaled = (1 - self.alpha) * log_weights
        bound = (jax.nn.logsumexp(scaled) - math.log(self.num_particles)) / (
            1 - self.alpha
        )
        return -_with_score_gradient(bound, score)


class TraceEnum_ELBO(ELBO):
    """Trace_ELBO with the model's discrete latent sites summed out exactly.

    Model sites marked ``infer={"enumerate": "parallel"}`` (for example by
    :func:`probnn.handlers.config_enumerate`) that the guide does not sample
    are enumerated: the model's log density is their exact marginal,
    computed by plated tensor variable elimination, and discrete sites
    inside :func:`probnn.scan` are summed along time (see
    :mod:`probnn.infer.enum`). Guide sites marked the same way (outside
    scans) are enumerated too: the ELBO is then the exact expectation over
    them, weighted by their guide probabilities, so their parameters get
    exact gradients. The other sites behave as in :class:`Trace_ELBO`:
    reparameterized guide sites differentiate through their draws and the
    rest get score-function gradients.

    Args:
        num_particles: number of guide draws per step.
        max_plate_nesting: how many plate dims the model uses at most
            (enumeration dims go to their left); found by tracing the model
            once when not given.
        vectorize_particles: evaluate particles with ``vmap`` (else
            ``lax.map``).

    >>> import jax, jax.numpy as jnp, probnn, probnn.distributions as dist
    >>> from probnn.handlers import config_enumerate
    >>> @config_enumerate
    ... def model(y):
    ...     z = probnn.sample("z", dist.Bernoulli(0.3))
    ...     probnn.sample("y", dist.Normal(2.0 * z, 1.0), obs=y)
    >>> key, guide = jax.random.PRNGKey(0), lambda y: None
    >>> loss = TraceEnum_ELBO().loss(key, {}, model, guide, 1.0)
    >>> # p(y=1) = 0.7 N(1 | 0, 1) + 0.3 N(1 | 2, 1) = N(1 | 0, 1)
    >>> exact = -0.5 - 0.5 * jnp.log(2 * jnp.pi)
    >>> bool(jnp.allclose(-loss, exact))
    True
    """

    can_infer_discrete = True

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: int | None = None,
        vectorize_particles: bool = True,
    ):
        if max_plate_nesting is not None and (
            not isinstance(max_plate_nesting, int) or max_plate_nesting < 0
        ):
            raise ValueError(
                "TraceEnum_ELBO: max_plate_nesting must be an int >= 0, got "
                f"{max_plate_nesting!r}"
            )
        self.max_plate_nesting = max_plate_nesting
        super().__init__(num_particles, vectorize_particles)

    def _particle(self, rng_key, param_map, model, guide, args, kwargs):
        guide_key, model_key = jax.random.split(rng_key)
        nesting = self.max_plate_nesting
        if nesting is None:
            nesting = enumeration.max_plate_nesting(
                substitute(model, data=param_map), args, kwargs
            )
        # the guide's enumerated sites take the dims next to the plates, the
        # model's own enumerated sites the ones left of those
        guide_enum = enumeration.guide_enum(
            substitute(guide, data=param_map), first_available_dim=-nesting - 1
        )
        guide_trace = trace(seed(guide_enum, guide_key)).get_trace(*args, **kwargs)
        enumerated_guide = any(
            site["type"] == "sample" and "_enumerate_dim" in site["infer"]
            for site in guide_trace.values()
        )
        data = _after_guide(param_map, guide_trace)
        replayed = replay(substitute(model, data=data), trace=guide_trace)
        first_model_dim = guide_enum.next_dim if enumerated_guide else -nesting - 1
        enumerated = enum(replayed, first_available_dim=first_model_dim)
        model_trace = trace(seed(enumerated, model_key)).get_trace(*args, **kwargs)
        if enumerated_guide:
            elbo = contract_trace(
                model_trace, guide_trace=guide_trace, unmask_enumerated=True
            )
        else:
            elbo = contract_trace(model_trace, unmask_enumerated=True)
            elbo = elbo - _guide_log_density(guide_trace)
        elbo = _with_score_gradient(elbo, _score_term(guide_trace))
        return elbo, mutable_state_of(model_trace, guide_trace)
