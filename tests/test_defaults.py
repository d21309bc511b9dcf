"""One place for defaults: `dnc_jax.defaults` completes older and partial configs, and no code
reads a config key with a default of its own."""
import ast
import json
import pathlib

import ml_collections
import pytest

from dnc_jax import defaults, losses
from dnc_jax.training import run_guard
from dnc_jax.divide import schedule

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _leaf_names(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaf_names(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _without(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree[p]
    del tree[leaf]


def test_complete_of_the_defaults_is_the_defaults():
    config = defaults.get_config()
    assert defaults.complete(config) == config
    locked = defaults.get_config()
    locked.lock()
    done = defaults.complete(ml_collections.FrozenConfigDict(locked))
    assert done.to_dict() == config.to_dict() and not done.is_locked


def test_keys_removed_from_the_defaults_come_back():
    """Added keys come back with their older values, the others with the defaults; a locked
    config is copied, not changed."""
    trimmed = defaults.get_config().to_dict()
    for key in ("data.sampler", "optim.joint_lr_rule", "checkpoint.keep_best_on_test",
                "loss.margin", "eval.recall_ks"):
        _without(trimmed, key)
    del trimmed["divide"]                       # a whole section: key by key
    config = ml_collections.ConfigDict(trimmed)
    config.lock()
    done = defaults.complete(config)
    default = defaults.get_config()
    assert done.optim.joint_lr_rule == "none" and done.checkpoint.keep_best_on_test is False
    assert done.data.sampler == "exact" and done.divide.schedule == "cvpr"
    assert done.loss.margin == default.loss.margin and done.eval.recall_ks == (1, 2, 4, 8)
    assert done.divide.num_learners == default.divide.num_learners
    assert "margin" not in config.loss          # the input is left as it was
    done.loss.margin = 0.5                      # ... and the copy is unlocked and its own
    assert defaults.complete(config).loss.margin == default.loss.margin


def test_every_added_key_is_a_key_of_the_defaults():
    leaves = _leaf_names(defaults.get_config().to_dict())
    assert set(defaults.ADDED_KEYS) <= set(leaves), set(defaults.ADDED_KEYS) - set(leaves)


def test_an_older_saved_config_gets_the_values_it_was_trained_with(tmp_path):
    """A config.json saved before the ADDED_KEYS existed, read back as JSON (tuples -> lists)."""
    saved = json.loads(defaults.get_config().to_json_best_effort())
    for key in defaults.ADDED_KEYS:
        _without(saved, key)
    _without(saved, "eval.block_size")          # absent, not an added key: the default
    saved["model"]["embedding_dim"] = 512       # present: kept
    saved["data"]["user_note"] = "kept"         # unknown to the defaults: kept
    done = defaults.complete(ml_collections.ConfigDict(saved))
    leaves = _leaf_names(done.to_dict())
    for key, old in defaults.ADDED_KEYS.items():
        assert leaves[key] == old, key
    assert done.eval.block_size == defaults.get_config().eval.block_size
    assert done.model.embedding_dim == 512 and done.data.user_note == "kept"
    assert list(done.eval.recall_ks) == [1, 2, 4, 8]
    # ... and resuming it with a current config holding those values changes nothing.
    current = defaults.get_config()
    for key, old in defaults.ADDED_KEYS.items():
        *parents, leaf = key.split(".")
        node = current
        for p in parents:
            node = node[p]
        node[leaf] = old
    current.model.embedding_dim = 512
    saved_again = json.loads(current.to_json_best_effort())
    for key in defaults.ADDED_KEYS:
        _without(saved_again, key)
    assert run_guard.changed_keys(saved_again, json.loads(current.to_json_best_effort())) == []


def test_partial_sections_are_filled_from_the_same_defaults():
    loss = defaults.filled(ml_collections.ConfigDict({"name": "triplet"}), "loss")
    assert loss.name == "triplet" and loss.miner == defaults.get_config().loss.miner
    losses.make_loss(ml_collections.ConfigDict({"name": "margin"}), 2, 4)
    assert losses.loss_learning_rates(ml_collections.ConfigDict({"name": "npairs"})) == \
        losses.loss_learning_rates(defaults.get_config().loss)
    divide = ml_collections.ConfigDict(dict(num_learners=4, recluster_every=2,
                                            full_embedding_epoch=-1, finetune_epoch=-1))
    assert schedule.phase(divide, 0).num_learners == 4  # schedule, warm-up: the defaults'


def _config_key_names():
    return {k.rsplit(".", 1)[-1] for k in _leaf_names(defaults.get_config().to_dict())}


# What a config, or a section of one, is called in dnc_jax besides names holding "config".
_CONFIG_NAMES = {"c", "g", "cfg", "data", "loss", "optim", "divide", "checkpoint", "eval"}


def _is_config(owner: str) -> bool:
    return "config" in owner or any(part in _CONFIG_NAMES for part in owner.split("."))


def test_no_module_reads_a_config_key_with_its_own_default():
    """`x.get("<a config key>", default)` on a config would be a second, possibly disagreeing
    default; completed configs are read by attribute instead. (dnc_jax/data/sources/glyphs.py reads
    `params.get("classes", ...)` on its own cache-key dict, which is not a config.)"""
    keys = _config_key_names()
    found = []
    for path in sorted((ROOT / "dnc_jax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "get" and len(node.args) == 2
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys
                    and _is_config(ast.unparse(node.func.value))):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found


@pytest.mark.parametrize("name", ["loss", "divide", "data", "optim"])
def test_filled_keeps_what_is_set(name):
    section = defaults.get_config()[name].to_dict()
    first = next(k for k, v in section.items() if isinstance(v, (int, float, str))
                 and not isinstance(v, bool))
    section[first] = section[first] * 2 if not isinstance(section[first], str) else "x"
    assert defaults.filled(ml_collections.ConfigDict(section), name)[first] == section[first]
