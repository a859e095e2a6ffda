"""probnn.contrib.module: NumPyro's flax_module / nnx_module / eqx_module
family and their random_* variants: sites, training under SVI, state through
mutable sites, dropout keys, priors under NUTS, and errors."""

import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import probnn
import probnn.distributions as dist
from probnn.contrib.module import (
    ParamShape,
    _update_params,
    eqx_from_dict,
    eqx_module,
    eqx_to_dict,
    flax_module,
    nnx_module,
    random_eqx_module,
    random_flax_module,
    random_nnx_module,
)
from probnn.handlers import seed, substitute, trace
from probnn.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO

KEY = jax.random.PRNGKey(0)
# a small regression problem: y = 2 x0 - x1 + 0.5
X = jax.random.normal(jax.random.PRNGKey(1), (64, 2))
TRUE_W = jnp.array([2.0, -1.0])
Y = X @ TRUE_W + 0.5


def no_guide(*args, **kwargs):
    pass


def regression(net_fn):
    """A model observing Y around the network's output."""

    def model(x, y=None):
        mean = net_fn()(x)[..., 0]
        with probnn.plate("rows", x.shape[0]):
            probnn.sample("y", dist.Normal(mean, 0.1), obs=y)

    return model


def run_svi(model, steps, lr=0.05, guide=no_guide):
    svi = SVI(model, guide, optax.adam(lr), Trace_ELBO())
    return svi.run(KEY, steps, X, Y, progress_bar=False)


# -- Flax Linen ------------------------------------------------------------------


