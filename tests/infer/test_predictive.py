"""Tests of probnn.infer.predictive against closed forms and scipy."""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probnn
import probnn.distributions as dist
from probnn.handlers import mask, scale
from probnn.infer.predictive import Predictive, log_likelihood

SIGMA = 0.5


def normal_model(n, y=None):
    mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    probnn.deterministic("twice_mu", 2.0 * mu)
    with probnn.plate("N", n):
        return probnn.sample("y", dist.Normal(mu, SIGMA), obs=y)


def guide(n, y=None):
    loc = probnn.param("loc", 0.0)
    scale_ = probnn.param("scale", 1.0, constraint=dist.constraints.positive)
    probnn.sample("mu", dist.Normal(loc, scale_))


def assert_mean_close(samples, mean, std, axis=None):
    """Sample mean within 5 standard errors of ``mean``."""
    samples = np.asarray(samples)
    count = samples.size if axis is None else samples.shape[axis]
    np.testing.assert_array_less(
        np.abs(samples.mean(axis=axis) - mean), 5 * std / np.sqrt(count)
    )


def test_prior_predictive_matches_normal_normal_marginal():
    num_samples = 20_000
    out = Predictive(normal_model, num_samples=num_samples)(jax.random.PRNGKey(0), 2)
    assert set(out) == {"mu", "twice_mu", "y"}
    assert out["mu"].shape == (num_samples,)
    assert out["y"].shape == (num_samples, 2)
    y = np.asarray(out["y"], np.float64)
    marginal_var = 1.0 + SIGMA**2
    assert_mean_close(y[:, 0], 0.0, np.sqrt(marginal_var))
    # var of a sample variance of normals: 2 var^2 / (n - 1)
    assert abs(y[:, 0].var() - marginal_var) < 5 * marginal_var * np.sqrt(
        2 / num_samples
    )
    # the two members share mu: covariance 1
    cov = np.cov(y[:, 0], y[:, 1])[0, 1]
    assert abs(cov - 1.0) < 0.05
    np.testing.assert_allclose(out["twice_mu"], 2.0 * out["mu"], rtol=1e-6)


def test_posterior_predictive_draws_around_each_given_sample():
    mu = jnp.array([-3.0, 0.0, 2.0, 10.0])
    n = 4000
    out = Predictive(normal_model, {"mu": mu})(jax.random.PRNGKey(1), n)
    assert set(out) == {"twice_mu", "y"}
    assert out["y"].shape == (4, n)
    assert_mean_close(out["y"] - mu[:, None], 0.0, SIGMA, axis=1)
    np.testing.assert_allclose(out["y"].std(axis=1), SIGMA, rtol=0.05)
    # one independent key per sample: the noise differs between samples
    noise = np.asarray(out["y"] - mu[:, None])
    assert not np.allclose(noise[0], noise[1])
    np.testing.assert_allclose(out["twice_mu"], 2.0 * mu)


def test_observed_site_is_returned_as_given():
    y = jnp.array([0.1, 0.2])
    out = Predictive(normal_model, {"mu": jnp.zeros(3)})(jax.random.PRNGKey(0), 2, y)
    np.testing.assert_array_equal(out["y"], jnp.broadcast_to(y, (3, 2)))


def test_deterministic_sites_are_recomputed_unless_conditioned():
    samples = {"mu": jnp.array([1.0, 2.0]), "twice_mu": jnp.array([7.0, 7.0])}
    out = Predictive(normal_model, samples)(jax.random.PRNGKey(0), 1)
    np.testing.assert_allclose(out["twice_mu"], [2.0, 4.0])
    conditioned = Predictive(normal_model, samples, condition_deterministic=True)
    np.testing.assert_allclose(conditioned(jax.random.PRNGKey(0), 1)["twice_mu"], 7.0)


