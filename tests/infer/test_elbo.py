"""ELBO estimators against closed forms and exact enumeration."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probnn
import probnn.distributions as dist
from probnn.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

X_OBS = 1.3


def normal_model():
    z = probnn.sample("z", dist.Normal(0.0, 1.0))
    probnn.sample("x", dist.Normal(z, 1.0), obs=X_OBS)


def normal_guide():
    loc = probnn.param("loc", 0.0)
    scale = probnn.param("scale", 1.0, constraint=dist.constraints.positive)
    probnn.sample("z", dist.Normal(loc, scale))


def analytic_elbo(loc, scale):
    """E_q[log N(z|0,1) + log N(x|z,1) - log N(z|loc,scale)] in closed form."""
    second_moment = loc**2 + scale**2
    expected_prior = -0.5 * math.log(2 * math.pi) - 0.5 * second_moment
    expected_lik = -0.5 * math.log(2 * math.pi) - 0.5 * ((X_OBS - loc) ** 2 + scale**2)
    entropy = 0.5 * math.log(2 * math.pi * math.e * scale**2)
    return expected_prior + expected_lik + entropy


@pytest.mark.parametrize("elbo_class", [Trace_ELBO, TraceMeanField_ELBO])
def test_elbo_estimate_matches_closed_form(elbo_class):
    params = {"loc": 0.4, "scale": 0.7}
    elbo = elbo_class(num_particles=20000)
    loss = float(
        jax.jit(elbo.loss, static_argnums=(2, 3))(
            jax.random.PRNGKey(0), params, normal_model, normal_guide
        )
    )
    # Monte Carlo standard error of the 20000-particle mean is below 0.01
    assert loss == pytest.approx(-analytic_elbo(0.4, 0.7), abs=0.03)


def test_mean_field_elbo_is_trace_elbo_in_expectation_with_less_variance():
    params = {"loc": -0.3, "scale": 1.4}
    keys = jax.random.split(jax.random.PRNGKey(1), 4000)

    def losses(elbo):
        return jax.vmap(lambda k: elbo.loss(k, params, normal_model, normal_guide))(
            keys
        )

    trace_losses = np.asarray(losses(Trace_ELBO()))
    mean_field_losses = np.asarray(losses(TraceMeanField_ELBO()))
    expected = -analytic_elbo(-0.3, 1.4)
    for sample in (trace_losses, mean_field_losses):
        standard_error = sample.std() / math.sqrt(sample.size)
        assert abs(sample.mean() - expected) < 4 * standard_error
    assert mean_field_losses.std() < 0.8 * trace_losses.std()


def test_mean_field_uses_the_registered_kl_exactly():
    # with the likelihood term removed the mean-field loss is KL(q || p)
    def prior_only():
        probnn.sample("z", dist.Normal(0.0, 1.0))

    loss = TraceMeanField_ELBO().loss(
        jax.random.PRNGKey(0), {"loc": 0.5, "scale": 2.0}, prior_only, normal_guide
    )
    kl = math.log(1 / 2.0) + (2.0**2 + 0.5**2) / 2 - 0.5
    assert float(loss) == pytest.approx(kl, rel=1e-6)


# -- score-function gradients ---------------------------------------------------

Y_OBS = jnp.array([1.8, 2.4])


def discrete_model():
    z = probnn.sample("z", dist.Bernoulli(0.3))
    w = probnn.sample("w", dist.Normal(0.0, 1.0))
    with probnn.plate("N", 2):
        probnn.sample("y", dist.Normal(2.0 * z + w, 1.0), obs=Y_OBS)


def discrete_guide():
    theta = probnn.param("theta", 0.2)
    loc = probnn.param("loc", 0.1)
    probnn.sample("z", dist.Bernoulli(logits=theta))
    probnn.sample("w", dist.Normal(loc, 0.8))


def exact_elbo(params):
    """The ELBO summed over z in {0, 1} exactly; the Gaussian expectation over
    w in closed form (w ~ N(loc, 0.8^2))."""
    q1 = jax.nn.sigmoid(params["theta"])
    loc, s = params["loc"], 0.8
    total = 0.0
    for z, qz, pz in ((0.0, 1 - q1, 0.7), (1.0, q1, 0.3)):
        expected_lik = jnp.sum(
            -0.5 * math.log(2 * math.pi) - 0.5 * ((Y_OBS - 2 * z - loc) ** 2 + s**2)
        )
        expected_prior_w = -0.5 * math.log(2 * math.pi) - 0.5 * (loc**2 + s**2)
        entropy_w = 0.5 * jnp.log(2 * math.pi * math.e * s**2)
        total = total + qz * (
            jnp.log(pz) - jnp.log(qz) + expected_lik + expected_prior_w + entropy_w
        )
    return total


def test_score_function_gradient_is_unbiased():
    params = {"theta": jnp.array(0.2), "loc": jnp.array(0.1)}
    exact = jax.grad(lambda p: -exact_elbo(p))(params)
    elbo = Trace_ELBO()

    def grad_at(key):
        return jax.grad(lambda p: elbo.loss(key, p, discrete_model, discrete_guide))(
            params
        )

    grads = jax.jit(jax.vmap(grad_at))(jax.random.split(jax.random.PRNGKey(3), 20000))
    for name in params:
        sample = np.asarray(grads[name])
        standard_error = sample.std() / math.sqrt(sample.size)
        assert abs(sample.mean() - float(exact[name])) < 4 * standard_error, name
    # the loss itself is the plain ELBO estimate: its mean is the exact ELBO
    losses = jax.vmap(lambda k: elbo.loss(k, params, discrete_model, discrete_guide))(
        jax.random.split(jax.random.PRNGKey(4), 20000)
    )
    assert float(jnp.mean(losses)) == pytest.approx(
        -float(exact_elbo(params)), abs=4 * float(jnp.std(losses)) / math.sqrt(20000)
    )


# -- subsampling ----------------------------------------------------------------

DATA = jnp.linspace(-1.0, 2.0, 10)


def subsampled_model(subsample_size):
    mu = probnn.sample("mu", dist.Normal(0.0, 2.0))
    with probnn.plate("N", 10, subsample_size=subsample_size) as idx:
        probnn.sample("y", dist.Normal(mu, 1.0), obs=DATA[idx])


def mu_guide(subsample_size):
    probnn.sample("mu", dist.Normal(probnn.param("loc", 0.3), 0.5))


def test_subsampled_elbo_matches_full_batch_in_expectation():
    elbo = Trace_ELBO()
    params = {"loc": 0.3}
    keys = jax.random.split(jax.random.PRNGKey(5), 20000)

    def losses(size):
        return np.asarray(
            jax.jit(
                jax.vmap(
                    lambda k: elbo.loss(k, params, subsampled_model, mu_guide, size)
                )
            )(keys)
        )

    full, sub = losses(10), losses(3)
    standard_error = math.sqrt(full.var() / full.size + sub.var() / sub.size)
    assert abs(full.mean() - sub.mean()) < 4 * standard_error
    # and the gradient too
    grad = jax.vmap(
        lambda k: jax.grad(lambda p: elbo.loss(k, p, subsampled_model, mu_guide, 3))(
            params
        )["loc"]
    )(keys)
    full_grad = jax.vmap(
        lambda k: jax.grad(lambda p: elbo.loss(k, p, subsampled_model, mu_guide, 10))(
            params
        )["loc"]
    )(keys)
    standard_error = math.sqrt(
        float(jnp.var(grad) + jnp.var(full_grad)) / keys.shape[0]
    )
    assert abs(float(jnp.mean(grad) - jnp.mean(full_grad))) < 4 * standard_error


# -- a prior without reparameterized draws, a reparameterized guide ---------------

CASES = {
    # (prior, guide's base scale and shape, transform onto the support, data)
    "improper": (
        lambda: dist.ImproperUniform(dist.constraints.real, (), ()),
        (),
        dist.transforms.IdentityTransform(),
        jnp.array(0.7),
    ),
    "lkj": (
        lambda: dist.LKJCholesky(3, 2.0),
        (3,),
        dist.transforms.CorrCholeskyTransform(),
        jnp.array([0.5, -1.0, 0.3]),
    ),
}


def _likelihood(z, y):
    if jnp.ndim(z) == 0:
        return dist.Normal(z, 1.0).log_prob(y)
    return dist.MultivariateNormal(jnp.zeros(3), scale_tril=z).log_prob(y)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_prior_without_rsample_keeps_the_path_of_the_guides_draw(case):
    # the model's prior has no reparameterized sampler, the guide's draw is
    # reparameterized: the likelihood's gradient flows through the draw
    prior, shape, transform, y = CASES[case]

    def model():
        z = probnn.sample("z", prior())
        probnn.factor("lik", _likelihood(z, y))

    def q(loc):
        base = dist.Normal(loc, 0.5)
        if shape:
            base = base.expand(shape).to_event(1)
        return dist.TransformedDistribution(base, transform)

    def guide():
        probnn.sample("z", q(probnn.param("loc", jnp.zeros(shape))))

    key, loc = jax.random.PRNGKey(4), jnp.full(shape, 0.2)
    grad = jax.grad(lambda p: Trace_ELBO().loss(key, p, model, guide))({"loc": loc})
    # by hand: the same standard-normal draw, mapped with loc as a variable
    _, guide_key = jax.random.split(key)
    tr = probnn.handlers.trace(
        probnn.handlers.seed(
            probnn.handlers.substitute(guide, data={"loc": loc}), guide_key
        )
    ).get_trace()
    eps = (transform.inv(tr["z"]["value"]) - loc) / 0.5

    def by_hand(loc):
        z = transform(loc + 0.5 * eps)
        return -(prior().log_prob(z) + _likelihood(z, y) - q(loc).log_prob(z))

    np.testing.assert_allclose(
        grad["loc"], jax.grad(by_hand)(loc), rtol=1e-4, atol=1e-5
    )
    assert float(jnp.max(jnp.abs(grad["loc"]))) > 1e-3


# -- Renyi --------------------------------------------------------------------


def test_renyi_with_exact_posterior_guide_gives_log_evidence_exactly():
    # z | x ~ N(x / 2, 1 / 2); log p(x) = log N(x | 0, 2)
    params = {"loc": X_OBS / 2, "scale": math.sqrt(0.5)}
    log_evidence = stats.norm(0, math.sqrt(2)).logpdf(X_OBS)
    for alpha in (0.0, 0.5, -1.0):
        loss = RenyiELBO(alpha=alpha, num_particles=5).loss(
            jax.random.PRNGKey(0), params, normal_model, normal_guide
        )
        assert float(loss) == pytest.approx(-log_evidence, abs=1e-5)


def test_renyi_bound_lies_between_elbo_and_evidence():
    params = {"loc": 0.0, "scale": 1.5}
    keys = jax.random.split(jax.random.PRNGKey(2), 3000)
    iwae = RenyiELBO(alpha=0.0, num_particles=10)
    losses = jax.vmap(lambda k: iwae.loss(k, params, normal_model, normal_guide))(keys)
    log_evidence = stats.norm(0, math.sqrt(2)).logpdf(X_OBS)
    elbo = analytic_elbo(0.0, 1.5)
    bound = -float(jnp.mean(losses))
    assert elbo + 0.05 < bound < log_evidence


def test_renyi_rejects_alpha_one_and_particles_must_be_positive():
    with pytest.raises(ValueError, match="alpha=1"):
        RenyiELBO(alpha=1.0)
    with pytest.raises(ValueError, match="num_particles"):
        Trace_ELBO(num_particles=0)


def _plated_model(x):
    with probnn.plate("data", x.shape[0], subsample_size=x.shape[0] // 2 or 1):
        z = probnn.sample("z", dist.Normal(0.0, 1.0))
        probnn.sample("x", dist.Normal(z, 1.0), obs=probnn.subsample(x, event_dim=0))


def _plated_prior_guide(x):
    with probnn.plate("data", x.shape[0], subsample_size=x.shape[0] // 2 or 1):
        probnn.sample("z", dist.Normal(0.0, 1.0))


def test_renyi_bound_is_local_to_the_members_of_a_plate_enclosing_the_model():
    # guide = prior: each member's log weight is log N(x_i | z_ik, 1); the local
    # bound is sum_i E[log mean_k N(x_i | z_ik, 1)], which a numpy Monte Carlo
    # estimate on independent draws gives; the bound of the whole batch's
    # joint weight would be far lower
    x = jnp.full(20, 1.5)
    k = 5
    elbo = RenyiELBO(alpha=0.0, num_particles=k)
    keys = jax.random.split(jax.random.PRNGKey(3), 400)
    losses = jax.jit(
        jax.vmap(lambda key: elbo.loss(key, {}, _plated_model, _plated_prior_guide, x))
    )(keys)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200_000, k))
    member = np.mean(np.log(np.mean(stats.norm.pdf(1.5, loc=z, scale=1.0), axis=1)))
    expected = -x.shape[0] * member
    standard_error = float(jnp.std(losses)) / math.sqrt(losses.shape[0])
    assert abs(float(jnp.mean(losses)) - expected) < 4 * standard_error + 0.01
    # the bound of one weight for the whole batch (what a global bound gives)
    draws = rng.standard_normal((20_000, k, x.shape[0]))
    joint = np.sum(stats.norm.logpdf(1.5, loc=draws, scale=1.0), axis=2)
    global_bound = np.mean(np.log(np.mean(np.exp(joint), axis=1)))
    assert -global_bound > expected + 3.0


def test_renyi_single_particle_elbo_keeps_the_common_plate_and_its_scale():
    x = jnp.arange(6.0)
    elbo = RenyiELBO(num_particles=3)
    model = probnn.handlers.seed(_plated_model, 0)
    guide = probnn.handlers.seed(_plated_prior_guide, 0)
    weights, scale = elbo._single_particle_elbo(
        model, guide, {}, (x,), {}, jax.random.PRNGKey(1)
    )
    assert weights.shape == (3,)
    assert float(scale) == pytest.approx(2.0)
    # guide = prior, so a member's weight is its likelihood term alone
    from probnn.infer.elbo import get_traces

    model_trace, _ = get_traces(jax.random.PRNGKey(1), {}, model, guide, (x,), {})
    obs = model_trace["x"]
    np.testing.assert_allclose(weights, obs["fn"].log_prob(obs["value"]), rtol=1e-6)


def test_renyi_with_identical_members_is_unchanged_by_subsampling():
    def model(n):
        with probnn.plate("rows", 40, subsample_size=n):
            probnn.sample("z", dist.Normal(0.0, 1.0))
            probnn.sample("y", dist.Bernoulli(0.6), obs=1)

    def guide(n):
        with probnn.plate("rows", 40, subsample_size=n):
            probnn.sample("z", dist.Normal(0.0, 1.0))

    elbo = RenyiELBO(num_particles=4)
    full = elbo.loss(jax.random.PRNGKey(0), {}, model, guide, 40)
    part = elbo.loss(jax.random.PRNGKey(0), {}, model, guide, 5)
    assert float(full) == pytest.approx(-40 * math.log(0.6), rel=1e-6)
    assert float(part) == pytest.approx(float(full), rel=1e-6)


def test_renyi_refuses_a_subsampled_plate_that_leaves_a_site_out():
    def model():
        probnn.sample("g", dist.Normal(0.0, 1.0))
        with probnn.plate("rows", 10, subsample_size=3):
            probnn.sample("y", dist.Normal(0.0, 1.0), obs=jnp.zeros(3))

    def guide():
        probnn.sample("g", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="plate 'rows' is subsampled"):
        RenyiELBO().loss(jax.random.PRNGKey(0), {}, model, guide)


# -- mutable state ----------------------------------------------------------------


def stateful_model():
    z = probnn.sample("z", dist.Normal(0.0, 1.0))
    state = probnn.mutable(
        "stats", {"mean": jnp.zeros(()), "count": jnp.zeros((), jnp.int32)}
    )
    state["mean"] = 0.5 * state["mean"] + 0.5 * z
    state["count"] = state["count"] + 1
    probnn.sample("x", dist.Normal(z, 1.0), obs=X_OBS)


@pytest.mark.parametrize("vectorize", [True, False])
def test_mutable_state_with_particles_keeps_the_mean_of_floats(vectorize):
    params = {"loc": 0.4, "scale": 0.7, "stats": {"mean": 2.0, "count": 5}}
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=vectorize)
    out = elbo.loss_with_mutable_state(
        jax.random.PRNGKey(0), params, stateful_model, normal_guide
    )
    # replay each particle's z by hand: the same keys are split the same way
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    draws = []
    for key in keys:
        _, guide_key = jax.random.split(key)
        tr = probnn.handlers.trace(
            probnn.handlers.substitute(
                probnn.handlers.seed(normal_guide, guide_key), data=params
            )
        ).get_trace()
        draws.append(float(tr["z"]["value"]))
    expected_mean = np.mean([0.5 * 2.0 + 0.5 * z for z in draws])
    assert float(out["mutable_state"]["stats"]["mean"]) == pytest.approx(
        expected_mean, rel=1e-5
    )
    assert int(out["mutable_state"]["stats"]["count"]) == 6
    # the caller's state is not mutated
    assert params["stats"] == {"mean": 2.0, "count": 5}


class _ScoredNormal(dist.Normal):
    """A Normal whose draws are differentiable in loc and scale but which
    declares itself not reparameterizable: the ELBOs must then use the score
    function alone (adding the pathwise gradient to it would be biased)."""

    has_rsample = False


@pytest.mark.parametrize("elbo", [Trace_ELBO(), TraceMeanField_ELBO()])
def test_non_reparameterized_draws_give_an_unbiased_gradient(elbo):
    # model z ~ N(0, 1), guide z ~ N(m, s): -ELBO = (m^2 + s^2) / 2 - log s + c,
    # so d/dm = m and d/ds = s - 1 / s
    m, s = 0.7, 1.6

    def model():
        probnn.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        probnn.sample("z", _ScoredNormal(probnn.param("m", m), probnn.param("s", s)))

    params = {"m": jnp.asarray(m), "s": jnp.asarray(s)}
    grad = jax.grad(lambda p, k: elbo.loss(k, p, model, guide))
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    draws = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(params, keys)
    for name, exact in [("m", m), ("s", s - 1.0 / s)]:
        values = np.asarray(draws[name])
        error = abs(values.mean() - exact)
        assert error < 5 * values.std() / math.sqrt(len(values)), (name, error)
