"""Acceptance rule and the hierarchical split, against direct checks."""
import jax
import numpy as np
from sklearn.datasets import make_blobs

from dnc_jax.divide import recluster


def test_acceptable_matches_a_direct_count():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 4])
    assert recluster.acceptable([0, 0, 0, 0, 1, 1, 1, 1], labels, 2) is False  # cluster 1: one class with 2
    assert recluster.acceptable([0, 0, 0, 0, 1, 1, -1, -1], labels, 2) is False
    labels2 = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert recluster.acceptable([0, 0, 0, 0, 1, 1, 1, 1], labels2, 2) is True
    assert recluster.acceptable([0, 0, 0, 0, 1, 1, 1, 1], labels2, 3) is False  # empty cluster


def test_split_in_two_recovers_sub_blobs_and_keeps_parents():
    # Two parents, each made of two well separated blobs of 3 classes x 4 images.
    x, blob = make_blobs(n_samples=96, centers=4, n_features=6, cluster_std=0.3, random_state=0)
    parent = blob // 2                       # blobs 0,1 -> parent 0; 2,3 -> parent 1
    labels = blob * 10 + np.arange(96) % 3   # 3 classes per blob, each with several images
    children, rejected = recluster.split_in_two(x.astype(np.float32), parent, labels,
                                                jax.random.key(0), trials=5)
    assert rejected == 0
    np.testing.assert_array_equal(children // 2, parent)   # merging children gives the parent
    for b in range(4):                                     # each blob is one child
        assert len(np.unique(children[blob == b])) == 1
    assert len(np.unique(children)) == 4


def test_flat_kmeans_retries_until_accepted():
    x, blob = make_blobs(n_samples=60, centers=3, n_features=4, cluster_std=0.2, random_state=1)
    labels = blob * 10 + np.arange(60) % 4
    assignment, info = recluster.flat_kmeans(x.astype(np.float32), 3, labels,
                                             jax.random.key(0), trials=10, restarts=2,
                                             iterations=50, init="kmeans++")
    assert info["kmeans_accepted"] and recluster.acceptable(assignment, labels, 3)
    assert info["kmeans_trials"] >= 1
