"""Diagnostics of posterior samples: autocorrelation, effective sample size,
R-hat, highest posterior density intervals, summaries, and export to ArviZ.

Every function takes NumPy or JAX arrays and returns NumPy arrays. Functions
that look across chains want the chain dim first and the draw dim second,
i.e. ``(num_chains, num_samples, *event_shape)``, as returned by
``MCMC.get_samples(group_by_chain=True)``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping

import jax
import numpy as np

__all__ = [
    "autocorrelation",
    "autocovariance",
    "effective_sample_size",
    "gelman_rubin",
    "hpdi",
    "print_summary",
    "split_gelman_rubin",
    "summary",
    "to_arviz",
]


def _as_array(x, where: str, arg: str = "x") -> np.ndarray:
    """``x`` as a NumPy array of floats (non-float dtypes become float64)."""
    try:
        array = np.asarray(jax.device_get(x))
    except ValueError as err:  # e.g. ragged nested lists
        raise TypeError(f"{where}: {arg} must be a numeric array: {err}") from err
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{where}: {arg} must be a real numeric array, got dtype {array.dtype}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    return array


def _check_axis(axis, ndim: int, where: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise TypeError(f"{where}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{where}: axis={axis} is out of range for an array with {ndim} dims"
        )
    return int(axis) % ndim


def _check_prob(prob, where: str) -> float:
    if isinstance(prob, bool) or not isinstance(prob, int | float | np.number):
        raise TypeError(f"{where}: prob must be a float in (0, 1), got {prob!r}")
    if not 0.0 < float(prob) < 1.0:
        raise ValueError(f"{where}: prob must be in (0, 1), got {prob!r}")
    return float(prob)


def _check_chains(x: np.ndarray, where: str, min_chains: int, min_draws: int):
    if x.ndim < 2:
        raise ValueError(
            f"{where}: x must have at least 2 dims (num_chains, num_samples, ...), "
            f"got shape {x.shape}"
        )
    num_chains, num_draws = x.shape[:2]
    if num_chains < min_chains:
        raise ValueError(
            f"{where}: x needs at least {min_chains} chains (dim 0), got "
            f"{num_chains} (shape {x.shape})"
        )
    if num_draws < min_draws:
        raise ValueError(
            f"{where}: x needs at least {min_draws} samples per chain (dim 1), got "
            f"{num_draws} (shape {x.shape})"
        )


def autocovariance(x, axis: int = 0, bias: bool = True) -> np.ndarray:
    """Autocovariance of ``x`` along ``axis`` at every lag, computed by FFT.

    The lag-``k`` entry is ``sum_t (x[t] - m) (x[t + k] - m)`` (``m`` the mean
    along ``axis``) divided by ``n``, the number of samples, when ``bias`` is
    True, or by ``n - k``, the number of terms, when it is False. The biased
    estimator has lower variance at long lags.

    Args:
        x: samples, with the series along ``axis``.
        axis: the dim holding the series.
        bias: divide every lag by ``n`` rather than ``n - k``.

    Returns:
        An array of ``x``'s shape; along ``axis``, lags ``0 .. n - 1``.

    >>> import numpy as np
    >>> autocovariance(np.array([1.0, 2.0, 3.0, 4.0])).round(4).tolist()
    [1.25, 0.3125, -0.375, -0.5625]
    """
    x = _as_array(x, "autocovariance")
    if x.ndim == 0:
        raise ValueError("autocovariance: x must have at least 1 dim, got a scalar")
    axis = _check_axis(axis, x.ndim, "autocovariance")
    n = x.shape[axis]
    if n == 0:
        raise ValueError(f"autocovariance: x has no samples along axis {axis}")
    series = np.moveaxis(x, axis, -1).astype(np.float64)
    series = series - series.mean(axis=-1, keepdims=True)
    # Zero-pad to at least 2n so that the circular correlation computed by the
    # FFT equals the linear one; a power of two keeps the transform fast.
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(series, n=size, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    sums = np.fft.irfft(power, n=size, axis=-1)[..., :n]
    divisor = n if bias else np.arange(n, 0, -1, dtype=np.float64)
    return np.moveaxis(sums / divisor, -1, axis)


def autocorrelation(x, axis: int = 0, bias: bool = True) -> np.ndarray:
    """Autocorrelation of ``x`` along ``axis`` at every lag, computed by FFT.

    This is :func:`autocovariance` divided by its lag-0 value, so lag 0 is 1
    (NaN for a constant series).

    Args:
        x: samples, with the series along ``axis``.
        axis: the dim holding the series.
        bias: divide every lag by ``n`` rather than ``n - k``.

    Returns:
        An array of ``x``'s shape; along ``axis``, lags ``0 .. n - 1``.

    >>> import numpy as np
    >>> autocorrelation(np.array([1.0, 2.0, 3.0, 4.0])).round(4).tolist()
    [1.0, 0.25, -0.3, -0.45]
    """
    x = _as_array(x, "autocorrelation")
    if x.ndim == 0:
        raise ValueError("autocorrelation: x must have at least 1 dim, got a scalar")
    axis = _check_axis(axis, x.ndim, "autocorrelation")
    cov = autocovariance(x, axis=axis, bias=bias)
    lag0 = np.take(cov, [0], axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return cov / lag0


def _variance_terms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Within-chain variance ``W`` and the pooled estimate of the marginal
    variance ``var_plus = (N - 1) / N * W + B / N`` of chains ``x`` of shape
    ``(C, N, ...)``, where ``B / N`` is the variance of the chain means.

    With a single chain there is no between-chain term, and both are the
    plain (divide-by-N) variance of the chain.
    """
    num_chains, num_draws = x.shape[:2]
    within = x.var(axis=1, ddof=1).mean(axis=0)
    var_plus = within * (num_draws - 1) / num_draws
    if num_chains == 1:
        return var_plus, var_plus
    var_plus = var_plus + x.mean(axis=1).var(axis=0, ddof=1)
    return within, var_plus


