"""Input-pipeline throughput: building the decode cache, and feeding training batches from it.

    python bench/input_pipeline.py --images=500 --workers=1,16 --batch=640 --image_size=224

(a) Cache build: `--images` synthetic photo-like JPEGs of 500 x 375 (SOP's typical size) are
    written to a temporary folder and decoded into a fresh cache at S = `--cache_size` with each
    number of worker processes in `--workers`; images/s includes the pool's start-up, as a real
    build pays it once.
(b) Batches: the trainer's input path at steady state: the `joint` sampler over SOP-like labels
    (59,551 images in 11,318 classes, K = `--learners` clusters), the gather of the batch's cache
    rows, `parallel.put_rows` placement and the jitted on-device `augment.train_views` at
    `--image_size`. Batch 640 = 80 images per learner x 8 learners (20 classes x 4 images each).
    The SOP-sized index space maps onto the (a) cache's rows modulo its length, so the rows are
    in the page cache: a real 23 GB cache that RAM cannot hold reads from disk and can be slower.
    Rows: the host side alone (sampler + gather + placement, waited for), the augmentation alone
    on a placed batch, and both together as the trainer overlaps them (dispatch is asynchronous;
    the output of two steps back is waited for, as the trainer reads its metrics late).

Prints Markdown table rows with the device name, for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default  # noqa: E402
from dnc_jax import parallel  # noqa: E402
from dnc_jax.data import augment, cache  # noqa: E402
from dnc_jax.data.image_set import SelectedRows  # noqa: E402
from dnc_jax.data.sampler import make_sampler, remove_singletons  # noqa: E402

SOP_TRAIN_IMAGES, SOP_TRAIN_CLASSES = 59_551, 11_318
PHOTO_SIZE = (500, 375)  # (width, height)


def write_photos(folder: str, count: int, seed: int = 0) -> list[str]:
    """Photo-like JPEGs: smooth colour fields plus mild noise (pure noise would compress and
    decode unlike photos)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), np.uint8))
        smooth = np.asarray(coarse.resize(PHOTO_SIZE, Image.BICUBIC), np.int16)
        noisy = smooth + rng.integers(-12, 13, smooth.shape, dtype=np.int16)
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _build_seconds(files, size, workers, cache_dir):
    start = time.perf_counter()
    cache.decode_cached(files, size, cache_dir, "bench", workers=workers, progress=False)
    return time.perf_counter() - start


def bench_cache_build(files, size, workers_list, work_dir):
    """{workers: (images/s of the whole build, start-up s)}, each into a new cache folder.

    The start-up (spawning the pool; each spawned worker imports the main module, here jax) is
    timed on a build of one image per worker and reported apart: it is paid once per build,
    whatever its size, so it dominates small builds only.
    """
    out = {}
    for workers in workers_list:
        startup = _build_seconds(files[:workers], size, workers,
                                 os.path.join(work_dir, f"startup-{workers}"))
        total = _build_seconds(files, size, workers, os.path.join(work_dir, f"cache-{workers}"))
        out[workers] = (len(files) / total, startup)
    return out


def per_call_seconds(call, min_calls, min_seconds, finish=lambda: None):
    """Mean seconds per `call(i)` over at least `min_calls` calls and `min_seconds`;
    `finish` waits for work the calls left in flight and is timed with them."""
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        call(calls)
        calls += 1
    finish()
    return (time.perf_counter() - start) / calls


def sop_like_labels(seed: int = 0):
    """SOP train's counts: 59,551 images in 11,318 classes of 2 or more images."""
    rng = np.random.default_rng(seed)
    extra = rng.multinomial(SOP_TRAIN_IMAGES - 2 * SOP_TRAIN_CLASSES,
                            np.full(SOP_TRAIN_CLASSES, 1 / SOP_TRAIN_CLASSES))
    return np.repeat(np.arange(SOP_TRAIN_CLASSES), 2 + extra).astype(np.int32)


