"""``handlers.collapse``: integrate conjugate latent sites out of a model.

Inside ``with collapse():`` a latent ``sample`` site is not drawn. Its value is
a :class:`CollapsedValue` placeholder, and a distribution built with that
placeholder as a parameter is deferred. When the context closes, each latent
site and the observed sites whose likelihood it parameterises are replaced by
one ``factor`` named after the latent: the log marginal likelihood of those
observations with the latent integrated out, in closed form.

The conjugate pairs known (prior, likelihood: the parameter the latent is):

============  ==============================================================
prior         likelihoods
============  ==============================================================
Beta          Bernoulli(probs), Binomial(probs), Geometric(probs)
Gamma         Poisson(rate), Exponential(rate)
Dirichlet     Categorical(probs), Multinomial(probs)
Normal        Normal(loc)
============  ==============================================================

Observations of one latent may be many: a plate opened inside ``collapse``, or
values with more batch dims than the latent, are observations that share the
latent, and their sufficient statistics are pooled (so the result is the joint
marginal, not a product of per-observation marginals). Plates opened outside
``collapse`` are kept: the factor is batched along them. Masked observations
(``handlers.mask``, ``obs_mask`` or ``fn.mask``) drop out of the statistics.
Anything else is refused with an error naming the site: arithmetic on a
collapsed value, a latent whose likelihood is not conjugate to its prior, a
scaled (subsampled) likelihood.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import betaln, gammaln

from probnn.distributions import bounded, continuous, discrete, multivariate, positive
from probnn.distributions.distribution import (
    _CONSTRUCTION_HOOKS,
    ExpandedDistribution,
    Independent,
)
from probnn.runtime import Messenger

__all__ = ["CollapsedValue", "collapse"]


def _refuse(self, *args, **kwargs):
    raise TypeError(
        f"collapse: the value of collapsed site {self.name!r} can only be passed "
        "as the conjugate parameter of an observed distribution (for example "
        f"Binomial(n, probs={self.name})); it cannot be computed with"
    )


class CollapsedValue:
    """The value a latent site takes inside :class:`collapse`: a placeholder
    with the site's shape, to be integrated out when the context closes."""

    __array_priority__ = 1000  # numpy defers to the refusing operators below

    def __init__(self, name, shape, dtype):
        self.name = name
        self.shape = tuple(shape)
        self.ndim = len(self.shape)
        self.dtype = dtype

    def __repr__(self):
        # jax.numpy functions name the value by its repr when they refuse it
        return (
            f"<value of collapsed site {self.name!r}, shape {self.shape}: usable "
            "only as the conjugate parameter of an observed distribution>"
        )


for _op in (
    "add sub mul truediv floordiv mod pow matmul neg pos abs invert lt le gt ge "
    "and or xor lshift rshift getitem iter len bool float int index array"
).split():
    setattr(CollapsedValue, f"__{_op}__", _refuse)
    if _op in "add sub mul truediv floordiv mod pow matmul and or xor".split():
        setattr(CollapsedValue, f"__r{_op}__", _refuse)


