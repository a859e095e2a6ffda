"""SVI: convergence on conjugate models, the run loop, stable updates,
checkpoints, optax compositions and bad input."""

import math

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probnn
import probnn.distributions as dist
from probnn.distributions import constraints
from probnn.infer import (
    SVI,
    PackedDict,
    SVIState,
    Trace_ELBO,
    TraceMeanField_ELBO,
)
from probnn.infer.autoguide import AutoDelta

Y = jnp.array([0.9, 2.1, 1.4, 3.0, 1.9, 2.6])
PRIOR_SCALE = 2.0
NOISE = 1.0


def model(y):
    mu = probnn.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
    with probnn.plate("N", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, NOISE), obs=y)


def guide(y):
    loc = probnn.param("loc", 0.0)
    scale = probnn.param("scale", 1.0, constraint=constraints.positive)
    probnn.sample("mu", dist.Normal(loc, scale))


def posterior():
    precision = 1 / PRIOR_SCALE**2 + Y.shape[0] / NOISE**2
    return float(jnp.sum(Y)) / NOISE**2 / precision, 1 / math.sqrt(precision)


def decaying_adam(steps):
    return optax.adam(optax.exponential_decay(0.05, steps, 0.02))


@pytest.mark.parametrize("loss", [Trace_ELBO(), TraceMeanField_ELBO()])
def test_normal_normal_posterior(loss):
    svi = SVI(model, guide, decaying_adam(3000), loss)
    result = svi.run(jax.random.PRNGKey(0), 3000, Y, progress_bar=False)
    mean, sd = posterior()
    assert float(result.params["loc"]) == pytest.approx(mean, rel=0.03)
    assert float(result.params["scale"]) == pytest.approx(sd, rel=0.05)
    assert result.losses.shape == (3000,)


def test_constrained_param_is_optimised_in_unconstrained_space():
    svi = SVI(model, guide, optax.adam(0.01), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), Y)
    raw = state.optim_state[1][0]
    assert float(raw["scale"]) == pytest.approx(0.0, abs=1e-7)  # log(1)
    assert float(svi.get_params(state)["scale"]) == pytest.approx(1.0)
    # large steps move the unconstrained value; the scale stays positive
    big = SVI(model, guide, optax.sgd(0.2), Trace_ELBO())
    state = big.init(jax.random.PRNGKey(0), Y)
    for _ in range(3):
        state, _ = jax.jit(big.update)(state, Y)
    raw = float(state.optim_state[1][0]["scale"])
    assert raw != 0.0
    assert float(big.get_params(state)["scale"]) == pytest.approx(math.exp(raw))


def test_mle_of_a_model_param_with_an_empty_guide():
    def param_model(y):
        mu = probnn.param("mu", 0.0)
        with probnn.plate("N", y.shape[0]):
            probnn.sample("y", dist.Normal(mu, 1.0), obs=y)

    svi = SVI(param_model, lambda y: None, optax.adam(0.1), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 500, Y, progress_bar=False)
    assert float(result.params["mu"]) == pytest.approx(float(jnp.mean(Y)), abs=1e-3)


def test_run_is_the_same_with_and_without_progress_bar(capsys):
    svi = SVI(model, guide, optax.adam(0.02), Trace_ELBO())
    quiet = svi.run(jax.random.PRNGKey(7), 120, Y, progress_bar=False)
    assert capsys.readouterr().err == ""
    shown = svi.run(jax.random.PRNGKey(7), 120, Y, progress_bar=True)
    err = capsys.readouterr().err
    assert "init loss" in err and "120/120" in err
    np.testing.assert_array_equal(quiet.losses, shown.losses)
    jax.tree.map(np.testing.assert_array_equal, quiet.state, shown.state)


def test_run_equals_a_python_loop_of_updates():
    svi = SVI(model, guide, optax.adam(0.02), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(3), 45, Y, progress_bar=False)
    state = svi.init(jax.random.PRNGKey(3), Y)
    update = jax.jit(svi.update)
    losses = []
    for _ in range(45):
        state, loss = update(state, Y)
        losses.append(loss)
    np.testing.assert_allclose(result.losses, np.asarray(losses), rtol=1e-6)
    np.testing.assert_allclose(
        result.params["loc"], svi.get_params(state)["loc"], rtol=1e-6
    )


