"""SVI speed: a VAE-sized model, and trace + compile time of a many-site model.

Workload ``vae``: 64-dim binary data, a 256-unit hidden layer in encoder and
decoder, 16 latent dims, batch 128, 2000 steps of Adam on Trace_ELBO with one
particle. probnn's ``SVI.run`` (compiled once, then timed) against the same
maths written by hand in JAX + optax (same stax networks, same initial
parameters, one ``lax.scan`` over the steps), and NumPyro's ``SVI.update``
scanned the same way when NumPyro is installed. Steady-state seconds per 2000
steps; target ratio probnn / hand-written <= 1.05.

Workload ``sites``: 50 scalar latent sites, each with its own 20-point plate
of observations, under AutoNormal. Time from ``svi.init`` through the first
jitted ``svi.update`` (tracing and compilation), each in a fresh process, and
the steady time of one jitted update. Targets: first update <= 0.2x NumPyro's,
steady update <= NumPyro's. A hand-written JAX version (flat parameter
vectors, one noise draw per step) is the floor; a second hand-written version
keeps the params as NumPyro stores them, two scalar leaves per site, with
the same vectorised maths: that layout alone, with per-leaf Adam state, costs
XLA about four times the flat version's compile time. probnn keeps AutoNormal's
per-site param names but stores the scalar leaves packed and runs the traced
step's repeated per-site operations batched (see ``SVI``). For scale,
``probnn-diag`` is probnn with AutoDiagonalNormal, whose params are flat
vectors (not the workload's target).

    python benchmarks/svi.py [--workload vae|sites|all] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.example_libraries import stax

VAE_DATA, VAE_HIDDEN, VAE_LATENT, VAE_BATCH, VAE_STEPS = 64, 256, 16, 128, 2000
SITES, SITE_POINTS = 50, 20


# -- workload: VAE --------------------------------------------------------------


def encoder_net():
    return stax.serial(
        stax.Dense(VAE_HIDDEN),
        stax.Relu,
        stax.FanOut(2),
        stax.parallel(
            stax.Dense(VAE_LATENT), stax.serial(stax.Dense(VAE_LATENT), stax.Exp)
        ),
    )


def decoder_net():
    return stax.serial(stax.Dense(VAE_HIDDEN), stax.Relu, stax.Dense(VAE_DATA))


def vae_data():
    key = jax.random.PRNGKey(42)
    prototypes = jax.random.bernoulli(key, 0.3, (8, VAE_DATA))
    which = jax.random.randint(jax.random.PRNGKey(1), (VAE_BATCH,), 0, 8)
    flips = jax.random.bernoulli(jax.random.PRNGKey(2), 0.05, (VAE_BATCH, VAE_DATA))
    return jnp.logical_xor(prototypes[which], flips).astype(jnp.float32)


def probnn_vae():
    import probnn
    import probnn.distributions as dist
    from probnn.infer import SVI, Trace_ELBO

    def model(x):
        decode = probnn.module("decoder", decoder_net(), (-1, VAE_LATENT))
        with probnn.plate("batch", x.shape[0]):
            z = probnn.sample(
                "z", dist.Normal(0.0, 1.0).expand([VAE_LATENT]).to_event(1)
            )
            probnn.sample("x", dist.Bernoulli(logits=decode(z)).to_event(1), obs=x)

    def guide(x):
        encode = probnn.module("encoder", encoder_net(), (-1, VAE_DATA))
        loc, scale = encode(x)
        with probnn.plate("batch", x.shape[0]):
            probnn.sample("z", dist.Normal(loc, scale).to_event(1))

    return SVI(model, guide, optax.adam(1e-3), Trace_ELBO())


def hand_vae_run(params, x, key):
    """The same ELBO and Adam steps written directly."""
    _, encode = encoder_net()
    _, decode = decoder_net()
    optimizer = optax.adam(1e-3)
    log_2pi = jnp.log(2 * jnp.pi)

    def loss(params, key):
        loc, scale = encode(params["encoder$params"], x)
        eps = jax.random.normal(key, loc.shape)
        z = loc + scale * eps
        logits = decode(params["decoder$params"], z)
        log_lik = jnp.sum(x * logits - jax.nn.softplus(logits))
        log_prior = jnp.sum(-0.5 * z * z - 0.5 * log_2pi)
        log_q = jnp.sum(-0.5 * eps * eps - jnp.log(scale) - 0.5 * log_2pi)
        return -(log_lik + log_prior - log_q)

    def step(carry, _):
        params, opt_state, key = carry
        key, step_key = jax.random.split(key)
        value, grads = jax.value_and_grad(loss)(params, step_key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), value

    carry = (params, optimizer.init(params), key)
    return jax.lax.scan(step, carry, None, length=VAE_STEPS)


def numpyro_vae():
    try:
        import numpyro
        import numpyro.distributions as ndist
        from numpyro.infer import SVI as NSVI
        from numpyro.infer import Trace_ELBO as NTrace_ELBO
    except ImportError:
        return None

    def model(x):
        decode = numpyro.module("decoder", decoder_net(), (-1, VAE_LATENT))
        with numpyro.plate("batch", x.shape[0]):
            z = numpyro.sample(
                "z", ndist.Normal(0.0, 1.0).expand([VAE_LATENT]).to_event(1)
            )
            numpyro.sample("x", ndist.Bernoulli(logits=decode(z)).to_event(1), obs=x)

    def guide(x):
        encode = numpyro.module("encoder", encoder_net(), (-1, VAE_DATA))
        loc, scale = encode(x)
        with numpyro.plate("batch", x.shape[0]):
            numpyro.sample("z", ndist.Normal(loc, scale).to_event(1))

    return NSVI(model, guide, optax.adam(1e-3), NTrace_ELBO())


def scanned_updates(svi, state, x):
    def step(state, _):
        return svi.update(state, x)

    return jax.lax.scan(step, state, None, length=VAE_STEPS)


def timed(fn, repeats):
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_vae(repeats):
    x = vae_data()
    key = jax.random.PRNGKey(0)
    svi = probnn_vae()
    state = svi.init(key, x)
    params = svi.get_params(state)
    probnn_scan = jax.jit(lambda s: scanned_updates(svi, s, x)[1])
    hand_run = jax.jit(hand_vae_run)
    results = {
        "probnn SVI.run": timed(
            lambda: svi.run(key, VAE_STEPS, x, progress_bar=False).losses, repeats
        ),
        "probnn scanned update": timed(lambda: probnn_scan(state), repeats),
        "hand-written": timed(lambda: hand_run(params, x, state.rng_key)[1], repeats),
    }
    nsvi = numpyro_vae()
    if nsvi is not None:
        nstate = nsvi.init(key, x)
        nrun = jax.jit(lambda s: scanned_updates(nsvi, s, x)[1])
        results["numpyro scanned update"] = timed(lambda: nrun(nstate), repeats)
    reference = results["hand-written"]
    print(f"\nVAE: {VAE_STEPS} steps, batch {VAE_BATCH}, steady seconds")
    for name, seconds in results.items():
        print(f"  {name:24}{seconds:9.3f} s   ratio {seconds / reference:5.2f}")


# -- workload: many sites ---------------------------------------------------------


def sites_data():
    key = jax.random.PRNGKey(3)
    centers = jax.random.normal(key, (SITES, 1))
    return centers + jax.random.normal(jax.random.PRNGKey(4), (SITES, SITE_POINTS))


def sites_first_update(impl):
    """Seconds from svi.init through the first jitted update, and the steady
    seconds of one update (run in a fresh process)."""
    data = sites_data()
    if impl in ("probnn", "probnn-diag"):
        import probnn as ppl
        import probnn.distributions as pdist
        from probnn.infer import SVI, Trace_ELBO
        from probnn.infer.autoguide import AutoDiagonalNormal, AutoNormal

        if impl == "probnn-diag":  # flat loc and scale vectors
            AutoNormal = AutoDiagonalNormal  # noqa: N806
    elif impl == "numpyro":
        import numpyro as ppl
        import numpyro.distributions as pdist
        from numpyro.infer import SVI, Trace_ELBO
        from numpyro.infer.autoguide import AutoNormal
    else:
        return hand_sites_first_update(data, per_site=impl == "hand-per-site")

    def model(data):
        for i in range(SITES):
            z = ppl.sample(f"z{i}", pdist.Normal(0.0, 1.0))
            with ppl.plate(f"points{i}", SITE_POINTS):
                ppl.sample(f"y{i}", pdist.Normal(z, 1.0), obs=data[i])

    start = time.perf_counter()
    svi = SVI(model, AutoNormal(model), optax.adam(0.01), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), data)
    update = jax.jit(svi.update)
    state, loss = update(state, data)
    jax.block_until_ready(loss)
    first = time.perf_counter() - start
    return first, steady_update(update, state, data)


def steady_update(update, state, data, repeats=200):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, loss = update(state, data)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def hand_sites_first_update(data, per_site=False):
    optimizer = optax.adam(0.01)
    log_2pi = jnp.log(2 * jnp.pi)

    def vectors(params):
        if not per_site:
            return params["loc"], params["scale"]
        return (
            jnp.stack([params[f"z{i}_auto_loc"] for i in range(SITES)]),
            jnp.stack([params[f"z{i}_auto_scale"] for i in range(SITES)]),
        )

    def loss(params, key, data):
        eps = jax.random.normal(key, (SITES,))
        loc, raw_scale = vectors(params)
        scale = jax.nn.softplus(raw_scale)
        z = loc + scale * eps
        log_prior = jnp.sum(-0.5 * z * z - 0.5 * log_2pi)
        log_lik = jnp.sum(-0.5 * (data - z[:, None]) ** 2 - 0.5 * log_2pi)
        log_q = jnp.sum(-0.5 * eps * eps - jnp.log(scale) - 0.5 * log_2pi)
        return -(log_prior + log_lik - log_q)

    def update(state, data):
        params, opt_state, key = state
        key, step_key = jax.random.split(key)
        value, grads = jax.value_and_grad(loss)(params, step_key, data)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), value

    start = time.perf_counter()
    if per_site:
        params = {f"z{i}_auto_loc": jnp.zeros(()) for i in range(SITES)}
        params |= {f"z{i}_auto_scale": jnp.full((), -2.25) for i in range(SITES)}
    else:
        params = {"loc": jnp.zeros(SITES), "scale": jnp.full(SITES, -2.25)}
    state = (params, optimizer.init(params), jax.random.PRNGKey(0))
    update = jax.jit(update)
    state, value = update(state, data)
    jax.block_until_ready(value)
    first = time.perf_counter() - start
    return first, steady_update(update, state, data)


def run_sites(repeats):
    results = {}
    impls = ("probnn", "numpyro", "hand-written", "hand-per-site", "probnn-diag")
    for impl in impls:
        runs = []
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, __file__, "--child", impl],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                if impl == "numpyro" and "No module named 'numpyro'" in out.stderr:
                    break
                raise RuntimeError(out.stderr)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if runs:
            results[impl] = (
                statistics.median(r[0] for r in runs),
                statistics.median(r[1] for r in runs),
            )
    print(f"\n{SITES} latent sites, each with a {SITE_POINTS}-point plate, AutoNormal")
    print(f"  {'':14}{'init + first update':>22}{'steady update':>16}")
    for impl, (first, steady) in results.items():
        print(f"  {impl:14}{first:20.2f} s{steady * 1e6:13.0f} us")
    if "numpyro" in results:
        first_ratio = results["probnn"][0] / results["numpyro"][0]
        steady_ratio = results["probnn"][1] / results["numpyro"][1]
        print(
            f"  probnn / numpyro: first update {first_ratio:.3f}x (target <= 0.2), "
            f"steady {steady_ratio:.2f}x (target <= 1)"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("vae", "sites", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(sites_first_update(args.child)))
        return
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{np.__name__} {np.__version__}"
    )
    if args.workload in ("vae", "all"):
        run_vae(args.repeats)
    if args.workload in ("sites", "all"):
        run_sites(max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
