"""NUTS speed and efficiency: probnn against NumPyro and BlackJAX.

Workloads, one chain each, 500 warmup iterations (step size and mass matrix
adapted, target acceptance 0.8, tree depth at most 10) and 500 kept draws by
default; data are synthetic, drawn with numpy from a fixed seed:

* ``logreg``: Bayesian logistic regression, N = 5000 rows, D = 50
  standard-normal features (true weights Normal(0, 0.5^2), intercept 0.3);
  Normal(0, 1) priors on the 50 weights and the intercept, a Bernoulli
  likelihood on logits in a plate.
* ``eight_schools``: the non-centred eight schools model (mu ~ Normal(0, 5),
  tau ~ HalfCauchy(5), theta_tilde ~ Normal(0, 1) for each school, y ~
  Normal(mu + tau * theta_tilde, sigma)); 10 latent dimensions.
* ``hierarchical``: a varying-intercept regression, 100 groups of 10 rows:
  mu ~ Normal(0, 5), tau ~ HalfNormal(2), beta ~ Normal(0, 2), sigma ~
  HalfNormal(2), raw ~ Normal(0, 1) per group, y ~ Normal(mu + tau * raw[g]
  + beta * x, sigma); 104 latent dimensions.
* ``gp``: GP regression on 60 points, squared-exponential kernel with
  LogNormal amplitude, length scale and noise, the marginal likelihood a
  MultivariateNormal; a dense mass matrix (``dense_mass=True``).
* ``mixture``: a two-component Gaussian mixture on 1000 points: weight ~
  Beta(2, 2), locations Normal(-2, 1) and Normal(2, 1), scale ~
  HalfNormal(2), and a Bernoulli assignment per point summed out by
  enumeration (``infer={"enumerate": "parallel"}``).

Implementations, each in a fresh process (nothing compiled is inherited):

* probnn: ``MCMC(NUTS(model))`` with ``progress_bar=False``.
* NumPyro: the same model source, with numpyro's primitives and distributions.
* BlackJAX (skipped with a message when ``blackjax`` is not importable):
  ``blackjax.window_adaptation`` over ``blackjax.nuts`` on a hand-written log
  density of the same model in the same unconstrained coordinates (positive
  sites through exp, the mixture weight through the logistic function, with
  their Jacobians; the mixture's assignments summed by ``logaddexp``), warmup
  and the sampling ``lax.scan`` in one jitted function taking the data as
  arguments. ``--check`` verifies each hand-written density against probnn's
  potential energy (equal up to a constant, gradients cancelling).

All start from a point drawn uniformly in (-2, 2) in unconstrained space (the
PPLs' ``init_to_uniform``). Reported per implementation (medians over the
processes):

* cold: seconds from building the kernel to the draws being ready, in the
  fresh process: tracing, compilation, warmup and sampling;
* warm: the same run (same key, so the same draws) again in that process,
  compiled code reused where the library keeps it; median of ``--repeats``
  runs. NumPyro 0.22 closes over the model's arguments and compiles its
  sampling loop again on every ``run`` (about 1.5-2.5 s here);
* run: warm seconds less the seconds JAX itself reports (through
  ``jax.monitoring``) spending on tracing, lowering and compiling during the
  call: the sampler's own time, the figure the targets use;
* warm LF / LF: total leapfrog steps over the warmup iterations and over the
  kept draws (the extra field ``num_steps``; BlackJAX's
  ``num_integration_steps``);
* step: the adapted step size; div.: divergent transitions among the draws;
* min ESS: the smallest effective sample size over every scalar latent
  coordinate (constrained values: tau, not log tau), all implementations'
  draws measured by the one ESS implementation named in the output
  (``probnn.diagnostics`` when importable, else ``numpyro.diagnostics``);
* ESS/s: min ESS / run seconds.

Targets: probnn's ESS/s >= 1.2x the better of NumPyro's and BlackJAX's,
probnn's run and cold seconds <= NumPyro's. The minimum ESS of 500 draws
varies widely from key to key (about 1.5x), so quote medians over
``--processes 8`` or more (process p runs with key ``--seed`` + p, every
implementation with the same keys).

    python benchmarks/nuts.py [--workload NAME|all] [--impl all|probnn|numpyro|blackjax]
        [--num-warmup 500] [--num-samples 500] [--processes 1] [--repeats 3]
        [--seed 0] [--json benchmarks/results/nuts.json] [--check]
        [--ess-seeds N]

``--ess-seeds N`` measures no time: each implementation runs keys ``--seed``
to ``--seed`` + N - 1 in one process and the table gives the median and
quartiles of the min ESS, the median step size, and which site the min ESS
fell on; eight keys cannot tell a 15% difference in min ESS from luck, 32
usually can.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from _results import write_json

IMPLS = ("probnn", "numpyro", "blackjax")
WORKLOADS = ("logreg", "eight_schools", "hierarchical", "gp", "mixture")
TITLES = {
    "logreg": "logistic regression, N=5000, D=50",
    "eight_schools": "eight schools, non-centred",
    "hierarchical": "hierarchical regression, 100 groups x 10 rows, non-centred",
    "gp": "GP regression, N=60, dense mass matrix",
    "mixture": "two-component mixture, N=1000, assignments enumerated",
}
DENSE = {"gp"}
LOGREG_N, LOGREG_D, DATA_SEED = 5000, 50, 0
SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], np.float32)
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], np.float32)
GROUPS, PER_GROUP = 100, 10
GP_N = 60
MIXTURE_N = 1000
HALF_LOG_2PI = 0.5 * np.log(2 * np.pi)


# -- data ---------------------------------------------------------------------------


def workload_args(workload):
    """The model's arguments: synthetic data from numpy with a fixed seed."""
    rng = np.random.default_rng(DATA_SEED)
    if workload == "logreg":
        x = rng.standard_normal((LOGREG_N, LOGREG_D))
        weights = 0.5 * rng.standard_normal(LOGREG_D)
        logits = x @ weights + 0.3
        y = (rng.random(LOGREG_N) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return jnp.asarray(x, jnp.float32), jnp.asarray(y)
    if workload == "eight_schools":
        return jnp.asarray(SCHOOLS_SIGMA), jnp.asarray(SCHOOLS_Y)
    if workload == "hierarchical":
        group = np.repeat(np.arange(GROUPS), PER_GROUP)
        x = rng.standard_normal(GROUPS * PER_GROUP)
        effect = 1.0 + 0.7 * rng.standard_normal(GROUPS)
        y = effect[group] + 0.5 * x + 0.8 * rng.standard_normal(group.size)
        return (
            jnp.asarray(group, jnp.int32),
            jnp.asarray(x, jnp.float32),
            jnp.asarray(y, jnp.float32),
        )
    if workload == "gp":
        x = np.sort(rng.uniform(-3.0, 3.0, GP_N))
        y = np.sin(1.5 * x) + 0.2 * rng.standard_normal(GP_N)
        return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    z = rng.random(MIXTURE_N) < 0.3
    y = np.where(z, 2.0, -1.5) + 0.8 * rng.standard_normal(MIXTURE_N)
    return (jnp.asarray(y, jnp.float32),)


def gp_covariance(x, var, length, noise):
    sq = (x[:, None] - x[None, :]) ** 2
    return var * jnp.exp(-0.5 * sq / length**2) + (noise + 1e-6) * jnp.eye(x.shape[0])


# -- the models, for either PPL -------------------------------------------------------


def ppl_model(ppl, dist, workload):
    if workload == "logreg":

        def model(x, y):
            weights = ppl.sample(
                "weights", dist.Normal(jnp.zeros(x.shape[1]), 1.0).to_event(1)
            )
            intercept = ppl.sample("intercept", dist.Normal(0.0, 1.0))
            with ppl.plate("data", x.shape[0]):
                ppl.sample("y", dist.Bernoulli(logits=x @ weights + intercept), obs=y)

        return model

    if workload == "eight_schools":

        def model(sigma, y):
            mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
            tau = ppl.sample("tau", dist.HalfCauchy(5.0))
            with ppl.plate("schools", sigma.shape[0]):
                theta_tilde = ppl.sample("theta_tilde", dist.Normal(0.0, 1.0))
                ppl.sample("y", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)

        return model

    if workload == "hierarchical":

        def model(group, x, y):
            mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
            tau = ppl.sample("tau", dist.HalfNormal(2.0))
            beta = ppl.sample("beta", dist.Normal(0.0, 2.0))
            sigma = ppl.sample("sigma", dist.HalfNormal(2.0))
            with ppl.plate("groups", GROUPS):
                raw = ppl.sample("raw", dist.Normal(0.0, 1.0))
            effect = mu + tau * raw
            with ppl.plate("data", y.shape[0]):
                ppl.sample("y", dist.Normal(effect[group] + beta * x, sigma), obs=y)

        return model

    if workload == "gp":

        def model(x, y):
            var = ppl.sample("var", dist.LogNormal(0.0, 1.0))
            length = ppl.sample("length", dist.LogNormal(0.0, 1.0))
            noise = ppl.sample("noise", dist.LogNormal(-2.0, 1.0))
            cov = gp_covariance(x, var, length, noise)
            ppl.sample(
                "y",
                dist.MultivariateNormal(jnp.zeros(x.shape[0]), covariance_matrix=cov),
                obs=y,
            )

        return model

    def model(y):
        weight = ppl.sample("weight", dist.Beta(2.0, 2.0))
        loc0 = ppl.sample("loc0", dist.Normal(-2.0, 1.0))
        loc1 = ppl.sample("loc1", dist.Normal(2.0, 1.0))
        scale = ppl.sample("scale", dist.HalfNormal(2.0))
        locs = jnp.stack([loc0, loc1])
        with ppl.plate("data", y.shape[0]):
            z = ppl.sample("z", dist.Bernoulli(weight), infer={"enumerate": "parallel"})
            ppl.sample("y", dist.Normal(locs[z], scale), obs=y)

    return model


def warm_seconds(fn, repeats):
    """Median over ``repeats`` calls of ``fn`` of (wall seconds, wall seconds
    less the time JAX reports spending on tracing, lowering and compiling
    during the call), and the last call's output."""
    walls, runs = [], []
    for _ in range(repeats):
        COMPILE_SECONDS[0] = 0.0
        start = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - start
        walls.append(wall)
        runs.append(wall - COMPILE_SECONDS[0])
    return statistics.median(walls), statistics.median(runs), out


COMPILE_SECONDS = [0.0]
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def count_compile_seconds(event, seconds, **_):
    if event in COMPILE_EVENTS:
        COMPILE_SECONDS[0] += seconds


jax.monitoring.register_event_duration_secs_listener(count_compile_seconds)


MEASURED = (
    "import",
    "cold",
    "warm",
    "run",
    "samples",
    "leapfrog",
    "warmup_leapfrog",
    "step_size",
    "divergences",
)


def measurement(*values):
    """One implementation's figures, keyed as ``MEASURED`` names them."""
    return dict(zip(MEASURED, values, strict=True))


def run_ppl(name, workload, args, num_warmup, num_samples, seed, repeats):
    start = time.perf_counter()
    ppl = importlib.import_module(name)
    dist = importlib.import_module(f"{name}.distributions")
    infer = importlib.import_module(f"{name}.infer")
    import_seconds = time.perf_counter() - start
    model = ppl_model(ppl, dist, workload)
    key = jax.random.PRNGKey(seed)
    fields = ("num_steps", "diverging")

    def once(mcmc):
        mcmc.run(key, *args, extra_fields=fields)
        return jax.block_until_ready((mcmc.get_samples(), mcmc.get_extra_fields()))

    start = time.perf_counter()
    mcmc = infer.MCMC(
        infer.NUTS(model, dense_mass=workload in DENSE),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=1,
        progress_bar=False,
    )
    once(mcmc)
    cold = time.perf_counter() - start
    warm, run, (samples, extra) = warm_seconds(lambda: once(mcmc), repeats)
    step_size = float(mcmc.last_state.adapt_state.step_size)
    # the warmup phase of the same key again, untimed, for its leapfrog count
    mcmc.warmup(key, *args, extra_fields=fields, collect_warmup=True)
    warmup_steps = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
    counts = (int(np.sum(extra["num_steps"])), warmup_steps, step_size)
    divergences = int(np.sum(extra["diverging"]))
    timing = (import_seconds, cold, warm, run)
    return measurement(*timing, samples, *counts, divergences)


# -- BlackJAX, on hand-written log densities ------------------------------------------


def normal_lpdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - HALF_LOG_2PI


def half_normal_log_in_log_space(log_x, scale):
    """log density of log(x) for x ~ HalfNormal(scale): the Jacobian adds log x."""
    x = jnp.exp(log_x)
    return normal_lpdf(x, 0.0, scale) + jnp.log(2.0) + log_x


def log_density(workload):
    """The model's log joint density, with the data as trailing arguments, in
    the unconstrained coordinates the PPLs sample (keyed by site name: a
    positive site's entry is its log, the weight's its logit), and the map
    from those coordinates to the values reported."""
    if workload == "logreg":

        def logdensity(position, x, y):
            w, b = position["weights"], position["intercept"]
            logits = x @ w + b
            log_lik = jnp.sum(y * logits - jax.nn.softplus(logits))
            return log_lik - 0.5 * (jnp.sum(w * w) + b * b)

        return logdensity, lambda position: position

    if workload == "eight_schools":

        def logdensity(position, sigma, y):
            mu, log_tau = position["mu"], position["tau"]
            theta_tilde = position["theta_tilde"]
            tau = jnp.exp(log_tau)
            log_prior = (
                -0.5 * (mu / 5.0) ** 2
                - jnp.log1p((tau / 5.0) ** 2)  # HalfCauchy(5), up to a constant
                + log_tau  # Jacobian of tau = exp(log_tau)
                - 0.5 * jnp.sum(theta_tilde**2)
            )
            resid = (y - mu - tau * theta_tilde) / sigma
            return log_prior - 0.5 * jnp.sum(resid**2)

        def constrain(position):
            return {**position, "tau": jnp.exp(position["tau"])}

        return logdensity, constrain

    if workload == "hierarchical":

        def logdensity(position, group, x, y):
            mu, beta, raw = position["mu"], position["beta"], position["raw"]
            tau, sigma = jnp.exp(position["tau"]), jnp.exp(position["sigma"])
            log_prior = (
                normal_lpdf(mu, 0.0, 5.0)
                + normal_lpdf(beta, 0.0, 2.0)
                + half_normal_log_in_log_space(position["tau"], 2.0)
                + half_normal_log_in_log_space(position["sigma"], 2.0)
                + jnp.sum(normal_lpdf(raw, 0.0, 1.0))
            )
            mean = (mu + tau * raw)[group] + beta * x
            return log_prior + jnp.sum(normal_lpdf(y, mean, sigma))

        def constrain(position):
            tau, sigma = jnp.exp(position["tau"]), jnp.exp(position["sigma"])
            return {**position, "tau": tau, "sigma": sigma}

        return logdensity, constrain

    if workload == "gp":

        def logdensity(position, x, y):
            # LogNormal(m, 1) on v is Normal(m, 1) on log v, Jacobian included
            log_prior = (
                normal_lpdf(position["var"], 0.0, 1.0)
                + normal_lpdf(position["length"], 0.0, 1.0)
                + normal_lpdf(position["noise"], -2.0, 1.0)
            )
            var, length, noise = (
                jnp.exp(position[k]) for k in ("var", "length", "noise")
            )
            chol = jnp.linalg.cholesky(gp_covariance(x, var, length, noise))
            white = jax.scipy.linalg.solve_triangular(chol, y, lower=True)
            log_lik = (
                -0.5 * jnp.sum(white**2)
                - jnp.sum(jnp.log(jnp.diagonal(chol)))
                - x.shape[0] * HALF_LOG_2PI
            )
            return log_prior + log_lik

        return logdensity, lambda position: jax.tree.map(jnp.exp, position)

    def logdensity(position, y):
        u = position["weight"]
        log_w, log_1mw = jax.nn.log_sigmoid(u), jax.nn.log_sigmoid(-u)
        scale = jnp.exp(position["scale"])
        # Beta(2, 2) is 6 w (1 - w); the logit's Jacobian is w (1 - w)
        log_prior = (
            jnp.log(6.0)
            + 2.0 * (log_w + log_1mw)
            + normal_lpdf(position["loc0"], -2.0, 1.0)
            + normal_lpdf(position["loc1"], 2.0, 1.0)
            + half_normal_log_in_log_space(position["scale"], 2.0)
        )
        # z = 1 (probability weight) picks loc1, z = 0 picks loc0
        log_mix = jnp.logaddexp(
            log_1mw + normal_lpdf(y, position["loc0"], scale),
            log_w + normal_lpdf(y, position["loc1"], scale),
        )
        return log_prior + jnp.sum(log_mix)

    def constrain(position):
        weight = jax.nn.sigmoid(position["weight"])
        return {**position, "weight": weight, "scale": jnp.exp(position["scale"])}

    return logdensity, constrain


def site_shapes(workload):
    return {
        "logreg": {"weights": (LOGREG_D,), "intercept": ()},
        "eight_schools": {"mu": (), "tau": (), "theta_tilde": (len(SCHOOLS_Y),)},
        "hierarchical": {
            "mu": (),
            "tau": (),
            "beta": (),
            "sigma": (),
            "raw": (GROUPS,),
        },
        "gp": {"var": (), "length": (), "noise": ()},
        "mixture": {"weight": (), "loc0": (), "loc1": (), "scale": ()},
    }[workload]


def initial_position(workload, key):
    shapes = site_shapes(workload)
    keys = jax.random.split(key, len(shapes))
    return {
        name: jax.random.uniform(k, shape, minval=-2.0, maxval=2.0)
        for k, (name, shape) in zip(keys, sorted(shapes.items()))
    }


def blackjax_sampler(workload, num_warmup, num_samples):
    """``(key, data) -> (draws, (leapfrogs, warmup leapfrogs, divergences),
    step size)``: BlackJAX's window adaptation then NUTS, not yet compiled."""
    import blackjax

    logdensity_with_data, constrain = log_density(workload)

    def sample(key, data):
        logdensity = lambda position: logdensity_with_data(position, *data)
        key_init, key_warmup, key_sample = jax.random.split(key, 3)
        adaptation = blackjax.window_adaptation(
            blackjax.nuts,
            logdensity,
            is_mass_matrix_diagonal=workload not in DENSE,
            target_acceptance_rate=0.8,
        )
        (state, parameters), (_, warmup_info, _) = adaptation.run(
            key_warmup, initial_position(workload, key_init), num_steps=num_warmup
        )
        step = blackjax.nuts(logdensity, **parameters).step

        def one_draw(state, key):
            state, info = step(key, state)
            kept = (state.position, info.num_integration_steps, info.is_divergent)
            return state, kept

        keys = jax.random.split(key_sample, num_samples)
        _, (positions, steps, divergent) = jax.lax.scan(one_draw, state, keys)
        counts = (
            jnp.sum(steps),
            jnp.sum(warmup_info.num_integration_steps),
            jnp.sum(divergent),
        )
        return jax.vmap(constrain)(positions), counts, parameters["step_size"]

    return sample


def run_blackjax(workload, args, num_warmup, num_samples, seed, repeats):
    start = time.perf_counter()
    import blackjax  # noqa: F401

    import_seconds = time.perf_counter() - start
    sample = blackjax_sampler(workload, num_warmup, num_samples)
    key = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    compiled = jax.jit(sample)
    jax.block_until_ready(compiled(key, args))
    cold = time.perf_counter() - start
    warm, run, (samples, counts, step_size) = warm_seconds(
        lambda: jax.block_until_ready(compiled(key, args)), repeats
    )
    steps, warmup_steps, divergent = (int(c) for c in counts)
    timing = (import_seconds, cold, warm, run)
    counts = (steps, warmup_steps, float(step_size))
    return measurement(*timing, samples, *counts, divergent)


def check_log_densities():
    """The hand-written log densities against probnn's potential energy:
    their sum must be one constant at random points (up to float32 rounding),
    and their gradients must cancel."""
    import probnn
    import probnn.distributions as dist
    from probnn.infer.util import initialize_model

    for workload in WORKLOADS:
        args = workload_args(workload)
        model = ppl_model(probnn, dist, workload)
        info = initialize_model(jax.random.PRNGKey(0), model, model_args=args)
        hand, _ = log_density(workload)
        sums, grads, sizes = [], [], []

        def hand_at(z, hand=hand, args=args):
            return hand(z, *args)

        def total(z, potential=info.potential_fn, hand_at=hand_at):
            return potential(z) + hand_at(z)

        for k in range(4):
            z = initial_position(workload, jax.random.PRNGKey(k))
            sums.append(float(total(z)))
            sizes.append(abs(float(info.potential_fn(z))))
            grad = jax.grad(total)(z)
            scale = jax.grad(hand_at)(z)
            size = max(float(jnp.max(jnp.abs(g))) for g in scale.values())
            grads.append(
                max(float(jnp.max(jnp.abs(g))) for g in grad.values()) / max(size, 1.0)
            )
        spread = max(sums) - min(sums)
        print(
            f"  {workload:14} log density + potential spread (relative)"
            f" {spread / max(sizes):.2e},"
            f" largest gradient sum (relative) {max(grads):.2e}"
        )
        assert spread < 1e-5 * max(sizes) and max(grads) < 1e-4, workload


# -- one measurement, in a fresh process --------------------------------------------


def measure(impl, workload, num_warmup, num_samples, seed, repeats):
    args = jax.block_until_ready(workload_args(workload))
    runner = run_blackjax if impl == "blackjax" else partial(run_ppl, impl)
    out = runner(workload, args, num_warmup, num_samples, seed, repeats)
    samples = out.pop("samples")
    out["samples"] = {
        k: np.asarray(v, np.float64).tolist() for k, v in samples.items() if k != "z"
    }
    return out


def sampler_statistics(impl, workload, num_warmup, num_samples, seeds):
    """Per key (no timing): the draws' min ESS, the coordinate it falls on,
    and the adapted step size, each implementation compiling once where it
    can (NumPyro compiles every run)."""
    args = jax.block_until_ready(workload_args(workload))
    ess, _ = ess_function()
    if impl == "blackjax":
        compiled = jax.jit(blackjax_sampler(workload, num_warmup, num_samples))

        def one(key):
            samples, _, step_size = compiled(key, args)
            return samples, step_size

    else:
        ppl = importlib.import_module(impl)
        dist = importlib.import_module(f"{impl}.distributions")
        infer = importlib.import_module(f"{impl}.infer")
        mcmc = infer.MCMC(
            infer.NUTS(ppl_model(ppl, dist, workload), dense_mass=workload in DENSE),
            num_warmup=num_warmup,
            num_samples=num_samples,
            progress_bar=False,
        )

        def one(key):
            mcmc.run(key, *args)
            return mcmc.get_samples(), mcmc.last_state.adapt_state.step_size

    out = []
    for seed in seeds:
        samples, step_size = one(jax.random.PRNGKey(seed))
        samples = {k: v for k, v in samples.items() if k != "z"}
        lowest = {k: min_ess({k: v}, ess) for k, v in samples.items()}
        site = min(lowest, key=lowest.get)
        out.append(
            {"min_ess": lowest[site], "site": site, "step_size": float(step_size)}
        )
    return out


def run_ess_study(workload, impls, args):
    """``--ess-seeds N``: sampler statistics over N keys per implementation
    (one process each), medians and quartiles."""
    print(
        f"\n{TITLES[workload]}: min ESS over {args.ess_seeds} keys"
        f" (from {args.seed}), {args.num_warmup} warmup + {args.num_samples} draws"
    )
    report = {}
    for impl in impls:
        command = [sys.executable, __file__, "--child-ess", impl]
        command += ["--workload", workload, "--seed", str(args.seed)]
        command += ["--ess-seeds", str(args.ess_seeds)]
        command += ["--num-warmup", str(args.num_warmup)]
        command += ["--num-samples", str(args.num_samples)]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"  {impl:10}FAILED: {out.stderr.strip().splitlines()[-1:]}")
            continue
        runs = json.loads(out.stdout.strip().splitlines()[-1])
        values = np.array([r["min_ess"] for r in runs])
        steps = np.array([r["step_size"] for r in runs])
        sites = sorted({r["site"] for r in runs})
        counts = ", ".join(
            f"{site} {sum(r['site'] == site for r in runs)}" for site in sites
        )
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        print(
            f"  {impl:10} min ESS median {median:6.1f} (quartiles {q1:.1f}-{q3:.1f}),"
            f" step median {np.median(steps):.3f}; lowest at: {counts}"
        )
        report[impl] = {"median_min_ess": median, "runs": runs}
    return report


