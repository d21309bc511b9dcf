"""A reclustering, end to end: the training set's features in, (assignment, statistics) out.

    if recluster.needs_features(phase):
        features = ...                      # the embedding pass over the training set
    assignment, stats = recluster.recluster(features, labels, phase, previous, key, config.divide)

The steps, as the official code runs them (docs/method.md §1.1-1.3): flat k-means into K
clusters, retried until every cluster passes the acceptance rule (PAMI: 30 trials; CVPR: 1);
the new clusters matched to the learners of the previous assignment (Hungarian, `matching.py`)
so that each learner keeps the data it trained on; under the PAMI plan, every cluster split in
two by 2-means on its own points when K doubles; and the images of a class that is alone in its
cluster set aside (-1), since they give a learner no positive pair. The k-means itself runs on
the device (`kmeans.py`); what comes back to the host is one int per image, to check the
acceptance rule and to build the sampler.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.divide import kmeans as kmeans_lib
from dnc_jax.divide import matching


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
    the acceptance rule (docs/method.md §1.3, `divide_clusters`). Images outside every cluster
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


def remove_singletons(labels, assignment):
    """Images whose class has exactly one image in their cluster get cluster -1 (docs/method.md
    §1.1)."""
    labels = np.asarray(labels)
    assignment = np.asarray(assignment).copy()
    used = assignment >= 0
    keys = labels[used].astype(np.int64) * (int(assignment.max(initial=0)) + 1) + assignment[used]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    single = np.zeros(len(assignment), bool)
    single[np.flatnonzero(used)] = counts[inverse] == 1
    assignment[single] = -1
    return assignment


def cluster_stats(labels, assignment, num_learners: int) -> dict:
    """Images and classes per cluster, and the images set aside, for the run's record."""
    sizes, classes = [], []
    for k in range(num_learners):
        rows = assignment == k
        sizes.append(int(rows.sum()))
        classes.append(int(len(np.unique(labels[rows]))))
    return {"cluster_sizes": sizes, "cluster_classes": classes,
            "removed_images": int((assignment < 0).sum())}


# -- the whole reclustering ----------------------------------------------------------------------

def _flat_k(phase) -> int:
    """Clusters of the flat k-means: K, or K/2 when this phase then splits each in two."""
    return phase.num_learners // 2 if phase.split else phase.num_learners


def needs_features(phase) -> bool:
    """Whether the reclustering looks at the data: one learner on all of it needs no k-means."""
    return _flat_k(phase) > 1 or phase.split


def recluster(features, labels, phase, previous, key, config):
    """(assignment [N] int32, statistics) of one reclustering.

    `features` [N, D] (device array; None when `needs_features(phase)` is False) are what the
    clusters are cut in (`divide.cluster_on`); `phase` comes from `schedule.phase`; `previous`
    is the assignment in force (None at the start): when it has the same K and the phase is not
    a whole-data one, the new clusters are matched to its learners. `config` is the `divide`
    section. Statistics: k-means inertia, trials and acceptance, the matching cost, the parents
    whose split was never accepted, class purity (before singletons are set aside), and the
    images and classes per cluster.
    """
    labels = np.asarray(labels)
    k = _flat_k(phase)
    stats = {}
    if k == 1:
        assignment = np.zeros(len(labels), np.int32)
    else:
        assignment, stats = flat_kmeans(
            features, k, labels, key, trials=config.kmeans_trials,
            restarts=config.kmeans_restarts, iterations=config.kmeans_iterations,
            init=config.kmeans_init)
        if previous is not None and not phase.whole_dataset and previous.max(initial=-1) == k - 1:
            perm = matching.match_clusters(previous, assignment, k)
            stats["matching_cost"] = int(matching.matching_cost(previous, assignment, perm, k))
            assignment = matching.relabel(assignment, perm)
    if phase.split:
        assignment, rejected = split_in_two(
            features, assignment, labels, jax.random.fold_in(key, 1), trials=config.split_trials,
            iterations=config.kmeans_iterations, init=config.kmeans_init)
        stats["split_rejected"] = rejected
    if needs_features(phase):
        stats["class_purity"] = class_purity(assignment, labels)
    assignment = remove_singletons(labels, assignment)
    return assignment, {**stats, **cluster_stats(labels, assignment, phase.num_learners)}
