"""Trained results back into Flax objects.

``values`` is what inference returns: ``SVI.get_params(state)`` /
``SVIRunResult.params`` for a :func:`probnn.module` (the site
``name + "$params"``), or one set of values of a :func:`probnn.random_module`'s
sample sites ``name/<path>`` (a posterior draw, ``guide.median(params)``),
merged with the params of its uncovered leaves. ``mutable_state`` is
``SVIState.mutable_state`` (the site ``name + "$state"``).
"""

from __future__ import annotations

import jax

__all__ = ["network_params", "param_shardings", "to_linen_variables", "to_nnx"]


def _nested(flat: dict) -> dict:
    """``{"a.b": x}`` -> ``{"a": {"b": x}}``."""
    out: dict = {}
    for path, leaf in flat.items():
        node = out
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return out


def network_params(name: str, values: dict) -> dict:
    """The network parameters of the module ``name`` as a nested dict, from
    its param site or from the sample sites of a random module."""
    prefix = f"{name}/"
    sampled = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
    site = values.get(f"{name}$params")
    if not sampled:
        if site is None:
            raise KeyError(
                f"no values for module {name!r}: expected the site {name}$params "
                f"or sites {name}/<path>; got {sorted(values)}"
            )
        return site
    # a random module's param site holds its uncovered leaves by path
    return _nested({**sampled, **(site or {})})


def _state(name: str, mutable_state: dict | None) -> dict:
    if not mutable_state:
        return {}
    return dict(mutable_state.get(f"{name}$state") or {})


def to_linen_variables(name: str, values: dict, mutable_state: dict | None = None):
    """A Linen ``variables`` dict (``{"params": ..., "batch_stats": ...}``)
    ready for ``module.apply``.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, optax, probnn
    >>> import probnn.distributions as dist
    >>> from probnn.infer import SVI, Trace_ELBO
    >>> def model(x, y):
    ...     mean = probnn.module("net", nn.Dense(1), input_shape=(-1, 2))(x)[:, 0]
    ...     with probnn.plate("data", x.shape[0]):
    ...         probnn.sample("y", dist.Normal(mean, 1.0), obs=y)
    >>> x, y = jnp.ones((4, 2)), jnp.ones(4)
    >>> svi = SVI(model, lambda x, y: None, optax.adam(0.1), Trace_ELBO())
    >>> result = svi.run(jax.random.PRNGKey(0), 10, x, y, progress_bar=False)
    >>> variables = to_linen_variables("net", result.params)
    >>> nn.Dense(1).apply(variables, x).shape
    (4, 1)
    """
    return {"params": network_params(name, values), **_state(name, mutable_state)}


def to_nnx(name: str, module, values: dict, mutable_state: dict | None = None):
    """A copy of the NNX ``module`` with the trained parameters and state
    (BatchNorm statistics) written in; ``module`` itself is not changed."""
    from probnn.nn.nnx import write_back

    return write_back(module, network_params(name, values), _state(name, mutable_state))


def param_shardings(name: str, module, mesh=None) -> dict:
    """Shardings for the param site of the NNX ``module`` registered as
    :func:`probnn.module` ``name``, from Flax's partitioning metadata, ready
    for :func:`probnn.infer.shard_state`.

    Args:
        name: the module's site name.
        module: the eager ``flax.nnx.Module`` passed to :func:`probnn.module`.
        mesh: with a mesh, each parameter's partitioning metadata
            (``nnx.with_partitioning`` / ``sharding_names``) on that mesh
            (parameters without metadata are replicated); without, the
            shardings the parameters' arrays already have (modules created
            under ``jax.set_mesh``).

    Returns:
        ``{name + "$params": nested dict of shardings}``.
    """
    from flax import nnx

    if not isinstance(module, nnx.Module):
        raise TypeError(
            f"param_shardings: module {name!r} must be a flax.nnx.Module, got "
            f"{type(module).__name__}; for other networks give shard_state "
            "the shardings yourself"
        )
    params = nnx.state(module, nnx.Param)
    if mesh is not None:
        shardings = nnx.get_named_sharding(params, mesh)
        return {f"{name}$params": nnx.to_pure_dict(shardings)}
    values = nnx.to_pure_dict(params)
    return {f"{name}$params": jax.tree.map(lambda leaf: leaf.sharding, values)}
