"""MCMC: HMC and NUTS posteriors against closed forms (conjugate models,
constrained latents, a correlated Gaussian given as a potential, a mixture
with enumerated assignments against a grid), reproducibility across runs and
chain methods, warmup and continuation, extra fields, errors and the progress
bar.

Posterior moments are checked to within a few Monte-Carlo standard errors,
each computed from the draws' own effective sample size (``_ess`` below, a
plain numpy estimate independent of the library's diagnostics)."""

import argparse
import inspect
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probnn
import probnn.distributions as dist
import probnn.infer.mcmc
from probnn.handlers import config_enumerate
from probnn.infer import HMC, MCMC, NUTS, init_to_median

WARMUP, SAMPLES = 500, 1000
K_SE = 5.0  # allowed distance, in Monte-Carlo standard errors

Y = jnp.array([0.9, 2.1, 1.4, 3.0, 1.9, 2.6])
PRIOR_SCALE, NOISE = 2.0, 1.0


# -- helpers ----------------------------------------------------------------------


def _ess(draws):
    """Effective sample size of one chain of scalar draws: the autocorrelation
    summed over Geyer's initial positive, monotone sequence of pair sums;
    capped at the number of draws (a conservative standard error)."""
    x = np.asarray(draws, np.float64)
    n = x.shape[0]
    x = x - x.mean()
    if not np.any(x):
        return float(n)
    spectrum = np.fft.rfft(x, 2 * n)
    acov = np.fft.irfft(spectrum * np.conj(spectrum))[:n] / n
    rho = acov / acov[0]
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    positive = np.flatnonzero(pairs <= 0)
    pairs = pairs[: positive[0]] if positive.size else pairs
    pairs = np.minimum.accumulate(pairs)
    tau = max(-1.0 + 2.0 * pairs.sum(), 1e-12)
    return float(min(n / tau, n))


def assert_expectation(values, expected, k=K_SE, what=""):
    """The sample mean of ``values`` (draws of some function of the latent)
    is within ``k`` Monte-Carlo standard errors of ``expected``."""
    values = np.asarray(values, np.float64)
    se = values.std() / math.sqrt(_ess(values))
    error = abs(values.mean() - expected)
    assert error <= k * se + 1e-9, (
        f"{what}: estimate {values.mean():.5f}, expected {expected:.5f}, "
        f"error {error:.2e} > {k} x MCSE {se:.2e}"
    )


def assert_moments(draws, mean, var, what=""):
    """Mean and variance of scalar draws against the exact ones; the variance
    is the expectation of the squared deviation from the exact mean."""
    draws = np.asarray(draws, np.float64)
    assert_expectation(draws, mean, what=f"{what} mean")
    assert_expectation((draws - mean) ** 2, var, what=f"{what} variance")


def run_nuts(model, *args, key=0, **kernel_kwargs):
    kernel = NUTS(model, **kernel_kwargs)
    mcmc = MCMC(kernel, num_warmup=WARMUP, num_samples=SAMPLES, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(key), *args)
    return mcmc


# -- models -------------------------------------------------------------------------


def normal_model(y):
    mu = probnn.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
    with probnn.plate("N", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, NOISE), obs=y)


def normal_posterior():
    precision = 1 / PRIOR_SCALE**2 + Y.shape[0] / NOISE**2
    return float(jnp.sum(Y)) / NOISE**2 / precision, 1 / precision


# -- posterior correctness ---------------------------------------------------------


def test_nuts_normal_normal():
    mcmc = run_nuts(normal_model, Y)
    samples = mcmc.get_samples()
    assert set(samples) == {"mu"}
    assert samples["mu"].shape == (SAMPLES,)
    mean, var = normal_posterior()
    assert_moments(samples["mu"], mean, var, "mu")


def test_hmc_integrates_exactly_trajectory_length():
    # a standard normal is a harmonic oscillator of period 2 pi: half a
    # period maps z to -z whatever the momentum. With step 0.3 the leapfrog
    # takes ceil(pi / 0.3) = 11 steps of pi / 11 (as NumPyro), not 11 of 0.3
    kernel = HMC(
        potential_fn=lambda z: 0.5 * z**2,
        step_size=0.3,
        adapt_step_size=False,
        adapt_mass_matrix=False,
        trajectory_length=math.pi,
    )
    mcmc = MCMC(kernel, num_warmup=0, num_samples=6, progress_bar=False)
    mcmc.run(
        jax.random.PRNGKey(0), init_params=jnp.array(1.0), extra_fields=("num_steps",)
    )
    z = mcmc.get_samples()
    np.testing.assert_allclose(z, [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0], atol=0.03)
    assert set(np.asarray(mcmc.get_extra_fields()["num_steps"]).tolist()) == {11}


def test_hmc_fixed_num_steps_normal_normal():
    # trajectory_length keeps its default: it is ignored, as NumPyro says
    with pytest.warns(UserWarning, match="If both num_steps and trajectory_length"):
        kernel = HMC(normal_model, num_steps=8)
    mcmc = MCMC(kernel, num_warmup=WARMUP, num_samples=SAMPLES, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), Y, extra_fields=("num_steps", "accept_prob"))
    mean, var = normal_posterior()
    assert_moments(mcmc.get_samples()["mu"], mean, var, "mu")
    extra = mcmc.get_extra_fields()
    assert np.all(np.asarray(extra["num_steps"]) == 8)
    # step-size adaptation aims at an average acceptance of 0.8
    assert 0.6 < float(jnp.mean(extra["accept_prob"])) <= 1.0


