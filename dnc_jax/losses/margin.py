"""Margin loss (Wu et al. 2017) over mined triplets, per learner (docs/method.md §3.1).

For a triplet t: pos_t = relu(d(a,p) - beta + alpha), neg_t = relu(beta - d(a,n) + alpha).
Learner k's loss is (sum of its terms + nu * ||beta_sel||_1) / (its number of non-zero terms),
0 when it has none (the official code adds the regulariser only when there is a non-zero term).
beta is one of
  'fixed'     a constant (both official runs: it never reaches the optimiser, docs/method.md §7.3);
  'global'    one learnable scalar shared by all learners (loss_params['beta'], shape []);
  'per_class' one learnable value per training class, indexed by the anchor's class
              (loss_params['beta'], shape [num_classes]; PAMI's `--lr-beta > 0`).
beta_sel is what the triplets used: with per-class betas one value per triplet, with a scalar
beta the scalar once per learner that has a triplet (the official `torch.norm(beta, p=1)`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from dnc_jax.losses.common import batch_arrays, learner_segments, safe_mean
from dnc_jax.losses.miners import mined_triplet_distances, triplet_aux
from dnc_jax.errors import ConfigError

BETA_MODES = ("fixed", "global", "per_class")


def init_margin_params(beta_mode: str, beta: float, num_classes: int | None):
    if beta_mode == "fixed":
        return {}
    if beta_mode == "global":
        return {"beta": jnp.asarray(beta, jnp.float32)}
    if beta_mode == "per_class":
        if not num_classes:
            raise ValueError("loss.beta_mode='per_class' needs the number of training classes")
        return {"beta": jnp.full((num_classes,), beta, jnp.float32)}
    raise ConfigError(f"loss.beta_mode={beta_mode!r} is not one of {list(BETA_MODES)}")


def _triplet_betas(loss_params, beta_mode, beta, anchor_labels, ok):
    """beta of every triplet [T] (or a scalar)."""
    if beta_mode == "fixed":
        return beta  # a Python constant: no gradient, the embeddings' precision
    if loss_params is None or "beta" not in loss_params:
        raise ValueError(f"loss.beta_mode={beta_mode!r} needs loss_params from init_loss_params")
    if beta_mode == "global":
        return loss_params["beta"]
    # A class id outside the table gives NaN (a loud failure, not a silently clipped class);
    # the outer where keeps invalid triplets' garbage labels out of values and gradients.
    picked = jnp.take(loss_params["beta"], anchor_labels, mode="fill", fill_value=jnp.nan)
    return jnp.where(ok, picked, beta)


def margin_loss(embeddings, labels, learners, valid, rng, loss_params=None, *, n_dim=None,
                masks=None, num_learners_max, mine, margin=0.2, beta=1.2, beta_mode="fixed",
                nu=0.0):
    """Sum over learners of each learner's normalised margin loss.

    Args:
      embeddings: [B, d] L2-normalised, each already masked by its learner.
      labels, learners: [B] int; valid: [B] bool (padding slots are False).
      rng: key for sampled miners. loss_params: {} or {'beta': ...} (see module doc).
      n_dim: [B] dimensionality of each anchor's learner view (distance-weighted sampling).
      masks: unused (proxy losses only). mine: a miner of `miners.make_miner`.
    Returns:
      (loss, aux): aux['per_learner'] [K_max], aux['active'] [K_max] non-zero term counts,
      aux['triplets'] and the mined indices (`miners.triplet_aux`).
    """
    del masks
    labels, learners, valid = batch_arrays(labels, learners, valid)
    triplets, d_ap, d_an = mined_triplet_distances(embeddings, labels, learners, valid, rng,
                                                   n_dim, mine)
    ok = triplets.valid
    betas = _triplet_betas(loss_params, beta_mode, beta, labels[triplets.anchor], ok)
    pos_term = jnp.where(ok, jax.nn.relu(d_ap - betas + margin), 0.0)
    neg_term = jnp.where(ok, jax.nn.relu(betas - d_an + margin), 0.0)

    segments = learner_segments(learners, valid)[triplets.anchor]

    def per_learner(values):
        return jax.ops.segment_sum(values, segments, num_segments=num_learners_max)

    sums = per_learner(pos_term + neg_term)
    active = per_learner((pos_term > 0).astype(jnp.float32) + (neg_term > 0).astype(jnp.float32))
    if nu:
        if beta_mode == "per_class":
            beta_l1 = per_learner(jnp.where(ok, jnp.abs(betas), 0.0))
        else:
            has_triplet = per_learner(ok.astype(jnp.float32)) > 0
            beta_l1 = jnp.where(has_triplet, jnp.abs(betas), 0.0)
        sums = sums + nu * beta_l1
    per_learner_loss = safe_mean(sums, active)
    aux = {"per_learner": per_learner_loss, "active": active, **triplet_aux(triplets)}
    return jnp.sum(per_learner_loss), aux
