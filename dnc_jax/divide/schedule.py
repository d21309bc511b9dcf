"""When to cluster, how many learners, and when to conquer: the epoch-by-epoch phase plan.

The CVPR schedule (METHOD.md §1.2): cluster before epoch 0 with the starting model, recluster
every `recluster_every` epochs, train the whole embedding on clustered batches from
`full_embedding_epoch`, and from `finetune_epoch` train one learner on the whole training set.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Phase:
    epoch: int
    num_learners: int      # clusters / learners active in this epoch
    recluster: bool        # run embed -> k-means -> match before this epoch's training
    whole_dataset: bool    # finetune: one cluster holding every image, no k-means
    full_embedding: bool   # learners' losses see the whole embedding (conquer)


def phase(divide_config, epoch: int) -> Phase:
    c = divide_config
    finetuning = c.finetune_epoch is not None and c.finetune_epoch >= 0 and epoch >= c.finetune_epoch
    full = finetuning or (c.full_embedding_epoch is not None and c.full_embedding_epoch >= 0
                          and epoch >= c.full_embedding_epoch)
    num_learners = 1 if finetuning else c.num_learners
    # The assignment changes at epoch 0 (initial clustering), at every recluster epoch, and
    # once when the finetune starts (a single cluster over all data).
    recluster = (not finetuning and num_learners > 1 and
                 (epoch == 0 or (c.recluster_every > 0 and epoch % c.recluster_every == 0)))
    whole = finetuning or num_learners == 1
    return Phase(epoch, num_learners, recluster, whole, full)


def needs_new_assignment(divide_config, epoch: int) -> bool:
    """True when the cluster assignment changes before `epoch`.

    A resumed run restores the assignment in force with its checkpoint, so a resume in the
    middle of a phase does not recluster (that would change the run).
    """
    p = phase(divide_config, epoch)
    if p.recluster or epoch == 0:
        return True
    return p.whole_dataset and not phase(divide_config, epoch - 1).whole_dataset