class TwoLayer(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(1, name="out")(linen.Dense(3, name="hidden")(x))


def test_flax_module_param_site_names_and_shapes():
    def from_shape():
        return flax_module("net", TwoLayer(), input_shape=(2,))

    def from_args():
        return flax_module("net", TwoLayer(), jnp.ones((5, 2)))

    def from_kwargs():
        return flax_module("net", linen.Dense(4), inputs=jnp.ones(7))

    for fn, shapes in [
        (from_shape, {"hidden": (2, 3), "out": (3, 1)}),
        (from_args, {"hidden": (2, 3), "out": (3, 1)}),
    ]:
        tr = trace(seed(fn, 0)).get_trace()
        assert list(tr) == ["net$params"] and tr["net$params"]["type"] == "param"
        params = tr["net$params"]["value"]
        for layer, shape in shapes.items():
            assert params[layer]["kernel"].shape == shape
            assert params[layer]["bias"].shape == shape[-1:]
    tr = trace(seed(from_kwargs, 0)).get_trace()
    assert tr["net$params"]["value"]["kernel"].shape == (7, 4)


def test_flax_module_runs_the_network_with_the_site_values():
    def model(x):
        return flax_module("net", TwoLayer(), input_shape=(2,))(x)

    tr = trace(seed(model, 3)).get_trace(X)
    params = tr["net$params"]["value"]
    expected = TwoLayer().apply({"params": params}, X)
    np.testing.assert_allclose(seed(model, 3)(X), expected, rtol=1e-6)
    # substituted parameters are the ones used
    zeros = jax.tree.map(jnp.zeros_like, params)
    out = substitute(seed(model, 3), data={"net$params": zeros})(X)
    np.testing.assert_array_equal(out, jnp.zeros((64, 1)))


def test_flax_module_without_seed_initialises_from_key_zero():
    def model():
        return flax_module("net", linen.Dense(2), input_shape=(3,)).args[0]

    unseeded = model()
    again = trace(model).get_trace()["net$params"]["value"]
    np.testing.assert_array_equal(unseeded["kernel"], again["kernel"])
    seeded = seed(model, 5)()
    assert not np.allclose(seeded["kernel"], unseeded["kernel"])


def test_flax_module_svi_fits_the_weights():
    model = regression(lambda: flax_module("lin", linen.Dense(1), input_shape=(2,)))
    result = run_svi(model, 400)
    params = result.params["lin$params"]
    np.testing.assert_allclose(params["kernel"][:, 0], TRUE_W, atol=0.05)
    np.testing.assert_allclose(params["bias"], [0.5], atol=0.05)
    assert result.losses[-1] < result.losses[0]


class Normed(linen.Module):
    @linen.compact
    def __call__(self, x, train=True):
        h = linen.Dense(4)(x)
        return linen.BatchNorm(use_running_average=not train, momentum=0.5)(h)


def test_flax_batch_stats_live_in_the_mutable_site_and_are_updated():
    def model(x, y=None, train=True):
        net = flax_module("bn", Normed(), input_shape=(2,), mutable=["batch_stats"])
        out = net(x, train=train)
        probnn.deterministic("out", out)
        with probnn.plate("rows", x.shape[0]):
            probnn.sample("y", dist.Normal(out[:, 0], 1.0), obs=y)

    tr = trace(seed(model, 0)).get_trace(X + 3.0)
    assert tr["bn$state"]["type"] == "mutable"
    assert set(tr["bn$state"]["value"]) == {"batch_stats"}
    params = tr["bn$params"]["value"]
    hidden = (X + 3.0) @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    # one call in training mode: mean = 0.5 * 0 + 0.5 * batch mean
    np.testing.assert_allclose(
        tr["bn$state"]["value"]["batch_stats"]["BatchNorm_0"]["mean"],
        0.5 * hidden.mean(0),
        rtol=1e-5,
    )

    # with the weights held fixed (zero learning rate) each step moves the
    # running mean half way to the batch mean
    svi = SVI(model, no_guide, optax.sgd(0.0), Trace_ELBO())
    result = svi.run(KEY, 3, X + 3.0, Y, progress_bar=False)
    state = result.state.mutable_state["bn$state"]["batch_stats"]["BatchNorm_0"]
    trained = result.params["bn$params"]
    hidden = (X + 3.0) @ trained["Dense_0"]["kernel"] + trained["Dense_0"]["bias"]
    # four updates: SVI's initial run of the model and three steps
    np.testing.assert_allclose(state["mean"], 0.9375 * hidden.mean(0), rtol=1e-4)

    # Predictive in eval mode reads the trained statistics
    # (a copy: the model updates the state dict it is given in place)
    data = {**result.params, "bn$state": dict(result.state.mutable_state["bn$state"])}
    pred = Predictive(model, params=data, num_samples=1, return_sites=["out"])
    out = pred(KEY, X + 3.0, train=False)["out"][0]
    expected = Normed().apply(
        {"params": trained, **result.state.mutable_state["bn$state"]},
        X + 3.0,
        train=False,
    )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


class Dropped(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dropout(0.5, deterministic=False)(linen.Dense(8)(x))


@pytest.mark.parametrize("explicit_rngs", [True, False])
def test_flax_dropout_gets_a_fresh_key_per_step(explicit_rngs):
    def model(x, y=None):
        net = flax_module("drop", Dropped(), input_shape=(2,), apply_rng=["dropout"])
        if explicit_rngs:
            out = net(x, rngs={"dropout": probnn.prng_key()})
        else:
            out = net(x)  # keys drawn from the enclosing seed
        with probnn.plate("rows", x.shape[0]):
            probnn.sample("y", dist.Normal(out.sum(-1), 1.0), obs=y)
        return out

    first, again, other = seed(model, 1)(X), seed(model, 1)(X), seed(model, 2)(X)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first == 0, other == 0)  # another dropout mask
    assert 0.3 < float(jnp.mean(first == 0)) < 0.7

    # with a zero learning rate the parameters stay put: the losses differ
    # from step to step only because every step drops other units
    svi = SVI(model, no_guide, optax.sgd(0.0), Trace_ELBO())
    losses = svi.run(KEY, 6, X, Y, progress_bar=False).losses
    assert len(set(np.asarray(losses).tolist())) == 6


def test_flax_dropout_without_any_key_is_a_clear_error():
    def model(x):
        return flax_module("drop", Dropped(), input_shape=(2,))(x)

    with pytest.raises(ValueError, match=r"flax_module 'drop'.*'dropout'.*apply_rng"):
        seed(model, 0)(X)


def test_random_flax_module_draws_every_parameter_from_the_prior():
    def model():
        net = random_flax_module(
            "net", TwoLayer(), dist.Normal(0.0, 1.0), input_shape=(2,)
        )
        return net(jnp.ones((1, 2)))

    tr = trace(seed(model, 0)).get_trace()
    drawn = {n: s["value"].shape for n, s in tr.items() if s["type"] == "sample"}
    assert drawn == {
        "net/hidden.bias": (3,),
        "net/hidden.kernel": (2, 3),
        "net/out.bias": (1,),
        "net/out.kernel": (3, 1),
    }
    # each parameter is one event of the broadcast prior
    assert tr["net/hidden.kernel"]["fn"].event_shape == (2, 3)
    assert tr["net$params"]["value"] == {
        "hidden": {"bias": ParamShape((3,)), "kernel": ParamShape((2, 3))},
        "out": {"bias": ParamShape((1,)), "kernel": ParamShape((3, 1))},
    }
    params = {
        "hidden": {
            "kernel": tr["net/hidden.kernel"]["value"],
            "bias": tr["net/hidden.bias"]["value"],
        },
        "out": {
            "kernel": tr["net/out.kernel"]["value"],
            "bias": tr["net/out.bias"]["value"],
        },
    }
    expected = TwoLayer().apply({"params": params}, jnp.ones((1, 2)))
    np.testing.assert_allclose(seed(model, 0)(), expected, rtol=1e-6)


def test_random_flax_module_dict_and_callable_priors():
    seen = []

    def callable_prior(name, shape):
        seen.append((name, shape))
        return dist.Laplace(0.0, 1.0) if name.endswith("kernel") else None

    def model(prior):
        random_flax_module("net", TwoLayer(), prior, input_shape=(2,))

    dict_prior = {"hidden.kernel": dist.Normal(0.0, 2.0)}
    tr = trace(seed(model, 0)).get_trace(dict_prior)
    assert [n for n, s in tr.items() if s["type"] == "sample"] == ["net/hidden.kernel"]
    params = tr["net$params"]["value"]
    assert params["hidden"]["kernel"] == ParamShape((2, 3))
    assert params["out"]["kernel"].shape == (3, 1)  # still trainable

    tr = trace(seed(model, 0)).get_trace(callable_prior)
    assert sorted(n for n, s in tr.items() if s["type"] == "sample") == [
        "net/hidden.kernel",
        "net/out.kernel",
    ]
    value = tr["net/out.kernel"]["value"]
    np.testing.assert_allclose(
        tr["net/out.kernel"]["fn"].log_prob(value),
        dist.Laplace(0.0, 1.0).log_prob(value).sum(),
        rtol=1e-6,
    )
    assert sorted(seen) == [
        ("hidden.bias", (3,)),
        ("hidden.kernel", (2, 3)),
        ("out.bias", (1,)),
        ("out.kernel", (3, 1)),
    ]


def test_random_flax_module_keeps_substituted_params_unchanged():
    def model():
        return random_flax_module(
            "net", linen.Dense(2), {"kernel": dist.Normal()}, input_shape=(3,)
        )

    given = {"kernel": jnp.ones((3, 2)), "bias": jnp.full((2,), 7.0)}
    snapshot = jax.tree.map(np.array, given)
    net = substitute(seed(model, 0), data={"net$params": given})()
    assert set(given) == {"kernel", "bias"}
    jax.tree.map(np.testing.assert_array_equal, given, snapshot)
    assert net.args[0]["bias"] is given["bias"]
    assert net.args[0]["kernel"].shape == (3, 2)
    assert not np.allclose(net.args[0]["kernel"], 1.0)


def test_random_flax_module_under_nuts_recovers_the_weights():
    def model(x, y=None):
        net = random_flax_module(
            "lin", linen.Dense(1), dist.Normal(0.0, 5.0), input_shape=(2,)
        )
        with probnn.plate("rows", x.shape[0]):
            probnn.sample("y", dist.Normal(net(x)[:, 0], 0.1), obs=y)

    mcmc = MCMC(NUTS(model), num_warmup=100, num_samples=100, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(2), X, Y)
    samples = mcmc.get_samples()
    assert set(samples) == {"lin/kernel", "lin/bias"}
    assert samples["lin/kernel"].shape == (100, 2, 1)
    np.testing.assert_allclose(samples["lin/kernel"].mean(0)[:, 0], TRUE_W, atol=0.05)
    np.testing.assert_allclose(samples["lin/bias"].mean(0), [0.5], atol=0.05)


def test_random_flax_module_mixed_prior_trains_the_rest_with_svi():
    # the kernel has a prior (point-estimated by the AutoDelta guide), the
    # bias stays a param; both fit
    def model(x, y=None):
        net = random_flax_module(
            "lin", linen.Dense(1), {"kernel": dist.Normal(0.0, 10.0)}, input_shape=(2,)
        )
        with probnn.plate("rows", x.shape[0]):
            probnn.sample("y", dist.Normal(net(x)[:, 0], 0.1), obs=y)

    from probnn.infer.autoguide import AutoDelta

    result = run_svi(model, 400, guide=AutoDelta(model))
    assert result.params["lin$params"]["kernel"] == ParamShape((2, 1))
    np.testing.assert_allclose(result.params["lin$params"]["bias"], [0.5], atol=0.05)
    kernel = [
        v for k, v in result.params.items() if "kernel" in k and k != "lin$params"
    ]
    np.testing.assert_allclose(kernel[0][:, 0], TRUE_W, atol=0.05)


def test_update_params_draws_in_place_and_leaves_shapes():
    params = {"a": {"b": np.ones((2, 2)), "c": 3.0}, "d": np.zeros(5)}
    drawn = {"a": {"b": None, "c": None}, "d": None}
    # prior keys are full names, prefix included
    prior = {"m.a.b": dist.Delta(2.5), "m.d": dist.Delta(-1.0)}
    tr = trace(seed(_update_params, 0)).get_trace(params, drawn, prior, prefix="m")
    assert params == {"a": {"b": ParamShape((2, 2)), "c": 3.0}, "d": ParamShape((5,))}
    np.testing.assert_array_equal(drawn["a"]["b"], np.full((2, 2), 2.5))
    np.testing.assert_array_equal(drawn["d"], np.full(5, -1.0))
    assert drawn["a"]["c"] is None  # no prior: not touched
    assert set(tr) == {"m.a.b", "m.d"}


def test_param_shape_is_a_pytree_without_leaves():
    tree = {"w": ParamShape((3, 2)), "b": jnp.ones(2)}
    leaves, treedef = jax.tree.flatten(tree)
    assert len(leaves) == 1
    assert jax.tree.unflatten(treedef, leaves)["w"] == ParamShape((3, 2))
    assert jax.tree.map(lambda x: x * 2, tree)["w"].shape == (3, 2)


# -- Flax NNX --------------------------------------------------------------------


class NNXNet(nnx.Module):
    def __init__(self, rngs, dropout=0.0):
        self.layers = nnx.List(
            [nnx.Linear(2, 4, rngs=rngs), nnx.Linear(4, 1, rngs=rngs)]
        )
        self.norm = nnx.BatchNorm(4, momentum=0.5, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        h = self.drop(self.norm(self.layers[0](x)))
        return self.layers[1](h)


def test_nnx_module_sites_and_output():
    net = NNXNet(nnx.Rngs(0))

    def model(x):
        return nnx_module("net", net)(x)

    tr = trace(seed(model, 0)).get_trace(X)
    assert tr["net$params"]["type"] == "param"
    params = tr["net$params"]["value"]
    assert params["layers"][0]["kernel"].shape == (2, 4)
    assert params["layers"][1]["bias"].shape == (1,)
    assert params["norm"]["scale"].shape == (4,)
    state = tr["net$state"]["value"]["state"]
    assert set(state) == {"norm", "drop"}
    assert tr["net$state"]["type"] == "mutable"
    # the statistics moved by one training-mode call
    hidden = X @ params["layers"][0]["kernel"] + params["layers"][0]["bias"]
    np.testing.assert_allclose(state["norm"]["mean"], 0.5 * hidden.mean(0), rtol=1e-5)
    # the module itself is untouched and agrees with the model's output
    np.testing.assert_array_equal(net.norm.mean[...], jnp.zeros(4))
    reference = NNXNet(nnx.Rngs(0))
    np.testing.assert_allclose(seed(model, 0)(X), reference(X), rtol=1e-5)


def test_nnx_module_svi_trains_params_and_state_and_leaves_the_module_alone():
    net = NNXNet(nnx.Rngs(0))
    before = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(net, nnx.Param)))
    model = regression(lambda: nnx_module("net", net))
    result = run_svi(model, 300, lr=0.02)
    assert result.losses[-1] < 0.05 * result.losses[0]
    after = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(net, nnx.Param)))
    np.testing.assert_array_equal(net.norm.mean[...], np.zeros(4))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    trained = result.params["net$params"]
    assert not np.allclose(
        trained["layers"][0]["kernel"], before["layers"][0]["kernel"]
    )
    stats = result.state.mutable_state["net$state"]["state"]["norm"]
    hidden = X @ trained["layers"][0]["kernel"] + trained["layers"][0]["bias"]
    np.testing.assert_allclose(stats["mean"], hidden.mean(0), rtol=1e-3, atol=1e-3)


