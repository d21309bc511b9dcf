"""NMI of the test embeddings: k-means with one cluster per test class, scored against the labels.

docs/method.md §4: the official code runs faiss k-means on the test embeddings with #clusters =
#test classes and scores it with `sklearn.metrics.normalized_mutual_info_score`. [PAMI]'s
`eval_model.py` reports the mean and std over 10 runs (seeds 0-9, 100 iterations, one restart,
`average_method='arithmetic'`); its training loop (In-shop only) uses one run.

Here k-means is `dnc_jax.divide.kmeans.kmeans_jit` (faiss-like random init, Lloyd on device), so
only the (N,) assignment comes back to the host. Our seeds feed JAX's PRNG, not faiss's, so the
per-seed runs differ from the official ones while following the same recipe; `tol=0` makes Lloyd
run until the assignment is stable or `max_iter` updates, as faiss runs its fixed iteration count.

Cost: each Lloyd update holds (N, #classes) distances and one-hot matrices: SOP (60,502 x 11,316)
is ~2.7 GB each in float32, so NMI is opt-in for SOP-sized sets.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from dnc_jax.divide.kmeans import kmeans_jit

# [PAMI] eval_model.py: `avg_nmi` over faiss seeds 0..9.
PAMI_NMI_SEEDS = tuple(range(10))


class NMIResult(NamedTuple):
    mean: float
    std: float                 # population std (numpy's default, as `avg_nmi`); 0 for one seed
    per_seed: tuple[float, ...]


def kmeans_assignment(embeddings, n_clusters: int, seed: int = 0, *, max_iter: int = 100,
                      n_init: int = 1, init: str = "random") -> np.ndarray:
    """(N,) int cluster of every row, from k-means on device with `jax.random.key(seed)`."""
    result = kmeans_jit(embeddings, int(n_clusters), jax.random.key(seed), n_init=n_init,
                        max_iter=max_iter, tol=0.0, init=init)
    return np.asarray(result.assignment)


def normalized_mutual_information(embeddings, labels, *, seeds: Sequence[int] = (0,),
                                  max_iter: int = 100, n_init: int = 1,
                                  init: str = "random") -> NMIResult:
    """NMI (arithmetic mean normalisation) of k-means(#classes) against `labels`, per seed."""
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != embeddings.shape[0]:
        raise ValueError(f"{len(labels)} labels for {embeddings.shape[0]} embeddings")
    if not len(seeds):
        raise ValueError("seeds must not be empty")
    n_classes = len(np.unique(labels))
    scores = tuple(
        float(normalized_mutual_info_score(
            labels, kmeans_assignment(embeddings, n_classes, seed, max_iter=max_iter,
                                      n_init=n_init, init=init),
            average_method="arithmetic"))
        for seed in seeds)
    return NMIResult(float(np.mean(scores)), float(np.std(scores)), scores)
