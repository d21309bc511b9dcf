"""data.sampler='official': class-uniform batches (CVPR and PAMI draws) against a loop-based
simulation of the same rules, hand-worked small cases, and the schedules' contracts."""
import collections
import random
import re

import numpy as np
import pytest

from dnc_jax.errors import ConfigError
from dnc_jax.data.sampling.official_sampler import OfficialJointSampler, OfficialRoundRobinSampler
from dnc_jax.data.sampling import make_sampler
from dnc_jax.data.sampling.sampler import (SAMPLERS, JointSampler, RoundRobinSampler,
                                           check_sampler, learner_slots)
from dnc_jax.divide.recluster import remove_singletons

# Class sizes shaped like Stanford Online Products: 2 to 12 images, most classes 2 to 6.
SOP_SIZES = np.arange(2, 13)
SOP_WEIGHTS = np.array([15, 15, 15, 15, 15, 7, 6, 5, 3, 2, 2]) / 100
# Frequencies are compared per group of class sizes; each group holds >= 15% of the classes.
SIZE_GROUPS = [(2,), (3,), (4,), (5,), (6,), tuple(range(7, 13))]


def _sop_sizes(classes, seed=0):
    return np.random.default_rng(seed).choice(SOP_SIZES, classes, p=SOP_WEIGHTS)


def _official(schedule, labels, assignment, k, batch, m, method, seed=0,
              epoch_length="official"):
    return make_sampler(schedule, labels, assignment, k, batch, m, seed=seed,
                        epoch_length=epoch_length, sampler="official", method=method)


