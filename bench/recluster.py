"""Time of one reclustering at SOP scale: k-means + matching + singleton removal.

    python bench/recluster.py                       # 60,000 x 2048 features, K=32, 100 iterations
    python bench/recluster.py --n=20000 --iters=20  # a smaller run for a slow CPU

Features are L2-normalised Gaussian mixtures with SOP-like classes (2-12 images each), already
on the device as after the embedding pass. Prints one Markdown row for BENCHMARKS.md with the
device name: the steady-state time (second call) and the first call's (compile included).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnc_jax.divide.recluster import remove_singletons  # noqa: E402
from dnc_jax.divide import kmeans as kmeans_lib  # noqa: E402
from dnc_jax.divide import matching  # noqa: E402


def sop_like_labels(n, rng):
    sizes = rng.integers(2, 13, n // 2)
    labels = np.repeat(np.arange(len(sizes)), sizes)[:n]
    return labels


def mixture(n, dim, num_centers, rng, chunk=65536):
    """float32 [n, dim] L2-normalised Gaussian mixture, built in chunks: the bench's own host
    memory stays one copy of the features (float64 temporaries of the whole matrix would be
    twice it and dwarf what reclustering itself holds)."""
    centers = rng.standard_normal((num_centers, dim), np.float32)
    x = np.empty((n, dim), np.float32)
    for lo in range(0, n, chunk):
        part = x[lo:lo + chunk]
        part[...] = centers[rng.integers(0, num_centers, len(part))]
        part += rng.standard_normal(part.shape, np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
    return x


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=60000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--init", default="random")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    labels = sop_like_labels(args.n, rng)
    x = jax.device_put(mixture(args.n, args.dim, args.k * 4, rng))
    previous = rng.integers(0, args.k, args.n)

    def once(key):
        result = kmeans_lib.kmeans_jit(x, args.k, key, max_iter=args.iters, init=args.init)
        assignment = np.asarray(result.assignment)
        perm = matching.match_clusters(previous, assignment, args.k)
        return remove_singletons(labels, matching.relabel(assignment, perm)), result

    t0 = time.perf_counter()
    once(jax.random.key(0))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, result = once(jax.random.key(1))
    steady = time.perf_counter() - t0
    device = jax.devices()[0].device_kind
    print(f"| {device} | {args.n} x {args.dim} | {args.k} | {int(result.n_iter)} of {args.iters} "
          f"| {steady:.2f} s | {first:.2f} s |")


if __name__ == "__main__":
    main()
