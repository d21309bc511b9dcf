"""The joint-layout sampler and singleton removal against plain-Python references."""
import collections

import numpy as np
import pytest

from dnc_jax.data.sampler import JointSampler, learner_slots, remove_singletons


def _data(seed=0, classes=30, k=3):
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 9, classes)          # classes of 2..8 images
    labels = np.repeat(np.arange(classes), counts)
    assignment = rng.integers(0, k, len(labels))
    return labels, remove_singletons(labels, assignment)


def test_remove_singletons_matches_reference():
    labels, raw = np.array([0, 0, 1, 1, 2, 2, 2, 3]), np.array([0, 1, 1, 1, 0, 0, 1, -1])
    got = remove_singletons(labels, raw)
    ref = raw.copy()
    for c, k in set(zip(labels, raw)):
        rows = (labels == c) & (raw == k)
        if k >= 0 and rows.sum() == 1:
            ref[rows] = -1
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, [-1, -1, 1, 1, 0, 0, -1, -1])


@pytest.mark.parametrize("k,batch,m", [(1, 32, 4), (3, 64, 4), (3, 50, 2)])
def test_batches_respect_clusters_classes_and_layout(k, batch, m):
    labels, assignment = _data(k=k)
    sampler = JointSampler(labels, assignment, k, batch, m, seed=0)
    slots = learner_slots(batch, k, m)
    seen = collections.Counter()
    batches = list(sampler.epoch(0))
    assert len(batches) == sampler.steps_per_epoch
    for b in batches:
        assert b.indices.shape == b.learners.shape == b.valid.shape == (batch,)
        assert not b.valid[k * slots:].any()  # the remainder is padding
        for learner in range(k):
            part = slice(learner * slots, (learner + 1) * slots)
            rows = b.indices[part][b.valid[part]]
            assert (b.learners[part] == learner).all()
            assert (assignment[rows] == learner).all()    # only its own cluster
            assert len(set(rows)) == len(rows)              # no image twice in a batch
            per_class = collections.Counter(labels[rows])
            assert max(per_class.values()) <= m
            # Whole chunks: a class fills its M slots unless it has fewer than M images.
            for c, n in per_class.items():
                available = ((labels == c) & (assignment == learner)).sum()
                assert n == min(m, available)
            seen.update(rows.tolist())
    usable = np.flatnonzero(assignment >= 0)
    missing = set(usable) - set(seen)
    assert len(missing) <= 0.05 * len(usable), f"{len(missing)} usable images never drawn"


def test_epochs_are_deterministic_and_differ():
    labels, assignment = _data(k=2)
    a = [b.indices for b in JointSampler(labels, assignment, 2, 32, 4, seed=5).epoch(1)]
    b = [b.indices for b in JointSampler(labels, assignment, 2, 32, 4, seed=5).epoch(1)]
    c = [b.indices for b in JointSampler(labels, assignment, 2, 32, 4, seed=5).epoch(2)]
    assert all((x == y).all() for x, y in zip(a, b))
    assert any((x != y).any() for x, y in zip(a, c))


def test_too_small_batch_names_the_config_key():
    labels, assignment = _data(k=4)
    with pytest.raises(ValueError, match="data.batch_size"):
        JointSampler(labels, assignment, 4, 12, 4, seed=0)


def test_a_cluster_emptied_by_singleton_removal_leaves_padding():
    labels = np.repeat(np.arange(8), 4)
    assignment = np.where(np.arange(32) < 28, 0, -1)   # cluster 1 holds no image
    sampler = JointSampler(labels, assignment, 2, 32, 4, seed=0)
    for b in sampler.epoch(0):
        assert not b.valid[16:].any() and b.valid[:16].all()
        assert (b.learners[16:] == 1).all()