def effective_sample_size(x, bias: bool = True) -> np.ndarray:
    """Effective sample size of chains ``x``, pooled over the chains.

    The estimator is the one of Stan's reference manual: the autocorrelation
    at lag ``t`` is combined across chains as
    ``rho_t = 1 - (W - mean_c gamma_{c,t}) / var_plus`` (``gamma_{c,t}`` the
    autocovariance of chain ``c``, ``W`` and ``var_plus`` as in
    :func:`gelman_rubin`), and the sums ``P_k = rho_{2k} + rho_{2k+1}`` are cut
    at the first negative one and made non-increasing, Geyer's initial
    monotone sequence. Then ``ESS = C * N / (-1 + 2 * sum_k P_k)``.

    Args:
        x: samples of shape ``(num_chains, num_samples, ...)``, with at least
            2 samples per chain.
        bias: use the biased autocovariance (see :func:`autocovariance`).

    Returns:
        The ESS of each element, an array of shape ``x.shape[2:]``.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(4, 1000))
    >>> bool(3600 < effective_sample_size(x) < 4400)
    True
    """
    x = _as_array(x, "effective_sample_size")
    _check_chains(x, "effective_sample_size", min_chains=1, min_draws=2)
    x = x.astype(np.float64)
    num_chains, num_draws = x.shape[:2]
    mean_autocov = autocovariance(x, axis=1, bias=bias).mean(axis=0)
    within, var_plus = _variance_terms(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (within - mean_autocov) / var_plus
        rho[0] = 1.0
        num_pairs = num_draws // 2
        pairs = rho[: 2 * num_pairs].reshape((num_pairs, 2) + rho.shape[1:]).sum(1)
        # Geyer: keep the pair sums while they stay positive, and make them
        # non-increasing; a zero stops every later term, like a truncation.
        pairs[1:] = np.minimum.accumulate(np.maximum(pairs[1:], 0.0), axis=0)
        tau = -1.0 + 2.0 * pairs.sum(axis=0)
        return num_chains * num_draws / tau


def gelman_rubin(x) -> np.ndarray:
    """Potential scale reduction factor R-hat of chains ``x``.

    ``R-hat = sqrt(var_plus / W)``, where ``W`` is the mean of the chains'
    variances and ``var_plus = (N - 1) / N * W + B / N`` adds the variance of
    the chain means ``B / N``. It is near 1 when the chains agree.

    Args:
        x: samples of shape ``(num_chains, num_samples, ...)`` with at least 2
            chains of at least 2 samples.

    Returns:
        R-hat of each element, an array of shape ``x.shape[2:]``.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(4, 1000))
    >>> bool(abs(gelman_rubin(x) - 1.0) < 0.01)
    True
    >>> bool(gelman_rubin(x + np.arange(4.0)[:, None]) > 1.1)
    True
    """
    x = _as_array(x, "gelman_rubin")
    _check_chains(x, "gelman_rubin", min_chains=2, min_draws=2)
    within, var_plus = _variance_terms(x.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(var_plus / within)


def split_gelman_rubin(x) -> np.ndarray:
    """Split R-hat: :func:`gelman_rubin` of the chains cut into halves.

    Each chain's first and last ``num_samples // 2`` draws count as separate
    chains (the middle draw of an odd-length chain is left out), which also
    flags a chain that drifts. It works with a single chain.

    Args:
        x: samples of shape ``(num_chains, num_samples, ...)`` with at least
            4 samples per chain.

    Returns:
        Split R-hat of each element, an array of shape ``x.shape[2:]``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> bool(abs(split_gelman_rubin(rng.normal(size=(1, 2000))) - 1.0) < 0.01)
    True
    >>> drifting = np.linspace(0.0, 10.0, 2000)[None] + rng.normal(size=(1, 2000))
    >>> bool(split_gelman_rubin(drifting) > 1.1)
    True
    """
    x = _as_array(x, "split_gelman_rubin")
    _check_chains(x, "split_gelman_rubin", min_chains=1, min_draws=4)
    half = x.shape[1] // 2
    return gelman_rubin(np.concatenate([x[:, :half], x[:, -half:]], axis=0))


def hpdi(x, prob: float = 0.9, axis: int = 0) -> np.ndarray:
    """Highest posterior density interval: the narrowest interval holding a
    fraction ``prob`` of the samples.

    With ``n`` samples along ``axis``, the interval runs from one sample to
    the one ``int(prob * n)`` places after it in sorted order (so it holds
    ``int(prob * n) + 1`` samples), choosing the narrowest such pair.

    Args:
        x: samples along ``axis``.
        prob: the probability mass to hold, in (0, 1).
        axis: the dim holding the samples.

    Returns:
        An array of ``x``'s shape but with size 2 along ``axis``: the lower
        bounds, then the upper bounds.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=100_000)
    >>> hpdi(x, 0.9).round(1).tolist()
    [-1.6, 1.6]
    """
    prob = _check_prob(prob, "hpdi")
    x = _as_array(x, "hpdi")
    if x.ndim == 0:
        raise ValueError("hpdi: x must have at least 1 dim, got a scalar")
    axis = _check_axis(axis, x.ndim, "hpdi")
    n = x.shape[axis]
    if n == 0:
        raise ValueError(f"hpdi: x has no samples along axis {axis}")
    ordered = np.sort(np.moveaxis(x, axis, 0), axis=0)
    span = int(prob * n)
    widths = ordered[span:] - ordered[: n - span]
    start = np.argmin(widths, axis=0)[None]
    lower = np.take_along_axis(ordered, start, axis=0)
    upper = np.take_along_axis(ordered, start + span, axis=0)
    return np.moveaxis(np.concatenate([lower, upper], axis=0), 0, axis)


def _named_sites(samples, where: str) -> dict[str, object]:
    """``samples`` as a dict of site name -> array; an array or another
    pytree gets the names ``Param:0``, ``Param:1``, ..."""
    if isinstance(samples, Mapping):
        return dict(samples)
    if isinstance(samples, np.ndarray | jax.Array):
        return {"Param:0": samples}
    leaves = jax.tree.leaves(samples)
    if not leaves:
        raise TypeError(
            f"{where}: samples must be a dict of arrays or an array, got "
            f"{type(samples).__name__}"
        )
    return {f"Param:{i}": leaf for i, leaf in enumerate(leaves)}


def _interval_keys(prob: float) -> tuple[str, str]:
    return f"{50 * (1 - prob):.1f}%", f"{50 * (1 + prob):.1f}%"


def summary(
    samples, prob: float = 0.9, group_by_chain: bool = True
) -> dict[str, dict[str, np.ndarray]]:
    """Summary statistics and diagnostics of each site's samples.

    For each site: the mean, standard deviation (``ddof=1``) and median over
    all draws of all chains, the bounds of the :func:`hpdi` holding ``prob``
    (keyed ``"5.0%"`` and ``"95.0%"`` for ``prob=0.9``), the
    :func:`effective_sample_size` ``"n_eff"`` and the
    :func:`split_gelman_rubin` ``"r_hat"``.

    Args:
        samples: a dict of site name -> array (e.g. ``MCMC.get_samples``), or
            one array or a pytree of arrays, named ``"Param:0"``, ...
        prob: the probability mass of the intervals, in (0, 1).
        group_by_chain: arrays have shape ``(num_chains, num_samples, ...)``;
            if False, ``(num_samples, ...)``, a single chain.

    Returns:
        A dict of site name -> dict with keys ``"mean"``, ``"std"``,
        ``"median"``, the lower and upper interval keys, ``"n_eff"`` and
        ``"r_hat"``, each an array of the site's event shape. Sites with no
        chains or no draws are left out.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> stats = summary({"mu": rng.normal(size=(2, 500))})
    >>> list(stats["mu"])
    ['mean', 'std', 'median', '5.0%', '95.0%', 'n_eff', 'r_hat']
    >>> bool(abs(stats["mu"]["std"] - 1.0) < 0.1)
    True
    """
    prob = _check_prob(prob, "summary")
    lower_key, upper_key = _interval_keys(prob)
    result: dict[str, dict[str, np.ndarray]] = {}
    for name, value in _named_sites(samples, "summary").items():
        value = _as_array(value, "summary", f"samples[{name!r}]")
        if not group_by_chain:
            value = value[None]
        if value.ndim < 2:
            raise ValueError(
                f"summary: samples[{name!r}] has shape {value.shape}; with "
                "group_by_chain=True it needs dims (num_chains, num_samples, ...)"
            )
        num_chains, num_draws = value.shape[:2]
        if num_chains == 0 or num_draws == 0:
            continue
        if num_draws < 4:
            raise ValueError(
                f"summary: samples[{name!r}] has {num_draws} samples per chain; "
                "split r_hat needs at least 4"
            )
        flat = value.reshape((num_chains * num_draws,) + value.shape[2:])
        interval = hpdi(flat, prob, axis=0)
        result[name] = {
            "mean": flat.mean(axis=0),
            "std": flat.std(axis=0, ddof=1),
            "median": np.median(flat, axis=0),
            lower_key: interval[0],
            upper_key: interval[1],
            "n_eff": effective_sample_size(value),
            "r_hat": split_gelman_rubin(value),
        }
    return result


def print_summary(
    samples,
    prob: float = 0.9,
    group_by_chain: bool = True,
    num_divergences: int | None = None,
) -> None:
    """Print :func:`summary` as a table, one row per scalar element.

    The columns are mean, std, median, the :func:`hpdi` bounds, n_eff and
    r_hat; an element of a site with an event shape is named like ``w[0,1]``.

    Args:
        samples: as for :func:`summary`.
        prob: the probability mass of the intervals, in (0, 1).
        group_by_chain: as for :func:`summary`.
        num_divergences: if given, a last line ``Number of divergences: N``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> print_summary({"mu": rng.normal(size=(2, 500))}, num_divergences=0)
    <BLANKLINE>
                    mean       std    median      5.0%     95.0%     n_eff     r_hat
            mu     ...
    <BLANKLINE>
    Number of divergences: 0
    """
    stats = summary(samples, prob, group_by_chain)
    rows = []
    for name, site in stats.items():
        shape = np.shape(site["mean"])
        for index in itertools.product(*map(range, shape)):
            label = name + (f"[{','.join(map(str, index))}]" if index else "")
            rows.append((label, [np.asarray(v)[index] for v in site.values()]))
    if rows:
        columns = list(next(iter(stats.values())))
        width = max(10, *(len(label) for label, _ in rows))
        print()
        print(f"{'':>{width}}" + "".join(f" {c:>9}" for c in columns))
        for label, values in rows:
            print(f"{label:>{width}}" + "".join(f" {float(v):>9.2f}" for v in values))
        print()
    if num_divergences is not None:
        print(f"Number of divergences: {int(num_divergences)}")


def _grouped_arrays(
    group: Mapping | None,
    group_name: str,
    group_by_chain: bool,
    leading: tuple[int, int] | None,
) -> tuple[dict[str, np.ndarray] | None, tuple[int, int] | None]:
    """Arrays of ``group`` with a (chain, draw) leading shape checked against
    ``leading`` (set from the first array when None)."""
    if group is None:
        return None, leading
    if not isinstance(group, Mapping):
        raise TypeError(
            f"to_arviz: {group_name} must be a dict of name -> array, got "
            f"{type(group).__name__}"
        )
    arrays = {}
    for key, value in group.items():
        array = np.asarray(jax.device_get(value))
        if not group_by_chain:
            array = array[None]
        if array.ndim < 2:
            raise ValueError(
                f"to_arviz: {group_name}[{key!r}] has shape {array.shape}; with "
                "group_by_chain=True it needs dims (num_chains, num_samples, ...)"
            )
        if leading is None:
            leading = array.shape[:2]
        elif array.shape[:2] != leading:
            raise ValueError(
                f"to_arviz: {group_name}[{key!r}] has (chain, draw) dims "
                f"{array.shape[:2]}, but the posterior samples have {leading}"
            )
        arrays[key] = array
    return arrays, leading


def to_arviz(
    samples,
    *,
    log_likelihood=None,
    sample_stats=None,
    group_by_chain: bool = True,
    coords: dict | None = None,
    dims: dict | None = None,
):
    """Export posterior samples to an ``arviz.InferenceData``.

    Needs ArviZ (``pip install arviz``, or ``pip install 'probnn[arviz]'``);
    it uses ``arviz.from_dict`` with its group keywords (ArviZ 0.x).

    Args:
        samples: dict of site name -> array of shape
            ``(num_chains, num_samples, ...)``, e.g.
            ``MCMC.get_samples(group_by_chain=True)``; the ``posterior`` group.
        log_likelihood: dict of observed site name -> pointwise log
            likelihoods with the same leading dims (e.g. from
            :func:`probnn.infer.log_likelihood`); the ``log_likelihood`` group.
        sample_stats: dict of sampler statistics with the same leading dims
            (e.g. ``{"diverging": ..., "energy": ...}``); the ``sample_stats``
            group.
        group_by_chain: arrays have a leading chain dim; if False, they are
            ``(num_samples, ...)`` and become a single chain.
        coords: passed to ``arviz.from_dict``: coordinate values by dim name.
        dims: passed to ``arviz.from_dict``: dim names by variable name.

    Returns:
        An ``arviz.InferenceData`` whose variables have dims
        ``(chain, draw, ...)``.

    Raises:
        ImportError: if ArviZ cannot be imported.

    >>> import numpy as np
    >>> try:
    ...     idata = to_arviz({"mu": np.zeros((2, 100))})
    ... except ImportError:  # ArviZ is not installed
    ...     print("(2, 100)")
    ... else:
    ...     print(idata.posterior["mu"].shape)
    (2, 100)
    """
    try:
        with warnings.catch_warnings():
            # ArviZ 0.x warns about its coming refactor on import.
            warnings.simplefilter("ignore", FutureWarning)
            import arviz
    except ImportError as err:
        raise ImportError(
            "to_arviz needs ArviZ, which is not installed: run `pip install arviz` "
            "(or install probnn with its optional extra: `pip install "
            "'probnn[arviz]'`)"
        ) from err
    if not isinstance(samples, Mapping):
        raise TypeError(
            "to_arviz: samples must be a dict of site name -> array, got "
            f"{type(samples).__name__}"
        )
    if not samples:
        raise ValueError("to_arviz: samples is empty")
    posterior, leading = _grouped_arrays(samples, "samples", group_by_chain, None)
    loglik, leading = _grouped_arrays(
        log_likelihood, "log_likelihood", group_by_chain, leading
    )
    stats, leading = _grouped_arrays(
        sample_stats, "sample_stats", group_by_chain, leading
    )
    if math.prod(leading) == 0:
        raise ValueError(
            f"to_arviz: samples have (chain, draw) dims {leading}; both must be > 0"
        )
    return arviz.from_dict(
        posterior=posterior,
        log_likelihood=loglik,
        sample_stats=stats,
        coords=coords,
        dims=dims,
    )
