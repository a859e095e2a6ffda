"""A discrete hidden Markov model fitted by SVI with the hidden states summed
out exactly (``TraceEnum_ELBO``), then Viterbi-decoded with ``infer_discrete``.

Data: a synthetic regime-switching series of T = 300 points drawn with numpy
from seed 0. A hidden chain moves between three regimes,

    regime         emission               initial prob   transition row
    0  "low"       Normal(-1.5, 0.5)      0.6            [0.95, 0.04, 0.01]
    1  "calm"      Normal( 0.0, 0.3)      0.3            [0.03, 0.94, 0.03]
    2  "high"      Normal( 2.0, 0.8)      0.1            [0.02, 0.06, 0.92]

and each step emits one real number from its regime's Normal.

Model: the initial probabilities (a simplex), the transition matrix (each
row a simplex), and per-state emission means and scales are ``probnn.param``
sites. The hidden state is a ``dist.Categorical`` site marked
``infer={"enumerate": "parallel"}`` inside ``probnn.control_flow.scan``; the
guide is empty, so the loss ``TraceEnum_ELBO`` minimises is exactly
-log p(y) and SVI does maximum likelihood (the forward algorithm, written by
enumeration). After fitting, ``infer_discrete(..., temperature=0)`` replays
the model with the fitted parameters and returns the most probable state
path. Fitted states are matched to the true ones by sorting the emission
means; the decoding accuracy is the share of steps whose matched label is
the true regime. (With one sequence the maximum-likelihood initial
distribution is a point mass on the first step's state, so the fitted
initial probabilities do not approach the generating ones.)

    python examples/hmm_enum.py --steps 1000 --out hmm_enum_out

Writes ``states.png`` (the series coloured by decoded state, with the true
and decoded state paths underneath) and ``loss.png`` (the training loss)
into ``--out``, and prints the fitted parameters next to the true ones.
"""

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

import probnn
import probnn.distributions as dist
from probnn.control_flow import scan
from probnn.distributions import constraints
from probnn.handlers import substitute, trace
from probnn.infer import SVI, TraceEnum_ELBO, infer_discrete

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# generating parameters (see the module docstring)
TRUE_INIT = np.array([0.6, 0.3, 0.1])
TRUE_TRANS = np.array(
    [
        [0.95, 0.04, 0.01],
        [0.03, 0.94, 0.03],
        [0.02, 0.06, 0.92],
    ]
)
TRUE_LOCS = np.array([-1.5, 0.0, 2.0])
TRUE_SCALES = np.array([0.5, 0.3, 0.8])
NUM_STATES = 3
STATE_COLORS = ("tab:blue", "tab:green", "tab:red")


def make_series(T=300, seed=0):
    """(states, y): a hidden chain from the generating parameters and its
    emissions, as numpy arrays."""
    rng = np.random.default_rng(seed)
    states = np.empty(T, dtype=np.int32)
    states[0] = rng.choice(NUM_STATES, p=TRUE_INIT)
    for t in range(1, T):
        states[t] = rng.choice(NUM_STATES, p=TRUE_TRANS[states[t - 1]])
    y = TRUE_LOCS[states] + TRUE_SCALES[states] * rng.standard_normal(T)
    return states, y.astype(np.float32)


def model(y):
    """p(y) of a K-state HMM with Normal emissions.

    The initial distribution is stored as an extra row of the transition
    table: the chain starts in the pseudo-state K, whose row is the initial
    probabilities, so the whole path x_0 ... x_{T-1} is one scanned site."""
    K = NUM_STATES
    init_probs = probnn.param(
        "init_probs", jnp.full(K, 1.0 / K), constraint=constraints.simplex
    )
    # start sticky (0.8 on the diagonal) and with the means spread over the
    # data's range, so that the states are told apart from the first step
    sticky = 0.8 * jnp.eye(K) + 0.2 / (K - 1) * (1.0 - jnp.eye(K))
    trans_probs = probnn.param("trans_probs", sticky, constraint=constraints.simplex)
    locs = probnn.param("locs", jnp.quantile(y, (jnp.arange(K) + 0.5) / K))
    scales = probnn.param(
        "scales", jnp.full(K, jnp.std(y) / K), constraint=constraints.positive
    )
    table = jnp.concatenate([trans_probs, init_probs[None]], axis=0)

    def step(prev, y_t):
        x = probnn.sample(
            "x", dist.Categorical(probs=table[prev]), infer={"enumerate": "parallel"}
        )
        probnn.sample("y", dist.Normal(locs[x], scales[x]), obs=y_t)
        return x, None

    scan(step, jnp.array(K), y)


def guide(y):
    """Nothing to guess: every latent site is enumerated in the model."""


def viterbi(params, y, key):
    """The most probable state path under the fitted parameters."""
    decoder = infer_discrete(substitute(model, data=params), temperature=0, rng_key=key)
    return np.asarray(trace(decoder).get_trace(y)["x"]["value"])


def match_labels(params):
    """rank[k]: the position of fitted state k when the fitted states are
    sorted by emission mean (the true states are sorted that way already)."""
    order = np.argsort(np.asarray(params["locs"]))
    rank = np.empty(NUM_STATES, dtype=np.int64)
    rank[order] = np.arange(NUM_STATES)
    return order, rank


