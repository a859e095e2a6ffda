"""Probability distributions, constraints, transforms and KL divergences.

Import as ``import probnn.distributions as dist``. Each family module lists
its public names in ``__all__``; this package re-exports them.

Foreign distributions: ``probnn.sample(name, fn)`` accepts any object with
``sample(key, sample_shape)`` (returning ``sample_shape + batch_shape +
event_shape``), ``log_prob(value)`` (returning the batch-shaped log density),
and ``batch_shape`` and ``event_shape`` tuples. Inside a plate whose size
differs from its batch shape it also needs ``expand(batch_shape)``, and under
the ``mask`` handler ``mask(mask)``; probnn distributions have both.
"""

from probnn.distributions import constraints, transforms
from probnn.distributions.bounded import *  # noqa: F403
from probnn.distributions.bounded import __all__ as _bounded
from probnn.distributions.conjugate import *  # noqa: F403
from probnn.distributions.conjugate import __all__ as _conjugate
from probnn.distributions.continuous import *  # noqa: F403
from probnn.distributions.continuous import __all__ as _continuous
from probnn.distributions.discrete import *  # noqa: F403
from probnn.distributions.discrete import __all__ as _discrete
from probnn.distributions.distribution import (
    Delta,
    Distribution,
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
    Unit,
    enable_validation,
    validation_enabled,
)
from probnn.distributions.kl import kl_divergence, register_kl
from probnn.distributions.mixtures import *  # noqa: F403
from probnn.distributions.mixtures import __all__ as _mixtures
from probnn.distributions.multivariate import *  # noqa: F403
from probnn.distributions.multivariate import __all__ as _multivariate
from probnn.distributions.positive import *  # noqa: F403
from probnn.distributions.positive import __all__ as _positive
from probnn.distributions.transformed import TransformedDistribution
from probnn.distributions.transforms import biject_to
from probnn.distributions.zero_inflated import *  # noqa: F403
from probnn.distributions.zero_inflated import __all__ as _zero_inflated

__all__ = [
    "Delta",
    "Distribution",
    "ExpandedDistribution",
    "Independent",
    "MaskedDistribution",
    "TransformedDistribution",
    "Unit",
    "biject_to",
    "constraints",
    "transforms",
    "enable_validation",
    "kl_divergence",
    "validation_enabled",
    "register_kl",
    *_bounded,
    *_conjugate,
    *_continuous,
    *_discrete,
    *_mixtures,
    *_multivariate,
    *_positive,
    *_zero_inflated,
]
