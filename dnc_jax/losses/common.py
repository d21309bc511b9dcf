"""Building blocks shared by every loss: distances, learner-restricted pair masks, per-learner
reductions and NaN-free masked log-sum-exps.

One flat batch holds several learners' sub-batches (docs/decisions.md). A pair
counts only when both ends are valid slots of the same learner, and every per-learner quantity is a
segment sum over the learner ids, so a loss over the flat batch equals the sum of K separate losses.
All shapes are fixed; empty sets give 0, never NaN (no sqrt at 0, log of 0 or 0/0, also in
gradients).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# The miners' distance is sqrt(max(||a-b||^2, 1e-4)) and the losses' sqrt(||a-b||^2 + 1e-8),
# as in the official code (docs/method.md §3): the miner never sees 0, the loss has a gradient at 0.
MINER_EPS = 1e-4
LOSS_EPS = 1e-8
# A finite "minus infinity" for logits that must never win a top-k (a real -inf turns into NaN
# once it meets a zero in a product or a gradient).
NEG_INF = -1e30


def batch_arrays(labels, learners, valid):
    """The integer/bool per-slot arrays as jax arrays (callers may pass numpy)."""
    return jnp.asarray(labels), jnp.asarray(learners), jnp.asarray(valid, bool)


def pairwise_squared_distances(x):
    sq = jnp.sum(x * x, axis=-1)
    return jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


def loss_distances(squared):
    return jnp.sqrt(squared + LOSS_EPS)


def miner_distances(squared):
    """What the miners rank on; mining is a selection, so no gradient flows through it."""
    return jax.lax.stop_gradient(jnp.sqrt(jnp.maximum(squared, MINER_EPS)))


def same_learner(learners, valid):
    """[B, B]: both slots valid and in the same learner (self included)."""
    return (learners[:, None] == learners[None, :]) & valid[:, None] & valid[None, :]


def pair_masks(labels, learners, valid):
    """(positive, negative) [B, B] masks; pairs are valid only inside one learner."""
    group = same_learner(learners, valid)
    same_label = labels[:, None] == labels[None, :]
    not_self = ~jnp.eye(labels.shape[0], dtype=bool)
    return group & same_label & not_self, group & ~same_label


def learner_segments(learners, valid):
    # Padding slots may carry any learner id; their values are zeroed by the callers, and
    # segment 0 is as good a bin as any for a zero.
    return jnp.where(valid, learners, 0)


def per_learner_sum(values, learners, valid, num_learners_max):
    """[K_max]: sum over each learner's valid slots of `values` [B]."""
    values = jnp.where(valid, values, 0.0)
    return jax.ops.segment_sum(values, learner_segments(learners, valid),
                               num_segments=num_learners_max)


def safe_mean(sums, counts):
    """sums / counts where counts > 0, else 0 (an empty learner contributes nothing)."""
    return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0)


def log1p_sum_exp(z, mask, axis=-1):
    """log(1 + sum_{mask} exp(z)) along `axis`; 0 for an empty set.

    Shifted by m = max(0, max_mask z) so nothing overflows (the multi-similarity and proxy-anchor
    scales push z to ~50); masked-out entries are replaced before the exp ("double where") so an
    overflow there cannot leak a NaN into the gradient.
    """
    m = jnp.maximum(jnp.max(jnp.where(mask, z, 0.0), axis=axis, keepdims=True), 0.0)
    m = jax.lax.stop_gradient(m)
    terms = jnp.where(mask, jnp.exp(jnp.where(mask, z, m) - m), 0.0)
    out = m + jnp.log(jnp.exp(-m) + jnp.sum(terms, axis=axis, keepdims=True))
    return jnp.squeeze(out, axis=axis)


def segment_log1p_sum_exp(z, mask, segment_ids, num_segments):
    """[num_segments, ...]: log(1 + sum over the rows i of a segment with mask of exp(z_i)).

    z and mask are [B, ...]; the reduction is over rows, per segment. Same shift as
    `log1p_sum_exp`, with the max taken per (segment, column).
    """
    m = jax.ops.segment_max(jnp.where(mask, z, 0.0), segment_ids, num_segments=num_segments)
    m = jax.lax.stop_gradient(jnp.maximum(m, 0.0))  # empty segments give -inf -> 0
    m_rows = m[segment_ids]
    terms = jnp.where(mask, jnp.exp(jnp.where(mask, z, m_rows) - m_rows), 0.0)
    sums = jax.ops.segment_sum(terms, segment_ids, num_segments=num_segments)
    return m + jnp.log(jnp.exp(-m) + sums)


def masked_logsumexp(z, mask, axis=-1):
    """log(sum_{mask} exp(z)); 0 (not -inf) for an empty set, so callers can mask the row."""
    m = jax.lax.stop_gradient(jnp.max(jnp.where(mask, z, NEG_INF), axis=axis, keepdims=True))
    m = jnp.where(m > NEG_INF / 2, m, 0.0)
    terms = jnp.where(mask, jnp.exp(jnp.where(mask, z, m) - m), 0.0)
    total = jnp.sum(terms, axis=axis, keepdims=True)
    out = m + jnp.log(jnp.where(total > 0, total, 1.0))
    return jnp.squeeze(out, axis=axis)
