"""Handlers for exact enumeration of discrete latent sites.

:func:`config_enumerate` marks discrete sample sites; :class:`enum` gives each
marked site its whole support as value, laid out along a batch dim of its own
to the left of every plate dim, so that log densities evaluated downstream
carry one axis per enumerated variable. :mod:`probnn.infer.enum` sums those
axes out (tensor variable elimination).

Inside :func:`probnn.scan` the handler's step image allocates, for every
enumerated site of the body, ``history + 1`` dims (the site's value now, one
step back, ..., ``history`` steps back) and the scan moves the carry's
enumerated dims one lag back after each step; see :class:`ScanEnumContext`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from probnn.runtime import Message, Messenger

__all__ = ["ScanEnumContext", "config_enumerate", "enum", "markov"]

_METHODS = ("parallel", "sequential")


class config_enumerate(Messenger):
    """Mark every unobserved sample site whose distribution has enumerable
    support with ``infer={"enumerate": default}`` (sites that already say how
    they want to be enumerated keep their setting).

    Usable as a decorator: ``@config_enumerate``,
    ``@config_enumerate(default="parallel")`` or
    ``config_enumerate(model, default="parallel")``. Sites marked
    ``"sequential"`` are drawn rather than summed out, as in NumPyro.

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.handlers import seed, trace
    >>> model = config_enumerate(lambda: probnn.sample("z", dist.Bernoulli(0.3)))
    >>> trace(seed(model, rng_seed=0)).get_trace()["z"]["infer"]
    {'enumerate': 'parallel'}
    """

    def __init__(self, fn: Callable | None = None, default: str = "parallel"):
        if default not in _METHODS:
            raise ValueError(
                f"config_enumerate: default must be one of {_METHODS}, got {default!r}"
            )
        self.default = default
        super().__init__(fn)

    def process_message(self, msg: Message) -> None:
        if (
            msg["type"] == "sample"
            and not msg["is_observed"]
            and getattr(msg["fn"], "has_enumerate_support", False)
            and "enumerate" not in msg["infer"]
        ):
            msg["infer"]["enumerate"] = self.default


def is_enumerated(msg: Message) -> bool:
    """Whether ``msg`` is a sample site asking for parallel enumeration."""
    if msg["type"] != "sample" or msg["is_observed"]:
        return False
    how = msg["infer"].get("enumerate")
    if how is None:
        return False
    if how not in _METHODS:
        raise ValueError(
            f"sample site {msg['name']!r}: infer['enumerate']={how!r} is not "
            f"supported; use one of {_METHODS}"
        )
    # as in NumPyro, "sequential" sites are drawn, not summed out
    return how == "parallel"


def _support(msg: Message, dim: int):
    """The site's support, values along ``dim`` (a negative batch dim)."""
    fn = msg["fn"]
    name = msg["name"]
    if not getattr(fn, "has_enumerate_support", False):
        raise ValueError(
            f"sample site {name!r} is marked for enumeration but "
            f"{type(fn).__name__} has no enumerable support"
        )
    if msg["kwargs"].get("sample_shape"):
        raise ValueError(
            f"sample site {name!r}: enumeration needs sample_shape=(); declare "
            "independent copies with a plate instead"
        )
    batch_shape = tuple(fn.batch_shape)
    if len(batch_shape) >= -dim and batch_shape[dim] != 1:
        raise ValueError(
            f"sample site {name!r}: batch shape {batch_shape} reaches "
            f"dim {dim}, which is reserved for enumeration; raise "
            "max_plate_nesting (or lower first_available_dim)"
        )
    import jax

    # known values where the support does not depend on traced parameters
    # (a scan can then tell that its first step receives what later ones do)
    with jax.ensure_compile_time_eval():
        values = fn.enumerate_support(expand=False)
        size = jnp.shape(values)[0]
        event_shape = tuple(fn.event_shape)
        values = jnp.reshape(values, (size,) + (1,) * (-dim - 1) + event_shape)
    return values, size


def _mark(msg: Message, dim: int) -> None:
    value, size = _support(msg, dim)
    msg["value"] = value
    msg["infer"]["_enumerate_dim"] = dim
    msg["infer"]["_enumerate_size"] = size


