"""AutoDAIS against a hand-written run of its recurrences (closed-form
gradients of a Gaussian target, a Python loop), and its bound against the
exact log evidence of a normalised model."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.handlers import seed, substitute, trace
from probnn.infer import SVI, Trace_ELBO
from probnn.infer.autoguide import AutoDAIS, AutoDiagonalNormal


def correlated():
    # normalised (log evidence 0): x ~ N(1, 1), y | x ~ N(x - 0.5, 0.6)
    x = probnn.sample("x", dist.Normal(1.0, 1.0))
    probnn.sample("y", dist.Normal(x - 0.5, 0.6))


PRECISION = np.array([[1.0 + 1 / 0.36, -1 / 0.36], [-1 / 0.36, 1 / 0.36]])
MEAN = np.array([1.0, 0.5])


def _reference(params, z0, noise, K):
    """DAIS's position and log weight by its recurrences, in numpy."""
    eta0, slope, gamma = (
        params["auto_eta0"],
        params["auto_eta_coeff"],
        params["auto_gamma"],
    )
    betas = np.cumsum(params["auto_beta_increments"])
    betas = betas / betas[-1]
    mass = params["auto_mass_matrix"]
    loc, scale = params["auto_z_0_loc"], params["auto_z_0_scale"]

    def log_momentum(v):
        return np.sum(
            -0.5 * (v / mass) ** 2 - np.log(mass) - 0.5 * math.log(2 * math.pi)
        )

    z, v, log_weight = z0.copy(), noise[-1].copy(), 0.0
    for k in range(K):
        eta = min(max(eta0 + slope * betas[k], 0.0), 0.5)
        z_mid = z + eta * v / (2 * mass)
        force = (1 - betas[k]) * (-(z_mid - loc) / scale**2) + betas[k] * (
            -PRECISION @ (z_mid - MEAN)
        )
        v_mid = v + eta * force
        log_weight += log_momentum(v) - log_momentum(v_mid)
        z = z_mid + eta * v_mid / (2 * mass)
        v = gamma * v_mid + math.sqrt(1 - gamma**2) * noise[k]
    return z, log_weight


@pytest.mark.parametrize("K", [1, 3])
def test_guide_runs_the_annealed_langevin_recurrences(K):
    guide = AutoDAIS(correlated, K=K, eta_init=0.2, eta_max=0.5)
    seed(guide, rng_seed=0)()  # prototype run
    rng = np.random.default_rng(K)
    params = {
        "auto_eta0": 0.3,
        "auto_eta_coeff": 0.1,
        "auto_gamma": 0.7,
        "auto_beta_increments": rng.uniform(0.5, 1.5, K),
        "auto_mass_matrix": np.array([0.8, 1.3]),
        "auto_z_0_loc": np.array([0.2, -0.1]),
        "auto_z_0_scale": np.array([0.9, 0.6]),
    }
    z0 = rng.normal(size=2)
    noise = rng.normal(size=(K, 2))
    given = {"auto_z_0": z0, "auto_momentum": noise}
    data = {k: jnp.asarray(v, jnp.float32) for k, v in {**params, **given}.items()}
    tr = trace(substitute(seed(guide, rng_seed=1), data=data)).get_trace()
    z_expected, log_weight = _reference(params, z0, noise, K)
    actual = jnp.stack([tr["x"]["value"], tr["y"]["value"]])
    np.testing.assert_allclose(actual, z_expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        tr["auto_factor"]["fn"].log_prob(tr["auto_factor"]["value"]),
        log_weight,
        rtol=1e-4,
        atol=1e-4,
    )
    # the momenta carry no density of their own
    assert (
        float(jnp.sum(tr["auto_momentum"]["fn"].log_prob(data["auto_momentum"]))) == 0.0
    )


def test_trained_bound_is_below_the_evidence_and_above_mean_field():
    losses = {}
    for name, guide in [
        ("dais", AutoDAIS(correlated, K=16, eta_init=0.05, eta_max=0.3)),
        ("mean field", AutoDiagonalNormal(correlated)),
    ]:
        svi = SVI(correlated, guide, optax.adam(0.01), Trace_ELBO())
        result = svi.run(jax.random.PRNGKey(0), 1500, progress_bar=False)
        losses[name] = float(
            Trace_ELBO(num_particles=2000).loss(
                jax.random.PRNGKey(1), result.params, correlated, guide
            )
        )
    # -ELBO >= -log Z = 0, up to Monte-Carlo error; mean field cannot beat
    # its KL bound 0.5 log(1.36 / 0.36) = 0.66; the annealed dynamics do
    assert losses["dais"] > -0.05
    assert losses["mean field"] > 0.6
    assert losses["dais"] < losses["mean field"] - 0.15


def test_sample_posterior_without_the_models_arguments_uses_the_first_runs():
    def regression(x, y=None):
        w = probnn.sample("w", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
        with probnn.plate("rows", x.shape[0]):
            probnn.sample("y", dist.Normal(x @ w, 0.5), obs=y)

    x = jnp.asarray(np.random.default_rng(0).normal(size=(20, 2)), jnp.float32)
    y = x @ jnp.array([1.0, -1.0])
    guide = AutoDAIS(regression, K=4)
    svi = SVI(regression, guide, optax.adam(0.01), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 800, x, y, progress_bar=False)
    draws = guide.sample_posterior(
        jax.random.PRNGKey(1), result.params, sample_shape=(200,)
    )
    assert draws["w"].shape == (200, 2)
    np.testing.assert_allclose(
        np.mean(np.asarray(draws["w"]), 0), [1.0, -1.0], atol=0.15
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="K must be an int >= 1"):
        AutoDAIS(correlated, K=0)
    with pytest.raises(ValueError, match="eta_init"):
        AutoDAIS(correlated, eta_init=0.5, eta_max=0.1)
    with pytest.raises(ValueError, match="gamma_init"):
        AutoDAIS(correlated, gamma_init=1.0)
    with pytest.raises(ValueError, match="base_dist"):
        AutoDAIS(correlated, base_dist="full")

    def subsampled_model():
        m = probnn.sample("m", dist.Normal(0.0, 1.0))
        with probnn.plate("rows", 100, subsample_size=10):
            probnn.sample("y", dist.Normal(m, 1.0), obs=jnp.zeros(10))

    guide = AutoDAIS(subsampled_model)
    with pytest.raises(ValueError, match="subsampled plate 'rows'"):
        seed(guide, rng_seed=0)()
    with pytest.raises(NotImplementedError, match="sample_posterior"):
        AutoDAIS(correlated).median({})
