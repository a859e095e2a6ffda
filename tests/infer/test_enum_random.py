"""Differential tests of exact enumeration on generated HMM-like models.

A hypothesis strategy draws a small *spec* of a discrete model written with
``probnn.control_flow.scan``: one to three enumerated Categorical sites per
step, each reading some of the previous one or two steps' values (through the
carry) and some of the current step's earlier sites; an optional global
enumerated site used inside the body, or as the initial carry (an initial
state sampled before the scan); no plate, a plate around the scan call
or a plate inside the body (at dim -1 or -2, with an optional nested "tones"
plate for the observation only, as in NumPyro's hmm_enum model_1);
``handlers.mask`` over some steps (a mask series passed through ``xs`` or a
``t < length`` test on a counter in the carry); a counter and a float in the
carry next to the enumerated values; ``reverse``; ``history`` 1 or 2; Normal,
Bernoulli or Categorical observations.

:func:`build_model` turns a spec into a probnn model (its tables are
``probnn.param`` sites), and :class:`BruteForce` scores, independently of
probnn, every assignment of the discrete latents straight from the spec, with
``itertools.product`` and numpy in float64. Masked sites follow NumPyro's
semantics, which differ between its two APIs: for ``log_density`` a masked
log factor is 0 for every value, nothing is removed, so a masked enumerated
site contributes a sum over its values of 1 times whatever depends on it;
for ``TraceEnum_ELBO`` a masked enumerated site keeps its own density (it
sums to one) and only the factors of the sites it feeds are masked. Plate
members are independent chains given the global site, so the brute force
lists the assignments of one chain (at most ``MAX_ASSIGNMENTS``) and
combines the chains exactly. Its gradient is the
posterior expectation of the gradient of the log joint (Fisher's identity),
written out factor by factor.

Checked against the brute force: ``log_density`` (enumerated sites summed
out), the ``TraceEnum_ELBO`` loss and its gradient with respect to every
parameter table, the MAP assignment of ``infer_discrete(temperature=0)`` (its
log joint must reach the maximum; the assignment itself must be the argmax
when that beats the runner-up by ``TIE_MARGIN``), and, for two fixed tiny
structures, the frequencies of ``infer_discrete(temperature=1)`` draws.
Each check runs once per plate placement; ``HYPOTHESIS_PROFILE=explore``
draws ten times as many fresh structures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import probnn
import probnn.distributions as dist
from probnn.control_flow import scan
from probnn.handlers import mask, trace
from probnn.infer import TraceEnum_ELBO, infer_discrete
from probnn.infer.util import log_density

PARALLEL = {"enumerate": "parallel"}
KEY = jax.random.PRNGKey(0)
RTOL = 1e-4
ATOL = 1e-4
# most joint assignments of one chain's latents that a spec may have
MAX_ASSIGNMENTS = 1024
# decoded assignments are compared exactly only when the best joint log
# probability beats the runner-up by this much
TIE_MARGIN = 1e-3
OBS_SCALE = 0.8
FLOAT_WEIGHT = 0.3

# the explore profile (HYPOTHESIS_PROFILE=explore) searches ten times as
# many fresh structures as CI's fixed set
SEARCH = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "explore" else 1
# where the plate sits: none, around the scan call, declared inside the body
# (each test runs once per placement, so that workers share the examples)
PLATES = ["none", "outer", "inner"]
SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Site:
    """One enumerated Categorical site of the scan body.

    ``parents``: ``("g", 0)`` for the global site, ``(j, 0)`` for site j of
    the current step (j < own index), ``(j, lag)`` for site j ``lag`` steps
    back (through the carry; 0 before the first step). The site's table has
    one row per joint value of the parents (row-major in parent order).
    ``param``: ``"logits"`` (``logits=table[idx]``), ``"probs_outside"``
    (table normalised before the scan, ``probs=table[idx]``) or
    ``"probs_inside"`` (``exp(table)[idx]`` normalised in the body)."""

    K: int
    parents: tuple
    param: str
    masked: bool


@dataclasses.dataclass(frozen=True)
class Spec:
    T: int
    history: int
    reverse: bool
    enum_method: str | None
    sites: tuple
    global_K: int  # 0: no global site
    obs: str  # "normal" | "bernoulli_logits" | "bernoulli_probs" | "categorical"
    obs_C: int  # categories of a categorical observation
    obs_parents: tuple  # ("g", 0) or (j, 0) entries
    obs_masked: bool
    plate: str  # "none" | "outer" (around the scan call) | "inner" (in the body)
    plate_dim: int  # -1 or -2
    P: int  # plate size
    tones: int  # 0, or size of a nested plate (dim -1) around the observation
    mask: str  # "none" | "xs" | "counter"
    mask_per_member: bool  # the mask differs between plate members
    counter: bool  # the carry holds a step counter t
    float_carry: bool  # the carry holds a float that shifts the observation
    seed: int
    # the lags start at the global site's value (mod each site's K) instead
    # of 0: an initial state sampled before the scan, passed as its carry
    init_global: bool = False


def parent_size(spec: Spec, parent) -> int:
    name, _ = parent
    return spec.global_K if name == "g" else spec.sites[name].K


def num_rows(spec: Spec, parents) -> int:
    return math.prod(parent_size(spec, p) for p in parents)


def chains(spec: Spec) -> int:
    """Independent chains: the plate's members."""
    return spec.P if spec.plate != "none" else 1


