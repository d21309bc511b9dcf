"""Every shipped config loads, names a known data set, and documents its keys in defaults.py."""
import glob
import importlib
import os
import re

import pytest

from dnc_jax.data.sampling.sampler import learner_slots
from dnc_jax.divide import schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Module names below configs/: 'sop', and the paper configs' 'cvpr.sop', 'pami.sop_learned', ...
CONFIGS = sorted(
    os.path.relpath(p, os.path.join(REPO, "dnc_jax", "configs"))[:-3].replace(os.sep, ".")
    for pattern in ("*.py", "cvpr/*.py", "pami/*.py", "vit/*.py")
    for p in glob.glob(os.path.join(REPO, "dnc_jax", "configs", pattern))
    if not os.path.basename(p).startswith("_"))  # __init__, helpers such as _unpublished


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_plans_its_first_epochs(name):
    config = importlib.import_module(f"dnc_jax.configs.{name}").get_config()
    assert config.data.name in ("glyphs", "sop", "cub", "cars", "inshop", "vehicleid",
                                "folder", "csv", "tfds")
    plan = [schedule.phase(config.divide, e) for e in range(config.num_epochs)]
    assert plan[0].num_learners >= 1
    assert config.data.batch_size % config.data.samples_per_class == 0
    # Every learner's part of a step holds the papers' 20 x 4 (or PAMI's 40 x 2) images; the
    # demos 8 x 4; pretraining (a classification, not a D&C run) 16 blocks x 8.
    learners = config.divide.num_learners if config.divide.learner_schedule == "joint" else 1
    part = learner_slots(config.data.batch_size, learners, config.data.samples_per_class)
    assert part == {"pretrain_glyphs": 128}.get(name, 32 if name.startswith("demo") else 80)


def test_every_default_key_has_a_comment():
    text = open(os.path.join(REPO, "dnc_jax", "defaults.py")).read()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s+config\.[\w.\[\]\"]+ = ", line) and "ConfigDict()" not in line:
            above = lines[i - 1].strip()
            assert "#" in line or above.startswith("#"), f"undocumented key: {line.strip()}"


def test_configs_cover_both_papers():
    assert {"cvpr.sop", "cvpr.inshop", "cvpr.vehicleid"} <= set(CONFIGS)
    assert {f"pami.{d}_{m}" for d in ("sop", "cub", "cars", "inshop", "vehicleid")
            for m in ("learned", "fixed")} <= set(CONFIGS)


def test_pami_sop_learned_is_the_readme_run():
    from dnc_jax.configs.pami import sop_learned

    c = sop_learned.get_config()
    ks = [schedule.phase(c.divide, e).num_learners for e in range(0, 12, 2)]
    assert ks == [1, 2, 4, 8, 16, 32] and c.model.embedding_dim == 512
    assert c.data.batch_size // c.data.samples_per_class == 40


# configs/vit/*.py take the backbone after a colon (--config=configs/vit/sop.py:dinov2_s14).
VIT_DATA_SETS = ("sop", "cub", "cars", "inshop")
VIT_BACKBONES = ("dino_s16", "dinov2_s14", "dinov2_s14_reg4", "dinov2_b14_reg4", "clip_b16")
# What each checkpoint's layout needs (timm's model of that name), written out again here so a
# change of the table in configs/vit/_recipe.py has to be made twice.
VIT_KEYS = {
    "dino_s16": ("vit_s16", "timm/vit_small_patch16_224.dino", "imagenet", 384, {}),
    "dinov2_s14": ("vit_s14", "timm/vit_small_patch14_dinov2.lvd142m", "imagenet", 384,
                   {"layer_scale": True}),
    "dinov2_s14_reg4": ("vit_s14", "timm/vit_small_patch14_reg4_dinov2.lvd142m", "imagenet",
                        384, {"layer_scale": True, "reg_tokens": 4, "no_embed_class": True}),
    "dinov2_b14_reg4": ("vit_b14", "timm/vit_base_patch14_reg4_dinov2.lvd142m", "imagenet",
                        768, {"layer_scale": True, "reg_tokens": 4, "no_embed_class": True}),
    "clip_b16": ("vit_b16", "timm/vit_base_patch16_clip_224.openai", "clip", 512,
                 {"pre_norm": True, "norm_eps": 1e-5, "act": "gelu", "projection": 512}),
}


