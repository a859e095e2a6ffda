"""HMC with energy conserving subsampling (HMCECS).

The chain's state is the latent point and, for every subsampled plate, the
indices of its current mini-batch. Each iteration first proposes new indices
for one block of the mini-batch and accepts them by a Metropolis step on the
estimated log likelihood at the current point, then moves the point by an
HMC or NUTS transition with the indices held fixed (Dang et al., 2019).

Without a proxy the log likelihood is the plate's own estimate, the
mini-batch sum scaled by ``size / subsample_size``. With
:func:`taylor_proxy` it is the difference estimator: a second (or first)
order Taylor expansion of every data point's log likelihood around reference
parameters, summed in closed form over the whole data, plus the scaled
mini-batch sum of what the expansion misses, less half the estimator's
variance (Quiroz et al., 2019). The expansion is in unconstrained space.
"""

from __future__ import annotations

import copy
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from probnn.handlers import block, seed, substitute, trace
from probnn.infer.hmc import HMC, HMCState
from probnn.infer.util import (
    constrain_fn,
    potential_energy,
    unconstrain_fn,
    value_and_grad_fn,
)
from probnn.runtime import Messenger

__all__ = ["HMCECS", "HMCECSState", "taylor_proxy"]

_ECS_KWARG = "_hmcecs"


_HMCECSFields = NamedTuple(
    "HMCECSState",
    [(name, Any) for name in HMCState._fields]
    + [("gibbs_sites", Any), ("gibbs_state", Any), ("gibbs_accept_prob", Any)],
)


class HMCECSState(_HMCECSFields):
    """The state of an :class:`HMCECS` chain: the fields of
    :class:`probnn.infer.hmc.HMCState` (those of the HMC/NUTS transition) and
    the subsampling state.

    ``gibbs_sites`` holds each subsampled plate's current indices by plate
    name, ``gibbs_state`` the proxy's statistics of those data points, and
    ``gibbs_accept_prob`` the acceptance probability of the last proposal of
    new indices (NumPyro calls this one ``accept_prob``; here that name is
    the HMC transition's, as in every other probnn sampler state).
    """

    __slots__ = ()

    @property
    def hmc_state(self) -> HMCState:
        """The HMC/NUTS part as an :class:`HMCState` (NumPyro's field of
        the same name; extra fields such as ``"hmc_state.potential_energy"``
        reach it)."""
        return HMCState(*self[: len(HMCState._fields)])


def _dropping_ecs_kwarg(model):
    def run(*args, **kwargs):
        kwargs.pop(_ECS_KWARG, None)
        return model(*args, **kwargs)

    return run


def _per_element(log_prob, dim):
    """Sum ``log_prob`` over every dim but the plate's ``dim`` (negative):
    one log likelihood per mini-batch member."""
    log_prob = jnp.asarray(log_prob)
    axis = log_prob.ndim + dim
    if axis < 0:
        raise ValueError(
            "HMCECS: an observed site's log density has no dim for its "
            "subsampled plate; observe a value batched along the plate"
        )
    moved = jnp.moveaxis(log_prob, axis, 0)
    return moved.reshape(moved.shape[0], -1).sum(-1)


class _SubsampledLikelihoods(Messenger):
    """Collects, per subsampled plate, each mini-batch member's log
    likelihood from the observed sites inside the plate, and masks those
    sites out of the model's density (the estimator stands in for them)."""

    def __init__(self, plates):
        super().__init__()
        self.plates = plates
        self.values = {}

    def process_message(self, msg):
        if msg["type"] != "sample" or not msg["is_observed"]:
            return
        frames = [f for f in msg["cond_indep_stack"] if f.name in self.plates]
        if not frames:
            return
        if len(frames) > 1:
            raise ValueError(
                f"HMCECS: observed site {msg['name']!r} is inside several "
                f"subsampled plates ({[f.name for f in frames]}); use one"
            )
        frame = frames[0]
        fn = msg["fn"]
        values = _per_element(fn.log_prob(msg["value"]), frame.dim)
        previous = self.values.get(frame.name)
        self.values[frame.name] = values if previous is None else previous + values
        msg["fn"] = fn.mask(False)


