"""`scan`: `jax.lax.scan` for model code that contains probnn sites.

The body runs inside ``lax.scan`` under a step-local image of every active
handler (see :meth:`probnn.runtime.Messenger.scan_image`): ``seed`` folds the
step index into its key, ``substitute`` / ``condition`` / ``replay`` pick the
step's slice of their series, ``trace`` records one step and receives the
sites stacked along a new leading time dim. Because images are made for every
handler, scans nest and may sit inside plates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.extend.core
import jax.numpy as jnp
from jax.extend.core import Literal

from probnn.runtime import _STACK, apply_stack, handler_stack, make_message

__all__ = ["scan"]


def _scan_length(xs, length) -> int:
    leaves = jax.tree.leaves(xs)
    if length is not None:
        if not isinstance(length, int) or length < 0:
            raise ValueError(f"scan: length must be a non-negative int, got {length!r}")
        for leaf in leaves:
            if jnp.shape(leaf)[:1] != (length,):
                raise ValueError(
                    f"scan: xs leaf of shape {jnp.shape(leaf)} does not have "
                    f"leading dim length={length}"
                )
        return length
    if not leaves:
        raise ValueError("scan: pass length= when xs has no arrays")
    return jnp.shape(leaves[0])[0]


def _run(f, init, xs, length, reverse, history, enum_method, scan_msg):
    handlers = list(_STACK)
    enumerator = next(
        (h for h in reversed(handlers) if getattr(h, "open_scan", None)), None
    )
    if enumerator is not None:
        outer = [frame.name for frame in scan_msg["cond_indep_stack"]]
        context = enumerator.open_scan(history, length, reverse, enum_method, outer)
        return _run_enumerated(f, init, xs, length, reverse, handlers, context)
    makers = [handler.scan_image(length) for handler in handlers]

    def body(carry, step_and_x):
        step, x = step_and_x
        images = [make(step) for make in makers]
        with handler_stack(images):
            new_carry, y = f(carry, x)
        new_carry = jax.tree.map(_promoted, new_carry, carry)
        return new_carry, (y, [image.scan_output() for image in images])

    steps = jnp.arange(length)
    carry, (ys, outputs) = jax.lax.scan(
        body, init, (steps, xs), length=length, reverse=reverse
    )
    for handler, output in zip(handlers, outputs, strict=True):
        handler.scan_finish(output)
    return carry, ys


def _run_enumerated(f, init, xs, length, reverse, handlers, context):
    """Scan under ``enum``: the first ``history`` steps run unrolled (sites
    prefixed ``_init/``), the rest inside ``lax.scan``; after each step the
    carry's enumerated dims move one lag back."""
    others = [h for h in handlers if not getattr(h, "open_scan", None)]
    makers = [handler.scan_image(length) for handler in others]
    # the enumerating image takes its handler's place in the stack, so
    # handlers inside it (config_enumerate, substitute, ...) act first
    position = next(i for i, h in enumerate(handlers) if getattr(h, "open_scan", None))

    def stack(images):
        enumerating = context.image()
        return images[:position] + [enumerating] + images[position:]

    num_init = context.num_init
    # indices of the unrolled steps, in the order the scan visits them
    order = list(range(length))[::-1] if reverse else list(range(length))
    carry = init
    first_ys = []
    from_body = num_init > 0
    for index, step in enumerate(order[:num_init]):
        context.position = index
        images = [make(step) for make in makers]
        x = jax.tree.map(lambda leaf, step=step: leaf[step], xs)
        with handler_stack(stack(images)):
            out, y = f(carry, x)
        with jax.ensure_compile_time_eval():
            out = context.shift(out)
        if index == 0:
            # the first step's trace tells whether the loop can start with it
            started = context.start_in_loop(carry, out)
            if started is not None:
                carry, from_body = started
                num_init = 0
                break
        carry = out
        first_ys.append(y)
        prefix = context.init_prefix(index)
        for handler, image in zip(others, images, strict=True):
            handler.scan_finish_unrolled(image.scan_output(), prefix)
    rest = length - num_init
    if rest == 0:
        ys = _stack_steps(first_ys)
        return carry, (_flip(ys) if reverse else ys)
    context.position = None

    def body(carry, step_and_x):
        step, x = step_and_x
        images = [make(step) for make in makers]
        with handler_stack(stack(images)):
            new_carry, y = f(carry, x)
        new_carry = context.shift(new_carry, conform_to=carry)
        return new_carry, (y, [image.scan_output() for image in images])

    if reverse:
        steps = jnp.arange(rest)
        rest_xs = jax.tree.map(lambda leaf: leaf[:rest], xs)
    else:
        steps = jnp.arange(num_init, length)
        rest_xs = jax.tree.map(lambda leaf: leaf[num_init:], xs)
    carry, (ys, outputs) = _loop_or_map(
        body, carry, steps, rest_xs, rest, reverse, from_body
    )
    for handler, output in zip(others, outputs, strict=True):
        handler.scan_finish(output)
    if num_init:
        first = _stack_steps(first_ys)
        if reverse:
            ys = _concat_steps(ys, _flip(first))
        else:
            ys = _concat_steps(first, ys)
    return carry, ys


