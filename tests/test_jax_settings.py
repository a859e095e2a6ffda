"""probnn.util: the process-wide JAX settings NumPyro scripts start with
(named apart from tests/infer/test_util.py: the test modules share one
namespace)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import probnn


@pytest.fixture
def restore_x64():
    before = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", before)


def test_settings_take_effect_in_a_fresh_process():
    code = (
        "import probnn, jax, jax.numpy as jnp\n"
        "probnn.set_host_device_count(3)\n"
        "probnn.set_platform('cpu')\n"
        "probnn.enable_x64()\n"
        "print(jax.device_count(), jax.default_backend(), jnp.zeros(1).dtype)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["3", "cpu", "float64"]


def test_host_device_count_after_jax_started_is_a_clear_error():
    jnp.zeros(1).block_until_ready()  # backends are up
    with pytest.raises(RuntimeError, match=r"set_host_device_count\(2\).*before"):
        probnn.set_host_device_count(2)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_host_device_count_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="set_host_device_count"):
        probnn.set_host_device_count(bad)


def test_enable_x64_switches_default_dtypes_both_ways(restore_x64):
    probnn.enable_x64()
    assert jnp.zeros(1).dtype == jnp.float64 and jnp.arange(2).dtype == jnp.int64
    probnn.enable_x64(False)
    assert jnp.zeros(1).dtype == jnp.float32 and jnp.arange(2).dtype == jnp.int32


@pytest.mark.parametrize(
    "text, expected", [("1", True), ("Yes", True), ("off", False), ("", False)]
)
def test_enable_x64_none_reads_the_environment(
    monkeypatch, restore_x64, text, expected
):
    monkeypatch.setenv("JAX_ENABLE_X64", text)
    probnn.enable_x64(None)
    assert jax.config.jax_enable_x64 is expected


def test_enable_x64_rejects_unclear_input(monkeypatch, restore_x64):
    monkeypatch.setenv("JAX_ENABLE_X64", "maybe")
    with pytest.raises(ValueError, match="JAX_ENABLE_X64.*'maybe'"):
        probnn.enable_x64(None)
    with pytest.raises(TypeError, match="use_x64"):
        probnn.enable_x64("yes")


def test_set_platform_sets_the_default_backend_name():
    before = jax.config.values["jax_platform_name"]
    try:
        probnn.set_platform("CPU")
        assert jax.config.values["jax_platform_name"] == "cpu"
        assert jax.default_backend() == "cpu"
    finally:
        jax.config.update("jax_platform_name", before)
    with pytest.raises(TypeError, match="set_platform"):
        probnn.set_platform(3)
