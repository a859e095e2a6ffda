"""`markov` for Python loops: enumerated sites a history window apart share
dims, and every exact quantity equals brute force over all joint
assignments (itertools.product, densities written here in numpy/jax)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.contrib.funsor import markov
from probnn.enumeration import enum
from probnn.handlers import trace
from probnn.infer import TraceEnum_ELBO, infer_discrete
from probnn.infer.util import log_density

ENUM = {"enumerate": "parallel"}
LOCS = np.array([-1.0, 0.5, 2.0])


def normal_logpdf(y, loc):
    return -0.5 * (y - loc) ** 2 - 0.5 * np.log(2 * np.pi)


def random_table(seed, shape):
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.log(rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])))


def chain_model(form, history):
    """An order-``history`` chain over 3 states with Normal emissions,
    looped in Python with markov in the given form."""

    def model(ys, table):
        states = [0] * history

        def step(t):
            logits = table[tuple(states[-history:])]
            x = probnn.sample(f"x_{t}", dist.Categorical(logits=logits), infer=ENUM)
            probnn.sample(f"y_{t}", dist.Normal(jnp.asarray(LOCS)[x], 1.0), obs=ys[t])
            states.append(x)

        if form == "iterator":
            for t in markov(range(len(ys)), history=history):
                step(t)
        elif form == "context":
            loop = markov(history=history)
            for t in range(len(ys)):
                with loop:
                    step(t)
        else:  # a wrapped function, one call per step
            wrapped = markov(step, history=history)
            for t in range(len(ys)):
                wrapped(t)

    return model


def chain_brute_force(ys, table, history):
    """Log joint of every assignment (rows) of the chain."""
    table = np.asarray(table, dtype=np.float64)
    rows = np.array(list(itertools.product(range(3), repeat=len(ys))))
    log_joint = np.zeros(len(rows))
    for t in range(len(ys)):
        past = [
            rows[:, t - lag] if t - lag >= 0 else np.zeros(len(rows), int)
            for lag in range(history, 0, -1)
        ]
        log_joint += table[(*past, rows[:, t])]
        log_joint += normal_logpdf(ys[t], LOCS[rows[:, t]])
    return rows, log_joint


@pytest.mark.parametrize("form", ["iterator", "context", "function"])
@pytest.mark.parametrize("history", [1, 2])
def test_markov_loop_log_density(form, history):
    length = 5
    ys = np.random.default_rng(history).standard_normal(length)
    table = random_table(history, (3,) * (history + 1))
    model = chain_model(form, history)
    # jitted: one compilation instead of one per operation of the loop
    value = jax.jit(lambda ys, t: log_density(model, (ys, t), {}, {})[0])(
        jnp.asarray(ys), table
    )
    _, log_joint = chain_brute_force(ys, table, history)
    np.testing.assert_allclose(value, np.logaddexp.reduce(log_joint), rtol=1e-5)


@pytest.mark.parametrize("history", [1, 2])
def test_markov_recycles_dims(history):
    model = chain_model("iterator", history)
    table = random_table(0, (3,) * (history + 1))
    enumerated = enum(model, first_available_dim=-1)
    model_trace = trace(enumerated).get_trace(jnp.zeros(12), table)
    dims = {
        site["infer"]["_enumerate_dim"]
        for site in model_trace.values()
        if site["type"] == "sample" and not site["is_observed"]
    }
    assert dims == set(range(-1, -history - 2, -1))


def test_markov_loop_gradient_and_elbo():
    ys = np.random.default_rng(3).standard_normal(4)
    table = random_table(3, (3, 3))
    model = chain_model("iterator", 1)

    @jax.jit
    def ours(table):
        return log_density(model, (jnp.asarray(ys), table), {}, {})[0]

    def theirs(table):
        rows = np.array(list(itertools.product(range(3), repeat=len(ys))))
        prev = np.concatenate([np.zeros((len(rows), 1), int), rows[:, :-1]], 1)
        emit = normal_logpdf(ys[None], LOCS[rows]).sum(-1)
        log_probs = jax.nn.log_softmax(table, -1)  # Categorical(logits=...)
        return jax.nn.logsumexp(log_probs[prev, rows].sum(-1) + emit)

    np.testing.assert_allclose(ours(table), theirs(table), rtol=1e-5)
    np.testing.assert_allclose(
        jax.grad(ours)(table), jax.grad(theirs)(table), rtol=1e-4, atol=1e-6
    )
    loss = TraceEnum_ELBO().loss(
        jax.random.PRNGKey(0), {}, model, lambda *a: None, jnp.asarray(ys), table
    )
    np.testing.assert_allclose(-loss, theirs(table), rtol=1e-5)


@pytest.mark.parametrize("history", [1, 2])
def test_markov_loop_viterbi(history):
    ys = np.random.default_rng(10 + history).standard_normal(5) * 2
    table = random_table(10 + history, (3,) * (history + 1))
    model = chain_model("iterator", history)
    decoded = infer_discrete(model, temperature=0, first_available_dim=-1)
    model_trace = trace(decoded).get_trace(jnp.asarray(ys), table)
    got = [int(model_trace[f"x_{t}"]["value"]) for t in range(len(ys))]
    rows, log_joint = chain_brute_force(ys, table, history)
    assert got == rows[np.argmax(log_joint)].tolist()


def test_markov_loop_inside_plate():
    """Several sequences at once: the chain's sites sit in a plate."""
    ys = np.random.default_rng(5).standard_normal((4, 2))  # (time, sequence)
    table = random_table(5, (3, 3))

    def model(ys):
        x = jnp.zeros(ys.shape[1], jnp.int32)
        with probnn.plate("sequences", ys.shape[1]):
            for t in markov(range(ys.shape[0])):
                x = probnn.sample(
                    f"x_{t}", dist.Categorical(logits=table[x]), infer=ENUM
                )
                probnn.sample(
                    f"y_{t}", dist.Normal(jnp.asarray(LOCS)[x], 1.0), obs=ys[t]
                )

    value, _ = log_density(model, (jnp.asarray(ys),), {}, {})
    expected = sum(
        np.logaddexp.reduce(chain_brute_force(ys[:, s], table, 1)[1])
        for s in range(ys.shape[1])
    )
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_markov_arguments_checked():
    with pytest.raises(ValueError, match="history"):
        markov(range(3), history=-1)
    with pytest.raises(TypeError, match="iterable"):
        markov(3)
    with pytest.raises(TypeError, match="iterated"):
        iter(markov()).__next__()
