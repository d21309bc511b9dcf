"""Every shipped config loads, names a known data set, and documents its keys in default.py."""
import glob
import importlib
import os
import re

import pytest

from dnc_jax.data.sampler import learner_slots
from dnc_jax.divide import schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if not p.endswith("__init__.py"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_plans_its_first_epochs(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert config.data.name in ("glyphs", "sop", "cub", "cars", "inshop", "vehicleid",
                                "folder", "csv", "tfds")
    plan = [schedule.phase(config.divide, e) for e in range(config.num_epochs)]
    assert plan[0].num_learners >= 1
    assert config.data.batch_size % config.data.samples_per_class == 0
    # Every learner's part of a step holds the papers' 20 x 4 (or PAMI's 40 x 2) images.
    learners = config.divide.num_learners if config.divide.learner_schedule == "joint" else 1
    part = learner_slots(config.data.batch_size, learners, config.data.samples_per_class)
    assert part == (32 if name.startswith("demo") else 80)


def test_every_default_key_has_a_comment():
    text = open(os.path.join(REPO, "configs", "default.py")).read()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s+config\.[\w.\[\]\"]+ = ", line) and "ConfigDict()" not in line:
            above = lines[i - 1].strip()
            assert "#" in line or above.startswith("#"), f"undocumented key: {line.strip()}"


def test_sop_pami_is_the_readme_run():
    from configs import sop_pami

    c = sop_pami.get_config()
    ks = [schedule.phase(c.divide, e).num_learners for e in range(0, 12, 2)]
    assert ks == [1, 2, 4, 8, 16, 32] and c.model.embedding_dim == 512
    assert c.data.batch_size // c.data.samples_per_class == 40
