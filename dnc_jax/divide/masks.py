"""Learner masks: which embedding dimensions each learner owns, as fixed-shape arrays.

Everything here is an array `[K_max, d]`, so K changing, reclustering and the switch to the full
embedding change values, never shapes, and the train step compiles once (docs/decisions.md).

Two arrays describe a phase, following the CVPR code (docs/method.md §1.2):
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

from dnc_jax.normalize import l2_normalize
from dnc_jax.errors import ConfigError


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


# -- PAMI masks (docs/method.md §1.4) --------------------------------------------------------------

def single_block(max_learners: int, dim: int) -> np.ndarray:
    """PAMI's output: one block (the whole embedding, normalised once), no per-slice norms."""
    return contiguous_slices(1, max_learners, dim)


def init_learned_masks(key, max_learners: int, dim: int, init: str = "ones"):
    """Mask parameters [K_max, d]: all ones (PAMI default) or N(0.9, 0.7) ('normal')."""
    import jax

    if init == "ones":
        return jnp.ones((max_learners, dim), jnp.float32)
    if init == "normal":
        return 0.9 + 0.7 * jax.random.normal(key, (max_learners, dim), jnp.float32)
    raise ConfigError(f"divide.mask_init must be 'ones' or 'normal', got {init!r}")


def grow(masks, num_learners: int):
    """Doubling: rows 2c and 2c+1 become copies of row c for c < K (children inherit from their
    parent, matching the cluster split); rows >= 2K are left as they are (unused)."""
    k_max = masks.shape[0]
    new_k = min(2 * num_learners, k_max)
    source = jnp.where(jnp.arange(k_max) < new_k, jnp.arange(k_max) // 2, jnp.arange(k_max))
    return masks[source]


def orthogonality_penalty(masks, num_learners):
    """Mean cosine similarity of relu(m_i), relu(m_j) over ordered pairs i != j of the active
    rows; 0 for one learner (docs/method.md §1.3). `num_learners` may be a traced scalar."""
    r = jnp.maximum(masks, 0.0)
    unit = l2_normalize(r)
    cos = unit @ unit.T
    k_max = masks.shape[0]
    active = jnp.arange(k_max) < num_learners
    pairs = active[:, None] & active[None, :] & ~jnp.eye(k_max, dtype=bool)
    count = jnp.sum(pairs)
    return jnp.where(count > 0, jnp.sum(jnp.where(pairs, cos, 0.0)) / jnp.maximum(count, 1), 0.0)


# -- one phase ----------------------------------------------------------------------------------

def phase_arrays(config, phase) -> dict:
    """The arrays of one epoch's phase, the train step's `phase` argument (`steps.py`), and
    its `slices` the evaluation embedding of that epoch."""
    c, k_max, dim = config.divide, config.divide.num_learners, config.model.embedding_dim
    if c.masks == "slices":
        # The CVPR model fixes its K output blocks when it is built (`learner_neurons` in
        # lib/model.py): the one-learner finetune still normalises K blocks, trains on their
        # renormalised concatenation and is evaluated on it. PAMI's K grows with its phases.
        blocks = k_max if c.schedule == "cvpr" else phase.num_learners
        slices = contiguous_slices(blocks, k_max, dim)
        fixed = contiguous_slices(phase.num_learners, k_max, dim)
    elif c.masks in ("fixed", "learned"):
        # PAMI: the output is normalised once; fixed masks are the hierarchical halves, which
        # for K = 2^j are the contiguous blocks of d / K dims.
        slices = single_block(k_max, dim)
        fixed = contiguous_slices(phase.num_learners, k_max, dim)
    else:
        raise ConfigError(f"divide.masks must be 'slices', 'fixed' or 'learned', got "
                          f"{c.masks!r}")
    conquer = phase.full_embedding
    learned = c.masks == "learned" and not conquer
    return {
        "slices": slices,
        "masks": full_embedding_masks(k_max, dim) if conquer else fixed,
        "learned": np.float32(learned),
        "num_learners": np.int32(phase.num_learners),
        "orthogonality": np.float32(c.orthogonality_weight if learned else 0.0),
    }
