"""log_prob throughput of Normal, Gamma, Dirichlet and MultivariateNormal.

Each family's ``log_prob`` on a batch of 10^6 values is timed against the
same density written directly with ``jax.numpy`` / ``jax.scipy.stats`` in the
same run. Both are jitted; compile time and steady-state time are reported
separately, the latter as the median of repeated calls. The target is a
steady-state ratio <= 1.1.

    python benchmarks/distributions.py [--size 1000000] [--repeats 30]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
from jax.scipy import stats
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import gammaln

import probnn.distributions as dist


def workloads(size, key):
    keys = jax.random.split(key, 6)
    loc = jax.random.normal(keys[0], (size,))
    scale = jnp.exp(0.3 * jax.random.normal(keys[1], (size,)))
    x = jax.random.normal(keys[2], (size,))
    concentration = jnp.exp(0.5 * jax.random.normal(keys[3], (size,))) + 0.5
    rate = jnp.exp(0.5 * jax.random.normal(keys[4], (size,)))
    positive = jnp.exp(x)
    alpha = jnp.array([0.5, 1.5, 2.0, 4.0])
    simplex = jax.random.dirichlet(keys[5], alpha, (size,))
    mean = jnp.array([0.5, -1.0, 2.0])
    tril = jnp.array([[1.0, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.2, 0.5, 1.2]])
    points = jax.random.normal(keys[0], (size, 3))

    def normal_hand(loc, scale, x):
        return stats.norm.logpdf(x, loc, scale)

    def gamma_hand(concentration, rate, x):
        return stats.gamma.logpdf(x, concentration, scale=1.0 / rate)

    def dirichlet_hand(alpha, x):
        normaliser = jnp.sum(gammaln(alpha)) - gammaln(jnp.sum(alpha))
        return jnp.sum((alpha - 1.0) * jnp.log(x), axis=-1) - normaliser

    def mvn_hand(mean, tril, x):
        z = solve_triangular(tril, (x - mean).T, lower=True).T
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(tril)))
        d = x.shape[-1]
        return (
            -0.5 * jnp.sum(z * z, -1) - half_log_det - 0.5 * d * math.log(2 * math.pi)
        )

    return {
        "Normal": (
            lambda loc, scale, x: dist.Normal(loc, scale).log_prob(x),
            normal_hand,
            (loc, scale, x),
        ),
        "Gamma": (
            lambda c, r, x: dist.Gamma(c, r).log_prob(x),
            gamma_hand,
            (concentration, rate, positive),
        ),
        "Dirichlet": (
            lambda a, x: dist.Dirichlet(a).log_prob(x),
            dirichlet_hand,
            (alpha, simplex),
        ),
        "MultivariateNormal": (
            lambda m, t, x: dist.MultivariateNormal(m, scale_tril=t).log_prob(x),
            mvn_hand,
            (mean, tril, points),
        ),
    }


def compile_timed(fn, args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    return compiled, seconds


def steady_pair(first, second, args, repeats):
    """Median seconds per call of two compiled functions, calls interleaved so
    that neither benefits from running later (warm caches, clock boost)."""
    times = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, batch {args.size}")
    print(
        f"{'family':20}{'compile ms':>11}{'ref ms':>9}{'steady ms':>11}"
        f"{'ref ms':>9}{'ratio':>7}  max |diff|"
    )
    for name, (ours, reference, inputs) in workloads(
        args.size, jax.random.PRNGKey(0)
    ).items():
        ours_compiled, c_ours = compile_timed(ours, inputs)
        ref_compiled, c_ref = compile_timed(reference, inputs)
        s_ours, s_ref = steady_pair(ours_compiled, ref_compiled, inputs, args.repeats)
        diff = float(jnp.max(jnp.abs(ours_compiled(*inputs) - ref_compiled(*inputs))))
        print(
            f"{name:20}{c_ours * 1e3:11.1f}{c_ref * 1e3:9.1f}{s_ours * 1e3:11.2f}"
            f"{s_ref * 1e3:9.2f}{s_ours / s_ref:7.2f}  {diff:.2e}"
        )


if __name__ == "__main__":
    main()
