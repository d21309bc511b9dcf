"""config_checks.check_values: every value that cannot work is one ConfigError line naming the
key, the value and what is allowed; every shipped config passes."""
import re

import pytest

from dnc_jax import config_checks, defaults
from dnc_jax.data.sampling.sampler import check_batch_layout
from dnc_jax.errors import ConfigError
from tests.helpers import tiny_config
from tests.test_configs import CONFIGS


def _config(**values):
    """tiny_config() as a plain dict with `values` set, keys dotted with '__'
    ('data__batch_size'): a ConfigDict would refuse a value of another type (a float count)."""
    config = tiny_config().to_dict()
    for key, value in values.items():
        *path, last = key.split("__")
        node = config
        for part in path:
            node = node[part]
        node[last] = value
    return config


def _refused(config) -> str:
    with pytest.raises(ConfigError) as e:
        config_checks.check_values(config)
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_passes(name):
    import importlib

    config_checks.check_values(importlib.import_module(f"dnc_jax.configs.{name}").get_config())


def test_the_defaults_and_the_test_config_pass():
    config_checks.check_values(defaults.get_config())
    config_checks.check_values(tiny_config())


# (key, a value that cannot work, what the message says is allowed)
BAD = [
    ("seed", -1, "an integer >= 0"),
    ("num_epochs", -1, "an integer >= 0 (0: evaluate the starting model once, no training)"),
    ("num_epochs", 2.5, "an integer >= 0"),
    ("log_every_steps", 0, "an integer >= 1"),
    ("data.split_seed", -3, "an integer >= 0"),
    ("data.view_workers", -2, "an integer >= -1 (-1: one per core, 0: the main process)"),
    ("data.batch_size", 0, "an integer >= 1"),
    ("data.eval_batch_size", 0, "an integer >= 1"),
    ("augment.image_size", 0, "an integer >= 1"),
    ("augment.eval_crop_fraction", 0.0, "in (0, 1]"),
    ("augment.eval_crop_fraction", 1.2, "in (0, 1]"),
    ("model.width", 0, "an integer >= 1"),
    ("model.embedding_dim", 0, "an integer >= 1"),
    ("model.dropout", 1.0, "in [0, 1)"),
    ("model.vit.norm_eps", 0.0, "a number > 0"),
    ("loss.negatives_per_anchor", -1, "an integer >= 0 (0: samples_per_class - 1)"),
    ("loss.margin", -0.2, "a number >= 0"),
    ("loss.cutoff", -0.5, "a number >= 0"),
    ("loss.nonzero_loss_cutoff", 0.0, "a number > 0"),
    ("loss.nu", -1.0, "a number >= 0"),
    ("loss.temperature", 0.0, "a number > 0"),
    ("loss.ms_alpha", 0.0, "a number > 0"),
    ("loss.ms_beta", -50.0, "a number > 0"),
    ("loss.proxy_alpha", 0.0, "a number > 0"),
    ("loss.npairs_alpha", 0.0, "a number > 0"),
    ("loss.beta_learning_rate", -1e-3, "a number >= 0"),
    ("loss.proxy_learning_rate", -1e-3, "a number >= 0"),
    ("loss.alpha_learning_rate", -1.0, "a number >= 0"),
    ("optim.backbone.learning_rate", -1e-5, "a number >= 0"),
    ("optim.backbone.weight_decay", -1e-4, "a number >= 0"),
    ("optim.head.learning_rate", -1e-5, "a number >= 0"),
    ("optim.head.weight_decay", -1e-4, "a number >= 0"),
    ("optim.masks.learning_rate", -1e-3, "a number >= 0"),
    ("optim.masks.weight_decay", -1e-4, "a number >= 0"),
    ("optim.lr_decay_every", -1, "an integer >= 0 (0: constant rates)"),
    ("optim.lr_decay_factor", 0.0, "a number > 0"),
    ("divide.recluster_every", -1, "an integer >= 0 (0: never)"),
    ("divide.full_embedding_epoch", -2, "an integer >= -1 (-1: never)"),
    ("divide.finetune_epoch", -2, "an integer >= -1 (-1: never)"),
    ("divide.freeze_epochs", -1, "an integer >= 0"),
    ("divide.orthogonality_weight", -0.01, "a number >= 0"),
    ("divide.kmeans_trials", 0, "an integer >= 1"),
    ("divide.split_trials", 0, "an integer >= 1"),
    ("divide.kmeans_restarts", 0, "an integer >= 1"),
    ("divide.kmeans_iterations", 0, "an integer >= 1"),
    ("divide.cluster_on", "logits", "one of ['features', 'embedding']"),
    ("divide.kmeans_init", "kmeans||", "one of ['random', 'kmeans++']"),
    ("divide.mask_init", "zeros", "one of ['ones', 'normal']"),
    ("eval.every_epochs", 0, "an integer >= 1 (the last epoch is always evaluated)"),
    ("eval.block_size", 0, "an integer >= 1"),
    ("checkpoint.keep", 0, "an integer >= 1"),
    ("checkpoint.every_epochs", 0, "an integer >= 1 (the last epoch is always saved)"),
    ("checkpoint.every_steps", -1, "an integer >= 0 (0: only at epoch ends)"),
    # data.name='glyphs' (the test config's) only:
    ("data.image_size", 0, "an integer >= 1"),
    ("data.glyphs.seed", -1, "an integer >= 0"),
    ("data.glyphs.min_faces", 0, "an integer >= 1"),
    ("data.glyphs.instances_per_face", 0, "an integer >= 1"),
    ("data.glyphs.max_classes", 0, "-1 (all) or an integer >= 1"),
    ("augment.crop_scale", (0.0, 1.0), "(min, max) with 0 < min <= max <= 1"),
    ("augment.crop_scale", (0.5, 1.5), "(min, max) with 0 < min <= max <= 1"),
    ("augment.crop_scale", (1.0, 0.5), "(min, max) with 0 < min <= max <= 1"),
    ("augment.crop_ratio", (4 / 3, 3 / 4), "(min, max) with 0 < min <= max"),
    ("eval.recall_ks", (), "a non-empty list of integers >= 1"),
    ("eval.recall_ks", (0, 1), "a non-empty list of integers >= 1"),
]


