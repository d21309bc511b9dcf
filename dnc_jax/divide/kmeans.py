"""K-means (Lloyd) in JAX, jittable, for the "divide" step of Divide & Conquer.

The official code clusters the L2-normalised 2048-d backbone features of the whole training set with
faiss (docs/method.md §1.1): K random training points as the start, 100 Lloyd iterations, one
restart. This module does the same on the accelerator, so the features never leave the device:

* ``init="random"``  — k distinct random (valid) points, faiss's default;
* ``init="kmeans++"`` — plain D^2 sampling (no greedy local trials), sklearn's default start;
* Lloyd iterations in a ``lax.while_loop``, stopping after ``max_iter`` updates or once the total
  squared centroid shift is <= ``tol * mean per-feature variance`` (sklearn's rule);
* empty clusters are re-seeded with the points farthest from their centroids, so all k exist;
* ``n_init`` restarts run vmapped over keys; the lowest-inertia restart wins;
* ``valid`` masks out padding rows: the training code pads the features to a fixed N so that the
  jitted function compiles once.

Memory: the data is [N, D]; per iteration the largest temporaries are the [N, k] distances and the
[N, k] one-hot assignment (no [N, k, D] broadcast), so N=60k, D=2048, k=32 is fine.

Numerics: squared distances use ||x||^2 - 2 x.c + ||c||^2 in float32, clamped at 0 because the
expansion can go slightly negative. Matmuls run at HIGHEST precision: on recent NVIDIA GPUs the
default float32 matmul is TF32 (10-bit mantissa), which is too coarse for argmins between unit
vectors whose distances differ in the third decimal.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

_PRECISION = lax.Precision.HIGHEST


class KMeansResult(NamedTuple):
    centroids: jax.Array   # [k, D] float32
    assignment: jax.Array  # [N] int32 (arbitrary but in range for invalid rows)
    inertia: jax.Array     # [] float32, sum over valid rows of squared distance to own centroid
    n_iter: jax.Array      # [] int32, Lloyd updates run (of the best restart)


# ----------------------------------------------------------------------------------------------
# Small pieces


def _sq_dists(x: jax.Array, x_sq: jax.Array, c: jax.Array) -> jax.Array:
    """[N, k] squared distances via the matmul expansion, clamped at 0."""
    c_sq = jnp.sum(c * c, axis=-1)
    xc = jnp.matmul(x, c.T, precision=_PRECISION)
    return jnp.maximum(x_sq[:, None] - 2.0 * xc + c_sq[None, :], 0.0)


def _sq_dist_to_one(x: jax.Array, x_sq: jax.Array, c: jax.Array) -> jax.Array:
    """[N] squared distances to a single centre c [D]."""
    xc = jnp.matmul(x, c, precision=_PRECISION)
    return jnp.maximum(x_sq - 2.0 * xc + jnp.dot(c, c, precision=_PRECISION), 0.0)


def _assign(x, x_sq, c):
    """Nearest centroid and its squared distance for every row."""
    d = _sq_dists(x, x_sq, c)
    a = jnp.argmin(d, axis=1).astype(jnp.int32)
    return a, jnp.take_along_axis(d, a[:, None], axis=1)[:, 0]


def _init_random(x, w, k, key):
    """k distinct valid rows, uniformly (Gumbel top-k = sampling without replacement)."""
    g = jax.random.gumbel(key, w.shape, dtype=jnp.float32)
    _, idx = lax.top_k(jnp.where(w > 0, g, -jnp.inf), k)
    return x[idx]


def _init_kmeanspp(x, x_sq, w, k, key):
    """k-means++ D^2 sampling (one candidate per step, no greedy trials) in a fori_loop."""
    key0, key_rest = jax.random.split(key)
    log_w = jnp.log(w)  # -inf on padding: never sampled
    first = jax.random.categorical(key0, log_w)
    c0 = x[first]
    cents = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(c0)
    d2 = _sq_dist_to_one(x, x_sq, c0)

    def body(i, carry):
        cents, d2 = carry
        p = d2 * w
        # All valid points already sit on a centre (fewer distinct points than k): fall back to
        # uniform so that the sample is still a valid row.
        logits = jnp.where(jnp.sum(p) > 0, jnp.log(p), log_w)
        idx = jax.random.categorical(jax.random.fold_in(key_rest, i), logits)
        c = x[idx]
        return cents.at[i].set(c), jnp.minimum(d2, _sq_dist_to_one(x, x_sq, c))

    cents, _ = lax.fori_loop(1, k, body, (cents, d2))
    return cents


def _reseed_empty(assignment, min_d2, w, k):
    """Move the farthest valid points into empty clusters (sklearn's relocation rule).

    The j-th empty cluster takes the j-th farthest point; the point leaves its old cluster, so that
    cluster's mean is computed without it. Distinct indices => distinct points moved.
    """
    counts = jnp.zeros((k,), jnp.float32).at[assignment].add(w)
    empty = counts == 0
    _, far = lax.top_k(jnp.where(w > 0, min_d2, -1.0), k)
    rank = jnp.cumsum(empty) - 1
    n = assignment.shape[0]
    target = jnp.where(empty, far[jnp.clip(rank, 0, k - 1)], n)  # n = out of range -> dropped
    return assignment.at[target].set(jnp.arange(k, dtype=jnp.int32), mode="drop")


def _update_centroids(x, w, assignment, old, k):
    """Weighted means through a one-hot matmul (deterministic, unlike scatter-add on GPU)."""
    onehot = jax.nn.one_hot(assignment, k, dtype=x.dtype) * w[:, None]
    sums = jnp.matmul(onehot.T, x, precision=_PRECISION)
    counts = jnp.sum(onehot, axis=0)
    # A cluster still empty after re-seeding (degenerate data) keeps its old centre instead of NaN.
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], old)


# ----------------------------------------------------------------------------------------------
# One run and restarts


def _lloyd(x, x_sq, w, c0, k, max_iter, tol_abs) -> KMeansResult:
    """Lloyd iterations from c0, then a final assignment step for consistent labels/inertia."""

    def cond(state):
        it, _, shift = state
        return (it < max_iter) & (shift > tol_abs)

    def body(state):
        it, c, _ = state
        a, d2 = _assign(x, x_sq, c)
        a = _reseed_empty(a, d2, w, k)
        new = _update_centroids(x, w, a, c, k)
        return it + 1, new, jnp.sum((new - c) ** 2)

    init = (jnp.int32(0), c0, jnp.array(jnp.inf, jnp.float32))
    n_iter, c, _ = lax.while_loop(cond, body, init)
    a, d2 = _assign(x, x_sq, c)
    return KMeansResult(c, a, jnp.sum(d2 * w), n_iter)


def kmeans(
    x: jax.Array,
    k: int,
    key: jax.Array,
    *,
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-4,
    init: str = "random",
    valid: Optional[jax.Array] = None,
    init_centroids: Optional[jax.Array] = None,
) -> KMeansResult:
    """Cluster the rows of x [N, D] into k clusters.

    Args:
      x: [N, D] data (cast to float32).
      k: number of clusters (static). Needs at least k valid rows.
      key: PRNG key; restarts use ``jax.random.split(key, n_init)``.
      n_init: restarts (static), vmapped; the one with the lowest inertia is returned.
      max_iter: maximum number of Lloyd updates (static).
      tol: stop when the summed squared centroid shift <= tol * mean per-feature variance of the
        valid data (sklearn's rule). tol=0 runs until the assignment is stable or max_iter.
      init: "random" (k distinct random points, faiss default) or "kmeans++" (static).
      valid: optional bool [N]; False rows (padding) are ignored: never initial points, not in
        means or inertia. Their assignment is arbitrary but in [0, k).
      init_centroids: optional [k, D] start (a warm start, e.g. previous means); overrides ``init``
        and makes all restarts identical, so n_init must be 1.
    Returns:
      KMeansResult.
    """
    x = jnp.asarray(x, jnp.float32)
    n = x.shape[0]
    w = jnp.ones((n,), jnp.float32) if valid is None else jnp.asarray(valid).astype(jnp.float32)
    # Zero the padding: it may hold anything (inf/NaN/huge), and 0 * inf = NaN in the matmuls.
    x = jnp.where(w[:, None] > 0, x, 0.0)
    x_sq = jnp.sum(x * x, axis=1)

    n_valid = jnp.sum(w)
    mean = jnp.sum(x * w[:, None], axis=0) / n_valid
    var = jnp.sum(w[:, None] * (x - mean) ** 2, axis=0) / n_valid
    tol_abs = tol * jnp.mean(var)

    if init_centroids is not None:
        if n_init != 1:
            raise ValueError("init_centroids gives one deterministic start: use n_init=1")
        c0 = jnp.asarray(init_centroids, jnp.float32)
        return _lloyd(x, x_sq, w, c0, k, max_iter, tol_abs)
    if init not in ("random", "kmeans++"):
        raise ValueError(f"unknown init {init!r}")

    def one_run(run_key):
        if init == "random":
            c0 = _init_random(x, w, k, run_key)
        else:
            c0 = _init_kmeanspp(x, x_sq, w, k, run_key)
        return _lloyd(x, x_sq, w, c0, k, max_iter, tol_abs)

    runs = jax.vmap(one_run)(jax.random.split(key, n_init))
    best = jnp.argmin(runs.inertia)
    return jax.tree_util.tree_map(lambda r: r[best], runs)


# Jitted kmeans; k, n_init, max_iter and init are static (tol, valid, init_centroids are traced).
kmeans_jit = jax.jit(kmeans, static_argnames=("k", "n_init", "max_iter", "init"))
