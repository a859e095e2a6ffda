"""Tests of probnn.diagnostics against direct, independent computations."""

import sys

import jax.numpy as jnp
import numpy as np
import pytest

from probnn.diagnostics import (
    autocorrelation,
    autocovariance,
    effective_sample_size,
    gelman_rubin,
    hpdi,
    print_summary,
    split_gelman_rubin,
    summary,
    to_arviz,
)

# ---------------------------------------------------------------- references


def direct_autocovariance(series, bias=True):
    """O(n^2) autocovariance of a 1-D series."""
    n = len(series)
    centered = series - series.mean()
    sums = np.array([np.dot(centered[: n - k], centered[k:]) for k in range(n)])
    return sums / n if bias else sums / (n - np.arange(n))


def direct_rhat(chains):
    """R-hat of chains (C, N) by the textbook between/within formula."""
    num_chains, n = chains.shape
    means = chains.mean(axis=1)
    grand = means.mean()
    between = n / (num_chains - 1) * np.sum((means - grand) ** 2)
    within = np.mean(
        [np.sum((c - c.mean()) ** 2) / (n - 1) for c in chains]
    )  # mean of the chains' unbiased variances
    var_plus = (n - 1) / n * within + between / n
    return np.sqrt(var_plus / within)


def direct_split_rhat(chains):
    half = chains.shape[1] // 2
    halves = [c[:half] for c in chains] + [c[len(c) - half :] for c in chains]
    return direct_rhat(np.stack(halves))


def brute_force_hpdi(samples, prob):
    """Narrowest interval between two samples holding more than ``prob`` of
    them (the leftmost one on ties), by trying every pair."""
    n = len(samples)
    best = None
    for a in samples:
        for b in samples:
            if b < a or np.sum((samples >= a) & (samples <= b)) <= prob * n:
                continue
            if (
                best is None
                or b - a < best[1] - best[0]
                or (b - a == best[1] - best[0] and a < best[0])
            ):
                best = (a, b)
    return np.array(best)


def ar1_chains(rho, num_chains, num_samples, seed):
    """Stationary AR(1) chains x_t = rho x_{t-1} + sqrt(1 - rho^2) eps_t."""
    rng = np.random.default_rng(seed)
    eps = rng.normal(size=(num_samples, num_chains))
    x = np.empty((num_samples, num_chains))
    x[0] = eps[0]
    scale = np.sqrt(1.0 - rho**2)
    for t in range(1, num_samples):
        x[t] = rho * x[t - 1] + scale * eps[t]
    return x.T


# ---------------------------------------------------------------- autocovariance


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n", [1, 2, 7, 64, 101])
def test_autocovariance_matches_direct(n, bias):
    series = np.random.default_rng(n).normal(size=n)
    np.testing.assert_allclose(
        autocovariance(series, bias=bias),
        direct_autocovariance(series, bias),
        atol=1e-12,
    )


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("bias", [True, False])
def test_autocovariance_and_autocorrelation_along_axis(axis, bias):
    x = np.random.default_rng(0).normal(size=(5, 6, 7))
    cov = autocovariance(x, axis=axis, bias=bias)
    corr = autocorrelation(x, axis=axis, bias=bias)
    assert cov.shape == corr.shape == x.shape
    moved_x = np.moveaxis(x, axis, -1)
    moved_cov = np.moveaxis(cov, axis, -1)
    moved_corr = np.moveaxis(corr, axis, -1)
    for index in np.ndindex(moved_x.shape[:-1]):
        expected = direct_autocovariance(moved_x[index], bias)
        np.testing.assert_allclose(moved_cov[index], expected, atol=1e-12)
        np.testing.assert_allclose(
            moved_corr[index], expected / expected[0], atol=1e-12
        )


def test_autocorrelation_of_jax_and_integer_input():
    x = jnp.arange(10.0) ** 2
    expected = direct_autocovariance(np.arange(10.0) ** 2)
    result = autocorrelation(x)
    assert isinstance(result, np.ndarray)
    np.testing.assert_allclose(result, expected / expected[0], atol=1e-6)
    np.testing.assert_allclose(
        autocovariance(np.arange(10) ** 2), expected, rtol=1e-12, atol=1e-9
    )