def _loop_or_map(body, carry, steps, xs, length, reverse, carry_from_body):
    """``lax.scan(body, carry, (steps, xs))``, evaluated as one batched
    computation (``vmap``) over the steps where the carry allows.

    Under enumeration the carry mostly holds enumerated values, which after
    the lag shift are the same support arrays at every step. The carry's
    leaves split into *chained* ones, which a step computes from the carry
    it receives (a step counter), and *free* ones, which it computes from
    its own inputs alone (the enumerated values). Only the chained leaves
    need a loop, and it computes nothing else; the free leaves each step
    receives are its predecessor's, computed for all steps at once, or,
    when they are the same at every step and ``carry_from_body`` says that
    the incoming carry was returned by this body too, passed unbatched, so
    that whatever the steps compute from them alone (a transition table
    indexed by the previous state) is computed once (``carry_from_body``:
    a bool, or one per carry leaf). Where the chained
    leaves read the free ones, the whole body runs in ``lax.scan``. The body
    is traced once either way.
    """
    x_first = jax.tree.map(lambda leaf: leaf[0], xs)
    structure = []

    def flat_body(carry, step_and_x):
        leaves, tree = jax.tree.flatten(body(carry, step_and_x))
        structure.append(tree)
        return leaves

    closed = jax.make_jaxpr(flat_body)(carry, (steps[0], x_first))
    out_tree = structure[0]
    evaluate = jax.extend.core.jaxpr_as_fun(closed)
    carry_leaves, carry_tree = jax.tree.flatten(carry)
    num_carry = len(carry_leaves)
    inputs = range(num_carry, len(closed.jaxpr.invars))

    def run(carry_leaves, step_and_x):
        flat = list(carry_leaves) + jax.tree.leaves(step_and_x)
        out = jax.tree.unflatten(out_tree, evaluate(*flat))
        return jax.tree.leaves(out[0]), out[1]

    jaxpr = closed.jaxpr
    chained = [i for i in range(num_carry) if _depends_on(jaxpr, range(num_carry), [i])]
    free = [i for i in range(num_carry) if i not in chained]
    if chained and _depends_on(jaxpr, free, chained):

        def loop_body(carry, step_and_x):
            leaves, y = run(jax.tree.leaves(carry), step_and_x)
            return jax.tree.unflatten(carry_tree, leaves), y

        return jax.lax.scan(
            loop_body, carry, (steps, xs), length=length, reverse=reverse
        )

    received = list(carry_leaves)
    axes = [None] * num_carry
    last = list(carry_leaves)
    if chained:
        # the chained leaves by a loop that computes only them

        def chain(values, step_and_x):
            leaves = list(carry_leaves)
            for i, value in zip(chained, values, strict=True):
                leaves[i] = value
            new = run(leaves, step_and_x)[0]
            return [new[i] for i in chained], values

        final, series = jax.lax.scan(
            chain,
            [carry_leaves[i] for i in chained],
            (steps, xs),
            length=length,
            reverse=reverse,
        )
        for i, value, values in zip(chained, final, series, strict=True):
            received[i], axes[i], last[i] = values, 0, value
    if isinstance(carry_from_body, bool):
        carry_from_body = [carry_from_body] * num_carry
    constant = all(carry_from_body[i] for i in free) and not _depends_on(
        jaxpr, [*chained, *inputs], free
    )
    if free and not constant:
        # the free leaves every step returns, from its own inputs
        returned = jax.vmap(lambda c, sx: run(c, sx)[0], in_axes=(axes, 0))(
            received, (steps, xs)
        )

        def predecessors(first, later):
            if reverse:  # step i follows step i + 1
                return jnp.concatenate([later[1:], first[None]])
            return jnp.concatenate([first[None], later[:-1]])

        for i in free:
            received[i] = predecessors(jnp.asarray(carry_leaves[i]), returned[i])
            axes[i] = 0
            last[i] = returned[i][0] if reverse else returned[i][-1]
    _, outputs = jax.vmap(run, in_axes=(axes, 0))(received, (steps, xs))
    return jax.tree.unflatten(carry_tree, last), outputs


