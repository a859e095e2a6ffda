"""HMCECS: the subsampling estimator against a hand-written computation, the
posterior against closed forms, and the chain's bookkeeping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.infer import HMC, HMCECS, MCMC, NUTS


def logistic(features, labels, m):
    n, d = features.shape
    theta = probnn.sample("theta", dist.Normal(jnp.zeros(d), 0.5))
    with probnn.plate("N", n, subsample_size=m):
        x = probnn.subsample(features, event_dim=1)
        y = probnn.subsample(labels, event_dim=0)
        probnn.sample("y", dist.Bernoulli(logits=x @ theta), obs=y)


def _logistic_data(n=12, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, n), jnp.float32)
    return x, y


@pytest.mark.parametrize("degree", [1, 2])
def test_potential_is_the_difference_estimator_written_by_hand(degree):
    x, y = _logistic_data()
    reference = jnp.array([0.1, -0.2, 0.3])
    kernel = HMCECS(
        NUTS(logistic),
        num_blocks=2,
        proxy=HMCECS.taylor_proxy({"theta": reference}, degree),
    )
    args = (x, y, 5)
    kernel.setup(args, {}, traced_args=False)
    indices, proxy_state = kernel._gibbs_init(jax.random.PRNGKey(3), args, {})
    potential = kernel._potential(args, {"_hmcecs": (indices, proxy_state)})

    def point_log_lik(theta, i):
        logits = x[i] @ theta
        return y[i] * jax.nn.log_sigmoid(logits) + (1 - y[i]) * jax.nn.log_sigmoid(
            -logits
        )

    def expansion(theta, i):
        d = theta - reference
        value = (
            point_log_lik(reference, i) + jax.jacrev(point_log_lik)(reference, i) @ d
        )
        if degree == 2:
            hessian = jax.hessian(point_log_lik)(reference, i)
            value = value + 0.5 * jnp.einsum("mij,i,j->m", hessian, d, d)
        return value

    u = indices["N"]
    for theta in ([0.5, 0.4, -1.0], [-0.3, 0.0, 0.2]):
        theta = jnp.asarray(theta)
        diff = point_log_lik(theta, u) - expansion(theta, u)
        estimate = (
            expansion(theta, jnp.arange(12)).sum()
            + 12 * diff.mean()
            - 0.5 * 12**2 / 5 * diff.var()
        )
        prior = dist.Normal(0.0, 0.5).log_prob(theta).sum()
        np.testing.assert_allclose(potential(theta)[0], -(prior + estimate), rtol=1e-5)


def _normal_mean_model(data):
    mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    with probnn.plate("N", data.shape[0], subsample_size=100):
        batch = probnn.subsample(data, event_dim=0)
        probnn.sample("obs", dist.Normal(mu, 1.0), obs=batch)


@pytest.mark.parametrize("inner", [NUTS, HMC])
def test_taylor_proxy_recovers_the_conjugate_posterior(inner):
    data = jax.random.normal(jax.random.PRNGKey(0), (2000,)) + 1.0
    post_mean = float(data.sum() / 2001)
    post_sd = (1 / 2001) ** 0.5
    kernel = HMCECS(
        inner(_normal_mean_model)
        if inner is NUTS
        else inner(_normal_mean_model, num_steps=5, trajectory_length=None),
        num_blocks=10,
        proxy=HMCECS.taylor_proxy({"mu": post_mean + 0.01}),
    )
    mcmc = MCMC(kernel, num_warmup=300, num_samples=1000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), data, extra_fields=("gibbs_accept_prob",))
    mu = np.asarray(mcmc.get_samples()["mu"])
    # Monte Carlo error of the mean with a few hundred effective draws
    assert abs(mu.mean() - post_mean) < 4 * post_sd / np.sqrt(200)
    assert 0.8 < mu.std() / post_sd < 1.25
    accept = mcmc.get_extra_fields()["gibbs_accept_prob"]
    assert accept.shape == (1000,) and float(accept.mean()) > 0.5


def test_without_proxy_the_potential_is_the_scaled_subsample():
    data = jax.random.normal(jax.random.PRNGKey(0), (2000,)) + 1.0
    kernel = HMCECS(NUTS(_normal_mean_model), num_blocks=100)
    kernel.setup((data,), {}, traced_args=False)
    indices, proxy_state = kernel._gibbs_init(jax.random.PRNGKey(1), (data,), {})
    assert proxy_state == ()
    potential = kernel._potential((data,), {"_hmcecs": (indices, proxy_state)})
    mu = jnp.asarray(0.7)
    batch = data[indices["N"]]
    flat = jnp.array([0.7])  # the chain's flat point
    expected = -(
        dist.Normal(0.0, 1.0).log_prob(mu)
        + 2000 / 100 * dist.Normal(mu, 1.0).log_prob(batch).sum()
    )
    np.testing.assert_allclose(potential(flat)[0], expected, rtol=1e-5)

    mcmc = MCMC(kernel, num_warmup=200, num_samples=300, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(2), data)
    mu = np.asarray(mcmc.get_samples()["mu"])
    # naive subsampling stays near one mini-batch's posterior: its mean is
    # within a few mini-batch standard errors (1 / sqrt(100)) of the data's
    assert abs(mu.mean() - float(data.mean())) < 0.35
    state = mcmc.last_state
    indices = np.asarray(state.gibbs_sites["N"])
    assert indices.shape == (100,) and indices.min() >= 0 and indices.max() < 2000


def test_chain_keeps_the_proxy_statistics_of_its_current_subsample():
    x, y = _logistic_data(n=40, d=2, seed=1)
    reference = {"theta": jnp.array([0.2, -0.1])}
    kernel = HMCECS(NUTS(logistic), num_blocks=4, proxy=HMCECS.taylor_proxy(reference))
    mcmc = MCMC(kernel, num_warmup=20, num_samples=20, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, y, 10)
    state = mcmc.last_state
    indices = state.gibbs_sites
    fresh = kernel._proxy.init(kernel, indices, (x, y, 10), {})["N"]
    kept = state.gibbs_state["N"]
    np.testing.assert_allclose(kept.subsample_value, fresh.subsample_value, rtol=1e-5)
    np.testing.assert_allclose(
        kept.subsample_gradient, fresh.subsample_gradient, rtol=1e-5
    )
    np.testing.assert_allclose(
        kept.subsample_hessian, fresh.subsample_hessian, rtol=1e-4, atol=1e-6
    )
    # the subsample moved: more than the initial indices were visited
    assert kept.total_hessian.shape == (2, 2)
    # the chain's potential and gradient are those of its final subsample
    potential = kernel._potential((x, y, 10), {"_hmcecs": (indices, state.gibbs_state)})
    value, grad = potential(state.z)
    np.testing.assert_allclose(state.potential_energy, value, rtol=1e-5)
    np.testing.assert_allclose(state.z_grad, grad, rtol=1e-4, atol=1e-5)


def test_bad_configurations_are_refused_by_name():
    x, y = _logistic_data()

    def unsubsampled(features, labels):
        theta = probnn.sample("theta", dist.Normal(jnp.zeros(3), 1.0))
        with probnn.plate("N", 12):
            probnn.sample("y", dist.Bernoulli(logits=features @ theta), obs=labels)

    with pytest.raises(ValueError, match="no subsampled plate"):
        MCMC(HMCECS(NUTS(unsubsampled)), num_warmup=5, num_samples=5).run(
            jax.random.PRNGKey(0), x, y
        )
    with pytest.raises(ValueError, match="num_blocks=6 exceeds the subsample_size 5"):
        MCMC(HMCECS(NUTS(logistic), num_blocks=6), num_warmup=5, num_samples=5).run(
            jax.random.PRNGKey(0), x, y, 5
        )
    with pytest.raises(ValueError, match=r"missing \['theta'\], unknown \['beta'\]"):
        kernel = HMCECS(NUTS(logistic), proxy=HMCECS.taylor_proxy({"beta": 0.0}))
        MCMC(kernel, num_warmup=5, num_samples=5, progress_bar=False).run(
            jax.random.PRNGKey(0), x, y, 5
        )
    with pytest.raises(TypeError, match="inner_kernel must be an HMC or NUTS"):
        HMCECS(logistic)
    with pytest.raises(ValueError, match="degree must be 1 or 2"):
        HMCECS.taylor_proxy({"theta": 0.0}, degree=3)


def test_proxy_refuses_discrete_latents_and_the_plate_estimate_takes_them():
    data = jax.random.normal(jax.random.PRNGKey(0), (500,)) + 1.0

    def model(data):
        x = probnn.sample("x", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
        with probnn.plate("N", data.shape[0], subsample_size=50):
            batch = probnn.subsample(data, event_dim=0)
            probnn.sample("obs", dist.Normal(x, 1.0), obs=batch)

    kernel = HMCECS(NUTS(model), num_blocks=5, proxy=HMCECS.taylor_proxy({}))
    with pytest.raises(RuntimeError, match=r"discrete latent sites \['x'\]"):
        MCMC(kernel, num_warmup=5, num_samples=5, progress_bar=False).run(
            jax.random.PRNGKey(0), data
        )
    # without a proxy the enumerated site is summed out as in NUTS
    mcmc = MCMC(HMCECS(NUTS(model), num_blocks=5), num_warmup=5, num_samples=5)
    mcmc.run(jax.random.PRNGKey(0), data)


def test_functional_proxy_matches_a_hand_written_expansion():
    x, y = _logistic_data(n=20, d=2, seed=2)
    reference = jnp.array([0.3, -0.4])
    proxy = HMCECS.taylor_proxy({"theta": reference})
    prototype = probnn.handlers.trace(probnn.handlers.seed(logistic, 0)).get_trace(
        x, y, 6
    )
    proxy_fn, gibbs_init, gibbs_update = proxy(
        prototype, {"N": (20, 6)}, logistic, (x, y, 6), {}, num_blocks=3
    )
    indices = {"N": jnp.array([0, 3, 3, 7, 11, 19])}
    state = gibbs_init(None, indices)
    theta = jnp.array([0.1, 0.2])

    def point_log_lik(t, i):
        logits = x[i] @ t
        return y[i] * jax.nn.log_sigmoid(logits) + (1 - y[i]) * jax.nn.log_sigmoid(
            -logits
        )

    def expansion(i):
        d = theta - reference
        h = jax.hessian(point_log_lik)(reference, i)
        return (
            point_log_lik(reference, i)
            + jax.jacrev(point_log_lik)(reference, i) @ d
            + 0.5 * jnp.einsum("mij,i,j->m", h, d, d)
        )

    totals, subsample = proxy_fn({"theta": theta}, ["N"], state)
    np.testing.assert_allclose(subsample["N"], expansion(indices["N"]), rtol=1e-5)
    np.testing.assert_allclose(totals["N"], expansion(jnp.arange(20)).sum(), rtol=1e-5)
    new_indices, new_state = gibbs_update(jax.random.PRNGKey(4), indices, state)
    changed = np.flatnonzero(np.asarray(new_indices["N"] != indices["N"]))
    assert len(changed) <= 2  # one block of ceil(6 / 3) positions
    _, subsample = proxy_fn({"theta": theta}, ["N"], new_state)
    np.testing.assert_allclose(subsample["N"], expansion(new_indices["N"]), rtol=1e-5)


def test_hmc_state_view_serves_numpyro_field_paths():
    data = jax.random.normal(jax.random.PRNGKey(0), (400,))
    kernel = HMCECS(NUTS(_normal_mean_model), num_blocks=4)
    mcmc = MCMC(kernel, num_warmup=20, num_samples=30, progress_bar=False)
    mcmc.run(
        jax.random.PRNGKey(0),
        data,
        extra_fields=("hmc_state.potential_energy", "potential_energy"),
    )
    fields = mcmc.get_extra_fields()
    np.testing.assert_array_equal(
        fields["hmc_state.potential_energy"], fields["potential_energy"]
    )
    assert fields["potential_energy"].shape == (30,)
