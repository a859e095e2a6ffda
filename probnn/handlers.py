"""Effect handlers with NumPyro's semantics.

Each handler wraps a model (``handler(model, ...)``) or opens a context
(``with handler(...):``) and changes what the primitives inside do.

>>> import probnn
>>> import probnn.distributions as dist
>>> from probnn.handlers import seed, substitute, trace
>>> def model():
...     return probnn.sample("x", dist.Normal(0.0, 1.0))
>>> tr = trace(substitute(seed(model, rng_seed=0), data={"x": 0.5})).get_trace()
>>> float(tr["x"]["value"])
0.5
"""

from __future__ import annotations

import copy
import functools
import zlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from probnn._collapse import collapse
from probnn.enumeration import config_enumerate, enum
from probnn.runtime import (
    _STACK,
    Message,
    Messenger,
    apply_stack,
    draw,
    make_message,
    missing_key,
)

__all__ = [
    "config_enumerate",
    "enum",
    "block",
    "collapse",
    "condition",
    "do",
    "infer_config",
    "lift",
    "mask",
    "reparam",
    "replay",
    "scale",
    "scope",
    "seed",
    "shard_subsample",
    "substitute",
    "trace",
    "uncondition",
]


class DuplicateSiteError(ValueError, AssertionError):
    """Two sites of one trace share a name (a ``ValueError``, and an
    ``AssertionError`` as NumPyro raises there)."""


def _needs_key(msg: Message) -> bool:
    """Whether a sample, plate or param site still lacks the random key its
    default behaviour draws with (no value yet, not observed, no key)."""
    kind = msg["type"]
    if kind not in ("sample", "plate", "param") or msg["value"] is not None:
        return False
    if kind == "sample" and msg["is_observed"]:
        return False
    if kind == "param" and not callable(msg["args"][0]):
        return False
    return msg["kwargs"].get("rng_key") is None


def is_typed_key(key) -> bool:
    """Whether ``key`` is a typed JAX key (``jax.random.key``) rather than raw
    ``uint32`` key data (``jax.random.PRNGKey``)."""
    return jax.dtypes.issubdtype(jnp.result_type(key), jax.dtypes.prng_key)


def _as_key(rng_seed):
    if rng_seed is None:
        raise ValueError("seed: rng_seed must be an int or a JAX random key, got None")
    if isinstance(rng_seed, int | np.integer):
        return jax.random.PRNGKey(int(rng_seed))
    if jnp.ndim(rng_seed) == 0 and not is_typed_key(rng_seed):
        return jax.random.PRNGKey(rng_seed)
    return rng_seed


class seed(Messenger):
    """Give every random site that lacks one a fresh key split from ``rng_seed``.

    A seeded model is reusable: each call (or each ``with`` block) starts from
    the same key, so two calls give the same draws. Keys go to unobserved
    ``sample`` sites, subsampled ``plate`` sites, ``prng_key()`` and ``param``
    sites with a callable ``init_value``.

    Args:
        fn: model to seed.
        rng_seed: an int or a JAX random key.
        hide_types: site types (``"sample"``, ``"plate"``, ``"param"``,
            ``"prng_key"``, ...) this handler gives no key, leaving them to an
            outer ``seed``: for example one shared key for the plates' mini-batch
            indices of several runs whose draws differ.

    >>> import probnn, probnn.distributions as dist
    >>> model = seed(lambda: probnn.sample("x", dist.Normal(0.0, 1.0)), rng_seed=1)
    >>> bool(model() == model())
    True
    """

    def __init__(self, fn: Callable | None = None, rng_seed=None, hide_types=()):
        self._initial_key = _as_key(rng_seed)
        self._key = self._initial_key
        if isinstance(hide_types, str) or not all(
            isinstance(kind, str) for kind in hide_types
        ):
            raise ValueError(
                f"seed: hide_types must be a list of site types, got {hide_types!r}"
            )
        self.hide_types = frozenset(hide_types)
        super().__init__(fn)

    def __enter__(self):
        self._key = self._initial_key
        return super().__enter__()

    def __exit__(self, *exc):
        # Drop keys split while tracing so no tracer outlives the call.
        self._key = self._initial_key
        return super().__exit__(*exc)

    def _next_key(self):
        self._key, key = jax.random.split(self._key)
        return key

    def process_message(self, msg: Message) -> None:
        if msg["type"] in self.hide_types:
            return
        if msg["type"] == "prng_key" and msg["value"] is None:
            msg["value"] = self._next_key()
        elif _needs_key(msg):
            msg["kwargs"]["rng_key"] = self._next_key()

    def scan_image(self, length):
        step_key, shared_key = jax.random.split(self._next_key())
        return lambda step: _StepSeed(
            jax.random.fold_in(step_key, step), shared_key, self.hide_types
        )


