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
