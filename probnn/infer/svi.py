"""Stochastic variational inference with optax optimisers."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm.auto as tqdm

from probnn.distributions import constraints
from probnn.distributions.distribution import Delta
from probnn.distributions.util import is_concrete
from probnn.handlers import replay, seed, substitute, trace
from probnn.infer import _vectorize
from probnn.infer._packed import has_packed, is_packed, pack, pack_like, unpack
from probnn.infer.elbo import is_latent
from probnn.infer.util import site_transform, transform_fn
from probnn.optim import (
    Minimize,
    _NumPyroOptim,
    from_example_libraries,
    is_example_libraries_optimizer,
)
from probnn.runtime import Messenger

__all__ = ["SVI", "SVIRunResult", "SVIState", "shard_state"]


class SVIState(NamedTuple):
    """Everything an SVI step reads and writes; a plain pytree, so it can be
    saved with ``flax.serialization`` and passed through ``jit``.

    Attributes:
        optim_state: ``(step, (params, opt_state))``, NumPyro's layout: the
            number of optimiser updates made (an int32 scalar, 0 after
            :meth:`SVI.init`), the param sites' unconstrained values (a dict
            by site name) and the optax optimiser's state. Where four or
            more params are small arrays of one shape and dtype (a model
            with many scalar sites), ``params`` and the optimiser's dicts
            laid out like it are ``PackedDict`` mappings, which store those
            leaves as rows of one array and read like the dict:
            ``params[name]``, ``params.items()``, ``dict(params)``; to edit
            a param, put ``{**params, name: value}`` back in the state.
        mutable_state: values of ``mutable`` sites (e.g. BatchNorm
            statistics), or None when the model and guide have none.
        rng_key: key of the next step.
    """

    optim_state: Any
    mutable_state: dict | None
    rng_key: jax.Array


class SVIRunResult(NamedTuple):
    """What :meth:`SVI.run` returns: constrained ``params``, the final
    ``state`` and the loss of every step."""

    params: dict
    state: SVIState
    losses: jax.Array


class _SVIOptimizer(optax.GradientTransformationExtraArgs):
    """The optax transformation an SVI runs, with NumPyro's
    ``svi.optim.get_params(svi_state.optim_state)``."""

    def get_params(self, optim_state):
        """The unconstrained params held in an ``SVIState.optim_state``."""
        return optim_state[1][0]


def _is_gradient_transformation(optim) -> bool:
    return callable(getattr(optim, "init", None)) and callable(
        getattr(optim, "update", None)
    )


def _all_finite(tree) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _support_signature(constraint):
    """What must agree between a model site's support and its guide site's:
    the base constraint's kind and its bounds (where they are concrete)."""
    while isinstance(constraint, constraints._Independent):
        constraint = constraint.base
    if isinstance(constraint, constraints._Dependent):
        return None
    if isinstance(constraint, constraints._Interval) and not isinstance(
        constraint, constraints._IntegerInterval
    ):
        kind, bounds = "interval", (constraint.lower_bound, constraint.upper_bound)
    elif isinstance(constraint, constraints._GreaterThan):
        kind, bounds = "greater_than", (constraint.lower_bound,)
    elif isinstance(constraint, constraints._LessThan):
        kind, bounds = "less_than", (constraint.upper_bound,)
    else:
        kind = type(constraint).__name__.replace("_Softplus", "_")
        bounds = ()
    concrete = []
    for bound in bounds:
        if not is_concrete(bound):  # traced (e.g. inside SVI.init's jit)
            return kind, None
        values = np.asarray(bound).reshape(-1)
        if values.size == 0 or not np.all(values == values[0]):
            return kind, None
        concrete.append(float(values[0]))
    return kind, tuple(concrete)


def _inside_the_real_line(guide_support, model_support) -> bool:
    """Whether a continuous guide support lies in a model support that is the
    whole real line (or real vectors of the same event dim)."""
    real = _support_signature(model_support)[0] == "_Real"
    return (
        real
        and not getattr(guide_support, "is_discrete", False)
        and getattr(guide_support, "event_dim", 0)
        == getattr(model_support, "event_dim", 0)
    )


