"""Data-parallel SVI: the sharded VAE step against the device count, and the
cost of the sharded path on one device.

Workload: examples/vae.py's VAE (Linen encoder with BatchNorm, Linen
decoder; 64 binary pixels, 256 hidden units, 16 latent dims) on synthetic
images, batch 1024, Adam on Trace_ELBO with one particle, one jitted
``svi.update`` per step. The batch is placed with
``NamedSharding(mesh, PartitionSpec("data"))`` over a one-axis mesh; the
model observes the batch it is given, so each device computes its own rows
and XLA all-reduces the loss, the gradients and the BatchNorm statistics.

Device count: 1, 2, 4 and 8 forced host devices, each in a fresh process
with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (and
``JAX_PLATFORMS=cpu``). Reported: steady milliseconds per step (each step
waited for; median over ``--repeats`` runs of ``--steps`` steps), its ratio
to one device, and the floating-point operations of one device's share of
the compiled step (XLA's cost analysis), which shows the work being split.
Forced host devices share the machine's CPU cores, so on CPU the
device-count rows measure the overhead of partitioning and collectives,
not a speed-up; on N accelerators the same program splits the work N ways.

Overhead on one device: in one fresh process on the default backend (the
GPU where there is one), the sharded step (a mesh of one device, the batch
placed with ``NamedSharding``) against the plain step on unsharded arrays,
timed alternately; target ratio <= 1.05.

    python benchmarks/scale.py [--steps 100] [--repeats 5] [--devices 1 2 4 8]
        [--json benchmarks/results/scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _results import write_json
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import probnn
import probnn.distributions as dist
from probnn.infer import SVI, Trace_ELBO

PIXELS, HIDDEN, LATENT, BATCH = 64, 256, 16, 1024


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        h = nn.Dense(HIDDEN)(x)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
        return nn.Dense(LATENT)(h), nn.softplus(nn.Dense(LATENT)(h)) + 1e-3


class Decoder(nn.Module):
    @nn.compact
    def __call__(self, z):
        return nn.Dense(PIXELS)(nn.relu(nn.Dense(HIDDEN)(z)))


ENCODER, DECODER = Encoder(), Decoder()


def model(x):
    decoder = probnn.module("decoder", DECODER, input_shape=(-1, LATENT))
    with probnn.plate("batch", x.shape[0]):
        z = probnn.sample("z", dist.Normal(0.0, 1.0).expand([LATENT]).to_event(1))
        probnn.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)


def guide(x):
    encoder = probnn.module("encoder", ENCODER, input_shape=(-1, PIXELS))
    with probnn.plate("batch", x.shape[0]):
        loc, scale = encoder(x, train=True)
        probnn.sample("z", dist.Normal(loc, scale).to_event(1))


def data():
    """``BATCH`` noisy copies of eight random binary prototypes."""
    prototypes = jax.random.bernoulli(jax.random.PRNGKey(42), 0.3, (8, PIXELS))
    which = jax.random.randint(jax.random.PRNGKey(1), (BATCH,), 0, 8)
    flips = jax.random.bernoulli(jax.random.PRNGKey(2), 0.05, (BATCH, PIXELS))
    return np.asarray(jnp.logical_xor(prototypes[which], flips), np.float32)


def step_flops(update, state, x):
    """Floating-point operations of one device's share of the compiled step."""
    cost = update.lower(state, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", float("nan")))


def prepared(x):
    """(jitted update, initial state): compiled and run once."""
    svi = SVI(model, guide, optax.adam(1e-3), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), x)
    update = jax.jit(svi.update)
    state, loss = update(state, x)
    jax.block_until_ready(loss)
    return update, state


def time_steps(update, state, x, steps):
    """Seconds per step over ``steps`` steps, each waited for (which also
    keeps XLA's CPU runtime from queueing many multi-device steps)."""
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = update(state, x)
        loss.block_until_ready()
    return (time.perf_counter() - start) / steps, state


