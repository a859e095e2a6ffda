"""Test-suite configuration.

Property tests run a fixed, derandomized set of examples, so that a CI run
is reproducible: the same commit passes or fails the same way every time.
``HYPOTHESIS_PROFILE=explore pytest ...`` draws fresh random examples
instead (as many per test as the test's own settings ask for).
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
