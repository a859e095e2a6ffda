"""Test-suite configuration.

Property tests run a fixed, derandomized set of examples, so that a CI run
is reproducible: the same commit passes or fails the same way every time.
``HYPOTHESIS_PROFILE=explore pytest ...`` draws fresh random examples
instead (as many per test as the test's own settings ask for).

Tracer leaks: a test marked ``@pytest.mark.check_leaks`` (or a module with
``pytestmark = pytest.mark.check_leaks``) runs under ``jax.checking_leaks()``,
so a tracer that outlives its transformation (kept on an object, written into
a caller's dict) fails the test where it leaks. ``pytest --check-leaks`` does
the same for every test collected.

Compilation: the suite compiles thousands of small programs and runs each a
few times, so XLA's CPU backend optimisation (which makes a compiled
program faster to run but slower to build) is turned down to level 0 for
test processes (appended to any ``XLA_FLAGS`` already set, and inherited by
the subprocesses tests start). Results agree with the default level up to
floating-point rounding; benchmarks and examples run at the default level.
Set ``PROBNN_TEST_XLA_OPT=default`` to test at the default level.
"""

import gc
import os

if os.environ.get("PROBNN_TEST_XLA_OPT", "0") != "default":
    # read when JAX first starts its CPU backend, after this module is
    # imported
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption(
        "--check-leaks",
        action="store_true",
        default=False,
        help="run every test under jax.checking_leaks()",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "check_leaks: run the test under jax.checking_leaks()"
    )


@pytest.fixture(autouse=True)
def _check_tracer_leaks(request):
    """``jax.checking_leaks()`` around tests marked ``check_leaks`` (all tests
    with ``--check-leaks``)."""
    wanted = request.config.getoption("--check-leaks") or (
        request.node.get_closest_marker("check_leaks") is not None
    )
    if not wanted:
        yield
        return
    # A leak check that finds a trace alive runs gc.collect() and
    # gc.get_referrers over every object the process holds: late in a suite
    # run, millions (earlier tests' traces and caches), seconds per check.
    # Objects older than this test cannot hold its tracers, so they are
    # frozen out of collection while it runs; whether a trace outlived its
    # transformation is still decided by a weak reference. JAX's account of
    # what holds a leaked tracer then stops at frozen objects:
    # PROBNN_TEST_GC_FREEZE=0 gives the full account.
    freeze = os.environ.get("PROBNN_TEST_GC_FREEZE", "1") != "0"
    if freeze:
        gc.freeze()
    try:
        with jax.checking_leaks():
            yield
    finally:
        if freeze:
            gc.unfreeze()
