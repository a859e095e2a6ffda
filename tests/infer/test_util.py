"""Tests of probnn.infer.util.log_density against hand-written scipy sums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probnn
import probnn.distributions as dist
from probnn.handlers import mask, scale, seed
from probnn.infer.util import log_density, site_log_prob

Y = np.array([0.4, -1.2, 2.5], dtype=np.float32)
MU = 0.3
Z = jnp.array([0.1, -0.8, 1.9])


def model(y, y_scale=0.5):
    mu = probnn.sample("mu", dist.Normal(0.0, 2.0))
    with probnn.plate("N", 3):
        z = probnn.sample("z", dist.Normal(mu, 1.0))
        with scale(scale=y_scale):
            probnn.sample("y", dist.Normal(z, 0.5), obs=y)
    probnn.deterministic("d", 2.0 * mu)
    probnn.factor("f", -(mu**2))
    return z


def expected_log_joint(mu, z, y, y_scale=0.5):
    mu = np.float64(mu)
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    return (
        stats.norm.logpdf(mu, 0.0, 2.0)
        + stats.norm.logpdf(z, mu, 1.0).sum()
        + y_scale * stats.norm.logpdf(y, z, 0.5).sum()
        - mu**2
    )


def test_log_density_matches_scipy_sum():
    log_joint, _ = log_density(model, (Y,), {}, {"mu": MU, "z": Z})
    assert jnp.shape(log_joint) == ()
    np.testing.assert_allclose(
        float(log_joint), expected_log_joint(MU, Z, Y), rtol=1e-5
    )


def test_log_density_passes_model_kwargs():
    log_joint, _ = log_density(model, (Y,), {"y_scale": 3.0}, {"mu": MU, "z": Z})
    np.testing.assert_allclose(
        float(log_joint), expected_log_joint(MU, Z, Y, y_scale=3.0), rtol=1e-5
    )


def test_log_density_trace_has_expected_sites():
    _, tr = log_density(model, (Y,), {}, {"mu": MU, "z": Z})
    assert list(tr) == ["mu", "N", "z", "y", "d", "f"]
    types = {name: site["type"] for name, site in tr.items()}
    assert types == {
        "mu": "sample",
        "N": "plate",
        "z": "sample",
        "y": "sample",
        "d": "deterministic",
        "f": "sample",
    }
    assert tr["mu"]["is_observed"] is False
    assert tr["z"]["is_observed"] is False
    assert tr["y"]["is_observed"] is True
    assert tr["f"]["is_observed"] is True
    assert float(tr["mu"]["value"]) == pytest.approx(MU)
    np.testing.assert_array_equal(np.asarray(tr["z"]["value"]), np.asarray(Z))
    np.testing.assert_array_equal(np.asarray(tr["y"]["value"]), Y)
    assert float(tr["d"]["value"]) == pytest.approx(2 * MU)
    assert tr["y"]["scale"] == 0.5
    assert tr["z"]["scale"] is None
    assert [frame.name for frame in tr["z"]["cond_indep_stack"]] == ["N"]
    assert [frame.name for frame in tr["y"]["cond_indep_stack"]] == ["N"]
    assert tr["mu"]["cond_indep_stack"] == []
    assert tr["z"]["fn"].batch_shape == (3,)
    # per-site scaled log densities, not yet summed
    np.testing.assert_allclose(
        np.asarray(site_log_prob(tr["y"])),
        0.5 * stats.norm.logpdf(Y, np.asarray(Z), 0.5),
        rtol=1e-5,
    )
    np.testing.assert_allclose(float(site_log_prob(tr["f"])), -(MU**2), rtol=1e-5)


def test_log_density_is_differentiable():
    def f(mu):
        return log_density(model, (Y,), {}, {"mu": mu, "z": Z})[0]

    grad = jax.grad(f)(MU)
    # d/dmu: -mu/4 + sum(z - mu) - 2 mu
    expected = -MU / 4 + float(np.sum(np.asarray(Z) - MU)) - 2 * MU
    np.testing.assert_allclose(float(grad), expected, rtol=1e-5)
    np.testing.assert_allclose(
        float(jax.jit(f)(MU)), expected_log_joint(MU, Z, Y), rtol=1e-5
    )


def test_log_density_unsubstituted_latents_use_seeded_draws():
    log_joint, tr = log_density(seed(model, rng_seed=0), (Y,), {}, {})
    mu, z = tr["mu"]["value"], tr["z"]["value"]
    np.testing.assert_allclose(
        float(log_joint), expected_log_joint(mu, z, Y), rtol=1e-5
    )


def test_log_density_batched_factor_and_mask():
    m = np.array([True, False, True])

    def masked_model():
        with probnn.plate("N", 3):
            x = probnn.sample("x", dist.Normal(0.0, 1.0))
            probnn.factor("f", jnp.array([1.0, 2.0, 3.0]))
            with mask(mask=jnp.asarray(m)):
                probnn.sample("obs", dist.Normal(x, 1.0), obs=Y)

    x = jnp.array([0.5, 0.0, -0.5])
    log_joint, _ = log_density(masked_model, (), {}, {"x": x})
    x64 = np.asarray(x, np.float64)
    expected = (
        stats.norm.logpdf(x64).sum()
        + 6.0
        + np.where(m, stats.norm.logpdf(Y, x64, 1.0), 0.0).sum()
    )
    np.testing.assert_allclose(float(log_joint), expected, rtol=1e-5)


def test_log_density_subsampled_plate_is_rescaled():
    data = jnp.arange(10.0) / 5.0

    def sub_model():
        with probnn.plate("data", 10, subsample_size=4):
            batch = probnn.subsample(data, event_dim=0)
            probnn.sample("obs", dist.Normal(0.5, 1.0), obs=batch)

    log_joint, tr = log_density(seed(sub_model, rng_seed=1), (), {}, {})
    idx = np.asarray(tr["data"]["value"])
    assert idx.shape == (4,) and len(set(idx.tolist())) == 4
    np.testing.assert_array_equal(np.asarray(tr["obs"]["value"]), np.asarray(data)[idx])
    expected = 10 / 4 * stats.norm.logpdf(np.asarray(data)[idx], 0.5, 1.0).sum()
    np.testing.assert_allclose(float(log_joint), expected, rtol=1e-5)


def test_log_density_param_sites_are_substituted_but_not_scored():
    def param_model():
        w = probnn.param("w", 1.0)
        probnn.sample("obs", dist.Normal(w, 1.0), obs=2.0)

    log_joint, tr = log_density(param_model, (), {}, {"w": 0.5})
    assert tr["w"]["type"] == "param"
    assert float(tr["w"]["value"]) == 0.5
    np.testing.assert_allclose(
        float(log_joint), stats.norm.logpdf(2.0, 0.5, 1.0), rtol=1e-6
    )


def test_log_density_of_empty_model_is_zero():
    log_joint, tr = log_density(lambda: None, (), {}, {})
    assert float(log_joint) == 0.0
    assert tr == {}


def test_potential_energy_of_scan_sites_equals_the_unrolled_model():
    # a positive latent chain inside probnn.scan, against the same model
    # written as a Python loop with one site per step
    from probnn.infer.util import potential_energy

    y = jnp.array([0.5, 1.5, 0.7, 2.0])

    def scanned(y):
        def body(prev, y_t):
            x = probnn.sample("x", dist.LogNormal(0.5 * jnp.log(prev), 0.4))
            probnn.sample("y", dist.Normal(x, 0.3), obs=y_t)
            return x, None

        probnn.scan(body, 1.0, y)

    def unrolled(y):
        prev = 1.0
        for t in range(y.shape[0]):
            prev = probnn.sample(f"x{t}", dist.LogNormal(0.5 * jnp.log(prev), 0.4))
            probnn.sample(f"y{t}", dist.Normal(prev, 0.3), obs=y[t])

    u = jnp.array([0.3, -0.2, 0.1, 0.6])  # log x: the unconstrained values
    got = potential_energy(scanned, (y,), {}, {"x": u})
    expected = potential_energy(unrolled, (y,), {}, {f"x{t}": u[t] for t in range(4)})
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # and by hand: -log p(x, y) - sum(log x), the Jacobian of exp
    x = np.exp(np.asarray(u, np.float64))
    prev = np.concatenate([[1.0], x[:-1]])
    by_hand = -(
        stats.lognorm(0.4, scale=np.sqrt(prev)).logpdf(x).sum()
        + stats.norm(x, 0.3).logpdf(np.asarray(y)).sum()
        + np.log(x).sum()
    )
    np.testing.assert_allclose(got, by_hand, rtol=1e-5)
