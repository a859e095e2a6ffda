"""ZeroSumNormal, ZeroSumTransform and constraints.zero_sum: checked against
NumPyro 0.22 (where installed) on hypothesis-drawn shapes and values, against
closed forms, Monte Carlo moments and jax.jacobian, and through inference
(initialisation strategies, NUTS)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import probnn
import probnn.distributions as dist
from probnn import handlers
from probnn.distributions import constraints
from probnn.distributions import transforms as T

FEW = settings(max_examples=10, deadline=None)

# (batch shape, event shape) pairs come from a short list and values vary
# freely: each new shape costs XLA compilations. The pairs cover 1 to 3
# zero-sum axes, length-1 axes (an axis that can only hold 0) and batch dims.
SHAPES = st.sampled_from(
    [((), (4,)), ((3,), (1,)), ((), (3, 4)), ((2, 1), (1, 3)), ((3,), (2, 3, 2))]
)
SEEDS = st.integers(0, 2**31 - 1)


def _numpyro():
    """NumPyro's distributions module, the reference (skip when absent)."""
    return pytest.importorskip("numpyro.distributions")


def _reduced(shape, ndims):
    return shape[: len(shape) - ndims] + tuple(s - 1 for s in shape[-ndims:])


def _centre(x, ndims):
    """Subtract the mean along each of the last ``ndims`` axes (a point of
    the zero-sum subspace)."""
    for axis in range(-ndims, 0):
        x = x - x.mean(axis=axis, keepdims=True)
    return x


# Computations are jitted with the shapes static, so that hypothesis examples
# that share shapes share one compilation.


@functools.partial(jax.jit, static_argnums=(2, 3))
def _ours(scale, key, event_shape, sample_shape):
    """Draws of probnn's ZeroSumNormal and what it says about them."""
    d = dist.ZeroSumNormal(scale, event_shape)
    y = d.sample(key, sample_shape)
    return y, d.log_prob(y), d.support(y), d.mean, d.variance


@functools.cache
def _theirs(event_shape):
    """NumPyro's log_prob, support check and variance, one scale at a time
    (vmapped over a flat batch of scales and values)."""
    nd = _numpyro()

    def one(scale, y):
        d = nd.ZeroSumNormal(scale, event_shape)
        return d.log_prob(y), d.support(y), d.variance

    return jax.jit(jax.vmap(one, in_axes=(0, 1), out_axes=(1, 1, 0)))


@FEW
@given(
    shapes=SHAPES,
    scale_seed=SEEDS,
    key_seed=SEEDS,
    spread=st.sampled_from([0.05, 1.0, 20.0]),
)
def test_log_prob_support_and_moments_match_numpyro(
    shapes, scale_seed, key_seed, spread
):
    batch_shape, event_shape = shapes
    # NumPyro's ZeroSumNormal takes one scale; probnn reads the shape of
    # scale as the batch shape, and each batch element is NumPyro's
    # distribution with that element's scale.
    rng = np.random.default_rng(scale_seed)
    scale = (spread * rng.uniform(0.5, 2.0, size=batch_shape)).astype(np.float32)
    d = dist.ZeroSumNormal(scale, event_shape)
    assert d.batch_shape == batch_shape and d.event_shape == event_shape
    assert d.event_dim == len(event_shape)
    y, log_prob, inside, mean, variance = _ours(
        scale, jax.random.key(key_seed), event_shape, (2,)
    )
    assert y.shape == (2,) + batch_shape + event_shape
    assert log_prob.shape == inside.shape == (2,) + batch_shape
    assert mean.shape == variance.shape == batch_shape + event_shape
    assert bool(jnp.all(inside))
    np.testing.assert_array_equal(mean, 0.0)

    flat_y = y.reshape((2, -1) + event_shape)
    ref_log_prob, ref_inside, ref_variance = _theirs(event_shape)(
        scale.reshape(-1), flat_y
    )
    np.testing.assert_allclose(
        log_prob.reshape(2, -1), ref_log_prob, rtol=2e-5, atol=2e-5
    )
    assert bool(jnp.all(ref_inside))
    np.testing.assert_allclose(
        variance.reshape((-1,) + event_shape), ref_variance, rtol=1e-6
    )