class _StepSeed(seed):
    """``seed`` inside one scan step: random sites draw from the step's key;
    a param site is one parameter shared by every step, so its initial value
    comes from a key that depends on its name only."""

    def __init__(self, step_key, shared_key, hide_types=()):
        super().__init__(rng_seed=step_key, hide_types=hide_types)
        self._shared_key = shared_key

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "param" and "param" not in self.hide_types:
            if _needs_key(msg):
                salt = zlib.crc32(msg["name"].encode()) & 0x7FFFFFFF
                msg["kwargs"]["rng_key"] = jax.random.fold_in(self._shared_key, salt)
            return
        super().process_message(msg)


def _number_to_array(leaf):
    return jnp.asarray(leaf) if isinstance(leaf, int | float | np.number) else leaf


def _split_static(site: Message):
    """Split a site into array leaves (stacked by scan) and everything else."""
    site = dict(site, kwargs=dict(site["kwargs"], rng_key=None))
    site.pop("stop", None)
    if site["type"] == "param":
        # the static part outlives the trace (JAX keeps it with the scan's
        # output structure): an init function, which may close over values
        # of this trace (a network's initial state), is not kept
        site["args"] = tuple(None if callable(a) else a for a in site["args"])
    if site["type"] == "sample":
        fn, sample_shape = site["fn"], site["kwargs"]["sample_shape"]
        if sample_shape and hasattr(fn, "expand"):
            # Fold sample_shape into the batch so the time dim stacked in front
            # of the value and of the distribution's batch is the same dim.
            fn = fn.expand(tuple(sample_shape) + tuple(fn.batch_shape))
            site["kwargs"]["sample_shape"] = ()
        # Python-number parameters become arrays so that every step's
        # distribution is stacked along time, not only its traced parameters.
        fn = jax.tree.map(_number_to_array, fn)
        value = _number_to_array(site["value"])
        # Give value and distribution batch dims of one rank, so that the time
        # dim stacked in front of both is the same dim.
        event_ndim = len(getattr(fn, "event_shape", ()))
        batch_shape = tuple(getattr(fn, "batch_shape", ()))
        value_ndim = jnp.ndim(value) - event_ndim
        if value_ndim > len(batch_shape) and hasattr(fn, "expand"):
            fn = fn.expand((1,) * (value_ndim - len(batch_shape)) + batch_shape)
        elif 0 <= value_ndim < len(batch_shape):
            shape = jnp.shape(value)
            value = jnp.reshape(value, (1,) * (len(batch_shape) - value_ndim) + shape)
        site["fn"] = fn
        site["value"] = value
    leaves, treedef = jax.tree.flatten(site)
    is_array = [isinstance(leaf, jax.Array | np.ndarray) for leaf in leaves]
    arrays = [leaf for leaf, keep in zip(leaves, is_array) if keep]
    static = [None if keep else leaf for leaf, keep in zip(leaves, is_array)]
    return arrays, (treedef, tuple(is_array), static)


def _join_static(arrays, meta) -> Message:
    treedef, is_array, static = meta
    arrays = iter(arrays)
    leaves = [next(arrays) if keep else leaf for keep, leaf in zip(is_array, static)]
    return jax.tree.unflatten(treedef, leaves)


@jax.tree_util.register_pytree_node_class
class _SiteRecords:
    """Recorded sites as a pytree: arrays are leaves, the rest rides along."""

    def __init__(self, sites: dict[str, Message]):
        self.sites = sites

    def tree_flatten(self):
        names = tuple(self.sites)
        parts = [_split_static(self.sites[name]) for name in names]
        return [arrays for arrays, _ in parts], (names, tuple(m for _, m in parts))

    @classmethod
    def tree_unflatten(cls, aux, children):
        names, metas = aux
        return cls(
            {
                name: _join_static(arrays, meta)
                for name, arrays, meta in zip(names, children, metas)
            }
        )