class enum(Messenger):
    """Enumerate marked discrete sites in parallel.

    Each unobserved sample site marked ``infer={"enumerate": "parallel"}``
    takes as value its whole support (``enumerate_support(expand=False)``)
    laid out along a fresh batch dim: the first at ``first_available_dim``,
    the next one further left, and so on. ``first_available_dim`` must lie
    left of every plate dim of the model: ``-max_plate_nesting - 1``.

    Args:
        fn: the model.
        first_available_dim: a negative int; when None and ``fn`` is given,
            the dim left of the deepest plate ``fn`` uses (found by tracing
            it once).

    >>> import probnn, probnn.distributions as dist
    >>> from probnn.handlers import trace
    >>> def model():
    ...     probnn.sample("z", dist.Categorical(probs=jnp.ones(3) / 3),
    ...                   infer={"enumerate": "parallel"})
    >>> trace(enum(model, first_available_dim=-1)).get_trace()["z"]["value"]
    Array([0, 1, 2], dtype=int32)
    """

    def __init__(self, fn: Callable | None = None, first_available_dim=None):
        if first_available_dim is not None and (
            not isinstance(first_available_dim, int) or first_available_dim >= 0
        ):
            raise ValueError(
                "enum: first_available_dim must be a negative int, got "
                f"{first_available_dim!r}"
            )
        self.first_available_dim = first_available_dim
        self._next_dim = first_available_dim
        # dims given to sites inside markov loops: dim -> (holder's name,
        # holder's loop steps); a dim passes to a later site once its holder
        # is out of that site's history window
        self._holders: dict[int, tuple] = {}
        super().__init__(fn)

    def __enter__(self):
        self._next_dim = self.first_available_dim
        self._holders = {}
        return super().__enter__()

    def __call__(self, *args, **kwargs):
        if self.first_available_dim is not None or self.fn is None:
            return super().__call__(*args, **kwargs)
        # derive the first free dim from the model's deepest plate
        self.first_available_dim = -max_plate_nesting(self.fn, args, kwargs) - 1
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self.first_available_dim = None

    @property
    def next_dim(self) -> int | None:
        """The dim the next enumerated site would take."""
        return self._next_dim

    def allocate(self, site_name: str) -> int:
        if self._next_dim is None:
            raise ValueError(
                f"enum: site {site_name!r} needs an enumeration dim; pass "
                "first_available_dim= (-max_plate_nesting - 1)"
            )
        dim = self._next_dim
        self._next_dim -= 1
        return dim

    def process_message(self, msg: Message) -> None:
        if (
            msg["value"] is None
            and msg["type"] == "sample"
            and msg["infer"].get("enumerate") == "sequential"
            and not isinstance(self, guide_enum)
        ):
            raise ValueError(
                f"sample site {msg['name']!r} is marked "
                "infer={'enumerate': 'sequential'} but nothing gives it a value: "
                "enumeration sums out 'parallel' sites only (as in NumPyro); "
                "mark it 'parallel' or sample it in the guide"
            )
        if msg["value"] is None and is_enumerated(msg):
            steps = msg["infer"].get("_loop_steps")
            if steps:
                dim = self._recycled_dim(steps)
                if dim is None:
                    dim = self.allocate(msg["name"])
                self._holders[dim] = (msg["name"], steps)
            else:
                dim = self.allocate(msg["name"])
            _mark(msg, dim)
        if self._holders and msg["type"] == "sample":
            # which variable each recycled dim stands for at this site
            msg["infer"]["_dim_vars"] = {d: h[0] for d, h in self._holders.items()}

    def _recycled_dim(self, steps) -> int | None:
        """The rightmost dim whose holder a site at ``steps`` cannot see."""
        free = [
            d for d, (_, held) in self._holders.items() if _out_of_window(held, steps)
        ]
        return max(free) if free else None

    # -- scan -----------------------------------------------------------------

    def open_scan(self, history: int, length: int, reverse: bool, method, outer):
        """Start an enumerated scan; returns its :class:`ScanEnumContext`."""
        return ScanEnumContext(self, (), history, length, reverse, method, outer)

    def scan_image(self, length):
        raise RuntimeError("enum: scans under enum must go through open_scan")


class guide_enum(enum):
    """``enum`` for guides: enumerates marked sites outside scans; scans run
    as plain scans (their sites are marked ``_in_scan``) and an enumerated
    site inside one is an error."""

    open_scan = None

    def scan_image(self, length):
        return lambda step: _GuideScanStep()


