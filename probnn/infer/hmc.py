"""Hamiltonian Monte Carlo kernels: HMC with a fixed trajectory length and
the No-U-Turn Sampler (iterative, multinomial; no Python recursion).

Kernels work on one flat vector of every latent site in unconstrained space
(sites are mapped onto their supports through ``biject_to``, with the log
Jacobian in the potential). Sites marked for enumeration are summed out of
the potential (see :func:`probnn.infer.util.potential_energy`).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from probnn.handlers import block, is_typed_key, seed, substitute, trace
from probnn.infer import hmc_util as hu
from probnn.infer.initialization import init_to_feasible, init_to_uniform
from probnn.infer.util import (
    ParamInfo,
    constrain_fn,
    latent_site_names,
    missing_plates,
    potential_energy,
    search_valid_point,
    strategy_point,
    unconstrained_point,
    value_and_grad_fn,
)
from probnn.runtime import Messenger
from probnn.util import not_jax_tracer

__all__ = ["HMC", "HMCState", "NUTS", "hmc"]

MAX_DELTA_ENERGY = 1000.0


class HMCState(NamedTuple):
    """The state of an HMC or NUTS chain (NumPyro's fields).

    ``z`` and ``z_grad`` are flat vectors of the unconstrained latent
    values (``MCMC`` maps draws back to sites); ``adapt_state`` holds the
    step size and the inverse mass matrix: the sampler's
    :class:`probnn.infer.hmc_util.AdaptState` (over the flat vector) inside
    the chain and in the functional interface :func:`hmc`, a
    :class:`probnn.infer.hmc_util.HMCAdaptState` (NumPyro's blocks of
    sites) in ``MCMC.last_state``.
    """

    i: Any
    z: Any
    z_grad: Any
    potential_energy: Any
    energy: Any
    r: Any
    trajectory_length: Any
    num_steps: Any
    accept_prob: Any
    mean_accept_prob: Any
    diverging: Any
    adapt_state: Any
    rng_key: Any


class _ValuesGivenInside(Messenger):
    """Records the latent sample sites that a handler inside the model (a
    ``substitute``) has already given a value."""

    def __init__(self, fn):
        self.names = []
        super().__init__(fn)

    def process_message(self, msg) -> None:
        if (
            msg["type"] == "sample"
            and not msg["is_observed"]
            and msg["value"] is not None
        ):
            self.names.append(msg["name"])


def _latent_point(model, args, kwargs) -> dict:
    """Zeros shaped like the model's latent sites in unconstrained space, by
    name: the sites NUTS samples (found by one abstract trace)."""
    given = _ValuesGivenInside(model)
    plate_messages = []

    def run():
        # latent values from the init strategy, not drawn: an improper
        # prior (ImproperUniform) has no sampler
        feasible = substitute(given, substitute_fn=init_to_feasible)
        with block():
            model_trace = trace(seed(feasible, rng_seed=0)).get_trace(*args, **kwargs)
        plate_messages.extend(missing_plates(model_trace))
        return unconstrained_point(model_trace, latent_site_names(model_trace))

    shapes = jax.eval_shape(run)
    if given.names:
        # NumPyro samples them too, and warns; a value meant to stay fixed
        # is given with condition (an observed site)
        warnings.warn(
            f"MCMC: latent site(s) {sorted(set(given.names))} have a value given "
            "inside the model (substitute): they are sampled all the same, "
            "skipping initialization from that value; use "
            "handlers.condition to hold a site at a value",
            UserWarning,
            stacklevel=2,
        )
    for message in dict.fromkeys(plate_messages):
        warnings.warn(message, UserWarning, stacklevel=2)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _argument_key(tree):
    """A hashable key for model arguments closed over as constants (not
    traced): equal keys mean the model sees the same values. numpy arrays
    are keyed by their contents, JAX arrays (immutable) by identity (keep a
    reference to them while the key is in use), other leaves by type and
    value. None when some leaf cannot be compared (unhashable, e.g. an
    ``argparse.Namespace``, or a tracer): then nothing may be reused."""
    leaves, structure = jax.tree.flatten(tree)
    parts = []
    for leaf in leaves:
        if isinstance(leaf, jax.core.Tracer):
            return None
        if isinstance(leaf, jax.Array):
            parts.append(("jax", id(leaf)))
        elif isinstance(leaf, np.ndarray):
            if leaf.dtype.hasobject:
                return None
            digest = hashlib.blake2b(np.ascontiguousarray(leaf).tobytes()).digest()
            parts.append(("numpy", leaf.shape, leaf.dtype.str, digest))
        else:
            try:
                hash(leaf)
            except TypeError:
                return None
            parts.append((type(leaf), leaf))
    return structure, tuple(parts)


def _signature(tree):
    """What an abstract trace of the model depends on: the arguments'
    structure, array shapes and dtypes, and the other leaves' values."""
    leaves, structure = jax.tree.flatten(tree)
    return structure, tuple(
        (jnp.shape(leaf), jnp.result_type(leaf))
        if isinstance(leaf, jax.Array | np.ndarray)
        else (type(leaf), repr(leaf))
        for leaf in leaves
    )


# -- structured mass matrices -----------------------------------------------------
#
# The sampler works on one flat vector of every latent site (ordered by site
# name) with an inverse mass matrix that is a vector (diagonal) or a matrix
# (dense, zero outside the dense blocks). Users and ``MCMC.last_state`` see
# NumPyro's form instead: a dict from tuples of site names to one block each.
# The two are converted into each other at the boundaries only (kernel
# set-up, and the state MCMC shows or is given back), never in the loop.


class _Block(NamedTuple):
    """One block of the mass matrix as NumPyro shows it: its key (site
    names), its coordinates' positions in the flat vector in the key's
    order, and whether it is dense (else diagonal)."""

    key: tuple
    index: np.ndarray
    dense: bool


def _as_key(names) -> tuple:
    """A block's key: a tuple of site names (a lone name counts as one)."""
    return (names,) if isinstance(names, str) else tuple(names)


def _site_positions(example: dict) -> dict:
    """Each latent site's positions in the flat vector: ``ravel_pytree``
    lays the sites out by sorted name, each one's values row-major."""
    positions, start = {}, 0
    for name in sorted(example):
        length = int(np.prod(jnp.shape(example[name]), dtype=int))
        positions[name] = np.arange(start, start + length)
        start += length
    return positions


def _mass_layout(kind: str, positions: dict, dense_mass, given) -> list:
    """NumPyro's blocks: each ``dense_mass`` group (dense; ``True`` is one
    group of every site), each other key of a dict ``inverse_mass_matrix``
    (diagonal), and one diagonal block of the sites named nowhere (sorted),
    ordered by key as a JAX pytree orders dict keys."""
    sites = sorted(positions)
    if isinstance(dense_mass, bool | np.bool_):
        dense_mass = bool(dense_mass)
    if dense_mass is True:
        groups = [tuple(sites)] if sites else []
    elif not dense_mass:
        groups = []
    else:
        # a group named twice is one block (as in NumPyro)
        groups = list(dict.fromkeys(_as_key(group) for group in dense_mass))
        if any(not group for group in groups):
            raise ValueError(f"{kind}: dense_mass has an empty group: {dense_mass!r}")
    named = [_as_key(key) for key in given] if isinstance(given, dict) else []
    if any(not key for key in named):
        raise ValueError(f"{kind}: inverse_mass_matrix has an empty key ()")
    for where, keys in (("dense_mass", groups), ("inverse_mass_matrix", named)):
        unknown = sorted({n for key in keys for n in key if n not in positions})
        if unknown:
            raise ValueError(
                f"{kind}: {where} names {unknown}, which are not latent sites; "
                f"they are {sites}"
            )
    diagonal = [key for key in dict.fromkeys(named) if key not in groups]
    owner: dict = {}
    for key in [*groups, *diagonal]:
        for name in key:
            if name in owner:
                hint = ""
                if key in diagonal and set(key) == set(owner[name]):
                    hint = (
                        "; a key of inverse_mass_matrix for a dense block must "
                        "be its dense_mass group, with the sites in the same order"
                    )
                raise ValueError(
                    f"{kind}: site {name!r} is in two blocks of the mass matrix, "
                    f"{owner[name]} and {key}; each latent site belongs to one "
                    f"block (dense_mass groups and inverse_mass_matrix keys){hint}"
                )
            owner[name] = key
    rest = tuple(name for name in sites if name not in owner)
    blocks = [(key, True) for key in groups] + [(key, False) for key in diagonal]
    if rest:
        blocks.append((rest, False))
    return sorted(
        (
            _Block(key, np.concatenate([positions[n] for n in key]).astype(int), dense)
            for key, dense in blocks
        ),
        key=lambda blk: blk.key,
    )


def _block_sizes(positions: dict, key: tuple) -> str:
    return ", ".join(f"{name!r}: {len(positions[name])}" for name in key)


class HMC:
    """Hamiltonian Monte Carlo with a fixed trajectory length.

    Args:
        model: a model; or give ``potential_fn`` instead.
        potential_fn: a function of a pytree of unconstrained values
            returning the potential energy (negative log density).
        kinetic_fn: not supported (the Gaussian kinetic energy is built in);
            must be None.
        step_size: initial step size.
        inverse_mass_matrix: initial inverse mass matrix; identity by
            default. An array over the whole flat latent vector (the sites
            by sorted name, each flattened), or, with a model, a dict from
            tuples of site names to blocks, as in NumPyro: each value is
            over its sites' flattened values concatenated in the key's
            order, a vector (the diagonal) or a matrix; a key that is a
            ``dense_mass`` group gives that dense block (a vector is its
            diagonal), any other key a diagonal block (of a matrix only the
            diagonal is used); sites named nowhere get ones. Which blocks
            are dense is ``dense_mass``'s choice: an array gives its
            diagonal for a diagonal mass matrix and is masked to the dense
            blocks of ``dense_mass`` groups.
        adapt_step_size: adapt the step size during warmup (dual averaging).
        adapt_mass_matrix: adapt the inverse mass matrix during warmup
            (Stan's windows).
        dense_mass: False (diagonal), True (dense), or a list of tuples of
            site names, each a block of sites with a dense mass matrix (the
            rest diagonal; ``[]`` is False). ``MCMC.last_state.adapt_state``
            shows the mass matrix by blocks as NumPyro does (see
            :class:`probnn.infer.hmc_util.HMCAdaptState`): one key, every
            site sorted by name, for False and True; for groups, each
            group, each other key of a dict ``inverse_mass_matrix``, and a
            diagonal block of the sites left.
        target_accept_prob: the acceptance probability step-size adaptation
            aims for.
        num_steps: leapfrog steps per iteration (default:
            ``ceil(trajectory_length / step_size)``).
        trajectory_length: the integration time, exactly (as in NumPyro):
            the leapfrog step is ``trajectory_length / num_steps``, so the
            adapted step size sets the number of steps; None integrates
            ``num_steps`` steps of the adapted step size.
        init_strategy: where chains start (see :mod:`probnn.infer.initialization`).
        find_heuristic_step_size: double/halve the initial step size until one
            step's acceptance crosses 1/2.
        regularize_mass_matrix: shrink the estimated mass matrix towards the
            identity as Stan does.
    """

    sample_field = "z"

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        kinetic_fn=None,
        step_size: float = 1.0,
        inverse_mass_matrix=None,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        dense_mass=False,
        target_accept_prob: float = 0.8,
        num_steps: int | None = None,
        trajectory_length: float = 2 * math.pi,
        init_strategy: Callable = init_to_uniform,
        find_heuristic_step_size: bool = False,
        forward_mode_differentiation: bool = False,
        regularize_mass_matrix: bool = True,
    ):
        name = type(self).__name__
        if (model is None) == (potential_fn is None):
            raise ValueError(f"{name}: pass exactly one of model= or potential_fn=")
        if kinetic_fn is not None:
            raise NotImplementedError(
                f"{name}: kinetic_fn is not supported; the kinetic energy is "
                "Gaussian with the (adapted) mass matrix"
            )
        # values traced by the caller's jit (a kernel built inside it) are
        # checked by the sampler's own arithmetic instead
        if not_jax_tracer(target_accept_prob) and not 0 < target_accept_prob < 1:
            raise ValueError(
                f"{name}: target_accept_prob must be in (0, 1), got "
                f"{target_accept_prob!r}"
            )
        if not_jax_tracer(step_size) and step_size <= 0:
            raise ValueError(f"{name}: step_size must be positive, got {step_size!r}")
        if num_steps is None and trajectory_length is None:
            raise ValueError(
                "HMC: At least one of num_steps and trajectory_length must be "
                "given (either fixes the length of each trajectory)"
            )
        if num_steps is not None and (not isinstance(num_steps, int) or num_steps < 1):
            raise ValueError(
                f"{name}: num_steps must be a positive int, got {num_steps!r}"
            )
        if num_steps is not None and trajectory_length is not None and adapt_step_size:
            # as NumPyro (trajectory_length has a default, so this is any
            # HMC given num_steps and left to adapt its step size)
            warnings.warn(
                f"{name}: If both num_steps and trajectory_length are given, the "
                f"step size is trajectory_length / num_steps = "
                f"{trajectory_length!r} / {num_steps} and cannot be adapted; "
                "give trajectory_length=None to adapt it",
                UserWarning,
                stacklevel=2,
            )
        self.model = model
        self.potential_fn = potential_fn
        self.step_size = step_size
        self.inverse_mass_matrix = inverse_mass_matrix
        self.adapt_step_size = adapt_step_size
        self.adapt_mass_matrix = adapt_mass_matrix
        self.dense_mass = dense_mass
        self.target_accept_prob = target_accept_prob
        self.num_steps = num_steps
        self.trajectory_length = trajectory_length
        self.init_strategy = init_strategy
        self.find_heuristic_step_size = find_heuristic_step_size
        self.forward_mode_differentiation = forward_mode_differentiation
        self.regularize_mass_matrix = regularize_mass_matrix
        self._points: dict = {}
        self._last_point = None

    # -- set-up --------------------------------------------------------------------

    def setup(
        self,
        model_args: tuple,
        model_kwargs: dict,
        init_params=None,
        *,
        traced_args: bool = True,
    ):
        """Prepare for a run: find the latent sites and how to flatten them.
        Returns the unravel function.

        ``traced_args``: the run traces the model arguments (the latent
        sites' shapes can only depend on their shapes); otherwise they are
        closed over, and a latent site's shape may depend on their values."""
        name = type(self).__name__
        if self.model is None:
            if init_params is None:
                raise ValueError(
                    f"{name}: with potential_fn=, pass init_params= to MCMC.run (a "
                    "pytree of initial unconstrained values; the potential's argument)"
                )
            example = init_params
            self._latent_names = None
        else:
            example = self._latent_example(model_args, model_kwargs, traced_args)
            self._latent_names = list(example)
        flat, unravel = ravel_pytree(example)
        self._unravel = unravel
        self._example = example
        self._set_mass_structure(flat.shape[0])
        if not hasattr(self, "_num_warmup"):
            # a fresh kernel handed another run's post_warmup_state starts
            # without init_state: no warmup left, the structure from setup
            self._num_warmup = 0
            mask = self._mass_mask
            self._mask = None if mask is None else np.asarray(mask, flat.dtype)
        return unravel

    def _latent_example(self, model_args, model_kwargs, traced_args):
        """The latent point of :func:`_latent_point`, kept so that warm runs
        skip the abstract trace: per argument signature when the arguments
        are traced; for the last arguments' values when they are closed over
        (with a reference to them, which the key's identities rely on)."""
        if traced_args:
            key = _signature((model_args, model_kwargs))
            if key not in self._points:
                self._points[key] = _latent_point(self.model, model_args, model_kwargs)
            return self._points[key]
        key = _argument_key((model_args, model_kwargs))
        last = self._last_point
        if key is not None and last is not None and last[0] == key:
            return last[2]
        example = _latent_point(self.model, model_args, model_kwargs)
        self._last_point = (key, (model_args, model_kwargs), example)
        return example

    def _potential(self, model_args, model_kwargs):
        unravel = self._unravel
        if self.model is None:
            fn = self.potential_fn

            def potential(flat):
                return fn(unravel(flat))
        else:
            model = self.model

            def potential(flat):
                return potential_energy(model, model_args, model_kwargs, unravel(flat))

        return value_and_grad_fn(potential, self.forward_mode_differentiation)

    def initial_point(self, key, model_args, model_kwargs, init_params=None):
        """``(flat point, potential, gradient, ok)``: ``init_params`` if
        given, else the init strategy's point, retried with new keys (up to
        100 times) until potential and gradient are finite."""
        potential_and_grad = self._potential(model_args, model_kwargs)

        def evaluate(flat):
            value, grad = potential_and_grad(flat)
            return flat, value, grad, jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))

        if init_params is not None:
            return evaluate(ravel_pytree(init_params)[0])
        propose = strategy_point(
            self.model, self.init_strategy, self._latent_names, model_args, model_kwargs
        )

        def evaluate_point(flat):
            return evaluate(flat)[1:]

        example = jnp.zeros(ravel_pytree(self._example)[0].shape)
        return search_valid_point(
            key, lambda k: ravel_pytree(propose(k))[0], evaluate_point, example
        )

    def nonfinite_sites(self, flat, model_args, model_kwargs) -> list:
        """Sites whose log density is not finite at ``flat`` (for errors)."""
        from probnn.infer.util import site_log_prob

        point = self._unravel(flat)
        bad = []
        values = constrain_fn(self.model, model_args, model_kwargs, point)
        model_trace = trace(
            substitute(seed(self.model, rng_seed=0), data=values)
        ).get_trace(*model_args, **model_kwargs)
        for name, site in model_trace.items():
            if site["type"] == "sample" and not bool(
                jnp.all(jnp.isfinite(site_log_prob(site)))
            ):
                bad.append(name)
        return bad

    def postprocess_fn(self, model_args, model_kwargs):
        """Map a flat unconstrained sample to constrained values by site name
        (with the model's deterministic sites)."""
        unravel = self._unravel
        if self.model is None:
            return unravel
        model = self.model

        def constrain(flat):
            return constrain_fn(
                model,
                model_args,
                model_kwargs,
                unravel(flat),
                return_deterministic=True,
            )

        return constrain

    # -- the chain -----------------------------------------------------------------

    def _set_mass_structure(self, size):
        """Check ``dense_mass`` and ``inverse_mass_matrix`` against the
        latent sites and keep what the chain needs: ``_mass_mask``, None
        (a diagonal inverse mass matrix, a vector) or the 0/1 mask of the
        dense one; and with a model ``_layout``, NumPyro's blocks."""
        name = type(self).__name__
        dense, given = self.dense_mass, self.inverse_mass_matrix
        if isinstance(dense, bool | np.bool_):
            dense = bool(dense)
        self._size = size
        self._layout = None
        if self._latent_names is None:
            if isinstance(given, dict):
                raise ValueError(
                    f"{name}: inverse_mass_matrix as a dict of blocks of sites needs "
                    "a model; with potential_fn give an array over the flat vector"
                )
            if not (dense is True or not dense):
                raise ValueError(f"{name}: dense_mass as groups of sites needs a model")
        else:
            positions = _site_positions(self._example)
            self._layout = _mass_layout(name, positions, dense, given)
            if isinstance(given, dict):
                blocks = {blk.key: blk for blk in self._layout}
                for key, value in given.items():
                    key = _as_key(key)
                    n = len(blocks[key].index)
                    if jnp.shape(value) not in ((n,), (n, n)):
                        raise ValueError(
                            f"{name}: inverse_mass_matrix[{key!r}] has shape "
                            f"{jnp.shape(value)}, but its sites "
                            f"({_block_sizes(positions, key)}) have {n} values in "
                            f"all: expected shape ({n},) or ({n}, {n})"
                        )
        if given is not None and not isinstance(given, dict):
            if jnp.shape(given) not in ((size,), (size, size)):
                raise ValueError(
                    f"{name}: inverse_mass_matrix has shape {jnp.shape(given)}, but "
                    f"the flat latent vector has {size} values: expected shape "
                    f"({size},) or ({size}, {size}) (or, with a model, a dict from "
                    "tuples of site names to blocks)"
                )
        if dense is True:
            self._mass_mask = np.ones((size, size))
        elif self._layout is None or not any(b.dense for b in self._layout):
            self._mass_mask = None
        else:
            mask = np.eye(size)
            for blk in self._layout:
                if blk.dense:
                    mask[np.ix_(blk.index, blk.index)] = 1
            self._mass_mask = mask

    def _initial_inverse_mass(self, size, dtype):
        """The flat inverse mass matrix the chain starts from: identity, or
        ``inverse_mass_matrix`` as NumPyro reads it (a vector for a dense
        block is its diagonal; a matrix for a diagonal block gives its
        diagonal; sites not named get ones)."""
        mask, given = self._mass_mask, self.inverse_mass_matrix
        if given is None:
            if mask is None:
                return jnp.ones(size, dtype)
            return jnp.eye(size, dtype=dtype)
        if not isinstance(given, dict):
            inverse_mass = jnp.asarray(given, dtype)
            if mask is None:
                if inverse_mass.ndim == 2:
                    inverse_mass = jnp.diagonal(inverse_mass)
                return inverse_mass
            if inverse_mass.ndim == 1:
                inverse_mass = jnp.diag(inverse_mass)
            if not mask.all():
                # one matrix over the flat vector: the blocks' entries
                inverse_mass = inverse_mass * jnp.asarray(mask, dtype)
            return inverse_mass
        values = {_as_key(key): value for key, value in given.items()}
        if mask is None:
            inverse_mass = jnp.ones(size, dtype)
        else:
            inverse_mass = jnp.eye(size, dtype=dtype)
        for blk in self._layout:
            if blk.key not in values:
                continue
            value = jnp.asarray(values[blk.key], dtype)
            index = blk.index
            if blk.dense:
                if value.ndim == 1:
                    value = jnp.diag(value)
                inverse_mass = inverse_mass.at[np.ix_(index, index)].set(value)
                continue
            if value.ndim == 2:
                value = jnp.diagonal(value)
            if mask is None:
                inverse_mass = inverse_mass.at[index].set(value)
            else:
                inverse_mass = inverse_mass.at[index, index].set(value)
        return inverse_mass

    # -- the state as MCMC shows it ------------------------------------------------

    def _mass_view(self, inverse_mass):
        """``(inverse_mass_matrix, mass_matrix_sqrt, mass_matrix_sqrt_inv)``
        as NumPyro shows them, from the flat inverse mass matrix (with any
        leading batch dimensions, e.g. chains): dicts of blocks with a
        model, arrays with ``potential_fn``."""
        dense_flat = self._mass_mask is not None
        if self._layout is None:
            return (inverse_mass, *hu.mass_matrix_factors(inverse_mass, dense_flat))
        views: tuple = ({}, {}, {})
        for blk in self._layout:
            index = blk.index
            if not dense_flat:
                part = inverse_mass[..., index]
            elif blk.dense:
                part = inverse_mass[..., index[:, None], index]
            else:
                part = inverse_mass[..., index, index]
            sqrt, sqrt_inv = hu.mass_matrix_factors(part, blk.dense)
            for view, value in zip(views, (part, sqrt, sqrt_inv), strict=True):
                view[blk.key] = value
        return views

    def _flat_inverse_mass(self, inverse_mass, dtype):
        """The inverse of :meth:`_mass_view` for ``inverse_mass_matrix``:
        the flat matrix (with the blocks' leading batch dimensions)."""
        name = type(self).__name__
        dense_flat = self._mass_mask is not None
        size = self._size
        tail = (size, size) if dense_flat else (size,)
        if self._layout is None:
            inverse_mass = jnp.asarray(inverse_mass, dtype)
            if inverse_mass.shape[inverse_mass.ndim - len(tail) :] != tail:
                raise ValueError(
                    f"{name}: the state's inverse_mass_matrix has shape "
                    f"{inverse_mass.shape}; this kernel's ends in {tail}"
                )
            return inverse_mass
        expected = [blk.key for blk in self._layout]
        if not isinstance(inverse_mass, dict) or sorted(
            map(_as_key, inverse_mass)
        ) != sorted(expected):
            keys = list(inverse_mass) if isinstance(inverse_mass, dict) else None
            raise ValueError(
                f"{name}: the state's inverse_mass_matrix must be a dict with this "
                f"kernel's blocks as keys, {expected}; got "
                f"{keys if keys is not None else type(inverse_mass).__name__}"
            )
        values = {_as_key(k): jnp.asarray(v, dtype) for k, v in inverse_mass.items()}
        batch = None
        for blk in self._layout:
            value, n = values[blk.key], len(blk.index)
            own = (n, n) if blk.dense else (n,)
            lead = value.shape[: value.ndim - len(own)]
            if value.shape[value.ndim - len(own) :] != own or (
                batch is not None and lead != batch
            ):
                raise ValueError(
                    f"{name}: the state's inverse_mass_matrix[{blk.key!r}] has "
                    f"shape {value.shape}; expected {own} after the batch (chain) "
                    "dimensions, the same for every block"
                )
            batch = lead
        flat = jnp.zeros((*batch, *tail), dtype)
        for blk in self._layout:
            value, index = values[blk.key], blk.index
            if not dense_flat:
                flat = flat.at[..., index].set(value)
            elif blk.dense:
                flat = flat.at[..., index[:, None], index].set(value)
            else:
                flat = flat.at[..., index, index].set(value)
        return flat

    def public_state(self, state: HMCState) -> HMCState:
        """The state as :class:`MCMC` shows it (``last_state``): the
        adaptation state as :class:`probnn.infer.hmc_util.HMCAdaptState`,
        the mass matrix in NumPyro's form. Any leading (chain) dimensions
        are kept in front of every value."""
        adapt = state.adapt_state
        if not isinstance(adapt, hu.AdaptState):
            return state
        inverse_mass, sqrt, sqrt_inv = self._mass_view(adapt.inverse_mass_matrix)
        public = hu.HMCAdaptState(
            adapt.step_size,
            inverse_mass,
            sqrt,
            sqrt_inv,
            adapt.dual_averaging,
            adapt.welford,
            adapt.momentum_scale,
        )
        return state._replace(adapt_state=public)

    def internal_state(self, state: HMCState) -> HMCState:
        """The inverse of :meth:`public_state` (e.g. for
        ``MCMC.post_warmup_state``): the flat mass matrix the chain carries,
        with the state's ``momentum_scale`` where ``inverse_mass_matrix`` is
        as :meth:`public_state` left it (recomputing it could round
        differently from the compiled chain, and the chain would not go on
        bit for bit), else one derived from the new matrix."""
        adapt = state.adapt_state
        if not isinstance(adapt, hu.HMCAdaptState):
            return state
        dtype = jnp.result_type(state.z)
        flat = self._flat_inverse_mass(adapt.inverse_mass_matrix, dtype)
        batch_ndim = flat.ndim - (1 if self._mass_mask is None else 2)
        scale_of = hu.momentum_scale_of
        for _ in range(batch_ndim):
            scale_of = jax.vmap(scale_of)
        scale = scale_of(flat)
        kept = adapt.momentum_scale
        if kept is not None and jnp.shape(kept) == scale.shape:
            same = self._unchanged(flat, adapt.mass_matrix_sqrt_inv, batch_ndim)
            if same is not None:
                same = jnp.reshape(same, same.shape + (1,) * (scale.ndim - batch_ndim))
                scale = jnp.where(same, jnp.asarray(kept, dtype), scale)
        internal = hu.AdaptState(
            adapt.step_size, flat, scale, adapt.dual_averaging, adapt.welford
        )
        return state._replace(adapt_state=internal)

    def _unchanged(self, flat, shown_roots, batch_ndim):
        """Per batch entry (chain), whether the inverse mass matrix ``flat``
        is the one that :meth:`public_state` showed with ``shown_roots`` as
        ``mass_matrix_sqrt_inv``: the same computation on the same values
        reproduces them bit for bit (None if their structure differs)."""
        roots = self._mass_view(flat)[2]
        if self._layout is None:
            roots, shown_roots = {(): roots}, {(): shown_roots}
        if not isinstance(shown_roots, dict) or set(shown_roots) != set(roots):
            return None
        same = None
        for key, root in roots.items():
            shown = shown_roots[key]
            if jnp.shape(shown) != root.shape:
                return None
            equal = jnp.all(
                root == jnp.asarray(shown, root.dtype),
                axis=tuple(range(batch_ndim, root.ndim)),
            )
            same = equal if same is None else same & equal
        return same

    def public_mass_field(self, field: str, inverse_mass):
        """The adaptation state's ``field`` (``"inverse_mass_matrix"``,
        ``"mass_matrix_sqrt"`` or ``"mass_matrix_sqrt_inv"``) as NumPyro
        shows it, from flat inverse mass matrices (e.g. collected per draw
        as an extra field)."""
        fields = ("inverse_mass_matrix", "mass_matrix_sqrt", "mass_matrix_sqrt_inv")
        return self._mass_view(inverse_mass)[fields.index(field)]

    def init_state(
        self, key, flat, value, grad, num_warmup, model_args, model_kwargs
    ) -> HMCState:
        """The chain's first state at the flat point ``flat`` (with its
        potential ``value`` and gradient ``grad``)."""
        potential_and_grad = self._potential(model_args, model_kwargs)
        size = flat.shape[0]
        dtype = flat.dtype
        mask = self._mass_mask
        inverse_mass = self._initial_inverse_mass(size, dtype)
        scale = hu.momentum_scale_of(inverse_mass)
        step = jnp.asarray(self.step_size, dtype)
        key, step_key = jax.random.split(key)
        # without latent sites every step is accepted: nothing to search
        searching = self.find_heuristic_step_size or (
            self.adapt_step_size and num_warmup > 0
        )
        if searching and size > 0:
            step = hu.find_reasonable_step_size(
                potential_and_grad,
                inverse_mass,
                scale,
                flat,
                value,
                grad,
                step_key,
                step,
            )
        dense = jnp.ndim(inverse_mass) == 2
        adapt = hu.AdaptState(
            step,
            inverse_mass,
            scale,
            hu.dual_averaging_init(step),
            hu.welford_init(size, dense, dtype),
        )
        zero = jnp.zeros((), dtype)
        self._num_warmup = num_warmup
        # kept as numpy: a jax array made while tracing would be a tracer
        self._mask = None if mask is None else np.asarray(mask, dtype)
        return HMCState(
            jnp.zeros((), jnp.int32),
            flat,
            grad,
            value,
            value,
            jnp.zeros_like(flat),
            zero,
            jnp.zeros((), jnp.int32),
            zero,
            zero,
            jnp.zeros((), bool),
            adapt,
            key,
        )

    def sample(self, state: HMCState, model_args, model_kwargs) -> HMCState:
        """One iteration (with adaptation while ``state.i < num_warmup``)."""
        potential_and_grad = self._potential(model_args, model_kwargs)
        key, momentum_key, transition_key = jax.random.split(state.rng_key, 3)
        adapt = state.adapt_state
        r = hu.sample_momentum(momentum_key, adapt.momentum_scale, state.z)
        kinetic = hu.kinetic_energy(adapt.inverse_mass_matrix, r)
        energy = state.potential_energy + kinetic
        out = self._transition(
            potential_and_grad,
            adapt,
            transition_key,
            state.z,
            r,
            state.potential_energy,
            state.z_grad,
            energy,
            state.i < self._num_warmup,
        )
        z, z_grad, value, new_energy, num_steps, accept_prob, diverging = out
        adapt = self._adapt(
            state.i,
            adapt,
            accept_prob,
            z,
            potential_and_grad,
            value,
            z_grad,
            transition_key,
        )
        count = state.i + 1
        # running mean over the post-warmup iterations
        n = jnp.maximum(count - self._num_warmup, 1).astype(
            state.mean_accept_prob.dtype
        )
        mean_accept = jnp.where(
            state.i < self._num_warmup,
            0.0,
            state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / n,
        )
        return HMCState(
            count,
            z,
            z_grad,
            value,
            new_energy,
            r,
            num_steps * adapt.step_size,
            num_steps,
            accept_prob,
            mean_accept,
            diverging,
            adapt,
            key,
        )

    def _adapt(
        self,
        i,
        adapt: hu.AdaptState,
        accept_prob,
        z,
        potential_and_grad,
        value,
        grad,
        key,
    ) -> hu.AdaptState:
        """The adaptation after warmup iteration ``i``, whose draw ``z`` has
        potential ``value`` and gradient ``grad``: a dual-averaging step of
        the step size, the draw fed to the mass-matrix estimate, and at the
        end of a slow window the new mass matrix, with the step size searched
        afresh for it (as Stan and NumPyro do; ``key``'s branch draws the
        search's momentum, leaving the chain's stream alone)."""
        num_warmup = self._num_warmup
        if num_warmup == 0 or not (self.adapt_step_size or self.adapt_mass_matrix):
            return adapt
        collect, window_end = hu.adaptation_schedule(num_warmup)
        collect, window_end = jnp.asarray(collect), jnp.asarray(window_end)
        warm = i < num_warmup
        t = jnp.minimum(i, num_warmup - 1)

        def end_window(args):
            step, inverse_mass, scale, welford, averaging = args
            new = hu.welford_covariance(welford, self.regularize_mass_matrix)
            if self._mask is not None:
                new = new * self._mask
            new_scale = hu.momentum_scale_of(new)
            fresh = hu.welford_init(z.shape[0], new.ndim == 2, z.dtype)
            if self.adapt_step_size:
                step = hu.find_reasonable_step_size(
                    potential_and_grad,
                    new,
                    new_scale,
                    z,
                    value,
                    grad,
                    jax.random.fold_in(key, 1),
                    step,
                )
                averaging = hu.dual_averaging_init(step)
            return step, new, new_scale, fresh, averaging

        def adapted(adapt):
            step, inverse_mass, scale, averaging, welford = adapt
            if self.adapt_step_size:
                averaging = hu.dual_averaging_update(
                    averaging,
                    accept_prob,
                    self.target_accept_prob,
                    max_count=num_warmup,
                )
                step = jnp.exp(averaging.log_step_size)
            if self.adapt_mass_matrix:
                welford = hu.batch_cond(
                    collect[t], hu.welford_update, lambda w, _: w, welford, z
                )
                step, inverse_mass, scale, welford, averaging = hu.batch_cond(
                    window_end[t],
                    end_window,
                    lambda args: args,
                    (step, inverse_mass, scale, welford, averaging),
                )
            if self.adapt_step_size:
                step = jnp.where(
                    t == num_warmup - 1, jnp.exp(averaging.log_step_size_avg), step
                )
            return hu.AdaptState(step, inverse_mass, scale, averaging, welford)

        return hu.batch_cond(warm, adapted, lambda a: a, adapt)

    def _num_leapfrog(self, step):
        if self.num_steps is not None:
            return jnp.asarray(self.num_steps)
        return jnp.maximum(jnp.ceil(self.trajectory_length / step), 1).astype(jnp.int32)

    def _transition(
        self, potential_and_grad, adapt, key, z, r, value, grad, energy, warming
    ):
        inverse_mass, step = adapt.inverse_mass_matrix, adapt.step_size
        num_steps = self._num_leapfrog(step)
        if self.trajectory_length is not None:
            # as NumPyro: the integration time is exactly trajectory_length
            # (the adapted step size sets the number of steps)
            step = jnp.asarray(self.trajectory_length, step.dtype) / num_steps

        def body(_, carry):
            z, r, value, grad = carry
            return hu.leapfrog(potential_and_grad, inverse_mass, step, z, r, grad)

        z1, r1, value1, grad1 = jax.lax.fori_loop(
            0, num_steps, body, (z, r, value, grad)
        )
        energy1 = value1 + hu.kinetic_energy(inverse_mass, r1)
        delta = energy1 - energy
        delta = jnp.where(jnp.isnan(delta), jnp.inf, delta)
        accept_prob = jnp.clip(jnp.exp(-delta), max=1.0)
        diverging = delta > MAX_DELTA_ENERGY
        take = jax.random.uniform(key) < accept_prob
        pick = lambda new, old: jnp.where(take, new, old)  # noqa: E731
        return (
            pick(z1, z),
            pick(grad1, grad),
            pick(value1, value),
            pick(energy1, energy),
            num_steps,
            accept_prob,
            diverging,
        )


