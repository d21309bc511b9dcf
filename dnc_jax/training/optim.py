"""Adam per parameter group as torch does it, plus the options that fine-tune transformers.

torch's `Adam(weight_decay=wd)` adds wd * theta to the gradient *before* the moments (not
AdamW's decoupled decay), and the official code has separate groups (docs/method.md §2.3): the
backbone (BN scale/bias included), the embedding head, the PAMI masks and the loss parameters.
Learning rates are injected hyper-parameters, so a phase changes them (0 for a frozen backbone,
whose Adam moments still update, as in torch) without recompiling the step.

The optimised tree is `{'model': {'backbone', 'head'}, 'masks'?: [K_max, d], 'loss'?: {...}}`;
each loss parameter (`loss/beta`, `loss/proxies`, `loss/alpha`) is its own group `loss_<name>`
with its own learning rate and no weight decay.

ViTs are fine-tuned differently (BEiT, DINO and timm's fine-tuning recipes): AdamW, layer-wise
learning-rate decay, a linear warm-up and gradient clipping. Each is an `optim` key that is off
by default; at the defaults the optimiser and its state are exactly the two papers' (above):
- `algorithm='adamw'`: decoupled decay, theta -= lr * (adam + wd * theta) (torch/optax AdamW).
- `layer_decay` < 1 (ViT and ConvNeXt backbones): backbone leaf updates scaled by
  layer_decay^(L + 1 - layer id), L the number of blocks (timm's `param_groups_layer_decay`
  with the model's fine-grained `group_matcher`; `layer_id`), the decoupled decay included, as
  timm's per-group lr scales it. ConvNeXt: stem 0, each block its own id in depth order over
  all stages, a stage's downsample with its first block, the final norm L + 1.
- `warmup_steps` > 0: the backbone and head updates ramp linearly over that many steps, on top
  of the injected rate (the masks and loss parameters start at their rate, as in the papers).
- `clip_grad_norm` > 0: the global norm of the whole gradient (every optimised parameter, all
  groups, frozen ones too) is clipped before the groups' optimisers, as torch's
  `clip_grad_norm_(parameters)` over everything the optimiser holds.
- `trust_ratio`: LAMB's (You et al. 2020) layer-wise trust ratio on the backbone and head:
  each leaf's Adam update (weight decay included) rescaled to ||param|| / ||update|| before
  the rate, so a rate is the relative change of every layer a step; with 'adam_coupled' that
  is LAMB with torch's coupled decay. A remedy tried for the large batches of 'joint'.
- `no_decay_1d`: no weight decay on 1-d parameters (biases, norm scales), `cls_token`,
  `reg_token` and `pos_embed` (timm's no_weight_decay rule), for either algorithm.

State: `multi_transform` state, or `(clip state, multi_transform state)` with clipping; each
group is `inject_hyperparams` of a chain [decay, adam] ('adam_coupled') or [adam, decay]
('adamw'), then layer decay (backbone) and warm-up (backbone, head), then the rate.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnc_jax import defaults
from dnc_jax.errors import ConfigError

GROUPS = ("backbone", "head", "masks")
ALGORITHMS = ("adam_coupled", "adamw")
# timm VisionTransformer.no_weight_decay (its `dist_token` is not built here).
NO_DECAY_NAMES = frozenset({"cls_token", "reg_token", "pos_embed"})
# timm's ViT stem group: layer id 0.
EMBEDDING_NAMES = frozenset({"patch_embed", "cls_token", "reg_token", "pos_embed", "norm_pre"})
BLOCK = re.compile(r"blocks_(\d+)")
STAGE = re.compile(r"stages_(\d+)")  # ConvNeXt
LAYER_DECAY_FAMILIES = ("vit", "convnext_")  # the model.name prefixes with timm layer ids


def coupled_adam(learning_rate, weight_decay, b1=0.9, b2=0.999, eps=1e-8, decay_mask=None,
                 rate_scales=()):
    """torch Adam(weight_decay): the decay joins the gradient before the moments.
    `rate_scales`: transformations that multiply the step like a learning-rate factor."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        *rate_scales,
        optax.scale_by_learning_rate(learning_rate),
    )


