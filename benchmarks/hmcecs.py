"""HMCECS: probnn against NumPyro on one subsampled logistic regression.

Workload: N = 50 000 rows, D = 10 standard-normal features (numpy, fixed
seed), true weights Normal(0, 0.5^2); Normal(0, 1) prior on the weights; a
Bernoulli likelihood on logits in a plate with ``subsample_size`` 1000.
``HMCECS(NUTS(model), num_blocks=10, proxy=HMCECS.taylor_proxy(reference))``
with the reference at the MAP (Newton's method on the full data, written
here in JAX), one chain, 500 warmup iterations and 500 kept draws by default.

The posterior reference is full-data NUTS (probnn), run once.

Reported per implementation: cold seconds (first run, compilation included),
warm seconds (the same run again, median of ``--repeats``), min ESS over the
D weights (``probnn.diagnostics``), ESS/s (min ESS / warm seconds), the mean
acceptance of subsample proposals, and the largest distance of the posterior
means and standard deviations from full-data NUTS, in posterior standard
deviations.

    python benchmarks/hmcecs.py [--num-warmup 500] [--num-samples 500]
        [--repeats 3] [--seed 0] [--json benchmarks/results/hmcecs.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from _results import write_json

N, D, SUBSAMPLE, BLOCKS = 50_000, 10, 1000, 10


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    w = rng.normal(scale=0.5, size=D).astype(np.float32)
    y = (rng.uniform(size=N) < 1 / (1 + np.exp(-x @ w))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def map_estimate(x, y):
    def log_post(w):
        logits = x @ w
        lik = y * jax.nn.log_sigmoid(logits) + (1 - y) * jax.nn.log_sigmoid(-logits)
        return lik.sum() - 0.5 * w @ w

    w = jnp.zeros(D)
    for _ in range(20):
        g, h = jax.grad(log_post)(w), jax.hessian(log_post)(w)
        w = w - jnp.linalg.solve(h, g)
    return w


def make_model(lib, dist):
    def model(x, y, subsample_size):
        w = lib.sample("w", dist.Normal(jnp.zeros(D), 1.0).to_event(1))
        with lib.plate("N", x.shape[0], subsample_size=subsample_size):
            xb = lib.subsample(x, event_dim=1)
            yb = lib.subsample(y, event_dim=0)
            lib.sample("y", dist.Bernoulli(logits=xb @ w), obs=yb)

    return model


def run(name, args, x, y, reference):
    if name == "probnn":
        import probnn as lib
        import probnn.distributions as dist
        from probnn.infer import HMCECS, MCMC, NUTS

        key = jax.random.PRNGKey(args.seed)
        accept_field = "gibbs_accept_prob"
    else:
        import numpyro as lib
        import numpyro.distributions as dist
        from numpyro.infer import HMCECS, MCMC, NUTS

        key = jax.random.key(args.seed)
        accept_field = "accept_prob"
    model = make_model(lib, dist)
    kernel = HMCECS(
        NUTS(model), num_blocks=BLOCKS, proxy=HMCECS.taylor_proxy({"w": reference})
    )
    mcmc = MCMC(
        kernel,
        num_warmup=args.num_warmup,
        num_samples=args.num_samples,
        progress_bar=False,
    )
    times = []
    for _ in range(1 + args.repeats):
        start = time.perf_counter()
        mcmc.run(key, x, y, SUBSAMPLE, extra_fields=(accept_field,))
        w = mcmc.get_samples()["w"]
        w.block_until_ready()
        times.append(time.perf_counter() - start)
    accept = float(mcmc.get_extra_fields()[accept_field].mean())
    return times[0], statistics.median(times[1:]), np.asarray(w), accept


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import probnn
    import probnn.distributions as dist
    from probnn.diagnostics import effective_sample_size
    from probnn.infer import MCMC, NUTS

    x, y = data()
    reference = map_estimate(x, y)
    full = MCMC(
        NUTS(make_model(probnn, dist)),
        num_warmup=500,
        num_samples=1000,
        progress_bar=False,
    )
    full.run(jax.random.PRNGKey(123), x, y, None)
    exact = np.asarray(full.get_samples()["w"])
    mean, sd = exact.mean(0), exact.std(0)

    rows = {}
    for name in ("probnn", "numpyro"):
        cold, warm, w, accept = run(name, args, x, y, reference)
        ess = float(np.min(effective_sample_size(w[None])))
        rows[name] = {
            "cold_s": cold,
            "warm_s": warm,
            "min_ess": ess,
            "ess_per_s": ess / warm,
            "subsample_accept": accept,
            "mean_error_sd": float(np.max(np.abs(w.mean(0) - mean) / sd)),
            "sd_ratio_max_dev": float(np.max(np.abs(w.std(0) / sd - 1))),
        }
    print(
        f"{'impl':8} {'cold s':>7} {'warm s':>7} {'min ESS':>8} {'ESS/s':>7} "
        f"{'accept':>7} {'|mean err|/sd':>13} {'|sd ratio-1|':>12}"
    )
    for name, r in rows.items():
        print(
            f"{name:8} {r['cold_s']:7.2f} {r['warm_s']:7.2f} {r['min_ess']:8.0f} "
            f"{r['ess_per_s']:7.1f} {r['subsample_accept']:7.2f} "
            f"{r['mean_error_sd']:13.2f} {r['sd_ratio_max_dev']:12.2f}"
        )
    ratio = rows["probnn"]["ess_per_s"] / rows["numpyro"]["ess_per_s"]
    print(f"ESS/s probnn / NumPyro: {ratio:.2f}")
    if args.json:
        write_json(args.json, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