def check_model_guide_match(model_trace: dict, guide_trace: dict) -> None:
    """Raise a ValueError naming the site when the guide lacks one of the
    model's latent sites, draws a site the model does not have, or gives a
    site a different support."""
    for name, site in model_trace.items():
        if not is_latent(site) or site["infer"].get("is_auxiliary"):
            continue
        if site["infer"].get("enumerate"):
            continue
        guide_site = guide_trace.get(name)
        if guide_site is None or guide_site["type"] != "sample":
            raise ValueError(
                f"model latent site {name!r} is missing from the guide: every "
                "unobserved sample site of the model needs a guide site of the "
                "same name"
            )
        if guide_site["is_observed"]:
            raise ValueError(
                f"site {name!r} is latent in the model but observed in the guide"
            )
        if isinstance(guide_site["fn"], Delta):
            continue  # a point mass claims no support of its own
        model_support = _support_signature(site["fn"].support)
        guide_support = _support_signature(guide_site["fn"].support)
        if model_support is None or guide_support is None:
            continue
        same_kind = model_support[0] == guide_support[0]
        comparable = model_support[1] is not None and guide_support[1] is not None
        if _inside_the_real_line(guide_site["fn"].support, site["fn"].support):
            continue  # the guide's draws are all in the model's support
        if not same_kind or (comparable and model_support[1] != guide_support[1]):
            raise ValueError(
                f"site {name!r}: the guide's {type(guide_site['fn']).__name__} has "
                f"support {guide_site['fn'].support!r} but the model's "
                f"{type(site['fn']).__name__} has support {site['fn'].support!r}"
            )
    for name, site in guide_trace.items():
        if not is_latent(site) or site["infer"].get("is_auxiliary"):
            continue
        if name not in model_trace:
            raise ValueError(
                f"guide site {name!r} does not appear in the model; mark it "
                "infer={'is_auxiliary': True} if it is an auxiliary variable"
            )


def _strongly_typed(tree):
    """Arrays with their weak types made definite: a param initialised from a
    Python number would otherwise change type after its first update and make
    every compiled step compile again."""

    def strong(leaf):
        if isinstance(leaf, jax.Array) and leaf.weak_type:
            return jnp.asarray(leaf, dtype=leaf.dtype)
        return leaf

    return jax.tree.map(strong, tree)


def _split_static(tree):
    """Array leaves (jit arguments) apart from everything else (constants)."""
    leaves, treedef = jax.tree.flatten(tree)
    is_array = [isinstance(leaf, jax.Array | np.ndarray) for leaf in leaves]
    dynamic = [leaf if array else None for leaf, array in zip(leaves, is_array)]
    static = tuple(None if array else leaf for leaf, array in zip(leaves, is_array))
    return dynamic, (treedef, static)


def _join_static(dynamic, static_part):
    treedef, static = static_part
    leaves = [d if s is None else s for d, s in zip(dynamic, static)]
    return jax.tree.unflatten(treedef, leaves)


class _Lane:
    """Row ``k`` of ``stack``, standing for one leaf of a PackedDict."""

    __slots__ = ("stack", "k", "tag")

    def __init__(self, stack, k, tag):
        self.stack, self.k, self.tag = stack, k, tag


def _opened_call(step: Callable, state, extra, vectorize: bool):
    """``step(plain_state, *extra) -> (new_plain_state, loss)`` on a state
    holding PackedDicts: the step sees plain dicts, and the new state is packed
    with the same layouts. With ``vectorize`` the traced step is evaluated
    with its isomorphic operations batched (:mod:`probnn.infer._vectorize`),
    the packed rows feeding the batched operations directly."""
    top, top_def = jax.tree.flatten(state, is_leaf=is_packed)
    opened = []
    for i, node in enumerate(top):
        if is_packed(node):
            view = {name: node[name] for name in node.layout.loose}
            for g, group in enumerate(node.layout.groups):
                view.update(
                    (n, _Lane(node.stacks[g], k, (i, g))) for k, n in enumerate(group)
                )
            node = {name: view[name] for name in node.layout.names}
        opened.append(node)
    template = jax.tree.unflatten(top_def, opened)
    leaves, treedef = jax.tree.flatten(
        template, is_leaf=lambda leaf: isinstance(leaf, _Lane)
    )
    dynamic, static_part = _split_static(extra)
    count = len(leaves)
    # the positions of each stack's rows among the leaves, row by row
    rows: dict = {}
    for position, leaf in enumerate(leaves):
        if isinstance(leaf, _Lane):
            rows.setdefault(leaf.tag, {})[leaf.k] = position
    groups = [
        [positions[k] for k in range(len(positions))] for positions in rows.values()
    ]

    dynamic_positions = [i for i, leaf in enumerate(dynamic) if leaf is not None]
    inputs = leaves + [dynamic[i] for i in dynamic_positions]

    def flat_step(*args):
        """The state's leaves and the dynamic arguments -> new leaves, loss."""
        full = list(dynamic)
        for i, value in zip(dynamic_positions, args[count:]):
            full[i] = value
        plain = jax.tree.unflatten(treedef, args[:count])
        new_state, loss = step(plain, *_join_static(full, static_part))
        new_leaves, new_def = jax.tree.flatten(new_state)
        if new_def != treedef:
            raise RuntimeError(
                f"SVI step changed the state's structure from {treedef} to {new_def}"
            )
        return [*new_leaves, loss]

    if vectorize:
        avals = [
            jax.ShapeDtypeStruct(
                leaf.stack.shape[1:],
                leaf.stack.dtype,
                weak_type=bool(getattr(leaf.stack, "weak_type", False)),
            )
            if isinstance(leaf, _Lane)
            else leaf
            for leaf in inputs
        ]
        given = {
            i: leaf for i, leaf in enumerate(inputs) if not isinstance(leaf, _Lane)
        }
        lanes = {
            i: (leaf.stack, leaf.k)
            for i, leaf in enumerate(inputs)
            if isinstance(leaf, _Lane)
        }
        outputs, stacks = _vectorize.call(flat_step, avals, given, lanes, groups)
    else:
        values = [
            leaf.stack[leaf.k] if isinstance(leaf, _Lane) else leaf for leaf in inputs
        ]
        outputs = flat_step(*values)
        stacks = [jnp.stack([outputs[p] for p in group]) for group in groups]
    stacked = dict(zip(rows, stacks))
    loss = outputs[count]
    new_opened = top_def.flatten_up_to(jax.tree.unflatten(treedef, outputs[:count]))
    new_top = []
    for i, (node, new) in enumerate(zip(top, new_opened)):
        if is_packed(node):
            node = type(node)(
                node.layout,
                [stacked[i, g] for g in range(len(node.stacks))],
                [new[name] for name in node.layout.loose],
            )
        else:
            node = new
        new_top.append(node)
    return jax.tree.unflatten(top_def, new_top), loss


