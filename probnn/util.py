"""Process-wide JAX settings that NumPyro scripts set in their first lines
(the platform, 64-bit floats and the number of CPU devices), and
:func:`fori_collect`, a loop that keeps what each iteration produces.

Each setting is a thin call into ``jax.config``; they are here so that a
script that starts with ``numpyro.set_platform("cpu")`` or
``numpyro.set_host_device_count(4)`` ports by changing the import.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "enable_x64",
    "fori_collect",
    "fori_loop",
    "identity",
    "is_prng_key",
    "not_jax_tracer",
    "optional",
    "set_host_device_count",
    "set_platform",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def set_platform(platform: str | None = None) -> None:
    """Make ``platform`` (``"cpu"``, ``"gpu"``, ``"tpu"``) JAX's default
    backend.

    Args:
        platform: the platform; by default the environment variable
            ``JAX_PLATFORM_NAME``, else ``"cpu"``.
    """
    if platform is None:
        platform = os.getenv("JAX_PLATFORM_NAME", "cpu")
    if not isinstance(platform, str) or not platform:
        raise TypeError(
            f"set_platform: platform must be a name such as 'cpu', 'gpu' or "
            f"'tpu', got {platform!r}"
        )
    jax.config.update("jax_platform_name", platform.lower())


def enable_x64(use_x64: bool | None = True) -> None:
    """Switch JAX's default float and int types to 64 bits (or back to 32).

    Call it before creating arrays: arrays made earlier keep their dtype.

    Args:
        use_x64: True for 64 bits, False for 32; None reads the environment
            variable ``JAX_ENABLE_X64`` (``1``/``true``/``yes``/``on`` or
            ``0``/``false``/``no``/``off``; unset means 32 bits).
    """
    if use_x64 is None:
        text = os.getenv("JAX_ENABLE_X64", "").strip().lower()
        if text not in _TRUE | _FALSE:
            raise ValueError(
                "enable_x64: the environment variable JAX_ENABLE_X64 must be one "
                f"of {sorted(_TRUE | _FALSE)}, got {text!r}"
            )
        use_x64 = text in _TRUE
    if not isinstance(use_x64, bool | np.bool_):
        raise TypeError(f"enable_x64: use_x64 must be a bool or None, got {use_x64!r}")
    jax.config.update("jax_enable_x64", bool(use_x64))


def set_host_device_count(n: int) -> None:
    """Split the CPU into ``n`` JAX devices, e.g. to run MCMC chains with
    ``chain_method="parallel"`` or to try sharded SVI on one machine.

    It must run before JAX runs anything (right after the imports): JAX
    fixes its devices when it first starts a backend.

    Args:
        n: number of CPU devices.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"set_host_device_count: n must be an int >= 1, got {n!r}")
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError as error:
        raise RuntimeError(
            f"set_host_device_count({n}): JAX has already started its backends "
            "(with their devices fixed); call it before any JAX computation, "
            "right after the imports"
        ) from error


def identity(x, *args, **kwargs):
    """Return ``x`` unchanged (further arguments are ignored)."""
    return x


