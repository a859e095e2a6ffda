"""TraceGraph_ELBO: Trace_ELBO's value, unbiased Rao-Blackwellised score
gradients (checked against exact enumeration), less variance than
Trace_ELBO, agreement with NumPyro, training, and its errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.handlers import config_enumerate
from probnn.infer import SVI, Trace_ELBO, TraceGraph_ELBO
from probnn.infer.tracegraph import input_dependencies


def normal_logpdf_mean(m, s, mu, sigma):
    """E[log N(w | mu, sigma)] for w ~ N(m, s)."""
    return -0.5 * jnp.log(2 * jnp.pi * sigma**2) - ((m - mu) ** 2 + s**2) / (
        2 * sigma**2
    )


def normal_entropy(s):
    return 0.5 * jnp.log(2 * jnp.pi * jnp.e * s**2)


# -- a discrete chain: c ~ Categorical, b | c ~ Bernoulli, w | b ~ Normal ------

PRIOR_C = jnp.array([0.2, 0.5, 0.3])
PRIOR_B = jnp.array([0.3, 0.6, 0.8])
X_OBS = 0.7


def chain_model():
    c = probnn.sample("c", dist.Categorical(PRIOR_C))
    b = probnn.sample("b", dist.Bernoulli(PRIOR_B[c]))
    w = probnn.sample("w", dist.Normal(2.0 * b - 1.0 + 0.5 * c, 1.0))
    probnn.sample("x", dist.Normal(w, 0.5), obs=X_OBS)


def chain_guide():
    logits = probnn.param("logits", jnp.zeros(3))
    alpha = probnn.param("alpha", jnp.zeros(3))
    loc = probnn.param("loc", jnp.zeros(2))
    log_s = probnn.param("log_s", 0.0)
    c = probnn.sample("c", dist.Categorical(logits=logits))
    b = probnn.sample("b", dist.Bernoulli(logits=alpha[c]))
    probnn.sample("w", dist.Normal(loc[b.astype(jnp.int32)], jnp.exp(log_s)))


CHAIN_PARAMS = {
    "logits": jnp.array([0.3, -0.2, 0.1]),
    "alpha": jnp.array([-0.4, 0.5, 0.2]),
    "loc": jnp.array([-0.3, 0.9]),
    "log_s": jnp.array(-0.4),
}


def chain_exact_elbo(params):
    """The chain's ELBO summed over the guide's 3 x 2 discrete values, with
    the Gaussian terms in closed form."""
    qc = jax.nn.softmax(params["logits"])
    s = jnp.exp(params["log_s"])
    total = 0.0
    for c in range(3):
        qb1 = jax.nn.sigmoid(params["alpha"][c])
        for b, qb in ((0, 1 - qb1), (1, qb1)):
            m = params["loc"][b]
            pb = PRIOR_B[c] if b else 1 - PRIOR_B[c]
            inner = (
                normal_logpdf_mean(m, s, 2.0 * b - 1.0 + 0.5 * c, 1.0)
                + normal_logpdf_mean(m, s, X_OBS, 0.5)
                + normal_entropy(s)
            )
            total = total + qc[c] * qb * (
                jnp.log(PRIOR_C[c] * pb) - jnp.log(qc[c] * qb) + inner
            )
    return total


# -- a site marked non-reparameterized (a Normal without rsample) ---------------


class ScoreNormal(dist.Normal):
    """A Normal whose draws the ELBOs must treat as not reparameterizable."""

    has_rsample = False


def score_normal_model():
    z = probnn.sample("z", dist.Normal(0.0, 1.0))
    probnn.sample("x", dist.Normal(z, 1.0), obs=X_OBS)


def score_normal_guide():
    loc = probnn.param("loc", 0.0)
    log_s = probnn.param("log_s", 0.0)
    probnn.sample("z", ScoreNormal(loc, jnp.exp(log_s)))


def score_normal_exact_elbo(params):
    m, s = params["loc"], jnp.exp(params["log_s"])
    return (
        normal_logpdf_mean(m, s, 0.0, 1.0)
        + normal_logpdf_mean(m, s, X_OBS, 1.0)
        + normal_entropy(s)
    )


# -- plates: global and local discrete sites -----------------------------------

Y_LOCAL = jnp.array([1.4, -0.6, 0.9, -1.1, 0.2])


def local_model(y):
    u = probnn.sample("u", dist.Bernoulli(0.4))
    with probnn.plate("N", y.shape[0]):
        k = probnn.sample("k", dist.Bernoulli(0.3 + 0.4 * u))
        probnn.sample("y", dist.Normal(2.0 * k - 1.0 + u, 1.0), obs=y)


def local_guide(y):
    theta_u = probnn.param("theta_u", 0.2)
    theta_k = probnn.param("theta_k", jnp.zeros(y.shape[0]))
    u = probnn.sample("u", dist.Bernoulli(logits=theta_u))
    with probnn.plate("N", y.shape[0]):
        probnn.sample("k", dist.Bernoulli(logits=theta_k + 0.5 * u))


# no logit is exactly 0 (NumPyro's BernoulliLogits.log_prob has gradient 1
# instead of 0.5 there, which the NumPyro comparison would pick up)
LOCAL_PARAMS = {
    "theta_u": jnp.array(0.2),
    "theta_k": jnp.array([-0.7, -0.3, 0.15, 0.35, 0.8]),
}


def local_exact_elbo(params, y=Y_LOCAL):
    """Sum over u, then over each k_i independently given u."""
    total = 0.0
    qu1 = jax.nn.sigmoid(params["theta_u"])
    for u, qu in ((0, 1 - qu1), (1, qu1)):
        pu = 0.4 if u else 0.6
        qk1 = jax.nn.sigmoid(params["theta_k"] + 0.5 * u)
        pk1 = 0.3 + 0.4 * u
        per_point = 0.0
        for k, qk, pk in ((0, 1 - qk1, 1 - pk1), (1, qk1, pk1)):
            lik = -0.5 * jnp.log(2 * jnp.pi) - 0.5 * (y - (2.0 * k - 1.0 + u)) ** 2
            per_point = per_point + qk * (jnp.log(pk) + lik - jnp.log(qk))
        total = total + qu * (jnp.log(pu) - jnp.log(qu) + jnp.sum(per_point))
    return total


def reparam_model(y):
    mu = probnn.sample("mu", dist.Normal(0.0, 2.0))
    with probnn.plate("N", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, 1.0), obs=y)


def reparam_guide(y):
    loc = probnn.param("loc", 0.0)
    scale = probnn.param("scale", 1.0, constraint=dist.constraints.positive)
    probnn.sample("mu", dist.Normal(loc, scale))


MODELS = {
    "chain": (chain_model, chain_guide, CHAIN_PARAMS, ()),
    "score_normal": (
        score_normal_model,
        score_normal_guide,
        {"loc": 0.2, "log_s": -0.3},
        (),
    ),
    "local": (local_model, local_guide, LOCAL_PARAMS, (Y_LOCAL,)),
    "reparam": (reparam_model, reparam_guide, {"loc": 0.3, "scale": 0.8}, (Y_LOCAL,)),
}


def grads_over_keys(elbo, model, guide, params, args, keys):
    """One single-estimate gradient per key (a leading dim on each leaf)."""

    def one(k):
        return jax.grad(lambda p: elbo.loss(k, p, model, guide, *args))(params)

    return jax.jit(jax.vmap(one))(keys)


def split(seed, n):
    return jax.random.split(jax.random.PRNGKey(seed), n)


# -- value ------------------------------------------------------------------


def test_signature_and_defaults():
    elbo = TraceGraph_ELBO()
    assert elbo.num_particles == 1 and elbo.vectorize_particles is True
    elbo = TraceGraph_ELBO(3, False)
    assert elbo.num_particles == 3 and elbo.vectorize_particles is False
    assert TraceGraph_ELBO.can_infer_discrete
    assert "TraceGraph_ELBO" in probnn.infer.__all__


@pytest.mark.parametrize(
    "name,num_particles,vectorize",
    [(name, 1, True) for name in sorted(MODELS)]
    + [("chain", 3, False), ("local", 4, True)],
)
def test_loss_equals_trace_elbo(name, num_particles, vectorize):
    model, guide, params, args = MODELS[name]
    keys = split(7, 8)

    def losses(elbo):
        def one(key):
            return elbo.loss(key, params, model, guide, *args)

        return jax.jit(jax.vmap(one))(keys)

    ours = losses(TraceGraph_ELBO(num_particles, vectorize))
    theirs = losses(Trace_ELBO(num_particles, vectorize))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_fully_reparameterized_gradient_equals_trace_elbo():
    model, guide, params, args = MODELS["reparam"]
    keys = split(1, 8)
    ours = grads_over_keys(TraceGraph_ELBO(), model, guide, params, args, keys)
    theirs = grads_over_keys(Trace_ELBO(), model, guide, params, args, keys)
    for name in params:
        np.testing.assert_array_equal(ours[name], theirs[name])


# -- unbiased gradients -------------------------------------------------------


@pytest.mark.parametrize(
    "name,exact_elbo",
    [
        ("chain", chain_exact_elbo),
        ("score_normal", score_normal_exact_elbo),
        ("local", local_exact_elbo),
    ],
)
def test_gradient_is_unbiased(name, exact_elbo):
    """The mean of single-particle gradients is the exact ELBO's gradient
    (enumerated over the guide's discrete values, Gaussians in closed form)."""
    model, guide, params, args = MODELS[name]
    exact = jax.grad(lambda p: -exact_elbo(p))(params)
    n = 20000
    grads = grads_over_keys(TraceGraph_ELBO(), model, guide, params, args, split(11, n))
    for site in params:
        sample = np.asarray(grads[site]).reshape(n, -1)
        se = sample.std(axis=0) / math.sqrt(n)
        error = np.abs(sample.mean(axis=0) - np.ravel(exact[site]))
        assert np.all(error < 4.5 * se + 1e-6), (site, error, se)


SUBSAMPLED_Y = jnp.array([1.4, -0.6, 0.9, -1.1, 0.2, 0.5])


def subsampled_model():
    with probnn.plate("N", 6, subsample_size=2) as idx:
        k = probnn.sample("k", dist.Bernoulli(0.3))
        probnn.sample("y", dist.Normal(2.0 * k - 1.0, 1.0), obs=SUBSAMPLED_Y[idx])


def subsampled_guide():
    theta = probnn.param("theta", jnp.zeros(6))
    with probnn.plate("N", 6, subsample_size=2) as idx:
        probnn.sample("k", dist.Bernoulli(logits=theta[idx]))


def test_subsampled_local_sites_get_unbiased_full_data_gradients():
    """Costs carry the subsampling scale, scores do not: the estimate is
    unbiased for the full-data ELBO's gradient."""
    params = {"theta": jnp.array([-0.8, 0.4, 0.1, 1.0, -0.3, 0.6])}

    def exact_elbo(p):
        q1 = jax.nn.sigmoid(p["theta"])
        total = 0.0
        for k, q, prior in ((0, 1 - q1, 0.7), (1, q1, 0.3)):
            lik = (
                -0.5 * jnp.log(2 * jnp.pi) - 0.5 * (SUBSAMPLED_Y - (2.0 * k - 1.0)) ** 2
            )
            total = total + jnp.sum(q * (jnp.log(prior) + lik - jnp.log(q)))
        return total

    exact = np.asarray(jax.grad(lambda p: -exact_elbo(p))(params)["theta"])
    n = 20000
    grads = grads_over_keys(
        TraceGraph_ELBO(), subsampled_model, subsampled_guide, params, (), split(5, n)
    )
    sample = np.asarray(grads["theta"])
    se = sample.std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(sample.mean(axis=0) - exact) < 4.5 * se)