def shard_state(state: SVIState, shardings: dict, mesh=None) -> SVIState:
    """Place an :class:`SVIState` on a mesh with some params sharded.

    Params named in ``shardings`` get the given shardings, and so does every
    part of the optimiser state laid out like the params (Adam's moments,
    for example); every other leaf (other params, step counts, mutable
    state, the key) is replicated over the mesh. The jitted steps of
    :meth:`SVI.run` (and ``jax.jit(svi.update)``) then keep this placement:
    XLA partitions the step to match.

    Args:
        state: e.g. the result of :meth:`SVI.init`.
        shardings: param site name -> a ``jax.sharding.Sharding`` for the
            whole site, or a pytree of shardings laid out like the site's
            value (a prefix of it), e.g. from :func:`probnn.nn.param_shardings`.
        mesh: mesh for the replicated leaves; by default the mesh of the
            first ``NamedSharding`` in ``shardings``.

    Returns:
        The placed state.
    """
    step, (params, opt_state) = unpack(state.optim_state)
    if not isinstance(shardings, dict):
        raise TypeError(
            "shard_state: shardings must be a dict from param site name to "
            f"sharding(s), got {type(shardings).__name__}"
        )
    unknown = sorted(set(shardings) - set(params))
    if unknown:
        raise ValueError(
            f"shard_state: shardings has {unknown}, which match no param site; "
            f"the param sites are {sorted(params)}"
        )
    is_sharding = lambda leaf: isinstance(leaf, jax.sharding.Sharding)  # noqa: E731
    if mesh is None:
        named = [
            leaf
            for leaf in jax.tree.leaves(shardings, is_leaf=is_sharding)
            if isinstance(leaf, jax.sharding.NamedSharding)
        ]
        if not named:
            raise ValueError(
                "shard_state: pass mesh= (shardings holds no NamedSharding to "
                "take it from)"
            )
        mesh = named[0].mesh
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def site_shardings(name, value):
        given = shardings.get(name, replicated)
        try:
            return jax.tree.map(
                lambda sharding, sub: jax.tree.map(lambda _: sharding, sub),
                given,
                value,
                is_leaf=is_sharding,
            )
        except ValueError as error:
            raise ValueError(
                f"shard_state: the shardings of param site {name!r} are not laid "
                f"out like its value: {error}"
            ) from None

    param_shardings = {name: site_shardings(name, v) for name, v in params.items()}
    params_structure = jax.tree.structure(params)

    def like_params(node):
        return jax.tree.structure(node) == params_structure

    def place(node):
        if not like_params(node):
            return jax.device_put(node, replicated)
        try:
            return jax.device_put(node, param_shardings)
        except ValueError as error:
            raise ValueError(f"shard_state: cannot place the params: {error}") from None

    opt_state = jax.tree.map(place, opt_state, is_leaf=like_params)
    return SVIState(
        (jax.device_put(step, replicated), (place(params), opt_state)),
        jax.device_put(state.mutable_state, replicated),
        jax.device_put(state.rng_key, replicated),
    )


