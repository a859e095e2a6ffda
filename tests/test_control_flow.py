"""Tests of `probnn.scan`: sites inside a scanned body, and the handlers around it.

Reference values are computed by hand with scipy / numpy / plain JAX.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probnn
import probnn.contrib.control_flow
import probnn.control_flow
import probnn.distributions as dist
from probnn.handlers import condition, mask, replay, scale, seed, substitute, trace
from probnn.infer.util import log_density

T = 5
Y_OBS = np.array([0.5, -1.0, 2.0, 0.3, 1.2], dtype=np.float32)
X0 = np.float32(0.2)
# substitute data are jax arrays: a numpy array cannot be indexed by the traced
# step inside the scan body (NumPyro has the same restriction)
X_SERIES = jnp.array([0.1, 0.4, -0.3, 1.0, 0.7])


def gaussian_hmm(y=None, T=T):
    def transition(x_prev, y_curr):
        x_curr = probnn.sample("x", dist.Normal(x_prev, 1))
        y_curr = probnn.sample("y", dist.Normal(x_curr, 1), obs=y_curr)
        return x_curr, (x_curr, y_curr)

    x0 = probnn.sample("x_0", dist.Normal(0, 1))
    _, (x, y) = probnn.scan(transition, x0, y, length=T)
    return x, y


def hmm_log_joint_np(x0, x, y):
    """log N(x0|0,1) + sum_t log N(x_t|x_{t-1},1) + log N(y_t|x_t,1), x_{-1}=x0."""
    x0, x, y = (np.asarray(a, dtype=np.float64) for a in (x0, x, y))
    prev = np.concatenate([[x0], x[:-1]])
    return (
        stats.norm.logpdf(x0, 0.0, 1.0)
        + stats.norm.logpdf(x, prev, 1.0).sum()
        + stats.norm.logpdf(y, x, 1.0).sum()
    )


def hmm_grad_x_np(x0, x, y):
    """d/dx_t of hmm_log_joint_np, written out by hand."""
    x0, x, y = (np.asarray(a, dtype=np.float64) for a in (x0, x, y))
    prev = np.concatenate([[x0], x[:-1]])
    grad = -(x - prev) + (y - x)
    grad[:-1] += x[1:] - x[:-1]
    return grad


# -- aliases and the doctest model -------------------------------------------------


def test_scan_import_paths_are_the_same_function():
    assert probnn.scan is probnn.control_flow.scan
    assert probnn.scan is probnn.contrib.control_flow.scan


def test_hmm_conditioned_returns_observations():
    with seed(rng_seed=0):
        x, y = gaussian_hmm(np.arange(10.0), T=10)
    assert x.shape == (10,) and y.shape == (10,)
    np.testing.assert_array_equal(np.asarray(y), np.arange(10.0))
    assert np.all(np.isfinite(np.asarray(x)))


def test_hmm_generative_shapes():
    with seed(rng_seed=0):
        x, y = gaussian_hmm(T=10)
    assert x.shape == (10,) and y.shape == (10,)
    assert np.all(np.isfinite(np.asarray(x))) and np.all(np.isfinite(np.asarray(y)))


# -- the trace of a scanned model --------------------------------------------------


def test_trace_has_each_site_once_with_stacked_values():
    tr = trace(seed(gaussian_hmm, rng_seed=0)).get_trace(Y_OBS)
    assert list(tr) == ["x_0", "x", "y"]
    assert tr["x_0"]["value"].shape == ()
    assert tr["x"]["value"].shape == (T,)
    assert tr["y"]["value"].shape == (T,)
    assert tr["x"]["fn"].batch_shape == (T,)
    assert tr["y"]["fn"].batch_shape == (T,)
    assert tr["x"]["is_observed"] is False
    assert tr["y"]["is_observed"] is True
    np.testing.assert_array_equal(np.asarray(tr["y"]["value"]), Y_OBS)


def test_trace_values_match_returned_values():
    with trace() as tr, seed(rng_seed=3):
        x, y = gaussian_hmm()
    np.testing.assert_array_equal(np.asarray(tr["x"]["value"]), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(tr["y"]["value"]), np.asarray(y))
    # the recorded distribution of step t is N(x_{t-1}, 1)
    prev = np.concatenate([[tr["x_0"]["value"]], np.asarray(x)[:-1]])
    np.testing.assert_allclose(np.asarray(tr["x"]["fn"].loc), prev, rtol=1e-6)


def test_body_site_with_constant_parameters_gets_time_batch_dim():
    def model():
        def step(carry, _):
            z = probnn.sample("z", dist.Normal(0.0, 1.0))
            return carry + z, z

        return probnn.scan(step, 0.0, None, length=T)

    tr = trace(seed(model, rng_seed=0)).get_trace()
    assert tr["z"]["value"].shape == (T,)
    assert tr["z"]["fn"].batch_shape == (T,)
    assert tr["z"]["fn"].shape() == tr["z"]["value"].shape


# -- random keys -------------------------------------------------------------------


def test_each_step_draws_with_a_fresh_key():
    x, y = seed(gaussian_hmm, rng_seed=0)()
    x, y = np.asarray(x), np.asarray(y)
    increments = np.diff(np.concatenate([[0.0], x]))
    assert len(np.unique(x)) == T
    assert len(np.unique(increments)) == T
    assert len(np.unique(y)) == T
    assert len(np.unique(y - x)) == T


def test_same_seed_reproduces_and_other_seed_differs():
    x1, y1 = seed(gaussian_hmm, rng_seed=7)()
    x2, y2 = seed(gaussian_hmm, rng_seed=7)()
    x3, _ = seed(gaussian_hmm, rng_seed=8)()
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    assert not np.any(np.asarray(x1) == np.asarray(x3))


def test_two_scans_in_one_model_draw_differently():
    def model():
        def step(carry, _):
            return carry, probnn.sample("a", dist.Normal(0.0, 1.0))

        def step2(carry, _):
            return carry, probnn.sample("b", dist.Normal(0.0, 1.0))

        _, a = probnn.scan(step, 0.0, None, length=T)
        _, b = probnn.scan(step2, 0.0, None, length=T)
        return a, b

    a, b = seed(model, rng_seed=0)()
    assert not np.any(np.asarray(a)[:, None] == np.asarray(b)[None, :])


def test_prng_key_inside_body_is_fresh_each_step():
    def model():
        def step(carry, _):
            return carry, probnn.prng_key()

        return probnn.scan(step, 0.0, None, length=T)[1]

    keys = np.asarray(seed(model, rng_seed=0)())
    assert keys.shape[0] == T
    assert len({tuple(k.reshape(-1).tolist()) for k in keys}) == T


# -- log density and gradients -----------------------------------------------------


def test_log_density_matches_hand_computation():
    params = {"x_0": X0, "x": X_SERIES}
    log_joint, tr = log_density(gaussian_hmm, (Y_OBS,), {}, params)
    expected = hmm_log_joint_np(X0, X_SERIES, Y_OBS)
    np.testing.assert_allclose(float(log_joint), expected, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(tr["x"]["value"]), X_SERIES)


def test_grad_of_log_density_wrt_latent_series():
    def f(x):
        return log_density(gaussian_hmm, (Y_OBS,), {}, {"x_0": X0, "x": x})[0]

    grad = jax.grad(f)(jnp.asarray(X_SERIES))
    assert grad.shape == (T,)
    np.testing.assert_allclose(
        np.asarray(grad), hmm_grad_x_np(X0, X_SERIES, Y_OBS), rtol=1e-5, atol=1e-5
    )


def test_log_density_under_jit_matches_eager():
    def f(key, y):
        log_joint, tr = log_density(seed(gaussian_hmm, rng_seed=key), (y,), {}, {})
        return log_joint, tr["x_0"]["value"], tr["x"]["value"]

    key = jax.random.PRNGKey(11)
    eager, eager_x0, eager_x = f(key, Y_OBS)
    jitted, jit_x0, jit_x = jax.jit(f)(key, Y_OBS)
    np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-5)
    np.testing.assert_allclose(float(jit_x0), float(eager_x0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jit_x), np.asarray(eager_x), rtol=1e-6)
    expected = hmm_log_joint_np(eager_x0, eager_x, Y_OBS)
    np.testing.assert_allclose(float(jitted), expected, rtol=1e-5)


# -- handlers reaching into the body -----------------------------------------------


def test_substitute_series_sets_body_values():
    x, _ = seed(substitute(gaussian_hmm, data={"x": X_SERIES}), rng_seed=0)()
    np.testing.assert_array_equal(np.asarray(x), X_SERIES)
    x, y = substitute(seed(gaussian_hmm, rng_seed=0), data={"x": X_SERIES})()
    np.testing.assert_array_equal(np.asarray(x), X_SERIES)
    # with seed inside substitute every site still gets its key, so y_t is drawn
    # around the substituted x_t with the noise of an unsubstituted run
    x_ref, y_ref = seed(gaussian_hmm, rng_seed=0)()
    np.testing.assert_allclose(
        np.asarray(y) - X_SERIES, np.asarray(y_ref - x_ref), rtol=1e-5, atol=1e-5
    )


def test_substituted_sites_stay_latent_in_trace():
    model = seed(substitute(gaussian_hmm, data={"x": X_SERIES}), rng_seed=0)
    tr = trace(model).get_trace(Y_OBS)
    assert tr["x"]["is_observed"] is False
    np.testing.assert_array_equal(np.asarray(tr["x"]["value"]), X_SERIES)


def test_condition_observes_body_site():
    x, _ = seed(condition(gaussian_hmm, data={"x": X_SERIES}), rng_seed=0)()
    np.testing.assert_array_equal(np.asarray(x), X_SERIES)
    model = seed(condition(gaussian_hmm, data={"x": X_SERIES}), rng_seed=0)
    tr = trace(model).get_trace(Y_OBS)
    assert tr["x"]["is_observed"] is True
    np.testing.assert_array_equal(np.asarray(tr["x"]["value"]), X_SERIES)


def test_condition_without_trace_returns_series_under_seed_outside():
    with seed(rng_seed=1), condition(data={"x": X_SERIES}):
        x, y = gaussian_hmm(Y_OBS)
    np.testing.assert_array_equal(np.asarray(x), X_SERIES)
    np.testing.assert_array_equal(np.asarray(y), Y_OBS)


def test_replay_reuses_values_of_another_seed():
    old = trace(seed(gaussian_hmm, rng_seed=1)).get_trace()
    x, y = replay(seed(gaussian_hmm, rng_seed=2), trace=old)()
    np.testing.assert_array_equal(np.asarray(x), np.asarray(old["x"]["value"]))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(old["y"]["value"]))
    x_other, _ = seed(gaussian_hmm, rng_seed=2)()
    assert not np.any(np.asarray(x_other) == np.asarray(old["x"]["value"]))


def test_replay_keeps_observations():
    old = trace(seed(gaussian_hmm, rng_seed=1)).get_trace(Y_OBS)
    new = trace(replay(seed(gaussian_hmm, rng_seed=2), trace=old)).get_trace(Y_OBS)
    np.testing.assert_array_equal(
        np.asarray(new["x"]["value"]), np.asarray(old["x"]["value"])
    )
    np.testing.assert_array_equal(np.asarray(new["y"]["value"]), Y_OBS)


def test_scale_outside_scales_body_sites():
    params = {"x_0": X0, "x": X_SERIES}
    expected = hmm_log_joint_np(X0, X_SERIES, Y_OBS)
    for factor in (2.5, jnp.array(0.5)):
        scaled, _ = log_density(scale(gaussian_hmm, scale=factor), (Y_OBS,), {}, params)
        np.testing.assert_allclose(float(scaled), float(factor) * expected, rtol=1e-5)


def hmm_with_handler_around_scan(handler):
    """The HMM with ``handler`` entered around the scan only (not around x_0)."""

    def model(y):
        x0 = probnn.sample("x_0", dist.Normal(0.0, 1.0))

        def step(x_prev, y_t):
            x_t = probnn.sample("x", dist.Normal(x_prev, 1.0))
            probnn.sample("y", dist.Normal(x_t, 1.0), obs=y_t)
            return x_t, None

        with handler:
            probnn.scan(step, x0, y)

    return model


def test_scale_around_scan_only_scales_body_sites():
    model = hmm_with_handler_around_scan(scale(scale=3.0))
    log_joint, _ = log_density(model, (Y_OBS,), {}, {"x_0": X0, "x": X_SERIES})
    prev = np.concatenate([[X0], X_SERIES[:-1]])
    body = (
        stats.norm.logpdf(X_SERIES, prev, 1.0).sum()
        + stats.norm.logpdf(Y_OBS, X_SERIES, 1.0).sum()
    )
    expected = stats.norm.logpdf(X0, 0.0, 1.0) + 3.0 * body
    np.testing.assert_allclose(float(log_joint), expected, rtol=1e-5)


def test_mask_outside_zeroes_body_sites():
    params = {"x_0": X0, "x": X_SERIES}
    for flag in (False, jnp.array(False)):
        masked, _ = log_density(mask(gaussian_hmm, mask=flag), (Y_OBS,), {}, params)
        assert float(masked) == 0.0
    kept, _ = log_density(mask(gaussian_hmm, mask=True), (Y_OBS,), {}, params)
    np.testing.assert_allclose(
        float(kept), hmm_log_joint_np(X0, X_SERIES, Y_OBS), rtol=1e-5
    )


def test_mask_around_scan_only_zeroes_body_sites():
    model = hmm_with_handler_around_scan(mask(mask=False))
    log_joint, _ = log_density(model, (Y_OBS,), {}, {"x_0": X0, "x": X_SERIES})
    np.testing.assert_allclose(
        float(log_joint), stats.norm.logpdf(X0, 0.0, 1.0), rtol=1e-6
    )


# -- reverse -----------------------------------------------------------------------


def test_reverse_deterministic_matches_lax_scan():
    xs = jnp.arange(1.0, T + 1.0)

    def body(carry, x):
        new = 0.5 * carry + x**2
        return new, new - x

    def model():
        def step(carry, x):
            new, out = body(carry, x)
            probnn.deterministic("d", new)
            return new, out

        return probnn.scan(step, 1.0, xs, reverse=True)

    expected_carry, expected_ys = jax.lax.scan(body, 1.0, xs, reverse=True)
    with trace() as tr:
        carry, ys = model()
    np.testing.assert_allclose(float(carry), float(expected_carry), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(expected_ys), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(tr["d"]["value"]), np.asarray(expected_ys + xs), rtol=1e-6
    )
    # the carry really ran from the last step: step T-1 saw the initial carry
    assert float(tr["d"]["value"][-1]) == pytest.approx(0.5 * 1.0 + T**2)


def test_reverse_stochastic_log_density():
    def model(y):
        x0 = probnn.sample("x_0", dist.Normal(0.0, 1.0))

        def step(x_prev, y_t):
            x_t = probnn.sample("x", dist.Normal(x_prev, 1.0))
            probnn.sample("y", dist.Normal(x_t, 1.0), obs=y_t)
            return x_t, x_t

        return probnn.scan(step, x0, y, reverse=True)

    log_joint, tr = log_density(model, (Y_OBS,), {}, {"x_0": X0, "x": X_SERIES})
    # reverse order: x_{T-1} ~ N(x0, 1), x_t ~ N(x_{t+1}, 1)
    prev = np.concatenate([X_SERIES[1:], [X0]])
    expected = (
        stats.norm.logpdf(X0, 0.0, 1.0)
        + stats.norm.logpdf(X_SERIES, prev, 1.0).sum()
        + stats.norm.logpdf(Y_OBS, X_SERIES, 1.0).sum()
    )
    np.testing.assert_allclose(float(log_joint), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(tr["x"]["fn"].loc), prev, rtol=1e-6)


def test_reverse_sampled_chain_runs_backwards():
    def model():
        def step(x_prev, _):
            x_t = probnn.sample("x", dist.Normal(x_prev, 1e-3))
            return x_t, x_t

        return probnn.scan(step, 100.0, None, length=T, reverse=True)

    last, xs = seed(model, rng_seed=0)()
    xs = np.asarray(xs)
    # tiny noise: every value is near 100, and the final carry is step 0
    np.testing.assert_allclose(xs, 100.0, atol=0.05)
    assert float(last) == float(xs[0])


def test_sample_shape_inside_body():
    def model():
        def step(carry, _):
            z = probnn.sample("z", dist.Normal(carry, 1.0), sample_shape=(2,))
            return carry + 1.0, z

        return probnn.scan(step, 0.0, None, length=T)

    _, zs = seed(model, rng_seed=0)()
    assert zs.shape == (T, 2)
    log_joint, tr = log_density(seed(model, rng_seed=0), (), {}, {})
    z = np.asarray(tr["z"]["value"], dtype=np.float64)
    assert z.shape == (T, 2)
    loc = np.arange(T, dtype=np.float64)[:, None]
    np.testing.assert_allclose(
        float(log_joint), stats.norm.logpdf(z, loc, 1.0).sum(), rtol=1e-5
    )


# -- plates ------------------------------------------------------------------------


def test_plate_inside_body():
    N = 3

    def model():
        def step(carry, _):
            with probnn.plate("N", N):
                z = probnn.sample("z", dist.Normal(carry, 1.0))
            return carry + 1.0, z

        return probnn.scan(step, 0.0, None, length=T)

    _, zs = seed(model, rng_seed=0)()
    assert zs.shape == (T, N)
    tr = trace(seed(model, rng_seed=0)).get_trace()
    assert tr["z"]["value"].shape == (T, N)
    np.testing.assert_array_equal(np.asarray(tr["z"]["value"]), np.asarray(zs))
    z = np.asarray(zs, dtype=np.float64)
    log_joint, _ = log_density(model, (), {}, {"z": zs})
    loc = np.arange(T, dtype=np.float64)[:, None]
    np.testing.assert_allclose(
        float(log_joint), stats.norm.logpdf(z, loc, 1.0).sum(), rtol=1e-5
    )


def test_scan_inside_plate_gives_independent_sequences():
    N = 2

    def model(y):
        with probnn.plate("N", N):
            x0 = probnn.sample("x_0", dist.Normal(0.0, 1.0))

            def step(x_prev, y_t):
                x_t = probnn.sample("x", dist.Normal(x_prev, 1.0))
                probnn.sample("y", dist.Normal(x_t, 1.0), obs=y_t)
                return x_t, x_t

            return probnn.scan(step, x0, y)

    y = np.stack([Y_OBS, -Y_OBS], axis=1)  # (T, N)
    tr = trace(seed(model, rng_seed=0)).get_trace(y)
    assert tr["x_0"]["value"].shape == (N,)
    assert tr["x"]["value"].shape == (T, N)
    assert tr["y"]["value"].shape == (T, N)
    x = np.asarray(tr["x"]["value"])
    assert not np.allclose(x[:, 0], x[:, 1])

    x0 = jnp.array([0.2, -0.4])
    x = jnp.stack([X_SERIES, 2 * X_SERIES], axis=1)
    log_joint, _ = log_density(model, (y,), {}, {"x_0": x0, "x": x})
    expected = sum(hmm_log_joint_np(x0[n], x[:, n], y[:, n]) for n in range(N))
    np.testing.assert_allclose(float(log_joint), expected, rtol=1e-5)


def test_subsampled_plate_inside_body_rescales_log_density():
    def model():
        def step(carry, _):
            with probnn.plate("N", 10, subsample_size=3) as idx:
                z = probnn.sample("z", dist.Normal(jnp.zeros(3), 1.0))
            return carry, (z, idx)

        return probnn.scan(step, 0.0, None, length=T)

    log_joint, tr = log_density(seed(model, rng_seed=0), (), {}, {})
    z = np.asarray(tr["z"]["value"])
    idx = np.asarray(tr["N"]["value"])
    assert z.shape == (T, 3) and idx.shape == (T, 3)
    # each step draws its own subsample of distinct indices
    assert all(len(set(row.tolist())) == 3 for row in idx)
    assert len({tuple(row.tolist()) for row in idx}) > 1
    expected = 10 / 3 * stats.norm.logpdf(z.astype(np.float64)).sum()
    np.testing.assert_allclose(float(log_joint), expected, rtol=1e-5)


# -- nested scans ------------------------------------------------------------------

T_OUTER, T_INNER = 3, 4


def nested_model():
    def outer(carry, _):
        def inner(c, _):
            z = probnn.sample("z", dist.Normal(c, 1.0))
            return z, z

        return probnn.scan(inner, carry, None, length=T_INNER)

    return probnn.scan(outer, 0.0, None, length=T_OUTER)


def nested_log_joint_np(z):
    """z[i, j] ~ N(previous value in row-major order, 1), starting at 0."""
    flat = np.asarray(z, dtype=np.float64).reshape(-1)
    prev = np.concatenate([[0.0], flat[:-1]])
    return stats.norm.logpdf(flat, prev, 1.0).sum()


def test_nested_scan_shapes_and_log_density():
    last, zs = seed(nested_model, rng_seed=0)()
    assert zs.shape == (T_OUTER, T_INNER)
    assert float(last) == float(zs[-1, -1])
    assert len(np.unique(np.asarray(zs))) == T_OUTER * T_INNER
    log_joint, tr = log_density(seed(nested_model, rng_seed=0), (), {}, {})
    assert list(tr) == ["z"]
    assert tr["z"]["value"].shape == (T_OUTER, T_INNER)
    np.testing.assert_array_equal(np.asarray(tr["z"]["value"]), np.asarray(zs))
    np.testing.assert_allclose(
        float(log_joint), nested_log_joint_np(tr["z"]["value"]), rtol=1e-5
    )


def test_nested_scan_substituted_log_density():
    z = jnp.arange(T_OUTER * T_INNER, dtype=jnp.float32).reshape(T_OUTER, T_INNER) / 4
    log_joint, tr = log_density(nested_model, (), {}, {"z": z})
    np.testing.assert_array_equal(np.asarray(tr["z"]["value"]), z)
    np.testing.assert_allclose(float(log_joint), nested_log_joint_np(z), rtol=1e-5)


def test_nested_scan_replay_and_condition():
    old = trace(seed(nested_model, rng_seed=1)).get_trace()
    z_old = old["z"]["value"]
    _, z = replay(seed(nested_model, rng_seed=2), trace=old)()
    np.testing.assert_array_equal(np.asarray(z), np.asarray(z_old))
    tr = trace(seed(condition(nested_model, data={"z": z_old}), rng_seed=3)).get_trace()
    assert tr["z"]["is_observed"] is True
    np.testing.assert_array_equal(np.asarray(tr["z"]["value"]), np.asarray(z_old))


def test_nested_scan_deterministic_matches_python_loops():
    xs = jnp.arange(1.0, 3.0)

    def model():
        def outer(carry, x):
            def inner(c, y):
                probnn.deterministic("d", c + y)
                return c + y, None

            return probnn.scan(inner, carry, jnp.arange(3.0) * x)[0], None

        return probnn.scan(outer, 0.0, xs)

    tr = trace(model).get_trace()
    expected, total = [], 0.0
    for x in np.asarray(xs):
        row = []
        for y in np.arange(3.0) * x:
            total += y
            row.append(total)
        expected.append(row)
    np.testing.assert_allclose(np.asarray(tr["d"]["value"]), expected, rtol=1e-6)


# -- forecasting and bad input -----------------------------------------------------


def test_substitute_shorter_series_forecasts_the_rest():
    k = 2
    data = jnp.array([10.0, 20.0])
    x, y = substitute(seed(gaussian_hmm, rng_seed=0), data={"x": data})()
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == (T,) and y.shape == (T,)
    np.testing.assert_array_equal(x[:k], data)
    # the rest are fresh draws continuing the chain from the data: with the same
    # seed they use the per-step noise of an unsubstituted run
    x_ref, y_ref = (np.asarray(a) for a in seed(gaussian_hmm, rng_seed=0)())
    expected_rest = data[-1] + (x_ref[k:] - x_ref[k - 1])
    np.testing.assert_allclose(x[k:], expected_rest, rtol=1e-5)
    np.testing.assert_allclose(y - x, y_ref - x_ref, rtol=1e-4, atol=1e-5)


def test_shorter_series_draws_with_a_seed_outside_or_names_the_site():
    data = {"x": jnp.array([10.0, 20.0])}
    for handler in (substitute, condition):
        x, _ = seed(handler(gaussian_hmm, data=data), rng_seed=0)()
        np.testing.assert_array_equal(np.asarray(x)[:2], data["x"])
        assert np.all(np.isfinite(np.asarray(x))) and len(set(np.asarray(x))) == T
        with pytest.raises(ValueError, match="seed"):
            handler(gaussian_hmm, data=data)()


@pytest.mark.parametrize("steps", [T + 2, 1 + T * 2])
def test_substitute_series_of_wrong_length_raises(steps):
    data = {"x": jnp.zeros(steps)}
    with pytest.raises(ValueError, match="'x'"):
        seed(substitute(gaussian_hmm, data=data), rng_seed=0)()


def test_substitute_series_of_wrong_rank_raises():
    data = {"x": jnp.zeros((T, 2, 2))}
    with pytest.raises(ValueError, match="'x'"):
        seed(substitute(gaussian_hmm, data=data), rng_seed=0)()


def test_condition_shorter_series_observes_then_forecasts():
    data = jnp.array([1.0, 2.0])
    model = condition(seed(gaussian_hmm, rng_seed=0), data={"x": data})
    site = trace(model).get_trace()["x"]
    x = np.asarray(site["value"])
    assert site["is_observed"] and x.shape == (T,)
    np.testing.assert_array_equal(x[:2], data)
    # the rest continue the chain from the data with the unconditioned noise
    x_ref = np.asarray(seed(gaussian_hmm, rng_seed=0)()[0])
    np.testing.assert_allclose(x[2:], data[-1] + (x_ref[2:] - x_ref[1]), rtol=1e-5)


def test_scan_without_xs_or_length_raises():
    with pytest.raises(ValueError, match="length"):
        probnn.scan(lambda c, x: (c, x), 0.0, None)
    with seed(rng_seed=0), pytest.raises(ValueError, match="length"):
        probnn.scan(lambda c, x: (c, x), 0.0, None)


def test_scan_with_mismatched_length_raises():
    with pytest.raises(ValueError, match="length"):
        probnn.scan(lambda c, x: (c + x, x), 0.0, jnp.ones(3), length=4)


def test_scan_without_handlers_matches_lax_scan():
    xs = jnp.linspace(-1.0, 1.0, T)

    def body(c, x):
        return c * 0.9 + x, jnp.sin(c)

    carry, ys = probnn.scan(body, 0.3, xs)
    expected_carry, expected_ys = jax.lax.scan(body, 0.3, xs)
    np.testing.assert_allclose(float(carry), float(expected_carry), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(expected_ys), rtol=1e-6)


def test_substitute_accepts_numpy_series():
    series = np.linspace(-1.0, 1.0, T).astype(np.float32)
    x, _ = substitute(seed(gaussian_hmm, rng_seed=0), data={"x": series})()
    np.testing.assert_allclose(np.asarray(x), series)


def test_integer_values_substituted_through_nested_scans():
    """Integer data substituted for a real-valued site that is carried keep
    the loop's carry type (int32 into a float32 carry), at every level."""

    def model():
        def outer(y, _):
            def inner(z, _):
                z = probnn.sample("z", dist.Normal(z, 1.0))
                return z, z

            y = probnn.sample("y", dist.Normal(y, 1.0))
            return y, probnn.control_flow.scan(inner, y, None, length=4)[1]

        x = probnn.sample("x", dist.Normal(0.0, 1.0))
        return probnn.control_flow.scan(outer, x, None, length=3)[1]

    data = jnp.arange(12).reshape((3, 4))
    with seed(rng_seed=0), substitute(data={"z": data}):
        zs = model()
    np.testing.assert_array_equal(zs, data)
