"""Automatic guides: variational families built from a model's latent sites.

An autoguide runs the model once, on its first call (the *prototype* run,
under ``seed`` with a key from :func:`probnn.prng_key` and the
``init_loc_fn`` strategy), to find the latent sites: the unobserved,
non-auxiliary sample sites. Each latent site is guided in unconstrained space
through ``biject_to(site's support)``:

- :class:`AutoNormal` and :class:`AutoDelta` give every site its own params
  (``{site}_{prefix}_loc``, ``{site}_{prefix}_scale``) and recreate the
  model's plates, so they support subsampled (mini-batched) local latents.
- :class:`AutoDiagonalNormal`, :class:`AutoMultivariateNormal`,
  :class:`AutoLowRankMultivariateNormal` and
  :class:`AutoLaplaceApproximation` flatten all latents into one vector drawn
  at the auxiliary site ``_{prefix}_latent``; each model site then gets a
  ``Delta`` at its constrained value, carrying the log Jacobian.
  :class:`AutoIAFNormal` and :class:`AutoBNAFNormal` draw that vector from a
  standard Normal pushed through normalizing flows (IAF, BNAF).

Every guide offers ``median(params)``, ``quantiles(params, quantiles)`` and
``sample_posterior(rng_key, params, ...)`` with ``params`` the constrained
values from ``SVI.get_params``. The constrained values these return use each
site's support as it was in the prototype run.
"""

from probnn.infer.autoguide._base import AutoGuide
from probnn.infer.autoguide._continuous import (
    AutoContinuous,
    AutoDiagonalNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
)
from probnn.infer.autoguide._dais import AutoDAIS
from probnn.infer.autoguide._flows import AutoBNAFNormal, AutoIAFNormal
from probnn.infer.autoguide._local import AutoDelta, AutoNormal

__all__ = [
    "AutoBNAFNormal",
    "AutoContinuous",
    "AutoDAIS",
    "AutoDelta",
    "AutoDiagonalNormal",
    "AutoGuide",
    "AutoIAFNormal",
    "AutoLaplaceApproximation",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
    "AutoNormal",
]
