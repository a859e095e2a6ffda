"""Discrete families. Each is parameterised by exactly one of ``probs`` or
``logits``; the other is computed on demand.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaincc

from probnn.distributions import constraints
from probnn.distributions._continuous_special import regularized_beta
from probnn.distributions._discrete_special import (
    _binomial_log_prob,
    _concrete_scalar,
    _enumerate_range,
    _float,
    _multinomial_draw,
    _multinomial_log_prob,
    _one_of,
    _poisson_log_prob,
    _promote,
)
from probnn.distributions.distribution import (
    Distribution,
    _bind_shapes,
    _broadcast,
    _given_one_of,
    _split_event,
)
from probnn.distributions.util import (
    BinaryProbsLogits,
    batch_shape_of,
    is_concrete,
    log1mexp,
    softplus_parts,
    xlog1py,
    xlogy,
)

__all__ = [
    "Bernoulli",
    "BernoulliLogits",
    "BernoulliProbs",
    "Binomial",
    "BinomialLogits",
    "BinomialProbs",
    "Categorical",
    "CategoricalLogits",
    "CategoricalProbs",
    "DiscreteUniform",
    "Geometric",
    "GeometricLogits",
    "GeometricProbs",
    "Multinomial",
    "MultinomialLogits",
    "MultinomialProbs",
    "OrderedLogistic",
    "Poisson",
]


class Bernoulli(BinaryProbsLogits, Distribution):
    """Bernoulli distribution over {0, 1}.

    >>> d = Bernoulli(logits=0.0)
    >>> float(d.log_prob(1))  # log(1/2)
    -0.693...
    >>> d.enumerate_support().tolist()
    [0, 1]
    """

    support = constraints.boolean
    has_enumerate_support = True
    pytree_data_fields = ("_probs", "_logits")

    def __init__(self, probs=None, logits=None, *, validate_args=None):
        _one_of("Bernoulli", probs, logits)
        self._probs = probs
        self._logits = logits
        param = probs if probs is not None else logits
        super().__init__(jnp.shape(param), validate_args=validate_args)

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {"probs": constraints.unit_interval}
        return {"logits": constraints.real}

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        return jax.random.bernoulli(key, self.probs, shape).astype(jnp.int32)

    def log_prob(self, value):
        self._validate_sample(value)
        if self._logits is not None:
            logits = self._logits
            # -(softplus(l) - l v), written so that both tails keep their
            # digits: for v = 1 and large l the l's cancel exactly and the
            # small log(1 + exp(-|l|)) term survives
            positive, _, tail = softplus_parts(logits)
            return -(positive - logits * value + tail)
        # integer values carry no tangent; as floats xlogy can differentiate
        value = jnp.asarray(value, jnp.result_type(self._probs, float))
        return xlogy(value, self._probs) + xlog1py(1 - value, -self._probs)

    def enumerate_support(self, expand=True):
        values = jnp.arange(2).reshape((2,) + (1,) * len(self.batch_shape))
        if expand:
            values = jnp.broadcast_to(values, (2,) + self.batch_shape)
        return values

    @property
    def mean(self):
        return jnp.broadcast_to(self.probs, self.batch_shape)

    @property
    def variance(self):
        p = self.probs
        return jnp.broadcast_to(p * (1 - p), self.batch_shape)

    def entropy(self):
        if self._logits is not None:
            logits = self._logits
            p = jax.nn.sigmoid(logits)
            entropy = -p * jax.nn.log_sigmoid(logits) - (1 - p) * jax.nn.log_sigmoid(
                -logits
            )
        else:
            p = self._probs
            entropy = -xlogy(p, p) - xlog1py(1 - p, -p)
        return jnp.broadcast_to(entropy, self.batch_shape)


class BernoulliProbs(Bernoulli):
    """:class:`Bernoulli` from ``probs`` (NumPyro's name)."""

    def __init__(self, probs, *, validate_args=None):
        super().__init__(probs=probs, validate_args=validate_args)


class BernoulliLogits(Bernoulli):
    """:class:`Bernoulli` from ``logits`` (NumPyro's name)."""

    def __init__(self, logits, *, validate_args=None):
        super().__init__(logits=logits, validate_args=validate_args)


class Categorical(Distribution):
    """Categorical distribution over ``{0, ..., K-1}``; the last dim of
    ``probs`` / ``logits`` indexes the categories.

    >>> d = Categorical(probs=jnp.array([0.25, 0.75]))
    >>> float(jnp.exp(d.log_prob(1)))
    0.75
    """

    has_enumerate_support = True
    pytree_data_fields = ("_probs", "_logits")

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        """The last dim of ``probs`` / ``logits`` indexes the categories."""
        shapes = _bind_shapes(cls, args, kwargs)
        name = _given_one_of(cls.__name__, shapes, ("probs", "logits"))
        return _split_event(cls.__name__, name, shapes[name], 1)[0], ()

    def __init__(self, probs=None, logits=None, *, validate_args=None):
        _one_of(type(self).__name__, probs, logits)
        param = probs if probs is not None else logits
        if jnp.ndim(param) < 1:
            name = "probs" if probs is not None else "logits"
            raise ValueError(
                f"{type(self).__name__}: {name} needs a last dim indexing the "
                f"categories, got shape {jnp.shape(param)}"
            )
        self._probs = probs
        self._logits = logits
        super().__init__(jnp.shape(param)[:-1], validate_args=validate_args)

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {"probs": constraints.simplex}
        return {"logits": constraints.real_vector}

    @property
    def num_categories(self) -> int:
        param = self._probs if self._probs is not None else self._logits
        return jnp.shape(param)[-1]

    @property
    def support(self):
        return constraints.integer_interval(0, self.num_categories - 1)

    @property
    def probs(self):
        if self._probs is not None:
            return self._probs
        return jax.nn.softmax(self._logits, axis=-1)

    @property
    def logits(self):
        """Normalised log probabilities."""
        if self._logits is not None:
            return jax.nn.log_softmax(self._logits, axis=-1)
        return jnp.log(self._probs)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        return jax.random.categorical(key, self.logits, axis=-1, shape=shape)

    def log_prob(self, value):
        self._validate_sample(value)
        value = jnp.asarray(value)
        logits = self.logits
        index = jnp.asarray(value).astype(jnp.int32)[..., None]
        # align ranks; take_along_axis broadcasts the other dims itself, so
        # the logits are never copied out to the values' batch shape
        rank = max(jnp.ndim(logits), jnp.ndim(index))
        logits = jnp.reshape(logits, (1,) * (rank - jnp.ndim(logits)) + logits.shape)
        index = jnp.reshape(index, (1,) * (rank - jnp.ndim(index)) + index.shape)
        return jnp.take_along_axis(logits, index, axis=-1)[..., 0]

    def enumerate_support(self, expand=True):
        k = self.num_categories
        values = jnp.arange(k).reshape((k,) + (1,) * len(self.batch_shape))
        if expand:
            values = jnp.broadcast_to(values, (k,) + self.batch_shape)
        return values

    @property
    def mean(self):
        return jnp.full(self.batch_shape, jnp.nan)

    @property
    def variance(self):
        return jnp.full(self.batch_shape, jnp.nan)

    def entropy(self):
        logits = self.logits
        probs = jnp.exp(logits)
        # zero-probability categories contribute 0, not 0 * -inf
        terms = jnp.where(probs > 0, probs * logits, 0.0)
        return jnp.broadcast_to(-jnp.sum(terms, axis=-1), self.batch_shape)


class CategoricalProbs(Categorical):
    """:class:`Categorical` from ``probs`` (NumPyro's name)."""

    def __init__(self, probs, *, validate_args=None):
        super().__init__(probs=probs, validate_args=validate_args)


class CategoricalLogits(Categorical):
    """:class:`Categorical` from ``logits`` (NumPyro's name)."""

    def __init__(self, logits, *, validate_args=None):
        super().__init__(logits=logits, validate_args=validate_args)


class Binomial(BinaryProbsLogits, Distribution):
    """Number of successes in ``total_count`` independent trials, each a success
    with probability ``probs`` (or ``sigmoid(logits)``).

    Args:
        total_count: number of trials, a non-negative integer.
        probs: success probability of each trial.
        logits: log-odds of success of each trial.

    >>> d = Binomial(4, probs=0.5)
    >>> round(float(jnp.exp(d.log_prob(2))), 4)  # 6 / 16
    0.375
    >>> d.enumerate_support().tolist()
    [0, 1, 2, 3, 4]
    """

    has_enumerate_support = True
    pytree_data_fields = ("total_count", "_probs", "_logits")

    def __init__(self, total_count=1, probs=None, logits=None, *, validate_args=None):
        _one_of(type(self).__name__, probs, logits)
        if probs is not None:
            self._probs, self.total_count = _promote(probs, total_count)
            self._logits = None
        else:
            self._logits, self.total_count = _promote(logits, total_count)
            self._probs = None
        param = probs if probs is not None else logits
        super().__init__(
            batch_shape_of(param, total_count), validate_args=validate_args
        )

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {
                "probs": constraints.unit_interval,
                "total_count": constraints.nonnegative_integer,
            }
        return {
            "logits": constraints.real,
            "total_count": constraints.nonnegative_integer,
        }

    @property
    def support(self):
        return constraints.integer_interval(0, self.total_count)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        n = jnp.broadcast_to(_float(self.total_count), shape)
        p = jnp.broadcast_to(_float(self.probs), shape)
        return jax.random.binomial(key, n, p).astype(jnp.int32)

    def log_prob(self, value):
        self._validate_sample(value)
        log_p, log_q = self._log_probs_pair()
        return _binomial_log_prob(_float(self.total_count), _float(value), log_p, log_q)

    def cdf(self, value):
        k = jnp.floor(_float(value))
        n = _float(self.total_count)
        inside = (k >= 0) & (k < n)
        # P(X <= k) = I_{1-p}(n - k, k + 1); arguments made valid off the interior
        a = jnp.where(inside, n - k, 1.0)
        b = jnp.where(inside, k + 1, 1.0)
        log_p, log_q = self._log_probs_pair()
        interior = regularized_beta(a, b, jnp.exp(log_q), jnp.exp(log_p))
        return jnp.where(k < 0, 0.0, jnp.where(k >= n, 1.0, interior))

    def enumerate_support(self, expand=True):
        n = _concrete_scalar(type(self).__name__, "total_count", self.total_count)
        return _enumerate_range(0, n, self.batch_shape, expand)

    @property
    def mean(self):
        return jnp.broadcast_to(self.total_count * self.probs, self.batch_shape)

    @property
    def variance(self):
        p = self.probs
        return jnp.broadcast_to(self.total_count * p * (1 - p), self.batch_shape)


class BinomialProbs(Binomial):
    """:class:`Binomial` from ``probs`` (NumPyro's name and argument order)."""

    def __init__(self, probs, total_count=1, *, validate_args=None):
        super().__init__(total_count, probs=probs, validate_args=validate_args)


class BinomialLogits(Binomial):
    """:class:`Binomial` from ``logits`` (NumPyro's name and argument order)."""

    def __init__(self, logits, total_count=1, *, validate_args=None):
        super().__init__(total_count, logits=logits, validate_args=validate_args)


class Multinomial(Distribution):
    """Counts of each of ``K`` categories in ``total_count`` independent draws
    from ``Categorical(probs)``; the event is the vector of ``K`` counts.

    Args:
        total_count: number of draws, a non-negative integer.
        probs: category probabilities along the last dim.
        logits: unnormalised log probabilities along the last dim.
        total_count_max: accepted for NumPyro compatibility; the sampler draws
            a chain of binomials, so it needs no bound even when
            ``total_count`` is traced.

    >>> d = Multinomial(2, probs=jnp.array([0.5, 0.5]))
    >>> float(jnp.exp(d.log_prob(jnp.array([1, 1]))))
    0.5
    """

    pytree_data_fields = ("total_count", "_probs", "_logits")
    pytree_aux_fields = ("total_count_max",)

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        """The last dim of ``probs`` / ``logits`` is the event; it broadcasts
        its batch dims with ``total_count``."""
        shapes = _bind_shapes(cls, args, kwargs)
        name = _given_one_of(cls.__name__, shapes, ("probs", "logits"))
        batch, event = _split_event(cls.__name__, name, shapes[name], 1)
        count = shapes.get("total_count", ())
        return _broadcast(cls.__name__, [batch, count]), event

    def __init__(
        self,
        total_count=1,
        probs=None,
        logits=None,
        *,
        total_count_max=None,
        validate_args=None,
    ):
        _one_of(type(self).__name__, probs, logits)
        name = "probs" if probs is not None else "logits"
        param = probs if probs is not None else logits
        if jnp.ndim(param) < 1:
            raise ValueError(
                f"{type(self).__name__}: {name} needs a last dim indexing the "
                f"categories, got shape {jnp.shape(param)}"
            )
        param, self.total_count = _promote(param, total_count, event_ndims=(1, 0))
        self._probs = param if probs is not None else None
        self._logits = param if logits is not None else None
        self.total_count_max = total_count_max
        batch_shape = batch_shape_of(param, total_count, event_ndims=(1, 0))
        super().__init__(
            batch_shape, jnp.shape(param)[-1:], validate_args=validate_args
        )

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {
                "probs": constraints.simplex,
                "total_count": constraints.nonnegative_integer,
            }
        return {
            "logits": constraints.real_vector,
            "total_count": constraints.nonnegative_integer,
        }

    @property
    def support(self):
        return constraints.multinomial(self.total_count)

    @property
    def probs(self):
        if self._probs is not None:
            return self._probs
        return jax.nn.softmax(self._logits, axis=-1)

    @property
    def logits(self):
        """Normalised log probabilities."""
        if self._logits is not None:
            return jax.nn.log_softmax(self._logits, axis=-1)
        return jnp.log(self._probs)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        return _multinomial_draw(key, self.total_count, self.probs, shape)

    def log_prob(self, value):
        self._validate_sample(value)
        if self._logits is not None:
            log_probs = jax.nn.log_softmax(_float(self._logits), axis=-1)
        else:
            log_probs = jnp.log(_float(self._probs))
        value = _float(value)
        log_prob = _multinomial_log_prob(value, log_probs)
        # counts that do not add up to total_count have no mass
        matches = jnp.sum(value, -1) == _float(self.total_count)
        return jnp.where(matches, log_prob, -jnp.inf)

    @property
    def mean(self):
        n = jnp.expand_dims(_float(self.total_count), -1)
        return jnp.broadcast_to(n * self.probs, self.shape())

    @property
    def variance(self):
        n = jnp.expand_dims(_float(self.total_count), -1)
        p = self.probs
        return jnp.broadcast_to(n * p * (1 - p), self.shape())


class MultinomialProbs(Multinomial):
    """:class:`Multinomial` from ``probs`` (NumPyro's name and argument order)."""

    def __init__(
        self, probs, total_count=1, *, total_count_max=None, validate_args=None
    ):
        super().__init__(
            total_count,
            probs=probs,
            total_count_max=total_count_max,
            validate_args=validate_args,
        )


class MultinomialLogits(Multinomial):
    """:class:`Multinomial` from ``logits`` (NumPyro's name and argument order)."""

    def __init__(
        self, logits, total_count=1, *, total_count_max=None, validate_args=None
    ):
        super().__init__(
            total_count,
            logits=logits,
            total_count_max=total_count_max,
            validate_args=validate_args,
        )


class Poisson(Distribution):
    """Poisson distribution with mean ``rate``.

    Args:
        rate: the mean, non-negative.
        is_sparse: accepted for NumPyro compatibility (a speed hint there); the
            log mass is the same either way.

    >>> d = Poisson(2.0)
    >>> float(d.log_prob(0))  # -rate
    -2.0
    """

    arg_constraints = {"rate": constraints.nonnegative}
    support = constraints.nonnegative_integer
    pytree_data_fields = ("rate",)
    pytree_aux_fields = ("is_sparse",)

    def __init__(self, rate, *, is_sparse=False, validate_args=None):
        self.rate = rate
        self.is_sparse = bool(is_sparse)
        super().__init__(jnp.shape(rate), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        return jax.random.poisson(key, _float(self.rate), shape)

    def log_prob(self, value):
        self._validate_sample(value)
        return _poisson_log_prob(_float(value), _float(self.rate))

    def cdf(self, value):
        k = jnp.floor(_float(value))
        upper = gammaincc(jnp.maximum(k + 1, 1.0), _float(self.rate))
        return jnp.where(k < 0, 0.0, upper)

    @property
    def mean(self):
        return jnp.broadcast_to(_float(self.rate), self.batch_shape)

    @property
    def variance(self):
        return jnp.broadcast_to(_float(self.rate), self.batch_shape)


class Geometric(BinaryProbsLogits, Distribution):
    """Number of failures before the first success, each trial a success with
    probability ``probs`` (or ``sigmoid(logits)``). Samples are floats, as in
    NumPyro.

    >>> d = Geometric(probs=0.5)
    >>> float(jnp.exp(d.log_prob(2)))  # 0.5 ** 3
    0.125
    >>> float(d.cdf(1.0))
    0.75
    """

    support = constraints.nonnegative_integer
    pytree_data_fields = ("_probs", "_logits")

    def __init__(self, probs=None, logits=None, *, validate_args=None):
        _one_of(type(self).__name__, probs, logits)
        self._probs = probs
        self._logits = logits
        param = probs if probs is not None else logits
        super().__init__(jnp.shape(param), validate_args=validate_args)

    @property
    def arg_constraints(self):
        if self._probs is not None:
            return {"probs": constraints.unit_interval}
        return {"logits": constraints.real}

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        _, log_q = self._log_probs_pair()
        # inverse cdf: floor(log U / log(1 - p)), with -log U ~ Exponential(1)
        return jnp.floor(jax.random.exponential(key, shape) / -log_q)

    def log_prob(self, value):
        self._validate_sample(value)
        value = _float(value)
        log_p, log_q = self._log_probs_pair()
        failures = jnp.where(value == 0, 0.0, value * log_q)
        return failures + log_p

    def cdf(self, value):
        k = jnp.floor(_float(value))
        _, log_q = self._log_probs_pair()
        # 1 - (1 - p) ** (k + 1)
        upper = -jnp.expm1(jnp.maximum(k + 1, 0.0) * log_q)
        return jnp.where(k < 0, 0.0, upper)

    @property
    def mean(self):
        log_p, log_q = self._log_probs_pair()
        return jnp.broadcast_to(jnp.exp(log_q - log_p), self.batch_shape)

    @property
    def variance(self):
        log_p, log_q = self._log_probs_pair()
        return jnp.broadcast_to(jnp.exp(log_q - 2 * log_p), self.batch_shape)

    def entropy(self):
        log_p, log_q = self._log_probs_pair()
        # -log p - (1 - p) / p * log(1 - p); the second term is 0 when p = 1
        odds = jnp.exp(log_q - log_p)
        entropy = -log_p - jnp.where(log_q == 0, 0.0, odds * log_q)
        return jnp.broadcast_to(entropy, self.batch_shape)


class GeometricProbs(Geometric):
    """:class:`Geometric` from ``probs`` (NumPyro's name)."""

    def __init__(self, probs, *, validate_args=None):
        super().__init__(probs=probs, validate_args=validate_args)


class GeometricLogits(Geometric):
    """:class:`Geometric` from ``logits`` (NumPyro's name)."""

    def __init__(self, logits, *, validate_args=None):
        super().__init__(logits=logits, validate_args=validate_args)


class DiscreteUniform(Distribution):
    """Uniform distribution over the integers ``low, low + 1, ..., high``
    (both ends included).

    >>> d = DiscreteUniform(1, 4)
    >>> float(jnp.exp(d.log_prob(3)))
    0.25
    >>> d.enumerate_support().tolist()
    [1, 2, 3, 4]
    """

    arg_constraints = {
        "low": constraints.dependent,
        "high": constraints.dependent,
    }
    has_enumerate_support = True
    pytree_data_fields = ("low", "high")

    def __init__(self, low=0, high=1, *, validate_args=None):
        self.low, self.high = _promote(low, high)
        super().__init__(batch_shape_of(low, high), validate_args=validate_args)

    def _check_args(self):
        super()._check_args()
        low, high = self.low, self.high
        if not is_concrete((low, high)):
            return
        low, high = np.asarray(low), np.asarray(high)
        for name, value in (("low", low), ("high", high)):
            if not np.all(np.floor(value) == value):
                raise ValueError(
                    f"DiscreteUniform: parameter {name!r} must be an integer, "
                    f"got {value!r}"
                )
        if not np.all(low <= high):
            raise ValueError(
                f"DiscreteUniform: parameter 'high' must be >= low, got "
                f"low={low!r}, high={high!r}"
            )

    @property
    def support(self):
        return constraints.integer_interval(self.low, self.high)

    def _size(self):
        return _float(self.high) - _float(self.low) + 1

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        low = jnp.asarray(self.low).astype(jnp.int32)
        high = jnp.asarray(self.high).astype(jnp.int32)
        return jax.random.randint(key, shape, low, high + 1)

    def log_prob(self, value):
        self._validate_sample(value)
        shape = jnp.broadcast_shapes(jnp.shape(value), self.batch_shape)
        return jnp.broadcast_to(-jnp.log(self._size()), shape)

    def cdf(self, value):
        steps = jnp.floor(_float(value)) + 1 - _float(self.low)
        return jnp.clip(steps / self._size(), 0.0, 1.0)

    def icdf(self, q):
        """The smallest support point whose cdf reaches ``q``."""
        steps = jnp.ceil(_float(q) * self._size()) - 1
        return jnp.clip(_float(self.low) + steps, self.low, self.high)

    def enumerate_support(self, expand=True):
        low = _concrete_scalar("DiscreteUniform", "low", self.low)
        high = _concrete_scalar("DiscreteUniform", "high", self.high)
        return _enumerate_range(low, high, self.batch_shape, expand)

    @property
    def mean(self):
        return jnp.broadcast_to((_float(self.low) + self.high) / 2, self.batch_shape)

    @property
    def variance(self):
        return jnp.broadcast_to((jnp.square(self._size()) - 1) / 12, self.batch_shape)

    def entropy(self):
        return jnp.broadcast_to(jnp.log(self._size()), self.batch_shape)


@jax.jit
def _ordered_logistic_log_probs(predictor, cutpoints):
    """log P(category k), k = 0..K-1, for K - 1 increasing cutpoints."""
    inf = jnp.full(cutpoints.shape[:-1] + (1,), jnp.inf, cutpoints.dtype)
    below = jnp.concatenate([-inf, cutpoints], axis=-1)
    above = jnp.concatenate([cutpoints, inf], axis=-1)
    x = predictor[..., None]
    # sigmoid(u) - sigmoid(l) = sigmoid(u) sigmoid(-l) (1 - exp(l - u)), with
    # u = x - below and l = x - above: each factor in log space, and l - u
    # taken from the cutpoints alone
    return (
        jax.nn.log_sigmoid(x - below)
        + jax.nn.log_sigmoid(above - x)
        + log1mexp(below - above)
    )


class OrderedLogistic(Categorical):
    """Ordinal regression: category ``k`` of ``K`` has probability
    ``sigmoid(predictor - c[k-1]) - sigmoid(predictor - c[k])`` for the
    increasing ``cutpoints`` ``c`` (``K - 1`` of them, with ``c[-1] = -inf`` and
    ``c[K-1] = +inf``).

    >>> d = OrderedLogistic(0.0, jnp.array([0.0]))
    >>> d.probs.tolist()
    [0.5, 0.5]
    """

    arg_constraints = {
        "predictor": constraints.real,
        "cutpoints": constraints.ordered_vector,
    }
    pytree_data_fields = ("predictor", "cutpoints", "_probs", "_logits")

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        return Distribution.infer_shapes.__func__(cls, *args, **kwargs)

    def __init__(self, predictor, cutpoints, *, validate_args=None):
        if jnp.ndim(cutpoints) < 1:
            raise ValueError(
                "OrderedLogistic: cutpoints needs a last dim, got shape "
                f"{jnp.shape(cutpoints)}"
            )
        self.predictor, self.cutpoints = _promote(
            predictor, cutpoints, event_ndims=(0, 1)
        )
        batch_shape = batch_shape_of(predictor, cutpoints, event_ndims=(0, 1))
        predictor = jnp.broadcast_to(_float(self.predictor), batch_shape)
        cutpoints = _float(self.cutpoints)
        cutpoints = jnp.broadcast_to(cutpoints, batch_shape + cutpoints.shape[-1:])
        log_probs = _ordered_logistic_log_probs(predictor, cutpoints)
        super().__init__(logits=log_probs, validate_args=validate_args)