def test_nuts_beta_bernoulli():
    flips = jnp.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1.0])
    a, b = 2.0, 3.0

    def model(flips):
        p = probnn.sample("p", dist.Beta(a, b))
        with probnn.plate("flips", flips.shape[0]):
            probnn.sample("obs", dist.Bernoulli(probs=p), obs=flips)

    samples = run_nuts(model, flips, key=2).get_samples()["p"]
    assert float(samples.min()) > 0.0 and float(samples.max()) < 1.0
    heads = float(flips.sum())
    post = stats.beta(a + heads, b + flips.shape[0] - heads)
    assert_moments(samples, post.mean(), post.var(), "p")


def test_nuts_gamma_poisson():
    counts = jnp.array([3, 5, 2, 4, 6, 3, 1, 4.0])
    shape, rate = 2.0, 0.5

    def model(counts):
        lam = probnn.sample("lam", dist.Gamma(shape, rate))
        with probnn.plate("counts", counts.shape[0]):
            probnn.sample("obs", dist.Poisson(lam), obs=counts)

    samples = run_nuts(model, counts, key=3).get_samples()["lam"]
    assert float(samples.min()) > 0.0
    post = stats.gamma(shape + float(counts.sum()), scale=1 / (rate + counts.size))
    assert_moments(samples, post.mean(), post.var(), "lam")


@pytest.mark.parametrize("likelihood", ["categorical", "multinomial"])
def test_nuts_dirichlet_posterior(likelihood):
    alpha = jnp.array([1.0, 2.0, 3.0])
    draws = jnp.array([0, 2, 2, 1, 2, 0, 2, 1, 2, 2, 1, 0, 2, 2])
    counts = jnp.bincount(draws, length=3).astype(jnp.float32)
    total_count = int(counts.sum())

    def model():
        probs = probnn.sample("probs", dist.Dirichlet(alpha))
        if likelihood == "categorical":
            with probnn.plate("draws", draws.shape[0]):
                probnn.sample("obs", dist.Categorical(probs=probs), obs=draws)
        else:
            probnn.sample("obs", dist.Multinomial(total_count, probs=probs), obs=counts)

    samples = run_nuts(model, key=4).get_samples()["probs"]
    assert samples.shape == (SAMPLES, 3)
    np.testing.assert_allclose(np.asarray(samples.sum(-1)), 1.0, atol=1e-5)
    post = np.asarray(alpha + counts, np.float64)
    total = post.sum()
    means = post / total
    variances = means * (1 - means) / (total + 1)
    for i in range(3):
        assert_moments(samples[:, i], means[i], variances[i], f"probs[{i}]")


# correlated 2-D Gaussian, given by its potential energy
SCALES = np.array([1.0, 3.0])
RHO = 0.995
COV = np.outer(SCALES, SCALES) * np.array([[1.0, RHO], [RHO, 1.0]])
PRECISION = jnp.asarray(np.linalg.inv(COV), jnp.float32)


def gaussian_potential(x):
    return 0.5 * x @ PRECISION @ x


def run_gaussian(dense_mass, key=5):
    kernel = NUTS(potential_fn=gaussian_potential, dense_mass=dense_mass)
    mcmc = MCMC(kernel, num_warmup=WARMUP, num_samples=SAMPLES, progress_bar=False)
    mcmc.run(
        jax.random.PRNGKey(key),
        init_params=jnp.array([0.5, -0.5]),
        extra_fields=("num_steps",),
    )
    return mcmc


def test_nuts_potential_fn_correlated_gaussian_and_dense_mass():
    num_steps = {}
    for dense in (False, True):
        mcmc = run_gaussian(dense)
        x = np.asarray(mcmc.get_samples(), np.float64)
        assert x.shape == (SAMPLES, 2)
        for i in range(2):
            assert_expectation(x[:, i], 0.0, what=f"dense={dense} mean[{i}]")
            for j in range(i, 2):
                assert_expectation(
                    x[:, i] * x[:, j], COV[i, j], what=f"dense={dense} cov[{i},{j}]"
                )
        num_steps[dense] = float(jnp.mean(mcmc.get_extra_fields()["num_steps"]))
    # a dense mass matrix undoes the correlation: much shorter trajectories
    assert num_steps[True] < 0.5 * num_steps[False], num_steps


# two-component mixture, assignments summed out by enumeration
MIX_WEIGHTS = jnp.array([0.3, 0.7])
MIX_PRIOR_LOCS = jnp.array([-2.0, 2.0])
MIX_X = jnp.asarray(
    np.concatenate(
        [
            -1.5 + np.random.default_rng(0).standard_normal(12),
            2.5 + np.random.default_rng(1).standard_normal(28),
        ]
    ),
    jnp.float32,
)


@config_enumerate
def mixture_model(x):
    locs = probnn.sample("locs", dist.Normal(MIX_PRIOR_LOCS, 1.0).to_event(1))
    with probnn.plate("data", x.shape[0]):
        z = probnn.sample("z", dist.Categorical(probs=MIX_WEIGHTS))
        probnn.sample("x", dist.Normal(locs[z], 1.0), obs=x)


def mixture_grid_moments(points=401, half_width=5.0):
    """Posterior mean and variance of each location, by summing the exact
    unnormalised posterior over a 2-D grid."""
    grid = np.linspace(-half_width, half_width, points)
    x = np.asarray(MIX_X, np.float64)
    log_w = np.log(np.asarray(MIX_WEIGHTS, np.float64))
    # (points, data) log-likelihood of each datum under each component location
    log_comp = stats.norm.logpdf(x[None, :], grid[:, None], 1.0)
    a = log_w[0] + log_comp[:, None, :]  # loc0 on axis 0
    b = log_w[1] + log_comp[None, :, :]  # loc1 on axis 1
    log_lik = np.logaddexp(a, b).sum(-1)
    prior = np.asarray(MIX_PRIOR_LOCS, np.float64)
    log_post = (
        log_lik
        + stats.norm.logpdf(grid, prior[0], 1.0)[:, None]
        + stats.norm.logpdf(grid, prior[1], 1.0)[None, :]
    )
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum()
    moments = []
    for axis in (1, 0):  # marginal of loc0 sums over axis 1, and vice versa
        marginal = weights.sum(axis=axis)
        mean = float((marginal * grid).sum())
        moments.append((mean, float((marginal * (grid - mean) ** 2).sum())))
    return moments


