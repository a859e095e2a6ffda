"""Handler behaviours NumPyro programs rely on: a site hidden by ``block``
still draws from a ``seed`` outside it, ``lift`` gives a param read twice
one draw, and ``plate_stack`` with no sizes is a no-op."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn
import probnn.distributions as dist
from probnn.handlers import block, lift, seed, substitute, trace


def test_hidden_site_draws_from_the_seed_outside_block():
    def model():
        with block(hide=["x"]):
            x = probnn.sample("x", dist.Normal(0.0, 1.0))
        y = probnn.sample("y", dist.Normal(0.0, 1.0))
        return x, y

    tr = trace(seed(model, rng_seed=0)).get_trace()
    assert set(tr) == {"y"}  # x stays hidden from the trace outside
    x, y = seed(model, rng_seed=0)()
    again = seed(model, rng_seed=0)()
    assert np.isfinite(float(x)) and float(x) != float(y)
    np.testing.assert_array_equal(np.asarray([x, y]), np.asarray(again))
    other = seed(model, rng_seed=1)()
    assert float(other[0]) != float(x)


def test_hidden_subsampled_plate_and_param_init_get_keys():
    def model():
        with block():
            w = probnn.param("w", lambda key: jax.random.normal(key, (3,)))
            with probnn.plate("rows", 100, subsample_size=5) as idx:
                pass
        return w, idx

    w, idx = seed(model, rng_seed=3)()
    assert w.shape == (3,) and idx.shape == (5,)
    assert len(set(np.asarray(idx).tolist())) == 5


def test_hidden_site_without_any_seed_names_the_site():
    def model():
        with block(hide=["x"]):
            return probnn.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'x'"):
        trace(model).get_trace()


def test_value_substituted_inside_block_needs_no_key():
    def model():
        with block(hide=["x"]), substitute(data={"x": 2.5}):
            return probnn.sample("x", dist.Normal(0.0, 1.0))

    assert float(model()) == 2.5  # no seed anywhere, none needed


def test_lift_gives_a_param_read_twice_one_draw():
    def model():
        a = probnn.param("a", 1.0)
        b = probnn.param("a", 1.0)
        return a, b

    lifted = lift(model, prior={"a": dist.Normal(0.0, 1.0)})
    tr = trace(seed(lifted, rng_seed=0)).get_trace()
    assert tr["a"]["type"] == "sample" and not tr["a"]["is_observed"]
    a, b = seed(lifted, rng_seed=0)()
    assert float(a) == float(b) and float(a) != 1.0
    # a second run draws afresh (the memo lives for one run)
    a2, b2 = seed(lifted, rng_seed=1)()
    assert float(a2) == float(b2) != float(a)


@pytest.mark.parametrize("sizes", [(), []])
def test_plate_stack_without_sizes_enters_no_plate(sizes):
    def model():
        with probnn.plate_stack("p", sizes):
            return probnn.sample("x", dist.Normal(jnp.zeros(2), 1.0).to_event(1))

    tr = trace(seed(model, rng_seed=0)).get_trace()
    assert [name for name, site in tr.items() if site["type"] == "plate"] == []
    assert tr["x"]["value"].shape == (2,)


def test_get_mask_reports_the_enclosing_masks():
    from probnn.handlers import mask

    seen = {}

    def model():
        seen["none"] = probnn.get_mask()
        with mask(mask=jnp.array([True, False, True])):
            seen["one"] = probnn.get_mask()
            with mask(mask=jnp.array([True, True, False])):
                seen["two"] = probnn.get_mask()
        probnn.sample("x", dist.Normal(0.0, 1.0))

    tr = trace(seed(model, rng_seed=0)).get_trace()
    assert set(tr) == {"x"}  # the query is no site
    assert seen["none"] is None
    np.testing.assert_array_equal(seen["one"], [True, False, True])
    np.testing.assert_array_equal(seen["two"], [True, False, False])
    assert probnn.get_mask() is None  # no handler at all


def test_get_mask_inside_a_scan_body_skips_masked_work():
    from probnn.control_flow import scan
    from probnn.handlers import mask

    def model(y):
        def body(carry, y_t):
            if probnn.get_mask() is not False:
                probnn.sample("y", dist.Normal(carry, 1.0), obs=y_t)
            return carry, None

        with mask(mask=False):
            scan(body, 0.0, y)

    tr = trace(seed(model, rng_seed=0)).get_trace(jnp.ones(3))
    assert "y" not in tr


def test_uncondition_draws_observed_sites_and_keeps_the_observation():
    from probnn.handlers import uncondition

    infer = {"note": 1}

    def model():
        return probnn.sample("y", dist.Normal(0.0, 1.0), obs=5.0, infer=infer)

    draws = [float(seed(uncondition(model), rng_seed=k)()) for k in range(3)]
    assert len(set(draws)) == 3 and 5.0 not in draws
    site = trace(seed(uncondition(model), rng_seed=0)).get_trace()["y"]
    assert not site["is_observed"]
    assert site["infer"]["was_observed"] and float(site["infer"]["obs"]) == 5.0
    assert infer == {"note": 1}  # the model's dict is untouched


def test_uncondition_outside_seed_still_draws():
    from probnn.handlers import uncondition

    def model(obs=None):
        return probnn.sample("x", dist.Normal(0.0, 1.0), obs=obs)

    tr = trace(uncondition(seed(model, rng_seed=0))).get_trace(obs=1.5)
    assert float(tr["x"]["value"]) != 1.5 and not tr["x"]["is_observed"]
    assert float(tr["x"]["infer"]["obs"]) == 1.5


def test_replayed_plate_takes_the_recorded_mini_batch():
    from probnn.handlers import replay

    data = jnp.arange(50.0)
    with trace() as recorded, seed(rng_seed=0):
        with probnn.plate("rows", 50, subsample_size=6) as idx:
            pass
    # replayed into a plate declared without subsampling: the same 6 rows,
    # and the plate's scale follows them
    with seed(rng_seed=1), replay(trace=recorded), trace() as again:
        with probnn.plate("rows", 50) as replayed:
            rows = probnn.subsample(data, event_dim=0)
            probnn.sample("y", dist.Normal(0.0, 1.0), obs=rows)
    np.testing.assert_array_equal(replayed, idx)
    np.testing.assert_array_equal(rows, data[idx])
    np.testing.assert_allclose(again["y"]["scale"], 50 / 6)


def test_a_handler_given_a_non_callable_names_the_keyword():
    from probnn.handlers import mask

    for error in (TypeError, ValueError):  # NumPyro raises ValueError here
        with pytest.raises(error, match=r"mask\(mask=False\)"):
            with mask(False):
                pass


def test_svi_optim_reads_params_from_the_state():
    import optax

    from probnn.infer import SVI, Trace_ELBO

    def model():
        probnn.sample("x", dist.Normal(probnn.param("m", 0.0), 1.0), obs=1.0)

    svi = SVI(model, lambda: None, optax.sgd(0.5), Trace_ELBO())
    state, _ = svi.update(svi.init(jax.random.PRNGKey(0)))
    # d/dm log N(1 | m, 1) = 1 - m = 1 at m = 0: one step of 0.5
    np.testing.assert_allclose(svi.optim.get_params(state.optim_state)["m"], 0.5)


def test_duplicate_site_error_has_numpyros_type_and_words():
    def model():
        alpha = probnn.sample("alpha", dist.Normal(0.0, 1.0))
        probnn.deterministic("alpha", 2 * alpha)

    for error in (ValueError, AssertionError):
        with pytest.raises(error, match="unique names but got `alpha` duplicated"):
            trace(seed(model, rng_seed=0)).get_trace()


def test_svi_constrain_fn_maps_unconstrained_params():
    import optax

    from probnn.infer import SVI, Trace_ELBO

    def model():
        probnn.param("s", 2.0, constraint=dist.constraints.positive)

    svi = SVI(model, lambda: None, optax.sgd(0.1), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0))
    free = svi.optim.get_params(state.optim_state)
    np.testing.assert_allclose(free["s"], np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(svi.constrain_fn(free)["s"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(svi.get_params(state)["s"], 2.0, rtol=1e-6)
