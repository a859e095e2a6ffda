"""Optimisers at NumPyro's ``numpyro.optim`` import path, built on optax.

Each class takes NumPyro's constructor arguments and follows the update
rules of the ``jax.example_libraries.optimizers`` function NumPyro wraps
(step sizes may be schedules ``step -> size``, step 0 being the first
update). An instance serves two interfaces:

* NumPyro's: ``state = opt.init(params)``, ``state = opt.update(grads,
  state)``, ``opt.get_params(state)``, ``opt.eval_and_update(fn, state)``;
* optax's, through :meth:`as_optax`: :class:`probnn.infer.SVI` accepts
  these objects and optimises with the transformation they stand for, so
  ``SVI(model, guide, probnn.optim.Adam(1e-3), Trace_ELBO())`` works as in
  NumPyro. ``SVIState.optim_state`` then has the layout of this class's
  own state, ``(step, (params, optax state))``, as with an optax optimiser
  in both libraries (NumPyro's own classes keep a
  ``jax.example_libraries`` ``OptimizerState`` in place of ``(params,
  optax state)``).

>>> import jax, jax.numpy as jnp
>>> opt = Adam(0.1)
>>> state = opt.init({"x": jnp.array(1.0)})
>>> grads = jax.grad(lambda p: p["x"] ** 2)(opt.get_params(state))
>>> state = opt.update(grads, state)
>>> round(float(opt.get_params(state)["x"]), 4)  # one Adam step moves by 0.1
0.9
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.scipy.optimize
import optax

__all__ = [
    "Adagrad",
    "Adam",
    "ClippedAdam",
    "Minimize",
    "Momentum",
    "RMSProp",
    "RMSPropMomentum",
    "SGD",
    "SM3",
    "optax_to_numpyro",
]


class _NumPyroOptim:
    """NumPyro's optimiser interface over an optax ``GradientTransformation``.

    The state is ``(step, (params, transformation_state))``: NumPyro's
    optimisers keep the params in their state and count the updates.

    Args:
        transformation: the optax transformation.
        update_with_value: whether :meth:`update` requires the objective's
            value (passed to the transformation as ``value=``, as optax's
            ``reduce_on_plateau`` needs).
    """

    def __init__(
        self,
        transformation: optax.GradientTransformation,
        update_with_value: bool = False,
    ):
        self.transformation = transformation
        self.update_with_value = update_with_value

    def as_optax(self) -> optax.GradientTransformation:
        """The optax transformation that this optimiser applies."""
        return self.transformation

    def init(self, params):
        """Initial state for ``params`` (a pytree of arrays)."""
        return jnp.array(0), (params, self.transformation.init(params))

    def update(self, g, state, value=None):
        """The state after one step along the gradients ``g``."""
        step, (params, inner) = state
        if self.update_with_value:
            if value is None:
                raise ValueError(
                    f"{type(self).__name__}.update: this optimiser needs value= "
                    "(the objective at the current params)"
                )
            updates, inner = self.transformation.update(g, inner, params, value=value)
        else:
            updates, inner = self.transformation.update(g, inner, params)
        return step + 1, (optax.apply_updates(params, updates), inner)

    def get_params(self, state):
        """The current params held in ``state``."""
        return state[1][0]

    def _value_and_grad(self, fn, state, forward_mode_differentiation):
        params = self.get_params(state)
        if forward_mode_differentiation:

            def with_output(x):
                out, aux = fn(x)
                return out, (out, aux)

            grads, (out, aux) = jax.jacfwd(with_output, has_aux=True)(params)
            return (out, aux), grads
        return jax.value_and_grad(fn, has_aux=True)(params)

    def eval_and_update(
        self,
        fn: Callable[[Any], tuple],
        state,
        forward_mode_differentiation: bool = False,
    ):
        """Evaluate ``fn(params) -> (loss, aux)``, step along the gradient of
        ``loss`` and return ``((loss, aux), new_state)``."""
        (out, aux), grads = self._value_and_grad(
            fn, state, forward_mode_differentiation
        )
        return (out, aux), self.update(grads, state, value=out)

    def eval_and_stable_update(
        self,
        fn: Callable[[Any], tuple],
        state,
        forward_mode_differentiation: bool = False,
    ):
        """Like :meth:`eval_and_update`, but when the loss or a gradient is
        not finite the state is kept and the loss reported as NaN."""
        (out, aux), grads = self._value_and_grad(
            fn, state, forward_mode_differentiation
        )
        finite = jnp.isfinite(out)
        for leaf in jax.tree.leaves(grads):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        new_state = self.update(grads, state, value=out)
        state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), new_state, state
        )
        return (jnp.where(finite, out, jnp.nan), aux), state


# ---------------------------------------------------------------------------
# transformations with the update rules of jax.example_libraries.optimizers


class _AdagradState(NamedTuple):
    sum_sq: Any
    momentum: Any


def _scale_by_adagrad_momentum(momentum: float) -> optax.GradientTransformation:
    """``m <- (1 - momentum) g / sqrt(sum of g^2) + momentum m`` (a zero sum
    of squares gives a zero step), starting from zero sums."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return _AdagradState(zeros, zeros)

    def update(updates, state, params=None):
        sum_sq = jax.tree.map(lambda s, g: s + jnp.square(g), state.sum_sq, updates)

        def step(g, s, m):
            safe = jnp.where(s > 0, s, 1.0)
            inv_sqrt = jnp.where(s > 0, jax.lax.rsqrt(safe), 0.0)
            return (1.0 - momentum) * (g * inv_sqrt) + momentum * m

        new_m = jax.tree.map(step, updates, sum_sq, state.momentum)
        return new_m, _AdagradState(sum_sq, new_m)

    return optax.GradientTransformation(init, update)


