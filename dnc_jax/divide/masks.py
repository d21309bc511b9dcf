"""Learner masks: which embedding dimensions each learner owns, as fixed-shape arrays.

Everything here is an array `[K_max, d]`, so K changing, reclustering and the switch to the full
embedding change values, never shapes, and the train step compiles once (DESIGN.md §4).

Two arrays describe a phase, following the CVPR code (METHOD.md §1.2):
- `slices`: the division of the embedding into K contiguous blocks of ceil(d/K) dims. The
  network's output is the concatenation of the separately L2-normalised blocks, in training
  and at evaluation (norm sqrt(K)).
- `masks`: what learner k's loss sees, `normalize(output * masks[k])`. While dividing,
  `masks == slices`, so learner k trains only its own block; when conquering, every row is
  ones and all learners train the whole (re-normalised) embedding.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from dnc_jax.models.embedder import l2_normalize


def contiguous_slices(num_learners: int, max_learners: int, dim: int) -> np.ndarray:
    """Rows 0..K-1 own consecutive blocks of ceil(d/K) dims; rows >= K are all zero."""
    if not 1 <= num_learners <= max_learners:
        raise ValueError(f"num_learners={num_learners} must be in [1, {max_learners}]")
    size = math.ceil(dim / num_learners)
    if size * (num_learners - 1) >= dim:
        raise ValueError(
            f"divide.num_learners={num_learners} leaves a learner without dimensions of the "
            f"{dim}-d embedding; use at most {dim} learners or a larger model.embedding_dim")
    slices = np.zeros((max_learners, dim), np.float32)
    for k in range(num_learners):
        slices[k, k * size:(k + 1) * size] = 1.0
    return slices


def full_embedding_masks(max_learners: int, dim: int) -> np.ndarray:
    """Every learner sees the whole embedding (the conquer phase)."""
    return np.ones((max_learners, dim), np.float32)


def sliced_output(embedding, slices):
    """Concatenation of the separately normalised blocks: sum_k normalize(e * slice_k).

    Rows of `slices` that are all zero contribute nothing. With one block this is
    `normalize(embedding)`, the plain baseline.
    """
    blocks = embedding[:, None, :] * slices[None, :, :]  # [B, K_max, d]
    return jnp.sum(l2_normalize(blocks), axis=1)


def learner_view(output, masks, learner):
    """What each example's learner loss sees: normalize(output * masks[learner])."""
    return l2_normalize(output * masks[learner])
