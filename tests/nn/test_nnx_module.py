"""Flax NNX networks through probnn.module under SVI: gradients, BatchStat
state, dropout keys, graph and tree mode, results back to NNX, ensembles."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.handlers import seed, substitute, trace
from probnn.infer import SVI, Trace_ELBO
from probnn.nn import to_nnx

X = jax.random.normal(jax.random.PRNGKey(0), (32, 3))
Y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3


class Regressor(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(3, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, momentum=0.9, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.norm(self.hidden(x)))
        return self.out(self.drop(h))[..., 0]


def make_model(net):
    def model(x, y=None):
        mean = probnn.module("net", net)(x)
        with probnn.plate("data", x.shape[0]):
            probnn.sample("y", dist.Normal(mean, 0.1), obs=y)
        return mean

    return model


def empty_guide(x, y=None):
    pass


@pytest.mark.parametrize("graph", [True, False])
def test_svi_trains_batch_stats_and_eval_mode_matches_flax(graph):
    with nnx.set_graph_mode(graph):
        net = Regressor(nnx.Rngs(0))
        model = make_model(net)
        svi = SVI(model, empty_guide, optax.adam(1e-2), Trace_ELBO())
        init = svi.init(jax.random.PRNGKey(0), X, Y)
        result = svi.run(jax.random.PRNGKey(0), 60, X, Y, progress_bar=False)
    before = init.mutable_state["net$state"]["norm"]["mean"]
    after = result.state.mutable_state["net$state"]["norm"]["mean"]
    assert not np.allclose(before, after)
    assert result.losses[-1] < result.losses[0]
    # every parameter moved
    start = jax.tree.leaves(svi.get_params(init)["net$params"])
    end = jax.tree.leaves(result.params["net$params"])
    assert all(not np.allclose(a, b) for a, b in zip(start, end))
    # back to NNX: the trained module in eval mode predicts what the probnn
    # model predicts with the same (eval-mode) module
    trained = to_nnx("net", net, result.params, result.state.mutable_state)
    trained.eval()
    net.eval()
    data = {**result.params, **result.state.mutable_state}
    predicted = substitute(seed(make_model(net), 1), data=data)(X)
    np.testing.assert_allclose(predicted, trained(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trained.norm.mean[...], after, rtol=1e-6)
    net.train()


def test_dropout_differs_between_seeds_and_repeats_for_one():
    model = make_model(Regressor(nnx.Rngs(1)))
    first, second = seed(model, 1)(X), seed(model, 2)(X)
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(seed(model, 1)(X), first)


def test_gradients_reach_every_parameter_under_jit():
    model = make_model(Regressor(nnx.Rngs(2)))
    svi = SVI(model, empty_guide, optax.adam(1e-2), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), X, Y)

    @jax.jit
    def loss(params):
        data = {**params, **state.mutable_state}
        return svi.loss.loss(jax.random.PRNGKey(1), data, model, empty_guide, X, Y)

    grads = jax.grad(loss)(state.optim_state[1][0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        assert np.any(np.asarray(leaf) != 0), path


def test_factory_ensemble_members_are_initialised_independently():
    def model(x):
        with probnn.plate("members", 4, dim=-2):
            return probnn.module(
                "net", lambda rngs: nnx.Linear(3, 1, rngs=rngs), members="members"
            )(x)

    tr = trace(seed(model, 0)).get_trace(X)
    kernel = tr["net$params"]["value"]["kernel"]
    assert kernel.shape == (4, 3, 1)
    assert not np.allclose(kernel[0], kernel[1])
    out = seed(model, 0)(X)
    bias = tr["net$params"]["value"]["bias"]
    expected = jnp.einsum("nd,mdo->mno", X, kernel) + bias[:, None, :]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_changed_structure_raises():
    net = nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))

    def model(x):
        return probnn.module("net", net)(x)

    seed(model, 0)(X)
    net.layers.append(nnx.Linear(2, 2, rngs=nnx.Rngs(1)))
    with pytest.raises(ValueError, match="'net'"):
        seed(model, 0)(X)
