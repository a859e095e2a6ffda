"""Enumerated discrete HMM: loss + gradient of TraceEnum_ELBO against a
hand-written forward algorithm, for several ways of writing the same model.

Workload: a hidden Markov chain with K = 8 states over T = 10^4 steps and
Gaussian emissions (one mean per state, fixed scale 1). Parameters: initial
state logits (K,), transition logits (K, K), emission means (K,). The data
(a hidden chain and its emissions) are drawn with numpy from a fixed seed;
the parameters at which the loss is evaluated are fixed random values, away
from the generating ones, so that every gradient entry is non-trivial.

* probnn: the parameters are ``probnn.param`` sites, the hidden state is a
  ``dist.Categorical`` site marked ``infer={"enumerate": "parallel"}`` inside
  ``probnn.control_flow.scan`` and the observation site sits in the same
  body; the guide is empty, so ``TraceEnum_ELBO().loss`` is exactly
  -log p(y). ``jax.jit(jax.value_and_grad(loss))`` with the scan's
  ``enum_method="sequential"`` and ``"parallel"``. The same HMM (same maths,
  parameters and data, so the same value and gradient) is written in
  several forms, each a row ``probnn-<form>-<method>``:

  - ``table``: the initial logits are an extra row of the transition table;
    the chain starts in the pseudo-state K, so the whole chain (x_0
    included) is one scanned site: ``Categorical(logits=table[x_prev])``.
  - ``outside``: the table is normalised outside the body (``log_trans =
    log_softmax(trans_logits, -1)``) and indexed inside it,
    ``Categorical(logits=log_trans[x_prev])``; the initial state is a site
    ``x_0 ~ Categorical(logits=init_logits)`` with its own emission ``y_0``,
    sampled before the scan, which runs over ``y[1:]`` with carry ``x_0``.
  - ``probs``: as ``outside`` with probabilities:
    ``Categorical(probs=softmax(trans_logits, -1)[x_prev])`` and
    ``x_0 ~ Categorical(probs=softmax(init_logits))``.
  - ``inside``: as ``outside`` but the table is normalised inside the body,
    ``Categorical(logits=log_softmax(trans_logits[x_prev], -1))``.
  - ``plates``: NumPyro's examples/hmm_enum.py style: the data as (T, 1),
    one sequence; inside the body ``with plate("sequences", 1, dim=-1)``
    around the state and the observation; the carry is ``(x_prev, t)`` with
    a step counter returned as ``t + 1``; the chain starts, as in ``table``,
    in the pseudo-state K (initial carry ``(full((1,), K), 0)``).
* hand-written: the forward algorithm in log space, one ``lax.scan`` over the
  steps with a logsumexp over the previous state; the same maths, the same
  data and parameters, jitted value_and_grad.
* NumPyro (only when ``funsor`` is importable; the rows are skipped with a
  message otherwise): the ``table`` model with
  ``numpyro.contrib.control_flow.scan``, summed out twice: by
  ``numpyro.contrib.funsor.log_density`` under ``enum`` (what NumPyro's own
  HMM examples use; it agrees with the forward algorithm), and by
  ``numpyro.infer.TraceEnum_ELBO``, whose value on this model (NumPyro 0.22,
  funsor 0.4) differs from the exact -log p(y), already at T = 3. That row
  is kept for its timing; its error columns say how far off it is.

Every implementation runs in a fresh process (none inherits another's
compiled operations). Reported: compile seconds (the first call, tracing
included, minus one steady call; median over ``--processes`` processes),
steady milliseconds per loss + gradient call (median of ``--repeats`` calls,
each ``block_until_ready``), their ratios to the hand-written forward, and
the relative error of each value and gradient against the hand-written one
(float32 by default, where sums over 10^4 steps taken in different orders
differ by ~1e-4; ``--x64`` checks the agreement to ~1e-12).
Targets on CPU: every probnn row steady <= 1.3x hand-written, compile <= 2x.

    python benchmarks/hmm_enum.py [--T 10000] [--K 8] [--repeats 20]
        [--processes 1] [--forms table outside ...] [--methods sequential]
        [--x64] [--json benchmarks/results/hmm_enum.json]
    python benchmarks/hmm_enum.py --impl probnn-outside-parallel  # in-process
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
from _results import write_json

SCALE = 1.0  # emission scale, fixed (not a parameter)
DATA_SEED = 0
# the ways the same HMM is written for probnn (see the module docstring)
FORMS = ("table", "outside", "probs", "inside", "plates")
METHODS = ("sequential", "parallel")  # probnn scan's enum_method
PROBNN_IMPLS = tuple(f"probnn-{form}-{method}" for form in FORMS for method in METHODS)
NUMPYRO_IMPLS = ("numpyro-logdensity", "numpyro-elbo")
IMPLS = ("hand",) + PROBNN_IMPLS + NUMPYRO_IMPLS
# names of the table form's rows before there were other forms
ALIASES = {
    "probnn-sequential": "probnn-table-sequential",
    "probnn-parallel": "probnn-table-parallel",
}


# -- data and parameters ---------------------------------------------------------


def make_data(T: int, K: int):
    """Emissions of a sticky K-state chain, and the parameters to evaluate at.

    Generating chain: uniform initial state, stay with probability 0.9 and
    otherwise jump to a uniformly chosen other state; state k emits
    Normal(2 * (k - (K - 1) / 2), SCALE).
    """
    rng = np.random.default_rng(DATA_SEED)
    stay = 0.9
    trans = np.full((K, K), (1.0 - stay) / max(K - 1, 1))
    np.fill_diagonal(trans, stay if K > 1 else 1.0)
    means = 2.0 * (np.arange(K) - (K - 1) / 2.0)
    states = np.empty(T, dtype=np.int64)
    states[0] = rng.integers(K)
    for t in range(1, T):
        states[t] = rng.choice(K, p=trans[states[t - 1]])
    y = means[states] + SCALE * rng.standard_normal(T)

    # parameters at which loss and gradient are evaluated
    params = {
        "init_logits": rng.normal(size=K),
        "trans_logits": rng.normal(size=(K, K)) + 2.0 * np.eye(K),
        "locs": means + 0.3 * rng.normal(size=K),
    }
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    params = {name: jnp.asarray(value, dtype) for name, value in params.items()}
    return jnp.asarray(y, dtype), params


# -- implementations ---------------------------------------------------------------


def hand_loss_fn(K: int):
    """-log p(y) by the forward algorithm in log space."""
    log_norm = 0.5 * np.log(2.0 * np.pi) + np.log(SCALE)

    def loss(params, y):
        log_init = jax.nn.log_softmax(params["init_logits"])
        log_trans = jax.nn.log_softmax(params["trans_logits"], axis=-1)
        # (T, K): log N(y_t | locs_k, SCALE)
        log_emit = -0.5 * ((y[:, None] - params["locs"]) / SCALE) ** 2 - log_norm

        def step(log_alpha, log_emit_t):
            # log_alpha[j] = log p(y_<=t, x_t = j): sum over the previous state
            prior = jax.nn.logsumexp(log_alpha[:, None] + log_trans, axis=0)
            return prior + log_emit_t, None

        log_alpha, _ = jax.lax.scan(step, log_init + log_emit[0], log_emit[1:])
        return -jax.nn.logsumexp(log_alpha)

    return loss


def ppl_model(ppl, dist, scan, K: int, form: str = "table", enum_method=None):
    """The HMM, written in ``form`` (one of ``FORMS``), as a model of either
    library (probnn or NumPyro), whose APIs agree here; ``enum_method`` only
    for probnn's scan."""
    scan_kwargs = {} if enum_method is None else {"enum_method": enum_method}

    def enumerated():
        # a fresh dict for every site: the libraries write into ``infer``
        return {"enumerate": "parallel"}

    def emit(name, locs, x, y_t):
        ppl.sample(name, dist.Normal(locs[x], SCALE), obs=y_t)

    def params():
        return (
            ppl.param("init_logits", jnp.zeros(K)),
            ppl.param("trans_logits", jnp.zeros((K, K))),
            ppl.param("locs", jnp.zeros(K)),
        )

    def table_model(y):
        # the initial logits are the row of the pseudo-state K
        init_logits, trans_logits, locs = params()
        table = jnp.concatenate([trans_logits, init_logits[None]], axis=0)

        def step(prev, y_t):
            x = ppl.sample(
                "x", dist.Categorical(logits=table[prev]), infer=enumerated()
            )
            emit("y", locs, x, y_t)
            return x, None

        scan(step, jnp.array(K), y, **scan_kwargs)

    def separate_x0_model(y):
        # x_0 its own site before the scan; the scan runs over y[1:]
        init_logits, trans_logits, locs = params()
        if form == "outside":
            log_trans = jax.nn.log_softmax(trans_logits, axis=-1)
            initial = dist.Categorical(logits=init_logits)

            def transition(prev):
                return dist.Categorical(logits=log_trans[prev])

        elif form == "probs":
            trans_probs = jax.nn.softmax(trans_logits, axis=-1)
            initial = dist.Categorical(probs=jax.nn.softmax(init_logits))

            def transition(prev):
                return dist.Categorical(probs=trans_probs[prev])

        else:  # "inside"
            initial = dist.Categorical(logits=init_logits)

            def transition(prev):
                log_row = jax.nn.log_softmax(trans_logits[prev], axis=-1)
                return dist.Categorical(logits=log_row)

        x_0 = ppl.sample("x_0", initial, infer=enumerated())
        emit("y_0", locs, x_0, y[0])

        def step(prev, y_t):
            x = ppl.sample("x", transition(prev), infer=enumerated())
            emit("y", locs, x, y_t)
            return x, None

        scan(step, x_0, y[1:], **scan_kwargs)

    def plates_model(y):
        # NumPyro's examples/hmm_enum.py: a plate of sequences (here one) in
        # the body, a step counter in the carry; starts in pseudo-state K
        init_logits, trans_logits, locs = params()
        table = jnp.concatenate([trans_logits, init_logits[None]], axis=0)

        def step(carry, y_t):
            prev, t = carry
            with ppl.plate("sequences", 1, dim=-1):
                x = ppl.sample(
                    "x", dist.Categorical(logits=table[prev]), infer=enumerated()
                )
                emit("y", locs, x, y_t)
            return (x, t + 1), None

        x_init = jnp.full((1,), K)
        scan(step, (x_init, 0), y[:, None], **scan_kwargs)

    models = {
        "table": table_model,
        "outside": separate_x0_model,
        "probs": separate_x0_model,
        "inside": separate_x0_model,
        "plates": plates_model,
    }
    return models[form]