def test_autocovariance_errors():
    with pytest.raises(ValueError, match="at least 1 dim"):
        autocovariance(np.float64(1.0))
    with pytest.raises(ValueError, match="axis=2"):
        autocovariance(np.zeros((3, 4)), axis=2)
    with pytest.raises(ValueError, match="no samples"):
        autocorrelation(np.zeros((0, 3)))
    with pytest.raises(TypeError, match="axis must be an int"):
        autocovariance(np.zeros(3), axis=0.5)
    with pytest.raises(TypeError, match="x must be a real numeric array"):
        autocovariance(np.array(["a", "b"]))
    with pytest.raises(TypeError, match=r"samples\['s'\] must be a real numeric"):
        summary({"s": np.ones((2, 10), complex)})


# ---------------------------------------------------------------- ESS


@pytest.mark.parametrize("rho", [-0.3, 0.5, 0.9])
def test_effective_sample_size_of_ar1_chains(rho):
    num_chains, num_samples = 4, 20000
    x = ar1_chains(rho, num_chains, num_samples, seed=int(10 * (rho + 1)))
    expected = num_chains * num_samples * (1 - rho) / (1 + rho)
    assert effective_sample_size(x) == pytest.approx(expected, rel=0.1)


def test_effective_sample_size_of_iid_draws():
    x = np.random.default_rng(0).normal(size=(4, 5000, 3))
    ess = effective_sample_size(x)
    assert ess.shape == (3,)
    np.testing.assert_allclose(ess, 20000, rtol=0.1)
    # a single chain, and a jax array
    single = effective_sample_size(jnp.asarray(x[:1]))
    np.testing.assert_allclose(single, 5000, rtol=0.1)


def test_effective_sample_size_errors():
    with pytest.raises(ValueError, match=r"at least 2 dims \(num_chains"):
        effective_sample_size(np.zeros(100))
    with pytest.raises(ValueError, match="at least 2 samples per chain"):
        effective_sample_size(np.zeros((4, 1)))


# ---------------------------------------------------------------- R-hat


def test_split_gelman_rubin_matches_direct_formula():
    rng = np.random.default_rng(2)
    for shape in [(1, 10), (3, 9), (4, 200)]:
        x = rng.normal(size=shape) + rng.normal(size=(shape[0], 1))
        assert split_gelman_rubin(x) == pytest.approx(direct_split_rhat(x), 1e-12)
    x = rng.normal(size=(3, 40, 2, 2))
    result = split_gelman_rubin(x)
    assert result.shape == (2, 2)
    for i, j in np.ndindex(2, 2):
        assert result[i, j] == pytest.approx(direct_split_rhat(x[:, :, i, j]), 1e-12)


def test_gelman_rubin_matches_direct_formula():
    rng = np.random.default_rng(3)
    for shape in [(2, 2), (3, 9), (4, 200)]:
        x = rng.normal(size=shape) + rng.normal(size=(shape[0], 1))
        assert gelman_rubin(x) == pytest.approx(direct_rhat(x), 1e-12)
    x = rng.normal(size=(4, 30, 3))
    np.testing.assert_allclose(
        gelman_rubin(jnp.asarray(x)),
        [direct_rhat(x[:, :, k]) for k in range(3)],
        rtol=1e-5,
    )


def test_rhat_near_one_for_iid_chains_and_large_for_shifted_ones():
    x = np.random.default_rng(4).normal(size=(4, 2000))
    assert gelman_rubin(x) == pytest.approx(1.0, abs=0.01)
    assert split_gelman_rubin(x) == pytest.approx(1.0, abs=0.01)
    shifted = x + np.array([0.0, 0.0, 1.0, 2.0])[:, None]
    assert gelman_rubin(shifted) > 1.1
    assert split_gelman_rubin(shifted) > 1.1
    # a drifting single chain only shows up once split
    drifting = np.linspace(0.0, 5.0, 2000)[None] + x[:1]
    assert split_gelman_rubin(drifting) > 1.1


def test_rhat_errors():
    with pytest.raises(ValueError, match="at least 2 dims"):
        gelman_rubin(np.zeros(10))
    with pytest.raises(ValueError, match="at least 2 chains"):
        gelman_rubin(np.zeros((1, 10)))
    with pytest.raises(ValueError, match="at least 2 samples per chain"):
        gelman_rubin(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="at least 2 dims"):
        split_gelman_rubin(np.zeros(10))
    with pytest.raises(ValueError, match="at least 4 samples per chain"):
        split_gelman_rubin(np.zeros((2, 3)))


