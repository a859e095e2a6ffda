"""handlers.collapse: conjugate latents integrated out in closed form.

Every marginal is checked against a computation that does not share the
closed form: numerical integration of prior times likelihood (scipy), the
Gaussian marginal as one multivariate normal, and the Polya urn's sequential
predictive probabilities.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

import probnn
import probnn.distributions as dist
from probnn.handlers import collapse, mask, seed, substitute, trace
from probnn.infer.util import log_density


def _collapsed(model, *args):
    tr = trace(seed(model, 0)).get_trace(*args)
    return tr, float(log_density(model, args, {}, {})[0])


positive = st.floats(0.3, 5.0)


@settings(max_examples=15, deadline=None)
@given(
    a=positive,
    b=positive,
    counts=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    family=st.sampled_from(["binomial", "bernoulli", "geometric"]),
)
def test_beta_pooled_over_a_plate_matches_integration(a, b, counts, family):
    if family == "bernoulli":
        counts = [min(k, 1) for k in counts]
    data = jnp.asarray(counts, jnp.float32)

    def likelihood(p):
        return {
            "binomial": lambda p: dist.Binomial(6, probs=p),
            "bernoulli": lambda p: dist.Bernoulli(p),
            "geometric": lambda p: dist.Geometric(probs=p),
        }[family](p)

    def model():
        with collapse():
            p = probnn.sample("p", dist.Beta(a, b))
            with probnn.plate("data", len(counts)):
                probnn.sample("x", likelihood(p), obs=data)

    tr, value = _collapsed(model)
    assert list(tr) == ["data", "p"]  # the plate's record and the factor

    pmf = {
        "binomial": lambda p: stats.binom(6, p).pmf(counts),
        "bernoulli": lambda p: stats.bernoulli(p).pmf(counts),
        "geometric": lambda p: stats.geom(p, loc=-1).pmf(counts),
    }[family]
    reference = integrate.quad(
        lambda p: stats.beta(a, b).pdf(p) * np.prod(pmf(p)), 0, 1, epsabs=0, limit=200
    )[0]
    np.testing.assert_allclose(value, np.log(reference), rtol=2e-4, atol=2e-4)


@settings(max_examples=15, deadline=None)
@given(
    alpha=positive,
    beta=positive,
    values=st.lists(st.integers(0, 8), min_size=1, max_size=4),
    family=st.sampled_from(["poisson", "exponential"]),
)
def test_gamma_matches_integration(alpha, beta, values, family):
    data = jnp.asarray(values, jnp.float32) + (0.5 if family == "exponential" else 0)

    def model():
        with collapse():
            r = probnn.sample("r", dist.Gamma(alpha, beta))
            lik = dist.Poisson(r) if family == "poisson" else dist.Exponential(r)
            # more batch dims than the latent: observations sharing it
            probnn.sample("x", lik, obs=data)

    _, value = _collapsed(model)
    x = np.asarray(data, float)
    pdf = (
        (lambda r: np.prod(stats.poisson(r).pmf(x)))
        if family == "poisson"
        else (lambda r: np.prod(stats.expon(scale=1 / r).pdf(x)))
    )
    reference = integrate.quad(
        lambda r: stats.gamma(alpha, scale=1 / beta).pdf(r) * pdf(r),
        0,
        np.inf,
        epsabs=0,
        limit=200,
    )[0]
    np.testing.assert_allclose(value, np.log(reference), rtol=2e-4, atol=2e-4)


@settings(max_examples=15, deadline=None)
@given(
    m=st.floats(-3, 3),
    s=st.floats(0.2, 3),
    data=st.lists(st.floats(-5, 5), min_size=1, max_size=5),
    scales=st.lists(st.floats(0.3, 2.0), min_size=5, max_size=5),
)
def test_normal_loc_is_one_multivariate_normal(m, s, data, scales):
    n = len(data)
    sigma = np.asarray(scales[:n])

    def model():
        with collapse():
            z = probnn.sample("z", dist.Normal(m, s))
            with probnn.plate("data", n):
                probnn.sample(
                    "x", dist.Normal(z, jnp.asarray(sigma)), obs=jnp.asarray(data)
                )

    _, value = _collapsed(model)
    cov = s**2 * np.ones((n, n)) + np.diag(sigma**2)
    reference = stats.multivariate_normal(np.full(n, m), cov).logpdf(data)
    np.testing.assert_allclose(value, reference, rtol=1e-4, atol=1e-4)


def _polya(concentration, sequence):
    """log P(sequence) under a Dirichlet-categorical, one draw at a time."""
    counts = np.array(concentration, float)
    total = 0.0
    for k in sequence:
        total += np.log(counts[k] / counts.sum())
        counts[k] += 1
    return total


@settings(max_examples=15, deadline=None)
@given(
    concentration=st.lists(positive, min_size=2, max_size=4),
    draws=st.lists(st.integers(0, 3), min_size=1, max_size=6),
)
def test_dirichlet_categorical_is_the_polya_urn(concentration, draws):
    k = len(concentration)
    draws = [d % k for d in draws]

    def model():
        with collapse():
            p = probnn.sample("p", dist.Dirichlet(jnp.asarray(concentration)))
            with probnn.plate("data", len(draws)):
                probnn.sample("x", dist.Categorical(probs=p), obs=jnp.asarray(draws))

    _, value = _collapsed(model)
    np.testing.assert_allclose(
        value, _polya(concentration, draws), rtol=1e-4, atol=1e-4
    )


def test_dirichlet_multinomial_rows_are_every_ordering_of_the_urn():
    concentration = [0.7, 1.5, 2.0]
    rows = np.array([[2, 0, 1], [1, 1, 0]])

    def model():
        with collapse():
            p = probnn.sample("p", dist.Dirichlet(jnp.asarray(concentration)))
            with probnn.plate("rows", 2):
                probnn.sample("x", dist.Multinomial(3, probs=p), obs=jnp.asarray(rows))

    _, value = _collapsed(model)
    # P(counts) sums the urn over every ordering of each row's draws
    orderings = [
        sorted(set(itertools.permutations(np.repeat(np.arange(3), row))))
        for row in rows
    ]
    total = sum(
        np.exp(_polya(concentration, list(a) + list(b)))
        for a in orderings[0]
        for b in orderings[1]
    )
    np.testing.assert_allclose(value, np.log(total), rtol=1e-5)


def test_outer_plate_is_kept_and_inner_plates_pooled():
    data = jnp.array([[0.0, 3.0], [2.0, 5.0], [1.0, 4.0]])  # (obs, group)

    def model():
        with probnn.plate("groups", 2):
            with collapse():
                p = probnn.sample("p", dist.Beta(2.0, 3.0))
                with probnn.plate("obs", 3, dim=-2):
                    probnn.sample("x", dist.Binomial(5, probs=p), obs=data)

    tr, value = _collapsed(model)
    factor = tr["p"]["fn"].log_factor
    assert factor.shape == (2,)
    assert [f.name for f in tr["p"]["cond_indep_stack"]] == ["groups"]
    for g in range(2):

        def one_group(g=g):
            with collapse():
                p = probnn.sample("p", dist.Beta(2.0, 3.0))
                probnn.sample("x", dist.Binomial(5, probs=p), obs=data[:, g])

        np.testing.assert_allclose(factor[g], _collapsed(one_group)[1], rtol=1e-6)
    np.testing.assert_allclose(value, float(factor.sum()), rtol=1e-6)


def test_latent_inside_an_inner_plate_is_one_latent_per_element():
    data = jnp.array([1.0, 4.0, 0.0])

    def model():
        with collapse():
            with probnn.plate("g", 3):
                p = probnn.sample("p", dist.Beta(1.5, 2.5))
                probnn.sample("x", dist.Binomial(4, probs=p), obs=data)

    _, value = _collapsed(model)
    reference = dist.BetaBinomial(1.5, 2.5, 4).log_prob(data).sum()
    np.testing.assert_allclose(value, reference, rtol=1e-6)


def test_masked_observations_drop_out():
    data = jnp.array([2.0, 7.0, 1.0, 9.0])
    keep = jnp.array([True, False, True, False])

    def masked_model():
        with collapse():
            r = probnn.sample("r", dist.Gamma(2.0, 1.0))
            with probnn.plate("data", 4), mask(mask=keep):
                probnn.sample("x", dist.Poisson(r), obs=data)

    def method_model():
        with collapse():
            r = probnn.sample("r", dist.Gamma(2.0, 1.0))
            with probnn.plate("data", 4):
                probnn.sample("x", dist.Poisson(r).mask(keep), obs=data)

    def kept_model():
        with collapse():
            r = probnn.sample("r", dist.Gamma(2.0, 1.0))
            probnn.sample("x", dist.Poisson(r), obs=data[keep])

    expected = _collapsed(kept_model)[1]
    np.testing.assert_allclose(_collapsed(masked_model)[1], expected, rtol=1e-6)
    np.testing.assert_allclose(_collapsed(method_model)[1], expected, rtol=1e-6)


def test_to_event_observation_and_several_sites_pool():
    def model():
        with collapse():
            z = probnn.sample("z", dist.Normal(0.5, 2.0))
            probnn.sample(
                "a", dist.Normal(z, 1.0).expand([3]).to_event(1), obs=jnp.arange(3.0)
            )
            probnn.sample("b", dist.Normal(z, 0.5), obs=jnp.array(1.5))

    _, value = _collapsed(model)
    data = np.array([0.0, 1.0, 2.0, 1.5])
    cov = 4.0 * np.ones((4, 4)) + np.diag([1.0, 1.0, 1.0, 0.25])
    reference = stats.multivariate_normal(np.full(4, 0.5), cov).logpdf(data)
    np.testing.assert_allclose(value, reference, rtol=1e-5)


def test_gradient_matches_the_compound_distribution_under_jit():
    def collapsed(c1, c0):
        with collapse():
            p = probnn.sample("p", dist.Beta(c1, c0))
            probnn.sample("x", dist.Binomial(10, p), obs=3.0)

    def compound(c1, c0):
        probnn.sample("x", dist.BetaBinomial(c1, c0, 10), obs=3.0)

    def density(model):
        return jax.jit(
            jax.value_and_grad(lambda c: log_density(model, (c[0], c[1]), {}, {})[0])
        )

    c = jnp.array([0.5, 1.5])
    (v1, g1), (v2, g2) = density(collapsed)(c), density(compound)(c)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    np.testing.assert_allclose(g1, g2, rtol=1e-5)


def test_unobserved_latent_integrates_to_one_and_given_values_pass_through():
    def model():
        with collapse():
            probnn.sample("free", dist.Gamma(2.0, 1.0))
            probnn.sample("given", dist.Normal(0.0, 1.0))

    tr = trace(substitute(seed(model, 0), data={"given": 0.3})).get_trace()
    assert float(tr["free"]["fn"].log_factor) == 0.0
    assert tr["given"]["type"] == "sample" and float(tr["given"]["value"]) == 0.3


def test_collapsed_value_refuses_arithmetic():
    def model():
        with collapse():
            p = probnn.sample("p", dist.Beta(1.0, 1.0))
            probnn.sample("x", dist.Bernoulli(p * 0.5), obs=1.0)

    with pytest.raises(TypeError, match="collapsed site 'p'"):
        trace(model).get_trace()

    def through_jnp():
        with collapse():
            p = probnn.sample("p", dist.Beta(1.0, 1.0))
            probnn.sample("x", dist.Bernoulli(jnp.clip(p, 0.1, 0.9)), obs=1.0)

    with pytest.raises(TypeError, match="collapsed site 'p'"):
        trace(through_jnp).get_trace()


@pytest.mark.parametrize(
    "body, match",
    [
        (
            lambda: probnn.sample(
                "x", dist.Poisson(probnn.sample("p", dist.Beta(1.0, 1.0))), obs=1.0
            ),
            "not conjugate to the Beta prior of site 'p'",
        ),
        (
            lambda: probnn.sample(
                "y", dist.Normal(probnn.sample("z", dist.Normal(0.0, 1.0)), 1.0)
            ),
            "latent site 'y' depends on collapsed site 'z'",
        ),
        (
            lambda: probnn.sample("w", dist.LogNormal(0.0, 1.0)),
            "latent site 'w' has a LogNormal prior",
        ),
        (
            lambda: probnn.sample(
                "x",
                dist.Normal(0.0, probnn.sample("s", dist.Gamma(1.0, 1.0))),
                obs=1.0,
            ),
            r"Normal\(scale=s\) is not conjugate",
        ),
    ],
)
def test_what_cannot_be_collapsed_is_refused_by_name(body, match):
    def model():
        with collapse():
            body()

    with pytest.raises(NotImplementedError, match=match):
        trace(seed(model, 0)).get_trace()


def test_subsampled_observations_are_refused():
    def model():
        with collapse():
            p = probnn.sample("p", dist.Beta(1.0, 1.0))
            with probnn.plate("data", 10, subsample_size=3):
                probnn.sample("x", dist.Bernoulli(p), obs=jnp.ones(3))

    with pytest.raises(NotImplementedError, match="site 'x' is scaled"):
        trace(seed(model, 0)).get_trace()


def test_svi_on_a_collapsed_model_fits_the_marginal():
    data = jnp.array([3.0, 4.0, 2.0, 5.0, 3.0])

    def model():
        c1 = probnn.param("c1", 1.0, constraint=dist.constraints.positive)
        with collapse():
            p = probnn.sample("p", dist.Beta(c1, 2.0))
            with probnn.plate("data", 5):
                probnn.sample("x", dist.Binomial(8, p), obs=data)

    import optax

    svi = probnn.infer.SVI(
        model, lambda: None, optax.adam(0.05), probnn.infer.Trace_ELBO()
    )
    result = svi.run(jax.random.PRNGKey(0), 800, progress_bar=False)
    c1 = float(result.params["c1"])
    # the maximum in c1 of the evidence written with scipy's beta function
    k = np.asarray(data)
    base = np.sum(special.gammaln(9) - special.gammaln(k + 1) - special.gammaln(9 - k))
    grid = np.linspace(0.2, 10, 500)
    evidence = (
        base
        + special.betaln(grid + k.sum(), 2 + (8 - k).sum())
        - special.betaln(grid, 2)
    )
    assert abs(c1 - grid[np.argmax(evidence)]) < 0.15
    np.testing.assert_allclose(
        float(log_density(model, (), {}, {"c1": c1})[0]),
        base + special.betaln(c1 + k.sum(), 2 + (8 - k).sum()) - special.betaln(c1, 2),
        rtol=1e-5,
    )
