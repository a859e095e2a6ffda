"""module / random_module core: param and sample sites, priors, plate
ensembles (stax networks here; Linen and NNX have their own files)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.example_libraries import stax

import probnn
import probnn.distributions as dist
from probnn.handlers import seed, substitute, trace
from probnn.infer import SVI, Trace_ELBO
from probnn.infer.autoguide import AutoNormal

X = jnp.linspace(-1.0, 1.0, 12).reshape(12, 1)
MLP = stax.serial(stax.Dense(4), stax.Tanh, stax.Dense(1))


def test_module_is_one_param_site_with_the_networks_structure():
    def model(x):
        return probnn.module("net", MLP, input_shape=(-1, 1))(x)

    tr = trace(seed(model, 0)).get_trace(X)
    assert [n for n in tr if tr[n]["type"] == "param"] == ["net$params"]
    params = tr["net$params"]["value"]
    assert isinstance(params, list)  # stax's own structure
    np.testing.assert_allclose(seed(model, 0)(X), MLP[1](params, X), rtol=1e-6)


def test_module_output_uses_substituted_params():
    params = MLP[0](jax.random.PRNGKey(5), (-1, 1))[1]

    def model(x):
        return probnn.module("net", MLP, input_shape=(-1, 1))(x)

    out = substitute(seed(model, 0), data={"net$params": params})(X)
    np.testing.assert_allclose(out, MLP[1](params, X), rtol=1e-6)


def test_random_module_priors_by_path_glob_and_callable():
    net = stax.serial(stax.Dense(3), stax.Relu, stax.Dense(1))

    def model(prior, strict=False):
        return probnn.random_module(
            "bnn", net, prior, input_shape=(-1, 2), strict=strict
        )(jnp.ones((5, 2)))

    tr = trace(seed(lambda: model({"0.0": dist.Normal(0.0, 1.0)}), 0)).get_trace()
    assert [n for n, s in tr.items() if s["type"] == "sample"] == ["bnn/0.0"]
    # the other leaves stay trainable params in one site
    assert sorted(tr["bnn$params"]["value"]) == ["0.1", "2.0", "2.1"]
    assert tr["bnn/0.0"]["value"].shape == (2, 3)

    glob = {"*.1": dist.Normal(0.0, 0.1), "*": dist.Normal(0.0, 1.0)}
    tr = trace(seed(lambda: model(glob), 0)).get_trace()
    sites = {n: s for n, s in tr.items() if s["type"] == "sample"}
    assert sorted(sites) == ["bnn/0.0", "bnn/0.1", "bnn/2.0", "bnn/2.1"]
    assert "bnn$params" not in tr
    # the first pattern that matches a path wins
    bias_prior = sites["bnn/0.1"]["fn"]
    expected = 3 * float(dist.Normal(0.0, 0.1).log_prob(0.0))
    assert float(bias_prior.log_prob(jnp.zeros(3))) == pytest.approx(expected)

    def by_shape(path, shape):
        return dist.Laplace(0.0, 1.0) if len(shape) == 2 else None

    tr = trace(seed(lambda: model(by_shape), 0)).get_trace()
    assert sorted(n for n, s in tr.items() if s["type"] == "sample") == [
        "bnn/0.0",
        "bnn/2.0",
    ]


def test_random_module_bad_priors_are_errors():
    net = stax.Dense(2)

    def model(prior, strict=False):
        return probnn.random_module(
            "bnn", net, prior, input_shape=(-1, 3), strict=strict
        )(jnp.ones((1, 3)))

    with pytest.raises(
        ValueError, match=r"'kernel' matches no parameter.*\['0', '1'\]"
    ):
        seed(lambda: model({"kernel": dist.Normal(0.0, 1.0)}), 0)()
    with pytest.raises(ValueError, match=r"strict=True and no prior covers \['1'\]"):
        seed(lambda: model({"0": dist.Normal(0.0, 1.0)}, strict=True), 0)()
    with pytest.raises(TypeError, match="prior must be"):
        seed(lambda: model(3.0), 0)()


def test_random_module_log_density_is_the_prior_over_weights():
    net = stax.Dense(1)

    def model():
        return probnn.random_module(
            "bnn", net, dist.Normal(0.0, 2.0), input_shape=(-1, 2)
        )(jnp.ones((1, 2)))

    tr = trace(seed(model, 3)).get_trace()
    w, b = tr["bnn/0"]["value"], tr["bnn/1"]["value"]
    log_joint, _ = probnn.infer.log_density(model, (), {}, {"bnn/0": w, "bnn/1": b})
    expected = jax.scipy.stats.norm.logpdf(jnp.concatenate([w.ravel(), b]), 0, 2).sum()
    assert float(log_joint) == pytest.approx(float(expected), rel=1e-6)


def test_module_in_a_plate_is_an_ensemble_of_independent_members():
    def model(x):
        with probnn.plate("members", 5, dim=-2):
            return probnn.module("net", MLP, input_shape=(-1, 1), members="members")(x)

    tr = trace(seed(model, 0)).get_trace(X)
    params = tr["net$params"]["value"]
    leaves = jax.tree.leaves(params)
    assert all(leaf.shape[0] == 5 for leaf in leaves)
    out = seed(model, 0)(X)
    assert out.shape == (5, 12, 1)
    for member in range(5):
        member_params = jax.tree.map(lambda leaf, m=member: leaf[m], params)
        np.testing.assert_allclose(out[member], MLP[1](member_params, X), rtol=1e-6)
    # members are initialised independently
    first = jax.tree.leaves(params)[0]
    assert not np.allclose(first[0], first[1])


def test_ensemble_members_train_independently_with_svi():
    y = jnp.sin(3 * X[:, 0])

    def model(x, y):
        with probnn.plate("members", 3, dim=-2):
            mean = probnn.module("net", MLP, input_shape=(-1, 1), members="members")(x)[
                ..., 0
            ]
            with probnn.plate("data", x.shape[0], dim=-1):
                probnn.sample("y", dist.Normal(mean, 0.1), obs=y)

    svi = SVI(model, lambda x, y: None, optax.adam(0.02), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 400, X, y, progress_bar=False)
    params = result.params["net$params"]
    fits = jax.vmap(lambda p: MLP[1](p, X)[:, 0])(params)
    assert fits.shape == (3, 12)
    assert float(jnp.max(jnp.abs(fits - y))) < 0.3


def test_ensemble_members_do_not_share_gradients():
    def model(x):
        with probnn.plate("members", 3, dim=-2):
            return probnn.module("net", MLP, input_shape=(-1, 1), members="members")(x)

    params = trace(seed(model, 0)).get_trace(X)["net$params"]["value"]

    def member_output_sums(params):
        out = substitute(seed(model, 0), data={"net$params": params})(X)
        return out.sum(axis=(1, 2))  # one number per member

    jacobian = jax.jacobian(member_output_sums)(params)
    # d(output of member i) / d(params of member j) vanishes for i != j
    for leaf in jax.tree.leaves(jacobian):
        for i in range(3):
            for j in range(3):
                block = np.asarray(leaf[i, j])
                if i != j:
                    assert np.all(block == 0)
    first_kernel = jax.tree.leaves(jacobian)[0]
    assert all(np.any(np.asarray(first_kernel[i, i]) != 0) for i in range(3))


def test_random_module_in_a_plate_samples_each_member():
    net = stax.Dense(1)

    def model(x):
        with probnn.plate("members", 4, dim=-3):
            return probnn.random_module(
                "bnn", net, dist.Normal(0.0, 1.0), input_shape=(-1, 2)
            )(x)

    tr = trace(seed(model, 0)).get_trace(jnp.ones((6, 2)))
    assert tr["bnn/0"]["value"].shape == (4, 1, 1, 2, 1)
    out = seed(model, 0)(jnp.ones((6, 2)))
    assert out.shape == (4, 6, 1)
    w = tr["bnn/0"]["value"].reshape(4, 2, 1)
    b = tr["bnn/1"]["value"].reshape(4, 1)
    np.testing.assert_allclose(out, jnp.ones((6, 2)) @ w + b[:, None, :], rtol=1e-6)


def test_random_module_trains_with_an_autoguide():
    net = stax.Dense(1)
    x = jnp.linspace(-1, 1, 20).reshape(20, 1)
    y = 2.0 * x[:, 0] - 0.5

    def model(x, y):
        mean = probnn.random_module(
            "bnn", net, dist.Normal(0.0, 10.0), input_shape=(-1, 1)
        )(x)[:, 0]
        with probnn.plate("data", x.shape[0]):
            probnn.sample("y", dist.Normal(mean, 0.1), obs=y)

    guide = AutoNormal(model)
    svi = SVI(model, guide, optax.adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 1500, x, y, progress_bar=False)
    median = guide.median(result.params)
    assert float(median["bnn/0"][0, 0]) == pytest.approx(2.0, abs=0.1)
    assert float(median["bnn/1"][0]) == pytest.approx(-0.5, abs=0.1)


def test_module_rejects_other_objects():
    with pytest.raises(TypeError, match="got int"):
        seed(lambda: probnn.module("net", 3), 0)()