def test_the_vit_configs_default_is_the_dino_vit_s16_recipe():
    from dnc_jax.configs import sop
    from dnc_jax.configs.vit import sop as vit_sop

    config = vit_sop.get_config()
    assert config.to_dict() == vit_sop.get_config("dino_s16").to_dict()
    assert config.to_dict() == vit_sop.get_config("").to_dict()  # --config=...sop.py:
    assert (config.model.name, config.model.pretrained, config.model.pooling,
            config.model.embedding_dim, config.model.dropout) == (
        "vit_s16", "timm/vit_small_patch16_224.dino", "token", 384, 0.0)
    assert config.model.vit.to_dict() == {**sop.get_config().model.vit.to_dict(),
                                          "drop_path": 0.1}
    o = config.optim
    assert (o.algorithm, o.backbone.learning_rate, o.head.learning_rate,
            o.backbone.weight_decay, o.head.weight_decay, o.no_decay_1d, o.layer_decay,
            o.warmup_steps, o.clip_grad_norm) == (
        "adamw", 1e-5, 1e-4, 0.05, 0.05, True, 0.75, 2 * (59551 // 80), 3.0)
    assert config.augment.normalization == "imagenet"


@pytest.mark.parametrize("backbone", VIT_BACKBONES)
@pytest.mark.parametrize("data_set", VIT_DATA_SETS)
def test_each_vit_config_and_backbone_builds_and_passes_the_run_checks(data_set, backbone):
    import jax
    import jax.numpy as jnp

    from dnc_jax import config_checks, defaults
    from dnc_jax.configs.vit import _recipe
    from dnc_jax.data.views import augment
    from dnc_jax.divide import masks
    from dnc_jax.models import vit
    from dnc_jax.models.embedder import check_model_config, make_embedder
    from dnc_jax.training import optim

    base = importlib.import_module(f"dnc_jax.configs.{data_set}").get_config()
    config = importlib.import_module(f"dnc_jax.configs.vit.{data_set}").get_config(backbone)
    name, weights, normalization, dim, vit_keys = VIT_KEYS[backbone]
    assert set(_recipe.BACKBONES) == set(VIT_BACKBONES)
    assert (config.model.name, config.model.pretrained, config.augment.normalization,
            config.model.embedding_dim) == (name, weights, normalization, dim)
    # timm's name of the weights is the architecture model.name builds: size and patch side.
    size, patch = re.match(r"timm/vit_(small|base)_patch(\d+)_", weights).groups()
    assert name == f"vit_{size[0]}{patch}"
    for key, value in vit_keys.items():
        assert config.model.vit[key] == value, key
    assert config.model.vit.drop_path == (0.0 if backbone == "clip_b16" else 0.1)
    # Only the model, augment.normalization and optim differ from the data set's config.
    changed = {k for k in config.to_dict() if config.to_dict()[k] != base.to_dict()[k]}
    assert changed <= {"model", "augment", "optim"}
    assert {k for k, v in config.augment.items() if v != base.augment[k]} <= {"normalization"}
    # The checks a run makes before it reads data, as train.train_and_evaluate makes them.
    config = defaults.complete(config)
    config_checks.check_values(config)
    check_model_config(config.model, config.augment.image_size)
    vit.check_crop(config.model.name, config.augment.image_size)  # 224 = 16 x 14 = 14 x 16
    augment.normalization_constants(config.augment.normalization)
    optim.check_optim_config(config)
    masks.phase_arrays(config, schedule.phase(config.divide, 0))
    # The network, shapes only (no weights are read: the test never touches the hub).
    config.model.pretrained = ""
    model = make_embedder(config.model)
    images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(
        lambda x: model.init({"params": jax.random.key(0)}, x, train=False), images)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    width = {"s": 384, "b": 768}[size[0]]
    grid = (224 // int(patch)) ** 2
    assert out["embedding"].shape == (2, dim) and out["features"].shape == (2, dim)
    backbone_params = variables["params"]["backbone"]
    reg = vit_keys.get("reg_tokens", 0)
    assert backbone_params["pos_embed"].shape == (1, grid + (0 if reg else 1), width)
    assert ("reg_token" in backbone_params) == bool(reg)
    if reg:
        assert backbone_params["reg_token"].shape == (1, reg, width)
    assert ("ls1" in backbone_params["blocks_0"]) == vit_keys.get("layer_scale", False)
    assert ("norm_pre" in backbone_params) == vit_keys.get("pre_norm", False)
    if backbone == "clip_b16":  # CLIP's projection inside the backbone, as timm's `head`
        assert backbone_params["head"]["kernel"].shape == (768, 512)
        assert "bias" not in backbone_params["patch_embed"]["proj"]


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections'
def test_a_vit_backbone_comes_from_the_text_after_the_colon_and_a_wrong_one_is_one_line():
    import subprocess
    import sys

    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values)
    cub = os.path.join(REPO, "configs", "vit", "cub.py")
    values(["prog", f"--config={cub}:dinov2_b14_reg4"])
    assert values.config.model.name == "vit_b14" and values.config.model.vit.reg_tokens == 4
    proc = subprocess.run(
        [sys.executable, "-m", "dnc_jax.main", f"--config={cub}:dinov2_b14",
         "--workdir=/nonexistent/never_written"], cwd=REPO, capture_output=True, text=True,
        timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "dnc_jax: cannot load the --config file: ConfigError: unknown ViT backbone "
        "'dinov2_b14': one of dino_s16, dinov2_s14, dinov2_s14_reg4, dinov2_b14_reg4, clip_b16 "
        "(after the config file, e.g. --config=configs/vit/sop.py:dinov2_s14; none: dino_s16)"]


def test_the_python_api_and_the_run_folder_take_the_text_after_the_colon_too():
    import subprocess
    import sys

    from dnc_jax import api

    config = api.get_config("vit/sop:clip_b16", num_epochs=1)
    assert config.model.vit.projection == 512 and config.num_epochs == 1
    assert api.get_config("vit/sop").model.name == "vit_s16"
    # dnc_jax.main defines absl flags when imported (as do the inference tools the suite
    # imports): its run-folder name is read in a process of its own.
    names = subprocess.run(
        [sys.executable, "-c", "from dnc_jax.main import default_workdir as d; "
         "print(d('configs/vit/sop.py:clip_b16')); print(d('configs/vit/sop.py'))"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"}).stdout.split()
    assert os.path.basename(names[0]).startswith("vit-sop-clip_b16-")
    assert os.path.basename(names[1]).startswith("vit-sop-2")
