"""Runs that survive: kill -9 and SIGTERM in the middle of an epoch, the workdir lock, a config
mismatch on resume, a NaN loss, a truncated checkpoint, and an unwritable workdir."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dnc_jax import errors
from dnc_jax.training import run_guard, train
from dnc_jax.training import trainer as trainer_lib
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def _config(cache_dir, epochs=2):
    config = tiny_config()
    config.data.cache_dir = cache_dir
    config.num_epochs = epochs
    config.checkpoint.every_steps = 2   # mid-epoch checkpoints
    config.checkpoint.keep = 3
    return config


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """An uninterrupted run: the result every interrupted run must reach."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    train.train_and_evaluate(_config(cache_dir), workdir)
    return _records(workdir)


def _spawn(workdir, cache_dir, *extra):
    config = _config(cache_dir)
    args = [sys.executable, "-m", "dnc_jax.main", "--config=tests/helpers.py",
            f"--workdir={workdir}", f"--config.data.cache_dir={cache_dir}",
            f"--config.num_epochs={config.num_epochs}",
            f"--config.checkpoint.every_steps={config.checkpoint.every_steps}",
            f"--config.checkpoint.keep={config.checkpoint.keep}", *extra]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def _wait_for_mid_epoch_checkpoint(workdir, proc, epoch=1, timeout=300):
    """Returns once a checkpoint taken inside `epoch` exists."""
    deadline = time.time() + timeout
    ckpts = os.path.join(workdir, "checkpoints")
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        for step in sorted(os.listdir(ckpts)) if os.path.isdir(ckpts) else []:
            meta = os.path.join(ckpts, step, "meta", "metadata")
            if step.isdigit() and os.path.exists(meta):
                with open(meta) as f:
                    m = json.load(f)
                if m["epoch"] == epoch and not m["complete"]:
                    return
        time.sleep(0.2)
    raise AssertionError("no mid-epoch checkpoint appeared")


def _same_result(records, reference):
    assert [r["epoch"] for r in records] == [r["epoch"] for r in reference]
    for got, want in zip(records, reference):
        for key in ("loss", "recall@1", "recall@8"):
            if key in want:
                # Bitwise: XLA on the CPU is deterministic and the run is a function of
                # (seed, epoch, step), so a resumed run computes exactly the same numbers.
                assert got[key] == want[key], (got["epoch"], key)


def test_sigkill_mid_epoch_then_resume_reaches_the_same_result(tmp_path, cache_dir, reference):
    workdir = str(tmp_path / "run")
    proc = _spawn(workdir, cache_dir)
    _wait_for_mid_epoch_checkpoint(workdir, proc)
    proc.kill()
    proc.wait()
    train.train_and_evaluate(_config(cache_dir), workdir)
    _same_result(_records(workdir), reference)


def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path, cache_dir, reference):
    workdir = str(tmp_path / "run")
    proc = _spawn(workdir, cache_dir)
    _wait_for_mid_epoch_checkpoint(workdir, proc, epoch=0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped by SIGTERM" in out and "Run the same command to resume" in out
    train.train_and_evaluate(_config(cache_dir), workdir)
    _same_result(_records(workdir), reference)


def test_a_locked_workdir_is_refused(tmp_path, cache_dir):
    workdir = str(tmp_path)
    with run_guard.WorkdirLock(workdir):
        with pytest.raises(errors.RunError, match="is in use by a running training"):
            # flock is per open file: a second lock in this process conflicts like another one.
            train.train_and_evaluate(_config(cache_dir, 1), workdir)


def test_resuming_with_a_different_config_lists_the_keys(tmp_path, cache_dir):
    workdir = str(tmp_path)
    os.makedirs(workdir, exist_ok=True)
    config = _config(cache_dir, 1)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort())
    changed = _config(cache_dir, 5)         # more epochs: allowed
    changed.loss.margin = 0.3
    changed.divide.num_learners = 4
    with pytest.raises(errors.RunError) as err:
        train.train_and_evaluate(changed, workdir)
    message = str(err.value)
    assert "loss.margin: 0.2 -> 0.3" in message and "divide.num_learners: 2 -> 4" in message
    assert "num_epochs" not in message and "--allow_config_change" in message


def test_keys_added_later_count_as_their_old_behaviour():
    """A run saved before data.epoch_length existed trained 'exact' epochs: resuming it with
    'exact' is no change, with 'official' it is."""
    saved = {"data": {"batch_size": 80}, "loss": {"name": "margin"}}
    current = {"data": {"batch_size": 80, "epoch_length": "exact"},
               "loss": {"name": "margin", "distance_weighted_dim": "view"}}
    assert run_guard.changed_keys(saved, current) == []
    current["data"]["epoch_length"] = "official"
    assert run_guard.changed_keys(saved, current) == [
        "data.epoch_length: 'exact' -> 'official'"]


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, cache_dir, monkeypatch):
    workdir = str(tmp_path)
    config = _config(cache_dir, 1)
    train.train_and_evaluate(config, workdir)              # one good epoch
    kept = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    real_step = trainer_lib.steps.make_train_step

    def poisoned(*args, **kwargs):
        step = real_step(*args, **kwargs)

        def nan_step(state, batch, phase, rng):
            state, metrics = step(state, batch, phase, rng)
            per = metrics["loss_per_learner"].at[1].set(np.nan)
            return state, {**metrics, "loss": per.sum(), "loss_per_learner": per}

        return nan_step

    monkeypatch.setattr(trainer_lib.steps, "make_train_step", poisoned)
    with pytest.raises(errors.NonFiniteLoss, match=r"epoch 1, step 0 of the epoch, learner\(s\) 1"):
        train.train_and_evaluate(_config(cache_dir, 2), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == kept


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, cache_dir, capsys):
    workdir = str(tmp_path)
    train.train_and_evaluate(_config(cache_dir, 1), workdir)
    ckpts = os.path.join(workdir, "checkpoints")
    steps = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
    assert len(steps) >= 2
    newest = os.path.join(ckpts, str(steps[-1]))
    for root, _, files in os.walk(os.path.join(newest, "arrays")):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))
    record = train.train_and_evaluate(_config(cache_dir, 1), workdir)
    assert "cannot be read; using the one before it" in capsys.readouterr().out
    assert record["epoch"] == 0 and np.isfinite(record["loss"])


def test_an_unwritable_workdir_fails_before_training(tmp_path, cache_dir):
    if os.geteuid() == 0:
        # root ignores permission bits: simulate a full or read-only disk with a file where
        # the workdir's parent folder should be.
        blocker = tmp_path / "not_a_folder"
        blocker.write_text("")
        workdir = str(blocker / "run")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        workdir = str(locked / "run")
    with pytest.raises(errors.RunError, match="cannot write to --workdir"):
        train.train_and_evaluate(_config(cache_dir, 1), workdir)
    assert not os.path.exists(workdir)  # refused before anything was written
    shutil.rmtree(tmp_path, ignore_errors=True)
