"""Cluster-aware class-balanced batches: the `joint` and `round_robin` schedules
(docs/decisions.md).

Learner k trains on cluster k: the images whose `assignment` is k (-1 = set aside, e.g. by
`dnc_jax.divide.recluster.remove_singletons`). M = `samples_per_class`.

Chunks. A *pass* over a cluster shuffles the images of each class and cuts them, in that order,
into chunks of M. A class of n >= M images whose n is not a multiple of M has a short last chunk;
it is topped up with the first M - (n mod M) images of the same shuffled order, which are not in
that chunk, so a chunk never holds an image twice (the official `ClassBalancedSampler` drew with
replacement and duplicated images of small classes, docs/method.md §7 item 5). The top-up images are
*fillers*: every image of the class is still a *primary* draw exactly once in the pass. A class
of n < M images keeps one short chunk of its n images and the spare slots are padding
(valid=False). We do not follow PAMI's `adaptbalanced`/`sample_other` (filling those slots with
images of other classes): such images would have no positive in the batch and would only be
extra negatives. With M = 2 (PAMI's setting) no chunk is ever short, because singleton removal
leaves every class of a cluster with at least 2 images.

Batches of a pass. A learner batch holds P chunks (P*M slots). A pass of n chunks is dealt into
L = ceil(n / P) batches holding ceil(n/L) or floor(n/L) chunks each: classes are visited in a
random order and each gets the batches that have received the fewest chunks so far (ties broken
at random). So a class of q chunks lands in q different batches whenever q <= L, which keeps
the classes of a batch distinct and, with it, its images. A class with more chunks than the pass
has batches (a cluster dominated by one class, or holding fewer than P classes) must repeat in
a batch for the pass to fit in L batches; it is spread evenly, at most ceil(q/L) chunks per batch.
Every pass is a pure function of (seed, epoch, learner, pass index).

`joint` (JointSampler). A batch of B slots is the [K, P*M] grouping flattened: learner k owns
slots [k*S, (k+1)*S), S = (B // K) rounded down to a multiple of M, P = S / M; slots from K*S
on are padding. An epoch is `steps_per_epoch` = max_k L_k steps. Learner k serves pass 0 in its
first L_k steps, so every usable image is drawn as a primary exactly once per epoch; a learner
with L_k < steps_per_epoch then starts pass 1, 2, ... (the official `max` merge, whose short
loaders restart). For the learner(s) with the most batches, pass 0 is the whole epoch: each of
its images is drawn exactly once, fillers aside. A learner whose cluster is empty owns padding.

`round_robin` (RoundRobinSampler, the official schedule, docs/method.md §1.1). Every batch belongs
to one learner: P = B // M chunks (slots past P*M are padding). With R = max_c L_c rounds, step s of
the epoch is round s // K' of learner turns[s % K'], where `turns` lists, in increasing order, the
K' learners whose cluster is not empty (an empty cluster would give an all-padding batch, hence an
optimiser step on nothing). An epoch is K' * R steps, one optimiser step each; a learner serves pass
0 in its first L_c rounds, then starts again with pass 1 (the official loader re-created when it
runs out).

Epoch length (`data.epoch_length`). 'exact' (above): a learner's epoch is its pass, L_k
batches, so every usable image is a primary draw once. 'official': L_k = max(1, n_k // (P*M))
batches for a cluster of n_k images, the official `ClassBalancedSampler`'s len(dataset) //
batch_size; the epoch takes the first of them from the pass (a random subset of its chunks).
Where classes are small the top-ups make a pass longer than n_k / (P*M) batches (SOP, 4 images a
class: about 1.5 times), so 'official' epochs see about as many images as the official code's,
and 'exact' ones every image. The schedules are otherwise the same.

Resuming. `epoch(e, start_step)` yields exactly the batches `epoch(e)` yields from step
`start_step` on; it plans only the passes those steps touch.

Sampler (`data.sampler`). All of the above is the 'exact' sampler. 'official' keeps the two
schedules, their layouts and the Batch output, but fills each learner's slots with the papers'
own draw, classes picked uniformly for every batch (official_sampler.py; `make_sampler` routes).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from dnc_jax.errors import ConfigError, DataError

SCHEDULES = ("joint", "round_robin")
EPOCH_LENGTHS = ("exact", "official")
SAMPLERS = ("exact", "official")


@dataclasses.dataclass(frozen=True)
class Batch:
    indices: np.ndarray   # int32 [B] rows of the image set (padding slots repeat a real row)
    learners: np.ndarray  # int32 [B] learner of each slot
    valid: np.ndarray     # bool  [B] False for padding
    primary: np.ndarray   # bool  [B] the image's one primary draw of the epoch (pass 0, no filler;
                          # 'official' sampler: the image's first draw of the epoch)


def learner_slots(batch_size: int, num_learners: int, samples_per_class: int) -> int:
    """Slots per learner; raises if the batch cannot hold one class per learner."""
    if samples_per_class < 1:
        raise ConfigError(f"data.samples_per_class={samples_per_class} must be at least 1")
    per = (batch_size // num_learners) // samples_per_class * samples_per_class
    if per < samples_per_class:
        raise ConfigError(
            f"data.batch_size={batch_size} cannot hold {num_learners} learners x "
            f"{samples_per_class} images per class (data.samples_per_class); "
            f"use a batch of at least {num_learners * samples_per_class}")
    return per


def check_batch_layout(batch_size: int, samples_per_class: int, max_learners: int,
                       schedule: str, min_classes: int = 2) -> None:
    """Refuses, before any data loads, a batch that gives some learner fewer than `min_classes`,
    or that is not a whole number of classes for each learner.

    For a pair-based loss a learner batch of one class has no negative pair: the loss is 0 and
    the step trains nothing, silently (proxy losses, whose negatives are proxies, pass
    min_classes=1). Under 'joint' the batch is split among the learners, so this is checked at
    the largest K of the run (PAMI's K grows to divide.num_learners, by doubling: a batch of
    whole classes for K learners is one for K/2 too). Slots that hold no whole class would be
    padding in every step (`learner_slots` rounds down), computed and thrown away.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"divide.learner_schedule={schedule!r} is not one of {SCHEDULES}")
    if max_learners < 1:
        raise ConfigError(f"divide.num_learners={max_learners} must be at least 1 (1: the "
                          f"plain baseline)")
    sharing = max_learners if schedule == "joint" else 1
    classes = learner_slots(batch_size, sharing, samples_per_class) // samples_per_class
    if classes >= min_classes:
        _check_whole_classes(batch_size, samples_per_class, sharing)
        return
    need = sharing * min_classes * samples_per_class
    if schedule == "joint":
        raise ConfigError(
            f"data.batch_size={batch_size} gives each of the {sharing} learners of a 'joint' "
            f"step {classes} class of {samples_per_class} images (data.samples_per_class): no "
            f"negatives, nothing to learn; use data.batch_size >= {need} (the papers: "
            f"{sharing} x 80) or divide.learner_schedule=round_robin")
    raise ConfigError(
        f"data.batch_size={batch_size} holds one class of {samples_per_class} images "
        f"(data.samples_per_class): no negatives, nothing to learn; use data.batch_size >= "
        f"{need}")