def test_nnx_dropout_noise_changes_from_step_to_step():
    net = NNXNet(nnx.Rngs(0), dropout=0.5)
    model = regression(lambda: nnx_module("net", net))
    svi = SVI(model, no_guide, optax.sgd(0.0), Trace_ELBO())
    result = svi.run(KEY, 5, X, Y, progress_bar=False)
    assert len(set(np.asarray(result.losses).tolist())) == 5
    # the stream's counter is part of the carried state (as raw numbers)
    # (SVI's initial run of the model drew once, then one draw per step)
    count = result.state.mutable_state["net$state"]["state"]["drop"]["rngs"]["count"]
    assert int(count) == 6


def test_random_nnx_module_names_and_nuts():
    lin = nnx.Linear(2, 1, rngs=nnx.Rngs(0))

    def model(x, y=None):
        net = random_nnx_module(
            "lin",
            lin,
            {"kernel": dist.Normal(0.0, 5.0), "bias": dist.Normal(0.0, 5.0)},
            scope_divider="|",
        )
        with probnn.plate("rows", x.shape[0]):
            probnn.sample("y", dist.Normal(net(x)[:, 0], 0.1), obs=y)

    mcmc = MCMC(NUTS(model), num_warmup=100, num_samples=100, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(3), X, Y)
    samples = mcmc.get_samples()
    assert set(samples) == {"lin|kernel", "lin|bias"}
    np.testing.assert_allclose(samples["lin|kernel"].mean(0)[:, 0], TRUE_W, atol=0.05)

    net = NNXNet(nnx.Rngs(0))
    tr = trace(
        seed(lambda: random_nnx_module("net", net, lambda n, s: dist.Normal()), 0)
    ).get_trace()
    names = {n for n, s in tr.items() if s["type"] == "sample"}
    assert {"net/layers.0.kernel", "net/layers.1.bias", "net/norm.scale"} <= names
    assert "net$state" in tr


