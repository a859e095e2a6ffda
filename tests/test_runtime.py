"""The handler stack: message order, stop, context-manager and decorator use."""

import subprocess
import sys

import pytest

import probnn
import probnn.distributions as dist
from probnn.runtime import _STACK, Messenger, apply_stack, make_message


class Recorder(Messenger):
    def __init__(self, label, log, stop=False, fn=None):
        self.label, self.log, self.stop = label, log, stop
        super().__init__(fn)

    def process_message(self, msg):
        self.log.append(("process", self.label))
        msg["stop"] = self.stop

    def postprocess_message(self, msg):
        self.log.append(("post", self.label))


def test_process_innermost_first_postprocess_outermost_first():
    log = []
    with Recorder("outer", log), Recorder("inner", log):
        apply_stack(make_message("deterministic", "d", None, value=1.0))
    assert log == [
        ("process", "inner"),
        ("process", "outer"),
        ("post", "outer"),
        ("post", "inner"),
    ]


def test_stop_hides_message_from_outer_handlers():
    log = []
    with Recorder("outer", log), Recorder("inner", log, stop=True):
        apply_stack(make_message("deterministic", "d", None, value=1.0))
    assert log == [("process", "inner"), ("post", "inner")]


def test_default_processing_computes_missing_value():
    msg = make_message("custom", "c", lambda a, b=0: a + b, (2,), {"b": 3})
    with Recorder("only", []):
        assert apply_stack(msg)["value"] == 5


def test_handler_as_decorator_and_context_manager_give_same_log():
    as_decorator, as_context = [], []

    def body():
        return probnn.deterministic("d", 1.0)

    Recorder("h", as_decorator, fn=body)()
    with Recorder("h", as_context):
        body()
    assert as_decorator == as_context == [("process", "h"), ("post", "h")]
    assert _STACK == []


def test_stack_restored_after_exception():
    def failing():
        probnn.sample("x", dist.Normal(0.0, 1.0))  # no seed: raises

    with pytest.raises(ValueError, match="'x'"):
        probnn.handlers.trace(failing).get_trace()
    assert _STACK == []


def test_import_changes_no_jax_configuration():
    script = (
        "import jax\n"
        "before = dict(jax.config.values)\n"
        "import probnn\n"
        "after = dict(jax.config.values)\n"
        "changed = {k for k in before if before[k] != after.get(k)}\n"
        "assert not changed, changed\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_numpyro_style_import_paths():
    import probnn as numpyro
    from probnn.contrib.control_flow import scan as contrib_scan
    from probnn.infer.util import log_density

    assert contrib_scan is numpyro.scan
    assert numpyro.control_flow.scan is numpyro.scan
    assert callable(log_density)
    for name in (
        "sample param plate plate_stack deterministic factor subsample prng_key module"
    ).split():
        assert getattr(numpyro, name) is getattr(numpyro.primitives, name)
    for name in (
        "seed trace substitute condition replay block scale mask scope lift do "
        "infer_config"
    ).split():
        assert isinstance(getattr(numpyro.handlers, name), type)
