"""Enumeration at NumPyro's import path (NumPyro needs the funsor package for
these; probnn does them in JAX): ``config_enumerate``, ``enum``,
``infer_discrete``, ``markov`` and an enumeration-aware ``log_density``."""

from probnn.enumeration import config_enumerate, enum, markov
from probnn.infer.discrete import infer_discrete
from probnn.infer.util import log_density

__all__ = ["config_enumerate", "enum", "infer_discrete", "log_density", "markov"]