# ---------------------------------------------------------------- HPDI


@pytest.mark.parametrize("prob", [0.1, 0.5, 0.9, 0.95])
@pytest.mark.parametrize("n", [1, 5, 20, 57])
def test_hpdi_matches_brute_force(n, prob):
    # a skewed sample, so that the hpdi differs from the central interval
    samples = np.random.default_rng(n).exponential(size=n)
    np.testing.assert_array_equal(hpdi(samples, prob), brute_force_hpdi(samples, prob))


def test_hpdi_along_axis():
    x = np.random.default_rng(5).gamma(2.0, size=(3, 40, 2))
    result = hpdi(jnp.asarray(x), 0.8, axis=1)
    assert isinstance(result, np.ndarray)
    assert result.shape == (3, 2, 2)
    for i, k in np.ndindex(3, 2):
        expected = brute_force_hpdi(np.asarray(jnp.asarray(x))[i, :, k], 0.8)
        np.testing.assert_array_equal(result[i, :, k], expected)
    assert hpdi(x, 0.8, axis=-1).shape == (3, 40, 2)


def test_hpdi_of_a_large_normal_sample():
    x = np.random.default_rng(6).normal(size=200_000)
    np.testing.assert_allclose(hpdi(x, 0.9), [-1.645, 1.645], atol=0.03)
    np.testing.assert_allclose(hpdi(x, 0.5), [-0.674, 0.674], atol=0.03)


