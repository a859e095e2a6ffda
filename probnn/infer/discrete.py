"""Posterior draws and MAP assignments of enumerated discrete sites."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from probnn.enumeration import enum, max_plate_nesting
from probnn.handlers import block, seed, substitute, trace
from probnn.infer.enum import choosing_ring, contract_trace, site_log

__all__ = ["infer_discrete"]


def infer_discrete(
    fn: Callable | None = None,
    first_available_dim: int | None = None,
    temperature: int = 1,
    rng_key=None,
):
    """Run ``fn`` with its enumerated discrete sites set to a joint draw from
    their exact posterior given the observations (``temperature=1``) or to
    the jointly most probable assignment (``temperature=0``, Viterbi decoding
    for sites inside :func:`probnn.scan`).

    The sites are those marked ``infer={"enumerate": "parallel"}`` (see
    :func:`probnn.handlers.config_enumerate`). The draw comes from the same
    contraction as :class:`probnn.infer.TraceEnum_ELBO`, run in a semiring
    whose backward pass chooses values (forward filtering, backward
    sampling); inside scans both ``enum_method`` paths are exact. The other
    random sites are drawn with ``rng_key``, identically in the enumerated
    pass and in the returned run, so substitute them (e.g. by posterior
    samples) when they should be fixed.

    Args:
        fn: the model (usable as a decorator with keywords only).
        first_available_dim: the first dim (negative) free for enumeration;
            by default left of the model's deepest plate.
        temperature: 1 to sample, 0 for the MAP assignment.
        rng_key: key for the draw and for the model's other random sites
            (required for ``temperature=1``).

    Returns:
        A callable with ``fn``'s signature.

    >>> import jax, jax.numpy as jnp, probnn, probnn.distributions as dist
    >>> from probnn.handlers import config_enumerate, trace
    >>> @config_enumerate
    ... def model(y):
    ...     z = probnn.sample("z", dist.Bernoulli(0.5))
    ...     probnn.sample("y", dist.Normal(4.0 * z, 1.0), obs=y)
    >>> decoded = infer_discrete(model, temperature=0)
    >>> float(trace(decoded).get_trace(3.5)["z"]["value"])
    1.0
    """
    if fn is None:
        return functools.partial(
            infer_discrete,
            first_available_dim=first_available_dim,
            temperature=temperature,
            rng_key=rng_key,
        )
    if temperature not in (0, 1):
        raise ValueError(
            f"infer_discrete: temperature must be 0 or 1, got {temperature!r}"
        )
    if temperature == 1 and rng_key is None:
        raise ValueError("infer_discrete: temperature=1 draws at random; pass rng_key=")

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        if rng_key is None:
            model, choice_key = fn, jax.random.PRNGKey(0)
        else:
            model_key, choice_key = jax.random.split(rng_key)
            model = seed(fn, rng_seed=model_key)
        values = _choose(
            model, first_available_dim, temperature, choice_key, args, kwargs
        )
        return substitute(model, substitute_fn=functools.partial(_lookup, values))(
            *args, **kwargs
        )

    return wrapped


def _choose(model, first_available_dim, temperature, key, args, kwargs) -> dict:
    """Chosen values of the enumerated sites, by the name the sites have
    inside the model (scan sites as series over every step)."""
    if first_available_dim is None:
        nesting = max_plate_nesting(model, args, kwargs)
        first_available_dim = -nesting - 1
    nesting = -first_available_dim - 1
    # the enumerated pass is internal: handlers outside do not see it
    with block():
        model_trace = trace(
            enum(model, first_available_dim=first_available_dim)
        ).get_trace(*args, **kwargs)
    names = [
        name
        for name, site in model_trace.items()
        if site["type"] == "sample" and site["infer"].get("_enumerate_dim") is not None
    ]
    if not names:
        return {}
    logs = {name: site_log(model_trace[name]) for name in names}
    ring = choosing_ring(key, temperature)
    marks = jax.grad(lambda logs: contract_trace(model_trace, ring, logs))(logs)

    pieces: dict[str, list] = {}
    for name in names:
        site = model_trace[name]
        frames = site["infer"].get("_markov", ())
        lead = sum(1 for _, position in frames if position is None)
        mark = marks[name]
        batch = jnp.shape(mark)[lead:]
        rank = max(len(batch), nesting + 1)
        mark = jnp.reshape(
            mark, jnp.shape(mark)[:lead] + (1,) * (rank - len(batch)) + batch
        )
        dim = site["infer"]["_enumerate_dim"]
        enum_axes = tuple(mark.ndim + d for d in range(-rank, -nesting) if d != dim)
        mark = jnp.sum(mark, axis=enum_axes, keepdims=True)
        index = jnp.argmax(mark, axis=dim, keepdims=True)
        index = index.reshape(index.shape[:lead] + index.shape[index.ndim - nesting :])
        fn = site["fn"]
        support = fn.enumerate_support(expand=False)
        support = jnp.reshape(support, (jnp.shape(support)[0],) + tuple(fn.event_shape))
        value = support[index]
        base = site["infer"].get("_markov_name", name)
        pieces.setdefault(base, []).append((frames, value))
    return {
        base: (_series(items, 0, 0), len(items[0][0])) for base, items in pieces.items()
    }


def _series(items, level: int, axis: int):
    """Join the values a scan site took in its unrolled and looped steps into
    one series per enclosing scan (axis ``axis`` onwards), in step order."""
    if len(items) == 1 and len(items[0][0]) == level:
        return items[0][1]
    context = items[0][0][level][0]
    by_position: dict = {}
    for frames, value in items:
        by_position.setdefault(frames[level][1], []).append((frames, value))
    unrolled = [
        jnp.expand_dims(_series(by_position[i], level + 1, axis), axis)
        for i in range(context.num_init)
        if i in by_position
    ]
    looped = []
    if None in by_position:
        looped = [_series(by_position[None], level + 1, axis + 1)]
    parts = looped + unrolled[::-1] if context.reverse else unrolled + looped
    tail = jnp.broadcast_shapes(*(p.shape[axis + 1 :] for p in parts))
    parts = [jnp.broadcast_to(p, p.shape[: axis + 1] + tail) for p in parts]
    return jnp.concatenate(parts, axis=axis)


def _lookup(values: dict, msg):
    if msg["type"] != "sample" or msg["name"] not in values:
        return None
    value, levels = values[msg["name"]]
    fn = msg["fn"]
    event = tuple(fn.event_shape)
    batch = tuple(fn.shape(msg["kwargs"].get("sample_shape", ())))[
        : len(fn.shape(msg["kwargs"].get("sample_shape", ()))) - len(event)
    ]
    shape = jnp.shape(value)
    head, plates = shape[:levels], shape[levels : len(shape) - len(event)]
    extra = len(plates) - len(batch)
    if extra > 0:
        if any(size != 1 for size in plates[:extra]):
            raise ValueError(
                f"infer_discrete: the value chosen for site {msg['name']!r} has "
                f"plate shape {plates}, which does not fit the site's batch "
                f"shape {batch}"
            )
        plates = plates[extra:]
    plates = (1,) * (len(batch) - len(plates)) + plates
    value = jnp.reshape(value, head + plates + event)
    return jnp.broadcast_to(value, head + batch + event)
