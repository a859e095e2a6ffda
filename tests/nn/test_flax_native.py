"""Training probnn models with Flax's own NNX loop through ELBOModule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import probnn
import probnn.distributions as dist
from probnn.distributions import constraints
from probnn.distributions.transforms import biject_to
from probnn.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from probnn.nn.training import ELBOModule, ModelState

GRAPH_MODES = pytest.mark.parametrize("graph", [True, False], ids=["graph", "tree"])

# -- models ---------------------------------------------------------------------

PRIOR_SD = 10.0


def normal_model(y):
    mu = probnn.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with probnn.plate("N", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, 1.0), obs=y)


def normal_guide(y):
    loc = probnn.param("loc", 0.0)
    scale = probnn.param("scale", 1.0, constraint=constraints.positive)
    probnn.sample("mu", dist.Normal(loc, scale))


def posterior(y):
    """Mean and sd of mu given y (prior N(0, PRIOR_SD), unit noise)."""
    precision = 1.0 / PRIOR_SD**2 + y.shape[0]
    return float(jnp.sum(y)) / precision, precision**-0.5


def regression_model(x, y):
    """No latent sites: the loss is a deterministic function of the params.
    A counter and a running mean of the residual scale are mutable state."""
    w = probnn.param("w", {"slope": jnp.zeros(2), "extra": [jnp.zeros(())]})
    sigma = probnn.param("sigma", 1.0, constraint=constraints.positive)
    counter = probnn.mutable("counter", {"n": 0})
    counter["n"] = counter["n"] + 1
    running = probnn.mutable("running", {"sigma": jnp.zeros(())})
    running["sigma"] = 0.9 * running["sigma"] + 0.1 * sigma
    mean = x @ w["slope"] + w["extra"][0]
    with probnn.plate("N", x.shape[0]):
        probnn.sample("y", dist.Normal(mean, sigma), obs=y)


def empty_guide(x, y):
    pass


def regression_data(n=20):
    kx, ke = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (n, 2))
    y = x @ jnp.array([1.5, -0.5]) + 0.3 + 0.2 * jax.random.normal(ke, (n,))
    return x, y


# -- training loops ---------------------------------------------------------------


def train_nnx(module, tx, num_steps, *data, graph=True):
    """The plain NNX loop: nnx.jit, nnx.value_and_grad, nnx.Optimizer."""
    optimizer = nnx.Optimizer(module, tx, wrt=nnx.Param)
    traces = []

    @nnx.jit
    def step(module, optimizer, *data):
        traces.append(None)
        # tree mode differentiates every leaf, the RNG's integers included
        loss_fn = lambda m: m(*data)
        loss, grads = nnx.value_and_grad(loss_fn, allow_int=not graph)(module)
        optimizer.update(module, grads)
        return loss

    losses = [step(module, optimizer, *data) for _ in range(num_steps)]
    assert len(traces) == 1  # the module's static part keeps jit's cache valid
    return optimizer, np.array(losses)


def train_split_merge(module, tx, num_steps, *data):
    """Split once, pure states through jax.jit, merge inside traced code."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    opt_state = tx.init(params)
    traces = []

    @jax.jit
    def step(params, rest, opt_state, *data):
        traces.append(None)

        def loss_fn(params):
            m = nnx.merge(graphdef, params, rest)
            return m(*data), nnx.to_pure_dict(nnx.state(m, nnx.Not(nnx.Param)))

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    losses = []
    for _ in range(num_steps):
        params, rest, opt_state, loss = step(params, rest, opt_state, *data)
        losses.append(loss)
    assert len(traces) == 1
    nnx.update(module, params, rest)
    return np.array(losses)


def train_svi(model, guide, tx, num_steps, *data):
    svi = SVI(model, guide, tx, Trace_ELBO())
    state = svi.init(jax.random.key(0), *data)
    update = jax.jit(svi.update)
    losses = []
    for _ in range(num_steps):
        state, loss = update(state, *data)
        losses.append(loss)
    return svi.get_params(state), state.mutable_state, np.array(losses)


