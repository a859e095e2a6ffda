"""Exact summation over enumerated discrete sites.

A trace recorded under :class:`probnn.handlers.enum` holds, for each sample
site, a log density whose batch dims are plate dims (right) and enumeration
dims (left, one per enumerated site). :func:`contract_trace` sums the
enumerated dims out and multiplies over plates: plated tensor variable
elimination (Obermeyer et al. 2019, "Tensor Variable Elimination for Plated
Factor Graphs"), done with plain ``jax.numpy`` reductions.

Terms are grouped by their *ordinal*, the set of plates they sit in. The
deepest ordinal is processed first: its enumerated variables are summed out
(variable elimination, cheapest dim first), then its extra plates are
multiplied out, and the result moves to the parent ordinal. A model whose
variables and plates do not form a tree this way gets an error naming its
sites.

Sites of an enumerated :func:`probnn.scan` are contracted along time: each
step's terms are first reduced to a tensor over the step's state (the
enumerated sites of the last ``history`` steps), then the steps are combined
by a forward recursion (``lax.scan``, "sequential") or by a tree of log-space
matrix products (O(log T) span, "parallel"). Nested scans and scans inside
plates recurse through the same code.

The same contraction runs in three *rings*: sum-product (log marginal
likelihood, whose gradient is exact), and two whose backward pass picks
values instead of weighting them: a joint draw from the posterior
(temperature 1) or the maximising assignment (temperature 0). Differentiating
the contraction with respect to the sites' log densities then marks the
chosen assignment; :func:`probnn.infer.infer_discrete` reads it off.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from probnn.distributions.discrete import Categorical
from probnn.distributions.distribution import ExpandedDistribution, MaskedDistribution
from probnn.runtime import Message

__all__ = ["contract_trace"]


# -- rings ---------------------------------------------------------------------


def _safe_log(x):
    positive = x > 0
    tiny = jnp.finfo(jnp.result_type(x)).tiny
    return jnp.where(positive, jnp.log(jnp.maximum(x, tiny)), -jnp.inf)


class _SumProduct:
    """Log-space sum and product: the exact marginal."""

    def reduce(self, x, axes):
        if not axes:
            return x
        # log-sum-exp with fewer operations than ``jax.nn.logsumexp`` (this
        # runs once per eliminated variable and per step of a scan); rows
        # of impossible values (-inf everywhere) stay -inf, gradient zero
        peak = jax.lax.stop_gradient(jnp.max(x, axis=axes, keepdims=True))
        peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
        total = jnp.sum(jnp.exp(x - peak), axis=axes, keepdims=True)
        return _safe_log(total) + peak

    def matmul(self, a, b):
        if a.shape[-1] <= 16:
            # small state spaces: one fused logsumexp compiles fastest
            joint = a[..., :, :, None] + b[..., None, :, :]
            peak = jax.lax.stop_gradient(jnp.max(joint, axis=-2))
            # rows of impossible states (-inf everywhere) stay -inf with a
            # zero gradient
            peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
            total = jnp.sum(jnp.exp(joint - peak[..., None, :]), axis=-2)
            return _safe_log(total) + peak
        a_max = jax.lax.stop_gradient(jnp.max(a, axis=-1, keepdims=True))
        a_max = jnp.where(jnp.isfinite(a_max), a_max, 0.0)
        b_max = jax.lax.stop_gradient(jnp.max(b, axis=-2, keepdims=True))
        b_max = jnp.where(jnp.isfinite(b_max), b_max, 0.0)
        product = jnp.matmul(jnp.exp(a - a_max), jnp.exp(b - b_max))
        return _safe_log(product) + a_max + b_max

    def fold(self, data):
        return self


def _pick(x, noise, axes):
    """One-hot (over ``axes`` jointly) of the argmax of ``x + noise``."""
    axes = tuple(sorted(a % x.ndim for a in axes))
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = jnp.transpose(x + noise, rest + list(axes))
    flat = moved.reshape(moved.shape[: len(rest)] + (-1,))
    onehot = jax.nn.one_hot(jnp.argmax(flat, axis=-1), flat.shape[-1], dtype=x.dtype)
    onehot = onehot.reshape(moved.shape)
    order = rest + list(axes)
    return jnp.transpose(onehot, [order.index(a) for a in range(x.ndim)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _choose(x, noise, axes, use_max):
    if use_max:
        return jnp.max(x, axis=axes, keepdims=True)
    return jax.nn.logsumexp(x, axis=axes, keepdims=True)


def _choose_fwd(x, noise, axes, use_max):
    return _choose(x, noise, axes, use_max), (x, noise)


def _choose_bwd(axes, use_max, residuals, cotangent):
    x, noise = residuals
    return cotangent * _pick(x, noise, axes), jnp.zeros_like(noise)


_choose.defvjp(_choose_fwd, _choose_bwd)


class _Choosing:
    """Max-product (``temperature=0``) or sum-product whose backward pass
    draws one assignment (``temperature=1``): the gradient of the result
    with respect to a term is the indicator of the chosen assignment."""

    def __init__(self, key, temperature):
        self.key = key
        self.use_max = temperature == 0
        self.calls = 0

    def _noise(self, shape):
        if self.use_max:
            return jnp.zeros(shape)
        self.calls += 1
        return jax.random.gumbel(jax.random.fold_in(self.key, self.calls), shape)

    def reduce(self, x, axes):
        if not axes:
            return x
        axes = tuple(axes)
        return _choose(x, self._noise(x.shape), axes, self.use_max)

    def matmul(self, a, b):
        joint = a[..., :, :, None] + b[..., None, :, :]
        return jnp.squeeze(self.reduce(joint, (-2,)), -2)

    def fold(self, data):
        return _Choosing(jax.random.fold_in(self.key, data), 0 if self.use_max else 1)


def choosing_ring(key, temperature):
    if temperature not in (0, 1):
        raise ValueError(
            f"infer_discrete: temperature must be 0 or 1, got {temperature!r}"
        )
    return _Choosing(key, temperature)


# -- the model's structure -------------------------------------------------------


class _Term(NamedTuple):
    log: Any  # lead (time) axes + the layout's `rank` right-aligned dims
    ordinal: frozenset
    scale: Any  # the user's scale (plate subsampling is applied by the plates)
    names: tuple
    frames: tuple  # ((scan context, position), ...) outermost first


class _Structure:
    """Plates, enumerated variables and scans of one trace."""

    def __init__(self, model_trace: dict, guide_trace: dict | None = None, unique=None):
        # enumerated guide sites: dim -> (name, ordinal, execution order)
        self.guide_vars: dict[int, tuple] = {}
        self.guide_weights: dict[int, Any] = {}
        for order, (name, site) in enumerate((guide_trace or {}).items()):
            dim = (
                site["infer"].get("_enumerate_dim")
                if site["type"] == "sample"
                else None
            )
            if dim is not None:
                self.guide_vars[dim] = (name, _ordinal(site), order)
        self.plate_dim: dict[str, int] = {}
        self.plate_factor: dict[str, float] = {}
        self.plate_size: dict[str, int] = {}
        # enumerated dim -> (site name, ordinal, scan context or None, size)
        self.variables: dict[int, tuple] = {}
        self.lag_dims: dict[int, Any] = {}
        self.rank = 0
        for name, site in model_trace.items():
            if site["type"] != "sample":
                continue
            for frame in site["cond_indep_stack"]:
                self.plate_dim[frame.name] = frame.dim
                self.plate_size[frame.name] = frame.subsample_size
                self.plate_factor[frame.name] = frame.size / frame.subsample_size
            dim = site["infer"].get("_enumerate_dim")
            if dim is not None:
                dim = (unique or {}).get(name, dim)
                frames = site["infer"].get("_markov", ())
                context = frames[-1][0] if frames else None
                base = site["infer"].get("_markov_name", name)
                self.variables[dim] = (
                    base,
                    _ordinal(site),
                    context,
                    site["infer"]["_enumerate_size"],
                )
                if context is not None:
                    for lag_dim in context.dims.get(base, ())[1:]:
                        self.lag_dims[lag_dim] = context

    def variable_name(self, dim):
        if dim in self.variables:
            return self.variables[dim][0]
        if dim in self.guide_vars:
            return self.guide_vars[dim][0]
        context = self.lag_dims[dim]
        site = next(name for name, dims in context.dims.items() if dim in dims)
        return f"{site} (at an earlier step)"


def _ordinal(site: Message) -> frozenset:
    return frozenset(frame.name for frame in site["cond_indep_stack"])


def _lead_ndim(frames) -> int:
    return sum(1 for _, position in frames if position is None)


def _user_scale(site: Message, structure: _Structure):
    scale = site["scale"]
    if scale is None:
        return None
    factor = math.prod(structure.plate_factor[p] for p in _ordinal(site))
    return scale if factor == 1 else scale / factor


def _same_scale(a, b) -> bool:
    if a is b:
        return True
    a = 1.0 if a is None else a
    b = 1.0 if b is None else b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return False


def _unique_dims(model_trace) -> dict:
    """A dim of its own for every variable of a markov loop (whose dims the
    loop recycles), left of every dim the trace uses: name -> dim."""
    holders, lowest = [], -1
    for site in model_trace.values():
        if site["type"] != "sample":
            continue
        for frame in site["cond_indep_stack"]:
            lowest = min(lowest, frame.dim)
        dim = site["infer"].get("_enumerate_dim")
        if dim is not None:
            lowest = min(lowest, dim)
        for context, _ in site["infer"].get("_markov", ()):
            lowest = min([lowest, *(d for ds in context.dims.values() for d in ds)])
        for holder in site["infer"].get("_dim_vars", {}).values():
            if holder not in holders:
                holders.append(holder)
    return {name: lowest - 1 - i for i, name in enumerate(holders)}


def _unrecycle(log, lead, site, unique):
    """Move each recycled dim of a site's log density (right of its ``lead``
    axes) to the dim of the variable it stands for at that site."""
    moves = {d: unique[h] for d, h in site["infer"].get("_dim_vars", {}).items()}
    moves = {d: u for d, u in moves.items() if -d <= jnp.ndim(log) - lead}
    if not moves:
        return log
    shape = jnp.shape(log)
    rank = max(-u for u in moves.values())
    log = jnp.reshape(
        log, shape[:lead] + (1,) * (rank - len(shape) + lead) + shape[lead:]
    )
    order = list(range(jnp.ndim(log)))
    for d, u in moves.items():
        order[d], order[u] = order[u], order[d]
    return jnp.transpose(log, order)


def _site_terms(model_trace, structure, logs=None, unique=None):
    """One term per sample site, padded to a common layout."""
    raw = []
    for name, site in model_trace.items():
        if site["type"] != "sample":
            continue
        log = logs[name]
        frames = site["infer"].get("_markov", ())
        lead = _lead_ndim(frames)
        if unique:
            log = _unrecycle(log, lead, site, unique)
        raw.append((name, site, log, frames, lead))
        structure.rank = max(structure.rank, jnp.ndim(log) - lead)
    # the layout holds every enumeration dim, also those no density reaches
    # (the lag dims of a site whose past values nothing reads)
    dims = [*structure.variables, *structure.lag_dims, *structure.guide_vars]
    structure.rank = max([structure.rank, *(-d for d in dims)])
    terms = []
    for name, site, log, frames, lead in raw:
        shape = jnp.shape(log)
        batch = shape[lead:]
        log = jnp.reshape(
            log, shape[:lead] + (1,) * (structure.rank - len(batch)) + batch
        )
        term = _Term(log, _ordinal(site), _user_scale(site, structure), (name,), frames)
        _check_dims(term, structure)
        terms.append(term)
    return terms


def _guide_terms(guide_trace, structure, logs, weights) -> list:
    """``-log q`` of every latent guide site (not yet padded to the layout),
    and the weights ``q`` of the enumerated ones."""
    terms = []
    for name, site in guide_trace.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if site["infer"].get("_in_scan"):
            raise NotImplementedError(
                f"TraceEnum_ELBO: guide site {name!r} sits in a scan of a guide "
                "with enumerated sites; enumerate inside scans in the model"
            )
        log = logs[name]
        structure.rank = max(structure.rank, jnp.ndim(log))
        dim = site["infer"].get("_enumerate_dim")
        if dim is not None:
            structure.guide_weights[dim] = weights[name]
        terms.append(
            _Term(-log, _ordinal(site), _user_scale(site, structure), (name,), ())
        )
    return terms


def site_log(site: Message, unmasked: bool = False):
    """Unscaled log density of a sample site (masks applied by its
    distribution, unless ``unmasked``)."""
    stored = site.get("_step_logs")
    if stored is not None:
        # recorded step by step inside a scan (see ``step_logs``)
        masked, without = stored
        return without if unmasked and without is not None else masked
    return _site_log(site, unmasked)


def step_logs(site: Message) -> tuple:
    """The log densities ``site_log`` gives for a site of one scan step:
    masked, and unmasked where the distribution carries a mask (else None)."""
    masked = _site_log(site, False)
    if _without_mask(site["fn"]) is site["fn"]:
        return masked, None
    return masked, _site_log(site, True)


def _site_log(site: Message, unmasked: bool):
    fn = _without_mask(site["fn"]) if unmasked else site["fn"]
    dim = site["infer"].get("_enumerate_dim")
    if dim is not None and isinstance(fn, Categorical):
        # the value is the whole support along `dim`: the log density is the
        # normalised logits with their category axis moved there (no gather)
        log_probs = fn.logits
        missing = -dim - (jnp.ndim(log_probs) - 1)
        if missing > 0:
            log_probs = jnp.reshape(log_probs, (1,) * missing + log_probs.shape)
        return jnp.squeeze(jnp.swapaxes(log_probs, -1, dim - 1), -1)
    return fn.log_prob(site["value"])


def _without_mask(fn):
    """``fn`` with its mask wrappers removed (same batch shape)."""
    if isinstance(fn, MaskedDistribution):
        return _without_mask(fn.base_dist)
    if isinstance(fn, ExpandedDistribution):
        inner = _without_mask(fn.base_dist)
        return fn if inner is fn.base_dist else inner.expand(fn.batch_shape)
    return fn


def _check_dims(term: _Term, structure: _Structure) -> None:
    shape = jnp.shape(term.log)
    rank = structure.rank
    own_plates = {structure.plate_dim[p]: p for p in term.ordinal}
    for dim in range(-rank, 0):
        if shape[dim] == 1 or dim in own_plates:
            continue
        if dim in structure.guide_vars:
            variable = structure.guide_vars[dim]
            if not variable[1] <= term.ordinal:
                raise ValueError(
                    f"site {term.names[0]!r} depends on enumerated guide site "
                    f"{variable[0]!r} from outside its plates "
                    f"{sorted(variable[1] - term.ordinal)}"
                )
            continue
        if dim in structure.variables or dim in structure.lag_dims:
            context = structure.variables.get(dim, (None, None, None))[2]
            if context is None and dim in structure.lag_dims:
                context = structure.lag_dims[dim]
            if context is not None and not _inside(term.frames, context):
                raise ValueError(
                    f"site {term.names[0]!r} depends on "
                    f"{structure.variable_name(dim)!r}, "
                    "an enumerated site of a scan body, from outside that scan "
                    "(for example through the scan's final carry); use the scan's "
                    "outputs inside the body instead"
                )
            variable = structure.variables.get(dim)
            if variable is not None and not variable[1] <= term.ordinal:
                missing = sorted(variable[1] - term.ordinal)
                raise ValueError(
                    f"site {term.names[0]!r} depends on enumerated site "
                    f"{variable[0]!r}, which sits inside plate(s) {missing} that "
                    f"{term.names[0]!r} is not in"
                )
            continue
        plates = [p for p, d in structure.plate_dim.items() if d == dim]
        raise ValueError(
            f"site {term.names[0]!r} has a log density of shape {shape[-rank:]} "
            f"that varies along dim {dim}, which is neither one of its plates nor "
            "an enumerated site's dim"
            + (
                f" (plate {plates[0]!r} uses that dim: does an enumerated site "
                f"inside plate {plates[0]!r} feed {term.names[0]!r} outside it?)"
                if plates
                else ""
            )
        )


def _inside(frames, context) -> bool:
    return any(c is context for c, _ in frames)


# -- plated variable elimination --------------------------------------------------


def _size(term: _Term, dim: int) -> int:
    shape = jnp.shape(term.log)
    return shape[dim] if -dim <= len(shape) else 1


def _combine(terms, ring, dims, structure):
    """Sum ``terms`` (log space) and reduce ``dims``; one term."""
    scale = terms[0].scale
    for other in terms[1:]:
        if not _same_scale(scale, other.scale):
            names = sorted({n for t in terms for n in t.names})
            raise ValueError(
                f"sites {names} share enumerated sites but have different scales "
                "(from probnn.handlers.scale); enumeration needs one scale for "
                "all sites that depend on the same enumerated site"
            )
    log = functools.reduce(jnp.add, [t.log for t in terms])
    log = ring.reduce(log, tuple(dims))
    names = tuple(n for t in terms for n in t.names)
    return _Term(log, terms[0].ordinal, scale, names, terms[0].frames)


def _elimination_cost(terms, dim) -> int:
    """Size of the tensor that summing out ``dim`` would build."""
    shapes = [jnp.shape(t.log) for t in terms if _size(t, dim) > 1]
    return math.prod(jnp.broadcast_shapes(*shapes)) if shapes else 0


def _sum_out(terms, dims, ring, structure, combine=True):
    """Eliminate ``dims`` from ``terms`` one at a time, cheapest first; the
    resulting term, or with ``combine=False`` the terms left (those that
    share no eliminated dim stay apart)."""
    terms = list(terms)
    dims = set(dims)
    while dims:
        dim = min(sorted(dims), key=functools.partial(_elimination_cost, terms))
        dims.remove(dim)
        involved = [t for t in terms if _size(t, dim) > 1]
        if not involved:
            continue
        terms = [t for t in terms if _size(t, dim) == 1]
        terms.append(_combine(involved, ring, (dim,), structure))
    if not combine:
        return terms
    if len(terms) == 1:
        return terms[0]
    if all(_same_scale(terms[0].scale, t.scale) for t in terms):
        return _combine(terms, ring, (), structure)
    # no enumerated dims left to share: apply each scale
    scaled = [t._replace(log=_apply_scale(t), scale=None) for t in terms]
    return _combine(scaled, ring, (), structure)


def _apply_scale(term: _Term):
    return term.log if term.scale is None else term.log * term.scale


def _components(terms, dims, same=None):
    """Split ``terms`` into groups connected through ``dims`` (``same`` maps
    dims that stand for one variable, such as its lag dims, to one key)."""
    same = same or {}
    groups: list[tuple[list, set]] = []
    for term in terms:
        mine = {same.get(d, d) for d in dims if _size(term, d) > 1}
        joined = [g for g in groups if g[1] & mine]
        merged_terms = [term] + [t for g in joined for t in g[0]]
        merged_dims = mine.union(*(g[1] for g in joined))
        groups = [g for g in groups if not any(g is j for j in joined)]
        groups.append((merged_terms, merged_dims))
    return groups


def _multiply_plates(term: _Term, plates, structure: _Structure) -> _Term:
    log = term.log
    for plate in sorted(plates):
        dim = structure.plate_dim[plate]
        factor = structure.plate_factor[plate]
        if jnp.shape(log)[dim] == 1:
            factor = factor * structure.plate_size[plate]
        else:
            log = jnp.sum(log, axis=dim, keepdims=True)
        if factor != 1:
            log = log * factor
    return term._replace(log=log, ordinal=term.ordinal - frozenset(plates))


def _eliminate(terms, level, target, sum_dims, ring, structure):
    """Contract ``terms`` (all inside the scan path ``frames[:level]``) down to
    the plates ``target``, summing out ``sum_dims`` (dim -> ordinal). Returns
    terms at ``target``."""
    plain, groups = [], {}
    for term in terms:
        if len(term.frames) > level:
            context = term.frames[level][0]
            groups.setdefault(id(context), (context, []))[1].append(term)
        else:
            plain.append(term)
    for context, group in groups.values():
        others = [t for c, g in groups.values() if c is not context for t in g]
        leading = _leading_terms(group, plain, others, sum_dims, level)
        results, consumed = _contract_scan(
            context, group, level, ring, structure, leading
        )
        plain = [t for t in plain if not any(t is c for c in consumed)]
        plain.extend(results)

    all_dims = dict(sum_dims)
    if level == 0:
        all_dims.update({d: v[1] for d, v in structure.guide_vars.items()})
    pending = defaultdict(list)
    for term in plain:
        pending[term.ordinal].append(term)
    while True:
        leaves = [o for o in pending if pending[o] and o != target]
        if not leaves:
            break
        leaf = max(leaves, key=lambda o: (len(o), sorted(o)))
        local = {d for d, o in all_dims.items() if o == leaf}
        for group_terms, group_dims in _components(pending.pop(leaf), local):
            term = _reduce(group_terms, group_dims, ring, structure, all_dims)
            remaining = [
                d for d in all_dims if d not in group_dims and _size(term, d) > 1
            ]
            parent = target.union(*(all_dims[d] for d in remaining))
            if not parent < leaf:
                raise ValueError(
                    f"sites {sorted(set(term.names))} in plates {sorted(leaf)} "
                    "depend on enumerated sites "
                    f"{sorted(structure.variable_name(d) for d in remaining)} in "
                    "plates that do not nest: the model is not a tree of plates, "
                    "and summing it exactly is intractable!"
                )
            pending[parent].append(_multiply_plates(term, leaf - parent, structure))
    local = {d for d, o in all_dims.items() if o == target}
    return [
        _reduce(group_terms, group_dims, ring, structure, all_dims)
        for group_terms, group_dims in _components(pending.pop(target, []), local)
    ]


def _reduce(terms, dims, ring, structure, all_dims) -> _Term:
    """Sum the model's enumerated ``dims`` out of ``terms``, then take the
    expectation over the guide's enumerated ``dims`` (children first).

    Each cost is weighted by the guide probabilities of the guide sites it
    depends on and of their guide ancestors only (so an unnormalised guide
    table gets the gradient NumPyro gives it)."""
    guide_dims = [d for d in dims if d in structure.guide_vars]
    model_dims = set(dims) - set(guide_dims)
    if not guide_dims:
        return _sum_out(terms, model_dims, ring, structure)
    parts = _sum_out(terms, model_dims, ring, structure, combine=False)
    present = [d for d in guide_dims if any(_size(t, d) > 1 for t in parts)]
    if not present:
        return _sum_out(parts, (), ring, structure)
    pending = [
        d
        for d in all_dims
        if d not in dims
        and d not in structure.guide_vars
        and any(_size(t, d) > 1 for t in parts)
    ]
    if pending:
        guide_names = [structure.variable_name(d) for d in present]
        model_names = [structure.variable_name(d) for d in pending]
        # the message opens with NumPyro's wording of this error
        raise ValueError(
            "TraceEnum_ELBO: Expected model enumeration to be no more global "
            f"than guide: guide site(s) {guide_names} are enumerated inside "
            f"plates whose sites depend on model sites {model_names} enumerated "
            "outside them: the model's enumeration is more global than the "
            "guide's, and the expectation over the guide sites is then not a sum "
            "of per-plate terms. Enumerate those guide sites in the model instead"
        )
    weights = {d: structure.guide_weights[d] for d in present}
    total = jnp.zeros(())
    for part in parts:
        needed = {d for d in present if _size(part, d) > 1}
        grown = True
        while grown:  # add the guide ancestors of what the cost depends on
            more = {
                e
                for d in needed
                for e in present
                if jnp.ndim(weights[d]) >= -e and jnp.shape(weights[d])[e] > 1
            }
            grown = not more <= needed
            needed |= more
        log = _apply_scale(part)
        for dim in sorted(needed, key=lambda d: -structure.guide_vars[d][2]):
            log = jnp.sum(log * jnp.exp(weights[dim]), axis=dim, keepdims=True)
        total = total + log
    names = tuple(n for t in parts for n in t.names)
    return _Term(total, parts[0].ordinal, None, names, parts[0].frames)


# -- enumerated scans ------------------------------------------------------------------


def _default_method():
    return "sequential" if jax.default_backend() == "cpu" else "parallel"


def _leading_terms(group, plain, others, sum_dims, level) -> dict:
    """Enumerated sites outside a scan that only its first (unrolled) steps
    depend on, such as an initial state sampled before the scan: dim ->
    (ordinal, the terms outside the scan that depend on it). Those terms
    must depend on no other enumerated site and sit in the site's plates.
    The scan may then sum the sites out after its first steps instead of
    carrying them along every step."""

    def uses(terms, dim):
        return any(_size(t, dim) > 1 for t in terms)

    context = group[0].frames[level][0]
    first = [t for t in group if t.frames[level][1] is not None]
    later = [t for t in group if t.frames[level][1] is None]
    if not later:
        return {}
    # sites whose values the first step receives through the carry, or that
    # the unrolled first steps use
    starts = set(context.relabel.values())
    dims = {
        d
        for d in sum_dims
        if (d in starts or uses(first, d))
        and not uses(later, d)
        and not uses(others, d)
    }
    while dims:
        leading = {d: (sum_dims[d], [t for t in plain if uses([t], d)]) for d in dims}
        bad = {
            d
            for d, (ordinal, outside) in leading.items()
            for t in outside
            if t.ordinal != ordinal
            or any(uses([t], e) for e in sum_dims if e not in dims)
        }
        if not bad:
            return leading
        dims -= bad
    return {}


def _contract_scan(context, terms, level, ring, structure, leading) -> tuple:
    """Sum a scan's enumerated sites out along time.

    The scan's terms split into groups linked through the scan's enumerated
    sites. A group whose sites carry values from step to step is a chain:
    it is contracted by a recursion over time, batched over the plates its
    carried sites sit in (those around the scan call and those declared
    inside the body alike), and the result is a term in those plates. The
    other groups are independent across steps: each step is contracted on
    its own and the steps are added up.
    """
    # the dims of the scan's own sites and of scans nested in its body
    scan_dims = {
        dim
        for dim, inner in [
            *((d, v[2]) for d, v in structure.variables.items()),
            *structure.lag_dims.items(),
        ]
        if inner is context or _inside(getattr(inner, "frames", ()), context)
    }
    # a site's value at every lag is one variable: its lag dims link the
    # terms of one step to those of the steps before it
    same = {
        d: dims[0]
        for inner in {id(c): c for c in structure.lag_dims.values()}.values()
        for dims in inner.dims.values()
        for d in dims
    }
    chains, independent = [], []
    for group, _ in _components(terms, scan_dims, same):
        state = _carried(context, group)
        if state:
            chains.append((group, state))
        else:
            independent.extend(group)
    if independent:
        chains.append((independent, []))
    # leading sites are summed out inside the one chain that uses them
    users = [
        [
            d
            for d in leading
            if _uses_dim(g, d) or d in {context.relabel.get(n) for n in state}
        ]
        for g, state in chains
    ]
    results, consumed = [], []
    for (group, state), dims in zip(chains, users, strict=True):
        own = {d: leading[d] for d in dims if state and sum(d in u for u in users) == 1}
        term, used = _contract_chain(context, group, state, level, ring, structure, own)
        results.append(term)
        consumed.extend(used)
    return results, consumed


def _uses_dim(terms, dim) -> bool:
    return any(_size(t, dim) > 1 for t in terms)


def _carried(context, terms) -> list:
    """Names of the scan's sites whose past values reach a later step."""
    return [
        name
        for name, dims in context.dims.items()
        if any(_size(t, d) > 1 for t in terms for d in dims[1:])
    ]