def plate_shape(spec: Spec) -> tuple:
    """Batch shape of a latent site of the body."""
    if spec.plate == "none":
        return ()
    return (spec.P,) if spec.plate_dim == -1 else (spec.P, 1)


def obs_shape(spec: Spec) -> tuple:
    """Shape of one step's observation."""
    if spec.tones:
        return (spec.P, spec.tones)
    return plate_shape(spec)


def mask_shape(spec: Spec) -> tuple:
    return plate_shape(spec) if spec.mask_per_member else ()


@st.composite
def specs(draw, plate=None):
    num_sites = draw(st.integers(1, 3))
    global_K = draw(st.sampled_from([0, 2, 3]))
    init_global = global_K > 0 and draw(st.sampled_from([True, True, False]))
    # sites of the global site's size take its value as their initial state
    # unchanged (so the scan can start its loop at the first step)
    same_K = init_global and draw(st.sampled_from([True, True, False]))
    Ks = [global_K if same_K else draw(st.integers(2, 3)) for _ in range(num_sites)]
    per_step = math.prod(Ks)
    max_T = 1
    while per_step ** (max_T + 1) <= MAX_ASSIGNMENTS and max_T < 5:
        max_T += 1
    T = draw(st.integers(1, max_T))
    history = draw(st.sampled_from([1, 2]))
    masking = draw(st.sampled_from(["none", "xs", "counter"]))

    sites = []
    for i, K in enumerate(Ks):
        candidates = [
            (j, lag) for lag in range(1, history + 1) for j in range(num_sites)
        ]
        candidates += [(j, 0) for j in range(i)]
        if global_K:
            candidates.append(("g", 0))
        parents = tuple(
            draw(st.lists(st.sampled_from(candidates), unique=True, max_size=3))
        )
        param = draw(st.sampled_from(["logits", "probs_outside", "probs_inside"]))
        masked = masking != "none" and draw(st.booleans())
        sites.append(Site(K, parents, param, masked))

    obs_candidates = [(j, 0) for j in range(num_sites)]
    if global_K:
        obs_candidates.append(("g", 0))
    obs_parents = tuple(
        draw(
            st.lists(
                st.sampled_from(obs_candidates), unique=True, min_size=1, max_size=3
            )
        )
    )
    obs = draw(
        st.sampled_from(
            ["normal", "bernoulli_logits", "bernoulli_probs", "categorical"]
        )
    )
    obs_C = draw(st.integers(2, 3)) if obs == "categorical" else 0
    obs_masked = masking != "none" and draw(st.booleans())

    if plate is None:
        plate = draw(st.sampled_from(PLATES))
    plate_dim, P, tones, per_member = -1, 1, 0, False
    if plate != "none":
        plate_dim = draw(st.sampled_from([-1, -2]))
        P = draw(st.integers(1, 3))
        if plate_dim == -2:
            tones = draw(st.integers(0, 3))
        per_member = masking != "none" and draw(st.booleans())
    counter = masking == "counter" or draw(st.booleans())
    return Spec(
        T=T,
        history=history,
        reverse=draw(st.booleans()),
        enum_method=draw(st.sampled_from([None, "sequential", "parallel"])),
        sites=tuple(sites),
        global_K=global_K,
        obs=obs,
        obs_C=obs_C,
        obs_parents=obs_parents,
        obs_masked=obs_masked,
        plate=plate,
        plate_dim=plate_dim,
        P=P,
        tones=tones,
        mask=masking,
        mask_per_member=per_member,
        counter=counter,
        float_carry=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
        init_global=init_global,
    )


