"""Base losses by name, each a pure function of one flat batch holding several learners'
sub-batches (DESIGN.md §4, METHOD.md §3):

    loss_fn(embeddings, labels, learners, valid, rng, loss_params=None, *, n_dim=None,
            masks=None) -> (loss, aux)

`embeddings` [B, d] are the learner views (masked, L2-normalised); `labels`, `learners` [B]
int32; `valid` [B] bool; `n_dim` [B] the dimensionality of each example's learner view
(distance-weighted sampling; default d); `masks` [K_max, d] the learner masks that made the
views (proxy losses only). The loss is the sum over learners of each learner's own normalised
loss, an empty learner giving 0, so it equals running K separate losses. aux always holds
'per_learner' [K_max] and 'active' [K_max] (what each learner's loss is averaged over: non-zero
terms, triplets, contributing anchors or present classes; see each loss); miner-based losses
add 'triplets' (valid mined triplets) and the mined indices.

Learnable loss parameters come from `init_loss_params` and go into the optimiser as their own
group, without weight decay; `loss_param_labels` names each leaf's learning-rate group and
`loss_learning_rates` gives the rates.
"""
from __future__ import annotations

import functools

import jax

from dnc_jax.losses import miners
from dnc_jax.losses.contrastive import contrastive_loss
from dnc_jax.losses.margin import init_margin_params, margin_loss
from dnc_jax.losses.multi_similarity import multi_similarity_loss
from dnc_jax.losses.npairs import init_npairs_params, npairs_loss
from dnc_jax.losses.proxy import init_proxies, normalized_softmax_loss, proxy_anchor_loss
from dnc_jax.losses.triplet import resolve_average, triplet_loss

LOSSES = ("margin", "triplet", "contrastive", "multi_similarity", "proxy_anchor",
          "normalized_softmax", "npairs")

# Every `loss.*` key with its default; a config that leaves a key out gets this value.
DEFAULTS = {
    "name": "margin",               # margin | triplet | contrastive | multi_similarity |
                                    # proxy_anchor | normalized_softmax | npairs
    # miners (margin and triplet losses)
    "miner": "distance_weighted",   # distance_weighted | easy_peasy | semi_hard | batch_hard | all
    "negatives_per_anchor": 0,      # k of distance_weighted/easy_peasy; 0: samples_per_class - 1
    "cutoff": 0.5,                  # distances below are "too close": clamped (distance_weighted)
                                    # or never a negative (easy_peasy)
    "nonzero_loss_cutoff": 1.4,     # distance_weighted: farther negatives get weight 1e-6
    "distance_weighted_dim": "view",  # distance_weighted: n of the sphere whose distance density
                                    # is undone: 'view' (dims the learner's mask keeps) or
                                    # 'embedding' (the full width d, PAMI's code)
    "easy_peasy_strict": True,      # easy_peasy: too few valid negatives -> fewer triplets;
                                    # False: fill with positives/too-close items (official)
    # margin (Wu et al.)
    "margin": 0.2,                  # alpha of the margin loss; margin of the triplet loss
    "beta": 1.2,                    # beta (its initial value when learnable)
    "beta_mode": "fixed",           # fixed (official) | global (one learnable) | per_class
    "nu": 0.0,                      # weight of the L1 regulariser of the betas used
    # triplet
    "soft": False,                  # softplus(d_ap - d_an) instead of the hinge
    "triplet_average": "auto",      # nonzero | valid | auto (valid for semi_hard/all miners)
    # contrastive
    "pos_margin": 0.0,              # positives: relu(d - pos_margin)^2
    "neg_margin": 1.0,              # negatives: relu(neg_margin - d)^2
    # multi-similarity (Wang et al.)
    "ms_alpha": 2.0,                # positive scale
    "ms_beta": 50.0,                # negative scale
    "ms_lambda": 0.5,               # similarity threshold (the authors' code's `thresh`)
    "ms_epsilon": 0.1,              # pair-mining margin
    # proxy losses
    "proxy_alpha": 32.0,            # proxy-anchor scale
    "proxy_delta": 0.1,             # proxy-anchor margin
    "temperature": 0.05,            # normalized_softmax temperature
    # npairs
    "npairs_alpha": 1.0,            # initial learnable logit scale
    # learning rates of the loss parameters (Adam, no weight decay)
    "beta_learning_rate": 5e-4,     # learnable betas (an assumption: PAMI never learns them)
    "proxy_learning_rate": 1e-3,    # proxies: 100x the embedding head's 1e-5 (proxy-anchor)
    "alpha_learning_rate": 1.0,     # npairs alpha (PAMI --lr-alpha)
}


def _option(loss_config, key):
    return loss_config.get(key, DEFAULTS[key])


