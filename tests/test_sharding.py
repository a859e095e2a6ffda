"""probnn on JAX's SPMD machinery, on a mesh of four simulated CPU devices.

Data-parallel SVI needs no probnn API: data placed with
``NamedSharding(mesh, PartitionSpec("data"))`` along the plate's dim make the
jitted steps run over the mesh (GSPMD), and the results equal single-device
SVI to float tolerance. Subsampled plates wrapped in ``shard_subsample``
read each device's own rows; ``shard_state`` shards a network's params (and
their optimiser moments) from NNX partitioning metadata. BatchNorm
statistics over a sharded batch are those of the whole batch (synchronised
batch norm). ``MCMC(...,
chain_method="parallel")`` spreads chains over the devices with
``shard_map``.

The device count is fixed when JAX starts, so the sharded code runs in
another interpreter, started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (and
``JAX_PLATFORMS=cpu``, so that a GPU host tests the same thing). Each test
sends it a script (``PRELUDE`` and the test's code), which runs in a
namespace of its own, and checks the ``result`` dict the script fills in.
One such interpreter serves all the tests of this module that a pytest
process runs (it is stopped after the last of them): starting JAX and
compiling its small programs once rather than once per test saves about a
fifth of the module's time.
"""

import contextlib
import json
import os
import pathlib
import queue
import subprocess
import sys
import tempfile
import textwrap
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 4

PRELUDE = """
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import probnn
import probnn.distributions as dist

assert jax.device_count() == {devices}, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("data",))
by_rows = NamedSharding(mesh, PartitionSpec("data"))


def max_abs_diff(a, b):
    diffs = jax.tree.map(
        lambda u, v: float(np.max(np.abs(np.asarray(u) - np.asarray(v)))), a, b
    )
    return max(jax.tree.leaves(diffs))


def step_flops(jitted, *args):
    # floating-point operations of one device's share of a compiled step
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def placement(tree):
    # (fully replicated, number of devices holding it, partition spec) of
    # every leaf
    return [
        [
            leaf.sharding.is_fully_replicated,
            len(leaf.sharding.device_set),
            list(leaf.sharding.spec),
        ]
        for leaf in jax.tree.leaves(tree)
    ]


result = {{}}
"""


# runs the scripts sent on its stdin, one JSON string a line; replies are
# lines of stdout that start with the marker given as its argument (what
# the scripts print goes to the log, with the interpreter's stderr)
SERVE = """
import contextlib, json, sys, traceback

for line in sys.stdin:
    namespace = {"__name__": "__main__"}
    try:
        with contextlib.redirect_stdout(sys.stderr):
            exec(compile(json.loads(line), "<script>", "exec"), namespace)
        reply = {"result": namespace["result"]}
    except BaseException:
        reply = {"error": traceback.format_exc()}
    sys.stdout.write(sys.argv[1] + json.dumps(reply) + "\\n")
    sys.stdout.flush()
"""
REPLY = "@@probnn-sharding-reply@@ "

_interpreters: dict = {}  # device count -> (process, replies queue, log path)


def _interpreter(devices):
    """This pytest process's interpreter with ``devices`` CPU devices,
    started on first use."""
    if devices not in _interpreters:
        flags = os.environ.get("XLA_FLAGS", "")
        flags = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        handle, log = tempfile.mkstemp(prefix="probnn-sharding-", suffix=".log")
        os.close(handle)
        with open(log, "a") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-c", SERVE, REPLY],
                env=env,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        replies = queue.Queue()

        def read(stdout=process.stdout):
            for line in stdout:
                if line.startswith(REPLY):
                    replies.put(json.loads(line[len(REPLY) :]))
            replies.put(None)  # the interpreter has ended

        threading.Thread(target=read, daemon=True).start()
        _interpreters[devices] = (process, replies, log)
    return _interpreters[devices]


def _stop_interpreter(devices, wait=30):
    process, _, log = _interpreters.pop(devices)
    with contextlib.suppress(OSError):
        process.stdin.close()  # its loop ends
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    os.unlink(log)


@pytest.fixture(scope="module", autouse=True)
def _stop_interpreters_after_this_module():
    yield
    for devices in list(_interpreters):
        _stop_interpreter(devices)