def _check_whole_classes(batch_size: int, samples_per_class: int, sharing: int) -> None:
    step = sharing * samples_per_class
    padding = batch_size % step
    if not padding:
        return
    below = batch_size - padding
    if sharing > 1:
        raise ConfigError(
            f"data.batch_size={batch_size} is not a whole number of classes for each of the "
            f"{sharing} learners of a 'joint' step ({sharing} x data.samples_per_class="
            f"{samples_per_class}): {padding} slots would be padding; use a multiple of "
            f"{step}, e.g. {below} or {below + step}")
    raise ConfigError(
        f"data.batch_size={batch_size} is not a whole number of classes of "
        f"data.samples_per_class={samples_per_class} images: {padding} slots would be padding; "
        f"use a multiple of {samples_per_class}, e.g. {below} or {below + step}")


def check_enough_classes(labels, num_learners: int, min_classes: int = 2) -> None:
    """Refuses, before anything is written, a training set too small for K learners.

    A learner trains on the classes of its cluster that have at least two images there (a
    positive pair); k-means can give each of the K clusters `min_classes` such classes only if
    the training set has K x `min_classes` of them. Fewer, and some learner is left with
    nothing to learn (or every image is set aside), whatever the clustering does.
    """
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    usable = int((counts >= 2).sum())
    need = num_learners * min_classes
    if usable >= need:
        return
    if usable < min_classes:
        raise DataError(f"the training split has {usable} class(es) with at least two images; "
                        f"training needs at least {min_classes} (a positive pair and a "
                        f"negative class)")
    raise DataError(f"the training split has {usable} classes with at least two images, too "
                    f"few for divide.num_learners={num_learners} ({min_classes} per learner: "
                    f"{need}); use --config.divide.num_learners={usable // min_classes} or less")


