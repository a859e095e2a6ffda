import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probnn.ops import Vindex, indexing, vindex


def loop_vindex(x, args):
    """Reference: one scalar lookup per output element."""
    x = np.asarray(x)
    if args[0] is Ellipsis:
        entries = list(args[1:])
    else:
        entries = list(args) + [slice(None)] * (x.ndim - len(args))
    batch_ndim = x.ndim - len(entries)
    arrays = [np.asarray(e) for e in entries if np.ndim(e) > 0]
    batch_shape = np.broadcast_shapes(x.shape[:batch_ndim], *(a.shape for a in arrays))
    kept = [
        range(x.shape[batch_ndim + k])[e]
        for k, e in enumerate(entries)
        if isinstance(e, slice)
    ]
    out = np.empty(batch_shape + tuple(len(r) for r in kept), x.dtype)
    for b in itertools.product(*(range(n) for n in batch_shape)):
        for c in itertools.product(*(range(len(r)) for r in kept)):
            # batch dims of x align with the rightmost batch dims; size 1 repeats
            tail = b[len(b) - batch_ndim :] if batch_ndim else ()
            where = [0 if x.shape[d] == 1 else tail[d] for d in range(batch_ndim)]
            kept_iter = iter(zip(kept, c))
            for e in entries:
                if isinstance(e, slice):
                    positions, ci = next(kept_iter)
                    where.append(positions[ci])
                elif np.ndim(e) > 0:
                    e = np.asarray(e)
                    sub = b[len(b) - e.ndim :]
                    where.append(
                        e[tuple(0 if n == 1 else s for n, s in zip(e.shape, sub))]
                    )
                else:
                    where.append(int(e))
            out[b + c] = x[tuple(where)]
    return out


def idx(key, high, shape):
    return jax.random.randint(jax.random.PRNGKey(key), shape, 0, high)


S = slice(None)

CASES = [
    # (x shape, args builder)
    ((3, 4), lambda: (idx(0, 3, (5,)), idx(1, 4, (5,)))),
    ((3, 4), lambda: (idx(0, 3, (5,)),)),  # trailing dim kept
    ((3, 4), lambda: (S, idx(1, 4, (5,)))),  # slice before an array index
    ((3, 4, 5), lambda: (idx(0, 3, (2, 1)), S, idx(1, 5, (6,)))),
    ((3, 4, 5), lambda: (1, S, idx(1, 5, (2, 3)))),
    ((3, 4, 5), lambda: (idx(0, 3, (7,)), 2, S)),
    # leading Ellipsis: batch dims of x broadcast with the indices' dims
    ((6, 3, 4), lambda: (Ellipsis, idx(0, 3, (6,)), idx(1, 4, (6,)))),
    ((6, 3, 4), lambda: (Ellipsis, idx(0, 3, (2, 1)), S)),
    ((6, 3, 4), lambda: (Ellipsis, S, idx(2, 4, (5, 1, 1)))),
    ((2, 6, 3, 4), lambda: (Ellipsis, idx(3, 3, (4, 1, 1, 1)), S)),
    ((1, 6, 3, 4), lambda: (Ellipsis, idx(3, 3, (2, 1, 6)), idx(4, 4, (6,)))),
    ((6, 3, 4), lambda: (Ellipsis, S, S)),
    ((6, 3, 4), lambda: (Ellipsis, 2)),
    ((6, 3, 4, 5), lambda: (Ellipsis, idx(5, 3, (2, 1, 1)), S, idx(6, 5, (6,)))),
    ((3, 4), lambda: (jnp.array(2), idx(1, 4, (5,)))),  # 0-dim index is an int
    ((3, 8), lambda: (idx(0, 3, (5, 1)), slice(1, 7, 2))),  # nontrivial slice
]


@pytest.mark.parametrize("shape, make_args", CASES)
def test_vindex_matches_loops(shape, make_args):
    x = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
    args = make_args()
    expected = loop_vindex(x, args)
    actual = Vindex(x)[args]
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(vindex(x, args), expected)


def test_enumerated_mixture_component_selection():
    # K components with D-dim locations; an enumerated assignment z of shape
    # (K, 1) (enum dim on the left of a plate of N) picks a row per element
    K, N, D = 3, 5, 2
    locs = jnp.arange(K * D, dtype=jnp.float32).reshape(K, D)
    z = jnp.arange(K).reshape(K, 1)
    picked = Vindex(locs)[..., z, :]
    assert picked.shape == (K, 1, D)
    np.testing.assert_array_equal(picked[:, 0], locs)
    # a plate-batched z of shape (N,)
    z = jnp.array([2, 0, 1, 1, 0])
    np.testing.assert_array_equal(Vindex(locs)[z, :], locs[z])
    # batched transition matrices (N, K, K), enumerated previous state (K, 1)
    trans = jax.random.uniform(jax.random.PRNGKey(0), (N, K, K))
    prev = jnp.arange(K).reshape(K, 1)
    rows = Vindex(trans)[..., prev, :]
    assert rows.shape == (K, N, K)
    for k in range(K):
        np.testing.assert_array_equal(rows[k], trans[:, k, :])


def test_plain_indexing_when_no_array_has_dims():
    x = jnp.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(Vindex(x)[1, :, 2], x[1, :, 2])
    np.testing.assert_array_equal(Vindex(x)[..., 2], x[..., 2])
    np.testing.assert_array_equal(Vindex(x)[1], x[1])
    np.testing.assert_array_equal(Vindex(x)[()], x)
    np.testing.assert_array_equal(Vindex(x)[...], x)
    # a leading array index on an unbatched array is plain advanced indexing
    i = jnp.array([[1, 0], [0, 1]])
    np.testing.assert_array_equal(Vindex(x)[i], x[i])


def test_vindex_under_jit_and_vmap():
    x = jnp.arange(60.0).reshape(5, 3, 4)
    i = jnp.array([[0], [2]])
    j = jnp.array([1, 3, 0, 2, 1])
    expected = loop_vindex(x, (Ellipsis, i, j))
    jitted = jax.jit(lambda x, i, j: Vindex(x)[..., i, j])(x, i, j)
    np.testing.assert_array_equal(jitted, expected)
    # vmapping over the batch dim of x and j gives the same rows
    per_row = jax.vmap(lambda xr, jr: Vindex(xr)[..., i, jr], out_axes=1)(x, j)
    np.testing.assert_array_equal(per_row[:, :, 0], expected)


def test_vindex_errors():
    x = jnp.zeros((2, 3))
    with pytest.raises(NotImplementedError):
        vindex(x, (0, Ellipsis, jnp.array([0, 1])))
    with pytest.raises(IndexError):
        vindex(x, (Ellipsis, jnp.array([0]), 0, 0))
    assert indexing.__all__ == ["Vindex", "vindex"]
