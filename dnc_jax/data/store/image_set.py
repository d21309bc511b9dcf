"""ImageSet: one split of a data set as the training and evaluation code see it."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """Rows of uint8 images with their labels.

    `images` is any array-like of uint8 [N, S, S, 3] indexable by a row list (an in-memory
    array, a memory-mapped cache, or `SelectedRows` of one): the whole image resized to S x S.
    `sizes` holds each image's original (height, width), so crops can be computed in
    original-image coordinates; None means the S x S rows are the originals (the rendered glyphs).
    """

    images: Any
    labels: np.ndarray                     # int32 [N], contiguous 0..C-1 within this split
    class_names: list[str]                 # len C
    sizes: Optional[np.ndarray] = None     # int32 [N, 2] original (height, width)
    paths: Optional[list[str]] = None      # source file of each row, when there is one

    def __len__(self) -> int:
        return len(self.labels)


class SelectedRows:
    """Some rows of an array-like, in a given order, without copying them: row i is
    `base[rows[i]]`. Used to leave the undecodable rows of a memory-mapped cache out of a split
    (a copy of the good rows would double a cache of tens of GB).

    Supports what the pipeline does with `ImageSet.images`: `shape`, `dtype`, `len`, and indexing
    by an int, a slice, an int or bool array, optionally followed by more axes.
    """

    def __init__(self, base, rows):
        self.base = base
        self.rows = np.asarray(rows, np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows),) + tuple(self.base.shape[1:])

    @property
    def dtype(self):
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if first is Ellipsis or first is None:  # the first key is then not a row selection
            return np.asarray(self)[key]
        return self.base[(self.rows[first],) + tuple(rest)]

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.base[self.rows])
        return out if dtype is None else out.astype(dtype)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