class _SM3State(NamedTuple):
    momentum: Any
    accumulators: Any


def _sm3_axes_except(ndim: int, axis: int) -> tuple[int, ...]:
    return tuple(a for a in range(ndim) if a != axis)


def _scale_by_sm3_momentum(momentum: float) -> optax.GradientTransformation:
    """SM3 (Anil et al., 2019) with momentum: one accumulator vector per
    axis of each (at least 1-d) parameter; an entry's second-moment bound is
    the minimum of its accumulators plus its squared gradient."""

    def init(params):
        def leaf_momentum(p):
            return jnp.zeros_like(jnp.atleast_1d(p))

        def leaf_accumulators(p):
            p = jnp.atleast_1d(p)
            return tuple(jnp.zeros(n, p.dtype) for n in p.shape)

        return _SM3State(
            jax.tree.map(leaf_momentum, params),
            jax.tree.map(leaf_accumulators, params),
        )

    def leaf_update(g, m, accumulators):
        shape = jnp.shape(g)
        g = jnp.atleast_1d(g)
        ndim = g.ndim
        bounds = [
            jnp.expand_dims(v, _sm3_axes_except(ndim, axis))
            for axis, v in enumerate(accumulators)
        ]
        accum = functools.reduce(jnp.minimum, bounds) + jnp.square(g)
        safe = jnp.where(accum > 0, accum, 1.0)
        inv_sqrt = jnp.where(accum > 0, jax.lax.rsqrt(safe), 0.0)
        m = (1.0 - momentum) * (g * inv_sqrt) + momentum * m
        accumulators = tuple(
            jnp.max(accum, axis=_sm3_axes_except(ndim, axis)) for axis in range(ndim)
        )
        return jnp.reshape(m, shape), m, accumulators

    def update(updates, state, params=None):
        leaves, treedef = jax.tree.flatten(updates)
        moms = treedef.flatten_up_to(state.momentum)
        accs = treedef.flatten_up_to(state.accumulators)
        results = [leaf_update(*parts) for parts in zip(leaves, moms, accs)]
        new_updates = treedef.unflatten([r[0] for r in results])
        new_state = _SM3State(
            treedef.unflatten([r[1] for r in results]),
            treedef.unflatten([r[2] for r in results]),
        )
        return new_updates, new_state

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------
# NumPyro's optimiser classes


class Adam(_NumPyroOptim):
    """Adam (Kingma & Ba, 2015): bias-corrected moment estimates ``m`` and
    ``v`` and steps ``step_size * m_hat / (sqrt(v_hat) + eps)``.

    Args:
        step_size: a positive number or a schedule ``step -> size``.
        b1, b2: decay rates of the first and second moment estimates.
        eps: added to the denominator.
    """

    def __init__(self, step_size, b1: float = 0.9, b2: float = 0.999, eps=1e-8):
        super().__init__(optax.adam(step_size, b1=b1, b2=b2, eps=eps))


class ClippedAdam(_NumPyroOptim):
    """:class:`Adam` whose gradients are first clipped, element by element,
    into ``[-clip_norm, clip_norm]``.

    Args:
        step_size, b1, b2, eps: as for :class:`Adam`.
        clip_norm: the clipping bound (keyword only).
    """

    def __init__(
        self,
        step_size,
        b1: float = 0.9,
        b2: float = 0.999,
        eps=1e-8,
        *,
        clip_norm: float = 10.0,
    ):
        self.clip_norm = clip_norm
        super().__init__(
            optax.chain(
                optax.clip(clip_norm), optax.adam(step_size, b1=b1, b2=b2, eps=eps)
            )
        )


