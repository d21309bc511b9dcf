"""A real run on image files in an official layout (In-shop): decode cache, original sizes
through the on-device crops, query-vs-gallery evaluation, and the evaluate command."""
import json
import os

import numpy as np
from PIL import Image

from dnc_jax.inference import evaluate
from dnc_jax.training import train
from tests.helpers import tiny_config


def _inshop(root, rng):
    """8 training items and 6 test items, 4 photos each, of varied sizes and aspect ratios."""
    lines = []
    sizes = [(40, 30), (30, 44), (36, 36), (50, 28)]
    for item in range(14):
        status = ["train"] * 4 if item < 8 else ["query", "query", "gallery", "gallery"]
        colour = rng.integers(40, 215, 3)
        for j in range(4):
            name = f"img/MEN/Tees/id_{item:08d}/{j:02d}_1_front.jpg"
            w, h = sizes[(item + j) % 4]
            pixels = np.clip(colour + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
            os.makedirs(os.path.dirname(root / name), exist_ok=True)
            Image.fromarray(pixels).save(root / name, quality=90)
            lines.append(f"{name} id_{item:08d} {status[j]}")
    os.makedirs(root / "Eval")
    with open(root / "Eval" / "list_eval_partition.txt", "w") as f:
        f.write(f"{len(lines)}\nimage_name item_id evaluation_status\n" + "\n".join(lines) + "\n")


def test_inshop_layout_trains_evaluates_and_reevaluates(tmp_path):
    root = tmp_path / "inshop"
    _inshop(root, np.random.default_rng(0))
    config = tiny_config()
    config.data.name = "inshop"
    config.data.root = str(root)
    config.data.cache_dir = str(tmp_path / "cache")
    config.data.image_size = 24
    config.data.batch_size = 16
    config.data.eval_batch_size = 16
    config.augment.eval_crop_fraction = 0.875
    config.eval.recall_ks = (1, 2, 4)
    config.num_epochs = 1
    workdir = str(tmp_path / "run")
    record = train.train_and_evaluate(config, workdir)
    assert record["num_learners"] == 2 and sum(record["cluster_sizes"]) > 0
    assert 0 < record["recall@1"] <= record["recall@4"] <= 1 and "map@r" in record
    # The cache kept each photo's original size for the crops.
    cached = [f for f in os.listdir(tmp_path / "cache") if f.endswith("sizes.npy")]
    assert cached and {tuple(s) for f in cached for s in np.load(tmp_path / "cache" / f)} \
        <= {(30, 40), (44, 30), (36, 36), (28, 50)}
    result, meta = evaluate.evaluate_run(workdir)
    assert "query" in result.protocol.lower() and "gallery" in result.protocol.lower()
    assert result.metrics["recall@1"] == record["recall@1"]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [-1, 0]