def assert_trees_close(a, b, **kwargs):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **kwargs), a, b)


def flat_paths(state) -> list[str]:
    return ["/".join(map(str, path)) for path, _ in nnx.to_flat_state(state)]


# -- tests ------------------------------------------------------------------------


def test_normal_normal_reaches_the_analytic_posterior():
    y = jnp.array([1.2, 2.3, 0.7, 1.9, 2.6, 1.4, 0.9, 2.0])
    mean, sd = posterior(y)
    module = ELBOModule(
        normal_model,
        normal_guide,
        y,
        loss=TraceMeanField_ELBO(num_particles=16),
        rngs=nnx.Rngs(0),
    )
    schedule = optax.exponential_decay(0.05, 1000, 0.1)
    train_nnx(module, optax.adam(schedule), 2000, y)

    params = module.params()
    assert set(params) == {"loc", "scale"}
    assert abs(float(params["loc"]) - mean) < 0.03 * mean
    assert abs(float(params["scale"]) - sd) < 0.05 * sd
    # the optimiser works on the unconstrained value; params() constrains it
    unconstrained = nnx.state(module, nnx.Param)["unconstrained"]["scale"][...]
    assert float(params["scale"]) > 0
    np.testing.assert_allclose(
        params["scale"], biject_to(constraints.positive)(unconstrained), rtol=1e-6
    )
    assert module.unconstrained_params()["scale"] == unconstrained
    assert module.get_params() == params


