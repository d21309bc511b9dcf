"""Turning features into a cluster assignment: flat k-means with the official acceptance rule,
and the PAMI hierarchical split of every cluster in two.

The k-means itself runs on the device (`kmeans.py`); what comes back to the host is one int per
image, to check the acceptance rule and to build the sampler.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.divide import kmeans as kmeans_lib


def acceptable(assignment, labels, k: int) -> bool:
    """Every cluster holds at least 2 classes that have at least 2 images in it (PAMI rule)."""
    assignment, labels = np.asarray(assignment), np.asarray(labels)
    used = assignment >= 0
    pairs = np.stack([assignment[used], labels[used]], 1)
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    good = uniq[counts >= 2, 0]
    classes_per_cluster = np.bincount(good, minlength=k)
    return bool((classes_per_cluster >= 2).all())


def class_purity(assignment, labels) -> float:
    """Mean over classes of the share of the class's images that its majority cluster holds.

    1.0 when every cluster keeps whole classes (the premise of dividing: a learner sees all of
    a class); 1/K when every class is spread evenly over the K clusters. Images set aside (-1)
    count against their class, so pass the k-means output, before singleton removal.
    """
    assignment, labels = np.asarray(assignment), np.asarray(labels)
    _, label_index = np.unique(labels, return_inverse=True)
    k = int(assignment.max(initial=0)) + 1
    counts = np.zeros((label_index.max(initial=-1) + 1, k), np.int64)
    used = assignment >= 0
    np.add.at(counts, (label_index[used], assignment[used]), 1)
    totals = np.bincount(label_index, minlength=len(counts))
    return float(np.mean(counts.max(axis=1) / np.maximum(totals, 1)))


def flat_kmeans(x, k: int, labels, key, *, trials: int = 1, restarts: int = 1,
                iterations: int = 100, init: str = "random"):
    """(assignment [N] int32 numpy, info) of the first of `trials` k-means runs that passes
    `acceptable`, else the last one, as the PAMI code does (30 trials there, 1 in CVPR)."""
    for trial in range(trials):
        result = kmeans_lib.kmeans_jit(x, k, jax.random.fold_in(key, trial), n_init=restarts,
                                       max_iter=iterations, init=init)
        assignment = np.asarray(result.assignment, np.int32)
        if acceptable(assignment, labels, k):
            break
    return assignment, {"kmeans_inertia": float(result.inertia), "kmeans_trials": trial + 1,
                        "kmeans_accepted": acceptable(assignment, labels, k)}


def _bucket(n: int) -> int:
    """Pad subsets to powers of two so the 2-means compiles for a handful of shapes only."""
    return max(8, 1 << (int(n) - 1).bit_length())


def split_in_two(x, assignment, labels, key, *, trials: int = 1, iterations: int = 100,
                 init: str = "random"):
    """Children 2c and 2c+1 of every cluster c, by 2-means on c's own points.

    Each parent makes up to `trials` attempts and keeps the first whose two halves both pass
    the acceptance rule (METHOD.md §1.3, `divide_clusters`). Images outside every cluster
    (-1) stay -1. Returns (assignment with 2K clusters, number of parents never accepted).
    """
    assignment, labels = np.asarray(assignment), np.asarray(labels)
    k = int(assignment.max()) + 1
    children = np.full_like(assignment, -1)
    rejected = 0
    for parent in range(k):
        rows = np.flatnonzero(assignment == parent)
        if len(rows) < 2:  # nothing to split: the whole parent becomes child 2c
            children[rows] = 2 * parent
            continue
        padded = np.resize(rows, _bucket(len(rows)))
        valid = np.arange(len(padded)) < len(rows)
        sub = jnp.take(x, jnp.asarray(padded), axis=0)
        for trial in range(trials):
            result = kmeans_lib.kmeans_jit(
                sub, 2, jax.random.fold_in(jax.random.fold_in(key, parent), trial),
                max_iter=iterations, init=init, valid=jnp.asarray(valid))
            halves = np.asarray(result.assignment)[:len(rows)]
            if acceptable(halves, labels[rows], 2):
                break
        else:
            rejected += 1
        children[rows] = 2 * parent + halves
    return children, rejected
