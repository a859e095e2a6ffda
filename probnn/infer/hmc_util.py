"""Building blocks of Hamiltonian Monte Carlo on flat parameter vectors:
the leapfrog integrator, kinetic energy under a diagonal or (block-)dense
mass matrix, dual-averaging step-size adaptation (Hoffman and Gelman 2014)
and Stan's windowed mass-matrix adaptation."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "AdaptState",
    "DualAveragingState",
    "HMCAdaptState",
    "WelfordState",
    "adaptation_schedule",
    "dual_averaging_init",
    "dual_averaging_update",
    "find_reasonable_step_size",
    "kinetic_energy",
    "leapfrog",
    "mass_matrix_factors",
    "sample_momentum",
    "velocity",
    "welford_covariance",
    "welford_init",
    "welford_update",
]


# -- mass matrix -------------------------------------------------------------------
#
# The inverse mass matrix is a vector (diagonal) or a matrix (dense, possibly
# with zeros outside blocks of sites). `momentum_scale` maps standard normal
# draws to momenta: 1 / sqrt(diag) or the transposed inverse Cholesky factor.


def momentum_scale_of(inverse_mass_matrix):
    if jnp.ndim(inverse_mass_matrix) == 1:
        # sqrt and division round exactly (IEEE); rsqrt may be approximated
        return 1.0 / jnp.sqrt(inverse_mass_matrix)
    cholesky = jnp.linalg.cholesky(inverse_mass_matrix)
    identity = jnp.eye(inverse_mass_matrix.shape[-1], dtype=inverse_mass_matrix.dtype)
    return jax.scipy.linalg.solve_triangular(cholesky, identity, lower=True).T


def velocity(inverse_mass_matrix, momentum):
    if jnp.ndim(inverse_mass_matrix) == 1:
        return inverse_mass_matrix * momentum
    return inverse_mass_matrix @ momentum


def kinetic_energy(inverse_mass_matrix, momentum):
    return 0.5 * jnp.dot(momentum, velocity(inverse_mass_matrix, momentum))


def sample_momentum(key, momentum_scale, z):
    noise = jax.random.normal(key, jnp.shape(z), jnp.result_type(z))
    if jnp.ndim(momentum_scale) == 1:
        return momentum_scale * noise
    return momentum_scale @ noise


def leapfrog(potential_and_grad, inverse_mass_matrix, step_size, z, r, grad):
    """One velocity-Verlet step; returns ``(z, r, potential, grad)``."""
    r = r - 0.5 * step_size * grad
    z = z + step_size * velocity(inverse_mass_matrix, r)
    potential, grad = potential_and_grad(z)
    r = r - 0.5 * step_size * grad
    return z, r, potential, grad


# -- step size -----------------------------------------------------------------------


class DualAveragingState(NamedTuple):
    log_step_size: Any
    log_step_size_avg: Any
    gradient_avg: Any
    count: Any
    prox_center: Any


@jax.custom_batching.custom_vmap
def _any_in_batch(pred):
    return pred


@_any_in_batch.def_vmap
def _any_in_batch_rule(axis_size, in_batched, pred):
    # a batch of predicates becomes one: whether any member's holds
    return (jnp.any(pred) if in_batched[0] else pred), False


def batch_cond(pred, true_fn, false_fn, *operands):
    """``lax.cond(pred, true_fn, false_fn, *operands)`` that stays a branch
    under ``vmap``: where ``lax.cond`` would run both functions for every
    member of a batch of predicates (chains adapting in step: every
    iteration would pay for the window-end step size search), this runs
    ``true_fn`` once for the batch when any member's predicate holds and
    keeps each member's own outcome."""

    def both(*operands):
        taken, kept = true_fn(*operands), false_fn(*operands)
        return jax.tree.map(lambda a, b: jnp.where(pred, a, b), taken, kept)

    return jax.lax.cond(_any_in_batch(pred), both, false_fn, *operands)


def dual_averaging_init(step_size) -> DualAveragingState:
    zero = jnp.zeros((), jnp.result_type(float))
    log_step = jnp.log(jnp.asarray(step_size, zero.dtype))
    return DualAveragingState(log_step, zero, zero, zero, jnp.log(10.0) + log_step)


