"""More exact-enumeration checks: guide-side enumeration, a long HMM against a
hand-written forward algorithm, reversed scans, enumerated log_density and
potential_energy, infer_discrete on nested and reversed scans and on a
global-plus-local mixture, the error paths, and the HMM example.

Every expected value is computed independently of probnn: the joint
assignments of the discrete latents are listed with itertools.product (or,
for the long HMM, summed by a forward recursion written here) and the
densities are written out with jax.scipy."""

import importlib.util
import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

import probnn
import probnn.contrib.funsor
import probnn.distributions as dist
import probnn.handlers
import probnn.infer
import probnn.infer.util
from probnn.control_flow import scan
from probnn.distributions import constraints
from probnn.handlers import config_enumerate, substitute, trace
from probnn.infer import TraceEnum_ELBO, infer_discrete
from probnn.infer.util import log_density, potential_energy

ROOT = pathlib.Path(__file__).resolve().parents[2]
PARALLEL = {"enumerate": "parallel"}
KEY = jax.random.PRNGKey(0)
RTOL = 1e-4
ATOL = 1e-4
METHODS = ["sequential", "parallel"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def no_guide(*args, **kwargs):
    pass


def product_rows(num_states, num_vars):
    """Every joint assignment of `num_vars` discrete variables taking values
    0..num_states-1, one per row (numpy, shape (num_states ** num_vars,
    num_vars))."""
    rows = list(itertools.product(range(num_states), repeat=num_vars))
    return np.array(rows, dtype=np.int32).reshape(len(rows), num_vars)


def bernoulli_logpmf(value, p):
    return jnp.where(value == 1, jnp.log(p), jnp.log1p(-p))


def check_close(actual, expected, rtol=RTOL, atol=ATOL, msg=""):
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol, err_msg=msg
    )


def check_grads(actual, expected, rtol=RTOL, atol=ATOL):
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert np.all(np.isfinite(np.asarray(actual[name]))), name
        check_close(actual[name], value, rtol, atol, msg=f"gradient wrt {name}")


def std_normal(seed_, shape, scale=1.0):
    rng = np.random.default_rng(seed_)
    return jnp.asarray(scale * rng.standard_normal(shape), dtype=jnp.float32)


def elbo_value_and_grad(model, guide, params, *args, max_plate_nesting=None):
    elbo = TraceEnum_ELBO(max_plate_nesting=max_plate_nesting)

    def loss(p, a):
        return elbo.loss(KEY, p, model, guide, *a)

    return jax.jit(jax.value_and_grad(loss))(params, args)


def unique_argmax(rows, log_joints, margin=1e-2):
    """The row with the largest log joint; the test data are chosen so that
    it wins by at least `margin`."""
    log_joints = np.asarray(log_joints)
    order = np.argsort(-log_joints)
    assert log_joints[order[0]] - log_joints[order[1]] > margin
    return rows[order[0]]


# ---------------------------------------------------------------------------
# 1. Guide-side enumeration
# ---------------------------------------------------------------------------

# (a) global guide site c, model-side local z per datum
GLOBAL_Y = jnp.array([0.8, -1.1, 1.9, 0.2])
Z_LOGITS_BY_C = jnp.array([[1.0, -0.5, 0.2], [-0.7, 0.4, 0.9]])
PRIOR_C = 0.4


def global_guide_model(y):
    mu = probnn.param("mu", jnp.zeros(3))
    c = probnn.sample("c", dist.Bernoulli(probs=PRIOR_C))
    c = c.astype(jnp.int32)
    with probnn.plate("data", y.shape[0]):
        z = probnn.sample(
            "z", dist.Categorical(logits=Z_LOGITS_BY_C[c]), infer=PARALLEL
        )
        probnn.sample("y", dist.Normal(mu[z], 1.0), obs=y)


def global_guide(y):
    p = probnn.param("p", 0.5, constraint=constraints.unit_interval)
    probnn.sample("c", dist.Bernoulli(probs=p), infer=PARALLEL)


def global_guide_brute_loss(params, y):
    n = y.shape[0]
    rows = product_rows(3, n)  # z_1..z_n
    log_pz = jax.nn.log_softmax(Z_LOGITS_BY_C, axis=-1)
    elbo = 0.0
    for c, q_c in ((0, 1.0 - params["p"]), (1, params["p"])):
        log_joints = jnp.sum(
            log_pz[c][rows] + norm.logpdf(y[None, :], params["mu"][rows], 1.0), -1
        )
        log_p_c_y = bernoulli_logpmf(c, PRIOR_C) + logsumexp(log_joints)
        elbo = elbo + q_c * (log_p_c_y - jnp.log(q_c))
    return -elbo