def test_nuts_mixture_with_enumerated_assignments_matches_grid():
    # the posterior has a second, minor mode with the labels swapped, which a
    # chain started there does not leave in this many draws; the prior
    # median starts it in the major mode's basin whatever the key
    mcmc = run_nuts(mixture_model, MIX_X, key=6, init_strategy=init_to_median)
    samples = mcmc.get_samples()
    assert set(samples) == {"locs"}  # the discrete site is summed out
    assert samples["locs"].shape == (SAMPLES, 2)
    for i, (mean, var) in enumerate(mixture_grid_moments()):
        assert_moments(samples["locs"][:, i], mean, var, f"locs[{i}]")


# -- reproducibility and chain methods ----------------------------------------------


def test_same_key_same_samples():
    key = jax.random.PRNGKey(7)
    mcmc = MCMC(NUTS(normal_model), num_warmup=100, num_samples=200, progress_bar=False)
    mcmc.run(key, Y)
    first = np.asarray(mcmc.get_samples()["mu"])
    mcmc.run(key, Y)  # warms up afresh: post_warmup_state is not set
    again = np.asarray(mcmc.get_samples()["mu"])
    other = MCMC(
        NUTS(normal_model), num_warmup=100, num_samples=200, progress_bar=False
    )
    other.run(key, Y)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, np.asarray(other.get_samples()["mu"]))
    other.run(jax.random.PRNGKey(8), Y)
    assert not np.array_equal(first, np.asarray(other.get_samples()["mu"]))


@pytest.mark.parametrize("adapt", [False, True], ids=["fixed-step", "adapted"])
def test_sequential_and_vectorized_chains_agree(adapt):
    """Chain c draws from split(key, num_chains)[c] whichever the method.
    With a fixed step size the vectorized chains follow the sequential
    chains' paths up to rounding. With adaptation a rounding difference in
    the last bit can flip one accept or tree-direction decision during
    warmup, after which the paths part (the default and lowest XLA
    optimisation levels differ here), so there each chain's adapted step
    size must agree closely and both methods must sample the posterior."""
    kernel_kwargs = (
        {}
        if adapt
        else {
            "step_size": 0.5,
            "adapt_step_size": False,
            "adapt_mass_matrix": False,
        }
    )
    samples, step_sizes = {}, {}
    for method in ("sequential", "vectorized"):
        mcmc = MCMC(
            NUTS(normal_model, **kernel_kwargs),
            num_warmup=100,
            num_samples=200,
            num_chains=2,
            chain_method=method,
            progress_bar=False,
        )
        mcmc.run(jax.random.PRNGKey(9), Y)
        samples[method] = np.asarray(mcmc.get_samples(group_by_chain=True)["mu"])
        step_sizes[method] = np.asarray(mcmc.last_state.adapt_state.step_size)
    assert samples["sequential"].shape == (2, 200)
    # the two chains are not copies of each other
    assert not np.allclose(samples["sequential"][0], samples["sequential"][1])
    if not adapt:
        # same path: a different key stream would differ at the first draw
        np.testing.assert_allclose(
            samples["sequential"], samples["vectorized"], rtol=1e-5, atol=1e-5
        )
        return
    # each vectorized chain adapts its own step size, as its sequential twin
    assert step_sizes["vectorized"].shape == (2,)
    np.testing.assert_allclose(
        step_sizes["sequential"], step_sizes["vectorized"], rtol=0.2
    )
    mean, variance = normal_posterior()
    for method, draws in samples.items():
        # 400 draws of a well-mixed chain: Monte Carlo error well under 0.1 sd
        assert abs(draws.mean() - mean) < 0.25 * np.sqrt(variance), method
        assert 0.6 < draws.var() / variance < 1.6, method


# -- warmup, continuation, extra fields ---------------------------------------------


def test_one_chain_runs_unbatched_by_every_method():
    """A single chain is never vmapped (a batched while loop would select
    every carried value on every leapfrog): all three methods compile the
    same unbatched chain, so the draws agree bit for bit (a vmapped chain
    agrees only to rounding, see above)."""
    draws = {}
    for method in ("sequential", "vectorized", "parallel"):
        mcmc = MCMC(
            NUTS(normal_model),
            num_warmup=50,
            num_samples=100,
            chain_method=method,
            progress_bar=False,
        )
        mcmc.run(jax.random.PRNGKey(3), Y)
        draws[method] = np.asarray(mcmc.get_samples()["mu"])
        assert mcmc.last_state.z.shape == (1,)  # one chain: no chain axis
    np.testing.assert_array_equal(draws["sequential"], draws["vectorized"])
    np.testing.assert_array_equal(draws["sequential"], draws["parallel"])


def test_warmup_then_run():
    mcmc = MCMC(NUTS(normal_model), num_warmup=200, num_samples=300, progress_bar=False)
    mcmc.warmup(jax.random.PRNGKey(10), Y, collect_warmup=True)
    assert mcmc.get_samples()["mu"].shape == (200,)
    mcmc.run(jax.random.PRNGKey(11), Y)
    assert mcmc.get_samples()["mu"].shape == (300,)
    mean, var = normal_posterior()
    assert_moments(mcmc.get_samples()["mu"], mean, var, "mu after warmup")


