"""Mixtures and zero-inflated wrappers.

A mixture's components are indexed by a ``Categorical`` mixing distribution:
:class:`MixtureSameFamily` takes one distribution whose last batch dim indexes
the components, :class:`MixtureGeneral` a list of distributions, and
:func:`Mixture` picks between them as NumPyro's does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from probnn.distributions import constraints
from probnn.distributions.conjugate import NegativeBinomial2
from probnn.distributions.discrete import Categorical
from probnn.distributions.distribution import Distribution, _not_inferable
from probnn.distributions.zero_inflated import ZeroInflatedLogits, ZeroInflatedProbs

__all__ = [
    "Mixture",
    "MixtureGeneral",
    "MixtureSameFamily",
    "ZeroInflatedDistribution",
    "ZeroInflatedNegativeBinomial2",
]


def ZeroInflatedDistribution(
    base_dist: Distribution,
    gate=None,
    gate_logits=None,
    *,
    validate_args: bool | None = None,
) -> ZeroInflatedProbs:
    """``base_dist`` with extra zeros, from exactly one of ``gate`` (the
    probability of an extra zero) or ``gate_logits`` (its log-odds).

    Args:
        base_dist: a discrete distribution with an empty event shape.
        gate: probability of an extra zero.
        gate_logits: log-odds of an extra zero.

    Returns:
        a :class:`ZeroInflatedProbs` or :class:`ZeroInflatedLogits`.

    >>> import probnn.distributions as dist
    >>> d = ZeroInflatedDistribution(dist.Poisson(2.0), gate=0.25)
    >>> round(float(d.mean), 4)
    1.5
    """
    if (gate is None) == (gate_logits is None):
        raise ValueError(
            "ZeroInflatedDistribution: pass exactly one of gate= or gate_logits="
        )
    if gate is not None:
        return ZeroInflatedProbs(base_dist, gate, validate_args=validate_args)
    return ZeroInflatedLogits(base_dist, gate_logits, validate_args=validate_args)


def ZeroInflatedNegativeBinomial2(
    mean,
    concentration,
    *,
    gate=None,
    gate_logits=None,
    validate_args: bool | None = None,
) -> ZeroInflatedProbs:
    """:class:`NegativeBinomial2` with extra zeros (see
    :func:`ZeroInflatedDistribution`)."""
    return ZeroInflatedDistribution(
        NegativeBinomial2(mean, concentration, validate_args=validate_args),
        gate=gate,
        gate_logits=gate_logits,
        validate_args=validate_args,
    )


def _with_batch_rank(d: Distribution, ndim: int) -> Distribution:
    """``d`` with leading size-1 batch dims up to ``ndim`` batch dims, so that
    dims that vmap or scan later add to every leaf line up."""
    missing = ndim - len(d.batch_shape)
    if missing <= 0:
        return d
    return jax.tree.map(
        lambda leaf: jnp.reshape(leaf, (1,) * missing + jnp.shape(leaf)), d
    )


def _check_mixing(name: str, mixing_distribution) -> None:
    if not isinstance(mixing_distribution, Categorical):
        raise ValueError(
            f"{name}: mixing_distribution must be a Categorical, got "
            f"{type(mixing_distribution).__name__}"
        )


class _MixtureBase(Distribution):
    """What the two mixtures share; subclasses supply the ``component_*``
    methods, with the components along dim ``mixture_dim``."""

    _mixture_size: int

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        _not_inferable(cls, "it is built from distributions, not from parameter shapes")

    @property
    def mixture_size(self) -> int:
        """The number of components."""
        return self._mixture_size

    @property
    def mixing_distribution(self) -> Categorical:
        """The ``Categorical`` distribution over components."""
        return self._mixing_distribution

    @property
    def mixture_dim(self) -> int:
        return -self.event_dim - 1

    @property
    def has_rsample(self):
        return False

    def _mixing_log_weights(self):
        """Normalised log weights, shape ``batch_shape + (K,)`` up to broadcasting."""
        return jax.nn.log_softmax(self.mixing_distribution.logits, axis=-1)

    def _weights_for_event(self):
        probs = jnp.exp(self._mixing_log_weights())
        return jnp.reshape(probs, jnp.shape(probs) + (1,) * self.event_dim)

    @property
    def mean(self):
        weighted = self._weights_for_event() * self.component_mean
        return jnp.broadcast_to(jnp.sum(weighted, axis=self.mixture_dim), self.shape())

    @property
    def variance(self):
        # total variance = mean of the component variances + variance of the means
        weights = self._weights_for_event()
        within = jnp.sum(weights * self.component_variance, axis=self.mixture_dim)
        means = self.component_mean
        centre = jnp.expand_dims(self.mean, self.mixture_dim)
        between = jnp.sum(weights * jnp.square(means - centre), axis=self.mixture_dim)
        return jnp.broadcast_to(within + between, self.shape())

    def cdf(self, value):
        weights = jnp.exp(self._mixing_log_weights())
        return jnp.sum(weights * self.component_cdf(value), axis=-1)

    def sample_with_intermediates(self, key, sample_shape=()):
        """A draw together with ``[indices]``, the component chosen for each."""
        sample_shape = tuple(sample_shape)
        key_components, key_indices = jax.random.split(key)
        draws = self.component_sample(key_components, sample_shape)
        indices = jax.random.categorical(
            key_indices,
            self._mixing_log_weights(),
            axis=-1,
            shape=sample_shape + self.batch_shape,
        )
        index = jnp.reshape(indices, indices.shape + (1,) * (self.event_dim + 1))
        index = jnp.broadcast_to(
            index, indices.shape + (1,) + jnp.shape(draws)[indices.ndim + 1 :]
        )
        chosen = jnp.take_along_axis(draws, index, axis=self.mixture_dim)
        return jnp.squeeze(chosen, axis=self.mixture_dim), [indices]

    def sample(self, key, sample_shape=()):
        return self.sample_with_intermediates(key, sample_shape)[0]

    def log_prob(self, value):
        self._validate_sample(value)
        return jax.nn.logsumexp(self.component_log_probs(value), axis=-1)


class MixtureSameFamily(_MixtureBase):
    """Finite mixture of the components of one batched distribution.

    Args:
        mixing_distribution: a :class:`Categorical` over the ``K`` components.
        component_distribution: a distribution whose last batch dim has size
            ``K`` and indexes the components.

    >>> import probnn.distributions as dist
    >>> mixing = dist.Categorical(probs=jnp.array([0.3, 0.7]))
    >>> components = dist.Normal(jnp.array([-1.0, 1.0]), 1.0)
    >>> d = MixtureSameFamily(mixing, components)
    >>> d.batch_shape, round(float(d.mean), 4)
    ((), 0.4)
    """

    pytree_data_fields = ("_mixing_distribution", "_component_distribution")
    pytree_aux_fields = ("_mixture_size",)

    def __init__(
        self,
        mixing_distribution: Categorical,
        component_distribution: Distribution,
        *,
        validate_args: bool | None = None,
    ):
        _check_mixing("MixtureSameFamily", mixing_distribution)
        if not isinstance(component_distribution, Distribution):
            raise ValueError(
                "MixtureSameFamily: component_distribution must be a Distribution, "
                f"got {type(component_distribution).__name__}"
            )
        size = mixing_distribution.num_categories
        component_batch = component_distribution.batch_shape
        if not component_batch or component_batch[-1] != size:
            raise ValueError(
                "MixtureSameFamily: the last batch dim of component_distribution "
                f"(batch shape {component_batch}) must equal the {size} "
                "categories of mixing_distribution"
            )
        batch_shape = tuple(
            jnp.broadcast_shapes(mixing_distribution.batch_shape, component_batch[:-1])
        )
        ndim = len(batch_shape)
        self._mixing_distribution = _with_batch_rank(mixing_distribution, ndim)
        self._component_distribution = _with_batch_rank(
            component_distribution, ndim + 1
        )
        self._mixture_size = size
        super().__init__(
            batch_shape,
            component_distribution.event_shape,
            validate_args=validate_args,
        )

    @property
    def component_distribution(self) -> Distribution:
        """The batched distribution of the components."""
        return self._component_distribution

    @property
    def support(self):
        return self.component_distribution.support

    @property
    def component_mean(self):
        return self.component_distribution.mean

    @property
    def component_variance(self):
        return self.component_distribution.variance

    def component_cdf(self, value):
        return self.component_distribution.cdf(jnp.expand_dims(value, -1))

    def component_sample(self, key, sample_shape=()):
        """Draws of every component, shape ``sample_shape + batch_shape + (K,) +
        event_shape``."""
        shape = tuple(sample_shape) + self.batch_shape + (self.mixture_size,)
        return self.component_distribution.expand(shape).sample(key)

    def component_log_probs(self, value):
        """Log weight plus log density of each component, components last."""
        value = jnp.expand_dims(jnp.asarray(value), self.mixture_dim)
        log_probs = self.component_distribution.log_prob(value)
        return self._mixing_log_weights() + log_probs


class MixtureGeneral(_MixtureBase):
    """Finite mixture of a list of distributions with a common event shape and
    support (the families may differ).

    Args:
        mixing_distribution: a :class:`Categorical` over the components.
        component_distributions: one distribution per category.
        support: the mixture's support; when given, each component's log
            density is set to ``-inf`` outside its own support.

    >>> import probnn.distributions as dist
    >>> mixing = dist.Categorical(probs=jnp.array([0.5, 0.5]))
    >>> d = MixtureGeneral(mixing, [dist.Normal(-1.0, 1.0), dist.Normal(1.0, 1.0)])
    >>> float(d.mean), round(float(d.variance), 4)
    (0.0, 2.0)
    """

    pytree_data_fields = ("_mixing_distribution", "_component_distributions")
    pytree_aux_fields = ("_mixture_size", "_support")

    def __init__(
        self,
        mixing_distribution: Categorical,
        component_distributions,
        *,
        support: constraints.Constraint | None = None,
        validate_args: bool | None = None,
    ):
        _check_mixing("MixtureGeneral", mixing_distribution)
        try:
            components = list(component_distributions)
        except TypeError:
            raise ValueError(
                "MixtureGeneral: component_distributions must be a list of "
                f"distributions, got {type(component_distributions).__name__}"
            ) from None
        for d in components:
            if not isinstance(d, Distribution):
                raise ValueError(
                    "MixtureGeneral: every component must be a Distribution, got "
                    f"{type(d).__name__}"
                )
        size = mixing_distribution.num_categories
        if len(components) != size:
            raise ValueError(
                f"MixtureGeneral: got {len(components)} component distributions "
                f"for the {size} categories of mixing_distribution"
            )
        event_shape = components[0].event_shape
        for d in components[1:]:
            if d.event_shape != event_shape:
                raise ValueError(
                    "MixtureGeneral: all components must share one event shape, got "
                    f"{[c.event_shape for c in components]}"
                )
        if support is None:
            kinds = {type(d.support) for d in components}
            if len(kinds) > 1:
                raise ValueError(
                    "MixtureGeneral: the components have different supports "
                    f"{[d.support for d in components]}; pass support= to mix them"
                )
        elif not isinstance(support, constraints.Constraint):
            raise TypeError(
                f"MixtureGeneral: support must be a Constraint, got {support!r}"
            )
        batch_shape = tuple(
            jnp.broadcast_shapes(
                mixing_distribution.batch_shape, *(d.batch_shape for d in components)
            )
        )
        ndim = len(batch_shape)
        self._mixing_distribution = _with_batch_rank(mixing_distribution, ndim)
        self._component_distributions = [_with_batch_rank(d, ndim) for d in components]
        self._mixture_size = size
        self._support = support
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @property
    def component_distributions(self) -> list[Distribution]:
        """The components, in the order of the mixing categories."""
        return self._component_distributions

    @property
    def support(self):
        if self._support is not None:
            return self._support
        return self.component_distributions[0].support

    def _stack(self, values):
        shape = self.shape()
        values = [jnp.broadcast_to(v, shape) for v in values]
        return jnp.stack(values, axis=self.mixture_dim)

    @property
    def component_mean(self):
        return self._stack([d.mean for d in self.component_distributions])

    @property
    def component_variance(self):
        return self._stack([d.variance for d in self.component_distributions])

    def component_cdf(self, value):
        return jnp.stack([d.cdf(value) for d in self.component_distributions], axis=-1)

    def component_sample(self, key, sample_shape=()):
        """Draws of every component, shape ``sample_shape + batch_shape + (K,) +
        event_shape``."""
        shape = tuple(sample_shape) + self.batch_shape
        keys = jax.random.split(key, self.mixture_size)
        draws = [
            d.expand(shape).sample(k)
            for k, d in zip(keys, self.component_distributions)
        ]
        dtype = jnp.result_type(*draws)
        return jnp.stack([x.astype(dtype) for x in draws], axis=self.mixture_dim)

    def component_log_probs(self, value):
        """Log weight plus log density of each component, components last."""
        log_probs = []
        for d in self.component_distributions:
            log_prob = d.log_prob(value)
            if self._support is not None and not d._validate_args:
                inside = d.support(value)
                log_prob = jnp.where(inside, log_prob, -jnp.inf)
            log_probs.append(log_prob)
        shape = jnp.broadcast_shapes(*(jnp.shape(lp) for lp in log_probs))
        stacked = jnp.stack([jnp.broadcast_to(lp, shape) for lp in log_probs], -1)
        return self._mixing_log_weights() + stacked


def Mixture(
    mixing_distribution: Categorical,
    component_distributions,
    *,
    validate_args: bool | None = None,
) -> _MixtureBase:
    """Finite mixture: a :class:`MixtureSameFamily` when
    ``component_distributions`` is one batched distribution, a
    :class:`MixtureGeneral` when it is a list.

    >>> import probnn.distributions as dist
    >>> mixing = dist.Categorical(probs=jnp.array([0.25, 0.75]))
    >>> d = Mixture(mixing, [dist.Normal(0.0, 1.0), dist.Normal(4.0, 1.0)])
    >>> type(d).__name__, float(d.mean)
    ('MixtureGeneral', 3.0)
    """
    if isinstance(component_distributions, Distribution):
        return MixtureSameFamily(
            mixing_distribution, component_distributions, validate_args=validate_args
        )
    return MixtureGeneral(
        mixing_distribution, component_distributions, validate_args=validate_args
    )