# ---------------------------------------------------------------------------
# parameters and data of a spec
# ---------------------------------------------------------------------------


def make_params(spec: Spec, rng) -> dict:
    """Raw (unconstrained) tables, by param site name."""
    params = {}
    for i, site in enumerate(spec.sites):
        shape = (num_rows(spec, site.parents), site.K)
        params[f"w_x{i}"] = 1.5 * rng.standard_normal(shape)
    if spec.global_K:
        params["w_g"] = rng.standard_normal((spec.global_K,))
    shape = (num_rows(spec, spec.obs_parents),)
    if spec.tones:
        shape += (spec.tones,)
    if spec.obs == "categorical":
        shape += (spec.obs_C,)
    params["w_y"] = 1.5 * rng.standard_normal(shape)
    return {
        name: jnp.asarray(value, dtype=jnp.float32) for name, value in params.items()
    }


def make_data(spec: Spec, rng) -> dict:
    """The scanned series (index order) and the constants of the model."""
    T = spec.T
    shape = (T,) + obs_shape(spec)
    if spec.obs == "normal":
        y = jnp.asarray(1.5 * rng.standard_normal(shape), dtype=jnp.float32)
    elif spec.obs.startswith("bernoulli"):
        y = jnp.asarray(rng.integers(0, 2, shape), dtype=jnp.float32)
    else:
        y = jnp.asarray(rng.integers(0, spec.obs_C, shape), dtype=jnp.int32)
    data = {"xs": {"y": y}}
    if spec.mask == "xs":
        data["xs"]["m"] = jnp.asarray(rng.random((T,) + mask_shape(spec)) < 0.6)
    if spec.mask == "counter":
        data["lengths"] = jnp.asarray(
            rng.integers(0, T + 1, mask_shape(spec)), dtype=jnp.int32
        )
    if spec.float_carry:
        data["xs"]["u"] = jnp.asarray(rng.standard_normal((T,)), dtype=jnp.float32)
    return data


def make_example(spec: Spec):
    rng = np.random.default_rng(spec.seed)
    return make_params(spec, rng), make_data(spec, rng)


# ---------------------------------------------------------------------------
# the probnn model of a spec
# ---------------------------------------------------------------------------


def combine(values, sizes):
    """Row index of the parents' joint value (row-major); 0 without parents."""
    idx = 0
    for value, size in zip(values, sizes, strict=True):
        idx = idx * size + value
    return idx


def optional(flag, make):
    return make() if flag else contextlib.nullcontext()


