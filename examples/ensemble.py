"""A deep ensemble through a plate, with Flax Linen.

A Linen MLP predicts a mean and a noise scale for each input. Registered with
``probnn.module`` inside ``probnn.plate("members", 8, dim=-2)``, it becomes
eight networks with independent initial weights: the parameter site holds
every member's weights with a leading member dim, the inputs are shared, and
the outputs gain the member dim. The members are fitted together by maximum
likelihood (SVI with an empty guide: with no latent sites the ELBO is the log
likelihood), each on the same data; their disagreement is the ensemble's
uncertainty. The data have a gap in the middle, where the members should part
ways, as they do beyond the data's ends.

    python examples/ensemble.py --steps 3000 --out ensemble_out

Writes ``ensemble.png`` (data, members, the ensemble's mean and 90% band) into
``--out``; prints the RMSE of the ensemble mean against the noise-free
function and the spread of the members in the gap and near the data.
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
from probnn.infer import SVI, Predictive, Trace_ELBO

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOISE = 0.1
MEMBERS = 8


class MLP(nn.Module):
    """x -> (mean, scale) of y: two ReLU hidden layers."""

    hidden: int = 32

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(self.hidden)(x))
        h = nn.relu(nn.Dense(self.hidden)(h))
        out = nn.Dense(2)(h)
        return out[..., 0], nn.softplus(out[..., 1]) + 1e-3


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
    with probnn.plate("members", MEMBERS, dim=-2):
        # one set of weights per member: the site "net$params" has leaves of
        # shape (MEMBERS, ...), and each output has shape (MEMBERS, len(x))
        net = probnn.module("net", MLP_NET, input_shape=(-1, 1), members="members")
        mean, scale = net(x)
        probnn.deterministic("mean", mean)
        probnn.deterministic("scale", scale)
        with probnn.plate("data", x.shape[0], dim=-1):
            probnn.sample("y", dist.Normal(mean, scale), obs=y)


def guide(x, y=None):
    """Nothing is latent: SVI maximises the likelihood of the members."""


def plot(path, x, y, grid, members, mean, low, high):
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.fill_between(grid, low, high, color="C1", alpha=0.2, label="90% predictive")
    for i, member in enumerate(members):
        ax.plot(
            grid,
            member,
            color="C1",
            lw=0.8,
            alpha=0.6,
            label="members" if i == 0 else None,
        )
    ax.plot(grid, mean, color="C1", lw=2, label="ensemble mean")
    ax.plot(grid, np.sin(3.0 * grid), "k--", lw=1, label="sin(3x)")
    ax.plot(x[:, 0], y, "k.", ms=4, label="data")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_ylim(-2.5, 2.5)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("ensemble_out")
    )
    parser.add_argument("--progress-bar", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    key_data, key_test, key_svi, key_pred = jax.random.split(
        jax.random.PRNGKey(args.seed), 4
    )
    x, y = make_data(key_data)
    x_test, y_test = make_data(key_test, n=400)

    optimizer = optax.adam(optax.cosine_decay_schedule(args.learning_rate, args.steps))
    svi = SVI(model, guide, optimizer, Trace_ELBO())
    start = time.perf_counter()
    result = svi.run(key_svi, args.steps, x, y, progress_bar=args.progress_bar)
    jax.block_until_ready(result.losses)
    train_seconds = time.perf_counter() - start
    params = result.params

    # every member's mean and scale; y drawn from each member, 50 times
    predictive = Predictive(model, params=params, num_samples=50)
    key_grid, key_test_draws = jax.random.split(key_pred)
    grid = jnp.linspace(-1.6, 1.6, 200)[:, None]
    draws = predictive(key_grid, grid)
    members = np.asarray(draws["mean"][0])  # (MEMBERS, len(grid))
    mean = members.mean(0)
    # the ensemble's predictive is the equal mixture of its members
    low, high = np.quantile(
        np.asarray(draws["y"]).reshape(-1, len(grid)), [0.05, 0.95], axis=0
    )

    test_draws = predictive(key_test_draws, x_test)
    test_mean = np.asarray(test_draws["mean"][0]).mean(0)
    rmse = float(np.sqrt(np.mean((test_mean - np.asarray(truth(x_test[:, 0]))) ** 2)))
    baseline = float(np.sqrt(np.mean((np.mean(y) - truth(x_test[:, 0])) ** 2)))
    test_y = np.asarray(test_draws["y"]).reshape(-1, x_test.shape[0])
    test_low, test_high = np.quantile(test_y, [0.05, 0.95], axis=0)
    coverage = float(np.mean((y_test >= test_low) & (y_test <= test_high)))
    noise = float(np.median(np.asarray(test_draws["scale"][0])))

    grid_x = np.asarray(grid[:, 0])
    spread = members.std(0)
    gap_spread = float(spread[np.abs(grid_x) < 0.2].mean())
    data_spread = float(spread[(np.abs(grid_x) > 0.5) & (np.abs(grid_x) < 0.9)].mean())

    plot(args.out / "ensemble.png", x, y, grid_x, members, mean, low, high)
    final_loss = float(np.mean(result.losses[-100:]))
    print(
        f"negative log likelihood (all members): {float(result.losses[0]):.1f} "
        f"-> {final_loss:.1f}"
    )
    print(
        f"RMSE of the ensemble mean against sin(3x): {rmse:.3f} "
        f"(predicting the mean of y: {baseline:.3f})"
    )
    print(f"coverage of the 90% band on fresh observations: {coverage:.2f}")
    print(f"median fitted noise scale: {noise:.3f} (true {NOISE})")
    print(
        f"spread of the members' means: {data_spread:.3f} near the data, "
        f"{gap_spread:.3f} in the gap"
    )
    kernel = params["net$params"]["Dense_0"]["kernel"]
    print(f"net$params: one set per member, e.g. Dense_0.kernel {kernel.shape}")
    print(f"{args.steps} steps (compile included) in {train_seconds:.1f} s")
    print(f"wrote {args.out / 'ensemble.png'}")
    return {
        "first_loss": float(result.losses[0]),
        "final_loss": final_loss,
        "rmse": rmse,
        "baseline_rmse": baseline,
        "coverage": coverage,
        "noise_scale": noise,
        "member_spread": gap_spread,
        "member_spread_data": data_spread,
        "train_seconds": train_seconds,
    }


if __name__ == "__main__":
    main()