# -- variance reduction -------------------------------------------------------

Y_MANY = jnp.linspace(-2.0, 3.0, 200)


def noisy_model(y):
    """A global discrete site with its own downstream sites, next to a
    continuous latent with many observations that do not depend on it; and
    local discrete sites, each with one observation."""
    z = probnn.sample("z", dist.Bernoulli(0.4))
    with probnn.plate("M", 3):
        probnn.sample("x", dist.Normal(3.0 * z, 1.0), obs=jnp.array([2.5, 3.2, 2.9]))
    mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    with probnn.plate("N", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, 1.0), obs=y)
    with probnn.plate("K", 4):
        k = probnn.sample("k", dist.Bernoulli(0.5))
        probnn.sample("v", dist.Normal(k, 1.0), obs=jnp.array([0.1, 0.9, 1.2, -0.3]))


def noisy_guide(y):
    probnn.sample("z", dist.Bernoulli(logits=probnn.param("theta", 0.5)))
    probnn.sample("mu", dist.Normal(probnn.param("m", 0.4), 0.3))
    with probnn.plate("K", 4):
        probnn.sample("k", dist.Bernoulli(logits=probnn.param("eta", jnp.zeros(4))))


def test_variance_is_lower_than_trace_elbo():
    params = {"theta": jnp.array(0.5), "m": jnp.array(0.4), "eta": jnp.zeros(4)}
    n = 4000
    keys = split(2, n)
    graph = grads_over_keys(
        TraceGraph_ELBO(), noisy_model, noisy_guide, params, (Y_MANY,), keys
    )
    plain = grads_over_keys(
        Trace_ELBO(), noisy_model, noisy_guide, params, (Y_MANY,), keys
    )
    for site in ("theta", "eta"):
        g = np.asarray(graph[site]).reshape(n, -1)
        t = np.asarray(plain[site]).reshape(n, -1)
        ratio = g.var(axis=0) / t.var(axis=0)
        assert np.all(ratio < 0.5), (site, ratio)
        # both are unbiased: their means agree within Monte Carlo error
        se = np.sqrt((g.var(axis=0) + t.var(axis=0)) / n)
        assert np.all(np.abs(g.mean(axis=0) - t.mean(axis=0)) < 4.5 * se), site
    # the reparameterized site's gradient is pathwise in both: identical
    np.testing.assert_allclose(graph["m"], plain["m"], rtol=1e-5, atol=1e-5)


