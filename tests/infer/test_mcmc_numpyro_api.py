"""NumPyro's lower-level MCMC interface in probnn: ``initialize_model``, the
functional ``hmc`` kernels, ``fori_collect``, and the ``MCMC`` behaviours
NumPyro scripts rely on (models without latent sites, dotted
``extra_fields``, ``MCMC.run`` inside ``jax.jit``).

Sampling tests compare against the closed-form posterior of a conjugate
normal model; a few compare with NumPyro itself when it is installed."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.infer import HMC, MCMC, NUTS, initialize_model
from probnn.infer.hmc import HMCState, hmc
from probnn.infer.initialization import init_to_value
from probnn.infer.util import ModelInfo, ParamInfo, potential_energy
from probnn.util import fori_collect

Y = jnp.array([0.3, 1.1, 0.8, 1.6, 0.9])
PRIOR_SCALE = 2.0


def conjugate_model(y):
    """mu ~ N(0, 2^2), y_i ~ N(mu, 1); a positive site and a deterministic."""
    mu = probnn.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
    probnn.sample("tau", dist.LogNormal(0.0, 0.5))
    probnn.deterministic("twice_mu", 2.0 * mu)
    with probnn.plate("data", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, 1.0), obs=y)


def posterior(y):
    """Mean and standard deviation of mu given y."""
    precision = 1.0 / PRIOR_SCALE**2 + y.shape[0]
    return float(jnp.sum(y)) / precision, 1.0 / math.sqrt(precision)


def check_mu(draws, y, what):
    mean, std = posterior(y)
    draws = np.asarray(draws)
    assert abs(draws.mean() - mean) < 0.2, what
    assert abs(draws.std() - std) < 0.12, what


# -- initialize_model ------------------------------------------------------------------


def test_initialize_model_returns_numpyro_named_tuples():
    info = initialize_model(jax.random.PRNGKey(0), conjugate_model, model_args=(Y,))
    assert isinstance(info, ModelInfo)
    assert isinstance(info.param_info, ParamInfo)
    assert info._fields == (
        "param_info",
        "potential_fn",
        "postprocess_fn",
        "model_trace",
    )
    assert info.param_info._fields == ("z", "potential_energy", "z_grad")
    z, energy, grad = info.param_info
    # only the latent sites, in unconstrained space
    assert set(z) == {"mu", "tau"}
    assert set(info.model_trace) >= {"mu", "tau", "twice_mu", "y"}
    # init_to_uniform: within (-2, 2) in unconstrained space
    assert all(-2 < float(v) < 2 for v in z.values())
    expected = potential_energy(conjugate_model, (Y,), {}, z)
    np.testing.assert_allclose(energy, expected, rtol=1e-6)
    np.testing.assert_allclose(info.potential_fn(z), expected, rtol=1e-6)
    expected_grad = jax.grad(info.potential_fn)(z)
    for name in z:
        np.testing.assert_allclose(grad[name], expected_grad[name], rtol=1e-5)


def test_initialize_model_potential_is_the_closed_form():
    info = initialize_model(jax.random.PRNGKey(1), conjugate_model, model_args=(Y,))
    mu, log_tau = 0.7, -0.4
    point = {"mu": jnp.array(mu), "tau": jnp.array(log_tau)}
    normal = lambda x, s: (
        -0.5 * (x / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
    )
    log_joint = normal(mu, PRIOR_SCALE) + sum(normal(float(y) - mu, 1.0) for y in Y)
    # LogNormal in log space: the Jacobian cancels the 1 / tau of the density
    log_joint += normal(log_tau, 0.5)
    np.testing.assert_allclose(info.potential_fn(point), -log_joint, rtol=1e-5)
    constrained = info.postprocess_fn(point)
    assert set(constrained) == {"mu", "tau", "twice_mu"}
    np.testing.assert_allclose(constrained["tau"], math.exp(log_tau), rtol=1e-6)
    np.testing.assert_allclose(constrained["twice_mu"], 2 * mu, rtol=1e-6)


def test_initialize_model_dynamic_args_and_key_batches():
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    info = initialize_model(keys, conjugate_model, model_args=(Y,), dynamic_args=True)
    z = info.param_info.z
    assert z["mu"].shape == (3,) and info.param_info.potential_energy.shape == (3,)
    # three different starting points
    assert len(set(np.asarray(z["mu"]).tolist())) == 3
    point = {"mu": jnp.array(0.5), "tau": jnp.array(0.0)}
    other = Y[:2] + 3.0
    np.testing.assert_allclose(
        info.potential_fn(other)(point),
        potential_energy(conjugate_model, (other,), {}, point),
        rtol=1e-6,
    )
    assert float(info.potential_fn(other)(point)) != float(info.potential_fn(Y)(point))
    assert set(info.postprocess_fn(other)(point)) == {"mu", "tau", "twice_mu"}


def test_initialize_model_honours_the_strategy_and_reports_failure():
    strategy = init_to_value(values={"mu": 1.5, "tau": 2.0})
    info = initialize_model(
        jax.random.PRNGKey(3), conjugate_model, init_strategy=strategy, model_args=(Y,)
    )
    np.testing.assert_allclose(info.param_info.z["mu"], 1.5)
    np.testing.assert_allclose(info.param_info.z["tau"], math.log(2.0), rtol=1e-6)

    def broken(y):
        mu = probnn.sample("mu", dist.Normal(0.0, 1.0))
        probnn.sample("y", dist.Normal(mu, 1.0), obs=jnp.nan * y)

    with pytest.raises(RuntimeError, match="initial point"):
        initialize_model(jax.random.PRNGKey(0), broken, model_args=(Y,))


def test_initialize_model_matches_numpyro():
    numpyro = pytest.importorskip("numpyro")
    ndist = pytest.importorskip("numpyro.distributions")
    from numpyro.infer.util import initialize_model as np_initialize_model

    def np_model(y):
        mu = numpyro.sample("mu", ndist.Normal(0.0, PRIOR_SCALE))
        numpyro.sample("tau", ndist.LogNormal(0.0, 0.5))
        numpyro.deterministic("twice_mu", 2.0 * mu)
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", ndist.Normal(mu, 1.0), obs=y)

    theirs = np_initialize_model(jax.random.PRNGKey(0), np_model, model_args=(Y,))
    ours = initialize_model(jax.random.PRNGKey(0), conjugate_model, model_args=(Y,))
    point = {"mu": jnp.array(-0.3), "tau": jnp.array(0.25)}
    np.testing.assert_allclose(
        ours.potential_fn(point), theirs.potential_fn(point), rtol=1e-6
    )
    mine, other = ours.postprocess_fn(point), theirs.postprocess_fn(point)
    assert set(mine) == set(other)
    for name in mine:
        np.testing.assert_allclose(mine[name], other[name], rtol=1e-6)


# -- the functional hmc ----------------------------------------------------------------


@pytest.mark.parametrize("algo", ["NUTS", "HMC"])
def test_functional_hmc_samples_the_posterior(algo):
    info = initialize_model(jax.random.PRNGKey(4), conjugate_model, model_args=(Y,))
    init_kernel, sample_kernel = hmc(info.potential_fn, algo=algo)
    state = init_kernel(
        info.param_info, num_warmup=150, trajectory_length=1.5, rng_key=None
    )
    assert isinstance(state, HMCState)
    # the state's point is shaped like the initial parameters
    assert set(state.z) == {"mu", "tau"} and set(state.z_grad) == {"mu", "tau"}
    draws, last = fori_collect(
        150,
        550,
        sample_kernel,
        state,
        transform=lambda s: info.postprocess_fn(s.z),
        progbar=False,
        return_last_val=True,
    )
    assert int(last.i) == 550
    assert draws["twice_mu"].shape == (400,)
    np.testing.assert_allclose(draws["twice_mu"], 2 * draws["mu"], rtol=1e-6)
    check_mu(draws["mu"], Y, algo)
    # tau's prior is untouched by the data: LogNormal(0, 0.5)
    assert abs(float(jnp.mean(jnp.log(draws["tau"])))) < 0.2


def test_functional_hmc_with_a_potential_generator():
    info = initialize_model(
        jax.random.PRNGKey(5), conjugate_model, model_args=(Y,), dynamic_args=True
    )
    init_kernel, sample_kernel = hmc(potential_fn_gen=info.potential_fn)
    step = jax.jit(sample_kernel)
    # a plain pytree of initial values: potential and gradient are computed;
    # new data need a new initial state (its potential and gradient are the
    # old data's), but the compiled sample_kernel is reused
    start = info.param_info.z
    for data in (Y, Y + 2.0):
        state = init_kernel(
            start, num_warmup=150, model_args=(data,), rng_key=jax.random.PRNGKey(1)
        )
        draws = []
        for _ in range(550):
            state = step(state, (data,))
            draws.append(state.z["mu"])
        check_mu(jnp.stack(draws[150:]), data, "generated potential")
        start = state.z


def test_functional_hmc_rejects_bad_arguments():
    potential = lambda z: jnp.sum(z**2)  # noqa: E731
    with pytest.raises(ValueError, match="algo"):
        hmc(potential, algo="MALA")
    with pytest.raises(ValueError, match="exactly one"):
        hmc()
    with pytest.raises(NotImplementedError, match="kinetic_fn"):
        hmc(potential, kinetic_fn=lambda m, r: 0.0)
    _, sample_kernel = hmc(potential)
    with pytest.raises(RuntimeError, match="init_kernel"):
        sample_kernel(None)


# -- fori_collect ----------------------------------------------------------------------


def counter(state):
    count, total = state
    return count + 1, total + count


@pytest.mark.parametrize(
    "lower, upper, thinning, size",
    [
        (0, 7, 1, None),
        (3, 10, 1, None),
        (2, 10, 3, None),
        (1, 9, 2, 6),
        (4, 4, 1, None),
    ],
)
def test_fori_collect_keeps_the_right_iterations(lower, upper, thinning, size):
    init = (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
    kept, last = fori_collect(
        lower,
        upper,
        counter,
        init,
        transform=lambda s: s[0] * 10,
        progbar=False,
        return_last_val=True,
        collection_size=size,
        thinning=thinning,
    )
    # after iteration i (counting from 1) the count is i; keep the last
    # iteration of each block of `thinning`, blocks ending at `upper`
    expected = [
        10 * i for i in range(lower + 1, upper + 1) if (upper - i) % thinning == 0
    ]
    expected = expected[len(expected) - (upper - lower) // thinning :]
    if size is not None:
        expected += [0] * (size - len(expected))
    assert np.asarray(kept).tolist() == expected
    assert int(last[0]) == upper and int(last[1]) == upper * (upper - 1) // 2
    # the progress-bar path agrees
    with_bar = fori_collect(
        lower,
        upper,
        counter,
        init,
        transform=lambda s: s[0] * 10,
        collection_size=size,
        thinning=thinning,
        progbar_desc=lambda i: f"step {i}",
        disable=True,
    )
    assert np.asarray(with_bar).tolist() == expected


def test_fori_collect_validates_its_bounds():
    with pytest.raises(ValueError, match="lower"):
        fori_collect(5, 3, counter, (0, 0), progbar=False)
    with pytest.raises(ValueError, match="collection_size"):
        fori_collect(0, 10, counter, (0, 0), progbar=False, collection_size=3)
    with pytest.raises(ValueError, match="thinning"):
        fori_collect(0, 10, counter, (0, 0), progbar=False, thinning=0)


def test_fori_collect_matches_numpyro():
    numpyro_util = pytest.importorskip("numpyro.util")

    def body(x):
        return {"a": x["a"] * 1.5 + 1.0, "b": x["b"] - x["a"].sum()}

    init = {"a": jnp.ones(2), "b": jnp.zeros(())}
    for lower, upper, thinning, size in [(0, 9, 2, None), (3, 12, 4, 5)]:
        options = dict(
            transform=lambda x: {"s": x["a"].sum() + x["b"]},
            progbar=False,
            return_last_val=True,
            collection_size=size,
            thinning=thinning,
        )
        ours, our_last = fori_collect(lower, upper, body, init, **options)
        theirs, their_last = numpyro_util.fori_collect(
            lower, upper, body, init, **options
        )
        np.testing.assert_allclose(ours["s"], theirs["s"], rtol=1e-6)
        np.testing.assert_allclose(our_last["a"], their_last["a"], rtol=1e-6)


# -- MCMC: models without latent sites -------------------------------------------------


def observed_only(x):
    probnn.deterministic("double", 2.0 * x)
    probnn.sample("obs", dist.Normal(x, 1.0), obs=jnp.ones(3))


@pytest.mark.parametrize("kernel", [NUTS, HMC])
def test_mcmc_without_latent_sites_returns_the_deterministic_sites(kernel):
    x = jnp.arange(3.0)
    mcmc = MCMC(
        kernel(observed_only),
        num_warmup=5,
        num_samples=4,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), x, extra_fields=("potential_energy",))
    samples = mcmc.get_samples()
    assert set(samples) == {"double"}
    assert samples["double"].shape == (8, 3)
    assert mcmc.get_samples(group_by_chain=True)["double"].shape == (2, 4, 3)
    np.testing.assert_allclose(samples["double"], jnp.broadcast_to(2 * x, (8, 3)))
    extra = mcmc.get_extra_fields()
    # -sum log N(1 | x, 1) for x = 0, 1, 2
    expected = 0.5 * float(jnp.sum((1.0 - x) ** 2)) + 1.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(extra["potential_energy"], expected, rtol=1e-5)
    assert not bool(jnp.any(extra["diverging"]))


def test_mcmc_without_latent_sites_matches_numpyro():
    numpyro = pytest.importorskip("numpyro")
    ndist = pytest.importorskip("numpyro.distributions")

    def np_observed_only(x):
        numpyro.deterministic("double", 2.0 * x)
        numpyro.sample("obs", ndist.Normal(x, 1.0), obs=jnp.ones(3))

    x = jnp.arange(3.0)
    theirs = numpyro.infer.MCMC(
        numpyro.infer.NUTS(np_observed_only),
        num_warmup=5,
        num_samples=4,
        progress_bar=False,
    )
    theirs.run(jax.random.PRNGKey(0), x, extra_fields=("potential_energy",))
    ours = MCMC(NUTS(observed_only), num_warmup=5, num_samples=4, progress_bar=False)
    ours.run(jax.random.PRNGKey(0), x, extra_fields=("potential_energy",))
    for name, value in theirs.get_samples().items():
        np.testing.assert_allclose(ours.get_samples()[name], value, rtol=1e-6)
    np.testing.assert_allclose(
        ours.get_extra_fields()["potential_energy"],
        theirs.get_extra_fields()["potential_energy"],
        rtol=1e-5,
    )


# -- MCMC: dotted extra fields ---------------------------------------------------------


def two_site_model(y):
    mu = probnn.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
    probnn.sample("scale", dist.HalfNormal(jnp.ones(2)))
    with probnn.plate("data", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_extra_fields_reach_inside_the_state():
    mcmc = MCMC(NUTS(two_site_model), num_warmup=60, num_samples=30, progress_bar=False)
    fields = ("z.mu", "z.scale", "z_grad.scale", "adapt_state.step_size", "z")
    mcmc.run(jax.random.PRNGKey(6), Y, extra_fields=fields)
    extra = mcmc.get_extra_fields()
    samples = mcmc.get_samples()
    # "z" itself is what get_samples holds, as in NumPyro
    assert set(extra) == {"diverging", *fields} - {"z"}
    assert extra["z.scale"].shape == (30, 2) and extra["z_grad.scale"].shape == (30, 2)
    np.testing.assert_allclose(extra["z.mu"], samples["mu"], rtol=1e-6)
    # the positive site in unconstrained space is its logarithm
    np.testing.assert_allclose(
        extra["z.scale"], jnp.log(samples["scale"]), rtol=1e-5, atol=1e-6
    )
    step = np.asarray(extra["adapt_state.step_size"])
    assert np.all(step == step[0]) and step[0] > 0
    by_chain = mcmc.get_extra_fields(group_by_chain=True)
    assert by_chain["z.scale"].shape == (1, 30, 2)


def test_tilde_extra_field_drops_a_site_and_unknown_fields_fail():
    mcmc = MCMC(NUTS(two_site_model), num_warmup=20, num_samples=10, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(7), Y, extra_fields=("~z.scale",))
    assert set(mcmc.get_samples()) == {"mu"}
    with pytest.raises(ValueError, match="not a state field"):
        mcmc.run(jax.random.PRNGKey(7), Y, extra_fields=("zz.mu",))


# -- MCMC inside jax.jit ---------------------------------------------------------------


@pytest.mark.parametrize("jit_model_args, num_chains", [(False, 1), (True, 2)])
def test_mcmc_run_inside_jit_gives_the_eager_run_outputs(jit_model_args, num_chains):
    # the values themselves may differ from an eager run's in the last bits
    # (XLA compiles the whole program differently), which a chain amplifies
    def make():
        return MCMC(
            NUTS(two_site_model),
            num_warmup=40,
            num_samples=20,
            num_chains=num_chains,
            chain_method="vectorized",
            progress_bar=False,
            jit_model_args=jit_model_args,
        )

    mcmc = make()

    @jax.jit
    def run(key, y):
        mcmc.run(key, y, extra_fields=("z.mu", "potential_energy"))
        return mcmc.get_samples(group_by_chain=True), mcmc.get_extra_fields()

    samples, extra = run(jax.random.PRNGKey(8), Y)
    eager = make()
    eager.run(jax.random.PRNGKey(8), Y, extra_fields=("z.mu", "potential_energy"))
    expected = eager.get_samples(group_by_chain=True)
    assert jax.tree.map(jnp.shape, samples) == jax.tree.map(jnp.shape, expected)
    assert set(extra) == set(eager.get_extra_fields())
    assert samples["scale"].shape == (num_chains, 20, 2)
    assert bool(jnp.all(samples["scale"] > 0))
    np.testing.assert_allclose(extra["z.mu"], samples["mu"].reshape(-1), rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(extra["potential_energy"])))


def test_mcmc_inside_jit_samples_the_posterior():
    mcmc = MCMC(
        NUTS(conjugate_model), num_warmup=150, num_samples=400, progress_bar=False
    )
    draws = jax.jit(lambda k: (mcmc.run(k, Y), mcmc.get_samples())[1])(
        jax.random.PRNGKey(9)
    )
    check_mu(draws["mu"], Y, "jit")


# -- get_potential_fn and the Predictive import path ------------------------------


def test_get_potential_fn_matches_potential_energy_and_transforms():
    from probnn.distributions.transforms import ExpTransform
    from probnn.infer.util import get_potential_fn

    def scaled(y):
        s = probnn.sample("s", dist.LogNormal(0.0, 1.0))
        probnn.deterministic("double", 2 * s)
        with probnn.plate("N", y.shape[0]):
            probnn.sample("y", dist.Normal(0.0, s), obs=y)

    z = {"s": jnp.array(0.3)}
    expected = potential_energy(scaled, (Y,), {}, z)
    potential_fn, postprocess_fn = get_potential_fn(
        scaled, {"s": ExpTransform()}, model_args=(Y,)
    )
    np.testing.assert_allclose(potential_fn(z), expected, rtol=1e-6)
    assert set(postprocess_fn(z)) == {"s"}
    np.testing.assert_allclose(postprocess_fn(z)["s"], math.exp(0.3), rtol=1e-6)
    # replayed: deterministic sites too; dynamic: functions of the data
    _, replayed = get_potential_fn(scaled, {}, replay_model=True, model_args=(Y,))
    np.testing.assert_allclose(replayed(z)["double"], 2 * math.exp(0.3), rtol=1e-6)
    potential_of, _ = get_potential_fn(scaled, {}, dynamic_args=True)
    other = Y[:2]
    np.testing.assert_allclose(
        potential_of(other)(z), potential_energy(scaled, (other,), {}, z), rtol=1e-6
    )


def test_predictive_at_numpyros_import_path():
    from probnn.infer import Predictive
    from probnn.infer.util import Predictive as FromUtil

    assert FromUtil is Predictive


def test_zero_size_sites_join_chains():
    def model():
        probnn.sample("empty", dist.Normal(jnp.zeros((0,)), 1.0).to_event(1))
        probnn.sample("x", dist.Normal(0.0, 1.0))

    mcmc = MCMC(
        NUTS(model), num_warmup=10, num_samples=7, num_chains=2, progress_bar=False
    )
    mcmc.run(jax.random.PRNGKey(0))
    samples = mcmc.get_samples()
    assert samples["empty"].shape == (14, 0) and samples["x"].shape == (14,)


def test_kernel_built_inside_jit_with_a_traced_target_and_hmc_needs_a_length():
    @jax.jit
    def draws(key, target):
        mcmc = MCMC(
            NUTS(conjugate_model, target_accept_prob=target),
            num_warmup=50,
            num_samples=20,
            progress_bar=False,
        )
        mcmc.run(key, Y)
        return mcmc.get_samples()["mu"]

    assert draws(jax.random.PRNGKey(1), 0.8).shape == (20,)
    with pytest.raises(ValueError, match="At least one of num_steps and trajectory"):
        HMC(conjugate_model, num_steps=None, trajectory_length=None)


def test_warmup_sets_post_warmup_state_and_one_chain_shows_no_chain_axis():
    def model():
        probnn.sample("x", dist.Normal(0.0, 1.0).expand([3]))

    mcmc = MCMC(NUTS(model), num_warmup=30, num_samples=5, progress_bar=False)
    assert mcmc.post_warmup_state is None
    mcmc.warmup(jax.random.PRNGKey(0))
    start = mcmc.post_warmup_state
    assert start is not None and start.z.shape == (3,)  # as in NumPyro
    mcmc.run(jax.random.PRNGKey(1))
    first = mcmc.get_samples()["x"]
    # run leaves post_warmup_state as it is: the next run starts there too
    assert mcmc.post_warmup_state is start
    mcmc.run(jax.random.PRNGKey(1))
    np.testing.assert_array_equal(mcmc.get_samples()["x"], first)
    assert mcmc.last_state.z.shape == (3,) and mcmc.last_state.i.shape == ()
    # several chains keep the chain axis
    chains = MCMC(
        NUTS(model),
        num_warmup=30,
        num_samples=5,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    chains.run(jax.random.PRNGKey(2))
    assert chains.last_state.z.shape == (2, 3)


def test_site_in_a_plate_with_an_undeclared_batch_dim_warns():
    # the observation has 5 rows that no plate declares; its plate covers
    # the 10 columns only
    def model():
        x = probnn.sample("x", dist.Normal(0.0, 1.0))
        with probnn.plate("columns", 10):
            probnn.sample("obs", dist.Normal(x, 1.0), obs=jnp.ones((5, 10)))

    mcmc = MCMC(NUTS(model), num_warmup=5, num_samples=5, progress_bar=False)
    with pytest.warns(UserWarning, match="Missing a plate statement") as record:
        mcmc.run(jax.random.PRNGKey(0))
    messages = [str(w.message) for w in record if "Missing a plate" in str(w.message)]
    assert len(messages) == 1
    assert "'obs'" in messages[0] and "dim -2" in messages[0]
    with pytest.warns(UserWarning, match="Missing a plate statement"):
        initialize_model(jax.random.PRNGKey(0), model)


def test_declared_plates_scan_steps_and_sites_outside_plates_do_not_warn():
    from probnn.control_flow import scan

    def model(y):
        # outside every plate a site may broadcast as it likes
        probnn.sample("free", dist.Normal(jnp.zeros(3), 1.0))
        with probnn.plate("rows", 4, dim=-2), probnn.plate("cols", 3):
            probnn.sample("grid", dist.Normal(0.0, 1.0))

        def step(carry, y_t):
            # the stacked steps are not a missing plate
            with probnn.plate("members", 3):
                z = probnn.sample("z", dist.Normal(carry, 1.0))
                probnn.sample("y", dist.Normal(z, 1.0), obs=y_t)
            return carry, None

        scan(step, 0.0, y)

    mcmc = MCMC(NUTS(model), num_warmup=5, num_samples=5, progress_bar=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Missing a plate")
        mcmc.run(jax.random.PRNGKey(0), jnp.ones((6, 3)))
    assert mcmc.get_samples()["z"].shape == (5, 6, 3)


@pytest.mark.parametrize("num_chains", [1, 2])
def test_warmup_then_run_from_the_last_key_draws_what_one_run_draws(num_chains):
    def model():
        probnn.sample("x", dist.Normal(0.0, 1.0))

    def sampler():
        return MCMC(
            NUTS(model),
            num_warmup=20,
            num_samples=10,
            num_chains=num_chains,
            chain_method="vectorized",
            progress_bar=False,
        )

    key = jax.random.PRNGKey(3)
    whole = sampler()
    whole.run(key)
    split = sampler()
    # building the programs ahead changes nothing the sampler shows
    split._compile(key)
    assert split.last_state is None and split.post_warmup_state is None
    split.warmup(key)
    split.run(split.last_state.rng_key)
    whole, split = whole.get_samples()["x"], split.get_samples()["x"]
    if num_chains == 1:
        np.testing.assert_array_equal(np.asarray(whole), np.asarray(split))
    else:
        # the same chains: the vectorized programs of one run and of two
        # calls round differently, and trajectories amplify it (1e-3 here)
        np.testing.assert_allclose(
            np.asarray(whole), np.asarray(split), rtol=1e-2, atol=1e-3
        )
