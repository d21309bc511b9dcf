"""A whole training run at Stanford Online Products' scale, with tiny images and a tiny model.

    python bench/sop_scale.py --root=/tmp/fake_sop            # writes the data set once
    python -m dnc_jax.main --config=configs/sop.py --config.data.root=/tmp/fake_sop \
        --workdir=runs/sop_scale <the overrides this script prints>

What it checks is the plumbing at the real sizes, not accuracy: SOP's official layout and
counts (Ebay_train.txt / Ebay_test.txt, 59,551 train images in 11,318 classes, 60,502 test
images in 11,316 classes, 2 to 12 images a class, twelve super-class folders, .JPG names), so
the list parsing, the image cache of 120,053 images, the host-side crops, the class-balanced
sampler over 11k classes, k-means and matching over 60k features, and the leave-one-out
evaluation over 60k embeddings with R@1000 all run at full size. Images are 40 x 30 JPEGs of a
class colour plus noise, so the numbers are not SOP's; the run's own logs give the time of every
phase.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

SUPER_CLASSES = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug",
                 "sofa", "stapler", "table", "toaster")
# (images, classes) of the official split files.
SPLITS = {"Ebay_train.txt": (59_551, 11_318, 0), "Ebay_test.txt": (60_502, 11_316, 11_318)}
IMAGE_SIZE = (40, 30)  # (width, height): not square, as SOP's photos

OVERRIDES = (
    "--config.num_epochs=3",
    # The schedule these figures were measured with (the configs' default then): 8 learners a
    # step, 80 slots each, at the base learning rate.
    "--config.divide.learner_schedule=joint",
    "--config.data.batch_size=640",
    "--config.optim.joint_lr_rule=none",
    "--config.augment.image_size=32",
    "--config.augment.eval_crop_fraction=1.0",
    "--config.model.name=resnet_tiny",
    "--config.model.width=8",
    "--config.model.bn_frozen=False",
    "--config.model.pretrained=",
    "--config.dtype=float32",
    # From scratch, as the demo: the papers' 1e-5 is for fine-tuning an ImageNet ResNet-50.
    "--config.optim.backbone.learning_rate=1e-3",
    "--config.optim.head.learning_rate=1e-3",
    "--config.divide.recluster_every=2",
    "--config.progress=False",
)


def class_sizes(images: int, classes: int, rng) -> np.ndarray:
    """SOP-like sizes: every class 2..12 images, summing to exactly `images`."""
    sizes = np.full(classes, 2)
    extra = images - sizes.sum()
    while extra > 0:
        room = np.flatnonzero(sizes < 12)
        picked = rng.choice(room, size=min(extra, len(room)), replace=False)
        sizes[picked] += 1
        extra -= len(picked)
    return sizes


def _write_images(job):
    root, rows, seed = job
    from PIL import Image

    rng = np.random.default_rng(seed)
    for rel, colour in rows:
        pixels = colour + rng.integers(-40, 41, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            os.path.join(root, rel), quality=85)
    return len(rows)


def write_fake_sop(root: str, seed: int = 0, workers: int = 2) -> None:
    rng = np.random.default_rng(seed)
    for name in SUPER_CLASSES:
        os.makedirs(os.path.join(root, f"{name}_final"), exist_ok=True)
    rows, image_id = [], 1
    for list_name, (images, classes, first_class) in SPLITS.items():
        sizes = class_sizes(images, classes, rng)
        lines = ["image_id class_id super_class_id path"]
        for c, size in enumerate(sizes):
            class_id = first_class + c + 1
            super_id = int(rng.integers(len(SUPER_CLASSES)))
            colour = rng.integers(40, 216, 3)
            for j in range(size):
                rel = f"{SUPER_CLASSES[super_id]}_final/{class_id}_{j}.JPG"
                lines.append(f"{image_id} {class_id} {super_id + 1} {rel}")
                rows.append((rel, colour))
                image_id += 1
        with open(os.path.join(root, list_name), "w") as f:
            f.write("\n".join(lines) + "\n")
    chunks = [(root, rows[i:i + 5000], seed + i) for i in range(0, len(rows), 5000)]
    with ProcessPoolExecutor(workers) as pool:
        written = sum(pool.map(_write_images, chunks))
    print(f"wrote {written:,} images and the two lists under {root}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="folder to write the fake SOP into")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    if os.path.exists(os.path.join(args.root, "Ebay_test.txt")):
        print(f"{args.root} already holds a data set; delete it to write a new one")
    else:
        os.makedirs(args.root, exist_ok=True)
        write_fake_sop(args.root, workers=args.workers)
        print(f"in {time.perf_counter() - start:.1f} s")
    print("train with:\n  python -m dnc_jax.main --config=configs/sop.py "
          f"--config.data.root={args.root} --workdir=runs/sop_scale \\\n    "
          + " \\\n    ".join(OVERRIDES))


if __name__ == "__main__":
    main()