def test_exclude_deterministic_is_the_deprecated_inverse_of_condition():
    samples = {"mu": jnp.array([1.0, 2.0]), "twice_mu": jnp.array([7.0, 7.0])}
    key = jax.random.PRNGKey(0)
    with pytest.warns(DeprecationWarning, match="condition_deterministic=True"):
        kept = Predictive(normal_model, samples, exclude_deterministic=False)
    np.testing.assert_allclose(kept(key, 1)["twice_mu"], 7.0)
    with pytest.warns(DeprecationWarning, match="condition_deterministic=False"):
        recomputed = Predictive(normal_model, samples, exclude_deterministic=True)
    np.testing.assert_allclose(recomputed(key, 1)["twice_mu"], [2.0, 4.0])
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ValueError, match="contradict"),
    ):
        Predictive(
            normal_model,
            samples,
            condition_deterministic=True,
            exclude_deterministic=True,
        )


def test_return_sites_filters_and_empty_string_returns_every_site():
    mu = jnp.array([1.0, 2.0])
    key = jax.random.PRNGKey(0)
    only_mu = Predictive(normal_model, {"mu": mu}, return_sites=["mu"])(key, 3)
    assert list(only_mu) == ["mu"]
    np.testing.assert_array_equal(only_mu["mu"], mu)
    only_y = Predictive(normal_model, {"mu": mu}, return_sites=("y",))(key, 3)
    assert list(only_y) == ["y"] and only_y["y"].shape == (2, 3)
    every = Predictive(normal_model, {"mu": mu}, return_sites="")(key, 3)
    assert set(every) == {"mu", "twice_mu", "y"}  # plates are not returned


def test_batch_ndims_two_keeps_chain_and_draw_dims():
    mu = jnp.array([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]])
    n = 2000
    predictive = Predictive(normal_model, {"mu": mu}, batch_ndims=2, num_samples=6)
    out = predictive(jax.random.PRNGKey(2), n)
    assert out["y"].shape == (2, 3, n)
    assert out["twice_mu"].shape == (2, 3)
    assert_mean_close(out["y"] - mu[..., None], 0.0, SIGMA, axis=2)
    prior = Predictive(normal_model, num_samples=5, batch_ndims=2)
    assert prior(jax.random.PRNGKey(0), 3)["y"].shape == (1, 5, 3)


def test_batch_ndims_zero_predicts_one_sample():
    out = Predictive(normal_model, {"mu": jnp.array(3.0)}, batch_ndims=0)(
        jax.random.PRNGKey(0), 2
    )
    assert out["y"].shape == (2,)
    np.testing.assert_allclose(out["twice_mu"], 6.0)


def test_parallel_and_sequential_give_the_same_draws():
    samples = {"mu": jnp.array([[0.0, 1.0], [2.0, 3.0]])}
    key = jax.random.PRNGKey(3)
    sequential = Predictive(normal_model, samples, batch_ndims=2)(key, 5)
    parallel = Predictive(normal_model, samples, batch_ndims=2, parallel=True)(key, 5)
    assert set(sequential) == set(parallel)
    for name in sequential:
        np.testing.assert_allclose(sequential[name], parallel[name], rtol=1e-6)


def test_predictive_under_jit_matches_eager():
    predictive = Predictive(normal_model, {"mu": jnp.array([0.5, -0.5])})
    key = jax.random.PRNGKey(4)
    eager = predictive(key, 3)
    jitted = jax.jit(lambda k: predictive(k, 3))(key)
    np.testing.assert_allclose(jitted["y"], eager["y"], rtol=1e-6)
    samples_as_argument = jax.jit(
        lambda k, mu: Predictive(normal_model, {"mu": mu}, parallel=True)(k, 3)
    )(key, jnp.array([0.5, -0.5]))
    np.testing.assert_allclose(samples_as_argument["y"], eager["y"], rtol=1e-6)


def test_typed_keys_are_accepted():
    out = Predictive(normal_model, num_samples=3)(jax.random.key(0), 2)
    assert out["y"].shape == (3, 2)


