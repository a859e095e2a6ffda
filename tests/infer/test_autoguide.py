"""Tests of the autoguides in probnn.infer.autoguide against closed-form
posteriors (conjugate models), fitted with SVI under jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import probnn
import probnn.distributions as dist
from probnn.handlers import replay, seed, substitute, trace
from probnn.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from probnn.infer.elbo import Trace_ELBO, TraceMeanField_ELBO
from probnn.infer.initialization import init_to_feasible, init_to_value
from probnn.infer.svi import SVI

FLATTENED = [
    AutoDiagonalNormal,
    AutoMultivariateNormal,
    AutoLowRankMultivariateNormal,
    AutoLaplaceApproximation,
]


def fit(model, guide, *args, steps=10000, lr=0.03, particles=32, elbo=Trace_ELBO):
    """SVI with a learning rate decaying 100-fold, so the last iterates sit
    close to the optimum instead of jittering around it."""
    schedule = optax.exponential_decay(lr, transition_steps=steps, decay_rate=0.01)
    svi = SVI(model, guide, optax.adam(schedule), elbo(num_particles=particles))
    return svi.run(jax.random.PRNGKey(1), steps, *args, progress_bar=False).params


def unconstrained_marginals(guide, params):
    """``{site: (loc, sd)}`` of the guide's Normal marginals in unconstrained
    space."""
    if isinstance(guide, AutoNormal):
        return {
            name: (params[f"{name}_auto_loc"], params[f"{name}_auto_scale"])
            for name in guide.median(params)
        }
    posterior = guide.get_posterior(params)
    locs = guide._unpack_latent(posterior.mean)
    sds = guide._unpack_latent(jnp.sqrt(posterior.variance))
    return {name: (locs[name], sds[name]) for name in locs}


def logit_normal_moments(loc, sd):
    """Mean and sd of sigmoid(Normal(loc, sd)) by Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    values = 1.0 / (1.0 + np.exp(-(float(loc) + float(sd) * nodes)))
    mean = np.sum(weights * values)
    return mean, np.sqrt(np.sum(weights * (values - mean) ** 2))


# -- Normal-Normal and Beta-Bernoulli, in one model (independent posteriors) --

RNG = np.random.default_rng(1)
X = (1.5 + RNG.normal(size=8)).astype(np.float32)
FLIPS = (RNG.uniform(size=120) < 0.7).astype(np.float32)
PRIOR_SD, NOISE = 2.0, 1.0
MU_PRECISION = 1 / PRIOR_SD**2 + len(X) / NOISE**2
MU_MEAN, MU_SD = X.sum() / NOISE**2 / MU_PRECISION, MU_PRECISION**-0.5
A, B = 2 + FLIPS.sum(), 3 + (1 - FLIPS).sum()
P_MEAN, P_SD = A / (A + B), np.sqrt(A * B / ((A + B) ** 2 * (A + B + 1)))
P_MODE = (A - 1) / (A + B - 2)


def conjugate_model(x, flips):
    mu = probnn.sample("mu", dist.Normal(0.0, PRIOR_SD))
    p = probnn.sample("p", dist.Beta(2.0, 3.0))
    with probnn.plate("data", x.shape[0]):
        probnn.sample("x", dist.Normal(mu, NOISE), obs=x)
    with probnn.plate("flips", flips.shape[0]):
        probnn.sample("flip", dist.Bernoulli(p), obs=flips)


@pytest.mark.parametrize(
    "guide_class, elbo",
    [
        (AutoNormal, Trace_ELBO),
        (AutoNormal, TraceMeanField_ELBO),
        (AutoMultivariateNormal, Trace_ELBO),
    ],
)
def test_normal_normal_and_beta_bernoulli_posteriors(guide_class, elbo):
    guide = guide_class(conjugate_model)
    params = fit(conjugate_model, guide, X, FLIPS, elbo=elbo)
    marginals = unconstrained_marginals(guide, params)
    mu_loc, mu_sd = marginals["mu"]
    np.testing.assert_allclose(mu_loc, MU_MEAN, atol=0.05 * MU_SD)
    np.testing.assert_allclose(mu_sd, MU_SD, rtol=0.03)
    # the guide is logit-normal, the posterior Beta: close, not equal
    p_mean, p_sd = logit_normal_moments(*marginals["p"])
    np.testing.assert_allclose(p_mean, P_MEAN, atol=0.05 * P_SD)
    np.testing.assert_allclose(p_sd, P_SD, rtol=0.03)