def negatives_per_anchor(loss_config, samples_per_class: int) -> int:
    k = int(_option(loss_config, "negatives_per_anchor"))
    return k if k > 0 else max(1, samples_per_class - 1)


def make_miner(loss_config, samples_per_class: int):
    return miners.make_miner(
        _option(loss_config, "miner"),
        num_negatives=negatives_per_anchor(loss_config, samples_per_class),
        cutoff=_option(loss_config, "cutoff"),
        nonzero_loss_cutoff=_option(loss_config, "nonzero_loss_cutoff"),
        strict=_option(loss_config, "easy_peasy_strict"))


def _width_of_embedding(loss_fn):
    """The loss with distance-weighted sampling's n always the embedding width (n_dim=None)."""
    def loss(*args, n_dim=None, **kwargs):
        del n_dim
        return loss_fn(*args, n_dim=None, **kwargs)
    return loss


def make_loss(loss_config, num_learners_max: int, samples_per_class: int):
    """The configured loss with every option bound; see the module doc for its signature."""
    loss_fn = _make_loss(loss_config, num_learners_max, samples_per_class)
    dim = _option(loss_config, "distance_weighted_dim")
    if dim not in ("view", "embedding"):
        raise ValueError(f"loss.distance_weighted_dim={dim!r} is not one of "
                         "['view', 'embedding']")
    return _width_of_embedding(loss_fn) if dim == "embedding" else loss_fn


def _make_loss(loss_config, num_learners_max: int, samples_per_class: int):
    name = _option(loss_config, "name")
    opt = functools.partial(_option, loss_config)
    common = {"num_learners_max": num_learners_max}
    if name == "margin":
        if opt("beta_mode") not in ("fixed", "global", "per_class"):
            raise ValueError(f"loss.beta_mode={opt('beta_mode')!r} is not one of "
                             "['fixed', 'global', 'per_class']")
        return functools.partial(
            margin_loss, mine=make_miner(loss_config, samples_per_class), margin=opt("margin"),
            beta=opt("beta"), beta_mode=opt("beta_mode"), nu=opt("nu"), **common)
    if name == "triplet":
        return functools.partial(
            triplet_loss, mine=make_miner(loss_config, samples_per_class), margin=opt("margin"),
            soft=opt("soft"), average=resolve_average(opt("triplet_average"), opt("miner")),
            **common)
    if name == "contrastive":
        return functools.partial(contrastive_loss, pos_margin=opt("pos_margin"),
                                 neg_margin=opt("neg_margin"), **common)
    if name == "multi_similarity":
        return functools.partial(multi_similarity_loss, alpha=opt("ms_alpha"),
                                 beta=opt("ms_beta"), lam=opt("ms_lambda"),
                                 epsilon=opt("ms_epsilon"), **common)
    if name == "proxy_anchor":
        return functools.partial(proxy_anchor_loss, alpha=opt("proxy_alpha"),
                                 delta=opt("proxy_delta"), **common)
    if name == "normalized_softmax":
        return functools.partial(normalized_softmax_loss, temperature=opt("temperature"),
                                 **common)
    if name == "npairs":
        return functools.partial(npairs_loss, **common)
    raise ValueError(f"loss.name={name!r} is not one of {list(LOSSES)}")


def init_loss_params(loss_config, num_classes: int | None, dim: int, rng):
    """The learnable parameters of the configured loss (a dict, possibly empty)."""
    name = _option(loss_config, "name")
    if name == "margin":
        return init_margin_params(_option(loss_config, "beta_mode"),
                                  _option(loss_config, "beta"), num_classes)
    if name in ("proxy_anchor", "normalized_softmax"):
        return init_proxies(rng, num_classes, dim)
    if name == "npairs":
        return init_npairs_params(_option(loss_config, "npairs_alpha"))
    if name not in LOSSES:
        raise ValueError(f"loss.name={name!r} is not one of {list(LOSSES)}")
    return {}


# Each loss-parameter leaf's learning-rate group, by its name in the params dict.
_GROUPS = {"beta": "beta", "proxies": "proxies", "alpha": "alpha"}


def loss_param_labels(loss_params):
    """Same tree as `loss_params`, each leaf replaced by its learning-rate group name."""
    return {key: jax.tree.map(lambda _, k=key: _GROUPS[k], value)
            for key, value in loss_params.items()}


def loss_learning_rates(loss_config):
    """{group: learning rate} for `loss_param_labels`' groups."""
    return {"beta": _option(loss_config, "beta_learning_rate"),
            "proxies": _option(loss_config, "proxy_learning_rate"),
            "alpha": _option(loss_config, "alpha_learning_rate")}
