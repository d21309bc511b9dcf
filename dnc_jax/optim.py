"""Adam with coupled L2 weight decay, per parameter group, as torch's Adam does it.

torch's `Adam(weight_decay=wd)` adds wd * theta to the gradient *before* the moments (not
AdamW's decoupled decay), and the official code has separate groups (docs/method.md §2.3): the
backbone (BN scale/bias included), the embedding head, the PAMI masks and the loss parameters.
Learning rates are injected hyper-parameters, so a phase changes them (0 for a frozen backbone,
whose Adam moments still update, as in torch) without recompiling the step.

The optimised tree is `{'model': {'backbone', 'head'}, 'masks'?: [K_max, d], 'loss'?: {...}}`;
each loss parameter (`loss/beta`, `loss/proxies`, `loss/alpha`) is its own group `loss_<name>`
with its own learning rate and no weight decay.
"""
from __future__ import annotations

import flax.traverse_util
import jax.numpy as jnp
import numpy as np
import optax

from dnc_jax.errors import ConfigError

GROUPS = ("backbone", "head", "masks")


def coupled_adam(learning_rate, weight_decay, b1=0.9, b2=0.999, eps=1e-8):
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )


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


def make_optimizer(optim_config, loss_rates=None):
    """`loss_rates`: {loss parameter name: learning rate} (`losses.loss_learning_rates`)."""
    groups = {}
    for name in GROUPS:
        if name not in optim_config:
            continue
        group = optim_config[name]
        groups[name] = optax.inject_hyperparams(coupled_adam)(
            learning_rate=group.learning_rate, weight_decay=group.weight_decay)
    for name, rate in (loss_rates or {}).items():
        groups[f"loss_{name}"] = optax.inject_hyperparams(coupled_adam)(
            learning_rate=rate, weight_decay=0.0)
    return optax.multi_transform(groups, param_groups)


def set_learning_rates(opt_state, rates: dict[str, float]):
    """The optimiser state with the given groups' learning rates replaced (values only)."""
    inner_states = dict(opt_state.inner_states)
    for group, value in rates.items():
        if group not in inner_states:
            continue
        masked = inner_states[group]
        injected = masked.inner_state
        hyper = dict(injected.hyperparams)
        hyper["learning_rate"] = jnp.asarray(value, jnp.float32)
        inner_states[group] = masked._replace(inner_state=injected._replace(hyperparams=hyper))
    return opt_state._replace(inner_states=inner_states)


def learning_rates(opt_state) -> dict[str, float]:
    return {g: float(s.inner_state.hyperparams["learning_rate"])
            for g, s in opt_state.inner_states.items()}


def reset_group(opt_state, optimizer, params, group: str):
    """A fresh optimiser state for one group (PAMI resets the mask moments when masks grow)."""
    fresh = optimizer.init(params).inner_states[group]
    rates = {group: learning_rates(opt_state)[group]}
    inner_states = dict(opt_state.inner_states)
    inner_states[group] = fresh
    return set_learning_rates(opt_state._replace(inner_states=inner_states), rates)


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
