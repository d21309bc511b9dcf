"""Triplet loss over mined triplets, per learner (docs/method.md §3.4).

Per triplet: relu(d(a,p) - d(a,n) + margin), or softplus(d(a,p) - d(a,n)) when `soft`.
Learner k's loss is the mean of its terms over
  'nonzero' its non-zero terms (PAMI `TripletLoss`, avg_non_zero_only=True), or
  'valid'   all its valid triplets (PAMI `TripletSemihardLoss`: over positive pairs;
            `TripletAllLoss`: over valid triples).
'auto' picks 'valid' for the semi_hard and all miners and 'nonzero' otherwise, i.e. the PAMI
loss class that goes with the miner. Differences from PAMI: the semi-hard pairs whose anchor has
no negative are left out (PAMI counts them in the denominator); distances are the loss distances
sqrt(||a-b||^2 + 1e-8) for every miner (PAMI's semi-hard and all losses use the clamped pdist).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from dnc_jax.losses.common import batch_arrays, learner_segments, safe_mean
from dnc_jax.losses.miners import mined_triplet_distances, triplet_aux
from dnc_jax.errors import ConfigError

AVERAGES = ("auto", "nonzero", "valid")


def resolve_average(average: str, miner: str) -> str:
    if average not in AVERAGES:
        raise ConfigError(f"loss.triplet_average={average!r} is not one of {list(AVERAGES)}")
    if average == "auto":
        return "valid" if miner in ("semi_hard", "all") else "nonzero"
    return average


def triplet_loss(embeddings, labels, learners, valid, rng, loss_params=None, *, n_dim=None,
                 masks=None, num_learners_max, mine, margin=0.2, soft=False, average="nonzero"):
    """Sum over learners of each learner's mean triplet loss; see the module doc.

    Returns (loss, aux) with aux['per_learner'] [K_max], aux['active'] [K_max] (the number of
    terms each learner's mean is over) and the mined indices (`miners.triplet_aux`).
    """
    del loss_params, masks
    labels, learners, valid = batch_arrays(labels, learners, valid)
    triplets, d_ap, d_an = mined_triplet_distances(embeddings, labels, learners, valid, rng,
                                                   n_dim, mine)
    ok = triplets.valid
    diff = d_ap - d_an
    terms = jax.nn.softplus(diff) if soft else jax.nn.relu(diff + margin)
    terms = jnp.where(ok, terms, 0.0)
    counted = ok if average == "valid" else terms > 0
    segments = learner_segments(learners, valid)[triplets.anchor]
    sums = jax.ops.segment_sum(terms, segments, num_segments=num_learners_max)
    active = jax.ops.segment_sum(counted.astype(jnp.float32), segments,
                                 num_segments=num_learners_max)
    per_learner = safe_mean(sums, active)
    aux = {"per_learner": per_learner, "active": active, **triplet_aux(triplets)}
    return jnp.sum(per_learner), aux