def _clustered(sizes, k, seed=0):
    """Labels of classes of `sizes` (class after class) and a class-wise assignment to k
    clusters, a few images set aside (-1) and then the singletons, as training does."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    assignment = rng.integers(0, k, len(sizes))[labels]
    assignment[rng.random(len(labels)) < 0.03] = -1
    return labels, remove_singletons(labels, assignment)


def simulate(sizes, method, slots, m, batches_per_epoch, epochs, seed):
    """A direct transcription of the official draws on one cluster whose classes have `sizes`
    images (image rows class after class), with its own RNG (Python's `random`).

    Returns float64 (picks per class, draws per image) summed over the epochs.
    """
    rnd = random.Random(seed)
    sizes = [int(n) for n in sizes]
    num_classes, total = len(sizes), sum(sizes)
    rows_of, first = [], 0             # the rows of each class
    for n in sizes:
        rows_of.append(range(first, first + n))
        first += n
    picks = [0] * num_classes
    drawn = []
    for _ in range(epochs):
        lists = [rnd.sample(rows, len(rows)) for rows in rows_of]   # a fresh epoch
        cursor = [0] * num_classes
        for _ in range(batches_per_epoch):
            batch = []
            if method == "cvpr":
                p = slots // m
                if num_classes >= p:
                    chosen = rnd.sample(range(num_classes), p)
                else:
                    chosen = [rnd.randrange(num_classes) for _ in range(p)]
                for c in chosen:
                    n = sizes[c]
                    if cursor[c] + m > n:
                        batch.extend(rnd.choice(rows_of[c]) for _ in range(m))
                    else:
                        batch.extend(lists[c][cursor[c]:cursor[c] + m])
                    cursor[c] += m
                    if cursor[c] + m > n:
                        rnd.shuffle(lists[c])
                        cursor[c] = 0
                    picks[c] += 1
            else:
                per, p = m, slots // m
                if num_classes < p:
                    per, p = slots // num_classes, num_classes
                bonus = set(rnd.sample(range(num_classes), slots - per * p))
                for c in rnd.sample(range(num_classes), p):
                    n = sizes[c]
                    t = min(per + (c in bonus), n)
                    if cursor[c] + t > n:
                        batch.extend(rnd.sample(rows_of[c], t))
                    else:
                        batch.extend(lists[c][cursor[c]:cursor[c] + t])
                    cursor[c] += t
                    if cursor[c] >= n:
                        rnd.shuffle(lists[c])
                        cursor[c] = 0
                    picks[c] += 1
                taken = set(batch)
                while len(batch) < slots:   # fill: rejection-sample rows not in the batch
                    row = rnd.randrange(total)
                    if row not in taken:
                        taken.add(row)
                        batch.append(row)
            drawn.extend(batch)
    return (np.asarray(picks, np.float64),
            np.bincount(drawn, minlength=total).astype(np.float64))


def _group_means(values, sizes_of, group):
    return values[np.isin(sizes_of, group)].mean()


@pytest.mark.parametrize("method,m", [("cvpr", 4), ("pami", 2)])
def test_pick_and_draw_frequencies_match_the_simulation(method, m):
    """Per-class pick frequency and per-image draw frequency, by class size, within 2%.

    Sizing: the picks of a size group over T picks are close to binomial, so one estimate's
    relative standard deviation is sqrt((1 - f) / (T f)) for a group of a share f >= 0.15 of
    the classes; T = 300k picks (about 116 CVPR / 58 PAMI epochs of 129 batches) gives <= 0.43%
    (six seeds of the simulation spread by 0.1-0.6%), 0.61% for the difference of two
    independent estimates: 2% is more than 3 deviations. Draws of a group are t images per
    pick, so their noise is the same.
    """
    sizes = _sop_sizes(2000)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    sampler = _official("round_robin", labels, np.zeros(len(labels), int), 1, 80, m, method,
                        seed=3)
    per_epoch = len(labels) // 80
    assert sampler.steps_per_epoch == per_epoch
    epochs = 300_000 // (per_epoch * (80 // m))
    rows = np.stack([b.indices for e in range(epochs) for b in sampler.epoch(e)])
    assert rows.shape == (epochs * per_epoch, 80)
    groups = rows.reshape(len(rows), 80 // m, m)        # a pick: M slots of one class
    assert (labels[groups] == labels[groups[:, :, :1]]).all()
    picks = np.bincount(labels[groups[:, :, 0]].ravel(), minlength=len(sizes)).astype(float)
    draws = np.bincount(rows.ravel(), minlength=len(labels)).astype(float)
    sim_picks, sim_draws = simulate(sizes, method, 80, m, per_epoch, epochs, seed=11)
    assert sim_picks.sum() == picks.sum() and sim_draws.sum() == draws.sum()

    image_size = sizes[labels]
    for group in SIZE_GROUPS:
        got, want = _group_means(picks, sizes, group), _group_means(sim_picks, sizes, group)
        assert abs(got / want - 1) < 0.02, (group, got, want)
        got = _group_means(draws, image_size, group)
        want = _group_means(sim_draws, image_size, group)
        assert abs(got / want - 1) < 0.02, (group, got, want)
    # A class is picked as often as any other, so an image of a 2-image class is drawn about
    # 12 / 2 = 6 times as often as one of a 12-image class (M / n draws per pick each) ...
    ratio = _group_means(draws, image_size, (2,)) / _group_means(draws, image_size, (12,))
    assert 5 < ratio < 7
    # ... while 'exact' draws each of them once an epoch.
    exact = make_sampler("round_robin", labels, np.zeros(len(labels), int), 1, 80, m, seed=3)
    rows = np.concatenate([b.indices[b.valid] for e in range(2) for b in exact.epoch(e)])
    exact_draws = np.bincount(rows, minlength=len(labels))
    assert (exact_draws[np.isin(image_size, (2, 12))] == 2).all()


def test_pami_fillers_by_hand_and_against_the_simulation():
    """PAMI, M = 2, B = 16, 4 classes of 2, 3, 9, 12 images (fewer than P = 8): every batch
    takes 16 // 4 = 4 images a class, so all of the classes of 2 and 3 and 4 of the 9 and 12,
    and 3 fillers among the 13 images not in the batch. Per batch, an image of the 9-image
    class is drawn 4/9 + (5/9)(3/13) times on average, of the 12-image class 4/12 + (8/12)(3/13).
    Sizing: a class's fillers per batch are hypergeometric (3 of 13), variance 0.59; over 4000
    batches its draws have a relative deviation of 0.3%: 1.5% is more than 3 deviations of the
    difference with the simulation."""
    sizes = np.array([2, 3, 9, 12])
    labels = np.repeat(np.arange(4), sizes)
    sampler = _official("joint", labels, np.zeros(26, int), 1, 16, 2, "pami", seed=1,
                        epoch_length="exact")
    assert sampler.steps_per_epoch == 2
    epochs = 2000
    rows = np.stack([b.indices for e in range(epochs) for b in sampler.epoch(e)])
    assert rows.shape == (2 * epochs, 16) and all(len(set(r)) == 16 for r in rows)
    draws = np.bincount(rows.ravel(), minlength=26) / len(rows)
    np.testing.assert_array_equal(draws[:5], 1.0)     # the small classes, never a filler twice
    per_class = np.bincount(labels, weights=draws) / sizes
    expected = [1, 1, 4 / 9 + 5 / 9 * 3 / 13, 4 / 12 + 8 / 12 * 3 / 13]
    _, sim_draws = simulate(sizes, "pami", 16, 2, 2, epochs, seed=9)
    sim_class = np.bincount(labels, weights=sim_draws / len(rows)) / sizes
    np.testing.assert_allclose(per_class, expected, rtol=0.015)
    np.testing.assert_allclose(per_class, sim_class, rtol=0.015)


def _blocks(sampler, batch):
    """(learner, rows) of each learner block of a batch (joint: the K slot blocks; round
    robin: the P*M slots), after checking the padding tail."""
    if isinstance(sampler, JointSampler):
        s, k = sampler.slots, sampler.num_learners
        assert not batch.valid[k * s:].any()
        return [(j, batch.indices[j * s:(j + 1) * s], batch.valid[j * s:(j + 1) * s])
                for j in range(k)]
    s = sampler.slots
    assert not batch.valid[s:].any()
    return [(int(batch.learners[0]), batch.indices[:s], batch.valid[:s])]


@pytest.mark.parametrize("schedule,batch", [("joint", 120), ("round_robin", 82)])
@pytest.mark.parametrize("method,m", [("cvpr", 4), ("pami", 2), ("pami", 4)])
def test_sop_like_batches_have_no_padding_and_distinct_classes(schedule, batch, method, m):
    labels, assignment = _clustered(_sop_sizes(300, seed=1), 3, seed=1)
    sampler = _official(schedule, labels, assignment, 3, batch, m, method, seed=4)
    p = sampler.slots // m
    for b in sampler.epoch(1):
        for learner, rows, valid in _blocks(sampler, b):
            assert valid.all()                                  # no padding in a block
            assert (assignment[rows] == learner).all()          # its own cluster, no -1
            if method == "pami":
                assert len(set(rows)) == len(rows)              # enough images: no repeat
            if m == 4 and method == "pami":
                continue                                        # small classes: fillers
            classes = labels[rows.reshape(p, m)]
            assert (classes == classes[:, :1]).all()            # M slots of one class
            assert len(set(classes[:, 0])) == p                 # P distinct classes


def _class_picks(sampler, batches, learner, labels):
    """Each class's successive picks (tuples of rows) in learner `learner`'s CVPR groups."""
    out = collections.defaultdict(list)
    for b in batches:
        for k, rows, _ in _blocks(sampler, b):
            if k == learner:
                for group in rows.reshape(-1, sampler.m):
                    out[int(labels[group[0]])].append(tuple(group.tolist()))
    return out


def test_cvpr_cursors_by_hand():
    """CVPR, M = 4, P = 2: a class of 2-3 images repeats images in its group, a class of 5
    gives 4 distinct images of a fresh shuffle each time, one of 8 (9, 12) gives 2 (2, 3)
    disjoint picks in a row before its reshuffle. Learner 0 (39 images, 4 batches an epoch)
    keeps drawing while learner 1 serves its 50 batches: the cursors carry over."""
    small = [2, 3, 5, 8, 9, 12]
    sizes = small + [8] * 50
    labels = np.repeat(np.arange(len(sizes)), sizes)
    assignment = np.where(labels < len(small), 0, 1)
    sampler = _official("round_robin", labels, assignment, 2, 8, 4, "cvpr", seed=1)
    assert sampler.steps_per_epoch == 2 * 50
    picks = _class_picks(sampler, list(sampler.epoch(0)), 0, labels)
    assert sum(map(len, picks.values())) == 2 * 50
    rows_of = {c: set(np.flatnonzero(labels == c).tolist()) for c in range(len(small))}
    for c, n in enumerate(small):
        seq = picks[c]
        assert len(seq) >= 6 and all(set(g) <= rows_of[c] for g in seq)
        if n < 4:
            assert all(len(set(g)) < 4 for g in seq)   # duplicates: valid slots
            continue
        assert all(len(set(g)) == 4 for g in seq)
        run = n // 4                                   # disjoint picks between reshuffles
        for start in range(0, len(seq) - run + 1, run):
            union = set().union(*map(set, seq[start:start + run]))
            assert len(union) == 4 * run
            if n % 4 == 0:
                assert union == rows_of[c]
    # A 3-image class drawn with replacement: over many picks every image shows up.
    assert set().union(*map(set, picks[1])) == rows_of[1]


def test_cvpr_with_fewer_classes_than_p_serves_a_class_twice_in_turn():
    """Two classes of 4 at M = 2, P = 4: classes are drawn with replacement; a class's picks,
    in slot order, go through its list two at a time, so picks 2k and 2k+1 are its 4 images."""
    labels = np.repeat([0, 1], 4)
    sampler = _official("joint", labels, np.zeros(8, int), 1, 8, 2, "cvpr", seed=0,
                        epoch_length="exact")
    batches = [b for e in range(40) for b in sampler.epoch(e)]   # one batch an epoch
    assert len(batches) == 40
    repeats = 0
    for e in range(40):
        picks = _class_picks(sampler, [batches[e]], 0, labels)
        repeats += any(len(v) > 1 for v in picks.values())
        for c, seq in picks.items():
            assert all(len(set(g)) == 2 for g in seq)
            for start in range(0, len(seq) - 1, 2):
                assert set(seq[start]) | set(seq[start + 1]) == set(range(4 * c, 4 * c + 4))
    assert repeats == 40   # 4 picks of 2 classes always repeat one


def test_pami_cursors_fillers_and_few_classes_by_hand():
    # M = 2, P = 4: a class of 2 always gives both images; of 4, two disjoint picks in a row;
    # of 5, two disjoint then 2 distinct at random; every pick 2 distinct images.
    small = [2, 3, 4, 5, 7]
    sizes = small + [4] * 40
    labels = np.repeat(np.arange(len(sizes)), sizes)
    assignment = np.where(labels < len(small), 0, 1)
    sampler = _official("round_robin", labels, assignment, 2, 8, 2, "pami", seed=2)
    picks = _class_picks(sampler, list(sampler.epoch(0)), 0, labels)
    for c, n in enumerate(small):
        seq = picks[c]
        assert len(seq) >= 6 and all(len(set(g)) == 2 for g in seq)
        cycle = -(-n // 2)                     # picks between reshuffles
        for start in range(0, len(seq) - cycle + 1, cycle):
            sequential = seq[start:start + n // 2]
            union = set().union(*map(set, sequential))
            assert len(union) == 2 * (n // 2)  # the sequential picks are disjoint
    # M = 4, P = 4 on classes of 2, 2, 3, 6, 8, 9: short classes leave slots to fillers; 30
    # images are enough for 16 distinct ones.
    labels = np.repeat(np.arange(6), [2, 2, 3, 6, 8, 9])
    sampler = _official("round_robin", labels, np.zeros(len(labels), int), 1, 16, 4, "pami",
                        seed=0, epoch_length="exact")
    for e in range(20):
        for b in sampler.epoch(e):
            assert b.valid.all() and len(set(b.indices)) == 16
            counts = collections.Counter(labels[b.indices].tolist())
            assert len(counts) >= 4
    # 3 classes < P = 8: all three each batch, 16 // 3 = 5 images each and 1 extra image for
    # one class (fewer than its share when it has no more, then a filler): 16 distinct images.
    labels = np.repeat(np.arange(3), [5, 6, 7])
    sampler = _official("joint", labels, np.zeros(18, int), 1, 16, 2, "pami", seed=0,
                        epoch_length="exact")
    for e in range(30):
        for b in sampler.epoch(e):
            assert b.valid.all() and len(set(b.indices)) == 16
            counts = sorted(collections.Counter(labels[b.indices].tolist()).values())
            assert counts == [5, 5, 6]


@pytest.mark.parametrize("schedule", ["joint", "round_robin"])
@pytest.mark.parametrize("method", ["cvpr", "pami"])
def test_resuming_mid_epoch_gives_the_tail_of_the_epoch(schedule, method):
    labels, assignment = _clustered(_sop_sizes(120, seed=2), 3, seed=2)
    sampler = _official(schedule, labels, assignment, 3, 48 if schedule == "joint" else 16,
                        4 if method == "cvpr" else 2, method, seed=7)
    full = list(sampler.epoch(4))
    assert len(full) == sampler.steps_per_epoch > 6
    for start in (1, 5, len(full) // 2, len(full) - 1, len(full)):
        tail = list(sampler.epoch(4, start_step=start))
        assert len(tail) == len(full) - start
        for x, y in zip(full[start:], tail):
            for field in ("indices", "learners", "valid", "primary"):
                np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
    with pytest.raises(ValueError, match="start_step"):
        next(sampler.epoch(4, start_step=len(full) + 1))


@pytest.mark.parametrize("schedule", ["joint", "round_robin"])
@pytest.mark.parametrize("method", ["cvpr", "pami"])
def test_determinism_primary_and_set_aside_images(schedule, method):
    labels, assignment = _clustered(_sop_sizes(120, seed=3), 2, seed=3)
    assert (assignment == -1).any()

    def run(seed, epoch):
        return list(_official(schedule, labels, assignment, 2, 32, 2, method,
                              seed=seed).epoch(epoch))

    a, b, c, d = run(5, 1), run(5, 1), run(5, 2), run(6, 1)
    assert all((x.indices == y.indices).all() and (x.primary == y.primary).all()
               for x, y in zip(a, b))
    assert any((x.indices != y.indices).any() for x, y in zip(a, c))
    assert any((x.indices != y.indices).any() for x, y in zip(a, d))
    seen = set()
    for x in a:
        rows = x.indices[x.valid]
        assert (assignment[rows] >= 0).all()
        assert (assignment[rows] == x.learners[x.valid]).all()
        for row, primary in zip(rows.tolist(), x.primary[x.valid].tolist()):
            assert primary == (row not in seen)   # the image's first draw of the epoch
            seen.add(row)
    assert sum(int(x.primary.sum()) for x in a) == len(seen)


@pytest.mark.parametrize("schedule", ["joint", "round_robin"])
def test_epoch_lengths_small_and_empty_clusters(schedule):
    # learner 0: 205 images; learner 1: 10 images (fewer than a batch); learner 2: none.
    labels = np.repeat(np.arange(45), [5] * 41 + [3, 3, 2, 2])
    assignment = np.where(labels < 41, 0, 1)
    k, batch = 3, (120 if schedule == "joint" else 40)
    slots = learner_slots(batch, k if schedule == "joint" else 1, 4)
    assert slots == 40
    lengths = {"official": [205 // 40, 1], "exact": [-(-205 // 40), 1]}
    for epoch_length, (l0, l1) in lengths.items():
        sampler = _official(schedule, labels, assignment, k, batch, 4, "cvpr",
                            epoch_length=epoch_length)
        steps = l0 if schedule == "joint" else 2 * l0
        assert sampler.steps_per_epoch == steps
        batches = list(sampler.epoch(0))
        if schedule == "round_robin":
            assert sampler.turns == [0, 1]
            assert [int(b.learners[0]) for b in batches] == [0, 1] * l0
        for b in batches:
            for learner, rows, valid in _blocks(sampler, b):
                assert valid.all() == (learner < 2) and valid.any() == (learner < 2)
                assert (assignment[rows[valid]] == learner).all()


def test_make_sampler_routes_and_check_sampler_refuses():
    labels, assignment = _clustered(_sop_sizes(60, seed=4), 2, seed=4)
    args = (labels, assignment, 2, 32, 2)
    for schedule, exact_cls, official_cls in (
            ("joint", JointSampler, OfficialJointSampler),
            ("round_robin", RoundRobinSampler, OfficialRoundRobinSampler)):
        exact = make_sampler(schedule, *args, seed=0)
        assert type(exact) is exact_cls
        assert type(make_sampler(schedule, *args, seed=0, sampler="exact",
                                 method="pami")) is exact_cls
        for method in ("cvpr", "pami"):
            official = make_sampler(schedule, *args, seed=0, sampler="official",
                                    method=method)
            assert type(official) is official_cls and official.method == method
            assert isinstance(official, exact_cls)
    assert SAMPLERS == ("exact", "official")
    check_sampler("exact")
    check_sampler("official")
    message = "data.sampler='paper' is not one of ('exact', 'official')"
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_sampler("paper")
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_sampler("joint", *args, seed=0, sampler="paper")
    with pytest.raises(ConfigError, match="divide.schedule"):
        make_sampler("joint", *args, seed=0, sampler="official", method="icml")
    with pytest.raises(ConfigError, match="divide.learner_schedule"):
        make_sampler("alternate", *args, seed=0, sampler="official")
