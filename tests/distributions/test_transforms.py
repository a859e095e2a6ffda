"""Transforms: round trips, log Jacobians against jax.jacobian, biject_to."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probnn.distributions as dist
from probnn.distributions import constraints
from probnn.distributions import transforms as T


def _free(y, kind):
    """Free coordinates of a transform's output, for its Jacobian."""
    if kind == "scalar" or kind == "vector":
        return jnp.ravel(y)
    n = y.shape[-1]
    if kind == "lower":
        rows, cols = jnp.tril_indices(n)
    else:  # strictly lower: correlation Cholesky factors
        rows, cols = jnp.tril_indices(n, -1)
    return y[rows, cols]


ELEMENTWISE = {
    "exp": T.ExpTransform(),
    "affine": T.AffineTransform(1.5, -2.5),
    "sigmoid": T.SigmoidTransform(),
    "softplus": T.SoftplusTransform(),
    "tanh": T.TanhTransform(),
    "power": T.ComposeTransform([T.ExpTransform(), T.PowerTransform(2.5)]),
    "compose": T.ComposeTransform([T.SigmoidTransform(), T.AffineTransform(-1.0, 3.0)]),
}

# name: (transform, input size, output kind)
EVENT = {
    "stick_breaking": (T.StickBreakingTransform(), 4, "vector"),
    "ordered": (T.OrderedTransform(), 4, "vector"),
    "lower_cholesky": (T.LowerCholeskyTransform(), 6, "lower"),
    "softplus_lower_cholesky": (T.SoftplusLowerCholeskyTransform(), 6, "lower"),
    "corr_cholesky": (T.CorrCholeskyTransform(), 6, "strict"),
}


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_round_trip_and_jacobian(name):
    t = ELEMENTWISE[name]
    x = jax.random.normal(jax.random.PRNGKey(0), (7,))
    y = t(x)
    np.testing.assert_allclose(t.inv(y), x, rtol=1e-4, atol=1e-4)
    assert bool(jnp.all(t.codomain(y)))
    derivative = jax.vmap(jax.grad(lambda v: t(v)))(x)
    np.testing.assert_allclose(
        t.log_abs_det_jacobian(x, y), jnp.log(jnp.abs(derivative)), rtol=1e-4, atol=1e-4
    )
    # The inverse's log Jacobian is the negative of the forward one.
    np.testing.assert_allclose(
        t.inv.log_abs_det_jacobian(y, x), -t.log_abs_det_jacobian(x, y), rtol=1e-6
    )


@pytest.mark.parametrize("name", list(EVENT))
def test_event_transform_round_trip_and_jacobian(name):
    t, size, kind = EVENT[name]
    x = 0.7 * jax.random.normal(jax.random.PRNGKey(1), (size,))
    y = t(x)
    assert y.shape == t.forward_shape(x.shape)
    assert t.inverse_shape(y.shape) == x.shape
    assert bool(t.codomain(y))
    np.testing.assert_allclose(t.inv(y), x, rtol=1e-4, atol=1e-4)
    if kind == "vector" and y.shape[-1] != x.shape[-1]:
        # Stick breaking: the last coordinate is determined by the others.
        jacobian = jax.jacobian(lambda v: t(v)[:-1])(x)
    else:
        jacobian = jax.jacobian(lambda v: _free(t(v), kind))(x)
    _, expected = jnp.linalg.slogdet(jacobian)
    np.testing.assert_allclose(
        t.log_abs_det_jacobian(x, y), expected, rtol=1e-4, atol=1e-4
    )


def test_event_transforms_batch():
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 3, 6))
    for t, _, _ in EVENT.values():
        size = 4 if isinstance(t, T.StickBreakingTransform | T.OrderedTransform) else 6
        batch = x[..., :size]
        y = t(batch)
        assert t.log_abs_det_jacobian(batch, y).shape == (5, 3)
        singles = jnp.stack(
            [t.log_abs_det_jacobian(b, t(b)) for b in batch.reshape(15, size)]
        )
        np.testing.assert_allclose(
            t.log_abs_det_jacobian(batch, y).reshape(15), singles, rtol=1e-5, atol=1e-5
        )


def test_cholesky_transform_jacobian():
    # positive definite (lower-triangle coordinates) -> lower Cholesky factor
    t = T.CholeskyTransform()
    a = jax.random.normal(jax.random.PRNGKey(3), (3, 3))
    x = a @ a.T + 3.0 * jnp.eye(3)
    rows, cols = jnp.tril_indices(3)

    def from_lower(v):
        m = jnp.zeros((3, 3)).at[rows, cols].set(v)
        return m + jnp.tril(m, -1).T

    jacobian = jax.jacobian(lambda v: t(from_lower(v))[rows, cols])(x[rows, cols])
    _, expected = jnp.linalg.slogdet(jacobian)
    np.testing.assert_allclose(t.log_abs_det_jacobian(x, t(x)), expected, rtol=1e-4)
    np.testing.assert_allclose(t.inv(t(x)), x, rtol=1e-5)


