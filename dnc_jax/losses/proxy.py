"""Proxy losses, per learner: proxy-anchor (Kim et al. 2020) and normalised softmax (Zhai & Wu
2018). Not in the official D&C code (docs/method.md §3); learnable proxies [num_classes, d] live in
loss_params['proxies'].

Proxies live in the full embedding space. Learner k sees the proxy of class c as
normalize(proxy_c * masks[k]), the same masking that made its embedding view
(`divide.masks.learner_view`), so a learner compares its slice with the proxies' slice. Pass the
masks the step used as `masks` ([K_max, d]); `masks=None` compares with the unmasked, normalised
proxies (one learner, or the full-embedding phase). Every learner's softmax / negative term
ranges over all classes: the loss does not know which classes a cluster holds.

Class ids of valid slots must lie in [0, num_classes).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from dnc_jax.losses.common import (batch_arrays, learner_segments, per_learner_sum, safe_mean,
                                   segment_log1p_sum_exp)
from dnc_jax.normalize import l2_normalize


def init_proxies(rng, num_classes: int, dim: int):
    """Kaiming-normal with fan_out = num_classes, as the proxy-anchor authors' code. Only the
    direction matters to the loss; the scale sets how fast Adam turns them."""
    if not num_classes:
        raise ValueError("proxy losses need the number of training classes")
    std = (2.0 / num_classes) ** 0.5
    return {"proxies": std * jax.random.normal(rng, (num_classes, dim), jnp.float32)}


def _proxies(loss_params, name):
    if loss_params is None or "proxies" not in loss_params:
        raise ValueError(f"loss.name={name!r} needs loss_params from init_loss_params")
    return loss_params["proxies"]


def proxy_similarities(embeddings, proxies, learners, valid, masks=None):
    """[B, C] cosine between each view and every proxy as its learner sees it.

    <x, normalize(P_c * m_k)> = <x * m_k, P_c> / ||P_c * m_k||: two matmuls and a [C, K] table of
    masked proxy norms, never a [B, C, d] or [K, C, d] tensor (C is 11k on SOP).
    """
    if masks is None:
        return embeddings @ l2_normalize(proxies).T
    masks = jnp.asarray(masks, embeddings.dtype)
    rows = learner_segments(learners, valid)
    dots = (embeddings * masks[rows]) @ proxies.T
    norm_sq = (proxies * proxies) @ (masks * masks).T  # [C, K]
    inv_norm = jax.lax.rsqrt(jnp.maximum(norm_sq, 1e-24))
    return dots * inv_norm.T[rows]


def proxy_anchor_loss(embeddings, labels, learners, valid, rng, loss_params=None, *, n_dim=None,
                      masks=None, num_learners_max, alpha=32.0, delta=0.1):
    """Sum over learners of the proxy-anchor loss of each learner's sub-batch:

      1/|P+_k| sum_{c in P+_k} log(1 + sum_{i in k, y_i = c} exp(-alpha (s_ic - delta)))
    + 1/C      sum_{c}         log(1 + sum_{i in k, y_i != c} exp( alpha (s_ic + delta)))

    with P+_k the classes present in learner k's valid slots. Returns (loss, aux) with
    aux['per_learner'] [K_max] and aux['active'] [K_max] = |P+_k|.
    """
    del rng, n_dim
    labels, learners, valid = batch_arrays(labels, learners, valid)
    proxies = _proxies(loss_params, "proxy_anchor")
    num_classes = proxies.shape[0]
    sim = proxy_similarities(embeddings, proxies, learners, valid, masks)
    own_class = labels[:, None] == jnp.arange(num_classes)[None, :]
    pos_mask = own_class & valid[:, None]
    neg_mask = ~own_class & valid[:, None]
    segments = learner_segments(learners, valid)
    pos_lse = segment_log1p_sum_exp(-alpha * (sim - delta), pos_mask, segments, num_learners_max)
    neg_lse = segment_log1p_sum_exp(alpha * (sim + delta), neg_mask, segments, num_learners_max)
    present = jax.ops.segment_sum(pos_mask.astype(jnp.float32), segments,
                                  num_segments=num_learners_max) > 0  # [K, C]
    n_present = jnp.sum(present.astype(jnp.float32), axis=1)
    pos_part = safe_mean(jnp.sum(jnp.where(present, pos_lse, 0.0), axis=1), n_present)
    neg_part = jnp.sum(neg_lse, axis=1) / num_classes
    per_learner = pos_part + neg_part
    return jnp.sum(per_learner), {"per_learner": per_learner, "active": n_present}


def normalized_softmax_loss(embeddings, labels, learners, valid, rng, loss_params=None, *,
                            n_dim=None, masks=None, num_learners_max, temperature=0.05):
    """Sum over learners of the mean cross-entropy of softmax(s_i / temperature) over all class
    proxies. ProxyNCA++'s loss (squared distances to normalised proxies over T) is this loss at
    temperature T/2. Returns (loss, aux) with aux['active'] [K_max] = valid examples."""
    del rng, n_dim
    labels, learners, valid = batch_arrays(labels, learners, valid)
    proxies = _proxies(loss_params, "normalized_softmax")
    logits = proxy_similarities(embeddings, proxies, learners, valid, masks) / temperature
    own_class = labels[:, None] == jnp.arange(proxies.shape[0])[None, :]
    cross_entropy = (jax.nn.logsumexp(logits, axis=1)
                     - jnp.sum(jnp.where(own_class, logits, 0.0), axis=1))
    sums = per_learner_sum(cross_entropy, learners, valid, num_learners_max)
    examples = per_learner_sum(jnp.ones_like(cross_entropy), learners, valid, num_learners_max)
    per_learner = safe_mean(sums, examples)
    return jnp.sum(per_learner), {"per_learner": per_learner, "active": examples}