def many_scalar_sites(y):
    for i in range(6):
        probnn.sample(f"z{i}", dist.Normal(y[i], 1.0))


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_checkpoint_round_trip_continues_bit_for_bit(tmp_path, packed):
    if packed:  # six scalar sites: the state holds PackedDicts
        svi = SVI(
            many_scalar_sites,
            AutoDelta(many_scalar_sites),
            optax.adam(0.02),
            Trace_ELBO(),
        )
    else:
        svi = SVI(model, guide, optax.adam(0.02), Trace_ELBO())
    whole = svi.run(jax.random.PRNGKey(11), 60, Y, progress_bar=False)

    first = svi.run(jax.random.PRNGKey(11), 25, Y, progress_bar=False)
    path = tmp_path / "svi_state.msgpack"
    path.write_bytes(flax.serialization.to_bytes(first.state))
    template = svi.init(jax.random.PRNGKey(0), Y)
    restored = flax.serialization.from_bytes(template, path.read_bytes())
    assert isinstance(restored, SVIState)
    assert isinstance(restored.optim_state[1][0], PackedDict) == packed
    second = svi.run(
        jax.random.PRNGKey(0), 35, Y, progress_bar=False, init_state=restored
    )
    np.testing.assert_array_equal(
        np.concatenate([first.losses, second.losses]), whole.losses
    )
    jax.tree.map(np.testing.assert_array_equal, second.state, whole.state)


def test_stable_update_skips_non_finite_steps_and_run_reports_them():
    def spiky_model(y):
        mu = probnn.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
        # the log density is NaN whenever the guide draws mu above 2.2
        probnn.factor("spike", jnp.where(mu > 2.2, jnp.nan * mu, 0.0))
        with probnn.plate("N", y.shape[0]):
            probnn.sample("y", dist.Normal(mu, NOISE), obs=y)

    svi = SVI(spiky_model, guide, optax.adam(0.05), Trace_ELBO())
    with pytest.warns(
        RuntimeWarning,
        match=r"of 200 steps had a non-finite loss \(first at step \d+\); "
        "these steps were skipped",
    ):
        result = svi.run(
            jax.random.PRNGKey(0), 200, Y, progress_bar=False, stable_update=True
        )
    assert not np.all(np.isfinite(result.losses))
    assert all(np.isfinite(v) for v in jax.tree.leaves(result.params))

    with pytest.warns(RuntimeWarning, match="stable_update=True skips them"):
        plain = svi.run(jax.random.PRNGKey(0), 200, Y, progress_bar=False)
    assert not all(np.all(np.isfinite(v)) for v in jax.tree.leaves(plain.params))


def test_stable_update_keeps_the_state_on_a_bad_step():
    svi = SVI(model, guide, optax.adam(0.05), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), Y)
    bad_y = Y.at[0].set(jnp.nan)
    new_state, loss = svi.stable_update(state, bad_y)
    assert not np.isfinite(float(loss))
    jax.tree.map(
        np.testing.assert_array_equal, new_state.optim_state, state.optim_state
    )
    assert not np.array_equal(new_state.rng_key, state.rng_key)


def test_optax_chain_schedule_and_multi_transform():
    optimizer = optax.multi_transform(
        {
            "train": optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.05)),
            "freeze": optax.set_to_zero(),
        },
        {"loc": "train", "scale": "freeze"},
    )
    svi = SVI(model, guide, optimizer, Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 300, Y, progress_bar=False)
    assert float(result.params["scale"]) == pytest.approx(1.0)
    assert float(result.params["loc"]) == pytest.approx(posterior()[0], abs=0.3)


def test_evaluate_and_forward_mode_differentiation():
    svi = SVI(model, guide, optax.sgd(0.01), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), Y)
    loss = svi.evaluate(state, Y)
    _, step_loss = svi.update(state, Y)
    assert float(loss) == pytest.approx(float(step_loss))
    reverse, _ = svi.update(state, Y)
    forward, _ = svi.update(state, Y, forward_mode_differentiation=True)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5),
        reverse.optim_state[1][0],
        forward.optim_state[1][0],
    )


def test_mutable_state_is_threaded_through_steps():
    def counting_model(y):
        counter = probnn.mutable("counter", {"steps": jnp.zeros((), jnp.int32)})
        counter["steps"] = counter["steps"] + 1
        model(y)

    for particles in (1, 3):
        svi = SVI(counting_model, guide, optax.adam(0.01), Trace_ELBO(particles))
        result = svi.run(jax.random.PRNGKey(0), 17, Y, progress_bar=False)
        assert int(result.state.mutable_state["counter"]["steps"]) == 18