def _promoted(new, old):
    """A carry leaf in the dtype of the one the step received when that
    dtype holds it (integer data substituted for a real-valued site), so
    that the loop's carry keeps its type; other mismatches stay for
    ``lax.scan`` to report."""
    new_type, old_type = jnp.result_type(new), jnp.result_type(old)
    if new_type != old_type and jnp.promote_types(new_type, old_type) == old_type:
        return jnp.asarray(new, old_type)
    return new


def _depends_on(jaxpr, inputs, outputs) -> bool:
    """False when the ``outputs`` (indices) of ``jaxpr`` provably do not
    depend on its ``inputs`` (indices); True when they may."""
    tainted = {jaxpr.invars[i] for i in inputs}
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
    return any(
        not isinstance(jaxpr.outvars[i], Literal) and jaxpr.outvars[i] in tainted
        for i in outputs
    )


def _stack_steps(ys_list):
    def stack(*leaves):
        shape = jnp.broadcast_shapes(*(jnp.shape(leaf) for leaf in leaves))
        return jnp.stack([jnp.broadcast_to(leaf, shape) for leaf in leaves])

    return jax.tree.map(stack, *ys_list)


def _flip(ys):
    return jax.tree.map(lambda leaf: leaf[::-1], ys)


def _concat_steps(first, rest):
    def concat(a, b):
        shape = jnp.broadcast_shapes(jnp.shape(a)[1:], jnp.shape(b)[1:])
        a = jnp.broadcast_to(a, jnp.shape(a)[:1] + shape)
        b = jnp.broadcast_to(b, jnp.shape(b)[:1] + shape)
        return jnp.concatenate([a, b])

    return jax.tree.map(concat, first, rest)


def scan(
    f: Callable,
    init,
    xs,
    length: int | None = None,
    reverse: bool = False,
    history: int = 1,
    enum_method: str | None = None,
):
    """Scan ``f`` over the leading axis of ``xs`` while carrying state, like
    :func:`jax.lax.scan`, with probnn sites allowed inside ``f``.

    Sample and deterministic sites in ``f`` appear once in a trace, their
    values stacked along a leading time dim; each step draws with a fresh
    key; ``substitute``, ``condition`` and ``replay`` data for those sites are
    series indexed per step.

    Args:
        f: ``(carry, x) -> (carry, y)``.
        init: initial carry.
        xs: pytree scanned over its leading axis (may be None with ``length``).
        length: number of steps when ``xs`` has no arrays.
        reverse: scan from the last step to the first.
        history: under enumeration (:class:`probnn.handlers.enum`, used by
            ``TraceEnum_ELBO``, ``infer_discrete`` and enumerated
            ``log_density``), the Markov order: how many past steps'
            enumerated sites the carry may depend on.
        enum_method: under enumeration, how the discrete sites are summed
            out along time: ``"sequential"`` (a forward recursion, O(T)
            span, least work), ``"parallel"`` (a tree of matrix products,
            O(log T) span) or None: sequential on CPU, parallel on GPU/TPU.

    Returns:
        ``(final carry, stacked ys)``.

    >>> import numpy as np
    >>> import probnn
    >>> import probnn.distributions as dist
    >>> from probnn.control_flow import scan
    >>> def gaussian_hmm(y=None, T=10):
    ...     def transition(x_prev, y_curr):
    ...         x_curr = probnn.sample('x', dist.Normal(x_prev, 1))
    ...         y_curr = probnn.sample('y', dist.Normal(x_curr, 1), obs=y_curr)
    ...         return x_curr, (x_curr, y_curr)
    ...     x0 = probnn.sample('x_0', dist.Normal(0, 1))
    ...     _, (x, y) = scan(transition, x0, y, length=T)
    ...     return (x, y)
    >>> # here we do some quick tests
    >>> with probnn.handlers.seed(rng_seed=0):
    ...     x, y = gaussian_hmm(np.arange(10.))
    >>> assert x.shape == (10,) and y.shape == (10,)
    >>> assert np.all(y == np.arange(10))
    >>> with probnn.handlers.seed(rng_seed=0):  # generative
    ...     x, y = gaussian_hmm()
    >>> assert x.shape == (10,) and y.shape == (10,)
    """
    if not callable(f):
        raise TypeError(f"scan: f must be callable, got {type(f).__name__}")
    length = _scan_length(xs, length)
    msg = make_message("control_flow", None, None)
    msg["fn"] = functools.partial(
        _run, f, init, xs, length, reverse, history, enum_method, msg
    )
    return apply_stack(msg)["value"]
