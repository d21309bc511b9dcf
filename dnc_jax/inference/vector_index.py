"""An approximate-nearest-neighbour index of embeddings, for collections too large to scan.

    dnc-jax embed --workdir=RUN --images=photos/ --out=emb.npy --usearch
    # emb.npy, emb.paths.txt, and emb.usearch: an HNSW graph over the rows of emb.npy

    from usearch.index import Index
    index = Index.restore("emb.usearch")
    matches = index.search(query_vector, 10)     # keys = row numbers of emb.npy / paths.txt

The index is usearch's (a maintained single-file HNSW library; `pip install "dnc-jax[index]"`),
metric squared Euclidean as the evaluation ranks, keys the row numbers of the `.npy`, vectors
float32. `dnc_jax.inference.search` stays the exact scan; this file is for serving elsewhere.
"""
from __future__ import annotations

import os

import numpy as np

from dnc_jax.errors import UserError

SUFFIX = ".usearch"


class IndexLibraryMissing(UserError):
    """usearch is not installed."""


def index_path(embeddings_path: str) -> str:
    """emb.npy -> emb.usearch."""
    stem = embeddings_path[:-4] if embeddings_path.endswith(".npy") else embeddings_path
    return stem + SUFFIX


def require_usearch():
    """usearch's Index class, or a one-line error saying what to install (checked before the
    embedding pass, not after it)."""
    try:
        from usearch.index import Index
    except ImportError as e:
        raise IndexLibraryMissing(f"--usearch needs usearch ({e}): pip install "
                                  f"\"dnc-jax[index]\" (or pip install usearch)") from None
    return Index


def write_usearch(embeddings: np.ndarray, path: str) -> str:
    """Builds the HNSW index of `embeddings` [N, d] (keys 0..N-1) and saves it to `path`,
    written beside and renamed, so an interrupted build leaves no partial index."""
    Index = require_usearch()
    embeddings = np.ascontiguousarray(embeddings, np.float32)
    index = Index(ndim=embeddings.shape[1], metric="l2sq", dtype="f32")
    if len(embeddings):
        index.add(np.arange(len(embeddings), dtype=np.uint64), embeddings)
    partial = path + ".partial"
    index.save(partial)
    os.replace(partial, path)
    return path
