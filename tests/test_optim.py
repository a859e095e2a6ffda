"""probnn.optim: NumPyro's optimiser classes against hand-written update
recurrences, NumPyro's optimiser interface, and use with SVI."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import probnn
import probnn.distributions as dist
from probnn import optim
from probnn.distributions import constraints
from probnn.infer import SVI, Trace_ELBO

# loss = sum(C * x^2 / 2 + D * x): gradient C * x + D; different curvatures
# per entry make the adaptive methods (and SM3's row/column bounds) differ
C = {"a": np.array([[1.0, 4.0, 0.5], [2.0, 0.25, 3.0]]), "b": np.array(1.5)}
D = {"a": np.array([[0.3, -1.0, 2.0], [0.0, 0.5, -0.2]]), "b": np.array(-0.7)}
X0 = {"a": np.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]]), "b": np.array(2.0)}
STEPS = 25


def loss(params):
    return sum(
        jnp.sum(C[k] * params[k] ** 2 / 2 + D[k] * params[k]) for k in ("a", "b")
    )


def grad(x):
    return C * x + D


def schedule(i):
    return 0.1 / (1.0 + 0.5 * i)


def adam_ref(x, grad, lr, b1=0.9, b2=0.999, eps=1e-8, clip=None):
    m = v = np.zeros_like(x)
    for i in range(STEPS):
        g = grad(x)
        if clip is not None:
            g = np.clip(g, -clip, clip)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1 ** (i + 1))
        v_hat = v / (1 - b2 ** (i + 1))
        x = x - lr(i) * m_hat / (np.sqrt(v_hat) + eps)
    return x


def adagrad_ref(x, grad, lr, momentum=0.9):
    s = m = np.zeros_like(x)
    for i in range(STEPS):
        g = grad(x)
        s = s + g**2
        scaled = np.where(s > 0, g / np.sqrt(np.where(s > 0, s, 1.0)), 0.0)
        m = (1 - momentum) * scaled + momentum * m
        x = x - lr(i) * m
    return x


def momentum_ref(x, grad, lr, mass):
    v = np.zeros_like(x)
    for i in range(STEPS):
        v = mass * v + grad(x)
        x = x - lr(i) * v
    return x


def rmsprop_ref(x, grad, lr, gamma=0.9, eps=1e-8):
    a = np.zeros_like(x)
    for i in range(STEPS):
        g = grad(x)
        a = gamma * a + (1 - gamma) * g**2
        x = x - lr(i) * g / np.sqrt(a + eps)
    return x


def rmsprop_momentum_ref(x, grad, lr, gamma=0.9, eps=1e-8, momentum=0.9):
    a = mom = np.zeros_like(x)
    for i in range(STEPS):
        g = grad(x)
        a = gamma * a + (1 - gamma) * g**2
        mom = momentum * mom + lr(i) * g / np.sqrt(a + eps)
        x = x - mom
    return x


def sgd_ref(x, grad, lr):
    for i in range(STEPS):
        x = x - lr(i) * grad(x)
    return x


def sm3_matrix_ref(x, c, d, lr, momentum=0.9):
    """SM3 written out for one 2-d parameter: a row and a column bound."""
    rows, cols = np.zeros(x.shape[0]), np.zeros(x.shape[1])
    m = np.zeros_like(x)
    for i in range(STEPS):
        g = c * x + d
        accum = np.minimum(rows[:, None], cols[None, :]) + g**2
        m = (1 - momentum) * g / np.sqrt(accum) + momentum * m
        x = x - lr(i) * m
        rows, cols = accum.max(axis=1), accum.max(axis=0)
    return x


def sm3_scalar_ref(x, c, d, lr, momentum=0.9):
    acc = m = 0.0
    for i in range(STEPS):
        g = c * x + d
        acc = acc + g**2  # one accumulator: the bound is the running sum
        m = (1 - momentum) * g / np.sqrt(acc) + momentum * m
        x = x - lr(i) * m
    return x


def per_leaf(ref, **kwargs):
    """Run ``ref`` on each parameter with that parameter's gradient."""

    def run(lr):
        return {
            k: ref(X0[k], lambda x, k=k: C[k] * x + D[k], lr, **kwargs)
            for k in ("a", "b")
        }

    return run


