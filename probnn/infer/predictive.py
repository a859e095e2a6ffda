"""Predictive distributions of models, and pointwise log likelihoods.

:class:`Predictive` runs a model once per posterior sample (or per draw from
the prior or from a guide) and stacks what the sites took;
:func:`log_likelihood` evaluates the observed sites' log densities at each
posterior sample. Both map over the samples with ``jax.vmap``
(``parallel=True``) or ``jax.lax.map`` (less memory), and both jit-compile.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from probnn.handlers import config_enumerate, mask, seed, substitute, trace
from probnn.runtime import Message, Messenger

__all__ = ["Predictive", "log_likelihood"]


class _require_state(Messenger):
    """Raise at a ``mutable`` site that ``params`` leaves out.

    ``params`` holds trained values (from SVI, which carries the mutable
    state beside them); a site they lack would run with its freshly
    initialised state, e.g. a network's initial BatchNorm statistics
    beside its trained weights.
    """

    def __init__(self, fn, params: dict):
        self.params = params
        super().__init__(fn)

    def process_message(self, msg: Message) -> None:
        name = msg["name"]
        if msg["type"] != "mutable" or name in self.params:
            return
        module = name[: -len("$state")] if name.endswith("$state") else None
        what = (
            f"the non-parameter state (e.g. BatchNorm statistics) of module {module!r}"
            if module
            else "state"
        )
        raise ValueError(
            f"Predictive: params have no value for the mutable site {name!r}, "
            f"{what}, so the model would run with its freshly initialised "
            "state beside the trained params. Pass the state trained with them: "
            "Predictive(..., params={**result.params, "
            "**result.state.mutable_state}) after svi.run (or {**svi.get_params"
            "(state), **state.mutable_state}); to use the initial state on "
            f"purpose, pass params={{..., {name!r}: None}}"
        )


def _check_batch_ndims(batch_ndims, where: str) -> None:
    if not isinstance(batch_ndims, int) or batch_ndims < 0:
        raise ValueError(
            f"{where}: batch_ndims must be an int >= 0, got {batch_ndims!r}"
        )


def _common_batch_shape(values: dict, batch_ndims: int, where: str, what: str):
    """The leading ``batch_ndims`` dims shared by every array in ``values``
    (None when ``values`` holds no array)."""
    batch_shape = first = None
    for name, value in values.items():
        for leaf in jax.tree.leaves(value):
            shape = tuple(jnp.shape(leaf))
            if len(shape) < batch_ndims:
                raise ValueError(
                    f"{where}: {what} {name!r} has shape {shape}, which has fewer "
                    f"than batch_ndims={batch_ndims} dims"
                )
            if batch_shape is None:
                batch_shape, first = shape[:batch_ndims], name
            elif shape[:batch_ndims] != batch_shape:
                raise ValueError(
                    f"{where}: {what} {name!r} has batch shape "
                    f"{shape[:batch_ndims]} but {first!r} has {batch_shape}; the "
                    f"leading batch_ndims={batch_ndims} dims must agree"
                )
    return batch_shape


def _map_over_batch(fn: Callable, per_sample, values, batch_shape, parallel: bool):
    """``fn(per_sample[i], values_i)`` for each sample ``i``, stacked with
    ``batch_shape`` leading.

    ``per_sample`` has one flat leading dim with an entry per sample; the
    arrays of ``values`` have ``batch_shape`` leading dims.
    """
    size, ndim = math.prod(batch_shape), len(batch_shape)
    flat = jax.tree.map(
        lambda x: jnp.reshape(jnp.asarray(x), (size,) + jnp.shape(x)[ndim:]), values
    )
    if parallel:
        stacked = jax.vmap(fn)(per_sample, flat)
    else:
        stacked = jax.lax.map(lambda pair: fn(*pair), (per_sample, flat))
    return jax.tree.map(
        lambda y: jnp.reshape(y, tuple(batch_shape) + jnp.shape(y)[1:]), stacked
    )


def _check_known_sites(samples: dict, model_trace: dict, where: str) -> None:
    unknown = [name for name in samples if name not in model_trace]
    if unknown:
        raise ValueError(
            f"{where}: posterior_samples keys {unknown} match no site of the "
            f"model; its sites are {list(model_trace)}"
        )


def _sites_to_return(model_trace: dict, samples: dict, return_sites) -> list[str]:
    if return_sites is None:
        return [
            name
            for name, site in model_trace.items()
            if (site["type"] == "sample" and name not in samples)
            or site["type"] == "deterministic"
        ]
    if return_sites == "":
        return [name for name, site in model_trace.items() if site["type"] != "plate"]
    unknown = [
        name for name in return_sites if name not in model_trace and name not in samples
    ]
    if unknown:
        guide_only = [name for name in samples if name not in model_trace]
        raise ValueError(
            f"Predictive: return_sites {unknown} match no site; the model's sites "
            f"are {list(model_trace)}"
            + (f" and the guide's own are {guide_only}" if guide_only else "")
        )
    wanted = set(return_sites)
    names = [name for name in model_trace if name in wanted]
    return names + [name for name in return_sites if name not in model_trace]


def _predict(
    rng_key,
    model: Callable,
    samples: dict,
    batch_shape: tuple,
    return_sites,
    parallel: bool,
    condition_deterministic: bool,
    args: tuple,
    kwargs: dict,
    check_keys: bool,
    discrete: bool = False,
) -> dict:
    """Run ``model`` once per sample with that sample's values substituted and
    return the chosen sites' values, stacked."""

    def one(key, sample):
        def value_of(msg):
            if msg["type"] == "deterministic" and not condition_deterministic:
                return None
            return sample.get(msg["name"])

        substituted = substitute(model, substitute_fn=value_of)
        if discrete:
            from probnn.infer.discrete import infer_discrete

            seeded = infer_discrete(
                config_enumerate(substituted), temperature=1, rng_key=key
            )
        else:
            # predictions need no log densities: under mask(False) a model can
            # skip their work (``probnn.get_mask() is False``), as in NumPyro
            seeded = seed(mask(substituted, mask=False), rng_seed=key)
        model_trace = trace(seeded).get_trace(*args, **kwargs)
        if check_keys:
            _check_known_sites(sample, model_trace, "Predictive")
        names = _sites_to_return(model_trace, sample, return_sites)
        if discrete and return_sites is None:
            # a deterministic site given in the posterior samples is an input
            # here, not a prediction (NumPyro returns no deterministic site
            # at all under infer_discrete; those computed from the draws
            # are kept here)
            names = [
                name
                for name in names
                if not (model_trace[name]["type"] == "deterministic" and name in sample)
            ]
        return {
            name: model_trace[name]["value"] if name in model_trace else sample[name]
            for name in names
        }

    keys = jax.random.split(rng_key, math.prod(batch_shape))
    return _map_over_batch(one, keys, samples, batch_shape, parallel)


