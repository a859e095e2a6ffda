"""The block neural autoregressive network of BNAF (De Cao, Titov and Aziz,
2019), as a stax ``(init_fn, apply_fn)`` pair whose ``apply_fn`` returns
``(outputs, log_det)``.

Each of the ``D`` input dims owns a block of units in every layer. A layer
maps block ``j`` into block ``i`` only for ``j <= i``; the diagonal blocks
have positive weights (exponentiated) and every weight row is normalised
(``exp(g) * w / |w|``), so that with an increasing activation between
layers (``LeakyTanh`` by default, or ``Tanh``) output ``i`` is a strictly
increasing function of input ``i`` given inputs ``< i``. The
log-derivative of each output with respect to its own input is carried
through the layers in log space (a log-sum-exp over the units of a block),
never forming a Jacobian.

>>> import jax, jax.numpy as jnp
>>> init_fn, apply_fn = BlockNeuralAutoregressiveNN(3, [4, 4])
>>> _, params = init_fn(jax.random.PRNGKey(0), (3,))
>>> y, log_det = apply_fn(params, jnp.array([0.1, -0.3, 0.5]))
>>> y.shape, log_det.shape
((3,), (3,))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["BlockNeuralAutoregressiveNN", "LeakyTanh", "Tanh"]


def _log_dtanh(h):
    # log(1 - tanh(h)^2), without cancellation in the tails
    return 2.0 * (jnp.log(2.0) - h - jax.nn.softplus(-2.0 * h))


def _activation(fn, log_derivative):
    """A layer between the masked dense layers: ``(h, log_dh) -> (fn(h),
    log_dh + log fn'(h))``, the log-derivatives laid out ``(..., dim,
    units per dim, 1)``."""

    def init_fn(key, input_shape):
        return tuple(input_shape), ()

    def apply_fn(params, inputs, **kwargs):
        h, log_dh = inputs
        shaped = h.reshape(log_dh.shape[:-1])
        return fn(h), log_dh + log_derivative(shaped)[..., None]

    return init_fn, apply_fn


def Tanh():
    """``tanh`` between BNAF layers: the flow's image is then bounded."""
    return _activation(jnp.tanh, _log_dtanh)


def LeakyTanh(min_grad: float = 0.01):
    """``tanh(h) + min_grad * h`` between BNAF layers (the default): the
    slope never falls below ``min_grad``, so the flow maps onto all of R^D."""
    if not min_grad > 0:
        raise ValueError(f"LeakyTanh: min_grad must be positive, got {min_grad!r}")
    log_min_grad = float(np.log(min_grad))
    return _activation(
        lambda h: jnp.tanh(h) + min_grad * h,
        lambda h: jnp.logaddexp(_log_dtanh(h), log_min_grad),
    )


def _block_masks(dim: int, out_factor: int, in_factor: int):
    """Boolean masks (out, in) of the diagonal blocks and of the blocks
    strictly below the diagonal."""
    rows = np.repeat(np.arange(dim), out_factor)[:, None]
    cols = np.repeat(np.arange(dim), in_factor)[None, :]
    return rows == cols, rows > cols


def _masked_dense(dim: int, in_factor: int, out_factor: int):
    diagonal, below = _block_masks(dim, out_factor, in_factor)

    def init_fn(key, input_shape):
        w_key, s_key, b_key = jax.random.split(key, 3)
        fan_in, fan_out = dim * in_factor, dim * out_factor
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        w = jax.random.uniform(w_key, (fan_out, fan_in), minval=-bound, maxval=bound)
        # each normalised weight row starts with a length drawn from (0, 1), so
        # that the initial map is gentle (rows of length one would multiply
        # slopes up layer by layer: all weights of a 1-D flow are positive)
        log_scale = jnp.log(jax.random.uniform(s_key, (fan_out,), minval=1e-3))
        b = jax.random.uniform(b_key, (fan_out,), minval=-1.0, maxval=1.0)
        b = b / np.sqrt(fan_out)
        return tuple(input_shape[:-1]) + (fan_out,), (w, log_scale, b)

    def apply_fn(params, inputs):
        """``(h, log_dh)`` -> the layer's output and the log-derivatives
        ``(..., dim, out_factor, 1)`` of its units with respect to their
        block's original input."""
        w, log_scale, b = params
        h, log_dh = inputs
        effective = jnp.where(diagonal, jnp.exp(w), jnp.where(below, w, 0.0))
        log_row_norm = 0.5 * jnp.log(jnp.sum(effective**2, axis=-1))
        scale = jnp.exp(log_scale - log_row_norm)
        out = h @ (effective * scale[:, None]).T + b
        # log of the diagonal blocks of the normalised weights, (dim, out, in)
        log_w = (w + (log_scale - log_row_norm)[:, None]).reshape(
            dim, out_factor, dim, in_factor
        )
        log_w = jnp.diagonal(log_w, axis1=0, axis2=2).transpose(2, 0, 1)
        # chain rule in log space: (dim, out, in) o (..., dim, in, 1)
        log_dh = jax.nn.logsumexp(
            log_w[..., :, :, None] + log_dh[..., None, :, :], axis=-2
        )
        return out, log_dh

    return init_fn, apply_fn