def test_init_params_override_and_unknown_keys_raise():
    svi = SVI(model, guide, optax.adam(0.01), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), Y, init_params={"loc": 1.5})
    assert float(svi.get_params(state)["loc"]) == 1.5
    with pytest.raises(
        ValueError, match=r"\['lock'\].*param sites are \['loc', 'scale'\]"
    ):
        svi.init(jax.random.PRNGKey(0), Y, init_params={"lock": 1.5})


def test_static_kwargs_reach_model_and_guide():
    def scaled_model(y, prior_scale):
        mu = probnn.sample("mu", dist.Normal(0.0, prior_scale))
        with probnn.plate("N", y.shape[0]):
            probnn.sample("y", dist.Normal(mu, NOISE), obs=y)

    def scaled_guide(y, prior_scale):
        guide(y)

    svi = SVI(
        scaled_model, scaled_guide, optax.adam(0.01), Trace_ELBO(), prior_scale=2.0
    )
    result = svi.run(jax.random.PRNGKey(0), 10, Y, progress_bar=False)
    assert result.losses.shape == (10,)


# -- NumPyro's optim_state layout: (step, (params, optimiser state)) ----------


def numpyro_program():
    """``(model, guide, SVI, Trace_ELBO)`` of NumPyro for the model and guide
    above, or None when NumPyro is not installed."""
    try:
        import numpyro
        import numpyro.distributions as ndist
        from numpyro.infer import SVI as NumPyroSVI
        from numpyro.infer import Trace_ELBO as NumPyroELBO
    except ImportError:
        return None

    def np_model(y):
        mu = numpyro.sample("mu", ndist.Normal(0.0, PRIOR_SCALE))
        with numpyro.plate("N", y.shape[0]):
            numpyro.sample("y", ndist.Normal(mu, NOISE), obs=y)

    def np_guide(y):
        loc = numpyro.param("loc", 0.0)
        scale = numpyro.param("scale", 1.0, constraint=ndist.constraints.positive)
        numpyro.sample("mu", ndist.Normal(loc, scale))

    return np_model, np_guide, NumPyroSVI, NumPyroELBO


def numpyro_init_layout(optimizer):
    """Shapes and dtypes of NumPyro's ``optim_state`` for the model and guide
    above, or None when NumPyro is not installed."""
    program = numpyro_program()
    if program is None:
        return None
    np_model, np_guide, NumPyroSVI, NumPyroELBO = program
    svi = NumPyroSVI(np_model, np_guide, optimizer, NumPyroELBO())
    return layout_of(svi.init(jax.random.PRNGKey(0), Y).optim_state)