def empty_guide(y):
    pass


def probnn_loss_fn(K: int, form: str, enum_method: str):
    import probnn
    import probnn.distributions as dist
    from probnn.control_flow import scan
    from probnn.infer import TraceEnum_ELBO

    model = ppl_model(probnn, dist, scan, K, form, enum_method)
    elbo = TraceEnum_ELBO()
    key = jax.random.PRNGKey(0)
    return lambda params, y: elbo.loss(key, params, model, empty_guide, y)


def numpyro_loss_fn(K: int, how: str):
    import funsor  # noqa: F401  (NumPyro's enumeration needs it)
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.control_flow import scan

    model = ppl_model(numpyro, dist, scan, K, "table")
    if how == "elbo":
        from numpyro.infer import TraceEnum_ELBO

        elbo = TraceEnum_ELBO()
        key = jax.random.PRNGKey(0)
        return lambda params, y: elbo.loss(key, params, model, empty_guide, y)

    from numpyro.contrib.funsor import enum, log_density
    from numpyro.handlers import substitute

    def loss(params, y):
        enumerated = enum(substitute(model, data=params), first_available_dim=-1)
        return -log_density(enumerated, (y,), {}, {})[0]

    return loss


def loss_fn(impl: str, K: int):
    impl = ALIASES.get(impl, impl)
    if impl == "hand":
        return hand_loss_fn(K)
    if impl in PROBNN_IMPLS:
        _, form, method = impl.split("-")
        return probnn_loss_fn(K, form, method)
    if impl in NUMPYRO_IMPLS:
        return numpyro_loss_fn(K, impl.split("-", 1)[1])
    raise ValueError(f"unknown implementation {impl!r}")