def test_autodelta_finds_the_map_in_constrained_space():
    guide = AutoDelta(conjugate_model)
    params = fit(conjugate_model, guide, X, FLIPS, steps=2000, particles=1)
    assert sorted(params) == ["mu_auto_loc", "p_auto_loc"]
    np.testing.assert_allclose(params["mu_auto_loc"], MU_MEAN, rtol=1e-3)
    np.testing.assert_allclose(params["p_auto_loc"], P_MODE, rtol=1e-3)
    median = guide.median(params)
    np.testing.assert_allclose(median["p"], P_MODE, rtol=1e-3)
    draws = guide.sample_posterior(jax.random.PRNGKey(0), params, sample_shape=(4,))
    np.testing.assert_allclose(draws["mu"], np.full(4, params["mu_auto_loc"]))
    quantiles = guide.quantiles(params, [0.1, 0.9])
    np.testing.assert_allclose(quantiles["p"], np.full(2, params["p_auto_loc"]))


# -- Bayesian linear regression with known noise ---------------------------------

N, D = 30, 3
RNG_REG = np.random.default_rng(0)
DESIGN = RNG_REG.normal(size=(N, D)).astype(np.float32)
DESIGN[:, 1] = 0.8 * DESIGN[:, 0] + 0.6 * DESIGN[:, 1]  # correlated posterior
SIGMA, W_PRIOR = 0.5, 1.0
RESPONSE = (
    DESIGN @ np.array([1.0, -2.0, 0.5]) + SIGMA * RNG_REG.normal(size=N)
).astype(np.float32)
W_PRECISION = DESIGN.T @ DESIGN / SIGMA**2 + np.eye(D) / W_PRIOR**2
W_COV = np.linalg.inv(W_PRECISION)
W_MEAN = W_COV @ DESIGN.T @ RESPONSE / SIGMA**2
# the optimum of a mean-field Gaussian guide on a Gaussian posterior
W_MEAN_FIELD_SD = 1 / np.sqrt(np.diag(W_PRECISION))


def regression(design, response):
    w = probnn.sample("w", dist.Normal(jnp.zeros(D), W_PRIOR).to_event(1))
    with probnn.plate("N", design.shape[0]):
        probnn.sample("y", dist.Normal(design @ w, SIGMA), obs=response)


@functools.cache
def fit_regression(guide_class):
    guide = guide_class(regression)
    return guide, fit(regression, guide, DESIGN, RESPONSE)


@pytest.mark.parametrize("guide_class", [AutoNormal, AutoDiagonalNormal])
def test_mean_field_guides_on_linear_regression(guide_class):
    guide, params = fit_regression(guide_class)
    loc, sd = unconstrained_marginals(guide, params)["w"]
    np.testing.assert_allclose(loc, W_MEAN, atol=0.05 * W_MEAN_FIELD_SD.min())
    np.testing.assert_allclose(sd, W_MEAN_FIELD_SD, rtol=0.03)


def test_autodiagonalnormal_agrees_with_autonormal():
    normal_guide, normal_params = fit_regression(AutoNormal)
    diagonal_guide, diagonal_params = fit_regression(AutoDiagonalNormal)
    for a, b in zip(
        unconstrained_marginals(normal_guide, normal_params)["w"],
        unconstrained_marginals(diagonal_guide, diagonal_params)["w"],
    ):
        np.testing.assert_allclose(a, b, rtol=0.03, atol=0.01)


@pytest.mark.parametrize(
    "guide_class", [AutoMultivariateNormal, AutoLowRankMultivariateNormal]
)
def test_full_covariance_guides_on_linear_regression(guide_class):
    guide, params = fit_regression(guide_class)
    posterior = guide.get_posterior(params)
    sd = np.sqrt(np.diag(W_COV))
    np.testing.assert_allclose(posterior.mean, W_MEAN, atol=0.05 * sd.min())
    np.testing.assert_allclose(np.sqrt(posterior.variance), sd, rtol=0.04)
    correlation = posterior.covariance_matrix / np.outer(sd, sd)
    np.testing.assert_allclose(correlation, W_COV / np.outer(sd, sd), atol=0.04)


