"""The bridge for stax networks: ``(init_fn, apply_fn)`` pairs."""

from __future__ import annotations

import jax

from probnn.nn._bridge import Bridge

__all__ = ["StaxBridge", "is_stax"]


def is_stax(nn) -> bool:
    """Whether ``nn`` looks like a stax ``(init_fn, apply_fn)`` pair."""
    return (
        isinstance(nn, tuple) and len(nn) == 2 and callable(nn[0]) and callable(nn[1])
    )


class StaxBridge(Bridge):
    """A stax network: parameters from ``init_fn(key, input_shape)``, no state.

    The random key of ``apply_fn(params, x, rng=key)`` (stax's Dropout) is
    passed only when ``rng=`` is not given and the network is called with
    ``rng=True``, as stax layers without randomness reject the keyword.

    >>> import jax, jax.numpy as jnp
    >>> from jax.example_libraries import stax
    >>> bridge = StaxBridge("net", stax.Dense(2), (-1, 3), (), {})
    >>> params, state = bridge.init(jax.random.PRNGKey(0))
    >>> out, _, _ = bridge.apply(params, state, None, (jnp.ones((4, 3)),), {})
    >>> out.shape, state
    ((4, 2), {})
    """

    kind = "stax"

    def init(self, key):
        if self.input_shape is None:
            shapes = [jax.numpy.shape(a) for a in self.args]
            if not shapes:
                raise ValueError(
                    f"module {self.name!r}: input_shape= (or an example input) is "
                    "needed to initialise the parameters of a stax network"
                )
            input_shape = shapes[0]
        else:
            input_shape = tuple(self.input_shape)
        init_fn, _ = self.nn
        return init_fn(key, input_shape)[1], {}

    def apply(self, params, state, key_fn, args, kwargs):
        _, apply_fn = self.nn
        if kwargs.get("rng") is True:
            kwargs = {**kwargs, "rng": key_fn()}
        return apply_fn(params, *args, **kwargs), state, {}