def dual_averaging_update(
    state: DualAveragingState,
    accept_prob,
    target_accept_prob,
    gamma=0.05,
    t0=10.0,
    kappa=0.75,
    max_count: int = 100_000,
) -> DualAveragingState:
    """Nesterov dual averaging of ``log step size`` towards the target
    acceptance (Hoffman and Gelman 2014, section 3.2).

    The count-dependent weights come from tables computed once with numpy
    (``max_count`` entries), so a chain adapts bit for bit the same whether
    it runs alone or batched with others (batched ``pow`` and ``sqrt`` may
    round differently)."""
    counts = np.arange(max_count + 2, dtype=np.float64)
    dtype = jnp.result_type(state.gradient_avg)
    weights = jnp.asarray(1.0 / (counts + t0), dtype)
    drift = jnp.asarray(np.sqrt(counts) / gamma, dtype)
    averaging = jnp.asarray(np.where(counts > 0, counts, 1.0) ** (-kappa), dtype)
    count = state.count + 1
    index = jnp.minimum(count.astype(jnp.int32), max_count + 1)
    weight = weights[index]
    gradient_avg = (1 - weight) * state.gradient_avg + weight * (
        target_accept_prob - accept_prob
    )
    log_step = state.prox_center - drift[index] * gradient_avg
    avg_weight = averaging[index]
    log_avg = avg_weight * log_step + (1 - avg_weight) * state.log_step_size_avg
    return DualAveragingState(log_step, log_avg, gradient_avg, count, state.prox_center)


def find_reasonable_step_size(
    potential_and_grad,
    inverse_mass_matrix,
    momentum_scale,
    z,
    potential,
    grad,
    key,
    step,
):
    """Double or halve ``step`` until one leapfrog step's acceptance
    probability crosses 1/2 (Hoffman and Gelman 2014, algorithm 4)."""
    r = sample_momentum(key, momentum_scale, z)
    energy = potential + kinetic_energy(inverse_mass_matrix, r)

    def log_accept(step):
        z1, r1, potential1, _ = leapfrog(
            potential_and_grad, inverse_mass_matrix, step, z, r, grad
        )
        delta = energy - potential1 - kinetic_energy(inverse_mass_matrix, r1)
        return jnp.where(jnp.isnan(delta), -jnp.inf, delta)

    # the first pass measures the initial step and picks the direction; one
    # traced copy of the leapfrog step serves every pass
    def keep_going(carry):
        _, log_a, direction, count = carry
        crossing = direction * log_a > -direction * jnp.log(2.0)
        return (count == 0) | (crossing & (count < 100))

    def body(carry):
        step, _, direction, count = carry
        step = jnp.where(count == 0, step, step * 2.0**direction)
        log_a = log_accept(step)
        direction = jnp.where(
            count == 0, jnp.where(log_a > jnp.log(0.5), 1.0, -1.0), direction
        )
        return step, log_a, direction, count + 1

    start = (step, jnp.zeros_like(step), jnp.ones_like(step), 0)
    step, _, _, _ = jax.lax.while_loop(keep_going, body, start)
    return step


# -- mass matrix adaptation ------------------------------------------------------------


class WelfordState(NamedTuple):
    mean: Any
    m2: Any  # sums of squared deviations: a vector (diagonal) or a matrix
    count: Any


def welford_init(size: int, dense: bool, dtype) -> WelfordState:
    shape = (size, size) if dense else (size,)
    return WelfordState(
        jnp.zeros(size, dtype), jnp.zeros(shape, dtype), jnp.zeros((), dtype)
    )


def welford_update(state: WelfordState, x) -> WelfordState:
    count = state.count + 1
    delta = x - state.mean
    mean = state.mean + delta / count
    if state.m2.ndim == 1:
        m2 = state.m2 + delta * (x - mean)
    else:
        m2 = state.m2 + jnp.outer(delta, x - mean)
    return WelfordState(mean, m2, count)


def welford_covariance(state: WelfordState, regularize: bool = True):
    """Sample (co)variance, shrunk towards ``1e-3`` as Stan does."""
    count = state.count
    covariance = state.m2 / jnp.maximum(count - 1, 1)
    if not regularize:
        return covariance
    shrunk = (count / (count + 5.0)) * covariance
    if covariance.ndim == 1:
        return shrunk + 1e-3 * (5.0 / (count + 5.0))
    identity = jnp.eye(covariance.shape[0], dtype=covariance.dtype)
    return shrunk + 1e-3 * (5.0 / (count + 5.0)) * identity


