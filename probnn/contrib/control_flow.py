"""Alias of :mod:`probnn.control_flow` at NumPyro's import path."""

from probnn.control_flow import scan

__all__ = ["scan"]