class _TaylorProxyState(NamedTuple):
    """One subsampled plate's Taylor statistics at the reference point
    (``reference``, flat and unconstrained): over every data point summed
    (``total_*``) and per member of the current mini-batch (``subsample_*``;
    ``*_hessian`` is None for a first order expansion)."""

    reference: Any
    total_value: Any
    total_gradient: Any
    total_hessian: Any
    subsample_value: Any
    subsample_gradient: Any
    subsample_hessian: Any


class _TaylorProxy:
    """The difference estimator with a Taylor expansion around reference
    parameters (made by :func:`taylor_proxy`, bound to a sampler)."""

    def __init__(self, reference_params, degree):
        if degree not in (1, 2):
            raise ValueError(f"taylor_proxy: degree must be 1 or 2, got {degree!r}")
        if not isinstance(reference_params, dict):
            raise TypeError(
                "taylor_proxy: reference_params must be a dict of the latent "
                "sites' values (constrained) by name"
            )
        self.reference_params = reference_params
        self.degree = degree

    # the per-point log likelihoods, as a function of the flat point
    def _element_log_likelihoods(self, kernel, flat, indices, args, kwargs):
        model = kernel.model
        values = constrain_fn(model, args, kwargs, kernel._unravel(flat))
        collector = _SubsampledLikelihoods(set(indices))
        with block(), collector:
            substitute(seed(model, rng_seed=0), data={**values, **indices})(
                *args, **kwargs
            )
        missing = set(indices) - set(collector.values)
        if missing:
            raise ValueError(
                f"HMCECS: subsampled plate(s) {sorted(missing)} hold no observed "
                "site; the proxy expands the observed sites' log likelihood"
            )
        return collector.values

    def _statistics(self, kernel, reference, indices, args, kwargs, summed=False):
        """Value, gradient and (degree 2) Hessian at the reference of each
        point's log likelihood, per plate, or of their sum (``summed``: the
        whole data's derivatives without one row per data point)."""

        def values(flat):
            out = self._element_log_likelihoods(kernel, flat, indices, args, kwargs)
            return {k: v.sum(0) for k, v in out.items()} if summed else out

        value = values(reference)
        gradient = jax.jacrev(values)(reference)
        hessian = (
            jax.jacfwd(jax.jacrev(values))(reference) if self.degree == 2 else None
        )
        return value, gradient, hessian

    def reference(self, kernel, args, kwargs):
        names = set(kernel._latent_names)
        given = set(self.reference_params)
        if given != names:
            raise ValueError(
                "taylor_proxy: reference_params must give every latent site; "
                f"missing {sorted(names - given)}, unknown {sorted(given - names)}"
            )
        unconstrained = unconstrain_fn(
            kernel.model, args, kwargs, dict(self.reference_params)
        )
        return ravel_pytree(
            {k: jnp.asarray(unconstrained[k]) for k in kernel._latent_names}
        )[0]

    def init(self, kernel, indices, args, kwargs):
        reference = self.reference(kernel, args, kwargs)
        everything = {
            name: jnp.arange(kernel._plate_sizes[name][0]) for name in indices
        }
        total = self._statistics(
            kernel, reference, everything, args, kwargs, summed=True
        )
        subsample = self._statistics(kernel, reference, indices, args, kwargs)
        state = {}
        for name in indices:
            state[name] = _TaylorProxyState(
                reference,
                total[0][name],
                total[1][name],
                None if total[2] is None else total[2][name],
                subsample[0][name],
                subsample[1][name],
                None if subsample[2] is None else subsample[2][name],
            )
        return state

    def replace(self, kernel, state, positions, new_indices, args, kwargs):
        """The statistics after the mini-batch members at ``positions`` of
        each plate became the points ``new_indices``."""
        some = next(iter(state.values()))
        value, gradient, hessian = self._statistics(
            kernel, some.reference, new_indices, args, kwargs
        )
        out = {}
        for name, old in state.items():
            at = positions[name]

            def put(current, new, at=at):
                return current.at[at].set(new, mode="drop")

            out[name] = old._replace(
                subsample_value=put(old.subsample_value, value[name]),
                subsample_gradient=put(old.subsample_gradient, gradient[name]),
                subsample_hessian=(
                    None
                    if hessian is None
                    else put(old.subsample_hessian, hessian[name])
                ),
            )
        return out

    @staticmethod
    def expansions(state, flat):
        """Per plate: the expansion at ``flat`` summed over the whole data,
        and its value at each member of the current mini-batch."""
        out = {}
        for name, s in state.items():
            delta = flat - s.reference
            total = s.total_value + s.total_gradient @ delta
            subsample = s.subsample_value + s.subsample_gradient @ delta
            if s.total_hessian is not None:
                total = total + 0.5 * delta @ s.total_hessian @ delta
                subsample = subsample + 0.5 * jnp.einsum(
                    "mij,i,j->m", s.subsample_hessian, delta, delta
                )
            out[name] = (total, subsample)
        return out

    def estimate(self, kernel, state, element_values, flat):
        """The bias-corrected log likelihood estimate at ``flat``."""
        expansions = self.expansions(state, flat)
        total = 0.0
        for name, values in element_values.items():
            size, subsample_size = kernel._plate_sizes[name]
            proxy_total, proxy_subsample = expansions[name]
            difference = values - proxy_subsample
            variance = size**2 / subsample_size * jnp.var(difference)
            total = total + proxy_total + size * jnp.mean(difference) - 0.5 * variance
        return total

    def __call__(
        self,
        prototype_trace,
        subsample_plate_sizes,
        model,
        model_args,
        model_kwargs,
        num_blocks=1,
    ):
        """NumPyro's functional form: ``(proxy_fn, gibbs_init, gibbs_update)``
        for a model, from a trace of it and its subsampled plates' ``(size,
        subsample_size)``. ``proxy_fn(params, plate_names, state)`` gives the
        expansion at unconstrained ``params`` summed over the data and at the
        mini-batch, by plate; ``gibbs_init(rng_key, indices)`` the state of a
        mini-batch; ``gibbs_update(rng_key, indices, state)`` a block
        proposal and its state."""
        latent = {
            name: site["value"]
            for name, site in prototype_trace.items()
            if site["type"] == "sample" and not site["is_observed"]
        }
        context = _ProxyContext(
            model,
            sorted(latent),
            ravel_pytree(latent)[1],
            {k: tuple(v) for k, v in subsample_plate_sizes.items()},
        )
        args, kwargs = tuple(model_args), dict(model_kwargs)

        def proxy_fn(params, plate_names, state):
            flat = ravel_pytree(params)[0]
            expansions = self.expansions({k: state[k] for k in plate_names}, flat)
            totals = {k: v[0] for k, v in expansions.items()}
            return totals, {k: v[1] for k, v in expansions.items()}

        def gibbs_init(rng_key, gibbs_sites):
            return self.init(context, gibbs_sites, args, kwargs)

        def gibbs_update(rng_key, gibbs_sites, state):
            positions, fresh, proposed = _block_proposal(
                rng_key, gibbs_sites, context._plate_sizes, num_blocks
            )
            state = self.replace(context, state, positions, fresh, args, kwargs)
            return proposed, state

        return proxy_fn, gibbs_init, gibbs_update