def mass_matrix_factors(inverse_mass_matrix, dense: bool):
    """``(mass_matrix_sqrt, mass_matrix_sqrt_inv)`` of an inverse mass matrix
    ``A`` (a vector of its diagonal unless ``dense``), in NumPyro's sense:
    ``sqrt`` is the lower-triangular Cholesky factor of the mass matrix
    ``inv(A)`` (``sqrt @ sqrt.T == inv(A)``) and ``sqrt_inv`` its inverse
    (``sqrt_inv.T @ sqrt_inv == A``); elementwise ``1 / sqrt(A)`` and
    ``sqrt(A)`` for a diagonal. Leading dimensions are batch dimensions.

    Computed without inverting ``A``: reversing the order of the
    coordinates turns the lower Cholesky factor of the reversed ``A`` into
    an upper-triangular ``R`` with ``A = R @ R.T``; then ``sqrt_inv =
    R.T`` and ``sqrt = inv(R.T)``, a triangular solve."""
    if not dense:
        root = jnp.sqrt(inverse_mass_matrix)
        return 1.0 / root, root
    reverse = inverse_mass_matrix[..., ::-1, ::-1]
    upper = jnp.linalg.cholesky(reverse)[..., ::-1, ::-1]
    sqrt_inv = jnp.swapaxes(upper, -1, -2)
    identity = jnp.broadcast_to(
        jnp.eye(sqrt_inv.shape[-1], dtype=sqrt_inv.dtype), sqrt_inv.shape
    )
    sqrt = jax.scipy.linalg.solve_triangular(sqrt_inv, identity, lower=True)
    return sqrt, sqrt_inv


class AdaptState(NamedTuple):
    """The sampler's own adaptation state (what its compiled loop carries):
    the inverse mass matrix over the flat latent vector (a vector, or a
    matrix, zero outside the dense blocks), and ``momentum_scale``, the
    factor turning standard normal draws into momenta."""

    step_size: Any
    inverse_mass_matrix: Any
    momentum_scale: Any
    dual_averaging: DualAveragingState
    welford: WelfordState

    @property
    def dense(self) -> bool:
        # the Welford state keeps a matrix of sums for a dense mass matrix,
        # whatever batch dimensions the state has
        return jnp.ndim(self.welford.m2) > jnp.ndim(self.welford.mean)

    @property
    def mass_matrix_sqrt(self):
        """NumPyro's field: see :func:`mass_matrix_factors`."""
        return mass_matrix_factors(self.inverse_mass_matrix, self.dense)[0]

    @property
    def mass_matrix_sqrt_inv(self):
        """NumPyro's field: see :func:`mass_matrix_factors`."""
        return mass_matrix_factors(self.inverse_mass_matrix, self.dense)[1]


class HMCAdaptState(NamedTuple):
    """The adaptation state as :class:`probnn.infer.MCMC` shows it in
    ``last_state`` (NumPyro's first four fields, with NumPyro's values).

    With a model, ``inverse_mass_matrix``, ``mass_matrix_sqrt`` and
    ``mass_matrix_sqrt_inv`` are dicts keyed by tuples of site names, one
    entry per block of the mass matrix: a vector for a diagonal block, a
    matrix for a dense one, over the block's sites' flattened values
    concatenated in the order of the key. With ``potential_fn`` they are
    arrays over the whole flat latent vector. See
    :func:`mass_matrix_factors` for the two square roots.

    ``dual_averaging``, ``welford`` and ``momentum_scale`` are the
    sampler's own (over the flat latent vector, see :class:`AdaptState`).
    Given back as ``MCMC.post_warmup_state`` the state continues the chains
    exactly where they were: the sampler reads ``step_size`` and
    ``inverse_mass_matrix``, and keeps its ``momentum_scale`` unless
    ``inverse_mass_matrix`` was changed (it then derives a new one from it;
    the two square roots are for reading only)."""

    step_size: Any
    inverse_mass_matrix: Any
    mass_matrix_sqrt: Any
    mass_matrix_sqrt_inv: Any
    dual_averaging: DualAveragingState
    welford: WelfordState
    momentum_scale: Any


def adaptation_schedule(num_warmup: int):
    """Per warmup iteration: whether it feeds the mass-matrix estimate (a
    slow window) and whether a slow window ends there (Stan's schedule: a
    75-iteration fast window, slow windows of 25, 50, 100, ... iterations,
    a final 50-iteration fast window; scaled down for short warmups)."""
    collect = np.zeros(max(num_warmup, 1), bool)
    window_end = np.zeros(max(num_warmup, 1), bool)
    if num_warmup < 20:
        return collect, window_end
    init, term, base = 75, 50, 25
    if init + term + base > num_warmup:
        init, term = int(0.15 * num_warmup), int(0.1 * num_warmup)
        base = num_warmup - init - term
    start, size = init, base
    end_slow = num_warmup - term
    while start < end_slow:
        end = start + size
        if end + 2 * size > end_slow:
            end = end_slow
        collect[start:end] = True
        window_end[end - 1] = True
        start, size = end, 2 * size
    return collect, window_end
