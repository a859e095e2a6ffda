"""Networks in models: stax, Flax Linen and Flax NNX modules as param sites
(:func:`module`) or Bayesian networks (:func:`random_module`), and trained
results written back into Flax objects."""

from probnn.nn._core import module, param_paths, random_module
from probnn.nn.auto_reg_nn import AutoregressiveNN
from probnn.nn.block_neural_arn import BlockNeuralAutoregressiveNN
from probnn.nn.export import (
    network_params,
    param_shardings,
    to_linen_variables,
    to_nnx,
)
from probnn.nn.training import ELBOModule, ModelState

__all__ = [
    "AutoregressiveNN",
    "BlockNeuralAutoregressiveNN",
    "ELBOModule",
    "ModelState",
    "module",
    "network_params",
    "param_paths",
    "param_shardings",
    "random_module",
    "to_linen_variables",
    "to_nnx",
]
