"""`scan`: `jax.lax.scan` for model code that contains probnn sites.

The body runs inside ``lax.scan`` under a step-local image of every active
handler (see :meth:`probnn.runtime.Messenger.scan_image`): ``seed`` folds the
step index into its key, ``substitute`` / ``condition`` / ``replay`` pick the
step's slice of their series, ``trace`` records one step and receives the
sites stacked along a new leading time dim. Because images are made for every
handler, scans nest and may sit inside plates.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

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


def _run(f, init, xs, length, reverse):
    handlers = list(_STACK)
    makers = [handler.scan_image(length) for handler in handlers]

    def body(carry, step_and_x):
        step, x = step_and_x
        images = [make(step) for make in makers]
        with handler_stack(images):
            carry, y = f(carry, x)
        return carry, (y, [image.scan_output() for image in images])

    steps = jnp.arange(length)
    carry, (ys, outputs) = jax.lax.scan(
        body, init, (steps, xs), length=length, reverse=reverse
    )
    for handler, output in zip(handlers, outputs, strict=True):
        handler.scan_finish(output)
    return carry, ys


def scan(
    f: Callable,
    init,
    xs,
    length: int | None = None,
    reverse: bool = False,
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
    msg = make_message(
        "control_flow", None, _run, (f, init, xs, length, reverse), kwargs={}
    )
    return apply_stack(msg)["value"]
