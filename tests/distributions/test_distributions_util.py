import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probnn.distributions.util import clamp_probs, is_identically_one


@pytest.mark.parametrize(
    "x, expected",
    [
        (1, True),
        (1.0, True),
        (True, True),
        (np.float64(1.0), True),  # a Python float subclass
        (0, False),
        (2.0, False),
        (0.999, False),
        (jnp.array(1.0), False),
        (np.ones(3), False),
        (np.int64(1), False),  # not a Python int
        ("1", False),
        (None, False),
    ],
)
def test_is_identically_one(x, expected):
    assert is_identically_one(x) is expected


def test_is_identically_one_is_static_under_jit():
    seen = []

    @jax.jit
    def f(x):
        seen.append(is_identically_one(x))
        return x

    f(1.0)
    assert seen == [False]  # a traced value is never statically one


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
def test_clamp_probs_bounds(dtype):
    info = jnp.finfo(dtype)
    probs = jnp.array([0.0, 1e-45, 0.3, 1.0 - 1e-9, 1.0], dtype)
    out = clamp_probs(probs)
    assert out.dtype == dtype
    lo = np.asarray(info.tiny, np.float64)
    hi = np.asarray(1.0 - info.eps, np.float64)
    expected = np.clip(np.asarray(probs, np.float64), lo, hi)
    np.testing.assert_array_equal(np.asarray(out, np.float64), expected)
    assert np.isfinite(np.asarray(jnp.log(out), np.float64)).all()
    assert np.isfinite(np.asarray(jnp.log1p(-out), np.float64)).all()


def test_clamp_probs_keeps_interior_values_and_defaults_dtype():
    probs = jnp.linspace(0.01, 0.99, 7)
    np.testing.assert_array_equal(clamp_probs(probs), probs)
    out = clamp_probs(1)  # a Python int: the default float dtype
    assert out.dtype == jnp.result_type(float)
    assert float(out) == 1.0 - float(jnp.finfo(out.dtype).eps)
    assert float(clamp_probs(0)) == float(jnp.finfo(out.dtype).tiny)


def test_clamp_probs_gradient():
    # clip passes the gradient inside the interval, none outside
    g = jax.grad(lambda p: jnp.sum(clamp_probs(p)))(jnp.array([0.0, 0.5, 1.0]))
    np.testing.assert_array_equal(g, [0.0, 1.0, 0.0])
