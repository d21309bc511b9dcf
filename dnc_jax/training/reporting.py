"""What a run tells its user: the per-epoch record, the console lines and the final summary.

Pure functions of the records (`metrics.jsonl` rows): the loop decides when, this module what.
The final summary reports the last epoch (the number to publish) and, labelled as model
selection on the test set, the best one, as both official repositories report it.
"""
from __future__ import annotations

import json
import os

import numpy as np

from dnc_jax import logs
from dnc_jax.training import phase_clock
from dnc_jax.evaluation.evaluator import HEADLINE, metrics_of


def summarise_epoch(history, num_learners, batch_size, seconds) -> dict:
    """The epoch's record from its per-step metrics: mean loss, per-learner loss, steps, images
    trained on, throughput, and the mean orthogonality penalty where masks are learned."""
    losses = np.array([h["loss"] for h in history])
    # Mean over the steps in which each learner had terms (round_robin: its own turns).
    learner_losses = np.array([h["loss_per_learner"] for h in history])
    active = np.array([np.asarray(h["active_terms"]) > 0 for h in history])
    per_learner = (learner_losses * active).sum(0) / np.maximum(active.sum(0), 1)
    summary = {"loss": float(losses.mean()),
               "loss_per_learner": per_learner[:num_learners].tolist(),
               "steps": len(history),
               # Valid (non-padding) slots trained on; absent from steps saved before it existed.
               "images": int(sum(h.get("images", 0) for h in history)),
               "images_per_second": len(history) * batch_size / max(seconds, 1e-9)}
    if "orthogonality" in history[0]:
        summary["orthogonality"] = float(np.mean([h["orthogonality"] for h in history]))
    return summary


def chance_recall_at_1(labels) -> float:
    """Expected leave-one-out R@1 of a random ranking: mean over queries of (n_c - 1)/(N - 1)."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return float(np.mean((counts[inverse] - 1) / (len(labels) - 1)))


def data_line(datasets, record):
    """The data set in one line: the training images and classes, each held-out split, and
    the chance R@1 of the untrained record."""
    train = datasets["train"]
    held_out = ", ".join(f"{name} {len(s)} images of {len(np.unique(s.labels))} classes"
                         for name, s in datasets.items() if name != "train")
    line = (f"{len(train)} training images of {len(np.unique(train.labels))} classes; "
            f"held-out: {held_out}")
    if "chance_recall@1" in record:
        line += f"; chance R@1 {100 * record['chance_recall@1']:.2f}"
    return line


def cluster_line(record) -> str:
    """The reclustering in one line: images and classes per cluster, singletons, purity."""
    purity = (f", class purity {100 * record['class_purity']:.1f}%"
              if "class_purity" in record else "")
    return (f"{'':>10}  clusters: {record['cluster_sizes']} images, "
            f"{record['cluster_classes']} classes, {record['removed_images']} singletons set "
            f"aside{purity} ({record['recluster_seconds']:.1f} s)")


def epoch_line(record, label):
    """One console line per evaluated record: K, the loss, R@k, throughput."""
    parts = [f"{label:>10}"]
    if "num_learners" in record:
        parts.append(f"K={record['num_learners']}")
    if "loss" in record:
        parts.append(f"loss {record['loss']:.4f}")
    parts += [f"{k.replace('recall', 'R')} {100 * v:.2f}" for k, v in record.items()
              if k.startswith("recall@")]
    if "images_per_second" in record:
        parts.append(f"{record['images_per_second']:.0f} img/s")
    return "  ".join(parts)


def final_summary(records, workdir, tail=None):
    """The last epoch's metrics (the number to report) and, labelled as model selection on the
    test set, the best epoch's, and where the run's time went (each phase's seconds over every
    record, plus `tail`: the phase seconds after the last record, its final saves); also
    written to WORKDIR/summary.json."""
    start = next((r for r in records if r.get("epoch") == -1), None)
    evaluated = [r for r in records if HEADLINE in r and r.get("epoch", -1) >= 0]
    if start is None or not evaluated:
        return
    last = evaluated[-1]
    best = max(evaluated, key=lambda r: r[HEADLINE])
    seconds = phase_clock.totals(list(records) + ([tail] if tail else []))
    summary = {"last_epoch": {"epoch": last["epoch"], **metrics_of(last)},
               "best_epoch_selected_on_test": {"epoch": best["epoch"], **metrics_of(best)},
               "untrained": metrics_of(start),
               "seconds": {k: round(v, 2) for k, v in seconds.items()}}
    if logs.is_main_process():
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    chance = (f", chance {100 * start['chance_recall@1']:.2f}"
              if "chance_recall@1" in start else "")
    logs.say(f"final (epoch {last['epoch']}): R@1 {100 * last['recall@1']:.2f} on unseen classes; "
             f"untrained {100 * start['recall@1']:.2f}{chance}. Metrics: "
             f"{os.path.join(workdir, 'metrics.jsonl')}")
    logs.say(f"best epoch {best['epoch']}: R@1 {100 * best['recall@1']:.2f} (selected on the "
             f"test set: not a fair number to report)")
    lines = phase_clock.table(seconds)
    if lines:
        logs.say("where the time went (every epoch of the run, untrained evaluation included):\n"
                 + "\n".join("  " + line for line in lines))