def test_unbatched_shapes_match_numpyro():
    nd = _numpyro()
    for event_shape in [(1,), (4,), (3, 2), (2, 3, 4)]:
        mine, theirs = (
            dist.ZeroSumNormal(2.0, event_shape),
            nd.ZeroSumNormal(2.0, event_shape),
        )
        assert mine.batch_shape == theirs.batch_shape == ()
        assert mine.event_shape == theirs.event_shape == event_shape
        assert mine.support.event_dim == theirs.support.event_dim
        assert mine.is_discrete == theirs.is_discrete
        assert mine.has_rsample == theirs.has_rsample
        expanded = mine.expand((5,)), theirs.expand((5,))
        assert expanded[0].batch_shape == expanded[1].batch_shape == (5,)


@pytest.mark.parametrize("event_shape", [(5,), (3, 4)])
def test_log_prob_is_the_normal_density_on_the_subspace(event_shape):
    # Closed form: the transform is an isometry, so for y in the support the
    # density is that of k = prod(n_i - 1) iid N(0, scale) at a point of
    # norm |y|.
    scale = np.float32(1.7)
    y, log_prob, *_ = _ours(scale, jax.random.key(5), event_shape, (2,))
    y = np.asarray(y, np.float64)
    k = math.prod(n - 1 for n in event_shape)
    squares = np.sum(y.reshape(2, -1) ** 2, axis=-1)
    expected = -0.5 * squares / scale**2 - k * (
        math.log(scale) + 0.5 * math.log(2 * math.pi)
    )
    np.testing.assert_allclose(log_prob, expected, rtol=2e-5, atol=2e-5)


def test_same_draws_as_numpyro_for_the_same_key_and_integer_scale():
    # NumPyro's docstring example passes scale as the int 1
    nd = _numpyro()

    @jax.jit
    def both(key):
        mine, theirs = dist.ZeroSumNormal(1, (2, 3)), nd.ZeroSumNormal(1, (2, 3))
        y = mine.sample(key, (5,))
        return y, theirs.sample(key, (5,)), mine.log_prob(y), theirs.log_prob(y)

    y, their_y, log_prob, their_log_prob = both(jax.random.key(3))
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, their_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_prob, their_log_prob, rtol=1e-5, atol=1e-5)


# -- sampling -------------------------------------------------------------------------


@pytest.mark.parametrize("event_shape", [(4,), (3, 2)])
def test_sample_moments(event_shape):
    scale = 2.0
    d = dist.ZeroSumNormal(scale, event_shape)
    draws = np.asarray(d.sample(jax.random.key(0), (20000,)), np.float64)
    for axis in range(-len(event_shape), 0):
        np.testing.assert_allclose(draws.sum(axis), 0.0, atol=1e-5)
    np.testing.assert_allclose(draws.mean(0), 0.0, atol=0.05)
    np.testing.assert_allclose(draws.var(0), d.variance, rtol=0.05)
    if len(event_shape) == 1:
        # Cov = scale^2 (I - J / n): off-diagonal -scale^2 / n
        n = event_shape[0]
        cov = np.cov(draws, rowvar=False)
        expected = scale**2 * (np.eye(n) - np.ones((n, n)) / n)
        np.testing.assert_allclose(cov, expected, atol=0.1)


def test_variance_formula_and_degenerate_axis():
    d = dist.ZeroSumNormal(jnp.array([1.0, 3.0]), (4, 5))
    np.testing.assert_allclose(
        d.variance[1], np.full((4, 5), 9.0 * (3 / 4) * (4 / 5)), rtol=1e-6
    )
    # an axis of length 1 can only hold 0: a point mass
    point = dist.ZeroSumNormal(2.0, (1,))
    np.testing.assert_array_equal(point.sample(jax.random.key(0), (3,)), 0.0)
    np.testing.assert_array_equal(point.log_prob(jnp.zeros((3, 1))), 0.0)
    np.testing.assert_array_equal(point.variance, [0.0])


# -- the constraint -------------------------------------------------------------------