class _ProxyContext:
    """What the proxy needs of a sampler: the model, its latent sites and
    how they flatten, and the subsampled plates' sizes."""

    def __init__(self, model, latent_names, unravel, plate_sizes):
        self.model = model
        self._latent_names = latent_names
        self._unravel = unravel
        self._plate_sizes = plate_sizes


def _block_proposal(key, indices, plate_sizes, num_blocks):
    """New indices (drawn with replacement) for one block of each plate's
    mini-batch: the block's ``positions``, the ``fresh`` indices, and the
    ``proposed`` mini-batches."""
    positions, fresh, proposed = {}, {}, {}
    for name, (size, subsample_size) in plate_sizes.items():
        key, block_key, index_key = jax.random.split(key, 3)
        width = math.ceil(subsample_size / num_blocks)
        chosen = jax.random.randint(block_key, (), 0, num_blocks)
        positions[name] = chosen * width + jnp.arange(width)
        fresh[name] = jax.random.randint(index_key, (width,), 0, size)
        # positions past the end (a short last block) are dropped
        proposed[name] = indices[name].at[positions[name]].set(fresh[name], mode="drop")
    return positions, fresh, proposed


def taylor_proxy(reference_params: dict, degree: int = 2):
    """The Taylor-expansion control variate of :class:`HMCECS`.

    Args:
        reference_params: a point near the posterior mode (a MAP or MLE
            estimate), constrained values by latent site name; every latent
            site must be given.
        degree: 1 or 2, the order of the expansion.

    Every data point's log likelihood is expanded around the reference in
    unconstrained space; the expansion is summed over the whole data once,
    when the chain starts.
    """
    return _TaylorProxy(reference_params, degree)