def _contract_chain(context, terms, state, level, ring, structure, leading):
    """One chain of a scan (see :func:`_contract_scan`): its term, and the
    terms outside the scan that it took in (those of ``leading`` sites in
    the chain's plates, summed out after the first steps)."""
    history = context.history if state else 0
    lag_dims = [
        [context.dims[name][lag] for name in state] for lag in range(history + 1)
    ]
    keep = {d for dims in lag_dims for d in dims}
    sum_dims = {
        dim: structure.variables[dim][1]
        for name, dims in context.dims.items()
        for dim in dims[:1]
        if dim not in keep and dim in structure.variables
    }
    # the recursion runs over every plate a carried site sits in
    target = frozenset(context.outer_plates).union(
        *(structure.variables[context.dims[name][0]][1] for name in state)
    )
    for term in terms:
        if not target <= term.ordinal:
            carried = sorted(
                name
                for name in state
                if not structure.variables[context.dims[name][0]][1] <= term.ordinal
            )
            raise ValueError(
                f"site {term.names[0]!r} in plates {sorted(term.ordinal)} is linked "
                f"to enumerated site(s) {carried} of the same scan, which carry "
                f"their values from step to step inside plates "
                f"{sorted(target - term.ordinal)}: the model is not a tree of "
                "plates that enumeration can sum exactly"
            )
    lead = _lead_ndim(terms[0].frames[:level])
    if any(ordinal != target for ordinal, _ in leading.values()):
        leading = {}
    taken = [t for _, outside in leading.values() for t in outside]
    steps = {}
    scale = taken[0].scale if taken else None
    names = [n for t in taken for n in t.names]
    for position in [*range(context.num_init), None]:
        step_terms = [t for t in terms if t.frames[level][1] == position]
        if not step_terms:
            continue
        out = _eliminate(step_terms, level + 1, target, sum_dims, ring, structure)
        for term in out:
            if scale is None and term.scale is not None:
                scale = term.scale
            names.extend(term.names)
        for term in out:
            if not _same_scale(scale, term.scale):
                raise ValueError(
                    f"sites {sorted(set(names))} of one enumerated scan have "
                    "different scales; enumeration needs one scale for them"
                )
        steps[position] = functools.reduce(jnp.add, [t.log for t in out])

    cycles = [context.dims[name] for name in state]
    oldest = tuple(lag_dims[history]) if history else ()

    def advance(alpha, step_log, step_ring):
        if cycles:
            alpha = context._shift_leaf(alpha, cycles)
        return step_ring.reduce(alpha + step_log, oldest)

    alpha = functools.reduce(jnp.add, [t.log for t in taken], jnp.zeros(()))
    if context.num_init == 0 and history:
        alpha = alpha + _start_links(context, state, structure, lead + structure.rank)
    for position in range(context.num_init):
        if position in steps:
            alpha = advance(alpha, steps[position], ring.fold(position))
    if leading:
        alpha = ring.fold(30_000).reduce(
            _pad_rank(alpha, lead + structure.rank), tuple(leading)
        )
    if None in steps:
        series = jnp.moveaxis(steps[None], lead, 0)
        if context.reverse:
            series = series[::-1]
        method = context.method or _default_method()
        if history == 0:
            alpha = alpha + jnp.sum(series, axis=0)
        elif method == "parallel" and len(series) > 1:
            alpha = _parallel_chain(alpha, series, lag_dims, structure, ring, context)
        else:
            alpha = _sequential_chain(alpha, series, advance, ring)
    final = tuple(d for dims in lag_dims[:history] for d in dims)
    alpha = _pad_rank(alpha, lead + structure.rank)
    result = ring.reduce(alpha, final)
    return _Term(result, target, scale, tuple(names), terms[0].frames[:level]), taken