def build_model(spec: Spec, init_params: dict):
    """``model(data)`` with the parameter tables as ``probnn.param`` sites
    (initialised to ``init_params``)."""
    n = len(spec.sites)

    def model(data):
        w = {name: probnn.param(name, value) for name, value in init_params.items()}
        tables = []
        for i, site in enumerate(spec.sites):
            raw = w[f"w_x{i}"]
            if site.param == "probs_outside":
                tables.append(jax.nn.softmax(raw, axis=-1))
            elif site.param == "probs_inside":
                tables.append(jnp.exp(raw))
            else:
                tables.append(raw)
        g = None
        if spec.global_K:
            g = probnn.sample("g", dist.Categorical(logits=w["w_g"]), infer=PARALLEL)

        def body(carry, x):
            lags = carry["lags"]  # lags[l - 1][j]: site j, l steps back
            keep = None
            if spec.mask == "xs":
                keep = x["m"]
            elif spec.mask == "counter":
                keep = carry["t"] < data["lengths"]
            f = None
            if spec.float_carry:
                f = 0.5 * carry["f"] + x["u"]

            def value_of(parent, current):
                name, lag = parent
                if name == "g":
                    return g
                return current[name] if lag == 0 else lags[lag - 1][name]

            inner = spec.plate == "inner"
            with optional(
                inner, lambda: probnn.plate("seq", spec.P, dim=spec.plate_dim)
            ):
                current = []
                for i, site in enumerate(spec.sites):
                    idx = combine(
                        [value_of(p, current) for p in site.parents],
                        [parent_size(spec, p) for p in site.parents],
                    )
                    if site.param == "logits":
                        fn = dist.Categorical(logits=tables[i][idx])
                    elif site.param == "probs_outside":
                        fn = dist.Categorical(probs=tables[i][idx])
                    else:
                        weights = tables[i][idx]
                        fn = dist.Categorical(
                            probs=weights / jnp.sum(weights, axis=-1, keepdims=True)
                        )
                    with optional(site.masked, lambda: mask(mask=keep)):
                        current.append(probnn.sample(f"x{i}", fn, infer=PARALLEL))
                idx = combine(
                    [value_of(p, current) for p in spec.obs_parents],
                    [parent_size(spec, p) for p in spec.obs_parents],
                )
                if spec.tones:
                    # hmm_enum model_1 style: probs_y[x.squeeze(-1)]
                    idx = jnp.asarray(idx)
                    idx = jnp.broadcast_to(
                        idx, jnp.broadcast_shapes(idx.shape, (spec.P, 1))
                    )
                    idx = idx.squeeze(-1)
                base = w["w_y"][idx]
                if f is not None:
                    base = base + FLOAT_WEIGHT * f
                if spec.obs == "normal":
                    fn = dist.Normal(base, OBS_SCALE)
                elif spec.obs == "bernoulli_logits":
                    fn = dist.Bernoulli(logits=base)
                elif spec.obs == "bernoulli_probs":
                    fn = dist.Bernoulli(probs=jax.nn.sigmoid(base))
                else:
                    fn = dist.Categorical(logits=base)
                with optional(
                    spec.tones, lambda: probnn.plate("tones", spec.tones, dim=-1)
                ):
                    with optional(spec.obs_masked, lambda: mask(mask=keep)):
                        probnn.sample("y", fn, obs=x["y"])
            new = {"lags": (tuple(current),) + lags[:-1]}
            if spec.counter:
                new["t"] = carry["t"] + 1
            if spec.float_carry:
                new["f"] = f
            return new, None

        # the initial values have the plate's shape (as in hmm_enum model_1), so
        # that a run without enumeration keeps the carry's shape
        shape = plate_shape(spec)
        zero = jnp.zeros(shape, dtype=jnp.int32)
        starts = (zero,) * n
        if spec.init_global:
            # the global site's own value where the sizes agree (as an HMM
            # passes its initial state), else reduced into the site's range
            starts = tuple(
                g if site.K == spec.global_K else g % site.K for site in spec.sites
            )
            starts = tuple(
                jnp.broadcast_to(s, jnp.broadcast_shapes(jnp.shape(s), shape))
                for s in starts
            )
        init = {"lags": tuple(starts for _ in range(spec.history))}
        if spec.counter:
            init["t"] = jnp.array(0, dtype=jnp.int32)
        if spec.float_carry:
            init["f"] = jnp.array(0.0, dtype=jnp.float32)
        outer = spec.plate == "outer"
        with optional(outer, lambda: probnn.plate("seq", spec.P, dim=spec.plate_dim)):
            scan(
                body,
                init,
                data["xs"],
                reverse=spec.reverse,
                history=spec.history,
                enum_method=spec.enum_method,
            )

    return model


