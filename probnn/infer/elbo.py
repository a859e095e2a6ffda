"""Evidence lower bounds: Trace_ELBO, TraceMeanField_ELBO, TraceGraph_ELBO,
RenyiELBO and TraceEnum_ELBO.

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
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from probnn import enumeration
from probnn.distributions.kl import kl_divergence
from probnn.enumeration import enum
from probnn.handlers import replay, seed, substitute, trace
from probnn.infer.enum import contract_trace
from probnn.infer.tracegraph import input_dependencies
from probnn.infer.util import site_log_prob
from probnn.runtime import Message, Messenger

__all__ = [
    "ELBO",
    "RenyiELBO",
    "TraceEnum_ELBO",
    "TraceGraph_ELBO",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
]


def _after_guide(param_map: dict, guide_trace) -> dict:
    """What the model's sites are substituted with: ``param_map``, with the
    state the guide updated in place of a ``mutable`` site both share (each
    run updates its own copy: ``substitute`` never hands out the caller's
    dicts, so the caller's SVIState is never mutated)."""
    return {**param_map, **(mutable_state_of(guide_trace) or {})}


class _CutNonReparamPaths(Messenger):
    """Stop gradients through the draws of latent sites that are not
    reparameterizable, so that their parameters learn from score terms
    alone. Used around ``trace`` (postprocessing runs outermost first), so
    the traces hold the cut values (see :func:`get_traces`)."""

    def postprocess_message(self, msg: Message) -> None:
        if is_latent(msg) and not _is_reparameterized(msg):
            msg["value"] = jax.lax.stop_gradient(msg["value"])


def _guide_trace(guide_key, param_map: dict, guide, args, kwargs):
    """The guide's trace with ``param_map`` substituted. The draws of its
    sites that are not reparameterizable carry no gradient: their parameters
    learn from the score terms alone (a draw that is differentiable all the
    same, such as VonMises' in its loc, would otherwise add a pathwise term
    to the score term, a biased sum). Whether a draw is cut depends on the
    guide's distribution only: the model's prior at that site may be of any
    kind (an ``ImproperUniform``, say) and its value, replayed from here,
    keeps its path."""
    # seed outermost: sites whose value is substituted draw no key
    with _CutNonReparamPaths():
        return trace(seed(substitute(guide, data=param_map), guide_key)).get_trace(
            *args, **kwargs
        )


def get_traces(rng_key, param_map: dict, model, guide, args, kwargs):
    """Run the guide, then the model replayed against the guide's draws,
    both with ``param_map`` substituted; returns ``(model_trace, guide_trace)``."""
    model_key, guide_key = jax.random.split(rng_key)
    guide_trace = _guide_trace(guide_key, param_map, guide, args, kwargs)
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


def _model_site_logs(model_trace, skip=(), reduce=jnp.sum) -> dict:
    """Summed (by ``reduce``) log density of each sample site of the model,
    by name."""
    return {
        name: reduce(site_log_prob(site))
        for name, site in model_trace.items()
        if site["type"] == "sample" and name not in skip
    }


def _guide_site_logs(guide_trace, skip=(), reduce=jnp.sum) -> dict:
    """Summed (by ``reduce``) log density of each sample site of the guide,
    by name: its latent sites and, as in NumPyro, any site it observes."""
    return {
        name: reduce(site_log_prob(site))
        for name, site in guide_trace.items()
        if site["type"] == "sample" and name not in skip
    }


def _unreduced(log):
    return log


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


def _apply_vmap(fn: Callable, keys):
    """Evaluate ``fn`` at every key at once (``vectorize_particles=True``)."""
    return jax.vmap(fn)(keys)


def _particle_map(owner: str, vectorize_particles) -> Callable:
    """How the particles are evaluated: ``(fn, keys) -> stacked results``."""
    if callable(vectorize_particles):
        return vectorize_particles
    if isinstance(vectorize_particles, bool | np.bool_):
        return _apply_vmap if vectorize_particles else jax.lax.map
    raise ValueError(
        f"{owner}: vectorize_particles must be True (vmap), False (lax.map) or a "
        f"callable (fn, keys) -> results such as jax.pmap's, got "
        f"{vectorize_particles!r}"
    )


class ELBO:
    """Base class: ``num_particles`` independent draws from the guide per step,
    evaluated with ``vmap`` (``vectorize_particles=True``), one after another
    (``lax.map``, ``False``), or by a callable ``(fn, keys) -> results`` of
    the user's (as in NumPyro, e.g. one that runs them with ``jax.pmap``).

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
        self.vectorize_particles_fn = self._assign_vectorize_particles_fn(
            vectorize_particles
        )

    def _particle(self, rng_key, param_map, model, guide, args, kwargs):
        raise NotImplementedError

    def _assign_vectorize_particles_fn(self, vectorize_particles):
        """How particles are evaluated for a ``vectorize_particles`` setting
        (NumPyro's method of this name)."""
        return _particle_map(type(self).__name__, vectorize_particles)

    def _particles(self, rng_key, param_map, model, guide, args, kwargs):
        """Objectives of all particles (leading dim) and their mutable states."""

        def one(key):
            return self._particle(key, param_map, model, guide, args, kwargs)

        if self.num_particles == 1:
            objective, state = one(rng_key)
            return jax.tree.map(lambda leaf: leaf[None], objective), state, False
        keys = jax.random.split(rng_key, self.num_particles)
        objectives, states = self.vectorize_particles_fn(one, keys)
        return objectives, states, True

    def _combine(self, objectives):
        """Loss (to minimise) from the particles' objectives (a dict of them,
        one per site, with ``sum_sites=False``)."""
        return jax.tree.map(lambda objective: -jnp.mean(objective), objectives)

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
        state = states
        if stacked and states is not None:
            # NumPyro drops the state here (with a warning); it is kept, as
            # the particles' mean, and the user is told so
            warnings.warn(
                f"{type(self).__name__}: mutable state with num_particles="
                f"{self.num_particles}: the new state is the mean of the "
                "particles' states (integer leaves: the first particle's)",
                UserWarning,
                stacklevel=2,
            )
            state = _mean_state(states)
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
        vectorize_particles: evaluate the particles with ``vmap`` (True),
            ``lax.map`` (False) or a callable ``(fn, keys) -> results``.
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
        return _per_site(model_logs, guide_logs, score), state


def _per_site(model_logs: dict, guide_logs: dict, score) -> dict:
    """Each site's contribution to the ELBO (``sum_sites=False``), by name,
    every one with the score-function gradient of the whole guide."""
    zero = jnp.zeros(())
    return {
        name: _with_score_gradient(
            model_logs.get(name, zero) - guide_logs.get(name, zero), score
        )
        for name in {**model_logs, **guide_logs}
    }


def _multi_sample_logs(rng_key, param_map, model, guide, args, kwargs):
    """For a guide that draws several samples of its latents at once (a
    leading sample dim on every latent site): run the guide once, the model
    once per sample (vectorized, each sample substituted along with the
    guide's plate indices), and sum each model site's log density over the
    samples. Returns ``(model site logs, guide trace, mutable state)``."""
    model_key, guide_key = jax.random.split(rng_key)
    guide_trace = _guide_trace(guide_key, param_map, guide, args, kwargs)
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

    Args:
        num_particles: draws of the guide per estimate.
        vectorize_particles: as for :class:`Trace_ELBO`.
        sum_sites: with False, ``loss`` returns a dict of each site's
            contribution to the loss (as :class:`Trace_ELBO` and NumPyro).
    """

    def __init__(
        self,
        num_particles: int = 1,
        vectorize_particles: bool = True,
        sum_sites: bool = True,
    ):
        super().__init__(num_particles, vectorize_particles)
        self.sum_sites = bool(sum_sites)

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
        if not self.sum_sites:
            model_logs = _model_site_logs(model_trace, analytic)
            model_logs.update({name: -kl for name, kl in analytic.items()})
            guide_logs = _guide_site_logs(guide_trace, analytic)
            per_site = _per_site(model_logs, guide_logs, _score_term(guide_trace))
            return per_site, mutable_state_of(model_trace, guide_trace)
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

    As in NumPyro the bound is local: along the plates that enclose every
    sample site (a data plate around a whole amortized model, say), each
    member gets a bound of its own from its own log weights, and the
    members' bounds are summed. All particles see the same mini-batch of a
    subsampled plate, and the sum is scaled by ``size / subsample_size``
    of those plates; subsampling a plate that does not enclose every sample
    site is an error.

    Args:
        alpha: the divergence's order; any real number except 1.
        num_particles: number of guide draws (at least 2 for the bound to
            differ from the ELBO).
        vectorize_particles: as for :class:`ELBO`.
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

    def _local_terms(self, rng_key, param_map, model, guide, args, kwargs):
        """One particle's log weight along the common plates, the plates'
        subsampling scale (removed from the log weight), the score terms
        along the common plates, and the mutable state."""
        model_trace, guide_trace = get_traces(
            rng_key, param_map, model, guide, args, kwargs
        )
        stacks = [
            set(site["cond_indep_stack"])
            for tr in (model_trace, guide_trace)
            for site in tr.values()
            if site["type"] == "sample"
        ]
        common = set.intersection(*stacks) if stacks else set()
        for frame in set().union(*stacks) - common:
            if frame.subsample_size < frame.size:
                raise ValueError(
                    f"RenyiELBO: plate {frame.name!r} is subsampled but does not "
                    "enclose every sample site; only a plate common to all sample "
                    "sites (a data plate around the whole model) may be subsampled"
                )
        scale = 1.0
        for frame in common:
            scale = scale * frame.size / frame.subsample_size
        keep = {frame.dim for frame in common}

        def local(log_prob):
            # sum over every dim but the common plates', keeping those
            # aligned from the right
            log_prob = jnp.asarray(log_prob)
            axes = tuple(
                axis
                for axis in range(log_prob.ndim)
                if axis - log_prob.ndim not in keep
            )
            summed = jnp.sum(log_prob, axis=axes, keepdims=True)
            depth = -min(keep, default=0)
            if summed.ndim > depth:
                summed = summed.reshape(summed.shape[summed.ndim - depth :])
            return summed

        log_weight = jnp.zeros(())
        score = jnp.zeros(())
        for sign, tr in ((1.0, model_trace), (-1.0, guide_trace)):
            for site in tr.values():
                if site["type"] == "sample":
                    log_weight = log_weight + sign * local(site_log_prob(site))
        for site in guide_trace.values():
            if is_latent(site) and not _is_reparameterized(site):
                score = score + local(site["fn"].log_prob(site["value"]))
        return (
            log_weight / scale,
            jnp.asarray(scale),
            score,
            mutable_state_of(model_trace, guide_trace),
        )

    def _single_particle_elbo(self, model, guide, param_map, args, kwargs, rng_key):
        """``(log_weight, scale)`` of one particle: its log weight along the
        plates common to all sample sites, with their subsampling scale
        taken out, and that scale (NumPyro's method of this name)."""
        log_weight, scale, _, _ = self._local_terms(
            rng_key, param_map, model, guide, args, kwargs
        )
        return log_weight, scale

    def _particle(self, rng_key, param_map, model, guide, args, kwargs):
        log_weight, scale, score, state = self._local_terms(
            rng_key, param_map, model, guide, args, kwargs
        )
        return (log_weight, scale, score), state

    def _particles(self, rng_key, param_map, model, guide, args, kwargs):
        # one key for every plate's mini-batch, shared by all particles so
        # that their log weights line up member by member
        plate_key, rng_key = jax.random.split(rng_key)
        hide = ("sample", "param", "prng_key")
        model = seed(model, plate_key, hide_types=hide)
        guide = seed(guide, plate_key, hide_types=hide)
        return super()._particles(rng_key, param_map, model, guide, args, kwargs)

    def _combine(self, objectives):
        log_weights, scales, scores = objectives
        scaled = (1 - self.alpha) * log_weights
        bound = (jax.nn.logsumexp(scaled, axis=0) - math.log(self.num_particles)) / (
            1 - self.alpha
        )
        # the score terms of all particles are combined with each member's bound
        local = _with_score_gradient(bound, jnp.sum(scores, axis=0))
        return -jnp.sum(local) * scales[0]


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
        model_key, guide_key = jax.random.split(rng_key)
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


def _reject_enumerated(model_trace, guide_trace) -> None:
    """TraceGraph_ELBO samples every latent site: none may ask to be summed out."""
    for role, tr in (("guide", guide_trace), ("model", model_trace)):
        for name, site in tr.items():
            if not is_latent(site):
                continue
            mark = site["infer"].get("enumerate")
            if "_enumerate_dim" in site["infer"] or (
                mark and (role == "guide" or name not in guide_trace)
            ):
                where = (
                    "drop the mark to sample it"
                    if role == "guide"
                    else "sample it in the guide"
                )
                raise ValueError(
                    f"TraceGraph_ELBO samples every latent site and does not "
                    f"enumerate: {role} site {name!r} is marked "
                    f"infer={{'enumerate': {mark!r}}}; use TraceEnum_ELBO to sum "
                    f"it out exactly, or {where}"
                )


def _upstream_draws(param_map, model, guide, args, kwargs, guide_trace, scored):
    """For each cost term, the ``scored`` guide sites whose draws it depends on.

    Model and guide are traced once more with the draws of the ``scored``
    sites as abstract inputs (the other sites drawn from a fixed key: only
    what feeds what matters here), and :func:`input_dependencies` reads which
    of those inputs reach each site's log density. A draw also carries the
    draws its own distribution was computed from: a cost that depends on
    ``b``, where ``b ~ q(b | a)``, depends on ``a`` too.

    Returns:
        ``(model, guide)``: dicts from site name to the frozenset of scored
        sites upstream of that site's log density.
    """
    draws = {name: guide_trace[name]["value"] for name in scored}

    def log_densities(values):
        model_tr, guide_tr = get_traces(
            jax.random.PRNGKey(0),
            param_map,
            model,
            substitute(guide, data=values),
            args,
            kwargs,
        )
        model_logs = _model_site_logs(model_tr, reduce=_unreduced)
        guide_logs = _guide_site_logs(guide_tr, reduce=_unreduced)
        # what each scored site's distribution is computed from
        parents = {
            name: [
                leaf
                for leaf in jax.tree.leaves(guide_tr[name]["fn"])
                if isinstance(leaf, jax.Array)
            ]
            for name in values
        }
        return model_logs, guide_logs, parents

    try:
        model_src, guide_src, parent_src = input_dependencies(log_densities, draws)
    except jax.errors.ConcretizationTypeError as error:
        raise ValueError(
            "TraceGraph_ELBO traces the model and guide with abstract values of "
            f"the non-reparameterized sites {sorted(scored)} to find which log "
            "densities depend on them; Python control flow on those values is "
            "not supported (use jnp.where or jax.lax.cond)"
        ) from error
    # close over chains of draws: a's descendants' costs are a's costs too
    ancestry = {name: frozenset({name}).union(*parent_src[name]) for name in scored}
    changed = True
    while changed:
        changed = False
        for name, found in ancestry.items():
            grown = found.union(*(ancestry[other] for other in found))
            if grown != found:
                ancestry[name], changed = grown, True
    everything = frozenset(scored)

    def upstream(sources):
        if sources is None:  # not seen in the tracing run: assume the worst
            return everything
        return frozenset().union(*(ancestry[name] for name in sources))

    return (
        {name: upstream(model_src.get(name)) for name in model_src},
        {name: upstream(guide_src.get(name)) for name in guide_src},
    )


def _summed_outside(cost, cost_frames, frames):
    """``cost`` summed over every dim but those of the plates it shares with
    ``frames`` (kept with ``keepdims``, so it broadcasts against a log density
    batched by ``frames``)."""
    named = {(frame.name, frame.dim) for frame in frames}
    shared = {frame.dim for frame in cost_frames if (frame.name, frame.dim) in named}
    ndim = jnp.ndim(cost)
    axes = tuple(axis for axis in range(ndim) if axis - ndim not in shared)
    return jnp.sum(cost, axis=axes, keepdims=True)


class TraceGraph_ELBO(ELBO):
    """The ELBO of :class:`Trace_ELBO` with a lower-variance gradient for
    guide sites that are not reparameterizable (discrete sites, or any
    distribution whose ``has_rsample`` is False).

    Trace_ELBO multiplies the score ``grad log q(z)`` of such a site by the
    whole ELBO estimate. Here each site's score is multiplied only by the
    cost terms (``log p`` of model sites, ``-log q`` of guide sites) whose
    value depends on its draw: its own terms and those of later sites
    computed from it, directly or through other draws of the guide. Inside a
    plate, a site's score meets only the terms of its own plate element
    (plates promise conditional independence), and terms of plates it is not
    in are summed. The other terms have zero expectation against the score,
    so the estimator stays unbiased (Schulman et al., 2015, "Gradient
    Estimation Using Stochastic Computation Graphs"). Reparameterized sites
    differentiate through their draws as in Trace_ELBO; the draws of the
    other sites carry no gradient.

    The dependencies are found once per compilation, not at every step: the
    model and guide are traced with the draws of the scored sites as
    abstract inputs and the jaxpr is read for which inputs reach each log
    density (:mod:`probnn.infer.tracegraph`), so they may be overstated
    (more variance, no bias) where values mix inside an opaque primitive,
    never missed. Python control flow on those draws is therefore not
    supported.

    The loss value equals Trace_ELBO's for the same key. As in Trace_ELBO
    (and Pyro), a score is the site's unscaled log density even under plate
    subsampling, while the cost terms carry their subsampling scale.
    Enumerated sites are rejected: use :class:`TraceEnum_ELBO`.

    Args:
        num_particles: draws of the guide per estimate.
        vectorize_particles: evaluate the particles with ``vmap`` (True),
            ``lax.map`` (False) or a callable ``(fn, keys) -> results``.

    >>> import jax, probnn, probnn.distributions as dist
    >>> def model():
    ...     z = probnn.sample("z", dist.Bernoulli(0.5))
    ...     probnn.sample("x", dist.Normal(z, 1.0), obs=1.0)
    >>> def guide():
    ...     probnn.sample("z", dist.Bernoulli(probnn.param("p", 0.5)))
    >>> elbo = TraceGraph_ELBO()
    >>> key, params = jax.random.PRNGKey(0), {"p": 0.5}
    >>> bool(elbo.loss(key, params, model, guide)
    ...      == Trace_ELBO().loss(key, params, model, guide))
    True
    """

    can_infer_discrete = True

    def _particle(self, rng_key, param_map, model, guide, args, kwargs):
        model_trace, guide_trace = get_traces(
            rng_key, param_map, model, guide, args, kwargs
        )
        _reject_enumerated(model_trace, guide_trace)
        state = mutable_state_of(model_trace, guide_trace)
        model_logs = _model_site_logs(model_trace, reduce=_unreduced)
        guide_logs = _guide_site_logs(guide_trace, reduce=_unreduced)
        scored = [
            name
            for name, site in guide_trace.items()
            if is_latent(site) and not _is_reparameterized(site)
        ]
        # Trace_ELBO's value; the gradient of -log q at a scored site's fixed
        # draw has zero mean and is left out
        guide_sums = {name: jnp.sum(log) for name, log in guide_logs.items()}
        for name in scored:
            guide_sums[name] = jax.lax.stop_gradient(guide_sums[name])
        elbo = _total({name: jnp.sum(log) for name, log in model_logs.items()})
        elbo = elbo - _total(guide_sums)
        if not scored:
            return elbo, state
        model_up, guide_up = _upstream_draws(
            param_map, model, guide, args, kwargs, guide_trace, scored
        )
        costs = [
            (model_logs[name], model_trace[name]["cond_indep_stack"], model_up[name])
            for name in model_logs
        ] + [
            (-guide_logs[name], guide_trace[name]["cond_indep_stack"], guide_up[name])
            for name in guide_logs
        ]
        surrogate = jnp.zeros(())
        for name in scored:
            site = guide_trace[name]
            frames = site["cond_indep_stack"]
            downstream = jnp.zeros(())
            for cost, cost_frames, upstream in costs:
                if name in upstream:
                    downstream = downstream + _summed_outside(cost, cost_frames, frames)
            score = site["fn"].log_prob(site["value"])
            surrogate = surrogate + jnp.sum(score * jax.lax.stop_gradient(downstream))
        return elbo + (surrogate - jax.lax.stop_gradient(surrogate)), state
