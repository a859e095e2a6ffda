"""Values a network records for inspection (Linen ``self.sow``, NNX
``self.sow(nnx.Intermediate, ...)``) are readable after a call: a
deterministic site ``name$intermediates`` in traces and in ``Predictive``
output, never carried as state from one step to the next."""

import flax.linen as nn
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import probnn
import probnn.distributions as dist
from probnn.handlers import seed, trace
from probnn.infer import SVI, Predictive, Trace_ELBO

X = jax.random.normal(jax.random.PRNGKey(0), (6, 3))


class SowingLinen(nn.Module):
    @nn.compact
    def __call__(self, x):
        hidden = nn.Dense(4)(x)
        self.sow("intermediates", "hidden", hidden)
        return nn.Dense(1)(jnp.tanh(hidden))[:, 0]


class SowingNNX(nnx.Module):
    def __init__(self, rngs):
        self.first = nnx.Linear(3, 4, rngs=rngs)
        self.second = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        hidden = self.first(x)
        self.sow(nnx.Intermediate, "hidden", hidden)
        return self.second(jnp.tanh(hidden))[:, 0]


def _model(network):
    def model(x, y=None):
        mean = network()(x)
        with probnn.plate("n", x.shape[0]):
            probnn.sample("y", dist.Normal(mean, 1.0), obs=y)

    return model


LINEN = _model(lambda: probnn.module("net", SowingLinen(), (1, 3)))
NNX = _model(lambda: probnn.module("net", lambda rngs: SowingNNX(rngs)))


def _hidden(kind, value):
    return (
        value["intermediates"]["hidden"][0] if kind == "linen" else value["hidden"][0]
    )


def test_linen_and_nnx_sown_values_are_a_deterministic_site():
    for kind, model in (("linen", LINEN), ("nnx", NNX)):
        tr = trace(seed(model, 0)).get_trace(X)
        site = tr["net$intermediates"]
        assert site["type"] == "deterministic"
        params = tr["net$params"]["value"]
        first = params["Dense_0"] if kind == "linen" else params["first"]
        expected = X @ first["kernel"] + first["bias"]
        np.testing.assert_allclose(_hidden(kind, site["value"]), expected, rtol=1e-5)


def test_sown_values_come_out_of_predictive_and_are_not_state():
    y = jnp.sin(X[:, 0])
    for kind, model in (("linen", LINEN), ("nnx", NNX)):
        svi = SVI(model, lambda x, y=None: None, optax.adam(0.05), Trace_ELBO())
        result = svi.run(jax.random.PRNGKey(0), 50, X, y, progress_bar=False)
        assert not result.state.mutable_state  # nothing sown is carried
        out = Predictive(model, params=result.params, num_samples=2)(
            jax.random.PRNGKey(1), X
        )
        assert _hidden(kind, out["net$intermediates"]).shape == (2, 6, 4)


def test_a_network_called_twice_records_each_call():
    def model(x):
        net = probnn.module("net", SowingLinen(), (1, 3))
        return net(x), net(2 * x)

    tr = trace(seed(model, 0)).get_trace(X)
    first = tr["net$intermediates"]["value"]["intermediates"]["hidden"][0]
    second = tr["net$intermediates_1"]["value"]["intermediates"]["hidden"][0]
    bias = tr["net$params"]["value"]["Dense_0"]["bias"]
    np.testing.assert_allclose(second - bias, 2 * (first - bias), rtol=1e-4, atol=1e-5)
