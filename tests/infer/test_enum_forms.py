"""Enumeration on the ways users write their models, each against a forward
recursion written here in numpy (one sequence at a time, no probnn code).

The forms: plates declared inside the scan body around the enumerated state
(with a nested plate around the emission), a carry that mixes the state with
a step counter or a mask that evolves with the data, `mask` inside the body
(a masked site's factor is 1 for every value of the site, as in NumPyro with
funsor), scans of length 1 and 2, and `DiscreteUniform(...).expand(...)`
enumerated under `jit`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.control_flow import scan
from probnn.handlers import mask
from probnn.infer import TraceEnum_ELBO
from probnn.infer.util import log_density

METHODS = ["sequential", "parallel"]
ENUM = {"enumerate": "parallel"}


def logsumexp(x, axis=None):
    peak = np.max(x, axis=axis, keepdims=True)
    out = peak + np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True))
    return np.squeeze(out, axis=axis) if axis is not None else out.item()


def forward(log_init, log_trans, log_emit, active):
    """log sum over paths of one chain. ``log_emit[t, k]``: the emission's
    log density at step t in state k; ``active[t]``: False where the step is
    masked (its transition and emission factors are 1 for every state);
    ``log_init[k]``: log p(first state = k | the initial carry)."""
    alpha = None
    for t in range(len(log_emit)):
        if alpha is None:
            step = log_init if active[t] else np.zeros_like(log_init)
            alpha = step
        else:
            trans = log_trans if active[t] else np.zeros_like(log_trans)
            alpha = logsumexp(alpha[:, None] + trans, axis=0)
        alpha = alpha + (log_emit[t] if active[t] else 0.0)
    return logsumexp(alpha)


# ---------------------------------------------------------------------------
# plates inside the body (NumPyro's polyphonic-music HMM, written its way)
# ---------------------------------------------------------------------------


def tones_model(method):
    def model(sequences, lengths, probs_x, probs_y):
        num_sequences, _, data_dim = sequences.shape

        def step(carry, y):
            x_prev, t = carry
            with probnn.plate("sequences", num_sequences, dim=-2):
                with mask(mask=(t < lengths)[..., None]):
                    x = probnn.sample(
                        "x", dist.Categorical(probs_x[x_prev]), infer=ENUM
                    )
                    with probnn.plate("tones", data_dim, dim=-1):
                        probnn.sample(
                            "y", dist.Bernoulli(probs_y[x.squeeze(-1)]), obs=y
                        )
            return (x, t + 1), None

        x_init = jnp.zeros((num_sequences, 1), dtype=jnp.int32)
        scan(step, (x_init, 0), jnp.swapaxes(sequences, 0, 1), enum_method=method)

    return model


def tones_data(seed, num_sequences, length, data_dim, states=3):
    rng = np.random.default_rng(seed)
    sequences = (rng.random((num_sequences, length, data_dim)) < 0.3).astype(np.float32)
    lengths = rng.integers(1, length + 1, size=num_sequences)
    probs_x = rng.dirichlet(np.ones(states), size=states).astype(np.float32)
    probs_y = (0.1 + 0.8 * rng.random((states, data_dim))).astype(np.float32)
    return sequences, lengths, probs_x, probs_y


def tones_reference(sequences, lengths, probs_x, probs_y):
    probs_x = probs_x.astype(np.float64)
    probs_y = probs_y.astype(np.float64)
    total = 0.0
    for seq, length in zip(sequences, lengths, strict=True):
        log_emit = np.sum(
            np.where(seq[:, None, :] > 0, np.log(probs_y), np.log1p(-probs_y)), -1
        )
        active = np.arange(len(seq)) < length
        total += forward(np.log(probs_x[0]), np.log(probs_x), log_emit, active)
    return total


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "num_sequences, length, data_dim", [(3, 5, 2), (2, 1, 3), (2, 2, 1), (1, 4, 2)]
)
def test_plates_inside_body(method, num_sequences, length, data_dim):
    data = tones_data(length + 10 * num_sequences, num_sequences, length, data_dim)
    model = tones_model(method)
    args = tuple(jnp.asarray(a) for a in data)
    value, _ = log_density(model, args, {}, {})
    np.testing.assert_allclose(value, tones_reference(*data), rtol=1e-5)
    # the same under jit, and as TraceEnum_ELBO's loss
    jitted = jax.jit(lambda *a: log_density(model, a, {}, {})[0])(*args)
    np.testing.assert_allclose(jitted, tones_reference(*data), rtol=1e-5)
    loss = TraceEnum_ELBO().loss(
        jax.random.PRNGKey(0), {}, model, lambda *a: None, *args
    )
    np.testing.assert_allclose(-loss, tones_reference(*data), rtol=1e-5)


def test_plates_inside_body_gradient():
    data = tones_data(7, 2, 4, 2)
    sequences, lengths = jnp.asarray(data[0]), jnp.asarray(data[1])
    model = tones_model(None)

    def ours(probs_x, probs_y):
        return log_density(model, (sequences, lengths, probs_x, probs_y), {}, {})[0]

    def theirs(probs_x, probs_y):
        # the same forward recursion in jax, per sequence
        total = 0.0
        for seq, length in zip(data[0], data[1], strict=True):
            log_emit = jnp.sum(
                jnp.where(seq[:, None, :] > 0, jnp.log(probs_y), jnp.log1p(-probs_y)),
                -1,
            )
            alpha = jnp.log(probs_x[0]) + log_emit[0]
            for t in range(1, length):
                alpha = jax.nn.logsumexp(alpha[:, None] + jnp.log(probs_x), 0)
                alpha = alpha + log_emit[t]
            # masked steps: factor 1 for each state
            total += jax.nn.logsumexp(alpha) + (len(seq) - length) * np.log(3.0)
        return total

    params = (jnp.asarray(data[2]), jnp.asarray(data[3]))
    for got, want in zip(
        jax.grad(ours, (0, 1))(*params), jax.grad(theirs, (0, 1))(*params), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# an absorbing chain whose carry holds a mask that the data update
# (NumPyro's capture-recapture model)
# ---------------------------------------------------------------------------


def recapture_model(method):
    def model(history, phi, rho):
        num_animals = history.shape[0]

        def step(carry, y):
            seen, z = carry
            with probnn.plate("animals", num_animals, dim=-1):
                with mask(mask=seen):
                    alive = seen * phi * z + (1 - seen)
                    z = probnn.sample(
                        "z", dist.Bernoulli(jnp.clip(alive, 1e-6, 1 - 1e-6)), infer=ENUM
                    )
                    probnn.sample(
                        "y", dist.Bernoulli(jnp.clip(rho * z, 1e-6, 1 - 1e-6)), obs=y
                    )
            return (seen | y.astype(bool), z), None

        z = jnp.ones(num_animals, dtype=jnp.int32)
        seen = history[:, 0].astype(bool)
        scan(step, (seen, z), jnp.swapaxes(history[:, 1:], 0, 1), enum_method=method)

    return model


def recapture_data(seed, num_animals, length, phi=0.6, rho=0.9):
    rng = np.random.default_rng(seed)
    history = np.zeros((num_animals, length), np.float32)
    for i in range(num_animals):
        first = rng.integers(0, length - 1)
        history[i, first] = 1
        alive = True
        for t in range(first + 1, length):
            alive = alive and rng.random() < phi
            history[i, t] = alive and rng.random() < rho
    return history


def recapture_reference(history, phi, rho):
    eps = 1e-6
    total = 0.0
    for row in history.astype(np.float64):
        seen = bool(row[0])
        alpha = np.array([-np.inf, 0.0])  # the carried state starts alive
        for y in row[1:]:
            if seen:
                stay = np.clip(phi, eps, 1 - eps)
                trans = np.log(
                    [[1 - eps, eps], [1 - stay, stay]]
                )  # dead stays dead (clipped), alive survives with phi
                recapture = np.clip(rho * np.array([0.0, 1.0]), eps, 1 - eps)
                emit = np.log(recapture) if y else np.log1p(-recapture)
            else:
                trans = np.zeros((2, 2))
                emit = np.zeros(2)
            alpha = logsumexp(alpha[:, None] + trans, axis=0) + emit
            seen = seen or bool(y)
        total += logsumexp(alpha)
    return total


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("length", [2, 3, 6])
def test_carried_mask_updated_by_data(method, length):
    history = recapture_data(length, 12, length)
    model = recapture_model(method)
    for phi, rho in [(0.6, 0.9), (0.95, 0.2)]:
        value, _ = log_density(model, (jnp.asarray(history), phi, rho), {}, {})
        np.testing.assert_allclose(
            value, recapture_reference(history, phi, rho), rtol=1e-5
        )


def test_carried_mask_model_recovers_parameters():
    """The likelihood peaks near the simulated survival and recapture rates
    (a grid search; probnn had phi = 1.0, rho = 0.14 here)."""
    history = jnp.asarray(recapture_data(0, 300, 7))
    model = recapture_model(None)
    grid = np.linspace(0.05, 0.95, 19)
    density = jax.jit(
        jax.vmap(
            jax.vmap(
                lambda p, r: log_density(model, (history, p, r), {}, {})[0], (None, 0)
            ),
            (0, None),
        )
    )
    values = np.asarray(density(jnp.asarray(grid), jnp.asarray(grid)))
    best = np.unravel_index(np.argmax(values), values.shape)
    assert abs(grid[best[0]] - 0.6) <= 0.1 and abs(grid[best[1]] - 0.9) <= 0.1


# ---------------------------------------------------------------------------
# short scans, and an enumerated support built inside jit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("markov", [True, False])
@pytest.mark.parametrize("length", [1, 2])
def test_short_scans(length, markov):
    rng = np.random.default_rng(length)
    log_trans = np.log(rng.dirichlet(np.ones(3), size=3))
    locs = np.array([-1.0, 0.5, 2.0])
    ys = rng.standard_normal(length)
    table = jnp.asarray(log_trans, dtype=jnp.float32)

    def model(ys):
        def step(x_prev, y):
            logits = table[x_prev] if markov else table[0]
            x = probnn.sample("x", dist.Categorical(logits=logits), infer=ENUM)
            probnn.sample("y", dist.Normal(jnp.asarray(locs)[x], 1.0), obs=y)
            return x, None

        scan(step, 0, ys)

    log_emit = -0.5 * (ys[:, None] - locs) ** 2 - 0.5 * np.log(2 * np.pi)
    trans = log_trans if markov else np.broadcast_to(log_trans[0], (3, 3))
    expected = forward(log_trans[0], trans, log_emit, np.ones(length, bool))
    value, _ = log_density(model, (jnp.asarray(ys),), {}, {})
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_discrete_uniform_expanded_under_jit():
    def model(y):
        with probnn.plate("item", 3, dim=-2):
            c = probnn.sample("c", dist.DiscreteUniform(0, 2), infer=ENUM)
            with probnn.plate("position", 2):
                probnn.sample("y", dist.Normal(1.0 * c, 1.0), obs=y)

    y = jnp.arange(6.0).reshape(3, 2)
    log_emit = -0.5 * (np.asarray(y)[:, None, :] - np.arange(3)[:, None]) ** 2
    log_emit = np.sum(log_emit - 0.5 * np.log(2 * np.pi), -1) - np.log(3)
    expected = np.sum(logsumexp(log_emit, axis=1))
    jitted = jax.jit(lambda y: log_density(model, (y,), {}, {})[0])(y)
    np.testing.assert_allclose(jitted, expected, rtol=1e-5)
