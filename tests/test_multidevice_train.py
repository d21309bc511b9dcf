"""Data parallelism changes nothing but speed: train steps give the same losses and parameters
on 1 device, on 8 simulated devices, and on 2 processes joined by `jax.distributed`.

The work runs in subprocesses (tests/multiprocess_worker.py) because the device count and the
distributed runtime are fixed when JAX starts. Only the summation order of the gradient
all-reduce differs between the layouts, so results agree to float32 tolerance, not bitwise.
"""
import contextlib
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import multiprocess_worker
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = multiprocess_worker.__file__
# float32 sums in another order, carried through two Adam steps at learning rate 1e-3
# (measured: up to 2.3e-6 in the parameters, 3e-7 relative in the loss).
RTOL = 1e-5
PARAM_ATOL = 2e-5
# A cold compile on 2 busy cores takes tens of seconds; a hang must fail, not block CI.
TIMEOUT_S = 240


def _env(local_devices):
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={local_devices}"}


def _section(result, prefix):
    return {k[len(prefix):]: v for k, v in result.items() if k.startswith(prefix)}


def _assert_same_training(result, reference):
    np.testing.assert_allclose(result["loss"], reference["loss"], rtol=RTOL)
    np.testing.assert_allclose(result["grad_norm"], reference["grad_norm"], rtol=RTOL)
    params, expected = _section(result, "param/"), _section(reference, "param/")
    assert params.keys() == expected.keys()
    for name, value in params.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=PARAM_ATOL, err_msg=name)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The worker's `meshes` run: (its file, {'eight': result, 'one': result})."""
    out = tmp_path_factory.mktemp("meshes") / "meshes.npz"
    proc = subprocess.run([sys.executable, WORKER, "meshes", str(out)], cwd=REPO, env=_env(8),
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = dict(np.load(out))
    return out, {"eight": _section(result, "eight/"), "one": _section(result, "one/")}


def test_eight_devices_train_like_one(single_process):
    _, results = single_process
    one = results["one"]
    _assert_same_training(results["eight"], one)
    global_rows = multiprocess_worker.NUM_STEPS * tiny_config().data.batch_size
    assert int(one["images_read"]) == int(results["eight"]["images_read"]) == global_rows
    # The steps moved the parameters far beyond the tolerance, so agreeing means something.
    moved = max(np.abs(v - one["init_" + k]).max() for k, v in one.items()
                if k.startswith("param/"))
    assert moved > 50 * PARAM_ATOL


def _free_port():
    # Bound, then released for the coordinator to take a moment later (loopback only).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one_device(single_process, tmp_path):
    start_path, results = single_process
    coordinator = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "process0.npz"
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    procs = []
    with contextlib.ExitStack() as stack:
        for process_id, log in enumerate(logs):
            # Two local devices each: the batch is split within and across processes.
            procs.append(subprocess.Popen(
                [sys.executable, WORKER, "process", coordinator, "2", str(process_id),
                 str(start_path), str(out)],
                cwd=REPO, env=_env(2), stdout=stack.enter_context(open(log, "w")),
                stderr=subprocess.STDOUT))
        # Until both end, one fails (the other would wait for it in a collective), or time
        # is up; then end whatever still runs.
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                codes = [proc.poll() for proc in procs]
                if None not in codes or any(code not in (None, 0) for code in codes):
                    break
                time.sleep(0.2)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    outputs = "\n\n".join(log.read_text()[-3000:] for log in logs)
    assert [p.returncode for p in procs] == [0, 0], outputs
    _assert_same_training(dict(np.load(out)), results["one"])