def fori_collect(
    lower: int,
    upper: int,
    body_fun: Callable,
    init_val: Any,
    transform: Callable = identity,
    progbar: bool = True,
    progress_rate: int | None = None,
    return_last_val: bool = False,
    collection_size: int | None = None,
    thinning: int = 1,
    **progbar_opts,
):
    """Run ``val = body_fun(val)`` ``upper`` times from ``init_val`` and keep
    ``transform(val)`` of the iterations from ``lower`` on, stacked along a
    new leading axis of every leaf.

    Args:
        lower: iterations before this one (counting from 0) are run but not
            kept (e.g. warmup).
        upper: the number of iterations.
        body_fun: one iteration; returns a value of the structure, shapes and
            dtypes of its argument.
        init_val: the starting value (any pytree).
        transform: maps a value to what is kept.
        progbar: show a tqdm bar and run the iterations one compiled step at a
            time; without it the whole loop is one compiled ``fori_loop``
            (faster).
        progress_rate: iterations per bar refresh (default: a twentieth of
            ``upper``).
        return_last_val: also return the last value.
        collection_size: length of the collection's leading axis; at least
            ``(upper - lower) // thinning`` (the default), and entries past
            those are zeros.
        thinning: keep the last of every block of ``thinning`` iterations,
            counting blocks back from the end.
        **progbar_opts: ``progbar_desc`` (a function of the iteration
            returning the bar's label) and ``diagnostics_fn`` (a function of
            the current value returning the bar's postfix text).

    Returns:
        The collection, or ``(collection, last value)`` with
        ``return_last_val``.

    >>> import jax.numpy as jnp
    >>> kept = fori_collect(2, 10, lambda x: x + 1, jnp.zeros(()), thinning=2,
    ...                     progbar=False)
    >>> kept.tolist()  # the values after iterations 4, 6, 8 and 10
    [4.0, 6.0, 8.0, 10.0]
    """
    for name, value, low in (("lower", lower, 0), ("thinning", thinning, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"fori_collect: {name} must be an int, got {value!r}")
        if value < low:
            raise ValueError(f"fori_collect: {name} must be >= {low}, got {value!r}")
    if not lower <= upper:
        raise ValueError(
            f"fori_collect: lower ({lower}) must not be greater than upper ({upper})"
        )
    kept = (upper - lower) // thinning
    size = kept if collection_size is None else int(collection_size)
    if size < kept:
        raise ValueError(
            f"fori_collect: collection_size={size} is smaller than the "
            f"{kept} values kept"
        )
    # the first iteration of the first full block of `thinning`
    start = lower + (upper - lower) % thinning
    shapes = jax.eval_shape(transform, init_val)
    collection = jax.tree.map(lambda s: jnp.zeros((size, *s.shape), s.dtype), shapes)

    def step(i, val, collection):
        val = body_fun(val)
        slot = (i - start) // thinning

        def store(collection):
            return jax.tree.map(
                lambda rows, x: rows.at[slot].set(x), collection, transform(val)
            )

        if size:
            collection = jax.lax.cond(i >= start, store, lambda c: c, collection)
        return val, collection

    progbar_opts.pop("num_chains", None)
    describe = progbar_opts.pop("progbar_desc", None)
    diagnostics_fn = progbar_opts.pop("diagnostics_fn", None)
    if not progbar:

        @jax.jit
        def loop(val, collection):
            return jax.lax.fori_loop(
                0, upper, lambda i, c: step(i, *c), (val, collection)
            )

        last_val, collection = loop(init_val, collection)
    else:
        from tqdm.auto import trange

        if progress_rate is None:
            progress_rate = max(1, upper // 20)
        compiled = jax.jit(step)
        val = init_val
        with trange(upper, miniters=progress_rate, **progbar_opts) as bar:
            for i in bar:
                val, collection = compiled(i, val, collection)
                if describe is not None:
                    bar.set_description(describe(i), refresh=False)
                if diagnostics_fn is not None:
                    bar.set_postfix_str(diagnostics_fn(val), refresh=False)
        last_val = val
    return (collection, last_val) if return_last_val else collection


def not_jax_tracer(x) -> bool:
    """Whether ``x`` is a concrete value rather than a tracer of ``jit``,
    ``vmap``, ``grad`` or a control-flow primitive.

    >>> import jax, jax.numpy as jnp
    >>> seen = []
    >>> _ = jax.jit(lambda x: seen.append(not_jax_tracer(x)) or x)(1.0)
    >>> not_jax_tracer(jnp.ones(2)), seen
    (True, [False])
    """
    return not isinstance(x, jax.core.Tracer)


def is_prng_key(key) -> bool:
    """Whether ``key`` is one random key: a typed key of shape () or raw
    ``uint32`` key data of shape (2,).

    >>> import jax
    >>> is_prng_key(jax.random.PRNGKey(0)), is_prng_key(jax.random.key(0))
    (True, True)
    >>> is_prng_key(jax.random.split(jax.random.PRNGKey(0)))  # a batch
    False
    """
    try:
        dtype, shape = key.dtype, key.shape
    except AttributeError:
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return shape == ()
    return shape == (2,) and dtype == np.uint32


@contextlib.contextmanager
def optional(condition: bool, context_manager):
    """Enter ``context_manager`` only when ``condition`` is true.

    >>> import warnings
    >>> with optional(False, warnings.catch_warnings()):
    ...     pass
    """
    if condition:
        with context_manager:
            yield
    else:
        yield


def fori_loop(lower, upper, body_fun: Callable, init_val):
    """``jax.lax.fori_loop``, run as a Python loop under
    ``jax.disable_jit()`` (with concrete bounds), where each step can then
    be inspected eagerly.

    >>> int(fori_loop(0, 4, lambda i, total: total + i, 0))
    6
    """
    if jax.config.jax_disable_jit and not_jax_tracer(lower) and not_jax_tracer(upper):
        value = init_val
        for i in range(int(lower), int(upper)):
            value = body_fun(i, value)
        return value
    return jax.lax.fori_loop(lower, upper, body_fun, init_val)