# -- dependency structure -----------------------------------------------------


def test_input_dependencies_follow_the_data_flow():
    def fn(v):
        carry, ys = jax.lax.scan(
            lambda c, t: ((c[0] + t, c[0]), c[1]), (v["a"], v["e"]), jnp.ones(3)
        )
        branch = jax.lax.cond(v["c"] > 0, lambda u: u + 1, lambda u: u * 2, v["b"])
        return {
            "carry": carry,
            "ys": ys,
            "branch": branch,
            "relu": jax.nn.relu(v["a"]),
            "where": jnp.where(v["b"] > 0, v["a"], 0.0),
            "const": jnp.ones(2),
        }

    deps = input_dependencies(fn, {"a": 0.0, "b": jnp.zeros(2), "c": 1.0, "e": 2.0})
    assert deps["carry"] == (frozenset("a"), frozenset("ae"))
    assert deps["ys"] == frozenset("ae")
    assert deps["branch"] == frozenset("bc")
    assert deps["relu"] == frozenset("a")
    assert deps["where"] == frozenset("ab")
    assert deps["const"] == frozenset()


def test_score_of_an_earlier_site_sees_only_its_downstream_costs():
    """With a mean-field guide, log p(y | b) does not depend on a's draw
    (only b's), so a's score is not multiplied by it."""

    def model():
        probnn.sample("a", dist.Bernoulli(logits=0.0))
        b = probnn.sample("b", dist.Bernoulli(0.5))
        probnn.sample("y", dist.Normal(5.0 * b, 1.0), obs=0.3)

    def guide_with_theta():
        probnn.sample("a", dist.Bernoulli(logits=probnn.param("theta", 0.0)))
        probnn.sample("b", dist.Bernoulli(logits=probnn.param("beta", 0.0)))

    params = {"theta": jnp.array(0.0), "beta": jnp.array(0.0)}
    # at theta = 0, q(a) = p(a): a's own cost log p(a) - log q(a) is 0, and
    # y's cost depends on b only, so theta's gradient is exactly 0 for every draw
    grads = grads_over_keys(
        TraceGraph_ELBO(), model, guide_with_theta, params, (), split(0, 64)
    )
    np.testing.assert_array_equal(grads["theta"], 0.0)
    plain = grads_over_keys(
        Trace_ELBO(), model, guide_with_theta, params, (), split(0, 64)
    )
    assert np.any(np.asarray(plain["theta"]) != 0.0)


