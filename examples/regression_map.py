"""Fit a neural regression model by maximum a posteriori with optax.

The model: a stax network registered with ``probnn.module`` predicts the mean
of noisy observations; the noise scale is a latent with a log-normal-style
prior; every data point sits in a ``plate``. ``probnn.infer.util.log_density``
turns the model into a differentiable log joint, and a jitted optax loop
maximises it.

    python examples/regression_map.py --steps 2000
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax
from jax.example_libraries import stax

import probnn
import probnn.distributions as dist
from probnn.handlers import seed, trace
from probnn.infer.util import log_density


def make_data(key, n=256):
    """Noisy observations of sin(3x) on [-1, 1]."""
    key_x, key_noise = jax.random.split(key)
    x = jax.random.uniform(key_x, (n, 1), minval=-1.0, maxval=1.0)
    y = jnp.sin(3.0 * x[:, 0]) + 0.1 * jax.random.normal(key_noise, (n,))
    return x, y


NET = stax.serial(stax.Dense(32), stax.Tanh, stax.Dense(32), stax.Tanh, stax.Dense(1))


def model(x, y=None):
    net = probnn.module("net", NET, input_shape=(-1, 1))
    log_noise = probnn.sample("log_noise", dist.Normal(-1.0, 1.0))
    mean = net(x)[:, 0]
    with probnn.plate("data", x.shape[0]):
        probnn.sample("y", dist.Normal(mean, jnp.exp(log_noise)), obs=y)
    return mean


def fit(steps: int = 2000, learning_rate: float = 1e-2, seed_value: int = 0):
    key_data, key_init = jax.random.split(jax.random.PRNGKey(seed_value))
    x, y = make_data(key_data)

    # Initial values of every site: run the model once under seed and trace.
    initial = trace(seed(model, key_init)).get_trace(x, y)
    params = {
        name: site["value"]
        for name, site in initial.items()
        if site["type"] == "param"
        or (site["type"] == "sample" and not site["is_observed"])
    }

    def loss(params):
        return -log_density(model, (x, y), {}, params)[0] / x.shape[0]

    optimizer = optax.adam(learning_rate)

    @jax.jit
    def run(params):
        def step(state, _):
            params, opt_state = state
            value, grads = jax.value_and_grad(loss)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, _), losses = jax.lax.scan(
            step, (params, optimizer.init(params)), None, length=steps
        )
        return params, losses

    start = time.perf_counter()
    params, losses = jax.block_until_ready(run(params))
    elapsed = time.perf_counter() - start

    mean = probnn.handlers.substitute(model, data=params)(x, y)
    rmse = float(jnp.sqrt(jnp.mean((mean - jnp.sin(3.0 * x[:, 0])) ** 2)))
    noise = float(jnp.exp(params["log_noise"]))
    return {
        "first_loss": float(losses[0]),
        "final_loss": float(losses[-1]),
        "noise_scale": noise,
        "rmse_vs_truth": rmse,
        "seconds": elapsed,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    args = parser.parse_args()
    result = fit(args.steps, args.learning_rate)
    print(
        f"negative log joint per point: {result['first_loss']:.3f} -> "
        f"{result['final_loss']:.3f}"
    )
    print(f"fitted noise scale {result['noise_scale']:.3f} (true 0.1)")
    print(f"RMSE of the fitted mean against sin(3x): {result['rmse_vs_truth']:.3f}")
    print(f"{args.steps} steps (compile included) in {result['seconds']:.2f} s")


if __name__ == "__main__":
    main()