@pytest.mark.parametrize("prob", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_hpdi_rejects_prob_outside_unit_interval(prob):
    with pytest.raises(ValueError, match=r"prob must be in \(0, 1\)"):
        hpdi(np.arange(10.0), prob)
    with pytest.raises(ValueError, match=r"prob must be in \(0, 1\)"):
        summary({"a": np.zeros((2, 10))}, prob=prob)


def test_hpdi_errors():
    with pytest.raises(TypeError, match="prob must be a float"):
        hpdi(np.arange(10.0), "0.9")
    with pytest.raises(ValueError, match="axis=1"):
        hpdi(np.arange(10.0), axis=1)
    with pytest.raises(ValueError, match="no samples"):
        hpdi(np.zeros(0))


# ---------------------------------------------------------------- summary


def test_summary_keys_and_values():
    rng = np.random.default_rng(7)
    samples = {"mu": rng.normal(size=(3, 400)), "w": rng.gamma(2.0, size=(3, 400, 2))}
    stats = summary(samples)
    assert list(stats) == ["mu", "w"]
    keys = ["mean", "std", "median", "5.0%", "95.0%", "n_eff", "r_hat"]
    for name, value in samples.items():
        assert list(stats[name]) == keys
        flat = value.reshape((-1,) + value.shape[2:])
        np.testing.assert_allclose(stats[name]["mean"], flat.mean(0))
        np.testing.assert_allclose(stats[name]["std"], flat.std(0, ddof=1))
        np.testing.assert_allclose(stats[name]["median"], np.median(flat, 0))
        interval = hpdi(flat, 0.9)
        np.testing.assert_allclose(stats[name]["5.0%"], interval[0])
        np.testing.assert_allclose(stats[name]["95.0%"], interval[1])
        np.testing.assert_allclose(stats[name]["n_eff"], effective_sample_size(value))
        np.testing.assert_allclose(stats[name]["r_hat"], split_gelman_rubin(value))
    assert stats["w"]["mean"].shape == (2,)
    assert list(summary(samples, prob=0.5)["mu"])[3:5] == ["25.0%", "75.0%"]


def test_summary_without_chains_and_of_other_inputs():
    rng = np.random.default_rng(8)
    draws = rng.normal(size=(500, 2))
    stats = summary({"z": jnp.asarray(draws)}, group_by_chain=False)["z"]
    np.testing.assert_allclose(stats["mean"], draws.mean(0), rtol=1e-5)
    np.testing.assert_allclose(
        stats["n_eff"], effective_sample_size(draws[None]), rtol=1e-5
    )
    np.testing.assert_allclose(
        stats["r_hat"], split_gelman_rubin(draws[None]), rtol=1e-5
    )
    # an array, or a tuple of arrays, get the names Param:i
    assert list(summary(draws, group_by_chain=False)) == ["Param:0"]
    assert list(summary((draws[None], draws[None]))) == ["Param:0", "Param:1"]
    # integer samples are summarised as floats
    counts = summary({"k": rng.poisson(3.0, size=(2, 50))})["k"]
    assert counts["mean"].dtype == np.float64


def test_summary_errors():
    with pytest.raises(ValueError, match=r"samples\['a'\] has shape \(10,\)"):
        summary({"a": np.zeros(10)})
    with pytest.raises(ValueError, match=r"samples\['a'\] has 3 samples per chain"):
        summary({"a": np.zeros((2, 3))})
    with pytest.raises(TypeError, match="dict of arrays"):
        summary(None)


def test_print_summary(capsys):
    rng = np.random.default_rng(9)
    samples = {"mu": rng.normal(size=(2, 300)), "theta": rng.normal(size=(2, 300, 2))}
    print_summary(samples, num_divergences=3)
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines[1].split()
    assert header == ["mean", "std", "median", "5.0%", "95.0%", "n_eff", "r_hat"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
    assert set(rows) == {"mu", "theta[0]", "theta[1]", "Number"}
    stats = summary(samples)
    assert float(rows["mu"][0]) == pytest.approx(stats["mu"]["mean"], abs=0.006)
    assert float(rows["theta[1]"][5]) == pytest.approx(
        stats["theta"]["n_eff"][1], abs=0.006
    )
    assert lines[-1] == "Number of divergences: 3"

    print_summary({"x": rng.normal(size=400)}, prob=0.5, group_by_chain=False)
    out = capsys.readouterr().out
    assert "25.0%" in out and "75.0%" in out and "x" in out
    assert "divergences" not in out


# ---------------------------------------------------------------- ArviZ


def test_to_arviz_without_arviz_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)  # makes `import arviz` fail
    with pytest.raises(ImportError, match=r"pip install arviz.*probnn\[arviz\]"):
        to_arviz({"mu": np.zeros((2, 10))})


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_to_arviz_export():
    pytest.importorskip("arviz")
    rng = np.random.default_rng(10)
    samples = {
        "mu": jnp.asarray(rng.normal(size=(2, 50))),
        "w": rng.normal(size=(2, 50, 3)),
    }
    loglik = {"y": rng.normal(size=(2, 50, 7))}
    stats = {"diverging": np.zeros((2, 50), bool), "energy": rng.normal(size=(2, 50))}
    idata = to_arviz(
        samples,
        log_likelihood=loglik,
        sample_stats=stats,
        coords={"feature": ["a", "b", "c"]},
        dims={"w": ["feature"]},
    )
    assert idata.posterior["mu"].dims == ("chain", "draw")
    assert idata.posterior["w"].dims == ("chain", "draw", "feature")
    assert list(idata.posterior["w"].coords["feature"].values) == ["a", "b", "c"]
    np.testing.assert_allclose(idata.posterior["w"].values, samples["w"])
    np.testing.assert_allclose(idata.posterior["mu"].values, samples["mu"])
    assert idata.log_likelihood["y"].shape == (2, 50, 7)
    np.testing.assert_allclose(idata.log_likelihood["y"].values, loglik["y"])
    assert idata.sample_stats["diverging"].shape == (2, 50)
    assert idata.sample_stats["energy"].shape == (2, 50)

    single = to_arviz({"mu": rng.normal(size=(80, 2))}, group_by_chain=False)
    assert single.posterior["mu"].shape == (1, 80, 2)
    assert not hasattr(single, "log_likelihood")


def test_to_arviz_errors():
    pytest.importorskip("arviz")
    samples = {"mu": np.zeros((2, 10))}
    with pytest.raises(ValueError, match=r"log_likelihood\['y'\] has \(chain, draw\)"):
        to_arviz(samples, log_likelihood={"y": np.zeros((3, 10, 4))})
    with pytest.raises(ValueError, match=r"samples\['mu'\] has shape \(10,\)"):
        to_arviz({"mu": np.zeros(10)})
    with pytest.raises(TypeError, match="samples must be a dict"):
        to_arviz(np.zeros((2, 10)))
    with pytest.raises(TypeError, match="sample_stats must be a dict"):
        to_arviz(samples, sample_stats=[1, 2])
