"""examples/vae.py's VAE trained data-parallel over every local device.

Nothing in probnn is specific to sharding: JAX's SPMD compiler (GSPMD) does
the work. A ``jax.sharding.Mesh`` with one axis, ``"data"``, spans the
devices; every step's mini-batch is placed with
``NamedSharding(mesh, PartitionSpec("data"))``, so each device holds
``batch_size / devices`` images (the batch size must divide evenly), and the
jitted ``svi.update`` is compiled for that placement: each device runs
encoder, decoder and ELBO on its own rows, and XLA inserts the all-reduces
that sum the loss and the gradients. Parameters and optimiser state come
out replicated on every device; the numbers equal single-device training up
to floating-point rounding (``tests/test_sharding.py`` checks this).

The encoder's BatchNorm statistics are global, i.e. synchronised batch
norm: the batch mean and variance are means over the sharded batch
dimension, which XLA computes with an all-reduce across devices, so the
running statistics are those of the whole mini-batch, not of one device's
shard.

The networks, data and plots are examples/vae.py's. The model and guide
differ in one line: they observe the batch they are given (``obs=x``) rather
than ``x[idx]`` with the plate's indices. ``with plate(...) as idx`` yields
``arange(size)`` when the plate does not subsample, and indexing a sharded
array with it is a gather along the sharded dim, which GSPMD answers by
copying the whole batch to every device: the results stay right but every
device then does the full batch's work. Scaling to the whole training set,
which vae.py gets from the subsampled plate, is a ``scale`` handler here.

Run on one CPU host with eight simulated devices (the flag must be set
before JAX starts):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python examples/vae_sharded.py --steps 3000 --batch-size 128

On a GPU or TPU host the same command without ``XLA_FLAGS`` uses the
accelerators. Simulated CPU devices share the host's cores, so they show
the mechanics, not a speed-up. Writes ``digits.png`` and ``loss.png`` into
``--out`` and prints the per-device shard shapes, the loss curve's start and
end and the held-out ELBO per image.
"""

import argparse
import importlib.util
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import probnn
import probnn.distributions as dist
from probnn.handlers import scale
from probnn.infer import SVI, Trace_ELBO

IN_FLIGHT = 4  # steps dispatched ahead of the one the host waits for


def _load_vae_example():
    """examples/vae.py, imported from next to this file (registered in
    ``sys.modules`` first: Linen modules are dataclasses, which look their
    defining module up there)."""
    name = "probnn_examples_vae"
    if name not in sys.modules:
        path = pathlib.Path(__file__).resolve().with_name("vae.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


vae = _load_vae_example()


def model(x, num_images=None, train=True):
    """p(z) p(x | z) for the rows of ``x``; with ``num_images`` the log
    density is scaled up to a data set of that many images."""
    del train
    decoder = probnn.module("decoder", vae.DECODER, input_shape=(-1, vae.LATENT))
    factor = 1.0 if num_images is None else num_images / x.shape[0]
    with scale(scale=factor), probnn.plate("batch", x.shape[0]):
        z = probnn.sample("z", dist.Normal(0.0, 1.0).expand([vae.LATENT]).to_event(1))
        probnn.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)


def guide(x, num_images=None, train=True):
    """q(z | x) from the encoder (BatchNorm in training mode when ``train``)."""
    encoder = probnn.module("encoder", vae.ENCODER, input_shape=(-1, vae.PIXELS))
    factor = 1.0 if num_images is None else num_images / x.shape[0]
    with scale(scale=factor), probnn.plate("batch", x.shape[0]):
        loc, scale_ = encoder(x, train=train)
        probnn.sample("z", dist.Normal(loc, scale_).to_event(1))