def bench_batches(images, sizes, args, mesh):
    """(host ms, augmentation ms, overlapped ms) per batch at steady state."""
    labels = sop_like_labels()
    rng = np.random.default_rng(1)
    # Whole classes per cluster, roughly what k-means on embeddings gives.
    assignment = rng.integers(0, args.learners, labels.max() + 1)[labels].astype(np.int32)
    assignment = remove_singletons(labels, assignment)
    sampler = make_sampler("joint", labels, assignment, args.learners, args.batch,
                           default.get_config().data.samples_per_class, seed=0)
    rows = np.arange(len(labels)) % len(images)  # the SOP index space onto the cache's rows
    all_images, all_sizes = SelectedRows(images, rows), np.asarray(sizes)[rows]
    augment_config = default.get_config().augment
    dtype = jnp.float32 if jax.devices()[0].platform == "cpu" else jnp.bfloat16  # dtype 'auto'

    @jax.jit
    def views(batch, key):
        return augment.train_views(batch["images"], batch["sizes"], key, args.image_size,
                                   scale=tuple(augment_config.crop_scale),
                                   ratio=tuple(augment_config.crop_ratio),
                                   flip=augment_config.flip).astype(dtype)

    def batches():  # as Trainer.train_epoch builds them
        epoch = 0
        while True:
            for b in sampler.epoch(epoch):
                slots = np.arange(len(b.indices))
                yield {"images": parallel.put_rows(all_images, b.indices, mesh),
                       "sizes": parallel.put_rows(all_sizes, b.indices, mesh),
                       "labels": parallel.put_rows(labels, b.indices, mesh),
                       "learners": parallel.put_rows(b.learners, slots, mesh),
                       "valid": parallel.put_rows(b.valid, slots, mesh)}
            epoch += 1

    source = batches()
    key = jax.random.key(0)
    jax.block_until_ready(views(next(source), key))  # compile
    timing = dict(min_calls=args.min_steps, min_seconds=args.min_seconds)

    host = per_call_seconds(lambda i: jax.block_until_ready(next(source)), **timing)

    batch = next(source)
    device = per_call_seconds(
        lambda i: jax.block_until_ready(views(batch, jax.random.fold_in(key, i))), **timing)

    pending, prefetched = [], [next(source), next(source)]  # the trainer's _prefetch(size=2)

    def step(i):
        pending.append(views(prefetched.pop(0), jax.random.fold_in(key, i)))
        prefetched.append(next(source))  # gathered while the device works
        if len(pending) > 2:
            jax.block_until_ready(pending.pop(0))

    both = per_call_seconds(step, **timing, finish=lambda: jax.block_until_ready(pending))
    return host * 1e3, device * 1e3, both * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=500, help="synthetic JPEGs for (a)")
    p.add_argument("--workers", default=f"1,{os.cpu_count() or 1}",
                   help="comma-separated worker process counts for (a)")
    p.add_argument("--cache_size", type=int, default=256, help="cache side S")
    p.add_argument("--batch", type=int, default=640, help="global batch (80 x 8 learners)")
    p.add_argument("--learners", type=int, default=8)
    p.add_argument("--image_size", type=int, default=224, help="augmented crop side")
    p.add_argument("--min_steps", type=int, default=3, help="timed batches per measurement, "
                   "at least")
    p.add_argument("--min_seconds", type=float, default=5.0, help="seconds per measurement, "
                   "at least")
    args = p.parse_args()
    command = " ".join(["python bench/input_pipeline.py"] + sys.argv[1:])
    workers_list = sorted({int(w) for w in args.workers.split(",")})

    with tempfile.TemporaryDirectory(prefix="dnc_jax-bench-") as work_dir:
        photos = os.path.join(work_dir, "photos")
        os.makedirs(photos)
        files = write_photos(photos, args.images)
        rates = bench_cache_build(files, args.cache_size, workers_list, work_dir)
        images, sizes = cache.decode_cached(files, args.cache_size,
                                            os.path.join(work_dir, f"cache-{workers_list[-1]}"),
                                            "bench", progress=False)
        mesh = parallel.make_mesh()
        host_ms, device_ms, both_ms = bench_batches(images, sizes, args, mesh)
        del images  # unmap before the folder goes

    device = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
    print(f"\n`{command}`\n")
    print(f"| device | host CPUs | cache build: {args.images} JPEGs 500x375 -> S="
          f"{args.cache_size} | images/s | pool start-up, included |")
    print("|---|---|---|---|---|")
    for workers, (rate, startup) in rates.items():
        print(f"| {device} | {os.cpu_count()} | {workers} worker process(es) | {rate:.0f} | "
              f"{startup:.1f} s |")
    print()
    print("| device | batch | crop px | stage | ms/batch | batches/s | images/s |")
    print("|---|---|---|---|---|---|---|")
    for stage, ms in (("host: sampler + gather + put_rows", host_ms),
                      ("device: train_views (jit)", device_ms),
                      ("both, overlapped as in training", both_ms)):
        print(f"| {device} | {args.batch} | {args.image_size} | {stage} | {ms:.1f} | "
              f"{1e3 / ms:.2f} | {args.batch * 1e3 / ms:.0f} |")


if __name__ == "__main__":
    main()
