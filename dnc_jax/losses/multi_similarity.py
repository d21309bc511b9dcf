"""Multi-similarity loss (Wang et al. 2019) with its own pair miner, per learner.

Not in the official D&C code; follows the authors' implementation. On cosine similarities
S = x x^T of the (normalised) views, for anchor i with positives P_i and negatives N_i inside
its learner:
  mining   keep n in N_i with S_in + epsilon > min_{p in P_i} S_ip,
           keep p in P_i with S_ip - epsilon < max_{n in N_i} S_in;
  loss_i = 1/alpha log(1 + sum_{kept p} exp(-alpha (S_ip - lambda)))
         + 1/beta  log(1 + sum_{kept n} exp( beta  (S_in - lambda)))
An anchor with no kept positive or no kept negative contributes nothing, and learner k's loss is
the sum of loss_i over its anchors divided by its number of valid examples (the authors divide by
the batch size, skipped anchors included). The default lambda = 0.5 is the authors' code
(`thresh`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from dnc_jax.losses.common import (batch_arrays, log1p_sum_exp, pair_masks, per_learner_sum,
                                   safe_mean)


def multi_similarity_loss(embeddings, labels, learners, valid, rng, loss_params=None, *,
                          n_dim=None, masks=None, num_learners_max, alpha=2.0, beta=50.0,
                          lam=0.5, epsilon=0.1):
    """Sum over learners of each learner's multi-similarity loss; see the module doc.

    Returns (loss, aux) with aux['per_learner'] [K_max], aux['active'] [K_max] (contributing
    anchors) and aux['pairs'] (kept positive + negative pairs).
    """
    del rng, loss_params, n_dim, masks
    labels, learners, valid = batch_arrays(labels, learners, valid)
    positives, negatives = pair_masks(labels, learners, valid)
    sim = embeddings @ embeddings.T
    mined = jax.lax.stop_gradient(sim)
    hardest_pos = jnp.min(jnp.where(positives, mined, jnp.inf), axis=1, keepdims=True)
    hardest_neg = jnp.max(jnp.where(negatives, mined, -jnp.inf), axis=1, keepdims=True)
    kept_neg = negatives & (mined + epsilon > hardest_pos)
    kept_pos = positives & (mined - epsilon < hardest_neg)
    contributes = jnp.any(kept_pos, axis=1) & jnp.any(kept_neg, axis=1)

    pos_loss = log1p_sum_exp(-alpha * (sim - lam), kept_pos) / alpha
    neg_loss = log1p_sum_exp(beta * (sim - lam), kept_neg) / beta
    anchor_loss = jnp.where(contributes, pos_loss + neg_loss, 0.0)

    sums = per_learner_sum(anchor_loss, learners, valid, num_learners_max)
    examples = per_learner_sum(jnp.ones_like(anchor_loss), learners, valid, num_learners_max)
    active = per_learner_sum(contributes.astype(jnp.float32), learners, valid, num_learners_max)
    per_learner = safe_mean(sums, examples)
    pairs = jnp.where(contributes[:, None], kept_pos | kept_neg, False)
    aux = {"per_learner": per_learner, "active": active,
           "pairs": jnp.sum(pairs.astype(jnp.int32))}
    return jnp.sum(per_learner), aux
