"""Networks registered inside traced code keep nothing from the trace.

A Linen cell created inside a scan body with the body's own inputs as its
example arguments, or a network whose initial state is built in a trace,
must not leave tracers behind in probnn's caches: a second trace (another
``svi.run``, another seed) would otherwise fail with an escaped tracer."""

import flax.linen as nn
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.control_flow import scan
from probnn.infer import SVI, Trace_ELBO

# the whole of each test runs under jax.checking_leaks() (tests/conftest.py,
# which also keeps the checks' garbage collections to the test's own objects)
pytestmark = pytest.mark.check_leaks

T, B, H = 6, 4, 8
XS = jax.random.normal(jax.random.PRNGKey(0), (T, B, 3))


class DroppedGRU(nn.Module):
    @nn.compact
    def __call__(self, h, x):
        h, y = nn.GRUCell(H)(h, x)
        return h, nn.Dropout(0.2, deterministic=False)(y)


class NormedStep(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(3, H, rngs=rngs)
        self.norm = nnx.BatchNorm(H, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.dense(x))


def _linen_model(xs):
    def step(h, x):
        # example arguments are the body's own values (tracers)
        cell = probnn.module("cell", DroppedGRU(), None, h, x)
        h, y = cell(h, x)
        with probnn.plate("batch", B):
            probnn.sample("o", dist.Normal(y.sum(-1), 1.0), obs=jnp.zeros(B))
        return h, None

    scan(step, jnp.zeros((B, H)), xs)


def _nnx_model(xs):
    def step(carry, x):
        y = probnn.module("step", lambda rngs: NormedStep(rngs))(x)
        with probnn.plate("batch", B):
            probnn.sample("o", dist.Normal(y.sum(-1), 1.0), obs=jnp.ones(B))
        return carry, None

    scan(step, 0.0, xs)


def _train_twice(model):
    svi = SVI(model, lambda xs: None, optax.adam(1e-2), Trace_ELBO())
    losses = []
    with jax.checking_leaks():
        for rng_seed in (0, 1):
            result = svi.run(jax.random.PRNGKey(rng_seed), 20, XS, progress_bar=False)
            losses.append(result.losses)
    return losses


def test_linen_cell_with_traced_example_arguments_in_a_scan_body():
    first, second = _train_twice(_linen_model)
    assert np.all(np.isfinite(first)) and np.all(np.isfinite(second))
    assert first[-1] < first[0]
    # a fresh SVI object and a jitted loss in a third trace also work
    svi = SVI(_linen_model, lambda xs: None, optax.sgd(1e-3), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(2), XS)
    assert np.isfinite(jax.jit(lambda s: svi.evaluate(s, XS))(state))


def test_nnx_factory_with_batch_statistics_in_a_scan_body():
    first, second = _train_twice(_nnx_model)
    assert np.all(np.isfinite(first)) and np.all(np.isfinite(second))
