"""Eval views kept after their first decode, for the embedding passes that repeat every epoch.

An image's evaluation view (torchvision's Resize + CenterCrop) never changes, yet evaluation
embeds the test split every epoch and reclustering the training split every few: without a
cache, each pass decodes every JPEG again, and the decode, not the device, bounds the pass
(bench/embed_pass.py). `ViewCache` holds the uint8 views [N, S, S, 3] of one image set in a
file mapped into memory: the first pass writes the rows it decodes, later passes read them.

The file is created unlinked in `folder` (`data.cache_dir`), so it takes no RAM the kernel
cannot page out, is sparse until written, and disappears with the process however it ends;
nothing is ever read from a previous run, so it cannot go stale. Each process keeps only the
rows its own devices embed.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np


class ViewCache:
    """The eval views of an image set of `num_images`, `size` pixels square, filled as they come."""

    def __init__(self, num_images: int, size: int, folder: str):
        os.makedirs(folder, exist_ok=True)
        shape = (num_images, size, size, 3)
        with tempfile.TemporaryFile(dir=folder, prefix="dnc_jax-eval-views-") as f:
            f.truncate(int(np.prod(shape)))  # sparse: disk is taken as rows are written
            # The mapping keeps its own reference to the file: closing ours frees nothing.
            self.views = np.memmap(f, np.uint8, "r+", shape=shape) if num_images else \
                np.zeros(shape, np.uint8)
        self.filled = np.zeros(num_images, bool)

    def has(self, rows) -> bool:
        return bool(self.filled[np.asarray(rows)].all())

    def read(self, rows) -> np.ndarray:
        """The views of `rows`: a view of the mapping where they are consecutive (the copy to
        the device is then the only one), else a gathered copy."""
        rows = np.asarray(rows)
        if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
            return self.views[rows[0]:rows[0] + len(rows)]
        return self.views[rows]

    def write(self, rows, views) -> None:
        self.views[np.asarray(rows)] = views
        self.filled[np.asarray(rows)] = True

    def close(self) -> None:
        self.views = None
