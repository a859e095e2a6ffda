"""A masked autoregressive network (MADE, Germain et al., 2015) as a stax
``(init_fn, apply_fn)`` pair, with NumPyro's ``AutoregressiveNN`` signature.

Every unit gets a degree: input ``k`` the rank of ``k`` in ``permutation``
(1 to D), hidden units degrees spread evenly over 1 to D-1, outputs the
degree of the input they stand for. A weight from a unit of degree ``a`` to
a hidden unit of degree ``b`` exists only when ``b >= a``, and to an output
of degree ``b`` only when ``b > a``; so output ``i`` depends only on the
inputs that come before ``i`` in the permutation.

>>> import jax, jax.numpy as jnp
>>> init_fn, apply_fn = AutoregressiveNN(3, [6])
>>> _, params = init_fn(jax.random.PRNGKey(0), (3,))
>>> loc, log_scale = apply_fn(params, jnp.ones(3))
>>> loc.shape, log_scale.shape
((3,), (3,))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.example_libraries import stax

__all__ = ["AutoregressiveNN"]


def _degrees(input_dim: int, hidden_dims, permutation):
    rank = np.empty(input_dim, dtype=int)
    rank[np.asarray(permutation)] = np.arange(input_dim)
    inputs = rank + 1
    hidden = []
    for width in hidden_dims:
        if input_dim > 1:
            spread = np.arange(width) % (input_dim - 1) + 1
        else:
            spread = np.zeros(width, dtype=int)
        hidden.append(spread)
    return inputs, hidden


def AutoregressiveNN(
    input_dim: int,
    hidden_dims,
    param_dims=(1, 1),
    permutation=None,
    skip_connections: bool = False,
    nonlinearity=stax.Relu,
):
    """A MADE network.

    Args:
        input_dim: ``D``.
        hidden_dims: widths of the hidden layers (each at least ``D - 1`` so
            that every output can see all of its inputs).
        param_dims: outputs per input dim, one entry per returned array
            (``(1, 1)``: a loc and a log scale, as an IAF wants).
        permutation: the autoregressive order (default ``0, ..., D-1``).
        skip_connections: add masked direct input-to-output weights.
        nonlinearity: a stax elementwise layer (``stax.Relu``, ``stax.Elu``).

    Returns:
        ``(init_fn, apply_fn)``; ``apply_fn(params, x)`` returns one array
        per entry of ``param_dims``, shaped ``x.shape`` for an entry of 1 and
        ``x.shape[:-1] + (p, D)`` for ``p > 1``.
    """
    if not isinstance(input_dim, int | np.integer) or input_dim < 1:
        raise ValueError(
            f"AutoregressiveNN: input_dim must be a positive int, got {input_dim!r}"
        )
    hidden_dims = list(hidden_dims)
    if any(not isinstance(h, int | np.integer) or h < 1 for h in hidden_dims):
        raise ValueError(
            f"AutoregressiveNN: hidden_dims must be positive ints, got {hidden_dims!r}"
        )
    param_dims = list(param_dims)
    if permutation is None:
        permutation = np.arange(input_dim)
    permutation = np.asarray(permutation)
    if sorted(permutation.tolist()) != list(range(input_dim)):
        raise ValueError(
            f"AutoregressiveNN: permutation must order 0..{input_dim - 1}, got "
            f"{permutation.tolist()!r}"
        )
    inputs, hidden = _degrees(input_dim, hidden_dims, permutation)
    count = sum(param_dims)
    outputs = np.tile(inputs, count)
    layer_degrees = [inputs, *hidden]
    masks = [
        jnp.asarray(later[:, None] >= earlier[None, :], jnp.float32)
        for earlier, later in zip(layer_degrees[:-1], layer_degrees[1:])
    ]
    masks.append(
        jnp.asarray(outputs[:, None] > layer_degrees[-1][None, :], jnp.float32)
    )
    skip_mask = jnp.asarray(outputs[:, None] > inputs[None, :], jnp.float32)
    act = nonlinearity[1]

    def init_fn(key, input_shape):
        if input_shape[-1] != input_dim:
            raise ValueError(
                f"AutoregressiveNN: inputs have {input_shape[-1]} dims, the network "
                f"was built for {input_dim}"
            )
        keys = jax.random.split(key, len(masks) + 1)
        params = []
        for k, mask in zip(keys, masks):
            fan_out, fan_in = mask.shape
            w = jax.random.normal(k, (fan_out, fan_in)) * np.sqrt(
                2.0 / (fan_in + fan_out)
            )
            params.append((w, jnp.zeros(fan_out)))
        if skip_connections:
            w = jax.random.normal(keys[-1], skip_mask.shape) * np.sqrt(1.0 / input_dim)
            params.append(w)
        return tuple(input_shape[:-1]) + (count * input_dim,), params

    def apply_fn(params, x, **kwargs):
        h = x
        for i, mask in enumerate(masks):
            w, b = params[i]
            h = h @ (w * mask).T + b
            if i < len(masks) - 1:
                h = act((), h)
        if skip_connections:
            h = h + x @ (params[-1] * skip_mask).T
        h = h.reshape(h.shape[:-1] + (count, input_dim))
        out, start = [], 0
        for p in param_dims:
            piece = h[..., start : start + p, :]
            out.append(piece[..., 0, :] if p == 1 else piece)
            start += p
        return tuple(out)

    return init_fn, apply_fn
