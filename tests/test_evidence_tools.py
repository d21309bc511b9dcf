"""What the accuracy evidence rests on: class purity, the K=1 warm-up, the joint learning-rate
rule, and bench/accuracy.py end to end on its smallest grid."""
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from dnc_jax.divide import recluster, schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _purity_by_hand(assignment, labels):
    shares = []
    for c in sorted(set(labels)):
        rows = [a for a, l in zip(assignment, labels) if l == c]
        shares.append(max(rows.count(k) for k in set(rows) if k >= 0) / len(rows)
                      if any(k >= 0 for k in rows) else 0.0)
    return sum(shares) / len(shares)


def test_class_purity_hand_cases():
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 2]
    assert recluster.class_purity([0, 0, 0, 0, 1, 1, 2, 2, 2], labels) == 1.0
    # Class 0 split 3/1, class 1 split 1/1, class 2 whole: (3/4 + 1/2 + 1) / 3.
    assignment = [0, 0, 0, 1, 0, 1, 1, 1, 1]
    assert recluster.class_purity(assignment, labels) == pytest.approx((0.75 + 0.5 + 1) / 3)
    # An image set aside (-1) counts against its class.
    assignment = [0, 0, 0, -1, 1, 1, 2, 2, 2]
    assert recluster.class_purity(assignment, labels) == pytest.approx((0.75 + 1 + 1) / 3)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 30, 500)
    assignment = rng.integers(-1, 5, 500)
    assert recluster.class_purity(assignment, labels) == pytest.approx(
        _purity_by_hand(list(assignment), list(labels)))
    # Labels need not be 0..C-1.
    assert recluster.class_purity([1, 1, 0], [7, 7, 100]) == 1.0


def _divide(**kw):
    c = dict(num_learners=4, recluster_every=2, full_embedding_epoch=8, finetune_epoch=10,
             schedule="cvpr", warmup_epochs=0)
    c.update(kw)
    return ml_collections.ConfigDict(c)


def test_warmup_trains_one_learner_then_clusters_and_counts_reclustering_from_there():
    plan = [schedule.phase(_divide(warmup_epochs=3), e) for e in range(12)]
    for p in plan[:3]:
        assert p.num_learners == 1 and p.whole_dataset and p.full_embedding and not p.recluster
    assert [p.recluster for p in plan[3:8]] == [True, False, True, False, True]
    assert [p.num_learners for p in plan[3:10]] == [4] * 7
    assert plan[10].num_learners == 1 and plan[10].whole_dataset
    assert schedule.needs_new_assignment(_divide(warmup_epochs=3), 3)
    # Without a warm-up the plan is the papers' one.
    plain = [schedule.phase(_divide(), e) for e in range(12)]
    assert [p.recluster for p in plain[:8]] == [True, False] * 4
    with pytest.raises(ValueError, match="warmup_epochs"):
        schedule.phase(_divide(schedule="pami", warmup_epochs=1, freeze_epochs=0), 0)


def test_joint_learning_rate_rule_scales_the_network_with_active_learners():
    from dnc_jax.configs import default
    from dnc_jax.training import optim

    c = default.get_config()
    c.divide.learner_schedule = "joint"
    base = {"backbone": 1e-5, "head": 2e-5, "beta": 5e-4}
    phase = schedule.Phase(0, 8, True, False, False, False, False)
    one = schedule.Phase(190, 1, False, False, True, True, False)
    for rule, factor in (("none", 1.0), ("sqrt", np.sqrt(8)), ("linear", 8.0)):
        c.optim.joint_lr_rule = rule
        rates = optim.group_learning_rates(c, phase, base)
        assert rates["backbone"] == pytest.approx(1e-5 * factor)
        assert rates["head"] == pytest.approx(2e-5 * factor)
        assert rates["beta"] == 5e-4  # loss parameters are per class, not shared by learners
        assert optim.group_learning_rates(c, one, base)["backbone"] == pytest.approx(1e-5)
    c.divide.learner_schedule = "round_robin"
    assert optim.group_learning_rates(c, phase, base)["backbone"] == 1e-5
    c.optim.joint_lr_rule = "cubic"
    with pytest.raises(ValueError, match="joint_lr_rule"):
        optim.group_learning_rates(c, phase, base)


def test_accuracy_bench_runs_its_smallest_grid_and_writes_its_table(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, os.path.join(REPO, "bench", "accuracy.py"),
           "--config=tests/helpers.py", "--grid=smoke", "--seeds=0", "--epochs=1", "--jobs=1",
           f"--out={out}", f"--set=data.cache_dir={tmp_path / 'cache'}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = (out / "table-smoke.md").read_text()
    main, diagnostics = table.split("Diagnostics")
    rows = [line for line in main.splitlines() if line.startswith("| K1 ")
            or line.startswith("| cvpr-K2-joint-linear ")]
    assert len(rows) == 2 and "nan" not in table.lower()
    assert "| cvpr-K2-joint-linear | 1 |" in diagnostics  # one clustering in one epoch
    assert os.path.getsize(out / "recall-smoke.png") > 1000
    run = out / "runs" / "cvpr-K2-joint-linear" / "seed0"
    records = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["epoch"] for r in records] == [-1, 0]
    assert 0 < records[1]["class_purity"] <= 1 and records[1]["images"] > 0
    assert "--config.optim.joint_lr_rule=linear" in (run / "command.txt").read_text()
    # Started again, it runs nothing and writes the same table.
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "done before" in again.stdout
    assert (out / "table-smoke.md").read_text().split("| setting")[1] == table.split("| setting")[1]
    # Into a fresh folder, the same seed reproduces every metric (timings aside).
    out2 = tmp_path / "bench2"
    fresh = subprocess.run([c if not c.startswith("--out=") else f"--out={out2}" for c in cmd],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stdout[-2000:] + fresh.stderr[-2000:]
    for name in ("K1", "cvpr-K2-joint-linear"):
        def metrics(root):
            path = root / "runs" / name / "seed0" / "metrics.jsonl"
            return [{k: v for k, v in json.loads(line).items()
                     if "seconds" not in k and k != "images_per_second"} for line in open(path)]
        assert metrics(out) == metrics(out2)


def test_positive_pairs_kept_by_hand():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "cluster_purity", os.path.join(REPO, "bench", "cluster_purity.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Class 0: 4 images split 3/1 -> 6 of 12 ordered pairs kept; class 1: 2 images together -> 2
    # of 2; class 2: 2 images apart -> 0 of 2. (6 + 2 + 0) / (12 + 2 + 2).
    labels = [0, 0, 0, 0, 1, 1, 2, 2]
    assignment = [0, 0, 0, 1, 1, 1, 0, 1]
    assert module.positive_pairs_kept(assignment, labels) == pytest.approx(8 / 16)
    assert module.positive_pairs_kept([0] * 8, labels) == 1.0


@pytest.mark.parametrize("key, value", [("optim.joint_lr_rule", "cubic"),
                                        ("divide.warmup_epochs", -1),
                                        ("data.glyphs.classes", "runes"),
                                        ("data.glyphs.labels", "strokes")])
def test_bad_new_keys_stop_before_anything_is_written(tmp_path, key, value):
    from dnc_jax.training import train
    from dnc_jax.errors import ConfigError
    from tests.helpers import tiny_config

    config = tiny_config()
    config.data.cache_dir = str(tmp_path / "cache")
    section, name = key.rsplit(".", 1)
    node = config
    for part in section.split("."):
        node = node[part]
    node[name] = value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