# -- NumPyro ------------------------------------------------------------------


def _fixed_draws(lib, dist_lib, a, c, eps):
    """Model and guide, in one library, whose guide draws are fixed: two
    Bernoulli sites (one in a plate) and a reparameterized Normal with a
    fixed noise, so both libraries see identical draws."""

    class FixedBernoulli(dist_lib.BernoulliProbs):
        value = None

        def sample(self, key, sample_shape=()):
            shape = tuple(sample_shape) + tuple(self.batch_shape)
            return jnp.broadcast_to(self.value, shape)

    class FixedA(FixedBernoulli):
        value = a

    class FixedC(FixedBernoulli):
        value = c

    class FixedNormal(dist_lib.Normal):
        def sample(self, key, sample_shape=()):
            return self.loc + self.scale * eps

    data = jnp.array([0.3, -1.2, 2.0])

    def model():
        a = lib.sample("a", dist_lib.Bernoulli(0.3))
        b = lib.sample("b", dist_lib.Normal(2 * a - 1, 1.0))
        with lib.plate("N", 3):
            c = lib.sample("c", dist_lib.Bernoulli(jax.nn.sigmoid(b) * jnp.ones(3)))
            lib.sample("y", dist_lib.Normal(c + a, 1.0), obs=data)
        lib.sample("u", dist_lib.Normal(b, 1.0), obs=0.5)

    def guide():
        pa = lib.param("pa", 0.4)
        loc = lib.param("loc", 0.1)
        w = lib.param("w", 0.7)
        v = lib.param("v", -0.2)
        a = lib.sample("a", FixedA(pa))
        b = lib.sample("b", FixedNormal(loc + a, 0.8))
        with lib.plate("N", 3):
            lib.sample("c", FixedC(jax.nn.sigmoid(w * b + v + jnp.arange(3.0))))

    return model, guide