def test_guide_draws_follow_the_guide_distribution():
    num_samples = 20_000
    params = {"loc": 1.5, "scale": 0.4}
    predictive = Predictive(
        normal_model,
        guide=guide,
        params=params,
        num_samples=num_samples,
        return_sites=["mu", "y"],
    )
    out = predictive(jax.random.PRNGKey(5), 1)
    assert out["mu"].shape == (num_samples,)
    assert out["y"].shape == (num_samples, 1)
    assert_mean_close(out["mu"], 1.5, 0.4)
    np.testing.assert_allclose(np.std(np.asarray(out["mu"])), 0.4, rtol=0.03)
    # y | mu ~ N(mu, SIGMA): marginally N(1.5, 0.4^2 + SIGMA^2)
    y_std = np.sqrt(0.4**2 + SIGMA**2)
    assert_mean_close(out["y"][:, 0], 1.5, y_std)
    np.testing.assert_allclose(np.std(np.asarray(out["y"][:, 0])), y_std, rtol=0.03)


def test_guide_sites_are_not_returned_by_default():
    predictive = Predictive(
        normal_model, guide=guide, params={"loc": 2.0, "scale": 0.1}, num_samples=4
    )
    out = predictive(jax.random.PRNGKey(0), 3)
    assert set(out) == {"twice_mu", "y"}
    assert out["y"].shape == (4, 3)


def test_guide_with_batched_params():
    params = {"loc": jnp.array([-10.0, 10.0]), "scale": jnp.array([0.1, 0.1])}
    predictive = Predictive(
        normal_model,
        guide=guide,
        params=params,
        num_samples=500,
        batch_ndims=1,
        return_sites=["mu"],
    )
    mu = predictive(jax.random.PRNGKey(6), 1)["mu"]
    assert mu.shape == (500, 2)
    assert_mean_close(mu, np.array([-10.0, 10.0]), 0.1, axis=0)


def test_params_without_guide_are_substituted_into_the_model():
    def model(n):
        w = probnn.param("w", 0.0)
        with probnn.plate("N", n):
            probnn.sample("y", dist.Normal(w, 1.0))

    out = Predictive(model, params={"w": 3.0}, num_samples=4000)(
        jax.random.PRNGKey(7), 1
    )
    assert set(out) == {"y"}
    assert_mean_close(out["y"], 3.0, 1.0)


def hierarchical_model(y, y_scale=1.0):
    mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    with probnn.plate("groups", 2, dim=-2):
        offset = probnn.sample("offset", dist.Normal(0.0, 1.0))
        with probnn.plate("N", y.shape[-1]), scale(scale=y_scale):
            probnn.sample("y", dist.Normal(mu + offset, SIGMA), obs=y)


Y = np.array([[0.3, -1.2, 2.0], [1.1, 0.4, -0.7]], dtype=np.float32)


def test_log_likelihood_matches_scipy_per_sample():
    mu = np.array([0.0, 0.5, -1.0], np.float32)
    offset = np.array([[[0.2], [-0.3]], [[0.0], [1.0]], [[-2.0], [0.5]]], np.float32)
    loglik = log_likelihood(hierarchical_model, {"mu": mu, "offset": offset}, Y)
    assert list(loglik) == ["y"]
    expected = stats.norm.logpdf(Y[None], mu[:, None, None] + offset, SIGMA)
    assert loglik["y"].shape == (3, 2, 3)
    np.testing.assert_allclose(loglik["y"], expected, rtol=1e-5)
    parallel = log_likelihood(
        hierarchical_model, {"mu": mu, "offset": offset}, Y, parallel=True
    )
    np.testing.assert_allclose(parallel["y"], expected, rtol=1e-5)


def test_log_likelihood_ignores_scale_like_numpyro():
    # NumPyro's log_likelihood reports the unscaled log density of each
    # observation; ``scale`` (and plate subsampling) only weigh the joint.
    mu = np.array([0.0, 1.0], np.float32)
    offset = np.zeros((2, 2, 1), np.float32)
    loglik = log_likelihood(
        hierarchical_model, {"mu": mu, "offset": offset}, Y, y_scale=3.0
    )
    expected = stats.norm.logpdf(Y[None], mu[:, None, None], SIGMA)
    np.testing.assert_allclose(loglik["y"], expected, rtol=1e-5)