class trace(Messenger):
    """Record every site, in execution order, as a dict ``name -> site``.

    Site dicts carry ``type``, ``name``, ``fn``, ``args``, ``kwargs``,
    ``value``, ``is_observed``, ``scale``, ``mask``, ``infer``,
    ``cond_indep_stack`` and ``intermediates``.

    >>> import probnn, probnn.distributions as dist
    >>> model = seed(lambda: probnn.sample("x", dist.Normal(0.0, 1.0)), rng_seed=0)
    >>> list(trace(model).get_trace())
    ['x']
    """

    def __init__(self, fn: Callable | None = None):
        self.trace: dict[str, Message] = {}
        super().__init__(fn)

    def __enter__(self):
        super().__enter__()
        self.trace = {}
        return self.trace

    def _record(self, name: str, site: Message) -> None:
        previous = self.trace.get(name)
        if previous is not None and not (
            previous["type"] == site["type"] and site["type"] in ("plate", "param")
        ):
            raise DuplicateSiteError(
                f"two sites named {name!r} in one trace ({previous['type']} and "
                f"{site['type']}): all sites must have unique names but got "
                f"`{name}` duplicated"
            )
        self.trace[name] = site

    def postprocess_message(self, msg: Message) -> None:
        if msg["name"] is None or msg["type"] in ("control_flow", "prng_key"):
            return
        site = dict(msg)
        site["cond_indep_stack"] = list(msg["cond_indep_stack"])
        self._record(msg["name"], site)

    def get_trace(self, *args, **kwargs) -> dict[str, Message]:
        """Run the wrapped function and return its trace."""
        self(*args, **kwargs)
        return self.trace

    def scan_image(self, length):
        return lambda step: _StepTrace()

    def scan_output(self):
        return _SiteRecords(self.trace)

    def scan_finish(self, stacked: _SiteRecords) -> None:
        for name, site in stacked.sites.items():
            if site["type"] == "param":
                # One parameter shared by every step: keep a single copy.
                site["value"] = jax.tree.map(lambda v: v[0], site["value"])
            elif site["type"] == "mutable":
                # state updated inside the body: the last step's is the newest
                site["value"] = jax.tree.map(lambda v: v[-1], site["value"])
            else:
                # stacked over the steps (NumPyro's marker of such a site)
                site["_control_flow_done"] = True
            self._record(name, site)

    def scan_finish_unrolled(self, output: _SiteRecords, prefix: str) -> None:
        for name, site in output.sites.items():
            if site["type"] in ("param", "mutable"):
                self._record(name, site)
            else:
                self._record(prefix + name, dict(site, name=prefix + name))


class _StepTrace(trace):
    """``trace`` inside one scan step. An enumerated site also records its
    log density as computed in the step, where whatever does not change
    from step to step (a transition table indexed by the enumerated
    previous state, its normalisation) is computed once, not once per step
    from the stacked distribution after the scan."""

    def postprocess_message(self, msg: Message) -> None:
        super().postprocess_message(msg)
        name = msg["name"]
        site = self.trace.get(name)
        if (
            site is None
            or site["type"] != "sample"
            or site["infer"].get("_enumerate_dim") is None
        ):
            return
        from probnn.infer.enum import step_logs

        site["_step_logs"] = step_logs(site)


class _ValueSetter(Messenger):
    """Shared machinery of handlers that supply site values from data.

    Subclasses implement ``_lookup(msg)`` (the value for the site, or None).
    Inside a scan body the data are series over time: their step-local image
    picks the current step's value.
    """

    site_types: tuple[str, ...] = ("sample",)

    def __init__(self, fn=None):
        # (step, length) of each enclosing scan, outermost first.
        self._steps: tuple = ()
        super().__init__(fn)

    def _lookup(self, msg: Message):
        raise NotImplementedError

    def _value(self, msg: Message):
        value = self._lookup(msg)
        if value is None or not self._steps or msg["type"] in ("param", "mutable"):
            # Params and state are shared by all scan steps: not series.
            return value
        if msg["type"] == "sample":
            step_ndim = len(msg["fn"].shape(msg["kwargs"]["sample_shape"]))
        elif msg["value"] is not None:
            step_ndim = jnp.ndim(msg["value"])
        else:  # a plate: one step's subsample indices are a vector
            step_ndim = 1
        for level, (step, length) in enumerate(self._steps):
            inner_levels = len(self._steps) - level - 1
            value = self._value_at_step(
                msg, value, step, length, step_ndim + inner_levels, inner_levels == 0
            )
        return value

    def _value_at_step(self, msg, value, step, length, expected, innermost):
        value = jnp.asarray(value)  # numpy series cannot be indexed by a tracer
        ndim = jnp.ndim(value)
        if ndim == expected:
            return value
        if ndim == expected + 1:
            steps = jnp.shape(value)[0]
            if steps == length:
                return value[step]
            # a shorter series fills the remaining steps by drawing
            if steps < length and innermost and msg["type"] == "sample":
                key = msg["kwargs"].get("rng_key")
                if key is None:
                    key = self._outer_key(msg, steps, length)
                fresh = draw({**msg, "kwargs": {**msg["kwargs"], "rng_key": key}})
                latest = value[jnp.minimum(step, steps - 1)]
                return jnp.where(step < steps, latest, fresh)
        raise ValueError(
            f"{type(self).__name__}: value for site {msg['name']!r} inside scan has "
            f"shape {jnp.shape(value)}; expected a series of length {length} "
            f"stacked over {expected}-dim values"
        )

    def _outer_key(self, msg, steps, length):
        """A key from a ``seed`` handler outside this one (handlers inside
        it have already acted on ``msg``)."""
        from probnn.primitives import prng_key

        try:
            return prng_key()
        except ValueError:
            raise ValueError(
                f"{type(self).__name__}: site {msg['name']!r} has {steps} of "
                f"{length} scan steps; drawing the rest needs a key: run the model "
                "under seed"
            ) from None

    def scan_image(self, length):
        def image(step):
            handler = copy.copy(self)
            handler._steps = self._steps + ((step, length),)
            return handler

        return image