class Adagrad(_NumPyroOptim):
    """Adagrad (Duchi et al., 2011) with momentum: the gradient scaled by
    the inverse square root of the running sum of squared gradients,
    averaged with weight ``momentum`` on the previous step.

    Args:
        step_size: a positive number or a schedule ``step -> size``.
        momentum: weight of the previous step.
    """

    def __init__(self, step_size, momentum: float = 0.9):
        super().__init__(
            optax.chain(
                _scale_by_adagrad_momentum(momentum),
                optax.scale_by_learning_rate(step_size),
            )
        )


class Momentum(_NumPyroOptim):
    """Gradient descent with momentum: ``v <- mass * v + g``, then a step of
    ``step_size * v``.

    Args:
        step_size: a positive number or a schedule ``step -> size``.
        mass: weight of the previous velocity.
    """

    def __init__(self, step_size, mass: float):
        super().__init__(optax.sgd(step_size, momentum=mass))


class RMSProp(_NumPyroOptim):
    """RMSProp: ``a <- gamma * a + (1 - gamma) g^2`` and a step of
    ``step_size * g / sqrt(a + eps)``.

    Args:
        step_size: a positive number or a schedule ``step -> size``.
        gamma: decay rate of the squared-gradient average.
        eps: added to the average under the square root.
    """

    def __init__(self, step_size, gamma: float = 0.9, eps: float = 1e-8):
        super().__init__(
            optax.chain(
                optax.scale_by_rms(
                    decay=gamma, eps=eps, initial_scale=0.0, eps_in_sqrt=True
                ),
                optax.scale_by_learning_rate(step_size),
            )
        )


class RMSPropMomentum(_NumPyroOptim):
    """RMSProp with momentum: the velocity ``v <- momentum * v + step_size *
    g / sqrt(a + eps)`` (the step size enters before the momentum average)
    is the step.

    Args:
        step_size: a positive number or a schedule ``step -> size``.
        gamma: decay rate of the squared-gradient average.
        eps: added to the average under the square root.
        momentum: weight of the previous velocity.
    """

    def __init__(
        self,
        step_size,
        gamma: float = 0.9,
        eps: float = 1e-8,
        momentum: float = 0.9,
    ):
        super().__init__(
            optax.chain(
                optax.scale_by_rms(
                    decay=gamma, eps=eps, initial_scale=0.0, eps_in_sqrt=True
                ),
                optax.scale_by_learning_rate(step_size),
                optax.trace(decay=momentum),
            )
        )


class SGD(_NumPyroOptim):
    """Plain gradient descent, steps of ``step_size * g``.

    Args:
        step_size: a positive number or a schedule ``step -> size``.
    """

    def __init__(self, step_size):
        super().__init__(optax.sgd(step_size))


class SM3(_NumPyroOptim):
    """SM3 (Anil et al., 2019, "Memory-Efficient Adaptive Optimization"),
    with momentum, keeping one accumulator per row, column, ... of each
    parameter instead of one per entry.

    Args:
        step_size: a positive number or a schedule ``step -> size``.
        momentum: weight of the previous step.
    """

    def __init__(self, step_size, momentum: float = 0.9):
        super().__init__(
            optax.chain(
                _scale_by_sm3_momentum(momentum),
                optax.scale_by_learning_rate(step_size),
            )
        )


def optax_to_numpyro(transformation: optax.GradientTransformation) -> _NumPyroOptim:
    """Wrap an optax transformation in NumPyro's optimiser interface.

    The result's :meth:`~_NumPyroOptim.update` takes the objective's value
    (``value=``) and passes it to the transformation, which may use it (for
    instance ``optax.contrib.reduce_on_plateau``) or ignore it.

    >>> import jax.numpy as jnp, optax
    >>> opt = optax_to_numpyro(optax.sgd(0.5))
    >>> state = opt.init(jnp.array(2.0))
    >>> float(opt.get_params(opt.update(jnp.array(1.0), state, value=0.0)))
    1.5
    """
    if not (
        callable(getattr(transformation, "init", None))
        and callable(getattr(transformation, "update", None))
    ):
        raise TypeError(
            "optax_to_numpyro: expected an optax GradientTransformation, got "
            f"{type(transformation).__name__}"
        )
    return _NumPyroOptim(
        optax.with_extra_args_support(transformation), update_with_value=True
    )


