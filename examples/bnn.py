"""A Bayesian neural network for 1-D regression, with Flax Linen.

``probnn.random_module`` turns every weight and bias of a Linen MLP into a
sample site with a ``Normal(0, 1)`` prior, so the network is a random
function. The observation noise is a latent too. An ``AutoNormal`` guide (a
mean-field Gaussian over every weight) is fitted with SVI, or (``--inference
nuts``) NUTS samples the weights' posterior itself, and
``probnn.infer.Predictive`` draws networks from the guide or the posterior
samples to give the predictive mean and a 90% band. The data have a gap in
the middle, where the band should widen.

The network is small on purpose (two hidden layers of 8 units): under a
mean-field guide every weight pays for its distance from the prior, and a
wide network fitted to 200 points buys a smaller KL term with a smoother
function that misses the data (the fitted noise scale grows instead).

    python examples/bnn.py --steps 5000 --out bnn_out
    python examples/bnn.py --inference nuts --num-warmup 500 --num-samples 400

Writes ``bnn.png`` (data, true function, predictive mean and band) into
``--out``; prints the RMSE of the predictive mean against the noise-free
function and the band's coverage of fresh observations.
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
from probnn.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from probnn.infer.autoguide import AutoNormal

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOISE = 0.1


class MLP(nn.Module):
    """x -> f(x): two tanh hidden layers."""

    hidden: int = 8

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(self.hidden)(x))
        h = nn.tanh(nn.Dense(self.hidden)(h))
        return nn.Dense(1)(h)[..., 0]


MLP_NET = MLP()


def truth(x):
    return jnp.sin(3.0 * x)


def make_data(key, n=200):
    """Noisy sin(3x) on [-1, -0.35] and [0.35, 1], nothing in between."""
    key_x, key_noise = jax.random.split(key)
    x = jax.random.uniform(key_x, (n,), minval=0.35, maxval=1.0)
    x = x * jnp.where(jnp.arange(n) % 2 == 0, 1.0, -1.0)
    y = truth(x) + NOISE * jax.random.normal(key_noise, (n,))
    return x[:, None], y


def model(x, y=None):
    # every parameter path ("Dense_0.kernel", ...) matches "*"
    net = probnn.random_module(
        "net", MLP_NET, prior={"*": dist.Normal(0.0, 1.0)}, input_shape=(-1, 1)
    )
    noise = probnn.sample("noise", dist.LogNormal(-2.0, 1.0))
    mean = probnn.deterministic("mean", net(x))
    with probnn.plate("data", x.shape[0]):
        probnn.sample("y", dist.Normal(mean, noise), obs=y)


def plot(path, x, y, grid, mean, low, high, mean_low, mean_high):
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.fill_between(grid, low, high, color="C0", alpha=0.2, label="90% predictive")
    ax.fill_between(
        grid, mean_low, mean_high, color="C0", alpha=0.35, label="90% of f(x)"
    )
    ax.plot(grid, mean, color="C0", label="predictive mean")
    ax.plot(grid, np.sin(3.0 * grid), "k--", lw=1, label="sin(3x)")
    ax.plot(x[:, 0], y, "k.", ms=4, label="data")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--num-samples", type=int, default=400)
    parser.add_argument("--inference", choices=("svi", "nuts"), default="svi")
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bnn_out"))
    parser.add_argument("--progress-bar", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    key_data, key_test, key_svi, key_pred = jax.random.split(
        jax.random.PRNGKey(args.seed), 4
    )
    x, y = make_data(key_data)
    x_test, y_test = make_data(key_test, n=400)

    start = time.perf_counter()
    if args.inference == "nuts":
        mcmc = MCMC(
            NUTS(model, target_accept_prob=0.9),
            num_warmup=args.num_warmup,
            num_samples=args.num_samples,
            progress_bar=args.progress_bar,
        )
        mcmc.run(key_svi, x, y)
        samples = {k: v for k, v in mcmc.get_samples().items() if k != "mean"}
        jax.block_until_ready(samples)
        predictive = Predictive(model, samples)
        noise = float(np.median(np.asarray(samples["noise"])))
        divergences = int(mcmc.get_extra_fields()["diverging"].sum())
        losses = None
    else:
        # A small initial scale keeps the first draws of the weights near
        # the guide's means, so early steps are not swamped by noise.
        guide = AutoNormal(model, init_scale=0.01)
        schedule = optax.cosine_decay_schedule(args.learning_rate, args.steps)
        svi = SVI(model, guide, optax.adam(schedule), Trace_ELBO())
        result = svi.run(key_svi, args.steps, x, y, progress_bar=args.progress_bar)
        losses = result.losses
        jax.block_until_ready(losses)
        predictive = Predictive(
            model, guide=guide, params=result.params, num_samples=args.num_samples
        )
        noise = float(guide.median(result.params)["noise"])
        divergences = None
    train_seconds = time.perf_counter() - start

    key_grid, key_test_draws = jax.random.split(key_pred)
    grid = jnp.linspace(-1.3, 1.3, 200)[:, None]
    draws = predictive(key_grid, grid)
    mean_draws, y_draws = np.asarray(draws["mean"]), np.asarray(draws["y"])
    mean = mean_draws.mean(0)
    low, high = np.quantile(y_draws, [0.05, 0.95], axis=0)
    mean_low, mean_high = np.quantile(mean_draws, [0.05, 0.95], axis=0)

    # accuracy where there are data, and coverage of fresh observations
    test_draws = predictive(key_test_draws, x_test)
    test_mean = np.asarray(test_draws["mean"]).mean(0)
    rmse = float(np.sqrt(np.mean((test_mean - np.asarray(truth(x_test[:, 0]))) ** 2)))
    baseline = float(np.sqrt(np.mean((np.mean(y) - truth(x_test[:, 0])) ** 2)))
    test_low, test_high = np.quantile(np.asarray(test_draws["y"]), [0.05, 0.95], 0)
    coverage = float(np.mean((y_test >= test_low) & (y_test <= test_high)))

    # the band of f(x) in the gap against where the data are
    grid_x = np.asarray(grid[:, 0])
    width = mean_high - mean_low
    gap_width = float(width[np.abs(grid_x) < 0.2].mean())
    data_width = float(width[(np.abs(grid_x) > 0.5) & (np.abs(grid_x) < 0.9)].mean())

    plot(args.out / "bnn.png", x, y, grid_x, mean, low, high, mean_low, mean_high)
    if losses is not None:
        print(
            f"negative ELBO: {float(losses[0]):.1f} -> "
            f"{float(np.mean(losses[-100:])):.1f}"
        )
    else:
        print(f"NUTS: {args.num_samples} draws, {divergences} divergences")
    print(
        f"RMSE of the predictive mean against sin(3x): {rmse:.3f} "
        f"(predicting the mean of y: {baseline:.3f})"
    )
    print(f"coverage of the 90% band on fresh observations: {coverage:.2f}")
    print(f"noise scale (posterior median): {noise:.3f} (true {NOISE})")
    print(
        f"width of the 90% band of f(x): {data_width:.3f} near the data, "
        f"{gap_width:.3f} in the gap"
    )
    print(f"{args.inference} (compile included) in {train_seconds:.1f} s")
    print(f"wrote {args.out / 'bnn.png'}")
    return {
        "first_loss": None if losses is None else float(losses[0]),
        "final_loss": None if losses is None else float(np.mean(losses[-100:])),
        "divergences": divergences,
        "rmse": rmse,
        "baseline_rmse": baseline,
        "coverage": coverage,
        "noise_scale": noise,
        "band_width_data": data_width,
        "band_width_gap": gap_width,
        "train_seconds": train_seconds,
    }


if __name__ == "__main__":
    main()