def run_numpyro_interface(opt):
    state = opt.init(jax.tree.map(jnp.asarray, X0))
    step = jax.jit(lambda s: opt.update(jax.grad(loss)(opt.get_params(s)), s))
    for _ in range(STEPS):
        state = step(state)
    assert int(state[0]) == STEPS
    return opt.get_params(state)


def run_optax_interface(opt):
    tx = opt.as_optax()
    params = jax.tree.map(jnp.asarray, X0)
    state = tx.init(params)
    for _ in range(STEPS):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    return params


def constant(lr):
    return lambda i: lr


CASES = [
    ("Adam", lambda lr: optim.Adam(lr), per_leaf(adam_ref)),
    (
        "Adam(b1, b2, eps)",
        lambda lr: optim.Adam(lr, 0.8, 0.99, 1e-3),
        per_leaf(adam_ref, b1=0.8, b2=0.99, eps=1e-3),
    ),
    (
        "ClippedAdam",
        lambda lr: optim.ClippedAdam(lr, clip_norm=0.5),
        per_leaf(adam_ref, clip=0.5),
    ),
    ("Adagrad", lambda lr: optim.Adagrad(lr), per_leaf(adagrad_ref)),
    (
        "Adagrad(momentum)",
        lambda lr: optim.Adagrad(lr, 0.5),
        per_leaf(adagrad_ref, momentum=0.5),
    ),
    (
        "Momentum",
        lambda lr: optim.Momentum(lr, 0.5),
        per_leaf(momentum_ref, mass=0.5),
    ),
    ("RMSProp", lambda lr: optim.RMSProp(lr, 0.95), per_leaf(rmsprop_ref, gamma=0.95)),
    (
        "RMSProp(eps)",  # a large eps shows that it sits under the square root
        lambda lr: optim.RMSProp(lr, eps=0.1),
        per_leaf(rmsprop_ref, eps=0.1),
    ),
    (
        "RMSPropMomentum",
        lambda lr: optim.RMSPropMomentum(lr, 0.95, 0.1, 0.8),
        per_leaf(rmsprop_momentum_ref, gamma=0.95, eps=0.1, momentum=0.8),
    ),
    ("SGD", lambda lr: optim.SGD(lr), per_leaf(sgd_ref)),
]


