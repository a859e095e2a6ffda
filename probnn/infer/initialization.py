"""Initialization strategies: where inference starts each latent site.

A strategy is a function of a site message that returns a constrained initial
value for an unobserved ``sample`` site, or None to leave the site alone
(observed sites, params, plates, ...). Called without a site it returns
itself with its options bound, so ``init_to_median(num_samples=31)`` is a
strategy too. Strategies read the site's random key, so they are used as
``substitute(seed(model, key), substitute_fn=strategy)``: ``seed`` is the
inner handler and gives each site its key before ``substitute`` asks the
strategy for a value.

>>> import probnn, probnn.distributions as dist
>>> from probnn.handlers import seed, substitute, trace
>>> def model():
...     probnn.sample("scale", dist.LogNormal(0.0, 1.0))
>>> seeded = seed(model, rng_seed=0)
>>> tr = trace(substitute(seeded, substitute_fn=init_to_feasible)).get_trace()
>>> float(tr["scale"]["value"])  # exp(0): the origin of unconstrained space
1.0
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from probnn.distributions.transforms import Transform, biject_to
from probnn.distributions.util import is_concrete
from probnn.runtime import Message

__all__ = [
    "init_to_feasible",
    "init_to_mean",
    "init_to_median",
    "init_to_sample",
    "init_to_uniform",
    "init_to_value",
]


def _wants_init(site: Message) -> bool:
    """Continuous latent sample sites that no inner handler has given a value."""
    return (
        site["type"] == "sample"
        and not site["is_observed"]
        and site["value"] is None
        and not site["fn"].support.is_discrete
    )


def _site_transform(site: Message) -> Transform:
    try:
        return biject_to(site["fn"].support)
    except NotImplementedError as error:
        raise ValueError(
            f"sample site {site['name']!r}: cannot initialise it in unconstrained "
            f"space: {error}"
        ) from None


def _site_key(site: Message, strategy: str):
    key = site["kwargs"].get("rng_key")
    if key is None:
        raise ValueError(
            f"{strategy}: sample site {site['name']!r} has no random key; use the "
            "strategy as substitute(seed(model, key), substitute_fn=strategy) so "
            "that seed reaches the site first"
        )
    return key


def _sample_shape(site: Message) -> tuple[int, ...]:
    return tuple(site["kwargs"].get("sample_shape", ()))


def init_to_uniform(site: Message | None = None, radius: float = 2):
    """Initialize to a point drawn uniformly from ``(-radius, radius)`` in
    unconstrained space, mapped onto the site's support.

    Args:
        site: the site message; None returns the strategy with ``radius`` bound.
        radius: half-width of the box in unconstrained space.

    Returns:
        The constrained initial value, or None for sites it does not
        initialise (observed, discrete or non-sample sites).

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.handlers import seed, substitute
    >>> model = lambda: probnn.sample("p", dist.Beta(2.0, 2.0))
    >>> strategy = init_to_uniform(radius=1.0)
    >>> p = substitute(seed(model, rng_seed=0), substitute_fn=strategy)()
    >>> bool(0.26 < p < 0.74)  # inside sigmoid((-1, 1))
    True
    """
    if site is None:
        return functools.partial(init_to_uniform, radius=radius)
    if not _wants_init(site):
        return None
    transform = _site_transform(site)
    shape = transform.inverse_shape(site["fn"].shape(_sample_shape(site)))
    if radius == 0:
        return transform(jnp.zeros(shape))
    key = _site_key(site, "init_to_uniform")
    return transform(jax.random.uniform(key, shape, minval=-radius, maxval=radius))


def init_to_feasible(site: Message | None = None):
    """Initialize to the image of the origin of unconstrained space: a point
    of the support that ignores the distribution's parameters.

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.handlers import seed, substitute
    >>> model = lambda: probnn.sample("w", dist.Dirichlet(jnp.ones(4)))
    >>> substitute(seed(model, rng_seed=0), substitute_fn=init_to_feasible)()
    Array([0.25, 0.25, 0.25, 0.25], dtype=float32)
    """
    if site is None:
        return init_to_feasible
    return init_to_uniform(site, radius=0)


def init_to_median(site: Message | None = None, num_samples: int = 15):
    """Initialize to the median of ``num_samples`` prior draws, taken
    elementwise in unconstrained space. Sites whose distribution cannot sample
    fall back to :func:`init_to_uniform`.

    Args:
        site: the site message; None returns the strategy with
            ``num_samples`` bound.
        num_samples: number of prior draws.

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.handlers import seed, substitute
    >>> model = lambda: probnn.sample("s", dist.LogNormal(0.0, 1.0))
    >>> strategy = init_to_median(num_samples=401)
    >>> s = substitute(seed(model, rng_seed=0), substitute_fn=strategy)()
    >>> bool(abs(s - 1.0) < 0.15)  # the median of LogNormal(0, 1) is 1
    True
    """
    if site is None:
        return functools.partial(init_to_median, num_samples=num_samples)
    if not _wants_init(site):
        return None
    key = _site_key(site, "init_to_median")
    try:
        draws = site["fn"].sample(key, (num_samples,) + _sample_shape(site))
    except NotImplementedError:
        return init_to_uniform(site)
    transform = _site_transform(site)
    return transform(jnp.median(transform.inv(draws), axis=0))


def init_to_sample(site: Message | None = None):
    """Initialize to one prior draw (:func:`init_to_median` of one sample).

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.handlers import seed, substitute
    >>> model = lambda: probnn.sample("s", dist.HalfNormal(1.0), sample_shape=(3,))
    >>> s = substitute(seed(model, rng_seed=0), substitute_fn=init_to_sample)()
    >>> s.shape, bool((s > 0).all())
    ((3,), True)
    """
    return init_to_median(site, num_samples=1)


def init_to_mean(site: Message | None = None):
    """Initialize to the prior mean. Where the distribution has no mean, or
    its mean is not finite (e.g. a Cauchy), fall back to
    :func:`init_to_median`.

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.handlers import seed, substitute
    >>> model = lambda: probnn.sample("g", dist.Gamma(3.0, 2.0))
    >>> float(substitute(seed(model, rng_seed=0), substitute_fn=init_to_mean)())
    1.5
    """
    if site is None:
        return init_to_mean
    if not _wants_init(site):
        return None
    fn = site["fn"]
    try:
        # times 1.0: an integer-valued mean would make a non-differentiable init
        mean = 1.0 * jnp.asarray(fn.mean)
    except (NotImplementedError, ValueError):
        return init_to_median(site)
    mean = jnp.broadcast_to(mean, fn.shape(_sample_shape(site)))
    finite = jnp.isfinite(mean)
    if is_concrete(finite):
        return mean if bool(jnp.all(finite)) else init_to_median(site)
    return jnp.where(finite, mean, init_to_median(site))


def init_to_value(site: Message | None = None, values: dict | None = None):
    """Initialize the sites named in ``values`` to those (constrained) values
    and the others with :func:`init_to_uniform`.

    The strategy returned by ``init_to_value(values=...)`` keeps the dict as
    its ``values`` attribute, so that callers (the autoguides) can check that
    every key names a latent site.

    Args:
        site: the site message; None returns the strategy with ``values`` bound.
        values: initial values by site name.

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.handlers import seed, substitute
    >>> model = lambda: probnn.sample("p", dist.Beta(2.0, 2.0))
    >>> strategy = init_to_value(values={"p": 0.3})
    >>> float(substitute(seed(model, rng_seed=0), substitute_fn=strategy)())
    0.3
    >>> strategy.values
    {'p': 0.3}
    """
    values = {} if values is None else values
    if site is None:
        values = dict(values)
        strategy = functools.partial(init_to_value, values=values)
        strategy.values = values
        return strategy
    if site["type"] != "sample" or site["is_observed"] or site["value"] is not None:
        return None
    if site["name"] in values:
        return jnp.asarray(values[site["name"]])
    return init_to_uniform(site)


def initial_values_of(strategy: Callable) -> dict | None:
    """The ``values`` of an :func:`init_to_value` strategy (None for others).

    >>> initial_values_of(init_to_value(values={"x": 1.0}))
    {'x': 1.0}
    >>> initial_values_of(init_to_median) is None
    True
    """
    values = getattr(strategy, "values", None)
    if isinstance(values, dict):
        return values
    if isinstance(strategy, functools.partial) and strategy.func is init_to_value:
        return strategy.keywords.get("values") or {}
    return None
