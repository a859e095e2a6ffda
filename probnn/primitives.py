"""The modelling primitives: sample, param, plate, plate_stack, deterministic,
factor, subsample, prng_key, mutable and module.

Each primitive builds a site message and sends it through the handler stack
(:mod:`probnn.runtime`); with no handler active it behaves like plain JAX code.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp

from probnn.distributions import constraints
from probnn.distributions.distribution import Unit
from probnn.runtime import (
    CondIndepStackFrame,
    Message,
    Messenger,
    apply_stack,
    draw,
    make_message,
    missing_key,
    stack_is_empty,
)

__all__ = [
    "deterministic",
    "factor",
    "get_mask",
    "module",
    "mutable",
    "param",
    "plate",
    "plate_stack",
    "prng_key",
    "sample",
    "subsample",
]


def _check_name(name, primitive: str) -> None:
    if not isinstance(name, str):
        raise TypeError(
            f"{primitive}() site names must be strings, got {name!r} "
            f"of type {type(name).__name__}"
        )


def sample(
    name: str,
    fn,
    obs=None,
    rng_key=None,
    sample_shape: tuple[int, ...] = (),
    infer: dict | None = None,
    obs_mask=None,
):
    """Draw from ``fn`` (or observe ``obs``) at a named random site.

    Args:
        name: name of the site, unique within one run of the model.
        fn: a distribution (anything with ``sample(key, sample_shape)`` and
            ``log_prob``).
        obs: observed value; the site then returns ``obs``.
        rng_key: key for this draw; only used when no ``seed`` handler gives one.
        sample_shape: extra leading dims of independent draws.
        infer: hints for inference algorithms (e.g. ``{"enumerate": "parallel"}``).
        obs_mask: boolean array, True where ``obs`` is observed. The site is
            split into ``name + "_observed"`` and ``name + "_unobserved"`` and
            ``name`` records the merged value as a deterministic site.

    Returns:
        The sampled, observed or substituted value.

    >>> import probnn
    >>> import probnn.distributions as dist
    >>> def model():
    ...     return probnn.sample("x", dist.Normal(0.0, 1.0), sample_shape=(3,))
    >>> probnn.handlers.seed(model, rng_seed=0)().shape
    (3,)
    """
    _check_name(name, "sample")
    if obs_mask is not None:
        return _masked_observe(name, fn, obs, obs_mask, rng_key, sample_shape, infer)
    msg = make_message(
        "sample",
        name,
        fn,
        kwargs={"rng_key": rng_key, "sample_shape": tuple(sample_shape)},
        value=obs,
        is_observed=obs is not None,
        infer=dict(infer) if infer else {},
    )
    if stack_is_empty():
        return obs if obs is not None else draw(msg)
    return apply_stack(msg)["value"]


def _masked_observe(name, fn, obs, obs_mask, rng_key, sample_shape, infer):
    if obs is None:
        raise ValueError(f"sample site {name!r}: obs_mask= needs obs= as well")
    obs_mask = jnp.asarray(obs_mask)
    if obs_mask.dtype != jnp.bool_:
        raise TypeError(
            f"sample site {name!r}: obs_mask must be boolean, got {obs_mask.dtype}"
        )
    kwargs = {"rng_key": rng_key, "sample_shape": sample_shape, "infer": infer}
    observed = sample(f"{name}_observed", fn.mask(obs_mask), obs=obs, **kwargs)
    unobserved = sample(f"{name}_unobserved", fn.mask(~obs_mask), **kwargs)
    event_dim = len(getattr(fn, "event_shape", ()))
    where = jnp.reshape(obs_mask, jnp.shape(obs_mask) + (1,) * event_dim)
    return deterministic(name, jnp.where(where, observed, unobserved))


def _init_param(name, init_value, rng_key=None, **kwargs):
    if callable(init_value):
        if rng_key is None:
            missing_key("param", name)
        return init_value(rng_key)
    return init_value


def param(name: str, init_value=None, **kwargs):
    """Declare an optimisable parameter.

    Args:
        name: name of the site.
        init_value: initial value, or a callable taking a random key and
            returning it (called with a key from the enclosing ``seed``).
        constraint: the set the parameter lives in (default ``real``);
            optimisers work in unconstrained space.
        event_dim: number of rightmost dims forming one event.

    Returns:
        The parameter's value: ``init_value`` unless a handler such as
        ``substitute`` supplies another.

    >>> import probnn
    >>> float(probnn.param("w", 0.5))
    0.5
    """
    _check_name(name, "param")
    kwargs.setdefault("constraint", constraints.real)
    kwargs.setdefault("event_dim", None)
    kwargs["rng_key"] = None
    init = functools.partial(_init_param, name)
    msg = make_message("param", name, init, (init_value,), kwargs)
    if stack_is_empty():
        return init(init_value)
    return apply_stack(msg)["value"]


def deterministic(name: str, value):
    """Record ``value`` in the trace under ``name`` and return it.

    >>> import probnn
    >>> float(probnn.deterministic("y", 2.0))
    2.0
    """
    _check_name(name, "deterministic")
    if stack_is_empty():
        return value
    msg = make_message("deterministic", name, None, value=value)
    return apply_stack(msg)["value"]


def factor(name: str, log_factor) -> None:
    """Add ``log_factor`` (possibly batched) to the model's log density.

    >>> import probnn
    >>> from probnn.infer.util import log_density
    >>> float(log_density(lambda: probnn.factor("f", -1.5), (), {}, {})[0])
    -1.5
    """
    unit = Unit(log_factor)
    sample(name, unit, obs=unit.sample(None), infer={"is_auxiliary": True})


def mutable(name: str, init_value=None):
    """Declare non-parameter state (e.g. BatchNorm statistics) that inference
    carries from one step to the next without differentiating it.

    The site's value is ``init_value`` the first time and afterwards whatever
    the inference algorithm stored (``SVIState.mutable_state``). When the value
    is a dict, the model updates it in place and the new contents become the
    next step's state, as in NumPyro.

    Args:
        name: name of the site.
        init_value: the initial state (any pytree; usually a dict).

    Returns:
        The current state.

    >>> import probnn
    >>> def model():
    ...     counter = probnn.mutable("counter", {"n": 0})
    ...     counter["n"] = counter["n"] + 1
    >>> tr = probnn.handlers.trace(model).get_trace()
    >>> tr["counter"]["value"]
    {'n': 1}
    """
    _check_name(name, "mutable")
    if stack_is_empty():
        return init_value
    msg = make_message("mutable", name, _identity, (init_value,))
    return apply_stack(msg)["value"]


def _identity(value):
    return value


def get_mask():
    """The mask that enclosing ``handlers.mask`` handlers apply here: None
    outside any (or with no handler at all), else the boolean (or array of
    booleans) they combine to. A model can skip work whose log density
    would be masked out anyway:

    >>> import probnn
    >>> from probnn.handlers import mask
    >>> probnn.get_mask() is None
    True
    >>> with mask(mask=False):
    ...     probnn.get_mask()
    False
    """
    if stack_is_empty():
        return None
    msg = make_message("mask", None, lambda: None)
    return apply_stack(msg)["value"]


def prng_key():
    """A fresh random key from the enclosing ``seed`` handler.

    >>> import probnn
    >>> key = probnn.handlers.seed(probnn.prng_key, rng_seed=0)()
    >>> key.shape
    (2,)
    """
    if stack_is_empty():
        missing_key("prng_key", None)
    msg = make_message(
        "prng_key", None, functools.partial(missing_key, "prng_key", None)
    )
    return apply_stack(msg)["value"]


def subsample(data, event_dim: int):
    """Index ``data`` along the dims of the enclosing subsampled plates.

    Args:
        data: array whose batch dims line up with the enclosing plates' dims
            once its ``event_dim`` rightmost dims are set aside.
        event_dim: number of rightmost dims of ``data`` that are not batch dims.

    >>> import probnn
    >>> import jax.numpy as jnp
    >>> def model(x):
    ...     with probnn.plate("N", 10, subsample_size=3):
    ...         return probnn.subsample(x, event_dim=0)
    >>> probnn.handlers.seed(model, rng_seed=0)(jnp.arange(10.0)).shape
    (3,)
    """
    if not isinstance(event_dim, int) or event_dim < 0:
        raise ValueError(f"subsample: event_dim must be an int >= 0, got {event_dim!r}")
    if stack_is_empty():
        return data
    msg = make_message(
        "subsample", None, None, value=data, kwargs={"event_dim": event_dim}
    )
    return apply_stack(msg)["value"]


def _subsample_indices(name, size, subsample_size, rng_key=None):
    if subsample_size == size:
        return jnp.arange(size)
    if rng_key is None:
        missing_key("plate", name)
    return jax.random.permutation(rng_key, size)[:subsample_size]


class plate(Messenger):
    """Mark conditionally independent draws along a batch dim.

    Every ``sample`` inside is broadcast to the plate's size along ``dim``.
    With ``subsample_size`` the plate draws a random subset of indices
    (returned by ``with plate(...) as idx``) and scales log densities by
    ``size / subsample_size``.

    Args:
        name: name of the plate.
        size: number of independent members.
        subsample_size: mini-batch size (default: ``size``, no subsampling).
        dim: negative batch dim to use; by default the rightmost dim not
            claimed by an enclosing plate.

    >>> import probnn
    >>> import probnn.distributions as dist
    >>> def model():
    ...     with probnn.plate("N", 4):
    ...         return probnn.sample("x", dist.Normal(0.0, 1.0))
    >>> probnn.handlers.seed(model, rng_seed=0)().shape
    (4,)
    """

    def __init__(
        self,
        name: str,
        size: int,
        subsample_size: int | None = None,
        dim: int | None = None,
    ):
        _check_name(name, "plate")
        if not isinstance(size, int) or size < 1:
            raise ValueError(
                f"plate {name!r}: size must be a positive int, got {size!r}"
            )
        if subsample_size is None:
            subsample_size = size
        if not isinstance(subsample_size, int) or subsample_size < 1:
            raise ValueError(
                f"plate {name!r}: subsample_size must be a positive int, "
                f"got {subsample_size!r}"
            )
        if subsample_size > size:
            raise ValueError(
                f"plate {name!r}: subsample_size={subsample_size} exceeds size={size}"
            )
        if dim is not None and (not isinstance(dim, int) or dim >= 0):
            raise ValueError(f"plate {name!r}: dim must be a negative int, got {dim!r}")
        self.name = name
        self.size = size
        self.subsample_size = subsample_size
        self._requested_dim = dim
        self.dim = dim
        self._indices = None
        self._blocks = None
        self._frame_name = name
        super().__init__()

    def __enter__(self):
        value = None if self.subsample_size < self.size else jnp.arange(self.size)
        msg = make_message(
            "plate",
            self.name,
            functools.partial(_subsample_indices, self.name),
            (self.size, self.subsample_size),
            {"rng_key": None},
            value=value,
        )
        apply_stack(msg)
        self.dim = self._allocate_dim(msg["cond_indep_stack"])
        self._indices = msg["value"]
        # a handler (replay, substitute) may hand the plate indices of
        # another mini-batch size: the plate follows them
        self.subsample_size = jnp.shape(self._indices)[0]
        # drawn block by block (handlers.shard_subsample): rows are gathered
        # within each block
        self._blocks = msg["infer"].get("subsample_blocks")
        # Handlers such as scope may have renamed the plate on its way up.
        self._frame_name = msg["name"]
        super().__enter__()
        return self._indices

    def __exit__(self, *exc):
        # The indices may be traced; keep none beyond the block.
        self._indices = None
        return super().__exit__(*exc)

    def _allocate_dim(self, enclosing: list[CondIndepStackFrame]) -> int:
        taken = {frame.dim: frame.name for frame in enclosing}
        if self._requested_dim is not None:
            if self._requested_dim in taken:
                raise ValueError(
                    f"plate {self.name!r} asks for dim {self._requested_dim}, "
                    f"already used by enclosing plate {taken[self._requested_dim]!r}"
                )
            return self._requested_dim
        dim = -1
        while dim in taken:
            dim -= 1
        return dim

    @property
    def frame(self) -> CondIndepStackFrame:
        return CondIndepStackFrame(
            self._frame_name, self.dim, self.size, self.subsample_size
        )

    def process_message(self, msg: Message) -> None:
        kind = msg["type"]
        if kind == "subsample":
            self._subsample(msg)
            return
        if kind == "control_flow":
            # a scan records the plates it runs inside (enumerated scans
            # keep them as batch dims of the time recursion)
            msg["cond_indep_stack"].append(self.frame)
            return
        if kind not in ("sample", "param", "deterministic", "plate"):
            return
        if self.name in (msg.get("infer") or {}).get("block_plates", ()):
            # the site asked to stand outside this plate (NumPyro's
            # infer={"block_plates": names}): no frame, no broadcast, no scale
            return
        for frame in msg["cond_indep_stack"]:
            if frame.dim == self.dim and kind != "plate":
                raise ValueError(
                    f"plates {frame.name!r} and {self.name!r} both claim dim "
                    f"{self.dim} at site {msg['name']!r}"
                )
        msg["cond_indep_stack"].append(self.frame)
        if kind == "sample":
            self._broadcast(msg)
        if kind == "sample" and self.subsample_size < self.size:
            factor = self.size / self.subsample_size
            msg["scale"] = factor if msg["scale"] is None else msg["scale"] * factor

    def postprocess_message(self, msg: Message) -> None:
        event_dim = msg["kwargs"].get("event_dim") if msg["type"] == "param" else None
        if event_dim is None or self.subsample_size == self.size:
            return
        if self.name in (msg.get("infer") or {}).get("block_plates", ()):
            return
        # a param declared inside a subsampled plate holds every member; the
        # site's value is the current mini-batch's rows
        value = msg["value"]
        axis = self.dim - event_dim
        if jnp.ndim(value) < -axis or jnp.shape(value)[axis] == 1:
            return
        if jnp.shape(value)[axis] != self.size:
            raise ValueError(
                f"param site {msg['name']!r} with event_dim={event_dim} inside "
                f"plate {self.name!r}: shape {jnp.shape(value)} has size "
                f"{jnp.shape(value)[axis]} at dim {axis}, expected the plate's "
                f"full size {self.size}"
            )
        msg["value"] = jnp.take(value, self._indices, axis=axis)

    def _broadcast(self, msg: Message) -> None:
        fn = msg["fn"]
        sample_shape = msg["kwargs"].get("sample_shape", ())
        batch_shape = tuple(sample_shape) + tuple(fn.batch_shape)
        needed = -self.dim
        if len(batch_shape) < needed:
            batch_shape = (1,) * (needed - len(batch_shape)) + batch_shape
        current = batch_shape[self.dim]
        if current not in (1, self.subsample_size):
            raise ValueError(
                f"sample site {msg['name']!r}: batch shape {batch_shape} has size "
                f"{current} at dim {self.dim}, which cannot broadcast with plate "
                f"{self.name!r} of size {self.subsample_size}"
            )
        batch_shape = list(batch_shape)
        batch_shape[self.dim] = self.subsample_size
        batch_shape = tuple(batch_shape)
        if batch_shape != tuple(fn.batch_shape):
            if not hasattr(fn, "expand"):
                raise TypeError(
                    f"sample site {msg['name']!r}: {type(fn).__name__} has no expand() "
                    f"to broadcast to plate {self.name!r}"
                )
            msg["fn"] = fn.expand(batch_shape)
            msg["kwargs"]["sample_shape"] = ()

    def _subsample(self, msg: Message) -> None:
        if self.subsample_size == self.size:
            return
        data = msg["value"]
        axis = self.dim - msg["kwargs"]["event_dim"]
        if jnp.ndim(data) >= -axis and jnp.shape(data)[axis] == self.size:
            if self._blocks is None:
                msg["value"] = jnp.take(data, self._indices, axis=axis)
            else:
                msg["value"] = _take_by_blocks(data, self._indices, axis, self._blocks)


def _take_by_blocks(data, indices, axis: int, blocks: int):
    """``jnp.take(data, indices, axis)`` for indices drawn block by block: the
    gather is batched over the blocks, so data sharded by blocks along
    ``axis`` is read where it lives."""
    data = jnp.moveaxis(data, axis, 0)
    per_block = data.shape[0] // blocks
    grouped = jnp.reshape(data, (blocks, per_block) + data.shape[1:])
    local = jnp.reshape(indices, (blocks, -1))
    local = local - per_block * jnp.arange(blocks)[:, None]
    rows = jax.vmap(lambda group, idx: jnp.take(group, idx, axis=0))(grouped, local)
    return jnp.moveaxis(jnp.reshape(rows, (-1,) + data.shape[1:]), 0, axis)


@contextlib.contextmanager
def plate_stack(
    prefix: str, sizes: Sequence[int], rightmost_dim: int = -1
) -> Iterator[None]:
    """Enter one plate per size, at contiguous dims ending at ``rightmost_dim``.

    Plates are named ``prefix_0`` (rightmost) to ``prefix_{n-1}`` (leftmost);
    empty ``sizes`` enter no plate.

    >>> import probnn
    >>> import probnn.distributions as dist
    >>> def model():
    ...     with probnn.plate_stack("p", (2, 3)):
    ...         return probnn.sample("x", dist.Normal(0.0, 1.0))
    >>> probnn.handlers.seed(model, rng_seed=0)().shape
    (2, 3)
    """
    sizes = list(sizes)
    if not isinstance(rightmost_dim, int) or rightmost_dim >= 0:
        raise ValueError(
            f"plate_stack {prefix!r}: rightmost_dim must be a negative int, "
            f"got {rightmost_dim!r}"
        )
    with contextlib.ExitStack() as stack:
        for i, size in enumerate(reversed(sizes)):
            stack.enter_context(plate(f"{prefix}_{i}", size, dim=rightmost_dim - i))
        yield


def module(name: str, nn, input_shape=None, *args, **kwargs) -> Callable:
    """Register a network's parameters as one param site ``name + "$params"``.

    Accepts a stax ``(init_fn, apply_fn)`` pair, a ``flax.linen.Module`` or an
    eager ``flax.nnx.Module``; see :func:`probnn.nn.module` for the details.

    >>> import probnn
    >>> from jax.example_libraries import stax
    >>> def model(x):
    ...     net = probnn.module("net", stax.Dense(2), input_shape=(-1, 3))
    ...     return net(x)
    >>> probnn.handlers.seed(model, rng_seed=0)(jnp.ones((5, 3))).shape
    (5, 2)
    """
    from probnn.nn._core import module as _module

    return _module(name, nn, input_shape, *args, **kwargs)