def _start_links(context, state, structure, rank):
    """When the first step runs inside the loop (see
    :meth:`ScanEnumContext.start_in_loop`), the log-factor at lag 0 before it
    (``advance`` moves it to lag 1): 0 where the carried site's index equals
    that of the site outside the scan whose values the initial carry holds."""
    links = jnp.zeros(())
    for name in state:
        if name not in context.relabel:
            raise RuntimeError(
                f"scan: carried site {name!r} has no initial value to start from"
            )
        now, outside = context.dims[name][0], context.relabel[name]
        size = structure.variables[now][3]
        index = jnp.arange(size)
        shape_now = [1] * rank
        shape_now[rank + now] = size
        shape_out = [1] * rank
        shape_out[rank + outside] = size
        same = index.reshape(shape_now) == index.reshape(shape_out)
        links = links + jnp.where(same, 0.0, -jnp.inf)
    return links


def _pad_rank(x, rank):
    return jnp.reshape(x, (1,) * (rank - jnp.ndim(x)) + jnp.shape(x))


def _sequential_chain(alpha, series, advance, ring):
    # the loop carry must keep one shape: find the fixed point of the step
    def shape_after(shape):
        out = jax.eval_shape(
            lambda a, s: advance(a, s, ring.fold(0)),
            jax.ShapeDtypeStruct(shape, series.dtype),
            jax.ShapeDtypeStruct(series.shape[1:], series.dtype),
        )
        return out.shape

    shape = jnp.shape(alpha)
    for _ in range(8):
        new = shape_after(shape)
        new = jnp.broadcast_shapes(new, shape) if len(new) >= len(shape) else new
        if new == shape:
            break
        shape = new
    alpha = jnp.broadcast_to(_pad_rank(alpha, len(shape)), shape).astype(series.dtype)

    def body(alpha, step):
        index, step_log = step
        out = advance(alpha, step_log, ring.fold(index + 10_000))
        return jnp.broadcast_to(out, shape), None

    alpha, _ = jax.lax.scan(body, alpha, (jnp.arange(len(series)), series))
    return alpha


