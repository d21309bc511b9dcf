"""Input pipeline: what each way of storing the images costs, and the host's batches per second.

    python bench/input_pipeline.py --workers=0,2 --batch=640

(a) Storage, per image and core, on real photographs (scikit-learn's china.jpg and flower.jpg,
    matplotlib's grace_hopper.jpg) resized to each benchmark's typical size and saved as JPEG
    quality 90: the bytes each storage keeps and the time to make one 224 x 224 train crop
    (RandomResizedCrop, torchvision's boxes) on the host:
    - `bytes`: the files' own bytes (this project's cache): decode + crop + resize;
    - `pixels`: decoded pixels at their own resolution: crop + resize only;
    - `squashed 256`: the former cache, the whole image resized to 256 x 256 (crops were then
      resampled on the device, at 0.2-0.35 of torchvision's sharpness for small crops;
      tests/test_crop_fidelity.py); the host only copied the row.
    - `official`: the official code's path on the same bytes, as its DataLoader workers run it
      every epoch: PIL open + convert('RGB'), the same RandomResizedCrop, RandomHorizontalFlip,
      ToTensor (float32 CHW / 255) and ImageNet Normalize on the host. Beside it, the cores
      each path needs to feed 6,000 images/s (`--feed`), our `bytes` path against this one
      (ours leaves flip and normalisation to the device, where they are fused into the step).
(b) Cache size per benchmark: images x the mean JPEG bytes of (a) at its typical size, beside
    the decoded-pixel and squashed-256 alternatives. The real cache is exactly the files' size
    (`du -sh` of the image folder), so these are estimates from re-encoded photographs.
(c) The trainer's input path at steady state, batch `--batch` (640 = 8 learners x 20 classes
    x 4): the round-robin or joint sampler over SOP-like labels (59,551 images, 11,318 classes),
    box sampling, `ViewLoader` cutting the crops from a cache of the (a) photographs at each
    benchmark's typical size in `--workers` processes, placement on the device; and the eval
    views of the embedding passes. images/s is what the host sustains (the sampler and the
    placement included); with W workers, about W times one core's rate on an idle host.

Prints Markdown tables with the device and CPU, for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnc_jax.configs import default  # noqa: E402
from dnc_jax.data.views import host_views  # noqa: E402
from dnc_jax.data.store.cache import cached_images  # noqa: E402
from dnc_jax.data.store.encoded import decode_bytes  # noqa: E402
from dnc_jax.data.sampling import make_sampler  # noqa: E402
from dnc_jax.divide.recluster import remove_singletons  # noqa: E402

SOP_TRAIN_IMAGES, SOP_TRAIN_CLASSES = 59_551, 11_318
# (images, typical (width, height)) of each benchmark, train + test. Typical sizes: CUB and
# In-shop ('img/', the low-resolution release) are fixed by their releases (500 px long side;
# 256 x 256); Cars, SOP and VehicleID vary widely: a middle value.
BENCHMARKS = {"CUB-200-2011": (11_788, (500, 375)), "CARS196": (16_185, (700, 480)),
              "SOP": (120_053, (500, 400)), "In-shop": (52_712, (256, 256)),
              "VehicleID": (221_763, (320, 280))}


def photographs():
    """The real photographs, or photo-like stand-ins (1/f noise) where the packages that ship
    them are not installed (the GPU machine)."""
    from PIL import Image

    try:
        import matplotlib.cbook
        import sklearn.datasets
    except ImportError:
        rng = np.random.default_rng(0)
        out = []
        for _ in range(3):
            acc = sum(2 ** o * np.asarray(Image.fromarray(rng.normal(
                0, 1, (480 // 2 ** o + 2, 640 // 2 ** o + 2)).astype(np.float32)).resize(
                (640, 480), Image.BICUBIC)) for o in range(1, 7))
            grey = np.clip(128 + acc * (60 / acc.std()), 0, 255).astype(np.uint8)
            out.append(Image.fromarray(grey).convert("RGB"))
        return out
    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    paths = [os.path.join(folder, "china.jpg"), os.path.join(folder, "flower.jpg"),
             matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)]
    return [Image.open(p).convert("RGB") for p in paths]


def encode_at(photos, size):
    """JPEG bytes (quality 90) of each photograph resized to `size` (width, height)."""
    from PIL import Image

    out = []
    for photo in photos:
        buffer = io.BytesIO()
        photo.resize(size, Image.BICUBIC).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def per_image_ms(fn, count):
    start = time.perf_counter()
    for i in range(count):
        fn(i)
    return (time.perf_counter() - start) / count * 1e3


_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


def official_view(data, box, flip: bool) -> np.ndarray:
    """float32 [3, 224, 224]: what the official train transform hands its model, from bytes."""
    from PIL import Image

    view = host_views.train_view(decode_bytes(data), box, 224)  # PIL crop + bilinear resize
    image = Image.fromarray(view)
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    tensor = np.asarray(image, np.float32).transpose(2, 0, 1) / 255.0  # ToTensor
    return (tensor - _MEAN) / _STD                                        # Normalize


def bench_storage(photos, count):
    """{benchmark: (jpeg bytes, ms bytes, ms pixels, ms squashed row copy, ms official)} per
    image."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = {}
    for name, (_, size) in BENCHMARKS.items():
        encoded = encode_at(photos, size)
        decoded = [np.asarray(decode_bytes(b)) for b in encoded]
        boxes = host_views.random_resized_crop_boxes(rng, np.tile([size[1], size[0]], (count, 1)))
        squashed = np.zeros((len(photos) * 8, 256, 256, 3), np.uint8)
        from_bytes = per_image_ms(lambda i: host_views.train_view(
            decode_bytes(encoded[i % len(encoded)]), boxes[i], 224), count)
        from_pixels = per_image_ms(lambda i: host_views.train_view(
            Image.fromarray(decoded[i % len(decoded)]), boxes[i], 224), count)
        row_copy = per_image_ms(lambda i: np.array(squashed[i % len(squashed)]), count)
        official = per_image_ms(lambda i: official_view(encoded[i % len(encoded)], boxes[i],
                                                        i % 2 == 0), count)
        out[name] = (float(np.mean([len(b) for b in encoded])), from_bytes, from_pixels,
                     row_copy, official)
    return out