@pytest.mark.parametrize(
    "a,c,eps", [(1.0, [1.0, 0.0, 1.0], 0.3), (0.0, [0.0, 0.0, 1.0], -1.1)]
)
def test_matches_numpyro_for_the_same_draws(a, c, eps):
    """For identical guide draws, loss and gradient (score terms weighted by
    downstream costs, plates, a reparameterized site in between) equal
    NumPyro 0.22's TraceGraph_ELBO."""
    numpyro = pytest.importorskip("numpyro")
    import numpyro.distributions as ndist
    from numpyro.infer import TraceGraph_ELBO as NumPyroTraceGraph

    c = jnp.array(c)
    params = {"pa": 0.4, "loc": 0.1, "w": 0.7, "v": -0.2}
    key = jax.random.PRNGKey(0)
    model, guide = _fixed_draws(probnn, dist, a, c, eps)
    n_model, n_guide = _fixed_draws(numpyro, ndist, a, c, eps)

    def value_and_grad(elbo, model, guide):
        fn = jax.value_and_grad(lambda p: elbo.loss(key, p, model, guide))
        return jax.jit(fn)(params)

    ours = value_and_grad(TraceGraph_ELBO(), model, guide)
    theirs = value_and_grad(NumPyroTraceGraph(), n_model, n_guide)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6)
    for name in params:
        np.testing.assert_allclose(ours[1][name], theirs[1][name], rtol=1e-5, atol=1e-6)
    # and differs from Trace_ELBO's score-function gradient
    plain = value_and_grad(Trace_ELBO(), model, guide)[1]
    assert abs(float(plain["w"]) - float(ours[1]["w"])) > 0.1