@pytest.mark.parametrize("name, make, reference", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("scheduled", [False, True])
def test_matches_hand_written_recurrence(name, make, reference, scheduled):
    if scheduled:
        opt, expected = make(schedule), reference(schedule)
    else:
        opt, expected = make(0.05), reference(constant(0.05))
    for actual in (run_numpyro_interface(opt), run_optax_interface(opt)):
        for k in ("a", "b"):
            assert actual[k].shape == X0[k].shape
            np.testing.assert_allclose(actual[k], expected[k], rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("scheduled", [False, True])
def test_sm3_matches_hand_written_recurrence(scheduled):
    lr = schedule if scheduled else constant(0.05)
    opt = optim.SM3(schedule if scheduled else 0.05, momentum=0.7)
    expected = {
        "a": sm3_matrix_ref(X0["a"], C["a"], D["a"], lr, momentum=0.7),
        "b": sm3_scalar_ref(float(X0["b"]), float(C["b"]), float(D["b"]), lr, 0.7),
    }
    for actual in (run_numpyro_interface(opt), run_optax_interface(opt)):
        for k in ("a", "b"):
            assert actual[k].shape == X0[k].shape
            np.testing.assert_allclose(actual[k], expected[k], rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize(
    "opt",
    [
        optim.Adam(1e-2),
        optim.ClippedAdam(1e-2),
        optim.Adagrad(1e-1),
        optim.Momentum(1e-2, 0.5),
        optim.RMSProp(1e-2, 0.95),
        optim.RMSPropMomentum(1e-4),
        optim.SGD(1e-2),
        optim.SM3(1e-1),
        optim.optax_to_numpyro(optax.adam(1e-2)),
    ],
    ids=lambda o: type(o).__name__,
)
def test_numpyro_interface_minimises(opt):
    def objective(params):
        return jnp.sum(params["x"] ** 2 + params["y"] ** 2)

    @jax.jit
    def step(state):
        g = jax.grad(objective)(opt.get_params(state))
        if opt.update_with_value:
            return opt.update(g, state, value=objective(opt.get_params(state)))
        return opt.update(g, state)

    state = opt.init({"x": jnp.ones(3), "y": -jnp.ones(3)})
    for _ in range(2000):
        state = step(state)
    for value in opt.get_params(state).values():
        np.testing.assert_allclose(value, 0.0, atol=1e-2)


def test_eval_and_update():
    opt = optim.SGD(0.25)
    state = opt.init(jnp.array([1.0, -2.0]))

    def fn(x):
        return jnp.sum(x**2), {"aux": x}

    (out, aux), state = opt.eval_and_update(fn, state)
    assert float(out) == 5.0
    np.testing.assert_allclose(aux["aux"], [1.0, -2.0])
    np.testing.assert_allclose(opt.get_params(state), [0.5, -1.0])
    (out, _), state = opt.eval_and_update(fn, state, forward_mode_differentiation=True)
    assert float(out) == 1.25
    np.testing.assert_allclose(opt.get_params(state), [0.25, -0.5])
    assert int(state[0]) == 2


def test_eval_and_stable_update_keeps_state_on_nan():
    opt = optim.Adam(0.1)
    state = opt.init(jnp.array([1.0, -1.0]))
    (out, _), new_state = opt.eval_and_stable_update(
        lambda x: (jnp.sum(jnp.log(x)), None), state
    )
    assert math.isnan(float(out))
    for new, old in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)):
        np.testing.assert_array_equal(new, old)
    (out, _), new_state = opt.eval_and_stable_update(
        lambda x: (jnp.sum(x**2), None), state
    )
    assert float(out) == 2.0
    np.testing.assert_allclose(opt.get_params(new_state), [0.9, -0.9], rtol=1e-6)


def test_optax_to_numpyro_passes_value():
    # reduce_on_plateau reads the objective's value: a loss that never
    # improves halves the step size after `patience` updates
    tx = optax.chain(
        optax.sgd(1.0),
        optax.contrib.reduce_on_plateau(factor=0.5, patience=2, cooldown=0),
    )
    opt = optim.optax_to_numpyro(tx)
    assert opt.update_with_value
    state = opt.init(jnp.array(0.0))
    moves = []
    for _ in range(6):
        before = float(opt.get_params(state))
        state = opt.update(jnp.array(-1.0), state, value=jnp.array(1.0))
        moves.append(float(opt.get_params(state)) - before)
    assert moves[0] == 1.0
    assert moves[-1] < 1.0
    with pytest.raises(ValueError, match="value="):
        opt.update(jnp.array(1.0), state)
    with pytest.raises(TypeError):
        optim.optax_to_numpyro(object())


# SVI ------------------------------------------------------------------------

Y = jnp.array([0.9, 2.1, 1.4, 3.0, 1.9, 2.6])


def model(y):
    mu = probnn.sample("mu", dist.Normal(0.0, 2.0))
    with probnn.plate("N", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, 1.0), obs=y)


def guide(y):
    loc = probnn.param("loc", 0.0)
    scale = probnn.param("scale", 1.0, constraint=constraints.positive)
    probnn.sample("mu", dist.Normal(loc, scale))


def svi_params(optimiser, steps=1500):
    svi = SVI(model, guide, optimiser, Trace_ELBO())
    return svi.run(jax.random.PRNGKey(0), steps, Y, progress_bar=False).params


