"""Data-parallel SVI over several hosts: a recipe that also runs on one host.

Bayesian logistic regression (AutoNormal guide) on a data set whose rows are
spread over the hosts. The steps of the recipe:

1. ``jax.distributed.initialize()`` once per process, before any other JAX
   call, when the program runs as several processes. Under Slurm, Open MPI
   or on a Cloud TPU pod it finds the coordinator, the process count and
   this process's id itself; elsewhere pass ``--coordinator``,
   ``--num-processes`` and ``--process-id`` (or set
   ``JAX_COORDINATOR_ADDRESS``). On one host nothing is initialised.
2. A global ``Mesh`` over ``jax.devices()``: every device of every process,
   one axis, ``"data"``.
3. Each process loads only its own rows: process ``jax.process_index()`` of
   ``jax.process_count()`` reads one contiguous share of the data set.
4. Every step each process draws its part of the global mini-batch from its
   own rows, and ``jax.make_array_from_process_local_data`` assembles the
   parts into one global array sharded along ``"data"`` (this process's
   part lands on this process's devices; no data crosses hosts).
5. ``svi.init`` and the jitted ``svi.update`` run as one SPMD program over
   every device: the loss and gradients are summed across devices and
   hosts by XLA's all-reduce, and params and optimiser state are replicated
   on every device. Every process runs the same steps with the same key.
6. Only process 0 prints.

The model scales its log likelihood by ``rows / batch`` (a ``scale``
handler) so that the ELBO is that of the whole data set.

One host with eight simulated CPU devices (the flag must be set before JAX
starts):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python examples/multihost_svi.py

Several hosts under Slurm (one process per host; ``--multihost`` asks for
``jax.distributed.initialize()`` with automatic detection):

    srun --nodes 4 --ntasks-per-node 1 python examples/multihost_svi.py --multihost

Two processes on one machine standing in for two hosts, four CPU devices
each (CPU collectives across processes use gloo):

    for i in 0 1; do
        XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
            python examples/multihost_svi.py --coordinator localhost:12355 \\
            --num-processes 2 --process-id $i &
    done; wait
"""

import argparse
import os
import time

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import probnn
import probnn.distributions as dist
from probnn.handlers import scale
from probnn.infer import SVI, Trace_ELBO
from probnn.infer.autoguide import AutoNormal

FEATURES = 16
BLOCK = 1024  # rows are generated in blocks, so any share can be read alone
IN_FLIGHT = 4  # steps dispatched ahead of the one the host waits for


def true_coefficients():
    return np.linspace(-2.0, 2.0, FEATURES).astype(np.float32), np.float32(0.5)


def load_rows(start, stop, seed=0):
    """Rows ``start:stop`` of the data set (features and 0/1 labels).

    Stands in for reading one's own files: each block of rows depends only
    on its index, so a process never builds rows it does not own."""
    weights, bias = true_coefficients()
    xs, ys = [], []
    for block in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        rng = np.random.default_rng([seed, block])
        x = rng.standard_normal((BLOCK, FEATURES)).astype(np.float32)
        p = 1.0 / (1.0 + np.exp(-(x @ weights + bias)))
        y = (rng.uniform(size=BLOCK) < p).astype(np.float32)
        lo = max(start - block * BLOCK, 0)
        hi = min(stop - block * BLOCK, BLOCK)
        xs.append(x[lo:hi])
        ys.append(y[lo:hi])
    return np.concatenate(xs), np.concatenate(ys)


def model(x, y=None, num_rows=None):
    """Logistic regression; with ``num_rows`` the likelihood of the batch
    stands for that of ``num_rows`` rows."""
    w = probnn.sample("w", dist.Normal(0.0, 1.0).expand([FEATURES]).to_event(1))
    b = probnn.sample("b", dist.Normal(0.0, 1.0))
    factor = 1.0 if num_rows is None else num_rows / x.shape[0]
    with scale(scale=factor), probnn.plate("rows", x.shape[0]):
        probnn.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