def test_guide_enumerated_global_site_loss_and_gradient():
    params = {"p": jnp.array(0.3), "mu": jnp.array([-1.2, 0.3, 1.5])}
    loss, grads = elbo_value_and_grad(
        global_guide_model, global_guide, params, GLOBAL_Y, max_plate_nesting=1
    )
    expected, expected_grads = jax.value_and_grad(global_guide_brute_loss)(
        params, GLOBAL_Y
    )
    check_close(loss, expected)
    check_grads(grads, expected_grads)
    assert abs(float(expected_grads["p"])) > 1e-2
    # default max_plate_nesting gives the same
    loss_default, _ = elbo_value_and_grad(
        global_guide_model, global_guide, params, GLOBAL_Y
    )
    check_close(loss_default, expected)


# (b) local guide sites z_i in a plate
LOCAL_Y = jnp.array([-1.3, 0.2, 1.7])
LOCAL_MU = jnp.array([-1.0, 0.0, 1.5])


def local_guide_model(y):
    w = probnn.param("w", jnp.ones(3) / 3, constraint=constraints.simplex)
    with probnn.plate("data", y.shape[0]):
        z = probnn.sample("z", dist.Categorical(probs=w))
        probnn.sample("y", dist.Normal(LOCAL_MU[z], 1.0), obs=y)


def local_guide(y):
    q = probnn.param("q", jnp.ones((y.shape[0], 3)) / 3, constraint=constraints.simplex)
    with probnn.plate("data", y.shape[0]):
        probnn.sample("z", dist.Categorical(probs=q), infer=PARALLEL)


def local_guide_brute_loss(params, y):
    q, w = params["q"], params["w"]
    inner = jnp.log(w)[None, :] + norm.logpdf(y[:, None], LOCAL_MU[None, :], 1.0)
    return -jnp.sum(q * (inner - jnp.log(q)))


def local_guide_joint_expectation(params, y):
    """E_q[log p(z, y) - log q(z)] summed over every joint assignment of
    z_1..z_n (the factorised formula above must equal it on the simplex)."""
    q, w = params["q"], params["w"]
    n = y.shape[0]
    rows = product_rows(3, n)
    idx = np.arange(n)[None, :]
    log_q = jnp.sum(jnp.log(q)[idx, rows], -1)
    log_p = jnp.sum(jnp.log(w)[rows] + norm.logpdf(y[None, :], LOCAL_MU[rows], 1.0), -1)
    return -jnp.sum(jnp.exp(log_q) * (log_p - log_q))


def test_guide_enumerated_local_sites_loss_and_gradient():
    params = {
        "q": jnp.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.25, 0.65]]),
        "w": jnp.array([0.5, 0.2, 0.3]),
    }
    loss, grads = elbo_value_and_grad(
        local_guide_model, local_guide, params, LOCAL_Y, max_plate_nesting=1
    )
    expected, expected_grads = jax.value_and_grad(local_guide_brute_loss)(
        params, LOCAL_Y
    )
    check_close(expected, local_guide_joint_expectation(params, LOCAL_Y))
    check_close(loss, expected)
    check_grads(grads, expected_grads)


# (c) enumeration inside a guide scan is not supported
def test_guide_enumerated_site_inside_scan_raises():
    def model(ys):
        def step(prev, y):
            x = probnn.sample(
                "x_scan", dist.Categorical(logits=jnp.zeros((2, 2))[prev])
            )
            probnn.sample("y", dist.Normal(x.astype(jnp.float32), 1.0), obs=y)
            return x, None

        scan(step, jnp.array(0, dtype=jnp.int32), ys)

    def guide(ys):
        probs = probnn.param(
            "probs", jnp.array([0.4, 0.6]), constraint=constraints.simplex
        )

        def step(carry, y):
            probnn.sample("x_scan", dist.Categorical(probs=probs), infer=PARALLEL)
            return carry, None

        scan(step, jnp.array(0, dtype=jnp.int32), ys)

    elbo = TraceEnum_ELBO(max_plate_nesting=0)
    with pytest.raises(NotImplementedError, match="x_scan"):
        elbo.loss(KEY, {}, model, guide, jnp.array([0.1, -0.4, 0.9]))


# ---------------------------------------------------------------------------
# 2. Long HMM (T = 1000, K = 8) against a hand-written forward algorithm
# ---------------------------------------------------------------------------

T_LONG = 1000
K_LONG = 8


def long_hmm_model(ys, method):
    K = K_LONG
    init_logits = probnn.param("init_logits", jnp.zeros(K))
    trans_logits = probnn.param("trans_logits", jnp.zeros((K, K)))
    locs = probnn.param("locs", jnp.zeros(K))
    scales = probnn.param("scales", jnp.ones(K), constraint=constraints.positive)
    # the start is the pseudo-state K, whose transition row is init_logits
    table = jnp.concatenate([trans_logits, init_logits[None]], axis=0)

    def step(prev, y):
        x = probnn.sample("x", dist.Categorical(logits=table[prev]), infer=PARALLEL)
        probnn.sample("y", dist.Normal(locs[x], scales[x]), obs=y)
        return x, None

    scan(step, jnp.array(K, dtype=jnp.int32), ys, enum_method=method)


