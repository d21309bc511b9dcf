"""Time and peak memory of the exact SOP evaluation: R@1/10/100/1000 + MAP@R in one blocked pass.

    python bench/evaluate.py                      # SOP size: 60,502 x 512, 11,316 classes
    python bench/evaluate.py --num_images=15000   # a smaller set with the same class sizes

Random unit vectors with SOP-like class sizes (2-12 images per class, 11,316 classes at full size,
scaled down with --num_images). Runs the leave-one-out pass --repeats times (default 2): the
first call includes compilation (about a second), the last is the steady-state time. On a CPU the
full size takes ~1.5 min per pass, so `--repeats=1` halves the run. Peak memory: on GPU/TPU the
device's `peak_bytes_in_use`; on CPU the growth of the process's max RSS over the run (XLA
allocates outside Python, so tracemalloc would see nothing). Prints one Markdown table row with
the device name, for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnc_jax import parallel  # noqa: E402
from dnc_jax.evaluation import retrieval  # noqa: E402

SOP_TEST_IMAGES, SOP_TEST_CLASSES = 60_502, 11_316


def sop_like_labels(num_images: int, rng) -> np.ndarray:
    """Labels of `num_images` items in classes of 2-12 images, SOP's images/classes ratio."""
    n_classes = max(1, round(num_images * SOP_TEST_CLASSES / SOP_TEST_IMAGES))
    if not 2 * n_classes <= num_images <= 12 * n_classes:
        raise ValueError(f"cannot split {num_images} images into {n_classes} classes of 2-12")
    sizes = np.full(n_classes, 2)
    extra = num_images - sizes.sum()
    while extra:  # hand out the remaining images one per class per round, never above 12
        open_classes = np.flatnonzero(sizes < 12)
        grow = rng.choice(open_classes, size=min(extra, len(open_classes)), replace=False)
        sizes[grow] += 1
        extra -= len(grow)
    return rng.permutation(np.repeat(np.arange(n_classes), sizes)).astype(np.int32)


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def device_peak_bytes():
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--num_images", type=int, default=SOP_TEST_IMAGES)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--block_size", type=int, default=1024)
    p.add_argument("--ks", default="1,10,100,1000")
    p.add_argument("--repeats", type=int, default=2, help="timed calls; the first compiles")
    args = p.parse_args()
    ks = tuple(int(k) for k in args.ks.split(","))

    rng = np.random.default_rng(0)
    labels = sop_like_labels(args.num_images, rng)
    x = rng.normal(size=(args.num_images, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    mesh = parallel.make_mesh() if jax.device_count() > 1 else None
    if mesh is not None and args.num_images % jax.device_count() == 0:
        emb = parallel.put_batch(x, mesh)  # rows split, as the embedding pass leaves them
    else:
        emb = jax.device_put(x)

    rss_before = max_rss_bytes()
    timings = []
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        metrics = retrieval.retrieval_metrics(emb, labels, ks=ks, block_size=args.block_size,
                                              map_at_r=True, mesh=mesh)
        timings.append(time.perf_counter() - start)
    device = jax.devices()[0]
    peak = device_peak_bytes()
    if peak is None:
        memory = f"+{(max_rss_bytes() - rss_before) / 2**20:,.0f} MiB max RSS (host)"
    else:
        memory = f"{peak / 2**20:,.0f} MiB device peak"

    steady = f"{timings[-1]:.1f} s" if len(timings) > 1 else "-"
    n_classes = len(np.unique(labels))
    recalls = " / ".join(f"{100 * metrics[f'recall@{k}']:.2f}" for k in ks)
    print(f"metrics: {metrics}", file=sys.stderr)
    print("| device | images x dim (classes) | block | first call (incl. compile) | "
          "steady | peak memory | R@" + "/".join(map(str, ks)) + " | MAP@R |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {device.device_kind} x{jax.device_count()} | {args.num_images:,} x {args.dim} "
          f"({n_classes:,}) | {args.block_size} | {timings[0]:.1f} s | {steady} | "
          f"{memory} | {recalls} | {100 * metrics['map@r']:.2f} |")


if __name__ == "__main__":
    main()
