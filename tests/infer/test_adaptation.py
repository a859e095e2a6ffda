"""Warmup adaptation of HMC/NUTS against what it should reach: on a Gaussian
with known scales the adapted diagonal mass matrix is the variance, and the
step size is the one at which the trajectory's mean acceptance is the
target, computed here independently of the sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.infer import MCMC, NUTS
from probnn.infer.hmc_util import adaptation_schedule, batch_cond

DIM = 50
SCALES = np.exp(np.linspace(np.log(0.01), np.log(10.0), DIM))


def gaussian():
    probnn.sample("x", dist.Normal(0.0, jnp.asarray(SCALES)).to_event(1))


def mean_acceptance(step, dim, draws=2000, seed=0):
    """The NUTS acceptance statistic (the mean over a trajectory's leaves of
    min(1, exp(-energy error))) on a standard normal in ``dim`` dimensions
    with an identity mass matrix, for trajectories of half a period (where
    the U-turn criterion stops them), by plain numpy leapfrog."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((draws, dim))
    p = rng.standard_normal((draws, dim))
    start = 0.5 * np.sum(q**2 + p**2, 1)
    leaves = int(round(np.pi / step))
    total = np.zeros(draws)
    for _ in range(leaves):
        p = p - 0.5 * step * q
        q = q + step * p
        p = p - 0.5 * step * q
        error = 0.5 * np.sum(q**2 + p**2, 1) - start
        total += np.minimum(1.0, np.exp(-error))
    return float(np.mean(total / leaves))


def target_step(dim, target=0.8):
    """Bisection for the step size whose mean acceptance is ``target``."""
    low, high = 0.05, 1.9
    for _ in range(30):
        middle = 0.5 * (low + high)
        if mean_acceptance(middle, dim) > target:
            low = middle
        else:
            high = middle
    return low


def test_reference_acceptance_falls_with_the_step():
    steps = [0.2, 0.5, 0.8, 1.2]
    rates = [mean_acceptance(s, DIM) for s in steps]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[0] > 0.97 and rates[-1] < 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_nuts_adapts_to_the_variances_and_the_target_step(seed):
    best = target_step(DIM)  # about 0.65 for 50 dimensions
    mcmc = MCMC(NUTS(gaussian), num_warmup=1000, num_samples=500, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("accept_prob",))
    adapt = mcmc.last_state.adapt_state
    ratio = np.asarray(adapt.inverse_mass_matrix[("x",)]) / SCALES**2
    # 4 decades of scale, each variance estimated from the last slow window
    assert 0.6 < ratio.min() and ratio.max() < 1.6
    # an estimated (not exact) preconditioner and the average of log step
    # sizes keep the step under the exact-preconditioner optimum, as Stan's
    # and NumPyro's do (NumPyro 0.22 gives 0.50-0.55 on seeds 0-3)
    step = float(adapt.step_size)
    assert 0.6 * best < step < 1.0 * best
    accept = float(np.mean(mcmc.get_extra_fields()["accept_prob"]))
    assert 0.75 < accept < 0.95


def test_step_size_is_searched_afresh_when_the_mass_matrix_changes():
    """At the end of each slow window the new mass matrix makes the old step
    size wrong by orders of magnitude here (scales from 0.01 to 10); the step
    size search runs again at once, as in Stan and NumPyro, instead of dual
    averaging climbing back over many costly iterations."""
    num_warmup = 500
    collect, window_end = adaptation_schedule(num_warmup)
    first_end = int(np.argmax(window_end))
    mcmc = MCMC(
        NUTS(gaussian), num_warmup=num_warmup, num_samples=1, progress_bar=False
    )
    mcmc.warmup(
        jax.random.PRNGKey(0),
        extra_fields=("adapt_state.step_size",),
        collect_warmup=True,
    )
    steps = np.asarray(mcmc.get_extra_fields()["adapt_state.step_size"])
    before, after = steps[first_end - 1], steps[first_end]
    assert before < 0.05
    assert after > 0.25 * target_step(DIM)


def test_batch_cond_runs_the_branch_once_for_a_batch():
    def taken(x):
        return x * 10.0

    def kept(x):
        return x - 1.0

    batched = jax.vmap(lambda p, x: batch_cond(p, taken, kept, x))
    out = batched(jnp.array([True, False, True]), jnp.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(out, [10.0, 1.0, 30.0])
    out = batched(jnp.array([False, False]), jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(out, [0.0, 1.0])
    # one branch under vmap: a cond on the batch's any, not a select of both
    jaxpr = jax.make_jaxpr(batched)(jnp.array([True, False]), jnp.array([1.0, 2.0]))
    assert "cond" in str(jaxpr) and "reduce_or" in str(jaxpr)
    assert float(batch_cond(True, taken, kept, 2.0)) == 20.0
    assert float(batch_cond(False, taken, kept, 2.0)) == 1.0