def forward_log_marginal(params, ys):
    log_init = jax.nn.log_softmax(params["init_logits"])
    log_trans = jax.nn.log_softmax(params["trans_logits"], axis=-1)

    def emission(y):
        return norm.logpdf(y, params["locs"], params["scales"])

    def step(log_alpha, y):
        log_alpha = logsumexp(log_alpha[:, None] + log_trans, axis=0) + emission(y)
        return log_alpha, None

    log_alpha, _ = jax.lax.scan(step, log_init + emission(ys[0]), ys[1:])
    return logsumexp(log_alpha)


def long_hmm_problem():
    rng = np.random.default_rng(2024)
    K = K_LONG
    trans = 0.2 * np.ones((K, K)) / K + 0.8 * np.eye(K)
    trans = trans / trans.sum(-1, keepdims=True)
    states = np.empty(T_LONG, dtype=np.int64)
    states[0] = rng.integers(K)
    for t in range(1, T_LONG):
        states[t] = rng.choice(K, p=trans[states[t - 1]])
    true_locs = np.linspace(-3.5, 3.5, K)
    ys = true_locs[states] + 0.6 * rng.standard_normal(T_LONG)
    params = {
        "init_logits": jnp.asarray(0.3 * rng.standard_normal(K), jnp.float32),
        "trans_logits": jnp.asarray(
            np.log(trans) + 0.3 * rng.standard_normal((K, K)), jnp.float32
        ),
        "locs": jnp.asarray(true_locs + 0.2 * rng.standard_normal(K), jnp.float32),
        "scales": jnp.asarray(0.5 + 0.3 * rng.random(K), jnp.float32),
    }
    return params, jnp.asarray(ys, jnp.float32)


@pytest.fixture(scope="module")
def long_hmm_expected():
    params, ys = long_hmm_problem()
    value, grads = jax.jit(
        jax.value_and_grad(lambda p, y: -forward_log_marginal(p, y))
    )(params, ys)
    return params, ys, value, grads


@pytest.mark.parametrize("method", METHODS)
def test_long_hmm_matches_forward_algorithm(method, long_hmm_expected):
    params, ys, expected, expected_grads = long_hmm_expected
    elbo = TraceEnum_ELBO(max_plate_nesting=0)

    def loss(p, y):
        return elbo.loss(KEY, p, long_hmm_model, no_guide, y, method)

    value, grads = jax.jit(jax.value_and_grad(loss))(params, ys)
    check_close(value, expected, rtol=1e-4, atol=0.0)
    assert set(grads) == set(expected_grads)
    for name, g in expected_grads.items():
        g = np.asarray(g)
        assert np.all(np.isfinite(np.asarray(grads[name]))), name
        check_close(
            grads[name],
            g,
            rtol=2e-3,
            atol=2e-3 * float(np.max(np.abs(g))),
            msg=f"gradient wrt {name}",
        )


# ---------------------------------------------------------------------------
# 3. reverse=True enumerated scan
# ---------------------------------------------------------------------------

K_REV = 3
T_REV = 4


def make_reverse_hmm(history, method, num_states=K_REV):
    """The chain starts at the last element (from the fixed state 0) and runs
    to the first; the transition logits depend on the last `history` states
    visited."""

    def model(ys):
        trans = probnn.param("trans", jnp.zeros((num_states,) * (history + 1)))
        locs = probnn.param("locs", jnp.zeros(num_states))

        def step(carry, y):
            logits = trans[carry] if history == 1 else trans[carry[0], carry[1]]
            x = probnn.sample("x", dist.Categorical(logits=logits), infer=PARALLEL)
            probnn.sample("y", dist.Normal(locs[x], 1.0), obs=y)
            return (x if history == 1 else (carry[1], x)), None

        zero = jnp.array(0, dtype=jnp.int32)
        init = zero if history == 1 else (zero, zero)
        scan(step, init, ys, reverse=True, history=history, enum_method=method)

    return model


def reverse_hmm_log_joints(params, ys, history):
    """(paths, log p(path, ys)) with paths indexed by position t in ys; the
    chain visits t = T-1, ..., 0."""
    num_states = params["locs"].shape[0]
    T = ys.shape[0]
    paths = product_rows(num_states, T)
    visited = paths[:, ::-1]  # in the order the chain visits them
    padded = np.concatenate(
        [np.zeros((paths.shape[0], history), np.int32), visited], axis=1
    )
    log_trans = jax.nn.log_softmax(params["trans"], axis=-1)
    total = 0.0
    for s in range(T):
        t = T - 1 - s
        prev = tuple(padded[:, s + j] for j in range(history))
        total = total + log_trans[prev + (visited[:, s],)]
        total = total + norm.logpdf(ys[t], params["locs"][visited[:, s]], 1.0)
    return paths, total