CONSTRAINTS = {
    "real": (constraints.real, (4,)),
    "real_vector": (constraints.real_vector, (4,)),
    "positive": (constraints.positive, (4,)),
    "nonnegative": (constraints.nonnegative, (4,)),
    "softplus_positive": (constraints.softplus_positive, (4,)),
    "unit_interval": (constraints.unit_interval, (4,)),
    "interval": (constraints.interval(-2.0, 5.0), (4,)),
    "greater_than": (constraints.greater_than(3.0), (4,)),
    "less_than": (constraints.less_than(-1.0), (4,)),
    "simplex": (constraints.simplex, (4,)),
    "ordered_vector": (constraints.ordered_vector, (4,)),
    "lower_cholesky": (constraints.lower_cholesky, (6,)),
    "softplus_lower_cholesky": (constraints.softplus_lower_cholesky, (6,)),
    "corr_cholesky": (constraints.corr_cholesky, (6,)),
    "positive_definite": (constraints.positive_definite, (6,)),
    "independent": (constraints.independent(constraints.positive, 1), (4,)),
}


@pytest.mark.parametrize("name", list(CONSTRAINTS))
def test_biject_to_lands_in_constraint(name):
    constraint, shape = CONSTRAINTS[name]
    t = dist.biject_to(constraint)
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(4), (8,) + shape)
    y = t(x)
    inside = constraint(y)
    assert inside.shape == y.shape[: y.ndim - constraint.event_dim]
    assert bool(jnp.all(inside)), name
    np.testing.assert_allclose(t.inv(y), x, rtol=1e-3, atol=1e-3)
    assert jnp.all(jnp.isfinite(t.log_abs_det_jacobian(x, y)))


@pytest.mark.parametrize(
    "constraint", [constraints.boolean, constraints.nonnegative_integer]
)
def test_biject_to_discrete_raises(constraint):
    with pytest.raises(NotImplementedError, match=re.escape(repr(constraint))):
        dist.biject_to(constraint)


def test_transformed_distribution_log_normal_matches_scipy():
    d = dist.TransformedDistribution(dist.Normal(0.3, 0.8), T.ExpTransform())
    values = jnp.array([0.1, 1.0, 4.0])
    expected = stats.lognorm.logpdf(np.asarray(values), s=0.8, scale=np.exp(0.3))
    np.testing.assert_allclose(d.log_prob(values), expected, rtol=1e-5)
    draws, intermediates = d.sample_with_intermediates(jax.random.PRNGKey(5), (3,))
    np.testing.assert_allclose(
        d.log_prob(draws, intermediates), d.log_prob(draws), rtol=1e-5
    )
    assert d.support(draws).all()


def test_transformed_distribution_event_rank_from_transform():
    # Normal(0,1) on R^3 pushed onto the 4-simplex: a density on 3 free coordinates.
    base = dist.Normal(jnp.zeros(3), 1.0).to_event(1)
    d = dist.TransformedDistribution(base, T.StickBreakingTransform())
    assert d.batch_shape == () and d.event_shape == (4,)
    x = jnp.array([0.2, -0.4, 0.9])
    t = T.StickBreakingTransform()
    y = t(x)
    expected = stats.norm.logpdf(np.asarray(x)).sum() - float(
        t.log_abs_det_jacobian(x, y)
    )
    np.testing.assert_allclose(d.log_prob(y), expected, rtol=1e-5)
    batch = dist.TransformedDistribution(
        dist.Normal(jnp.zeros((2, 3)), 1.0).to_event(1), t
    )
    assert batch.batch_shape == (2,) and batch.log_prob(jnp.stack([y, y])).shape == (2,)


def test_stick_breaking_onto_a_one_point_simplex():
    # K = 1: no free coordinate, and the only point of the simplex is (1,)
    t = T.StickBreakingTransform()
    x = jnp.zeros((4, 0))
    np.testing.assert_array_equal(t(x), jnp.ones((4, 1)))
    assert t.inverse_shape((4, 1)) == (4, 0)
    np.testing.assert_array_equal(t.log_abs_det_jacobian(x, t(x)), jnp.zeros(4))


def test_transforms_pass_through_jit_and_vmap():
    @jax.jit
    def apply(t, x):
        return t(x), t.log_abs_det_jacobian(x, t(x))

    y, ladj = apply(T.AffineTransform(jnp.array(1.0), jnp.array(2.0)), jnp.array(0.5))
    assert float(y) == 2.0 and np.isclose(float(ladj), np.log(2.0))
    scales = jnp.array([1.0, 2.0, 4.0])
    ys = jax.vmap(lambda s: T.AffineTransform(0.0, s)(1.0))(scales)
    np.testing.assert_allclose(ys, scales)


def test_positive_definite_tolerates_float32_rounding_of_large_entries():
    a = jax.random.normal(jax.random.PRNGKey(9), (4, 4))
    cov = 1e4 * (a @ a.T + jnp.eye(4))
    # float32 products are not exactly symmetric at this size
    rounded = cov.at[0, 1].add(1e-3)
    assert bool(constraints.positive_definite(rounded))
    assert not bool(constraints.positive_definite(cov.at[0, 1].add(1e2)))
    assert not bool(constraints.positive_definite(-cov))
