"""The sharding API on one device: ``handlers.shard_subsample`` (subsample
indices drawn block by block, so that data sharded along a plate's dim is
read where it lives), ``infer.shard_state`` and ``nn.param_shardings``. Their
multi-device behaviour is tested in ``test_sharding.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.handlers import replay, seed, shard_subsample, trace
from probnn.infer import SVI, Trace_ELBO, shard_state
from probnn.infer.autoguide import AutoNormal
from probnn.nn import param_shardings

N, B, BLOCKS = 24, 8, 4


def rows_model(x):
    with probnn.plate("data", N, subsample_size=B) as idx:
        return idx, probnn.subsample(x, event_dim=1)


def test_each_block_contributes_its_share_of_distinct_rows():
    sharded = shard_subsample(rows_model, shards={"data": BLOCKS})
    x = jnp.arange(N * 3.0).reshape(N, 3)
    for key in range(20):
        idx, rows = seed(sharded, rng_seed=key)(x)
        idx = np.asarray(idx)
        per_block = N // BLOCKS
        # the mini-batch is laid out block after block, each part from its
        # own block, without repeats
        blocks = idx.reshape(BLOCKS, B // BLOCKS) // per_block
        np.testing.assert_array_equal(
            blocks, np.repeat(np.arange(BLOCKS)[:, None], B // BLOCKS, 1)
        )
        assert len(set(idx.tolist())) == B
        # the rows gathered within blocks are the rows at those indices
        np.testing.assert_array_equal(rows, np.asarray(x)[idx])


def test_every_row_is_drawn_with_probability_subsample_over_size():
    sharded = shard_subsample(rows_model, shards={"data": BLOCKS})
    draws = 4000
    keys = jax.random.split(jax.random.PRNGKey(0), draws)
    indices = jax.vmap(lambda k: seed(sharded, rng_seed=k)(jnp.zeros((N, 1)))[0])(keys)
    counts = np.bincount(np.asarray(indices).ravel(), minlength=N)
    p = B / N
    # binomial(draws, p) per row: within 5 standard deviations
    assert np.all(np.abs(counts - draws * p) < 5 * np.sqrt(draws * p * (1 - p)))


def test_plate_at_an_inner_dim_gathers_the_same_rows_as_take():
    def model(x):
        with probnn.plate("groups", 2, dim=-1):
            with probnn.plate("data", N, subsample_size=B, dim=-2) as idx:
                return idx, probnn.subsample(x, event_dim=0)

    x = jax.random.normal(jax.random.PRNGKey(1), (5, N, 2))
    idx, rows = seed(shard_subsample(model, shards={"data": 2}), rng_seed=3)(x)
    assert rows.shape == (5, B, 2)
    np.testing.assert_array_equal(rows, jnp.take(x, idx, axis=1))


def test_replayed_indices_keep_how_they_were_drawn():
    x = jnp.arange(float(N))

    def guide(x):
        with probnn.plate("data", N, subsample_size=B):
            pass

    def model(x):
        with probnn.plate("data", N, subsample_size=B):
            return probnn.subsample(x, event_dim=0)

    guide_trace = trace(
        seed(shard_subsample(guide, shards={"data": BLOCKS}), rng_seed=5)
    ).get_trace(x)
    idx = guide_trace["data"]["value"]
    assert guide_trace["data"]["infer"]["subsample_blocks"] == BLOCKS
    # the model (not wrapped itself) gathers by blocks the guide's rows
    rows = replay(seed(model, rng_seed=6), trace=guide_trace)(x)
    np.testing.assert_array_equal(rows, x[idx])
    # a wrapped model replaying a plain guide's global indices gathers
    # them globally (correct rows, whatever the indices)
    plain_trace = trace(seed(guide, rng_seed=5)).get_trace(x)
    wrapped = shard_subsample(model, shards={"data": BLOCKS})
    rows = replay(seed(wrapped, rng_seed=6), trace=plain_trace)(x)
    np.testing.assert_array_equal(rows, x[plain_trace["data"]["value"]])


def test_wrapped_autoguide_fits_like_the_full_batch_posterior():
    """SVI with a shard_subsample-wrapped model and AutoNormal (local latents
    in the subsampled plate): the global mean's posterior matches the
    conjugate closed form."""
    n, batch = 64, 16
    y = jax.random.normal(jax.random.PRNGKey(7), (n,)) + 1.5

    def model(y):
        mu = probnn.sample("mu", dist.Normal(0.0, 10.0))
        with probnn.plate("data", n, subsample_size=batch):
            probnn.sample("y", dist.Normal(mu, 1.0), obs=probnn.subsample(y, 0))

    wrapped = shard_subsample(model, shards={"data": 4})
    guide = AutoNormal(wrapped)
    svi = SVI(
        wrapped,
        shard_subsample(guide, shards={"data": 4}),
        # a decaying rate settles the mini-batch noise of the final values
        optax.adam(optax.exponential_decay(0.05, 4000, 0.02)),
        Trace_ELBO(),
    )
    result = svi.run(jax.random.PRNGKey(8), 4000, y, progress_bar=False)
    precision = 1 / 100 + n
    mean = float(jnp.sum(y)) / precision
    assert abs(float(result.params["mu_auto_loc"]) - mean) < 0.05
    assert abs(float(guide.median(result.params)["mu"]) - mean) < 0.05


@pytest.mark.parametrize(
    "shards, message",
    [
        (None, "non-empty dict"),
        ({}, "non-empty dict"),
        ({"data": 0}, "positive int"),
        ({"data": 2.0}, "positive int"),
        ({"data": True}, "positive int"),
    ],
)
def test_bad_shards_are_errors(shards, message):
    with pytest.raises(ValueError, match=message):
        shard_subsample(rows_model, shards=shards)


def test_sizes_must_be_multiples_of_the_blocks():
    sharded = shard_subsample(rows_model, shards={"data": 3})  # B = 8
    with pytest.raises(ValueError, match="plate 'data'.*multiples of its 3 blocks"):
        seed(sharded, rng_seed=0)(jnp.zeros((N, 1)))


# -- shard_state / param_shardings ---------------------------------------------


def _fitted_state():
    def model(y):
        loc = probnn.param("loc", jnp.zeros(3))
        scale = probnn.param("scale", 1.0, constraint=dist.constraints.positive)
        with probnn.plate("data", y.shape[0]):
            probnn.sample("y", dist.Normal(loc, scale).to_event(1), obs=y)

    svi = SVI(model, lambda y: None, optax.adam(0.1), Trace_ELBO())
    y = jnp.ones((5, 3))
    return svi, svi.init(jax.random.PRNGKey(0), y), y


def test_shard_state_places_params_and_their_optimiser_moments():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    svi, state, y = _fitted_state()
    mesh = Mesh(np.array(jax.devices()[:1]), ("model",))
    by_model = NamedSharding(mesh, PartitionSpec("model"))
    placed = shard_state(state, {"loc": by_model})
    step, (params, (adam, _)) = placed.optim_state
    assert params["loc"].sharding == adam.mu["loc"].sharding == by_model
    assert adam.nu["loc"].sharding == by_model
    for leaf in (params["scale"], adam.count, step, placed.rng_key):
        assert leaf.sharding.spec == PartitionSpec()
    # the values are untouched, and a step runs on the placed state
    jax.tree.map(np.testing.assert_array_equal, placed, state)
    stepped, loss = jax.jit(svi.update)(placed, y)
    assert np.isfinite(float(loss))


def test_shard_state_errors_name_what_is_wrong():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    _, state, _ = _fitted_state()
    mesh = Mesh(np.array(jax.devices()[:1]), ("model",))
    replicated = NamedSharding(mesh, PartitionSpec())
    with pytest.raises(
        ValueError, match=r"\['locc'\], which match no param site.*'loc'"
    ):
        shard_state(state, {"locc": replicated})
    with pytest.raises(TypeError, match="must be a dict"):
        shard_state(state, [replicated])
    with pytest.raises(ValueError, match="pass mesh="):
        shard_state(state, {})
    with pytest.raises(ValueError, match="param site 'loc'.*not laid out"):
        shard_state(state, {"loc": {"a": replicated}})


def test_param_shardings_read_nnx_metadata_and_refuse_other_networks():
    import flax.linen as linen
    import flax.nnx as nnx
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()[:1]), ("model",))
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
    with jax.set_mesh(mesh):
        layer = nnx.Linear(3, 4, kernel_init=init, rngs=nnx.Rngs(0))
    shardings = param_shardings("layer", layer, mesh)["layer$params"]
    assert shardings["kernel"] == NamedSharding(mesh, PartitionSpec(None, "model"))
    assert shardings["bias"].spec == PartitionSpec()  # no metadata: replicated
    from_arrays = param_shardings("layer", layer)["layer$params"]
    assert from_arrays["kernel"].spec == PartitionSpec(None, "model")
    with pytest.raises(TypeError, match="'dense' must be a flax.nnx.Module, got Dense"):
        param_shardings("dense", linen.Dense(3))


def test_drawing_blocked_indices_without_a_seed_names_the_plate():
    sharded = shard_subsample(rows_model, shards={"data": BLOCKS})
    with pytest.raises(ValueError, match="plate site 'data' needs a random key"):
        sharded(jnp.zeros((N, 1)))