def launched_as_several_processes(args):
    """Whether this program is one of several processes: asked for with
    ``--multihost`` or ``--coordinator``, or set up by the launcher."""
    if args.multihost or args.coordinator:
        return True
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    for count in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if int(os.environ.get(count, "1")) > 1:
            return True
    return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1024,
        help="global mini-batch size; a multiple of the number of devices",
    )
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=200)
    parser.add_argument(
        "--multihost",
        action="store_true",
        help="call jax.distributed.initialize() (detected under Slurm, Open MPI, "
        "TPU pods and with --coordinator or JAX_COORDINATOR_ADDRESS)",
    )
    parser.add_argument("--coordinator", help="host:port of process 0")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    args = parser.parse_args(argv)

    # 1. one call per process, before anything else touches JAX
    distributed = launched_as_several_processes(args)
    if distributed:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    process, processes = jax.process_index(), jax.process_count()

    def log(*parts):
        if process == 0:
            print(*parts, flush=True)

    # 2. the global mesh: every device of every process
    devices = jax.devices()
    if args.batch_size % len(devices) or args.rows % processes:
        parser.error(
            f"--batch-size ({args.batch_size}) must be a multiple of the "
            f"{len(devices)} devices and --rows ({args.rows}) of the "
            f"{processes} processes"
        )
    mesh = Mesh(np.array(devices), ("data",))
    rows_sharding = NamedSharding(mesh, PartitionSpec("data"))
    log(
        f"{processes} process(es), {len(devices)} {devices[0].platform} devices "
        f"({jax.local_device_count()} per process), mesh {dict(mesh.shape)}"
    )

    # 3. this process's share of the rows
    share = args.rows // processes
    x_local, y_local = load_rows(process * share, (process + 1) * share, args.seed)
    local_batch = args.batch_size // processes
    log(f"each process holds {share} rows and feeds {local_batch} rows a step")

    # 4. every step: local rows -> one global batch sharded over all devices
    rng = np.random.default_rng([args.seed, process])

    def global_batch():
        take = rng.choice(share, size=local_batch, replace=False)
        return tuple(
            jax.make_array_from_process_local_data(
                rows_sharding, local[take], (args.batch_size,) + local.shape[1:]
            )
            for local in (x_local, y_local)
        )

    # 5. SVI over the mesh; the same key on every process
    svi = SVI(
        model,
        AutoNormal(model),
        optax.adam(optax.cosine_decay_schedule(args.learning_rate, args.steps)),
        Trace_ELBO(),
        num_rows=args.rows,
    )
    x_batch, y_batch = global_batch()
    state = svi.init(jax.random.PRNGKey(args.seed), x_batch, y_batch)
    update = jax.jit(svi.update)
    shards = [tuple(s.data.shape) for s in x_batch.addressable_shards]
    log(f"a batch {x_batch.shape}: this process's shards {shards}")

    start = time.perf_counter()
    losses = []
    for step in range(args.steps):
        if step:
            x_batch, y_batch = global_batch()
        state, loss = update(state, x_batch, y_batch)
        losses.append(loss)
        if step >= IN_FLIGHT:
            losses[step - IN_FLIGHT].block_until_ready()
        if (step + 1) % args.log_every == 0:
            # the loss is replicated: every process can read it
            recent = np.mean([float(v) for v in losses[-args.log_every :]])
            log(f"step {step + 1:6d}  mean loss per row {recent / args.rows:.4f}")
    losses = np.array([float(v) for v in losses])
    seconds = time.perf_counter() - start

    # 6. results: the params are replicated, so every process has them
    params = svi.get_params(state)
    weights, bias = true_coefficients()
    w_error = float(np.max(np.abs(np.asarray(params["w_auto_loc"]) - weights)))
    b_error = float(abs(float(params["b_auto_loc"]) - bias))
    w_scale = float(np.mean(np.asarray(params["w_auto_scale"])))
    spec = params["w_auto_loc"].sharding.spec
    log(f"params {spec}, on {len(params['w_auto_loc'].sharding.device_set)} devices")
    log(
        f"loss per row {losses[0] / args.rows:.4f} -> "
        f"{np.mean(losses[-50:]) / args.rows:.4f} in {args.steps} steps "
        f"({seconds:.1f} s)"
    )
    log(
        f"posterior mean of the coefficients: largest error {w_error:.3f} "
        f"(posterior sd about {w_scale:.3f}), intercept error {b_error:.3f}"
    )
    if distributed:
        jax.distributed.shutdown()
    return {
        "processes": processes,
        "devices": len(devices),
        "first_loss": float(losses[0] / args.rows),
        "final_loss": float(np.mean(losses[-50:]) / args.rows),
        "w_error": w_error,
        "b_error": b_error,
        "w_scale": w_scale,
        "seconds": seconds,
    }


if __name__ == "__main__":
    main()
