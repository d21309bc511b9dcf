"""The pretrained start of the accuracy evidence: a corpus disjoint from the demo targets, a
trained run's backbone written as a `model.pretrained` file, and the fine-tuning bench.

The backbone file is checked against torch's layout in tests/test_pretrained.py; here a run's
backbone goes out through `dnc-jax backbone` and back in through `model.pretrained`, bit for bit,
and bench/accuracy.py sweeps and fine-tunes from it end to end on its smallest setting."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from dnc_jax.inference import backbone, restore
from dnc_jax.data.sources import glyph_classes, glyph_fonts, glyphs
from dnc_jax.models.variables import initial_variables
from tests.helpers import train_tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def test_pretrain_corpus_shares_no_character_or_look_alike_with_the_targets():
    listed = dict(glyph_fonts.class_list(4, False, "pretrain"))
    targets = set(glyph_classes.LETTERS) | set(glyph_classes.candidates("scripts"))
    assert len(listed) > 1000 and not set(listed) & targets
    # Hand-picked look-alikes of target characters that the pretrain blocks hold and the
    # bundled faces draw: Kelvin sign = K, ohm sign = Ω, Roman numerals one and five = I, V,
    # Lisu letters BA and PA = B and P. The homoglyph filter must drop each.
    look_alikes = "\u212a\u2126\u2160\u2164\ua4d0\ua4d1"
    candidates = glyph_classes.candidates("pretrain")
    for ch in look_alikes:
        assert ch in candidates, f"U+{ord(ch):04X} is not a pretrain candidate any more"
        assert ch not in listed, f"U+{ord(ch):04X} looks like a target character but was kept"
    # Every class names its block, and no block is empty.
    blocks = {glyph_classes.super_class(ch, "pretrain") for ch in listed}
    assert "" not in blocks and len(blocks) == len(glyph_classes.PRETRAIN_BLOCKS)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    config, workdir = train_tiny_run(root)
    path = str(root / "backbone" / "model.safetensors")
    description = backbone.export_backbone(workdir, path)
    return root, config, workdir, path, description


def test_backbone_goes_out_and_back_in_bit_for_bit(pretrained):
    root, config, workdir, path, description = pretrained
    trained = restore.load_trained(workdir)
    trained.embed_fn.close()
    config.model.pretrained = path
    params, stats = initial_variables(trained.model, config.model, 2, jax.random.key(7),
                                      config.augment.image_size)
    for got, want in ((params["backbone"], trained.model_params["backbone"]),
                      (stats["backbone"], trained.batch_stats["backbone"])):
        flat_got = jax.tree_util.tree_leaves_with_path(got)
        flat_want = dict(jax.tree_util.tree_leaves_with_path(want))
        assert len(flat_got) == len(flat_want) > 10
        for key, value in flat_got:
            np.testing.assert_array_equal(np.asarray(value), np.asarray(flat_want[key]))
    with open(backbone.config_json_path(path)) as f:
        written = json.load(f)
    assert written["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406]
    assert written["dnc_jax"]["epoch"] == description["dnc_jax"]["epoch"] == 0


def test_backbone_command_refuses_to_overwrite_a_run_config(pretrained):
    root, config, workdir, path, _ = pretrained
    run_config = os.path.join(workdir, "config.json")
    before = open(run_config, "rb").read()
    out = os.path.join(workdir, "model.safetensors")
    done = subprocess.run([sys.executable, "-m", "dnc_jax.inference.backbone",
                           f"--workdir={workdir}", f"--out={out}"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    message = done.stderr.strip().splitlines()
    assert len(message) == 1 and "not a weight description" in message[0], message
    assert open(run_config, "rb").read() == before and not os.path.exists(out)
    missing = subprocess.run([sys.executable, "-m", "dnc_jax.inference.backbone",
                              f"--workdir={root / 'nothing'}", f"--out={root / 'x.safetensors'}"],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_accuracy_bench_sweeps_then_fine_tunes_its_smallest_setting(pretrained, tmp_path):
    root, config, workdir, path, _ = pretrained
    out = tmp_path / "bench"
    cmd = [sys.executable, os.path.join(REPO, "bench", "accuracy.py"),
           "--config=tests/helpers.py", "--grid=finetune", "--settings=cvpr-K2-rr",
           "--seeds=0,1", "--epochs=1", "--jobs=2", f"--pretrained={path}",
           "--sweep=1:1,0.1:1", f"--out={out}", f"--set=data.cache_dir={root / 'cache'}"]
    done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (out / "table-finetune.md").read_text()
    assert "nan" not in table.lower() and "Non-finite" not in table
    rows = {line.split("|")[1].strip(): line for line in table.split("The sweep")[0].splitlines()
            if line.startswith("| K1 ") or line.startswith("| cvpr-K2-rr ")}
    assert set(rows) == {"K1", "cvpr-K2-rr"}
    sweep = table.split("The sweep")[1]
    for name in ("K1", "cvpr-K2-rr"):
        line = next(l for l in sweep.splitlines() if l.startswith(f"| {name} "))
        assert line.count("**") == 2  # one chosen point of two
        point = "lr1x-batch1x" if line.split("|")[2].strip().startswith("**") else \
            "lr0.1x-batch1x"
        # The other seed ran at the chosen point, from the pretrained file.
        command = (out / "runs" / name / point / "seed1" / "command.txt").read_text()
        assert f"--config.model.pretrained={path}" in command
        assert not (out / "runs" / name / ("lr0.1x-batch1x" if point == "lr1x-batch1x"
                                           else "lr1x-batch1x") / "seed1").exists()
    k2 = (out / "runs" / "cvpr-K2-rr" / "lr0.1x-batch1x" / "seed0" / "command.txt").read_text()
    rate = 0.1 * config.optim.backbone.learning_rate
    assert f"--config.optim.backbone.learning_rate={rate}" in k2


def test_block_labels_join_exactly_the_characters_of_one_block(tmp_path):
    from dnc_jax.data import sources
    from dnc_jax.errors import ConfigError

    sets = glyphs.load_glyphs(cache_dir=str(tmp_path), image_size=16, max_classes=40,
                              progress=False, classes="scripts")
    for image_set in sets.values():
        blocked = sources.by_block(image_set, "scripts")
        chars = np.asarray(image_set.class_names)[image_set.labels]
        block_of_image = [glyph_classes.super_class(ch) for ch in chars]
        assert [blocked.class_names[label] for label in blocked.labels] == block_of_image
        assert blocked.images is image_set.images
        assert 1 < len(blocked.class_names) < len(image_set.class_names)
    letters = glyphs.load_glyphs(cache_dir=str(tmp_path), image_size=16, max_classes=4,
                                 progress=False)
    with pytest.raises(ConfigError, match="data.glyphs.classes='letters'"):
        sources.by_block(letters["train"], "letters")


def test_a_missing_pretrained_file_stops_before_the_workdir_exists(tmp_path):
    from dnc_jax.training import train
    from dnc_jax.models.pretrained import WeightImportError
    from tests.helpers import tiny_config

    config = tiny_config()
    config.data.cache_dir = str(tmp_path / "cache")
    config.model.pretrained = str(tmp_path / "runs" / "pretrained" / "model.safetensors")
    with pytest.raises(WeightImportError, match="pretrained weights not found: .*model.pretrained"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
