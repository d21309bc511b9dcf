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
