"""Real runs of the demo config on a few glyph classes: train, evaluate, write, resume."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dnc_jax.training import train
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def _config(cache_dir, epochs):
    config = tiny_config()
    config.data.cache_dir = cache_dir
    config.num_epochs = epochs
    return config


def test_train_and_evaluate_writes_metrics_and_resumes_exactly(tmp_path, cache_dir):
    # Uninterrupted: 3 epochs. Interrupted: 2 epochs, then the same workdir asked for 3.
    full = train.train_and_evaluate(_config(cache_dir, 3), str(tmp_path / "full"))
    train.train_and_evaluate(_config(cache_dir, 2), str(tmp_path / "split"))
    first = _records(tmp_path / "split")
    resumed = train.train_and_evaluate(_config(cache_dir, 3), str(tmp_path / "split"))

    records = _records(tmp_path / "full")
    assert [r["epoch"] for r in records] == [-1, 0, 1, 2]
    untrained, epochs = records[0], records[1:]
    assert 0 < untrained["chance_recall@1"] < untrained["recall@1"] <= 1
    for r in epochs:
        assert r["num_learners"] == 2 and np.isfinite(r["loss"]) and r["steps"] > 0
        assert len(r["cluster_sizes"]) == 2 and min(r["cluster_sizes"]) > 0
        assert 0 <= r["recall@1"] <= r["recall@2"] <= r["recall@4"] <= r["recall@8"] <= 1
    saved = [d for d in os.listdir(tmp_path / "full" / "checkpoints") if d.isdigit()]
    assert saved, "no checkpoint written"
    best = tmp_path / "full" / "checkpoint_best_selected_on_test"
    best_epoch = max(records[1:], key=lambda r: r["recall@1"])["epoch"]
    best_meta = json.load(open(best / os.listdir(best)[0] / "meta" / "metadata"))
    assert best_meta["epoch"] == best_epoch and best_meta["selected_on_test"] == "recall@1"
    for name in ("recall.png", "loss.png", "clusters.png"):
        assert os.path.getsize(tmp_path / "full" / name) > 1000
    assert os.listdir(tmp_path / "full" / "tensorboard")

    # Re-evaluating the saved run gives the last epoch's numbers, with the full protocol.
    from dnc_jax.inference import evaluate

    result, meta = evaluate.evaluate_run(str(tmp_path / "full"))
    assert meta["epoch"] == 2 and meta["complete"]
    assert result.metrics["recall@1"] == pytest.approx(records[-1]["recall@1"], abs=1e-9)
    assert "map@r" in result.metrics and "leave-one-out" in result.protocol.lower()
    summary = json.load(open(tmp_path / "full" / "summary.json"))
    assert summary["last_epoch"]["epoch"] == 2
    assert "best_epoch_selected_on_test" in summary

    # Where the time went: every record times its phases, within its own wall time.
    for r in records:
        phases = [v for k, v in r.items() if k.startswith("seconds/")
                  and k not in ("seconds/wall", "seconds/compile")]
        assert 0 < sum(phases) <= r["seconds/wall"] + 1e-3
        assert r["seconds/eval_embed"] > 0 and r["seconds/eval_retrieval"] > 0
    assert records[0]["seconds/compile"] > 0  # the embedding pass's first trace and compile
    assert all(r["seconds/train"] > 0 for r in epochs)
    reclustered = [r for r in epochs if "recluster_seconds" in r]
    assert reclustered and all(r["seconds/recluster_embed"] > 0
                               and r["seconds/recluster_kmeans"] > 0 for r in reclustered)
    assert all(r["seconds/checkpoint"] > 0 for r in epochs[1:])  # the previous epoch's save
    assert summary["seconds"]["train"] == pytest.approx(
        sum(r["seconds/train"] for r in epochs), abs=0.05)

    # The resumed run continues from epoch 2 with the same result as the uninterrupted one.
    assert [r["epoch"] for r in first] == [-1, 0, 1]
    assert [r["epoch"] for r in _records(tmp_path / "split")] == [-1, 0, 1, 2]
    # Bitwise: a resumed run computes what the uninterrupted one did (tests/test_run_safety.py).
    assert resumed["loss"] == full["loss"] and resumed["recall@1"] == full["recall@1"]


def test_one_learner_is_the_plain_baseline(tmp_path, cache_dir):
    config = _config(cache_dir, 1)
    config.divide.num_learners = 1
    record = train.train_and_evaluate(config, str(tmp_path))
    assert record["num_learners"] == 1 and len(record["cluster_sizes"]) == 1
    assert "kmeans_inertia" not in record  # no clustering at K=1


@pytest.mark.parametrize("root, expected", [
    ("", "set --config.data.root="),
    ("/nonexistent/sop", "/nonexistent/sop/Ebay_train.txt does not exist; set --config.data.root"),
])
def test_sop_without_data_fails_with_one_clear_line(tmp_path, root, expected):
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "dnc_jax.main", "--config=configs/sop.py",
         f"--workdir={workdir}", f"--config.data.root={root}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dnc_jax: Stanford Online Products") and expected in last
    assert not workdir.exists()  # nothing written for a run that could not start


def test_a_joint_batch_too_small_for_its_learners_fails_before_data_loads(tmp_path):
    """PAMI's K=32 with its round-robin batch of 80 under 'joint': one class per learner."""
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "dnc_jax.main", "--config=configs/pami/sop_learned.py",
         f"--workdir={workdir}", "--config.divide.learner_schedule=joint"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dnc_jax: data.batch_size=80 gives each of the 32 learners")
    assert not workdir.exists()


def test_round_robin_schedule_trains_one_learner_per_step(tmp_path, cache_dir):
    config = _config(cache_dir, 1)
    config.divide.learner_schedule = "round_robin"
    record = train.train_and_evaluate(config, str(tmp_path))
    joint = train.train_and_evaluate(_config(cache_dir, 1), str(tmp_path / "joint"))
    # One optimiser step per learner batch: about K times the joint schedule's steps.
    assert record["steps"] > joint["steps"]
    assert np.isfinite(record["loss"]) and all(x > 0 for x in record["loss_per_learner"])


def test_official_epoch_length_runs_the_official_number_of_steps(tmp_path, cache_dir):
    config = _config(cache_dir, 1)
    config.data.epoch_length = "official"
    record = train.train_and_evaluate(config, str(tmp_path))
    slots = config.data.batch_size // config.divide.num_learners
    assert record["steps"] == max(max(1, n // slots) for n in record["cluster_sizes"])
    assert np.isfinite(record["loss"])


def test_pami_schedule_splits_clusters_and_grows_learned_masks(tmp_path, cache_dir):
    config = _config(cache_dir, 2)
    config.divide.schedule = "pami"
    config.divide.recluster_every = 1     # K = 1 at epoch 0, split into 2 at epoch 1
    config.divide.freeze_epochs = 1
    config.divide.masks = "learned"
    config.divide.split_trials = 3
    train.train_and_evaluate(config, str(tmp_path))
    records = _records(tmp_path)
    assert [r.get("num_learners") for r in records[1:]] == [1, 2]
    assert records[2]["split_rejected"] in (0, 1) and len(records[2]["cluster_sizes"]) == 2
    assert records[1]["backbone_frozen"] and 0 <= records[2]["orthogonality"] <= 1
