"""Process-wide JAX settings that NumPyro scripts set in their first lines:
the platform, 64-bit floats and the number of CPU devices.

Each one is a thin call into ``jax.config``; they are here so that a script
that starts with ``numpyro.set_platform("cpu")`` or
``numpyro.set_host_device_count(4)`` ports by changing the import.
"""

from __future__ import annotations

import os

import jax
import numpy as np

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