class _Tree(NamedTuple):
    z_left: Any
    r_left: Any
    grad_left: Any
    z_right: Any
    r_right: Any
    grad_right: Any
    z_proposal: Any
    value_proposal: Any
    grad_proposal: Any
    energy_proposal: Any
    log_weight: Any
    r_sum: Any
    turning: Any
    diverging: Any
    sum_accept_probs: Any
    num_proposals: Any
    depth: Any


class _Subtree(NamedTuple):
    """A sub-tree being built leaf by leaf: its growing edge, its proposal,
    and the momenta checkpointed for the U-turn checks of its balanced
    sub-trees."""

    num_leaves: Any
    z: Any
    r: Any
    grad: Any
    z_proposal: Any
    value_proposal: Any
    grad_proposal: Any
    energy_proposal: Any
    log_weight: Any
    r_sum: Any
    turning: Any
    diverging: Any
    sum_accept_probs: Any
    r_ckpts: Any
    r_sum_ckpts: Any
    key: Any


def _uniform_of_key(key, dtype):
    """A uniform draw in (0, 1) read off a fresh key's own random words.

    A split key's words are already the generator's output; using one as
    the draw's bits saves ``jax.random.uniform``'s second pass through the
    generator, which costs a small model's NUTS leaf about a third of its
    time on CPU."""
    words = jax.random.key_data(key) if is_typed_key(key) else key
    bits = jnp.ravel(words)[0].astype(jnp.uint32)
    # the top 23 bits as the mantissa of a float in [1, 2)
    mantissa = jax.lax.shift_right_logical(bits, jnp.uint32(9)) | jnp.uint32(0x3F800000)
    unit = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0
    # (0, 1): half a spacing above zero keeps the logarithm finite
    return (unit + 2.0**-24).astype(dtype)


