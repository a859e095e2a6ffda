"""Networks in models: stax, Flax Linen and Flax NNX modules as param sites
(:func:`module`) or Bayesian networks (:func:`random_module`), and trained
results written back into Flax objects."""

from probnn.nn._core import module, param_paths, random_module

__all__ = ["module", "param_paths", "random_module"]