def test_mean_gradient_matches_numpyro():
    """On the local-latent model with random draws, both libraries' mean
    gradients agree within Monte Carlo error."""
    numpyro = pytest.importorskip("numpyro")
    import numpyro.distributions as ndist
    from numpyro.infer import TraceGraph_ELBO as NumPyroTraceGraph

    def n_model(y):
        u = numpyro.sample("u", ndist.Bernoulli(0.4))
        with numpyro.plate("N", y.shape[0]):
            k = numpyro.sample("k", ndist.Bernoulli(0.3 + 0.4 * u))
            numpyro.sample("y", ndist.Normal(2.0 * k - 1.0 + u, 1.0), obs=y)

    def n_guide(y):
        theta_u = numpyro.param("theta_u", 0.2)
        theta_k = numpyro.param("theta_k", jnp.zeros(y.shape[0]))
        u = numpyro.sample("u", ndist.Bernoulli(logits=theta_u))
        with numpyro.plate("N", y.shape[0]):
            numpyro.sample("k", ndist.Bernoulli(logits=theta_k + 0.5 * u))

    n = 10000
    ours = grads_over_keys(
        TraceGraph_ELBO(),
        local_model,
        local_guide,
        LOCAL_PARAMS,
        (Y_LOCAL,),
        split(3, n),
    )
    theirs = grads_over_keys(
        NumPyroTraceGraph(), n_model, n_guide, LOCAL_PARAMS, (Y_LOCAL,), split(4, n)
    )
    for site in LOCAL_PARAMS:
        g = np.asarray(ours[site]).reshape(n, -1)
        t = np.asarray(theirs[site]).reshape(n, -1)
        se = np.sqrt((g.var(axis=0) + t.var(axis=0)) / n)
        assert np.all(np.abs(g.mean(axis=0) - t.mean(axis=0)) < 4.5 * se), site
        # same estimator: same spread
        np.testing.assert_allclose(g.std(axis=0), t.std(axis=0), rtol=0.1)


# -- training -----------------------------------------------------------------


def test_svi_fits_a_discrete_latent():
    """q(z) = Bernoulli(sigmoid(theta)) reaches the exact posterior of z."""
    y = jnp.array([0.9, 0.4, 1.3, -0.2])

    def model(y):
        z = probnn.sample("z", dist.Bernoulli(0.5))
        with probnn.plate("N", y.shape[0]):
            probnn.sample("y", dist.Normal(z, 1.0), obs=y)

    def guide(y):
        probnn.sample("z", dist.Bernoulli(logits=probnn.param("theta", 0.0)))

    def log_lik(z):
        return jnp.sum(-0.5 * (y - z) ** 2)

    posterior = float(jax.nn.sigmoid(log_lik(1.0) - log_lik(0.0)))
    optim = optax.adam(optax.exponential_decay(0.1, 400, 0.01))
    svi = SVI(model, guide, optim, TraceGraph_ELBO(num_particles=64))
    result = svi.run(jax.random.PRNGKey(0), 400, y, progress_bar=False)
    fitted = float(jax.nn.sigmoid(result.params["theta"]))
    assert fitted == pytest.approx(posterior, abs=0.04)


# -- errors -------------------------------------------------------------------


def test_enumerated_model_site_is_rejected_naming_it():
    @config_enumerate
    def model():
        z = probnn.sample("z_enum", dist.Bernoulli(0.3))
        probnn.sample("x", dist.Normal(z, 1.0), obs=0.5)

    def guide():
        pass

    with pytest.raises(ValueError, match=r"model site 'z_enum'.*TraceEnum_ELBO"):
        TraceGraph_ELBO().loss(jax.random.PRNGKey(0), {}, model, guide)


def test_enumerated_guide_site_is_rejected_naming_it():
    def model():
        z = probnn.sample("z", dist.Bernoulli(0.3))
        probnn.sample("x", dist.Normal(z, 1.0), obs=0.5)

    def guide():
        probnn.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})

    with pytest.raises(ValueError, match=r"guide site 'z'.*TraceEnum_ELBO"):
        TraceGraph_ELBO().loss(jax.random.PRNGKey(0), {}, model, guide)


def test_python_control_flow_on_a_scored_draw_is_reported():
    def model():
        z = probnn.sample("z", dist.Bernoulli(0.3))
        probnn.sample("x", dist.Normal(1.0 if z > 0 else 0.0, 1.0), obs=0.5)

    def guide():
        probnn.sample("z", dist.Bernoulli(0.5))

    with pytest.raises(ValueError, match=r"\['z'\].*control flow"):
        TraceGraph_ELBO().loss(jax.random.PRNGKey(0), {}, model, guide)