def adamw(learning_rate, weight_decay, b1=0.9, b2=0.999, eps=1e-8, decay_mask=None,
          rate_scales=()):
    """torch AdamW / optax.adamw: the decay is added to the Adam step, then both are scaled."""
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        *rate_scales,
        optax.scale_by_learning_rate(learning_rate),
    )


def _keys(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", k)) for k in path)


def decay_mask_1d(updates):
    """True where weight decay applies: not on 1-d leaves (biases, norm scales) nor on the ViT
    tokens (timm's no_weight_decay); a callable mask, as the groups only see their own leaves."""
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u.ndim > 1 and not NO_DECAY_NAMES & set(_keys(path)), updates)


def _backbone_path(path) -> tuple:
    """A leaf's path inside the backbone (`('blocks_3', 'mlp', 'fc1', 'kernel')`, ...)."""
    keys = _keys(path)
    return keys[keys.index("backbone") + 1:] if "backbone" in keys else keys


class BackboneLayout(NamedTuple):
    """What timm's layer ids depend on, read from a backbone's parameter paths."""
    family: str               # 'vit' | 'convnext'
    depths: tuple[int, ...]   # blocks per stage (a ViT: one stage of `blocks_{i}`)


def backbone_layout(paths) -> BackboneLayout:
    """The family and depths of the backbone whose leaves have these (backbone-relative) paths:
    a ConvNeXt has `stages_{s}/blocks_{b}`, a ViT top-level `blocks_{i}`; anything else (a
    ResNet) has no layer ids and gets a ConfigError."""
    paths = [tuple(p) for p in paths]
    stages = {}
    for p in paths:
        if STAGE.fullmatch(p[0]):
            blocks = stages.setdefault(int(STAGE.fullmatch(p[0]).group(1)), set())
            if len(p) > 1 and BLOCK.fullmatch(p[1]):
                blocks.add(int(BLOCK.fullmatch(p[1]).group(1)))
    if stages:
        return BackboneLayout("convnext", tuple(len(stages.get(s, ())) for s in
                                               range(max(stages) + 1)))
    vit_blocks = {p[0] for p in paths if BLOCK.fullmatch(p[0])}
    if vit_blocks:
        return BackboneLayout("vit", (len(vit_blocks),))
    names = sorted({p[0] for p in paths})
    raise ConfigError(f"optim.layer_decay < 1 needs a ViT or ConvNeXt backbone (model.name vit_* "
                      f"or convnext_*); this backbone has neither `blocks_*` nor `stages_*` "
                      f"(top-level names {names[:6]}); set optim.layer_decay to 1.0")


def layer_id(path: tuple, layout: BackboneLayout) -> int:
    """timm's layer id (`param_groups_layer_decay` with the model's fine-grained
    `group_matcher`) of the backbone leaf at `path`; ids run from 0 to sum(depths) + 1.

    ViT (timm: stem `^cls_token|reg_token|pos_embed|patch_embed|norm_pre`, `^blocks.(i)`,
    `^norm` as (99999,), which lands in the last block's group): the embeddings 0,
    `blocks_{i}` i + 1, the final `norm` L (with the last block), the rest (fc_norm, the MAP
    head `attn_pool`, CLIP's projection `head`: unmatched in timm, with its classifier) L + 1.
    ConvNeXt (timm: stem `^stem`, then `^stages.(s).downsample` sorted as (s, 0) and
    `^stages.(s).blocks.(b)` as (s, b), the head unmatched, so last): `stem_*` 0; block b of
    stage s is 1 + (blocks of the earlier stages) + b, its layer scale `gamma` included; a
    stage's `downsample_*` shares its block 0's id; the rest (`head/norm`) L + 1."""
    top = sum(layout.depths) + 1
    name = path[0]
    if layout.family == "vit":
        if name in EMBEDDING_NAMES:
            return 0
        if name == "norm":
            return top - 1
        block = BLOCK.fullmatch(name)
        return int(block.group(1)) + 1 if block else top
    if name.startswith("stem"):
        return 0
    stage = STAGE.fullmatch(name)
    if stage and len(path) > 1:
        first = 1 + sum(layout.depths[:int(stage.group(1))])
        block = BLOCK.fullmatch(path[1])
        if block:
            return first + int(block.group(1))
        if path[1].startswith("downsample"):
            return first
    return top


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
    """Scales a ViT or ConvNeXt backbone leaf's update by decay^(L + 1 - layer id), L the
    number of blocks (static, read from the tree paths), as timm's lr_scale of the leaf's
    group: the deeper, more task-specific layers move the most."""
    def update_fn(updates, state, params=None):
        leaves = jax.tree_util.tree_leaves_with_path(updates)
        layout = backbone_layout(_backbone_path(p) for p, _ in leaves)
        top = sum(layout.depths) + 1

        def scale(path, u):
            return u * decay ** (top - layer_id(_backbone_path(path), layout))
        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