def sop_like_labels(seed: int = 0):
    """SOP train's counts: 59,551 images in 11,318 classes of 2 or more images."""
    rng = np.random.default_rng(seed)
    extra = rng.multinomial(SOP_TRAIN_IMAGES - 2 * SOP_TRAIN_CLASSES,
                            np.full(SOP_TRAIN_CLASSES, 1 / SOP_TRAIN_CLASSES))
    return np.repeat(np.arange(SOP_TRAIN_CLASSES), 2 + extra).astype(np.int32)


def bench_batches(args, work_dir, photos, workers, benchmark):
    """(train crops images/s, eval views images/s) of the host path at `args.batch`, on
    photographs at `benchmark`'s typical size."""
    import jax

    from dnc_jax.data import feed
    from dnc_jax import parallel
    from dnc_jax.data.store.image_set import ImageSet

    folder = os.path.join(work_dir, benchmark)
    os.makedirs(folder, exist_ok=True)
    files = []
    for i, data in enumerate(encode_at(photos, BENCHMARKS[benchmark][1]) * 64):
        files.append(os.path.join(folder, f"{i:04d}.jpg"))
        with open(files[-1], "wb") as f:
            f.write(data)
    images, sizes = cached_images(files, os.path.join(work_dir, "cache"), benchmark,
                                  progress=False)
    labels = sop_like_labels()
    rows = np.arange(len(labels)) % len(files)  # the SOP index space onto the cached files
    data = ImageSet(images=images.select(rows), labels=labels,
                    class_names=[str(c) for c in range(labels.max() + 1)], sizes=sizes[rows])
    rng = np.random.default_rng(1)
    assignment = rng.integers(0, args.learners, labels.max() + 1)[labels].astype(np.int32)
    assignment = remove_singletons(labels, assignment)
    config = default.get_config()
    sampler = make_sampler(args.schedule, labels, assignment, args.learners, args.batch,
                           config.data.samples_per_class, seed=0)
    mesh = parallel.make_mesh()
    loader = feed.view_loader(config, workers)
    try:
        def timed(batches, count):
            next(batches)  # start-up: the pool, the first requests in flight
            start = time.perf_counter()
            for _ in range(count):
                jax.block_until_ready(next(batches))
            return count * args.batch / (time.perf_counter() - start)

        train = feed.train_batches(data, sampler.epoch(0), args.batch, mesh, loader,
                                   config.augment, seed=0, epoch=0)
        train_rate = timed(train, args.steps)
        embed = feed.embed_batches(data.images, data.sizes, args.batch, mesh, loader)
        eval_rate = timed(embed, args.steps)
    finally:
        loader.close()
    return train_rate, eval_rate


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", default=f"0,{host_views.default_workers()}",
                   help="comma-separated ViewLoader worker counts for (c) (0: in-process)")
    p.add_argument("--batch", type=int, default=640, help="global batch (80 x 8 learners)")
    p.add_argument("--learners", type=int, default=8)
    p.add_argument("--schedule", default="joint", choices=("joint", "round_robin"))
    p.add_argument("--per_image", type=int, default=200, help="crops timed per storage in (a)")
    p.add_argument("--steps", type=int, default=4, help="batches timed per figure in (c)")
    p.add_argument("--feed", type=int, default=6000, help="images/s the cores must feed in (a)")
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS),
                   help="comma-separated benchmarks whose typical size (c) runs at")
    args = p.parse_args()
    command = " ".join(["python bench/input_pipeline.py"] + sys.argv[1:])
    photos = photographs()
    import jax

    cpu = f"{host_views.default_workers()} CPUs"
    device = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
    storage = bench_storage(photos, args.per_image)
    with tempfile.TemporaryDirectory(prefix="dnc_jax-bench-") as work_dir:
        rates = {(name, int(w)): bench_batches(args, work_dir, photos, int(w), name)
                 for name in args.benchmarks.split(",") for w in args.workers.split(",")}

    print(f"\n`{command}` ({device}, {cpu})\n")
    print("| benchmark | typical size | JPEG bytes | ms/crop/core: bytes | pixels | "
          "squashed 256 (copy) | official path | official / bytes | cores for "
          f"{args.feed:,} img/s: bytes | official | cache: bytes | pixels | squashed 256 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (jpeg, ms_bytes, ms_pixels, ms_copy, ms_official) in storage.items():
        count, (w, h) = BENCHMARKS[name]
        print(f"| {name} | {w} x {h} | {jpeg / 1e3:.0f} KB | {ms_bytes:.2f} | {ms_pixels:.2f} "
              f"| {ms_copy:.3f} | {ms_official:.2f} | {ms_official / ms_bytes:.2f} | "
              f"{args.feed * ms_bytes / 1e3:.1f} | {args.feed * ms_official / 1e3:.1f} | "
              f"{count * jpeg / 1e9:.1f} GB | {count * w * h * 3 / 1e9:.1f} GB"
              f" | {count * 256 * 256 * 3 / 1e9:.1f} GB |")
    print()
    print("| benchmark | device | host | schedule | batch | view workers | train crops images/s "
          "| eval views images/s |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, workers), (train, evals) in rates.items():
        print(f"| {name} | {device} | {cpu} | {args.schedule} | {args.batch} | "
              f"{workers or 'in-process'} | {train:.0f} | {evals:.0f} |")


if __name__ == "__main__":
    main()