_RUN_ONCE = {"xla_backend_optimization_level": 0}


def _init_keys(rng_key):
    """(key of the steps, model's key, guide's key) at initialisation."""
    return tuple(jax.random.split(rng_key, 3))


def _inside_staged_trace() -> bool:
    """Whether this runs while ``jax.jit``, ``lax.scan`` or another staging
    transformation traces a program (there every new array is a tracer),
    where a nested jit may not take ``compiler_options``; ``vmap`` and
    ``grad`` alone do not stage."""
    return isinstance(jnp.zeros(()), jax.core.Tracer)


def _without_traced_leaves(tree):
    """``tree`` with its tracer leaves replaced by None, and those leaves."""
    leaves, treedef = jax.tree.flatten(tree)
    traced = [leaf for leaf in leaves if isinstance(leaf, jax.core.Tracer)]
    kept = [None if isinstance(leaf, jax.core.Tracer) else leaf for leaf in leaves]
    return (treedef, kept), traced


def _with_leaves(skeleton, traced):
    """The tree :func:`_without_traced_leaves` took apart, its None leaves
    filled from ``traced`` in order."""
    treedef, kept = skeleton
    values = iter(traced)
    return jax.tree.unflatten(
        treedef, [next(values) if leaf is None else leaf for leaf in kept]
    )


def _autoguide_in(guide):
    """The autoguide that ``guide`` is or wraps (through handlers such as
    ``scale`` or ``shard_subsample``), or None."""
    while guide is not None:
        if callable(getattr(guide, "_setup_prototype", None)):
            return guide
        guide = guide.fn if isinstance(guide, Messenger) else None
    return None