def _data_or_fn(name: str, data, fn_value):
    if (data is None) == (fn_value is None):
        raise ValueError(f"{name}: pass exactly one of data= or {name}_fn=")


class substitute(_ValueSetter):
    """Replace the values of ``sample``, ``param``, ``mutable``,
    ``deterministic`` and ``plate`` sites by ``data[name]`` or
    ``substitute_fn(site)`` (None keeps the site's own value). Substituted
    sample sites stay latent.

    A ``mutable`` site receives a copy of the given value's containers
    (dicts, lists: the leaves are shared), since models update their state
    in place: the dicts in ``data`` are never written to, and the updated
    state is the site's value in the trace.

    >>> import probnn
    >>> float(substitute(lambda: probnn.param("w", 1.0), data={"w": 2.0})())
    2.0
    """

    site_types = ("sample", "param", "mutable", "deterministic", "plate")

    def __init__(self, fn=None, data=None, substitute_fn=None):
        _data_or_fn("substitute", data, substitute_fn)
        self.data = data
        self.substitute_fn = substitute_fn
        super().__init__(fn)

    def _lookup(self, msg):
        if self.data is not None:
            return self.data.get(msg["name"])
        return self.substitute_fn(msg)

    def process_message(self, msg: Message) -> None:
        if msg["type"] not in self.site_types:
            return
        value = self._value(msg)
        if value is None:
            return
        if msg["type"] == "mutable":
            value = _fresh_containers(value)
        msg["value"] = value


def _fresh_containers(tree):
    """``tree`` rebuilt with new containers around the same leaves."""
    return jax.tree.map(lambda leaf: leaf, tree)


class condition(_ValueSetter):
    """Observe ``sample`` sites at ``data[name]`` or ``condition_fn(site)``.

    Inside a scan, a series shorter than the scan observes the first steps
    and draws the rest (forecasting), as NumPyro's scan does.

    >>> import probnn, probnn.distributions as dist
    >>> model = condition(lambda: probnn.sample("x", dist.Normal(0.0, 1.0)), {"x": 1.0})
    >>> trace(model).get_trace()["x"]["is_observed"]
    True
    """

    def __init__(self, fn=None, data=None, condition_fn=None):
        _data_or_fn("condition", data, condition_fn)
        self.data = data
        self.condition_fn = condition_fn
        super().__init__(fn)

    def _lookup(self, msg):
        if self.data is not None:
            return self.data.get(msg["name"])
        return self.condition_fn(msg)

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample":
            return
        value = self._value(msg)
        if value is not None:
            msg["value"] = value
            msg["is_observed"] = True


