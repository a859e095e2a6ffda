"""A variational autoencoder on scikit-learn's 8x8 digits, with Flax Linen.

The model draws a 16-dim code ``z ~ Normal(0, 1)`` per image and decodes it
with a Linen MLP into the logits of 64 Bernoulli pixels (grey levels in
[0, 1] are used as soft targets, the usual cross-entropy reconstruction
term). The guide encodes each image with a Linen MLP that has a BatchNorm
layer; its running statistics are Flax's ``batch_stats`` collection, which
probnn keeps as mutable state next to the parameters. Images sit in a
subsampled ``probnn.plate``, so every SVI step sees a random mini-batch and
the ELBO is scaled up to the whole training set.

    python examples/vae.py --steps 5000 --out vae_out

Writes ``digits.png`` (held-out digits, their reconstructions and draws from
the prior) and ``loss.png`` (the training loss) into ``--out``, and prints the
ELBO per image on held-out digits.
"""

import argparse
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

import probnn
import probnn.distributions as dist
from probnn.infer import SVI, Trace_ELBO
from probnn.nn import to_linen_variables

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LATENT = 16
PIXELS = 64


class Encoder(nn.Module):
    """Image -> (loc, scale) of the code; BatchNorm after the hidden layer."""

    hidden: int = 256

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(self.hidden)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = nn.relu(h)
        loc = nn.Dense(LATENT)(h)
        scale = nn.softplus(nn.Dense(LATENT)(h)) + 1e-3
        return loc, scale


class Decoder(nn.Module):
    """Code -> logits of the 64 pixels."""

    hidden: int = 256

    @nn.compact
    def __call__(self, z):
        h = nn.relu(nn.Dense(self.hidden)(z))
        return nn.Dense(PIXELS)(h)


ENCODER = Encoder()
DECODER = Decoder()


def model(x, batch_size=None, train=True):
    """p(z) p(x | z) for every image; ``train`` only matters to the guide."""
    del train
    decoder = probnn.module("decoder", DECODER, input_shape=(-1, LATENT))
    with probnn.plate("batch", x.shape[0], subsample_size=batch_size) as idx:
        z = probnn.sample("z", dist.Normal(0.0, 1.0).expand([LATENT]).to_event(1))
        logits = decoder(z)
        probnn.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x[idx])


def guide(x, batch_size=None, train=True):
    """q(z | x) from the encoder; BatchNorm uses batch statistics (and updates
    its running averages) when ``train`` is true."""
    encoder = probnn.module("encoder", ENCODER, input_shape=(-1, PIXELS))
    with probnn.plate("batch", x.shape[0], subsample_size=batch_size) as idx:
        loc, scale = encoder(x[idx], train=train)
        probnn.sample("z", dist.Normal(loc, scale).to_event(1))


def load_digits(seed_value=0, test_size=300):
    """The 1797 digits as float32 vectors in [0, 1], split into train / test."""
    from sklearn.datasets import load_digits as sklearn_digits

    images = sklearn_digits().data.astype(np.float32) / 16.0
    order = np.random.default_rng(seed_value).permutation(len(images))
    test, train = order[:test_size], order[test_size:]
    return jnp.asarray(images[train]), jnp.asarray(images[test])


def reconstruct(params, mutable_state, x):
    """Decoded pixel probabilities at the encoder's mean code, with plain
    Linen ``apply`` on the trained variables (BatchNorm in eval mode)."""
    encoder_variables = to_linen_variables("encoder", params, mutable_state)
    decoder_variables = to_linen_variables("decoder", params)
    loc, _ = ENCODER.apply(encoder_variables, x, train=False)
    return jax.nn.sigmoid(DECODER.apply(decoder_variables, loc))


def sample_prior(params, key, n):
    """Pixel probabilities of ``n`` codes drawn from the prior."""
    z = jax.random.normal(key, (n, LATENT))
    return jax.nn.sigmoid(DECODER.apply(to_linen_variables("decoder", params), z))