def _run_on_cpu_devices(code, devices=DEVICES, timeout=600):
    """Run ``code`` (after PRELUDE) in the interpreter with ``devices`` CPU
    devices, in a namespace of its own; return the ``result`` dict it fills
    in (through JSON)."""
    script = PRELUDE.format(devices=devices) + textwrap.dedent(code)
    process, replies, log = _interpreter(devices)
    start = os.path.getsize(log)

    def output():
        with open(log, "rb") as f:
            f.seek(start)
            return f.read()[-5000:].decode(errors="replace")

    try:
        process.stdin.write(json.dumps(script) + "\n")
        process.stdin.flush()
        reply = replies.get(timeout=timeout)
    except queue.Empty:
        reply = f"no result within {timeout} s"
    except OSError:
        reply = None
    if not isinstance(reply, dict):  # the next test starts another interpreter
        printed = output()
        _stop_interpreter(devices, wait=0)
        raise AssertionError(f"{reply or 'the interpreter ended'}\n{printed}")
    assert "error" not in reply, reply["error"][-5000:] + output()
    return reply["result"]


# -- SVI ----------------------------------------------------------------------


LINEAR_REGRESSION = """
from probnn.infer import SVI, Trace_ELBO
from probnn.infer.autoguide import AutoNormal

N, D = 4096, 8


def model(x, y=None):
    w = probnn.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    b = probnn.sample("b", dist.Normal(0.0, 1.0))
    sigma = probnn.sample("sigma", dist.HalfNormal(1.0))
    with probnn.plate("data", x.shape[0]):
        probnn.sample("y", dist.Normal(x @ w + b, sigma), obs=y)


x = jax.random.normal(jax.random.PRNGKey(0), (N, D))
true_w = jnp.linspace(-1.0, 1.0, D)
y = x @ true_w + 0.5 + 0.3 * jax.random.normal(jax.random.PRNGKey(1), (N,))
x_sharded, y_sharded = jax.device_put((x, y), by_rows)


def fit(x, y):
    svi = SVI(model, AutoNormal(model), optax.adam(0.05), Trace_ELBO())
    return svi, svi.run(jax.random.PRNGKey(2), 300, x, y, progress_bar=False)


_, single = fit(x, y)
svi, sharded = fit(x_sharded, y_sharded)
result["param_diff"] = max_abs_diff(single.params, sharded.params)
result["loss_rel_diff"] = float(
    np.max(np.abs(single.losses - sharded.losses) / np.abs(single.losses))
)
result["w_error"] = float(np.max(np.abs(sharded.params["w_auto_loc"] - true_w)))
result["params_placement"] = placement(sharded.params)
result["state_placement"] = placement(sharded.state)
result["data_specs"] = [
    list(a.sharding.spec) for a in (x_sharded, y_sharded)
]
result["data_shards"] = [list(s.data.shape) for s in x_sharded.addressable_shards]
update = jax.jit(svi.update)
result["flops_single"] = step_flops(update, single.state, x, y)
result["flops_sharded"] = step_flops(update, sharded.state, x_sharded, y_sharded)
"""


