"""NumPyro-compatible import paths: ``control_flow`` (``scan``, ``cond``),
``funsor`` (enumeration) and ``module`` (``flax_module``, ``nnx_module``,
``eqx_module`` and their ``random_*`` variants)."""