class replay(_ValueSetter):
    """Reuse the values that unobserved sample sites (and plates) took in
    ``trace``; observed sites keep their observations.

    >>> import probnn, probnn.distributions as dist
    >>> model = lambda: probnn.sample("x", dist.Normal(0.0, 1.0))
    >>> old = trace(seed(model, rng_seed=0)).get_trace()
    >>> bool(replay(seed(model, rng_seed=1), trace=old)() == old["x"]["value"])
    True
    """

    def __init__(self, fn=None, trace=None):
        if trace is None:
            raise ValueError("replay: trace= is required")
        self.trace = trace
        super().__init__(fn)

    def _lookup(self, msg):
        site = self.trace.get(msg["name"])
        if site is None:
            return None
        if site["type"] != msg["type"] or site.get("is_observed"):
            raise ValueError(
                f"replay: site {msg['name']!r} is an unobserved {msg['type']} in the "
                f"model but a{'n observed' if site.get('is_observed') else ''} "
                f"{site['type']} in the replayed trace"
            )
        return site["value"]

    def process_message(self, msg: Message) -> None:
        if msg["type"] not in ("sample", "plate") or msg["is_observed"]:
            return
        value = self._value(msg)
        if value is not None:
            msg["value"] = value
            # a plate's infer says how its indices were drawn (e.g. by blocks)
            msg["infer"] = dict(self.trace[msg["name"]].get("infer", {}))


class do(_ValueSetter):
    """Intervene: downstream code sees ``data[name]`` in place of the site's
    value, while the site itself is still drawn from its distribution (and
    recorded under its own name) without influencing anything.

    The intervened value is the site ``name + "__CF"``, visible only to
    handlers inside ``do``.

    >>> import probnn, probnn.distributions as dist
    >>> def model():
    ...     x = probnn.sample("x", dist.Normal(0.0, 1.0))
    ...     return probnn.deterministic("y", 2 * x)
    >>> tr = trace(seed(do(model, data={"x": 3.0}), rng_seed=0)).get_trace()
    >>> float(tr["y"]["value"]), bool(tr["x"]["value"] != 3.0)
    (6.0, True)
    """

    def __init__(self, fn=None, data=None):
        if data is None:
            raise ValueError("do: data= is required")
        self.data = data
        super().__init__(fn)

    def _lookup(self, msg):
        return self.data.get(msg["name"])

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample" or msg.get("_intervened_by") is self:
            return
        value = self._value(msg)
        if value is None:
            return
        original = dict(msg, _intervened_by=self)
        original["cond_indep_stack"] = list(msg["cond_indep_stack"])
        original["kwargs"] = dict(msg["kwargs"])
        original["infer"] = dict(msg["infer"])
        _apply_outside(self, original)
        msg["name"] = f"{msg['name']}__CF"
        msg["value"] = value
        msg["is_observed"] = True
        msg["stop"] = True


def _block_indices(name, blocks: int, size: int, subsample_size: int, rng_key=None):
    """``subsample_size`` indices, ``subsample_size // blocks`` from each of
    ``blocks`` equal contiguous blocks of ``range(size)``, block by block."""
    if rng_key is None:
        missing_key("plate", name)
    per_block, taken = size // blocks, subsample_size // blocks
    keys = jax.random.split(rng_key, blocks)
    local = jax.vmap(lambda key: jax.random.permutation(key, per_block)[:taken])(keys)
    return (local + per_block * jnp.arange(blocks)[:, None]).reshape(-1)


class shard_subsample(Messenger):
    """Draw a subsampled plate's indices so that each device reads its own rows.

    For data sharded along a plate's dim over ``k`` devices (``k`` equal
    contiguous blocks of rows), the plate ``name`` with ``shards={name: k}``
    draws ``subsample_size // k`` indices from each block, without
    replacement, and :func:`probnn.subsample` then gathers every block's rows
    within the block: under ``jax.jit`` each device reads only its own shard,
    with no all-gather of the data. Every row is still in the mini-batch with
    probability ``subsample_size / size``, so the scaled log density stays
    unbiased. Indexing the data yourself (``x[idx]``) gives the same rows but
    is a global gather.

    Apply it to the guide too when the guide draws the plate's indices (an
    autoguide over local latents does): the model replays the guide's
    indices, and how they were drawn travels with them.

    Args:
        fn: model or guide.
        shards: plate name -> number of blocks (the size of the mesh axis the
            plate's dim is sharded over). The plate's ``size`` and
            ``subsample_size`` must both be multiples of it.

    >>> import jax, probnn
    >>> def model(x):
    ...     with probnn.plate("N", 8, subsample_size=4):
    ...         return probnn.subsample(x, event_dim=0)
    >>> sharded = shard_subsample(model, shards={"N": 2})
    >>> rows = seed(sharded, rng_seed=0)(jax.numpy.arange(8))
    >>> [int(r) // 4 for r in rows]  # two rows from each half
    [0, 0, 1, 1]
    """

    def __init__(self, fn=None, shards: dict | None = None):
        if not isinstance(shards, dict) or not shards:
            raise ValueError(
                "shard_subsample: shards must be a non-empty dict from plate name "
                f"to number of blocks, got {shards!r}"
            )
        for name, blocks in shards.items():
            integer = isinstance(blocks, int | np.integer) and not isinstance(
                blocks, bool
            )
            if not integer or blocks < 1:
                raise ValueError(
                    f"shard_subsample: plate {name!r}: number of blocks must be "
                    f"a positive int, got {blocks!r}"
                )
        self.shards = {name: int(blocks) for name, blocks in shards.items()}
        super().__init__(fn)

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "plate" or msg["name"] not in self.shards:
            return
        if msg["value"] is not None:  # no subsampling, or indices given
            return
        blocks = self.shards[msg["name"]]
        size, subsample_size = msg["args"]
        if size % blocks or subsample_size % blocks:
            raise ValueError(
                f"shard_subsample: plate {msg['name']!r} of size {size} with "
                f"subsample_size {subsample_size}: both must be multiples of "
                f"its {blocks} blocks"
            )
        msg["fn"] = functools.partial(_block_indices, msg["name"], blocks)
        msg["infer"] = {**msg["infer"], "subsample_blocks": blocks}