def test_sharded_svi_equals_single_device_svi():
    """AutoNormal linear regression on 4096 rows sharded over four devices:
    300 steps of ``svi.run`` give the single-device params to float
    tolerance; params and optimiser state come out replicated on every
    device while the data keep their row sharding, and each device does
    about a quarter of a step's work."""
    result = _run_on_cpu_devices(LINEAR_REGRESSION)
    assert result["param_diff"] < 1e-5
    assert result["loss_rel_diff"] < 1e-5
    assert result["w_error"] < 0.05  # it did fit
    for leaves in (result["params_placement"], result["state_placement"]):
        assert leaves and all(leaf == [True, DEVICES, []] for leaf in leaves)
    assert result["data_specs"] == [["data"], ["data"]]
    assert result["data_shards"] == [[4096 // DEVICES, 8]] * DEVICES
    # a replicated computation would cost every device the whole step
    assert result["flops_sharded"] < 0.5 * result["flops_single"]


SUBSAMPLED = """
import re

from probnn.handlers import shard_subsample
from probnn.infer import SVI, Trace_ELBO
from probnn.infer.autoguide import AutoNormal

N, D, BATCH = 4096, 8, 256


def model(x, y):
    w = probnn.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    with probnn.plate("data", x.shape[0], subsample_size=BATCH):
        xb = probnn.subsample(x, event_dim=1)
        yb = probnn.subsample(y, event_dim=0)
        z = probnn.sample("z", dist.Normal(0.0, 1.0))  # a local latent
        probnn.sample("y", dist.Normal(xb @ w + 0.1 * z, 0.5), obs=yb)


x = jax.random.normal(jax.random.PRNGKey(0), (N, D))
true_w = jnp.linspace(-1.0, 1.0, D)
y = x @ true_w + 0.5 * jax.random.normal(jax.random.PRNGKey(1), (N,))
x_sharded, y_sharded = jax.device_put((x, y), by_rows)


def transferred_shapes(jitted, *args):
    # the shapes of the results of every collective in the compiled step
    text = jitted.lower(*args).compile().as_text()
    collective = re.compile(
        r"= (.*?) "
        r"(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)\\("
    )
    shapes = []
    for line in text.splitlines():
        found = collective.search(line)
        if found:
            for dims in re.findall(r"\\[([\\d,]*)\\]", found.group(1)):
                shapes.append([int(d) for d in dims.split(",") if d])
    return shapes


def svi_for(shards):
    if shards is None:
        return SVI(model, AutoNormal(model), optax.adam(0.05), Trace_ELBO())
    wrapped = shard_subsample(model, shards=shards)
    guide = shard_subsample(AutoNormal(wrapped), shards=shards)
    return SVI(wrapped, guide, optax.adam(0.05), Trace_ELBO())


# 100 steps: w within 0.055 of the truth (0.02 to 0.055 over five sets of
# data and SVI keys), against the test's 0.1
for label, shards in (("plain", None), ("blocks", {"data": {devices}})):
    svi = svi_for(shards)
    single = svi.run(jax.random.PRNGKey(2), 100, x, y, progress_bar=False)
    sharded = svi.run(
        jax.random.PRNGKey(2), 100, x_sharded, y_sharded, progress_bar=False
    )
    update = jax.jit(svi.update)
    result[label] = {
        "param_diff": max_abs_diff(single.params, sharded.params),
        "w_error": float(np.max(np.abs(sharded.params["w_auto_loc"] - true_w))),
        "flops_single": step_flops(update, single.state, x, y),
        "flops_sharded": step_flops(update, sharded.state, x_sharded, y_sharded),
        "transfers": transferred_shapes(update, sharded.state, x_sharded, y_sharded),
    }
""".replace("{devices}", str(DEVICES))


def test_subsampled_plate_reads_each_devices_own_rows():
    """A subsampled plate (mini-batch 256 of 4096 rows, AutoNormal with a
    local latent) over data sharded on four devices. With
    ``shard_subsample`` each device draws and gathers its quarter of the
    mini-batch from its own rows: the compiled step moves no mini-batch-sized
    array between devices and each device does well under the whole step's
    work, and the result equals the same handler on one device. Plain global
    indices are correct too, but XLA answers the gather by summing every
    device's masked rows (an all-reduce of the whole mini-batch) and every
    device then evaluates all of it."""
    result = _run_on_cpu_devices(SUBSAMPLED)
    blocks, plain = result["blocks"], result["plain"]
    for run in (blocks, plain):
        assert run["param_diff"] < 1e-4
        assert run["w_error"] < 0.1  # it did fit

    def moves_rows(run):
        # a collective with a mini-batch (or a device's share of it) of rows;
        # the gradient all-reduce of the params has other shapes
        return any(shape[:1] in ([256], [256 // DEVICES]) for shape in run["transfers"])

    assert not moves_rows(blocks)
    assert moves_rows(plain)
    assert blocks["flops_sharded"] < 0.6 * blocks["flops_single"]
    assert plain["flops_sharded"] > 0.9 * plain["flops_single"]


PARAM_SHARDING = """
import flax.nnx as nnx

from probnn.infer import SVI, Trace_ELBO, shard_state
from probnn.nn import param_shardings

# two devices along the batch, two along the network's hidden units
mesh2 = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
lecun = nnx.initializers.lecun_normal()


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(
            4, 32, rngs=rngs,
            kernel_init=nnx.with_partitioning(lecun, (None, "model")),
            bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("model",)),
        )
        self.out = nnx.Linear(
            32, 1, rngs=rngs, kernel_init=nnx.with_partitioning(lecun, ("model", None))
        )

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))[..., 0]


with jax.set_mesh(mesh2):
    net = MLP(nnx.Rngs(0))


def model(x, y):
    mean = probnn.module("mlp", net)(x)
    noise = probnn.param("noise", 0.5, constraint=dist.constraints.positive)
    with probnn.plate("data", x.shape[0]):
        probnn.sample("y", dist.Normal(mean, noise), obs=y)


x = jax.random.normal(jax.random.PRNGKey(0), (64, 4))
y = jnp.sin(x[:, 0])
svi = SVI(model, lambda x, y: None, optax.adam(1e-2), Trace_ELBO())
single = svi.run(jax.random.PRNGKey(1), 30, x, y, progress_bar=False)

state = svi.init(jax.random.PRNGKey(1), x, y)
from_metadata = shard_state(state, param_shardings("mlp", net, mesh2))
from_arrays = shard_state(state, param_shardings("mlp", net))
result["same_placement"] = placement(from_metadata) == placement(from_arrays)
by_batch = NamedSharding(mesh2, PartitionSpec("data"))
x_sharded, y_sharded = jax.device_put((x, y), by_batch)
sharded = svi.run(
    jax.random.PRNGKey(1), 30, x_sharded, y_sharded,
    progress_bar=False, init_state=from_metadata,
)
stepped, _ = jax.jit(svi.update)(from_metadata, x_sharded, y_sharded)
result["param_diff"] = max_abs_diff(single.params, sharded.params)


def specs(tree):
    return [
        [str(part) for part in leaf.sharding.spec] for leaf in jax.tree.leaves(tree)
    ]


step, (params, (adam, _)) = sharded.state.optim_state
# mlp$params: hidden bias and kernel, out bias and kernel; then noise
result["params"] = specs(params)
result["mu"] = specs(adam.mu)
result["nu"] = specs(adam.nu)
result["count"] = specs(adam.count)
result["step"] = specs(step)
result["update_params"] = specs(stepped.optim_state[1][0])
kernel = params["mlp$params"]["hidden"]["kernel"]
result["shard_shapes"] = [list(s.data.shape) for s in kernel.addressable_shards]
"""


def test_nnx_partitioning_metadata_shards_params_and_optimiser_state():
    """An NNX MLP whose hidden layer is split over a "model" mesh axis
    (``nnx.with_partitioning``) on a 2 x 2 mesh, with the batch over "data":
    ``shard_state(state, param_shardings(...))`` places the network's params
    and Adam's moments as the metadata says (other leaves replicated),
    ``SVI.run`` and a jitted ``update`` keep that placement, and 30 steps give
    the single-device params."""
    result = _run_on_cpu_devices(PARAM_SHARDING)
    assert result["same_placement"]
    assert result["param_diff"] < 1e-5
    expected = [["model"], ["None", "model"], [], ["model"], []]
    assert result["params"] == result["mu"] == result["nu"] == expected
    assert result["update_params"] == expected
    assert result["count"] == result["step"] == [[]]
    # the 4 x 32 kernel split in two along its columns, on each of 4 devices
    assert result["shard_shapes"] == [[4, 16]] * DEVICES


EXAMPLES = """
import importlib.util
import sys
import tempfile


def load(name):
    spec = importlib.util.spec_from_file_location(
        f"probnn_example_{name}", f"examples/{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


with tempfile.TemporaryDirectory() as out:
    # the loss per image falls from 55-58 to 30-31 in 20 steps (seeds 0-4)
    result["vae_sharded"] = load("vae_sharded").main(
        ["--steps", "20", "--batch-size", "64", "--out", out]
    )
# 300 steps at the default rate 0.05 leave the coefficients 5.0 to 6.7
# posterior sds off (seeds 0-4); at 0.1 they are 1.8 to 3.0 sds off
result["multihost"] = load("multihost_svi").main(
    ["--steps", "300", "--rows", "4096", "--log-every", "100"]
    + ["--learning-rate", "0.1"]
)
"""


def test_scale_out_examples_run_on_four_devices():
    """examples/vae_sharded.py and examples/multihost_svi.py, run as written
    (fewer steps; for the regression a learning rate that converges in them)
    on four forced CPU devices: the VAE's batch is split over the devices and
    its loss falls; the multi-host recipe, on one host, uses every device and
    recovers the regression coefficients."""
    result = _run_on_cpu_devices(EXAMPLES)
    vae, regression = result["vae_sharded"], result["multihost"]
    assert vae["devices"] == DEVICES
    assert vae["shard_shapes"] == [[64 // DEVICES, 64]] * DEVICES
    assert vae["final_loss"] < vae["first_loss"]
    assert regression["processes"] == 1 and regression["devices"] == DEVICES
    assert regression["final_loss"] < regression["first_loss"]
    assert regression["w_error"] < 5 * regression["w_scale"]


FLAX_VAE = """
import importlib.util
import sys

from probnn.infer import SVI, Trace_ELBO
from probnn.nn import to_linen_variables

# examples/vae_sharded.py: examples/vae.py's networks, with a model and guide
# that observe the batch they are given (vae.py's x[idx], idx = arange(n),
# would be a gather along the sharded dim, which GSPMD answers by giving
# every device the whole batch)
spec = importlib.util.spec_from_file_location(
    "probnn_example_vae_sharded", "examples/vae_sharded.py"
)
example = importlib.util.module_from_spec(spec)
sys.modules["probnn_example_vae_sharded"] = example
spec.loader.exec_module(example)
vae, model, guide = example.vae, example.model, example.guide

x = vae.load_digits(0)[0][:64]
x_sharded = jax.device_put(x, by_rows)
# plain SGD: Adam would turn the rounding noise in the gradient of the bias
# before BatchNorm (zero in exact arithmetic) into steps of the full rate
svi = SVI(model, guide, optax.sgd(3e-4), Trace_ELBO())
update = jax.jit(svi.update)


def train(x, steps=20):
    state = svi.init(jax.random.PRNGKey(0), x)
    states, losses = [state], []
    for _ in range(steps):
        state, loss = update(state, x)
        states.append(state)
        losses.append(float(loss))
    return states, losses


single, single_losses = train(x)
sharded, sharded_losses = train(x_sharded)
result["losses"] = [single_losses[0], single_losses[-1]]
result["loss_diff"] = float(np.max(np.abs(np.subtract(single_losses, sharded_losses))))
result["params_diff"] = max_abs_diff(
    single[-1].optim_state[1][0], sharded[-1].optim_state[1][0]
)
result["stats_diff"] = max_abs_diff(single[-1].mutable_state, sharded[-1].mutable_state)
result["stats_moved"] = max_abs_diff(single[0].mutable_state, single[-1].mutable_state)
result["state_placement"] = placement(sharded[-1])

# the running mean after one step, against Linen's BatchNorm on the whole
# batch and on the first device's rows alone (unsynchronised batch norm)
variables = to_linen_variables(
    "encoder", svi.get_params(sharded[0]), sharded[0].mutable_state
)
after_one = sharded[1].mutable_state["encoder$state"]["batch_stats"]
for name, rows in (("whole_batch", x), ("first_shard", x[: 64 // {devices}])):
    _, stats = vae.ENCODER.apply(variables, rows, train=True, mutable=["batch_stats"])
    result[name] = max_abs_diff(after_one, stats["batch_stats"])

result["flops_single"] = step_flops(update, single[0], x)
result["flops_sharded"] = step_flops(update, sharded[0], x_sharded)
""".replace("{devices}", str(DEVICES))


def test_flax_vae_batchnorm_statistics_are_global():
    """examples/vae.py's Linen encoder (with BatchNorm) and decoder, as
    examples/vae_sharded.py trains them: 20 SGD steps on 64 digits sharded
    over four devices give the single-device params and BatchNorm
    statistics, and the running mean is the whole batch's, not one device's
    shard's."""
    result = _run_on_cpu_devices(FLAX_VAE)
    first, last = result["losses"]
    assert last < 0.7 * first  # it trains
    assert result["loss_diff"] < 1e-3 * first
    assert result["params_diff"] < 1e-4
    assert result["stats_moved"] > 1e-2
    assert result["stats_diff"] < 1e-4
    assert all(leaf == [True, DEVICES, []] for leaf in result["state_placement"])
    # synchronised batch norm: statistics over all 64 rows
    assert result["whole_batch"] < 1e-5
    assert result["first_shard"] > 1e-3
    assert result["flops_sharded"] < 0.5 * result["flops_single"]


# -- MCMC ---------------------------------------------------------------------


MCMC_SETUP = """
from probnn.infer import MCMC, NUTS

y = jnp.array([0.9, 2.1, 1.4, 3.0, 1.9, 2.6])


def location_model(y):
    mu = probnn.sample("mu", dist.Normal(0.0, 2.0))
    with probnn.plate("data", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, 1.0), obs=y)


def location_scale_model(y):
    mu = probnn.sample("mu", dist.Normal(0.0, 2.0))
    sigma = probnn.sample("sigma", dist.HalfNormal(2.0))
    with probnn.plate("data", y.shape[0]):
        probnn.sample("y", dist.Normal(mu, sigma), obs=y)


def draws(model, method, chains, warmup, samples):
    mcmc = MCMC(
        NUTS(model),
        num_warmup=warmup,
        num_samples=samples,
        num_chains=chains,
        chain_method=method,
        progress_bar=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run(jax.random.PRNGKey(3), y)
    messages = [
        str(w.message) for w in caught if issubclass(w.category, UserWarning)
    ]
    samples = mcmc.get_samples(group_by_chain=True)
    shapes = {name: list(value.shape) for name, value in samples.items()}
    return {name: np.asarray(v) for name, v in samples.items()}, shapes, messages


def compare(a, b):
    return {
        "equal": all(np.array_equal(a[k], b[k]) for k in a),
        "max_rel_diff": max(
            float(np.max(np.abs(a[k] - b[k]) / np.maximum(np.abs(a[k]), 1e-6)))
            for k in a
        ),
    }
"""

MCMC_CHAINS = """
# one chain per device: the sequential method's unbatched code on each
sequential, _, _ = draws(location_model, "sequential", 4, 30, 30)
parallel, shapes, messages = draws(location_model, "parallel", 4, 30, 30)
result["one_per_device"] = compare(sequential, parallel)
result["one_per_device_shapes"] = shapes
result["one_per_device_warnings"] = messages

# two chains per device: vectorized there, batches of 2 against one of 8
vectorized, _, _ = draws(location_scale_model, "vectorized", 8, 0, 20)
parallel, shapes, messages = draws(location_scale_model, "parallel", 8, 0, 20)
result["two_per_device"] = compare(vectorized, parallel)
result["two_per_device_shapes"] = shapes
result["two_per_device_warnings"] = messages
"""


def test_parallel_chains_over_devices():
    """Four chains on four devices draw exactly what "sequential" draws,
    warmup included, with no warning; eight chains warn and match
    "vectorized" (batched arithmetic may round differently in the last bit:
    a tolerance on a short run). Draws come grouped as (chains, draws).

    The exact comparison uses a one-site model: with two latent sites and
    step-size or mass-matrix adaptation the two methods currently part in
    the last bits during warmup (then NUTS amplifies it)."""
    result = _run_on_cpu_devices(MCMC_SETUP + MCMC_CHAINS)
    assert result["one_per_device"]["equal"], result["one_per_device"]
    assert result["one_per_device_shapes"] == {"mu": [4, 30]}
    assert result["one_per_device_warnings"] == []
    assert result["two_per_device"]["max_rel_diff"] < 1e-4, result["two_per_device"]
    assert result["two_per_device_shapes"] == {"mu": [8, 20], "sigma": [8, 20]}
    (message,) = result["two_per_device_warnings"]
    assert "8 chains" in message and "4 device" in message