def check_epoch_length(epoch_length: str) -> None:
    if epoch_length not in EPOCH_LENGTHS:
        raise ConfigError(f"data.epoch_length={epoch_length!r} is not one of {EPOCH_LENGTHS}")


def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        raise ConfigError(f"data.sampler={name!r} is not one of {SAMPLERS}")


def _deal(chunks_per_class, num_batches, rng):
    """Batch (0..L-1) of each chunk, chunks listed class after class.

    Balanced greedy: `level` is a random order of the batches and the first `filled` of them
    have one chunk more than the rest; a class takes the next rows of that order, and when the
    level runs out the new level starts with batches this class has not used yet.
    """
    batches = num_batches
    level = rng.permutation(batches).tolist()
    filled = 0
    out = []
    for q in chunks_per_class:
        whole, rest = divmod(q, batches)
        out.extend(level * whole)  # more chunks than batches: one in every batch first
        if filled + rest <= batches:
            out.extend(level[filled:filled + rest])
            filled += rest
            continue
        owed = level[filled:]           # batches still one chunk short in this level
        done = level[:filled]
        rng.shuffle(done)
        need = rest - len(owed)         # taken from the next level, not from `owed`
        out.extend(owed)
        out.extend(done[:need])
        others = done[need:] + owed
        rng.shuffle(others)
        level, filled = done[:need] + others, need
    return np.asarray(out, np.int64)