# -- Equinox ----------------------------------------------------------------------


class EqxMLP(eqx.Module):
    layers: list

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.layers = [eqx.nn.Linear(2, 4, key=k1), eqx.nn.Linear(4, 1, key=k2)]

    def __call__(self, x):
        return self.layers[1](jax.nn.tanh(self.layers[0](x)))


def test_eqx_module_site_and_svi():
    lin = eqx.nn.Linear(2, 1, key=KEY)
    snapshot = np.array(lin.weight)

    def model(x, y=None):
        net = eqx_module("lin", lin)
        with probnn.plate("rows", x.shape[0]):
            probnn.sample("y", dist.Normal(jax.vmap(net)(x)[:, 0], 0.1), obs=y)

    tr = trace(seed(model, 0)).get_trace(X, Y)
    value = tr["lin$params"]["value"]
    assert isinstance(value, eqx.nn.Linear) and value.weight.shape == (1, 2)
    result = run_svi(model, 400)
    trained = result.params["lin$params"]
    np.testing.assert_allclose(trained.weight[0], TRUE_W, atol=0.05)
    np.testing.assert_allclose(trained.bias, [0.5], atol=0.05)
    np.testing.assert_array_equal(lin.weight, snapshot)


def test_eqx_state_through_a_mutable_site():
    norm, state0 = eqx.nn.make_with_state(eqx.nn.BatchNorm)(
        2, axis_name="batch", mode="batch", momentum=0.5
    )

    def model(x, y=None):
        net = eqx_module("bn", norm)
        holder = probnn.mutable("bn$state", {"state": state0})
        batched = jax.vmap(
            net, in_axes=(0, None), out_axes=(0, None), axis_name="batch"
        )
        out, holder["state"] = batched(x, holder["state"])
        with probnn.plate("rows", x.shape[0]):
            probnn.sample("y", dist.Normal(out.sum(-1), 1.0), obs=y)

    svi = SVI(model, no_guide, optax.adam(0.01), Trace_ELBO())
    result = svi.run(KEY, 10, X + 3.0, Y, progress_bar=False)
    new_state = result.state.mutable_state["bn$state"]["state"]
    mean, _ = new_state.get(norm.batch_state_index)
    np.testing.assert_allclose(mean, (X + 3.0).mean(0), rtol=1e-2)


