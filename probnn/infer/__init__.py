"""Inference: ELBOs and SVI, log densities and constrained/unconstrained maps."""

from probnn.enumeration import config_enumerate
from probnn.infer import autoguide
from probnn.infer._packed import PackedDict
from probnn.infer.discrete import infer_discrete
from probnn.infer.elbo import (
    ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from probnn.infer.hmc import HMC, NUTS, HMCState
from probnn.infer.hmc_gibbs import HMCECS
from probnn.infer.initialization import (
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
)
from probnn.infer.mcmc import MCMC
from probnn.infer.predictive import Predictive, log_likelihood
from probnn.infer.svi import SVI, SVIRunResult, SVIState, shard_state
from probnn.infer.util import (
    constrain_fn,
    initialize_model,
    log_density,
    potential_energy,
    transform_fn,
)

__all__ = [
    "ELBO",
    "HMC",
    "HMCECS",
    "HMCState",
    "MCMC",
    "NUTS",
    "Predictive",
    "SVI",
    "RenyiELBO",
    "SVIRunResult",
    "SVIState",
    "PackedDict",
    "shard_state",
    "TraceEnum_ELBO",
    "TraceGraph_ELBO",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
    "autoguide",
    "config_enumerate",
    "constrain_fn",
    "infer_discrete",
    "initialize_model",
    "init_to_feasible",
    "init_to_mean",
    "init_to_median",
    "init_to_sample",
    "init_to_uniform",
    "init_to_value",
    "log_density",
    "log_likelihood",
    "potential_energy",
    "transform_fn",
]
