"""Class-uniform batches as the papers' own code draws them: `data.sampler = "official"`.

Why. The 'exact' sampler (sampler.py) deals every usable image of a cluster into the epoch once,
in chunks of M = `data.samples_per_class` per class. The papers' code draws differently: for
every batch it picks classes uniformly at random, so a class is picked as often as any other
whatever its size, and an image of a small class is drawn far more often than one of a large
class. On class sizes like Stanford Online Products' (2 to 12 images, most 2 to 6) an image of
a 2-image class is drawn about 5 times as often as one of a 12-image class under 'official',
while 'exact' draws both once an epoch. Pick 'official' to reproduce the papers' training
distribution; 'exact' to see every image equally often.

Both draws below work on one cluster (a learner's "data set") of n images, with B the learner's
batch slots, M = `samples_per_class` and P = B // M classes a batch. Each class keeps its images
in a shuffled list and a cursor into it, 0 at the start of the epoch. The state lives for the
whole epoch: a learner whose stream runs past its epoch length (the round-robin and joint
schedules restart short learners) keeps drawing with the same lists and cursors.

CVPR (`divide.schedule = "cvpr"`, the CVPR 2019 code's class-balanced sampler). Every batch
picks P distinct classes uniformly (with replacement only when the cluster has fewer than P
classes). A picked class of n_c images gives the next M images of its list, or, when fewer than
M are left (only a class of n_c < M can get here), M images drawn uniformly *with replacement*:
such a batch holds the same image twice, as the official code's does, and those slots are valid.
The cursor then moves by M, and when fewer than M images are left after it the class is
reshuffled and its cursor goes back to 0; the leftover images are skipped for this round (a
class of 5 at M = 4 always gives 4 images of a fresh shuffle).

PAMI (`divide.schedule = "pami"`, the PAMI code's adaptive class-balanced sampler in its
'sample_other' mode). Each class gives per_class = M images to P = B // M classes; a cluster of
C < P classes gives per_class = B // C to all C of them. The extra = B - per_class * P slots go
one each to a set of `extra` classes drawn first (uniformly, without replacement, among all the
cluster's classes). Then the batch's P classes are drawn uniformly without replacement. A picked
class gives t = min(its share, n_c) images: the next t of its list, or t distinct images drawn at
random when fewer than t are left. The cursor moves by t; when it reaches n_c the class is
reshuffled and its cursor goes back to 0. If classes smaller than their share leave the batch
short of B images, the rest is filled with images of the cluster drawn uniformly without
replacement among those not yet in the batch (with replacement among them only when too few are
left; from the whole cluster when none is). Fillers are real images with their own labels.

Layout and length. A learner's block of B slots holds the picked classes' images class after
class (CVPR: P groups of M; PAMI: groups of t, then the fillers), every slot valid; an empty
cluster owns padding as with 'exact'. A learner's epoch is max(1, n // B) batches for
`data.epoch_length = "official"` (the official len(data set) // batch, at least one so a small
cluster is not dropped) and ceil(n / B) for 'exact' (as many slots as images); the schedules,
their slot layouts, turns and padding tails are JointSampler's and RoundRobinSampler's.
`primary` marks the first draw of each image in the epoch.

Randomness and resuming. A learner's stream is a pure function of (seed, epoch, learner); since
each batch depends on the lists and cursors the earlier ones left, `epoch(e, start_step)`
replays the epoch's draws from its start (cheap: the draws are vectorised over the classes of a
batch) and yields the batches from `start_step` on.
"""
from __future__ import annotations

import numpy as np

from dnc_jax.errors import ConfigError
from dnc_jax.data.sampling.sampler import JointSampler, RoundRobinSampler

METHODS = ("cvpr", "pami")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"divide.schedule={method!r} is not one of {METHODS} (it picks the "
                          "official sampler's variant under data.sampler='official')")


