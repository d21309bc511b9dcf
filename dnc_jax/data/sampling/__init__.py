"""Sampling: which images make each batch of an epoch.

In: the training labels, the clustering's assignment of images to learners, the batch layout
(`data.batch_size`, `data.samples_per_class`, K learners) and the seed. Out: each epoch's plan
of `Batch`es (image indices, the learner of each slot, which slots are padding), a pure
function of (seed, epoch, step) so a resumed epoch draws what an uninterrupted one does.

`sampler.py` deals every usable image once an epoch ('exact'); `official_sampler.py` draws
classes uniformly for every batch as the papers' code does ('official'); `make_sampler` picks
one from the config.
"""
from __future__ import annotations

from dnc_jax.data.sampling import official_sampler
from dnc_jax.data.sampling.sampler import (SCHEDULES, JointSampler, RoundRobinSampler,
                                           check_sampler)
from dnc_jax.errors import ConfigError


def make_sampler(schedule: str, labels, assignment, num_learners, batch_size,
                 samples_per_class, seed, epoch_length="exact", sampler="exact", method="cvpr"):
    """The sampler of `divide.learner_schedule` ('joint' or 'round_robin'), its epochs as
    long as `data.epoch_length` says ('exact' or 'official': sampler.py's docstring), its draws
    `data.sampler`'s: 'exact' (sampler.py) or 'official' (official_sampler.py, whose variant
    `method`, 'cvpr' or 'pami', is `divide.schedule`)."""
    check_sampler(sampler)
    classes = {"joint": JointSampler, "round_robin": RoundRobinSampler}
    if schedule not in classes:
        raise ConfigError(f"divide.learner_schedule={schedule!r} is not one of {SCHEDULES}")
    if sampler == "official":
        official = {"joint": official_sampler.OfficialJointSampler,
                    "round_robin": official_sampler.OfficialRoundRobinSampler}
        return official[schedule](labels, assignment, num_learners, batch_size,
                                  samples_per_class, seed, epoch_length, method=method)
    return classes[schedule](labels, assignment, num_learners, batch_size, samples_per_class,
                             seed, epoch_length)
