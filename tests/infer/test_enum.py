"""Exact discrete enumeration (TraceEnum_ELBO, log_density, scan, infer_discrete)
checked against brute force: every joint assignment of the discrete latents is
listed with itertools.product and the joint density is written out by hand with
jax.scipy, independently of probnn."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

import probnn
import probnn.distributions as dist
from probnn.control_flow import scan
from probnn.handlers import config_enumerate, seed, substitute, trace
from probnn.infer import SVI, TraceEnum_ELBO, infer_discrete
from probnn.infer.util import log_density

ENUM = {"enumerate": "parallel"}
KEY = jax.random.PRNGKey(0)
RTOL = 1e-4
ATOL = 1e-4
METHODS = ["sequential", "parallel"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def empty_guide(*args, **kwargs):
    pass


def assignments(num_states, num_vars):
    """All joint assignments of `num_vars` variables with `num_states` values,
    one per row: shape (num_states ** num_vars, num_vars)."""
    rows = list(itertools.product(range(num_states), repeat=num_vars))
    return jnp.array(rows, dtype=jnp.int32).reshape(len(rows), num_vars)


def enum_loss(model, params, *args, max_plate_nesting=None):
    elbo = TraceEnum_ELBO(max_plate_nesting=max_plate_nesting)

    def loss(p, a):
        return elbo.loss(KEY, p, model, empty_guide, *a)

    return jax.jit(loss)(params, args)


def enum_value_and_grad(model, params, *args, max_plate_nesting=None):
    elbo = TraceEnum_ELBO(max_plate_nesting=max_plate_nesting)

    def loss(p, a):
        return elbo.loss(KEY, p, model, empty_guide, *a)

    return jax.jit(jax.value_and_grad(loss))(params, args)


def brute_value_and_grad(log_marginal, params, *args):
    """Value and gradient of the brute-force negative log marginal."""
    return jax.jit(jax.value_and_grad(lambda p, a: -log_marginal(p, *a)))(params, args)


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol
    )


def assert_grads_close(actual, expected):
    assert set(actual) == set(expected)
    for name in expected:
        assert jnp.all(jnp.isfinite(actual[name])), name
        np.testing.assert_allclose(
            np.asarray(actual[name]),
            np.asarray(expected[name]),
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"gradient wrt {name}",
        )


def normal_data(seed_, shape, scale=1.5):
    rng = np.random.default_rng(seed_)
    return jnp.asarray(scale * rng.standard_normal(shape), dtype=jnp.float32)


def random_logits(seed_, shape):
    rng = np.random.default_rng(seed_)
    return jnp.asarray(rng.standard_normal(shape), dtype=jnp.float32)


# ---------------------------------------------------------------------------
# 1. Gaussian mixture
# ---------------------------------------------------------------------------

K_MIX = 3
SCALE_MIX = 0.8


def gmm_model(data):
    logits = probnn.param("logits", jnp.zeros(K_MIX))
    locs = probnn.param("locs", jnp.linspace(-1.0, 1.0, K_MIX))
    with probnn.plate("data", data.shape[0]):
        z = probnn.sample("z", dist.Categorical(logits=logits), infer=ENUM)
        probnn.sample("obs", dist.Normal(locs[z], SCALE_MIX), obs=data)


def gmm_params():
    return {
        "logits": jnp.array([0.3, -0.4, 0.2]),
        "locs": jnp.array([-1.2, 0.1, 1.7]),
    }


def gmm_brute_log_marginal(params, data):
    n = data.shape[0]
    z = assignments(K_MIX, n)  # (M, n)
    log_w = jax.nn.log_softmax(params["logits"])
    log_joint = log_w[z] + norm.logpdf(data[None, :], params["locs"][z], SCALE_MIX)
    return logsumexp(jnp.sum(log_joint, axis=-1))


GMM_DATA = jnp.array([-1.0, 0.3, 2.1, 1.4])


@pytest.mark.parametrize("max_plate_nesting", [1, None])
def test_gmm_loss_is_negative_log_marginal(max_plate_nesting):
    params = gmm_params()
    loss = enum_loss(gmm_model, params, GMM_DATA, max_plate_nesting=max_plate_nesting)
    expected = -gmm_brute_log_marginal(params, GMM_DATA)
    assert_close(loss, expected)


def test_gmm_gradient_matches_brute_force():
    params = gmm_params()
    loss, grads = enum_value_and_grad(gmm_model, params, GMM_DATA, max_plate_nesting=1)
    expected_loss, expected_grads = brute_value_and_grad(
        gmm_brute_log_marginal, params, GMM_DATA
    )
    assert_close(loss, expected_loss)
    assert_grads_close(grads, expected_grads)
    # the gradient is not trivially zero
    assert float(jnp.max(jnp.abs(expected_grads["locs"]))) > 1e-2


def test_gmm_loss_does_not_depend_on_rng_key():
    # exact enumeration with an empty guide is deterministic
    params = gmm_params()
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    a = elbo.loss(jax.random.PRNGKey(1), params, gmm_model, empty_guide, GMM_DATA)
    b = elbo.loss(jax.random.PRNGKey(2), params, gmm_model, empty_guide, GMM_DATA)
    assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert_close(a, -gmm_brute_log_marginal(params, GMM_DATA))


# ---------------------------------------------------------------------------
# config_enumerate
# ---------------------------------------------------------------------------


def test_config_enumerate_marks_only_unobserved_discrete_sites():
    def model(data):
        loc = probnn.sample("loc", dist.Normal(0.0, 1.0))
        with probnn.plate("data", data.shape[0]):
            z = probnn.sample("z", dist.Categorical(probs=jnp.array([0.4, 0.6])))
            probnn.sample("obs", dist.Normal(loc + z, 1.0), obs=data)
            probnn.sample("flag", dist.Bernoulli(probs=0.3), obs=jnp.ones(3))

    tr = trace(seed(config_enumerate(model), rng_seed=0)).get_trace(jnp.zeros(3))
    assert tr["z"]["infer"].get("enumerate") == "parallel"
    for name in ("loc", "obs", "flag"):
        assert tr[name].get("infer", {}).get("enumerate") is None, name
    # the same handler is exported from probnn.infer
    assert probnn.infer.config_enumerate is config_enumerate


def test_config_enumerate_as_decorator_gives_exact_marginal():
    @config_enumerate
    def model(data):
        logits = probnn.param("logits", jnp.zeros(K_MIX))
        locs = probnn.param("locs", jnp.zeros(K_MIX))
        with probnn.plate("data", data.shape[0]):
            z = probnn.sample("z", dist.Categorical(logits=logits))
            probnn.sample("obs", dist.Normal(locs[z], SCALE_MIX), obs=data)

    params = gmm_params()
    loss = enum_loss(model, params, GMM_DATA, max_plate_nesting=1)
    assert_close(loss, -gmm_brute_log_marginal(params, GMM_DATA))


# ---------------------------------------------------------------------------
# 2. Categorical mixture
# ---------------------------------------------------------------------------

K_CAT = 3
V_CAT = 4
CAT_DATA = jnp.array([0, 3, 1, 3, 2], dtype=jnp.int32)


def catmix_model(data):
    mix_logits = probnn.param("mix_logits", jnp.zeros(K_CAT))
    emit_logits = probnn.param("emit_logits", jnp.zeros((K_CAT, V_CAT)))
    with probnn.plate("data", data.shape[0]):
        z = probnn.sample("z", dist.Categorical(logits=mix_logits))
        probnn.sample("obs", dist.Categorical(logits=emit_logits[z]), obs=data)


def catmix_params():
    return {
        "mix_logits": jnp.array([0.5, -0.3, 0.1]),
        "emit_logits": random_logits(11, (K_CAT, V_CAT)),
    }


def catmix_brute_log_marginal(params, data):
    z = assignments(K_CAT, data.shape[0])
    log_w = jax.nn.log_softmax(params["mix_logits"])
    log_emit = jax.nn.log_softmax(params["emit_logits"], axis=-1)
    log_joint = log_w[z] + log_emit[z, data[None, :]]
    return logsumexp(jnp.sum(log_joint, axis=-1))


def test_categorical_mixture_loss_and_gradient():
    params = catmix_params()
    model = config_enumerate(catmix_model)
    loss, grads = enum_value_and_grad(model, params, CAT_DATA, max_plate_nesting=1)
    expected_loss, expected_grads = brute_value_and_grad(
        catmix_brute_log_marginal, params, CAT_DATA
    )
    assert_close(loss, expected_loss)
    assert_grads_close(grads, expected_grads)


# ---------------------------------------------------------------------------
# 3. Nested plates, enumerated variables at both levels
# ---------------------------------------------------------------------------

KZ_NEST = 2
KW_NEST = 3
NEST_DATA = normal_data(3, (2, 3))


def nested_plates_model(data):
    z_logits = probnn.param("z_logits", jnp.zeros(KZ_NEST))
    w_logits = probnn.param("w_logits", jnp.zeros((KZ_NEST, KW_NEST)))
    mu = probnn.param("mu", jnp.zeros(KW_NEST))
    with probnn.plate("groups", data.shape[0], dim=-2):
        z = probnn.sample("z", dist.Categorical(logits=z_logits), infer=ENUM)
        with probnn.plate("items", data.shape[1], dim=-1):
            w = probnn.sample("w", dist.Categorical(logits=w_logits[z]), infer=ENUM)
            probnn.sample("y", dist.Normal(mu[w], 1.0), obs=data)


def nested_plates_params():
    return {
        "z_logits": jnp.array([0.4, -0.2]),
        "w_logits": random_logits(21, (KZ_NEST, KW_NEST)),
        "mu": jnp.array([-1.5, 0.2, 1.3]),
    }


def nested_plates_brute_log_marginal(params, data):
    num_groups, num_items = data.shape
    # every joint assignment of (z_1..z_G, w_11..w_GI)
    zs = assignments(KZ_NEST, num_groups)  # (Mz, G)
    ws = assignments(KW_NEST, num_groups * num_items)  # (Mw, G*I)
    mz, mw = zs.shape[0], ws.shape[0]
    z = jnp.repeat(zs, mw, axis=0)  # (M, G)
    w = jnp.tile(ws, (mz, 1)).reshape(-1, num_groups, num_items)  # (M, G, I)
    log_pz = jax.nn.log_softmax(params["z_logits"])
    log_pw = jax.nn.log_softmax(params["w_logits"], axis=-1)
    lp = jnp.sum(log_pz[z], axis=-1)
    lp = lp + jnp.sum(log_pw[z[:, :, None], w], axis=(-2, -1))
    lp = lp + jnp.sum(norm.logpdf(data[None], params["mu"][w], 1.0), axis=(-2, -1))
    return logsumexp(lp)


def test_nested_plates_loss_and_gradient():
    params = nested_plates_params()
    loss, grads = enum_value_and_grad(
        nested_plates_model, params, NEST_DATA, max_plate_nesting=2
    )
    expected_loss, expected_grads = brute_value_and_grad(
        nested_plates_brute_log_marginal, params, NEST_DATA
    )
    assert_close(loss, expected_loss)
    assert_grads_close(grads, expected_grads)


# ---------------------------------------------------------------------------
# 4. Global enumerated variable shared by a plate
# ---------------------------------------------------------------------------

SHARED_DATA = jnp.array([0.9, 1.4, -0.2, 2.2, 0.5])


def shared_global_model(data):
    c_logits = probnn.param("c_logits", jnp.zeros(3))
    mu = probnn.param("mu", jnp.zeros(3))
    c = probnn.sample("c", dist.Categorical(logits=c_logits), infer=ENUM)
    with probnn.plate("data", data.shape[0]):
        probnn.sample("obs", dist.Normal(mu[c], 1.0), obs=data)


def shared_global_brute_log_marginal(params, data):
    c = assignments(3, 1)[:, 0]  # (3,)
    log_pc = jax.nn.log_softmax(params["c_logits"])[c]
    log_lik = jnp.sum(norm.logpdf(data[None, :], params["mu"][c][:, None], 1.0), -1)
    return logsumexp(log_pc + log_lik)


def test_global_enumerated_variable_shared_by_plate():
    params = {
        "c_logits": jnp.array([0.2, -0.5, 0.1]),
        "mu": jnp.array([-1.0, 0.5, 1.5]),
    }
    loss, grads = enum_value_and_grad(
        shared_global_model, params, SHARED_DATA, max_plate_nesting=1
    )
    expected_loss, expected_grads = brute_value_and_grad(
        shared_global_brute_log_marginal, params, SHARED_DATA
    )
    assert_close(loss, expected_loss)
    assert_grads_close(grads, expected_grads)


def shared_global_local_model(data):
    p = probnn.param("p", 0.3)
    z_logits = probnn.param("z_logits", jnp.zeros((2, 2)))
    mu = probnn.param("mu", jnp.zeros(2))
    c = probnn.sample("c", dist.Bernoulli(probs=p), infer=ENUM)
    c = c.astype(jnp.int32)
    with probnn.plate("data", data.shape[0]):
        z = probnn.sample("z", dist.Categorical(logits=z_logits[c]), infer=ENUM)
        probnn.sample("obs", dist.Normal(mu[z], 1.0), obs=data)


def shared_global_local_brute_log_marginal(params, data):
    n = data.shape[0]
    cz = assignments(2, 1 + n)  # columns: c, z_1..z_n
    c, z = cz[:, 0], cz[:, 1:]
    log_pc = jnp.where(c == 1, jnp.log(params["p"]), jnp.log1p(-params["p"]))
    log_pz = jax.nn.log_softmax(params["z_logits"], axis=-1)[c[:, None], z]
    log_lik = norm.logpdf(data[None, :], params["mu"][z], 1.0)
    return logsumexp(log_pc + jnp.sum(log_pz + log_lik, axis=-1))


def test_global_bernoulli_and_local_categorical():
    params = {
        "p": jnp.array(0.35),
        "z_logits": jnp.array([[0.8, -0.3], [-0.6, 0.4]]),
        "mu": jnp.array([-0.7, 1.2]),
    }
    loss, grads = enum_value_and_grad(
        shared_global_local_model, params, SHARED_DATA, max_plate_nesting=1
    )
    expected_loss, expected_grads = brute_value_and_grad(
        shared_global_local_brute_log_marginal, params, SHARED_DATA
    )
    assert_close(loss, expected_loss)
    assert_grads_close(grads, expected_grads)


# ---------------------------------------------------------------------------
# 5. HMM via scan, history 1 and 2
# ---------------------------------------------------------------------------

K_HMM = 3


def make_hmm(history, method, num_states=K_HMM):
    """HMM whose hidden state starts from the fixed state 0 (carry) and whose
    transition logits depend on the previous `history` states."""
    trans_shape = (num_states,) * (history + 1)

    def model(ys):
        trans = probnn.param("trans", jnp.zeros(trans_shape))
        locs = probnn.param("locs", jnp.zeros(num_states))

        def step(carry, y):
            if history == 1:
                logits = trans[carry]
            else:
                logits = trans[carry[0], carry[1]]
            x = probnn.sample("x", dist.Categorical(logits=logits), infer=ENUM)
            probnn.sample("y", dist.Normal(locs[x], 1.0), obs=y)
            new_carry = x if history == 1 else (carry[1], x)
            return new_carry, None

        zero = jnp.array(0, dtype=jnp.int32)
        init = zero if history == 1 else (zero, zero)
        scan(step, init, ys, history=history, enum_method=method)

    return model


def hmm_params(history, num_states=K_HMM, seed_=0):
    return {
        "trans": random_logits(100 + seed_, (num_states,) * (history + 1)),
        "locs": jnp.linspace(-1.5, 1.5, num_states),
    }


def hmm_brute_log_joints(params, ys, history):
    """Log joint p(x, y) of every hidden path; returns (paths, log_joints)."""
    num_states = params["locs"].shape[0]
    T = ys.shape[0]
    x = assignments(num_states, T)  # (M, T)
    padded = jnp.concatenate(
        [jnp.zeros((x.shape[0], history), dtype=jnp.int32), x], axis=1
    )
    log_trans = jax.nn.log_softmax(params["trans"], axis=-1)
    if history == 1:
        lt = log_trans[padded[:, :-1], x]
    else:
        lt = log_trans[padded[:, :-2], padded[:, 1:-1], x]
    le = norm.logpdf(ys[None, :], params["locs"][x], 1.0)
    return x, jnp.sum(lt + le, axis=-1)


def hmm_brute_log_marginal(params, ys, history):
    return logsumexp(hmm_brute_log_joints(params, ys, history)[1])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("history", [1, 2])
@pytest.mark.parametrize("T", [2, 3, 4, 5, 6, 7])
def test_hmm_scan_loss(T, history, method):
    params = hmm_params(history, seed_=T)
    ys = normal_data(T, (T,))
    loss = enum_loss(make_hmm(history, method), params, ys, max_plate_nesting=0)
    assert_close(loss, -hmm_brute_log_marginal(params, ys, history))


@pytest.mark.parametrize(
    "T, history, method",
    [
        (3, 1, "sequential"),
        (6, 1, "parallel"),
        (7, 1, "sequential"),
        (3, 2, "parallel"),
        (5, 2, "parallel"),
        (6, 2, "sequential"),
    ],
)
def test_hmm_scan_gradient(T, history, method):
    params = hmm_params(history, seed_=T)
    ys = normal_data(T + 50, (T,))
    loss, grads = enum_value_and_grad(
        make_hmm(history, method), params, ys, max_plate_nesting=0
    )
    expected_loss, expected_grads = brute_value_and_grad(
        lambda p, y: hmm_brute_log_marginal(p, y, history), params, ys
    )
    assert_close(loss, expected_loss)
    assert_grads_close(grads, expected_grads)


@pytest.mark.parametrize("history", [1, 2])
def test_hmm_scan_default_enum_method(history):
    T = 5
    params = hmm_params(history, seed_=7)
    ys = normal_data(70, (T,))
    # default enum_method and default max_plate_nesting
    loss = enum_loss(make_hmm(history, None), params, ys)
    assert_close(loss, -hmm_brute_log_marginal(params, ys, history))


# ---------------------------------------------------------------------------
# 6. Nested scan
# ---------------------------------------------------------------------------

K_NS = 2
T_OUTER = 3


def make_nested_scan_model(method):
    def model(obs):  # obs: (T_outer, T_inner)
        trans_x = probnn.param("trans_x", jnp.zeros((K_NS, K_NS)))
        trans_y = probnn.param("trans_y", jnp.zeros((K_NS, K_NS, K_NS)))
        locs = probnn.param("locs", jnp.zeros(K_NS))

        def outer(x_prev, obs_row):
            x = probnn.sample("x", dist.Categorical(logits=trans_x[x_prev]), infer=ENUM)

            def inner(y_prev, o):
                y = probnn.sample(
                    "y", dist.Categorical(logits=trans_y[x, y_prev]), infer=ENUM
                )
                probnn.sample("obs", dist.Normal(locs[y], 1.0), obs=o)
                return y, None

            scan(inner, jnp.array(0, dtype=jnp.int32), obs_row, enum_method=method)
            return x, None

        scan(outer, jnp.array(0, dtype=jnp.int32), obs, enum_method=method)

    return model


def nested_scan_params():
    return {
        "trans_x": random_logits(31, (K_NS, K_NS)),
        "trans_y": random_logits(32, (K_NS, K_NS, K_NS)),
        "locs": jnp.array([-1.0, 1.0]),
    }


def nested_scan_brute_log_marginal(params, obs):
    t_out, t_in = obs.shape
    xy = assignments(K_NS, t_out + t_out * t_in)
    x = xy[:, :t_out]  # (M, T_out)
    y = xy[:, t_out:].reshape(-1, t_out, t_in)  # (M, T_out, T_in)
    m = xy.shape[0]
    log_tx = jax.nn.log_softmax(params["trans_x"], axis=-1)
    log_ty = jax.nn.log_softmax(params["trans_y"], axis=-1)
    x_prev = jnp.concatenate([jnp.zeros((m, 1), jnp.int32), x[:, :-1]], axis=1)
    lp = jnp.sum(log_tx[x_prev, x], axis=-1)
    y_prev = jnp.concatenate(
        [jnp.zeros((m, t_out, 1), jnp.int32), y[:, :, :-1]], axis=2
    )
    lp = lp + jnp.sum(log_ty[x[:, :, None], y_prev, y], axis=(-2, -1))
    lp = lp + jnp.sum(norm.logpdf(obs[None], params["locs"][y], 1.0), axis=(-2, -1))
    return logsumexp(lp)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("t_inner", [2, 3])
def test_nested_scan_loss(t_inner, method):
    params = nested_scan_params()
    obs = normal_data(40 + t_inner, (T_OUTER, t_inner))
    loss = enum_loss(make_nested_scan_model(method), params, obs, max_plate_nesting=0)
    assert_close(loss, -nested_scan_brute_log_marginal(params, obs))


def test_nested_scan_gradient():
    params = nested_scan_params()
    obs = normal_data(45, (T_OUTER, 2))
    loss, grads = enum_value_and_grad(
        make_nested_scan_model("parallel"), params, obs, max_plate_nesting=0
    )
    expected_loss, expected_grads = brute_value_and_grad(
        nested_scan_brute_log_marginal, params, obs
    )
    assert_close(loss, expected_loss)
    assert_grads_close(grads, expected_grads)


# ---------------------------------------------------------------------------
# 7. Scan inside a plate
# ---------------------------------------------------------------------------

NUM_SEQS = 3
T_PLATE = 4


def make_plate_scan_model(method):
    def model(ys):  # ys: (T, num_seqs)
        trans = probnn.param("trans", jnp.zeros((K_HMM, K_HMM)))
        locs = probnn.param("locs", jnp.zeros(K_HMM))

        def step(x_prev, y):
            x = probnn.sample("x", dist.Categorical(logits=trans[x_prev]), infer=ENUM)
            probnn.sample("y", dist.Normal(locs[x], 1.0), obs=y)
            return x, None

        with probnn.plate("seqs", ys.shape[1]):
            init = jnp.zeros(ys.shape[1], dtype=jnp.int32)
            scan(step, init, ys, enum_method=method)

    return model


@pytest.mark.parametrize("method", METHODS)
def test_scan_inside_plate(method):
    params = hmm_params(1, seed_=9)
    ys = normal_data(9, (T_PLATE, NUM_SEQS))
    loss, grads = enum_value_and_grad(
        make_plate_scan_model(method), params, ys, max_plate_nesting=1
    )

    def brute(p, y):
        return sum(hmm_brute_log_marginal(p, y[:, s], 1) for s in range(y.shape[1]))

    expected_loss, expected_grads = brute_value_and_grad(brute, params, ys)
    assert_close(loss, expected_loss)
    assert_grads_close(grads, expected_grads)


# ---------------------------------------------------------------------------
# 8. log_density
# ---------------------------------------------------------------------------


def test_log_density_sums_out_enumerated_sites():
    params = gmm_params()
    log_joint, tr = log_density(gmm_model, (GMM_DATA,), {}, params)
    assert jnp.shape(log_joint) == ()
    assert_close(log_joint, gmm_brute_log_marginal(params, GMM_DATA))
    assert "z" in tr and "obs" in tr


def test_log_density_config_enumerate_categorical_mixture():
    params = catmix_params()
    log_joint, _ = log_density(config_enumerate(catmix_model), (CAT_DATA,), {}, params)
    assert_close(log_joint, catmix_brute_log_marginal(params, CAT_DATA))


def test_log_density_hmm_scan():
    params = hmm_params(1, seed_=4)
    ys = normal_data(4, (4,))
    log_joint = jax.jit(
        lambda p, y: log_density(make_hmm(1, "parallel"), (y,), {}, p)[0]
    )(params, ys)
    assert_close(log_joint, hmm_brute_log_marginal(params, ys, 1))


# ---------------------------------------------------------------------------
# 9. infer_discrete, temperature=0 (MAP)
# ---------------------------------------------------------------------------


def separated_hmm_problem(T, num_states, history, seed_):
    rng = np.random.default_rng(seed_)
    params = {
        "trans": jnp.asarray(
            0.5 * rng.standard_normal((num_states,) * (history + 1)), jnp.float32
        ),
        "locs": jnp.linspace(-3.0, 3.0, num_states),
    }
    true_path = rng.integers(0, num_states, size=T)
    ys = params["locs"][true_path] + jnp.asarray(
        0.7 * rng.standard_normal(T), jnp.float32
    )
    return params, ys


def brute_map(paths, log_joints):
    order = jnp.argsort(-log_joints)
    best, second = order[0], order[1]
    # the problem is chosen so that the MAP is unique by a clear margin
    assert float(log_joints[best] - log_joints[second]) > 1e-2
    return paths[best]


@pytest.mark.parametrize(
    "T, num_states, history",
    [(3, 2, 1), (4, 3, 1), (5, 2, 1), (5, 3, 1), (4, 2, 2), (5, 3, 2)],
)
def test_infer_discrete_map_hmm(T, num_states, history):
    params, ys = separated_hmm_problem(
        T, num_states, history, seed_=10 * T + num_states
    )
    paths, log_joints = hmm_brute_log_joints(params, ys, history)
    expected = brute_map(paths, log_joints)

    model = substitute(make_hmm(history, "parallel", num_states), data=params)
    decoded = infer_discrete(
        model, first_available_dim=-1, temperature=0, rng_key=jax.random.PRNGKey(1)
    )

    def run(data):
        tr = trace(decoded).get_trace(data)
        return tr["x"]["value"], tr["y"]["value"]

    x, y = jax.jit(run)(ys)
    assert jnp.shape(x) == (T,)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(expected))
    # observed values are untouched
    np.testing.assert_allclose(np.asarray(y), np.asarray(ys))


def test_infer_discrete_map_mixture():
    params = {
        "logits": jnp.array([0.1, -0.2, 0.3]),
        "locs": jnp.array([-3.0, 0.0, 3.0]),
    }
    data = jnp.array([-2.6, 0.4, 3.3, -0.3])
    z = assignments(K_MIX, data.shape[0])
    log_w = jax.nn.log_softmax(params["logits"])
    log_joints = jnp.sum(
        log_w[z] + norm.logpdf(data[None, :], params["locs"][z], SCALE_MIX), axis=-1
    )
    expected = brute_map(z, log_joints)

    decoded = infer_discrete(
        substitute(gmm_model, data=params),
        first_available_dim=-2,
        temperature=0,
        rng_key=jax.random.PRNGKey(0),
    )
    value = trace(decoded).get_trace(data)["z"]["value"]
    assert jnp.shape(value) == (data.shape[0],)
    np.testing.assert_array_equal(np.asarray(value), np.asarray(expected))


# ---------------------------------------------------------------------------
# 10. infer_discrete, temperature=1 (posterior samples)
# ---------------------------------------------------------------------------


def test_infer_discrete_samples_match_exact_posterior():
    T, num_states, num_samples = 3, 2, 4000
    params = {
        "trans": jnp.array([[0.4, -0.2], [-0.3, 0.5]]),
        "locs": jnp.array([-0.5, 0.5]),
    }
    ys = jnp.array([0.3, -0.2, 0.8])
    paths, log_joints = hmm_brute_log_joints(params, ys, 1)
    posterior = np.asarray(jnp.exp(log_joints - logsumexp(log_joints)))
    codes = np.asarray(paths) @ (num_states ** np.arange(T - 1, -1, -1))
    exact = np.zeros(num_states**T)
    exact[codes] = posterior

    model = substitute(make_hmm(1, "parallel", num_states), data=params)

    def draw(key):
        sampler = infer_discrete(
            model, first_available_dim=-1, temperature=1, rng_key=key
        )
        return trace(sampler).get_trace(ys)["x"]["value"]

    keys = jax.random.split(jax.random.PRNGKey(123), num_samples)
    samples = np.asarray(jax.jit(jax.vmap(draw))(keys))
    assert samples.shape == (num_samples, T)
    assert np.all((samples >= 0) & (samples < num_states))
    sample_codes = samples @ (num_states ** np.arange(T - 1, -1, -1))
    freq = np.bincount(sample_codes, minlength=num_states**T) / num_samples
    tol = 5 * np.sqrt(exact * (1 - exact) / num_samples) + 1e-3
    assert np.all(np.abs(freq - exact) <= tol), (freq, exact)


# ---------------------------------------------------------------------------
# 11. Errors
# ---------------------------------------------------------------------------


def test_enumerating_continuous_site_raises():
    def model():
        x = probnn.sample("cont_x", dist.Normal(0.0, 1.0), infer=ENUM)
        probnn.sample("obs", dist.Normal(x, 1.0), obs=0.5)

    elbo = TraceEnum_ELBO(max_plate_nesting=0)
    with pytest.raises((ValueError, TypeError), match="cont_x"):
        elbo.loss(KEY, {}, model, empty_guide)


def test_enumerated_variable_in_plate_feeding_site_outside_plate_raises():
    locs = jnp.array([-1.0, 1.0])

    def model():
        with probnn.plate("data", 3):
            z = probnn.sample(
                "z_in_plate", dist.Categorical(probs=jnp.array([0.3, 0.7])), infer=ENUM
            )
        # a site outside the plate that depends on the plate-local z
        probnn.sample("y_outside", dist.Normal(locs[z], 1.0), obs=0.0)

    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    with pytest.raises(ValueError, match="z_in_plate|y_outside"):
        elbo.loss(KEY, {}, model, empty_guide)


# ---------------------------------------------------------------------------
# 12. SVI
# ---------------------------------------------------------------------------


def test_svi_gaussian_mixture_lowers_loss():
    rng = np.random.default_rng(5)
    centers = np.array([-2.0, 0.5, 3.0])
    data = jnp.asarray(
        centers[rng.integers(0, 3, size=30)] + 0.5 * rng.standard_normal(30),
        jnp.float32,
    )
    svi = SVI(gmm_model, empty_guide, optax.adam(0.05), TraceEnum_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 300, data, progress_bar=False)
    losses = np.asarray(result.losses)
    assert losses.shape == (300,)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    # the data points are independent given the params, so the exact negative
    # log marginal factorises over points (each summed over its K values)
    init = {"logits": jnp.zeros(K_MIX), "locs": jnp.linspace(-1.0, 1.0, K_MIX)}
    trained = {k: result.params[k] for k in ("logits", "locs")}
    assert float(gmm_factorised_nll(trained, data)) < float(
        gmm_factorised_nll(init, data)
    )
    assert_close(losses[0], gmm_factorised_nll(init, data))


def gmm_factorised_nll(params, data):
    log_w = jax.nn.log_softmax(params["logits"])
    log_joint = log_w[None, :] + norm.logpdf(
        data[:, None], params["locs"][None, :], SCALE_MIX
    )
    return -jnp.sum(logsumexp(log_joint, axis=-1))


@pytest.mark.parametrize("method", METHODS)
def test_config_enumerate_reaches_sites_inside_scan(method):
    # the enumerating step handler sits where `enum` sits in the stack, so a
    # config_enumerate inside it marks the body's sites before they are seen
    def model(ys):
        trans = probnn.param("trans", jnp.zeros((K_HMM, K_HMM)))
        locs = probnn.param("locs", jnp.zeros(K_HMM))

        def step(x_prev, y):
            x = probnn.sample("x", dist.Categorical(logits=trans[x_prev]))
            probnn.sample("y", dist.Normal(locs[x], 1.0), obs=y)
            return x, None

        scan(step, jnp.array(0), ys, enum_method=method)

    params = hmm_params(1, seed_=9)
    ys = normal_data(9, (5,))
    loss = enum_loss(config_enumerate(model), params, ys)
    assert_close(loss, -hmm_brute_log_marginal(params, ys, 1))
    decoded = trace(
        infer_discrete(substitute(config_enumerate(model), data=params), temperature=0)
    ).get_trace(ys)["x"]["value"]
    paths, log_joints = hmm_brute_log_joints(params, ys, 1)
    np.testing.assert_array_equal(decoded, paths[jnp.argmax(log_joints)])
