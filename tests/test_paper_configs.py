"""The paper configs are the official commands, flag by flag, and target the published tables.

The two README commands are written out below as the repositories give them. Each is parsed
(flag -> value), every flag goes through a mapping table to the config key(s) it sets, and the
config must hold the flag's value; the settings the official code fixes without a flag (miner,
phase plan, head init, k-means, ...) are checked from a second table. The PAMI configs for CUB,
Cars, In-shop and VehicleID have no official command: their sourced settings are checked, and
every setting they guess must say so on its line and in the docstring.
"""
import ast
import importlib
import os
import re
import shlex

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# CompVis/metric-learning-divide-and-conquer, README "Usage" (written for In-shop; "change
# simply --dataset=inshop to --dataset=sop or --dataset=vid").
CVPR_README = r"""
CUDA_VISIBLE_DEVICES=0 python experiment.py --dataset=inshop \
--dir=test --exp=0 --random-seed=0 --nb-clusters=8 --nb-epochs=200 \
--sz-batch=80 --backend=faiss-gpu  --embedding-lr=1e-5 --embedding-wd=1e-4 \
--backbone-lr=1e-5 --backbone-wd=1e-4 --finetune-epoch=190
"""
# experiment.py's argparse defaults for the flags the command leaves out.
CVPR_DEFAULTS = "--mod-epoch=2 --sz-embedding=128"

# CompVis/metric-learning-divide-and-conquer-improved, README "Training".
PAMI_README = r"""
python train.py --experiment margin_loss_resnet50 \
                --dataset=sop -i=$NAME -seed=4 \
                --sz-embedding=512 --mod-epoch=2 --nb-clusters=32 --nb-epochs=180 \
                --batch-size=80 --num-samples-per-class=2 --backend=faiss-gpu \
                --lr-gamma=0.3 --mod-epoch-freeze=1 --sampler=distanceweighted \
                --weight-decay=1e-4 --batch-sampler=adaptbalanced \
                --force-full-embedding-epoch=80 --mask-lr-mult=100 \
                --masking-lambda=0.01 --mask-wd-mult=1 --dataset-dir=$datadir
"""
# experiment/margin_loss_resnet50.py's argparse defaults for the flags the command leaves out.
PAMI_DEFAULTS = ("--base-lr=1e-5 --emb-lr-mult=1 --hierarchy-method=top_bot --fixed-mask=0 "
                 "--masking-init=ones --margin=0.2 --lr-beta=0 --penultimate-for-clusters=1 "
                 "--features-pooling=avg --arch=resnet50 --criterion=MarginLoss")
# The README's "fixed" rows: the code's --fixed-mask option.
PAMI_FIXED = "--fixed-mask=1"


def parse(*commands):
    """flag -> value; '--a=b', '-a=b' and '--a b' forms; later commands override earlier ones."""
    flags = {}
    for command in commands:
        tokens = shlex.split(command.replace("\\\n", " "))
        for i, tok in enumerate(tokens):
            if not tok.startswith("-"):
                continue
            name, eq, value = tok.lstrip("-").partition("=")
            if not eq:
                assert i + 1 < len(tokens) and not tokens[i + 1].startswith("-"), tok
                value = tokens[i + 1]
            flags[name] = value
    return flags


def _const(table):
    return lambda value, flags: table[value]


def _number(kind):
    return lambda value, flags: kind(value)


def _times(base_flag):
    return lambda value, flags: float(value) * float(flags[base_flag])


