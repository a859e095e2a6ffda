"""The dataset names of NumPyro's example scripts, so that a script which
imports them ports unchanged.

probnn downloads nothing: :func:`load_dataset` raises an error that names
the dataset and its source. Scripts that also run on generated data (for
example ``hmcecs.py --dataset mock``) run as they are.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "BART",
    "BASEBALL",
    "BOSTON_HOUSING",
    "COVTYPE",
    "DIPPER_VOLE",
    "HIGGS",
    "JSB_CHORALES",
    "LYNXHARE",
    "MNIST",
    "MORTALITY",
    "NINE_MERS",
    "SP500",
    "UCBADMIT",
    "dset",
    "iter_dataset",
    "load_dataset",
]


class dset(NamedTuple):
    """A named dataset and where it is published."""

    name: str
    urls: tuple[str, ...]


BART = dset("bart", ("https://github.com/pyro-ppl/datasets (bart)",))
BASEBALL = dset("baseball", ("Efron and Morris (1975) baseball averages",))
BOSTON_HOUSING = dset("boston_housing", ("UCI Boston housing",))
COVTYPE = dset("covtype", ("UCI forest cover type",))
DIPPER_VOLE = dset("dipper_vole", ("capture-recapture data (dipper, vole)",))
HIGGS = dset("higgs", ("UCI HIGGS",))
JSB_CHORALES = dset("jsb_chorales", ("JSB chorales",))
LYNXHARE = dset("lynxhare", ("Hudson Bay lynx and hare pelts",))
MNIST = dset("mnist", ("MNIST digits",))
MORTALITY = dset("mortality", ("simulated mortality data",))
NINE_MERS = dset("9mers", ("9-mer peptide sequences",))
SP500 = dset("SP500", ("S&P 500 daily returns",))
UCBADMIT = dset("ucbadmit", ("UC Berkeley admissions, 1973",))


def _no_download(dset_: dset):
    raise RuntimeError(
        f"dataset {dset_.name!r} ({dset_.urls[0]}): probnn does not download "
        "data. Load it yourself into arrays, or run the script on generated "
        "data where it offers that (e.g. hmcecs.py --dataset mock)"
    )


def load_dataset(
    dset: dset,
    batch_size: int | None = None,
    split: str = "train",
    shuffle: bool = True,
    num_datapoints: int | None = None,
):
    """NumPyro's loader; here it raises (nothing is downloaded)."""
    _no_download(dset)


def iter_dataset(
    dset: dset, batch_size: int | None = None, split="train", shuffle=True
):
    """NumPyro's iterator over a dataset; here it raises (nothing is
    downloaded)."""
    _no_download(dset)
