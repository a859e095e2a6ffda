"""The effect-handler runtime: the handler stack, site messages, `apply_stack`.

Every primitive (``sample``, ``param``, ...) builds a *message*, a plain dict
describing the site, and hands it to :func:`apply_stack`. Each active handler
(a :class:`Messenger`) may read or change the message on its way up the stack
(``process_message``, innermost handler first) and again on its way back down
(``postprocess_message``, outermost first). When no handler has set a value,
:func:`default_process_message` computes it.

This module holds the only mutable global state in probnn: the stack itself.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

__all__ = [
    "CondIndepStackFrame",
    "Message",
    "Messenger",
    "apply_stack",
    "default_process_message",
    "make_message",
]

Message = dict[str, Any]

_STACK: list[Messenger] = []


class CondIndepStackFrame(NamedTuple):
    """One enclosing plate of a site: its name, batch dim, size and subsample size."""

    name: str
    dim: int
    size: int
    subsample_size: int


class NotCallableError(TypeError, ValueError):
    """A handler was given something other than a function to wrap (a
    ``TypeError``, and a ``ValueError`` as NumPyro raises there)."""


class Messenger:
    """Base class of every effect handler.

    A handler is used as a context manager (``with handler: ...``) or wraps a
    callable (``handler(fn)(*args)``). Subclasses override
    :meth:`process_message` and :meth:`postprocess_message`.

    Handlers that act inside :func:`probnn.scan` bodies override
    :meth:`scan_image` (see there).
    """

    def __init__(self, fn: Callable | None = None):
        if fn is not None and not callable(fn):
            raise NotCallableError(
                f"{type(self).__name__} expects fn to be a Python callable object "
                f"to wrap, got {type(fn)!r} (for a handler's own arguments use "
                "their keywords, e.g. mask(mask=False))"
            )
        self.fn = fn
        if fn is not None:
            functools.update_wrapper(self, fn, updated=[])

    def __enter__(self):
        _STACK.append(self)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        if _STACK and _STACK[-1] is self:
            _STACK.pop()
        else:
            # An exception inside a nested handler can leave handlers above us;
            # drop them together with this one so the stack stays consistent.
            if self in _STACK:
                del _STACK[_STACK.index(self) :]

    def process_message(self, msg: Message) -> None:
        """Act on a site before its value is computed (innermost handler first)."""

    def postprocess_message(self, msg: Message) -> None:
        """Act on a site after its value is computed (outermost handler first)."""

    def scan_image(self, length: int) -> Callable[[Any], Messenger]:
        """Return a maker of this handler's stand-in for one step of a scan body.

        ``scan`` calls this once per scan, outside the traced loop, for every
        handler on the stack; the returned callable receives the (traced) step
        index inside the loop and returns the handler that acts for this one
        during that step. Stateless handlers act as themselves (the default).
        Handlers that carry state (random keys, recorded sites) or per-step
        data (substituted series) return a step-local handler instead.
        """
        return lambda step: self

    def scan_output(self) -> Any:
        """Pytree this (step-local) handler returns from each scan step; stacked
        along time and passed to the original handler's :meth:`scan_finish`."""
        return None

    def scan_finish(self, stacked: Any) -> None:
        """Receive the time-stacked :meth:`scan_output` of this handler's images."""

    def scan_finish_unrolled(self, output: Any, prefix: str) -> None:
        """Receive the :meth:`scan_output` of an image that ran one step of an
        enumerated scan outside the loop; its sites are named ``prefix + name``."""

    def __call__(self, *args, **kwargs):
        if self.fn is None:
            if len(args) == 1 and not kwargs and callable(args[0]):
                # made without a function, applied as a decorator later:
                # ``@scale(scale=2.0)``
                self.fn = args[0]
                functools.update_wrapper(self, args[0], updated=[])
                return self
            raise TypeError(
                f"{type(self).__name__} was created without a function to wrap; "
                "apply it to one (as a decorator), use it as a context manager "
                "or pass fn="
            )
        with self:
            return self.fn(*args, **kwargs)


def make_message(
    type: str,
    name: str | None,
    fn: Callable | None,
    args: tuple = (),
    kwargs: dict | None = None,
    value: Any = None,
    **fields: Any,
) -> Message:
    """Build a site message with every field a handler may read."""
    msg = {
        "type": type,
        "name": name,
        "fn": fn,
        "args": args,
        "kwargs": {} if kwargs is None else kwargs,
        "value": value,
        "is_observed": False,
        "scale": None,
        "mask": None,
        "infer": {},
        "cond_indep_stack": [],
        "intermediates": [],
        "stop": False,
    }
    msg.update(fields)
    return msg


def missing_key(kind: str, name: str | None):
    """Raise the error for a random site that no ``seed`` handler reached."""
    where = f"{kind} site {name!r}" if name else kind
    raise ValueError(
        f"{where} needs a random key: run the model under probnn.handlers.seed"
        + (" or pass rng_key=" if kind == "sample" else "")
    )


def draw(msg: Message):
    """Default value of a sample site: a draw from its distribution ``msg["fn"]``."""
    key = msg["kwargs"]["rng_key"]
    if key is None:
        missing_key("sample", msg["name"])
    fn = msg["fn"]
    sample_shape = msg["kwargs"]["sample_shape"]
    if hasattr(fn, "sample_with_intermediates"):
        value, msg["intermediates"] = fn.sample_with_intermediates(key, sample_shape)
        return value
    if hasattr(fn, "sample"):
        return fn.sample(key, sample_shape)
    return fn(rng_key=key, sample_shape=sample_shape)


def default_process_message(msg: Message) -> None:
    """Compute a site's value when no handler has supplied one."""
    if msg["value"] is not None:
        return
    if msg["type"] == "sample":
        msg["value"] = draw(msg)
    elif msg["fn"] is not None:
        msg["value"] = msg["fn"](*msg["args"], **msg["kwargs"])


def apply_stack(msg: Message) -> Message:
    """Send ``msg`` through the active handlers and return it with its value set.

    Handlers see the message innermost first; a handler that sets
    ``msg["stop"]`` hides it from the handlers outside it. Then the value is
    computed if still missing, and the handlers that saw the message
    postprocess it, outermost first.
    """
    reached = 0
    for handler in reversed(_STACK):
        reached += 1
        handler.process_message(msg)
        if msg["stop"]:
            break
    default_process_message(msg)
    for handler in _STACK[len(_STACK) - reached :]:
        handler.postprocess_message(msg)
    return msg


@contextlib.contextmanager
def handler_stack(handlers: list[Messenger]) -> Iterator[None]:
    """Temporarily replace the whole handler stack (used for scan bodies)."""
    saved = _STACK[:]
    _STACK[:] = handlers
    try:
        yield
    finally:
        _STACK[:] = saved


def stack_is_empty() -> bool:
    return not _STACK
