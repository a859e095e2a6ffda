"""KL divergences against Monte-Carlo estimates (continuous) or exact sums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn.distributions as dist
from probnn.distributions import kl_divergence

DRAWS = 40_000


def _monte_carlo(p, q, key):
    x = p.sample(key, (DRAWS,))
    ratio = p.log_prob(x) - q.log_prob(x)
    return jnp.mean(ratio, 0), jnp.std(ratio, 0) / np.sqrt(DRAWS)


def _tril(seed, d=3):
    a = jax.random.normal(jax.random.PRNGKey(seed), (d, d))
    return jnp.tril(a, -1) + jnp.diag(jnp.exp(0.3 * jnp.diag(a)))


PAIRS = {
    "normal": (
        dist.Normal(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.5])),
        dist.Normal(jnp.array([0.5, -1.0]), jnp.array([2.0, 0.7])),
    ),
    "multivariate_normal": (
        dist.MultivariateNormal(jnp.array([0.0, 1.0, -1.0]), scale_tril=_tril(0)),
        dist.MultivariateNormal(jnp.array([0.5, 0.0, 0.0]), scale_tril=_tril(1)),
    ),
    "independent": (
        dist.Normal(jnp.zeros((2, 3)), 1.0).to_event(1),
        dist.Normal(jnp.full((2, 3), 0.5), 1.5).to_event(1),
    ),
    "beta": (
        dist.Beta(jnp.array([2.0, 0.8]), jnp.array([3.0, 1.2])),
        dist.Beta(jnp.array([1.0, 2.0]), jnp.array([1.5, 0.9])),
    ),
    "gamma": (
        dist.Gamma(jnp.array([2.0, 5.0]), jnp.array([1.0, 3.0])),
        dist.Gamma(jnp.array([3.0, 4.0]), jnp.array([2.0, 2.5])),
    ),
    "dirichlet": (
        dist.Dirichlet(jnp.array([2.0, 3.0, 1.5])),
        dist.Dirichlet(jnp.array([1.0, 1.0, 4.0])),
    ),
    "expanded_normal": (
        dist.Normal(0.3, 1.2).expand((4,)),
        dist.Normal(jnp.arange(4.0), 1.0),
    ),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_kl_matches_monte_carlo(name):
    p, q = PAIRS[name]
    kl = kl_divergence(p, q)
    estimate, error = _monte_carlo(p, q, jax.random.PRNGKey(7))
    assert kl.shape == jnp.broadcast_shapes(p.batch_shape, q.batch_shape)
    np.testing.assert_array_less(np.abs(kl - estimate), 5 * error + 1e-3)
    assert bool(jnp.all(kl >= -1e-6))


def test_kl_of_identical_distributions_is_zero():
    for p, _ in PAIRS.values():
        np.testing.assert_allclose(kl_divergence(p, p), 0.0, atol=1e-5)


def test_kl_categorical_and_bernoulli_exact():
    probs_p = jnp.array([[0.2, 0.5, 0.3], [0.0, 0.4, 0.6]])
    probs_q = jnp.array([[0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    p, q = dist.Categorical(probs=probs_p), dist.Categorical(logits=jnp.log(probs_q))
    safe = jnp.where(probs_p > 0, probs_p, 1.0)
    expected = jnp.sum(
        jnp.where(probs_p > 0, probs_p * jnp.log(safe / probs_q), 0.0), -1
    )
    np.testing.assert_allclose(kl_divergence(p, q), expected, rtol=1e-5)

    a, b = jnp.array([0.3, 0.9]), jnp.array([0.6, 0.2])
    expected = a * jnp.log(a / b) + (1 - a) * jnp.log((1 - a) / (1 - b))
    np.testing.assert_allclose(
        kl_divergence(
            dist.Bernoulli(probs=a), dist.Bernoulli(logits=jnp.log(b / (1 - b)))
        ),
        expected,
        rtol=1e-5,
    )


def test_kl_delta_is_negative_log_density_of_q():
    q = dist.Normal(1.0, 2.0)
    p = dist.Delta(jnp.array([0.0, 3.0]))
    np.testing.assert_allclose(kl_divergence(p, q), -q.log_prob(p.v), rtol=1e-6)


def test_kl_masked_zero_where_masked():
    p = dist.Normal(jnp.zeros(3), 1.0).mask(jnp.array([True, False, True]))
    q = dist.Normal(1.0, 1.0)
    np.testing.assert_allclose(kl_divergence(p, q), [0.5, 0.0, 0.5], rtol=1e-6)


def test_unregistered_pair_names_both_types():
    with pytest.raises(NotImplementedError, match="Normal and Bernoulli"):
        kl_divergence(dist.Normal(0.0, 1.0), dist.Bernoulli(probs=0.5))


def test_kl_under_jit_and_grad():
    def kl(loc):
        return kl_divergence(dist.Normal(loc, 1.0), dist.Normal(0.0, 2.0))

    np.testing.assert_allclose(jax.jit(kl)(1.0), kl(1.0), rtol=1e-6)
    # d/dloc [ (loc^2) / (2 * 4) ] = loc / 4
    np.testing.assert_allclose(jax.grad(kl)(1.0), 0.25, rtol=1e-5)