def reverse_hmm_params(history, seed_):
    return {
        "trans": std_normal(seed_, (K_REV,) * (history + 1)),
        "locs": jnp.array([-1.5, 0.2, 1.4]),
    }


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("history", [1, 2])
def test_reverse_scan_matches_brute_force(history, method):
    params = reverse_hmm_params(history, seed_=10 + history)
    ys = std_normal(20 + history, (T_REV,), scale=1.5)

    def brute_loss(p, y):
        return -logsumexp(reverse_hmm_log_joints(p, y, history)[1])

    loss, grads = elbo_value_and_grad(
        make_reverse_hmm(history, method), no_guide, params, ys, max_plate_nesting=0
    )
    expected, expected_grads = jax.value_and_grad(brute_loss)(params, ys)
    check_close(loss, expected)
    check_grads(grads, expected_grads)
    # the same chain run forward gives another value: the direction matters
    assert abs(float(brute_loss(params, ys[::-1]) - expected)) > 1e-3


# ---------------------------------------------------------------------------
# 4. log_density and potential_energy
# ---------------------------------------------------------------------------


def forward_hmm(ys):
    trans = probnn.param("trans", jnp.zeros((3, 3)))
    locs = probnn.param("locs", jnp.zeros(3))

    def step(prev, y):
        x = probnn.sample("x", dist.Categorical(logits=trans[prev]), infer=PARALLEL)
        probnn.sample("y", dist.Normal(locs[x], 0.8), obs=y)
        return x, None

    scan(step, jnp.array(1, dtype=jnp.int32), ys, enum_method="sequential")


def test_log_density_hmm_scan_matches_brute_force():
    params = {"trans": std_normal(5, (3, 3)), "locs": jnp.array([-1.0, 0.4, 1.3])}
    ys = std_normal(6, (5,), scale=1.2)
    paths = product_rows(3, 5)
    log_trans = jax.nn.log_softmax(params["trans"], axis=-1)
    prev = np.concatenate([np.ones((paths.shape[0], 1), np.int32), paths[:, :-1]], 1)
    log_joints = jnp.sum(
        log_trans[prev, paths] + norm.logpdf(ys[None], params["locs"][paths], 0.8), -1
    )
    expected = logsumexp(log_joints)
    value, tr = log_density(forward_hmm, (ys,), {}, params)
    assert jnp.shape(value) == ()
    check_close(value, expected)
    jitted = jax.jit(lambda p, y: log_density(forward_hmm, (y,), {}, p)[0])
    check_close(jitted(params, ys), expected)
    assert "x" in tr and "y" in tr


MIX_Y = jnp.array([-0.9, 0.4, 2.1, 1.2])
MIX_W = jnp.array([0.2, 0.5, 0.3])
MIX_OFFSETS = jnp.array([-1.5, 0.0, 1.5])


def continuous_mixture_model(y):
    mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
    with probnn.plate("data", y.shape[0]):
        z = probnn.sample("z", dist.Categorical(probs=MIX_W), infer=PARALLEL)
        probnn.sample("y", dist.Normal(mu + MIX_OFFSETS[z], 1.0), obs=y)


def continuous_mixture_log_joint(mu, y, scale=1.0):
    rows = product_rows(3, y.shape[0])
    log_joints = jnp.sum(
        jnp.log(MIX_W)[rows] + norm.logpdf(y[None], mu + MIX_OFFSETS[rows], scale), -1
    )
    return norm.logpdf(mu, 0.0, 1.0) + logsumexp(log_joints)


def test_potential_energy_sums_out_enumerated_sites():
    mu = jnp.array(0.35)
    value = potential_energy(continuous_mixture_model, (MIX_Y,), {}, {"mu": mu})
    check_close(value, -continuous_mixture_log_joint(mu, MIX_Y))
    grad = jax.grad(
        lambda m: potential_energy(continuous_mixture_model, (MIX_Y,), {}, {"mu": m})
    )(mu)
    expected_grad = jax.grad(lambda m: -continuous_mixture_log_joint(m, MIX_Y))(mu)
    check_close(grad, expected_grad)