def test_initial_values_and_constraints_follow_svi_init():
    y = jnp.array([1.0, 2.0, 3.0])
    module = ELBOModule(
        normal_model,
        normal_guide,
        y,
        rngs=nnx.Rngs(0),
        init_params={"scale": 0.25},
    )
    np.testing.assert_allclose(module.params()["scale"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(module.params()["loc"], 0.0)
    inverse = biject_to(constraints.positive).inv(0.25)
    np.testing.assert_allclose(module.unconstrained["scale"][...], inverse, rtol=1e-6)
    assert module.get_mutable_state() is None
    with pytest.raises(ValueError, match="match no param site"):
        ELBOModule(
            normal_model, normal_guide, y, rngs=nnx.Rngs(0), init_params={"q": 1}
        )


def test_loss_uses_the_next_key_of_the_rngs():
    y = jnp.array([1.0, 2.0, 3.0])
    module = ELBOModule(normal_model, normal_guide, y, rngs=nnx.Rngs(0))
    twin = nnx.Rngs(0)
    twin.params()  # initialisation drew one key
    for _ in range(2):
        expected = Trace_ELBO().loss(
            twin.elbo(), module.params(), normal_model, normal_guide, y
        )
        np.testing.assert_allclose(module(y), expected, rtol=1e-6)
    # an "elbo" stream, when given, is the one used
    module = ELBOModule(normal_model, normal_guide, y, rngs=nnx.Rngs(params=0, elbo=5))
    expected = Trace_ELBO().loss(
        nnx.Rngs(elbo=5).elbo(), module.params(), normal_model, normal_guide, y
    )
    np.testing.assert_allclose(module(y), expected, rtol=1e-6)


@GRAPH_MODES
@pytest.mark.parametrize("style", ["nnx_jit", "split_merge"])
def test_nnx_training_matches_svi(graph, style):
    x, y = regression_data()
    tx = optax.adam(0.05)
    num_steps = 40
    ref_params, ref_state, ref_losses = train_svi(
        regression_model, empty_guide, tx, num_steps, x, y
    )
    with nnx.set_graph_mode(graph):
        module = ELBOModule(regression_model, empty_guide, x, y, rngs=nnx.Rngs(0))
        if style == "nnx_jit":
            _, losses = train_nnx(module, tx, num_steps, x, y, graph=graph)
        else:
            losses = train_split_merge(module, tx, num_steps, x, y)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert_trees_close(module.params(), ref_params, rtol=1e-5, atol=1e-6)
    assert_trees_close(module.get_mutable_state(), ref_state, rtol=1e-5)
    assert int(module.get_mutable_state()["counter"]["n"]) == num_steps + 1
    assert losses[-1] < losses[0]


@GRAPH_MODES
def test_mutable_state_is_updated_and_not_optimised(graph):
    x, y = regression_data()
    with nnx.set_graph_mode(graph):
        module = ELBOModule(regression_model, empty_guide, x, y, rngs=nnx.Rngs(0))
        # initialisation ran the model once
        assert int(module.mutable_state["counter"]["n"][...]) == 1
        assert isinstance(module.mutable_state["counter"]["n"], ModelState)
        assert not isinstance(module.mutable_state["counter"]["n"], nnx.Param)

        param_paths = flat_paths(nnx.state(module, nnx.Param))
        assert not any("mutable_state" in path for path in param_paths)
        assert sorted(param_paths) == [
            "unconstrained/sigma",
            "unconstrained/w/extra/0",
            "unconstrained/w/slope",
        ]
        assert sorted(flat_paths(nnx.state(module, ModelState))) == [
            "mutable_state/counter/n",
            "mutable_state/running/sigma",
        ]

        optimizer, _ = train_nnx(module, optax.adam(0.01), 5, x, y, graph=graph)
        assert int(module.mutable_state["counter"]["n"][...]) == 6
        running = module.mutable_state["running"]["sigma"][...]
        assert 0 < float(running) < 1
        opt_paths = flat_paths(nnx.state(optimizer.opt_state))
        assert opt_paths and not any("mutable_state" in p for p in opt_paths)


def test_plain_eager_calls_update_state_and_rng():
    x, y = regression_data()
    module = ELBOModule(regression_model, empty_guide, x, y, rngs=nnx.Rngs(0))
    count = int(module.rngs.default.count[...])
    loss = module(x, y)
    assert loss.shape == ()
    assert int(module.get_mutable_state()["counter"]["n"]) == 2
    assert int(module.rngs.default.count[...]) == count + 1
    # the gradient does not flow into the stored state
    grads = nnx.grad(lambda m: m(x, y))(module)
    assert "mutable_state" not in nnx.to_pure_dict(grads)
    assert int(module.get_mutable_state()["counter"]["n"]) == 3  # written back


class Net(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(2, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.l2 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.relu(self.bn(self.l1(x))))[..., 0]


@GRAPH_MODES
def test_flax_network_params_and_batch_stats(graph):
    with nnx.set_graph_mode(graph):
        net = Net(nnx.Rngs(1))

    def model(x, y):
        f = probnn.module("net", net)
        with probnn.plate("N", x.shape[0]):
            probnn.sample("y", dist.Normal(f(x), 0.5), obs=y)

    x, y = regression_data()
    tx = optax.adam(0.02)
    ref_params, ref_state, ref_losses = train_svi(model, empty_guide, tx, 15, x, y)
    with nnx.set_graph_mode(graph):
        module = ELBOModule(model, empty_guide, x, y, rngs=nnx.Rngs(0))
        # the network's weights are nested Params, its BatchNorm statistics
        # ModelState
        param_paths = flat_paths(nnx.state(module, nnx.Param))
        assert "unconstrained/net$params/l1/kernel" in param_paths
        assert sorted(flat_paths(nnx.state(module, ModelState))) == [
            "mutable_state/net$state/bn/mean",
            "mutable_state/net$state/bn/var",
        ]
        _, losses = train_nnx(module, tx, 15, x, y, graph=graph)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert_trees_close(module.params(), ref_params, rtol=1e-4, atol=1e-6)
    assert_trees_close(module.get_mutable_state(), ref_state, rtol=1e-4, atol=1e-6)


def test_reserved_site_names_are_rejected():
    def guide():
        probnn.param("_pytree__x", 0.0)

    with pytest.raises(ValueError, match="reserved"):
        ELBOModule(lambda: None, guide, rngs=nnx.Rngs(0))