def _is_turning(inverse_mass, r_left, r_right, r_sum):
    # Betancourt's generalized criterion with Stan's correction for the
    # end points' own momenta
    rho = r_sum - 0.5 * (r_left + r_right)
    v_left = hu.velocity(inverse_mass, r_left)
    v_right = hu.velocity(inverse_mass, r_right)
    # products summed elementwise rather than as ``dot``: batched over the
    # checkpoints, XLA's CPU backend would send a tiny matrix-vector product
    # to its matrix library, which costs more than the rest of a cheap leaf
    return (jnp.sum(v_left * rho, -1) <= 0) | (jnp.sum(v_right * rho, -1) <= 0)


class NUTS(HMC):
    """The No-U-Turn Sampler (Hoffman and Gelman 2014) with multinomial
    sampling of the trajectory (Betancourt 2017), built iteratively inside
    ``lax.while_loop``: each tree doubling integrates ``2**depth`` leapfrog
    steps in a random direction, checking the U-turn criterion on every
    balanced sub-tree from ``max_tree_depth`` stored momenta.

    Takes :class:`HMC`'s arguments in NumPyro's order, except that the
    trajectory length is chosen per iteration: ``num_steps`` does not exist
    and ``trajectory_length`` is ignored (as in NumPyro, with a warning here).
    ``max_tree_depth`` bounds each iteration at ``2**max_tree_depth - 1``
    leapfrog steps; a pair ``(warmup_depth, sampling_depth)`` sets the bound
    during warmup and after it apart.

    >>> import jax, probnn, probnn.distributions as dist
    >>> from probnn.infer import MCMC
    >>> def model():
    ...     probnn.sample("x", dist.Normal(1.0, 2.0))
    >>> mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=1000, progress_bar=False)
    >>> mcmc.run(jax.random.PRNGKey(0))
    >>> x = mcmc.get_samples()["x"]
    >>> bool(abs(x.mean() - 1.0) < 0.3 and abs(x.std() - 2.0) < 0.3)
    True
    """

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        kinetic_fn=None,
        step_size: float = 1.0,
        inverse_mass_matrix=None,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        dense_mass=False,
        target_accept_prob: float = 0.8,
        trajectory_length: float | None = None,
        max_tree_depth: int = 10,
        init_strategy: Callable = init_to_uniform,
        find_heuristic_step_size: bool = False,
        forward_mode_differentiation: bool = False,
        regularize_mass_matrix: bool = True,
    ):
        if trajectory_length is not None:
            warnings.warn(
                f"NUTS: trajectory_length={trajectory_length!r} is ignored (NUTS "
                "ends each trajectory at a U-turn); it applies to HMC only",
                UserWarning,
                stacklevel=2,
            )
        super().__init__(
            model,
            potential_fn,
            kinetic_fn=kinetic_fn,
            step_size=step_size,
            inverse_mass_matrix=inverse_mass_matrix,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix,
            dense_mass=dense_mass,
            target_accept_prob=target_accept_prob,
            init_strategy=init_strategy,
            find_heuristic_step_size=find_heuristic_step_size,
            forward_mode_differentiation=forward_mode_differentiation,
            regularize_mass_matrix=regularize_mass_matrix,
        )
        depths = (
            tuple(max_tree_depth)
            if isinstance(max_tree_depth, tuple | list)
            else (max_tree_depth,) * 2
        )
        if len(depths) != 2 or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in depths
        ):
            raise ValueError(
                "NUTS: max_tree_depth must be a positive int or a pair of them "
                f"(warmup, sampling), got {max_tree_depth!r}"
            )
        self.max_tree_depth = max_tree_depth
        self._depths = depths

    def _transition(
        self, potential_and_grad, adapt, key, z, r, value, grad, energy, warming
    ):
        inverse_mass, step = adapt.inverse_mass_matrix, adapt.step_size
        # the momenta stored for U-turn checks: as many as the deeper bound
        max_depth = max(self._depths)
        warm_depth, sample_depth = self._depths
        depth_limit = (
            warm_depth
            if warm_depth == sample_depth
            else jnp.where(warming, warm_depth, sample_depth)
        )
        dtype = z.dtype
        size = z.shape[0]

        def leaf(z, r, grad, direction):
            z, r, value, grad = hu.leapfrog(
                potential_and_grad, inverse_mass, direction * step, z, r, grad
            )
            new_energy = value + hu.kinetic_energy(inverse_mass, r)
            delta = new_energy - energy
            delta = jnp.where(jnp.isnan(delta), jnp.inf, delta)
            accept = jnp.clip(jnp.exp(-delta), max=1.0)
            return (
                z,
                r,
                value,
                grad,
                new_energy,
                -delta,
                delta > MAX_DELTA_ENERGY,
                accept,
            )

        def build_subtree(tree, direction, key):
            """``2**tree.depth`` leapfrog steps from the tree's edge."""
            z0 = jnp.where(direction > 0, tree.z_right, tree.z_left)
            r0 = jnp.where(direction > 0, tree.r_right, tree.r_left)
            g0 = jnp.where(direction > 0, tree.grad_right, tree.grad_left)
            num_leaves = 2**tree.depth

            init = _Subtree(
                jnp.zeros((), jnp.int32),
                z0,
                r0,
                g0,
                z0,
                value,
                g0,
                energy,
                jnp.full((), -jnp.inf, dtype),
                jnp.zeros(size, dtype),
                jnp.zeros((), bool),
                jnp.zeros((), bool),
                jnp.zeros((), dtype),
                jnp.zeros((max_depth, size), dtype),
                jnp.zeros((max_depth, size), dtype),
                key,
            )

            def keep_going(sub):
                return (sub.num_leaves < num_leaves) & ~sub.turning & ~sub.diverging

            def body(sub):
                n = sub.num_leaves
                z, r, v, g, e, leaf_log_w, diverging, accept = leaf(
                    sub.z, sub.r, sub.grad, direction
                )
                key, draw_key = jax.random.split(sub.key)
                log_w = jnp.logaddexp(sub.log_weight, leaf_log_w)
                take = jnp.log(_uniform_of_key(draw_key, dtype)) < leaf_log_w - log_w
                r_sum = sub.r_sum + r
                # checkpoints: even leaves start balanced sub-trees, odd
                # leaves end them (as many as n has trailing one bits)
                idx_max = jax.lax.population_count(n >> 1)
                trailing = jax.lax.population_count((n ^ (n + 1)) >> 1)
                idx_min = idx_max - trailing + 1
                even = n % 2 == 0
                # one row written in place (the old row again on odd leaves)
                r_ckpts, r_sum_ckpts = sub.r_ckpts, sub.r_sum_ckpts
                r_ckpts = r_ckpts.at[idx_max].set(jnp.where(even, r, r_ckpts[idx_max]))
                r_sum_ckpts = r_sum_ckpts.at[idx_max].set(
                    jnp.where(even, r_sum, r_sum_ckpts[idx_max])
                )
                sums = r_sum[None] - r_sum_ckpts + r_ckpts
                turns = jax.vmap(lambda a, s: _is_turning(inverse_mass, a, r, s))(
                    r_ckpts, sums
                )
                slots = jnp.arange(max_depth)
                turning = ~even & jnp.any(
                    turns & (slots >= idx_min) & (slots <= idx_max)
                )
                return _Subtree(
                    n + 1,
                    z,
                    r,
                    g,
                    jnp.where(take, z, sub.z_proposal),
                    jnp.where(take, v, sub.value_proposal),
                    jnp.where(take, g, sub.grad_proposal),
                    jnp.where(take, e, sub.energy_proposal),
                    log_w,
                    r_sum,
                    turning,
                    diverging,
                    sub.sum_accept_probs + accept,
                    r_ckpts,
                    r_sum_ckpts,
                    key,
                )

            return jax.lax.while_loop(keep_going, body, init)

        def grow(carry):
            tree, key = carry
            key, direction_key, subtree_key, accept_key = jax.random.split(key, 4)
            direction = jnp.where(
                jax.random.bernoulli(direction_key), 1.0, -1.0
            ).astype(dtype)
            sub = build_subtree(tree, direction, subtree_key)
            right = direction > 0
            usable = ~sub.turning & ~sub.diverging
            take = usable & (
                jnp.log(jax.random.uniform(accept_key, dtype=dtype))
                < sub.log_weight - tree.log_weight
            )
            r_left = jnp.where(right, tree.r_left, sub.r)
            r_right = jnp.where(right, sub.r, tree.r_right)
            r_sum = tree.r_sum + sub.r_sum
            turning = sub.turning | _is_turning(inverse_mass, r_left, r_right, r_sum)
            tree = _Tree(
                jnp.where(right, tree.z_left, sub.z),
                r_left,
                jnp.where(right, tree.grad_left, sub.grad),
                jnp.where(right, sub.z, tree.z_right),
                r_right,
                jnp.where(right, sub.grad, tree.grad_right),
                jnp.where(take, sub.z_proposal, tree.z_proposal),
                jnp.where(take, sub.value_proposal, tree.value_proposal),
                jnp.where(take, sub.grad_proposal, tree.grad_proposal),
                jnp.where(take, sub.energy_proposal, tree.energy_proposal),
                jnp.logaddexp(tree.log_weight, sub.log_weight),
                r_sum,
                turning,
                sub.diverging,
                tree.sum_accept_probs + sub.sum_accept_probs,
                tree.num_proposals + sub.num_leaves,
                tree.depth + 1,
            )
            return tree, key

        def keep_growing(carry):
            tree, _ = carry
            return (tree.depth < depth_limit) & ~tree.turning & ~tree.diverging

        zero = jnp.zeros((), dtype)
        tree = _Tree(
            z,
            r,
            grad,
            z,
            r,
            grad,
            z,
            value,
            grad,
            energy,
            zero,
            r,
            jnp.zeros((), bool),
            jnp.zeros((), bool),
            zero,
            jnp.zeros((), jnp.int32),
            jnp.zeros((), jnp.int32),
        )
        tree, _ = jax.lax.while_loop(keep_growing, grow, (tree, key))
        accept_prob = tree.sum_accept_probs / jnp.maximum(tree.num_proposals, 1)
        return (
            tree.z_proposal,
            tree.grad_proposal,
            tree.value_proposal,
            tree.energy_proposal,
            tree.num_proposals,
            accept_prob,
            tree.diverging,
        )


