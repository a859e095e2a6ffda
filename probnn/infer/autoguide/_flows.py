"""Autoguides whose posterior is a standard Normal pushed through a
normalizing flow (IAF or BNAF) over the flattened unconstrained latents."""

from collections.abc import Callable

import numpy as np
from jax.example_libraries import stax

import probnn.distributions as dist
from probnn.distributions.flows import (
    BlockNeuralAutoregressiveTransform,
    InverseAutoregressiveTransform,
)
from probnn.distributions.transforms import (
    ComposeTransform,
    PermuteTransform,
    Transform,
)
from probnn.handlers import substitute
from probnn.infer.autoguide._continuous import AutoContinuous
from probnn.infer.initialization import init_to_uniform
from probnn.nn import module
from probnn.nn.auto_reg_nn import AutoregressiveNN
from probnn.nn.block_neural_arn import BlockNeuralAutoregressiveNN


def _num_flows(owner: str, num_flows) -> int:
    if not isinstance(num_flows, int) or num_flows < 1:
        raise ValueError(
            f"{owner}: num_flows must be a positive int, got {num_flows!r}"
        )
    return num_flows


class _FlowGuide(AutoContinuous):
    """Shared by the flow guides: ``_flows()`` builds the list of
    transforms, registering each network as the module site
    ``{prefix}_arn__{i}``."""

    def _flows(self) -> list[Transform]:
        raise NotImplementedError

    def _setup(self) -> None:
        super()._setup()
        if self.latent_dim == 1:
            raise ValueError(
                f"{type(self).__name__}: the model has one latent dim, where a flow "
                "is no more than an affine map; use AutoDiagonalNormal"
            )

    def _reversal(self) -> PermuteTransform:
        return PermuteTransform(np.arange(self.latent_dim)[::-1])

    def _get_posterior(self):
        return dist.TransformedDistribution(self.get_base_dist(), self._flows())

    def get_transform(self, params: dict) -> Transform:
        self._require_prototype("get_transform")
        return ComposeTransform(substitute(self._flows, data=params)())

    def get_posterior(self, params: dict):
        flows = self.get_transform(params).parts
        return dist.TransformedDistribution(self.get_base_dist(), flows)

    def median(self, params: dict) -> dict:
        raise NotImplementedError(
            f"{type(self).__name__}.median: the flow posterior has no closed-form "
            "median; use sample_posterior and take the draws' median"
        )

    def quantiles(self, params: dict, quantiles) -> dict:
        raise NotImplementedError(
            f"{type(self).__name__}.quantiles: the flow posterior has no "
            "closed-form quantiles; use sample_posterior and take the draws' quantiles"
        )


class AutoIAFNormal(_FlowGuide):
    """A standard Normal through ``num_flows`` inverse autoregressive flows
    (Kingma et al., 2016), the order reversed between flows; each flow's
    MADE network is the module site ``{prefix}_arn__{i}``.

    Args:
        model: the model.
        prefix: prefix of the param sites.
        init_loc_fn: initialization strategy of the prototype run.
        num_flows: number of IAF layers.
        hidden_dims: hidden widths of each MADE network (default
            ``[latent_dim, latent_dim]``).
        skip_connections: direct masked input-to-output weights.
        nonlinearity: a stax elementwise layer.
    """

    def __init__(
        self,
        model: Callable,
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        num_flows: int = 3,
        hidden_dims=None,
        skip_connections: bool = False,
        nonlinearity=stax.Elu,
    ):
        self.num_flows = _num_flows("AutoIAFNormal", num_flows)
        self._hidden_dims = hidden_dims
        self._skip_connections = skip_connections
        self._nonlinearity = nonlinearity
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    def _flows(self):
        dim = self.latent_dim
        hidden = [dim, dim] if self._hidden_dims is None else list(self._hidden_dims)
        flows = []
        for i in range(self.num_flows):
            if i > 0:
                flows.append(self._reversal())
            network = AutoregressiveNN(
                dim,
                hidden,
                permutation=np.arange(dim),
                skip_connections=self._skip_connections,
                nonlinearity=self._nonlinearity,
            )
            apply = module(f"{self.prefix}_arn__{i}", network, (dim,))
            flows.append(InverseAutoregressiveTransform(apply))
        return flows


class AutoBNAFNormal(_FlowGuide):
    """A standard Normal through ``num_flows`` block neural autoregressive
    flows (De Cao et al., 2019), the order reversed between flows and all
    but the last flow gated-residual; each network is the module site
    ``{prefix}_arn__{i}``.

    Args:
        model: the model.
        prefix: prefix of the param sites.
        init_loc_fn: initialization strategy of the prototype run.
        num_flows: number of BNAF layers.
        hidden_factors: hidden units per latent dim in each hidden layer.
    """

    def __init__(
        self,
        model: Callable,
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        num_flows: int = 1,
        hidden_factors=(8, 8),
    ):
        self.num_flows = _num_flows("AutoBNAFNormal", num_flows)
        self._hidden_factors = list(hidden_factors)
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    def _flows(self):
        dim = self.latent_dim
        flows = []
        for i in range(self.num_flows):
            if i > 0:
                flows.append(self._reversal())
            residual = "gated" if i < self.num_flows - 1 else None
            network = BlockNeuralAutoregressiveNN(dim, self._hidden_factors, residual)
            apply = module(f"{self.prefix}_arn__{i}", network, (dim,))
            flows.append(BlockNeuralAutoregressiveTransform(apply))
        return flows
