"""Margin loss (Wu et al. 2017) with distance-weighted negative sampling, per learner.

One flat batch holds several learners' sub-batches. Pairs only count inside one learner (a
block-diagonal validity mask), and each learner's loss is normalised by its own number of
active terms, so summing the per-learner losses equals running K separate losses
(METHOD.md §3.1, §3.3). All shapes are fixed: the sampler draws exactly `num_triplets` negatives
per anchor with a Gumbel top-k (sampling without replacement), and missing positives or
negatives are masked, never dropped, so the step never leaves the device.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# The distance used by the miner is clamped below at this value (METHOD.md §3.3) ...
_MINER_EPS = 1e-4
# ... and the one inside the loss is sqrt(||a-b||^2 + 1e-8), as in the official code.
_LOSS_EPS = 1e-8
_NEG_INF = -1e30


def pairwise_squared_distances(x):
    sq = jnp.sum(x * x, axis=-1)
    return jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


def pair_masks(labels, learners, valid):
    """(positive, negative) [B, B] masks; pairs are valid only inside one learner."""
    same_group = (learners[:, None] == learners[None, :]) & valid[:, None] & valid[None, :]
    same_label = labels[:, None] == labels[None, :]
    not_self = ~jnp.eye(labels.shape[0], dtype=bool)
    return same_group & same_label & not_self, same_group & ~same_label


def distance_weighted_logits(distances, negatives, n_dim, cutoff, nonzero_loss_cutoff):
    """Log sampling weights of each negative, proportional to 1/q(d) (METHOD.md §3.3).

    q(d) ~ d^(n-2) (1 - d^2/4)^((n-3)/2) is the density of distances between uniform points on
    the unit (n-1)-sphere. Negatives farther than `nonzero_loss_cutoff` cannot produce a loss and
    get weight 1e-6, as in the official code; non-negatives get -inf (never drawn).
    """
    d = jnp.maximum(distances, cutoff)
    n = n_dim[:, None]
    log_w = (2.0 - n) * jnp.log(d) - 0.5 * (n - 3.0) * jnp.log(
        jnp.maximum(1.0 - 0.25 * d * d, 1e-8))
    near = negatives & (d < nonzero_loss_cutoff)
    row_max = jnp.max(jnp.where(near, log_w, _NEG_INF), axis=1, keepdims=True)
    w = jnp.exp(jnp.where(near, log_w - row_max, _NEG_INF)) + 1e-9
    w = jnp.where(near, w, jnp.where(negatives, 1e-6, 0.0))
    return jnp.where(w > 0, jnp.log(jnp.maximum(w, 1e-30)), _NEG_INF)


def sample_triplets(rng, distances, positives, negatives, n_dim, num_triplets, cutoff,
                    nonzero_loss_cutoff):
    """Per anchor, `num_triplets` (positive, negative) index pairs and their validity.

    Negatives: Gumbel top-k over the distance-weighted logits, i.e. sampling without
    replacement. Positives: the anchor's positives in index order, cycled when it has fewer
    than `num_triplets` (the official code resamples them with replacement to match the
    negative count).
    """
    b = distances.shape[0]
    logits = distance_weighted_logits(distances, negatives, n_dim, cutoff, nonzero_loss_cutoff)
    gumbel = jax.random.gumbel(rng, logits.shape)
    scores, neg_idx = jax.lax.top_k(jnp.where(logits > _NEG_INF / 2, logits + gumbel, _NEG_INF),
                                    num_triplets)
    neg_ok = scores > _NEG_INF / 2

    index = jnp.arange(b)
    # Highest score = lowest index among positives.
    _, pos_sorted = jax.lax.top_k(jnp.where(positives, -index[None, :], -b - 1), num_triplets)
    n_pos = jnp.sum(positives, axis=1)
    slot = jnp.arange(num_triplets)[None, :] % jnp.maximum(n_pos, 1)[:, None]
    pos_idx = jnp.take_along_axis(pos_sorted, slot, axis=1)
    pos_ok = (n_pos > 0)[:, None]
    return pos_idx, neg_idx, pos_ok & neg_ok


def margin_loss(embeddings, labels, learners, valid, rng, *, n_dim, num_learners_max,
                num_triplets, margin=0.2, beta=1.2, cutoff=0.5, nonzero_loss_cutoff=1.4):
    """Sum over learners of each learner's normalised margin loss.

    Args:
      embeddings: [B, d] L2-normalised, each already masked by its learner.
      labels, learners: [B] int; valid: [B] bool (padding slots are False).
      n_dim: [B] dimensionality each anchor's learner lives in (for the sampling weights).
    Returns:
      (loss, aux) with aux['per_learner'] [K_max] losses and aux['active'] [K_max] term counts.
    """
    positives, negatives = pair_masks(labels, learners, valid)
    sq = pairwise_squared_distances(embeddings)
    miner_d = jax.lax.stop_gradient(jnp.sqrt(jnp.maximum(sq, _MINER_EPS)))
    pos_idx, neg_idx, ok = sample_triplets(rng, miner_d, positives, negatives, n_dim,
                                           num_triplets, cutoff, nonzero_loss_cutoff)
    ok = ok & valid[:, None]
    loss_d = jnp.sqrt(sq + _LOSS_EPS)
    d_ap = jnp.take_along_axis(loss_d, pos_idx, axis=1)
    d_an = jnp.take_along_axis(loss_d, neg_idx, axis=1)
    pos_term = jnp.where(ok, jax.nn.relu(d_ap - beta + margin), 0.0)
    neg_term = jnp.where(ok, jax.nn.relu(beta - d_an + margin), 0.0)

    # Per-learner normalisation by the number of non-zero terms (an empty learner gives 0).
    per_anchor_sum = jnp.sum(pos_term + neg_term, axis=1)
    per_anchor_active = jnp.sum((pos_term > 0).astype(jnp.float32)
                                + (neg_term > 0).astype(jnp.float32), axis=1)
    seg = jnp.where(valid, learners, 0)
    sums = jax.ops.segment_sum(per_anchor_sum, seg, num_segments=num_learners_max)
    active = jax.ops.segment_sum(per_anchor_active, seg, num_segments=num_learners_max)
    per_learner = sums / jnp.maximum(active, 1.0)
    aux = {"per_learner": per_learner, "active": active,
           "triplets": jnp.sum(ok.astype(jnp.int32)),
           "positive_index": pos_idx, "negative_index": neg_idx, "triplet_valid": ok}
    return jnp.sum(per_learner), aux
