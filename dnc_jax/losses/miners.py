"""Triplet miners with fixed shapes: flat (anchor, positive, negative) index arrays plus a
validity mask, never a variable-length list (docs/method.md §3.2, §3.3, §3.4, §8).

Every miner has the signature `miner(rng, distances, positives, negatives, n_dim) -> Triplets`
where `distances` [B, B] are the miner distances (no gradient) and `positives`/`negatives` the
learner-restricted pair masks of `common.pair_masks`, so a triplet never crosses learners. What
the official code drops (an anchor without positives, too few negatives) is marked invalid here.
Triplet counts per miner (B = batch, k = negatives per anchor):
  distance_weighted, easy_peasy: B*k; semi_hard: B*B (one per ordered pair);
  batch_hard: B; all: B**3 (every valid triple: mind the memory for large batches).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dnc_jax.errors import ConfigError
from dnc_jax.losses.common import (NEG_INF, loss_distances, miner_distances, pair_masks,
                                    pairwise_squared_distances)

MINERS = ("distance_weighted", "easy_peasy", "semi_hard", "batch_hard", "all")
# What EasyPeasy adds to positives and too-close items, as in the official code: large, but
# finite, so they can still be picked when an anchor has too few valid negatives.
_EASY_PEASY_PENALTY = 1e6


class Triplets(NamedTuple):
    anchor: jax.Array    # [T] int32
    positive: jax.Array  # [T] int32
    negative: jax.Array  # [T] int32
    valid: jax.Array     # [T] bool


def _flat(pos_idx, neg_idx, ok):
    """[B, k] per-anchor picks -> flat Triplets."""
    b, k = pos_idx.shape
    anchor = jnp.broadcast_to(jnp.arange(b)[:, None], (b, k))
    return Triplets(anchor.ravel(), pos_idx.ravel(), neg_idx.ravel(), ok.ravel())


def _positives_in_index_order(positives, k):
    """[B, k] each anchor's first k positives in index order, and its number of positives."""
    b = positives.shape[0]
    index = jnp.arange(b)
    # Highest score = lowest index among positives; non-positives sort last.
    _, order = jax.lax.top_k(jnp.where(positives, -index[None, :], -b - 1), k)
    return order, jnp.sum(positives, axis=1)


# -- distance-weighted sampling (docs/method.md §3.3) ----------------------------------------------

def distance_weighted_logits(distances, negatives, n_dim, cutoff, nonzero_loss_cutoff):
    """Log sampling weights of each negative, proportional to 1/q(d) (docs/method.md §3.3).

    q(d) ~ d^(n-2) (1 - d^2/4)^((n-3)/2) is the density of distances between uniform points on
    the unit (n-1)-sphere. Negatives farther than `nonzero_loss_cutoff` cannot produce a loss and
    get weight 1e-6, as in the official code; non-negatives get NEG_INF (never drawn).
    """
    d = jnp.maximum(distances, cutoff)
    n = n_dim[:, None]
    log_w = (2.0 - n) * jnp.log(d) - 0.5 * (n - 3.0) * jnp.log(
        jnp.maximum(1.0 - 0.25 * d * d, 1e-8))
    near = negatives & (d < nonzero_loss_cutoff)
    row_max = jnp.max(jnp.where(near, log_w, NEG_INF), axis=1, keepdims=True)
    w = jnp.exp(jnp.where(near, log_w - row_max, NEG_INF)) + 1e-9
    w = jnp.where(near, w, jnp.where(negatives, 1e-6, 0.0))
    return jnp.where(w > 0, jnp.log(jnp.maximum(w, 1e-30)), NEG_INF)


def distance_weighted(rng, distances, positives, negatives, n_dim, *, num_negatives, cutoff=0.5,
                      nonzero_loss_cutoff=1.4):
    """Per anchor, `num_negatives` negatives drawn with weights 1/q(d) without replacement.

    Without replacement is a Gumbel top-k over the log weights (the Gumbel-max trick applied k
    times). Positives: the anchor's positives in index order, cycled when it has fewer than k
    (the official code resamples them with replacement to match the negative count).
    """
    b = distances.shape[0]
    k = min(num_negatives, b)
    logits = distance_weighted_logits(distances, negatives, n_dim, cutoff, nonzero_loss_cutoff)
    drawable = logits > NEG_INF / 2
    gumbel = jax.random.gumbel(rng, logits.shape, logits.dtype)
    scores, neg_idx = jax.lax.top_k(jnp.where(drawable, logits + gumbel, NEG_INF), k)
    neg_ok = scores > NEG_INF / 2

    pos_sorted, n_pos = _positives_in_index_order(positives, k)
    slot = jnp.arange(k)[None, :] % jnp.maximum(n_pos, 1)[:, None]
    pos_idx = jnp.take_along_axis(pos_sorted, slot, axis=1)
    return _flat(pos_idx, neg_idx, (n_pos > 0)[:, None] & neg_ok)


# -- EasyPeasy (docs/method.md §3.2) ---------------------------------------------------------------

