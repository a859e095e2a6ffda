"""Array operations at NumPyro's ``numpyro.ops`` import path."""

from probnn.ops.indexing import Vindex, vindex

__all__ = ["Vindex", "vindex"]