def test_svi_with_probnn_adam_equals_optax_adam():
    decay = optax.exponential_decay(0.05, 3000, 0.02)  # a schedule step -> size
    ours = svi_params(optim.Adam(decay), steps=3000)
    theirs = svi_params(optax.adam(decay), steps=3000)
    for name in ("loc", "scale"):
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6)
    # and both reach the conjugate posterior
    precision = 1 / 2.0**2 + Y.shape[0]
    assert float(ours["loc"]) == pytest.approx(float(Y.sum()) / precision, rel=0.03)
    assert float(ours["scale"]) == pytest.approx(precision**-0.5, rel=0.1)


def test_svi_accepts_every_class_and_wrapped_optax():
    for opt in (optim.SGD(1e-3), optim.optax_to_numpyro(optax.adam(0.05))):
        params = svi_params(opt, steps=20)
        assert np.isfinite(float(params["loc"]))
    ours = svi_params(optim.optax_to_numpyro(optax.adam(0.05)), steps=50)
    theirs = svi_params(optax.adam(0.05), steps=50)
    np.testing.assert_allclose(ours["loc"], theirs["loc"], rtol=1e-6)


def test_svi_clipped_adam_clips_gradients():
    # ELBO gradients on this model are far above 0.01 at the start, and
    # vary from step to step, so clipping changes Adam's trajectory
    clipped = svi_params(optim.ClippedAdam(0.05, clip_norm=0.01), steps=50)
    reference = svi_params(optax.chain(optax.clip(0.01), optax.adam(0.05)), steps=50)
    plain = svi_params(optax.adam(0.05), steps=50)
    for name in ("loc", "scale"):
        np.testing.assert_allclose(clipped[name], reference[name], rtol=1e-6)
    assert abs(float(clipped["loc"]) - float(plain["loc"])) > 1e-3


def test_clipped_adam_differs_from_adam_when_gradients_exceed_the_bound():
    grads = [jnp.array(100.0), jnp.array(-1.0)]
    results = {}
    for name, opt in (("adam", optim.Adam(0.1)), ("clipped", optim.ClippedAdam(0.1))):
        state = opt.init(jnp.array(0.0))
        for g in grads:
            state = opt.update(g, state)
        results[name] = float(opt.get_params(state))
    # by hand: the clipped run sees gradients 10 and -1
    expected = {}
    for name, gs in (("adam", [100.0, -1.0]), ("clipped", [10.0, -1.0])):
        x, m, v = 0.0, 0.0, 0.0
        for i, g in enumerate(gs):
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            x -= (
                0.1
                * (m / (1 - 0.9 ** (i + 1)))
                / (math.sqrt(v / (1 - 0.999 ** (i + 1))) + 1e-8)
            )
        expected[name] = x
    assert results["adam"] == pytest.approx(expected["adam"], rel=1e-5)
    assert results["clipped"] == pytest.approx(expected["clipped"], rel=1e-5)
    assert abs(expected["adam"] - expected["clipped"]) > 1e-3


def test_svi_rejects_other_objects():
    with pytest.raises(TypeError, match="GradientTransformation"):
        SVI(model, guide, object(), Trace_ELBO())


def test_svi_accepts_a_jax_example_libraries_optimizer_triple():
    # NumPyro's SVI takes jax.example_libraries.optimizers triples too; the
    # same rule, step by step, as the optax spelling
    from jax.example_libraries import optimizers

    for triple, transformation in (
        (optimizers.sgd(0.01), optax.sgd(0.01)),
        (optimizers.adam(0.05), optax.adam(0.05)),
    ):
        ours = svi_params(triple, steps=30)
        reference = svi_params(transformation, steps=30)
        for name in ("loc", "scale"):
            np.testing.assert_allclose(ours[name], reference[name], rtol=1e-5)
    with pytest.raises(TypeError, match="jax.example_libraries.optimizers triple"):
        SVI(model, guide, (1, 2, 3), Trace_ELBO())