def _apply_outside(handler: Messenger, msg: Message) -> None:
    """Send ``msg`` through the handlers enclosing ``handler`` only."""
    position = _STACK.index(handler)
    inner = _STACK[position:]
    del _STACK[position:]
    try:
        apply_stack(msg)
    finally:
        _STACK.extend(inner)


class block(Messenger):
    """Hide sites from the handlers outside this one.

    Exactly one of ``hide_fn``, ``hide``, ``expose`` and ``expose_types``
    chooses what is hidden; with none of them, every site is hidden.

    >>> import probnn, probnn.distributions as dist
    >>> model = seed(lambda: probnn.sample("x", dist.Normal(0.0, 1.0)), rng_seed=0)
    >>> trace(block(model, hide=["x"])).get_trace()
    {}
    """

    def __init__(
        self, fn=None, hide_fn=None, hide=None, expose=None, expose_types=None
    ):
        chosen = [a is not None for a in (hide_fn, hide, expose, expose_types)]
        if sum(chosen) > 1:
            raise ValueError(
                "block: pass at most one of hide_fn=, hide=, expose=, expose_types="
            )
        if hide_fn is not None:
            self.hide_fn = hide_fn
        elif hide is not None:
            hidden = set(hide)
            self.hide_fn = lambda msg: msg["name"] in hidden
        elif expose is not None:
            exposed = set(expose)
            self.hide_fn = lambda msg: msg["name"] not in exposed
        elif expose_types is not None:
            types = set(expose_types)
            self.hide_fn = lambda msg: msg["type"] not in types
        else:
            self.hide_fn = lambda msg: True
        super().__init__(fn)

    def process_message(self, msg: Message) -> None:
        # A scan is never hidden as a whole: its body sites meet this handler
        # one by one inside the loop. Key requests always pass, so that a
        # hidden site can still draw from a seed outside.
        kind = msg["type"]
        if kind in ("control_flow", "prng_key") or not self.hide_fn(msg):
            return
        msg["stop"] = True
        if _needs_key(msg):
            # the seed handler outside will not see this site: ask it (and
            # only the handlers outside this one) for a key, as a prng_key
            # site would; without one the site's own error names it
            request = make_message("prng_key", None, lambda: None)
            _apply_outside(self, request)
            if request["value"] is not None:
                msg["kwargs"]["rng_key"] = request["value"]


class scale(Messenger):
    """Multiply the log density of every sample site by ``scale`` (> 0).

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.infer.util import log_density
    >>> model = lambda: probnn.sample("x", dist.Normal(0.0, 1.0), obs=0.0)
    >>> float(log_density(scale(model, scale=2.0), (), {}, {})[0])  # 2 * -0.919
    -1.837...
    """

    def __init__(self, fn=None, scale=1.0):
        if not isinstance(scale, jax.core.Tracer) and np.any(np.asarray(scale) <= 0):
            raise ValueError(f"scale: scale must be positive, got {scale!r}")
        self.scale = scale
        super().__init__(fn)

    def process_message(self, msg: Message) -> None:
        if msg["type"] not in ("sample", "plate"):
            return
        msg["scale"] = self.scale if msg["scale"] is None else self.scale * msg["scale"]