@FEW
@given(
    shapes=SHAPES,
    magnitude=st.sampled_from([1e-3, 1.0, 1e4]),
    shift=st.sampled_from([0.0, 1e-2, -1.0, math.nan]),
    seed=SEEDS,
)
def test_zero_sum_constraint_matches_numpyro(shapes, magnitude, shift, seed):
    batch_shape, event_shape = shapes
    ndims = len(event_shape)
    rng = np.random.default_rng(seed)
    x = _centre(rng.normal(size=batch_shape + event_shape) * magnitude, ndims)
    x = x.astype(np.float32)
    if shift and x.size:
        flat = x.reshape(-1)
        flat[rng.integers(flat.size)] += shift  # one entry off the subspace
    mine, theirs = _checks(ndims)
    inside = mine(x)
    assert inside.shape == batch_shape
    np.testing.assert_array_equal(inside, theirs(x))
    if not shift:
        assert bool(jnp.all(inside))


@functools.cache
def _our_check(ndims):
    """probnn's ``zero_sum(ndims)`` check, jitted."""
    mine = constraints.zero_sum(ndims)
    return jax.jit(lambda x: mine(x))


@functools.cache
def _checks(ndims):
    """Jitted ``zero_sum(ndims)`` checks of probnn and NumPyro."""
    nc = pytest.importorskip("numpyro.distributions.constraints")
    mine, theirs = constraints.zero_sum(ndims), nc.zero_sum(ndims)
    assert mine.event_dim == theirs.event_dim == ndims
    assert mine.is_discrete == theirs.is_discrete
    return _our_check(ndims), jax.jit(lambda x: theirs(x))


def test_zero_sum_constraint_tolerance_and_basics():
    c = constraints.zero_sum()
    assert c.event_dim == 1 and repr(c) == "zero_sum(1)"
    rows = [
        ([1.0, -3.0, 2.0], True),
        ([1.0, -3.0, 2.1], False),
        # rounding of large entries is tolerated, relative to their size
        ([1e6, -1e6 + 0.0625, -0.0625], True),
        ([1e6, -1e6 + 8.0, 0.0], False),  # tolerance 10 * eps * 3 * 1e6 = 3.6
        # non-finite entries are outside (NumPyro's isclose takes [inf, -1, 0])
        ([math.inf, -1.0, 0.0], False),
        ([math.inf, -math.inf, 0.0], False),
        ([math.nan, 0.0, 0.0], False),
    ]
    values = np.array([row for row, _ in rows], np.float32)
    np.testing.assert_array_equal(_our_check(1)(values), [ok for _, ok in rows])
    # two axes: rows sum to zero, columns do not
    np.testing.assert_array_equal(
        _our_check(2)(
            np.array([[[1.0, -1.0], [1.0, -1.0]], [[1.0, -1.0], [-1.0, 1.0]]])
        ),
        [False, True],
    )
    feasible = c.feasible_like(jnp.ones((3, 4)))
    np.testing.assert_array_equal(feasible, np.zeros((3, 4), np.float32))
    assert bool(_our_check(2)(feasible))


def test_zero_sum_constraint_equality_pytree_and_jit():
    assert constraints.zero_sum(2) == constraints.zero_sum(2)
    assert hash(constraints.zero_sum(2)) == hash(constraints.zero_sum(2))
    assert constraints.zero_sum(1) != constraints.zero_sum(2)
    assert constraints.zero_sum(1) != constraints.real_vector
    assert jax.tree.leaves(constraints.zero_sum(2)) == []
    rebuilt = jax.jit(lambda c: c)(constraints.zero_sum(3))
    assert rebuilt == constraints.zero_sum(3) and rebuilt.event_dim == 3
    checks = jax.jit(lambda x: constraints.zero_sum(1)(x))(
        jnp.array([[1.0, -1.0], [1.0, 1.0]])
    )
    np.testing.assert_array_equal(checks, [True, False])


def test_zero_sum_constraint_bad_arguments():
    with pytest.raises(ValueError, match=r"zero_sum.*event_dim.*>= 1"):
        constraints.zero_sum(0)
    with pytest.raises(TypeError, match=r"zero_sum.*event_dim.*int"):
        constraints.zero_sum(1.5)
    with pytest.raises(ValueError, match=r"zero_sum\(2\).*at least 2 dims"):
        constraints.zero_sum(2)(jnp.zeros(3))


# -- the transform --------------------------------------------------------------------


@functools.cache
def _transform_pair(ndims):
    """probnn's and NumPyro's ZeroSumTransform(ndims), and a jitted function
    of each returning ``(t(x), t.inv(y), log|det J|(x, t(x)))``."""
    nt = pytest.importorskip("numpyro.distributions.transforms")
    mine, theirs = T.ZeroSumTransform(ndims), nt.ZeroSumTransform(ndims)

    def run(t):
        def outputs(x, z):
            y = t(x)
            return y, t.inv(z), t.log_abs_det_jacobian(x, y)

        return jax.jit(outputs)

    return mine, theirs, run(mine), run(theirs)