def test_log_likelihood_in_subsampled_plate_takes_plate_indices():
    data = np.arange(6.0, dtype=np.float32)

    def model(data):
        mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
        with probnn.plate("N", 6, subsample_size=2):
            batch = probnn.subsample(data, event_dim=0)
            probnn.sample("y", dist.Normal(mu, 1.0), obs=batch)

    mu = np.array([0.0, 2.0], np.float32)
    indices = np.array([[0, 5], [3, 1]], np.int32)
    loglik = log_likelihood(model, {"mu": mu, "N": indices}, data)
    expected = stats.norm.logpdf(data[indices], mu[:, None], 1.0)
    np.testing.assert_allclose(loglik["y"], expected, rtol=1e-5)


def test_log_likelihood_applies_mask_and_includes_factors():
    keep = np.array([True, False, True])

    def model(y):
        mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
        probnn.factor("penalty", -(mu**2))
        with probnn.plate("N", 3), mask(mask=keep):
            probnn.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = np.array([0.5, 9.0, -1.0], np.float32)
    mu = np.array([0.0, 1.5], np.float32)
    loglik = log_likelihood(model, {"mu": mu}, y)
    expected = np.where(keep, stats.norm.logpdf(y, mu[:, None], 1.0), 0.0)
    np.testing.assert_allclose(loglik["y"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loglik["penalty"], -(mu**2), rtol=1e-6)


def test_log_likelihood_batch_ndims_two_and_jit():
    mu = np.array([[0.0, 1.0, 2.0], [-1.0, 0.5, 3.0]], np.float32)
    y = np.array([0.3, -0.4], np.float32)
    loglik = jax.jit(
        lambda samples: log_likelihood(normal_model, samples, 2, y, batch_ndims=2)
    )({"mu": mu})
    expected = stats.norm.logpdf(y, mu[..., None], SIGMA)
    assert loglik["y"].shape == (2, 3, 2)
    np.testing.assert_allclose(loglik["y"], expected, rtol=1e-5)


def test_unknown_posterior_key_is_an_error():
    predictive = Predictive(normal_model, {"mu": jnp.zeros(2), "sigma": jnp.ones(2)})
    with pytest.raises(ValueError, match="sigma"):
        predictive(jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match="sigma"):
        log_likelihood(
            normal_model, {"mu": jnp.zeros(2), "sigma": jnp.ones(2)}, 2, jnp.zeros(2)
        )


def test_num_samples_must_match_posterior_samples():
    with pytest.raises(ValueError, match="num_samples=5.*3 samples"):
        Predictive(normal_model, {"mu": jnp.zeros(3)}, num_samples=5)
    with pytest.raises(ValueError, match="num_samples=5.*6 samples"):
        Predictive(
            normal_model, {"mu": jnp.zeros((2, 3))}, num_samples=5, batch_ndims=2
        )


def test_num_samples_is_required_without_posterior_samples():
    with pytest.raises(ValueError, match="num_samples"):
        Predictive(normal_model)
    with pytest.raises(ValueError, match="num_samples"):
        Predictive(normal_model, guide=guide, params={"loc": 0.0, "scale": 1.0})


def test_unknown_return_site_is_an_error():
    predictive = Predictive(normal_model, num_samples=2, return_sites=["y", "z"])
    with pytest.raises(ValueError, match=r"\['z'\]"):
        predictive(jax.random.PRNGKey(0), 2)


def mixture_model(y):
    locs = probnn.sample("locs", dist.Normal(0.0, 5.0).expand((2,)).to_event(1))
    with probnn.plate("N", y.shape[0]):
        z = probnn.sample("z", dist.Categorical(probs=jnp.array([0.4, 0.6])))
        probnn.sample("y", dist.Normal(locs[z], 1.0), obs=y)


def test_infer_discrete_draws_discrete_sites_from_their_posterior():
    y = jnp.array([-1.0, 0.2, 1.5])
    locs = jnp.array([-1.0, 1.0])
    n = 4000
    samples = {"locs": jnp.broadcast_to(locs, (n, 2))}
    predictive = Predictive(mixture_model, samples, infer_discrete=True)
    z = predictive(jax.random.PRNGKey(0), y)["z"]
    assert z.shape == (n, 3)
    # exact p(z_i = 1 | y_i, locs), by Bayes' rule with scipy
    like = stats.norm.pdf(np.asarray(y)[:, None], np.asarray(locs)[None], 1.0)
    joint = like * np.array([0.4, 0.6])
    exact = joint[:, 1] / joint.sum(axis=1)
    freq = np.asarray(z).mean(axis=0)
    se = np.sqrt(exact * (1 - exact) / n)
    np.testing.assert_array_less(np.abs(freq - exact), 5 * se + 1e-3)


def test_infer_discrete_returns_deterministic_sites_of_the_draws_not_the_inputs():
    # "weights" is given in the posterior samples (an input); "z_sq" is
    # computed from the discrete draws (a prediction)
    def model():
        weights = probnn.deterministic("weights", jnp.array([0.5, 0.5]))
        with probnn.plate("N", 3):
            z = probnn.sample("z", dist.Categorical(probs=weights))
            probnn.deterministic("z_sq", z**2)

    samples = {"weights": jnp.array([[0.2, 0.8], [0.9, 0.1]])}
    out = Predictive(model, samples, infer_discrete=True, condition_deterministic=True)(
        jax.random.PRNGKey(0)
    )
    assert set(out) == {"z", "z_sq"}
    np.testing.assert_array_equal(out["z_sq"], out["z"] ** 2)
    # without infer_discrete every deterministic site is returned, as in NumPyro
    plain = Predictive(model, samples, condition_deterministic=True)(
        jax.random.PRNGKey(0)
    )
    assert set(plain) == {"weights", "z", "z_sq"}


def test_invalid_arguments_are_errors():
    with pytest.raises(ValueError, match="not both"):
        Predictive(normal_model, {"mu": jnp.zeros(2)}, guide=guide)
    with pytest.raises(ValueError, match="'b'.*'a'"):
        Predictive(normal_model, {"a": jnp.zeros(2), "b": jnp.zeros(3)})
    with pytest.raises(TypeError, match="return_sites"):
        Predictive(normal_model, num_samples=2, return_sites="y")
    with pytest.raises(ValueError, match="batch_ndims"):
        Predictive(normal_model, num_samples=2, batch_ndims=-1)


# -- model arguments are Python values (closed over, as in NumPyro) --------------------


def settings_model(y=None, args=None, centred=True):
    """Reads Python settings: a Namespace for the plate size and the noise,
    numpy for a range, a bool for a branch."""
    assert isinstance(args, argparse.Namespace) and isinstance(centred, bool)
    mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    offset = 0.0 if centred else float(np.max(np.arange(args.n)))
    with probnn.plate("N", args.n):
        return probnn.sample("y", dist.Normal(mu + offset, args.noise), obs=y)


def settings_guide(y=None, args=None, centred=True):
    assert isinstance(args, argparse.Namespace)
    loc = probnn.param("loc", 0.0)
    probnn.sample("mu", dist.Normal(loc, 0.2))


@pytest.mark.parametrize("parallel", [False, True])
def test_namespace_and_bool_arguments_reach_the_model_as_python_values(parallel):
    args = argparse.Namespace(n=3, noise=0.5)
    num_samples = 20_000
    prior = Predictive(settings_model, num_samples=num_samples, parallel=parallel)
    out = prior(jax.random.PRNGKey(0), args=args, centred=False)
    assert out["y"].shape == (num_samples, 3)
    # y_i = mu + 2 + N(0, 0.5): marginally N(2, 1 + 0.25)
    y = np.asarray(out["y"], np.float64)
    assert_mean_close(y, 2.0, np.sqrt(1.25))
    assert abs(y[:, 1].var() - 1.25) < 5 * 1.25 * np.sqrt(2 / num_samples)

    mu = jnp.array([-3.0, 4.0])
    post = Predictive(settings_model, {"mu": mu}, parallel=parallel)
    y = post(jax.random.PRNGKey(1), args=args)["y"]
    assert y.shape == (2, 3)
    assert np.all(np.abs(np.asarray(y) - np.asarray(mu)[:, None]) < 5 * 0.5)


@pytest.mark.parametrize("batched", [False, True])
def test_guide_predictive_with_a_namespace_argument(batched):
    args = argparse.Namespace(n=2, noise=0.1)
    loc = jnp.array([-5.0, 5.0]) if batched else 1.0
    predictive = Predictive(
        settings_model,
        guide=settings_guide,
        params={"loc": loc},
        num_samples=1000,
        batch_ndims=1 if batched else 0,
        return_sites=["mu", "y"],
    )
    out = predictive(jax.random.PRNGKey(2), args=args)
    if batched:
        assert out["y"].shape == (1000, 2, 2)
        assert_mean_close(out["mu"], np.array([-5.0, 5.0]), 0.2, axis=0)
    else:
        assert out["y"].shape == (1000, 2)
        assert_mean_close(out["mu"], 1.0, 0.2)


def test_log_likelihood_with_a_namespace_argument():
    args = argparse.Namespace(n=2, noise=0.5)
    y = jnp.array([0.0, 1.0])
    mu = jnp.array([0.0, 2.0])
    loglik = log_likelihood(settings_model, {"mu": mu}, y, args=args)["y"]
    expected = stats.norm.logpdf(np.asarray(y)[None], np.asarray(mu)[:, None], 0.5)
    np.testing.assert_allclose(loglik, expected, rtol=1e-5)


def test_posterior_predictive_of_mcmc_with_a_namespace_argument():
    """MCMC and Predictive on the same Namespace-configured model: the
    posterior predictive mean of a new y is the posterior mean of mu."""
    from probnn.infer import MCMC, NUTS

    args = argparse.Namespace(n=4, noise=0.5)
    y = jnp.array([0.3, 1.1, 0.8, 1.4])
    mcmc = MCMC(
        NUTS(settings_model), num_warmup=300, num_samples=2000, progress_bar=False
    )
    mcmc.run(jax.random.PRNGKey(3), y, args=args)
    samples = mcmc.get_samples()
    precision = 1.0 + 4 / 0.25
    post_mean = float(y.sum()) / 0.25 / precision
    out = Predictive(settings_model, samples)(jax.random.PRNGKey(4), args=args)
    assert out["y"].shape == (2000, 4)
    np.testing.assert_allclose(np.asarray(out["y"]).mean(), post_mean, atol=0.1)


def test_predictive_runs_model_and_guide_under_a_false_mask():
    """Predictions need no log densities, so ``probnn.get_mask()`` is False
    inside Predictive (a model can skip a costly factor there) but not in
    training, and the predictions are unchanged by it."""
    seen = []

    def model():
        x = probnn.sample("x", dist.Normal(0.0, 1.0))
        seen.append(("model", probnn.get_mask()))
        probnn.sample("y", dist.Normal(x, 1.0))

    def guide():
        probnn.sample("x", dist.Normal(0.5, 0.1))
        seen.append(("guide", probnn.get_mask()))

    draws = Predictive(model, guide=guide, num_samples=3)(jax.random.PRNGKey(0))
    assert ("model", False) in seen and ("guide", False) in seen
    assert draws["y"].shape == (3,) and bool(jnp.all(jnp.isfinite(draws["y"])))
    seen.clear()
    probnn.handlers.seed(model, rng_seed=0)()
    assert seen == [("model", None)]
