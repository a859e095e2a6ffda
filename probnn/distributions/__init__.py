"""Probability distributions, constraints and their helpers.

Import as ``import probnn.distributions as dist``.
"""

from probnn.distributions import constraints
from probnn.distributions.continuous import Normal
from probnn.distributions.discrete import Bernoulli, Categorical
from probnn.distributions.distribution import (
    Delta,
    Distribution,
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
    Unit,
    enable_validation,
)

__all__ = [
    "Bernoulli",
    "Categorical",
    "Delta",
    "Distribution",
    "ExpandedDistribution",
    "Independent",
    "MaskedDistribution",
    "Normal",
    "Unit",
    "constraints",
    "enable_validation",
]
