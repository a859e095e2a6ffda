"""Networks and plates: a network is one network wherever it is called
(NumPyro's semantics for a param site), and ``members=`` is the explicit
opt-in for per-member parameters (a deep ensemble).

The programs are written the way users write them: the network created next
to the likelihood inside the data plate, a factory defined once at module
level and called on every trace."""

import flax.linen as nn
import flax.nnx as nnx
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

N = 100
X = jax.random.normal(jax.random.PRNGKey(0), (N, 3))
Y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3


def linear_factory(rngs):
    # defined once, at module level, as in a user's training script
    return nnx.Linear(3, 1, rngs=rngs)


class LinenHead(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(x)


def _networks():
    return {
        "stax": (stax.Dense(2), {"input_shape": (-1, 3)}),
        "linen": (LinenHead(), {"input_shape": (1, 3)}),
        "nnx-eager": (nnx.Linear(3, 2, rngs=nnx.Rngs(0)), {}),
        "nnx-factory": (lambda rngs: nnx.Linear(3, 2, rngs=rngs), {}),
    }


@pytest.mark.parametrize("kind", ["stax", "linen", "nnx-eager", "nnx-factory"])
def test_network_inside_a_data_plate_is_one_shared_network(kind):
    network, options = _networks()[kind]

    def model(x):
        with probnn.plate("data", x.shape[0]):
            out = probnn.module("net", network, **options)(x)
            probnn.sample("y", dist.Normal(out[:, 0], 1.0), obs=jnp.zeros(N))
        return out

    tr = trace(seed(model, 0)).get_trace(X)
    shapes = sorted(leaf.shape for leaf in jax.tree.leaves(tr["net$params"]["value"]))
    assert shapes == [(2,), (3, 2)]
    out = seed(model, 0)(X)
    assert out.shape == (N, 2)


def test_factory_defined_once_trains_and_stays_one_network():
    def model(x, y=None):
        mean = probnn.module("net", linear_factory)(x)[:, 0]
        with probnn.plate("data", x.shape[0]):
            probnn.sample("y", dist.Normal(mean, 0.1), obs=y)

    svi = SVI(model, lambda x, y=None: None, optax.adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 400, X, Y, progress_bar=False)
    params = result.params["net$params"]
    assert params["kernel"].shape == (3, 1)
    np.testing.assert_allclose(params["kernel"][:, 0], [1.0, -2.0, 0.5], atol=0.05)
    np.testing.assert_allclose(params["bias"], [0.3], atol=0.05)


def test_members_opt_in_builds_independent_members_from_a_shared_factory():
    def model(x):
        with probnn.plate("members", 4, dim=-2), probnn.plate("data", N, dim=-1):
            return probnn.module("net", linear_factory, members="members")(x)

    for rng_seed in (0, 1):  # the same factory on a second trace
        tr = trace(seed(model, rng_seed)).get_trace(X)
        kernel = tr["net$params"]["value"]["kernel"]
        assert kernel.shape == (4, 3, 1)
        distinct = {tuple(np.round(np.asarray(k[:, 0]), 6)) for k in kernel}
        assert len(distinct) == 4
    out = seed(model, 1)(X)
    bias = tr["net$params"]["value"]["bias"]
    np.testing.assert_allclose(
        out,
        jnp.einsum("nd,mdo->mno", X, kernel) + bias[:, None, :],
        rtol=1e-5,
        atol=1e-6,
    )


def test_members_with_an_eager_nnx_module_is_an_error():
    eager = nnx.Linear(3, 1, rngs=nnx.Rngs(0))

    def model(x):
        with probnn.plate("members", 4):
            return probnn.module("ens", eager, members="members")(x)

    with pytest.raises(ValueError, match="'ens'.*start equal.*rngs -> module"):
        seed(model, 0)(X)


def test_members_naming_an_inactive_plate_is_an_error():
    def model(x):
        with probnn.plate("data", N):
            return probnn.module(
                "ens", stax.Dense(1), input_shape=(-1, 3), members="members"
            )(x)

    with pytest.raises(ValueError, match=r"'ens'.*\['members'\].*\['data'\]"):
        seed(model, 0)(X)
    with pytest.raises(TypeError, match="'ens'.*plate name"):
        seed(
            lambda: probnn.module("ens", stax.Dense(1), input_shape=(-1, 3), members=3),
            0,
        )()


def test_two_networks_under_one_name_is_an_error():
    encoder = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    decoder = nnx.Linear(3, 2, rngs=nnx.Rngs(1))  # same shapes, other weights

    def model(x):
        h = probnn.module("net", encoder)(x)
        return probnn.module("net", decoder)(x) + h

    with pytest.raises(ValueError, match="'net': two different networks.*own name"):
        SVI(model, lambda x: None, optax.adam(0.1), Trace_ELBO()).init(
            jax.random.PRNGKey(0), X
        )


def test_one_network_called_twice_shares_its_weights():
    head = stax.Dense(2)

    def model(x):
        first = probnn.module("head", head, input_shape=(-1, 3))(x)
        second = probnn.module("head", head, input_shape=(-1, 3))(2 * x)
        return first, second

    for rng_seed in (0, 1):  # each traced run keeps its own record of names
        tr = trace(seed(model, rng_seed)).get_trace(X)
        params = tr["head$params"]["value"]
        # as in training: the site's value is given, both calls use it
        first, second = substitute(seed(model, rng_seed), data={"head$params": params})(
            X
        )
        kernel, bias = params
        np.testing.assert_allclose(first, X @ kernel + bias, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(second, 2 * X @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_equal_linen_networks_under_two_names_keep_one_bridge_each():
    from probnn.nn._core import bridge_for

    first = bridge_for("encoder", LinenHead(), (1, 3))
    second = bridge_for("decoder", LinenHead(), (1, 3))  # an equal dataclass
    assert first is not second
    assert bridge_for("encoder", LinenHead(), (1, 3)) is first
    assert bridge_for("decoder", LinenHead(), (1, 3)) is second