def official_epoch_batches(num_images: int, slots: int, epoch_length: str) -> int:
    """Batches a learner of `num_images` images and `slots` slots serves in an epoch."""
    if not num_images:
        return 0
    if epoch_length == "exact":
        return -(-num_images // slots)
    return max(1, num_images // slots)


def _ranges(starts, lengths):
    """The concatenation of range(s, s + l) for each (s, l)."""
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))


def _occurrence(values):
    """For each entry, how many equal entries come before it (0 for the first of each value)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    rank = np.empty(len(values), np.int64)
    rank[order] = np.arange(len(values)) - np.searchsorted(ordered, ordered)
    return rank


class _OfficialStream:
    """One learner's batches of an epoch, drawn one after the other (module docstring).

    Positions are indices into `cluster.images` (the cluster's rows, class after class);
    `order` holds, for each class's range of positions, its current shuffled list.
    """

    def __init__(self, cluster, method, slots, samples_per_class, key):
        self.cluster = cluster
        self.method = method
        self.slots = slots
        self.m = samples_per_class
        self.key = key
        self.sizes = cluster.sizes
        self.starts = cluster.starts
        self._small_classes = bool((cluster.sizes < samples_per_class).any())
        self._repeats = False    # whether the batch being drawn may hold an image twice
        self._drawn = None   # batches drawn since the epoch's start; None: not started

    def batch(self, index):
        """(images, primary) [slots] of the learner's `index`-th batch of the epoch."""
        if self._drawn is None or index < self._drawn:
            self._restart()
        while self._drawn < index:
            self._draw()
        return self._draw()

    def _restart(self):
        self.rng = np.random.default_rng([*self.key])
        n = len(self.cluster.images)
        class_of = np.repeat(np.arange(len(self.sizes)), self.sizes)
        self.order = np.lexsort((self.rng.random(n), class_of))   # shuffled within classes
        self.cursor = np.zeros(len(self.sizes), np.int64)
        self.seen = np.zeros(n, bool)
        self._drawn = 0

    def _draw(self):
        positions = self._draw_cvpr() if self.method == "cvpr" else self._draw_pami()
        self._drawn += 1
        primary = ~self.seen[positions]
        self.seen[positions] = True
        if self._repeats:                    # an image twice in the batch: its first slot only
            first = np.zeros(len(positions), bool)
            first[np.unique(positions, return_index=True)[1]] = True
            primary &= first
        return self.cluster.images[positions], primary

    def _reshuffle(self, classes):
        """New shuffled lists, cursors at 0, for `classes` (distinct)."""
        if not len(classes):
            return
        sizes = self.sizes[classes]
        where = _ranges(self.starts[classes], sizes)
        # Sorting class index + a uniform key in [0, 1/2) shuffles each class's range in place
        # (1/2: the sum never rounds up to the next class's index).
        keys = np.repeat(np.arange(len(classes)), sizes) + 0.5 * self.rng.random(len(where))
        self.order[where] = self.order[where[np.argsort(keys)]]
        self.cursor[classes] = 0

    def _draw_cvpr(self):
        num_classes, p = len(self.sizes), self.slots // self.m
        self._repeats = num_classes < p or self._small_classes
        if num_classes >= p:
            return self._serve_cvpr(self.rng.choice(num_classes, p, replace=False)).reshape(-1)
        # Fewer classes than P: drawn with replacement, and a class picked twice is served
        # twice in turn, the second time from where the first left its cursor.
        classes = self.rng.choice(num_classes, p, replace=True)
        rank = _occurrence(classes)
        out = np.empty((p, self.m), np.int64)
        for r in range(int(rank.max()) + 1):
            rows = rank == r
            out[rows] = self._serve_cvpr(classes[rows])
        return out.reshape(-1)

    def _serve_cvpr(self, picked):
        """[len(picked), M] positions the CVPR rule gives each of `picked` (distinct)."""
        m = self.m
        n, start, cur = self.sizes[picked], self.starts[picked], self.cursor[picked]
        short = cur + m > n              # only classes of fewer than M images
        if short.any():
            out = np.empty((len(picked), m), np.int64)
            seq = ~short
            out[seq] = self.order[(start + cur)[seq, None] + np.arange(m)]
            out[short] = start[short, None] + self.rng.integers(
                0, n[short, None], (int(short.sum()), m))
        else:
            out = self.order[(start + cur)[:, None] + np.arange(m)]
        cur = cur + m
        self.cursor[picked] = cur
        self._reshuffle(picked[cur + m > n])
        return out

    def _draw_pami(self):
        b, m, rng = self.slots, self.m, self.rng
        num_classes = len(self.sizes)
        self._repeats = False
        per_class, p = (m, b // m) if num_classes >= b // m else (b // num_classes, num_classes)
        extra = b - per_class * p
        bonus = rng.choice(num_classes, extra, replace=False) if extra else np.zeros(0, int)
        classes = rng.choice(num_classes, p, replace=False)
        n, start, cur = self.sizes[classes], self.starts[classes], self.cursor[classes]
        t = np.minimum(per_class + np.isin(classes, bonus), n)
        rand = cur + t > n               # fewer than t left: t distinct images at random
        seq = ~rand
        width = int(t.max())
        cols = np.arange(width)
        pos = np.zeros((p, width), np.int64)
        last = (start + n - 1)[seq, None]
        pos[seq] = self.order[np.minimum((start + cur)[seq, None] + cols, last)]
        if rand.any():
            size = n[rand]
            keys = rng.random((len(size), max(int(size.max()), width)))
            keys[np.arange(keys.shape[1]) >= size[:, None]] = 2.0   # past the class: last
            pos[rand] = start[rand, None] + np.argsort(keys, axis=1)[:, :width]
        cur = cur + t
        self.cursor[classes] = cur
        self._reshuffle(classes[cur >= n])
        positions = pos[cols < t[:, None]]   # class after class, t images each
        if len(positions) < b:
            positions = np.concatenate([positions, self._fill(positions, b - len(positions))])
        return positions

    def _fill(self, taken, need):
        """`need` positions of images not in `taken`, uniformly without replacement."""
        n, rng = len(self.order), self.rng
        inside = np.unique(taken)
        free = n - len(inside)
        if free >= need:
            # The first `need` positions outside `taken` of a random ordered sample of
            # need + len(inside) positions: a uniform draw without replacement among the free.
            draw = rng.choice(n, need + len(inside), replace=False)
            return draw[~np.isin(draw, inside)][:need]
        self._repeats = True
        if not free:
            return rng.integers(0, n, need)
        return rng.choice(np.setdiff1d(np.arange(n), inside), need, replace=True)


class _OfficialDraws:
    """What the two official samplers change in their schedule's sampler: the streams and
    the epoch length."""

    def __init__(self, labels, assignment, num_learners, batch_size, samples_per_class, seed,
                 epoch_length="exact", method="cvpr"):
        check_method(method)
        self.method = method
        super().__init__(labels, assignment, num_learners, batch_size, samples_per_class, seed,
                         epoch_length)

    def _epoch_batches(self, cluster):
        return official_epoch_batches(len(cluster.images), self.slots, self.epoch_length)

    def _streams(self, epoch):
        return [_OfficialStream(c, self.method, self.slots, self.m, (self.seed, epoch, k))
                for k, c in enumerate(self.clusters)]


class OfficialJointSampler(_OfficialDraws, JointSampler):
    """`joint` schedule, each learner's slot block filled by its official stream.

    Args as JointSampler, and `method`: 'cvpr' or 'pami' (`divide.schedule`), the draw.
    """


class OfficialRoundRobinSampler(_OfficialDraws, RoundRobinSampler):
    """`round_robin` schedule, each learner's batches drawn by its official stream.

    Args as RoundRobinSampler, and `method`: 'cvpr' or 'pami' (`divide.schedule`), the draw.
    """
