"""Config values that cannot work, refused before the data set is read and the workdir written.

`check_values(config)` raises a `ConfigError` for the first bad key it finds: one line naming
the key, its value and what is allowed (the CLI prints it and exits with status 2). It owns the
range rules of the numeric keys of `dnc_jax/defaults.py` (counts, sizes, rates, periods,
fractions); the batch layout rules stay with the sampler (`sampler.check_batch_layout`, called
from here), and a key whose *name* must be one of a list is checked where that list lives
(`loss.name`, `model.name`, `divide.schedule`, ... already refused before any data loads).

Allowed on purpose:
* `num_epochs=0` evaluates the starting model once (the 'untrained' row of metrics.jsonl) and
  trains nothing, writes no checkpoint: the baseline of a pretrained start.
* `data.samples_per_class=1` with a proxy loss (`losses.PROXY_LOSSES`): the class proxies are
  the positives, so a batch needs no positive pair. Every other loss needs M >= 2.
* `model.embedding_dim` not a multiple of `divide.num_learners`: the CVPR blocks are
  ceil(d / K) dims, the last one shorter (`masks.contiguous_slices`); refused only when some
  learner would get no dimension at all.
"""
from __future__ import annotations

import math
import numbers

from dnc_jax import defaults
from dnc_jax.data.sampling import sampler as sampler_lib
from dnc_jax.errors import ConfigError
from dnc_jax.losses import PROXY_LOSSES


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_at_least(low: int, note: str = ""):
    return (lambda v: _is_int(v) and v >= low,
            f"an integer >= {low}" + (f" ({note})" if note else ""))


def _above(low: float, note: str = ""):
    return (lambda v: _is_number(v) and v > low,
            f"a number > {low}" + (f" ({note})" if note else ""))


def _at_least(low: float, note: str = ""):
    return (lambda v: _is_number(v) and v >= low,
            f"a number >= {low}" + (f" ({note})" if note else ""))


def _between(low: float, high: float, closed_low: bool, closed_high: bool):
    def ok(v):
        return (_is_number(v) and (v >= low if closed_low else v > low)
                and (v <= high if closed_high else v < high))
    text = f"{'[' if closed_low else '('}{low}, {high}{']' if closed_high else ')'}"
    return ok, f"in {text}"


def _one_of(*choices):
    return (lambda v: v in choices), f"one of {list(choices)}"


_RATE = _at_least(0)
# key: (test, what is allowed). Every key here is in defaults.get_config().
_RULES = {
    "seed": _int_at_least(0, "numpy's generators take no negative seed"),
    "num_epochs": _int_at_least(0, "0: evaluate the starting model once, no training"),
    "log_every_steps": _int_at_least(1),
    "data.split_seed": _int_at_least(0),
    "data.view_workers": _int_at_least(-1, "-1: one per core, 0: the main process"),
    "data.batch_size": _int_at_least(1),
    "data.eval_batch_size": _int_at_least(1),
    "augment.image_size": _int_at_least(1),
    "augment.eval_crop_fraction": _between(0, 1, False, True),
    "model.width": _int_at_least(1),
    "model.embedding_dim": _int_at_least(1),
    "model.dropout": _between(0, 1, True, False),
    "model.vit.norm_eps": _above(0),
    "loss.negatives_per_anchor": _int_at_least(0, "0: samples_per_class - 1"),
    "loss.margin": _at_least(0),
    "loss.cutoff": _at_least(0),
    "loss.nonzero_loss_cutoff": _above(0),
    "loss.nu": _at_least(0),
    "loss.temperature": _above(0),
    "loss.ms_alpha": _above(0),
    "loss.ms_beta": _above(0),
    "loss.proxy_alpha": _above(0),
    "loss.npairs_alpha": _above(0),
    "loss.beta_learning_rate": _RATE,
    "loss.proxy_learning_rate": _RATE,
    "loss.alpha_learning_rate": _RATE,
    "optim.backbone.learning_rate": _RATE,
    "optim.backbone.weight_decay": _RATE,
    "optim.head.learning_rate": _RATE,
    "optim.head.weight_decay": _RATE,
    "optim.masks.learning_rate": _RATE,
    "optim.masks.weight_decay": _RATE,
    "optim.lr_decay_every": _int_at_least(0, "0: constant rates"),
    "optim.lr_decay_factor": _above(0),
    "divide.recluster_every": _int_at_least(0, "0: never"),
    "divide.full_embedding_epoch": _int_at_least(-1, "-1: never"),
    "divide.finetune_epoch": _int_at_least(-1, "-1: never"),
    "divide.freeze_epochs": _int_at_least(0),
    "divide.orthogonality_weight": _at_least(0),
    "divide.kmeans_trials": _int_at_least(1),
    "divide.split_trials": _int_at_least(1),
    "divide.kmeans_restarts": _int_at_least(1),
    "divide.kmeans_iterations": _int_at_least(1),
    "divide.cluster_on": _one_of("features", "embedding"),
    "divide.kmeans_init": _one_of("random", "kmeans++"),
    "divide.mask_init": _one_of("ones", "normal"),
    "eval.every_epochs": _int_at_least(1, "the last epoch is always evaluated"),
    "eval.block_size": _int_at_least(1),
    "checkpoint.keep": _int_at_least(1),
    "checkpoint.every_epochs": _int_at_least(1, "the last epoch is always saved"),
    "checkpoint.every_steps": _int_at_least(0, "0: only at epoch ends"),
}
# Read only when data.name='glyphs' (the rendered demo set).
_GLYPH_RULES = {
    "data.image_size": _int_at_least(1),
    "data.glyphs.seed": _int_at_least(0),
    "data.glyphs.min_faces": _int_at_least(1),
    "data.glyphs.instances_per_face": _int_at_least(1),
    "data.glyphs.max_classes": ((lambda v: _is_int(v) and (v == -1 or v >= 1)),
                                "-1 (all) or an integer >= 1"),
}


