"""A network that fails in its forward pass (inputs of the wrong width,
parameters of the wrong shape) raises an error naming the probnn site, the
input shapes and the parameter shapes by path, with Flax's or JAX's own
message kept and chained."""

import flax.linen as nn
import flax.nnx as nnx
import jax.numpy as jnp
import pytest
from jax.example_libraries import stax

import probnn
from probnn.handlers import seed, substitute


class TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.tanh(nn.Dense(4)(x)))


NETWORKS = {
    "linen": lambda: probnn.module("enc", TwoLayers(), (1, 3)),
    "nnx": lambda: probnn.module("enc", nnx.Linear(3, 2, rngs=nnx.Rngs(0))),
    "stax": lambda: probnn.module("enc", stax.Dense(2), (-1, 3)),
}


@pytest.mark.parametrize("kind", sorted(NETWORKS))
def test_input_of_the_wrong_width_names_the_site(kind):
    def model(x):
        return NETWORKS[kind]()(x)

    with pytest.raises((TypeError, ValueError)) as info:
        seed(model, 0)(jnp.ones((5, 4)))
    message = str(info.value)
    assert "module 'enc' (site enc$params)" in message
    assert "[(5, 4)]" in message
    assert "kernel" in message or "0 (3, 2)" in message
    assert info.value.__cause__ is not None


def test_substituted_parameters_of_the_wrong_shape_name_the_site_and_paths():
    def model(x):
        return probnn.module("enc", TwoLayers(), (1, 3))(x)

    wrong = {
        "Dense_0": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)},
        "Dense_1": {"kernel": jnp.ones((3, 5)), "bias": jnp.ones(5)},
    }
    with pytest.raises(ValueError, match=r"'enc'.*Dense_1\.kernel \(3, 5\)"):
        substitute(seed(model, 0), data={"enc$params": wrong})(jnp.ones((5, 3)))