def test_post_warmup_state_continuation():
    mcmc = MCMC(NUTS(normal_model), num_warmup=300, num_samples=600, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(12), Y, extra_fields=("num_steps",))
    first = np.asarray(mcmc.get_samples()["mu"])
    mcmc.post_warmup_state = mcmc.last_state
    mcmc.run(mcmc.post_warmup_state.rng_key, Y, extra_fields=("num_steps",))
    second = np.asarray(mcmc.get_samples()["mu"])
    assert second.shape == (600,)
    assert not np.array_equal(first, second)
    # the continued chain has no warmup: it samples the posterior from its
    # first draw (no transient from a fresh initial point)
    mean, var = normal_posterior()
    assert_moments(second, mean, var, "continued mu")
    assert_moments(second[:100], mean, var, "first continued draws")
    assert mcmc.get_extra_fields()["num_steps"].shape == (600,)


def test_extra_fields_shapes_and_thinning():
    fields = ("diverging", "num_steps", "accept_prob", "potential_energy")
    mcmc = MCMC(
        NUTS(normal_model),
        num_warmup=100,
        num_samples=200,
        num_chains=2,
        thinning=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(13), Y, extra_fields=fields)
    by_chain = mcmc.get_extra_fields(group_by_chain=True)
    flat = mcmc.get_extra_fields()
    assert set(fields) <= set(by_chain)
    for name in fields:
        assert by_chain[name].shape == (2, 100), name
        assert flat[name].shape == (200,), name
    assert by_chain["diverging"].dtype == jnp.bool_
    assert np.all(np.asarray(flat["num_steps"]) >= 1)
    accept = np.asarray(flat["accept_prob"])
    assert np.all((accept >= 0) & (accept <= 1))
    assert np.all(np.isfinite(np.asarray(flat["potential_energy"])))
    assert mcmc.get_samples(group_by_chain=True)["mu"].shape == (2, 100)
    assert mcmc.get_samples()["mu"].shape == (200,)


def test_print_summary(capsys):
    mcmc = MCMC(
        NUTS(normal_model),
        num_warmup=100,
        num_samples=200,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(14), Y)
    capsys.readouterr()
    mcmc.print_summary()
    out = capsys.readouterr().out
    for word in ("mu", "mean", "std", "n_eff", "r_hat"):
        assert word in out
    assert "divergences" in out.lower()


# -- errors and warnings -------------------------------------------------------------


def test_nuts_takes_numpyros_positional_order():
    # NumPyro's documented order of NUTS's arguments
    order = [
        "model",
        "potential_fn",
        "kinetic_fn",
        "step_size",
        "inverse_mass_matrix",
        "adapt_step_size",
        "adapt_mass_matrix",
        "dense_mass",
        "target_accept_prob",
        "trajectory_length",
        "max_tree_depth",
        "init_strategy",
        "find_heuristic_step_size",
        "forward_mode_differentiation",
        "regularize_mass_matrix",
    ]
    assert list(inspect.signature(NUTS).parameters) == order
    kernel = NUTS(normal_model, None, None, 0.25, None, False, False, True, 0.9)
    assert (kernel.step_size, kernel.target_accept_prob) == (0.25, 0.9)
    assert not kernel.adapt_step_size and not kernel.adapt_mass_matrix
    assert kernel.dense_mass is True and kernel.max_tree_depth == 10


def test_nuts_warns_that_trajectory_length_is_ignored_and_refuses_num_steps():
    # NumPyro code often builds HMC or NUTS with the same keywords
    with pytest.warns(UserWarning, match="trajectory_length=2.0 is ignored"):
        NUTS(normal_model, trajectory_length=2.0)
    with pytest.raises(TypeError, match="num_steps"):
        NUTS(normal_model, num_steps=10)
    with pytest.raises(ValueError, match="max_tree_depth"):
        NUTS(normal_model, max_tree_depth=(3, 0))


def test_nuts_max_tree_depth_pair_bounds_warmup_and_sampling_apart():
    def stretched():
        # scales far apart: with a unit mass matrix trajectories run long
        probnn.sample("x", dist.Normal(0.0, jnp.array([0.05, 1.0, 20.0])))

    kernel = NUTS(stretched, max_tree_depth=(6, 2), adapt_mass_matrix=False)
    mcmc = MCMC(kernel, num_warmup=60, num_samples=60, progress_bar=False)
    mcmc.warmup(jax.random.PRNGKey(0), collect_warmup=True, extra_fields=("num_steps",))
    warm_steps = mcmc.get_extra_fields()["num_steps"]
    assert int(warm_steps.max()) > 3 and int(warm_steps.max()) <= 2**6 - 1
    mcmc.run(jax.random.PRNGKey(1), extra_fields=("num_steps",))
    assert int(mcmc.get_extra_fields()["num_steps"].max()) <= 2**2 - 1


def test_a_latent_site_substituted_inside_the_model_is_named_in_a_warning():
    # NumPyro samples it all the same; so does probnn, and says so
    def model():
        probnn.sample("x", dist.Normal(0.0, 1.0))
        probnn.sample("y", dist.Normal(0.0, 1.0))

    fixed = probnn.handlers.substitute(model, data={"x": 10.0})
    mcmc = MCMC(NUTS(fixed), num_warmup=10, num_samples=10, progress_bar=False)
    with pytest.warns(UserWarning, match=r"\['x'\] have a value given inside"):
        mcmc.run(jax.random.PRNGKey(1))
    assert sorted(mcmc.get_samples()) == ["x", "y"]
    # condition holds it: no warning, and x is not sampled
    held = probnn.handlers.condition(model, data={"x": 10.0})
    mcmc = MCMC(NUTS(held), num_warmup=10, num_samples=10, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mcmc.run(jax.random.PRNGKey(1))
    assert sorted(mcmc.get_samples()) == ["y"]


def test_improper_prior_and_a_one_point_simplex_sample():
    # an improper prior has no sampler: NUTS never draws from it; a
    # Dirichlet of one category has one value, sampled from zero coordinates
    def model(y):
        scale = probnn.sample(
            "scale", dist.ImproperUniform(dist.constraints.positive, (), ())
        )
        p = probnn.sample("p", dist.Dirichlet(jnp.ones(1)).expand([2]))
        probnn.sample("y", dist.Normal(p[..., 0].sum(), scale), obs=y)

    y = 2.0 + 3.0 * jax.random.normal(jax.random.PRNGKey(1), (400,))
    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=400, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), y)
    samples = mcmc.get_samples()
    np.testing.assert_array_equal(samples["p"], jnp.ones((400, 2, 1)))
    # flat prior on the scale: the posterior concentrates at the sample sd
    assert abs(float(samples["scale"].mean()) - float(jnp.std(y))) < 0.2