def easy_peasy(rng, distances, positives, negatives, n_dim, *, num_negatives, cutoff=0.5,
               strict=True):
    """The official CVPR miner: each anchor's `num_negatives` closest negatives at distance
    >= cutoff, paired elementwise with its positives in index order, truncated per anchor
    (the PAMI behaviour; CVPR's global truncation can misalign anchors, docs/method.md §3.2).

    As in the official code, positives, self and anything closer than `cutoff` get +1e6 before
    the top-k, and the chosen negatives are listed in index order (they come from a 0/1 mask).
    When an anchor has fewer valid negatives than `num_negatives`, the official top-k still
    returns penalised items (positives, too-close ones, self) as "negatives" (docs/method.md §7.6).
    `strict=True` marks such picks invalid instead (the remaining triplets use the valid
    negatives, first in index order); `strict=False` keeps them, as the official code does.
    Items of other learners and padding slots are never picked in either mode.
    """
    del rng, n_dim
    b = distances.shape[0]
    k = min(num_negatives, b)
    eye = jnp.eye(b, dtype=bool)
    in_learner = positives | negatives | eye
    penalised = positives | eye | (distances < cutoff)
    score = jnp.where(in_learner, distances + _EASY_PEASY_PENALTY * penalised, 1e30)
    _, picked = jax.lax.top_k(-score, k)
    usable = (negatives & (distances >= cutoff)) if strict else in_learner
    ok = jnp.take_along_axis(usable, picked, axis=1)
    # Usable picks first, each group in index order: sort on index + B * unusable.
    key = jnp.sort(jnp.where(ok, picked, picked + b), axis=1)
    neg_idx, neg_ok = key % b, key < b

    pos_idx, n_pos = _positives_in_index_order(positives, k)
    slot = jnp.arange(k)[None, :]
    return _flat(pos_idx, neg_idx, neg_ok & (slot < n_pos[:, None]))


# -- semi-hard, batch-hard, all (docs/method.md §3.4) ----------------------------------------------

def semi_hard(rng, distances, positives, negatives, n_dim):
    """FaceNet semi-hard: for every positive pair (a, p) the closest negative strictly farther
    than p, else the farthest negative. One triplet per ordered pair; O(B^2 log B) via a sort of
    each anchor's negatives and a binary search, not a [B, B, B] tensor."""
    del rng, n_dim
    b = distances.shape[0]
    neg_d = jnp.where(negatives, distances, jnp.inf)
    order = jnp.argsort(neg_d, axis=1)
    sorted_d = jnp.take_along_axis(neg_d, order, axis=1)
    n_neg = jnp.sum(negatives, axis=1)
    # Position of the first negative with d_an > d_ap in each anchor's sorted row.
    first = jax.vmap(lambda row, q: jnp.searchsorted(row, q, side="right"))(sorted_d, distances)
    has_semi_hard = first < n_neg[:, None]
    slot = jnp.clip(jnp.where(has_semi_hard, first, n_neg[:, None] - 1), 0, b - 1)
    neg_idx = jnp.take_along_axis(order, slot, axis=1)
    pos_idx = jnp.broadcast_to(jnp.arange(b)[None, :], (b, b))
    return _flat(pos_idx, neg_idx, positives & (n_neg > 0)[:, None])


def batch_hard(rng, distances, positives, negatives, n_dim):
    """Per anchor, its farthest positive and its closest negative (Hermans et al. 2017)."""
    del rng, n_dim
    pos_idx = jnp.argmax(jnp.where(positives, distances, -jnp.inf), axis=1)
    neg_idx = jnp.argmin(jnp.where(negatives, distances, jnp.inf), axis=1)
    ok = jnp.any(positives, axis=1) & jnp.any(negatives, axis=1)
    return _flat(pos_idx[:, None], neg_idx[:, None], ok[:, None])


def all_triplets(rng, distances, positives, negatives, n_dim):
    """Every (a, p, n) with (a, p) positive and (a, n) negative: B**3 slots."""
    del rng, n_dim
    b = distances.shape[0]
    a, p, n = jnp.meshgrid(jnp.arange(b), jnp.arange(b), jnp.arange(b), indexing="ij")
    ok = positives[:, :, None] & negatives[:, None, :]
    return Triplets(a.ravel(), p.ravel(), n.ravel(), ok.ravel())


def make_miner(name: str, *, num_negatives: int, cutoff: float = 0.5,
               nonzero_loss_cutoff: float = 1.4, strict: bool = True):
    """A miner by name with its options bound; `num_negatives` is k of the per-anchor miners."""
    if name == "distance_weighted":
        return functools.partial(distance_weighted, num_negatives=num_negatives, cutoff=cutoff,
                                 nonzero_loss_cutoff=nonzero_loss_cutoff)
    if name == "easy_peasy":
        return functools.partial(easy_peasy, num_negatives=num_negatives, cutoff=cutoff,
                                 strict=strict)
    if name == "semi_hard":
        return semi_hard
    if name == "batch_hard":
        return batch_hard
    if name == "all":
        return all_triplets
    raise ConfigError(f"loss.miner={name!r} is not one of {list(MINERS)}")


def mined_triplet_distances(embeddings, labels, learners, valid, rng, n_dim, mine):
    """Mines triplets inside each learner and returns (Triplets, d_ap [T], d_an [T]).

    The miner ranks on `miner_distances` (clamped, no gradient); the returned distances are the
    loss distances sqrt(||a-b||^2 + 1e-8), differentiable everywhere (docs/method.md §3).
    """
    positives, negatives = pair_masks(labels, learners, valid)
    squared = pairwise_squared_distances(embeddings)
    if n_dim is None:
        n_dim = jnp.full(embeddings.shape[:1], embeddings.shape[1], embeddings.dtype)
    triplets = mine(rng, miner_distances(squared), positives, negatives, n_dim)
    distances = loss_distances(squared)
    return (triplets, distances[triplets.anchor, triplets.positive],
            distances[triplets.anchor, triplets.negative])


def triplet_aux(triplets):
    """What every miner-based loss reports besides its per-learner values."""
    return {"triplets": jnp.sum(triplets.valid.astype(jnp.int32)),
            "anchor_index": triplets.anchor, "positive_index": triplets.positive,
            "negative_index": triplets.negative, "triplet_valid": triplets.valid}
