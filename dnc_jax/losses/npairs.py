"""N-pairs loss with a learnable scale, per learner (PAMI `NPairsLoss`, docs/method.md §3.4).

Row i is a softmax over alpha <f_i, f_j> for the j != i of its learner, with soft targets spread
uniformly over its positives; rows without a positive are dropped and learner k's loss is the
mean over its remaining rows. alpha (loss_params['alpha'], init 1.0) is learnable; PAMI trains
it with its own learning rate (`--lr-alpha`, default 1.0).
"""
from __future__ import annotations

import jax.numpy as jnp

from dnc_jax.losses.common import (batch_arrays, masked_logsumexp, pair_masks,
                                   per_learner_sum, safe_mean, same_learner)


def init_npairs_params(alpha: float):
    return {"alpha": jnp.asarray(alpha, jnp.float32)}


def npairs_loss(embeddings, labels, learners, valid, rng, loss_params=None, *, n_dim=None,
                masks=None, num_learners_max):
    """Returns (loss, aux) with aux['per_learner'] [K_max] and aux['active'] [K_max] (rows that
    have a positive)."""
    del rng, n_dim, masks
    labels, learners, valid = batch_arrays(labels, learners, valid)
    if loss_params is None or "alpha" not in loss_params:
        raise ValueError("loss.name='npairs' needs loss_params from init_loss_params")
    positives, _ = pair_masks(labels, learners, valid)
    others = same_learner(learners, valid) & ~jnp.eye(labels.shape[0], dtype=bool)
    logits = loss_params["alpha"] * (embeddings @ embeddings.T)
    n_pos = jnp.sum(positives.astype(logits.dtype), axis=1)
    has_positive = n_pos > 0
    target = jnp.sum(jnp.where(positives, logits, 0.0), axis=1) / jnp.maximum(n_pos, 1.0)
    rows = jnp.where(has_positive, masked_logsumexp(logits, others) - target, 0.0)
    sums = per_learner_sum(rows, learners, valid, num_learners_max)
    active = per_learner_sum(has_positive.astype(rows.dtype), learners, valid, num_learners_max)
    per_learner = safe_mean(sums, active)
    return jnp.sum(per_learner), {"per_learner": per_learner, "active": active}