def _resolve_condition_deterministic(condition, exclude) -> bool:
    """``condition_deterministic`` from it and its deprecated inverse
    ``exclude_deterministic`` (None where not given)."""
    if exclude is None:
        return bool(condition)
    warnings.warn(
        "Predictive: exclude_deterministic is deprecated; use "
        f"condition_deterministic={not exclude} instead",
        DeprecationWarning,
        stacklevel=3,
    )
    if condition is not None and bool(condition) == bool(exclude):
        raise ValueError(
            f"Predictive: condition_deterministic={condition} and "
            f"exclude_deterministic={exclude} contradict each other (exclude is "
            "the deprecated inverse of condition); pass condition_deterministic "
            "only"
        )
    return not exclude


class Predictive:
    """Draws from the predictive distribution of a model.

    The model runs once per sample, with that sample's values in place of its
    sites and everything else drawn afresh with its own key. The samples are
    ``posterior_samples`` (e.g. from MCMC), draws from ``guide`` with its
    ``params`` (e.g. after SVI), or, with neither, nothing: then ``num_samples``
    runs draw from the prior. To predict an observed site, call the model
    with its observation set to None.

    Args:
        model: the model.
        posterior_samples: values by site name, each with ``batch_ndims``
            leading batch dims. A key that is no site of the model is an error.
        guide: a guide to draw the latent sites from (not with
            ``posterior_samples``).
        params: values of param sites, substituted into the guide and the
            model (e.g. ``SVI.get_params(state)``). With ``guide`` and
            ``batch_ndims=1``, their leading dim is a batch of parameter sets.
            Trained params need the mutable state trained with them (a
            network's BatchNorm statistics, the site ``name$state`` of
            ``probnn.module``): pass ``params={**result.params,
            **result.state.mutable_state}``. Where ``params`` are given, a
            ``mutable`` site of the model or guide that they leave out is a
            ValueError naming the site, rather than a run with freshly
            initialised state; ``params={..., "net$state": None}`` asks for
            the initial state explicitly. The dicts passed are never
            written to (the model updates copies of the state).
        num_samples: number of draws; must equal the number of samples when
            ``posterior_samples`` is given.
        return_sites: names of the sites to return; by default, the sample
            sites that are not in ``posterior_samples`` (or drawn by the guide)
            and every deterministic site; ``""`` returns every site but plates.
        infer_discrete: draw the model's discrete latent sites (those with
            enumerable support that the samples leave out) from their exact
            posterior given the rest, with :func:`probnn.infer.infer_discrete`.
        parallel: map over the samples with ``jax.vmap`` (faster, more memory)
            rather than ``jax.lax.map``. Both give the same draws.
        batch_ndims: number of leading batch dims of ``posterior_samples``
            (e.g. 2 for ``(num_chains, num_draws)``), or of ``params`` with a
            guide. Defaults to 1, or 0 (unbatched params) with a guide.
        condition_deterministic: substitute deterministic sites found in
            ``posterior_samples`` rather than recomputing them (default:
            recompute).
        exclude_deterministic: NumPyro's older, deprecated spelling:
            ``exclude_deterministic=b`` means ``condition_deterministic=not
            b``; a DeprecationWarning points to the new name, and giving
            both with conflicting values is an error.

    Returns (when called as ``predictive(rng_key, *args, **kwargs)``, where
    ``args`` and ``kwargs`` go to the model): a dict ``name -> array`` whose
    arrays have the batch dims leading, then the site's shape.

    >>> import jax, jax.numpy as jnp, probnn, probnn.distributions as dist
    >>> def model(n, y=None):
    ...     mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    ...     with probnn.plate("N", n):
    ...         return probnn.sample("y", dist.Normal(mu, 0.1), obs=y)
    >>> prior = Predictive(model, num_samples=100)(jax.random.PRNGKey(0), 3)
    >>> prior["mu"].shape, prior["y"].shape
    ((100,), (100, 3))
    >>> mu = jnp.array([-5.0, 5.0])
    >>> y = Predictive(model, {"mu": mu})(jax.random.PRNGKey(1), 3)["y"]
    >>> y.shape, bool(jnp.all(jnp.abs(y - mu[:, None]) < 1.0))
    ((2, 3), True)
    """

    def __init__(
        self,
        model: Callable,
        posterior_samples: dict | None = None,
        *,
        guide: Callable | None = None,
        params: dict | None = None,
        num_samples: int | None = None,
        return_sites: Sequence[str] | None = None,
        infer_discrete: bool = False,
        parallel: bool = False,
        batch_ndims: int | None = None,
        condition_deterministic: bool | None = None,
        exclude_deterministic: bool | None = None,
    ):
        condition_deterministic = _resolve_condition_deterministic(
            condition_deterministic, exclude_deterministic
        )
        if posterior_samples is not None and guide is not None:
            raise ValueError("Predictive: pass posterior_samples= or guide=, not both")
        if posterior_samples is not None and not isinstance(posterior_samples, dict):
            raise TypeError(
                "Predictive: posterior_samples must be a dict site name -> array, "
                f"got {type(posterior_samples).__name__}"
            )
        if return_sites is not None and return_sites != "":
            if isinstance(return_sites, str) or not all(
                isinstance(name, str) for name in return_sites
            ):
                raise TypeError(
                    "Predictive: return_sites must be a list of site names (or "
                    f'"" for every site), got {return_sites!r}'
                )
        if num_samples is not None and (
            not isinstance(num_samples, int) or num_samples < 1
        ):
            raise ValueError(
                f"Predictive: num_samples must be a positive int, got {num_samples!r}"
            )
        if batch_ndims is None:
            batch_ndims = 1 if guide is None else 0
        _check_batch_ndims(batch_ndims, "Predictive")

        posterior_samples = {} if posterior_samples is None else posterior_samples
        batch_shape = _common_batch_shape(
            posterior_samples, batch_ndims, "Predictive", "posterior sample"
        )
        if batch_shape is not None:
            size = math.prod(batch_shape)
            if num_samples is not None and num_samples != size:
                raise ValueError(
                    f"Predictive: num_samples={num_samples} but posterior_samples "
                    f"hold {size} samples (batch shape {batch_shape} with "
                    f"batch_ndims={batch_ndims})"
                )
            num_samples = size
        elif num_samples is None:
            raise ValueError(
                "Predictive: num_samples= is required when there are no "
                "posterior_samples to count (it is the number of draws from the "
                "prior or the guide)"
            )
        else:
            batch_shape = (1,) * (batch_ndims - 1) + (num_samples,)

        self.model = model
        self.posterior_samples = posterior_samples
        self.guide = guide
        self.params = {} if params is None else dict(params)
        self.num_samples = num_samples
        self.return_sites = return_sites
        self.infer_discrete = infer_discrete
        self.parallel = parallel
        self.batch_ndims = batch_ndims
        self.condition_deterministic = condition_deterministic
        self._batch_shape = batch_shape

    def _call_with_params(self, rng_key, params: dict, args: tuple, kwargs: dict):
        model, guide = self.model, self.guide
        if params:
            model = _require_state(substitute(model, data=params), params)
            if guide is not None:
                guide = _require_state(substitute(guide, data=params), params)
        samples, user_samples = self.posterior_samples, True
        if guide is not None:
            rng_key, guide_key = jax.random.split(rng_key)
            samples = _predict(
                guide_key,
                guide,
                {},
                self._batch_shape,
                "",
                self.parallel,
                self.condition_deterministic,
                args,
                kwargs,
                check_keys=False,
            )
            # guide params and auxiliary sites need not be model sites
            user_samples = False
        return _predict(
            rng_key,
            model,
            samples,
            self._batch_shape,
            self.return_sites,
            self.parallel,
            self.condition_deterministic,
            args,
            kwargs,
            check_keys=user_samples,
            discrete=self.infer_discrete,
        )

    def __call__(self, rng_key, *args, **kwargs) -> dict:
        """Draw from the predictive distribution.

        Args:
            rng_key: a JAX random key.
            *args: positional arguments of the model (and the guide).
            **kwargs: keyword arguments of the model (and the guide).

        Returns:
            Values of the returned sites by name, batch dims leading.
        """
        if self.guide is None or not self.params or self.batch_ndims == 0:
            return self._call_with_params(rng_key, self.params, args, kwargs)
        if self.batch_ndims > 1:
            raise NotImplementedError(
                "Predictive: with a guide, batch_ndims counts batch dims of "
                f"params and supports 0 or 1, got {self.batch_ndims}"
            )
        batch_shape = _common_batch_shape(self.params, 1, "Predictive", "param")
        keys = jax.random.split(rng_key, batch_shape[0])
        call = functools.partial(self._call_with_params, args=args, kwargs=kwargs)
        return jax.vmap(call, out_axes=1)(keys, self.params)


