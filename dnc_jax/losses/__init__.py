"""Base losses by name, each a pure function of one flat batch holding several learners'
sub-batches (docs/decisions.md, docs/method.md §3):

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

from dnc_jax import defaults
from dnc_jax.losses import miners
from dnc_jax.losses.contrastive import contrastive_loss
from dnc_jax.losses.margin import init_margin_params, margin_loss
from dnc_jax.losses.multi_similarity import multi_similarity_loss
from dnc_jax.losses.npairs import init_npairs_params, npairs_loss
from dnc_jax.losses.proxy import init_proxies, normalized_softmax_loss, proxy_anchor_loss
from dnc_jax.losses.triplet import resolve_average, triplet_loss
from dnc_jax.errors import ConfigError

LOSSES = ("margin", "triplet", "contrastive", "multi_similarity", "proxy_anchor",
          "normalized_softmax", "npairs")

# Their negatives are class proxies: a learner batch of one class still trains them.
PROXY_LOSSES = ("proxy_anchor", "normalized_softmax")


def _section(loss_config):
    """The `loss` section with every key: a partial one (tests, library users) is completed
    from `dnc_jax.defaults`, the one place defaults live."""
    return defaults.filled(loss_config, "loss")


def negatives_per_anchor(loss_config, samples_per_class: int) -> int:
    k = int(_section(loss_config).negatives_per_anchor)
    return k if k > 0 else max(1, samples_per_class - 1)


def make_miner(loss_config, samples_per_class: int):
    c = _section(loss_config)
    return miners.make_miner(
        c.miner, num_negatives=negatives_per_anchor(c, samples_per_class), cutoff=c.cutoff,
        nonzero_loss_cutoff=c.nonzero_loss_cutoff, strict=c.easy_peasy_strict)


def _width_of_embedding(loss_fn):
    """The loss with distance-weighted sampling's n always the embedding width (n_dim=None)."""
    def loss(*args, n_dim=None, **kwargs):
        del n_dim
        return loss_fn(*args, n_dim=None, **kwargs)
    return loss


def make_loss(loss_config, num_learners_max: int, samples_per_class: int):
    """The configured loss with every option bound; see the module doc for its signature."""
    c = _section(loss_config)
    loss_fn = _make_loss(c, num_learners_max, samples_per_class)
    dim = c.distance_weighted_dim
    if dim not in ("view", "embedding"):
        raise ConfigError(f"loss.distance_weighted_dim={dim!r} is not one of "
                          "['view', 'embedding']")
    return _width_of_embedding(loss_fn) if dim == "embedding" else loss_fn


def _make_loss(c, num_learners_max: int, samples_per_class: int):
    """`make_loss` before the distance-weighted width: `c` is a completed `loss` section."""
    name = c.name
    common = {"num_learners_max": num_learners_max}
    if name == "margin":
        if c.beta_mode not in ("fixed", "global", "per_class"):
            raise ConfigError(f"loss.beta_mode={c.beta_mode!r} is not one of "
                              "['fixed', 'global', 'per_class']")
        return functools.partial(margin_loss, mine=make_miner(c, samples_per_class),
                                 margin=c.margin, beta=c.beta, beta_mode=c.beta_mode, nu=c.nu,
                                 **common)
    if name == "triplet":
        return functools.partial(triplet_loss, mine=make_miner(c, samples_per_class),
                                 margin=c.margin, soft=c.soft,
                                 average=resolve_average(c.triplet_average, c.miner), **common)
    if name == "contrastive":
        return functools.partial(contrastive_loss, pos_margin=c.pos_margin,
                                 neg_margin=c.neg_margin, **common)
    if name == "multi_similarity":
        return functools.partial(multi_similarity_loss, alpha=c.ms_alpha, beta=c.ms_beta,
                                 lam=c.ms_lambda, epsilon=c.ms_epsilon, **common)
    if name == "proxy_anchor":
        return functools.partial(proxy_anchor_loss, alpha=c.proxy_alpha,
                                 delta=c.proxy_delta, **common)
    if name == "normalized_softmax":
        return functools.partial(normalized_softmax_loss, temperature=c.temperature, **common)
    if name == "npairs":
        return functools.partial(npairs_loss, **common)
    raise ConfigError(f"loss.name={name!r} is not one of {list(LOSSES)}")


def init_loss_params(loss_config, num_classes: int | None, dim: int, rng):
    """The learnable parameters of the configured loss (a dict, possibly empty)."""
    c = _section(loss_config)
    name = c.name
    if name == "margin":
        return init_margin_params(c.beta_mode, c.beta, num_classes)
    if name in PROXY_LOSSES:
        return init_proxies(rng, num_classes, dim)
    if name == "npairs":
        return init_npairs_params(c.npairs_alpha)
    if name not in LOSSES:
        raise ConfigError(f"loss.name={name!r} is not one of {list(LOSSES)}")
    return {}


# Each loss-parameter leaf's learning-rate group, by its name in the params dict.
_GROUPS = {"beta": "beta", "proxies": "proxies", "alpha": "alpha"}


def loss_param_labels(loss_params):
    """Same tree as `loss_params`, each leaf replaced by its learning-rate group name."""
    return {key: jax.tree.map(lambda _, k=key: _GROUPS[k], value)
            for key, value in loss_params.items()}


def loss_learning_rates(loss_config):
    """{group: learning rate} for `loss_param_labels`' groups."""
    c = _section(loss_config)
    return {"beta": c.beta_learning_rate, "proxies": c.proxy_learning_rate,
            "alpha": c.alpha_learning_rate}