def test_autolowrank_agrees_with_automultivariatenormal():
    full_guide, full = fit_regression(AutoMultivariateNormal)
    guide, low_rank = fit_regression(AutoLowRankMultivariateNormal)
    assert low_rank["auto_cov_factor"].shape == (D, 2)  # round(sqrt(3))
    a, b = full_guide.get_posterior(full), guide.get_posterior(low_rank)
    scale = np.sqrt(np.outer(np.diag(W_COV), np.diag(W_COV)))
    np.testing.assert_allclose(a.mean, b.mean, atol=0.01)
    np.testing.assert_allclose(
        a.covariance_matrix / scale, b.covariance_matrix / scale, atol=0.05
    )


def test_laplace_covariance_is_the_inverse_hessian():
    guide, params = fit_regression(AutoLaplaceApproximation)
    assert sorted(params) == ["auto_loc"]
    posterior = guide.get_posterior(params)
    np.testing.assert_allclose(posterior.mean, W_MEAN, rtol=1e-3)
    np.testing.assert_allclose(posterior.covariance_matrix, W_COV, rtol=1e-4, atol=1e-7)
    transform = guide.get_transform(params)
    np.testing.assert_allclose(
        transform(jnp.zeros(D)), posterior.mean, rtol=1e-6, atol=1e-7
    )
    quantiles = guide.quantiles(params, [0.05, 0.5, 0.95])["w"]
    expected = stats.norm.ppf([[0.05], [0.5], [0.95]], W_MEAN, np.sqrt(np.diag(W_COV)))
    np.testing.assert_allclose(quantiles, expected, rtol=1e-3, atol=1e-4)


def test_laplace_hessian_includes_the_log_jacobian():
    # s ~ LogNormal(0, 1): in u = log s the log joint is log N(u | 0, 1) (the
    # Jacobian exp(u) cancels the 1/s of the density), so the Laplace
    # approximation in u is exactly N(0, 1) whatever the MAP steps did.
    def model():
        probnn.sample("s", dist.LogNormal(0.0, 1.0))

    guide = AutoLaplaceApproximation(model)
    seed(guide, rng_seed=0)()
    posterior = guide.get_posterior({"auto_loc": jnp.array([0.3])})
    np.testing.assert_allclose(posterior.covariance_matrix, [[1.0]], rtol=1e-5)
    np.testing.assert_allclose(
        guide.median({"auto_loc": jnp.array([0.3])})["s"], 1.35, rtol=1e-3
    )


# -- subsampling -------------------------------------------------------------------

GROUPS, TAU, GROUP_NOISE, HYPER_SD = 12, 1.0, 0.5, 3.0
RNG_GROUPS = np.random.default_rng(2)
GROUP_MEANS = (
    2.0
    + TAU * RNG_GROUPS.normal(size=GROUPS)
    + GROUP_NOISE * RNG_GROUPS.normal(size=GROUPS)
).astype(np.float32)


def hierarchical(group_means, batch=None):
    mu = probnn.sample("mu", dist.Normal(0.0, HYPER_SD))
    with probnn.plate("groups", GROUPS, subsample_size=batch):
        theta = probnn.sample("theta", dist.Normal(mu, TAU))
        observed = probnn.subsample(group_means, event_dim=0)
        probnn.sample("obs", dist.Normal(theta, GROUP_NOISE), obs=observed)


def hierarchical_mean_field_optimum():
    """Posterior mean, and mean-field sds 1 / sqrt(diag(precision)), of
    (mu, theta_1, ..., theta_G)."""
    precision = np.zeros((GROUPS + 1, GROUPS + 1))
    precision[0, 0] = 1 / HYPER_SD**2 + GROUPS / TAU**2
    precision[0, 1:] = precision[1:, 0] = -1 / TAU**2
    precision[1:, 1:] = np.eye(GROUPS) * (1 / TAU**2 + 1 / GROUP_NOISE**2)
    shift = np.concatenate([[0.0], GROUP_MEANS / GROUP_NOISE**2])
    return np.linalg.solve(precision, shift), 1 / np.sqrt(np.diag(precision))