class WarmupState(NamedTuple):
    count: jax.Array  # optimiser steps taken


def linear_warmup(steps: int) -> optax.GradientTransformation:
    """Multiplies the update by min(1, (count + 1) / steps). The first step gets 1/steps (as
    timm's warm-up starts from a small nonzero rate), not 0 as `optax.linear_schedule` at
    count 0 would: a zero step would still move Adam's moments and waste a batch; step
    `steps - 1` is the first at the full rate. A factor on the update, not a schedule on the
    rate, so it composes with the injected rate that `set_learning_rates` changes."""
    def init_fn(params):
        return WarmupState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        factor = jnp.minimum(1.0, (state.count + 1) / steps)
        updates = jax.tree.map(lambda u: u * factor.astype(u.dtype), updates)
        return updates, WarmupState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def group_of(path: tuple) -> str:
    if path[0] == "model":
        return "head" if path[1] == "head" else "backbone"
    if path[0] == "loss":
        return f"loss_{path[1]}"
    return path[0]


def param_groups(params):
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict({k: group_of(k) for k in flat})


def base_learning_rates(optim_config, loss_rates=None) -> dict[str, float]:
    rates = {g: float(optim_config[g].learning_rate) for g in GROUPS if g in optim_config}
    rates.update({f"loss_{k}": float(v) for k, v in (loss_rates or {}).items()})
    return rates


def check_optim_config(config) -> None:
    """Raises a ConfigError naming the first `optim` key that cannot work."""
    optim = defaults.filled(config.optim, "optim")
    algorithm, layer_decay = optim.algorithm, optim.layer_decay
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"optim.algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if not 0 < layer_decay <= 1:
        raise ConfigError(f"optim.layer_decay must be in (0, 1], got {layer_decay!r}")
    if layer_decay != 1 and not config.model.name.startswith(LAYER_DECAY_FAMILIES):
        raise ConfigError(f"optim.layer_decay={layer_decay!r} needs a ViT or ConvNeXt backbone "
                          f"(model.name vit_* or convnext_*), got model.name="
                          f"{config.model.name!r}; set it to 1.0")
    if optim.warmup_steps < 0:
        raise ConfigError(f"optim.warmup_steps must be >= 0, got {optim.warmup_steps!r}")
    if optim.clip_grad_norm < 0:
        raise ConfigError(f"optim.clip_grad_norm must be >= 0 (0: off), "
                          f"got {optim.clip_grad_norm!r}")


def _rate_scales(optim_config, group: str) -> tuple:
    """The learning-rate factors of one group: layer decay (backbone), trust ratio and
    warm-up (network)."""
    layer_decay, warmup_steps = optim_config.layer_decay, optim_config.warmup_steps
    scales = []
    if group == "backbone" and layer_decay != 1.0:
        scales.append(scale_by_layer_decay(layer_decay))
    if group in ("backbone", "head") and optim_config.trust_ratio:
        scales.append(optax.scale_by_trust_ratio())
    if group in ("backbone", "head") and warmup_steps > 0:
        scales.append(linear_warmup(warmup_steps))
    return tuple(scales)


def make_optimizer(optim_config, loss_rates=None):
    """`loss_rates`: {loss parameter name: learning rate} (`losses.loss_learning_rates`)."""
    optim_config = defaults.filled(optim_config, "optim")  # older configs lack the new keys
    algorithm = {"adam_coupled": coupled_adam, "adamw": adamw}[optim_config.algorithm]
    decay_mask = decay_mask_1d if optim_config.no_decay_1d else None
    # The mask is a callable and the scales are not numbers: static, not injected.
    injected = optax.inject_hyperparams(algorithm, static_args=("decay_mask", "rate_scales"))

    def group(name, learning_rate, weight_decay):
        return injected(learning_rate=learning_rate, weight_decay=weight_decay,
                        decay_mask=decay_mask, rate_scales=_rate_scales(optim_config, name))

    groups = {name: group(name, optim_config[name].learning_rate, optim_config[name].weight_decay)
              for name in GROUPS if name in optim_config}
    for name, rate in (loss_rates or {}).items():
        groups[f"loss_{name}"] = group(f"loss_{name}", rate, 0.0)
    optimizer = optax.multi_transform(groups, param_groups)
    clip = optim_config.clip_grad_norm
    return optax.chain(optax.clip_by_global_norm(clip), optimizer) if clip > 0 else optimizer


