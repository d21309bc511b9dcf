"""Whole runs of two processes, as SLURM starts them, without SLURM: checkpoints of every kind,
SIGTERM to both processes, SIGKILL of one.

Each process is `python -m dnc_jax.main` (through tests/barrier_recorder.py, which writes down
the name of every barrier the process enters) with the variables a SLURM step sets
(SLURM_JOB_ID, SLURM_NTASKS, SLURM_PROCID, ...) written by hand, so `jax.distributed` detects
the cluster exactly as under `srun` and the two processes join over Gloo on this machine. The run saves at
epoch ends, inside epochs (`checkpoint.every_steps`) and its best-on-test copy (on by default),
so the saves of two checkpoint folders at one step, the collision a real SLURM run hit, happen
in every test. Whether two saves' barriers overlap in time depends on timing; that a process
enters no barrier name twice does not, and every run is held to it. A run interrupted either way and started again ends with the metrics of the
uninterrupted one, bitwise (one machine, the same XLA programs).
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDER = os.path.join(REPO, "tests", "barrier_recorder.py")
# A cold compile on 2 busy cores takes tens of seconds; a hang must fail, not block CI.
RUN_TIMEOUT_S = 400
# After one process is killed the other must end too: JAX's heartbeat (100 s by default) or a
# failed collective ends it; beyond this it counts as a hang.
PEER_EXIT_TIMEOUT_S = 200
EPOCHS = 3


def _free_port_job_id() -> int:
    """A SLURM job id whose coordinator port (JAX: 61440 + id % 4096) is free now."""
    for _ in range(50):
        job_id = int.from_bytes(os.urandom(2), "little") % 4096
        with socket.socket() as s:
            try:
                s.bind(("localhost", 61440 + job_id))
                return job_id
            except OSError:
                continue
    raise RuntimeError("no free port for the coordinator")


def _flags(workdir, cache_dir):
    return ["--config=tests/helpers.py", f"--workdir={workdir}",
            f"--config.data.cache_dir={cache_dir}", f"--config.num_epochs={EPOCHS}",
            # mid-epoch saves; the best-on-test copy is on by default (asserted below)
            "--config.checkpoint.every_steps=2", "--config.checkpoint.keep=3"]


def _start(workdir, cache_dir, log_dir, attempt):
    """Two processes of one run, as `srun --ntasks=2` on one node would start them."""
    job_id = _free_port_job_id()
    procs = []
    for rank in range(2):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
               "SLURM_JOB_ID": str(job_id), "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2",
               "SLURM_STEP_NUM_TASKS": "2", "SLURM_NNODES": "1", "SLURM_STEP_NUM_NODES": "1",
               "SLURM_STEP_NODELIST": "localhost", "SLURM_PROCID": str(rank),
               "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0",
               "BARRIER_LOG": os.path.join(log_dir, f"{attempt}-rank{rank}.barriers")}
        env.pop("XLA_FLAGS", None)
        log = open(os.path.join(log_dir, f"{attempt}-rank{rank}.log"), "w")
        procs.append(subprocess.Popen(
            [sys.executable, RECORDER, *_flags(workdir, cache_dir)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
        log.close()
    return procs


def _wait(procs, log_dir, attempt, timeout=RUN_TIMEOUT_S):
    """Exit codes of both processes; both are killed and the test fails on a hang."""
    deadline = time.time() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.time())) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"attempt {attempt} hung past {timeout} s:\n" + _logs(log_dir, attempt))


def _logs(log_dir, attempt):
    text = []
    for rank in range(2):
        with open(os.path.join(log_dir, f"{attempt}-rank{rank}.log")) as f:
            text.append(f"--- rank {rank} ---\n" + f.read()[-4000:])
    return "\n".join(text)


def _assert_no_barrier_entered_twice(log_dir, attempt):
    """orbax's barriers named after a step (`..._async_write_complete.12`) are entered by the
    background threads that finish the saves, which can run at once; those named without one
    (`CheckpointManager:save_start`) are entered on the main thread one after another and
    recur by design."""
    for rank in range(2):
        path = os.path.join(log_dir, f"{attempt}-rank{rank}.barriers")
        with open(path) as f:
            names = [n for n in f.read().split() if re.search(r"\.\d+$", n)]
        assert any("async_write_complete" in n for n in names), "no save was recorded"
        twice = sorted({n for n in names if names.count(n) > 1})
        assert not twice, f"rank {rank} entered these barriers more than once: {twice}"


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _steps(folder):
    return sorted(int(s) for s in os.listdir(folder) if s.isdigit()) if os.path.isdir(
        folder) else []


def _wait_for_checkpoint_in_epoch(workdir, procs, epoch, timeout=RUN_TIMEOUT_S):
    """Returns once a complete checkpoint taken inside `epoch` exists."""
    deadline = time.time() + timeout
    folder = os.path.join(workdir, "checkpoints")
    while time.time() < deadline:
        assert all(p.poll() is None for p in procs), "a process ended early"
        for step in _steps(folder):
            meta = os.path.join(folder, str(step), "meta", "metadata")
            if os.path.exists(meta):
                with open(meta) as f:
                    m = json.load(f)
                if m["epoch"] == epoch and not m["complete"]:
                    return
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint inside epoch {epoch} appeared")


def _assert_same_result(records, reference):
    assert [r["epoch"] for r in records] == [r["epoch"] for r in reference]
    for got, want in zip(records, reference):
        for key in ("loss", "recall@1", "recall@8", "map@r"):
            if key in want:
                assert got[key] == want[key], (got["epoch"], key, got[key], want[key])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """The uninterrupted two-process run: every checkpoint kind saved, both exit 0."""
    root = tmp_path_factory.mktemp("reference")
    workdir = str(root / "run")
    codes = _wait(_start(workdir, cache_dir, str(root), "a"), str(root), "a")
    assert codes == [0, 0], _logs(str(root), "a")
    _assert_no_barrier_entered_twice(str(root), "a")
    return workdir, _records(workdir)


def test_two_processes_save_epoch_mid_epoch_and_best_checkpoints(reference):
    workdir, records = reference
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["checkpoint"]["keep_best_on_test"] is True
    assert [r["epoch"] for r in records] == list(range(-1, EPOCHS))
    assert os.path.exists(os.path.join(workdir, "summary.json"))
    latest = _steps(os.path.join(workdir, "checkpoints"))
    best = _steps(os.path.join(workdir, "checkpoint_best_selected_on_test"))
    assert latest and best
    # The last epoch's end and a best copy were written, whole (no orbax temporary folders).
    with open(os.path.join(workdir, "checkpoints", str(max(latest)), "meta", "metadata")) as f:
        assert json.load(f) == {"epoch": EPOCHS - 1, "complete": True}
    for folder in ("checkpoints", "checkpoint_best_selected_on_test"):
        leftovers = [n for n in os.listdir(os.path.join(workdir, folder)) if not n.isdigit()]
        assert not [n for n in leftovers if "tmp" in n], leftovers


def test_sigterm_to_both_processes_saves_exits_0_and_resumes_to_the_same_result(
        reference, cache_dir, tmp_path):
    workdir = str(tmp_path / "run")
    procs = _start(workdir, cache_dir, str(tmp_path), "a")
    _wait_for_checkpoint_in_epoch(workdir, procs, epoch=1)
    for p in procs:  # SLURM's --signal=TERM@N reaches every task of the step
        p.send_signal(signal.SIGTERM)
    codes = _wait(procs, str(tmp_path), "a")
    log = _logs(str(tmp_path), "a")
    assert codes == [0, 0], log
    assert "stopped by SIGTERM" in log and "saved" in log
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    _assert_no_barrier_entered_twice(str(tmp_path), "a")

    codes = _wait(_start(workdir, cache_dir, str(tmp_path), "b"), str(tmp_path), "b")
    assert codes == [0, 0], _logs(str(tmp_path), "b")
    assert "resumed" in _logs(str(tmp_path), "b")
    _assert_no_barrier_entered_twice(str(tmp_path), "b")
    _assert_same_result(_records(workdir), reference[1])


def test_sigkill_of_one_process_ends_the_other_and_a_rerun_resumes(
        reference, cache_dir, tmp_path):
    workdir = str(tmp_path / "run")
    procs = _start(workdir, cache_dir, str(tmp_path), "a")
    _wait_for_checkpoint_in_epoch(workdir, procs, epoch=1)
    procs[1].kill()
    start = time.time()
    codes = _wait(procs, str(tmp_path), "a", timeout=PEER_EXIT_TIMEOUT_S)
    assert codes[1] == -signal.SIGKILL
    assert codes[0] != 0, "the surviving process claimed success"
    print(f"the surviving process ended {time.time() - start:.0f} s after its peer's SIGKILL")

    codes = _wait(_start(workdir, cache_dir, str(tmp_path), "b"), str(tmp_path), "b")
    assert codes == [0, 0], _logs(str(tmp_path), "b")
    assert "resumed" in _logs(str(tmp_path), "b")
    _assert_no_barrier_entered_twice(str(tmp_path), "b")
    _assert_same_result(_records(workdir), reference[1])
