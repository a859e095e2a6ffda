"""A VAE with Flax NNX and Flax Linen networks through ``SVI.run``, against a
hand-written NNX + optax loop computing the same ELBO in the same run.

64-dim binary data, a 256-unit hidden layer in encoder and decoder, 16 latent
dims, batch 128, 2000 Adam steps, one particle. The hand-written loop splits
the NNX modules once and runs ``jax.lax.scan`` over pure state (the fast NNX
pattern). Each implementation runs in a fresh process (so none inherits
another's compiled operations); medians over ``--processes`` processes.

Reported per implementation:

- init s: parameter initialisation. NNX modules initialise eagerly when they
  are constructed (hand-written and NNX rows, plus ``svi.init`` for the NNX
  row); a Linen module initialises inside ``svi.init`` (one compiled call).
- compile s: the training loop's first ``run`` call minus a steady call
  (tracing, lowering, XLA compilation), after initialisation.
- steady s: seconds per 2000 steps.

Targets: steady ratio <= 1.05 and compile ratio <= 1.2 against the
hand-written loop; the total (init + compile) is reported too.

    python benchmarks/flax_vae.py [--repeats 5] [--steps 2000] [--processes 3]

On a machine whose speed drifts, ``--interleaved ROUNDS`` times the steady
state of all three in one process, in turns, and reports the median ratio
per round (compile times are not measured then: the processes would share
compiled operations).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import flax.linen as linen
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import optax

import probnn
import probnn.distributions as dist
from probnn.infer import SVI, Trace_ELBO

DATA, HIDDEN, LATENT, BATCH = 64, 256, 16, 128


def data():
    prototypes = jax.random.bernoulli(jax.random.PRNGKey(42), 0.3, (8, DATA))
    which = jax.random.randint(jax.random.PRNGKey(1), (BATCH,), 0, 8)
    flips = jax.random.bernoulli(jax.random.PRNGKey(2), 0.05, (BATCH, DATA))
    return jnp.logical_xor(prototypes[which], flips).astype(jnp.float32)


class NNXEncoder(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(DATA, HIDDEN, rngs=rngs)
        self.loc = nnx.Linear(HIDDEN, LATENT, rngs=rngs)
        self.log_scale = nnx.Linear(HIDDEN, LATENT, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.hidden(x))
        return self.loc(h), jnp.exp(self.log_scale(h))


class NNXDecoder(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(LATENT, HIDDEN, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, DATA, rngs=rngs)

    def __call__(self, z):
        return self.out(nnx.relu(self.hidden(z)))


class LinenEncoder(linen.Module):
    @linen.compact
    def __call__(self, x):
        h = linen.relu(linen.Dense(HIDDEN)(x))
        return linen.Dense(LATENT)(h), jnp.exp(linen.Dense(LATENT)(h))


class LinenDecoder(linen.Module):
    @linen.compact
    def __call__(self, z):
        return linen.Dense(DATA)(linen.relu(linen.Dense(HIDDEN)(z)))


def probnn_svi(encoder, decoder, shapes):
    def model(x):
        decode = probnn.module("decoder", decoder, *shapes[1])
        with probnn.plate("batch", x.shape[0]):
            z = probnn.sample("z", dist.Normal(0.0, 1.0).expand([LATENT]).to_event(1))
            probnn.sample("x", dist.Bernoulli(logits=decode(z)).to_event(1), obs=x)

    def guide(x):
        encode = probnn.module("encoder", encoder, *shapes[0])
        loc, scale = encode(x)
        with probnn.plate("batch", x.shape[0]):
            probnn.sample("z", dist.Normal(loc, scale).to_event(1))

    return SVI(model, guide, optax.adam(1e-3), Trace_ELBO())


def hand_run(encoder, decoder, steps):
    """The ELBO and Adam steps written directly over split NNX state."""
    graphdef, params = nnx.split((encoder, decoder), nnx.Param)
    optimizer = optax.adam(1e-3)
    log_2pi = jnp.log(2 * jnp.pi)

    def loss(params, key, x):
        encode, decode = nnx.merge(graphdef, params)
        loc, scale = encode(x)
        eps = jax.random.normal(key, loc.shape)
        z = loc + scale * eps
        logits = decode(z)
        log_lik = jnp.sum(x * logits - jax.nn.softplus(logits))
        log_prior = jnp.sum(-0.5 * z * z - 0.5 * log_2pi)
        log_q = jnp.sum(-0.5 * eps * eps - jnp.log(scale) - 0.5 * log_2pi)
        return -(log_lik + log_prior - log_q)

    @jax.jit
    def run(params, key, x):
        def step(carry, _):
            params, opt_state, key = carry
            key, step_key = jax.random.split(key)
            value, grads = jax.value_and_grad(loss)(params, step_key, x)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, key), value

        carry = (params, optimizer.init(params), key)
        return jax.lax.scan(step, carry, None, length=steps)[1]

    return lambda key, x: run(params, key, x)


def timed(fn, repeats):
    """(first call seconds, median steady seconds)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def measure(which: str, steps: int, repeats: int):
    """(init seconds, first call seconds, steady seconds) of one
    implementation."""
    x = data()
    key = jax.random.PRNGKey(0)
    start = time.perf_counter()
    if which == "linen":
        shapes = (((-1, DATA),), ((-1, LATENT),))
        svi = probnn_svi(LinenEncoder(), LinenDecoder(), shapes)
    else:
        networks = NNXEncoder(nnx.Rngs(0)), NNXDecoder(nnx.Rngs(1))
        jax.block_until_ready(nnx.state(networks))
        if which == "hand":
            hand = hand_run(*networks, steps)
            init = time.perf_counter() - start
            return (init, *timed(lambda: hand(key, x), repeats))
        svi = probnn_svi(*networks, ((), ()))
    jax.block_until_ready(svi.init(key, x))
    init = time.perf_counter() - start
    run = lambda: svi.run(key, steps, x, progress_bar=False).losses  # noqa: E731
    return (init, *timed(run, repeats))