def no_guide(*args, **kwargs):
    pass


# ---------------------------------------------------------------------------
# brute force, independent of probnn (numpy, float64)
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def chain_rows(T: int, Ks: tuple) -> np.ndarray:
    """Every assignment of one chain's latents, shape (N, T, num_sites); the
    time axis is in the order the scan visits the steps."""
    slots = [range(K) for _ in range(T) for K in Ks]
    rows = np.array(list(itertools.product(*slots)), dtype=np.int64)
    return rows.reshape(len(rows), T, len(Ks))


def row_number(spec: Spec, assignment) -> int:
    """Index into :func:`chain_rows` of one chain's assignment (T, n)."""
    dims = [site.K for _ in range(spec.T) for site in spec.sites]
    return int(np.ravel_multi_index(tuple(np.reshape(assignment, -1)), dims))


def visit_order(spec: Spec) -> np.ndarray:
    steps = np.arange(spec.T)
    return steps[::-1] if spec.reverse else steps


def np_logsumexp(x, axis):
    peak = np.max(x, axis=axis, keepdims=True)
    total = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return np.squeeze(total, axis=axis)


def np_log_normalize(raw):
    return raw - np_logsumexp(raw, -1)[..., None]


def np_log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def keep_series(spec: Spec, data) -> np.ndarray:
    """(T, chains) 0/1 in visiting order: 1 where masked sites count."""
    T, C = spec.T, chains(spec)
    if spec.mask == "xs":
        m = np.asarray(data["xs"]["m"])[visit_order(spec)]
        keep = np.broadcast_to(m.reshape(T, -1), (T, C))
    elif spec.mask == "counter":
        lengths = np.broadcast_to(np.asarray(data["lengths"]).reshape(-1), (C,))
        keep = np.arange(T)[:, None] < lengths[None, :]
    else:
        keep = np.ones((T, C), dtype=bool)
    return keep.astype(np.float64)


def parent_values(spec: Spec, parents, rows, k):
    """The parents' joint row index for every (global value, chain
    assignment) at visiting step k, shape (Kg, N)."""
    N = rows.shape[0]
    Kg = max(spec.global_K, 1)
    idx = np.zeros((Kg, N), dtype=np.int64)
    for name, lag in parents:
        if name == "g":
            value = np.arange(Kg)[:, None]
        elif k - lag >= 0:
            value = rows[None, :, k - lag, name]
        elif spec.init_global:  # the initial carry: the global site's value
            value = np.arange(Kg)[:, None] % spec.sites[name].K
        else:
            value = np.zeros((1, N), dtype=np.int64)  # the initial carry
        idx = idx * parent_size(spec, (name, lag)) + value
    return idx