def plot_digits(path, originals, reconstructions, samples):
    rows = [("held-out", originals), ("reconstructed", reconstructions)]
    rows += [("prior sample", samples[:10]), ("prior sample", samples[10:20])]
    fig, axes = plt.subplots(len(rows), 10, figsize=(10, 1.1 * len(rows)))
    for r, (label, images) in enumerate(rows):
        for c in range(10):
            ax = axes[r, c]
            ax.imshow(
                np.asarray(images[c]).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1
            )
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_loss(path, losses, n_train):
    losses = np.asarray(losses) / n_train
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, alpha=0.3, label="per step")
    ax.plot(np.arange(window - 1, len(losses)), smooth, label=f"mean of {window}")
    ax.set_xlabel("SVI step")
    ax.set_ylabel("negative ELBO per image (nats)")
    ax.set_ylim(np.percentile(losses, 1) - 1, np.percentile(losses, 99) + 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def held_out_elbo(model, guide, params, mutable_state, x_train, x_test):
    """``(held-out ELBO per image, baseline per image)``: every test image at
    once, BatchNorm in eval mode, the expectation over q averaged over 16
    draws; the baseline is the log likelihood of the test digits under the
    mean training image, the best a model whose codes carry nothing can do."""
    elbo = Trace_ELBO(num_particles=16)
    test_loss = elbo.loss(
        jax.random.PRNGKey(1),
        {**params, **mutable_state},
        model,
        guide,
        x_test,
        train=False,
    )
    mean_image = jnp.clip(jnp.asarray(x_train).mean(0), 1e-4, 1 - 1e-4)
    baseline = dist.Bernoulli(probs=mean_image).to_event(1).log_prob(x_test)
    return -float(test_loss) / x_test.shape[0], float(baseline.mean())


def report_fit(
    losses, n_train, test_elbo_per_image, baseline_per_image, reconstruction_error
):
    """Print the training loss per image (first step, mean of the last 5% of
    steps), the held-out ELBO and the reconstruction error; return the two
    training figures."""
    window = max(1, len(losses) // 20)
    first_loss = float(losses[0]) / n_train
    final_loss = float(np.mean(np.asarray(losses[-window:]))) / n_train
    print(f"negative ELBO per training image: {first_loss:.2f} -> {final_loss:.2f}")
    print(
        f"held-out ELBO per image: {test_elbo_per_image:.2f} nats (the mean "
        f"training image scores {baseline_per_image:.2f})"
    )
    print(f"held-out mean absolute pixel error: {reconstruction_error:.3f}")
    return first_loss, final_loss


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("vae_out"))
    parser.add_argument("--progress-bar", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    x_train, x_test = load_digits(args.seed)
    n_train = x_train.shape[0]
    optimizer = optax.adam(optax.cosine_decay_schedule(args.learning_rate, args.steps))
    svi = SVI(model, guide, optimizer, Trace_ELBO())

    start = time.perf_counter()
    result = svi.run(
        jax.random.PRNGKey(args.seed),
        args.steps,
        x_train,
        batch_size=args.batch_size,
        progress_bar=args.progress_bar,
    )
    losses = jax.block_until_ready(result.losses)
    train_seconds = time.perf_counter() - start
    params, mutable_state = result.params, result.state.mutable_state

    test_elbo_per_image, baseline_per_image = held_out_elbo(
        model, guide, params, mutable_state, x_train, x_test
    )

    originals = x_test[:10]
    reconstructions = reconstruct(params, mutable_state, originals)
    samples = sample_prior(params, jax.random.PRNGKey(2), 20)
    reconstruction_error = float(
        jnp.mean(jnp.abs(reconstruct(params, mutable_state, x_test) - x_test))
    )
    plot_digits(args.out / "digits.png", originals, reconstructions, samples)
    plot_loss(args.out / "loss.png", losses, n_train)

    first_loss, final_loss = report_fit(
        losses, n_train, test_elbo_per_image, baseline_per_image, reconstruction_error
    )
    print(f"{args.steps} steps (compile included) in {train_seconds:.1f} s")
    print(f"wrote {args.out / 'digits.png'} and {args.out / 'loss.png'}")
    return {
        "first_loss": first_loss,
        "final_loss": final_loss,
        "test_elbo_per_image": test_elbo_per_image,
        "baseline_per_image": baseline_per_image,
        "reconstruction_error": reconstruction_error,
        "train_seconds": train_seconds,
    }


if __name__ == "__main__":
    main()