NAMES = {
    "nnx": "probnn SVI.run, NNX",
    "linen": "probnn SVI.run, Linen",
    "hand": "hand-written NNX + optax",
}


def build(which: str, steps: int):
    """A no-argument function running ``steps`` training steps."""
    x = data()
    key = jax.random.PRNGKey(0)
    if which == "linen":
        shapes = (((-1, DATA),), ((-1, LATENT),))
        svi = probnn_svi(LinenEncoder(), LinenDecoder(), shapes)
    else:
        networks = NNXEncoder(nnx.Rngs(0)), NNXDecoder(nnx.Rngs(1))
        if which == "hand":
            hand = hand_run(*networks, steps)
            return lambda: hand(key, x)
        svi = probnn_svi(*networks, ((), ()))
    return lambda: svi.run(key, steps, x, progress_bar=False).losses


def interleaved(steps: int, rounds: int):
    """Steady seconds of every implementation timed in turns within one
    process (each round times each once, in a rotating order), so that a
    change in the machine's speed during the run falls on all of them;
    returns the medians and the median per-round ratio to hand-written."""
    runs = {which: build(which, steps) for which in NAMES}
    for run in runs.values():
        jax.block_until_ready(run())  # compile
    times = {which: [] for which in NAMES}
    names = list(NAMES)
    for r in range(rounds):
        for which in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            jax.block_until_ready(runs[which]())
            times[which].append(time.perf_counter() - start)
    return {
        which: (
            statistics.median(times[which]),
            statistics.median(
                a / b for a, b in zip(times[which], times["hand"], strict=True)
            ),
        )
        for which in NAMES
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument(
        "--interleaved",
        type=int,
        metavar="ROUNDS",
        help="instead: steady time only, every implementation in one process, "
        "timed in turns for ROUNDS rounds",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.repeats)))
        return
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, steps {args.steps}")
    if args.interleaved:
        print(f"{'':28}{'steady s':>10}{'ratio (median per round)':>26}")
        for which, (steady, ratio) in interleaved(args.steps, args.interleaved).items():
            print(f"{NAMES[which]:28}{steady:10.3f}{ratio:26.2f}")
        return
    results = {}
    for which in NAMES:
        runs = []
        for _ in range(args.processes):
            command = [sys.executable, __file__, "--child", which]
            command += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        init = statistics.median(r[0] for r in runs)
        first = statistics.median(r[1] - r[2] for r in runs)
        steady = statistics.median(r[2] for r in runs)
        results[which] = (init, first, steady)
    ref_init, ref_compile, ref_steady = results["hand"]
    print(
        f"{'':28}{'init s':>8}{'compile s':>10}{'ratio':>7}"
        f"{'init+compile':>13}{'ratio':>7}{'steady s':>10}{'ratio':>7}"
    )
    for which, (init, compile_seconds, steady) in results.items():
        total = init + compile_seconds
        print(
            f"{NAMES[which]:28}{init:8.2f}{compile_seconds:10.2f}"
            f"{compile_seconds / ref_compile:7.2f}{total:13.2f}"
            f"{total / (ref_init + ref_compile):7.2f}{steady:10.3f}"
            f"{steady / ref_steady:7.2f}"
        )


if __name__ == "__main__":
    main()