class SVI:
    """Stochastic variational inference: fit the guide's (and the model's)
    param sites by minimising an ELBO loss with an optax optimiser.

    Param sites declared with ``constraint=`` are optimised in unconstrained
    space through ``biject_to``; :meth:`get_params` returns constrained values.

    Args:
        model: the model.
        guide: the guide (variational family), e.g. an autoguide.
        optim: any optax ``GradientTransformation`` (chains, schedules and
            ``multi_transform`` included), or a :mod:`probnn.optim`
            optimiser (NumPyro's classes), which stands for its optax
            transformation.
        loss: an ELBO, e.g. ``Trace_ELBO()``.
        **static_kwargs: keyword arguments passed to model and guide on
            every call (kept out of jit's traced arguments).

    >>> import jax, jax.numpy as jnp, optax, probnn, probnn.distributions as dist
    >>> from probnn.infer import SVI, Trace_ELBO
    >>> def model(y):
    ...     mu = probnn.sample("mu", dist.Normal(0.0, 10.0))
    ...     with probnn.plate("N", y.shape[0]):
    ...         probnn.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> def guide(y):
    ...     loc = probnn.param("loc", 0.0)
    ...     scale = probnn.param("scale", 1.0, constraint=dist.constraints.positive)
    ...     probnn.sample("mu", dist.Normal(loc, scale))
    >>> y = jnp.array([1.0, 2.0, 3.0])
    >>> svi = SVI(model, guide, optax.adam(0.05), Trace_ELBO())
    >>> result = svi.run(jax.random.PRNGKey(0), 2000, y, progress_bar=False)
    >>> posterior_mean = 6.0 / 3.01
    >>> abs(float(result.params["loc"]) - posterior_mean) < 0.2
    True

    A model written site by site traces to the same few operations once per
    site, and the optimiser updates each param leaf on its own. When the
    state holds packed params (see :class:`SVIState`), :meth:`update` and
    :meth:`stable_update` evaluate their traced step with every group of such
    repeated, independent operations run as one vectorised operation, which
    cuts XLA's compile time and the step time of many-site models. Set the
    attribute ``vectorize_steps = False`` (on the class or one instance) to
    trace the step as written instead.
    """

    vectorize_steps: bool = True

    def __init__(self, model: Callable, guide: Callable, optim, loss, **static_kwargs):
        # probnn.optim.Minimize: each update is a whole minimisation
        self._minimize = optim if isinstance(optim, Minimize) else None
        if self._minimize is not None:
            optim = optax.identity()
        elif isinstance(optim, _NumPyroOptim):  # probnn.optim.Adam(...) etc.
            optim = optim.as_optax()
        elif is_example_libraries_optimizer(optim):  # optimizers.adam(0.01)
            optim = from_example_libraries(optim)
        if not _is_gradient_transformation(optim):
            raise TypeError(
                "SVI: optim must be an optax GradientTransformation (with init "
                "and update), a probnn.optim optimiser or a "
                "jax.example_libraries.optimizers triple, got "
                f"{type(optim).__name__}"
            )
        optim = _SVIOptimizer(optim.init, optim.update)
        if not callable(getattr(loss, "loss_with_mutable_state", None)):
            raise TypeError(
                "SVI: loss must be an ELBO such as Trace_ELBO(), got "
                f"{type(loss).__name__}"
            )
        self.model = model
        self.guide = guide
        self.optim = optim
        self.loss = loss
        self.static_kwargs = static_kwargs
        self._transforms: dict | None = None
        self._runners: dict = {}
        self._initializers: dict = {}

    # -- set-up ---------------------------------------------------------------

    def init(self, rng_key, *args, init_params: dict | None = None, **kwargs):
        """Run model and guide once to find their param sites and initial state.

        It may be called inside ``jax.jit``, ``jax.vmap`` (e.g. over keys:
        ``jax.vmap(lambda k: svi.init(k, x))(keys)``) and ``lax.scan``, and
        so may :meth:`update`, :meth:`stable_update`, :meth:`evaluate` and
        :meth:`get_params`: a training function can initialise and then scan
        the steps under one ``jit``. What ``init`` keeps on the SVI object
        for later calls must not depend on traced values, so there a param's
        ``constraint`` bounds must be concrete (Python numbers or NumPy
        arrays, not ``jnp`` arrays made inside the jitted function), and an
        autoguide must have made its prototype run (``svi.init`` once
        outside) unless key and arguments are concrete; otherwise a
        ValueError says which.

        Args:
            rng_key: key for initialisation and for the steps that follow.
            *args: positional arguments of model and guide.
            init_params: constrained initial values of some param sites,
                overriding their ``init_value``.
            **kwargs: keyword arguments of model and guide.

        Returns:
            The initial :class:`SVIState`.
        """
        kwargs = {**kwargs, **self.static_kwargs}
        init_params = dict(init_params or {})
        staged = _inside_staged_trace()
        autoguide = _autoguide_in(self.guide)
        if autoguide is not None and autoguide.prototype_trace is None:
            # an autoguide keeps concrete initial values from a first run of
            # the model: that run is eager
            self._setup_autoguide(autoguide, rng_key, args, kwargs)
        transforms = None
        if not staged:
            # one compiled run costs less than running every operation of
            # model and guide eagerly (each compiled on its own); it is kept,
            # so a later init with arguments of the same structure reuses it.
            # Inside the caller's jit (or scan) the run is part of the
            # caller's program instead.
            dynamic, static_part = _split_static((args, kwargs, init_params))
            try:
                compiled, found = self._initializers[static_part]
            except (KeyError, TypeError):
                compiled, found = self._initializer(static_part)
            try:
                params, opt_state, mutable_state, next_key, traced = compiled(
                    rng_key, dynamic
                )
                transforms = _with_leaves(found["transforms"], traced)
            except (
                jax.errors.ConcretizationTypeError,
                jax.errors.TracerArrayConversionError,
                jax.errors.TracerIntegerConversionError,
            ):
                pass  # model or guide needs concrete values at initialisation
        if transforms is None or not is_concrete(transforms):
            # eager, or traced by the caller's transformation; under vmap a
            # bijection with array bounds comes out of the compiled run
            # batched, while the model's own constants stay concrete here
            next_key, model_key, guide_key = _init_keys(rng_key)
            params, mutable_state, transforms = self._initial_values(
                model_key, guide_key, args, kwargs, init_params
            )
            params, mutable_state = _strongly_typed((params, mutable_state))
            opt_state = self.optim.init(params)
        self._check_untraced(transforms)
        self._transforms = transforms
        packed = pack(params)
        if is_packed(packed):
            params, opt_state = packed, pack_like(opt_state, params)
        step = jnp.zeros((), jnp.int32)  # updates made so far, as in NumPyro
        return SVIState((step, (params, opt_state)), mutable_state or None, next_key)

    def _setup_autoguide(self, autoguide, rng_key, args, kwargs) -> None:
        """Run ``autoguide``'s prototype run, which it keeps (the model's
        structure and the latent sites' initial values), outside any
        transformation: with traced inputs (the caller's jit or vmap) its
        values would be tracers of that trace, kept on the guide after it
        ends."""
        if not is_concrete((rng_key, args, kwargs)):
            raise ValueError(
                f"SVI.init: the autoguide {type(autoguide).__name__} keeps the "
                "values of a first (prototype) run of the model, which must be "
                "concrete, but this init runs inside jax.jit, jax.vmap or "
                "lax.scan with traced arguments (key or data); set the guide "
                "up once outside the transformation first, with concrete "
                "arguments: svi.init(rng_key, *args) (or "
                "probnn.handlers.seed(guide, rng_key)(*args))"
            )
        # inside the caller's jit, concrete inputs give concrete values
        with jax.ensure_compile_time_eval(), seed(rng_seed=_init_keys(rng_key)[2]):
            autoguide._setup_prototype(*args, **kwargs)

    @staticmethod
    def _check_untraced(transforms: dict) -> None:
        """Raise unless the params' bijections are free of tracers: they are
        kept on the SVI object for every later step and :meth:`get_params`,
        so they cannot depend on values traced by the caller's jit or vmap."""
        traced = sorted(name for name, t in transforms.items() if not is_concrete(t))
        if traced:
            raise ValueError(
                f"SVI.init: the constraints of param sites {traced} depend on "
                "values traced by the enclosing jax.jit / jax.vmap / lax.scan "
                "(e.g. bounds computed with jnp inside the model or passed as "
                "traced arguments); SVI keeps each param's bijection for later "
                "steps, so its bounds must be concrete: give them as Python "
                "numbers or NumPy arrays, or call svi.init outside the "
                "transformation"
            )

    def _initializer(self, static_part):
        """A jitted ``(rng_key, dynamic_args) -> (params, opt_state,
        mutable_state, next rng_key, traced leaves of the transforms)`` and
        the dict that receives the params' transforms (their traced leaves
        left as None) when it is traced."""
        found = {}

        # it runs once: XLA's optimisation passes would cost more compile
        # time than they save (random initialisers of big networks compile
        # about twice as fast without them)
        @functools.partial(jax.jit, compiler_options=_RUN_ONCE)
        def initial_values(rng_key, dynamic):
            call_args, call_kwargs, values = _join_static(dynamic, static_part)
            rng_key, model_key, guide_key = _init_keys(rng_key)
            params, mutable_state, transforms = self._initial_values(
                model_key, guide_key, call_args, call_kwargs, values
            )
            # a bijection's bounds computed by jnp in the model are tracers
            # here: they leave as outputs, so no tracer outlives the trace
            found["transforms"], traced = _without_traced_leaves(transforms)
            params, mutable_state = _strongly_typed((params, mutable_state))
            return params, self.optim.init(params), mutable_state, rng_key, traced

        try:
            self._initializers[static_part] = (initial_values, found)
        except TypeError:  # unhashable constant arguments: no reuse
            pass
        return initial_values, found

    def _initial_values(self, model_key, guide_key, args, kwargs, init_params):
        """Unconstrained initial params, initial mutable state and the params'
        transforms, from one run of guide and model (checked to match)."""
        guide_trace = trace(
            substitute(seed(self.guide, guide_key), data=init_params)
        ).get_trace(*args, **kwargs)
        guide_values = {
            kind: {
                name: site["value"]
                for name, site in guide_trace.items()
                if site["type"] == kind
            }
            for kind in ("param", "mutable")
        }
        # as in every step, the model continues from the state the guide
        # updated where both have a mutable site
        data = {**guide_values["param"], **init_params, **guide_values["mutable"]}
        if getattr(self.loss, "multi_sample_guide", False):
            # the guide draws several samples at once: the model meets the
            # first of them (the loss runs it once per sample)
            first = {
                name: site["value"][0]
                for name, site in guide_trace.items()
                if site["type"] == "sample" and jnp.size(site["value"]) > 0
            }
            model_trace = trace(
                substitute(seed(self.model, model_key), data={**first, **data})
            ).get_trace(*args, **kwargs)
        else:
            model_trace = trace(
                replay(
                    substitute(seed(self.model, model_key), data=data),
                    trace=guide_trace,
                )
            ).get_trace(*args, **kwargs)
            check_model_guide_match(model_trace, guide_trace)

        params, transforms, mutable_state = {}, {}, {}
        for tr in (guide_trace, model_trace):
            for name, site in tr.items():
                if site["type"] == "param" and name not in params:
                    transforms[name] = site_transform(site)
                    # the trace holds a param's full value even where a
                    # subsampled plate hands the model only some rows
                    params[name] = transforms[name].inv(site["value"])
                elif site["type"] == "mutable":
                    mutable_state[name] = site["value"]
        unknown = sorted(set(init_params) - set(params) - set(mutable_state))
        if unknown:
            raise ValueError(
                f"SVI.init: init_params has {unknown}, which match no param site; "
                f"the param sites are {sorted(params)}"
            )
        if not params:
            # the loss is then that of a fixed guide: constant in expectation
            # (svi.evaluate still estimates it); NumPyro runs such an SVI too
            latent = [n for n, s in model_trace.items() if is_latent(s)]
            warnings.warn(
                "SVI.init: nothing to optimise: neither the model nor the guide "
                "has a param site"
                + (
                    f"; the guide's draws of {latent} stay as they are"
                    if latent
                    else ", and the model has no latent sample sites"
                ),
                UserWarning,
                stacklevel=3,
            )
        return params, mutable_state, transforms

    def _require_init(self):
        if self._transforms is None:
            raise RuntimeError(
                "SVI: call svi.init(rng_key, *args) (or svi.run) before this method"
            )

    def get_params(self, svi_state: SVIState) -> dict:
        """Constrained values of every param site."""
        self._require_init()
        return self.constrain_fn(svi_state.optim_state[1][0])

    def constrain_fn(self, params: dict) -> dict:
        """Map unconstrained param values (as the optimiser holds them) onto
        the params' constraints (NumPyro's ``svi.constrain_fn``)."""
        self._require_init()
        return transform_fn(self._transforms, params)

    # -- steps ----------------------------------------------------------------

    def _loss_fn(self, svi_state, step_key, args, kwargs):
        kwargs = {**kwargs, **self.static_kwargs}

        def loss_fn(params):
            param_map = transform_fn(self._transforms, params)
            if svi_state.mutable_state is not None:
                param_map.update(svi_state.mutable_state)
            out = self.loss.loss_with_mutable_state(
                step_key, param_map, self.model, self.guide, *args, **kwargs
            )
            return out["loss"], out["mutable_state"]

        return loss_fn

    def _step(self, svi_state, args, kwargs, forward_mode_differentiation):
        self._require_init()
        rng_key, step_key = jax.random.split(svi_state.rng_key)
        step, (params, opt_state) = svi_state.optim_state
        loss_fn = self._loss_fn(svi_state, step_key, args, kwargs)
        if self._minimize is not None:
            return self._minimize_step(svi_state, loss_fn, rng_key)
        if forward_mode_differentiation:
            (loss, mutable), _ = loss_fn(params), None
            grads = jax.jacfwd(lambda p: loss_fn(p)[0])(params)
        else:
            (loss, mutable), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = self.optim.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if mutable is None:
            mutable = svi_state.mutable_state
        return SVIState((step + 1, (params, opt_state)), mutable, rng_key), loss, grads

    def _minimize_step(self, svi_state, loss_fn, rng_key):
        """One :class:`probnn.optim.Minimize` update: the loss at this step's
        key minimised over the params."""
        step, (params, opt_state) = svi_state.optim_state
        if svi_state.mutable_state is not None:
            raise ValueError(
                "SVI with Minimize: the model or guide has mutable sites "
                f"{sorted(svi_state.mutable_state)}, whose state a minimisation "
                "cannot carry; use a gradient optimiser"
            )
        params, loss, grads = self._minimize.minimize(lambda p: loss_fn(p)[0], params)
        state = SVIState((step + 1, (params, opt_state)), None, rng_key)
        return state, loss, grads

    def _plain_update(self, svi_state, args, kwargs, forward_mode, stable):
        """One step on a state whose dicts are plain."""
        new_state, loss, grads = self._step(svi_state, args, kwargs, forward_mode)
        if not stable:
            return new_state, loss
        finite = jnp.isfinite(loss) & _all_finite(grads)
        kept = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            (new_state.optim_state, new_state.mutable_state),
            (svi_state.optim_state, svi_state.mutable_state),
        )
        return SVIState(kept[0], kept[1], new_state.rng_key), loss

    def _update(self, svi_state, args, kwargs, forward_mode, stable):
        self._require_init()
        if not has_packed(svi_state):
            return self._plain_update(svi_state, args, kwargs, forward_mode, stable)
        step = functools.partial(
            self._plain_update, forward_mode=forward_mode, stable=stable
        )
        return _opened_call(step, svi_state, (args, kwargs), self.vectorize_steps)

    def update(
        self,
        svi_state: SVIState,
        *args,
        forward_mode_differentiation: bool = False,
        **kwargs,
    ):
        """One optimisation step; returns ``(new_state, loss)``, the step
        count of ``new_state.optim_state`` one higher. Wrap it in ``jax.jit``
        for speed (``run`` does)."""
        return self._update(
            svi_state, args, kwargs, forward_mode_differentiation, stable=False
        )

    def stable_update(
        self,
        svi_state: SVIState,
        *args,
        forward_mode_differentiation: bool = False,
        **kwargs,
    ):
        """Like :meth:`update`, but a step whose loss or gradient is not finite
        leaves params, optimiser and mutable state unchanged, the step count
        of ``optim_state`` included, as in NumPyro (the key still advances).
        The returned loss is the step's, so a non-finite value reports the
        skipped step."""
        return self._update(
            svi_state, args, kwargs, forward_mode_differentiation, stable=True
        )

    def evaluate(self, svi_state: SVIState, *args, **kwargs):
        """The loss at the current params, without a step."""
        self._require_init()
        _, step_key = jax.random.split(svi_state.rng_key)
        params = svi_state.optim_state[1][0]
        return self._loss_fn(svi_state, step_key, args, kwargs)(params)[0]

    # -- the training loop ----------------------------------------------------

    def _chunk_runner(self, stable, forward_mode, chunk_size, static_part):
        """A jitted ``(state, count, dynamic_args) -> (state, losses)`` running
        ``count <= chunk_size`` steps; kept so that later runs with arguments of
        the same structure reuse its compilation."""
        transforms = tuple((name, type(t)) for name, t in self._transforms.items())
        key = (stable, forward_mode, chunk_size, static_part, transforms)
        try:
            return self._runners[key]
        except TypeError:  # unhashable constant arguments: no reuse
            key = None
        except KeyError:
            pass
        step = self.stable_update if stable else self.update

        @jax.jit
        def run_chunk(state, count, dynamic):
            call_args, call_kwargs = _join_static(dynamic, static_part)

            def body(i, carry):
                state, losses = carry
                state, loss = step(
                    state,
                    *call_args,
                    forward_mode_differentiation=forward_mode,
                    **call_kwargs,
                )
                return state, losses.at[i].set(loss)

            losses = jnp.full((chunk_size,), jnp.nan)
            return jax.lax.fori_loop(0, count, body, (state, losses))

        if key is not None:
            self._runners[key] = run_chunk
        return run_chunk

    def run(
        self,
        rng_key,
        num_steps: int,
        *args,
        progress_bar: bool = True,
        stable_update: bool = False,
        forward_mode_differentiation: bool = False,
        init_state: SVIState | None = None,
        init_params: dict | None = None,
        **kwargs,
    ) -> SVIRunResult:
        """Optimise for ``num_steps`` steps.

        The steps run inside one jitted loop per chunk of about a twentieth of
        the run; the progress bar (tqdm) is updated once per chunk with the
        latest losses, so it costs no per-step dispatch, and the results do
        not depend on whether it is shown.

        Args:
            rng_key: key for initialisation (ignored with ``init_state``).
            num_steps: number of steps.
            *args: positional arguments of model and guide.
            progress_bar: show a tqdm progress bar.
            stable_update: use :meth:`stable_update` (skip non-finite steps).
            forward_mode_differentiation: differentiate in forward mode.
            init_state: continue from this state instead of initialising.
            init_params: constrained initial values of some param sites.
            **kwargs: keyword arguments of model and guide.

        Returns:
            :class:`SVIRunResult` ``(params, state, losses)``. Non-finite
            losses are reported with a warning giving their count and the
            first step.
        """
        if not isinstance(num_steps, int | np.integer) or num_steps < 1:
            raise ValueError(
                f"SVI.run: num_steps must be a positive int, got {num_steps!r}"
            )
        if init_state is None:
            state = self.init(rng_key, *args, init_params=init_params, **kwargs)
        else:
            if init_params is not None:
                raise ValueError("SVI.run: pass init_state or init_params, not both")
            if self._transforms is None:
                self.init(rng_key, *args, **kwargs)
            state = init_state
        dynamic, static_part = _split_static((args, kwargs))
        chunk_size = max(1, math.ceil(num_steps / 20))
        run_chunk = self._chunk_runner(
            stable_update, forward_mode_differentiation, chunk_size, static_part
        )
        chunks = []
        done = 0
        with tqdm.tqdm(total=num_steps, disable=not progress_bar) as bar:
            while done < num_steps:
                count = min(chunk_size, num_steps - done)
                state, losses = run_chunk(state, count, dynamic)
                if not progress_bar:
                    # no host round trip per chunk: the next chunk is
                    # dispatched while this one runs
                    chunks.append(losses[:count])
                    done += count
                    continue
                losses = np.asarray(losses[:count])
                chunks.append(losses)
                bar.set_postfix_str(
                    f"init loss: {chunks[0][0]:.4g}, avg. loss "
                    f"[{done + 1}-{done + count}]: {np.mean(losses):.4g}"
                )
                bar.update(count)
                done += count
        losses = np.concatenate([np.asarray(c) for c in chunks])
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            what = "skipped" if stable_update else "taken"
            warnings.warn(
                f"SVI.run: {bad.size} of {num_steps} steps had a non-finite loss "
                f"(first at step {bad[0]}); these steps were {what}"
                + ("" if stable_update else "; stable_update=True skips them"),
                RuntimeWarning,
                stacklevel=2,
            )
        return SVIRunResult(self.get_params(state), state, jnp.asarray(losses))