def test_potential_energy_with_enumeration_keeps_log_jacobian():
    def model(y):
        mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
        s = probnn.sample("s", dist.LogNormal(0.0, 0.5))
        with probnn.plate("data", y.shape[0]):
            z = probnn.sample("z", dist.Categorical(probs=MIX_W), infer=PARALLEL)
            probnn.sample("y", dist.Normal(mu + MIX_OFFSETS[z], s), obs=y)

    mu, u = jnp.array(-0.2), jnp.array(0.3)  # u = log s, unconstrained
    s = jnp.exp(u)
    log_prior_s = norm.logpdf(u, 0.0, 0.5) - u  # LogNormal(0, 0.5) density at s
    expected = -(continuous_mixture_log_joint(mu, MIX_Y, s) + log_prior_s + u)
    value = potential_energy(model, (MIX_Y,), {}, {"mu": mu, "s": u})
    check_close(value, expected)


# ---------------------------------------------------------------------------
# 5. NumPyro's import path
# ---------------------------------------------------------------------------


def test_contrib_funsor_exports():
    funsor = probnn.contrib.funsor
    assert funsor.config_enumerate is probnn.handlers.config_enumerate
    assert funsor.enum is probnn.handlers.enum
    assert funsor.infer_discrete is probnn.infer.infer_discrete
    assert funsor.log_density is probnn.infer.util.log_density
    assert funsor.log_density is probnn.infer.log_density
    assert set(funsor.__all__) >= {
        "config_enumerate",
        "enum",
        "infer_discrete",
        "log_density",
    }


# ---------------------------------------------------------------------------
# 6. infer_discrete at temperature 0: nested and reversed scans
# ---------------------------------------------------------------------------

NESTED_PARAMS = {
    "trans_x": jnp.array([[0.6, -0.4], [-0.2, 0.5]]),
    "trans_w": jnp.array([[[0.3, -0.1], [-0.5, 0.4]], [[0.2, 0.6], [-0.3, -0.2]]]),
    "locs_x": jnp.array([-0.5, 0.5]),
    "locs_w": jnp.array([-2.0, 2.0]),
}


def make_nested_decode_model(method):
    def model(outer_obs, inner_obs):  # (T_out,), (T_out, T_in)
        trans_x = probnn.param("trans_x", jnp.zeros((2, 2)))
        trans_w = probnn.param("trans_w", jnp.zeros((2, 2, 2)))
        locs_x = probnn.param("locs_x", jnp.zeros(2))
        locs_w = probnn.param("locs_w", jnp.zeros(2))

        def outer(x_prev, obs):
            o, row = obs
            x = probnn.sample(
                "x", dist.Categorical(logits=trans_x[x_prev]), infer=PARALLEL
            )
            probnn.sample("o", dist.Normal(locs_x[x], 1.0), obs=o)

            def inner(w_prev, v):
                w = probnn.sample(
                    "w", dist.Categorical(logits=trans_w[x, w_prev]), infer=PARALLEL
                )
                probnn.sample("v", dist.Normal(locs_w[w], 1.0), obs=v)
                return w, None

            scan(inner, jnp.array(0, dtype=jnp.int32), row, enum_method=method)
            return x, None

        scan(
            outer,
            jnp.array(0, dtype=jnp.int32),
            (outer_obs, inner_obs),
            enum_method=method,
        )

    return model


def nested_brute_log_joints(params, outer_obs, inner_obs):
    t_out, t_in = inner_obs.shape
    rows = product_rows(2, t_out + t_out * t_in)
    m = rows.shape[0]
    x = rows[:, :t_out]
    w = rows[:, t_out:].reshape(m, t_out, t_in)
    log_tx = jax.nn.log_softmax(params["trans_x"], axis=-1)
    log_tw = jax.nn.log_softmax(params["trans_w"], axis=-1)
    total = 0.0
    x_prev = np.zeros(m, np.int32)
    for i in range(t_out):
        total = total + log_tx[x_prev, x[:, i]]
        total = total + norm.logpdf(outer_obs[i], params["locs_x"][x[:, i]], 1.0)
        w_prev = np.zeros(m, np.int32)
        for j in range(t_in):
            total = total + log_tw[x[:, i], w_prev, w[:, i, j]]
            total = total + norm.logpdf(
                inner_obs[i, j], params["locs_w"][w[:, i, j]], 1.0
            )
            w_prev = w[:, i, j]
        x_prev = x[:, i]
    return rows, total


@pytest.mark.parametrize("method", METHODS)
def test_infer_discrete_map_nested_scan(method):
    outer_obs = jnp.array([0.3, -0.8])
    inner_obs = jnp.array([[1.7, -0.4], [-2.3, 2.6]])
    rows, log_joints = nested_brute_log_joints(NESTED_PARAMS, outer_obs, inner_obs)
    best = unique_argmax(rows, log_joints)

    decoded = infer_discrete(
        substitute(make_nested_decode_model(method), data=NESTED_PARAMS),
        first_available_dim=-1,
        temperature=0,
        rng_key=jax.random.PRNGKey(3),
    )

    def run(o, v):
        tr = trace(decoded).get_trace(o, v)
        return tr["x"]["value"], tr["w"]["value"]

    x, w = jax.jit(run)(outer_obs, inner_obs)
    assert jnp.shape(x) == (2,)
    assert jnp.shape(w) == (2, 2)
    np.testing.assert_array_equal(np.asarray(x), best[:2])
    np.testing.assert_array_equal(np.asarray(w), best[2:].reshape(2, 2))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("history", [1, 2])
