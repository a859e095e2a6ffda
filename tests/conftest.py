"""Test-suite configuration.

Property tests run a fixed, derandomized set of examples, so that a CI run
is reproducible: the same commit passes or fails the same way every time.
``HYPOTHESIS_PROFILE=explore pytest ...`` searches afresh with random
examples (and more of them) instead.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", max_examples=200, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