def is_example_libraries_optimizer(optim) -> bool:
    """Whether ``optim`` is a ``jax.example_libraries.optimizers`` triple
    ``(init_fn, update_fn, params_fn)`` (such as ``optimizers.adam(0.01)``)."""
    return (
        isinstance(optim, tuple)
        and len(optim) == 3
        and all(callable(fn) for fn in optim)
        and hasattr(optim, "init_fn")
    )


def from_example_libraries(optim) -> optax.GradientTransformation:
    """A ``jax.example_libraries.optimizers`` triple as an optax
    transformation: its state is ``(step, the triple's own state)``, and the
    update is the difference between the params after the triple's step and
    before it."""
    init_fn, update_fn, params_fn = optim

    def init(params):
        return jnp.zeros((), jnp.int32), init_fn(params)

    def update(grads, state, params=None):
        step, inner = state
        inner = update_fn(step, grads, inner)
        new = params_fn(inner)
        old = params_fn(state[1]) if params is None else params
        return jax.tree.map(jnp.subtract, new, old), (step + 1, inner)

    return optax.GradientTransformation(init, update)


class Minimize(_NumPyroOptim):
    """Each update runs a whole deterministic minimisation of the objective
    with :func:`jax.scipy.optimize.minimize` (NumPyro's ``Minimize``).

    For objectives that are deterministic given the params: maximum
    likelihood (an empty guide), MAP (``AutoDelta``) or
    ``AutoLaplaceApproximation``; with a stochastic guide each update
    minimises one fixed draw of the loss. ``SVI(model, guide, Minimize(),
    Trace_ELBO())`` runs it in :meth:`~probnn.infer.SVI.update` (one update
    is the whole minimisation); models with mutable state are an error.

    Args:
        method: ``"BFGS"``, the method ``jax.scipy.optimize.minimize``
            provides.
        **kwargs: passed on to it (``tol=``, ``options=``).

    >>> import jax.numpy as jnp
    >>> opt = Minimize()
    >>> state = opt.init({"x": jnp.array(3.0)})
    >>> (loss, _), state = opt.eval_and_update(
    ...     lambda p: ((p["x"] - 1.0) ** 2, None), state
    ... )
    >>> round(float(opt.get_params(state)["x"]), 4), round(float(loss), 6)
    (1.0, 0.0)
    """

    def __init__(self, method: str = "BFGS", **kwargs):
        if not isinstance(method, str) or method.upper() != "BFGS":
            raise ValueError(
                f"Minimize: method must be 'BFGS' (what jax.scipy.optimize."
                f"minimize provides), got {method!r}"
            )
        super().__init__(optax.identity())
        self.method = "BFGS"
        self.kwargs = kwargs

    def as_optax(self):
        raise TypeError(
            "Minimize is not a gradient step and has no optax form: pass it to "
            "SVI directly, or use eval_and_update"
        )

    def update(self, g, state, value=None):
        raise TypeError(
            "Minimize.update: a minimisation needs the objective, not a "
            "gradient; use eval_and_update(fn, state)"
        )

    def minimize(self, loss, params):
        """``(new_params, loss at them, gradient there)`` from minimising
        ``loss(params) -> scalar`` starting at ``params``."""
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        result = jax.scipy.optimize.minimize(
            lambda x: loss(unravel(x)), flat, method=self.method, **self.kwargs
        )
        return unravel(result.x), result.fun, unravel(result.jac)

    def eval_and_update(
        self,
        fn: Callable[[Any], tuple],
        state,
        forward_mode_differentiation: bool = False,
    ):
        """Minimise ``fn(params) -> (loss, aux)`` from the params in
        ``state``; returns ``((final loss, None), new_state)``. ``aux`` must
        be None (mutable state cannot follow a minimisation)."""
        step, (params, inner) = state

        def loss(x):
            out, aux = fn(x)
            if aux is not None:
                raise ValueError(
                    "Minimize: the objective returned mutable state (aux), "
                    "which a minimisation cannot carry; use a gradient "
                    "optimiser for models with mutable sites"
                )
            return out

        params, out, _ = self.minimize(loss, params)
        return (out, None), (step + 1, (params, inner))

    def eval_and_stable_update(
        self,
        fn: Callable[[Any], tuple],
        state,
        forward_mode_differentiation: bool = False,
    ):
        """Like :meth:`eval_and_update`, but a non-finite result keeps the
        state and reports the loss as NaN."""
        (out, aux), new_state = self.eval_and_update(fn, state)
        finite = jnp.isfinite(out)
        for leaf in jax.tree.leaves(new_state[1][0]):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), new_state, state
        )
        return (jnp.where(finite, out, jnp.nan), aux), state