class mask(Messenger):
    """Zero the log density of sample sites where the boolean ``mask`` is False.

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.infer.util import log_density
    >>> model = lambda: probnn.sample("x", dist.Normal(0.0, 1.0), obs=0.0)
    >>> float(log_density(mask(model, mask=False), (), {}, {})[0])
    0.0
    """

    def __init__(self, fn=None, mask=True):
        if jnp.result_type(mask) != jnp.bool_:
            raise TypeError(f"mask: mask must be boolean, got {jnp.result_type(mask)}")
        self.mask = mask
        super().__init__(fn)

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "mask":  # probnn.get_mask() asks what applies here
            msg["value"] = (
                self.mask if msg["value"] is None else msg["value"] & self.mask
            )
            return
        if msg["type"] != "sample":
            return
        msg["fn"] = msg["fn"].mask(self.mask)
        msg["mask"] = self.mask if msg["mask"] is None else msg["mask"] & self.mask


class uncondition(Messenger):
    """Draw observed sample sites from their distributions instead, as if
    they had no ``obs``; the observation is kept in the site's ``infer``
    dict (``infer["obs"]``, with ``infer["was_observed"] = True``).

    >>> import probnn, probnn.distributions as dist
    >>> model = lambda: probnn.sample("y", dist.Normal(0.0, 1.0), obs=5.0)
    >>> site = trace(seed(uncondition(model), rng_seed=0)).get_trace()["y"]
    >>> site["is_observed"], float(site["infer"]["obs"]), float(site["value"]) != 5.0
    (False, 5.0, True)
    """

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample" or not msg["is_observed"]:
            return
        # a new infer dict: the one the model passed is left as it was
        msg["infer"] = {**msg["infer"], "was_observed": True, "obs": msg["value"]}
        msg["is_observed"] = False
        msg["value"] = None
        if msg["kwargs"].get("rng_key") is None:
            # a seed inside this handler passed the site by as observed: ask
            # every handler for a key, as a prng_key site would
            request = make_message("prng_key", None, lambda: None)
            key = apply_stack(request)["value"]
            if key is not None:
                msg["kwargs"]["rng_key"] = key


class scope(Messenger):
    """Prefix site names: ``name`` becomes ``prefix + divider + name``.

    >>> import probnn
    >>> list(trace(scope(lambda: probnn.param("w", 1.0), prefix="layer")).get_trace())
    ['layer/w']
    """

    def __init__(self, fn=None, prefix=None, divider="/", hide_types=()):
        if not isinstance(prefix, str):
            raise ValueError(f"scope: prefix must be a string, got {prefix!r}")
        self.prefix = prefix
        self.divider = divider
        self.hide_types = tuple(hide_types)
        super().__init__(fn)

    def process_message(self, msg: Message) -> None:
        if msg["name"] is not None and msg["type"] not in self.hide_types:
            msg["name"] = f"{self.prefix}{self.divider}{msg['name']}"


class _NamedConfig(Messenger):
    """A handler configured per site name by a dict (or by a function of the
    site): a dict key that matches no site of the right type is an error
    when the handler exits."""

    _kind = ""  # the site type the keys name, for the error message

    def __init__(self, fn, config, argument: str):
        self._config = config
        self._argument = argument
        self._matched: set[str] = set()
        self._seen: set[str] = set()
        super().__init__(fn)

    def __enter__(self):
        self._matched, self._seen = set(), set()
        return super().__enter__()

    def __exit__(self, exc_type, *exc):
        result = super().__exit__(exc_type, *exc)
        if exc_type is None and isinstance(self._config, dict):
            unmatched = sorted(set(self._config) - self._matched)
            if unmatched:
                raise ValueError(
                    f"{type(self).__name__}: {self._argument} keys {unmatched} match "
                    f"no {self._kind} site; {self._kind} sites seen: "
                    f"{sorted(self._seen)}"
                )
        return result

    def _lookup(self, msg: Message):
        """The configured entry for this site (None if none) and record it."""
        self._seen.add(msg["name"])
        if isinstance(self._config, dict):
            entry = self._config.get(msg["name"])
        else:
            entry = self._config(msg)
        if entry is not None:
            self._matched.add(msg["name"])
        return entry