def plot_states(path, y, true_states, decoded):
    fig, (ax, ax_states) = plt.subplots(
        2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    t = np.arange(len(y))
    ax.plot(t, y, color="0.75", lw=0.8, zorder=1)
    for k in range(NUM_STATES):
        here = decoded == k
        ax.scatter(
            t[here],
            y[here],
            s=10,
            color=STATE_COLORS[k],
            zorder=2,
            label=f"decoded state {k} (true mean {TRUE_LOCS[k]:+.1f})",
        )
    wrong = decoded != true_states
    ax.scatter(
        t[wrong],
        y[wrong],
        s=50,
        facecolors="none",
        edgecolors="k",
        lw=0.8,
        zorder=3,
        label=f"decoded wrongly ({wrong.sum()} of {len(y)})",
    )
    ax.set_ylim(y.min() - 0.5, y.max() + 0.35 * (y.max() - y.min()))  # legend room
    ax.set_ylabel("y")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    ax.set_title("synthetic regime-switching series, coloured by Viterbi state")
    ax_states.step(t, true_states, where="mid", color="k", lw=1.5, label="true")
    ax_states.step(
        t, decoded, where="mid", color="tab:orange", lw=1, ls="--", label="decoded"
    )
    ax_states.set_yticks(range(NUM_STATES))
    ax_states.set_ylim(-0.4, NUM_STATES - 0.1)  # legend room above the top state
    ax_states.set_ylabel("state")
    ax_states.set_xlabel("t")
    ax_states.legend(fontsize=8, loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_loss(path, losses, true_loss, T):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.asarray(losses) / T, label="SVI loss")
    ax.axhline(true_loss / T, color="k", ls=":", label="at the generating parameters")
    ax.set_xlabel("SVI step")
    ax.set_ylabel("-log p(y) per step (nats)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--T", type=int, default=300, help="series length")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0, help="seed of the data")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("hmm_enum_out")
    )
    parser.add_argument("--progress-bar", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    true_states, y_np = make_series(args.T, args.seed)
    y = jnp.asarray(y_np)
    elbo = TraceEnum_ELBO()
    svi = SVI(model, guide, optax.adam(args.learning_rate), elbo)

    start = time.perf_counter()
    result = svi.run(
        jax.random.PRNGKey(args.seed), args.steps, y, progress_bar=args.progress_bar
    )
    losses = np.asarray(jax.block_until_ready(result.losses))
    train_seconds = time.perf_counter() - start
    params = result.params

    # -log p(y) at the fitted and at the generating parameters: maximum
    # likelihood should reach (or beat) the latter
    key = jax.random.PRNGKey(1)
    final_loss = float(elbo.loss(key, params, model, guide, y))
    true_params = {
        "init_probs": jnp.asarray(TRUE_INIT, jnp.float32),
        "trans_probs": jnp.asarray(TRUE_TRANS, jnp.float32),
        "locs": jnp.asarray(TRUE_LOCS, jnp.float32),
        "scales": jnp.asarray(TRUE_SCALES, jnp.float32),
    }
    true_loss = float(elbo.loss(key, true_params, model, guide, y))

    path = viterbi(params, y, jax.random.PRNGKey(2))
    order, rank = match_labels(params)
    decoded = rank[path]
    accuracy = float(np.mean(decoded == true_states))
    # the same decoder at the generating parameters: the best one can hope for
    oracle_accuracy = float(np.mean(viterbi(true_params, y, key) == true_states))

    fitted = {name: np.asarray(value) for name, value in params.items()}
    # local print options: importing or running this must not change numpy's
    with np.printoptions(precision=3, suppress=True):
        print(f"{args.T} points, {args.steps} SVI steps in {train_seconds:.1f} s")
        print(
            f"-log p(y): {losses[0]:.2f} at the start -> {final_loss:.2f} fitted "
            f"({true_loss:.2f} at the generating parameters)"
        )
        print("fitted states, sorted by emission mean; the generating values right:")
        print(f"  means       {fitted['locs'][order]}   {TRUE_LOCS}")
        print(f"  scales      {fitted['scales'][order]}   {TRUE_SCALES}")
        print(f"  initial     {fitted['init_probs'][order]}   {TRUE_INIT}")
        print("  transitions")
        trans = fitted["trans_probs"][np.ix_(order, order)]
        for row, true_row in zip(trans, TRUE_TRANS, strict=True):
            print(f"              {row}   {true_row}")
        print(
            f"Viterbi decoding accuracy: {accuracy:.3f} "
            f"({oracle_accuracy:.3f} with the generating parameters)"
        )

    plot_states(args.out / "states.png", y_np, true_states, decoded)
    plot_loss(args.out / "loss.png", losses, true_loss, args.T)
    print(f"wrote {args.out / 'states.png'} and {args.out / 'loss.png'}")
    return {
        "first_loss": float(losses[0]),
        "final_loss": final_loss,
        "true_params_loss": true_loss,
        "accuracy": accuracy,
        "oracle_accuracy": oracle_accuracy,
        "locs": fitted["locs"][order],
        "scales": fitted["scales"][order],
        "init_probs": fitted["init_probs"][order],
        "trans_probs": trans,
        "train_seconds": train_seconds,
    }


if __name__ == "__main__":
    main()
