"""Match the clusters of a new k-means run to the learners of the previous one ("reassign").

After each reclustering the k new clusters are arbitrary labels; each must go to the learner (the
embedding slice / mask) that trained on the most similar previous cluster, otherwise the learners
are reshuffled every reclustering. The official code (docs/method.md §1.1) views each cluster as an
indicator vector over the N training images and solves the k x k assignment problem on
cost[c, p] = L1(current_c - previous_p) = |C_c| + |P_p| - 2 |C_c ∩ P_p|
(the size of the symmetric difference) with the Hungarian method. For a square problem the size
terms add the same constant to every full assignment, so this is the same as maximising overlap.

Labels -1 (images removed as singletons) belong to no cluster: they are in neither indicator
vector, so they add nothing to the overlap and are not counted in the cluster sizes.

Host side (numpy / scipy): this runs once per reclustering on N int labels.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def overlap_counts(previous: np.ndarray, current: np.ndarray, k: int) -> np.ndarray:
    """[k_cur, k_prev] matrix: out[c, p] = #points with current label c and previous label p."""
    previous = np.asarray(previous, np.int64)
    current = np.asarray(current, np.int64)
    if previous.shape != current.shape:
        raise ValueError(f"label shapes differ: {previous.shape} vs {current.shape}")
    both = (previous >= 0) & (current >= 0)
    flat = current[both] * k + previous[both]
    return np.bincount(flat, minlength=k * k).reshape(k, k)


def cost_matrix(previous: np.ndarray, current: np.ndarray, k: int) -> np.ndarray:
    """[k_cur, k_prev] symmetric-difference sizes |C_c| + |P_p| - 2 |C_c ∩ P_p|."""
    size_cur = np.bincount(np.asarray(current)[np.asarray(current) >= 0], minlength=k)
    size_prev = np.bincount(np.asarray(previous)[np.asarray(previous) >= 0], minlength=k)
    return size_cur[:, None] + size_prev[None, :] - 2 * overlap_counts(previous, current, k)


def match_clusters(previous: np.ndarray, current: np.ndarray, k: int) -> np.ndarray:
    """Returns perm [k] with perm[c] = learner (previous label) for current cluster c.

    perm maximises the overlap between current cluster c and previous cluster perm[c], i.e.
    minimises the total symmetric-difference cost of docs/method.md. Labels -1 are ignored.
    """
    rows, cols = linear_sum_assignment(cost_matrix(previous, current, k))
    perm = np.empty(k, np.int64)
    perm[rows] = cols  # rows is arange(k) for a square problem; indexing keeps it explicit
    return perm


def matching_cost(previous: np.ndarray, current: np.ndarray, perm: np.ndarray, k: int) -> int:
    """Total symmetric difference sum_c |C_c Δ P_perm[c]| of a matching (for logging)."""
    cost = cost_matrix(previous, current, k)
    return int(cost[np.arange(k), np.asarray(perm)].sum())


def relabel(current: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Maps current cluster c -> perm[c]; -1 stays -1.

    This applies perm itself: points of current cluster c get learner perm[c]. The official
    relabelling loop applies the inverse (points of current cluster perm[c] get label c), which is
    only right when perm is an involution; for a 3-cycle it gets every label wrong (docs/method.md
    §1.1).
    """
    current = np.asarray(current)
    perm = np.asarray(perm)
    return np.where(current >= 0, perm[np.clip(current, 0, None)], -1).astype(current.dtype)


def reassign(previous: np.ndarray, current: np.ndarray, k: int):
    """Convenience: (relabelled current, perm, total matching cost) in one call."""
    perm = match_clusters(previous, current, k)
    return relabel(current, perm), perm, matching_cost(previous, current, perm, k)