class lift(_NamedConfig):
    """Turn ``param`` sites into ``sample`` sites drawn from ``prior``.

    ``prior`` is a distribution (for every param) or a dict ``name ->
    distribution``. A dict key that matches no param site is an error.

    >>> import probnn, probnn.distributions as dist
    >>> model = lift(lambda: probnn.param("w", 1.0), prior={"w": dist.Normal(0.0, 1.0)})
    >>> trace(seed(model, rng_seed=0)).get_trace()["w"]["type"]
    'sample'
    """

    _kind = "param"

    def __init__(self, fn=None, prior=None):
        if prior is None:
            raise ValueError("lift: prior= is required")
        self.prior = prior
        super().__init__(
            fn, prior if isinstance(prior, dict) else _Always(prior), "prior"
        )

    def __enter__(self):
        self._drawn = {}  # name -> message of the first draw, this run
        return super().__enter__()

    def __exit__(self, *exc):
        self._drawn = {}
        return super().__exit__(*exc)

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "param":
            return
        prior = self._lookup(msg)
        if prior is None:
            return
        msg["type"] = "sample"
        msg["fn"] = prior
        msg["args"] = ()
        msg["kwargs"] = {"rng_key": msg["kwargs"].get("rng_key"), "sample_shape": ()}
        first = self._drawn.get(msg["name"])
        if first is None:
            self._drawn[msg["name"]] = msg
            return
        # a param read again in one run (a param's repeated reads give one
        # value): the later reads take the first draw's value and stay
        # inside, so the trace has one sample site of that name
        msg["value"] = first["value"]
        msg["is_observed"] = True
        msg["stop"] = True


class _Always:
    """A config function giving every site the same entry."""

    def __init__(self, entry):
        self.entry = entry

    def __call__(self, msg):
        return self.entry


class reparam(_NamedConfig):
    """Reparametrize sample sites, e.g. non-centre a hierarchical model.

    ``config`` maps site names to reparametrizers (see
    :mod:`probnn.infer.reparam`), or is a function of the site message
    returning one or None. A reparametrizer draws new auxiliary sites (such
    as ``{name}_decentered``) and returns the site's value, which the site
    then records as a deterministic site; inference sees the auxiliary
    sites as the latent variables. A dict key that matches no sample site is
    an error.

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.infer.reparam import LocScaleReparam
    >>> def model():
    ...     return probnn.sample("x", dist.Normal(1.0, 3.0))
    >>> noncentred = reparam(model, config={"x": LocScaleReparam(centered=0)})
    >>> tr = trace(seed(noncentred, rng_seed=0)).get_trace()
    >>> [(name, site["type"]) for name, site in tr.items()]
    [('x_decentered', 'sample'), ('x', 'deterministic')]
    >>> float(tr["x"]["value"]) == 1.0 + 3.0 * float(tr["x_decentered"]["value"])
    True
    """

    _kind = "sample"

    def __init__(self, fn=None, config=None):
        if config is None:
            raise ValueError("reparam: config= is required")
        if isinstance(config, dict):
            for name, entry in config.items():
                if not callable(entry):
                    raise TypeError(
                        f"reparam: config[{name!r}] must be a reparametrizer such "
                        f"as LocScaleReparam(), got {type(entry).__name__}"
                    )
        elif not callable(config):
            raise TypeError(
                "reparam: config must be a dict site name -> reparametrizer or a "
                f"function of the site, got {type(config).__name__}"
            )
        super().__init__(fn, config, "config")

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample":
            return
        reparametrizer = self._lookup(msg)
        if reparametrizer is None:
            return
        fn = msg["fn"]
        sample_shape = msg["kwargs"].get("sample_shape", ())
        if sample_shape:
            fn = fn.expand_by(sample_shape)
        new_fn, value = reparametrizer(msg["name"], fn, msg["value"])
        if value is None:  # a different distribution for the same site
            msg["fn"] = new_fn
            msg["kwargs"] = {**msg["kwargs"], "sample_shape": ()}
            return
        if new_fn is not None:
            raise ValueError(
                f"reparam: the reparametrizer of sample site {msg['name']!r} "
                "returned both a distribution and a value; it must return "
                "(new_fn, None) or (None, value)"
            )
        # the site becomes a function of the reparametrizer's new sites
        msg.update(
            type="deterministic",
            fn=None,
            args=(),
            kwargs={},
            value=value,
            is_observed=False,
        )


class infer_config(Messenger):
    """Update the ``infer`` dict of sample sites with ``config_fn(site)``.

    >>> import probnn, probnn.distributions as dist
    >>> model = lambda: probnn.sample("x", dist.Bernoulli(0.5))
    >>> configured = infer_config(model, lambda site: {"enumerate": "parallel"})
    >>> trace(seed(configured, rng_seed=0)).get_trace()["x"]["infer"]
    {'enumerate': 'parallel'}
    """

    def __init__(self, fn=None, config_fn=None):
        if config_fn is None:
            raise ValueError("infer_config: config_fn= is required")
        self.config_fn = config_fn
        super().__init__(fn)

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "sample":
            msg["infer"].update(self.config_fn(msg))