class _Cluster:
    """The images of one cluster grouped by class, and the plan of one pass over them."""

    def __init__(self, images_by_class, class_sizes, samples_per_class, chunks_per_batch):
        self.images = images_by_class                    # int64 [n], class after class
        self.sizes = class_sizes                         # int64 [C]
        self.starts = np.cumsum(class_sizes) - class_sizes
        self.m = samples_per_class
        self.p = chunks_per_batch
        self.chunks = -(-class_sizes // samples_per_class)
        self.num_chunks = int(self.chunks.sum())
        self.num_batches = -(-self.num_chunks // chunks_per_batch)  # L; 0 for an empty cluster

    def epoch_batches(self, epoch_length: str) -> int:
        """Batches this cluster's learner serves in an epoch: its pass ('exact'), or the
        official sampler's len(cluster) // batch ('official', at least 1; never past a pass)."""
        if epoch_length == "exact" or not self.num_batches:
            return self.num_batches
        return min(self.num_batches, max(1, int(self.sizes.sum()) // (self.p * self.m)))

    def plan_pass(self, rng):
        """(images, primary) [L, P*M]: the pass's batches in order; -1 marks padding."""
        m, sizes = self.m, self.sizes
        # Shuffle within classes: one sort by (class, random key) instead of C permutations.
        class_of_image = np.repeat(np.arange(len(sizes)), sizes)
        shuffled = self.images[np.lexsort((rng.random(len(self.images)), class_of_image))]
        class_order = rng.permutation(len(sizes))
        per_class = self.chunks[class_order]
        chunk_class = np.repeat(class_order, per_class)
        first_chunk = np.repeat(np.cumsum(per_class) - per_class, per_class)
        chunk_in_class = np.arange(self.num_chunks) - first_chunk
        position = chunk_in_class[:, None] * m + np.arange(m)        # [n_chunks, M]
        size = sizes[chunk_class][:, None]
        primary = position < size
        # Past the end of a class of >= M images, wrap round to its first images (fillers).
        valid = primary | (size >= m)
        images = np.where(valid, shuffled[self.starts[chunk_class][:, None] + position % size], -1)

        batch = _deal(per_class.tolist(), self.num_batches, rng)
        order = np.argsort(batch, kind="stable")
        batch = batch[order]
        slot = np.arange(self.num_chunks) - np.searchsorted(batch, batch)
        plan = np.full((self.num_batches, self.p, m), -1, np.int64)
        plan_primary = np.zeros((self.num_batches, self.p, m), bool)
        plan[batch, slot] = images[order]
        plan_primary[batch, slot] = primary[order]
        return plan.reshape(self.num_batches, -1), plan_primary.reshape(self.num_batches, -1)


class _Stream:
    """A learner's endless sequence of batches in one epoch: pass 0, pass 1, ..."""

    def __init__(self, cluster, seed, epoch, learner):
        self.cluster = cluster
        self.key = (seed, epoch, learner)
        self.pass_index, self.plan = None, None

    def batch(self, index):
        """(images, primary) of the learner's `index`-th batch of the epoch."""
        pass_index, row = divmod(index, self.cluster.num_batches)
        if pass_index != self.pass_index:
            rng = np.random.default_rng([*self.key, pass_index])
            self.pass_index, self.plan = pass_index, self.cluster.plan_pass(rng)
        images, primary = self.plan
        return images[row], primary[row] & (pass_index == 0)


class _ClusterSampler:
    """What both schedules share: per-cluster class lists, argument checks, batch assembly."""

    def __init__(self, labels, assignment, num_learners, batch_size, samples_per_class, seed,
                 slots_per_learner, epoch_length="exact"):
        check_epoch_length(epoch_length)
        self.epoch_length = epoch_length
        labels = np.asarray(labels)
        assignment = np.asarray(assignment)
        if labels.shape != assignment.shape or labels.ndim != 1:
            raise ValueError(f"labels {labels.shape} and assignment {assignment.shape} must be "
                             "1-D arrays of the same length")
        if assignment.size and assignment.max() >= num_learners:
            raise ValueError(f"assignment holds cluster {int(assignment.max())} but there are "
                             f"only {num_learners} learners")
        self.num_learners = num_learners
        self.batch_size = batch_size
        self.m = samples_per_class
        self.seed = seed
        self.slots = slots_per_learner
        self.clusters = self._group(labels, assignment, slots_per_learner // samples_per_class)
        if not any(c.num_chunks for c in self.clusters):
            raise DataError("no usable training images: every image was set aside (each class "
                            "has a single image in its cluster)")

    def _group(self, labels, assignment, chunks_per_batch):
        rows = np.flatnonzero(assignment >= 0)
        rows = rows[np.lexsort((labels[rows], assignment[rows]))]   # by cluster, then class
        cluster_ends = np.searchsorted(assignment[rows], np.arange(self.num_learners), "right")
        clusters, begin = [], 0
        for end in cluster_ends:
            members = rows[begin:end]
            new_class = np.flatnonzero(np.diff(labels[members])) + 1
            sizes = np.diff(np.concatenate([[0], new_class, [len(members)]])) if len(members) \
                else np.zeros(0, np.int64)
            clusters.append(_Cluster(members.astype(np.int64), sizes.astype(np.int64), self.m,
                                     chunks_per_batch))
            begin = end
        return clusters

    def _epoch_batches(self, cluster):
        """Batches `cluster`'s learner serves in an epoch (0 for an empty cluster)."""
        return cluster.epoch_batches(self.epoch_length)

    def _check_start(self, start_step):
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step={start_step} is outside the epoch's "
                             f"{self.steps_per_epoch} steps")

    def _streams(self, epoch):
        return [_Stream(c, self.seed, epoch, k) for k, c in enumerate(self.clusters)]

    def _finish(self, indices, learners, primary):
        valid = indices >= 0
        # Padding slots show a real image so train-mode BatchNorm statistics stay sane; the
        # loss never sees them.
        indices = np.where(valid, indices, indices[valid][0] if valid.any() else 0)
        return Batch(indices.astype(np.int32), learners, valid, primary & valid)


class JointSampler(_ClusterSampler):
    """`joint` schedule: every batch is split among the K learners (module docstring).

    Args:
      labels: int [N] class of each image.
      assignment: int [N] cluster (= learner) of each image, -1 for images not used.
    """

    def __init__(self, labels, assignment, num_learners, batch_size, samples_per_class, seed,
                 epoch_length="exact"):
        slots = learner_slots(batch_size, num_learners, samples_per_class)
        super().__init__(labels, assignment, num_learners, batch_size, samples_per_class, seed,
                         slots, epoch_length)
        self.classes_per_batch = slots // samples_per_class
        self.steps_per_epoch = max(self._epoch_batches(c) for c in self.clusters)
        # Padding slots past K*S get the last learner's id: any id would do, they are invalid.
        self._learners = np.minimum(np.arange(batch_size) // slots,
                                    num_learners - 1).astype(np.int32)

    def epoch(self, epoch: int, start_step: int = 0):
        """Yields the epoch's Batches from step `start_step` to `steps_per_epoch` - 1."""
        self._check_start(start_step)
        streams = self._streams(epoch)
        tail = self.batch_size - self.num_learners * self.slots
        for step in range(start_step, self.steps_per_epoch):
            parts = [s.batch(step) if s.cluster.num_batches else
                     (np.full(self.slots, -1), np.zeros(self.slots, bool)) for s in streams]
            indices = np.concatenate([p[0] for p in parts] + [np.full(tail, -1)])
            primary = np.concatenate([p[1] for p in parts] + [np.zeros(tail, bool)])
            yield self._finish(indices, self._learners.copy(), primary)


class RoundRobinSampler(_ClusterSampler):
    """`round_robin` schedule: one learner per batch, learners take turns (module docstring)."""

    def __init__(self, labels, assignment, num_learners, batch_size, samples_per_class, seed,
                 epoch_length="exact"):
        slots = learner_slots(batch_size, 1, samples_per_class)
        super().__init__(labels, assignment, num_learners, batch_size, samples_per_class, seed,
                         slots, epoch_length)
        self.classes_per_batch = slots // samples_per_class
        self.turns = [k for k, c in enumerate(self.clusters) if c.num_batches]
        self.rounds_per_epoch = max(self._epoch_batches(c) for c in self.clusters)
        self.steps_per_epoch = len(self.turns) * self.rounds_per_epoch

    def epoch(self, epoch: int, start_step: int = 0):
        """Yields the epoch's Batches from step `start_step` to `steps_per_epoch` - 1."""
        self._check_start(start_step)
        streams = self._streams(epoch)
        tail = self.batch_size - self.slots
        for step in range(start_step, self.steps_per_epoch):
            rnd, turn = divmod(step, len(self.turns))
            learner = self.turns[turn]
            images, primary = streams[learner].batch(rnd)
            indices = np.concatenate([images, np.full(tail, -1)])
            primary = np.concatenate([primary, np.zeros(tail, bool)])
            learners = np.full(self.batch_size, learner, np.int32)
            yield self._finish(indices, learners, primary)
