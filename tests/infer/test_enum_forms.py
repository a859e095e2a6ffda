"""Enumeration on the ways users write their models, each against a forward
recursion written here in numpy (one sequence at a time, no probnn code).

The forms: plates declared inside the scan body around the enumerated state
(with a nested plate around the emission), a carry that mixes the state with
a step counter or a mask that evolves with the data, `mask` inside the body
(a masked site's factor is 1 for every value of the site, as in NumPyro with
funsor), scans of length 1 and 2, and `DiscreteUniform(...).expand(...)`
enumerated under `jit`.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.control_flow import scan
from probnn.handlers import enum, mask, trace
from probnn.infer import TraceEnum_ELBO, infer_discrete
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
    # TraceEnum_ELBO leaves masked steps out: a masked state's own density
    # sums to one (log_density counts 1 for each of its 3 values)
    loss = TraceEnum_ELBO().loss(
        jax.random.PRNGKey(0), {}, model, lambda *a: None, *args
    )
    masked_steps = np.sum(length - np.minimum(data[1], length))
    expected = tones_reference(*data) - masked_steps * np.log(3.0)
    np.testing.assert_allclose(-loss, expected, rtol=1e-5)


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


# ---------------------------------------------------------------------------
# the initial state sampled before the scan (summed out after the first step)
# ---------------------------------------------------------------------------


def initial_state_model(method, num_sequences):
    def model(ys, log_init, log_trans, locs):
        with probnn.plate("sequences", num_sequences, dim=-1):
            x = probnn.sample("x_0", dist.Categorical(logits=log_init), infer=ENUM)
            probnn.sample("y_0", dist.Normal(locs[x], 1.0), obs=ys[0])

            def step(x_prev, y):
                x = probnn.sample(
                    "x", dist.Categorical(logits=log_trans[x_prev]), infer=ENUM
                )
                probnn.sample("y", dist.Normal(locs[x], 1.0), obs=y)
                return x, None

            scan(step, x, ys[1:], enum_method=method)

    return model


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("length, num_sequences", [(2, 1), (3, 2), (6, 3)])
def test_initial_state_before_scan(method, length, num_sequences):
    rng = np.random.default_rng(length)
    log_init = np.log(rng.dirichlet(np.ones(3)))
    log_trans = np.log(rng.dirichlet(np.ones(3), size=3))
    locs = np.array([-1.5, 0.0, 1.5])
    ys = 1.5 * rng.standard_normal((length, num_sequences))
    log_emit = -0.5 * (ys[..., None] - locs) ** 2 - 0.5 * np.log(2 * np.pi)
    expected = sum(
        forward(log_init, log_trans, log_emit[:, s], np.ones(length, bool))
        for s in range(num_sequences)
    )
    model = initial_state_model(method, num_sequences)
    args = (
        jnp.asarray(ys),
        jnp.asarray(log_init),
        jnp.asarray(log_trans),
        jnp.asarray(locs),
    )
    value, _ = log_density(model, args, {}, {})
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    # the MAP path through the chain (Viterbi) for one sequence, by brute force
    decoded = infer_discrete(model, temperature=0)
    model_trace = trace(decoded).get_trace(*args)
    path = np.concatenate(
        [
            np.asarray(model_trace["x_0"]["value"])[None],
            np.asarray(model_trace["x"]["value"]).reshape(length - 1, -1),
        ]
    )[:, 0]
    paths = np.array(list(itertools.product(range(3), repeat=length)))
    steps = np.arange(length)
    scores = log_init[paths[:, 0]] + log_emit[steps, 0, paths].sum(-1)
    scores = scores + log_trans[paths[:, :-1], paths[:, 1:]].sum(-1)
    assert path.tolist() == paths[np.argmax(scores)].tolist()


def start_model(variant, method, reverse):
    """An initial state ``x_0`` sampled before the scan and passed as its
    carry; ``variant``: ``"carry"`` (read only through the carry),
    ``"body"`` (the body also reads it directly, every step) or ``"shared"``
    (a second site outside the scan, ``w``, reads it too, with another
    enumerated site ``u``)."""

    def model(ys, log_init, log_trans, locs):
        x0 = probnn.sample("x_0", dist.Categorical(logits=log_init), infer=ENUM)
        probnn.sample("y_0", dist.Normal(locs[x0], 1.0), obs=ys[0])
        if variant == "shared":
            u = probnn.sample("u", dist.Bernoulli(0.3), infer=ENUM)
            probnn.sample("w", dist.Normal(locs[x0] + u, 1.0), obs=0.4)

        def step(x_prev, y):
            logits = log_trans[x_prev]
            if variant == "body":
                logits = logits + 0.5 * log_trans[x0]
            x = probnn.sample("x", dist.Categorical(logits=logits), infer=ENUM)
            probnn.sample("y", dist.Normal(locs[x], 1.0), obs=y)
            return x, None

        scan(step, x0, ys[1:], enum_method=method, reverse=reverse)

    return model


def start_brute_force(variant, reverse, ys, log_init, log_trans, locs):
    """log p(ys) summed over every path, in JAX written here (no probnn)."""
    T, K = len(ys), len(locs)
    norm = jax.scipy.stats.norm.logpdf
    paths = jnp.asarray(list(itertools.product(range(K), repeat=T)))  # (P, T)
    rows = jnp.arange(len(paths))
    x0 = paths[:, 0]
    score = jax.nn.log_softmax(log_init)[x0] + norm(ys[0], locs[x0], 1.0)
    # the scan visits ys[1:] backwards when reversed
    order = range(T - 1, 0, -1) if reverse else range(1, T)
    prev = x0
    for t in order:
        logits = log_trans[prev]
        if variant == "body":
            logits = logits + 0.5 * log_trans[x0]
        score = score + jax.nn.log_softmax(logits)[rows, paths[:, t]]
        score = score + norm(ys[t], locs[paths[:, t]], 1.0)
        prev = paths[:, t]
    if variant == "shared":  # u in {0, 1} with probabilities 0.7, 0.3
        with_u = [
            score + jnp.log(p) + norm(0.4, locs[x0] + u, 1.0)
            for u, p in ((0, 0.7), (1, 0.3))
        ]
        score = jnp.concatenate(with_u)
    return jax.nn.logsumexp(score)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "variant, reverse",
    [("carry", False), ("carry", True), ("body", False), ("shared", True)],
)
def test_initial_state_starts_the_loop(method, variant, reverse):
    # the scan's first step runs inside its loop (no unrolled copy of the
    # body), with the initial state's dim linked to the carried site's lag;
    # value and gradient against brute force over every path
    rng = np.random.default_rng(7)
    T, K = 4, 3
    args = (
        jnp.asarray(1.5 * rng.standard_normal(T), dtype=jnp.float32),
        jnp.asarray(rng.standard_normal(K), dtype=jnp.float32),
        jnp.asarray(rng.standard_normal((K, K)), dtype=jnp.float32),
        jnp.asarray([-1.5, 0.0, 1.5], dtype=jnp.float32),
    )
    model = start_model(variant, method, reverse)
    model_trace = trace(enum(model, first_available_dim=-1)).get_trace(*args)
    assert not any(name.startswith("_") for name in model_trace)
    assert jnp.shape(model_trace["y"]["value"])[0] == T - 1

    elbo = TraceEnum_ELBO()

    def loss(*args):
        return elbo.loss(jax.random.PRNGKey(0), {}, model, lambda *a: None, *args)

    def expected(*args):
        return -start_brute_force(variant, reverse, *args)

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(1, 2, 3)))(*args)
    want, want_grads = jax.jit(jax.value_and_grad(expected, argnums=(1, 2, 3)))(*args)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    for got, ref in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# several sites per step: one site's past value read only by another site,
# and a carried value that nothing reads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("length", [1, 2, 3])
def test_past_value_read_by_another_site(method, length):
    rng = np.random.default_rng(length)
    table_a = rng.normal(size=(2, 2, 2))  # a | a one step back, b one step back
    logits_b = rng.normal(size=2)
    locs = np.array([-1.0, 1.0])
    ys = rng.standard_normal(length)

    def model(ys):
        def step(carry, y):
            a_prev, b_prev = carry
            a = probnn.sample(
                "a",
                dist.Categorical(logits=jnp.asarray(table_a)[a_prev, b_prev]),
                infer=ENUM,
            )
            b = probnn.sample(
                "b", dist.Categorical(logits=jnp.asarray(logits_b)), infer=ENUM
            )
            probnn.sample("y", dist.Normal(jnp.asarray(locs)[a], 1.0), obs=y)
            return (a, b), None

        scan(step, (0, 0), ys, enum_method=method)

    log_a = table_a - np.logaddexp.reduce(table_a, axis=-1, keepdims=True)
    log_b = logits_b - np.logaddexp.reduce(logits_b)
    scores = []
    for path in itertools.product(range(2), repeat=2 * length):
        a, b = path[:length], path[length:]
        score, a_prev, b_prev = 0.0, 0, 0
        for t in range(length):
            score += log_a[a_prev, b_prev, a[t]] + log_b[b[t]]
            score += -0.5 * (ys[t] - locs[a[t]]) ** 2 - 0.5 * np.log(2 * np.pi)
            a_prev, b_prev = a[t], b[t]
        scores.append(score)
    value, _ = log_density(model, (jnp.asarray(ys),), {}, {})
    np.testing.assert_allclose(value, np.logaddexp.reduce(scores), rtol=1e-5)


def test_carried_value_nothing_reads():
    logits = np.array([0.3, -0.2])
    locs = np.array([-1.0, 1.0])
    ys = np.array([0.5, -0.3, 1.2])

    def model(ys):
        def step(carry, y):
            x = probnn.sample(
                "x", dist.Categorical(logits=jnp.asarray(logits)), infer=ENUM
            )
            probnn.sample("y", dist.Normal(jnp.asarray(locs)[x], 1.0), obs=y)
            return (x,), None

        scan(step, (jnp.array(0),), ys)

    log_p = logits - np.logaddexp.reduce(logits)
    log_emit = -0.5 * (ys[:, None] - locs) ** 2 - 0.5 * np.log(2 * np.pi)
    expected = np.sum(np.logaddexp.reduce(log_p + log_emit, axis=1))
    value, _ = log_density(model, (jnp.asarray(ys),), {}, {})
    np.testing.assert_allclose(value, expected, rtol=1e-5)


# ---------------------------------------------------------------------------
# masked members of an enumerated site: TraceEnum_ELBO leaves them out
# (their own density sums to one), log_density counts their factor as 1 for
# every value; both as NumPyro does
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [(True, True), (True, False), (False, False)])
def test_masked_enumerated_members(keep):
    prior = np.array([0.75, 0.25])
    emission = np.array([[0.3, 0.7], [0.2, 0.8]])
    data = np.array([1, 0])

    def model(keep):
        with probnn.plate("data", 2), mask(mask=keep):
            y = probnn.sample("y", dist.Categorical(jnp.asarray(prior)), infer=ENUM)
            probnn.sample(
                "z", dist.Categorical(jnp.asarray(emission)[y]), obs=jnp.asarray(data)
            )

    member = np.log(prior @ emission[:, data])  # log p(z_i) of each member
    keep = jnp.asarray(keep)
    elbo = -TraceEnum_ELBO().loss(
        jax.random.PRNGKey(0), {}, model, lambda k: None, keep
    )
    np.testing.assert_allclose(
        elbo, np.sum(np.where(keep, member, 0.0)), rtol=1e-6, atol=1e-6
    )
    value, _ = log_density(model, (keep,), {}, {})
    expected = np.sum(np.where(keep, member, np.log(2.0)))
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-6)


def test_sequential_guide_sites_are_drawn():
    """``enumerate="sequential"`` marks a site as NumPyro does: it is drawn,
    so the ELBO is a one-sample estimate, not the exact expectation."""

    def model():
        b = probnn.sample("b", dist.Categorical(jnp.array([0.6, 0.4])))
        probnn.sample("c", dist.Normal(1.0 * b, 1.0), obs=0.5)

    @probnn.handlers.config_enumerate(default="sequential")
    def guide():
        probnn.sample("b", dist.Categorical(jnp.array([0.8, 0.2])))

    key = jax.random.PRNGKey(3)
    loss = TraceEnum_ELBO().loss(key, {}, model, guide)
    guide_trace = trace(probnn.handlers.seed(guide, key)).get_trace()
    assert guide_trace["b"]["infer"] == {"enumerate": "sequential"}
    draws = {
        float(TraceEnum_ELBO().loss(jax.random.PRNGKey(k), {}, model, guide))
        for k in range(20)
    }
    assert len(draws) == 2 and float(loss) in draws


# ---------------------------------------------------------------------------
# guide-side enumeration: each cost weighted by the guide sites it depends on
# ---------------------------------------------------------------------------


def test_guide_enumeration_weights_each_cost_by_its_own_sites():
    """With guide tables passed in unnormalised, the gradient shows which
    guide probabilities weight which cost: a cost of b_i is weighted by
    q(a) q(b_i | a) only, not by the other b_j's probabilities."""
    model_a = jnp.array([0.45, 0.55])
    model_b = jnp.array([[0.3, 0.7], [0.6, 0.4]])
    model_c = jnp.array([[0.3, 0.4, 0.3], [0.4, 0.4, 0.2]])
    data = jnp.array([1, 2])

    def model(guide_a, guide_b):
        a = probnn.sample("a", dist.Categorical(model_a))
        for i in range(2):
            b = probnn.sample(f"b_{i}", dist.Categorical(model_b[a]))
            probnn.sample(f"c_{i}", dist.Categorical(model_c[b]), obs=data[i])

    def guide(guide_a, guide_b):
        a = probnn.sample("a", dist.Categorical(guide_a), infer=ENUM)
        for i in range(2):
            probnn.sample(f"b_{i}", dist.Categorical(guide_b[a]), infer=ENUM)

    def loss(guide_a, guide_b):
        return TraceEnum_ELBO().loss(
            jax.random.PRNGKey(0), {}, model, guide, guide_a, guide_b
        )

    def expected(guide_a, guide_b):
        # Categorical(probs) reads its table as given (as NumPyro's does)
        log_qa, log_qb = jnp.log(guide_a), jnp.log(guide_b)
        elbo = jnp.sum(guide_a * (jnp.log(model_a) - log_qa))
        for i in range(2):
            cost = jnp.log(model_b) + jnp.log(model_c[:, data[i]]) - log_qb
            elbo += jnp.sum(guide_a[:, None] * guide_b * cost)
        return -elbo

    guide_a = jnp.array([0.45, 0.55])
    guide_b = jnp.array([[0.3, 0.7], [0.8, 0.2]])
    np.testing.assert_allclose(
        loss(guide_a, guide_b), expected(guide_a, guide_b), rtol=1e-6
    )
    for got, want in zip(
        jax.grad(loss, (0, 1))(guide_a, guide_b),
        jax.grad(expected, (0, 1))(guide_a, guide_b),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("keep", [(True, False), (False, False), (True, True)])
def test_masked_members_with_guide_enumeration(keep):
    """A masked site that the guide enumerates keeps its mask in the model
    (only the model's own enumerated sites enter unmasked)."""
    guide_x = np.array([0.1, 0.9])
    model_x = np.array([0.4, 0.6])
    model_y = np.array([[0.75, 0.25], [0.55, 0.45]])
    model_z = np.array([[0.3, 0.7], [0.2, 0.8]])
    data = np.array([1, 0])
    keep = jnp.asarray(keep)

    def model():
        with probnn.plate("data", 2), mask(mask=keep):
            x = probnn.sample("x", dist.Categorical(jnp.asarray(model_x)))
            y = probnn.sample(
                "y", dist.Categorical(jnp.asarray(model_y)[x]), infer=ENUM
            )
            probnn.sample(
                "z", dist.Categorical(jnp.asarray(model_z)[y]), obs=jnp.asarray(data)
            )

    def guide():
        with probnn.plate("data", 2), mask(mask=keep):
            probnn.sample("x", dist.Categorical(jnp.asarray(guide_x)), infer=ENUM)

    # each kept member: E_q(x)[log p(x) - log q(x) + log sum_y p(y|x) p(z|y)]
    marginal = model_y @ model_z[:, data]  # (x, member)
    member = guide_x @ (np.log(model_x / guide_x)[:, None] + np.log(marginal))
    expected = np.sum(np.where(keep, member, 0.0))
    loss = TraceEnum_ELBO().loss(jax.random.PRNGKey(0), {}, model, guide)
    np.testing.assert_allclose(-loss, expected, rtol=1e-5, atol=1e-6)


def _big_exps(jaxpr, length):
    """Shapes of ``exp`` results with a leading dim of ``length`` outside
    loop bodies (work repeated for every step of the series)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "exp":
            shape = eqn.outvars[0].aval.shape
            if shape and shape[0] == length:
                found.append(shape)
        if eqn.primitive.name not in ("scan", "while"):
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                found += _big_exps(sub, length)
    return found


@pytest.mark.parametrize("masked", [False, True])
def test_step_invariant_transition_normalised_once(masked):
    # A transition row normalised in the body and indexed by the enumerated
    # previous state is the same at every step: its normalisation must run
    # once, not once per step on the stacked distribution after the scan,
    # and the value must be what the stacked distribution gives.
    T, K = 37, 3
    y = jnp.asarray(np.random.default_rng(0).normal(size=T), jnp.float32)
    keep = jnp.arange(T) % 4 != 1

    def model(trans_logits, locs):
        def step(prev, xs):
            y_t, keep_t = xs
            row = jax.nn.log_softmax(trans_logits[prev], axis=-1)
            with mask(mask=keep_t if masked else True):
                x = probnn.sample(
                    "x", dist.Categorical(logits=row), infer={"enumerate": "parallel"}
                )
            probnn.sample("y", dist.Normal(locs[x], 1.0), obs=y_t)
            return x, None

        scan(step, 0, (y, keep))

    def loss(trans_logits, locs):
        return TraceEnum_ELBO().loss(
            jax.random.PRNGKey(0), {}, model, lambda *a: None, trans_logits, locs
        )

    def density(trans_logits, locs):
        return log_density(model, (trans_logits, locs), {}, {})[0]

    args = (jnp.eye(K) * 2.0, jnp.arange(K, dtype=jnp.float32))
    for fn in (loss, density):
        closed = jax.make_jaxpr(fn)(*args)
        assert _big_exps(closed.jaxpr, T - 1) == []

    # the same numbers by the forward algorithm by hand: in the ELBO the
    # enumerated site's own density enters unmasked, in log_density a
    # masked-out step's factor is 1 for every value
    def forward(weights):
        log_trans = jax.nn.log_softmax(args[0], axis=-1)
        log_emit = jax.scipy.stats.norm.logpdf(y[:, None], args[1], 1.0)
        step_trans = jnp.broadcast_to(log_trans, (T, K, K)) * weights
        alpha = step_trans[0, 0] + log_emit[0]
        for t in range(1, T):
            prior = jax.nn.logsumexp(alpha[:, None] + step_trans[t], axis=0)
            alpha = prior + log_emit[t]
        return jax.nn.logsumexp(alpha)

    weights = jnp.where(keep, 1.0, 0.0)[:, None, None] if masked else 1.0
    np.testing.assert_allclose(loss(*args), -forward(1.0), rtol=1e-5)
    np.testing.assert_allclose(density(*args), forward(weights), rtol=1e-5)


def test_continuous_latent_in_enumerated_scan_is_a_clear_error():
    # a per-step continuous latent inside an enumerated scan: the unrolled
    # first step is its own site, so potential_energy cannot pair the
    # unconstrained series with the trace; it says so instead of failing
    # on shapes (the same latent drawn in a plate outside the scan works)
    from probnn.infer.util import potential_energy

    y = jnp.array([0, 1, 1, 0, 1])

    def model(inside):
        if not inside:
            with probnn.plate("steps", 5):
                rates = probnn.sample("rate", dist.Uniform(0.0, 1.0))

        def step(prev, xs):
            y_t, rate_t = xs
            if inside:
                rate_t = probnn.sample("rate", dist.Uniform(0.0, 1.0))
            x = probnn.sample(
                "x",
                dist.Bernoulli(jnp.where(prev == 1, 0.8, 0.3)),
                infer={"enumerate": "parallel"},
            )
            probnn.sample("y", dist.Bernoulli(jnp.where(x == 1, rate_t, 0.1)), obs=y_t)
            return x, None

        scan(step, 0, (y, jnp.zeros(5) if inside else rates))

    params = {"rate": jnp.zeros(5)}
    with pytest.raises(NotImplementedError, match="'rate'.*scan with enumerated"):
        potential_energy(model, (True,), {}, params)
    assert np.isfinite(potential_energy(model, (False,), {}, params))