def test_infer_discrete_map_reverse_scan(history, method):
    rng = np.random.default_rng(50 + history)
    params = {
        "trans": jnp.asarray(0.5 * rng.standard_normal((K_REV,) * (history + 1))),
        "locs": jnp.array([-3.0, 0.0, 3.0]),
    }
    ys = jnp.asarray(
        np.array([-3.0, 0.0, 3.0])[[2, 0, 0, 1]] + 0.8 * rng.standard_normal(T_REV),
        jnp.float32,
    )
    paths, log_joints = reverse_hmm_log_joints(params, ys, history)
    best = unique_argmax(paths, log_joints)

    decoded = infer_discrete(
        substitute(make_reverse_hmm(history, method), data=params),
        first_available_dim=-1,
        temperature=0,
        rng_key=jax.random.PRNGKey(4),
    )
    x = jax.jit(lambda y: trace(decoded).get_trace(y)["x"]["value"])(ys)
    assert jnp.shape(x) == (T_REV,)
    np.testing.assert_array_equal(np.asarray(x), best)


# ---------------------------------------------------------------------------
# 7. infer_discrete at temperature 1: global c shared by a plate of local z
# ---------------------------------------------------------------------------

SHARED_Y = jnp.array([0.5, -0.3, 1.2])
SHARED_Z_LOGITS = jnp.array([[1.2, -1.2], [-1.0, 1.0]])
SHARED_MU = jnp.array([-1.0, 1.0])
SHARED_PRIOR_C = 0.45


def shared_mixture_model(y):
    c = probnn.sample("c", dist.Bernoulli(probs=SHARED_PRIOR_C), infer=PARALLEL)
    c = c.astype(jnp.int32)
    with probnn.plate("data", y.shape[0]):
        z = probnn.sample(
            "z", dist.Categorical(logits=SHARED_Z_LOGITS[c]), infer=PARALLEL
        )
        probnn.sample("y", dist.Normal(SHARED_MU[z], 1.0), obs=y)


def test_infer_discrete_samples_shared_global_and_local():
    n, num_draws = SHARED_Y.shape[0], 3000
    rows = product_rows(2, 1 + n)  # c, z_1..z_n
    c, z = rows[:, 0], rows[:, 1:]
    log_pz = jax.nn.log_softmax(SHARED_Z_LOGITS, axis=-1)
    log_joints = bernoulli_logpmf(c, SHARED_PRIOR_C) + jnp.sum(
        log_pz[c[:, None], z] + norm.logpdf(SHARED_Y[None], SHARED_MU[z], 1.0), -1
    )
    posterior = np.asarray(jnp.exp(log_joints - logsumexp(log_joints)), np.float64)
    exact_c1 = posterior[c == 1].sum()
    assert 0.1 < exact_c1 < 0.9  # informative

    def draw(key):
        sampler = infer_discrete(
            shared_mixture_model, first_available_dim=-2, temperature=1, rng_key=key
        )
        tr = trace(sampler).get_trace(SHARED_Y)
        return tr["c"]["value"], tr["z"]["value"]

    keys = jax.random.split(jax.random.PRNGKey(7), num_draws)
    c_draws, z_draws = jax.jit(jax.vmap(draw))(keys)
    c_draws, z_draws = np.asarray(c_draws), np.asarray(z_draws)
    assert c_draws.shape == (num_draws,)
    assert z_draws.shape == (num_draws, n)
    assert set(np.unique(c_draws)) <= {0.0, 1.0}

    # marginal of c
    freq_c1 = np.mean(c_draws == 1)
    se = np.sqrt(exact_c1 * (1 - exact_c1) / num_draws)
    assert abs(freq_c1 - exact_c1) <= 5 * se, (freq_c1, exact_c1)

    # joint of (c, z_1..z_n): rows are coded in product_rows' order
    codes = np.concatenate(
        [c_draws[:, None].astype(np.int64), z_draws.astype(np.int64)], 1
    ) @ (2 ** np.arange(n, -1, -1))
    freq = np.bincount(codes, minlength=2 ** (1 + n)) / num_draws
    tol = 5 * np.sqrt(posterior * (1 - posterior) / num_draws) + 1e-3
    assert np.all(np.abs(freq - posterior) <= tol), (freq, posterior)