class HMCECS:
    """HMC or NUTS with energy conserving subsampling (NumPyro's
    ``HMCECS``): for models whose likelihood sits in plates with
    ``subsample_size``.

    Args:
        inner_kernel: an :class:`~probnn.infer.HMC` or
            :class:`~probnn.infer.NUTS` sampler of the model.
        num_blocks: the mini-batch of each plate is split into this many
            blocks; one block's indices are proposed anew per iteration
            (more blocks: smaller changes, more of them accepted).
        proxy: ``HMCECS.taylor_proxy(reference_params)`` for the difference
            estimator, or None for the plate's scaled mini-batch sum.

    >>> import jax, jax.numpy as jnp, probnn, probnn.distributions as dist
    >>> from probnn.infer import HMCECS, MCMC, NUTS
    >>> data = jax.random.normal(jax.random.PRNGKey(0), (2000,)) + 1.0
    >>> def model(data):
    ...     x = probnn.sample("x", dist.Normal(0.0, 1.0))
    ...     with probnn.plate("N", data.shape[0], subsample_size=100):
    ...         batch = probnn.subsample(data, event_dim=0)
    ...         probnn.sample("obs", dist.Normal(x, 1.0), obs=batch)
    >>> kernel = HMCECS(NUTS(model), num_blocks=10,
    ...                 proxy=HMCECS.taylor_proxy({"x": 1.0}))
    >>> mcmc = MCMC(kernel, num_warmup=300, num_samples=300, progress_bar=False)
    >>> mcmc.run(jax.random.PRNGKey(1), data)
    >>> bool(abs(mcmc.get_samples()["x"].mean() - data.mean()) < 0.05)
    True
    """

    sample_field = "z"
    extra_state_fields = (
        "gibbs_sites",
        "gibbs_state",
        "gibbs_accept_prob",
        "hmc_state",
    )

    def __init__(self, inner_kernel, *, num_blocks: int = 1, proxy=None):
        if not isinstance(inner_kernel, HMC):
            raise TypeError(
                "HMCECS: inner_kernel must be an HMC or NUTS sampler, got "
                f"{type(inner_kernel).__name__}"
            )
        if inner_kernel.model is None:
            raise ValueError(
                "HMCECS: the inner kernel needs a model (not potential_fn): "
                "subsampling acts on the model's plates"
            )
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(
                f"HMCECS: num_blocks must be a positive int, got {num_blocks!r}"
            )
        if proxy is not None and not isinstance(proxy, _TaylorProxy):
            raise TypeError(
                "HMCECS: proxy must be HMCECS.taylor_proxy(reference_params) or "
                f"None, got {type(proxy).__name__}"
            )
        self._model = inner_kernel.model
        self.inner_kernel = copy.copy(inner_kernel)
        # its own caches of latent points (the copy would share the dicts)
        self.inner_kernel._points = {}
        self.inner_kernel._last_point = None
        self.inner_kernel.model = _dropping_ecs_kwarg(inner_kernel.model)
        # the transition's potential reads the subsample from the kwargs
        self.inner_kernel._potential = self._potential
        self._num_blocks = num_blocks
        self._proxy = proxy
        self._plate_sizes = {}

    taylor_proxy = staticmethod(taylor_proxy)

    @property
    def model(self):
        return self._model

    def __getattr__(self, name):
        # the rest of the sampler interface is the inner kernel's
        if name.startswith("__") or name == "inner_kernel":
            raise AttributeError(name)
        return getattr(self.inner_kernel, name)

    # -- set-up --------------------------------------------------------------
    def setup(self, model_args, model_kwargs, init_params=None, *, traced_args=True):
        unravel = self.inner_kernel.setup(
            model_args, model_kwargs, init_params, traced_args=traced_args
        )
        plates, discrete = [], []

        def record():
            tr = trace(seed(self._model, rng_seed=0)).get_trace(
                *model_args, **model_kwargs
            )
            plates.extend(
                (name, site["args"])
                for name, site in tr.items()
                if site["type"] == "plate" and site["args"][1] < site["args"][0]
            )
            discrete.extend(
                name
                for name, site in tr.items()
                if site["type"] == "sample"
                and not site["is_observed"]
                and site["fn"].support.is_discrete
            )

        jax.eval_shape(record)
        self._plate_sizes = {name: tuple(map(int, sizes)) for name, sizes in plates}
        if not self._plate_sizes:
            raise ValueError(
                "HMCECS: the model has no subsampled plate (a plate with "
                "subsample_size smaller than its size)"
            )
        if self._proxy is not None and discrete:
            raise RuntimeError(
                f"HMCECS: the Taylor proxy expands in continuous latent sites; "
                f"the model has discrete latent sites {sorted(discrete)}"
            )
        for name, (_, subsample_size) in self._plate_sizes.items():
            if self._num_blocks > subsample_size:
                raise ValueError(
                    f"HMCECS: num_blocks={self._num_blocks} exceeds the "
                    f"subsample_size {subsample_size} of plate {name!r}"
                )
        return unravel

    @property
    def _unravel(self):
        return self.inner_kernel._unravel

    @property
    def _latent_names(self):
        return self.inner_kernel._latent_names

    # -- the subsample ---------------------------------------------------------
    def _draw_indices(self, key):
        indices = {}
        for name, (size, subsample_size) in self._plate_sizes.items():
            key, subkey = jax.random.split(key)
            indices[name] = jax.random.choice(
                subkey, size, (subsample_size,), replace=False
            )
        return indices

    def _gibbs_init(self, key, args, kwargs):
        indices = self._draw_indices(key)
        state = (
            () if self._proxy is None else self._proxy.init(self, indices, args, kwargs)
        )
        return indices, state

    def _propose(self, key, indices, gibbs_state, args, kwargs):
        """New indices for one block of each plate's mini-batch, and the
        proxy's statistics to match."""
        positions, fresh, proposed = _block_proposal(
            key, indices, self._plate_sizes, self._num_blocks
        )
        if self._proxy is not None:
            gibbs_state = self._proxy.replace(
                self, gibbs_state, positions, fresh, args, kwargs
            )
        return proposed, gibbs_state

    def _estimating_model(self, indices, gibbs_state, flat):
        model = self._model
        proxy = self._proxy

        def run(*args, **kwargs):
            with substitute(data=indices):
                if proxy is None:
                    return model(*args, **kwargs)
                collector = _SubsampledLikelihoods(set(indices))
                with collector:
                    out = model(*args, **kwargs)
            from probnn.primitives import factor

            factor(
                "_hmcecs_log_likelihood",
                proxy.estimate(self, gibbs_state, collector.values, flat),
            )
            return out

        return run

    def _potential_fn(self, model_args, model_kwargs):
        """The potential at the subsample that ``model_kwargs`` carries."""
        kwargs = dict(model_kwargs)
        if _ECS_KWARG not in kwargs:
            raise RuntimeError("HMCECS: the potential needs the chain's subsample")
        indices, gibbs_state = kwargs.pop(_ECS_KWARG)
        unravel = self.inner_kernel._unravel

        def potential(flat):
            model = self._estimating_model(indices, gibbs_state, flat)
            return potential_energy(model, model_args, kwargs, unravel(flat))

        return potential

    def _potential(self, model_args, model_kwargs):
        return value_and_grad_fn(
            self._potential_fn(model_args, model_kwargs),
            self.inner_kernel.forward_mode_differentiation,
        )

    # -- the chain ---------------------------------------------------------------
    def initial_point(self, key, model_args, model_kwargs, init_params=None):
        key, gibbs_key = jax.random.split(key)
        ecs = self._gibbs_init(gibbs_key, model_args, model_kwargs)
        return self.inner_kernel.initial_point(
            key, model_args, {**model_kwargs, _ECS_KWARG: ecs}, init_params
        )

    def init_state(self, key, flat, value, grad, num_warmup, model_args, model_kwargs):
        key, gibbs_key = jax.random.split(key)
        indices, gibbs_state = self._gibbs_init(gibbs_key, model_args, model_kwargs)
        ecs_kwargs = {**model_kwargs, _ECS_KWARG: (indices, gibbs_state)}
        # the potential at the chain's own first subsample
        value, grad = self._potential(model_args, ecs_kwargs)(flat)
        state = self.inner_kernel.init_state(
            key, flat, value, grad, num_warmup, model_args, ecs_kwargs
        )
        return HMCECSState(
            *state, indices, gibbs_state, jnp.zeros((), jnp.result_type(value))
        )

    def sample(self, state, model_args, model_kwargs):
        key, propose_key, accept_key = jax.random.split(state.rng_key, 3)
        indices, gibbs_state = state.gibbs_sites, state.gibbs_state
        new_indices, new_gibbs_state = self._propose(
            propose_key, indices, gibbs_state, model_args, model_kwargs
        )
        new_kwargs = {**model_kwargs, _ECS_KWARG: (new_indices, new_gibbs_state)}
        potential = self._potential_fn(model_args, new_kwargs)
        # at a fixed point the potentials differ by the log likelihood estimates
        new_value = potential(state.z)
        accept_prob = jnp.clip(jnp.exp(state.potential_energy - new_value), max=1.0)
        accept_prob = jnp.where(jnp.isnan(accept_prob), 0.0, accept_prob)
        take = jax.random.uniform(accept_key) < accept_prob
        pick = lambda new, old: jax.tree.map(  # noqa: E731
            lambda a, b: jnp.where(take, a, b), new, old
        )
        indices = pick(new_indices, indices)
        gibbs_state = pick(new_gibbs_state, gibbs_state)
        # the gradient changes only with the subsample: taken on acceptance
        forward = self.inner_kernel.forward_mode_differentiation
        z_grad = jax.lax.cond(
            take,
            lambda z: value_and_grad_fn(potential, forward)(z)[1],
            lambda z: state.z_grad,
            state.z,
        )
        hmc_state = state.hmc_state._replace(
            z_grad=z_grad,
            potential_energy=pick(new_value, state.potential_energy),
            rng_key=key,
        )
        hmc_state = self.inner_kernel.sample(
            hmc_state, model_args, {**model_kwargs, _ECS_KWARG: (indices, gibbs_state)}
        )
        return HMCECSState(*hmc_state, indices, gibbs_state, accept_prob)

    def public_state(self, state):
        return self.inner_kernel.public_state(state)

    def internal_state(self, state):
        return self.inner_kernel.internal_state(state)
