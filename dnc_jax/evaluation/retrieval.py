"""Exact retrieval metrics (Recall@K, MAP@R, R-precision, the PAMI "mARP") in one blocked pass.

docs/method.md §4: the official code ranks the gallery by exact Euclidean distance (faiss flat L2)
and reports Recall@K (share of queries with a same-label item among their K nearest) and, in [PAMI],
a "mARP". Its full query x gallery matrix does not fit for SOP (60k x 60k) or In-shop on the CPU, so
here one jitted program scans the queries in fixed-size blocks: a block is scored against the whole
gallery, `lax.top_k` keeps its k_max nearest, and each query is reduced *on device* to four numbers
(`QueryStats`). Neither Q x G scores nor Q x k_max neighbours ever exist.

k_max = max(max(ks), R_max), clamped to the number of candidates, where R is a query's number of
relevant items (same-label gallery items, minus itself for leave-one-out). That makes every metric
exact:

* Recall@K: rank of the first same-label neighbour < K (all queries in the denominator, as the
  official `calc_recall_at_k`; a query whose label is absent from the gallery is a miss).
* MAP@R (Musgrave et al. 2020): AP@R = (1/R) * sum_{i<=R, hit_i} precision@i.
* R-precision: hits among the first R / R.
  Both are undefined for R = 0 and averaged over queries with R >= 1 (pytorch-metric-learning
  also drops such "lone" queries); NaN if there are none.
* "marp_official": [PAMI]'s `mean_avg_R_precision`
  (metriclearning/evaluation/mean_avg_precision.py): the same sum divided by the number of hits
  among the first R instead of by R, 0 when there is no hit, averaged over *all* queries (an
  R = 0 query has an empty list and scores 0 there). R is the gallery class size minus one when
  the gallery is the query set. It is always >= MAP@R and is NOT the standard metric: it is here
  only to compare with the [PAMI] README (§6).

Rules that make the result well defined:

* Ranking key: ``||g||^2 - 2 q.g`` in float32 at HIGHEST matmul precision; it orders the gallery
  exactly like the squared Euclidean distance. Embeddings need not be unit-norm.
* Ties: items at equal distance are ranked lower gallery index first (``lax.top_k``'s order).
* Leave-one-out (``gallery=None``): each query's own row is excluded by index, not by distance, so
  an exact duplicate of a query is still retrievable, as in the official
  `faissext.find_nearest_neighbors` (k+1 searched, `nns != i` kept). This matters: [PAMI]'s
  eval_model.py notes identical images under different indices in the CUB/Cars test sets.
* ``k`` larger than the number of candidates is clamped: Recall@k is then whether any candidate
  has the query's label. With no candidates at all, every recall is 0.

Memory: per device, one step holds (block / devices) x G float32 scores plus the top-k workspace
((block / devices) x k_max values and indices), next to the gallery (G x D, replicated) and its
share of the queries; the results are length-Q vectors. A large R_max (a class of thousands of
images) therefore costs time (top_k approaches a sort of each row), never memory beyond about
2 x (block / devices) x G per step, so k_max needs no cap. SOP: R_max = 11, k_max = 1000 from the
ks; at block 1024 a step's scores are 1024 x 60,502 x 4 B = 248 MB (bench/evaluate.py).

Devices: with a 1-D ('data',) mesh (passed, or found on a sharded `query`), the padded query rows
are split evenly over the devices (`shard_map`), each device scans its own rows in blocks of
block / devices against the replicated gallery, and only the (Q,) results are gathered. Plain
`jit` would not do: XLA's partitioner all-gathers the score matrix in front of `top_k`. Every
query's row goes through the same computation however the rows are split, so results are
identical on 1 and 8 devices (tests/test_evaluation_multidevice.py), and they come back
replicated on every device.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dnc_jax.parallel import DATA_AXIS

# Incremented each time `_query_stats_program` is traced (not each time it runs), so tests can
# check that a call compiles once, not once per block.
_TRACE_COUNT = 0

# Rank reported for a query with no same-label item among its candidates; it is larger than any
# k, so `rank < k` is False for every k.
_MISS = np.iinfo(np.int32).max


class QueryStats(NamedTuple):
    """Per-query results of one pass, numpy arrays of shape (Q,)."""
    first_hit: np.ndarray      # int32 0-based rank of the first same-label neighbour, or _MISS
    num_relevant: np.ndarray   # int64 R: same-label candidates (self excluded)
    hits_in_r: np.ndarray      # int32 same-label items among the first R (0 if not computed)
    precision_sum: np.ndarray  # float32 sum of precision@i over those hits (0 if not computed)


def retrieval_metrics(
    query,
    query_labels,
    gallery=None,
    gallery_labels=None,
    ks: Sequence[int] = (1, 2, 4, 8),
    block_size: int = 1024,
    map_at_r: bool = True,
    mesh: Optional[Mesh] = None,
) -> dict[str, float]:
    """Recall@K and (optionally) MAP@R, R-precision and the official [PAMI] mARP, exactly.

    Args:
      query: (Q, D) embeddings (numpy or jax, possibly sharded); computed in float32.
      query_labels: (Q,) labels of any type `np.unique` can sort.
      gallery: (G, D) embeddings, or None for leave-one-out over `query`.
      gallery_labels: (G,) labels; must be given exactly when `gallery` is.
      ks: positive Recall@K cut-offs; a k above the number of candidates is clamped to it.
      block_size: queries scored per step (all devices together); memory ~ block x G floats.
      map_at_r: also compute 'map@r', 'r_precision' and 'marp_official' (k_max grows to R_max).
      mesh: a 1-D ('data',) mesh to split each block over; default: `query`'s mesh, if any.

    Returns:
      {'recall@1': ..., 'map@r': ..., 'r_precision': ..., 'marp_official': ...}: python floats
      in [0, 1] (MAP@R and R-precision are NaN when no query has a relevant item).
    """
    ks = _check_ks(ks)
    stats = query_stats(query, query_labels, gallery, gallery_labels, k=max(ks),
                        block_size=block_size, map_at_r=map_at_r, mesh=mesh)
    metrics = {f"recall@{k}": float(np.mean(stats.first_hit < k)) for k in ks}
    if map_at_r:
        metrics.update(r_metrics(stats))
    return metrics


def recall_at_k(query, query_labels, gallery=None, gallery_labels=None, **options
                ) -> dict[int, float]:
    """{k: share of queries with a same-label item among their k nearest}.

    Same arguments (`ks`, `block_size`, `mesh`) and rules as `retrieval_metrics`; kept for its
    dict-by-int return value.
    """
    metrics = retrieval_metrics(query, query_labels, gallery, gallery_labels, map_at_r=False,
                                **options)
    return {int(name.split("@")[1]): value for name, value in metrics.items()}


def r_metrics(stats: QueryStats) -> dict[str, float]:
    """MAP@R, R-precision (over queries with R >= 1) and the official mARP (over all queries)."""
    r = stats.num_relevant.astype(np.float64)
    hits = stats.hits_in_r.astype(np.float64)
    psum = stats.precision_sum.astype(np.float64)
    has_relevant = r > 0
    if has_relevant.any():
        map_at_r = float(np.mean(psum[has_relevant] / r[has_relevant]))
        r_precision = float(np.mean(hits[has_relevant] / r[has_relevant]))
    else:
        map_at_r = r_precision = float("nan")
    marp = np.where(hits > 0, psum / np.maximum(hits, 1.0), 0.0)
    return {"map@r": map_at_r, "r_precision": r_precision, "marp_official": float(np.mean(marp))}


def query_stats(
    query,
    query_labels,
    gallery=None,
    gallery_labels=None,
    *,
    k: int,
    block_size: int = 1024,
    map_at_r: bool = True,
    mesh: Optional[Mesh] = None,
) -> QueryStats:
    """The per-query numbers every metric is reduced from (one blocked pass over the gallery).

    `k` is the largest Recall@K cut-off needed; with `map_at_r` the pass looks R_max deep too.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    leave_one_out = gallery is None
    if leave_one_out != (gallery_labels is None):
        raise ValueError("gallery and gallery_labels must be given together")

    mesh = mesh if mesh is not None else _mesh_of(query)
    query = _as_embeddings(query, "query")
    if leave_one_out:
        gallery, gallery_labels = query, query_labels
    else:
        gallery = _as_embeddings(gallery, "gallery")
        if gallery.shape[1] != query.shape[1]:
            raise ValueError(f"query dim {query.shape[1]} != gallery dim {gallery.shape[1]}")
    q_codes, g_codes = _label_codes(query_labels, gallery_labels, len(query), len(gallery))
    # R per query: its class size in the gallery, minus itself when the gallery is the query set.
    num_relevant = np.bincount(g_codes, minlength=q_codes.max() + 1)[q_codes] - int(leave_one_out)

    n_query = query.shape[0]
    n_candidates = gallery.shape[0] - int(leave_one_out)
    k_max = min(max(k, int(num_relevant.max()) if map_at_r else 0), n_candidates)
    if k_max == 0:
        zeros = np.zeros(n_query, np.int32)
        return QueryStats(np.full(n_query, _MISS, np.int32), num_relevant, zeros,
                          zeros.astype(np.float32))

    devices = 1 if mesh is None else mesh.devices.size
    # No point in padding a small query set up to a large block; a block splits evenly over
    # the devices.
    block = -(-min(block_size, n_query) // devices) * devices
    first_hit, hits_in_r, precision_sum = _query_stats_program(
        query, jnp.asarray(q_codes), jnp.asarray(num_relevant.astype(np.int32)), gallery,
        jnp.asarray(g_codes), k=k_max, block=block, leave_one_out=leave_one_out,
        map_at_r=map_at_r, mesh=mesh)
    # One fetch at the end: the blocks ran as one device program.
    return QueryStats(np.asarray(first_hit), num_relevant, np.asarray(hits_in_r),
                      np.asarray(precision_sum))


class Neighbours(NamedTuple):
    """The nearest gallery items of some queries, numpy arrays of shape (n, k), nearest first."""
    indices: np.ndarray    # int32 gallery rows
    distances: np.ndarray  # float32 Euclidean distances (from the float32 ranking key)


def nearest_neighbours(query, gallery=None, *, k: int, rows=None,
                       block_size: int = 1024) -> Neighbours:
    """The k nearest gallery rows of query rows `rows` (default: all), ranked exactly as every
    metric here ranks them (`_block_neighbours`: the same key, ties by lower gallery index, and
    under leave-one-out (`gallery=None`: the gallery is `query`) each query's own row excluded
    by index). `k` is clamped to the number of candidates. For the retrieval report
    (`dnc_jax.evaluation.report`); the metrics never hold these (Q, k) indices."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    leave_one_out = gallery is None
    query = _as_embeddings(query, "query")
    gallery = query if leave_one_out else _as_embeddings(gallery, "gallery")
    if gallery.shape[1] != query.shape[1]:
        raise ValueError(f"query dim {query.shape[1]} != gallery dim {gallery.shape[1]}")
    rows = np.arange(query.shape[0]) if rows is None else np.asarray(rows).reshape(-1)
    if len(rows) and (rows.min() < 0 or rows.max() >= query.shape[0]):
        raise ValueError(f"rows must lie in [0, {query.shape[0]})")
    k = max(0, min(int(k), gallery.shape[0] - int(leave_one_out)))
    if k == 0 or len(rows) == 0:
        return Neighbours(np.zeros((len(rows), k), np.int32), np.zeros((len(rows), k), np.float32))
    keys, idx = _neighbours_program(query, jnp.asarray(rows, jnp.int32), gallery, k=k,
                                    block=min(block_size, len(rows)),
                                    leave_one_out=leave_one_out)
    q_sq = jnp.sum(query[jnp.asarray(rows)] ** 2, axis=1)
    distances = jnp.sqrt(jnp.maximum(keys + q_sq[:, None], 0.0))
    return Neighbours(np.asarray(idx), np.asarray(distances))


@functools.partial(jax.jit, static_argnames=("k", "block", "leave_one_out"))
def _neighbours_program(query, rows, gallery, *, k, block, leave_one_out):
    n = rows.shape[0]
    # Padded rows query row 0 (their results are dropped).
    padded = jnp.pad(rows, (0, -n % block)).reshape(-1, block)
    g_sq = jnp.sum(gallery * gallery, axis=1)

    def step(_, r):
        return None, _block_neighbours(query[r], r if leave_one_out else None, gallery, g_sq,
                                       k=k)

    _, (keys, idx) = jax.lax.scan(step, None, padded)
    return keys.reshape(-1, k)[:n], idx.reshape(-1, k)[:n]


# ----------------------------------------------------------------------------------------------
# Argument checks


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks}")
    return ks


def _mesh_of(x) -> Optional[Mesh]:
    """The ('data',) mesh a sharded input lives on, so evaluation keeps its device split."""
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding) and DATA_AXIS in sharding.mesh.axis_names \
            and sharding.mesh.devices.size > 1:
        return sharding.mesh
    return None


def _as_embeddings(x, name: str) -> jax.Array:
    x = jnp.asarray(x, dtype=jnp.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N>0, D), got {x.shape}")
    # A NaN would silently rank last (or first) and yield a plausible-looking metric; a diverged
    # model should fail loudly instead.
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name} embeddings contain NaN or inf")
    return x


def _label_codes(query_labels, gallery_labels, n_query: int, n_gallery: int):
    """Both label sets mapped jointly to int32 codes, so any label type works on device."""
    q = np.asarray(query_labels).reshape(-1)
    g = np.asarray(gallery_labels).reshape(-1)
    if len(q) != n_query or len(g) != n_gallery:
        raise ValueError(
            f"labels ({len(q)}, {len(g)}) do not match embeddings ({n_query}, {n_gallery})"
        )
    _, codes = np.unique(np.concatenate([q, g]), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int32)
    return codes[:n_query], codes[n_query:]


# ----------------------------------------------------------------------------------------------
# The device program


def _block_neighbours(q, self_col, gallery, g_sq, *, k):
    """(ranking keys, gallery indices), both (block, k): the k nearest of each query row, the
    ranking key ||g||^2 - 2 q.g ascending; `self_col` (block,): each row's own gallery column,
    excluded (None: the gallery is another set). Every metric and `nearest_neighbours` rank
    through this one function."""
    # HIGHEST: on GPUs the default float32 matmul may use TF32 (10-bit mantissa), which would
    # reorder near neighbours and make the metric hardware-dependent.
    dots = jnp.dot(q, gallery.T, precision=jax.lax.Precision.HIGHEST)
    dist = g_sq[None, :] - 2.0 * dots  # ||q - g||^2 - ||q||^2
    if self_col is not None:
        cols = jnp.arange(gallery.shape[0], dtype=jnp.int32)
        # +inf before top_k: the query itself is never a candidate, while an exact duplicate
        # (distance 0, different index) still is.
        dist = jnp.where(cols[None, :] == self_col[:, None], jnp.inf, dist)
    # top_k of the negated distance = k nearest; equal values come lower index first.
    neg, idx = jax.lax.top_k(-dist, k)
    return -neg, idx


def _block_stats(q, codes, relevant, start, gallery, g_sq, g_codes, *, k, leave_one_out, map_at_r):
    """(first hit rank, hits in first R, precision sum in first R) for one block of queries."""
    self_col = start + jnp.arange(q.shape[0], dtype=jnp.int32) if leave_one_out else None
    _, idx = _block_neighbours(q, self_col, gallery, g_sq, k=k)
    hits = g_codes[idx] == codes[:, None]  # (block, k), padding rows (code -1) never hit
    first_hit = jnp.where(jnp.any(hits, axis=1), jnp.argmax(hits, axis=1), _MISS)
    first_hit = first_hit.astype(jnp.int32)
    if not map_at_r:
        zeros = jnp.zeros_like(first_hit)
        return first_hit, zeros, zeros.astype(jnp.float32)
    rank = jnp.arange(1, k + 1, dtype=jnp.int32)
    hits_r = hits & (rank[None, :] <= relevant[:, None])  # only the first R retrieved count
    running = jnp.cumsum(hits_r, axis=1, dtype=jnp.int32)
    precision = running.astype(jnp.float32) / rank.astype(jnp.float32)
    precision_sum = jnp.sum(jnp.where(hits_r, precision, 0.0), axis=1)
    return first_hit, running[:, -1], precision_sum


def _scan_blocks(query, q_codes, relevant, gallery, g_codes, offset, *,
                 k, block, leave_one_out, map_at_r):
    """Stats of `query` rows (global rows offset, offset+1, ...), `block` rows per step."""
    n_blocks = query.shape[0] // block
    g_sq = jnp.sum(gallery * gallery, axis=1)
    xs = (query.reshape(n_blocks, block, -1), q_codes.reshape(n_blocks, block),
          relevant.reshape(n_blocks, block),
          offset + jnp.arange(n_blocks, dtype=jnp.int32) * block)

    def step(_, xs):
        q, c, r, start = xs
        return None, _block_stats(q, c, r, start, gallery, g_sq, g_codes, k=k,
                                  leave_one_out=leave_one_out, map_at_r=map_at_r)

    # A scan, not a Python loop: one program, one (block, G) buffer reused by every block.
    _, out = jax.lax.scan(step, None, xs)
    return tuple(x.reshape(-1) for x in out)


def _query_stats_program_impl(query, q_codes, relevant, gallery, g_codes, *,
                              k, block, leave_one_out, map_at_r, mesh):
    global _TRACE_COUNT
    _TRACE_COUNT += 1
    n_query = query.shape[0]
    pad = -n_query % block
    # Padded rows: zeros, label -1 (never a real code), R = 0; dropped before returning. For
    # leave-one-out their "self" index is >= G, so no real column is masked for them.
    query = jnp.pad(query, ((0, pad), (0, 0)))
    q_codes = jnp.pad(q_codes, (0, pad), constant_values=-1)
    relevant = jnp.pad(relevant, (0, pad))
    static = dict(k=k, leave_one_out=leave_one_out, map_at_r=map_at_r)
    if mesh is None:
        out = _scan_blocks(query, q_codes, relevant, gallery, g_codes, 0, block=block, **static)
        return tuple(x[:n_query] for x in out)

    devices = mesh.devices.size
    rows_per_device = query.shape[0] // devices

    def per_device(q, c, r, g, g_c):
        # Each device scans its own contiguous rows against the whole gallery: scores, top_k
        # and reductions stay local (under plain jit, XLA all-gathers the scores for top_k).
        offset = jax.lax.axis_index(DATA_AXIS) * rows_per_device
        return _scan_blocks(q, c, r, g, g_c, offset, block=block // devices, **static)

    rows, whole = PartitionSpec(DATA_AXIS), PartitionSpec()
    out = jax.shard_map(per_device, mesh=mesh, in_specs=(rows, rows, rows, whole, whole),
                        out_specs=rows)(query, q_codes, relevant, gallery, g_codes)
    # Replicated (Q,) results: every host of a multi-host run can read them.
    return jax.lax.with_sharding_constraint(tuple(x[:n_query] for x in out),
                                            NamedSharding(mesh, whole))


# Compiled once per (shapes, k, block, mode, mesh); block offsets are traced inside the scan.
_query_stats_program = jax.jit(
    _query_stats_program_impl,
    static_argnames=("k", "block", "leave_one_out", "map_at_r", "mesh"))
