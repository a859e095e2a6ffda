"""Structured mass matrices in NumPyro's form: ``inverse_mass_matrix`` given
as a dict from tuples of site names to blocks, and the adaptation state that
``MCMC.last_state`` shows (``inverse_mass_matrix``, ``mass_matrix_sqrt`` and
``mass_matrix_sqrt_inv`` by block), its round trip through
``post_warmup_state``, several chains, and the errors for blocks that do not
fit the model.

The sampler itself keeps a flat vector or matrix; these tests only see the
boundary. Where NumPyro is installed, its key sets, block shapes and square
roots are the reference."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.infer import HMC, MCMC, NUTS
from probnn.infer.hmc import hmc
from probnn.infer.hmc_util import AdaptState, HMCAdaptState


def two_sites():
    # flat order (sites by name): u (3 values), then v (2 values)
    probnn.sample("u", dist.Normal(jnp.zeros(3), 1.0).to_event(1))
    probnn.sample("v", dist.Normal(jnp.zeros(2), 1.0).to_event(1))


def four_sites():
    # sizes: p 1, q 4, r 6 (a 2x3 site), s 1
    probnn.sample("q", dist.Normal(0.0, 1.0).expand([4]).to_event(1))
    probnn.sample("s", dist.Normal(0.0, 1.0))
    probnn.sample("r", dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
    probnn.sample("p", dist.Normal(0.0, 1.0))


# correlated Gaussian posterior, block by block: (a, b) with cov
# [[1, .8], [.8, 1]]; m a bivariate normal site; c independent with var 4
M_COV = np.array([[2.0, -0.9], [-0.9, 1.0]])


def correlated():
    a = probnn.sample("a", dist.Normal(0.0, 1.0))
    probnn.sample("b", dist.Normal(0.8 * a, 0.6))
    probnn.sample("c", dist.Normal(0.0, 2.0))
    probnn.sample("m", dist.MultivariateNormal(jnp.zeros(2), jnp.asarray(M_COV)))


def run(kernel, num_warmup=50, num_samples=20, seed=0, **options):
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        progress_bar=False,
        **options,
    )
    mcmc.run(jax.random.PRNGKey(seed))
    return mcmc


def state_at_start(kernel):
    """The state a chain of ``kernel`` starts from (at the origin), as
    ``MCMC.last_state`` shows it for one chain, without compiling a chain:
    the kernel's own steps that ``MCMC`` takes (the step size is not
    searched for, which would need the compiled leapfrog)."""
    kernel.adapt_step_size = False
    kernel.setup((), {}, None)
    size = {two_sites: 5, four_sites: 12}[kernel.model]
    # the point's potential and gradient only matter to the step-size search
    zeros = jnp.zeros(size)
    state = kernel.init_state(
        jax.random.PRNGKey(0), zeros, jnp.zeros(()), zeros, 0, (), {}
    )
    return kernel.public_state(jax.tree.map(lambda x: x[None], state))


def shown_at_start(kernel):
    return state_at_start(kernel).adapt_state


def shapes(blocks):
    return {key: tuple(np.shape(value)) for key, value in blocks.items()}


def unbatched_shapes(blocks):
    return {key: shape[1:] for key, shape in shapes(blocks).items()}


MASS_FIELDS = ("inverse_mass_matrix", "mass_matrix_sqrt", "mass_matrix_sqrt_inv")


# -- given blocks ------------------------------------------------------------------


@pytest.mark.parametrize("dense_mass", [False, [("u",)]])
def test_given_block_is_used_and_other_sites_get_ones(dense_mass):
    given = jnp.array([2.0, 3.0, 5.0])
    kernel = NUTS(
        two_sites,
        inverse_mass_matrix={("u",): given},
        dense_mass=dense_mass,
        adapt_mass_matrix=False,
    )
    adapt = run(kernel).last_state.adapt_state
    assert isinstance(adapt, HMCAdaptState)
    assert set(adapt.inverse_mass_matrix) == {("u",), ("v",)}
    # one chain: no chain axis, as in NumPyro
    u = np.asarray(adapt.inverse_mass_matrix[("u",)])
    expected = np.diag(given) if dense_mass else np.asarray(given)
    np.testing.assert_array_equal(u, expected)
    np.testing.assert_array_equal(np.asarray(adapt.inverse_mass_matrix[("v",)]), 1.0)
    assert np.shape(adapt.inverse_mass_matrix[("v",)]) == (2,)
    # the given dict is the user's: left as it was
    assert list(kernel.inverse_mass_matrix) == [("u",)]


def test_block_follows_the_order_of_its_key():
    # the block over (v, u): rows 0-1 are v's values, rows 2-4 u's
    rng = np.random.default_rng(0)
    root = rng.normal(size=(5, 5))
    given = root @ root.T + 5 * np.eye(5)
    kernel = NUTS(
        two_sites, inverse_mass_matrix={("v", "u"): given}, dense_mass=[("v", "u")]
    )
    state = state_at_start(kernel)
    adapt = state.adapt_state
    assert list(adapt.inverse_mass_matrix) == [("v", "u")]
    shown = np.asarray(adapt.inverse_mass_matrix[("v", "u")])[0]
    np.testing.assert_allclose(shown, given, rtol=1e-6)
    # the sampler's own matrix lays the sites out by name: u, then v
    inner = kernel.internal_state(state).adapt_state
    order = [2, 3, 4, 0, 1]
    np.testing.assert_allclose(
        np.asarray(inner.inverse_mass_matrix)[0],
        given[np.ix_(order, order)],
        rtol=1e-6,
    )


def test_matrix_for_a_diagonal_block_and_vector_for_a_dense_block():
    # as in NumPyro: a diagonal block keeps a matrix's diagonal, a dense
    # block reads a vector as its diagonal
    kernel = NUTS(
        two_sites,
        inverse_mass_matrix={
            ("u",): jnp.array([1.0, 2.0, 3.0]),
            "v": jnp.array([[4.0, 0.5], [0.5, 6.0]]),  # a lone name is a key too
        },
        dense_mass=[("u",)],
    )
    shown = shown_at_start(kernel).inverse_mass_matrix
    assert list(shown) == [("u",), ("v",)]
    np.testing.assert_array_equal(
        np.asarray(shown[("u",)])[0], np.diag([1.0, 2.0, 3.0])
    )
    np.testing.assert_array_equal(np.asarray(shown[("v",)])[0], [4.0, 6.0])


@pytest.mark.parametrize("dense_mass", [False, True])
def test_array_over_the_whole_latent_vector(dense_mass):
    given = jnp.arange(1.0, 6.0)
    kernel = NUTS(two_sites, inverse_mass_matrix=given, dense_mass=dense_mass)
    shown = shown_at_start(kernel).inverse_mass_matrix
    assert list(shown) == [("u", "v")]
    expected = np.diag(given) if dense_mass else np.asarray(given)
    np.testing.assert_array_equal(np.asarray(shown[("u", "v")])[0], expected)


@pytest.mark.parametrize(
    "dense_mass, expected",
    [
        (False, {("p", "q", "r", "s"): (12,)}),
        ([], {("p", "q", "r", "s"): (12,)}),
        (True, {("p", "q", "r", "s"): (12, 12)}),
        ([("s", "q", "p", "r")], {("s", "q", "p", "r"): (12, 12)}),
        ([("r", "p"), ("q",)], {("r", "p"): (7, 7), ("q",): (4, 4), ("s",): (1,)}),
        ([("q",)], {("p", "r", "s"): (8,), ("q",): (4, 4)}),
        (
            [("s",), ("p",), ("q",)],
            {("p",): (1, 1), ("q",): (4, 4), ("r",): (6,), ("s",): (1, 1)},
        ),
    ],
)
def test_blocks_and_their_shapes(dense_mass, expected):
    adapt = shown_at_start(NUTS(four_sites, dense_mass=dense_mass))
    for field in MASS_FIELDS:
        blocks = getattr(adapt, field)
        assert unbatched_shapes(blocks) == expected, field
        # sorted keys, as a JAX pytree orders them
        assert list(blocks) == sorted(expected), field


def spd(n, seed):
    root = np.random.default_rng(seed).normal(size=(n, n))
    return root @ root.T + n * np.eye(n)


NUMPYRO_CASES = {
    "diagonal": (False, None),
    "dense": (True, None),
    "one group": ([("s", "q", "p", "r")], {("s", "q", "p", "r"): spd(12, 1)}),
    "groups": (
        [("r", "p"), ("q",)],
        {("r", "p"): spd(7, 2), ("q",): spd(4, 3), ("s",): np.array([2.5])},
    ),
    "given diagonal blocks": (
        [("q",)],
        {("q",): np.arange(1.0, 5.0), ("s", "p"): np.array([2.0, 3.0])},
    ),
}


@pytest.mark.parametrize("case", list(NUMPYRO_CASES))
def test_blocks_and_roots_agree_with_numpyro(case):
    numpyro = pytest.importorskip("numpyro")
    import numpyro.distributions as ndist
    from numpyro.infer import NUTS as NumPyroNUTS

    dense_mass, given = NUMPYRO_CASES[case]

    def model():
        numpyro.sample("q", ndist.Normal(0.0, 1.0).expand([4]).to_event(1))
        numpyro.sample("s", ndist.Normal(0.0, 1.0))
        numpyro.sample("r", ndist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
        numpyro.sample("p", ndist.Normal(0.0, 1.0))

    def options():
        # a fresh dict for each library (NumPyro fills in the one it gets)
        blocks = (
            None if given is None else {k: jnp.asarray(v) for k, v in given.items()}
        )
        return dict(
            dense_mass=dense_mass, inverse_mass_matrix=blocks, adapt_step_size=False
        )

    reference = NumPyroNUTS(model, **options())
    theirs = reference.init(jax.random.PRNGKey(0), 0, None, (), {}).adapt_state
    ours = shown_at_start(NUTS(four_sites, **options()))
    for field in MASS_FIELDS:
        mine, reference_blocks = getattr(ours, field), getattr(theirs, field)
        assert unbatched_shapes(mine) == shapes(reference_blocks), field
        for key, value in reference_blocks.items():
            np.testing.assert_allclose(
                np.asarray(mine[key])[0],
                np.asarray(value),
                rtol=1e-5,
                atol=1e-6,
                err_msg=f"{field}[{key}]",
            )


# -- adapted blocks ----------------------------------------------------------------


def test_adapted_blocks_estimate_the_posterior_covariance():
    kernel = NUTS(correlated, dense_mass=[("b", "a"), ("m",)])
    adapt = run(kernel, num_warmup=500, num_samples=1, seed=3).last_state.adapt_state
    shown = adapt.inverse_mass_matrix
    assert set(shown) == {("b", "a"), ("m",), ("c",)}
    ab = np.array([[1.0, 0.8], [0.8, 1.0]])
    tol = dict(atol=0.5, rtol=0.5)  # NumPyro's for its structured mass test
    np.testing.assert_allclose(np.asarray(shown[("b", "a")]), ab[::-1, ::-1], **tol)
    np.testing.assert_allclose(np.asarray(shown[("m",)]), M_COV, **tol)
    np.testing.assert_allclose(np.asarray(shown[("c",)]), [4.0], **tol)
    # the correlations' signs are the posterior's
    assert np.asarray(shown[("b", "a")])[0, 1] > 0.2
    assert np.asarray(shown[("m",)])[0, 1] < -0.2

    # the square roots are of the MASS matrix, the inverse of this one
    for key, inverse in shown.items():
        inverse = np.asarray(inverse, np.float64)
        root = np.asarray(adapt.mass_matrix_sqrt[key], np.float64)
        root_inv = np.asarray(adapt.mass_matrix_sqrt_inv[key], np.float64)
        if inverse.ndim == 1:
            np.testing.assert_allclose(root**2, 1 / inverse, rtol=1e-5)
            np.testing.assert_allclose(root_inv**2, inverse, rtol=1e-5)
            continue
        np.testing.assert_allclose(root @ root.T, np.linalg.inv(inverse), rtol=1e-4)
        np.testing.assert_allclose(root_inv.T @ root_inv, inverse, rtol=1e-4)
        np.testing.assert_allclose(root @ root_inv, np.eye(len(inverse)), atol=1e-5)
        # lower triangular: the Cholesky factor of the mass matrix
        np.testing.assert_array_equal(np.triu(root, 1), 0.0)
        np.testing.assert_allclose(
            root, np.linalg.cholesky(np.linalg.inv(inverse)), rtol=1e-4
        )


# -- chains and round trips --------------------------------------------------------


def test_several_chains_put_the_chain_axis_in_front():
    fields = (
        "adapt_state.inverse_mass_matrix",
        "adapt_state.mass_matrix_sqrt",
        "adapt_state.step_size",
    )
    mcmc = MCMC(
        NUTS(two_sites, dense_mass=[("v",)]),
        num_warmup=60,
        num_samples=8,
        num_chains=3,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(1), extra_fields=fields)
    adapt = mcmc.last_state.adapt_state
    for field in MASS_FIELDS:
        assert shapes(getattr(adapt, field)) == {("u",): (3, 3), ("v",): (3, 2, 2)}
    assert np.shape(adapt.step_size) == (3,)
    # each chain adapted its own matrix
    blocks = np.asarray(adapt.inverse_mass_matrix[("u",)])
    assert not np.allclose(blocks[0], blocks[1])

    # extra fields show the blocks per draw, behind the chain and draw axes
    by_chain = mcmc.get_extra_fields(group_by_chain=True)
    for field in fields[:2]:
        assert shapes(by_chain[field]) == {("u",): (3, 8, 3), ("v",): (3, 8, 2, 2)}
    # after warmup the matrix stays: every draw shows the final one
    np.testing.assert_array_equal(
        np.asarray(by_chain["adapt_state.inverse_mass_matrix"][("v",)][:, -1]),
        np.asarray(adapt.inverse_mass_matrix[("v",)]),
    )
    joined = mcmc.get_extra_fields()["adapt_state.mass_matrix_sqrt"]
    assert shapes(joined) == {("u",): (24, 3), ("v",): (24, 2, 2)}


@pytest.mark.parametrize("kernel_cls, dense_mass", [(NUTS, [("v", "u")]), (HMC, False)])
def test_post_warmup_state_continues_bit_for_bit(kernel_cls, dense_mass):
    """``warmup`` then ``run`` (from the state MCMC keeps) against the same
    run from ``post_warmup_state = last_state`` (the shown state, converted
    back), also after ``jax.device_get`` and pickling: the same draws."""
    mcmc = MCMC(
        kernel_cls(two_sites, dense_mass=dense_mass),
        num_warmup=60,
        num_samples=30,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.warmup(jax.random.PRNGKey(4))
    after_warmup = mcmc.last_state
    assert isinstance(after_warmup.adapt_state, HMCAdaptState)
    mcmc.run(jax.random.PRNGKey(5))
    kept = np.asarray(mcmc.get_samples()["u"])
    stored = pickle.loads(pickle.dumps(jax.device_get(after_warmup)))
    for start in (after_warmup, stored):
        mcmc.post_warmup_state = start
        mcmc.run(jax.random.PRNGKey(5))
        np.testing.assert_array_equal(np.asarray(mcmc.get_samples()["u"]), kept)
    # and on from the state that run left
    mcmc.post_warmup_state = mcmc.last_state
    mcmc.run(mcmc.last_state.rng_key)
    assert isinstance(mcmc.last_state.adapt_state, HMCAdaptState)
    assert not np.array_equal(np.asarray(mcmc.get_samples()["u"]), kept)

    # an edited inverse mass matrix is used, with momenta to match
    state = mcmc.last_state
    adapt = state.adapt_state
    key = list(adapt.inverse_mass_matrix)[0]
    size = 5
    new = jnp.broadcast_to(jnp.arange(1.0, size + 1.0), (2, size))
    if dense_mass:
        new = jax.vmap(jnp.diag)(new)
    edited = state._replace(adapt_state=adapt._replace(inverse_mass_matrix={key: new}))
    inner = mcmc.sampler.internal_state(edited).adapt_state
    assert isinstance(inner, AdaptState)
    # momenta r = scale @ noise have covariance scale @ scale.T, the mass
    # matrix; the sampler's flat order is u, v (v's values first in the key)
    order = np.array([2, 3, 4, 0, 1]) if dense_mass else np.arange(size)
    scale = np.asarray(inner.momentum_scale, np.float64)[1]
    mass = scale @ scale.T if dense_mass else np.diag(scale**2)
    np.testing.assert_allclose(np.diag(mass), 1 / (order + 1.0), rtol=1e-6)
    # the unedited state keeps the chain's own momentum factor exactly
    unedited = mcmc.sampler.internal_state(state).adapt_state.momentum_scale
    np.testing.assert_array_equal(
        np.asarray(unedited), np.asarray(adapt.momentum_scale)
    )
    mcmc.post_warmup_state = edited
    mcmc.run(jax.random.PRNGKey(6))
    np.testing.assert_array_equal(
        np.asarray(mcmc.last_state.adapt_state.inverse_mass_matrix[key]), new
    )


# -- without a model ---------------------------------------------------------------


def potential(z):
    return 0.5 * jnp.sum(z["x"] ** 2 / jnp.array([1.0, 4.0])) + 0.5 * z["y"] ** 2


def test_potential_fn_keeps_arrays():
    init = {"x": jnp.zeros(2), "y": jnp.zeros(())}
    mcmc = MCMC(
        NUTS(potential_fn=potential, dense_mass=True),
        num_warmup=60,
        num_samples=10,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(2), init_params=init)
    adapt = mcmc.last_state.adapt_state
    assert isinstance(adapt, HMCAdaptState)
    for field in MASS_FIELDS:
        assert not isinstance(getattr(adapt, field), dict), field
        assert np.shape(getattr(adapt, field)) == (3, 3), field
    root = np.asarray(adapt.mass_matrix_sqrt, np.float64)
    inverse = np.asarray(adapt.inverse_mass_matrix, np.float64)
    np.testing.assert_allclose(root @ root.T, np.linalg.inv(inverse), rtol=1e-4)
    mcmc.post_warmup_state = mcmc.last_state
    mcmc.run(mcmc.last_state.rng_key, init_params=init)
    assert mcmc.get_samples()["x"].shape == (10, 2)


@pytest.mark.parametrize("dense_mass", [False, True])
def test_functional_interface_keeps_the_flat_state(dense_mass):
    init_kernel, _ = hmc(potential, algo="NUTS")
    given = jnp.array([[1.0, 0.2, 0.0], [0.2, 2.0, 0.0], [0.0, 0.0, 3.0]])
    state = init_kernel(
        {"x": jnp.zeros(2), "y": jnp.zeros(())},
        num_warmup=10,
        inverse_mass_matrix=given,
        adapt_step_size=False,
        dense_mass=dense_mass,
    )
    adapt = state.adapt_state
    assert isinstance(adapt, AdaptState)
    inverse = np.asarray(adapt.inverse_mass_matrix, np.float64)
    root = np.asarray(adapt.mass_matrix_sqrt, np.float64)
    root_inv = np.asarray(adapt.mass_matrix_sqrt_inv, np.float64)
    if dense_mass:
        np.testing.assert_array_equal(inverse, given)
        np.testing.assert_allclose(root @ root.T, np.linalg.inv(inverse), rtol=1e-5)
        np.testing.assert_allclose(root_inv.T @ root_inv, inverse, rtol=1e-5)
    else:
        # as in NumPyro, a diagonal mass matrix keeps the given diagonal
        np.testing.assert_array_equal(inverse, [1.0, 2.0, 3.0])
        np.testing.assert_allclose(root, 1 / np.sqrt(inverse), rtol=1e-6)
        np.testing.assert_allclose(root_inv, np.sqrt(inverse), rtol=1e-6)


# -- errors ------------------------------------------------------------------------


def run_error(**options):
    with pytest.raises(ValueError) as info:
        run(NUTS(two_sites, **options), 0, 1)
    return str(info.value)


def test_a_key_naming_no_latent_site():
    message = run_error(inverse_mass_matrix={("u", "w"): jnp.ones(5)})
    assert "inverse_mass_matrix" in message and "['w']" in message
    assert "not latent sites" in message and "['u', 'v']" in message


def test_a_block_of_the_wrong_size():
    message = run_error(inverse_mass_matrix={("u", "v"): jnp.ones(4)})
    assert "('u', 'v')" in message and "(4,)" in message
    assert "'u': 3" in message and "'v': 2" in message
    assert "(5,) or (5, 5)" in message
    message = run_error(
        inverse_mass_matrix={("v",): jnp.ones((3, 3))}, dense_mass=[("v",)]
    )
    assert "('v',)" in message and "(2,) or (2, 2)" in message


def test_a_site_in_two_blocks():
    message = run_error(
        inverse_mass_matrix={("u",): jnp.ones(3), ("u", "v"): jnp.ones(5)}
    )
    assert "'u'" in message and "two blocks" in message
    # a dense block's key must be its group, in the group's order
    message = run_error(
        inverse_mass_matrix={("v", "u"): jnp.ones(5)}, dense_mass=[("u", "v")]
    )
    assert "same order" in message
    message = run_error(dense_mass=[("u", "v"), ("v",)])
    assert "'v'" in message and "two blocks" in message


def test_an_array_of_the_wrong_size():
    message = run_error(inverse_mass_matrix=jnp.ones(4))
    assert "(5,) or (5, 5)" in message


def test_blocks_need_a_model():
    with pytest.raises(ValueError, match="needs a model"):
        mcmc = MCMC(
            NUTS(potential_fn=potential, inverse_mass_matrix={("x",): jnp.ones(2)}),
            num_warmup=0,
            num_samples=1,
            progress_bar=False,
        )
        mcmc.run(
            jax.random.PRNGKey(0), init_params={"x": jnp.zeros(2), "y": jnp.zeros(())}
        )


def test_a_fresh_kernel_continues_from_another_runs_post_warmup_state():
    def model():
        probnn.sample("x", dist.Normal(1.0, 2.0))

    first = MCMC(NUTS(model), num_warmup=200, num_samples=10, progress_bar=False)
    first.run(jax.random.PRNGKey(0))
    second = MCMC(NUTS(model), num_warmup=200, num_samples=2000, progress_bar=False)
    second.post_warmup_state = first.last_state
    second.run(jax.random.PRNGKey(1))
    x = np.asarray(second.get_samples()["x"])
    assert x.shape == (2000,)
    # the adapted step size is kept (no warmup in the second run) ...
    np.testing.assert_allclose(
        second.last_state.adapt_state.step_size,
        first.last_state.adapt_state.step_size,
    )
    # ... and the draws are N(1, 2)
    assert abs(x.mean() - 1.0) < 0.35 and abs(x.std() - 2.0) < 0.3