class _GuideScanStep(Messenger):
    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample":
            return
        msg["infer"]["_in_scan"] = True
        if msg["value"] is None and is_enumerated(msg):
            raise NotImplementedError(
                f"guide site {msg['name']!r} is marked for enumeration inside a "
                "scan; enumerate scanned discrete sites in the model"
            )


def _out_of_window(held, steps) -> bool:
    """Whether a site at loop ``steps`` is past the history window of a
    variable made at ``held`` (both tuples of ``(markov, index)``, outermost
    loop first): they first differ in the index of one loop, with more than
    that loop's ``history`` steps between them."""
    for (loop_a, index_a), (loop_b, index_b) in zip(held, steps, strict=False):
        if loop_a is not loop_b:
            return False
        if index_a != index_b:
            return not loop_a.keep and index_b - index_a > loop_a.history
    return False


class markov(Messenger):
    """Markov structure for Python loops: enumerated sites made ``history``
    or more iterations apart share enumeration dims, so a loop of any length
    needs ``history + 1`` dims per enumerated site (NumPyro's
    ``numpyro.contrib.funsor.markov``).

    A site may depend on the enumerated sites of the last ``history``
    iterations only (and on those outside the loop). Forms:
    ``for t in markov(range(T)): ...`` (each iteration a step),
    ``with loop: ...`` with one ``loop = markov()`` entered once per step,
    and ``markov(fn)`` (each call a step).

    Args:
        fn: an iterable to loop over, or a function to wrap, or None.
        history: how many past steps a step's sites may depend on.
        keep: when True, no dims are recycled (branches of a tree-shaped
            recursion may then depend on each other).

    >>> import jax.numpy as jnp, probnn, probnn.distributions as dist
    >>> from probnn.infer.util import log_density
    >>> def hmm(ys):
    ...     x = 0
    ...     for t in markov(range(len(ys))):
    ...         probs = jnp.array([[0.9, 0.1], [0.2, 0.8]])[x]
    ...         x = probnn.sample(f"x_{t}", dist.Categorical(probs),
    ...                           infer={"enumerate": "parallel"})
    ...         probnn.sample(f"y_{t}", dist.Normal(1.0 * x, 1.0), obs=ys[t])
    >>> round(float(log_density(hmm, (jnp.zeros(50),), {}, {})[0]), 2)
    -49.65
    """

    def __init__(self, fn=None, history: int = 1, keep: bool = False):
        if not isinstance(history, int) or isinstance(history, bool) or history < 0:
            raise ValueError(f"markov: history must be an int >= 0, got {history!r}")
        self.history = history
        self.keep = bool(keep)
        self._iterable = None
        if fn is not None and not callable(fn):
            if not hasattr(fn, "__iter__"):
                raise TypeError(
                    "markov: expects an iterable to loop over or a function to "
                    f"wrap, got {type(fn).__name__}"
                )
            self._iterable, fn = fn, None
        self._step = -1
        self._depth = 0
        super().__init__(fn)

    def __iter__(self):
        if self._iterable is None:
            raise TypeError("markov: only markov(iterable) can be iterated over")
        for value in self._iterable:
            with self:
                yield value

    def __enter__(self):
        if self._depth == 0:
            self._step += 1
        self._depth += 1
        return super().__enter__()

    def __exit__(self, *exc):
        self._depth -= 1
        return super().__exit__(*exc)

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample":
            return
        # handlers run innermost first: the outer loops prepend their steps
        steps = msg["infer"].get("_loop_steps", ())
        msg["infer"]["_loop_steps"] = ((self, self._step),) + steps


def max_plate_nesting(fn: Callable, args: tuple, kwargs: dict) -> int:
    """How many plate dims ``fn`` uses at most, found by tracing it once
    abstractly (nothing is computed)."""
    import jax

    from probnn.handlers import block, seed, trace

    deepest = [0]

    def run():
        with block():
            model_trace = trace(seed(fn, rng_seed=0)).get_trace(*args, **kwargs)
        for site in model_trace.values():
            for frame in site.get("cond_indep_stack", ()):
                deepest[0] = max(deepest[0], -frame.dim)

    jax.eval_shape(run)
    return deepest[0]