def _parallel_chain(alpha, series, lag_dims, structure, ring, context):
    """Combine the steps by a balanced tree of log-space matrix products over
    the state of the last ``history`` steps."""
    history = len(lag_dims) - 1
    rank = jnp.ndim(series) - 1
    state_sizes = [structure.variables[d][3] for d in lag_dims[0]]
    n = math.prod(state_sizes)
    lag_axes = [[rank + 1 + d for d in dims] for dims in lag_dims]  # axes in series
    sizes = list(series.shape)
    for axes in lag_axes:
        for axis, size in zip(axes, state_sizes, strict=True):
            sizes[axis] = size
    series = jnp.broadcast_to(series, tuple(sizes))
    moved_axes = [a for axes in lag_axes for a in axes]
    other = [a for a in range(series.ndim) if a not in moved_axes]
    # (time, batch..., lag0 state, lag1 state, ..., lag_k state)
    x = jnp.transpose(series, other + moved_axes)
    batch = x.shape[1 : len(other)]
    x = x.reshape(x.shape[: len(other)] + (n,) * (history + 1))
    # rows: state one step back (lags 1..k); columns: state now (lags 0..k-1)
    x = jnp.moveaxis(x, len(other), -1)  # (..., a1, ..., ak, b0)
    x = x.reshape(x.shape + (1,) * (history - 1))
    eye = jnp.where(jnp.eye(n, dtype=bool), 0.0, -jnp.inf).astype(x.dtype)
    base = len(other)
    for j in range(1, history):
        shape = [1] * x.ndim
        shape[base + j - 1] = n  # a_j
        shape[base + history + j] = n  # b_j
        x = x + eye.reshape(shape)
    states = n**history
    matrices = x.reshape(x.shape[: len(other)] + (states, states))

    identity = jnp.broadcast_to(
        jnp.where(jnp.eye(states, dtype=bool), 0.0, -jnp.inf).astype(x.dtype),
        matrices.shape[1:],
    )
    level = 0
    while matrices.shape[0] > 1:
        if matrices.shape[0] % 2:
            matrices = jnp.concatenate([matrices, identity[None]])
        matrices = ring.fold(20_000 + level).matmul(matrices[0::2], matrices[1::2])
        level += 1
    product = matrices[0]

    # alpha over lags 0..k-1 (the first scanned step's rows)
    alpha = _pad_rank(alpha, rank)
    alpha_sizes = list(jnp.shape(alpha))
    for dims in lag_dims[:history]:
        for d, size in zip(dims, state_sizes, strict=True):
            alpha_sizes[rank + d] = size
    alpha = jnp.broadcast_to(alpha, tuple(alpha_sizes))
    alpha_axes = [rank + d for dims in lag_dims[:history] for d in dims]
    oldest_axes = [rank + d for d in lag_dims[history]]  # size 1 here
    alpha_other = [a for a in range(rank) if a not in alpha_axes + oldest_axes]
    alpha = jnp.transpose(alpha, alpha_other + alpha_axes + oldest_axes)
    alpha = alpha.reshape(alpha.shape[: len(alpha_other)] + (states,))
    total = ring.reduce(alpha[..., :, None] + product, (-2, -1))[..., 0, 0]
    # back to the layout, with size 1 at every lag dim
    out_shape = list(jnp.broadcast_shapes(total.shape, batch))
    total = jnp.broadcast_to(total, tuple(out_shape))
    full = [1] * rank
    for axis, size in zip(other[1:], out_shape, strict=True):
        full[axis - 1] = size
    return total.reshape(tuple(full))


