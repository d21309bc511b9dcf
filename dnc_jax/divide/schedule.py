"""When to cluster, how many learners, when to freeze, and when to conquer: the phase plan.

Two plans, each as the official code runs it:

- `cvpr` (docs/method.md §1.2): cluster into K before epoch 0 with the starting model (or, with
  `warmup_epochs` W > 0, train one learner on all the data, the whole embedding, for epochs
  0..W-1 and cluster before epoch W with the warmed-up model; not in the papers), recluster
  every `recluster_every` epochs, train the whole embedding on clustered batches from
  `full_embedding_epoch`, and from `finetune_epoch` train one learner on the whole training set.
- `pami` (docs/method.md §1.3, `top_bot`): start with K = 1 and recluster every `recluster_every`
  epochs (epoch 0 included); at every recluster after epoch 0 while K < K_final, split each
  cluster in two (K doubles: 1, 2, 4, ... K_final); the backbone's learning rate is 0 on the
  first `freeze_epochs` epochs of every recluster period (with the defaults, every even epoch,
  for the whole run); the whole embedding from `full_embedding_epoch`; no finetune phase.
"""
from __future__ import annotations

import dataclasses

from dnc_jax import defaults
from dnc_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Phase:
    epoch: int
    num_learners: int      # clusters / learners active in this epoch
    recluster: bool        # run embed -> k-means -> match before this epoch's training
    split: bool            # then split every cluster in two (K doubled this epoch)
    whole_dataset: bool    # one cluster holding every image, no k-means
    full_embedding: bool   # learners' losses see the whole embedding (conquer)
    freeze_backbone: bool  # backbone learning rate 0 this epoch (its Adam moments still move)


def _at_or_after(epoch, start):
    return start is not None and start >= 0 and epoch >= start


def phase(divide_config, epoch: int) -> Phase:
    """The phase of `epoch` under the `divide` section (a partial one is completed from
    `dnc_jax.defaults`)."""
    c = defaults.filled(divide_config, "divide")
    if c.num_learners < 1:
        raise ConfigError(f"divide.num_learners={c.num_learners} must be at least 1 (1: the "
                          f"plain baseline)")
    plan = c.schedule
    if plan == "cvpr":
        return _cvpr_phase(c, epoch)
    if plan == "pami":
        return _pami_phase(c, epoch)
    raise ConfigError(f"divide.schedule must be 'cvpr' or 'pami', got {plan!r}")


def _cvpr_phase(c, epoch):
    warmup = c.warmup_epochs
    if warmup < 0:
        raise ConfigError(f"divide.warmup_epochs must be >= 0, got {warmup}")
    warming = epoch < warmup
    finetuning = _at_or_after(epoch, c.finetune_epoch)
    one = warming or finetuning
    full = one or _at_or_after(epoch, c.full_embedding_epoch)
    num_learners = 1 if one else c.num_learners
    since = epoch - warmup  # reclustering counts from the first clustering
    recluster = (not one and num_learners > 1 and
                 (since == 0 or (c.recluster_every > 0 and since % c.recluster_every == 0)))
    return Phase(epoch, num_learners, recluster, split=False,
                 whole_dataset=one or num_learners == 1, full_embedding=full,
                 freeze_backbone=False)


def _pami_phase(c, epoch):
    if c.warmup_epochs:
        raise ConfigError("divide.warmup_epochs is for the 'cvpr' schedule; 'pami' already "
                         "trains one learner for its first divide.recluster_every epochs")
    every = c.recluster_every
    if every <= 0:
        raise ConfigError("divide.schedule='pami' needs divide.recluster_every > 0")
    final = c.num_learners
    if final & (final - 1):
        raise ConfigError(f"divide.num_learners={final} must be a power of two for the 'pami' "
                          f"schedule (K doubles from 1)")
    num_learners = min(final, 2 ** (epoch // every))
    recluster = epoch % every == 0
    split = recluster and epoch > 0 and num_learners > min(final, 2 ** (epoch // every - 1))
    freeze = (epoch % every) < c.freeze_epochs
    return Phase(epoch, num_learners, recluster, split=split, whole_dataset=False,
                 full_embedding=_at_or_after(epoch, c.full_embedding_epoch),
                 freeze_backbone=freeze)


def needs_new_assignment(divide_config, epoch: int) -> bool:
    """True when the cluster assignment changes before `epoch`.

    A resumed run restores the assignment in force with its checkpoint, so a resume in the
    middle of a phase does not recluster (that would change the run).
    """
    p = phase(divide_config, epoch)
    if p.recluster or epoch == 0:
        return True
    return p.whole_dataset and not phase(divide_config, epoch - 1).whole_dataset
