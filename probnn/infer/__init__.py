"""Inference: ELBOs and SVI, log densities and constrained/unconstrained maps."""

from probnn.infer.elbo import ELBO, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from probnn.infer.predictive import Predictive, log_likelihood
from probnn.infer.svi import SVI, SVIRunResult, SVIState
from probnn.infer.util import constrain_fn, log_density, transform_fn

__all__ = [
    "ELBO",
    "Predictive",
    "SVI",
    "RenyiELBO",
    "SVIRunResult",
    "SVIState",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
    "constrain_fn",
    "log_density",
    "log_likelihood",
    "transform_fn",
]
