"""Flax Linen networks through probnn.module under SVI: gradients, BatchNorm
statistics, dropout keys, results back to Flax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.handlers import seed, substitute, trace
from probnn.infer import SVI, Trace_ELBO
from probnn.nn import to_linen_variables

X = jax.random.normal(jax.random.PRNGKey(0), (32, 3))
Y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3


class Regressor(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(8)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = nn.relu(h)
        h = nn.Dropout(0.2, deterministic=not train)(h)
        return nn.Dense(1)(h)[..., 0]


NET = Regressor()


def model(x, y=None, train=True):
    net = probnn.module("net", NET, input_shape=(-1, 3))
    mean = net(x, train=train)
    with probnn.plate("data", x.shape[0]):
        probnn.sample("y", dist.Normal(mean, 0.1), obs=y)
    return mean


def guide(x, y=None, train=True):
    pass


def test_param_and_state_sites_follow_the_network():
    tr = trace(seed(model, 0)).get_trace(X, Y)
    params = tr["net$params"]["value"]
    assert set(params) == {"Dense_0", "BatchNorm_0", "Dense_1"}
    state = tr["net$state"]["value"]
    assert set(state) == {"batch_stats"}
    # training mode: the statistics moved towards the batch's
    h = X @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    expected_mean = 0.1 * h.mean(0)
    np.testing.assert_allclose(
        state["batch_stats"]["BatchNorm_0"]["mean"], expected_mean, rtol=1e-5, atol=1e-6
    )


def test_gradients_reach_every_parameter_under_jit():
    svi = SVI(model, guide, optax.adam(1e-2), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), X, Y)
    params = state.optim_state[1][0]
    loss_fn = jax.jit(
        lambda p: svi.loss.loss(
            jax.random.PRNGKey(1), {**p, **state.mutable_state}, model, guide, X, Y
        )
    )
    grads = jax.grad(loss_fn)(params)
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        assert np.all(np.isfinite(leaf)), path
        assert np.any(leaf != 0), path


def test_batch_stats_change_across_steps_and_are_used_in_eval_mode():
    svi = SVI(model, guide, optax.adam(1e-2), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 50, X, Y, progress_bar=False)
    stats_after = result.state.mutable_state["net$state"]["batch_stats"]
    initial = svi.init(jax.random.PRNGKey(0), X, Y).mutable_state["net$state"]
    assert not np.allclose(
        stats_after["BatchNorm_0"]["mean"],
        initial["batch_stats"]["BatchNorm_0"]["mean"],
    )
    # eval mode: the probnn model's prediction equals Flax's apply with the
    # trained variables (running statistics, no dropout)
    variables = to_linen_variables("net", result.params, result.state.mutable_state)
    expected = NET.apply(variables, X, train=False)
    data = {**result.params, **result.state.mutable_state}
    predicted = substitute(seed(model, 1), data=data)(X, train=False)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_dropout_masks_differ_between_steps_and_repeat_for_a_seed():
    def net_out(key):
        return seed(model, key)(X, Y)

    first, second = net_out(1), net_out(2)
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(net_out(1), first)
    svi = SVI(model, guide, optax.adam(1e-2), Trace_ELBO())
    a = svi.run(jax.random.PRNGKey(3), 5, X, Y, progress_bar=False)
    b = svi.run(jax.random.PRNGKey(3), 5, X, Y, progress_bar=False)
    np.testing.assert_array_equal(a.losses, b.losses)


def test_missing_seed_for_dropout_names_the_stream():
    params = trace(seed(model, 0)).get_trace(X, Y)["net$params"]["value"]
    with pytest.raises(ValueError, match="'dropout' stream"):
        substitute(model, data={"net$params": params})(X, Y)