class BruteForce:
    """Every assignment of the discrete latents of a spec, scored by hand.

    ``J[g, c, r]``: log density of chain (plate member) c taking assignment
    ``rows[r]``, with its observations, given global value g;
    ``log_prior[g]`` (zeros((1,)) without a global site). Masked factors are
    multiplied by 0 in log space (with ``unmask_sites``, those of the
    discrete sites are not: TraceEnum_ELBO's semantics, under which a masked
    site's own density still sums to one). The gradient of log p(y) with respect to the
    raw tables is the posterior expectation of the gradient of the log joint
    (Fisher's identity), written out per factor."""

    def __init__(
        self, spec: Spec, params: dict, data: dict, unmask_sites: bool = False
    ):
        self.spec = spec
        w = {
            name: np.asarray(value, dtype=np.float64) for name, value in params.items()
        }
        self.w = w
        T, C = spec.T, chains(spec)
        rows = chain_rows(T, tuple(site.K for site in spec.sites))
        self.rows = rows
        order = visit_order(spec)
        keep = keep_series(spec, data)
        Q = max(spec.tones, 1)
        y = np.asarray(data["xs"]["y"], dtype=np.float64)[order].reshape(T, C, Q)
        floats = np.zeros(T)
        if spec.float_carry:
            u = np.asarray(data["xs"]["u"], dtype=np.float64)[order]
            f = 0.0
            for k in range(T):
                f = 0.5 * f + u[k]
                floats[k] = f
        S = w["w_y"].shape[0]
        obs_table = w["w_y"].reshape(
            (S, Q, spec.obs_C) if spec.obs == "categorical" else (S, Q)
        )
        self.obs_table = obs_table

        Kg = max(spec.global_K, 1)
        J = np.zeros((Kg, C, rows.shape[0]))
        self.site_terms = []  # (i, idx (Kg, N), value (N,), factor (C,))
        self.obs_terms = []  # (idx (Kg, N), d log p / d base (Kg, C, N, Q[, Cy]))
        for k in range(T):
            for i, site in enumerate(spec.sites):
                log_table = np_log_normalize(w[f"w_x{i}"])
                idx = parent_values(spec, site.parents, rows, k)
                value = rows[:, k, i]
                masked = site.masked and not unmask_sites
                factor = keep[k] if masked else np.ones(C)
                J += log_table[idx, value[None, :]][:, None, :] * factor[None, :, None]
                self.site_terms.append((i, idx, value, factor))
            idx = parent_values(spec, spec.obs_parents, rows, k)
            base = obs_table[idx] + FLOAT_WEIGHT * floats[k]  # (Kg, N, Q[, Cy])
            yk = y[k]  # (C, Q)
            if spec.obs == "normal":
                resid = (yk[None, :, None, :] - base[:, None, :, :]) / OBS_SCALE
                lp = -0.5 * resid**2 - math.log(OBS_SCALE) - 0.5 * math.log(2 * math.pi)
                dlp = resid / OBS_SCALE
            elif spec.obs.startswith("bernoulli"):
                b = base[:, None, :, :]
                one = yk[None, :, None, :]
                lp = one * np_log_sigmoid(b) + (1.0 - one) * np_log_sigmoid(-b)
                dlp = one - np.exp(np_log_sigmoid(b))
            else:
                log_p = np_log_normalize(base)[:, None]  # (Kg, 1, N, Q, Cy)
                hot = (yk[..., None] == np.arange(spec.obs_C))[None, :, None]
                lp = np.sum(log_p * hot, axis=-1)
                dlp = hot - np.exp(log_p)
            factor = keep[k] if spec.obs_masked else np.ones(C)
            J += np.sum(lp, axis=-1) * factor[None, :, None]
            factor = factor.reshape((1, C, 1) + (1,) * (dlp.ndim - 3))
            self.obs_terms.append((idx, dlp * factor))
        self.J = J
        if spec.global_K:
            self.log_prior = np_log_normalize(w["w_g"])
        else:
            self.log_prior = np.zeros(1)
        self.per_chain = np_logsumexp(J, -1)  # (Kg, C)
        self.by_global = self.log_prior + self.per_chain.sum(-1)  # (Kg,)
        self.log_marginal = float(np_logsumexp(self.by_global, 0))

    def grads(self) -> dict:
        """d log p(y) / d raw table, by param name."""
        spec, w = self.spec, self.w
        post_g = np.exp(self.by_global - self.log_marginal)  # (Kg,)
        post_rows = np.exp(self.J - self.per_chain[..., None])  # (Kg, C, N) given g
        weight = post_g[:, None, None] * post_rows  # p(g, chain c takes row r | y)
        grads = {name: np.zeros_like(value) for name, value in w.items()}
        for i, idx, value, factor in self.site_terms:
            probs = np.exp(np_log_normalize(w[f"w_x{i}"]))
            W = np.sum(weight * factor[None, :, None], axis=1)  # (Kg, N)
            np.add.at(grads[f"w_x{i}"], (idx, np.broadcast_to(value, idx.shape)), W)
            np.add.at(grads[f"w_x{i}"], idx, -W[..., None] * probs[idx])
        obs_grad = np.zeros_like(self.obs_table)
        for idx, dlp in self.obs_terms:
            W = weight.reshape(weight.shape + (1,) * (dlp.ndim - 3))
            np.add.at(obs_grad, idx, np.sum(W * dlp, axis=1))
        grads["w_y"] = obs_grad.reshape(w["w_y"].shape)
        if spec.global_K:
            grads["w_g"] = post_g - np.exp(np_log_normalize(w["w_g"]))
        return grads

    def best(self):
        """``(g, assignment (C, T, n) in visiting order, its log joint, gap
        to the runner-up joint assignment)``."""
        by_global = self.log_prior + np.sum(np.max(self.J, axis=-1), axis=-1)
        g = int(np.argmax(by_global))
        ranked = np.sort(self.J[g], axis=-1)
        gap = float(np.min(ranked[:, -1] - ranked[:, -2]))
        if by_global.shape[0] > 1:
            gap = min(gap, float(by_global[g] - np.sort(by_global)[-2]))
        rows = self.rows[np.argmax(self.J[g], axis=-1)]
        return g, rows, float(by_global[g]), gap

    def log_joint(self, g: int, assignment) -> float:
        """Log joint density of global value g and chains' assignment
        (C, T, n) in visiting order."""
        total = self.log_prior[g]
        for c in range(self.J.shape[1]):
            total += self.J[g, c, row_number(self.spec, assignment[c])]
        return float(total)

    def posterior(self) -> np.ndarray:
        """p(g, row of chain 0, row of chain 1, ... | y), one axis each."""
        Kg, C, N = self.J.shape
        joint = self.log_prior.reshape((Kg,) + (1,) * C)
        for c in range(C):
            shape = [Kg] + [1] * C
            shape[c + 1] = N
            joint = joint + self.J[:, c, :].reshape(shape)
        return np.exp(joint - self.log_marginal)