def layout_of(tree):
    """Tree structure and each leaf's (shape, dtype)."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [(jnp.shape(x), jnp.result_type(x)) for x in leaves]


def test_optim_state_is_step_then_params_and_optax_state():
    optimizer = optax.adam(0.05)
    svi = SVI(model, guide, optimizer, Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), Y)
    step, (params, adam_state) = state.optim_state
    assert step.shape == () and step.dtype == jnp.int32 and int(step) == 0
    assert type(params) is dict and sorted(params) == ["loc", "scale"]
    # the documented layout: an int32 count, the params, optax's own state
    zeros = {"loc": jnp.zeros(()), "scale": jnp.zeros(())}
    documented = (jnp.zeros((), jnp.int32), (zeros, optimizer.init(zeros)))
    assert layout_of(state.optim_state) == layout_of(documented)
    # and NumPyro's own, for the same program with an optax optimiser
    expected = numpyro_init_layout(optax.adam(0.05))
    if expected is not None:
        assert layout_of(state.optim_state) == expected


def test_step_count_advances_under_update_stable_update_and_run():
    svi = SVI(model, guide, optax.adam(0.05), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), Y)
    update = jax.jit(svi.update)
    for expected in (1, 2, 3):
        state, _ = update(state, Y)
        assert int(state.optim_state[0]) == expected
    state, _ = jax.jit(svi.stable_update)(state, Y)
    assert int(state.optim_state[0]) == 4
    assert state.optim_state[0].dtype == jnp.int32
    # a skipped step keeps the count with the rest of the optimiser state
    skipped, _ = svi.stable_update(state, Y.at[0].set(jnp.nan))
    assert int(skipped.optim_state[0]) == 4

    result = svi.run(jax.random.PRNGKey(0), 7, Y, progress_bar=False)
    assert int(result.state.optim_state[0]) == 7
    more = svi.run(
        jax.random.PRNGKey(0), 5, Y, progress_bar=False, init_state=result.state
    )
    assert int(more.state.optim_state[0]) == 12
    assert more.state.optim_state[0].dtype == jnp.int32


def edited(state, name, value):
    """``state`` with the unconstrained param ``name`` replaced, the way a
    NumPyro program edits it."""
    step, (params, opt_state) = state.optim_state
    params = {**params, name: value}
    return SVIState((step, (params, opt_state)), state.mutable_state, state.rng_key)


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_params_edited_through_optim_state_are_trained_from(packed):
    if packed:  # six scalar sites: the state holds PackedDicts
        svi = SVI(
            many_scalar_sites,
            AutoDelta(many_scalar_sites),
            optax.adam(0.05),
            Trace_ELBO(),
        )
        name = "z2_auto_loc"
    else:
        svi = SVI(model, guide, optax.adam(0.05), Trace_ELBO())
        name = "loc"
    new = jnp.array(4.0)
    state = svi.init(jax.random.PRNGKey(0), Y)
    assert isinstance(state.optim_state[1][0], PackedDict) == packed
    state = edited(state, name, new)
    assert float(svi.get_params(state)[name]) == 4.0

    # training continues from the edited value, exactly as from a state
    # initialised with it
    reference = svi.init(jax.random.PRNGKey(0), Y, init_params={name: new})
    update = jax.jit(svi.update)
    untouched = svi.init(jax.random.PRNGKey(0), Y)
    for _ in range(5):
        state, loss = update(state, Y)
        reference, reference_loss = update(reference, Y)
        untouched, untouched_loss = update(untouched, Y)
        np.testing.assert_allclose(loss, reference_loss, rtol=1e-6)
        assert float(loss) != float(untouched_loss)
    value = float(svi.get_params(state)[name])
    assert value == pytest.approx(float(svi.get_params(reference)[name]), rel=1e-6)
    assert 3.0 < value < 4.0  # moved from the edited value, towards the data
    assert int(state.optim_state[0]) == 5


def test_numpyro_style_optimiser_gives_the_same_layout():
    import probnn.optim

    svi = SVI(model, guide, probnn.optim.Adam(0.05), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), Y)
    step, (params, adam_state) = state.optim_state
    assert int(step) == 0 and type(params) is dict
    # as with optax.adam, and as the optimiser's own NumPyro-style state
    optax_state = SVI(model, guide, optax.adam(0.05), Trace_ELBO()).init(
        jax.random.PRNGKey(0), Y
    )
    assert layout_of(state.optim_state) == layout_of(optax_state.optim_state)
    own = probnn.optim.Adam(0.05).init(params)
    assert layout_of(state.optim_state) == layout_of(own)
    state, _ = jax.jit(svi.update)(state, Y)
    assert int(state.optim_state[0]) == 1
    # NumPyro's numpyro.optim.Adam keeps the same int32 step first (its
    # second part is a jax.example_libraries OptimizerState)
    try:
        import numpyro.optim
    except ImportError:
        return
    numpyro_step = numpyro.optim.Adam(0.05).init(params)[0]
    assert layout_of(step) == layout_of(numpyro_step)


def test_keys_follow_numpyro_so_a_ported_run_draws_the_same_numbers():
    # one ELBO particle splits its key into (model key, guide key), as
    # NumPyro does: the guide's draw is the one seed(guide, guide key) makes
    key = jax.random.PRNGKey(11)
    params = {"loc": 0.3, "scale": 0.8}
    _, guide_key = jax.random.split(key)
    draw = probnn.handlers.seed(
        probnn.handlers.substitute(guide, data=params), guide_key
    )
    tr = probnn.handlers.trace(draw).get_trace(Y)
    mu = tr["mu"]["value"]
    expected = -(
        dist.Normal(0.0, PRIOR_SCALE).log_prob(mu)
        + jnp.sum(dist.Normal(mu, NOISE).log_prob(Y))
        - dist.Normal(0.3, 0.8).log_prob(mu)
    )
    loss = Trace_ELBO().loss(key, params, model, guide, Y)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    # where NumPyro is installed: a whole SVI run gives its numbers
    program = numpyro_program()
    if program is None:
        return
    np_model, np_guide, NumPyroSVI, NumPyroELBO = program
    ours = SVI(model, guide, optax.adam(0.05), Trace_ELBO()).run(
        key, 50, Y, progress_bar=False
    )
    theirs = NumPyroSVI(np_model, np_guide, optax.adam(0.05), NumPyroELBO()).run(
        key, 50, Y, progress_bar=False
    )
    np.testing.assert_allclose(ours.losses, theirs.losses, rtol=1e-5)


# -- bad input ----------------------------------------------------------------


def test_guide_missing_a_latent_site_is_named():
    def two_latents(y):
        probnn.sample("tau", dist.Gamma(2.0, 2.0))
        model(y)

    svi = SVI(two_latents, guide, optax.adam(0.01), Trace_ELBO())
    with pytest.raises(ValueError, match="'tau' is missing from the guide"):
        svi.init(jax.random.PRNGKey(0), Y)


def test_guide_with_a_different_support_is_named():
    def beta_model(y):
        probnn.sample("p", dist.Beta(2.0, 2.0))

    def normal_guide(y):
        probnn.sample("p", dist.Normal(probnn.param("loc", 0.5), 0.1))

    svi = SVI(beta_model, normal_guide, optax.adam(0.01), Trace_ELBO())
    with pytest.raises(ValueError, match="site 'p'.*Normal.*support real.*Beta"):
        svi.init(jax.random.PRNGKey(0), Y)

    # a guide on the same support is fine, whatever its family
    def logit_normal_guide(y):
        base = dist.Normal(probnn.param("loc", 0.0), 0.1)
        probnn.sample(
            "p", dist.TransformedDistribution(base, dist.transforms.SigmoidTransform())
        )

    SVI(beta_model, logit_normal_guide, optax.adam(0.01), Trace_ELBO()).init(
        jax.random.PRNGKey(0), Y
    )

    # a guide inside a model support that is the whole real line is fine too
    # (the model's support may be written as real although it is narrower,
    # e.g. a TransformedDistribution ending in an affine map of a sigmoid)
    def normal_model(y):
        probnn.sample("p", dist.Normal(0.0, 1.0))

    def uniform_guide(y):
        probnn.sample("p", dist.Uniform(0.0, probnn.param("high", 3.0)))

    state = SVI(normal_model, uniform_guide, optax.adam(0.01), Trace_ELBO()).init(
        jax.random.PRNGKey(0), Y
    )
    assert "high" in state.optim_state[1][0]


def test_guide_site_absent_from_the_model_is_named():
    def extra_guide(y):
        guide(y)
        probnn.sample("extra", dist.Normal(0.0, 1.0))

    svi = SVI(model, extra_guide, optax.adam(0.01), Trace_ELBO())
    with pytest.raises(ValueError, match="guide site 'extra' does not appear"):
        svi.init(jax.random.PRNGKey(0), Y)


def test_nothing_to_optimise_warns_and_runs():
    def observed_only(y):
        with probnn.plate("N", y.shape[0]):
            probnn.sample("y", dist.Normal(0.0, 1.0), obs=y)

    # NumPyro runs such an SVI: the loss is constant, -log p(y)
    svi = SVI(observed_only, lambda y: None, optax.adam(0.01), Trace_ELBO())
    with pytest.warns(UserWarning, match="nothing to optimise.*no latent sample"):
        result = svi.run(jax.random.PRNGKey(0), 5, Y, progress_bar=False)
    assert result.params == {}
    expected = -float(jnp.sum(dist.Normal(0.0, 1.0).log_prob(Y)))
    np.testing.assert_allclose(result.losses, expected, rtol=1e-6)

    def latent_model(y):
        probnn.sample("mu", dist.Normal(0.0, 1.0))

    def fixed_guide(y):
        probnn.sample("mu", dist.Normal(0.0, 1.0))

    # a fixed guide: its ELBO can still be evaluated (as in NumPyro)
    svi = SVI(latent_model, fixed_guide, optax.adam(0.01), Trace_ELBO())
    with pytest.warns(UserWarning, match=r"nothing to optimise.*\['mu'\] stay"):
        state = svi.init(jax.random.PRNGKey(0), Y)
    assert np.isfinite(float(svi.evaluate(state, Y)))


def test_wrong_optimizer_or_loss_type_and_use_before_init():
    with pytest.raises(TypeError, match="optax GradientTransformation"):
        SVI(model, guide, "adam", Trace_ELBO())
    with pytest.raises(TypeError, match="loss must be an ELBO"):
        SVI(model, guide, optax.adam(0.1), lambda *a: 0.0)
    svi = SVI(model, guide, optax.adam(0.1), Trace_ELBO())
    with pytest.raises(RuntimeError, match="call svi.init"):
        svi.get_params(None)
    with pytest.raises(ValueError, match="num_steps"):
        svi.run(jax.random.PRNGKey(0), 0, Y)
