"""Distributions given integer parameters (``Beta(1, 1)``, ``Gamma(2, 1)``)
or integer data differentiate like their float versions.

JAX's ``xlogy`` rule meets a float0 tangent when one argument is an integer
and the other is differentiated; NumPyro programs write ``Beta(1, 1)`` as a
prior and pass count data as integers, so both must work under ``grad``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.infer import SVI, TraceEnum_ELBO, config_enumerate
from probnn.ops.indexing import Vindex

# (family, integer parameters, a value in the support)
CONTINUOUS = [
    (dist.Beta, (1, 1), 0.3),
    (dist.Beta, (2, 5), 0.3),
    (dist.Gamma, (2, 1), 1.7),
    (dist.Gamma, (1, 3), 0.4),
    (dist.InverseGamma, (3, 2), 0.8),
    (dist.Chi2, (3,), 2.5),
    (dist.StudentT, (4, 0, 1), 0.7),
    (dist.Weibull, (1, 2), 0.9),
    (dist.Pareto, (1, 2), 1.5),
    (dist.Dirichlet, (np.array([1, 3]),), np.array([0.25, 0.75])),
]


@pytest.mark.parametrize("family, params, value", CONTINUOUS)
def test_gradient_in_the_value_with_integer_parameters(family, params, value):
    def log_prob(x, params):
        return jnp.sum(family(*params).log_prob(x))

    as_float = tuple(np.asarray(p, np.float32) for p in params)
    value = jnp.asarray(value, jnp.float32)
    got = jax.grad(log_prob)(value, params)
    expected = jax.grad(log_prob)(value, as_float)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(
        log_prob(value, params), log_prob(value, as_float), rtol=1e-6
    )


# (family from a float parameter, integer data)
DISCRETE = [
    (lambda p: dist.Poisson(p), 1.7, np.array([0, 3, 1])),
    (lambda p: dist.Bernoulli(probs=p), 0.3, np.array([0, 1, 1])),
    (lambda p: dist.Binomial(5, probs=p), 0.3, np.array([0, 2, 5])),
    (lambda p: dist.Geometric(probs=p), 0.3, np.array([0, 2, 4])),
    (lambda p: dist.NegativeBinomial(3, probs=p), 0.4, np.array([0, 2, 7])),
]


@pytest.mark.parametrize("make, param, data", DISCRETE)
def test_gradient_in_the_parameter_with_integer_data(make, param, data):
    def log_prob(p, x):
        return jnp.sum(make(p).log_prob(x))

    got = jax.grad(log_prob)(param, data)
    expected = jax.grad(log_prob)(param, data.astype(np.float32))
    assert np.isfinite(got)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_enumerated_model_with_integer_beta_prior_trains():
    # a hidden switch between two coins; the coins' priors written as
    # Beta(1, 1) with Python ints, as NumPyro's programs write them
    rng = np.random.default_rng(0)
    switch = rng.random(400) < 0.3
    flips = (rng.random(400) < np.where(switch, 0.9, 0.1)).astype(np.int32)

    @config_enumerate
    def model(flips):
        weight = probnn.sample("weight", dist.Beta(1, 1))
        coins = probnn.sample("coins", dist.Beta(jnp.ones(2), 1).to_event(1))
        with probnn.plate("n", len(flips)):
            z = probnn.sample("z", dist.Bernoulli(weight)).astype(jnp.int32)
            probnn.sample("x", dist.Bernoulli(Vindex(coins)[z]), obs=flips)

    def guide(flips):
        w = probnn.param(
            "w", jnp.array([1.0, 1.0]), constraint=dist.constraints.positive
        )
        probnn.sample("weight", dist.Beta(w[0], w[1]))
        c = probnn.param(
            "c",
            jnp.array([[1.0, 2.0], [2.0, 1.0]]),
            constraint=dist.constraints.positive,
        )
        probnn.sample("coins", dist.Beta(c[:, 0], c[:, 1]).to_event(1))

    svi = SVI(model, guide, optax.adam(0.05), TraceEnum_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 600, flips, progress_bar=False)
    assert np.all(np.isfinite(result.losses))
    assert result.losses[-50:].mean() < result.losses[:50].mean()
    c = result.params["c"]
    means = np.asarray(c[:, 0] / c.sum(1))
    # the overall head rate 0.3 * 0.9 + 0.7 * 0.1 = 0.34 is reproduced
    w = result.params["w"]
    weight = float(w[0] / w.sum())
    np.testing.assert_allclose(
        weight * means[1] + (1 - weight) * means[0], flips.mean(), atol=0.05
    )