def test_model_without_latent_sites_runs_with_no_samples():
    # as in NumPyro: nothing to sample, so the samples hold only the
    # deterministic sites (none here); see test_mcmc_numpyro_api.py
    def model():
        probnn.sample("y", dist.Normal(0.0, 1.0), obs=0.5)

    mcmc = MCMC(NUTS(model), num_warmup=10, num_samples=10, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), extra_fields=("potential_energy",))
    assert mcmc.get_samples() == {}
    assert mcmc.get_extra_fields()["potential_energy"].shape == (10,)


def test_potential_fn_without_init_params_raises():
    with pytest.raises(ValueError, match="init_params"):
        mcmc = MCMC(
            NUTS(potential_fn=gaussian_potential),
            num_warmup=10,
            num_samples=10,
            progress_bar=False,
        )
        mcmc.run(jax.random.PRNGKey(0))


def test_parallel_chains_beyond_devices_warn_and_still_run():
    """More chains than devices under "parallel": a UserWarning naming the
    devices, then every chain runs (several on one device)."""
    chains = jax.local_device_count() + 1
    with pytest.warns(UserWarning, match="device"):
        mcmc = MCMC(
            NUTS(normal_model),
            num_warmup=50,
            num_samples=50,
            num_chains=chains,
            chain_method="parallel",
            progress_bar=False,
        )
        mcmc.run(jax.random.PRNGKey(15), Y)
    assert mcmc.get_samples(group_by_chain=True)["mu"].shape == (chains, 50)