def test_eqx_dict_round_trip_and_random_eqx_module():
    mlp = EqxMLP(KEY)
    params, _ = eqx.partition(mlp, eqx.is_inexact_array)
    flat = eqx_to_dict(params)
    assert set(flat) == {
        "layers[0].weight",
        "layers[0].bias",
        "layers[1].weight",
        "layers[1].bias",
    }
    rebuilt = eqx_from_dict(flat, params)
    assert rebuilt.layers[1].weight is params.layers[1].weight

    def model():
        return random_eqx_module(
            "mlp", mlp, lambda name, shape: dist.Normal() if "weight" in name else None
        )

    tr = trace(seed(model, 0)).get_trace()
    names = sorted(n for n, s in tr.items() if s["type"] == "sample")
    assert names == ["mlp/layers[0].weight", "mlp/layers[1].weight"]
    kept = tr["mlp$params"]["value"]
    assert kept.layers[0].weight == ParamShape((4, 2))
    assert kept.layers[0].bias.shape == (4,)
    net = seed(model, 0)()
    np.testing.assert_array_equal(
        net.layers[0].weight, tr["mlp/layers[0].weight"]["value"]
    )
    assert net.layers[0].bias is mlp.layers[0].bias
    assert net(jnp.ones(2)).shape == (1,)