def measure(impl: str, T: int, K: int, repeats: int) -> dict:
    """First-call and steady seconds of one implementation (call this in a
    fresh process), with its value and gradient."""
    y, params = make_data(T, K)
    jax.block_until_ready((y, params))
    loss = loss_fn(impl, K)  # imports the library outside the timed call
    start = time.perf_counter()
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    value, grads = jax.block_until_ready(value_and_grad(params, y))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(value_and_grad(params, y))
        times.append(time.perf_counter() - start)
    return {
        "first": first,
        "steady": statistics.median(times),
        "value": float(value),
        "grads": {
            name: np.asarray(g, np.float64).tolist() for name, g in grads.items()
        },
    }


# -- driver ------------------------------------------------------------------------


def run_child(impl: str, args) -> dict | str:
    """The measurement of ``impl`` from a fresh process, or why there is none."""
    command = [sys.executable, __file__, "--impl", impl, "--T", str(args.T)]
    command += ["--K", str(args.K), "--repeats", str(args.repeats)]
    command += ["--x64"] if args.x64 else []
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        if impl.startswith("numpyro") and "No module named" in out.stderr:
            missing = out.stderr.strip().splitlines()[-1]
            return f"skipped ({missing}; pip install funsor)"
        errors = [line for line in out.stderr.splitlines() if "Error" in line]
        return "FAILED: " + (errors[-1] if errors else f"exit {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def selected(args) -> tuple:
    """The implementations to run: the hand-written forward, the probnn rows
    of the chosen forms and methods, and NumPyro's rows."""
    probnn_rows = tuple(
        f"probnn-{form}-{method}"
        for form in FORMS
        if form in args.forms
        for method in METHODS
        if method in args.methods
    )
    return ("hand",) + probnn_rows + (() if args.no_numpyro else NUMPYRO_IMPLS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=10_000, help="time steps")
    parser.add_argument("--K", type=int, default=8, help="hidden states")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--processes", type=int, default=1, help="fresh processes per implementation"
    )
    parser.add_argument(
        "--impl",
        choices=("all",) + IMPLS + tuple(ALIASES),
        default="all",
        help="run one implementation in this process and print its JSON",
    )
    parser.add_argument(
        "--forms",
        nargs="+",
        choices=FORMS,
        default=list(FORMS),
        help="the probnn model forms to run (default: all)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        help="the probnn scan enum_methods to run (default: both)",
    )
    parser.add_argument(
        "--no-numpyro", action="store_true", help="leave out the NumPyro rows"
    )
    parser.add_argument(
        "--x64", action="store_true", help="float64 throughout (default float32)"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    if args.impl != "all":
        print(json.dumps(measure(args.impl, args.T, args.K, args.repeats)))
        return None

    impls = selected(args)
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"T={args.T}, K={args.K}, repeats {args.repeats}, "
        f"processes {args.processes}, {'float64' if args.x64 else 'float32'}"
    )
    results, notes = {}, {}
    for impl in impls:
        runs = []
        for _ in range(args.processes):
            run = run_child(impl, args)
            if isinstance(run, str):
                notes[impl] = run
                break
            runs.append(run)
        if impl not in notes:
            results[impl] = {
                "compile": statistics.median(r["first"] - r["steady"] for r in runs),
                "first": statistics.median(r["first"] for r in runs),
                "steady": statistics.median(r["steady"] for r in runs),
                "value": runs[0]["value"],
                "grads": runs[0]["grads"],
            }
        print(f"  done {impl}", file=sys.stderr, flush=True)
    if "hand" not in results:
        raise RuntimeError(f"hand-written forward failed: {notes['hand']}")
    ref = results["hand"]
    for r in results.values():
        r["compile_ratio"] = r["compile"] / ref["compile"]
        r["steady_ratio"] = r["steady"] / ref["steady"]
        r["value_rel_err"] = relative_error(r["value"], ref["value"])
        r["grad_rel_err"] = {
            name: relative_error(g, ref["grads"][name])
            for name, g in r["grads"].items()
        }

    print(f"-log p(y) at the evaluation parameters: {ref['value']:.4f}\n")
    width = max(len(impl) for impl in impls) + 2
    header = f"{'':{width}}{'compile s':>10}{'ratio':>7}{'steady ms':>11}{'ratio':>7}"
    print(header + f"{'value err':>11}{'grad err':>10}")
    for impl in impls:
        if impl in notes:
            print(f"{impl:{width}}{notes[impl]}")
            continue
        r = results[impl]
        grad_err = max(r["grad_rel_err"].values())
        print(
            f"{impl:{width}}{r['compile']:10.2f}{r['compile_ratio']:7.2f}"
            f"{r['steady'] * 1e3:11.2f}{r['steady_ratio']:7.2f}"
            f"{r['value_rel_err']:11.1e}{grad_err:10.1e}"
        )
    print(
        "(hand = hand-written forward; errors: relative to the hand-written "
        "value and gradient, largest over init_logits, trans_logits, locs)"
    )
    # float32 sums over 10^4 steps in different orders differ by ~1e-4
    tolerance = 1e-8 if args.x64 else 1e-3
    print(
        f"targets: steady <= 1.3x, compile <= 2x the hand-written forward; "
        f"value and gradient within {tolerance:g}"
    )
    for impl in impls:
        if impl not in PROBNN_IMPLS:
            continue
        if impl in notes:
            print(f"{impl}: {notes[impl]}")
            continue
        r = results[impl]
        ok = r["value_rel_err"] < tolerance and all(
            err < tolerance for err in r["grad_rel_err"].values()
        )
        verdict = "match" if ok else "MISMATCH"
        steady = "met" if r["steady_ratio"] <= 1.3 else "MISSED"
        compile_ = "met" if r["compile_ratio"] <= 2.0 else "MISSED"
        print(
            f"{impl}: value and gradient {verdict}; steady "
            f"{r['steady_ratio']:.2f}x ({steady}), compile "
            f"{r['compile_ratio']:.2f}x ({compile_})"
        )
    if args.json:
        for r in results.values():
            del r["grads"]
        payload = {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "T": args.T,
            "K": args.K,
            "repeats": args.repeats,
            "processes": args.processes,
            "x64": args.x64,
            "forms": [form for form in FORMS if form in args.forms],
            "methods": [method for method in METHODS if method in args.methods],
            "results": results,
            "notes": notes,
        }
        write_json(args.json, payload)
    return results


if __name__ == "__main__":
    main()
