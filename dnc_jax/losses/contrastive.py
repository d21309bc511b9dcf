"""Contrastive loss (Hadsell et al. 2006) over every pair inside a learner.

Not in the official D&C code (docs/method.md §3 lists its losses); the formulation chosen here:
  positive pair: relu(d - pos_margin)^2   (pos_margin = 0 gives Hadsell's d^2)
  negative pair: relu(neg_margin - d)^2
with d = sqrt(||a-b||^2 + 1e-8). Learner k's loss is the mean over its non-zero terms (ordered
pairs, so each pair counts twice, which leaves the mean unchanged), the normalisation the margin
and triplet losses use; averaging over all pairs instead would let the many easy negatives
dilute the gradient as the batch grows.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from dnc_jax.losses.common import (batch_arrays, loss_distances, pair_masks,
                                   pairwise_squared_distances, per_learner_sum, safe_mean)


def contrastive_loss(embeddings, labels, learners, valid, rng, loss_params=None, *, n_dim=None,
                     masks=None, num_learners_max, pos_margin=0.0, neg_margin=1.0):
    """Sum over learners of each learner's mean non-zero pair term.

    Returns (loss, aux) with aux['per_learner'] [K_max], aux['active'] [K_max] (non-zero pair
    terms) and aux['pairs'] (valid ordered pairs in the batch).
    """
    del rng, loss_params, n_dim, masks
    labels, learners, valid = batch_arrays(labels, learners, valid)
    positives, negatives = pair_masks(labels, learners, valid)
    d = loss_distances(pairwise_squared_distances(embeddings))
    pos_terms = jnp.where(positives, jax.nn.relu(d - pos_margin) ** 2, 0.0)
    neg_terms = jnp.where(negatives, jax.nn.relu(neg_margin - d) ** 2, 0.0)
    terms = pos_terms + neg_terms
    row_sums = jnp.sum(terms, axis=1)
    row_active = jnp.sum((terms > 0).astype(jnp.float32), axis=1)
    sums = per_learner_sum(row_sums, learners, valid, num_learners_max)
    active = per_learner_sum(row_active, learners, valid, num_learners_max)
    per_learner = safe_mean(sums, active)
    aux = {"per_learner": per_learner, "active": active,
           "pairs": jnp.sum((positives | negatives).astype(jnp.int32))}
    return jnp.sum(per_learner), aux
