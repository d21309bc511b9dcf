"""Exact Recall@K for retrieval evaluation, computed block by block on device.

Recall@K is the share of queries that have at least one gallery item with the
same label among their K nearest gallery items (Euclidean distance). It is the
headline metric of deep metric learning (CUB, Cars, SOP, In-Shop), so it must be
exact and reproducible, yet the full query x gallery distance matrix does not fit
in memory for large sets (SOP: 60k x 60k). We therefore split the queries into
fixed-size blocks; one jitted function scores a block against the whole gallery,
keeps only the top max(ks) candidates via ``jax.lax.top_k`` and reduces them to
the rank of the first same-label hit. Only a (block, gallery) matrix ever exists.

Rules that make the result well defined:

* Ranking key: ``||g||^2 - 2 q.g`` in float32. This orders the gallery exactly
  like the squared Euclidean distance, because ``||q||^2`` is constant per query.
  Embeddings need not be unit-norm.
* Ties: items at equal distance are ranked by lower gallery index first (this is
  ``lax.top_k``'s documented order among equal values).
* Leave-one-out (``gallery=None``): each query's own row is excluded by index,
  not by distance, so an exact duplicate of a query is still retrievable.
* ``k`` larger than the number of candidates (gallery size, minus one for
  leave-one-out) is clamped: Recall@k is then whether any candidate at all has
  the query's label. With no candidates at all, every recall is 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Incremented each time `_block_first_hit` is traced (not each time it runs), so
# tests can check that one call compiles the block function once, not per block.
_TRACE_COUNT = 0

# Rank reported for a query with no same-label item among its candidates; it is
# larger than any k, so `rank < k` is False for every k.
_MISS = np.iinfo(np.int32).max


def recall_at_k(
    query: jax.Array | np.ndarray,
    query_labels,
    gallery: jax.Array | np.ndarray | None = None,
    gallery_labels=None,
    ks: Sequence[int] = (1, 2, 4, 8),
    block_size: int = 1024,
) -> dict[int, float]:
    """Share of queries with at least one same-label item among their k nearest gallery items.

    gallery=None means leave-one-out over the query set (each query's own row is
    excluded, by index, not by distance, so duplicate points are still retrievable).

    Args:
      query: (Q, D) embeddings; any float dtype, computed in float32.
      query_labels: (Q,) labels of any type `np.unique` can sort.
      gallery: (G, D) embeddings, or None for leave-one-out over `query`.
      gallery_labels: (G,) labels; must be given exactly when `gallery` is.
      ks: positive cut-offs. A k above the number of candidates is clamped to it.
      block_size: queries scored per device call; memory is block_size x G floats.

    Returns:
      {k: recall} with python floats in [0, 1], one entry per k in `ks`.
      Ties in distance are broken by lower gallery index.
    """
    ks = _check_ks(ks)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    leave_one_out = gallery is None
    if leave_one_out != (gallery_labels is None):
        raise ValueError("gallery and gallery_labels must be given together")

    query = _as_embeddings(query, "query")
    if leave_one_out:
        gallery, gallery_labels = query, query_labels
    else:
        gallery = _as_embeddings(gallery, "gallery")
        if gallery.shape[1] != query.shape[1]:
            raise ValueError(f"query dim {query.shape[1]} != gallery dim {gallery.shape[1]}")
    q_codes, g_codes = _label_codes(query_labels, gallery_labels, len(query), len(gallery))

    # Candidates per query: the whole gallery, minus the query itself when leaving one out.
    n_candidates = gallery.shape[0] - int(leave_one_out)
    k_max = min(max(ks), n_candidates)
    if k_max == 0:
        return {k: 0.0 for k in ks}

    ranks = _first_hit_ranks(query, q_codes, gallery, g_codes, k_max, block_size, leave_one_out)
    return {k: float(np.mean(ranks < k)) for k in ks}


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks}")
    return ks


def _as_embeddings(x, name: str) -> jax.Array:
    x = jnp.asarray(x, dtype=jnp.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N>0, D), got {x.shape}")
    # A NaN would silently rank last (or first) and yield a plausible-looking
    # recall; a diverged model should fail loudly instead.
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name} embeddings contain NaN or inf")
    return x


def _label_codes(query_labels, gallery_labels, n_query: int, n_gallery: int):
    """Map both label sets jointly to int32 codes, so any label type works on device."""
    q = np.asarray(query_labels).reshape(-1)
    g = np.asarray(gallery_labels).reshape(-1)
    if len(q) != n_query or len(g) != n_gallery:
        raise ValueError(
            f"labels ({len(q)}, {len(g)}) do not match embeddings ({n_query}, {n_gallery})"
        )
    _, codes = np.unique(np.concatenate([q, g]), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int32)
    return jnp.asarray(codes[:n_query]), jnp.asarray(codes[n_query:])


def _first_hit_ranks(query, q_codes, gallery, g_codes, k_max, block_size, leave_one_out):
    """Rank (0-based) of each query's first same-label neighbour, or _MISS; shape (Q,)."""
    n_query = query.shape[0]
    # No point in padding a small query set up to a large block.
    block = min(block_size, n_query)
    n_blocks = -(-n_query // block)
    pad = n_blocks * block - n_query
    # Padded rows are zeros with label -1 (never a real code); their ranks are
    # dropped below. For leave-one-out their "self" index is >= G, so no column
    # is masked for them.
    query = jnp.pad(query, ((0, pad), (0, 0)))
    q_codes = jnp.pad(q_codes, (0, pad), constant_values=-1)
    g_sq = jnp.sum(gallery * gallery, axis=1)

    ranks = []
    for b in range(n_blocks):
        # Traced start index: one compiled slice for all blocks, not one per offset.
        start = jnp.int32(b * block)
        q_block = jax.lax.dynamic_slice_in_dim(query, start, block)
        c_block = jax.lax.dynamic_slice_in_dim(q_codes, start, block)
        ranks.append(
            _block_first_hit(q_block, c_block, start, gallery, g_sq, g_codes,
                             k=k_max, leave_one_out=leave_one_out)
        )
    # Dispatch is asynchronous: blocks queue up on device and are fetched once here.
    return np.asarray(jnp.concatenate(ranks))[:n_query]


def _block_first_hit_impl(q_block, c_block, start, gallery, g_sq, g_codes, *, k, leave_one_out):
    global _TRACE_COUNT
    _TRACE_COUNT += 1
    # HIGHEST: on GPUs the default float32 matmul may use TF32 (10-bit mantissa),
    # which would reorder near neighbours and make the metric hardware-dependent.
    dots = jnp.dot(q_block, gallery.T, precision=jax.lax.Precision.HIGHEST)
    dist = g_sq[None, :] - 2.0 * dots  # ||q - g||^2 - ||q||^2
    if leave_one_out:
        self_col = start + jnp.arange(q_block.shape[0], dtype=jnp.int32)
        cols = jnp.arange(gallery.shape[0], dtype=jnp.int32)
        # +inf before top_k: the query itself is never a candidate, while an exact
        # duplicate (distance 0, different index) still is.
        dist = jnp.where(cols[None, :] == self_col[:, None], jnp.inf, dist)
    # top_k of the negated distance = k nearest; equal values come lower index first.
    _, idx = jax.lax.top_k(-dist, k)
    hits = g_codes[idx] == c_block[:, None]
    return jnp.where(jnp.any(hits, axis=1), jnp.argmax(hits, axis=1), _MISS).astype(jnp.int32)


# Compiled once per (block, gallery size, dim, k, mode); the block offset is traced.
_block_first_hit = jax.jit(_block_first_hit_impl, static_argnames=("k", "leave_one_out"))
