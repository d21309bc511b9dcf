"""Adam with coupled L2 weight decay, per parameter group, as torch's Adam does it.

torch's `Adam(weight_decay=wd)` adds wd * theta to the gradient *before* the moments (not
AdamW's decoupled decay), and the official code has separate groups for the backbone and the
embedding head (METHOD.md §2.3). Learning rates are injected hyper-parameters so a phase can
change them (e.g. 0 on frozen epochs, with the moments still updating) without recompiling.
"""
from __future__ import annotations

import flax.traverse_util
import optax


def coupled_adam(learning_rate, weight_decay, b1=0.9, b2=0.999, eps=1e-8):
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )


def param_groups(params):
    """'head' for the embedding layer, 'backbone' for everything else (BN scale/bias included)."""
    flat = flax.traverse_util.flatten_dict(params)
    labels = {k: ("head" if k[0] == "head" else "backbone") for k in flat}
    return flax.traverse_util.unflatten_dict(labels)


def make_optimizer(optim_config):
    groups = {}
    for name in ("backbone", "head"):
        group = optim_config[name]
        groups[name] = optax.inject_hyperparams(coupled_adam)(
            learning_rate=group.learning_rate, weight_decay=group.weight_decay)
    return optax.multi_transform(groups, param_groups)
