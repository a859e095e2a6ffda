"""Mixtures and zero-inflated wrappers."""

from __future__ import annotations

__all__: list[str] = []