def test_parallel_on_one_cpu_device_falls_back_to_sequential():
    """Several chains, "parallel", one CPU device: the chains run one after
    another, as NumPyro does (a vectorized batch of NUTS chains steps every
    chain until the longest trajectory ends), so the draws are exactly the
    "sequential" method's, and the warning says so."""
    if jax.local_device_count() != 1 or jax.devices()[0].platform != "cpu":
        pytest.fail("this test expects the suite's single CPU device")
    draws = {}
    for method in ("sequential", "parallel"):
        mcmc = MCMC(
            NUTS(normal_model),
            num_warmup=50,
            num_samples=50,
            num_chains=2,
            chain_method=method,
            progress_bar=False,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mcmc.run(jax.random.PRNGKey(4), Y)
        messages = [str(w.message) for w in caught if w.category is UserWarning]
        draws[method] = np.asarray(mcmc.get_samples(group_by_chain=True)["mu"])
    (message,) = messages
    assert "2 chains but 1 device" in message and "sequential" in message
    np.testing.assert_array_equal(draws["sequential"], draws["parallel"])


# -- progress bar ---------------------------------------------------------------------


def test_progress_bar(capsys):
    def run(progress_bar):
        mcmc = MCMC(
            NUTS(normal_model),
            num_warmup=50,
            num_samples=50,
            progress_bar=progress_bar,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mcmc.run(jax.random.PRNGKey(16), Y)
        return np.asarray(mcmc.get_samples()["mu"])

    capsys.readouterr()
    quiet = run(False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    loud = run(True)
    captured = capsys.readouterr()
    assert captured.err != ""
    np.testing.assert_array_equal(quiet, loud)


@pytest.mark.parametrize(
    "progress_rate, expected",
    [
        # 50 warmup iterations in blocks of 7 (the last one 1), then 30 draws
        (7, {"warmup": [7] * 7 + [1], "sample": [7] * 4 + [2]}),
        # default: about twenty updates per phase
        (None, {"warmup": [2] * 25, "sample": [1] * 30}),
    ],
)
def test_progress_rate_sets_iterations_per_bar_update(
    monkeypatch, capsys, progress_rate, expected
):
    seen = {"warmup": [], "sample": []}
    original = probnn.infer.mcmc._Progress.update

    def record(self, count, phase):
        seen[phase].append(int(np.sum(count)))
        original(self, count, phase)

    monkeypatch.setattr(probnn.infer.mcmc._Progress, "update", record)
    mcmc = MCMC(
        sampler=NUTS(normal_model),
        num_warmup=50,
        num_samples=30,
        progress_rate=progress_rate,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(jax.random.PRNGKey(16), Y)
    jax.effects_barrier()
    assert {k: sorted(v, reverse=True) for k, v in seen.items()} == expected
    assert "sample" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_progress_rate_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="progress_rate"):
        MCMC(NUTS(normal_model), num_warmup=1, num_samples=1, progress_rate=bad)


def test_dense_mass_groups_adapt_a_block_and_keep_other_sites_diagonal():
    # a and b strongly correlated, c independent with its own scale
    def model():
        a = probnn.sample("a", dist.Normal(0.0, 1.0))
        probnn.sample("b", dist.Normal(0.95 * a, math.sqrt(1 - 0.95**2)))
        probnn.sample("c", dist.Normal(0.0, 3.0))

    mcmc = MCMC(
        NUTS(model, dense_mass=[("a", "b")]),
        num_warmup=WARMUP,
        num_samples=SAMPLES,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(21))
    # NumPyro's layout: one block per group, the other sites one diagonal
    # block (one chain: no chain axis)
    shown = mcmc.last_state.adapt_state.inverse_mass_matrix
    assert set(shown) == {("a", "b"), ("c",)}
    ab, c = np.asarray(shown[("a", "b")]), np.asarray(shown[("c",)])
    assert ab.shape == (2, 2) and c.shape == (1,)
    assert ab[0, 1] > 0.5  # the adapted covariance of a and b
    assert 4.0 < c[0] < 15.0  # var(c) = 9
    samples = mcmc.get_samples()
    corr = np.corrcoef(np.asarray(samples["a"]), np.asarray(samples["b"]))[0, 1]
    assert abs(corr - 0.95) < 0.03
    with pytest.raises(ValueError, match="not latent sites"):
        MCMC(
            NUTS(model, dense_mass=[("a", "nope")]),
            num_warmup=10,
            num_samples=10,
            progress_bar=False,
        ).run(jax.random.PRNGKey(0))


def test_initial_point_with_non_finite_density_names_the_site():
    def model(y):
        scale = probnn.sample("scale", dist.HalfNormal(1.0))
        # an observation outside the support: no initial point can fix it
        probnn.sample("count", dist.Poisson(scale), obs=y)

    mcmc = MCMC(NUTS(model), num_warmup=10, num_samples=10, progress_bar=False)
    with pytest.raises(RuntimeError, match="'count'"):
        mcmc.run(jax.random.PRNGKey(0), -1.0)


def test_leaf_uniforms_read_off_keys_are_uniform():
    """NUTS's per-leaf selection draws read a split key's words as bits:
    uniform on (0, 1) by a Kolmogorov-Smirnov test, never 0 or 1, the same
    for raw and typed keys of the same seed."""
    from probnn.infer.hmc import _uniform_of_key

    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    u = np.asarray(jax.vmap(lambda k: _uniform_of_key(k, jnp.float32))(keys))
    assert 0.0 < u.min() and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    typed = jax.random.wrap_key_data(keys)
    u_typed = np.asarray(jax.vmap(lambda k: _uniform_of_key(k, jnp.float32))(typed))
    np.testing.assert_array_equal(u, u_typed)
    # successive leaves' draws are not correlated
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.03


def test_nuts_samples_latent_sites_inside_scan():
    # x_t ~ N(0, 1), y_t ~ N(x_t, 1) over a scan: x_t | y ~ N(y_t / 2, 1 / 2)
    y = jnp.array([-2.0, 0.0, 1.0, 3.0])

    def model(y):
        def body(carry, y_t):
            x = probnn.sample("x", dist.Normal(0.0, 1.0))
            probnn.sample("obs", dist.Normal(x, 1.0), obs=y_t)
            return carry, None

        probnn.scan(body, None, y)

    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=3000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(5), y)
    x = np.asarray(mcmc.get_samples()["x"])
    assert x.shape == (3000, 4)
    np.testing.assert_allclose(x.mean(0), y / 2, atol=0.08)
    np.testing.assert_allclose(x.var(0), 0.5, atol=0.08)


# -- model arguments: closed over (default) or traced (jit_model_args=True) ---------


def normal_posterior_of(y, prior_scale=PRIOR_SCALE, noise=NOISE):
    """Exact posterior mean and variance of mu ~ N(0, prior_scale),
    y_i ~ N(mu, noise)."""
    y = np.asarray(y, np.float64)
    precision = 1 / prior_scale**2 + y.shape[0] / noise**2
    return float(y.sum()) / noise**2 / precision, 1 / precision


def mcmc_of(model, seed=0, **mcmc_kwargs):
    mcmc_kwargs = {
        "num_warmup": WARMUP,
        "num_samples": SAMPLES,
        "progress_bar": False,
        **mcmc_kwargs,
    }
    return MCMC(NUTS(model), **mcmc_kwargs)


def test_jit_model_args_defaults_to_false_as_numpyro():
    default = inspect.signature(MCMC).parameters["jit_model_args"].default
    assert default is False
    assert mcmc_of(normal_model).jit_model_args is False


def test_kwarg_used_by_arange_and_a_plate_size():
    """``T`` (a Python int keyword) goes to ``jnp.arange`` and sizes the
    plate: only the first T observations enter the posterior."""
    seen = []

    def model(y, T=None):
        seen.append(type(T))
        mu = probnn.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
        t = jnp.arange(T)
        with probnn.plate("time", T):
            probnn.sample("y", dist.Normal(mu, NOISE), obs=y[t])

    mcmc = mcmc_of(model)
    mcmc.run(jax.random.PRNGKey(20), Y, T=4)
    assert set(seen) == {int}
    mean, var = normal_posterior_of(Y[:4])
    assert_moments(mcmc.get_samples()["mu"], mean, var, "mu | first 4")


def test_bool_flag_picks_a_branch():
    def model(y, precise):
        mu = probnn.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
        if precise:
            noise = 0.5
        else:
            noise = 2.0
        with probnn.plate("N", y.shape[0]):
            probnn.sample("y", dist.Normal(mu, noise), obs=y)

    mcmc = mcmc_of(model)
    for precise, noise in ((True, 0.5), (False, 2.0)):
        mcmc.run(jax.random.PRNGKey(21), Y, precise)
        mean, var = normal_posterior_of(Y, noise=noise)
        assert_moments(mcmc.get_samples()["mu"], mean, var, f"mu, precise={precise}")


def namespace_model(y, args=None):
    """Reads its settings off an ``argparse.Namespace``, as NumPyro's
    examples do (``mcmc.run(key, data, args=args)``)."""
    mu = probnn.sample("mu", dist.Normal(0.0, args.prior_scale))
    with probnn.plate("N", args.num_obs):
        probnn.sample("y", dist.Normal(mu, args.noise), obs=y[: args.num_obs])


def test_namespace_kwarg():
    args = argparse.Namespace(prior_scale=1.5, noise=0.8, num_obs=5)
    mcmc = mcmc_of(namespace_model)
    mcmc.run(jax.random.PRNGKey(22), Y, args=args)
    mean, var = normal_posterior_of(Y[:5], prior_scale=1.5, noise=0.8)
    assert_moments(mcmc.get_samples()["mu"], mean, var, "mu")


@pytest.mark.parametrize("method", ["sequential", "vectorized", "parallel"])
def test_namespace_kwarg_chains_warmup_and_continuation(method):
    """Closed-over, unhashable arguments through every chain method, a
    separate warmup, a continuation from ``post_warmup_state``, extra fields
    and the summary."""
    args = argparse.Namespace(prior_scale=1.5, noise=0.8, num_obs=6)
    mean, var = normal_posterior_of(Y, prior_scale=1.5, noise=0.8)
    mcmc = mcmc_of(namespace_model, num_chains=2, chain_method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # parallel on one device
        mcmc.warmup(jax.random.PRNGKey(23), Y, args=args)
        mcmc.run(jax.random.PRNGKey(24), Y, args=args, extra_fields=("num_steps",))
        first = mcmc.get_samples(group_by_chain=True)["mu"]
        assert first.shape == (2, SAMPLES)
        assert mcmc.get_extra_fields()["num_steps"].shape == (2 * SAMPLES,)
        assert_moments(first.reshape(-1), mean, var, "mu")
        mcmc.post_warmup_state = mcmc.last_state
        mcmc.run(mcmc.last_state.rng_key, Y, args=args)
    second = mcmc.get_samples()["mu"]
    assert not np.array_equal(np.asarray(second), np.asarray(first.reshape(-1)))
    assert_moments(second, mean, var, "continued mu")
    mcmc.print_summary()


def test_numpy_values_shape_the_latent_sites():
    """``np.unique`` of an argument sizes a plate of latent sites and
    ``int(np.max(...))`` a range: a second run whose argument has the same
    shape but other values gets latent sites of another shape."""

    def model(groups, y):
        labels = np.unique(groups)
        index = np.searchsorted(labels, groups)
        assert int(np.max(index)) == len(labels) - 1
        with probnn.plate("groups", len(labels)):
            mu = probnn.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
        with probnn.plate("N", len(groups)):
            probnn.sample("y", dist.Normal(mu[index], NOISE), obs=y)

    y = np.asarray(Y)
    mcmc = mcmc_of(model)
    for groups in (np.array([0, 0, 1, 1, 2, 2]), np.array([5, 7, 5, 7, 5, 7])):
        mcmc.run(jax.random.PRNGKey(25), groups, y)
        mu = np.asarray(mcmc.get_samples()["mu"])
        labels = np.unique(groups)
        assert mu.shape == (SAMPLES, len(labels))
        for g, label in enumerate(labels):
            mean, var = normal_posterior_of(y[groups == label])
            assert_moments(mu[:, g], mean, var, f"mu[{label}]")


def test_enumerated_mixture_with_a_python_setting():
    """An enumerated discrete site summed out of the potential, with the
    number of components a Python int read off a Namespace."""

    @config_enumerate
    def model(x, args):
        locs = probnn.sample(
            "locs", dist.Normal(MIX_PRIOR_LOCS[: args.K], 1.0).to_event(1)
        )
        with probnn.plate("data", x.shape[0]):
            z = probnn.sample("z", dist.Categorical(probs=MIX_WEIGHTS[: args.K]))
            probnn.sample("x", dist.Normal(locs[z], 1.0), obs=x)

    # started in the major mode's basin (see the test above)
    mcmc = MCMC(
        NUTS(model, init_strategy=init_to_median),
        num_warmup=WARMUP,
        num_samples=SAMPLES,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(6), MIX_X, argparse.Namespace(K=2))
    samples = mcmc.get_samples()
    assert set(samples) == {"locs"}
    for i, (mean, var) in enumerate(mixture_grid_moments()):
        assert_moments(samples["locs"][:, i], mean, var, f"locs[{i}]")


def test_init_params_with_a_python_int_argument():
    def model(y, n):
        mu = probnn.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
        with probnn.plate("N", n):
            probnn.sample("y", dist.Normal(mu, NOISE), obs=y[:n])

    mcmc = mcmc_of(model, num_warmup=0, num_samples=2)
    mcmc.run(jax.random.PRNGKey(26), Y, 3, init_params={"mu": jnp.array(0.5)})
    assert mcmc.last_state.z.shape == (1,)  # one chain: no chain axis
    mcmc = mcmc_of(model)
    mcmc.run(jax.random.PRNGKey(26), Y, 3, init_params={"mu": jnp.array(0.5)})
    mean, var = normal_posterior_of(Y[:3])
    assert_moments(mcmc.get_samples()["mu"], mean, var, "mu")


def counting_model(calls):
    """normal_model, counting how often Python runs it (each trace)."""

    def model(y):
        calls.append(1)
        normal_model(y)

    return model


def test_jit_model_args_true_reuses_the_compiled_sampler_for_new_data():
    calls = []
    mcmc = mcmc_of(counting_model(calls), jit_model_args=True)
    mcmc.run(jax.random.PRNGKey(27), Y)
    assert calls
    mean, var = normal_posterior_of(Y)
    assert_moments(mcmc.get_samples()["mu"], mean, var, "mu | Y")
    traced = len(calls)
    other = jnp.array([-1.0, -2.5, 0.3, -0.7, -1.9, -3.1])
    mcmc.run(jax.random.PRNGKey(28), other)
    assert len(calls) == traced  # no model call: nothing was traced again
    mean, var = normal_posterior_of(other)
    assert_moments(mcmc.get_samples()["mu"], mean, var, "mu | other")
    # new shapes compile again
    mcmc.run(jax.random.PRNGKey(29), other[:4])
    assert len(calls) > traced
    mean, var = normal_posterior_of(other[:4])
    assert_moments(mcmc.get_samples()["mu"], mean, var, "mu | other[:4]")


def test_jit_model_args_true_needs_array_arguments():
    mcmc = mcmc_of(namespace_model, jit_model_args=True)
    args = argparse.Namespace(prior_scale=1.5, noise=0.8, num_obs=5)
    with pytest.raises(TypeError, match=r"kwargs\['args'\] is a Namespace"):
        mcmc.run(jax.random.PRNGKey(0), Y, args=args)


def test_closed_over_arguments_give_each_runs_posterior():
    """jit_model_args=False: a run with other data builds a new sampler for
    it (the model is traced again) and samples its posterior; the same
    arguments again (the same JAX array, or numpy arrays with equal
    contents) reuse the compiled sampler, while a numpy array changed in
    place since is seen anew."""
    calls = []
    mcmc = mcmc_of(counting_model(calls))
    other = jnp.array([-1.0, -2.5, 0.3, -0.7, -1.9, -3.1])
    for data in (Y, other):
        before = len(calls)
        mcmc.run(jax.random.PRNGKey(30), data)
        assert len(calls) > before
        mean, var = normal_posterior_of(data)
        assert_moments(mcmc.get_samples()["mu"], mean, var, "mu")
    before = len(calls)
    mcmc.run(jax.random.PRNGKey(31), other)
    assert len(calls) == before

    data = np.asarray(Y).copy()
    mcmc.run(jax.random.PRNGKey(32), data)
    before = len(calls)
    mcmc.run(jax.random.PRNGKey(33), data.copy())
    assert len(calls) == before
    data += 3.0
    mcmc.run(jax.random.PRNGKey(34), data)
    assert len(calls) > before
    mean, var = normal_posterior_of(data)
    assert_moments(mcmc.get_samples()["mu"], mean, var, "mu | shifted data")


def test_model_sees_arguments_as_given():
    """Closed over: numpy stays numpy, Python values stay Python; traced:
    every leaf is a tracer."""
    seen = {}

    def model(x, n, flag, args):
        seen.setdefault("types", set()).add((type(x), type(n), type(flag), type(args)))
        probnn.sample("mu", dist.Normal(0.0, 1.0))

    mcmc = mcmc_of(model, num_warmup=5, num_samples=5)
    ns = argparse.Namespace(a=1)
    mcmc.run(jax.random.PRNGKey(0), np.zeros(2), 3, True, ns)
    assert seen["types"] == {(np.ndarray, int, bool, argparse.Namespace)}
    seen.clear()
    mcmc = mcmc_of(model, num_warmup=5, num_samples=5, jit_model_args=True)
    mcmc.run(jax.random.PRNGKey(0), np.zeros(2), 3, True, 1.0)
    tracer_types = {types[:3] for types in seen["types"] if types[0] is not np.ndarray}
    assert tracer_types and all(
        issubclass(t, jax.core.Tracer) for types in tracer_types for t in types
    )


def test_hmm_with_sequences_lengths_and_a_namespace_kwarg():
    """The call of NumPyro's examples/hmm_enum.py, ``mcmc.run(key, sequences,
    lengths, args=args)``: numpy data, a Namespace of settings, a scan over
    time with the hidden state enumerated and steps past each sequence's
    length masked. The posterior of the emission parameter is checked
    against a grid with the forward algorithm."""
    from probnn.handlers import mask

    def model(sequences, lengths, args=None):
        num_sequences, _ = sequences.shape
        theta = probnn.sample("theta", dist.Beta(2.0, 2.0))
        emit = jnp.stack([theta, jnp.asarray(args.emit_1, theta.dtype)])
        transition = jnp.asarray(args.transition)

        def step(carry, y):
            x_prev, t = carry
            with probnn.plate("sequences", num_sequences, dim=-1):
                with mask(mask=t < lengths):
                    x = probnn.sample(
                        "x",
                        dist.Categorical(transition[x_prev]),
                        infer={"enumerate": "parallel"},
                    )
                    probnn.sample("y", dist.Bernoulli(emit[x]), obs=y)
            return (x, t + 1), None

        x_init = jnp.zeros(num_sequences, dtype=jnp.int32)
        probnn.scan(step, (x_init, 0), sequences.T)

    args = argparse.Namespace(emit_1=0.9, transition=((0.8, 0.2), (0.3, 0.7)))
    sequences = np.array(
        [[0, 0, 1, 1, 1, 0, 0, 1], [1, 0, 0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0, 0, 0]],
        np.float32,
    )
    lengths = np.array([8, 5, 6])
    mcmc = mcmc_of(model)
    mcmc.run(jax.random.PRNGKey(35), sequences, lengths, args=args)
    theta = np.asarray(mcmc.get_samples()["theta"])

    grid = np.linspace(1e-4, 1 - 1e-4, 4001)
    transition = np.asarray(args.transition)
    log_post = stats.beta.logpdf(grid, 2.0, 2.0)
    for seq, length in zip(sequences, lengths):
        alpha = np.ones_like(grid)[:, None] * transition[0][None, :]
        scale = np.zeros_like(grid)
        for t in range(length):
            if t > 0:
                alpha = alpha @ transition
            p1 = np.stack([grid, np.full_like(grid, args.emit_1)], -1)
            alpha = alpha * np.where(seq[t] == 1, p1, 1 - p1)
            norm = alpha.sum(-1, keepdims=True)
            scale += np.log(norm[:, 0])
            alpha = alpha / norm
        log_post = log_post + scale
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum()
    mean = float((weights * grid).sum())
    var = float((weights * (grid - mean) ** 2).sum())
    assert_moments(theta, mean, var, "theta")