def BlockNeuralAutoregressiveNN(
    input_dim: int, hidden_factors=(8, 8), residual=None, activation=None
):
    """The network of a BNAF flow (NumPyro's signature; see
    :class:`probnn.distributions.flows.BlockNeuralAutoregressiveTransform`).

    Args:
        input_dim: ``D``, the size of the input vector.
        hidden_factors: units per input dim in each hidden layer.
        residual: None, ``"normal"`` (``y = x + f(x)``) or ``"gated"``
            (``y = g f(x) + (1 - g) x`` with a learned ``g`` in (0, 1)).
        activation: the layer between masked dense layers, :func:`LeakyTanh`
            (default) or :func:`Tanh`.

    Returns:
        ``(init_fn, apply_fn)``; ``apply_fn(params, x)`` returns ``(y,
        log_det)``, ``log_det`` the log-derivative of each output with
        respect to its own input, shaped like ``x``.
    """
    if not isinstance(input_dim, int | np.integer) or input_dim < 1:
        raise ValueError(
            "BlockNeuralAutoregressiveNN: input_dim must be a positive int, got "
            f"{input_dim!r}"
        )
    factors = [1, *hidden_factors, 1]
    if any(not isinstance(f, int | np.integer) or f < 1 for f in hidden_factors):
        raise ValueError(
            "BlockNeuralAutoregressiveNN: hidden_factors must be positive ints, got "
            f"{list(hidden_factors)!r}"
        )
    if residual not in (None, "normal", "gated"):
        raise ValueError(
            "BlockNeuralAutoregressiveNN: residual must be None, 'normal' or 'gated', "
            f"got {residual!r}"
        )
    layers = [_masked_dense(input_dim, a, b) for a, b in zip(factors[:-1], factors[1:])]
    _, activate = LeakyTanh() if activation is None else activation

    def init_fn(key, input_shape):
        if input_shape[-1] != input_dim:
            raise ValueError(
                f"BlockNeuralAutoregressiveNN: inputs have {input_shape[-1]} dims, "
                f"the network was built for {input_dim}"
            )
        keys = jax.random.split(key, len(layers))
        params = [layer[0](k, input_shape)[1] for layer, k in zip(layers, keys)]
        if residual == "gated":
            params.append(jnp.zeros(()))
        return tuple(input_shape), params

    def apply_fn(params, x, **kwargs):
        h = x
        log_dh = jnp.zeros(jnp.shape(x) + (1, 1))
        for i, (_, apply_layer) in enumerate(layers):
            h, log_dh = apply_layer(params[i], (h, log_dh))
            if i < len(layers) - 1:
                h, log_dh = activate((), (h, log_dh))
        log_det = log_dh[..., 0, 0]
        if residual == "normal":
            return x + h, jax.nn.softplus(log_det)
        if residual == "gated":
            gate = params[-1]
            y = jax.nn.sigmoid(gate) * h + jax.nn.sigmoid(-gate) * x
            log_det = jnp.logaddexp(
                log_det + jax.nn.log_sigmoid(gate), jax.nn.log_sigmoid(-gate)
            )
            return y, log_det
        return h, log_det

    return init_fn, apply_fn
