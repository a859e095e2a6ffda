"""Distributions of transformed random variables."""

from __future__ import annotations

import weakref

from probnn.distributions import constraints
from probnn.distributions.distribution import Distribution, _not_inferable
from probnn.distributions.transforms import ComposeTransform, Transform
from probnn.distributions.util import sum_rightmost

__all__ = ["TransformedDistribution"]


def _forget_draw(owner):
    """A weakref callback that drops ``owner``'s kept pre-images once the
    draw they belong to is gone."""
    owner_ref = weakref.ref(owner)

    def forget(draw_ref):
        kept = owner_ref()
        if kept is not None and getattr(kept, "_last_draw", (None,))[0] is draw_ref:
            kept._last_draw = None

    return forget


class TransformedDistribution(Distribution):
    """The distribution of ``transforms[-1](... transforms[0](x))`` for ``x``
    drawn from ``base_distribution``.

    >>> import jax.numpy as jnp
    >>> from probnn.distributions import Normal
    >>> from probnn.distributions.transforms import ExpTransform
    >>> log_normal = TransformedDistribution(Normal(0.0, 1.0), ExpTransform())
    >>> round(float(log_normal.log_prob(1.0)), 4)  # log N(0 | 0, 1) - log 1
    -0.9189
    """

    pytree_data_fields = ("base_dist", "transforms")

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        _not_inferable(
            cls, "it is built from a distribution and transforms, not parameters"
        )

    def __init__(self, base_distribution, transforms, *, validate_args=None):
        if isinstance(transforms, Transform):
            transforms = [transforms]
        transforms = list(transforms)
        for t in transforms:
            if not isinstance(t, Transform):
                raise TypeError(
                    f"TransformedDistribution: expected Transform objects, got "
                    f"{type(t).__name__}"
                )
        self.base_dist = base_distribution
        self.transforms = transforms
        chain = self._chain()
        base_shape = base_distribution.batch_shape + base_distribution.event_shape
        shape = chain.forward_shape(base_shape)
        base_event = len(base_distribution.event_shape)
        domain_rank = chain.domain.event_dim
        event_dim = max(
            chain.codomain.event_dim,
            base_event + chain.codomain.event_dim - domain_rank,
        )
        split = len(shape) - event_dim
        super().__init__(shape[:split], shape[split:], validate_args=validate_args)

    def _chain(self) -> Transform:
        return ComposeTransform(self.transforms)

    @property
    def has_rsample(self):
        return self.base_dist.has_rsample

    @property
    def support(self):
        codomain = self._chain().codomain
        extra = self.event_dim - codomain.event_dim
        return constraints.independent(codomain, extra) if extra else codomain

    def sample(self, key, sample_shape=()):
        return self.sample_with_intermediates(key, sample_shape)[0]

    def sample_with_intermediates(self, key, sample_shape=()):
        x = self.base_dist.sample(key, sample_shape)
        intermediates = []
        for t in self.transforms:
            intermediates.append(x)
            x = t(x)
        # log_prob of this very draw reads the pre-images instead of
        # inverting (flows such as BNAF have no closed-form inverse); the draw
        # is held weakly and the pre-images are dropped with it, so that a
        # distribution outliving a jit trace keeps none of its tracers
        self._last_draw = (weakref.ref(x, _forget_draw(self)), intermediates)
        return x, intermediates

    def log_prob(self, value, intermediates=None):
        self._validate_sample(value)
        last = getattr(self, "_last_draw", None)
        if intermediates is None and last is not None and last[0]() is value:
            intermediates = last[1]
        y = value
        total = 0.0
        rank = self.event_dim
        for i, t in reversed(list(enumerate(self.transforms))):
            x = t._inverse(y) if intermediates is None else intermediates[i]
            term = t.log_abs_det_jacobian(x, y)
            total = total + sum_rightmost(term, rank - t.codomain.event_dim)
            rank += t.domain.event_dim - t.codomain.event_dim
            y = x
        base = self.base_dist.log_prob(y)
        base = sum_rightmost(base, rank - len(self.base_dist.event_shape))
        return base - total

    @property
    def mean(self):
        raise NotImplementedError("TransformedDistribution has no closed-form mean")

    @property
    def variance(self):
        raise NotImplementedError("TransformedDistribution has no closed-form variance")
