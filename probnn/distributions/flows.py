"""Normalizing-flow transforms driven by neural networks (NumPyro's
``numpyro.distributions.flows`` names and signatures).

- :class:`BlockNeuralAutoregressiveTransform`: BNAF (De Cao et al., 2019),
  a strictly increasing autoregressive map given by a
  :func:`~probnn.nn.block_neural_arn.BlockNeuralAutoregressiveNN`; no
  closed-form inverse.
- :class:`InverseAutoregressiveTransform`: IAF (Kingma et al., 2016),
  ``y = exp(log_scale(x)) * x + loc(x)`` with ``(loc, log_scale)`` from an
  :func:`~probnn.nn.auto_reg_nn.AutoregressiveNN`; its inverse runs the
  network once per dim.

A :class:`~probnn.distributions.TransformedDistribution` scores its own
draws from the pre-images it kept, so a flow without an inverse still serves
as a guide.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from probnn.distributions import constraints
from probnn.distributions.transforms import Transform

__all__ = ["BlockNeuralAutoregressiveTransform", "InverseAutoregressiveTransform"]


class BlockNeuralAutoregressiveTransform(Transform):
    """BNAF: ``y = f(x)`` with ``f`` a block neural autoregressive network.

    Args:
        bn_arn: a function ``x -> (y, log_det)`` such as the ``apply_fn`` of
            :func:`~probnn.nn.block_neural_arn.BlockNeuralAutoregressiveNN`
            with its params bound (what ``probnn.module`` returns).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    pytree_aux_fields = ("bn_arn",)

    def __init__(self, bn_arn):
        if not callable(bn_arn):
            raise TypeError(
                "BlockNeuralAutoregressiveTransform: bn_arn must be callable, got "
                f"{type(bn_arn).__name__}"
            )
        self.bn_arn = bn_arn

    def __call__(self, x):
        return self.bn_arn(x)[0]

    def _inverse(self, y):
        raise NotImplementedError(
            "BlockNeuralAutoregressiveTransform has no closed-form inverse; a "
            "TransformedDistribution can score only its own draws"
        )

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return jnp.sum(self.bn_arn(x)[1], axis=-1)


class InverseAutoregressiveTransform(Transform):
    """IAF: ``y = exp(log_scale) * x + loc``, ``(loc, log_scale) =
    autoregressive_nn(x)``, ``log_scale`` clipped to ``[log_scale_min_clip,
    log_scale_max_clip]``.

    Args:
        autoregressive_nn: a function ``x -> (loc, log_scale)`` whose output
            ``i`` depends only on inputs before ``i`` in the network's order
            (the ``apply_fn`` of :func:`~probnn.nn.auto_reg_nn.AutoregressiveNN`
            with its params bound).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    pytree_aux_fields = ("arn", "log_scale_min_clip", "log_scale_max_clip")

    def __init__(
        self, autoregressive_nn, log_scale_min_clip=-5.0, log_scale_max_clip=3.0
    ):
        if not callable(autoregressive_nn):
            raise TypeError(
                "InverseAutoregressiveTransform: autoregressive_nn must be callable, "
                f"got {type(autoregressive_nn).__name__}"
            )
        self.arn = autoregressive_nn
        self.log_scale_min_clip = log_scale_min_clip
        self.log_scale_max_clip = log_scale_max_clip

    def _loc_log_scale(self, x):
        loc, log_scale = self.arn(x)
        log_scale = jnp.clip(
            log_scale, self.log_scale_min_clip, self.log_scale_max_clip
        )
        return loc, log_scale

    def __call__(self, x):
        loc, log_scale = self._loc_log_scale(x)
        return jnp.exp(log_scale) * x + loc

    def _inverse(self, y):
        # x_i needs x_<i: D passes of the network, each fixing one more dim
        def step(x, _):
            loc, log_scale = self._loc_log_scale(x)
            return (y - loc) * jnp.exp(-log_scale), None

        dim = jnp.shape(y)[-1]
        return jax.lax.scan(step, jnp.zeros_like(y), None, length=dim)[0]

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return jnp.sum(self._loc_log_scale(x)[1], axis=-1)
