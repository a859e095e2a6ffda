"""``Trace_ELBO(sum_sites=False)`` (per-site contributions) and
``Trace_ELBO(multi_sample_guide=True)`` (a guide drawing several samples at
once), checked against closed forms and a hand-written estimate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.infer import SVI, Trace_ELBO
from probnn.infer.util import log_density

Y = jnp.array([0.3, -1.2, 0.8, 2.0])


def model(y):
    mu = probnn.sample("mu", dist.Normal(0.0, 2.0))
    with probnn.plate("data", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, 1.0), obs=y)


def guide(y):
    loc = probnn.param("loc", 0.5)
    probnn.sample("mu", dist.Normal(loc, 0.7))


PARAMS = {"loc": 0.5}


def test_per_site_contributions_sum_to_the_loss():
    key = jax.random.PRNGKey(0)
    per_site = Trace_ELBO(sum_sites=False).loss(key, PARAMS, model, guide, Y)
    total = Trace_ELBO().loss(key, PARAMS, model, guide, Y)
    assert set(per_site) == {"mu", "y"}
    np.testing.assert_allclose(sum(per_site.values()), total, rtol=1e-6)
    # by hand at the guide's draw: mu contributes log q - log p, y -log p(y|mu)
    _, guide_key = jax.random.split(key)
    tr = probnn.handlers.trace(
        probnn.handlers.seed(probnn.handlers.substitute(guide, data=PARAMS), guide_key)
    ).get_trace(Y)
    mu = tr["mu"]["value"]
    expected_mu = dist.Normal(0.5, 0.7).log_prob(mu) - dist.Normal(0.0, 2.0).log_prob(
        mu
    )
    expected_y = -jnp.sum(dist.Normal(mu, 1.0).log_prob(Y))
    np.testing.assert_allclose(per_site["mu"], expected_mu, rtol=1e-5)
    np.testing.assert_allclose(per_site["y"], expected_y, rtol=1e-5)


def test_per_site_contributions_average_particles():
    elbo = Trace_ELBO(num_particles=4000, sum_sites=False)
    per_site = elbo.loss(jax.random.PRNGKey(1), PARAMS, model, guide, Y)
    # E_q[log q - log p](mu) is KL(q || prior) in closed form
    kl = dist.kl_divergence(dist.Normal(0.5, 0.7), dist.Normal(0.0, 2.0))
    np.testing.assert_allclose(per_site["mu"], kl, atol=0.05)


def test_mean_field_per_site_contributions_use_the_closed_form_kl():
    from probnn.infer import TraceMeanField_ELBO

    key = jax.random.PRNGKey(2)
    per_site = TraceMeanField_ELBO(sum_sites=False).loss(key, PARAMS, model, guide, Y)
    total = TraceMeanField_ELBO().loss(key, PARAMS, model, guide, Y)
    assert set(per_site) == {"mu", "y"}
    np.testing.assert_allclose(sum(per_site.values()), total, rtol=1e-6)
    # mu's term is KL(q || prior) exactly, with no Monte Carlo noise
    kl = dist.kl_divergence(dist.Normal(0.5, 0.7), dist.Normal(0.0, 2.0))
    np.testing.assert_allclose(per_site["mu"], kl, rtol=1e-6)


def sample_guide(num):
    def guide(y):
        loc = probnn.param("loc", 0.5)
        probnn.sample("mu", dist.Normal(loc, 0.7).expand([num]).to_event(1))

    return guide


def test_multi_sample_guide_sums_the_model_over_its_samples():
    num = 5
    key = jax.random.PRNGKey(2)
    elbo = Trace_ELBO(multi_sample_guide=True)
    loss = elbo.loss(key, PARAMS, model, sample_guide(num), Y)
    _, guide_key = jax.random.split(key)
    tr = probnn.handlers.trace(
        probnn.handlers.seed(
            probnn.handlers.substitute(sample_guide(num), data=PARAMS), guide_key
        )
    ).get_trace(Y)
    mus = tr["mu"]["value"]
    assert mus.shape == (num,)
    log_p = sum(log_density(model, (Y,), {}, {"mu": m})[0] for m in mus)
    log_q = jnp.sum(dist.Normal(0.5, 0.7).log_prob(mus))
    np.testing.assert_allclose(loss, -(log_p - log_q), rtol=1e-5)


def test_multi_sample_guide_trains_with_svi():
    svi = SVI(
        model,
        sample_guide(8),
        __import__("optax").adam(0.05),
        Trace_ELBO(multi_sample_guide=True),
    )
    result = svi.run(jax.random.PRNGKey(3), 600, Y, progress_bar=False)
    # the exact posterior mean of mu: sum(y) / (n + 1 / prior variance)
    posterior_mean = float(jnp.sum(Y) / (Y.shape[0] + 0.25))
    assert abs(float(result.params["loc"]) - posterior_mean) < 0.1


def test_multi_sample_guide_rejects_unequal_sample_dims():
    def guide(y):
        probnn.sample("mu", dist.Normal(jnp.zeros(3), 1.0).to_event(1))
        probnn.sample("extra", dist.Normal(jnp.zeros(2), 1.0).to_event(1))

    with pytest.raises(ValueError, match="same leading number of samples"):
        Trace_ELBO(multi_sample_guide=True).loss(
            jax.random.PRNGKey(0), {}, model, guide, Y
        )


def test_vectorize_particles_takes_a_mapping_callable_as_in_numpyro():
    def model():
        probnn.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        probnn.sample("z", dist.Normal(probnn.param("m", 0.3), 1.0))

    calls = []

    def my_map(fn, keys):
        calls.append(keys.shape)
        return jax.lax.map(fn, keys)

    key, params = jax.random.PRNGKey(3), {"m": jnp.asarray(0.3)}
    losses = [
        Trace_ELBO(num_particles=4, vectorize_particles=v).loss(
            key, params, model, guide
        )
        for v in (True, False, my_map)
    ]
    np.testing.assert_allclose(losses[1:], losses[0], rtol=1e-6)
    assert len(calls) == 1 and calls[0][0] == 4  # one call, with the 4 keys
    with pytest.raises(ValueError, match="Trace_ELBO: vectorize_particles must be"):
        Trace_ELBO(vectorize_particles="vmap")


def test_sites_the_guide_observes_count_in_its_log_density():
    # as in NumPyro: loss = log q(guide's observed sites) - log p(model's)
    def obs_model():
        probnn.sample("x", dist.Normal(1.0, 0.5), obs=0.3)

    def obs_guide():
        probnn.sample("y", dist.Normal(probnn.param("c", -1.0), 0.4), obs=0.3)

    key, params = jax.random.PRNGKey(0), {"c": jnp.asarray(-1.0)}
    expected = dist.Normal(-1.0, 0.4).log_prob(0.3) - dist.Normal(1.0, 0.5).log_prob(
        0.3
    )
    loss = Trace_ELBO().loss(key, params, obs_model, obs_guide)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_mutable_state_of_several_particles_is_their_mean_and_says_so():
    def counting_model():
        x = probnn.sample("x", dist.Normal(0.0, 1.0))
        probnn.mutable("last_x", x)

    def counting_guide():
        probnn.sample("x", dist.Normal(probnn.param("m", 0.0), 1.0))

    key, params = jax.random.PRNGKey(4), {"m": jnp.asarray(0.0)}
    elbo = Trace_ELBO(num_particles=3)
    with pytest.warns(UserWarning, match="mutable state with num_particles=3"):
        out = elbo.loss_with_mutable_state(key, params, counting_model, counting_guide)
    # the mean of the three particles' draws of x
    keys = jax.random.split(key, 3)
    draws = [
        probnn.handlers.trace(
            probnn.handlers.seed(
                probnn.handlers.substitute(counting_guide, data=params),
                jax.random.split(k)[1],
            )
        ).get_trace()["x"]["value"]
        for k in keys
    ]
    np.testing.assert_allclose(
        out["mutable_state"]["last_x"], np.mean(draws), rtol=1e-5, atol=1e-6
    )
