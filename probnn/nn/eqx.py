"""Equinox modules as probnn networks (Equinox is an optional extra:
``pip install probnn[equinox]``).

An Equinox module is a pytree whose inexact arrays are its parameters. The
bridge splits it once with ``eqx.partition``: the param site holds the
arrays (the module's own structure, ``None`` where a leaf is static) and the
static part is kept with the bridge. A call that wants a random key (dropout)
asks for it with ``key=True``; the bridge replaces it with a fresh key from
the enclosing ``seed``.

Stateful layers (``eqx.nn.BatchNorm``, which need ``eqx.nn.State``) are not
bridged: their state lives outside the module, and
``probnn.contrib.module.eqx_module`` (NumPyro's API) is the way to use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from probnn.nn._bridge import Bridge


def is_equinox(nn) -> bool:
    """Whether ``nn`` is an ``equinox.Module`` (False when Equinox is not
    installed or not imported: a module of it cannot exist then)."""
    import sys

    eqx = sys.modules.get("equinox")
    return eqx is not None and isinstance(nn, eqx.Module)


class EqxBridge(Bridge):
    """Exposes an Equinox module as pure ``init`` / ``apply`` functions.

    >>> import equinox as eqx, jax, jax.numpy as jnp
    >>> net = eqx.nn.Linear(3, 2, key=jax.random.PRNGKey(0))
    >>> bridge = EqxBridge("net", net, None, (), {})
    >>> params, state = bridge.init(None)
    >>> out, _, _ = bridge.apply(params, state, None, (jnp.ones(3),), {})
    >>> bool(jnp.allclose(out, net(jnp.ones(3)))), state
    (True, {})
    """

    kind = "equinox"
    factory = None  # an Equinox module is initialised by its constructor

    def __init__(self, name: str, nn, input_shape, args: tuple, kwargs: dict):
        import equinox as eqx

        stateful = [
            leaf
            for leaf in jax.tree.leaves(
                nn, is_leaf=lambda x: isinstance(x, eqx.nn.StateIndex)
            )
            if isinstance(leaf, eqx.nn.StateIndex)
        ]
        if stateful:
            raise ValueError(
                f"module {name!r}: the Equinox module has stateful layers "
                "(eqx.nn.State, e.g. BatchNorm), whose state lives outside the "
                "module; use probnn.contrib.module.eqx_module for it"
            )
        super().__init__(name, nn, input_shape, args, kwargs)
        self._params, self._static = eqx.partition(nn, eqx.is_inexact_array)

    def init(self, key) -> tuple[Any, dict]:
        """The module's arrays as they were when it was made (an Equinox
        module is initialised by its constructor; ``key`` is unused)."""
        return self._params, {}

    def apply(
        self,
        params,
        state,
        key_fn: Callable[[], Any] | None,
        args: tuple,
        kwargs: dict,
    ) -> tuple[Any, dict, dict]:
        import equinox as eqx

        if jax.tree.structure(params) != jax.tree.structure(self._params):
            raise ValueError(
                f"module site {self.name!r}: the parameters given have another "
                "structure than the Equinox module's"
            )
        if kwargs.get("key") is True:
            if key_fn is None:
                raise ValueError(
                    f"module {self.name!r}: key=True needs a random key; run the "
                    "model under probnn.handlers.seed"
                )
            kwargs = {**kwargs, "key": key_fn()}
        model = eqx.combine(params, self._static)
        return model(*args, **kwargs), state, {}