class _Deferred:
    """A distribution one of whose parameters is a :class:`CollapsedValue`.

    It keeps the constructor and its bound arguments; shapes come from the
    same distribution built with a stand-in value for the placeholder. It can
    be expanded, masked and made an event (what plates and models do to an
    observed distribution), and nothing else.
    """

    def __init__(
        self, cls, arguments, param, latent, shaped, reinterpreted=0, mask=None
    ):
        self.cls = cls
        self.arguments = arguments  # bound constructor arguments, by name
        self.param = param  # the argument holding the placeholder
        self.latent = latent  # the placeholder
        self._shaped = shaped  # the distribution with a stand-in value
        self.reinterpreted = reinterpreted
        self.mask_value = mask

    def _replace(self, **attributes):
        new = copy.copy(self)
        new.__dict__.update(attributes)
        return new

    @property
    def batch_shape(self):
        base = self._shaped.batch_shape
        return base[: len(base) - self.reinterpreted]

    @property
    def event_shape(self):
        base = self._shaped.batch_shape
        return base[len(base) - self.reinterpreted :] + self._shaped.event_shape

    def shape(self, sample_shape=()):
        return tuple(sample_shape) + self.batch_shape + self.event_shape

    def expand(self, batch_shape):
        tail = self._shaped.batch_shape[
            len(self._shaped.batch_shape) - self.reinterpreted :
        ]
        return self._replace(_shaped=self._shaped.expand(tuple(batch_shape) + tail))

    def expand_by(self, sample_shape):
        return self.expand(tuple(sample_shape) + self.batch_shape)

    def to_event(self, reinterpreted_batch_ndims=None):
        n = (
            len(self.batch_shape)
            if reinterpreted_batch_ndims is None
            else reinterpreted_batch_ndims
        )
        return self._replace(reinterpreted=self.reinterpreted + int(n))

    def mask(self, mask):
        mask = _pad_right(jnp.asarray(mask), self.reinterpreted)
        if self.mask_value is not None:
            mask = jnp.logical_and(self.mask_value, mask)
        return self._replace(mask_value=mask)

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise AttributeError(
            f"collapse: {self.cls.__name__} depends on collapsed site "
            f"{self.latent.name!r}; it can only be observed (sample(..., obs=...)) "
            f"inside the collapse context, so it has no {attribute!r}"
        )

    def __repr__(self):
        return (
            f"{self.cls.__name__}(... {self.param}={self.latent.name} ...) [collapsed]"
        )


def _pad_right(array, ndims):
    return jnp.reshape(array, jnp.shape(array) + (1,) * ndims)


def _sum_to_shape(array, shape):
    """Sum ``array`` down to ``shape`` (right-aligned, broadcasting semantics)."""
    array = jnp.broadcast_to(array, jnp.broadcast_shapes(array.shape, tuple(shape)))
    lead = array.ndim - len(shape)
    if lead:
        array = array.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and array.shape[i] != 1)
    if axes:
        array = array.sum(axis=axes, keepdims=True)
    return array


def _unwrap(fn):
    """The base distribution under expansions and ``to_event``, and the number
    of its batch dims reinterpreted as event dims."""
    reinterpreted = 0
    while isinstance(fn, (ExpandedDistribution, Independent)):
        if isinstance(fn, Independent):
            reinterpreted += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, reinterpreted


# -- conjugate families ------------------------------------------------------
#
# Each family turns the observations of one latent into weighted sufficient
# statistics (one array per statistic, one entry per observation; weight 0
# drops an observation) and the pooled statistics, with the prior's
# parameters, into the log marginal likelihood.


def _beta_statistics(lik, args, x, w, prior):
    # log p(x | p) = base + a log p + b log(1 - p)
    if issubclass(lik, discrete.Binomial):
        n = jnp.asarray(args["total_count"], x.dtype)
        base = gammaln(n + 1) - gammaln(x + 1) - gammaln(n - x + 1)
        return {"a": w * x, "b": w * (n - x), "base": w * base}
    if issubclass(lik, discrete.Geometric):  # failures before the first success
        return {"a": w * jnp.ones_like(x), "b": w * x, "base": jnp.zeros_like(x)}
    return {"a": w * x, "b": w * (1 - x), "base": jnp.zeros_like(x)}  # Bernoulli


def _beta_marginal(prior, s):
    a, b = prior.concentration1, prior.concentration0
    return s["base"] + betaln(a + s["a"], b + s["b"]) - betaln(a, b)


def _gamma_statistics(lik, args, x, w, prior):
    # log p(x | r) = base + a log r - b r
    if issubclass(lik, discrete.Poisson):
        return {"a": w * x, "b": w * jnp.ones_like(x), "base": -w * gammaln(x + 1)}
    return {
        "a": w * jnp.ones_like(x),
        "b": w * x,
        "base": jnp.zeros_like(x),
    }  # Exponential


