"""The launchers in launch/: what they print in dry-run mode is what they run, with CONFIG,
WORKDIR and the extra flags passed through; and what parallel.py makes of a SLURM task.

No srun, sbatch, scontrol or gcloud is needed: dry runs only print, and the real runs here meet
stand-ins on PATH that record their arguments.
"""
import os
import shlex
import stat
import subprocess

import pytest

from dnc_jax import parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHERS = ["launch/local.sh", "launch/slurm.sbatch", "launch/tpu_pod.sh"]
EXTRA = ["--config.data.root=/data/with space", "--config.divide.num_learners=4", "it's"]
MAIN = ["-m", "dnc_jax.main"]


def _clean_env(**overrides):
    # PYTHON too: the launchers' choice of interpreter, which `make test-newest` (CI's second
    # leg) sets for its own build and make passes on to the tests' environment.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "DRY_RUN", "PYTHONPATH", "PROJECT", "REMOTE_DIR",
                                "DNC_JAX_REPO", "MAX_REQUEUES")) and k != "PYTHON"}
    env.update(overrides)
    return env


def _launch(script, *args, cwd=REPO, **env):
    return subprocess.run(["bash", os.path.join(REPO, script), *args], cwd=cwd,
                          env=_clean_env(**env), capture_output=True, text=True, timeout=30,
                          check=False)


