"""Cluster-aware class-balanced batches in the `joint` layout (DESIGN.md §4).

A batch has a fixed global size B. With K active learners, learner k owns the slots
`[k*S, (k+1)*S)` with S = (B // K) rounded down to a multiple of M (images per class); slots
past K*S are padding (valid=False). Learner k fills its slots with P = S/M classes x M images
drawn from its own cluster.

Epoch semantics: for every learner, each class of its cluster is cut into chunks of M of its
images (in a fresh random order); an epoch is as many steps as the learner with the most chunks
needs to serve all of its chunks once, so every usable image is seen about once per epoch
(a chunk deferred to keep classes distinct may slip into the next epoch's first steps).
Learners with fewer chunks start a fresh pass over their cluster when they run out (the
official code's `max` merge). A last chunk shorter than M is topped up with other images of
the same class when the class has at least M images, so no image repeats within a batch; a
class with fewer than M images keeps a short chunk and the spare slots are padding.
Classes within one learner's part of a batch are distinct whenever the cluster has enough
classes. Everything is a deterministic function of (seed, epoch).
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Batch:
    indices: np.ndarray   # int32 [B] rows of the image set (padding slots repeat a real row)
    learners: np.ndarray  # int32 [B]
    valid: np.ndarray     # bool  [B]


def learner_slots(batch_size: int, num_learners: int, samples_per_class: int) -> int:
    """Slots per learner; raises if the batch cannot hold one class per learner."""
    per = (batch_size // num_learners) // samples_per_class * samples_per_class
    if per < samples_per_class:
        raise ValueError(
            f"data.batch_size={batch_size} cannot hold {num_learners} learners x "
            f"{samples_per_class} images per class (data.samples_per_class); "
            f"use a batch of at least {num_learners * samples_per_class}")
    return per


class JointSampler:
    """Batches for one assignment of images to clusters (learner k trains on cluster k).

    Args:
      labels: int [N] class of each image.
      assignment: int [N] cluster (= learner) of each image, -1 for images not used.
    """

    def __init__(self, labels, assignment, num_learners, batch_size, samples_per_class, seed):
        self.labels = np.asarray(labels)
        self.assignment = np.asarray(assignment)
        self.num_learners = num_learners
        self.batch_size = batch_size
        self.m = samples_per_class
        self.seed = seed
        self.slots = learner_slots(batch_size, num_learners, samples_per_class)
        self.classes_per_batch = self.slots // self.m
        self.members = [self._class_members(k) for k in range(num_learners)]
        chunks = [sum(-(-len(ix) // self.m) for ix in members.values())
                  for members in self.members]
        if not any(chunks):
            raise ValueError("no usable training images: every image was set aside "
                             "(each class has a single image in its cluster)")
        # A cluster emptied by singleton removal leaves its learner's slots as padding.
        self.steps_per_epoch = max(-(-c // self.classes_per_batch) for c in chunks)

    def _class_members(self, cluster):
        rows = np.flatnonzero(self.assignment == cluster)
        members = collections.defaultdict(list)
        for row in rows:
            members[int(self.labels[row])].append(int(row))
        return {c: np.asarray(ix, np.int64) for c, ix in sorted(members.items())}

    def _chunks(self, rng, cluster):
        chunks = []
        for c, rows in self.members[cluster].items():
            order = rng.permutation(rows)
            for start in range(0, len(order), self.m):
                chunk = order[start:start + self.m]
                if len(chunk) < self.m and len(order) >= self.m:
                    # Top up from this class's other images (none of them is in `chunk`).
                    chunk = np.concatenate([chunk, order[:self.m - len(chunk)]])
                chunks.append((c, chunk))
        return [chunks[i] for i in rng.permutation(len(chunks))]

    def _learner_batches(self, rng, cluster):
        """An endless stream of P-chunk groups, classes distinct within a group when possible.

        Only a window at the front of the queue is scanned for a class not yet in the group,
        so a batch costs O(P) whatever the size of the cluster; skipped chunks go back to the
        front and are served first in the next batch.
        """
        p = self.classes_per_batch
        window = 4 * p + 16
        queue = collections.deque()
        while not self.members[cluster]:
            yield []
        while True:
            if len(queue) < window:
                queue.extend(self._chunks(rng, cluster))
            front = [queue.popleft() for _ in range(min(window, len(queue)))]
            picked, seen = [], set()
            for i, (c, _) in enumerate(front):
                if c not in seen:
                    picked.append(i)
                    seen.add(c)
                    if len(picked) == p:
                        break
            if len(picked) < p:  # the cluster has fewer than P classes: allow repeats
                rest = [i for i in range(len(front)) if i not in set(picked)]
                picked += rest[:p - len(picked)]
            chosen = set(picked)
            queue.extendleft(reversed([x for i, x in enumerate(front) if i not in chosen]))
            yield [front[i][1] for i in sorted(picked)]

    def epoch(self, epoch: int):
        """Yields `steps_per_epoch` Batches for this epoch."""
        rngs = [np.random.default_rng([self.seed, epoch, k]) for k in range(self.num_learners)]
        streams = [self._learner_batches(rngs[k], k) for k in range(self.num_learners)]
        for _ in range(self.steps_per_epoch):
            indices = np.zeros(self.batch_size, np.int32)
            learners = np.zeros(self.batch_size, np.int32)
            valid = np.zeros(self.batch_size, bool)
            for k, stream in enumerate(streams):
                base = k * self.slots
                for j, chunk in enumerate(next(stream)):
                    at = base + j * self.m
                    indices[at:at + len(chunk)] = chunk
                    valid[at:at + len(chunk)] = True
                learners[base:base + self.slots] = k
            # Padding slots show a real image so train-mode BatchNorm statistics stay sane;
            # the loss never sees them.
            indices[~valid] = indices[valid][0] if valid.any() else 0
            yield Batch(indices, learners, valid)


def remove_singletons(labels, assignment):
    """Images whose class has exactly one image in their cluster get cluster -1 (METHOD §1.1)."""
    labels = np.asarray(labels)
    assignment = np.asarray(assignment).copy()
    used = assignment >= 0
    keys = labels[used].astype(np.int64) * (int(assignment.max(initial=0)) + 1) + assignment[used]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    single = np.zeros(len(assignment), bool)
    single[np.flatnonzero(used)] = counts[inverse] == 1
    assignment[single] = -1
    return assignment