# ---------------------------------------------------------------------------
# checks (each probnn computation is jitted: one compilation per structure
# costs far less than op-by-op dispatch, which compiles every primitive)
# ---------------------------------------------------------------------------


def check_close(actual, expected, msg=""):
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), rtol=RTOL, atol=ATOL, err_msg=msg
    )


@pytest.mark.parametrize("plate", PLATES)
@settings(max_examples=50 * SEARCH, **SETTINGS)
@given(examples=st.data())
def test_log_density_matches_brute_force(plate, examples):
    spec = examples.draw(specs(plate))
    params, data = make_example(spec)
    model = build_model(spec, params)
    actual = jax.jit(lambda p, d: log_density(model, (d,), {}, p)[0])(params, data)
    expected = BruteForce(spec, params, data).log_marginal
    check_close(actual, expected, "log_density vs brute-force log p(y)")


@pytest.mark.parametrize("plate", PLATES)
@settings(max_examples=8 * SEARCH, **SETTINGS)
@given(examples=st.data())
def test_trace_enum_elbo_loss_and_grad_match_brute_force(plate, examples):
    spec = examples.draw(specs(plate))
    params, data = make_example(spec)
    model = build_model(spec, params)
    elbo = TraceEnum_ELBO()
    loss, grads = jax.jit(
        jax.value_and_grad(lambda p, d: elbo.loss(KEY, p, model, no_guide, d))
    )(params, data)
    reference = BruteForce(spec, params, data, unmask_sites=True)
    check_close(loss, -reference.log_marginal, "TraceEnum_ELBO loss vs -log p(y)")
    expected_grads = reference.grads()
    assert set(grads) == set(expected_grads)
    for name, expected in expected_grads.items():
        assert np.all(np.isfinite(np.asarray(grads[name]))), name
        check_close(grads[name], -expected, f"gradient wrt {name}")