# ---------------------------------------------------------------------------
# 8. Errors
# ---------------------------------------------------------------------------


def small_mixture(y):
    z = probnn.sample("z", dist.Bernoulli(probs=0.3), infer=PARALLEL)
    probnn.sample("y", dist.Normal(2.0 * z, 1.0), obs=y)


def test_infer_discrete_rejects_other_temperatures():
    with pytest.raises(ValueError, match="temperature"):
        infer_discrete(small_mixture, temperature=0.5, rng_key=KEY)


def test_infer_discrete_temperature_one_needs_rng_key():
    with pytest.raises(ValueError, match="rng_key"):
        infer_discrete(small_mixture, temperature=1)


def test_config_enumerate_rejects_unknown_default():
    with pytest.raises(ValueError, match="sideways"):
        config_enumerate(default="sideways")
    with pytest.raises(ValueError):
        config_enumerate(small_mixture, default="sideways")
    # NumPyro's other mark is accepted (its sites are drawn, not summed out)
    assert config_enumerate(default="sequential").default == "sequential"


def test_site_marked_sequential_raises_naming_site():
    def model(y):
        z = probnn.sample(
            "seq_site", dist.Bernoulli(probs=0.3), infer={"enumerate": "sequential"}
        )
        probnn.sample("y", dist.Normal(2.0 * z, 1.0), obs=y)

    for nesting in (0, None):
        elbo = TraceEnum_ELBO(max_plate_nesting=nesting)
        with pytest.raises(ValueError, match="seq_site"):
            elbo.loss(KEY, {}, model, no_guide, 1.0)


def test_scan_unknown_enum_method_raises():
    def model(ys):
        def step(prev, y):
            x = probnn.sample(
                "x", dist.Categorical(logits=jnp.zeros((2, 2))[prev]), infer=PARALLEL
            )
            probnn.sample("y", dist.Normal(x.astype(jnp.float32), 1.0), obs=y)
            return x, None

        scan(step, jnp.array(0, dtype=jnp.int32), ys, enum_method="fast")

    for nesting in (0, None):
        elbo = TraceEnum_ELBO(max_plate_nesting=nesting)
        with pytest.raises(ValueError, match="enum_method"):
            elbo.loss(KEY, {}, model, no_guide, jnp.array([0.2, -0.5, 1.0]))


def test_site_using_final_carry_of_enumerated_scan_raises():
    locs = jnp.array([-1.0, 1.0])

    def model(ys):
        def step(prev, y):
            x = probnn.sample(
                "x", dist.Categorical(logits=jnp.zeros((2, 2))[prev]), infer=PARALLEL
            )
            probnn.sample("y", dist.Normal(locs[x], 1.0), obs=y)
            return x, None

        last, _ = scan(step, jnp.array(0, dtype=jnp.int32), ys)
        probnn.sample("after", dist.Normal(locs[last], 1.0), obs=0.5)

    elbo = TraceEnum_ELBO(max_plate_nesting=0)
    with pytest.raises(ValueError, match="scan"):
        elbo.loss(KEY, {}, model, no_guide, jnp.array([0.2, -0.5, 1.0, 0.3]))


# ---------------------------------------------------------------------------
# 9. The HMM example
# ---------------------------------------------------------------------------