def run_child(impl, workload, args, seed):
    command = [sys.executable, __file__, "--child", impl, "--workload", workload]
    command += ["--num-warmup", str(args.num_warmup), "--repeats", str(args.repeats)]
    command += ["--num-samples", str(args.num_samples), "--seed", str(seed)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        if "No module named" in out.stderr:
            missing = out.stderr.strip().splitlines()[-1]
            return f"skipped ({missing})"
        errors = [line for line in out.stderr.splitlines() if "Error" in line]
        return "FAILED: " + (errors[-1] if errors else f"exit {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- ESS, one implementation for everybody ------------------------------------------


def ess_function():
    try:
        from probnn.diagnostics import effective_sample_size

        return effective_sample_size, "probnn.diagnostics.effective_sample_size"
    except ImportError:
        from numpyro.diagnostics import effective_sample_size

        return effective_sample_size, "numpyro.diagnostics.effective_sample_size"


def min_ess(samples, ess):
    """Smallest ESS over every scalar coordinate of every site (one chain)."""
    values = []
    for draws in samples.values():
        draws = np.asarray(draws, np.float64)
        values.append(np.min(np.asarray(ess(draws[None]))))
    return float(min(values))


# -- driver ---------------------------------------------------------------------------


COLUMNS = (
    ("cold", "cold s", "9.2f"),
    ("warm", "warm s", "9.2f"),
    ("run", "run s", "8.2f"),
    ("warmup_leapfrog", "warm LF", "9.0f"),
    ("leapfrog", "LF", "7.0f"),
    ("step_size", "step", "8.3f"),
    ("divergences", "div.", "6.0f"),
    ("min_ess", "min ESS", "9.0f"),
    ("ess_per_s", "ESS/s", "9.0f"),
)


def run_workload(workload, impls, args, ess):
    results, notes = {}, {}
    runs = {impl: [] for impl in impls}
    # key by key, every implementation in turn: a slow spell of the machine
    # then falls on all of them alike
    for process in range(args.processes):
        for impl in impls:
            if impl in notes:
                continue
            run = run_child(impl, workload, args, args.seed + process)
            if isinstance(run, str):
                notes[impl] = run
                continue
            run["min_ess"] = min_ess(run.pop("samples"), ess)
            run["ess_per_s"] = run["min_ess"] / run["run"]
            runs[impl].append(run)
    for impl in impls:
        if impl not in notes:
            first = runs[impl][0]
            results[impl] = {
                key: statistics.median(r[key] for r in runs[impl]) for key in first
            }
            results[impl]["runs"] = runs[impl]

    print(
        f"\n{TITLES[workload]}: {args.num_warmup} warmup + {args.num_samples} draws,"
        f" 1 chain (median of {args.processes} process(es))"
    )
    header = "".join(f"{title:>{int(fmt.split('.')[0])}}" for _, title, fmt in COLUMNS)
    print(f"  {'':10}{header}")
    for impl in impls:
        if impl in notes:
            print(f"  {impl:10}{notes[impl]}")
            continue
        cells = "".join(f"{results[impl][key]:{fmt}}" for key, _, fmt in COLUMNS)
        print(f"  {impl:10}{cells}")
    verdicts = {}
    if "probnn" in results:
        probnn = results["probnn"]
        others = [i for i in ("numpyro", "blackjax") if i in results]
        if others:
            best = max(results[i]["ess_per_s"] for i in others)
            ratio = probnn["ess_per_s"] / best
            verdicts["ess_per_s_ratio"] = ratio
            verdict = "met" if ratio >= 1.2 else "MISSED"
            print(
                f"  probnn ESS/s / best other: {ratio:.2f}x (target >= 1.2x, {verdict})"
            )
        if "numpyro" in results:
            for key in ("run", "cold"):
                ratio = probnn[key] / results["numpyro"][key]
                verdicts[f"{key}_ratio"] = ratio
                verdict = "met" if ratio <= 1.0 else "MISSED"
                print(
                    f"  probnn {key} s / NumPyro {key} s: {ratio:.2f}x"
                    f" (target <= 1x, {verdict})"
                )
    return {"results": results, "notes": notes, "verdicts": verdicts}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=WORKLOADS + ("all",), default="all")
    parser.add_argument("--impl", choices=IMPLS + ("all",), default="all")
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument(
        "--processes", type=int, default=1, help="fresh processes per implementation"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="warm runs per process (median)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="MCMC key of the first process"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check BlackJAX's hand-written log densities against probnn's",
    )
    parser.add_argument(
        "--ess-seeds",
        type=int,
        help="only sampler statistics (min ESS, step size) over this many keys",
    )
    parser.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--child-ess", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_ess:
        seeds = range(args.seed, args.seed + args.ess_seeds)
        out = sampler_statistics(
            args.child_ess, args.workload, args.num_warmup, args.num_samples, seeds
        )
        print(json.dumps(out))
        return None
    if args.child:
        workload = "logreg" if args.workload == "all" else args.workload
        out = measure(
            args.child,
            workload,
            args.num_warmup,
            args.num_samples,
            args.seed,
            args.repeats,
        )
        print(json.dumps(out))
        return None

    if args.check:
        print("hand-written log densities against probnn's potential energy:")
        check_log_densities()
        return None

    ess, ess_name = ess_function()
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{jax.device_count()} device(s); ESS by {ess_name}"
    )
    impls = IMPLS if args.impl == "all" else (args.impl,)
    workloads = WORKLOADS if args.workload == "all" else (args.workload,)
    if args.ess_seeds:
        report = {w: run_ess_study(w, impls, args) for w in workloads}
    else:
        report = {w: run_workload(w, impls, args, ess) for w in workloads}
    if args.json:
        payload = {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "num_warmup": args.num_warmup,
            "num_samples": args.num_samples,
            "processes": args.processes,
            "seed": args.seed,
            "repeats": args.repeats,
            "ess": ess_name,
            "workloads": report,
        }
        write_json(args.json, payload)
    return report


if __name__ == "__main__":
    main()