def _multi_state(opt_state):
    """The multi_transform state within `opt_state` (itself, or in the chain's tuple when
    clipping is on) and a function that puts a replacement back in its place."""
    if isinstance(opt_state, optax.MultiTransformState):
        return opt_state, lambda new: new
    i = next(i for i, s in enumerate(opt_state) if isinstance(s, optax.MultiTransformState))
    return opt_state[i], lambda new: (*opt_state[:i], new, *opt_state[i + 1:])


def set_learning_rates(opt_state, rates: dict[str, float]):
    """The optimiser state with the given groups' learning rates replaced (values only)."""
    multi, put_back = _multi_state(opt_state)
    inner_states = dict(multi.inner_states)
    for group, value in rates.items():
        if group not in inner_states:
            continue
        masked = inner_states[group]
        injected = masked.inner_state
        hyper = dict(injected.hyperparams)
        hyper["learning_rate"] = jnp.asarray(value, jnp.float32)
        inner_states[group] = masked._replace(inner_state=injected._replace(hyperparams=hyper))
    return put_back(multi._replace(inner_states=inner_states))


def learning_rates(opt_state) -> dict[str, float]:
    return {g: float(s.inner_state.hyperparams["learning_rate"])
            for g, s in _multi_state(opt_state)[0].inner_states.items()}


def reset_group(opt_state, optimizer, params, group: str):
    """A fresh optimiser state for one group (PAMI resets the mask moments when masks grow)."""
    fresh = _multi_state(optimizer.init(params))[0].inner_states[group]
    rates = {group: learning_rates(opt_state)[group]}
    multi, put_back = _multi_state(opt_state)
    inner_states = dict(multi.inner_states)
    inner_states[group] = fresh
    return set_learning_rates(put_back(multi._replace(inner_states=inner_states)), rates)


# -- the rates of one phase -----------------------------------------------------------------

def group_learning_rates(config, phase, base_rates) -> dict[str, float]:
    """Each group's learning rate for one epoch: the base rate, the optional step decay (the
    CVPR author's advice for CUB/Cars: decay every 30 epochs; neither official repo decays),
    0 for a frozen backbone, 0 for masks that are not being learned."""
    every = config.optim.lr_decay_every
    decay = config.optim.lr_decay_factor ** (phase.epoch // every) if every else 1.0
    rates = {group: rate * decay for group, rate in base_rates.items()}
    scale = joint_lr_scale(config, phase.num_learners)
    for group in ("backbone", "head"):
        rates[group] *= scale
    if phase.freeze_backbone:
        rates["backbone"] = 0.0
    if config.divide.masks != "learned" or phase.full_embedding:
        rates["masks"] = 0.0  # PAMI drops the masks from the optimiser when conquering
    return rates


JOINT_LR_RULES = ("none", "sqrt", "linear")


def joint_lr_scale(config, num_learners: int) -> float:
    """The network's learning-rate multiplier under the 'joint' schedule (`optim.joint_lr_rule`).

    A joint step serves all K learners at once, so an epoch takes K times fewer optimiser steps
    than round robin; Adam moves each weight by about the learning rate a step, so at the same
    rate the network travels about K times less per epoch. 'linear' gives it K times the rate,
    'sqrt' sqrt(K) (the square-root rule for Adam when the batch grows K-fold). Round robin and
    one-learner epochs keep the base rate.
    """
    rule = config.optim.joint_lr_rule
    if rule not in JOINT_LR_RULES:
        raise ConfigError(f"optim.joint_lr_rule must be one of {JOINT_LR_RULES}, got {rule!r}")
    if config.divide.learner_schedule != "joint" or rule == "none":
        return 1.0
    return float(num_learners) if rule == "linear" else float(np.sqrt(num_learners))