@pytest.mark.parametrize("key, value, allowed", BAD, ids=lambda x: str(x))
def test_each_bad_value_is_one_line_naming_key_value_and_what_is_allowed(key, value, allowed):
    message = _refused(_config(**{key.replace(".", "__"): value}))
    assert message.startswith(f"{key}={value!r} must be {allowed}"), message


def test_every_rule_is_a_default_key_and_is_tested():
    default = defaults.get_config()
    rules = {**config_checks._RULES, **config_checks._GLYPH_RULES}
    for key in rules:
        node = default
        for part in key.split("."):
            node = node[part]  # a KeyError: a rule for a key the config does not have
    assert set(rules) <= {key for key, _, _ in BAD}


def test_zero_epochs_is_allowed_and_glyph_keys_only_matter_for_glyphs():
    config_checks.check_values(_config(num_epochs=0))  # evaluates the starting model only
    config = _config(data__image_size=0, data__glyphs__max_classes=0, data__name="folder")
    config_checks.check_values(config)


def test_one_image_per_class_only_for_proxy_losses():
    message = _refused(_config(data__samples_per_class=1))
    assert message == (
        "data.samples_per_class=1 must be an integer >= 2: a class needs a positive pair in "
        "the batch for loss.name='margin' (1 only for the proxy losses proxy_anchor, "
        "normalized_softmax)")
    for loss in ("proxy_anchor", "normalized_softmax"):
        config_checks.check_values(_config(data__samples_per_class=1, loss__name=loss))
    assert _refused(_config(data__samples_per_class=0, loss__name="proxy_anchor")) == (
        "data.samples_per_class=0 must be an integer >= 1")


def test_a_batch_of_part_classes_is_refused_per_learner_or_across_learners():
    # round robin: the batch is one learner's, a multiple of M.
    assert _refused(_config(divide__learner_schedule="round_robin", data__batch_size=30)) == (
        "data.batch_size=30 is not a whole number of classes of data.samples_per_class=4 "
        "images: 2 slots would be padding; use a multiple of 4, e.g. 28 or 32")
    # joint (the test config's, K=2, M=4): split among the learners, a multiple of K x M.
    assert _refused(_config(data__batch_size=36)) == (
        "data.batch_size=36 is not a whole number of classes for each of the 2 learners of a "
        "'joint' step (2 x data.samples_per_class=4): 4 slots would be padding; use a "
        "multiple of 8, e.g. 32 or 40")
    config_checks.check_values(_config(data__batch_size=40))
    # The check lives with the sampler's other batch rules; too few classes is said first.
    check_batch_layout(36, 4, 1, "joint")
    with pytest.raises(ConfigError, match=r"gives each of the 32 learners of a 'joint' step 1 "):
        check_batch_layout(80, 2, 32, "joint")
    with pytest.raises(ConfigError, match=r"^divide.num_learners=0 must be at least 1"):
        check_batch_layout(80, 4, 0, "joint")  # was a ZeroDivisionError
    assert _refused(_config(divide__num_learners=0)) == (
        "divide.num_learners=0 must be at least 1 (1: the plain baseline)")


def test_an_embedding_too_small_for_the_learners_blocks():
    # d not a multiple of K is allowed (blocks of ceil(d/K), the last shorter) ...
    config_checks.check_values(_config(model__embedding_dim=10, divide__num_learners=4,
                                       data__batch_size=64))
    # ... unless a learner is left without any dimension.
    message = _refused(_config(model__embedding_dim=10, divide__num_learners=6,
                               data__batch_size=48))
    assert message == ("model.embedding_dim=10 leaves a learner without dimensions at "
                       "divide.num_learners=6 (blocks of ceil(10/6)=2); use an embedding_dim "
                       "that is a multiple of 6, or fewer learners")
    # PAMI's K doubles 1, 2, 4, 8: each is checked.
    config = _config(model__embedding_dim=12, divide__num_learners=8, data__batch_size=64,
                     divide__schedule="pami", divide__masks="fixed")
    assert config_checks.learner_counts(defaults.complete(config)) == [1, 2, 4, 8]
    assert re.match(r"model.embedding_dim=12 leaves a learner without dimensions at "
                    r"divide.num_learners=8 ", _refused(config))
