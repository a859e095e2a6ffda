"""Helpers for NumPyro's example scripts (``numpyro.examples``)."""