# -- entry points ------------------------------------------------------------------


def contract_trace(
    model_trace: dict,
    ring=None,
    logs: dict | None = None,
    guide_trace: dict | None = None,
    unmask_enumerated: bool = False,
):
    """Log density of an enumerated trace with its enumerated sites summed
    out (a scalar; plates multiplied out, scales applied).

    Args:
        model_trace: a trace recorded under :class:`probnn.handlers.enum`.
        ring: the contraction's semiring (default: exact sum-product).
        logs: optional replacement log densities by site name (used by
            ``infer_discrete`` to differentiate with respect to them).
            Called outside ``jit``, the contraction runs as one jitted
            function.
        guide_trace: a guide trace with enumerated sites (recorded under
            ``enum``); the result is then the ELBO: the expectation, over
            the guide's enumerated sites, of ``log p - log q`` (its other
            sites enter as in Trace_ELBO).
        unmask_enumerated: the enumerated sites' own densities enter
            without their masks, so that a masked-out member of an
            enumerated site sums to one (NumPyro's TraceEnum_ELBO); by
            default a masked density is 1 for every value, as in NumPyro's
            enumerated ``log_density``.
    """
    ring = _SumProduct() if ring is None else ring
    logs = dict(logs or {})
    for name, site in model_trace.items():
        if site["type"] == "sample" and name not in logs:
            # the model's own enumerated sites (not those the guide gave)
            summed = _is_summed(site) and name not in (guide_trace or {})
            logs[name] = site_log(site, unmask_enumerated and summed)
    latent = {
        name: site
        for name, site in (guide_trace or {}).items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    guide_logs = {name: site_log(site) for name, site in latent.items()}
    guide_weights = {
        name: site_log(site, unmask_enumerated)
        if unmask_enumerated
        else guide_logs[name]
        for name, site in latent.items()
        if _is_summed(site)
    }

    def contract(logs, guide_logs, guide_weights):
        unique = _unique_dims(model_trace)
        structure = _Structure(model_trace, guide_trace, unique)
        guide_terms = []
        if guide_trace is not None:
            guide_terms = _guide_terms(
                guide_trace, structure, guide_logs, guide_weights
            )
        terms = _site_terms(model_trace, structure, logs, unique)
        if guide_terms:
            pad = functools.partial(_pad_rank, rank=structure.rank)
            structure.guide_weights = {
                d: pad(w) for d, w in structure.guide_weights.items()
            }
            terms += [t._replace(log=pad(t.log)) for t in guide_terms]
            for term in terms[-len(guide_terms) :]:
                _check_dims(term, structure)
        sum_dims = {dim: v[1] for dim, v in structure.variables.items() if v[2] is None}
        out = _eliminate(terms, 0, frozenset(), sum_dims, ring, structure)
        total = jnp.zeros(())
        for term in out:
            total = total + jnp.sum(_apply_scale(term))
        return total

    if isinstance(jnp.zeros(()), jax.core.Tracer):
        return contract(logs, guide_logs, guide_weights)
    # called eagerly: one compiled contraction instead of an XLA compilation
    # for every distinct tensor shape along the way
    return jax.jit(contract)(logs, guide_logs, guide_weights)


def _is_summed(site) -> bool:
    return site["infer"].get("_enumerate_dim") is not None
