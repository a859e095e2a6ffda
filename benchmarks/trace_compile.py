"""Trace and compile time of a model with 200 sample sites.

The model is a chain ``z_i ~ Normal(0.5 z_{i-1}, 1)`` of 200 scalar latent sites,
written with one ``probnn.sample`` per site. We time, for its log density and
for the gradient of it:

- trace: Python tracing to a jaxpr (``jax.make_jaxpr``), where the handler
  machinery runs;
- compile: ``jax.jit(...).lower(...).compile()``, tracing included;
- steady: one call of the compiled function.

The reference is the same log density written by hand in ``jax.numpy`` (one
term per site, same Python loop), measured in the same run; NumPyro's
``log_density`` is added when NumPyro is installed.

    python benchmarks/trace_compile.py [--sites 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

import probnn
import probnn.distributions as dist
from probnn.infer.util import log_density


def probnn_model(n):
    previous = 0.0
    for i in range(n):
        previous = probnn.sample(f"z{i}", dist.Normal(0.5 * previous, 1.0))


def probnn_log_joint(n):
    return lambda params: log_density(probnn_model, (n,), {}, params)[0]


def hand_log_joint(n):
    def log_joint(params):
        total = jnp.zeros(())
        previous = 0.0
        for i in range(n):
            value = params[f"z{i}"]
            total = total + norm.logpdf(value, 0.5 * previous, 1.0)
            previous = value
        return total

    return log_joint


def numpyro_log_joint(n):
    try:
        import numpyro
        import numpyro.distributions as ndist
        from numpyro.infer.util import log_density as numpyro_log_density
    except ImportError:
        return None

    def model():
        previous = 0.0
        for i in range(n):
            previous = numpyro.sample(f"z{i}", ndist.Normal(0.5 * previous, 1.0))

    return lambda params: numpyro_log_density(model, (), {}, params)[0]


def _median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure_transform(make, transform, params, repeats):
    # A fresh closure per repeat defeats JAX's tracing and compile caches.
    trace = _median_seconds(lambda: jax.make_jaxpr(transform(make()))(params), repeats)
    compile_ = _median_seconds(
        lambda: jax.jit(transform(make())).lower(params).compile(), repeats
    )
    compiled = jax.jit(transform(make())).lower(params).compile()
    jax.block_until_ready(compiled(params))
    steady = _median_seconds(
        lambda: jax.block_until_ready(compiled(params)), repeats * 20
    )
    return trace, compile_, steady


def measure(make, params, repeats):
    """Median trace, compile and steady-state seconds for value and gradient."""
    return {
        "value": _measure_transform(make, lambda f: f, params, repeats),
        "grad": _measure_transform(make, jax.grad, params, repeats),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = args.sites
    params = {f"z{i}": jnp.asarray(0.1 * i) for i in range(n)}

    # The three implementations agree before we time them.
    reference = float(hand_log_joint(n)(params))
    assert abs(float(probnn_log_joint(n)(params)) - reference) < 1e-3 * abs(reference)

    contenders = {
        "hand-written jax": lambda: hand_log_joint(n),
        "probnn": lambda: probnn_log_joint(n),
    }
    if numpyro_log_joint(n) is not None:
        contenders["numpyro"] = lambda: numpyro_log_joint(n)

    table = {
        name: measure(make, params, args.repeats) for name, make in contenders.items()
    }
    base = table["hand-written jax"]
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {n} sample sites")
    print(
        f"{'':18}{'':6}{'trace ms':>10}{'ratio':>7}{'compile ms':>12}"
        f"{'ratio':>7}{'steady us':>11}{'ratio':>7}"
    )
    for name, result in table.items():
        for label in ("value", "grad"):
            trace, compile_, steady = result[label]
            b_trace, b_compile, b_steady = base[label]
            print(
                f"{name:18}{label:6}{trace * 1e3:10.1f}{trace / b_trace:7.2f}"
                f"{compile_ * 1e3:12.1f}{compile_ / b_compile:7.2f}"
                f"{steady * 1e6:11.1f}{steady / b_steady:7.2f}"
            )


if __name__ == "__main__":
    main()
