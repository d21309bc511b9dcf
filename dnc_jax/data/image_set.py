"""ImageSet: one split of a data set as the training and evaluation code see it."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """Rows of uint8 images with their labels.

    `images` is any array-like of uint8 [N, S, S, 3] indexable by a row list (an in-memory
    array or a memory-mapped cache): the whole image resized to S x S. `sizes` holds each
    image's original (height, width), so crops can be computed in original-image coordinates;
    None means the S x S rows are the originals (the rendered glyphs).
    """

    images: Any
    labels: np.ndarray                     # int32 [N], contiguous 0..C-1 within this split
    class_names: list[str]                 # len C
    sizes: Optional[np.ndarray] = None     # int32 [N, 2] original (height, width)
    paths: Optional[list[str]] = None      # source file of each row, when there is one

    def __len__(self) -> int:
        return len(self.labels)