def batches(x, batch_size, seed):
    """Endless mini-batches (host numpy arrays), reshuffled every epoch."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(x.shape[0])
        for start in range(0, x.shape[0] - batch_size + 1, batch_size):
            yield x[order[start : start + batch_size]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="global mini-batch size; a multiple of the number of devices",
    )
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("vae_sharded_out")
    )
    args = parser.parse_args(argv)

    devices = jax.devices()
    if args.batch_size % len(devices):
        parser.error(
            f"--batch-size {args.batch_size} is not a multiple of the "
            f"{len(devices)} devices"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    mesh = Mesh(np.array(devices), ("data",))
    data_sharding = NamedSharding(mesh, PartitionSpec("data"))
    print(
        f"{len(devices)} {devices[0].platform} device(s), mesh {dict(mesh.shape)}, "
        f"batch {args.batch_size} ({args.batch_size // len(devices)} per device)"
    )

    x_train, x_test = vae.load_digits(args.seed)
    x_train_host = np.asarray(x_train)
    n_train = x_train_host.shape[0]
    optimizer = optax.adam(optax.cosine_decay_schedule(args.learning_rate, args.steps))
    # num_images is a constant of every step: a static keyword of SVI
    svi = SVI(model, guide, optimizer, Trace_ELBO(), num_images=n_train)

    stream = batches(x_train_host, args.batch_size, args.seed)
    first = jax.device_put(next(stream), data_sharding)
    for shard in first.addressable_shards:
        print(f"  {shard.device}: rows {shard.index[0]} shape {shard.data.shape}")

    # init and update both run as one program over the mesh; the state comes
    # out replicated (PartitionSpec()) on every device
    state = svi.init(jax.random.PRNGKey(args.seed), first)
    update = jax.jit(svi.update, donate_argnums=0)
    params_spec = jax.tree.leaves(state.optim_state[1][0])[0].sharding.spec
    print(f"params placed with {params_spec} (replicated)")

    start = time.perf_counter()
    state, loss = update(state, first)
    losses = [loss]
    jax.block_until_ready(loss)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for step in range(1, args.steps):
        # the next batch is copied to the devices while earlier steps run;
        # waiting for the step IN_FLIGHT back bounds the queue of dispatched
        # steps (XLA's CPU runtime can deadlock in the all-reduce when a few
        # dozen multi-device steps are queued on simulated devices)
        batch = jax.device_put(next(stream), data_sharding)
        state, loss = update(state, batch)
        losses.append(loss)
        if step >= IN_FLIGHT:
            losses[step - IN_FLIGHT].block_until_ready()
    losses = np.asarray(jax.block_until_ready(jnp.stack(losses)))
    train_seconds = time.perf_counter() - start
    params = svi.get_params(state)
    mutable_state = state.mutable_state

    # held-out ELBO per image, as in vae.py: BatchNorm in eval mode, 16 draws
    test_elbo_per_image, baseline_per_image = vae.held_out_elbo(
        model, guide, params, mutable_state, x_train_host, x_test
    )
    reconstructions = vae.reconstruct(params, mutable_state, x_test)
    reconstruction_error = float(np.mean(np.abs(reconstructions - x_test)))

    vae.plot_digits(
        args.out / "digits.png",
        x_test[:10],
        reconstructions[:10],
        vae.sample_prior(params, jax.random.PRNGKey(2), 20),
    )
    vae.plot_loss(args.out / "loss.png", losses, n_train)

    first_loss, final_loss = vae.report_fit(
        losses, n_train, test_elbo_per_image, baseline_per_image, reconstruction_error
    )
    steps_per_second = (args.steps - 1) / train_seconds if args.steps > 1 else 0.0
    print(
        f"first step (compile) {compile_seconds:.1f} s, then "
        f"{steps_per_second:.0f} steps/s"
    )
    print(f"wrote {args.out / 'digits.png'} and {args.out / 'loss.png'}")
    return {
        "devices": len(devices),
        "shard_shapes": [tuple(s.data.shape) for s in first.addressable_shards],
        "params_spec": str(params_spec),
        "first_loss": first_loss,
        "final_loss": final_loss,
        "test_elbo_per_image": test_elbo_per_image,
        "baseline_per_image": baseline_per_image,
        "reconstruction_error": reconstruction_error,
        "steps_per_second": steps_per_second,
    }


if __name__ == "__main__":
    main()
