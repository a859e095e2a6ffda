"""probnn: probabilistic programming with effect handlers on JAX, for Flax users.

>>> import probnn
>>> import probnn.distributions as dist
>>> def model(y=None):
...     mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
...     with probnn.plate("data", 3):
...         probnn.sample("y", dist.Normal(mu, 1.0), obs=y)
>>> tr = probnn.handlers.trace(probnn.handlers.seed(model, rng_seed=0)).get_trace()
>>> tr["y"]["value"].shape
(3,)
"""

from probnn import diagnostics, distributions, handlers, infer, nn, ops, optim, util
from probnn.control_flow import scan
from probnn.distributions import enable_validation, validation_enabled
from probnn.nn import random_module
from probnn.primitives import (
    deterministic,
    factor,
    get_mask,
    module,
    mutable,
    param,
    plate,
    plate_stack,
    prng_key,
    sample,
    subsample,
)
from probnn.util import enable_x64, set_host_device_count, set_platform

__version__ = "0.1.0"

__all__ = [
    "deterministic",
    "diagnostics",
    "distributions",
    "enable_validation",
    "enable_x64",
    "factor",
    "get_mask",
    "handlers",
    "infer",
    "module",
    "mutable",
    "nn",
    "ops",
    "optim",
    "param",
    "plate",
    "plate_stack",
    "prng_key",
    "random_module",
    "sample",
    "scan",
    "set_host_device_count",
    "set_platform",
    "subsample",
    "util",
    "validation_enabled",
]