# flag -> [(config key, value of the key from (flag value, all flags))]; [] = not a training
# setting here, with the reason.
CVPR_MAP = {
    "dataset": [("data.name", _const({"sop": "sop", "inshop": "inshop", "vid": "vehicleid"}))],
    "random-seed": [("seed", _number(int))],
    "nb-clusters": [("divide.num_learners", _number(int))],
    "nb-epochs": [("num_epochs", _number(int))],
    "sz-batch": [("data.batch_size", _number(int))],
    "embedding-lr": [("optim.head.learning_rate", _number(float))],
    "embedding-wd": [("optim.head.weight_decay", _number(float))],
    "backbone-lr": [("optim.backbone.learning_rate", _number(float))],
    "backbone-wd": [("optim.backbone.weight_decay", _number(float))],
    # train.py switches to the whole embedding at finetune_epoch * 8/19 (= 80).
    "finetune-epoch": [("divide.finetune_epoch", _number(int)),
                       ("divide.full_embedding_epoch", lambda v, f: int(v) * 8 // 19)],
    "mod-epoch": [("divide.recluster_every", _number(int))],
    "sz-embedding": [("model.embedding_dim", _number(int))],
    "dir": [], "exp": [],  # log folder and run name
    "backend": [],         # faiss on the GPU: k-means runs in JAX here
}
PAMI_MAP = {
    "experiment": [],      # selects the flag set ("please keep this untouched")
    "dataset": [("data.name", _const({"sop": "sop", "cub": "cub", "cars": "cars",
                                      "inshop": "inshop", "vid": "vehicleid"}))],
    "i": [],               # run name
    "seed": [("seed", _number(int))],
    "sz-embedding": [("model.embedding_dim", _number(int))],
    "mod-epoch": [("divide.recluster_every", _number(int))],
    "nb-clusters": [("divide.num_learners", _number(int))],
    "nb-epochs": [("num_epochs", _number(int))],
    "batch-size": [("data.batch_size", _number(int))],
    "num-samples-per-class": [("data.samples_per_class", _number(int))],
    "backend": [],         # faiss on the GPU: k-means runs in JAX here
    "lr-gamma": [("optim.lr_decay_every", lambda v, f: 0)],  # no effect: no scheduler is made
    "mod-epoch-freeze": [("divide.freeze_epochs", _number(int))],
    "sampler": [("loss.miner", _const({"distanceweighted": "distance_weighted",
                                       "easypeasy": "easy_peasy"}))],
    "weight-decay": [("optim.backbone.weight_decay", _number(float)),
                     ("optim.head.weight_decay", _number(float))],
    "batch-sampler": [("data.sampler", _const({"adaptbalanced": "official"}))],
    "force-full-embedding-epoch": [("divide.full_embedding_epoch", _number(int))],
    "mask-lr-mult": [("optim.masks.learning_rate", _times("base-lr"))],
    "masking-lambda": [("divide.orthogonality_weight", _number(float))],
    "mask-wd-mult": [("optim.masks.weight_decay", _times("weight-decay"))],
    "dataset-dir": [],     # --config.data.root on our command line
    "base-lr": [("optim.backbone.learning_rate", _number(float))],
    "emb-lr-mult": [("optim.head.learning_rate", _times("base-lr"))],
    "hierarchy-method": [("divide.schedule", _const({"top_bot": "pami"}))],
    "fixed-mask": [("divide.masks", _const({"0": "learned", "1": "fixed"}))],
    "masking-init": [("divide.mask_init", _const({"ones": "ones", "normal": "normal"}))],
    "margin": [("loss.margin", _number(float))],
    "lr-beta": [("loss.beta_mode", _const({"0": "fixed"}))],
    "penultimate-for-clusters": [("divide.cluster_on", _const({"1": "features"}))],
    "features-pooling": [("model.pooling", _const({"avg": "avg", "max": "max"}))],
    "arch": [("model.name", _const({"resnet50": "resnet50"}))],
    "criterion": [("loss.name", _const({"MarginLoss": "margin"}))],
}

# What both official codes do without a flag, and what this port needs to do the same.
COMMON_IMPLICIT = {
    "dtype": "float32",                      # the papers trained in float32
    "data.epoch_length": "official",         # len(cluster) // batch batches per learner
    "data.sampler": "official",              # class-uniform batches
    "augment.image_size": 224, "augment.crop_scale": (0.08, 1.0),
    "augment.crop_ratio": (3 / 4, 4 / 3), "augment.flip": True,
    "augment.eval_crop_fraction": 224 / 256,
    "model.name": "resnet50", "model.width": 64, "model.stem": "imagenet",
    "model.bn_frozen": True, "model.pooling": "avg", "model.dropout": 0.01,
    "model.pretrained": "timm/resnet50.tv_in1k",
    "loss.name": "margin", "loss.margin": 0.2, "loss.beta": 1.2, "loss.beta_mode": "fixed",
    "loss.nu": 0.0, "loss.cutoff": 0.5, "loss.negatives_per_anchor": 0,
    "optim.lr_decay_every": 0,               # neither repository decays the learning rate
    "divide.learner_schedule": "round_robin",  # learners take turns, batch by batch
    "divide.warmup_epochs": 0,               # the ImageNet model is clustered at once
    "divide.cluster_on": "features", "divide.kmeans_init": "random",
    "divide.kmeans_restarts": 1, "divide.kmeans_iterations": 100,
    "eval.every_epochs": 1, "checkpoint.keep_best_on_test": True,
}
CVPR_IMPLICIT = {
    **COMMON_IMPLICIT,
    "data.samples_per_class": 4,             # hard-coded in lib/data/loader/utils.py
    "loss.miner": "easy_peasy",              # the repository's only miner
    "loss.easy_peasy_strict": False,         # its fill-in when negatives run short
    "divide.schedule": "cvpr", "divide.masks": "slices", "divide.freeze_epochs": 0,
    "model.head_init": "cvpr",               # xavier_normal per learner block
    "divide.kmeans_trials": 1,               # one faiss run, no acceptance test
}
PAMI_IMPLICIT = {
    **COMMON_IMPLICIT,
    "loss.distance_weighted_dim": "embedding",  # DistanceWeightedSampler gets d, not the view
    "loss.nonzero_loss_cutoff": 1.4,         # 1.2 + margin
    "model.head_init": "pt_default",         # PyTorch's default Linear init
    "divide.finetune_epoch": -1,             # finetune_epoch default inf
    "divide.kmeans_trials": 30, "divide.split_trials": 30,  # ntrials=30 in train.py
}

# Every paper config: the command it is, or None (no official command for that data set).
PAPER_CONFIGS = {
    "cvpr.sop": (CVPR_MAP, CVPR_IMPLICIT, (CVPR_DEFAULTS, CVPR_README, "--dataset=sop")),
    "cvpr.inshop": (CVPR_MAP, CVPR_IMPLICIT, (CVPR_DEFAULTS, CVPR_README)),
    "cvpr.vehicleid": (CVPR_MAP, CVPR_IMPLICIT, (CVPR_DEFAULTS, CVPR_README, "--dataset=vid")),
    "pami.sop_learned": (PAMI_MAP, PAMI_IMPLICIT, (PAMI_DEFAULTS, PAMI_README)),
    "pami.sop_fixed": (PAMI_MAP, PAMI_IMPLICIT, (PAMI_DEFAULTS, PAMI_README, PAMI_FIXED)),
}

# The published results each config targets: data set, the table's Recall@K, R@1 (NMI).
PUBLISHED = {
    "cvpr.sop": ("sop", (1, 10, 100, 1000), 76.40, None),    # CVPR README; paper table 75.9
    "cvpr.inshop": ("inshop", (1, 10, 20, 30), 87.36, None),  # CVPR README; paper table 85.7
    "cvpr.vehicleid": ("vehicleid", (1, 5), 91.54, None),     # CVPR README, 2,400 list
    "pami.sop_learned": ("sop", (1, 10, 100), 79.80, 89.68),
    "pami.sop_fixed": ("sop", (1, 10, 100), 79.50, 89.59),
    "pami.cub_learned": ("cub", (1, 2, 4, 8), 67.71, 69.84),
    "pami.cub_fixed": ("cub", (1, 2, 4, 8), 67.39, 68.60),
    "pami.cars_learned": ("cars", (1, 2, 4, 8), 86.90, 70.10),
    "pami.cars_fixed": ("cars", (1, 2, 4, 8), 87.22, 70.57),
    "pami.inshop_learned": ("inshop", (1, 10, 20, 30), 90.49, 89.88),
    "pami.inshop_fixed": ("inshop", (1, 10, 20, 30), 89.84, 89.76),
    "pami.vehicleid_learned": ("vehicleid", (1, 5), 93.93, 90.70),
    "pami.vehicleid_fixed": ("vehicleid", (1, 5), 94.01, 90.78),
}

# The PAMI configs without an official command: what they guess (the SOP command's values, K
# aside), each marked GUESS on its line in <set>_learned.py.
PAMI_GUESSED = ["seed", "num_epochs", "data.batch_size", "data.samples_per_class",
                "data.sampler", "model.embedding_dim", "optim.backbone.learning_rate",
                "optim.backbone.weight_decay", "optim.head.learning_rate",
                "optim.head.weight_decay", "optim.masks.learning_rate",
                "optim.masks.weight_decay", "divide.orthogonality_weight",
                "divide.recluster_every", "divide.freeze_epochs",
                "divide.full_embedding_epoch", "divide.num_learners"]
PAMI_GUESSED_K = {"cub": 4, "cars": 4, "inshop": 32, "vehicleid": 32}


def get(config, key):
    for part in key.split("."):
        config = config[part]
    return tuple(config) if isinstance(config, (list, tuple)) else config


def same(a, b):
    if isinstance(b, float) and not isinstance(a, bool):
        return a == pytest.approx(b, rel=1e-9)
    return a == b and type(a) is type(b)


def load(name):
    return importlib.import_module(f"dnc_jax.configs.{name}").get_config()


def expected_from_command(mapping, commands):
    flags = parse(*commands)
    unmapped = sorted(set(flags) - set(mapping))
    assert not unmapped, f"flags with no entry in the mapping table: {unmapped}"
    return {key: to_value(value, flags)
            for flag, value in flags.items() for key, to_value in mapping[flag]}


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_is_the_official_command(name):
    mapping, implicit, commands = PAPER_CONFIGS[name]
    config = load(name)
    expected = expected_from_command(mapping, commands)
    for key, value in {**implicit, **expected}.items():
        assert same(get(config, key), value), f"{name}: {key} = {get(config, key)!r}, not {value!r}"


def test_the_commands_parse_as_the_readmes_say():
    cvpr = parse(CVPR_DEFAULTS, CVPR_README)
    assert cvpr["nb-clusters"] == "8" and cvpr["finetune-epoch"] == "190"
    assert cvpr["sz-batch"] == "80" and cvpr["mod-epoch"] == "2"
    pami = parse(PAMI_DEFAULTS, PAMI_README)
    assert pami["experiment"] == "margin_loss_resnet50" and pami["seed"] == "4"
    assert pami["nb-clusters"] == "32" and pami["batch-size"] == "80"
    assert pami["num-samples-per-class"] == "2" and pami["fixed-mask"] == "0"
    assert parse(PAMI_README, PAMI_FIXED)["fixed-mask"] == "1"


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_paper_config_reports_the_published_tables_metrics(name):
    data_name, ks, r1, nmi = PUBLISHED[name]
    config = load(name)
    assert config.data.name == data_name
    assert set(ks) <= set(config.eval.recall_ks)
    if data_name == "vehicleid":
        assert config.data.vehicleid_test == "large"  # both READMEs' VehicleID list
    assert 60 < r1 < 100 and (nmi is None or 60 < nmi < 100)


@pytest.mark.parametrize("data_set", sorted(PAMI_GUESSED_K))
def test_pami_configs_without_a_command_mark_every_guess(data_set):
    from dnc_jax.configs.pami import _unpublished as unpublished

    path = os.path.join(REPO, "dnc_jax", "configs", "pami", f"{data_set}_learned.py")
    source = open(path).read()
    doc = ast.get_docstring(ast.parse(source))
    # The SOP command's values they reuse are the GUESSES listed once, in unpublished.py; K is
    # each file's own GUESS, marked where it is set.
    assert set(unpublished.GUESSED_FROM_SOP) | {"divide.num_learners"} == set(PAMI_GUESSED)
    assert re.search(r"# GUESS: .*\n\s+config = unpublished\.config\(", source)
    assert "GUESS" in doc and "divide.num_learners" in doc and "GUESSED_FROM_SOP" in doc
    assert "2109.04003" in doc  # says where the settings were looked for
    unpublished_doc = ast.get_docstring(ast.parse(open(unpublished.__file__).read()))
    assert "GUESS" in unpublished_doc and "2109.04003" in unpublished_doc

    learned, fixed = load(f"pami.{data_set}_learned"), load(f"pami.{data_set}_fixed")
    # Sourced: the README's table (margin loss, distance-weighted miner, the two mask
    # variants), the code's help text (top_bot), what the code does for every data set.
    for key, value in PAMI_IMPLICIT.items():
        assert same(get(learned, key), value), key
    assert learned.loss.miner == "distance_weighted" and learned.divide.schedule == "pami"
    assert learned.divide.masks == "learned" and fixed.divide.masks == "fixed"
    fixed.divide.masks = "learned"
    assert fixed.to_dict() == learned.to_dict()  # the variants differ in the masks only
    # Guessed: the SOP command's values, K aside.
    sop = load("pami.sop_learned")
    for key in PAMI_GUESSED:
        if key != "divide.num_learners":
            assert get(learned, key) == get(sop, key), key
    assert learned.divide.num_learners == PAMI_GUESSED_K[data_set]


def test_the_papers_page_names_every_paper_config():
    page = open(os.path.join(REPO, "docs", "papers.md")).read()
    section = page.split("## Published results and the configs that target them", 1)[1]
    section = section.split("\n## ", 1)[0]
    for name in PUBLISHED:
        assert f"configs/{name.replace('.', '/')}.py" in section, name