class ScanEnumContext:
    """Bookkeeping of one enumerated scan.

    ``dims[site] = [D0, ..., Dk]`` holds the dims of a body site's value at
    lags ``0..history``; a step's sites take ``D0``. The first ``num_init =
    min(history, length)`` steps run unrolled (their sites are recorded with
    ``_init/`` prefixes); the others run inside ``lax.scan`` and are recorded
    with a leading time axis. ``frames`` locate the scan among enclosing
    enumerated scans: a tuple of ``(context, position)`` pairs, outermost
    first, where ``position`` is an unrolled step's index or None.
    """

    def __init__(self, root, frames, history, length, reverse, method, outer):
        if not isinstance(history, int) or history < 0:
            raise ValueError(f"scan: history must be an int >= 0, got {history!r}")
        if method not in (None, "parallel", "sequential"):
            raise ValueError(
                "scan: enum_method must be 'parallel', 'sequential' or None, "
                f"got {method!r}"
            )
        self.root = root
        self.frames = frames
        self.history = min(history, length)
        self.length = length
        self.reverse = reverse
        self.method = method
        # names of the plates enclosing the scan call
        self.outer_plates = frozenset(outer)
        self.num_init = self.history
        self.dims: dict[str, list[int]] = {}
        self.first_site: str | None = None
        self.position = None
        # site name -> the dim outside the scan that its value one step back
        # takes at the first step (see :meth:`start_in_loop`)
        self.relabel: dict[str, int] = {}
        self.has_inner = False

    def site_dims(self, name: str) -> list[int]:
        if name not in self.dims:
            self.dims[name] = [
                self.root.allocate(name) for _ in range(self.history + 1)
            ]
        return self.dims[name]

    def image(self) -> _EnumStep:
        return _EnumStep(self, self.frames + ((self, self.position),))

    def init_prefix(self, index: int) -> str:
        depth = len(self.frames)
        tag = "_init" if depth == 0 else f"_init{depth}"
        return "_PREV_" * (self.num_init - 1 - index) + tag + "/"

    def start_in_loop(self, init, shifted):
        """Let the first step run inside the loop (``num_init`` becomes 0).

        ``shifted`` is the carry after one step (its enumerated values moved
        to lag 1). The initial carry may hold the values of enumerated sites
        outside the scan, along their own dims (an initial state sampled
        before the scan); each such dim is renamed to the lag-1 dim of the
        body site whose values the same carry leaf holds after a step, and
        the contraction links the two by an identity factor. Returns the
        initial carry so laid out and, per leaf, whether it equals the carry
        that a step returns; None when the carry does not allow it (then the
        first step runs unrolled)."""
        import jax

        if self.history != 1 or self.length < 2 or self.frames or self.has_inner:
            return None
        start = self.root.first_available_dim
        lag1 = {dims[1]: name for name, dims in self.dims.items()}
        relabel: dict[str, int] = {}
        leaves, tree = jax.tree.flatten(init)
        after = jax.tree.leaves(shifted)
        if start is None or len(leaves) != len(after):
            return None
        laid, same = [], []
        with jax.ensure_compile_time_eval():  # known values stay known
            for leaf, out in zip(leaves, after, strict=True):
                placed = self._start_leaf(leaf, out, lag1, start, relabel)
                if placed is None:
                    return None
                laid.append(placed)
                same.append(_equal_constants(placed, out))
        self.relabel = relabel
        self.num_init = 0
        return jax.tree.unflatten(tree, laid), same

    def _start_leaf(self, leaf, out, lag1, start, relabel):
        """One leaf of :meth:`start_in_loop`'s initial carry (None: not
        possible); records in ``relabel`` which outside dim it starts from."""
        leaf, out = jnp.asarray(leaf), jnp.asarray(out)
        if leaf.dtype != out.dtype:
            return None
        targets = [d for d in lag1 if _size_at(out, d) > 1]
        sources = [d for d in range(-leaf.ndim, start + 1) if _size_at(leaf, d) > 1]
        if targets:
            if len(targets) != 1 or len(sources) != 1:
                return None
            source, target = sources[0], targets[0]
            name = lag1[target]
            if (
                source in self.root._holders
                or _size_at(leaf, source) != _size_at(out, target)
                or relabel.get(name, source) != source
            ):
                return None
            relabel[name] = source
            leaf = _move_dim(leaf, source, target)
        if jnp.broadcast_shapes(leaf.shape, out.shape) != out.shape:
            return None
        return jnp.broadcast_to(leaf, out.shape)

    def shift(self, tree, conform_to=None):
        """Move the enumerated dims of every array in ``tree`` one lag back
        (``D_j -> D_{j+1}``); with ``conform_to``, broadcast each result to
        the matching leaf's shape (the loop carry must keep its shape)."""
        import jax

        cycles = [dims for dims in self.dims.values() if len(dims) > 1]

        def move(leaf, like=None):
            leaf = jnp.asarray(leaf)
            if cycles:
                leaf = self._shift_leaf(leaf, cycles)
            if like is None:
                return leaf
            shape = jnp.shape(like)
            if jnp.ndim(leaf) > len(shape) or (
                jnp.broadcast_shapes(jnp.shape(leaf), shape) != shape
            ):
                raise ValueError(
                    "scan: a carry leaf has shape "
                    f"{jnp.shape(leaf)} after a step but {shape} before it; the "
                    "carry of an enumerated scan may depend on the enumerated "
                    f"sites of the last history={self.history} steps only and "
                    "must keep its shape"
                )
            return jnp.broadcast_to(leaf, shape).astype(jnp.result_type(like))

        if conform_to is None:
            return jax.tree.map(move, tree)
        return jax.tree.map(move, tree, conform_to)

    def _shift_leaf(self, leaf, cycles):
        deepest = -min(dims[-1] for dims in cycles)
        shape = jnp.shape(leaf)
        ndim = len(shape)

        def size_at(dim):
            return shape[dim] if ndim >= -dim else 1

        if all(size_at(dim) == 1 for dims in cycles for dim in dims[:-1]):
            return leaf
        for dims in cycles:
            if size_at(dims[-1]) != 1:
                raise ValueError(
                    f"scan: the carry depends on enumerated site at dim {dims[-1]} "
                    f"more than history={self.history} steps back; raise history"
                )
        if ndim < deepest:
            leaf = jnp.reshape(leaf, (1,) * (deepest - ndim) + shape)
            ndim = deepest
        perm = list(range(ndim))
        for dims in cycles:
            # new[D_{j+1}] = old[D_j]; new[D_0] = old[D_k] (size 1)
            for j, _dim in enumerate(dims):
                perm[ndim + dims[(j + 1) % len(dims)]] = ndim + dims[j]
        return jnp.transpose(leaf, perm)


