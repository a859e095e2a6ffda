"""NumPyro-compatible import paths: ``control_flow`` (``scan``, ``cond``)
and ``funsor`` (enumeration)."""
