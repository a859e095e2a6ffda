"""sample() accepts any object following the distribution protocol."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probnn
from probnn.handlers import seed, trace
from probnn.infer.util import log_density


class ForeignExponential:
    """Not a probnn Distribution: only the documented protocol."""

    def __init__(self, rate):
        self.rate = jnp.asarray(rate)
        self.batch_shape = self.rate.shape
        self.event_shape = ()

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        return jax.random.exponential(key, shape) / self.rate

    def log_prob(self, value):
        return jnp.log(self.rate) - self.rate * value


def model(y=None):
    rate = probnn.sample("rate", ForeignExponential(2.0))
    probnn.sample("y", ForeignExponential(jnp.full(3, rate)), obs=y)


def test_foreign_distribution_in_trace_and_log_density():
    tr = trace(seed(model, rng_seed=0)).get_trace()
    assert tr["rate"]["value"].shape == () and tr["y"]["value"].shape == (3,)
    y = jnp.array([0.5, 1.0, 2.0])
    log_joint, _ = log_density(model, (y,), {}, {"rate": 1.5})
    expected = (
        stats.expon.logpdf(1.5, scale=0.5)
        + stats.expon.logpdf(np.asarray(y), scale=1 / 1.5).sum()
    )
    np.testing.assert_allclose(float(log_joint), expected, rtol=1e-5)


def test_foreign_distribution_gradient_through_log_density():
    y = jnp.array([0.5, 1.0, 2.0])
    grad = jax.grad(lambda r: log_density(model, (y,), {}, {"rate": r})[0])(1.5)
    # d/dr [log 2 - 2r + 3 log r - r sum(y)] = -2 + 3/r - sum(y)
    np.testing.assert_allclose(float(grad), -2 + 3 / 1.5 - 3.5, rtol=1e-5)


def test_foreign_distribution_without_expand_in_plate_names_site():
    def plated():
        with probnn.plate("N", 4):
            probnn.sample("z", ForeignExponential(1.0))

    with pytest.raises(TypeError, match="'z'.*expand"):
        seed(plated, rng_seed=0)()


def test_foreign_distribution_with_matching_batch_shape_in_plate():
    def plated():
        with probnn.plate("N", 4):
            return probnn.sample("z", ForeignExponential(jnp.ones(4)))

    assert seed(plated, rng_seed=0)().shape == (4,)
