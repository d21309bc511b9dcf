"""The pure, jittable train step: one step serving every learner (the embedding step, shared
with inference, is `dnc_jax.inference.embedding.make_embed_step`).

Learner ids, masks, K and the validity of each slot are *data*, so K changing, reclustering, mask
growth, switching to the full embedding and moving examples between learners never retrace the step
(docs/decisions.md). Compute runs in `model.dtype` (bfloat16 on accelerators);
parameters, embeddings and the loss stay float32.

The optimised tree is `params = {'model': ..., 'masks'?: [K_max, d], 'loss'?: {...}}`
(`optim.py`); `phase` is a dict of arrays describing the current phase:
  slices [K_max, d]   the division of the output into separately normalised blocks (CVPR), or
                      one all-ones row (PAMI: the output normalised once);
  masks [K_max, d]    fixed learner masks (CVPR slices, PAMI fixed halves, or ones when
                      conquering);
  learned [] float    1 where the learned masks replace `masks` (PAMI, before conquering);
  num_learners [] int active learners, for the orthogonality penalty;
  orthogonality [] f  its weight lambda (0 when conquering).
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from dnc_jax import defaults
from dnc_jax.data.views import augment
from dnc_jax.divide import masks as masks_lib


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def create_train_state(params, batch_stats, optimizer) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=optimizer.init(params))


def effective_masks(params, phase):
    """The masks the learners use: relu(learned) where `learned`, else the fixed ones."""
    if "masks" not in params:
        return phase["masks"]
    learned = jnp.maximum(params["masks"], 0.0)
    return jnp.where(phase["learned"] > 0, learned, phase["masks"])


def make_train_step(model, optimizer, loss_fn, aug_config):
    """Returns `train_step(state, batch, phase, rng) -> (state, metrics)`.

    `batch` holds `labels`, `learners` [B] int32, `valid` [B] and either uint8 `images`
    [B, S, S, 3] rows (+ `sizes` [B, 2], their original height and width, when the rows are
    resized copies), cropped here, or uint8 `views` [B, out, out, 3], the crops already cut on
    the host from image files (`dnc_jax.data.feed`), only flipped and normalised here.
    """

    normalization = defaults.filled(aug_config, "augment").normalization

    def train_step(state: TrainState, batch, phase, rng):
        rng = jax.random.fold_in(rng, state.step)
        k_aug, k_drop, k_loss = jax.random.split(rng, 3)
        if "views" in batch:
            images = augment.flip_and_normalize(batch["views"], k_aug, aug_config.flip,
                                                normalization)
        else:
            images = augment.train_views(
                batch["images"], batch.get("sizes"), k_aug, aug_config.image_size,
                scale=tuple(aug_config.crop_scale), ratio=tuple(aug_config.crop_ratio),
                flip=aug_config.flip, normalization=normalization)
        images = images.astype(model.dtype)

        def objective(params):
            out, new_vars = model.apply(
                {"params": params["model"], "batch_stats": state.batch_stats}, images,
                train=True, rngs={"dropout": k_drop}, mutable=["batch_stats"])
            masks = effective_masks(params, phase)
            output = masks_lib.sliced_output(out["embedding"], phase["slices"])
            views = masks_lib.learner_view(output, masks, batch["learners"])
            # The dimensionality each anchor's learner lives in (distance-weighted sampling).
            n_dim = jnp.sum(masks > 0, axis=1).astype(jnp.float32)[batch["learners"]]
            loss, aux = loss_fn(views, batch["labels"], batch["learners"], batch["valid"],
                                k_loss, params.get("loss", {}), n_dim=n_dim, masks=masks)
            total = loss
            if "masks" in params:
                penalty = masks_lib.orthogonality_penalty(params["masks"],
                                                          phase["num_learners"])
                total = loss + phase["orthogonality"] * phase["learned"] * penalty
                aux = {**aux, "orthogonality": penalty}
            return total, (loss, aux, new_vars.get("batch_stats", {}))

        (total, (loss, aux, batch_stats)), grads = jax.value_and_grad(
            objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "total_loss": total, "loss_per_learner": aux["per_learner"],
                   "active_terms": aux["active"], "grad_norm": optax.tree.norm(grads),
                   "images": jnp.sum(batch["valid"].astype(jnp.int32))}
        for key in ("triplets", "orthogonality"):
            if key in aux:
                metrics[key] = aux[key]
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_multi_step(train_step, unroll: bool = False):
    """Returns `multi_step(state, batches, phase, rng) -> (state, metrics)`: `train_step` over
    a tuple of consecutive batches in one compiled call, each batch its own optimiser step.

    A `lax.scan` over the batches stacked on a new leading axis: the step is traced once
    whatever the count, and the updates are those of one call per batch in the same order
    (each step folds the state's step counter into the RNG, so the randomness is too).
    Round robin's K learner turns in one call keep the papers' update sequence while the host
    dispatches once per round. `metrics` gains a leading axis, one row per step. `unroll`
    compiles the steps one after the other instead of as a loop (XLA's CPU backend runs a
    loop's body several times slower; unrolled, compilation takes the steps' count times
    longer), for measuring that (`bench/train_step.py --schedule=fused_unrolled`).
    """

    def multi_step(state: TrainState, batches, phase, rng):
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
        return jax.lax.scan(lambda s, batch: train_step(s, batch, phase, rng), state, stacked,
                            unroll=unroll)

    return multi_step