def log_likelihood(
    model: Callable,
    posterior_samples: dict,
    *args,
    parallel: bool = False,
    batch_ndims: int = 1,
    **kwargs,
) -> dict:
    """Log density of every observed sample site at each posterior sample.

    The model runs once per sample with that sample's values substituted (the
    model is not seeded: every latent site needs a value, and a subsampled
    plate needs its indices in ``posterior_samples`` or a ``seed`` handler).
    As in NumPyro, the log densities are neither summed nor scaled (plate
    subsampling and ``scale`` do not apply), while ``mask`` does.

    Args:
        model: the model.
        posterior_samples: values by site name, each with ``batch_ndims``
            leading batch dims. A key that is no site of the model is an error.
        *args: positional arguments of the model.
        parallel: map over the samples with ``jax.vmap`` rather than
            ``jax.lax.map``.
        batch_ndims: number of leading batch dims of the samples.
        **kwargs: keyword arguments of the model.

    Returns:
        A dict ``name -> log density`` for each observed sample site, whose
        arrays have the batch dims leading, then the site's batch shape.

    >>> import jax.numpy as jnp, probnn, probnn.distributions as dist
    >>> def model(y):
    ...     mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    ...     with probnn.plate("N", y.shape[0]):
    ...         probnn.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> loglik = log_likelihood(model, {"mu": jnp.array([0.0, 1.0])}, jnp.zeros(3))
    >>> loglik["y"].shape
    (2, 3)
    >>> loglik["y"][1]  # log N(0 | 1, 1) = -0.919 - 0.5
    Array([-1.419, -1.419, -1.419], dtype=float32)
    """
    _check_batch_ndims(batch_ndims, "log_likelihood")
    if not isinstance(posterior_samples, dict):
        raise TypeError(
            "log_likelihood: posterior_samples must be a dict site name -> array, "
            f"got {type(posterior_samples).__name__}"
        )
    batch_shape = _common_batch_shape(
        posterior_samples, batch_ndims, "log_likelihood", "posterior sample"
    )
    if batch_shape is None:
        batch_shape = (1,) * batch_ndims

    def one(index, sample):
        del index
        model_trace = trace(substitute(model, data=sample)).get_trace(*args, **kwargs)
        _check_known_sites(sample, model_trace, "log_likelihood")
        return {
            name: site["fn"].log_prob(site["value"])
            for name, site in model_trace.items()
            if site["type"] == "sample" and site["is_observed"]
        }

    index = jnp.arange(math.prod(batch_shape))
    return _map_over_batch(one, index, posterior_samples, batch_shape, parallel)