def decoded_assignment(spec: Spec, site_values: dict) -> tuple:
    """``(g, values (C, T, n) in visiting order)`` from the decoded model's
    site values, by name."""
    g = int(site_values["g"]) if spec.global_K else 0
    T, C = spec.T, chains(spec)
    per_site = []
    for i in range(len(spec.sites)):
        value = np.asarray(site_values[f"x{i}"])
        assert value.shape == (T,) + plate_shape(spec), (f"x{i}", value.shape)
        per_site.append(value.reshape(T, C)[visit_order(spec)])  # (T, C)
    return g, np.stack(per_site, axis=-1).transpose(1, 0, 2)  # (C, T, n)


def decoded_values(spec: Spec, decoded_model, data) -> dict:
    names = [f"x{i}" for i in range(len(spec.sites))] + (["g"] if spec.global_K else [])
    model_trace = trace(decoded_model).get_trace(data)
    return {name: model_trace[name]["value"] for name in names}


@pytest.mark.parametrize("plate", PLATES)
@settings(max_examples=20 * SEARCH, **SETTINGS)
@given(examples=st.data())
def test_infer_discrete_map_matches_brute_force(plate, examples):
    spec = examples.draw(specs(plate))
    params, data = make_example(spec)
    model = build_model(spec, params)
    decoded = infer_discrete(model, temperature=0)
    values = jax.jit(lambda d: decoded_values(spec, decoded, d))(data)
    g, assignment = decoded_assignment(spec, values)
    reference = BruteForce(spec, params, data)
    best_g, best, best_value, gap = reference.best()
    # the decoded assignment reaches the maximum (this holds with ties too) ...
    check_close(
        reference.log_joint(g, assignment),
        best_value,
        "log joint of the decoded assignment",
    )
    # ... and is the argmax when that is unique
    if gap > TIE_MARGIN:
        assert g == best_g
        np.testing.assert_array_equal(assignment, best)


# ---------------------------------------------------------------------------
# temperature=1 draws on two fixed tiny structures
# ---------------------------------------------------------------------------

TINY_SPECS = [
    # one chain, one binary site with a first-order transition, reversed
    Spec(
        T=3, history=1, reverse=True, enum_method=None,
        sites=(Site(2, ((0, 1),), "logits", False),),
        global_K=0, obs="normal", obs_C=0, obs_parents=((0, 0),), obs_masked=False,
        plate="none", plate_dim=-1, P=1, tones=0,
        mask="none", mask_per_member=False, counter=False, float_carry=False, seed=3,
    ),
    # a global site and two chains (plate around the scan), masked steps
    Spec(
        T=2, history=1, reverse=False, enum_method="sequential",
        sites=(Site(2, ((0, 1), ("g", 0)), "probs_outside", True),),
        global_K=2, obs="bernoulli_logits", obs_C=0, obs_parents=((0, 0),),
        obs_masked=False, plate="outer", plate_dim=-1, P=2, tones=0,
        mask="xs", mask_per_member=True, counter=True, float_carry=False, seed=11,
        init_global=True,
    ),
]  # fmt: skip


def test_infer_discrete_draws_follow_brute_force_posterior():
    num_draws = 4000
    for spec in TINY_SPECS:
        params, data = make_example(spec)
        model = build_model(spec, params)
        posterior = BruteForce(spec, params, data).posterior()

        def draw(key, model=model, data=data, spec=spec):
            decoded = infer_discrete(model, temperature=1, rng_key=key)
            return decoded_values(spec, decoded, data)

        keys = jax.random.split(jax.random.PRNGKey(spec.seed), num_draws)
        draws = jax.tree.map(np.asarray, jax.jit(jax.vmap(draw))(keys))
        counts = np.zeros(posterior.shape)
        for d in range(num_draws):
            g, assignment = decoded_assignment(
                spec, {name: value[d] for name, value in draws.items()}
            )
            cell = (g,) + tuple(row_number(spec, chain) for chain in assignment)
            counts[cell] += 1
        freq = counts / num_draws
        tolerance = 4.5 * np.sqrt(posterior * (1 - posterior) / num_draws) + 2e-3
        assert np.all(np.abs(freq - posterior) <= tolerance), (spec, freq, posterior)