def _gamma_marginal(prior, s):
    alpha, beta = prior.concentration, prior.rate
    return (
        s["base"]
        + alpha * jnp.log(beta)
        - gammaln(alpha)
        + gammaln(alpha + s["a"])
        - (alpha + s["a"]) * jnp.log(beta + s["b"])
    )


def _dirichlet_statistics(lik, args, x, w, prior):
    # log p(x | p) = base + sum_k counts_k log p_k
    if issubclass(lik, discrete.Categorical):
        size = prior.concentration.shape[-1]
        counts = jax.nn.one_hot(x, size, dtype=w.dtype) * w[..., None]
        return {"counts": counts, "base": jnp.zeros_like(w)}
    n = jnp.sum(x, -1)
    base = gammaln(n + 1) - jnp.sum(gammaln(x + 1), -1)
    return {"counts": x * w[..., None], "base": w * base}


def _dirichlet_marginal(prior, s):
    c = prior.concentration
    return (
        s["base"]
        + gammaln(c.sum(-1))
        - gammaln((c + s["counts"]).sum(-1))
        + jnp.sum(gammaln(c + s["counts"]) - gammaln(c), -1)
    )


def _normal_statistics(lik, args, x, w, prior):
    # Centred on the prior mean, so that the quadratic form keeps its digits.
    scale = jnp.asarray(args["scale"], x.dtype)
    precision = w / jnp.square(scale)
    centred = x - prior.loc
    base = w * (-0.5 * math.log(2 * math.pi) - jnp.log(scale))
    return {
        "precision": precision,
        "linear": precision * centred,
        "quadratic": precision * jnp.square(centred),
        "base": base,
    }


def _normal_marginal(prior, s):
    prior_precision = 1 / jnp.square(prior.scale)
    total = prior_precision + s["precision"]
    return (
        s["base"]
        + 0.5 * jnp.log(prior_precision / total)
        + 0.5 * jnp.square(s["linear"]) / total
        - 0.5 * s["quadratic"]
    )


class _Family(NamedTuple):
    """A conjugate prior: its parameters, the likelihoods it is conjugate to
    (class and the parameter the latent is), and its two functions above."""

    prior: type
    fields: tuple[str, ...]
    likelihoods: tuple[tuple[type, str], ...]
    statistics: Callable
    marginal: Callable

    def takes(self, lik, param) -> bool:
        return any(issubclass(lik, c) and param == q for c, q in self.likelihoods)

    def parameters(self, prior, batch_shape):
        """The prior's parameters broadcast to its full batch shape."""
        shape = batch_shape + prior.event_shape
        return SimpleNamespace(
            **{
                name: jnp.broadcast_to(jnp.asarray(getattr(prior, name)), shape)
                for name in self.fields
            }
        )


_FAMILIES = (
    _Family(
        bounded.Beta,
        ("concentration1", "concentration0"),
        (
            (discrete.Bernoulli, "probs"),
            (discrete.Binomial, "probs"),
            (discrete.Geometric, "probs"),
        ),
        _beta_statistics,
        _beta_marginal,
    ),
    _Family(
        positive.Gamma,
        ("concentration", "rate"),
        ((discrete.Poisson, "rate"), (positive.Exponential, "rate")),
        _gamma_statistics,
        _gamma_marginal,
    ),
    _Family(
        multivariate.Dirichlet,
        ("concentration",),
        ((discrete.Categorical, "probs"), (discrete.Multinomial, "probs")),
        _dirichlet_statistics,
        _dirichlet_marginal,
    ),
    _Family(
        continuous.Normal,
        ("loc", "scale"),
        ((continuous.Normal, "loc"),),
        _normal_statistics,
        _normal_marginal,
    ),
)


def _family_of(prior):
    return next((f for f in _FAMILIES if isinstance(prior, f.prior)), None)


