"""Plots of a run, drawn from its metrics.jsonl into the workdir (PNG, matplotlib Agg).

- recall.png: Recall@K (and NMI when logged) on the test classes per epoch;
- loss.png: the loss of each learner per epoch;
- clusters.png: cluster sizes per learner at every reclustering.
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(records: list[dict], workdir: str) -> list[str]:
    """Writes the plots; returns their paths. Records are metrics.jsonl's lines."""
    written = []
    trained = [r for r in records if r.get("epoch", -1) >= 0]
    recall_keys = sorted({k for r in records for k in r if k.startswith("recall@")},
                         key=lambda k: int(k.split("@")[1]))
    if recall_keys:
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in recall_keys:
            points = [(r["epoch"], 100 * r[key]) for r in records if key in r]
            ax.plot(*zip(*points), marker=".", label=key.replace("recall", "R"))
        nmi = [(r["epoch"], 100 * r["nmi"]) for r in records if "nmi" in r]
        if nmi:
            ax.plot(*zip(*nmi), "k--", label="NMI")
        ax.set(xlabel="epoch (-1: untrained)", ylabel="% on the test classes",
               title="Retrieval on unseen classes")
        _phase_lines(ax, trained)
        ax.legend(fontsize="small")
        written.append(_save(fig, workdir, "recall.png"))
    losses = [r for r in trained if "loss_per_learner" in r]
    if losses:
        fig, ax = plt.subplots(figsize=(7, 4))
        _per_learner_lines(ax, losses, "loss_per_learner", ".")
        ax.set(xlabel="epoch", ylabel="loss", title="Loss per learner")
        _phase_lines(ax, trained)
        written.append(_save(fig, workdir, "loss.png"))
    clustered = [r for r in trained if "cluster_sizes" in r]
    if clustered:
        fig, ax = plt.subplots(figsize=(7, 4))
        _per_learner_lines(ax, clustered, "cluster_sizes", "o")
        ax.set(xlabel="epoch of the reclustering", ylabel="images in the cluster",
               title="Cluster size per learner")
        written.append(_save(fig, workdir, "clusters.png"))
    return written


def _per_learner_lines(ax, records, key, marker):
    """One line per learner of the per-learner list `key`; a legend while it stays readable."""
    k_max = max(len(r[key]) for r in records)
    for k in range(k_max):
        points = [(r["epoch"], r[key][k]) for r in records if k < len(r[key])]
        ax.plot(*zip(*points), marker=marker, label=f"learner {k}")
    if k_max <= 12:
        ax.legend(fontsize="small")


def _phase_lines(ax, records):
    previous = None
    for r in records:
        phase = (r.get("num_learners"), r.get("full_embedding"))
        if previous is not None and phase != previous:
            ax.axvline(r["epoch"] - 0.5, color="grey", lw=0.8, ls=":")
        previous = phase


def _save(fig, workdir, name):
    path = os.path.join(workdir, name)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)
    return path