def _size_at(leaf, dim: int) -> int:
    return leaf.shape[dim] if leaf.ndim >= -dim else 1


def _move_dim(leaf, source: int, target: int):
    """``leaf`` with its axis at dim ``source`` moved to dim ``target``
    (where it has size 1)."""
    ndim = max(leaf.ndim, -source, -target)
    leaf = jnp.reshape(leaf, (1,) * (ndim - leaf.ndim) + leaf.shape)
    return jnp.swapaxes(leaf, ndim + source, ndim + target)


def _equal_constants(a, b) -> bool:
    """Whether two arrays are known (not traced) and hold the same values."""
    import jax
    import numpy as np

    if isinstance(a, jax.core.Tracer) or isinstance(b, jax.core.Tracer):
        return False
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


class _EnumStep(Messenger):
    """``enum`` inside one step of an enumerated scan."""

    def __init__(self, context: ScanEnumContext, frames):
        self.context = context
        self.frames = frames
        super().__init__()

    def process_message(self, msg: Message) -> None:
        if msg["type"] not in ("sample", "deterministic"):
            return
        context = self.context
        msg["infer"]["_markov"] = self.frames
        msg["infer"]["_markov_name"] = msg["name"]
        if msg["type"] == "sample" and context.first_site is None:
            context.first_site = msg["name"]
        if msg["value"] is None and is_enumerated(msg):
            _mark(msg, context.site_dims(msg["name"])[0])

    def postprocess_message(self, msg: Message) -> None:
        if msg["type"] != "sample" or self.frames[-1][1] is not None:
            return
        # the looped steps' sites get a time dim left of their batch dims
        fn = msg["fn"]
        event_ndim = len(getattr(fn, "event_shape", ()))
        batch_ndim = max(
            len(getattr(fn, "batch_shape", ())), jnp.ndim(msg["value"]) - event_ndim
        )
        time_dim = -batch_ndim - 1
        msg["infer"]["dim_to_name"] = {time_dim: f"_time_{self.context.first_site}"}

    def open_scan(self, history, length, reverse, method, outer):
        self.context.has_inner = True
        return ScanEnumContext(
            self.context.root, self.frames, history, length, reverse, method, outer
        )

    def scan_image(self, length):
        raise RuntimeError("enum: scans under enum must go through open_scan")