class collapse(Messenger):
    """Integrate conjugate latent sites out of the model in closed form.

    Inside the context a latent site's value is a placeholder; every observed
    site whose distribution takes it as its conjugate parameter is pooled with
    it, and on exit the latent and those observations become one ``factor``
    site, named after the latent, holding their log marginal likelihood. See
    :mod:`probnn._collapse` for the conjugate pairs handled.

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.handlers import collapse, trace
    >>> def model():
    ...     with collapse():
    ...         p = probnn.sample("p", dist.Beta(2.0, 3.0))
    ...         probnn.sample("k", dist.Binomial(10, probs=p), obs=4.0)
    >>> tr = trace(model).get_trace()
    >>> sorted(tr)
    ['p']
    >>> ref = dist.BetaBinomial(2.0, 3.0, 10).log_prob(4.0)
    >>> bool(abs(tr["p"]["fn"].log_factor - ref) < 1e-5)
    True
    """

    def __init__(self, fn=None):
        super().__init__(fn)
        self._latents = {}
        self._observed = []
        self._preserved = frozenset()

    def __enter__(self):
        from probnn.primitives import plate
        from probnn.runtime import _STACK

        self._latents = {}
        self._observed = []
        self._preserved = frozenset(h.name for h in _STACK if isinstance(h, plate))
        _CONSTRUCTION_HOOKS.append(self._defer)
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        popped = _CONSTRUCTION_HOOKS.pop()
        assert popped == self._defer
        result = super().__exit__(exc_type, exc_value, traceback)
        if exc_type is None:
            self._emit()
        return result

    # -- construction --------------------------------------------------------
    def _defer(self, cls, args, kwargs):
        held = [a for a in (*args, *kwargs.values()) if isinstance(a, CollapsedValue)]
        if not held:
            return None
        try:
            bound = inspect.signature(cls).bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"collapse: {cls.__name__}: {err}") from None
        names = [k for k, v in bound.arguments.items() if isinstance(v, CollapsedValue)]
        if len(names) > 1:
            raise NotImplementedError(
                f"collapse: {cls.__name__} takes several collapsed values "
                f"({', '.join(repr(bound.arguments[n].name) for n in names)}); "
                "each observed distribution may depend on one collapsed site"
            )
        bound.apply_defaults()
        param = names[0]
        latent = bound.arguments[param]
        prior = self._latents[latent.name]["fn"]
        base, _ = _unwrap(prior)
        if not _family_of(base).takes(cls, param):
            raise NotImplementedError(
                f"collapse: {cls.__name__}({param}={latent.name}) is not conjugate "
                f"to the {type(base).__name__} prior of site {latent.name!r}; known "
                "pairs: "
                + ", ".join(
                    f"{f.prior.__name__}-{lik.__name__}({q})"
                    for f in _FAMILIES
                    for lik, q in f.likelihoods
                )
            )
        stand_in = jnp.broadcast_to(prior.mean, latent.shape)
        shaped_args = dict(bound.arguments)
        shaped_args[param] = stand_in
        shaped = cls(**shaped_args)
        return _Deferred(cls, dict(bound.arguments), param, latent, shaped)

    # -- sites -----------------------------------------------------------------
    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        if isinstance(msg["fn"], _Deferred) or not (
            msg["is_observed"] or msg["value"] is not None
        ):
            # The site stops here, so the plates opened outside the context
            # would not see it: broadcast it along them now.
            self._apply_outer_plates(msg)
        fn = msg["fn"]
        name = msg["name"]
        if isinstance(fn, _Deferred):
            if not msg["is_observed"] or msg["value"] is None:
                raise NotImplementedError(
                    f"collapse: latent site {name!r} depends on collapsed site "
                    f"{fn.latent.name!r}; inside collapse only observed sites may "
                    "depend on a collapsed value"
                )
            self._check_unscaled(msg)
            self._observed.append(msg)
            msg["stop"] = True
            return
        if msg["is_observed"] or msg["value"] is not None:
            return  # observed or given a value: not collapsed
        self._check_unscaled(msg)
        if msg["mask"] is not None:
            raise NotImplementedError(
                f"collapse: latent site {name!r} is masked; a collapsed latent "
                "cannot be masked"
            )
        base, _ = _unwrap(fn)
        if _family_of(base) is None:
            raise NotImplementedError(
                f"collapse: latent site {name!r} has a {type(base).__name__} "
                "prior; collapse integrates out Beta, Gamma, Dirichlet and "
                "Normal priors with a conjugate likelihood"
            )
        if msg["kwargs"]["sample_shape"]:
            raise NotImplementedError(
                f"collapse: latent site {name!r} has sample_shape; use a plate"
            )
        shape = fn.batch_shape + fn.event_shape
        msg["value"] = CollapsedValue(name, shape, jnp.result_type(float))
        self._latents[name] = msg
        msg["stop"] = True

    def _apply_outer_plates(self, msg):
        from probnn.primitives import plate
        from probnn.runtime import _STACK

        position = next(i for i, h in enumerate(_STACK) if h is self)
        for handler in reversed(_STACK[:position]):
            if isinstance(handler, plate):
                handler.process_message(msg)

    @staticmethod
    def _check_unscaled(msg):
        if msg["scale"] is not None:
            raise NotImplementedError(
                f"collapse: site {msg['name']!r} is scaled (a subsampled plate or "
                "handlers.scale); the closed-form marginal needs every "
                "observation at full weight"
            )

    # -- the factors -----------------------------------------------------------
    def _emit(self):
        from probnn.primitives import factor

        for name, msg in self._latents.items():
            observed = [o for o in self._observed if o["fn"].latent.name == name]
            factor(name, self._log_marginal(msg, observed))

    def _log_marginal(self, latent_msg, observed):
        prior_fn = latent_msg["fn"]
        base, reinterpreted = _unwrap(prior_fn)
        full = prior_fn.batch_shape + prior_fn.event_shape
        batch = full[: len(full) - len(base.event_shape)]
        family = _family_of(base)
        prior = family.parameters(base, batch)
        statistics = None
        for msg in observed:
            stats = self._statistics(family, prior, msg, batch, base.event_shape)
            if statistics is None:
                statistics = stats
            else:
                statistics = {k: statistics[k] + stats[k] for k in statistics}
        if statistics is None:  # nothing observed: the prior integrates to one
            log_marginal = jnp.zeros(batch)
        else:
            log_marginal = family.marginal(prior, statistics)
        # dims made event by to_event, then plates opened inside the context
        if reinterpreted:
            log_marginal = log_marginal.sum(axis=tuple(range(-reinterpreted, 0)))
        inner = [
            f.dim
            for f in latent_msg["cond_indep_stack"]
            if f.name not in self._preserved
        ]
        if inner:
            log_marginal = log_marginal.sum(axis=tuple(inner), keepdims=True)
        return log_marginal

    def _statistics(self, family, prior, msg, batch, event):
        """Pooled sufficient statistics of one observed site, with the
        latent's batch shape (and event shape, for per-category counts)."""
        fn = msg["fn"]
        shaped = fn._shaped
        lik_event = shaped.event_shape
        x = jnp.asarray(msg["value"])
        if not issubclass(fn.cls, discrete.Categorical):
            x = x.astype(jnp.result_type(x.dtype, float))
        obs_batch = jnp.broadcast_shapes(
            x.shape[: x.ndim - len(lik_event)], shaped.batch_shape
        )
        weight = jnp.ones(obs_batch, jnp.result_type(float))
        if fn.mask_value is not None:  # padded for to_event when it was set
            weight = weight * fn.mask_value
        if msg["mask"] is not None:  # over the site's batch shape
            weight = weight * _pad_right(jnp.asarray(msg["mask"]), fn.reinterpreted)
        weight = jnp.broadcast_to(weight, jnp.broadcast_shapes(weight.shape, obs_batch))
        x = jnp.broadcast_to(x, weight.shape + lik_event)
        args = {k: v for k, v in fn.arguments.items() if k != fn.param}
        stats = family.statistics(fn.cls, args, x, weight, prior)
        # the statistics with the latent's event (Dirichlet counts) keep it
        return {
            k: _sum_to_shape(v, batch + event if v.ndim > weight.ndim else batch)
            for k, v in stats.items()
        }