def test_random_eqx_module_under_nuts():
    lin = eqx.nn.Linear(2, 1, key=KEY)

    def model(x, y=None):
        net = random_eqx_module(
            "lin", lin, {"weight": dist.Normal(0.0, 5.0), "bias": dist.Normal(0.0, 5.0)}
        )
        with probnn.plate("rows", x.shape[0]):
            probnn.sample("y", dist.Normal(jax.vmap(net)(x)[:, 0], 0.1), obs=y)

    mcmc = MCMC(NUTS(model), num_warmup=100, num_samples=100, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(4), X, Y)
    samples = mcmc.get_samples()
    assert set(samples) == {"lin/weight", "lin/bias"}
    np.testing.assert_allclose(samples["lin/weight"].mean(0)[0], TRUE_W, atol=0.05)


# -- errors -------------------------------------------------------------------------


def run_seeded(fn):
    return trace(seed(fn, 0)).get_trace()


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: flax_module(3, linen.Dense(1), input_shape=(2,)), TypeError, "name"),
        (
            lambda: flax_module("f", nnx.Linear(2, 1, rngs=nnx.Rngs(0))),
            TypeError,
            "flax_module 'f'.*flax.linen.Module.*nnx_module",
        ),
        (lambda: nnx_module("n", linen.Dense(1)), TypeError, "nnx_module 'n'.*nnx"),
        (lambda: eqx_module("e", linen.Dense(1)), TypeError, "eqx_module 'e'.*equinox"),
        (
            lambda: flax_module(
                "f", linen.Dense(1), input_shape=(2,), mutable="batch_stats"
            ),
            TypeError,
            "flax_module 'f'.*mutable must be a list",
        ),
        (
            lambda: flax_module(
                "f", linen.Dense(1), input_shape=(2,), apply_rng="dropout"
            ),
            TypeError,
            "flax_module 'f'.*apply_rng must be a list",
        ),
        (
            lambda: flax_module("f", linen.Dense(1), input_shape=2),
            TypeError,
            "flax_module 'f'.*input_shape",
        ),
        (
            lambda: flax_module(
                "f", linen.Dense(1), input_shape=(2,), mutable=["stats"]
            ),
            ValueError,
            r"flax_module 'f'.*mutable=\['stats'\].*collections are \['params'\]",
        ),
        (
            lambda: flax_module(
                "f", linen.Dropout(0.5, deterministic=True), input_shape=(2,)
            ),
            ValueError,
            "flax_module 'f': Dropout has no parameters",
        ),
        (
            lambda: flax_module("f", TwoLayer(), jnp.ones((4, 5)), jnp.ones(3)),
            ValueError,
            "flax_module 'f': initialising TwoLayer .*failed",
        ),
        (
            lambda: random_flax_module(
                "r", TwoLayer(), {"hiden.kernel": dist.Normal()}, input_shape=(2,)
            ),
            ValueError,
            r"random_flax_module 'r'.*'hiden.kernel' matches no parameter"
            r".*hidden.kernel",
        ),
        (
            lambda: random_flax_module(
                "r", TwoLayer(), {"hidden": dist.Normal()}, input_shape=(2,)
            ),
            ValueError,
            "'hidden' names a group of parameters",
        ),
        (
            lambda: random_flax_module(
                "r", TwoLayer(), {"out.bias": 1.0}, input_shape=(2,)
            ),
            TypeError,
            r"random_flax_module 'r': prior\['out.bias'\] must be a distribution",
        ),
        (
            lambda: random_flax_module("r", TwoLayer(), "normal", input_shape=(2,)),
            TypeError,
            "random_flax_module 'r': prior must be",
        ),
        (
            lambda: random_flax_module(
                "r", TwoLayer(), lambda name, shape: 0.5, input_shape=(2,)
            ),
            TypeError,
            "returned float",
        ),
        (
            lambda: random_flax_module(
                "r",
                linen.Dense(2),
                dist.MultivariateNormal(jnp.zeros(3), jnp.eye(3)),
                input_shape=(4,),
            ),
            ValueError,
            "prior of parameter 'bias' has event shape \\(3,\\)",
        ),
        (
            lambda: random_nnx_module(
                "n", nnx.Linear(2, 1, rngs=nnx.Rngs(0)), dist.Normal(), scope_divider=1
            ),
            TypeError,
            "random_nnx_module 'n': scope_divider",
        ),
        (
            lambda: random_eqx_module(
                "e", EqxMLP(KEY), {"layers.0.weight": dist.Normal()}
            ),
            ValueError,
            r"random_eqx_module 'e'.*matches no parameter.*layers\[0\].weight",
        ),
    ],
)
def test_bad_arguments_raise_errors_naming_the_site(call, error, pattern):
    with pytest.raises(error, match=pattern):
        run_seeded(call)


def test_state_collection_without_mutable_is_a_clear_error():
    def model():
        return flax_module("bn", Normed(), input_shape=(2,))(X)

    with pytest.raises(
        ValueError, match=r"flax_module 'bn'.*mutable=\['batch_stats'\]"
    ):
        run_seeded(model)


def test_substituted_values_of_the_wrong_structure_are_errors():
    lin = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    bad = {"kernel": jnp.ones((2, 1))}  # no bias
    with pytest.raises(ValueError, match=r"nnx_module 'n'.*missing \['bias'\]"):
        substitute(lambda: nnx_module("n", lin), data={"n$params": bad})()
    wrong = {"kernel": jnp.ones((3, 1)), "bias": jnp.ones(1)}
    with pytest.raises(ValueError, match=r"shape \(3, 1\) at 'kernel'"):
        substitute(lambda: nnx_module("n", lin), data={"n$params": wrong})()
    other = eqx.nn.Linear(3, 1, key=KEY)
    params, _ = eqx.partition(other, eqx.is_inexact_array)
    with pytest.raises(ValueError, match="eqx_module 'e'.*'weight'"):
        substitute(
            lambda: eqx_module("e", eqx.nn.Linear(2, 1, key=KEY)),
            data={"e$params": params},
        )()