@pytest.mark.parametrize("batch", [None, 4])
def test_subsampled_autonormal_matches_the_full_batch_posterior(batch):
    mean, sd = hierarchical_mean_field_optimum()
    guide = AutoNormal(hierarchical)
    schedule = optax.exponential_decay(0.03, transition_steps=8000, decay_rate=0.01)
    svi = SVI(
        hierarchical,
        guide,
        optax.adam(schedule),
        TraceMeanField_ELBO(num_particles=4),
        batch=batch,
    )
    params = svi.run(
        jax.random.PRNGKey(1), 8000, GROUP_MEANS, progress_bar=False
    ).params
    # local params hold every group, whatever the mini-batch
    assert params["theta_auto_loc"].shape == (GROUPS,)
    np.testing.assert_allclose(params["mu_auto_loc"], mean[0], atol=0.05 * sd[0])
    np.testing.assert_allclose(params["mu_auto_scale"], sd[0], rtol=0.04)
    np.testing.assert_allclose(params["theta_auto_loc"], mean[1:], atol=0.08 * sd[1])
    np.testing.assert_allclose(params["theta_auto_scale"], sd[1:], rtol=0.05)


def two_local_latents(batch):
    with probnn.plate("groups", GROUPS, subsample_size=batch):
        probnn.sample("a", dist.Normal(0.0, 1.0))
        probnn.sample("b", dist.LogNormal(0.0, 1.0))


@pytest.mark.parametrize("guide_class", [AutoDelta, AutoNormal])
def test_guide_and_model_share_one_minibatch(guide_class):
    guide = guide_class(two_local_latents)
    params = {
        "a_auto_loc": jnp.arange(GROUPS, dtype=jnp.float32),
        "b_auto_loc": jnp.arange(1, GROUPS + 1, dtype=jnp.float32),
        "a_auto_scale": jnp.full(GROUPS, 1e-6),
        "b_auto_scale": jnp.full(GROUPS, 1e-6),
    }
    seeded_guide = substitute(seed(guide, rng_seed=3), data=params)
    guide_trace = trace(seeded_guide).get_trace(5)
    indices = guide_trace["groups"]["value"]
    assert indices.shape == (5,)
    assert len(set(np.asarray(indices).tolist())) == 5
    a, b = guide_trace["a"]["value"], guide_trace["b"]["value"]
    # AutoDelta's locs are constrained values, AutoNormal's are log(b)
    b_loc = b if guide_class is AutoDelta else np.log(b)
    np.testing.assert_allclose(a, indices, atol=1e-4)
    np.testing.assert_allclose(b_loc, indices + 1.0, atol=1e-4)
    assert guide_trace["a"]["scale"] == GROUPS / 5
    # the trace keeps the params' full values
    assert guide_trace["a_auto_loc"]["value"].shape == (GROUPS,)
    model_trace = trace(
        replay(seed(two_local_latents, 9), trace=guide_trace)
    ).get_trace(5)
    np.testing.assert_array_equal(model_trace["groups"]["value"], indices)
    np.testing.assert_array_equal(model_trace["a"]["value"], a)


def test_flattened_guides_refuse_local_latents_of_minibatches():
    for guide_class in FLATTENED:
        guide = guide_class(hierarchical)
        with pytest.raises(ValueError, match="'theta'.*subsampled plate 'groups'"):
            seed(guide, rng_seed=0)(GROUP_MEANS, batch=4)


def test_flattened_guides_accept_global_latents_with_minibatched_data():
    def model(data):
        mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
        with probnn.plate("N", 10, subsample_size=3):
            probnn.sample("y", dist.Normal(mu, 1.0), obs=probnn.subsample(data, 0))

    guide = AutoDiagonalNormal(model)
    assert set(seed(guide, rng_seed=0)(jnp.zeros(10))) == {"mu"}


# -- median, quantiles and sample_posterior with given params ------------------------


