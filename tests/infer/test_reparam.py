"""handlers.reparam with LocScaleReparam and TransformReparam, checked
against closed forms: the change-of-variables identity of the joint
density, the affine map of the decentred draw, and a conjugate posterior."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import probnn
import probnn.distributions as dist
from probnn.distributions import transforms as T
from probnn.handlers import reparam, seed, substitute, trace
from probnn.infer import MCMC, NUTS, SVI, Trace_ELBO
from probnn.infer.autoguide import AutoNormal
from probnn.infer.reparam import LocScaleReparam, TransformReparam
from probnn.infer.util import log_density


def schools(sigma, y=None):
    mu = probnn.sample("mu", dist.Normal(0.0, 5.0))
    tau = probnn.sample("tau", dist.HalfNormal(5.0))
    with probnn.plate("J", sigma.shape[0]):
        theta = probnn.sample("theta", dist.Normal(mu, tau))
        probnn.sample("y", dist.Normal(theta, sigma), obs=y)


SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])


def get_trace(model, *args, key=0):
    return trace(seed(model, rng_seed=key)).get_trace(*args)


def test_noncentred_site_is_loc_plus_scale_times_a_standard_draw():
    model = reparam(schools, config={"theta": LocScaleReparam(centered=0)})
    tr = get_trace(model, SIGMA)
    assert list(tr) == ["mu", "tau", "J", "theta_decentered", "theta", "y"]
    assert tr["theta"]["type"] == "deterministic"
    decentred = tr["theta_decentered"]
    assert decentred["type"] == "sample" and decentred["value"].shape == (8,)
    assert decentred["cond_indep_stack"][0].name == "J"
    np.testing.assert_allclose(decentred["fn"].mean, 0.0)
    np.testing.assert_allclose(decentred["fn"].variance, 1.0)
    mu, tau = tr["mu"]["value"], tr["tau"]["value"]
    np.testing.assert_allclose(
        tr["theta"]["value"], mu + tau * decentred["value"], rtol=1e-6
    )


def test_joint_density_changes_by_the_jacobian_log_scale():
    # p(mu, tau, z) = p(mu, tau, theta = mu + tau z) * tau**8
    model = reparam(schools, config={"theta": LocScaleReparam(centered=0)})
    z = jnp.linspace(-1.5, 2.0, 8)
    mu, tau = 1.3, 2.7
    values = {"mu": mu, "tau": tau, "theta_decentered": z}
    reparametrized, _ = log_density(model, (SIGMA, Y), {}, values)
    original, _ = log_density(
        schools, (SIGMA, Y), {}, {"mu": mu, "tau": tau, "theta": mu + tau * z}
    )
    np.testing.assert_allclose(reparametrized, original + 8 * math.log(tau), rtol=1e-6)


@pytest.mark.parametrize("c", [0.3, 0.8])
def test_partial_centring_maps_the_draw_affinely_onto_the_same_normal(c):
    loc, scale = 2.0, 3.0

    def model():
        probnn.sample("x", dist.Normal(loc, scale))

    model = reparam(model, config={"x": LocScaleReparam(centered=c)})
    tr = get_trace(model)
    fn = tr["x_decentered"]["fn"]
    np.testing.assert_allclose(fn.mean, c * loc, rtol=1e-6)
    np.testing.assert_allclose(fn.variance, scale ** (2 * c), rtol=1e-6)
    # two points fix the affine map: its mean goes to loc, one sd to loc + scale
    for draw, expected in [(c * loc, loc), (c * loc + scale**c, loc + scale)]:
        tr = trace(substitute(seed(model, 0), data={"x_decentered": draw})).get_trace()
        np.testing.assert_allclose(tr["x"]["value"], expected, rtol=1e-6)


def test_noncentred_nuts_recovers_a_conjugate_posterior():
    # mu ~ N(0, 1), theta ~ N(mu, 2^2), y ~ N(theta, 1), y = 3:
    # theta ~ N(0, 5) a priori, so theta | y ~ N(2.5, 5/6)
    def model(y):
        mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
        theta = probnn.sample("theta", dist.Normal(mu, 2.0))
        probnn.sample("y", dist.Normal(theta, 1.0), obs=y)

    model = reparam(model, config={"theta": LocScaleReparam(centered=0)})
    mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=4000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), 3.0)
    theta = np.asarray(mcmc.get_samples()["theta"])
    assert set(mcmc.get_samples()) == {"mu", "theta", "theta_decentered"}
    assert abs(theta.mean() - 2.5) < 0.1
    assert abs(theta.var() - 5 / 6) < 0.1


def test_learned_centring_is_a_unit_interval_param_trained_by_svi():
    model = reparam(schools, config={"theta": LocScaleReparam(centered=None)})
    tr = get_trace(model, SIGMA)
    assert tr["theta_centered"]["type"] == "param"
    np.testing.assert_allclose(tr["theta_centered"]["value"], 0.5)
    svi = SVI(model, AutoNormal(model), optax.adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(1), 200, SIGMA, Y, progress_bar=False)
    centred = float(result.params["theta_centered"])
    assert 0.0 < centred < 1.0 and centred != 0.5
    assert "theta_decentered_auto_loc" in result.params
    assert "theta_auto_loc" not in result.params


def test_shape_params_carry_student_t_degrees_of_freedom():
    def model():
        probnn.sample("x", dist.StudentT(4.0, 1.0, 2.0), sample_shape=(3,))

    model = reparam(model, config={"x": LocScaleReparam(0, shape_params=("df",))})
    tr = get_trace(model)
    fn = tr["x_decentered"]["fn"]
    assert tr["x_decentered"]["value"].shape == (3,)
    np.testing.assert_allclose(fn.log_prob(0.7), stats.t(4.0).logpdf(0.7), rtol=1e-5)
    np.testing.assert_allclose(
        tr["x"]["value"], 1.0 + 2.0 * tr["x_decentered"]["value"], rtol=1e-6
    )


def test_centered_one_leaves_the_site_alone():
    def model():
        probnn.sample("x", dist.Normal(0.0, 1.0))

    tr = get_trace(reparam(model, config={"x": LocScaleReparam(centered=1)}))
    assert list(tr) == ["x"] and tr["x"]["type"] == "sample"


def test_transform_reparam_draws_the_base_and_transforms_it():
    def model():
        base = dist.Normal(0.0, 1.0).expand([2])
        chain = [T.AffineTransform(2.0, 3.0), T.ExpTransform()]
        with probnn.plate("P", 4, dim=-2):
            probnn.sample("x", dist.TransformedDistribution(base, chain))

    tr = get_trace(reparam(model, config={"x": TransformReparam()}))
    base = tr["x_base"]
    assert base["value"].shape == (4, 2) and tr["x"]["type"] == "deterministic"
    np.testing.assert_allclose(
        tr["x"]["value"], np.exp(2.0 + 3.0 * np.asarray(base["value"])), rtol=1e-5
    )


def test_config_function_chooses_sites():
    config = lambda site: LocScaleReparam(0) if site["name"] == "theta" else None  # noqa: E731
    tr = get_trace(reparam(schools, config=config), SIGMA)
    assert "theta_decentered" in tr and "mu_decentered" not in tr


def test_config_key_that_matches_no_sample_site_is_an_error():
    model = reparam(
        schools, config={"theta": LocScaleReparam(0), "thetta": LocScaleReparam(0)}
    )
    with pytest.raises(
        ValueError, match=r"config keys \['thetta'\] match no sample site"
    ):
        get_trace(model, SIGMA)


@pytest.mark.parametrize(
    "site, reparametrizer, error, message",
    [
        ("y", LocScaleReparam(0), ValueError, "site 'y' is observed"),
        ("tau", LocScaleReparam(0), TypeError, "site 'tau' has a HalfNormal"),
        ("mu", TransformReparam(), TypeError, "site 'mu' has a Normal, not a"),
    ],
)
def test_unsuitable_sites_are_named(site, reparametrizer, error, message):
    model = reparam(schools, config={site: reparametrizer})
    with pytest.raises(error, match=message):
        get_trace(model, SIGMA, Y)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="centered must be in"):
        LocScaleReparam(centered=1.5)
    with pytest.raises(ValueError, match=r"shape_params \['df'\]"):
        get_trace(
            reparam(schools, config={"mu": LocScaleReparam(0, shape_params="df")}),
            SIGMA,
        )
    with pytest.raises(TypeError, match=r"config\['mu'\]"):
        reparam(schools, config={"mu": "noncentred"})
    with pytest.raises(ValueError, match="config= is required"):
        reparam(schools)


def test_reparam_acts_inside_scan_bodies():
    # a random walk x_t ~ N(x_{t-1}, 2), non-centred step by step
    def model():
        def body(prev, _):
            x = probnn.sample("x", dist.Normal(prev, 2.0))
            return x, None

        probnn.scan(body, 0.0, jnp.arange(5))

    model = reparam(model, config={"x": LocScaleReparam(centered=0)})
    tr = get_trace(model)
    assert (tr["x"]["type"], tr["x_decentered"]["type"]) == ("deterministic", "sample")
    x, z = np.asarray(tr["x"]["value"]), np.asarray(tr["x_decentered"]["value"])
    np.testing.assert_allclose(x, np.cumsum(2.0 * z), rtol=1e-5, atol=1e-6)
    mcmc = MCMC(NUTS(model), num_warmup=200, num_samples=2000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(2))
    draws = mcmc.get_samples()
    assert draws["x"].shape == draws["x_decentered"].shape == (2000, 5)
    # a priori x_4 ~ N(0, 5 * 2^2)
    assert abs(float(np.var(draws["x"][:, 4])) / 20.0 - 1.0) < 0.15


def test_transform_reparam_keeps_base_dims_the_transform_reads_as_event():
    # stick-breaking reads the base's last batch dim as an event dim
    def model():
        base = dist.Normal(jnp.zeros(2), 1.0)
        with probnn.plate("P", 3):
            probnn.sample(
                "w", dist.TransformedDistribution(base, T.StickBreakingTransform())
            )

    tr = get_trace(reparam(model, config={"w": TransformReparam()}))
    base = tr["w_base"]
    assert base["value"].shape == (3, 2) and base["fn"].event_shape == (2,)
    w = np.asarray(tr["w"]["value"])
    assert w.shape == (3, 3)
    np.testing.assert_allclose(w, T.StickBreakingTransform()(base["value"]), rtol=1e-6)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_reparametrizer_returning_both_a_distribution_and_a_value_is_an_error():
    def both(name, fn, obs):
        return fn, jnp.zeros(())

    model = reparam(schools, config={"mu": both})
    with pytest.raises(ValueError, match="site 'mu' returned both"):
        get_trace(model, SIGMA)


@pytest.mark.parametrize(
    "family",
    [
        dist.LogNormal(0.3, 1.7),
        dist.InverseGamma(2.5, 1.5),
        dist.Pareto(2.0, 3.0),
        dist.RelaxedBernoulli(0.7, logits=-0.4),
        dist.RelaxedBernoulliLogits(1.3, 0.8),
        dist.RelaxedBernoulli(0.7, probs=0.3),
    ],
    ids=lambda d: type(d).__name__,
)
def test_transform_reparam_takes_families_numpyro_builds_by_transforms(family):
    # NumPyro writes these as TransformedDistribution; the reparametrized
    # site must carry the same law: density of the base at b equals the
    # family's density at t(b) times |dt/db| (change of variables)
    def model():
        with probnn.plate("P", 5):
            probnn.sample("x", family)

    reparametrized = reparam(model, config={"x": TransformReparam()})
    tr = get_trace(reparametrized)
    base, x = tr["x_base"], tr["x"]
    assert x["type"] == "deterministic" and base["value"].shape == (5,)
    b = np.asarray(base["value"])
    fwd = jax.vmap(jax.grad(lambda v: get_trace_value(reparametrized, v)))
    jac = np.abs(np.asarray(fwd(jnp.asarray(b))))
    np.testing.assert_allclose(
        np.asarray(base["fn"].log_prob(base["value"])),
        np.asarray(family.log_prob(x["value"])) + np.log(jac),
        rtol=1e-4,
        atol=1e-4,
    )


def get_trace_value(reparametrized, b):
    # the site's value as a function of one scalar base value
    tr = trace(
        substitute(seed(reparametrized, rng_seed=0), data={"x_base": jnp.full(5, b)})
    ).get_trace()
    return tr["x"]["value"][0]


# -- NeuTraReparam -----------------------------------------------------------


def _neutra_model(y):
    scale = probnn.sample("scale", dist.LogNormal(0.0, 0.5))
    with probnn.plate("groups", 2):
        loc = probnn.sample("loc", dist.Normal(0.0, scale))
    with probnn.plate("rows", y.shape[0]):
        probnn.sample("y", dist.Normal(loc.sum(), 1.0), obs=y)


def _trained_neutra(guide_class, steps=300):
    from probnn.infer.reparam import NeuTraReparam

    y = jnp.array([0.3, 1.1, 0.8, 1.9])
    guide = guide_class(_neutra_model)
    svi = SVI(_neutra_model, guide, optax.adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), steps, y, progress_bar=False)
    return NeuTraReparam(guide, result.params), y


@pytest.mark.parametrize(
    "guide_name",
    ["AutoDiagonalNormal", "AutoMultivariateNormal", "AutoIAFNormal", "AutoBNAFNormal"],
)
def test_neutra_density_is_the_model_density_pulled_back_through_the_flow(guide_name):
    from probnn.infer import autoguide

    neutra, y = _trained_neutra(getattr(autoguide, guide_name))
    warped = neutra.reparam(_neutra_model)

    def flat_values(z):
        values = neutra.transform_sample(z)
        return jnp.concatenate([jnp.ravel(values["scale"]), jnp.ravel(values["loc"])])

    rng = np.random.default_rng(3)
    for _ in range(4):
        z = jnp.asarray(rng.normal(size=3), jnp.float32)
        actual, tr = log_density(warped, (y,), {}, {"auto_shared_latent": z})
        # reference: density of the model's own sites at g(z), times the
        # absolute Jacobian determinant of g, which autodiff computes
        values = neutra.transform_sample(z)
        model_density = log_density(_neutra_model, (y,), {}, values)[0]
        _, log_det = jnp.linalg.slogdet(jax.jacfwd(flat_values)(z))
        expected = model_density + log_det
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
        # the sites hold the constrained values, drawn from the shared latent
        np.testing.assert_allclose(tr["scale"]["value"], values["scale"], rtol=1e-6)
        assert tr["auto_shared_latent"]["cond_indep_stack"] == []


def test_neutra_nuts_recovers_a_conjugate_posterior():
    from probnn.infer.autoguide import AutoMultivariateNormal
    from probnn.infer.reparam import NeuTraReparam

    def model(y):
        mu = probnn.sample("mu", dist.Normal(jnp.zeros(2), 2.0).to_event(1))
        with probnn.plate("rows", y.shape[0]):
            probnn.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)

    y = np.random.default_rng(0).normal([1.0, -2.0], 1.0, (6, 2))
    y = jnp.asarray(y, jnp.float32)
    guide = AutoMultivariateNormal(model)
    svi = SVI(model, guide, optax.adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 400, y, progress_bar=False)
    neutra = NeuTraReparam(guide, result.params)
    mcmc = MCMC(
        NUTS(neutra.reparam(model)),
        num_warmup=300,
        num_samples=2000,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(1), y)
    draws = neutra.transform_sample(mcmc.get_samples()["auto_shared_latent"])["mu"]
    # conjugate: precision 1/4 + 6, mean sum(y) / precision
    precision = 0.25 + y.shape[0]
    post_mean = np.asarray(y.sum(0)) / precision
    post_sd = 1.0 / math.sqrt(precision)
    draws = np.asarray(draws)
    assert draws.shape == (2000, 2)
    # ten standard errors of 2000 independent draws (0.09): room for NUTS's
    # autocorrelation, and tight against a warped density that misses the
    # posterior, whose mean would move by about a posterior sd (0.4)
    np.testing.assert_allclose(
        draws.mean(0), post_mean, atol=10 * post_sd / math.sqrt(2000)
    )
    np.testing.assert_allclose(draws.std(0), post_sd, rtol=0.1)


def test_neutra_refuses_what_it_cannot_use():
    from probnn.infer.autoguide import AutoDiagonalNormal
    from probnn.infer.reparam import NeuTraReparam

    with pytest.raises(TypeError, match="AutoContinuous guide.*AutoNormal"):
        NeuTraReparam(AutoNormal(_neutra_model), {})
    with pytest.raises(RuntimeError, match="NeuTraReparam.*has not seen the model"):
        NeuTraReparam(AutoDiagonalNormal(_neutra_model), {})  # never run
    neutra, y = _trained_neutra(AutoDiagonalNormal, steps=5)
    with pytest.raises(ValueError, match="'y' is observed"):
        neutra("y", dist.Normal(0.0, 1.0), jnp.ones(4))


def test_a_site_can_stand_outside_the_plates_it_is_written_in():
    def model():
        with probnn.plate("rows", 5):
            inside = probnn.sample("inside", dist.Normal(0.0, 1.0))
            outside = probnn.sample(
                "outside", dist.Normal(0.0, 1.0), infer={"block_plates": ["rows"]}
            )
        return inside, outside

    tr = get_trace(model)
    assert tr["inside"]["value"].shape == (5,)
    assert tr["outside"]["value"].shape == ()
    assert tr["outside"]["cond_indep_stack"] == []
