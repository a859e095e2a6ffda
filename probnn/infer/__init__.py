"""Inference: log densities (more algorithms arrive with later releases)."""

from probnn.infer.util import log_density

__all__ = ["log_density"]