def _dry_run(script, *args, **env):
    proc = _launch(script, *args, DRY_RUN="1", **env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return shlex.split(lines[0])


def _stand_in(folder, name, status=0):
    """An executable `name` that appends its arguments (one per line) to folder/name.log."""
    path = folder / name
    path.write_text("#!/bin/bash\n"
                    f"{{ echo '---'; printf '%s\\n' \"$@\"; }} >> '{folder / name}.log'\n"
                    f"exit {status}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _calls(folder, name):
    log = folder / f"{name}.log"
    if not log.exists():
        return []
    return [c.splitlines() for c in log.read_text().split("---\n")[1:]]


@pytest.mark.parametrize("script", LAUNCHERS)
def test_launchers_are_valid_bash_and_say_how_to_call_them(script):
    subprocess.run(["bash", "-n", os.path.join(REPO, script)], check=True)
    with open(os.path.join(REPO, script)) as f:
        head = f.read(1500)
    assert os.path.basename(script) in head and "DRY_RUN=1" in head  # usage at the top
    wrong = _launch(script)  # no arguments: the usage, and a failure
    assert wrong.returncode == 2 and "launch/" in wrong.stderr


def test_local_prints_and_runs_one_process_for_every_gpu(tmp_path):
    words = _dry_run("launch/local.sh", "configs/sop.py", "runs/sop", "--", *EXTRA,
                     PYTHON="python3")
    assert words == ["env", f"PYTHONPATH={REPO}", "python3", *MAIN, "--config=configs/sop.py",
                     "--workdir=runs/sop", *EXTRA]
    # --dry-run as a flag; without WORKDIR the run picks its own fresh folder.
    proc = _launch("launch/local.sh", "--dry-run", "configs/demo.py", PYTHON="python3")
    assert shlex.split(proc.stdout)[-1] == "--config=configs/demo.py"
    # The real run executes exactly the printed command.
    python = _stand_in(tmp_path, "python")
    proc = _launch("launch/local.sh", "configs/sop.py", "runs/sop", "--", *EXTRA,
                   PYTHON=str(python))
    assert proc.returncode == 0, proc.stderr
    assert _calls(tmp_path, "python") == [[*MAIN, "--config=configs/sop.py",
                                           "--workdir=runs/sop", *EXTRA]]


def test_slurm_prints_the_srun_line_and_keeps_the_workdir_across_requeues():
    with open(os.path.join(REPO, "launch/slurm.sbatch")) as f:
        directives = [line.split()[1] for line in f if line.startswith("#SBATCH")]
    for wanted in ("--ntasks-per-node=1", "--signal=TERM@120", "--requeue",
                   "--open-mode=append"):
        assert wanted in directives
    assert any(d.startswith("--gpus-per-node=") for d in directives)
    words = _dry_run("launch/slurm.sbatch", "configs/sop.py", "/shared/runs/sop", "--", *EXTRA,
                     PYTHON="python3", SLURM_SUBMIT_DIR=REPO, SLURM_CPUS_PER_TASK="16")
    assert words == ["srun", "--kill-on-bad-exit=1", "--cpus-per-task=16", "env",
                     f"PYTHONPATH={REPO}", "python3", *MAIN, "--config=configs/sop.py",
                     "--workdir=/shared/runs/sop", *EXTRA]
    # No WORKDIR: one named by the job id, which a requeued job keeps, so it resumes.
    words = _dry_run("launch/slurm.sbatch", "configs/sop.py", SLURM_JOB_ID="1234")
    assert "--workdir=runs/sop-slurm-1234" in words
    wrong = _launch("launch/slurm.sbatch", "configs/sop.py", DRY_RUN="1",
                    SLURM_SUBMIT_DIR="/tmp")
    assert wrong.returncode == 2 and "DNC_JAX_REPO" in wrong.stderr


@pytest.mark.parametrize("srun_status, finished, requeued", [
    (0, False, True),   # stopped by the time limit's SIGTERM, saved: requeue to resume
    (0, True, False),   # the run reached its end (summary.json)
    (1, False, False),  # a failure is not retried
])
def test_slurm_requeues_a_stopped_run_only(tmp_path, srun_status, finished, requeued):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in(bin_dir, "srun", srun_status)
    _stand_in(bin_dir, "scontrol")
    workdir = tmp_path / "run"
    workdir.mkdir()
    if finished:
        (workdir / "summary.json").write_text("{}")
    proc = _launch("launch/slurm.sbatch", "configs/sop.py", str(workdir), "--", *EXTRA,
                   PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHON="python3",
                   SLURM_SUBMIT_DIR=REPO, SLURM_JOB_ID="77", SLURM_CPUS_PER_TASK="8")
    assert proc.returncode == srun_status, proc.stderr
    printed = _dry_run("launch/slurm.sbatch", "configs/sop.py", str(workdir), "--", *EXTRA,
                       PYTHON="python3", SLURM_SUBMIT_DIR=REPO, SLURM_CPUS_PER_TASK="8")
    assert _calls(bin_dir, "srun") == [printed[1:]]  # it ran what the dry run prints
    assert _calls(bin_dir, "scontrol") == ([["requeue", "77"]] if requeued else [])


def test_slurm_stops_requeueing_after_max_requeues(tmp_path):
    _stand_in(tmp_path, "srun")
    _stand_in(tmp_path, "scontrol")
    proc = _launch("launch/slurm.sbatch", "configs/sop.py", str(tmp_path / "run"),
                   PATH=f"{tmp_path}:{os.environ['PATH']}", SLURM_SUBMIT_DIR=REPO,
                   SLURM_JOB_ID="77", SLURM_RESTART_COUNT="3", MAX_REQUEUES="3")
    assert proc.returncode == 0 and _calls(tmp_path, "scontrol") == []


def test_tpu_pod_prints_one_gcloud_ssh_to_every_worker(tmp_path):
    words = _dry_run("launch/tpu_pod.sh", "my-v4-32", "us-central2-b", "configs/sop.py",
                     "/mnt/shared/runs/sop", "--", *EXTRA)
    assert words[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v4-32",
                         "--zone=us-central2-b"]
    assert "--worker=all" in words
    command = [w for w in words if w.startswith("--command=")]
    assert len(command) == 1
    # What every worker's shell runs: into the repository, then the one command line.
    assert shlex.split(command[0][len("--command="):]) == [
        "cd", "dnc_jax", "&&", ".venv/bin/python", *MAIN, "--config=configs/sop.py",
        "--workdir=/mnt/shared/runs/sop", *EXTRA]
    words = _dry_run("launch/tpu_pod.sh", "t", "z", "c.py", "w", PROJECT="proj",
                     REMOTE_DIR="/opt/dnc jax")
    assert "--project=proj" in words
    assert shlex.split(words[-1][len("--command="):])[:2] == ["cd", "/opt/dnc jax"]
    # The real run executes exactly the printed command.
    _stand_in(tmp_path, "gcloud")
    proc = _launch("launch/tpu_pod.sh", "t", "z", "c.py", "w", "--", *EXTRA,
                   PATH=f"{tmp_path}:{os.environ['PATH']}")
    assert proc.returncode == 0, proc.stderr
    printed = _dry_run("launch/tpu_pod.sh", "t", "z", "c.py", "w", "--", *EXTRA)
    assert _calls(tmp_path, "gcloud") == [printed[1:]]


# -- what dnc_jax/parallel.py does with the environment a launcher leaves -----------------------
SLURM_STEP = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1",
              "SLURM_LOCALID": "0", "SLURM_STEP_NODELIST": "node[01-04]"}


def _initialize_calls(monkeypatch, env):
    for key in list(os.environ):
        if key.startswith(("SLURM_", "JAX_", "OMPI_", "TPU_", "CUDA_VISIBLE", "ROCR_", "HIP_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    calls = []
    monkeypatch.setattr(parallel.jax.distributed, "initialize",
                        lambda *args, **kwargs: calls.append((args, kwargs)))
    parallel.initialize_distributed()
    return calls


def test_slurm_one_task_per_node_drives_every_gpu_of_its_node(monkeypatch):
    calls = _initialize_calls(monkeypatch, {
        **SLURM_STEP, "SLURM_NTASKS": "4", "SLURM_NNODES": "4", "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_STEP_NUM_NODES": "4", "CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    # Positions among the visible GPUs; JAX alone would keep [SLURM_LOCALID] = [0].
    assert calls == [((), {"local_device_ids": [0, 1, 2, 3]})]
    calls = _initialize_calls(monkeypatch, {
        **SLURM_STEP, "SLURM_NTASKS": "2", "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "8"})
    assert calls == [((), {"local_device_ids": list(range(8))})]


def test_slurm_one_task_per_gpu_and_other_launches_keep_jax_defaults(monkeypatch):
    # Several tasks per node: JAX's own choice, GPU number SLURM_LOCALID for each task.
    calls = _initialize_calls(monkeypatch, {
        **SLURM_STEP, "SLURM_NTASKS": "16", "SLURM_NNODES": "2",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"})
    assert calls == [((), {"local_device_ids": None})]
    # One task in all (sbatch --nodes=1): a single process, nothing to join.
    assert _initialize_calls(monkeypatch, {**SLURM_STEP, "SLURM_NTASKS": "1",
                                           "SLURM_NNODES": "1"}) == []
    # A TPU pod's workers: JAX detects the pod and its chips.
    calls = _initialize_calls(monkeypatch, {"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"})
    assert calls == [((), {"local_device_ids": None})]
    # Launched by hand.
    calls = _initialize_calls(monkeypatch, {"JAX_COORDINATOR_ADDRESS": "h:1234",
                                            "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})
    assert calls == [((), {"coordinator_address": "h:1234", "num_processes": 2,
                           "process_id": 1})]
