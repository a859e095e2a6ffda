"""NumPyro-compatible import paths (aliases only)."""