def measure_devices(steps, repeats):
    """Child: the sharded step over every (forced) device of this process."""
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    x = jax.device_put(data(), NamedSharding(mesh, PartitionSpec("data")))
    start = time.perf_counter()
    update, state = prepared(x)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        seconds, state = time_steps(update, state, x, steps)
        times.append(seconds)
    return {
        "devices": len(devices),
        "rows_per_device": x.addressable_shards[0].data.shape[0],
        "step_ms": 1e3 * statistics.median(times),
        "first_s": first,
        "flops_per_device": step_flops(update, state, x),
    }


def measure_overhead(steps, repeats):
    """Child: sharded step on a mesh of one device against the plain step,
    alternating, in one process."""
    device = jax.devices()[0]
    mesh = Mesh(np.array([device]), ("data",))
    plain_x = jax.device_put(data(), device)
    sharded_x = jax.device_put(data(), NamedSharding(mesh, PartitionSpec("data")))
    runs = {"plain": prepared(plain_x), "sharded": prepared(sharded_x)}
    xs = {"plain": plain_x, "sharded": sharded_x}
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (update, state) in runs.items():
            seconds, state = time_steps(update, state, xs[name], steps)
            runs[name] = (update, state)
            times[name].append(seconds)
    out = {f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()}
    out["sharded_spec"] = str(runs["sharded"][1].rng_key.sharding)
    out["platform"] = device.platform
    return out


def child(kind, args, devices=None):
    """Run one measurement in a fresh process: with ``devices`` forced CPU
    devices, or on the default backend when ``devices`` is None."""
    env = dict(os.environ)
    if devices is not None:
        flags = env.get("XLA_FLAGS", "")
        flags = f"{flags} --xla_force_host_platform_device_count={devices}"
        env.update(XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
    command = [sys.executable, __file__, "--child", kind]
    command += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-5000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--child", choices=("devices", "overhead"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child == "devices":
        print(json.dumps(measure_devices(args.steps, args.repeats)))
        return None
    if args.child == "overhead":
        print(json.dumps(measure_overhead(args.steps, args.repeats)))
        return None

    print(
        f"jax {jax.__version__}, {os.cpu_count()} CPU cores; VAE batch {BATCH}, "
        f"{args.steps} steps x {args.repeats} repeats per measurement"
    )
    scaling = [child("devices", args, n) for n in args.devices]
    reference = scaling[0]["step_ms"]
    print("\nsharded step against forced host devices (one fresh process each)")
    print(
        f"  {'devices':>7}{'rows/device':>13}{'ms/step':>10}{'ratio':>8}"
        f"{'MFLOP/device':>14}{'first step s':>14}"
    )
    for r in scaling:
        print(
            f"  {r['devices']:7d}{r['rows_per_device']:13d}{r['step_ms']:10.2f}"
            f"{r['step_ms'] / reference:8.2f}{r['flops_per_device'] / 1e6:14.1f}"
            f"{r['first_s']:14.2f}"
        )
    print(
        "  forced host devices share the same CPU cores: these rows measure the\n"
        "  cost of partitioning and collectives, not a speed-up"
    )

    overhead = child("overhead", args)
    ratio = overhead["sharded_ms"] / overhead["plain_ms"]
    print(
        f"\nsharded path on one {overhead['platform']} device (one process, "
        "alternating)"
    )
    print(f"  plain step (unsharded arrays)      {overhead['plain_ms']:8.2f} ms")
    print(f"  sharded step (1-device mesh)       {overhead['sharded_ms']:8.2f} ms")
    print(f"  ratio {ratio:.3f} (target <= 1.05)")

    report = {"scaling": scaling, "overhead": {**overhead, "ratio": ratio}}
    if args.json:
        payload = {
            "jax": jax.__version__,
            "cpu_cores": os.cpu_count(),
            "batch": BATCH,
            "steps": args.steps,
            "repeats": args.repeats,
            **report,
        }
        write_json(args.json, payload)
    return report


if __name__ == "__main__":
    main()