def shapes_model():
    probnn.sample("x", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
    probnn.sample("s", dist.LogNormal(0.0, 1.0), sample_shape=(3,))
    probnn.sample("w", dist.Dirichlet(jnp.ones(3)))


QUANTILES = [0.1, 0.5, 0.75]


def test_autonormal_median_quantiles_and_samples():
    guide = AutoNormal(shapes_model, init_loc_fn=init_to_feasible)
    init = seed(guide, rng_seed=0)()
    assert {k: v.shape for k, v in init.items()} == {"x": (2,), "s": (3,), "w": (3,)}
    s_loc, s_scale = jnp.array([0.3, -1.0, 2.0]), jnp.array([0.5, 0.2, 1.0])
    params = {
        "x_auto_loc": jnp.array([1.0, -1.0]),
        "x_auto_scale": jnp.array([2.0, 0.5]),
        "s_auto_loc": s_loc,
        "s_auto_scale": s_scale,
        "w_auto_loc": jnp.zeros(2),  # the centre of the simplex
        "w_auto_scale": jnp.ones(2),
    }
    median = guide.median(params)
    np.testing.assert_allclose(median["s"], np.exp(s_loc), rtol=1e-6)
    np.testing.assert_allclose(median["w"], np.full(3, 1 / 3), rtol=1e-5)
    quantiles = guide.quantiles(params, QUANTILES)
    q = np.array(QUANTILES)[:, None]
    np.testing.assert_allclose(
        quantiles["x"], stats.norm.ppf(q, [1.0, -1.0], [2.0, 0.5]), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        quantiles["s"], np.exp(stats.norm.ppf(q, s_loc, s_scale)), rtol=1e-5
    )
    assert quantiles["w"].shape == (3, 3)
    draws = guide.sample_posterior(
        jax.random.PRNGKey(0), params, sample_shape=(4000, 2)
    )
    assert {k: v.shape for k, v in draws.items()} == {
        "x": (4000, 2, 2),
        "s": (4000, 2, 3),
        "w": (4000, 2, 3),
    }
    log_s = np.log(np.asarray(draws["s"]).reshape(-1, 3))
    np.testing.assert_allclose(log_s.mean(0), s_loc, atol=0.03)
    np.testing.assert_allclose(log_s.std(0), s_scale, rtol=0.03)
    np.testing.assert_allclose(np.asarray(draws["w"]).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "guide_class",
    [AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal],
)
def test_flattened_median_quantiles_and_samples(guide_class):
    guide = guide_class(shapes_model, init_loc_fn=init_to_feasible)
    seed(guide, rng_seed=0)()
    assert guide.latent_dim == 2 + 3 + 2
    loc = jnp.array([1.0, -1.0, 0.3, -1.0, 2.0, 0.0, 0.0])
    sd = jnp.array([2.0, 0.5, 0.5, 0.2, 1.0, 1.0, 1.0])
    if guide_class is AutoDiagonalNormal:
        params = {"auto_loc": loc, "auto_scale": sd}
    elif guide_class is AutoMultivariateNormal:
        params = {"auto_loc": loc, "auto_scale_tril": jnp.diag(sd)}
    else:
        params = {
            "auto_loc": loc,
            "auto_scale": sd,
            "auto_cov_factor": jnp.zeros((7, 3)),
        }
    median = guide.median(params)
    np.testing.assert_allclose(median["x"], [1.0, -1.0])
    np.testing.assert_allclose(median["s"], np.exp([0.3, -1.0, 2.0]), rtol=1e-6)
    quantiles = guide.quantiles(params, QUANTILES)
    q = np.array(QUANTILES)[:, None]
    np.testing.assert_allclose(
        quantiles["s"],
        np.exp(stats.norm.ppf(q, [0.3, -1.0, 2.0], [0.5, 0.2, 1.0])),
        rtol=1e-5,
    )
    draws = guide.sample_posterior(jax.random.PRNGKey(0), params, sample_shape=(20000,))
    assert {k: v.shape for k, v in draws.items()} == {
        "x": (20000, 2),
        "s": (20000, 3),
        "w": (20000, 3),
    }
    np.testing.assert_allclose(np.mean(draws["x"], 0), [1.0, -1.0], atol=0.05)
    np.testing.assert_allclose(np.std(draws["x"], 0), [2.0, 0.5], rtol=0.03)
    # the transform maps standard normal noise onto the posterior
    noise = jnp.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    np.testing.assert_allclose(
        guide.get_transform(params)(noise), loc + sd * noise, rtol=1e-6
    )
    assert guide.get_base_dist().event_shape == (7,)


# -- initialization -----------------------------------------------------------------


def test_init_to_value_sets_the_initial_params():
    values = {"mu": 0.7, "p": 0.25}
    strategy = init_to_value(values=values)
    normal = AutoNormal(conjugate_model, init_loc_fn=strategy)
    svi = SVI(conjugate_model, normal, optax.adam(0.01), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.PRNGKey(0), X, FLIPS))
    np.testing.assert_allclose(params["mu_auto_loc"], 0.7)
    np.testing.assert_allclose(params["p_auto_loc"], np.log(0.25 / 0.75), rtol=1e-5)
    np.testing.assert_allclose(params["p_auto_scale"], 0.1, rtol=1e-5)
    delta = AutoDelta(conjugate_model, init_loc_fn=strategy)
    svi = SVI(conjugate_model, delta, optax.adam(0.01), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.PRNGKey(0), X, FLIPS))
    np.testing.assert_allclose(params["p_auto_loc"], 0.25, rtol=1e-5)
    flat = AutoMultivariateNormal(conjugate_model, init_loc_fn=strategy, init_scale=0.2)
    svi = SVI(conjugate_model, flat, optax.adam(0.01), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.PRNGKey(0), X, FLIPS))
    np.testing.assert_allclose(
        params["auto_loc"], [0.7, np.log(0.25 / 0.75)], rtol=1e-5
    )
    np.testing.assert_allclose(params["auto_scale_tril"], 0.2 * np.eye(2), rtol=1e-5)


