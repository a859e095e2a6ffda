"""The MCMC driver: warmup and sampling of one or more chains, each chain's
whole run one jitted loop, with a tqdm progress bar fed from inside the loop
in chunks."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from probnn.handlers import is_typed_key
from probnn.infer.hmc import HMCState, _argument_key

__all__ = ["MCMC"]

_CHAIN_METHODS = ("parallel", "sequential", "vectorized")
_STATE_FIELDS = set(HMCState._fields)


class _Progress:
    """A tqdm bar updated by host callbacks from inside the jitted loop."""

    def __init__(self, total, description, enabled):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=description, leave=True)

    def update(self, count, phase):
        if self.bar is not None:
            self.bar.set_description(phase, refresh=False)
            self.bar.update(int(np.sum(count)))

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _update_progress(holder, count, phase):
    # the compiled loop keeps this function; the bar of the current run
    # lives in the holder
    if holder[0] is not None:
        holder[0].update(count, phase)


def _unbatched(run_chain):
    """``run_chain`` over a leading chain axis of length one, run unbatched."""

    def run(states, args, kwargs):
        out = run_chain(jax.tree.map(lambda x: x[0], states), args, kwargs)
        return jax.tree.map(lambda x: x[None], out)

    return run


def _close_over(fn, args, kwargs):
    """``fn(*xs, args, kwargs)`` as a function of ``(*xs, _, _)``: the model
    arguments are bound as Python values (constants of whatever is compiled)
    and the last two parameters, placeholders, are ignored."""

    def closed(*xs):
        return fn(*xs[:-2], args, kwargs)

    return closed


def _check_traceable(args, kwargs):
    """With ``jit_model_args=True``, every leaf of the model arguments must
    be an array or a number: a clear error for one that is not (e.g. an
    ``argparse.Namespace``)."""
    paths = jax.tree_util.tree_flatten_with_path((args, kwargs))[0]
    for path, leaf in paths:
        if not isinstance(
            leaf, jax.Array | np.ndarray | np.generic | int | float | complex
        ):
            where = "args" + jax.tree_util.keystr(path[1:])
            if path[0].idx == 1:
                where = "kwargs" + jax.tree_util.keystr(path[1:])
            raise TypeError(
                f"MCMC: with jit_model_args=True the model arguments are traced, "
                f"but {where} is a {type(leaf).__name__}, not an array or a "
                "number; use jit_model_args=False (the default) to pass it as a "
                "Python value"
            )


# state fields holding a flat vector shaped like the latent point
_POINT_FIELDS = ("z", "z_grad", "r")
# extra fields shown in NumPyro's form (dicts of blocks with a model): the
# chain collects its flat inverse mass matrix, converted after the run
_MASS_FIELDS = {
    f"adapt_state.{name}": name
    for name in ("inverse_mass_matrix", "mass_matrix_sqrt", "mass_matrix_sqrt_inv")
}


def _field(state: HMCState, name: str, unravel=None):
    """The state's field ``name``, a dotted path such as
    ``"adapt_state.step_size"`` or ``"z.a"`` (site ``a`` of the unconstrained
    point): attributes of named tuples, keys of dicts."""
    if name in _MASS_FIELDS:
        name = "adapt_state.inverse_mass_matrix"
    first, *rest = name.split(".")
    value = getattr(state, first)
    if rest and first in _POINT_FIELDS and unravel is not None:
        value = unravel(value)
    for part in rest:
        if isinstance(value, dict):
            value = value[part]
        else:
            value = getattr(value, part)
    return value


def _chains_joined(x):
    """``(num_chains, num_samples, ...)`` -> ``(num_chains * num_samples,
    ...)``, zero-size sites included (where a -1 in the shape is ambiguous)."""
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


class MCMC:
    """Run a sampler (:class:`probnn.infer.NUTS` or :class:`probnn.infer.HMC`)
    for ``num_warmup`` adaptation iterations and ``num_samples`` draws on
    ``num_chains`` chains.

    Args:
        sampler: the kernel, e.g. ``NUTS(model)``.
        num_warmup: adaptation iterations (not kept unless
            ``warmup(collect_warmup=True)``).
        num_samples: draws per chain after warmup (``num_samples //
            thinning`` of them are kept).
        num_chains: number of chains; chain ``c`` uses
            ``jax.random.split(rng_key, num_chains)[c]`` whatever the
            chain method. A chain's draws are the same bit for bit across
            runs. The sampler's own arithmetic is batch-invariant
            (adaptation weights come from tables, not batched ``pow``), so
            the chain methods agree too, unless XLA compiles the model's log
            density differently for them (batched, or inside ``shard_map``)
            and sums in another order: the last bit differs, and long chains
            amplify that into different, equally valid, draws.
        thinning: keep every ``thinning``-th draw (the last of each block).
        postprocess_fn: maps a dict of unconstrained values to what is kept
            (default: the constrained values and the deterministic sites).
        chain_method: ``"parallel"`` (chains spread over the devices with
            ``shard_map``, several per device if needed), ``"vectorized"``
            (``vmap`` on one device) or ``"sequential"`` (one after
            another, compiled once). With more chains than devices,
            ``"parallel"`` warns and places several chains on each device
            (vectorized there); left with one device it runs them one
            after another on CPU (as NumPyro does: a vectorized batch of
            NUTS chains steps every chain until the longest trajectory
            ends) and vectorized on an accelerator.
            A single chain runs unbatched by every method.
        progress_bar: show a tqdm bar, updated from inside the compiled loop
            every ``progress_rate`` iterations.
        progress_rate: iterations per bar update; by default about twenty
            updates per phase (every iteration for phases shorter than 20).
        jit_model_args: trace the model arguments (``True``): the compiled
            sampler is a function of them, reused by later runs with new
            values of the same shapes and dtypes; the model then sees
            tracers, so it cannot use an argument as a Python value. With
            ``False`` (the default, as in NumPyro) the arguments are closed
            over: the model sees them as given (numpy arrays stay numpy,
            Python ints, bools and objects such as an
            ``argparse.Namespace`` stay Python values), so they can size
            plates, pick branches or go through numpy. The compiled
            functions are then kept only for the same arguments (numpy
            arrays with equal contents, the same JAX arrays, equal hashable
            values) and rebuilt otherwise, and for every run when an
            argument is unhashable (e.g. a ``Namespace``).

    Attributes:
        last_state: the chains' states after the last run, every value with
            a leading chain dimension when ``num_chains > 1`` (as in
            NumPyro); ``adapt_state`` is a
            :class:`probnn.infer.hmc_util.HMCAdaptState` whose mass matrix
            fields are in NumPyro's form (with a model, dicts from tuples of
            site names to blocks).
        post_warmup_state: if set (e.g. to ``last_state``), every following
            ``run`` starts from it and skips warmup; :meth:`warmup` sets it to
            the state it ends in.
    """

    def __init__(
        self,
        sampler,
        *,
        num_warmup: int,
        num_samples: int,
        num_chains: int = 1,
        thinning: int = 1,
        postprocess_fn: Callable | None = None,
        chain_method: str = "parallel",
        progress_bar: bool = True,
        progress_rate: int | None = None,
        jit_model_args: bool = False,
    ):
        for name, value, low in (
            ("num_warmup", num_warmup, 0),
            ("num_samples", num_samples, 1),
            ("num_chains", num_chains, 1),
            ("thinning", thinning, 1),
            ("progress_rate", 1 if progress_rate is None else progress_rate, 1),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | np.integer)
                or value < low
            ):
                raise ValueError(f"MCMC: {name} must be an int >= {low}, got {value!r}")
        if chain_method not in _CHAIN_METHODS:
            raise ValueError(
                f"MCMC: chain_method must be one of {_CHAIN_METHODS}, got "
                f"{chain_method!r}"
            )
        self.sampler = sampler
        self.num_warmup = int(num_warmup)
        self.num_samples = int(num_samples)
        self.num_chains = int(num_chains)
        self.thinning = int(thinning)
        self.postprocess_fn = postprocess_fn
        self.chain_method = chain_method
        self.progress_bar = progress_bar
        self.progress_rate = None if progress_rate is None else int(progress_rate)
        self.jit_model_args = jit_model_args
        self.last_state = None
        self.post_warmup_state = None
        self._samples = None
        self._extra = None
        self._cache: dict = {}
        # what the compiled functions were built for when the model
        # arguments are closed over: (key, the arguments themselves)
        self._scope = None
        self._holder: list = [None]

    # -- running -----------------------------------------------------------------------

    def warmup(
        self,
        rng_key,
        *args,
        extra_fields=(),
        collect_warmup: bool = False,
        init_params=None,
        **kwargs,
    ) -> None:
        """Run the warmup (adaptation) only; the next :meth:`run` starts
        from where it ended. With ``collect_warmup`` the warmup draws are
        kept as the samples."""
        self._run(
            rng_key,
            args,
            kwargs,
            extra_fields,
            init_params,
            warmup_only=True,
            collect=collect_warmup,
        )

    def _compile(self, rng_key, *args, extra_fields=(), init_params=None, **kwargs):
        """Build the compiled warmup and sampling programs for these
        arguments ahead of :meth:`warmup` and :meth:`run` (NumPyro's private
        ``MCMC._compile``), leaving the sampler as it was: no state, draws
        or warmup result change. The programs are built by running them once
        from this key, and the results are discarded."""
        saved = (
            self.last_state,
            self.post_warmup_state,
            self._samples,
            self._extra,
            getattr(self, "_unravel", None),
        )
        try:
            self.warmup(
                rng_key,
                *args,
                extra_fields=extra_fields,
                init_params=init_params,
                **kwargs,
            )
            self.run(
                self.last_state.rng_key, *args, extra_fields=extra_fields, **kwargs
            )
        finally:
            (
                self.last_state,
                self.post_warmup_state,
                self._samples,
                self._extra,
                self._unravel,
            ) = saved

    def _with_chain_axis(self, state):
        """A state as ``last_state`` shows it, with the chain axis that one
        chain's state is shown without."""
        if self.num_chains == 1 and jnp.ndim(state.i) == 0:
            return jax.tree.map(lambda leaf: jnp.asarray(leaf)[None], state)
        return state

    def run(self, rng_key, *args, extra_fields=(), init_params=None, **kwargs) -> None:
        """Warm up (unless a warmup already ran or ``post_warmup_state`` is
        set) and draw ``num_samples`` per chain.

        Args:
            rng_key: a JAX random key.
            *args: positional arguments of the model.
            extra_fields: names of state fields to keep per draw (e.g.
                ``"diverging"``, ``"num_steps"``, ``"accept_prob"``,
                ``"potential_energy"``, ``"adapt_state.step_size"``).
            init_params: initial values (unconstrained) by site name, with a
                leading chain dim when ``num_chains > 1``; required with
                ``potential_fn``.
            **kwargs: keyword arguments of the model.
        """
        self._run(rng_key, args, kwargs, extra_fields, init_params)

    def _run(
        self,
        rng_key,
        args,
        kwargs,
        extra_fields,
        init_params,
        warmup_only=False,
        collect=True,
    ):
        kernel = self.sampler
        sample_field = kernel.sample_field
        state_fields = _STATE_FIELDS | set(getattr(kernel, "extra_state_fields", ()))
        removed = []
        for name in extra_fields:
            if name.startswith(f"~{sample_field}."):
                # "~z.a": leave site a out of the samples
                removed.append(name[len(sample_field) + 2 :])
            elif name.split(".", 1)[0] not in state_fields:
                raise ValueError(
                    f"MCMC: extra field {name!r} is not a state field; choose from "
                    f"{sorted(state_fields)} (a dotted path such as 'z.a' or "
                    "'adapt_state.step_size' reaches inside one)"
                )
        # the sample field itself is what get_samples returns
        extra_fields = tuple(
            name
            for name in extra_fields
            if name != sample_field and not name.startswith("~")
        )
        start_state = self.post_warmup_state
        one_init = None
        if init_params is not None and self.num_chains > 1:
            one_init = jax.tree.map(lambda x: x[0], init_params)
        traced = bool(self.jit_model_args)
        self._unravel = kernel.setup(
            args,
            kwargs,
            one_init if one_init is not None else init_params,
            traced_args=traced,
        )
        bind = self._bind_model_args(args, kwargs)
        # what the compiled functions receive: the arguments when traced,
        # placeholders when they are closed over
        args, kwargs = (args, kwargs) if traced else ((), {})

        keys = self._chain_keys(rng_key)
        if start_state is None:
            states = self._initial_states(keys, args, kwargs, init_params, bind)
            # adaptation runs while state.i < num_warmup, whichever phase
            # the iterations count towards
            adapting = self.num_warmup
        else:
            # a state shown as last_state holds the mass matrix in NumPyro's
            # form: back to the sampler's own
            states = kernel.internal_state(self._with_chain_axis(start_state))
            states = states._replace(rng_key=keys)
            adapting = 0
        if warmup_only:
            phase_warmup, num_draws_kept = (0, adapting) if collect else (adapting, 0)
        else:
            phase_warmup, num_draws_kept = adapting, self.num_samples

        progress = _Progress(
            (phase_warmup + num_draws_kept) * self.num_chains,
            "warmup" if phase_warmup else "sample",
            self.progress_bar,
        )
        self._holder[0] = progress
        # divergences are always counted (print_summary reports them)
        fields = tuple(dict.fromkeys(("diverging", *extra_fields)))
        runner = self._cached(
            ("chains", phase_warmup, num_draws_kept, fields, bool(self.progress_bar)),
            lambda: self._map_chains(
                bind(self._chain_runner(kernel, phase_warmup, num_draws_kept, fields))
            ),
        )
        try:
            states, draws, extras = runner(states, args, kwargs)
        finally:
            progress.close()
            self._holder[0] = None
        self.last_state = kernel.public_state(states)
        if self.num_chains == 1:  # NumPyro shows one chain without its axis
            self.last_state = jax.tree.map(lambda leaf: leaf[0], self.last_state)
        if warmup_only:
            self.post_warmup_state = self.last_state
        if num_draws_kept:
            # keep the last draw of every block of `thinning`
            step = 1 if warmup_only else self.thinning
            thin = slice(step - 1, None, step)
            draws = draws[:, thin]
            extras = {k: v[:, thin] for k, v in extras.items()}
            for name in extras.keys() & _MASS_FIELDS.keys():
                extras[name] = kernel.public_mass_field(
                    _MASS_FIELDS[name], extras[name]
                )
            post = self.postprocess_fn

            def constrain(flat, args, kwargs):
                if post is None:
                    return kernel.postprocess_fn(args, kwargs)(flat)
                # read when traced: a retrace for new shapes gets theirs
                return post(self._unravel(flat))

            postprocess = self._cached(
                ("postprocess",),
                lambda: jax.jit(
                    jax.vmap(
                        jax.vmap(bind(constrain), (0, None, None)), (0, None, None)
                    )
                ),
            )
            samples = postprocess(draws, args, kwargs)
            if removed and isinstance(samples, dict):
                samples = {k: v for k, v in samples.items() if k not in removed}
            self._samples = samples
            self._extra = extras
        elif not warmup_only:
            self._samples, self._extra = {}, {}

    def _chain_keys(self, rng_key):
        """One key per chain: split from ``rng_key`` (one chain takes the key
        itself, as in NumPyro, so that ``warmup(key)`` and then
        ``run(last_state.rng_key)`` draws what ``run(key)`` draws), or
        ``rng_key`` itself when it already holds one key per chain (e.g.
        ``last_state.rng_key`` of several chains)."""
        rng_key = jnp.asarray(rng_key)
        batch_ndim = rng_key.ndim if is_typed_key(rng_key) else rng_key.ndim - 1
        if batch_ndim == 0 and self.num_chains == 1:
            return rng_key[None]
        if batch_ndim == 0:
            return jax.random.split(rng_key, self.num_chains)
        if rng_key.shape[0] != self.num_chains or batch_ndim != 1:
            raise ValueError(
                f"MCMC: rng_key of shape {rng_key.shape} is neither one key nor one "
                f"key per chain ({self.num_chains} chains)"
            )
        return rng_key

    def _initial_states(self, keys, args, kwargs, init_params, bind):
        kernel = self.sampler

        num_warmup = self.num_warmup

        def init_one(key, params, args, kwargs):
            key, point_key = jax.random.split(key)
            flat, value, grad, ok = kernel.initial_point(
                point_key, args, kwargs, params
            )
            state = kernel.init_state(key, flat, value, grad, num_warmup, args, kwargs)
            return state, ok, flat

        if init_params is not None and self.num_chains == 1:
            init_params = jax.tree.map(lambda x: jnp.asarray(x)[None], init_params)
        init = self._cached(
            ("init", num_warmup),
            lambda: jax.jit(jax.vmap(bind(init_one), in_axes=(0, 0, None, None))),
        )
        states, ok, flats = init(keys, init_params, args, kwargs)
        if isinstance(ok, jax.core.Tracer):
            # run inside the caller's jit: nothing to check on the host
            return states
        ok = np.asarray(ok)
        if not ok.all():
            chain = int(np.argmin(ok))
            where = ""
            if kernel.model is not None:
                bad = kernel.nonfinite_sites(flats[chain], *self._model_args)
                where = f"; sites with a non-finite log density: {bad}" if bad else ""
            raise RuntimeError(
                f"MCMC: chain {chain} found no initial point with a finite potential "
                f"energy and gradient after 100 attempts{where}. Check the model, its "
                "data, or give init_params"
            )
        return states

    def _bind_model_args(self, args, kwargs):
        """How the functions compiled for this run see the model arguments
        (a map from ``fn(*xs, args, kwargs)`` to what is compiled), and
        which compiled functions of earlier runs stay valid.

        Traced arguments are passed through, and every compiled function is
        kept. Closed-over arguments are bound into the functions; those of
        earlier runs are dropped unless the arguments are the same (see
        :func:`probnn.infer.hmc._argument_key`)."""
        self._model_args = (args, kwargs)
        if self.jit_model_args:
            _check_traceable(args, kwargs)
            if self._scope is not None:
                self._cache.clear()
                self._scope = None
            return lambda fn: fn
        key = _argument_key((args, kwargs))
        if key is None or self._scope is None or self._scope[0] != key:
            self._cache.clear()
        # the arguments are held with the key: it may name JAX arrays by id
        self._scope = (key, (args, kwargs))
        return lambda fn: _close_over(fn, args, kwargs)

    def _cached(self, key, build):
        """Compiled functions are kept across runs: for any arguments of the
        same shapes when they are traced, for the same arguments when they
        are closed over (nothing is kept for unhashable ones)."""
        if self._scope is not None and self._scope[0] is None:
            return build()
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def _chain_runner(self, kernel, num_warmup, num_draws, extra_fields):
        """A function ``(state, args, kwargs) -> (state, draws, extras)`` for
        one chain: warmup then draws, each a ``lax.scan``."""
        chunk_warm = self.progress_rate or max(1, num_warmup // 20)
        chunk_draw = self.progress_rate or max(1, num_draws // 20)
        fields = tuple(extra_fields)
        holder = self._holder

        def report(i, total, chunk, phase):
            """Advance the bar at the end of each chunk of ``total``
            iterations (``i`` counts from the phase's start)."""
            if not self.progress_bar or total == 0:
                return
            inside = (i >= 0) & (i < total)
            last = i + 1 == total
            amount = jnp.where(last & (total % chunk != 0), total % chunk, chunk)
            jax.lax.cond(
                inside & (((i + 1) % chunk == 0) | last),
                lambda: jax.debug.callback(
                    functools.partial(_update_progress, holder, phase=phase),
                    amount,
                    ordered=False,
                ),
                lambda: None,
            )

        def run(state, args, kwargs):
            # one loop over warmup and draws: a single traced copy of the
            # kernel; the warmup iterations' outputs are dropped
            total = num_warmup + num_draws

            def step(state, i):
                state = kernel.sample(state, args, kwargs)
                report(i, num_warmup, chunk_warm, "warmup")
                report(i - num_warmup, num_draws, chunk_draw, "sample")
                extras = {f: _field(state, f, kernel._unravel) for f in fields}
                return state, (state.z, extras)

            state, (draws, extras) = jax.lax.scan(step, state, jnp.arange(total))
            cut = lambda x: x[num_warmup:]  # noqa: E731
            return state, cut(draws), jax.tree.map(cut, extras)

        return run

    def _map_chains(self, run_chain):
        """A compiled ``(states, args, kwargs) -> (states, draws, extras)``
        running every chain by the chain method."""
        method = self.chain_method
        num_chains = self.num_chains
        if method == "parallel":
            devices = jax.local_devices()
            used = max(
                d
                for d in range(1, min(num_chains, len(devices)) + 1)
                if num_chains % d == 0
            )
            # left on one device: one after another on CPU, where a
            # vectorized batch of NUTS chains steps every chain until the
            # longest trajectory ends (NumPyro falls back the same way);
            # vectorized on an accelerator, where the batch is nearly free
            fallback = "sequential" if devices[0].platform == "cpu" else "vectorized"
            if num_chains > len(devices):
                where = (
                    "places several chains on each device (vectorized there)"
                    if used > 1
                    else f"runs them on one device ({fallback})"
                )
                warnings.warn(
                    f"MCMC: {num_chains} chains but {len(devices)} device(s); "
                    f"chain_method='parallel' {where}",
                    UserWarning,
                    stacklevel=4,
                )
            if used > 1:
                return self._sharded(run_chain, devices[:used])
            method = fallback
        if num_chains == 1:
            # one chain needs no batching: under ``vmap`` its while loops
            # would carry a batched predicate, selecting every carried value
            # on every iteration
            return jax.jit(_unbatched(run_chain))
        if method == "vectorized":
            return jax.jit(jax.vmap(run_chain, in_axes=(0, None, None)))
        compiled = jax.jit(run_chain)

        def sequential(states, args, kwargs):
            outs = []
            for c in range(num_chains):
                state = jax.tree.map(lambda x, c=c: x[c], states)
                outs.append(compiled(state, args, kwargs))
            return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

        return sequential

    def _sharded(self, run_chain, devices):
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.array(devices), ("chains",))
        spec = PartitionSpec("chains")

        per_device = self.num_chains // len(devices)

        if per_device == 1:
            # the same (unbatched) computation as chain_method="sequential"
            local = _unbatched(run_chain)
        else:
            local = jax.vmap(run_chain, in_axes=(0, None, None))

        mapped = jax.jit(
            jax.shard_map(
                local,
                mesh=mesh,
                in_specs=(spec, PartitionSpec(), PartitionSpec()),
                out_specs=spec,
                check_vma=False,
            )
        )

        def sharded(states, args, kwargs):
            states = jax.device_put(states, NamedSharding(mesh, spec))
            return mapped(states, args, kwargs)

        return sharded

    # -- results --------------------------------------------------------------

    def get_samples(self, group_by_chain: bool = False) -> dict:
        """Draws by site name: ``(num_chains, num_samples, ...)`` with
        ``group_by_chain``, else chains concatenated."""
        if self._samples is None:
            raise RuntimeError("MCMC: call run() first")
        if group_by_chain:
            return self._samples
        return jax.tree.map(_chains_joined, self._samples)

    def get_extra_fields(self, group_by_chain: bool = False) -> dict:
        """The ``extra_fields`` of the last run, shaped like the samples."""
        if self._extra is None:
            raise RuntimeError("MCMC: call run() first")
        if group_by_chain:
            return self._extra
        return jax.tree.map(_chains_joined, self._extra)

    def print_summary(
        self, prob: float = 0.9, exclude_deterministic: bool = True
    ) -> None:
        """Print mean, std, median, HPDI, n_eff and r_hat of every site, and
        the number of divergences when ``"diverging"`` was collected."""
        samples = self.get_samples(group_by_chain=True)
        if exclude_deterministic and self.sampler.model is not None:
            names = getattr(self.sampler, "_latent_names", None)
            latent = set(samples if names is None else names)
            samples = {k: v for k, v in samples.items() if k in latent}
        divergences = None
        if self._extra and "diverging" in self._extra:
            divergences = int(jnp.sum(self._extra["diverging"]))
        from probnn import diagnostics

        diagnostics.print_summary(
            samples, prob=prob, group_by_chain=True, num_divergences=divergences
        )