# -- the functional interface ----------------------------------------------------------


class _GeneratedPotential(NUTS):
    """A kernel whose potential is ``potential_fn_gen(*args, **kwargs)``: a
    function of the model arguments that each call receives."""

    def __init__(self, potential_fn_gen, algo, **options):
        self._algo = algo
        self._potential_fn_gen = potential_fn_gen
        super().__init__(potential_fn=potential_fn_gen, **options)

    def _transition(self, *args):
        if self._algo == "HMC":
            return HMC._transition(self, *args)
        return NUTS._transition(self, *args)

    def _potential(self, model_args, model_kwargs):
        fn = self._potential_fn_gen(*model_args, **model_kwargs)
        unravel = self._unravel
        return value_and_grad_fn(
            lambda flat: fn(unravel(flat)), self.forward_mode_differentiation
        )


def hmc(
    potential_fn: Callable | None = None,
    potential_fn_gen: Callable | None = None,
    kinetic_fn=None,
    algo: str = "NUTS",
):
    """HMC or NUTS as a pair of pure functions ``(init_kernel,
    sample_kernel)``, for driving a chain by hand (e.g. with
    :func:`probnn.util.fori_collect`) instead of through :class:`MCMC`.

    Args:
        potential_fn: the potential energy, a function of a pytree of
            unconstrained values (e.g. ``initialize_model(...).potential_fn``).
        potential_fn_gen: instead of ``potential_fn``, a function of the model
            arguments returning the potential (e.g. from
            ``initialize_model(..., dynamic_args=True)``); ``init_kernel`` and
            ``sample_kernel`` then take ``model_args`` and ``model_kwargs``.
        kinetic_fn: not supported (the kinetic energy is Gaussian); must be
            None.
        algo: ``"NUTS"`` or ``"HMC"`` (a fixed trajectory length).

    ``init_kernel(init_params, num_warmup, step_size=1.0,
    inverse_mass_matrix=None, adapt_step_size=True, adapt_mass_matrix=True,
    dense_mass=False, target_accept_prob=0.8, *, num_steps=None,
    trajectory_length=2*pi, max_tree_depth=10, find_heuristic_step_size=False,
    forward_mode_differentiation=False, regularize_mass_matrix=True,
    model_args=(), model_kwargs=None, rng_key=None)`` returns the first
    :class:`HMCState`; ``init_params`` is a pytree of unconstrained values or
    a :class:`probnn.infer.util.ParamInfo` (whose potential energy and
    gradient are then reused). ``sample_kernel(state, model_args=(),
    model_kwargs=None)`` returns the next state; the first ``num_warmup``
    calls adapt the step size and mass matrix. In these states ``z``,
    ``z_grad`` and ``r`` are shaped like ``init_params``.

    The settings are those of :class:`HMC` and :class:`NUTS`;
    ``trajectory_length`` and ``num_steps`` apply to ``algo="HMC"`` only.

    >>> import jax, jax.numpy as jnp
    >>> from probnn.util import fori_collect
    >>> potential = lambda z: 0.5 * jnp.sum((z["x"] - 3.0) ** 2)
    >>> init_kernel, sample_kernel = hmc(potential, algo="NUTS")
    >>> state = init_kernel({"x": jnp.zeros(2)}, num_warmup=200)
    >>> draws = fori_collect(200, 1200, sample_kernel, state,
    ...                      transform=lambda s: s.z["x"], progbar=False)
    >>> draws.shape, bool(jnp.all(jnp.abs(draws.mean(0) - 3.0) < 0.3))
    ((1000, 2), True)
    """
    if (potential_fn is None) == (potential_fn_gen is None):
        raise ValueError("hmc: pass exactly one of potential_fn= or potential_fn_gen=")
    if kinetic_fn is not None:
        raise NotImplementedError(
            "hmc: kinetic_fn is not supported; the kinetic energy is Gaussian with "
            "the (adapted) mass matrix"
        )
    if algo not in ("HMC", "NUTS"):
        raise ValueError(f"hmc: algo must be 'HMC' or 'NUTS', got {algo!r}")
    kernel = None

    def init_kernel(
        init_params,
        num_warmup,
        step_size=1.0,
        inverse_mass_matrix=None,
        adapt_step_size=True,
        adapt_mass_matrix=True,
        dense_mass=False,
        target_accept_prob=0.8,
        *,
        num_steps=None,
        trajectory_length=2 * math.pi,
        max_tree_depth=10,
        find_heuristic_step_size=False,
        forward_mode_differentiation=False,
        regularize_mass_matrix=True,
        model_args=(),
        model_kwargs=None,
        rng_key=None,
    ) -> HMCState:
        nonlocal kernel
        model_kwargs = {} if model_kwargs is None else model_kwargs
        rng_key = jax.random.PRNGKey(0) if rng_key is None else rng_key
        options = dict(
            step_size=step_size,
            inverse_mass_matrix=inverse_mass_matrix,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix,
            dense_mass=dense_mass,
            target_accept_prob=target_accept_prob,
            find_heuristic_step_size=find_heuristic_step_size,
            forward_mode_differentiation=forward_mode_differentiation,
            regularize_mass_matrix=regularize_mass_matrix,
        )
        if algo == "HMC":
            if potential_fn_gen is not None:
                new = _GeneratedPotential(potential_fn_gen, algo, **options)
                new.num_steps = num_steps
                new.trajectory_length = trajectory_length
            else:
                new = HMC(
                    potential_fn=potential_fn,
                    num_steps=num_steps,
                    trajectory_length=trajectory_length,
                    **options,
                )
        else:
            if potential_fn_gen is not None:
                new = _GeneratedPotential(
                    potential_fn_gen, algo, max_tree_depth=max_tree_depth, **options
                )
            else:
                new = NUTS(
                    potential_fn=potential_fn, max_tree_depth=max_tree_depth, **options
                )
        if isinstance(init_params, ParamInfo):
            z, value, grad = init_params
        else:
            z, value, grad = init_params, None, None
        new.setup(model_args, model_kwargs, z)
        flat = ravel_pytree(z)[0]
        if value is None or grad is None:
            value, flat_grad = new._potential(model_args, model_kwargs)(flat)
        else:
            flat_grad = ravel_pytree(grad)[0]
        state = new.init_state(
            rng_key, flat, value, flat_grad, int(num_warmup), model_args, model_kwargs
        )
        kernel = new
        return _as_tree(state, new._unravel)

    def sample_kernel(hmc_state, model_args=(), model_kwargs=None) -> HMCState:
        if kernel is None:
            raise RuntimeError("hmc: call init_kernel before sample_kernel")
        model_kwargs = {} if model_kwargs is None else model_kwargs
        state = kernel.sample(_as_flat(hmc_state), model_args, model_kwargs)
        return _as_tree(state, kernel._unravel)

    return init_kernel, sample_kernel


def _as_tree(state: HMCState, unravel) -> HMCState:
    """The state with ``z``, ``z_grad`` and ``r`` shaped like the point."""
    return state._replace(
        z=unravel(state.z), z_grad=unravel(state.z_grad), r=unravel(state.r)
    )


def _as_flat(state: HMCState) -> HMCState:
    flat = lambda tree: ravel_pytree(tree)[0]  # noqa: E731
    return state._replace(z=flat(state.z), z_grad=flat(state.z_grad), r=flat(state.r))
