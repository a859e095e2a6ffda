"""Flow transforms (BNAF, IAF, Permute) and the flow autoguides, checked
against autodiff: the Jacobian of each flow, computed by ``jax.jacfwd`` on
hypothesis-drawn dims, inputs and network sizes, is triangular in the
flow's order with a positive diagonal, and its log-determinant is the
flow's ``log_abs_det_jacobian``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.example_libraries import stax

import probnn
import probnn.distributions as dist
from probnn.distributions.flows import (
    BlockNeuralAutoregressiveTransform,
    InverseAutoregressiveTransform,
)
from probnn.distributions.transforms import PermuteTransform
from probnn.infer import SVI, Trace_ELBO
from probnn.infer.autoguide import AutoBNAFNormal, AutoIAFNormal
from probnn.nn.auto_reg_nn import AutoregressiveNN
from probnn.nn.block_neural_arn import BlockNeuralAutoregressiveNN, LeakyTanh, Tanh

SETTINGS = dict(max_examples=12, deadline=None)


def _bnaf(dim, factors, residual, seed, activation=None):
    init_fn, apply_fn = BlockNeuralAutoregressiveNN(dim, factors, residual, activation)
    _, params = init_fn(jax.random.PRNGKey(seed), (dim,))
    if residual == "gated":
        params[-1] = jnp.asarray(0.3 * seed - 1.0)
    return BlockNeuralAutoregressiveTransform(lambda x: apply_fn(params, x))


def _iaf(dim, hidden, order, skip, seed):
    init_fn, apply_fn = AutoregressiveNN(
        dim, hidden, permutation=order, skip_connections=skip, nonlinearity=stax.Tanh
    )
    _, params = init_fn(jax.random.PRNGKey(seed), (dim,))
    # larger output weights, so that the clipped log scale is exercised
    params[-1 - skip] = (params[-1 - skip][0] * 3.0, params[-1 - skip][1])
    return InverseAutoregressiveTransform(lambda x: apply_fn(params, x))


def _check_jacobian(transform, x, order):
    # one compiled program per example (op-by-op dispatch would compile
    # every primitive at every new shape)
    y, jac, log_abs_det = jax.jit(
        lambda x: (
            transform(x),
            jax.jacfwd(transform)(x),
            transform.log_abs_det_jacobian(x, transform(x)),
        )
    )(x)
    # in the flow's order, output i reads only inputs up to i
    reordered = jac[np.ix_(order, order)]
    np.testing.assert_allclose(np.triu(reordered, 1), 0.0, atol=1e-6)
    assert np.all(np.diag(reordered) > 0)
    _, log_det = jnp.linalg.slogdet(jac)
    np.testing.assert_allclose(log_abs_det, log_det, rtol=1e-4, atol=1e-4)


@settings(**SETTINGS)
@given(
    dim=st.integers(1, 5),
    factors=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    residual=st.sampled_from([None, "normal", "gated"]),
    seed=st.integers(0, 5),
    data=st.data(),
)
def test_bnaf_log_det_is_the_autodiff_jacobians(dim, factors, residual, seed, data):
    x = jnp.asarray(
        data.draw(st.lists(st.floats(-3, 3), min_size=dim, max_size=dim)), jnp.float32
    )
    activation = data.draw(
        st.sampled_from([None, Tanh(), LeakyTanh(0.2)]), label="activation"
    )
    flow = _bnaf(dim, factors, residual, seed, activation)
    _check_jacobian(flow, x, np.arange(dim))


def test_leaky_bnaf_maps_onto_the_line_and_its_inverse_density_integrates_to_one():
    # with LeakyTanh the flow is a bijection of R, so the Normal pulled back
    # through it is a density: its integral over a wide grid is 1
    # (a slope of at least 0.1 per activation keeps the tails inside the
    # grid: with the default 0.01 the image of +-2000 can stay within +-1)
    flow = _bnaf(1, [4, 3], None, 2, LeakyTanh(0.1))
    pulled = dist.TransformedDistribution(dist.Normal(jnp.zeros(1), 0.5), flow.inv)
    # fine where the flow is steep (its image of [-20, 20] holds most of the
    # Normal's mass), coarse out to +-2000 over the thin tails
    grid = np.concatenate(
        [
            np.linspace(-2000.0, -20.0, 20000, endpoint=False),
            np.linspace(-20.0, 20.0, 40001),
            np.linspace(20.0, 2000.0, 20000)[1:],
        ]
    )
    x = jnp.asarray(grid, jnp.float32)[:, None]
    density = jnp.exp(jax.jit(pulled.log_prob)(x))
    assert abs(float(jnp.trapezoid(density, x[:, 0])) - 1.0) < 0.01


@settings(**SETTINGS)
@given(
    dim=st.integers(2, 5),
    skip=st.booleans(),
    seed=st.integers(0, 5),
    data=st.data(),
)
def test_iaf_jacobian_inverse_and_order(dim, skip, seed, data):
    order = np.asarray(data.draw(st.permutations(range(dim))))
    hidden = data.draw(st.lists(st.integers(dim, 2 * dim), min_size=1, max_size=2))
    x = jnp.asarray(
        data.draw(st.lists(st.floats(-3, 3), min_size=dim, max_size=dim)), jnp.float32
    )
    transform = _iaf(dim, hidden, order, skip, seed)
    _check_jacobian(transform, x, order)
    np.testing.assert_allclose(transform._inverse(transform(x)), x, atol=1e-4)


def test_flows_batch_under_jit_and_vmap():
    bnaf = _bnaf(3, [4], "gated", 1)
    iaf = _iaf(3, [5], np.arange(3), False, 2)
    xs = jax.random.normal(jax.random.PRNGKey(0), (6, 3))
    for transform in (bnaf, iaf):
        one_by_one = jnp.stack([transform(x) for x in xs])
        np.testing.assert_allclose(transform(xs), one_by_one, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            jax.jit(transform)(xs), one_by_one, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            jax.vmap(transform)(xs), one_by_one, rtol=1e-5, atol=1e-6
        )
        log_dets = jax.vmap(lambda x, t=transform: t.log_abs_det_jacobian(x, t(x)))(xs)
        assert log_dets.shape == (6,)


def test_permute_round_trip_and_volume():
    t = PermuteTransform(jnp.array([3, 1, 0, 2]))
    x = jnp.arange(8.0).reshape(2, 4)
    np.testing.assert_array_equal(t(x), x[:, [3, 1, 0, 2]])
    np.testing.assert_array_equal(t._inverse(t(x)), x)
    np.testing.assert_array_equal(t.log_abs_det_jacobian(x, t(x)), jnp.zeros(2))
    with pytest.raises(ValueError, match="PermuteTransform"):
        PermuteTransform([0, 0, 1])


def test_a_flow_without_inverse_scores_its_own_draws():
    flow = _bnaf(2, [3], None, 0)
    d = dist.TransformedDistribution(dist.Normal(jnp.zeros(2), 1.0).to_event(1), [flow])
    z = jax.random.normal(jax.random.PRNGKey(3), (2,))
    # the draw whose base point is z
    key = jax.random.PRNGKey(3)
    y = d.sample(key)
    np.testing.assert_allclose(y, flow(z), rtol=1e-6)
    expected = jax.scipy.stats.norm.logpdf(z).sum() - flow.log_abs_det_jacobian(z, y)
    np.testing.assert_allclose(d.log_prob(y), expected, rtol=1e-5)
    with pytest.raises(NotImplementedError, match="no closed-form inverse"):
        d.log_prob(y + 0.0)  # another array: would need the inverse


def test_a_distribution_sampled_inside_jit_keeps_no_tracer():
    import gc

    flow = _bnaf(2, [3], None, 0)
    d = dist.TransformedDistribution(dist.Normal(jnp.zeros(2), 1.0).to_event(1), [flow])
    with jax.checking_leaks():
        jax.jit(d.sample)(jax.random.PRNGKey(0))
    gc.collect()
    assert d._last_draw is None  # the pre-images went with the traced draw
    y = d.sample(jax.random.PRNGKey(1))
    assert np.isfinite(float(d.log_prob(y)))


def _correlated():
    # the joint is Gaussian with correlation 1 / sqrt(1.36) = 0.857 between
    # x and y; a mean-field guide's best -ELBO is its KL bound,
    # 0.5 log(1 / (1 - 0.857**2)) = 0.66 nats
    x = probnn.sample("x", dist.Normal(1.0, 1.0))
    probnn.sample("y", dist.Normal(x - 0.5, 0.6))


@pytest.mark.parametrize(
    "guide_class, kwargs",
    [(AutoBNAFNormal, {"hidden_factors": [8]}), (AutoIAFNormal, {"num_flows": 2})],
)
def test_flow_guides_fit_a_correlated_posterior(guide_class, kwargs):
    guide = guide_class(_correlated, **kwargs)
    svi = SVI(_correlated, guide, optax.adam(0.01), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 2500, progress_bar=False)
    # the model is normalised, so -ELBO is KL(guide || posterior) >= 0;
    # over seeds 0-2 both flows end at 0.07-0.17 with this constant step size
    # (mean field cannot go below 0.66)
    kl = Trace_ELBO(num_particles=4000).loss(
        jax.random.PRNGKey(5), result.params, _correlated, guide
    )
    assert -0.05 < float(kl) < 0.3
    draws = guide.sample_posterior(
        jax.random.PRNGKey(1), result.params, sample_shape=(4000,)
    )
    x, y = np.asarray(draws["x"]), np.asarray(draws["y"])
    assert abs(x.mean() - 1.0) < 0.3 and abs(y.mean() - 0.5) < 0.3
    assert abs(x.std() - 1.0) < 0.25 and abs(y.std() - 1.166) < 0.25
    assert np.corrcoef(x, y)[0, 1] > 0.75
    # get_transform maps the base onto the same values sample_posterior
    # gives for the same base draws
    z = guide.get_base_dist().sample(jax.random.PRNGKey(2), (5,))
    pushed = guide._unpack_and_constrain(guide.get_transform(result.params)(z))
    through_posterior = guide.get_posterior(result.params).sample(
        jax.random.PRNGKey(2), (5,)
    )
    np.testing.assert_allclose(
        pushed["x"], through_posterior[:, 0], rtol=1e-5, atol=1e-6
    )


def test_flow_guides_refuse_what_they_cannot_do():
    guide = AutoIAFNormal(lambda: probnn.sample("x", dist.Normal(0.0, 1.0)))
    svi = SVI(guide.model, guide, optax.adam(0.01), Trace_ELBO())
    with pytest.raises(ValueError, match="one latent dim.*AutoDiagonalNormal"):
        svi.init(jax.random.PRNGKey(0))
    guide = AutoBNAFNormal(_correlated)
    svi = SVI(_correlated, guide, optax.adam(0.01), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.PRNGKey(0)))
    with pytest.raises(NotImplementedError, match="median.*sample_posterior"):
        guide.median(params)
    with pytest.raises(ValueError, match="hidden_factors"):
        BlockNeuralAutoregressiveNN(3, [0])
    with pytest.raises(ValueError, match="permutation"):
        AutoregressiveNN(3, [4], permutation=[0, 1, 1])


def test_tril_vector_round_trip():
    from probnn.distributions.util import matrix_to_tril_vec, vec_to_tril_matrix

    x = jnp.arange(32.0).reshape(2, 4, 4)
    for diagonal in (0, -1, -2):
        vec = matrix_to_tril_vec(x, diagonal)
        assert vec.shape == (2, (4 + diagonal) * (5 + diagonal) // 2)
        np.testing.assert_array_equal(
            vec_to_tril_matrix(vec, diagonal), np.tril(np.asarray(x), diagonal)
        )
    with pytest.raises(ValueError, match="no square lower triangle"):
        vec_to_tril_matrix(jnp.ones(4))