@FEW
@given(shapes=SHAPES, seed=SEEDS)
def test_transform_matches_numpyro(shapes, seed):
    batch_shape, event_shape = shapes
    ndims = len(event_shape)
    mine, theirs, run_mine, run_theirs = _transform_pair(ndims)
    y_shape = batch_shape + event_shape
    x_shape = _reduced(y_shape, ndims)
    assert mine.forward_shape(x_shape) == theirs.forward_shape(x_shape) == y_shape
    assert mine.inverse_shape(y_shape) == theirs.inverse_shape(y_shape) == x_shape
    assert mine.domain.event_dim == theirs.domain.event_dim == ndims
    assert mine.codomain.event_dim == theirs.codomain.event_dim == ndims
    assert mine.codomain == constraints.zero_sum(ndims)

    rng = np.random.default_rng(seed)
    x = (rng.normal(size=x_shape) * 3.0).astype(np.float32)
    z = _centre(rng.normal(size=y_shape), ndims).astype(np.float32)  # supported
    y, x_of_z, log_det = run_mine(x, z)
    ref_y, ref_x_of_z, ref_log_det = run_theirs(x, z)
    assert y.shape == y_shape and x_of_z.shape == x_shape
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x_of_z, ref_x_of_z, rtol=1e-5, atol=1e-5)
    assert log_det.shape == ref_log_det.shape == batch_shape
    np.testing.assert_array_equal(log_det, ref_log_det)

    # round trips, both ways
    assert bool(jnp.all(_our_check(ndims)(y)))
    back, y_again, _ = run_mine(x_of_z, y)
    np.testing.assert_allclose(back, z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y_again, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("event_shape", [(4,), (3, 2)])
def test_transform_is_an_isometry_by_jax_jacobian(event_shape):
    # The map R^k -> R^N onto the zero-sum subspace is not square: its volume
    # factor is sqrt(det(J^T J)). J^T J = I makes the log Jacobian zero.
    ndims = len(event_shape)
    t = T.ZeroSumTransform(ndims)
    x = jax.random.normal(jax.random.key(0), _reduced(event_shape, ndims))

    @jax.jit
    def jacobians(x):
        y = t(x)
        forward = jax.jacobian(lambda v: jnp.ravel(t(v.reshape(x.shape))))
        inverse = jax.jacobian(lambda w: jnp.ravel(t.inv(w.reshape(y.shape))))
        return forward(jnp.ravel(x)), inverse(jnp.ravel(y))

    jacobian, inverse_jacobian = jacobians(x)
    k = x.size
    np.testing.assert_allclose(jacobian.T @ jacobian, np.eye(k), atol=1e-5)
    assert float(t.log_abs_det_jacobian(x, t(x))) == 0.0
    # the inverse undoes the forward map to first order as well
    np.testing.assert_allclose(inverse_jacobian @ jacobian, np.eye(k), atol=1e-5)


def test_biject_to_zero_sum_matches_numpyro():
    for ndims in (1, 2, 3):
        t = dist.biject_to(constraints.zero_sum(ndims))
        assert isinstance(t, T.ZeroSumTransform) and t.transform_ndims == ndims
        assert t.codomain == constraints.zero_sum(ndims)
    wrapped = dist.biject_to(constraints.independent(constraints.zero_sum(1), 1))
    assert wrapped(jnp.zeros((2, 3))).shape == (2, 4)
    nt = pytest.importorskip("numpyro.distributions.transforms")
    nc = pytest.importorskip("numpyro.distributions.constraints")
    for ndims in (1, 2):
        reference = nt.biject_to(nc.zero_sum(ndims))
        assert type(reference).__name__ == "ZeroSumTransform"
        assert reference.transform_ndims == ndims


def test_transform_pytree_repr_and_bad_arguments():
    t = T.ZeroSumTransform(2)
    assert repr(t) == "ZeroSumTransform(transform_ndims=2)"
    assert jax.tree.leaves(t) == []
    out = jax.jit(lambda t, x: t(x))(t, jnp.ones((2, 3)))
    assert out.shape == (3, 4)
    assert T.ZeroSumTransform().transform_ndims == 1
    with pytest.raises(ValueError, match="ZeroSumTransform.*transform_ndims.*>= 1"):
        T.ZeroSumTransform(0)
    with pytest.raises(TypeError, match="ZeroSumTransform.*transform_ndims.*int"):
        T.ZeroSumTransform(1.0)
    with pytest.raises(ValueError, match="ZeroSumTransform"):
        t.forward_shape((3,))
    with pytest.raises(ValueError, match="ZeroSumTransform"):
        t.inverse_shape((2, 0))
    with pytest.raises(ValueError, match="ZeroSumTransform"):
        t(jnp.ones(3))


# -- distribution API: validation, pytrees, jit / vmap --------------------------------


def test_names_exported_like_numpyro():
    assert "ZeroSumNormal" in dist.__all__
    assert "ZeroSumTransform" in T.__all__
    assert "zero_sum" in constraints.__all__
    assert dist.transforms.ZeroSumTransform is T.ZeroSumTransform
    assert dist.constraints.zero_sum is constraints.zero_sum
    nd = _numpyro()
    assert hasattr(nd, "ZeroSumNormal")
    assert hasattr(nd.transforms, "ZeroSumTransform")
    assert hasattr(nd.constraints, "zero_sum")


def test_distribution_attributes():
    d = dist.ZeroSumNormal(jnp.ones((2, 1)), (3, 4))
    assert isinstance(d, dist.TransformedDistribution)
    assert d.batch_shape == (2, 1) and d.event_shape == (3, 4)
    assert d.support == constraints.zero_sum(2)
    assert not d.is_discrete and d.has_rsample
    assert d.reparametrized_params == ("scale",)
    assert d.base_dist.batch_shape == (2, 1) and d.base_dist.event_shape == (2, 3)
    assert [type(t) for t in d.transforms] == [T.ZeroSumTransform]
    assert jax.tree.leaves(d) == [d.scale]

    @jax.jit
    def views(d, key):
        y, (x,) = d.sample_with_intermediates(key, (5,))
        log_probs = d.log_prob(y), d.log_prob(y, [x]), d.base_dist.log_prob(x)
        return y, x, d.transforms[0](x), log_probs, d.mean

    # draws and intermediates agree with the base distribution and transform
    y, x, y_of_x, (log_prob, given_x, base), mean = views(d, jax.random.key(1))
    assert x.shape == (5, 2, 1, 2, 3)
    np.testing.assert_allclose(y, y_of_x, atol=1e-6)
    np.testing.assert_allclose(given_x, log_prob, atol=1e-4)
    np.testing.assert_allclose(log_prob, base, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(mean, np.zeros((2, 1, 3, 4)))
    with pytest.raises(NotImplementedError, match="ZeroSumNormal"):
        dist.ZeroSumNormal.infer_shapes(())


@pytest.mark.parametrize(
    "event_shape, error, pattern",
    [
        (3, TypeError, "ZeroSumNormal: event_shape must be a tuple"),
        ((2.0,), TypeError, "ZeroSumNormal: event_shape must be a tuple"),
        ((True, 2), TypeError, "ZeroSumNormal: event_shape must be a tuple"),
        ((), ValueError, "ZeroSumNormal: event_shape must have at least one axis"),
        ((3, 0), ValueError, "ZeroSumNormal: every size in event_shape"),
    ],
)
def test_bad_event_shape_is_named(event_shape, error, pattern):
    with pytest.raises(error, match=pattern):
        dist.ZeroSumNormal(1.0, event_shape)


def test_validation_of_scale_and_support():
    with pytest.raises(ValueError, match="ZeroSumNormal: parameter 'scale'"):
        dist.ZeroSumNormal(jnp.array([1.0, -1.0]), (3,), validate_args=True)
    d = dist.ZeroSumNormal(1.0, (3,), validate_args=True)
    with pytest.raises(ValueError, match="ZeroSumNormal: value .* outside the support"):
        d.log_prob(jnp.ones(3))
    assert np.isfinite(float(d.log_prob(jnp.array([1.0, -0.5, -0.5]))))
    # list event shapes are accepted, as in NumPyro
    assert dist.ZeroSumNormal(1.0, [2, 3]).event_shape == (2, 3)


def test_jit_vmap_grad_and_expand():
    scales = jnp.array([0.5, 1.0, 2.0, 4.0])
    y = jnp.array([1.0, -2.0, 1.0])

    @jax.jit
    def through_transformations(scales, y):
        stacked = jax.vmap(lambda s: dist.ZeroSumNormal(s, (3,)))(scales)
        assert stacked.batch_shape == (4,) and stacked.event_shape == (3,)
        mapped = jax.vmap(lambda s: dist.ZeroSumNormal(s, (3,)).log_prob(y))(scales)
        # d/ds log p = |y|^2 / s^3 - 2 / s (two free coordinates)
        grad = jax.grad(lambda s: dist.ZeroSumNormal(s, (3,)).log_prob(y))(1.5)
        return stacked.log_prob(y), mapped, grad

    stacked, mapped, grad = through_transformations(scales, y)
    direct = dist.ZeroSumNormal(scales, (3,)).log_prob(y)
    np.testing.assert_allclose(stacked, direct, rtol=1e-6)
    np.testing.assert_allclose(mapped, direct, rtol=1e-6)
    np.testing.assert_allclose(grad, 6.0 / 1.5**3 - 2.0 / 1.5, rtol=1e-5)
    expanded = dist.ZeroSumNormal(2.0, (3,)).expand((2, 5))
    draws = expanded.sample(jax.random.key(1))
    assert draws.shape == (2, 5, 3)
    assert expanded.log_prob(draws).shape == (2, 5)
    np.testing.assert_allclose(draws.sum(-1), 0.0, atol=1e-5)


# -- inference ------------------------------------------------------------------------


def _model():
    probnn.sample("x", dist.ZeroSumNormal(1.0, event_shape=(3,)))


_START = jnp.array([1.0, -0.25, -0.75])


def _strategies(bare_only=False):
    """probnn's initialisation strategies: the six bare functions, and (unless
    ``bare_only``) NumPyro's test_init_to_valid variants with options."""
    from probnn.infer import (
        init_to_feasible,
        init_to_mean,
        init_to_median,
        init_to_sample,
        init_to_uniform,
        init_to_value,
    )

    bare = [
        init_to_feasible,
        init_to_mean,
        init_to_median,
        init_to_sample,
        init_to_uniform,
        init_to_value,
    ]
    with_options = [
        init_to_feasible(),
        init_to_median(num_samples=2),
        init_to_sample(),
        init_to_uniform(radius=3),
        init_to_value(values={"tau": 0.7}),
        init_to_value(values={"x": _START}),
    ]
    return bare if bare_only else bare + with_options


def test_init_strategies_give_points_of_the_support():
    # NumPyro's test_init_to_valid, with probnn's strategies given options;
    # the bare ones go through initialize_model below
    for strategy in _strategies()[6:]:
        with handlers.trace() as trace, handlers.seed(rng_seed=3):
            probnn.sample("x", dist.ZeroSumNormal(1, (3,)))
        site = trace["x"]
        site["value"] = None
        init = strategy(site)
        assert init.shape == (3,)
        assert bool(site["fn"].support(init)), strategy


def test_initialize_model_with_every_strategy():
    from probnn.infer import init_to_value
    from probnn.infer.util import initialize_model

    given_start = init_to_value(values={"x": _START})
    for strategy in [*_strategies(bare_only=True), given_start]:
        info = initialize_model(jax.random.key(0), _model, init_strategy=strategy)
        z = info.param_info.z["x"]
        assert z.shape == (2,)  # unconstrained: one coordinate fewer
        assert np.isfinite(float(info.param_info.potential_energy))
        x = info.postprocess_fn(info.param_info.z)["x"]
        assert x.shape == (3,) and bool(constraints.zero_sum(1)(x))
        if strategy is given_start:
            np.testing.assert_allclose(x, _START, atol=1e-6)


def test_nuts_runs_on_a_zero_sum_site():
    from probnn.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(_model), num_warmup=60, num_samples=150, progress_bar=False)
    mcmc.run(jax.random.key(1))
    x = np.asarray(mcmc.get_samples()["x"])
    assert x.shape == (150, 3)
    np.testing.assert_allclose(x.sum(-1), 0.0, atol=1e-5)
    assert np.all(np.isfinite(x)) and np.all(x.std(0) > 0.3)
