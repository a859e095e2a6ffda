"""Helpers at NumPyro's import paths: ``util.not_jax_tracer``,
``is_prng_key``, ``optional``, ``fori_loop``; ``infer.util.compute_log_probs``,
``unconstrain_fn`` and ``log_likelihood``."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.handlers import scale
from probnn.infer.util import compute_log_probs, constrain_fn, unconstrain_fn
from probnn.util import fori_loop, is_prng_key, not_jax_tracer, optional


def test_not_jax_tracer_under_transformations():
    seen = []

    def record(x):
        seen.append(not_jax_tracer(x))
        return x

    jax.jit(record)(1.0)
    jax.vmap(record)(jnp.ones(3))
    jax.grad(record)(1.0)
    record(jnp.ones(2))
    assert seen == [False, False, False, True]


def test_is_prng_key_accepts_one_key_only():
    assert is_prng_key(jax.random.PRNGKey(1))
    assert is_prng_key(jax.random.key(1))
    assert not is_prng_key(jax.random.split(jax.random.PRNGKey(1), 3))
    assert not is_prng_key(jax.random.split(jax.random.key(1), 3))
    assert not is_prng_key(jnp.zeros(2, jnp.float32))
    assert not is_prng_key(0)


def test_optional_enters_the_context_only_when_asked():
    for condition, caught in ((True, 1), (False, 0)):
        with warnings.catch_warnings(record=True) as outer:
            warnings.simplefilter("always")
            with optional(condition, warnings.catch_warnings(record=True)) as inner:
                warnings.simplefilter("always")
                warnings.warn("probe", stacklevel=1)
        # inside the entered manager the warning lands there, not outside
        assert len(outer) == 1 - caught
        assert inner is None  # optional yields nothing itself


def test_fori_loop_is_a_python_loop_without_jit():
    calls = []

    def body(i, total):
        calls.append(i)
        return total + i

    assert int(fori_loop(0, 5, body, 0)) == 10
    traced_calls = len(calls)
    calls.clear()
    with jax.disable_jit():
        assert fori_loop(2, 5, body, 0) == 9
    assert calls == [2, 3, 4]  # each step ran eagerly
    assert traced_calls <= 5


Y = jnp.array([0.5, -0.3, 1.2])


def model(y):
    s = probnn.sample("s", dist.LogNormal(0.0, 1.0))
    with probnn.plate("N", y.shape[0]), scale(scale=2.0):
        probnn.sample("y", dist.Normal(0.0, s), obs=y)


def test_compute_log_probs_per_site_scaled():
    logs, tr = compute_log_probs(model, (Y,), {}, {"s": 1.5})
    assert set(logs) == {"s", "y"} and tr["s"]["value"] == 1.5
    np.testing.assert_allclose(logs["s"], dist.LogNormal(0.0, 1.0).log_prob(1.5))
    expected = 2.0 * jnp.sum(dist.Normal(0.0, 1.5).log_prob(Y))
    np.testing.assert_allclose(logs["y"], expected, rtol=1e-6)
    unsummed, _ = compute_log_probs(model, (Y,), {}, {"s": 1.5}, sum_log_prob=False)
    assert unsummed["y"].shape == (3,)
    np.testing.assert_allclose(jnp.sum(unsummed["y"]), expected, rtol=1e-6)


def test_unconstrain_fn_inverts_constrain_fn():
    def bounded():
        probnn.sample("s", dist.LogNormal(0.0, 1.0))
        probnn.sample("p", dist.Beta(2.0, 3.0))
        probnn.sample("w", dist.Dirichlet(jnp.ones(3)))
        probnn.param("c", 0.5, constraint=dist.constraints.interval(0.0, 2.0))

    values = {"s": 2.0, "p": 0.3, "w": jnp.array([0.2, 0.5, 0.3]), "c": 1.5}
    free = unconstrain_fn(bounded, (), {}, values)
    assert free["w"].shape == (2,)  # the simplex has one free dim less
    np.testing.assert_allclose(free["s"], np.log(2.0), rtol=1e-6)
    back = constrain_fn(bounded, (), {}, free)
    for name, value in values.items():
        np.testing.assert_allclose(back[name], value, rtol=1e-5)
    with pytest.raises(ValueError, match="'nope'"):
        unconstrain_fn(bounded, (), {}, {"nope": 1.0})


def test_log_likelihood_and_predictive_at_infer_util():
    from probnn.infer import Predictive, log_likelihood, util

    assert util.log_likelihood is log_likelihood and util.Predictive is Predictive
    with pytest.raises(AttributeError, match="no_such_name"):
        util.no_such_name  # noqa: B018