# -- errors ----------------------------------------------------------------------------

ALL_GUIDES = [AutoNormal, AutoDelta, *FLATTENED]


@pytest.mark.parametrize("guide_class", ALL_GUIDES)
def test_unknown_init_to_value_key_is_an_error(guide_class):
    strategy = init_to_value(values={"mu": 0.0, "sigma": 1.0, "x": 0.0})
    guide = guide_class(conjugate_model, init_loc_fn=strategy)
    with pytest.raises(ValueError, match=r"\['sigma', 'x'\].*\['mu', 'p'\]"):
        seed(guide, rng_seed=0)(X, FLIPS)


@pytest.mark.parametrize("guide_class", FLATTENED)
def test_flattened_guide_of_a_model_without_latent_sites_is_an_error(guide_class):
    def observed_only(x):
        probnn.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match="no latent sample sites.*AutoNormal"):
        seed(guide_class(observed_only), rng_seed=0)(1.0)


@pytest.mark.parametrize("guide_class", [AutoNormal, AutoDelta])
def test_guide_of_a_model_without_latent_sites_guides_nothing(guide_class):
    # as in NumPyro: a model whose only unknowns are params (a network's
    # weights, a location) trains with an autoguide that has nothing to do
    y = jnp.arange(5.0)

    def params_only(y=None):
        loc = probnn.param("loc", 0.0)
        with probnn.plate("n", 5):
            probnn.sample("y", dist.Normal(loc, 1.0), obs=y)

    guide = guide_class(params_only)
    svi = SVI(params_only, guide, optax.adam(0.1), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 300, y, progress_bar=False)
    assert set(result.params) == {"loc"}
    np.testing.assert_allclose(result.params["loc"], 2.0, atol=1e-2)
    assert guide.sample_posterior(jax.random.PRNGKey(1), result.params) == {}
    assert guide.median(result.params) == {}


@pytest.mark.parametrize("guide_class", ALL_GUIDES)
def test_discrete_latent_site_is_an_error(guide_class):
    def discrete(x):
        k = probnn.sample("k", dist.Poisson(3.0))
        probnn.sample("x", dist.Normal(k, 1.0), obs=x)

    with pytest.raises(ValueError, match="'k'.*discrete"):
        seed(guide_class(discrete), rng_seed=0)(1.0)


def test_initial_value_outside_the_support_is_an_error():
    guide = AutoNormal(conjugate_model, init_loc_fn=init_to_value(values={"p": 1.5}))
    with pytest.raises(ValueError, match="'p'.*support"):
        seed(guide, rng_seed=0)(X, FLIPS)
    guide = AutoDelta(
        conjugate_model, init_loc_fn=init_to_value(values={"mu": [0.0, 1.0]})
    )
    with pytest.raises(ValueError, match="'mu'.*shape"):
        seed(guide, rng_seed=0)(X, FLIPS)


def test_methods_before_the_first_call_and_missing_params_are_errors():
    guide = AutoNormal(conjugate_model)
    with pytest.raises(RuntimeError, match="has not seen the model"):
        guide.median({})
    seed(guide, rng_seed=0)(X, FLIPS)
    with pytest.raises(ValueError, match="'mu_auto_loc'"):
        guide.median({})


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="init_scale"):
        AutoNormal(conjugate_model, init_scale=0.0)
    with pytest.raises(ValueError, match="init_scale"):
        AutoMultivariateNormal(conjugate_model, init_scale=-1.0)
    with pytest.raises(ValueError, match="rank"):
        AutoLowRankMultivariateNormal(conjugate_model, rank=0)
    with pytest.raises(TypeError, match="callable"):
        AutoDelta("not a model")