def _value(config, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def _refuse(key: str, value, allowed: str):
    raise ConfigError(f"{key}={value!r} must be {allowed}")


def _check_rules(config, rules: dict) -> None:
    for key, (ok, allowed) in rules.items():
        value = _value(config, key)
        if not ok(value):
            _refuse(key, value, allowed)


def _check_pair(key: str, value, high) -> None:
    """A (min, max) range of positive numbers, at most `high` (None: no bound)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else None
    fits = (pair is not None and len(pair) == 2 and all(map(_is_number, pair))
            and 0 < pair[0] <= pair[1] and (high is None or pair[1] <= high))
    if not fits:
        bound = f" <= {high}" if high is not None else ""
        _refuse(key, value, f"(min, max) with 0 < min <= max{bound}")


def learner_counts(config) -> list[int]:
    """Every number of learners the run's phases use: 1 and K ('cvpr'), the powers of two up
    to K ('pami', K doubles from 1)."""
    k = config.divide.num_learners
    if config.divide.schedule == "pami":
        return [2 ** j for j in range(k.bit_length()) if 2 ** j <= k]
    return sorted({1, k})


def _check_embedding_blocks(config) -> None:
    """Each learner's block of the embedding (ceil(d / K) dims, `masks.contiguous_slices`)
    must hold at least one dimension, at every K the run uses."""
    dim = config.model.embedding_dim
    for k in learner_counts(config):
        size = math.ceil(dim / k)
        if size * (k - 1) >= dim:
            raise ConfigError(
                f"model.embedding_dim={dim} leaves a learner without dimensions at "
                f"divide.num_learners={k} (blocks of ceil({dim}/{k})={size}); use an "
                f"embedding_dim that is a multiple of {k}, or fewer learners")


def check_values(config) -> None:
    """Raises a ConfigError naming the first key of `config` (a whole run config; absent keys
    take their defaults) whose value cannot work. Reads nothing from disk."""
    config = defaults.complete(config)
    _check_rules(config, _RULES)
    if config.data.name == "glyphs":
        _check_rules(config, _GLYPH_RULES)
    _check_pair("augment.crop_scale", config.augment.crop_scale, 1)
    _check_pair("augment.crop_ratio", config.augment.crop_ratio, None)
    ks = config.eval.recall_ks
    if (not isinstance(ks, (tuple, list)) or not ks
            or not all(_is_int(k) and k >= 1 for k in ks)):
        _refuse("eval.recall_ks", ks, "a non-empty list of integers >= 1, e.g. (1, 2, 4, 8)")
    proxy = config.loss.name in PROXY_LOSSES
    m = config.data.samples_per_class
    if not _is_int(m) or m < (1 if proxy else 2):
        allowed = ("an integer >= 1" if proxy else
                   f"an integer >= 2: a class needs a positive pair in the batch for "
                   f"loss.name={config.loss.name!r} (1 only for the proxy losses "
                   f"{', '.join(PROXY_LOSSES)})")
        _refuse("data.samples_per_class", m, allowed)
    sampler_lib.check_batch_layout(
        config.data.batch_size, m, config.divide.num_learners, config.divide.learner_schedule,
        min_classes=1 if proxy else 2)
    _check_embedding_blocks(config)
