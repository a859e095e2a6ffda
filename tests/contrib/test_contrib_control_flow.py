"""probnn.contrib.control_flow.cond: sites inside lax.cond branches under
the handlers, log densities against closed forms, SVI, MCMC, Predictive."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probnn
import probnn.distributions as dist
from probnn.contrib.control_flow import cond, scan
from probnn.handlers import block, condition, enum, seed, substitute, trace
from probnn.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from probnn.infer.util import log_density


def two_clusters():
    def true_fun(_):
        x = probnn.sample("x", dist.Normal(4.0, 1.0))
        probnn.deterministic("z", x - 4.0)
        return x

    def false_fun(_):
        x = probnn.sample("x", dist.Normal(0.0, 1.0))
        probnn.deterministic("z", x)
        return x

    cluster = probnn.sample("cluster", dist.Normal(0.0, 1.0))
    return cond(cluster > 0, true_fun, false_fun, None)


def test_trace_records_the_branch_taken():
    for data, loc in (({"cluster": 0.7}, 4.0), ({"cluster": -0.7}, 0.0)):
        model = substitute(seed(two_clusters, rng_seed=3), data=data)
        tr = trace(model).get_trace()
        assert list(tr) == ["cluster", "x", "z"]
        x = tr["x"]
        assert x["type"] == "sample" and not x["is_observed"]
        assert isinstance(x["fn"], dist.Normal)
        assert float(x["fn"].loc) == loc and float(x["fn"].scale) == 1.0
        assert tr["z"]["type"] == "deterministic"
        np.testing.assert_allclose(tr["z"]["value"], x["value"] - loc, rtol=1e-6)
    # both branches draw with the same key: the draws differ by the shift
    up = trace(substitute(seed(two_clusters, 3), data={"cluster": 1.0})).get_trace()
    down = trace(substitute(seed(two_clusters, 3), data={"cluster": -1.0})).get_trace()
    np.testing.assert_allclose(
        up["x"]["value"] - 4.0, down["x"]["value"], rtol=1e-5, atol=1e-6
    )


def test_return_value_and_fresh_keys():
    model = seed(two_clusters, rng_seed=0)
    assert float(model()) == float(model())  # a seeded model is reusable
    draws = [float(seed(two_clusters, rng_seed=k)()) for k in range(40)]
    assert len(set(draws)) == 40


def test_operand_and_traced_predicate_under_jit():
    def model(shift, pred):
        def true_fun(operand):
            a, b = operand
            return probnn.sample("x", dist.Normal(a + b, 1.0))

        def false_fun(operand):
            a, b = operand
            return probnn.sample("x", dist.Normal(a - b, 1.0))

        return cond(pred, true_fun, false_fun, (shift, 2.0))

    @jax.jit
    def run(pred):
        tr = trace(seed(model, rng_seed=1)).get_trace(10.0, pred)
        return tr["x"]["fn"].loc, tr["x"]["value"]

    loc, value = run(True)
    assert float(loc) == 12.0 and abs(float(value) - 12.0) < 5
    loc, value = run(False)
    assert float(loc) == 8.0 and abs(float(value) - 8.0) < 5


@pytest.mark.parametrize("cluster", [-1.3, 0.4])
def test_log_density_matches_closed_form(cluster):
    x = 2.5
    log_joint, _ = log_density(two_clusters, (), {}, {"cluster": cluster, "x": x})
    loc = 4.0 if cluster > 0 else 0.0
    expected = stats.norm.logpdf(cluster) + stats.norm.logpdf(x, loc)
    assert float(log_joint) == pytest.approx(expected, rel=1e-6)
    # and under jit, the predicate traced
    jitted = jax.jit(
        lambda c: log_density(two_clusters, (), {}, {"cluster": c, "x": x})[0]
    )
    assert float(jitted(cluster)) == pytest.approx(expected, rel=1e-6)
    grad = jax.grad(
        lambda v: log_density(two_clusters, (), {}, {"cluster": cluster, "x": v})[0]
    )(x)
    assert float(grad) == pytest.approx(-(x - loc), rel=1e-6)


def observed_model(y, flag):
    mu = probnn.sample("mu", dist.Normal(0.0, 1.0))

    def plus(_):
        probnn.sample("y", dist.Normal(mu, 1.0), obs=y)
        return 1.0

    def minus(_):
        probnn.sample("y", dist.Normal(-mu, 1.0), obs=y)
        return -1.0

    return cond(flag, plus, minus, None)


def test_observed_sites_and_condition():
    tr = trace(seed(observed_model, 0)).get_trace(1.5, False)
    assert tr["y"]["is_observed"] and float(tr["y"]["value"]) == 1.5

    # condition reaches a latent site inside a branch
    def latent_model(flag):
        return cond(
            flag,
            lambda _: probnn.sample("x", dist.Normal(1.0, 1.0)),
            lambda _: probnn.sample("x", dist.Normal(-1.0, 1.0)),
            None,
        )

    conditioned = condition(seed(latent_model, 0), data={"x": 0.25})
    tr = trace(conditioned).get_trace(True)
    assert tr["x"]["is_observed"] and float(tr["x"]["value"]) == 0.25
    assert float(conditioned(False)) == 0.25
    log_joint, _ = log_density(latent_model, (False,), {}, {"x": 0.25})
    assert float(log_joint) == pytest.approx(stats.norm.logpdf(0.25, -1.0), rel=1e-6)


def test_block_and_plate_act_inside_branches():
    def model():
        with probnn.plate("N", 3):
            return cond(
                True,
                lambda _: probnn.sample("x", dist.Normal(1.0, 1.0)),
                lambda _: probnn.sample("x", dist.Normal(-1.0, 1.0)),
                None,
            )

    tr = trace(seed(model, 0)).get_trace()
    assert tr["x"]["value"].shape == (3,)
    assert tr["x"]["fn"].batch_shape == (3,)
    assert [f.name for f in tr["x"]["cond_indep_stack"]] == ["N"]
    tr = trace(block(seed(model, 0), hide=["x"])).get_trace()
    assert "x" not in tr

    def plate_inside():
        def branch(loc):
            def run(_):
                with probnn.plate("M", 2):
                    return probnn.sample("x", dist.Normal(loc, 1.0))

            return run

        return cond(False, branch(5.0), branch(-5.0), None)

    tr = trace(seed(plate_inside, 0)).get_trace()
    assert tr["x"]["value"].shape == (2,) and tr["M"]["type"] == "plate"
    np.testing.assert_allclose(tr["x"]["fn"].mean, [-5.0, -5.0])


def test_cond_inside_scan():
    def model():
        def step(carry, t):
            x = cond(
                t % 2 == 0,
                lambda _: probnn.sample("x", dist.Normal(10.0, 1.0)),
                lambda _: probnn.sample("x", dist.Normal(-10.0, 1.0)),
                None,
            )
            return carry + x, x

        return scan(step, 0.0, jnp.arange(6))

    tr = trace(seed(model, 0)).get_trace()
    values = np.asarray(tr["x"]["value"])
    assert values.shape == (6,)
    np.testing.assert_array_equal(np.sign(values), [1, -1, 1, -1, 1, -1])
    np.testing.assert_allclose(tr["x"]["fn"].loc, [10, -10, 10, -10, 10, -10])
    assert len(set(np.abs(values).round(5))) == 6  # a fresh key every step


def test_mismatched_branches_and_enumeration_raise():
    def mismatched():
        return cond(
            True,
            lambda _: probnn.sample("x", dist.Normal(0.0, 1.0)),
            lambda _: probnn.sample("y", dist.Normal(0.0, 1.0)),
            None,
        )

    with pytest.raises(TypeError, match="same sites"):
        trace(seed(mismatched, 0)).get_trace()

    def other_family():
        return cond(
            True,
            lambda _: probnn.sample("x", dist.Normal(0.0, 1.0)),
            lambda _: probnn.sample("x", dist.Laplace(0.0, 1.0)),
            None,
        )

    with pytest.raises(TypeError):
        trace(seed(other_family, 0)).get_trace()
    with pytest.raises(RuntimeError, match="enumeration"):
        enum(seed(two_clusters, 0), first_available_dim=-1)()


def test_without_handlers_is_lax_cond():
    assert cond(True, lambda v: v + 1, lambda v: v - 1, 1.0) == 2.0
    assert float(jax.jit(lambda p: cond(p, jnp.sin, jnp.cos, 0.0))(False)) == 1.0


def test_svi_fits_branch_guides():
    # the guide's cluster is the prior, so each branch's optimal guide for x
    # is the model's conditional: Normal(4, 1) and Normal(0, 1)
    def guide():
        m1 = probnn.param("m1", 2.0)
        s1 = probnn.param("s1", 0.5, constraint=dist.constraints.positive)
        m2 = probnn.param("m2", 2.0)
        s2 = probnn.param("s2", 0.5, constraint=dist.constraints.positive)
        cluster = probnn.sample("cluster", dist.Normal(0.0, 1.0))
        cond(
            cluster > 0,
            lambda _: probnn.sample("x", dist.Normal(m1, s1)),
            lambda _: probnn.sample("x", dist.Normal(m2, s2)),
            None,
        )

    svi = SVI(two_clusters, guide, probnn.optim.Adam(0.02), Trace_ELBO(50))
    params = svi.run(jax.random.PRNGKey(0), 2000, progress_bar=False).params
    assert float(params["m1"]) == pytest.approx(4.0, abs=0.15)
    assert float(params["m2"]) == pytest.approx(0.0, abs=0.15)
    assert float(params["s1"]) == pytest.approx(1.0, abs=0.15)
    assert float(params["s2"]) == pytest.approx(1.0, abs=0.15)
    samples = Predictive(
        two_clusters,
        guide=guide,
        params=params,
        num_samples=500,
        return_sites=["cluster", "x", "z"],
    )(jax.random.PRNGKey(1))
    assert samples["x"].shape == samples["z"].shape == (500,)
    # z = x - 4 in the upper branch, x in the lower: z is about N(0, 1)
    assert float(jnp.std(samples["z"])) == pytest.approx(1.0, abs=0.15)
    upper = samples["cluster"] > 0
    np.testing.assert_allclose(
        samples["z"], jnp.where(upper, samples["x"] - 4.0, samples["x"]), atol=1e-5
    )


@pytest.mark.parametrize("flag, sign", [(True, 1.0), (False, -1.0)])
def test_mcmc_posterior_matches_closed_form(flag, sign):
    # mu ~ N(0, 1), y ~ N(+-mu, 1): posterior N(+-y / 2, 1 / 2)
    y = 1.6
    mcmc = MCMC(NUTS(observed_model), num_warmup=400, num_samples=3000)
    mcmc.run(jax.random.PRNGKey(2), y, flag)
    mu = mcmc.get_samples()["mu"]
    assert float(jnp.mean(mu)) == pytest.approx(sign * y / 2, abs=0.06)
    assert float(jnp.std(mu)) == pytest.approx(math.sqrt(0.5), abs=0.05)


def test_elbo_of_exact_guide_is_log_evidence():
    # with the exact posterior as guide, every ELBO sample equals the log
    # evidence: y ~ N(0, 2) marginally, whichever branch
    y = 0.8

    def guide(y, flag):
        loc = probnn.param("loc", 0.0)
        return probnn.sample("mu", dist.Normal(loc, math.sqrt(0.5)))

    for flag, sign in ((True, 1.0), (False, -1.0)):
        exact = {"loc": jnp.asarray(sign * y / 2)}
        loss = Trace_ELBO(1).loss(
            jax.random.PRNGKey(0), exact, observed_model, guide, y, flag
        )
        expected = -stats.norm.logpdf(y, 0.0, math.sqrt(2.0))
        assert float(loss) == pytest.approx(expected, rel=1e-5)
