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
test processes, and fused elementwise code is emitted by XLA's older
elemental emitter rather than its fusion emitters (which take about twice as
long to build a sampler or an SVI step). Both flags are appended to any
``XLA_FLAGS`` already set and inherited by the subprocesses tests start.
Results agree with the default settings up to floating-point rounding;
benchmarks and examples run with the defaults. Set
``PROBNN_TEST_XLA_OPT=default`` to test with the default settings.

Many tests build the same program again (a sampler for the same model under
another option, a step function per parametrization), so a test run keeps
JAX's persistent compilation cache in a fresh temporary folder that every
worker process shares and that is removed when the run ends: a program
compiled once in the run is read back, not rebuilt. An existing
``JAX_COMPILATION_CACHE_DIR`` is used as it is; ``PROBNN_TEST_JAX_CACHE=0``
turns the cache off.
"""

import gc
import os
import shutil
import tempfile

if os.environ.get("PROBNN_TEST_XLA_OPT", "0") != "default":
    # read when JAX first starts its CPU backend, after this module is
    # imported
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
    ).strip()

_OWN_CACHE = None
if (
    os.environ.get("PROBNN_TEST_JAX_CACHE", "1") != "0"
    and "JAX_COMPILATION_CACHE_DIR" not in os.environ
):
    # set before JAX reads its configuration; worker processes (and the
    # subprocesses tests start) inherit the variables and so the folder
    _OWN_CACHE = tempfile.mkdtemp(prefix="probnn-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

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


def pytest_unconfigure(config):
    # the process that made the cache folder removes it (workers inherit
    # the variable, not the ownership)
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


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
