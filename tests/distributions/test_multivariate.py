"""Tests of the multivariate families against scipy.stats, closed forms and
Monte Carlo estimates."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

import probnn.distributions as dist
from probnn.distributions import constraints

N_DRAWS = 20000
F32_EPS = float(np.finfo(np.float32).eps)


def random_tril(rng, n, batch=()):
    """A well-conditioned lower Cholesky factor (float32)."""
    strict = np.tril(rng.normal(size=batch + (n, n)), -1) * 0.5
    diagonal = rng.uniform(0.5, 1.5, size=batch + (n,))
    return (strict + diagonal[..., None] * np.eye(n)).astype(np.float32)


def assert_mc_close(per_draw, expected, n_se=5.0):
    """Monte-Carlo mean of ``per_draw`` (draws along axis 0) within ``n_se``
    estimated standard errors of ``expected``."""
    per_draw = np.asarray(per_draw, dtype=np.float64)
    estimate = per_draw.mean(0)
    se = per_draw.std(0) / math.sqrt(per_draw.shape[0])
    expected = np.broadcast_to(np.asarray(expected, np.float64), estimate.shape)
    bad = np.abs(estimate - expected) > n_se * se + 1e-6
    assert not bad.any(), (estimate[bad], expected[bad], se[bad])


def assert_mc_mean_and_cov(samples, mean, cov):
    samples = np.asarray(samples, np.float64)
    mean = np.asarray(mean, np.float64)
    assert_mc_close(samples, mean)
    # centred at the true mean, x x^T is an unbiased draw of the covariance
    centred = samples - mean
    assert_mc_close(centred[..., :, None] * centred[..., None, :], cov)


# -- Dirichlet -----------------------------------------------------------------

DIRICHLET_CONCENTRATIONS = [
    [1.0, 1.0, 1.0],
    [0.5, 2.0, 5.0],
    [1e-2, 1e3, 1.0],
    [1e3, 1e3],
    [1e-2, 1e-2],
    [1e-2, 1e3],
]


@pytest.mark.parametrize("alpha", DIRICHLET_CONCENTRATIONS)
def test_dirichlet_log_prob_matches_scipy(alpha):
    alpha = np.asarray(alpha)
    rng = np.random.default_rng(0)
    # float32 cannot hold the 1e-200 draws of tiny concentrations
    values = np.clip(rng.dirichlet(alpha, 6), 1e-30, None).astype(np.float32)
    values64 = values.astype(np.float64)
    values64 /= values64.sum(-1, keepdims=True)
    expected = np.array([stats.dirichlet.logpdf(v, alpha) for v in values64])
    actual = np.asarray(
        dist.Dirichlet(jnp.asarray(alpha, jnp.float32)).log_prob(values)
    )
    assert np.all(np.isfinite(actual))
    # float32 gammaln of large concentrations: terms of ~1e4 cancel, so allow
    # about one float32 ulp of the largest terms
    terms = (
        np.abs(special.gammaln(alpha)).sum()
        + abs(special.gammaln(alpha.sum()))
        + np.abs((alpha - 1) * np.log(values64)).sum(-1)
    )
    np.testing.assert_array_less(np.abs(actual - expected), F32_EPS * terms + 1e-5)


def test_dirichlet_log_prob_at_simplex_boundary():
    # concentration 1 puts finite density on the boundary (0 * log 0 = 0)
    d = dist.Dirichlet(jnp.array([1.0, 2.0, 3.0]))
    actual = d.log_prob(jnp.array([0.0, 0.5, 0.5]))
    expected = stats.dirichlet.logpdf(np.array([1e-300, 0.5, 0.5]), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(float(actual), expected, rtol=1e-5)


def test_dirichlet_extreme_concentrations_sample_in_support_with_finite_log_prob():
    d = dist.Dirichlet(jnp.array([1e-2, 1e3, 1.0]))
    samples = d.sample(jax.random.key(1), (N_DRAWS,))
    assert bool(jnp.all(constraints.simplex(samples)))
    assert bool(jnp.all(jnp.isfinite(d.log_prob(samples))))


def test_dirichlet_batched_log_prob():
    alpha = np.array([[0.5, 2.0, 5.0], [3.0, 1.0, 0.7]], dtype=np.float32)
    values = np.random.default_rng(1).dirichlet([1.0, 1.0, 1.0], (4, 1))
    values = values.astype(np.float32)
    actual = dist.Dirichlet(alpha).log_prob(values)
    assert actual.shape == (4, 2)
    v64 = values.astype(np.float64)
    v64 /= v64.sum(-1, keepdims=True)
    expected = np.array(
        [[stats.dirichlet.logpdf(v64[i, 0], a) for a in alpha] for i in range(4)]
    )
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha", DIRICHLET_CONCENTRATIONS)
def test_dirichlet_entropy_matches_scipy(alpha):
    alpha = np.asarray(alpha)
    actual = float(dist.Dirichlet(jnp.asarray(alpha, jnp.float32)).entropy())
    expected = stats.dirichlet.entropy(alpha)
    terms = alpha.sum() * (1 + abs(special.digamma(alpha.sum())))
    assert abs(actual - expected) < 4 * F32_EPS * terms + 1e-5


def test_dirichlet_sample_moments():
    alpha = jnp.array([0.5, 2.0, 5.0])
    d = dist.Dirichlet(alpha)
    samples = d.sample(jax.random.key(0), (N_DRAWS,))
    assert samples.shape == (N_DRAWS, 3)
    assert bool(jnp.all(constraints.simplex(samples)))
    total = 7.5
    mean = np.asarray(alpha) / total
    cov = (np.diag(mean) - np.outer(mean, mean)) / (total + 1)
    assert_mc_mean_and_cov(samples, mean, cov)
    np.testing.assert_allclose(np.asarray(d.mean), mean, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(d.variance), np.diag(cov), rtol=1e-5)


def test_dirichlet_pathwise_gradient_matches_gradient_of_mean():
    alpha = jnp.array([1.0, 2.0, 3.0])
    key = jax.random.key(1)

    def mc_first_mean(a):
        return dist.Dirichlet(a).rsample(key, (N_DRAWS,))[:, 0].mean()

    grad_fn = jax.jit(jax.grad(mc_first_mean))
    grad = grad_fn(alpha)
    exact = jax.grad(lambda a: a[0] / a.sum())(alpha)
    assert bool(jnp.all(jnp.isfinite(grad)))
    # tiny and large concentrations keep finite gradients
    assert bool(jnp.all(jnp.isfinite(grad_fn(jnp.array([1e-2, 1.0, 50.0])))))
    # exact = (5, -1, -1) / 36; Monte-Carlo error of the pathwise estimate
    # with 20000 draws is about 1e-3
    np.testing.assert_allclose(np.asarray(grad), np.asarray(exact), atol=6e-3)


def test_dirichlet_requires_an_event_dim():
    with pytest.raises(ValueError, match="Dirichlet.*concentration"):
        dist.Dirichlet(1.0)


# -- MultivariateNormal --------------------------------------------------------


@jax.jit
def _gaussian_summary(d, values):
    # one compilation per shape keeps the property tests fast
    return d.log_prob(values), d.covariance_matrix, d.precision_matrix, d.entropy()


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_mvn_log_prob_matches_scipy_in_all_parameterisations(n, seed):
    rng = np.random.default_rng(seed)
    tril = random_tril(rng, n)
    cov = tril.astype(np.float64) @ tril.T.astype(np.float64)
    loc = rng.normal(size=n).astype(np.float32)
    values = (loc + rng.normal(size=(5, n)) * 2).astype(np.float32)
    expected = stats.multivariate_normal(loc, cov).logpdf(values).reshape(5)
    forms = [
        dist.MultivariateNormal(loc, scale_tril=tril),
        dist.MultivariateNormal(loc, covariance_matrix=cov.astype(np.float32)),
        dist.MultivariateNormal(loc, precision_matrix=np.linalg.inv(cov).astype("f4")),
    ]
    for d in forms:
        assert d.batch_shape == () and d.event_shape == (n,)
        log_prob, covariance, precision, entropy = _gaussian_summary(d, values)
        np.testing.assert_allclose(np.asarray(log_prob), expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(covariance), cov, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            np.asarray(precision), np.linalg.inv(cov), rtol=1e-3, atol=1e-4
        )
        np.testing.assert_allclose(
            float(entropy), stats.multivariate_normal(loc, cov).entropy(), rtol=1e-5
        )
    # the precision form recovers the Cholesky factor itself
    np.testing.assert_allclose(
        np.asarray(forms[2].scale_tril), tril, rtol=1e-3, atol=1e-4
    )


def test_mvn_default_loc_is_zero():
    tril = random_tril(np.random.default_rng(0), 3)
    d = dist.MultivariateNormal(scale_tril=tril)
    np.testing.assert_array_equal(np.asarray(d.mean), np.zeros(3))
    cov = tril.astype(np.float64) @ tril.T
    np.testing.assert_allclose(np.asarray(d.variance), np.diag(cov), rtol=1e-5)
    expected = stats.multivariate_normal(np.zeros(3), cov).logpdf(np.ones(3))
    np.testing.assert_allclose(float(d.log_prob(jnp.ones(3))), expected, rtol=1e-5)


def _mvn_reference(loc, tril, values):
    """scipy log densities with numpy broadcasting of loc (..., n), tril
    (..., n, n) and values (..., n)."""
    n = tril.shape[-1]
    batch = np.broadcast_shapes(loc.shape[:-1], tril.shape[:-2], values.shape[:-1])
    loc = np.broadcast_to(loc, batch + (n,)).reshape(-1, n)
    tril = np.broadcast_to(tril, batch + (n, n)).reshape(-1, n, n).astype(np.float64)
    values = np.broadcast_to(values, batch + (n,)).reshape(-1, n)
    out = [
        stats.multivariate_normal(m, t @ t.T).logpdf(v)
        for m, t, v in zip(loc, tril, values)
    ]
    return np.asarray(out).reshape(batch)


@pytest.mark.parametrize(
    "loc_shape, tril_batch, batch_shape",
    [
        ((3, 2), (), (3,)),
        ((2,), (4,), (4,)),
        ((3, 1, 2), (4,), (3, 4)),
    ],
)
def test_mvn_batch_broadcasting(loc_shape, tril_batch, batch_shape):
    rng = np.random.default_rng(0)
    loc = rng.normal(size=loc_shape).astype(np.float32)
    tril = random_tril(rng, 2, tril_batch)
    d = dist.MultivariateNormal(loc, scale_tril=tril)
    assert d.batch_shape == batch_shape
    assert d.event_shape == (2,)
    samples = d.sample(jax.random.key(0), (6,))
    assert samples.shape == (6,) + batch_shape + (2,)
    log_prob = d.log_prob(samples)
    assert log_prob.shape == (6,) + batch_shape
    expected = _mvn_reference(loc, tril, np.asarray(samples))
    np.testing.assert_allclose(np.asarray(log_prob), expected, rtol=1e-5, atol=1e-5)
    # a single value broadcasts against the batch
    single = d.log_prob(jnp.zeros(2))
    assert single.shape == batch_shape
    np.testing.assert_allclose(
        np.asarray(single), _mvn_reference(loc, tril, np.zeros(2)), rtol=1e-5
    )
    shapes = jax.eval_shape(
        lambda d: (
            d.mean,
            d.variance,
            d.covariance_matrix,
            d.precision_matrix,
            d.entropy(),
        ),
        d,
    )
    assert [x.shape for x in shapes] == [
        batch_shape + (2,),
        batch_shape + (2,),
        batch_shape + (2, 2),
        batch_shape + (2, 2),
        batch_shape,
    ]


def test_mvn_sample_moments():
    rng = np.random.default_rng(3)
    tril = random_tril(rng, 3)
    loc = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    d = dist.MultivariateNormal(loc, scale_tril=tril)
    samples = d.sample(jax.random.key(0), (N_DRAWS,))
    assert samples.shape == (N_DRAWS, 3)
    assert_mc_mean_and_cov(samples, loc, tril.astype(np.float64) @ tril.T)


def _fd_gradient(f, x, eps=1e-6):
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        grad[index] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


def test_mvn_log_prob_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    tril = random_tril(rng, 3)
    loc = rng.normal(size=3).astype(np.float32)
    value = rng.normal(size=3).astype(np.float32)

    def log_prob(loc, tril):
        return dist.MultivariateNormal(loc, scale_tril=tril).log_prob(value)

    grad_loc, grad_tril = jax.grad(log_prob, argnums=(0, 1))(loc, tril)

    # float64 references: scipy's density with covariance tril @ tril.T, whose
    # value depends on the lower triangle only
    def reference(loc, tril):
        t = np.tril(tril)
        return stats.multivariate_normal(loc, t @ t.T).logpdf(value)

    expected_loc = _fd_gradient(lambda m: reference(m, tril.astype("f8")), loc)
    expected_tril = _fd_gradient(lambda t: reference(loc.astype("f8"), t), tril)
    assert np.all(np.isfinite(grad_loc)) and np.all(np.isfinite(grad_tril))
    np.testing.assert_allclose(np.asarray(grad_loc), expected_loc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(grad_tril), expected_tril, rtol=1e-4, atol=1e-5
    )
    # and the closed form d/dloc = inv(cov) (value - loc)
    cov = tril.astype("f8") @ tril.T.astype("f8")
    np.testing.assert_allclose(
        np.asarray(grad_loc), np.linalg.solve(cov, value - loc), rtol=1e-4
    )


def test_mvn_reparameterized_sample_gradients():
    rng = np.random.default_rng(5)
    tril = jnp.asarray(random_tril(rng, 3))
    loc = jnp.asarray(rng.normal(size=3).astype(np.float32))
    key = jax.random.key(2)

    def second_moment(loc, tril):
        x = dist.MultivariateNormal(loc, scale_tril=tril).rsample(key, (N_DRAWS,))
        return jnp.mean(jnp.sum(x * x, axis=-1))

    grad_loc, grad_tril = jax.grad(second_moment, argnums=(0, 1))(loc, tril)
    assert bool(jnp.all(jnp.isfinite(grad_loc)) & jnp.all(jnp.isfinite(grad_tril)))
    # E|x|^2 = |loc|^2 + trace(tril tril^T): gradients 2 loc and 2 tril; the
    # Monte-Carlo relative error with 20000 draws is about 1-2%
    np.testing.assert_allclose(np.asarray(grad_loc), 2 * np.asarray(loc), atol=0.06)
    np.testing.assert_allclose(np.asarray(grad_tril), 2 * np.asarray(tril), atol=0.1)


def test_mvn_jit_and_vmap():
    rng = np.random.default_rng(6)
    tril = jnp.asarray(random_tril(rng, 2))
    locs = jnp.asarray(rng.normal(size=(5, 2)).astype(np.float32))
    values = jnp.asarray(rng.normal(size=(5, 2)).astype(np.float32))

    def log_prob(loc, value):
        return dist.MultivariateNormal(loc, scale_tril=tril).log_prob(value)

    eager = dist.MultivariateNormal(locs, scale_tril=tril).log_prob(values)
    np.testing.assert_allclose(
        np.asarray(jax.jit(jax.vmap(log_prob))(locs, values)),
        np.asarray(eager),
        rtol=1e-5,
    )

    @jax.jit
    def draw(loc, key):
        return dist.MultivariateNormal(loc, scale_tril=tril).sample(key, (3,))

    key = jax.random.key(0)
    np.testing.assert_allclose(
        np.asarray(draw(locs, key)),
        np.asarray(dist.MultivariateNormal(locs, scale_tril=tril).sample(key, (3,))),
        rtol=1e-5,
        atol=1e-6,
    )
    # a distribution passes through jit as a pytree
    d = jax.jit(lambda d: d)(dist.MultivariateNormal(locs, scale_tril=tril))
    assert d.batch_shape == (5,)
    np.testing.assert_allclose(np.asarray(d.log_prob(values)), np.asarray(eager))


def test_mvn_stacked_by_scan():
    tril = jnp.asarray(random_tril(np.random.default_rng(7), 2))
    scale = jnp.arange(1.0, 5.0)

    def step(carry, c):
        return carry, dist.MultivariateNormal(c * jnp.ones(2), scale_tril=tril)

    _, stacked = jax.lax.scan(step, None, scale)
    assert isinstance(stacked, dist.MultivariateNormal)
    assert stacked.batch_shape == (4,)
    assert stacked.event_shape == (2,)
    values = jnp.asarray(np.random.default_rng(8).normal(size=(4, 2)), jnp.float32)
    per_step = [
        dist.MultivariateNormal(c * jnp.ones(2), scale_tril=tril).log_prob(v)
        for c, v in zip(scale, values)
    ]
    np.testing.assert_allclose(
        np.asarray(stacked.log_prob(values)), np.asarray(per_step), rtol=1e-6
    )
    # and vmap over the stacked distribution gives back the steps
    mapped = jax.vmap(lambda d, v: d.log_prob(v))(stacked, values)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(per_step), rtol=1e-6)


def test_mvn_requires_exactly_one_matrix():
    eye = jnp.eye(2)
    with pytest.raises(ValueError, match="covariance_matrix and scale_tril"):
        dist.MultivariateNormal(jnp.zeros(2), covariance_matrix=eye, scale_tril=eye)
    with pytest.raises(ValueError, match="covariance_matrix and precision_matrix"):
        dist.MultivariateNormal(covariance_matrix=eye, precision_matrix=eye)
    with pytest.raises(ValueError, match="exactly one of"):
        dist.MultivariateNormal(jnp.zeros(2))


def test_mvn_rejects_mismatched_loc():
    with pytest.raises(ValueError, match="MultivariateNormal.*loc"):
        dist.MultivariateNormal(jnp.zeros(3), scale_tril=jnp.eye(2))


# -- LowRankMultivariateNormal -------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 5), rank=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_lowrank_mvn_matches_dense_scipy(n, rank, seed):
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=n).astype(np.float32)
    factor = rng.normal(size=(n, rank)).astype(np.float32)
    diag = rng.uniform(0.3, 2.0, size=n).astype(np.float32)
    cov = factor.astype("f8") @ factor.T.astype("f8") + np.diag(diag)
    reference = stats.multivariate_normal(loc, cov)
    values = (loc + rng.normal(size=(5, n)) * 2).astype(np.float32)
    d = dist.LowRankMultivariateNormal(loc, factor, diag)
    assert d.batch_shape == () and d.event_shape == (n,)
    log_prob, covariance, precision, entropy = _gaussian_summary(d, values)
    variance, tril = jax.jit(lambda d: (d.variance, d.scale_tril))(d)
    np.testing.assert_allclose(
        np.asarray(log_prob), reference.logpdf(values).reshape(5), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(float(entropy), reference.entropy(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(variance), np.diag(cov), rtol=1e-5)
    # entries near zero come from cancelling products of the factor's
    # entries: their error is relative to the largest entry
    np.testing.assert_allclose(
        np.asarray(covariance), cov, rtol=1e-5, atol=1e-6 * np.abs(cov).max()
    )
    np.testing.assert_allclose(
        np.asarray(precision), np.linalg.inv(cov), rtol=1e-3, atol=1e-4
    )
    tril = np.asarray(tril, np.float64)
    np.testing.assert_allclose(tril @ tril.T, cov, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(tril, np.tril(tril))


def _intermediate_shapes(jaxpr):
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield tuple(getattr(var.aval, "shape", ()))
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                yield from _intermediate_shapes(inner)


def test_lowrank_mvn_never_forms_a_dense_matrix():
    n, rank = 64, 2
    rng = np.random.default_rng(0)
    d = dist.LowRankMultivariateNormal(
        jnp.zeros(n), jnp.asarray(rng.normal(size=(n, rank)), jnp.float32), jnp.ones(n)
    )
    for fn, arg in [
        (lambda x: d.log_prob(x), jnp.zeros((3, n))),
        (lambda key: d.sample(key, (3,)), jax.random.key(0)),
        (lambda key: d.entropy(), jax.random.key(0)),
    ]:
        shapes = list(_intermediate_shapes(jax.make_jaxpr(fn)(arg).jaxpr))
        assert shapes
        assert not [s for s in shapes if s[-2:] == (n, n)], shapes


def test_lowrank_mvn_sample_moments_and_batches():
    rng = np.random.default_rng(9)
    loc = rng.normal(size=(2, 3)).astype(np.float32)
    factor = rng.normal(size=(3, 2)).astype(np.float32)
    diag = np.array([0.5, 1.0, 2.0], dtype=np.float32)
    d = dist.LowRankMultivariateNormal(loc, factor, diag)
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    samples = d.sample(jax.random.key(0), (N_DRAWS,))
    assert samples.shape == (N_DRAWS, 2, 3)
    cov = factor.astype("f8") @ factor.T + np.diag(diag)
    for b in range(2):
        assert_mc_mean_and_cov(samples[:, b], loc[b], cov)
    log_prob = d.log_prob(samples[:4])
    assert log_prob.shape == (4, 2)
    expected = [
        [stats.multivariate_normal(loc[b], cov).logpdf(samples[i, b]) for b in range(2)]
        for i in range(4)
    ]
    np.testing.assert_allclose(np.asarray(log_prob), expected, rtol=1e-5, atol=1e-5)


def test_lowrank_mvn_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="cov_factor"):
        dist.LowRankMultivariateNormal(jnp.zeros(3), jnp.ones((2, 1)), jnp.ones(3))
    with pytest.raises(ValueError, match="cov_diag"):
        dist.LowRankMultivariateNormal(jnp.zeros(3), jnp.ones((3, 1)), jnp.ones(2))


# -- MultivariateStudentT ------------------------------------------------------


@pytest.mark.parametrize("df", [0.5, 1.0, 3.5, 30.0])
def test_mvt_log_prob_and_entropy_match_scipy(df):
    rng = np.random.default_rng(10)
    tril = random_tril(rng, 3)
    loc = rng.normal(size=3).astype(np.float32)
    values = (loc + rng.normal(size=(6, 3)) * 3).astype(np.float32)
    reference = stats.multivariate_t(loc, tril.astype("f8") @ tril.T, df=df)
    d = dist.MultivariateStudentT(df, loc, tril)
    np.testing.assert_allclose(
        np.asarray(d.log_prob(values)), reference.logpdf(values), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(float(d.entropy()), reference.entropy(), rtol=1e-5)


def test_mvt_batched_df():
    rng = np.random.default_rng(11)
    tril = random_tril(rng, 2)
    df = np.array([2.5, 7.0, 50.0], dtype=np.float32)
    d = dist.MultivariateStudentT(df, 0.0, tril)
    assert d.batch_shape == (3,) and d.event_shape == (2,)
    value = np.array([0.3, -1.2], dtype=np.float32)
    expected = [
        stats.multivariate_t(np.zeros(2), tril.astype("f8") @ tril.T, df=k).logpdf(
            value
        )
        for k in df
    ]
    np.testing.assert_allclose(np.asarray(d.log_prob(value)), expected, rtol=1e-5)


def test_mvt_sample_moments():
    rng = np.random.default_rng(12)
    tril = random_tril(rng, 2)
    loc = np.array([1.0, -1.0], dtype=np.float32)
    df = 7.0
    d = dist.MultivariateStudentT(df, loc, tril)
    samples = d.sample(jax.random.key(0), (N_DRAWS,))
    cov = df / (df - 2) * (tril.astype("f8") @ tril.T)
    assert_mc_mean_and_cov(samples, loc, cov)
    np.testing.assert_allclose(np.asarray(d.variance), np.diag(cov), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(d.mean), loc)


def test_mvt_moments_for_small_df():
    d = dist.MultivariateStudentT(jnp.array([0.8, 1.5, 3.0]), 0.0, jnp.eye(2))
    mean, variance = np.asarray(d.mean), np.asarray(d.variance)
    assert np.all(np.isinf(mean[0])) and np.all(mean[1:] == 0)
    assert np.all(np.isnan(variance[0])) and np.all(np.isinf(variance[1]))
    np.testing.assert_allclose(variance[2], [3.0, 3.0], rtol=1e-6)


def test_mvt_requires_scale_tril():
    with pytest.raises(ValueError, match="MultivariateStudentT.*scale_tril"):
        dist.MultivariateStudentT(3.0, jnp.zeros(2))


# -- GaussianRandomWalk --------------------------------------------------------


def test_gaussian_random_walk_log_prob_matches_sum_of_increments():
    scale = np.array([0.5, 2.0], dtype=np.float32)
    values = np.random.default_rng(13).normal(size=(3, 2, 5)).astype(np.float32)
    d = dist.GaussianRandomWalk(scale, num_steps=5)
    assert d.batch_shape == (2,) and d.event_shape == (5,)
    increments = np.diff(values.astype("f8"), axis=-1, prepend=0.0)
    expected = stats.norm.logpdf(increments, 0.0, scale[:, None]).sum(-1)
    np.testing.assert_allclose(
        np.asarray(d.log_prob(values)), expected, rtol=1e-5, atol=1e-5
    )


def test_gaussian_random_walk_sample_moments():
    d = dist.GaussianRandomWalk(1.5, num_steps=4)
    samples = d.sample(jax.random.key(0), (N_DRAWS,))
    assert samples.shape == (N_DRAWS, 4)
    steps = np.arange(4)
    cov = 1.5**2 * (np.minimum.outer(steps, steps) + 1)
    assert_mc_mean_and_cov(samples, np.zeros(4), cov)
    np.testing.assert_allclose(np.asarray(d.variance), np.diag(cov), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(d.mean), np.zeros(4))


def test_gaussian_random_walk_reparameterized_gradient():
    key = jax.random.key(4)

    def mean_square_last(scale):
        x = dist.GaussianRandomWalk(scale, num_steps=3).rsample(key, (N_DRAWS,))
        return jnp.mean(jnp.square(x[:, -1]))

    # E[x_last^2] = 3 scale^2: derivative 6 scale; MC relative error ~1%
    grad = jax.grad(mean_square_last)(2.0)
    np.testing.assert_allclose(float(grad), 12.0, rtol=0.05)


@pytest.mark.parametrize("num_steps", [0, -1, 2.0, True])
def test_gaussian_random_walk_rejects_bad_num_steps(num_steps):
    with pytest.raises(ValueError, match="GaussianRandomWalk.*num_steps"):
        dist.GaussianRandomWalk(1.0, num_steps=num_steps)


# -- LKJCholesky ---------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.5, 1.0, 2.5, 10.0])
def test_lkj_cholesky_2d_density_matches_closed_form(eta):
    # For d = 2, L = [[1, 0], [r, sqrt(1 - r^2)]]: the free entry L_21 is the
    # correlation r itself (Jacobian 1), and r has density proportional to
    # (1 - r^2)^(eta - 1): (r + 1) / 2 ~ Beta(eta, eta).
    r = np.array([-0.99, -0.5, 0.0, 0.3, 0.9, 0.999])
    tril = np.zeros((len(r), 2, 2))
    tril[:, 0, 0] = 1.0
    tril[:, 1, 0] = r
    tril[:, 1, 1] = np.sqrt(1 - r**2)
    actual = dist.LKJCholesky(2, eta).log_prob(jnp.asarray(tril, jnp.float32))
    expected = stats.beta.logpdf((r + 1) / 2, eta, eta) - math.log(2)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "dimension, volume", [(2, 2.0), (3, math.pi**2 / 2), (4, 32 * math.pi**2 / 27)]
)
def test_lkj_cholesky_uniform_density_is_inverse_volume(dimension, volume):
    # With concentration 1, C is uniform over correlation matrices, whose
    # volumes are 2, pi^2 / 2, 32 pi^2 / 27; at the identity the Jacobian is 1.
    actual = dist.LKJCholesky(dimension, 1.0).log_prob(jnp.eye(dimension))
    np.testing.assert_allclose(float(actual), -math.log(volume), rtol=1e-5)


def _unit_ball_rows(rng, dimension, size):
    """Cholesky factors whose row i has its i free entries uniform in the unit
    ball, with the log density of that proposal."""
    tril = np.zeros((size, dimension, dimension))
    tril[:, 0, 0] = 1.0
    log_q = 0.0
    for i in range(1, dimension):
        direction = rng.normal(size=(size, i))
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
        radius = rng.uniform(size=(size, 1)) ** (1 / i)
        tril[:, i, :i] = radius * direction
        tril[:, i, i] = np.sqrt(1 - radius[:, 0] ** 2)
        log_q -= 0.5 * i * math.log(math.pi) - special.gammaln(0.5 * i + 1)
    return tril, log_q


@pytest.mark.parametrize("dimension, eta", [(3, 1.5), (3, 4.0), (4, 1.0), (4, 2.0)])
def test_lkj_cholesky_density_integrates_to_one(dimension, eta):
    # importance sampling: E_q[p / q] = 1 exactly when p is normalised; p / q
    # is bounded for eta >= 1, so the estimate's standard error is reliable
    rng = np.random.default_rng(14)
    tril, log_q = _unit_ball_rows(rng, dimension, 50000)
    log_p = dist.LKJCholesky(dimension, eta).log_prob(jnp.asarray(tril, jnp.float32))
    ratio = np.exp(np.asarray(log_p, np.float64) - log_q)
    se = ratio.std() / math.sqrt(len(ratio))
    assert se < 0.03  # precise enough to catch a wrong constant
    assert abs(ratio.mean() - 1) < 5 * se


@functools.partial(jax.jit, static_argnums=(0, 1))
def _lkj_draws(dimension, sample_method, eta):
    # concentration is traced: one compilation per dimension and method
    d = dist.LKJCholesky(dimension, eta, sample_method=sample_method)
    tril = d.sample(jax.random.key(0), (N_DRAWS,))
    return tril, d.log_prob(tril), constraints.corr_cholesky(tril)


@pytest.mark.parametrize("sample_method", ["onion", "cvine"])
@pytest.mark.parametrize("dimension, eta", [(4, 0.3), (4, 3.0)])
def test_lkj_cholesky_samples(sample_method, dimension, eta):
    tril, log_prob, in_support = _lkj_draws(dimension, sample_method, eta)
    assert tril.shape == (N_DRAWS, dimension, dimension)
    assert bool(jnp.all(in_support))
    assert bool(jnp.all(jnp.isfinite(log_prob)))
    corr = np.asarray(tril @ jnp.swapaxes(tril, -1, -2), np.float64)
    np.testing.assert_allclose(np.diagonal(corr, axis1=-2, axis2=-1), 1.0, atol=1e-5)
    # every off-diagonal correlation r has (r + 1) / 2 ~ Beta(b, b) with
    # b = eta - 1 + d / 2, mean 0 and variance 1 / (2 eta + d - 1)
    rows, cols = np.tril_indices(dimension, -1)
    off_diagonal = corr[:, rows, cols]
    assert_mc_close(off_diagonal, 0.0)
    assert_mc_close(off_diagonal**2, 1 / (2 * eta + dimension - 1))
    b = eta - 1 + dimension / 2
    # the last row is built differently from the first, so test both
    for column in {0, len(rows) - 1}:
        ks = stats.kstest(
            off_diagonal[:, column], stats.beta(b, b, loc=-1, scale=2).cdf
        )
        assert ks.pvalue > 1e-3


def test_lkj_cholesky_batched_concentration():
    eta = jnp.array([0.7, 1.0, 5.0])
    d = dist.LKJCholesky(3, eta)
    assert d.batch_shape == (3,) and d.event_shape == (3, 3)
    tril, _ = _unit_ball_rows(np.random.default_rng(16), 3, 4)
    tril = jnp.asarray(tril[:, None], jnp.float32)
    log_prob = d.log_prob(tril)
    assert log_prob.shape == (4, 3)
    for k in range(3):
        single = dist.LKJCholesky(3, float(eta[k])).log_prob(tril[:, 0])
        np.testing.assert_allclose(np.asarray(log_prob[:, k]), np.asarray(single))
    with pytest.raises(NotImplementedError):
        d.rsample(jax.random.key(0))


def test_lkj_cholesky_rejects_bad_arguments():
    with pytest.raises(ValueError, match="LKJCholesky.*dimension"):
        dist.LKJCholesky(1)
    with pytest.raises(ValueError, match="LKJCholesky.*sample_method"):
        dist.LKJCholesky(3, sample_method="vine")


# -- shapes, jit and vmap for every family -----------------------------------------


def _families():
    """(constructor, parameters with a leading batch dim of 2, event shape)."""
    rng = np.random.default_rng(15)
    tril = jnp.asarray(random_tril(rng, 3, (2,)))
    loc = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    return {
        "dirichlet": (
            dist.Dirichlet,
            (jnp.array([[0.5, 1.0, 2.0], [3.0, 1.0, 9.0]]),),
            (3,),
        ),
        "mvn": (
            lambda loc, tril: dist.MultivariateNormal(loc, scale_tril=tril),
            (loc, tril),
            (3,),
        ),
        "lowrank": (
            dist.LowRankMultivariateNormal,
            (loc, jnp.ones((2, 3, 1)), jnp.ones((2, 3))),
            (3,),
        ),
        "mvt": (dist.MultivariateStudentT, (jnp.array([3.0, 5.0]), loc, tril), (3,)),
        "lkj": (lambda eta: dist.LKJCholesky(3, eta), (jnp.array([1.0, 2.0]),), (3, 3)),
        "grw": (
            lambda scale: dist.GaussianRandomWalk(scale, 3),
            (jnp.array([1.0, 2.0]),),
            (3,),
        ),
    }


@pytest.mark.parametrize("family", ["dirichlet", "mvn", "lowrank", "mvt", "lkj", "grw"])
def test_shapes_jit_and_vmap(family):
    make, params, event_shape = _families()[family]

    @jax.jit
    def run(params, key):
        d = make(*params)
        samples = d.sample(key, (4, 5))
        # vmap over the parameters and the batch dim of the values
        mapped = jax.vmap(lambda p, x: make(*p).log_prob(x), in_axes=(0, 2))(
            params, samples
        )
        # a distribution built under vmap gets the mapped dim as its batch dim
        rebuilt = jax.vmap(make)(*params)
        return samples, d.support(samples), mapped, rebuilt, rebuilt.log_prob(samples)

    samples, in_support, mapped, rebuilt, rebuilt_log_prob = run(
        params, jax.random.key(0)
    )
    d = make(*params)
    assert d.batch_shape == (2,) and d.event_shape == event_shape
    assert samples.shape == (4, 5, 2) + event_shape
    assert bool(jnp.all(in_support))
    log_prob = d.log_prob(samples)
    assert log_prob.shape == (4, 5, 2)
    assert bool(jnp.all(jnp.isfinite(log_prob)))
    if family != "lkj":
        assert d.mean.shape == (2,) + event_shape
        assert d.variance.shape == (2,) + event_shape
    np.testing.assert_allclose(
        np.asarray(mapped), np.moveaxis(np.asarray(log_prob), 2, 0), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(rebuilt_log_prob), np.asarray(log_prob), rtol=1e-5
    )
    # the distribution came back from jit as a pytree
    assert type(rebuilt) is type(d)
    assert rebuilt.batch_shape == (2,) and rebuilt.event_shape == event_shape
    for leaf, expected in zip(jax.tree.leaves(rebuilt), jax.tree.leaves(d)):
        np.testing.assert_allclose(
            np.asarray(leaf), np.broadcast_to(expected, leaf.shape), rtol=1e-6
        )


def test_rsample_flags():
    assert dist.Dirichlet.has_rsample
    assert dist.MultivariateNormal.has_rsample
    assert dist.LowRankMultivariateNormal.has_rsample
    assert dist.MultivariateStudentT.has_rsample
    assert dist.GaussianRandomWalk.has_rsample
    assert not dist.LKJCholesky.has_rsample


def test_reparameterized_gradients_are_finite():
    key = jax.random.key(5)

    def total(params):
        factor, diag, scale, df = params
        lowrank = dist.LowRankMultivariateNormal(jnp.zeros(3), factor, diag)
        walk = dist.GaussianRandomWalk(scale, 4).rsample(key, (100,))
        student = dist.MultivariateStudentT(df, jnp.zeros(2), jnp.eye(2))
        return (
            jnp.sum(lowrank.rsample(key, (100,)) ** 2)
            + jnp.sum(walk**2)
            + jnp.mean(jnp.abs(student.rsample(key, (1000,))))
        )

    params = (jnp.ones((3, 2)), jnp.ones(3), 1.0, 4.0)
    grads = jax.grad(total)(params)
    for grad in jax.tree.leaves(grads):
        assert bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.abs(grads[0]).sum()) > 0
    # E|t_df| falls as df grows: the pathwise df gradient is negative
    assert float(grads[3]) < 0


# -- validation ----------------------------------------------------------------


INVALID_PARAMETERS = [
    (
        lambda v: dist.MultivariateNormal(
            jnp.zeros(2),
            scale_tril=jnp.array([[1.0, 0.5], [0.0, 1.0]]),
            validate_args=v,
        ),
        "MultivariateNormal.*scale_tril",
    ),
    (
        lambda v: dist.MultivariateNormal(
            jnp.zeros(2),
            scale_tril=jnp.array([[1.0, 0.0], [0.3, -1.0]]),
            validate_args=v,
        ),
        "MultivariateNormal.*scale_tril",
    ),
    (
        lambda v: dist.MultivariateNormal(
            jnp.zeros(2),
            covariance_matrix=jnp.array([[1.0, 2.0], [2.0, 1.0]]),
            validate_args=v,
        ),
        "MultivariateNormal.*covariance_matrix",
    ),
    (
        lambda v: dist.MultivariateNormal(
            jnp.zeros(2), precision_matrix=-jnp.eye(2), validate_args=v
        ),
        "MultivariateNormal.*precision_matrix",
    ),
    (
        lambda v: dist.MultivariateNormal(
            jnp.array([0.0, jnp.nan]), scale_tril=jnp.eye(2), validate_args=v
        ),
        "MultivariateNormal.*loc",
    ),
    (
        lambda v: dist.Dirichlet(jnp.array([1.0, -0.5]), validate_args=v),
        "Dirichlet.*concentration",
    ),
    (
        lambda v: dist.MultivariateStudentT(
            0.0, jnp.zeros(2), jnp.eye(2), validate_args=v
        ),
        "MultivariateStudentT.*df",
    ),
    (
        lambda v: dist.MultivariateStudentT(
            -1.0, jnp.zeros(2), jnp.eye(2), validate_args=v
        ),
        "MultivariateStudentT.*df",
    ),
    (
        lambda v: dist.MultivariateStudentT(
            3.0, jnp.zeros(2), jnp.ones((2, 2)), validate_args=v
        ),
        "MultivariateStudentT.*scale_tril",
    ),
    (
        lambda v: dist.LowRankMultivariateNormal(
            jnp.zeros(2), jnp.ones((2, 1)), jnp.array([1.0, 0.0]), validate_args=v
        ),
        "LowRankMultivariateNormal.*cov_diag",
    ),
    (
        lambda v: dist.LKJCholesky(3, -1.0, validate_args=v),
        "LKJCholesky.*concentration",
    ),
    (
        lambda v: dist.GaussianRandomWalk(-1.0, 3, validate_args=v),
        "GaussianRandomWalk.*scale",
    ),
]


@pytest.mark.parametrize("make, pattern", INVALID_PARAMETERS)
def test_invalid_parameters_raise_when_validating(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(True)
    # without validation the same construction is silent
    make(False)


def test_enable_validation_applies_to_multivariate_families():
    dist.enable_validation(True)
    try:
        with pytest.raises(ValueError, match="MultivariateNormal.*scale_tril"):
            dist.MultivariateNormal(jnp.zeros(2), scale_tril=jnp.ones((2, 2)))
    finally:
        dist.enable_validation(False)


def test_out_of_support_values_raise_in_log_prob():
    d = dist.Dirichlet(jnp.ones(3), validate_args=True)
    d.log_prob(jnp.array([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="(?s)Dirichlet.*support"):
        d.log_prob(jnp.array([0.2, 0.3, 0.6]))
    with pytest.raises(ValueError, match="(?s)Dirichlet.*support"):
        d.log_prob(jnp.array([-0.2, 0.7, 0.5]))
    lkj = dist.LKJCholesky(2, validate_args=True)
    with pytest.raises(ValueError, match="(?s)LKJCholesky.*support"):
        lkj.log_prob(jnp.array([[1.0, 0.0], [0.5, 0.5]]))
    mvn = dist.MultivariateNormal(
        jnp.zeros(2), scale_tril=jnp.eye(2), validate_args=True
    )
    with pytest.raises(ValueError, match="(?s)MultivariateNormal.*support"):
        mvn.log_prob(jnp.array([0.0, jnp.inf]))


def test_validation_is_skipped_under_jit():
    @jax.jit
    def log_prob(concentration, value):
        return dist.Dirichlet(concentration, validate_args=True).log_prob(value)

    # traced values cannot be checked; the call compiles and runs
    assert np.isfinite(float(log_prob(jnp.ones(3), jnp.array([0.2, 0.3, 0.5]))))
