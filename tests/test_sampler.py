"""The joint and round-robin samplers and singleton removal against plain-Python references."""
import collections

import numpy as np
import pytest

from dnc_jax.errors import ConfigError
from dnc_jax.data.sampling import make_sampler
from dnc_jax.data.sampling.sampler import (JointSampler, RoundRobinSampler, _deal,
                                           check_batch_layout, learner_slots)
from dnc_jax.divide.recluster import remove_singletons


def _data(seed=0, classes=30, k=3, low=2, high=9):
    rng = np.random.default_rng(seed)
    counts = rng.integers(low, high, classes)     # classes of low..high-1 images
    labels = np.repeat(np.arange(classes), counts)
    assignment = rng.integers(0, k, len(labels))
    return labels, remove_singletons(labels, assignment)


def _reference_singletons(labels, raw):
    ref = raw.copy()
    for c, k in set(zip(labels.tolist(), raw.tolist())):
        rows = (labels == c) & (raw == k)
        if k >= 0 and rows.sum() == 1:
            ref[rows] = -1
    return ref


def _chunks(labels, assignment, learner, m):
    """Chunks of each class of a cluster: ceil(n/M)."""
    sizes = collections.Counter(labels[assignment == learner].tolist())
    return {c: -(-n // m) for c, n in sizes.items()}


def _parts(sampler, batches, learner):
    """(rows, primary) of `learner` in each batch, padding dropped."""
    out = []
    for b in batches:
        part = (b.learners == learner) & b.valid
        out.append((b.indices[part], b.primary[part]))
    return out


def test_remove_singletons_matches_reference():
    labels, raw = np.array([0, 0, 1, 1, 2, 2, 2, 3]), np.array([0, 1, 1, 1, 0, 0, 1, -1])
    got = remove_singletons(labels, raw)
    np.testing.assert_array_equal(got, _reference_singletons(labels, raw))
    np.testing.assert_array_equal(got, [-1, -1, 1, 1, 0, 0, -1, -1])
    rng = np.random.default_rng(1)
    labels, raw = rng.integers(0, 40, 300), rng.integers(-1, 5, 300)
    np.testing.assert_array_equal(remove_singletons(labels, raw),
                                  _reference_singletons(labels, raw))


@pytest.mark.parametrize("k,batch,m", [(1, 32, 4), (3, 64, 4), (3, 50, 2)])
def test_joint_batches_respect_clusters_classes_and_layout(k, batch, m):
    labels, assignment = _data(k=k)
    sampler = JointSampler(labels, assignment, k, batch, m, seed=0)
    slots = learner_slots(batch, k, m)
    batches = list(sampler.epoch(0))
    assert len(batches) == sampler.steps_per_epoch
    for learner in range(k):  # the test data keep every class within the pass's batch count
        passes = -(-sum(_chunks(labels, assignment, learner, m).values())
                   // sampler.classes_per_batch)
        assert max(_chunks(labels, assignment, learner, m).values()) <= passes
    for b in batches:
        assert b.indices.shape == b.learners.shape == b.valid.shape == (batch,)
        assert not b.valid[k * slots:].any()  # the remainder is padding
        for learner in range(k):
            part = slice(learner * slots, (learner + 1) * slots)
            rows = b.indices[part][b.valid[part]]
            assert (b.learners[part] == learner).all()
            assert (assignment[rows] == learner).all()    # only its own cluster
            assert len(set(rows)) == len(rows)              # no image twice in a batch
            per_class = collections.Counter(labels[rows].tolist())
            # One whole chunk per class (so classes are distinct): M slots, or all of the
            # class's images when it has fewer than M.
            for c, n in per_class.items():
                available = ((labels == c) & (assignment == learner)).sum()
                assert n == min(m, available)


@pytest.mark.parametrize("schedule", ["joint", "round_robin"])
def test_every_image_is_a_primary_draw_exactly_once(schedule):
    labels, assignment = _data(seed=3, classes=60, k=3)
    sampler = make_sampler(schedule, labels, assignment, 3, 48, 4, seed=1)
    batches = list(sampler.epoch(2))
    lengths = [c.num_batches for c in sampler.clusters]
    for learner in range(3):
        parts = _parts(sampler, batches, learner)
        drawn = collections.Counter(np.concatenate([r for r, _ in parts]).tolist())
        primary = collections.Counter(np.concatenate([r[p] for r, p in parts]).tolist())
        usable = np.flatnonzero(assignment == learner)
        assert set(drawn) == set(usable.tolist())          # at least once, nothing else
        assert primary == collections.Counter(usable.tolist())   # exactly once as primary
        if lengths[learner] == max(lengths):
            # The longest learner's epoch is one pass: each image exactly once, except the
            # M - (n mod M) fillers topping up the last chunk of a class of n >= M images.
            for c in set(labels[usable].tolist()):
                rows = usable[labels[usable] == c]
                counts = sorted(drawn[r] for r in rows)
                fillers = (-len(rows)) % 4 if len(rows) >= 4 else 0
                assert counts == [1] * (len(rows) - fillers) + [2] * fillers


@pytest.mark.parametrize("schedule", ["joint", "round_robin"])
def test_official_epoch_length_is_len_cluster_over_the_batch(schedule):
    """'official': each learner serves len(cluster) // (P*M) batches an epoch, as the official
    ClassBalancedSampler; the batches are those the 'exact' epoch starts with, so classes,
    chunks, learners and resuming behave the same."""
    labels, assignment = _data(seed=4, classes=80, k=3, low=2, high=7)  # small classes
    exact = make_sampler(schedule, labels, assignment, 3, 48, 4, seed=1)
    official = make_sampler(schedule, labels, assignment, 3, 48, 4, seed=1,
                            epoch_length="official")
    slots = official.slots
    expected = [max(1, int(np.sum(assignment == k)) // slots) for k in range(3)]
    passes = [c.num_batches for c in official.clusters]
    assert all(e < p for e, p in zip(expected, passes))  # top-ups make a pass longer
    per_learner = max(expected)
    steps = per_learner if schedule == "joint" else 3 * per_learner
    assert official.steps_per_epoch == steps < exact.steps_per_epoch
    got = list(official.epoch(5))
    want = list(exact.epoch(5))
    for k in range(3):
        # Learners with a shorter epoch start their next pass, exactly as in 'exact' epochs.
        for (rows, _), (rows_exact, _) in zip(_parts(official, got, k), _parts(exact, want, k)):
            np.testing.assert_array_equal(rows, rows_exact)
            assert (assignment[rows] == k).all()
    tail = list(official.epoch(5, start_step=steps // 2))
    for x, y in zip(got[steps // 2:], tail):
        np.testing.assert_array_equal(x.indices, y.indices)
    with pytest.raises(ConfigError, match="data.epoch_length"):
        make_sampler(schedule, labels, assignment, 3, 48, 4, seed=1, epoch_length="paper")


def test_a_class_with_fewer_than_m_images_keeps_a_short_chunk_and_padding():
    labels = np.repeat(np.arange(6), [2, 3, 4, 5, 6, 7])
    assignment = np.zeros(len(labels), int)
    sampler = JointSampler(labels, assignment, 1, 8, 4, seed=0)   # P = 2 classes a batch
    seen = collections.Counter()
    for b in sampler.epoch(0):
        rows = b.indices[b.valid]
        assert len(set(rows)) == len(rows)
        chunk_rows = b.indices.reshape(2, 4)
        chunk_valid = b.valid.reshape(2, 4)
        for r, v in zip(chunk_rows, chunk_valid):
            if v.any():
                c = labels[r[v][0]]
                assert (labels[r[v]] == c).all()
                # The valid slots come first; a class of n < M images leaves M - n padding.
                assert v.sum() == min(4, (labels == c).sum()) and v[:v.sum()].all()
        seen.update(labels[rows].tolist())
    # classes of 5, 6, 7 images have a topped-up second chunk: 8 draws each
    assert seen == {0: 2, 1: 3, 2: 4, 3: 8, 4: 8, 5: 8}


def test_the_deal_is_balanced_and_spreads_every_class():
    rng = np.random.default_rng(0)
    for _ in range(300):
        chunks = rng.integers(1, rng.integers(2, 9), rng.integers(1, 10)).tolist()
        per_batch = int(rng.integers(1, 5))
        batches = -(-sum(chunks) // per_batch)
        got = _deal(chunks, batches, rng)
        load = np.bincount(got, minlength=batches)
        assert load.max() <= per_batch and load.max() - load.min() <= 1
        for q, rows in zip(chunks, np.split(got, np.cumsum(chunks)[:-1])):
            # distinct batches when q <= L, else as even as possible
            per_row = np.bincount(rows, minlength=batches)
            assert per_row.max() == -(-q // batches) and per_row.min() == q // batches


def test_a_dominant_class_is_spread_evenly_over_the_pass():
    # Class 0 has 5 chunks, the pass has 3 batches of 2 chunks: repeats are unavoidable.
    labels = np.repeat([0, 1], [20, 4])
    sampler = JointSampler(labels, np.zeros(24, int), 1, 8, 4, seed=0)
    assert sampler.steps_per_epoch == 3
    per_batch = [collections.Counter(labels[b.indices[b.valid]].tolist())[0] // 4
                 for b in sampler.epoch(0)]
    assert sorted(per_batch) == [1, 2, 2]


def test_shorter_learners_start_a_new_pass():
    labels = np.repeat(np.arange(12), 4)
    assignment = np.where(labels < 9, 0, 1)          # 9 chunks vs 3 chunks, 1 chunk a batch
    sampler = JointSampler(labels, assignment, 2, 8, 4, seed=0)
    assert sampler.steps_per_epoch == 9
    short = [set(labels[r].tolist()) for r, _ in _parts(sampler, sampler.epoch(0), 1)]
    primary = [p.any() for _, p in _parts(sampler, sampler.epoch(0), 1)]
    assert primary == [True] * 3 + [False] * 6
    for start in (0, 3, 6):  # each pass serves classes 9, 10, 11 once
        assert set().union(*short[start:start + 3]) == {9, 10, 11}


def test_round_robin_order_length_and_restarting_loaders():
    labels = np.repeat(np.arange(20), 4)
    assignment = np.select([labels < 12, labels < 16], [0, 2], 1)  # 12, 4, 4 classes
    sampler = RoundRobinSampler(labels, assignment, 3, 16, 4, seed=0)   # P = 4
    lengths = [3, 1, 1]
    assert sampler.rounds_per_epoch == max(lengths)
    assert sampler.steps_per_epoch == 3 * max(lengths)
    batches = list(sampler.epoch(0))
    assert len(batches) == 9
    for step, b in enumerate(batches):
        learner = step % 3
        assert (b.learners == learner).all() and b.valid.all()
        assert (assignment[b.indices] == learner).all()
        assert len(set(labels[b.indices].tolist())) == 4
        # learners 1 and 2 restart after their first round: only round 0 is primary
        assert b.primary.all() == (learner == 0 or step < 3)
    learner1 = [batches[s].indices for s in (1, 4, 7)]
    assert all(set(x) == set(learner1[0]) for x in learner1)
    assert len({tuple(x) for x in learner1}) > 1   # each restart is a fresh shuffle


def test_round_robin_skips_an_empty_cluster_and_pads_a_ragged_batch():
    labels = np.repeat(np.arange(10), 4)
    assignment = np.where(labels < 5, 0, 2)          # learner 1 has no image
    sampler = make_sampler("round_robin", labels, assignment, 3, 18, 4, seed=0)
    assert sampler.turns == [0, 2] and sampler.steps_per_epoch == 2 * 2
    batches = list(sampler.epoch(0))
    assert [int(b.learners[0]) for b in batches] == [0, 2, 0, 2]
    assert all(not b.valid[16:].any() for b in batches)


@pytest.mark.parametrize("schedule", ["joint", "round_robin"])
def test_epochs_are_deterministic_and_differ(schedule):
    labels, assignment = _data(k=2)

    def run(seed, epoch):
        s = make_sampler(schedule, labels, assignment, 2, 32, 4, seed=seed)
        return [b.indices for b in s.epoch(epoch)]

    a, b, c, d = run(5, 1), run(5, 1), run(5, 2), run(6, 1)
    assert all((x == y).all() for x, y in zip(a, b))
    assert any((x != y).any() for x, y in zip(a, c))
    assert any((x != y).any() for x, y in zip(a, d))


@pytest.mark.parametrize("schedule", ["joint", "round_robin"])
def test_resuming_mid_epoch_gives_the_tail_of_the_epoch(schedule):
    labels, assignment = _data(seed=2, classes=40, k=3)
    sampler = make_sampler(schedule, labels, assignment, 3, 24, 2, seed=7)
    full = list(sampler.epoch(4))
    for start in (0, 1, len(full) // 2, len(full) - 1, len(full)):
        tail = list(sampler.epoch(4, start_step=start))
        assert len(tail) == len(full) - start
        for x, y in zip(full[start:], tail):
            for field in ("indices", "learners", "valid", "primary"):
                np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
    with pytest.raises(ValueError, match="start_step"):
        next(sampler.epoch(4, start_step=len(full) + 1))


def test_errors_name_the_config_keys():
    labels, assignment = _data(k=4)
    with pytest.raises(ValueError, match="data.batch_size"):
        JointSampler(labels, assignment, 4, 12, 4, seed=0)
    with pytest.raises(ValueError, match="data.samples_per_class"):
        RoundRobinSampler(labels, assignment, 4, 12, 0, seed=0)
    with pytest.raises(ValueError, match="divide.learner_schedule"):
        make_sampler("alternate", labels, assignment, 4, 32, 4, seed=0)


def test_a_batch_that_gives_a_learner_one_class_is_refused():
    """joint K=8 at the papers' 80 gives each learner 10 slots = 2 classes of 4 ... and at K=32
    (PAMI) one class of 2: no negative pair, a step that trains nothing."""
    check_batch_layout(640, 4, 8, "joint")        # the configs: 20 classes x 4 per learner
    check_batch_layout(64, 4, 8, "joint")         # 2 classes per learner: the least that works
    check_batch_layout(80, 2, 32, "round_robin")  # pami/sop_learned: the batch is one learner's
    with pytest.raises(ConfigError, match=r"data.batch_size=80 gives each of the 32 learners.*"
                                          r"data.batch_size >= 128 .*round_robin"):
        check_batch_layout(80, 2, 32, "joint")
    with pytest.raises(ConfigError, match=r"data.batch_size >= 8$"):
        check_batch_layout(4, 4, 8, "round_robin")
    check_batch_layout(32, 4, 8, "joint", min_classes=1)  # proxy losses: proxies are negatives
    with pytest.raises(ConfigError, match="divide.learner_schedule"):
        check_batch_layout(640, 4, 8, "alternate")


def test_a_cluster_emptied_by_singleton_removal_leaves_padding():
    labels = np.repeat(np.arange(8), 4)
    assignment = np.where(np.arange(32) < 28, 0, -1)   # cluster 1 holds no image
    sampler = JointSampler(labels, assignment, 2, 32, 4, seed=0)
    filled = []
    for b in sampler.epoch(0):
        assert not b.valid[16:].any()
        assert (b.learners[16:] == 1).all()
        filled.append(int(b.valid[:16].sum()))
    assert sorted(filled) == [12, 16]   # 7 chunks dealt evenly over 2 batches of 4