def load_example(name):
    spec = importlib.util.spec_from_file_location(
        f"probnn_example_{name}", ROOT / "examples" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hmm_enum_example_runs(tmp_path):
    example = load_example("hmm_enum")
    result = example.main(["--steps", "30", "--out", str(tmp_path)])
    for key in ("first_loss", "final_loss", "true_params_loss"):
        assert np.isfinite(result[key]), key
    assert result["final_loss"] < result["first_loss"]
    assert 0.0 <= result["accuracy"] <= 1.0
    assert (tmp_path / "states.png").is_file()
    assert (tmp_path / "loss.png").is_file()


# -- subsampled plates and structural errors --------------------------------------


def _scaled_mixture(structure, subsample, scale):
    """Enumerated models whose observations are identical within each plate,
    so that a subsample scaled up to the full size carries exactly the
    information of the full plate."""
    sizes = {"i": (4, 2), "j": (6, 3), "k": (5, 2)}

    def plate(name, dim=None):
        size, small = sizes[name]
        return probnn.plate(
            name, size, subsample_size=small if subsample else None, dim=dim
        )

    @config_enumerate
    @probnn.handlers.scale(scale=scale)
    def model(weights, locs):
        if structure == "global":  # z outside every plate, two plates below it
            z = probnn.sample("z", dist.Categorical(weights))
            with plate("i"):
                probnn.sample("u", dist.Normal(locs[z], 1.0), obs=0.3)
            with plate("j"):
                probnn.sample("v", dist.Normal(locs[z], 2.0), obs=-0.5)
        else:  # z local to a subsampled plate, nested plates below it
            with plate("i", dim=-3):
                z = probnn.sample("z", dist.Categorical(weights))
                with plate("j", dim=-2):
                    probnn.sample("u", dist.Normal(locs[z], 1.0), obs=0.3)
                    with plate("k", dim=-1):
                        probnn.sample("v", dist.Normal(locs[z], 2.0), obs=-0.5)

    return model


@pytest.mark.parametrize("structure", ["global", "local"])
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_subsampled_plates_scale_the_enumerated_sum(structure, scale):
    # NumPyro refuses enumeration with subsampled plates; probnn sums with
    # each plate's scale applied to its own factors, which on rows that are
    # all alike gives exactly the full model's loss and gradient
    args = (jnp.array([0.3, 0.7]), jnp.array([-1.0, 1.5]))

    def loss(subsample):
        model = _scaled_mixture(structure, subsample, scale)
        return lambda *a: TraceEnum_ELBO().loss(KEY, {}, model, lambda *_: None, *a)

    full, full_grad = jax.value_and_grad(loss(False), argnums=(0, 1))(*args)
    sub, sub_grad = jax.value_and_grad(loss(True), argnums=(0, 1))(*args)
    np.testing.assert_allclose(sub, full, rtol=1e-5)
    for a, b in zip(sub_grad, full_grad, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # the full model's value by hand
    w, m = args
    if structure == "global":
        per = np.log(w) + 4 * norm.logpdf(0.3, m, 1.0) + 6 * norm.logpdf(-0.5, m, 2.0)
        expected = logsumexp(per)
    else:
        per = np.log(w) + 6 * norm.logpdf(0.3, m, 1.0) + 30 * norm.logpdf(-0.5, m, 2.0)
        expected = 4 * logsumexp(per)
    np.testing.assert_allclose(full, -scale * expected, rtol=1e-5)


def test_guide_enumeration_less_global_than_model_is_a_value_error():
    # the model enumerates z outside the plate, the guide enumerates w in it,
    # and an observation in the plate depends on both
    @config_enumerate
    def model():
        z = probnn.sample("z", dist.Categorical(jnp.array([0.5, 0.5])))
        with probnn.plate("rows", 2):
            w = probnn.sample("w", dist.Categorical(jnp.array([0.3, 0.7])))
            probnn.sample("y", dist.Normal(z + w, 1.0), obs=jnp.array([0.0, 1.0]))

    @config_enumerate
    def guide():
        with probnn.plate("rows", 2):
            probnn.sample("w", dist.Categorical(jnp.array([0.6, 0.4])))

    with pytest.raises(
        ValueError, match=r"no more global than guide.*\['w'\].*\['z'\].*more global"
    ):
        TraceEnum_ELBO().loss(KEY, {}, model, guide)


def test_sites_in_crossing_plates_linked_by_enumeration_is_a_value_error():
    # x in plate "a" and y in plate "b" both enumerated, an observation in
    # both plates depends on both: no tree of plates sums it exactly
    @config_enumerate
    def model():
        a, b = probnn.plate("a", 2, dim=-1), probnn.plate("b", 3, dim=-2)
        with a:
            x = probnn.sample("x", dist.Bernoulli(0.3))
        with b:
            y = probnn.sample("y", dist.Bernoulli(0.6))
        with a, b:
            probnn.sample("obs", dist.Normal(x + y, 1.0), obs=jnp.zeros((3, 2)))

    with pytest.raises(ValueError, match=r"\['obs'\].*\['x', 'y'\].*intractable"):
        TraceEnum_ELBO().loss(KEY, {}, model, lambda: None)


@pytest.mark.parametrize("seed", range(3))
def test_log_density_of_an_explicitly_enumerated_model_sums_out(seed):
    """log_density(enum(model)) gives the marginal, as log_density(model)
    does: the enumerated values' densities are summed out, not added up."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(3))
    locs = rng.normal(size=3) * 2
    y = rng.normal(size=4)

    def model(y):
        z = probnn.sample("z", dist.Categorical(jnp.asarray(weights)), infer=PARALLEL)
        with probnn.plate("n", 4):
            probnn.sample("y", dist.Normal(jnp.asarray(locs)[z], 1.0), obs=y)

    expected = logsumexp(
        jnp.array(
            [np.log(w) + norm.logpdf(y, m, 1.0).sum() for w, m in zip(weights, locs)]
        )
    )
    wrapped = probnn.handlers.enum(model, first_available_dim=-2)
    for fn in (model, wrapped):
        value, _ = log_density(fn, (jnp.asarray(y),), {}, {})
        np.testing.assert_allclose(value, expected, rtol=RTOL, atol=ATOL)
