"""EncodedImages: a split's image files kept as their own compressed bytes, one flat array.

The image cache (`cache.py`) packs every file's bytes, unchanged, into one memory-mapped uint8
array; `offsets[i]:offsets[i + 1]` is image i. Decoding such bytes is decoding the file itself:
the pixels a view is cut from are the original's, at its own resolution (see `host_views.py`
for why this storage was chosen over decoded pixels).

An EncodedImages may be a selection of another's rows (`select`), so dropping the undecodable
images of a split copies nothing. It pickles as the paths of its files, not their contents, so
the decoding worker processes open the same memory map instead of receiving gigabytes.
"""
from __future__ import annotations

import io

import numpy as np


def decode_bytes(data) -> "PIL.Image.Image":  # noqa: F821
    """RGB PIL image of one encoded file, as torchvision's default loader makes it:
    `Image.open(...).convert('RGB')` (grey, CMYK, palette and alpha become RGB; EXIF
    orientation is not applied, as neither ImageFolder nor the official code applies it)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


class EncodedImages:
    """N encoded images: `len`, `encoded(i)` (bytes), `decode(i)` (RGB PIL image), `select`.

    Args:
      data_path: the .npy file of the packed bytes (uint8 [total]).
      offsets_path: the .npy file of int64 [M + 1] byte offsets into it.
      rows: which of its M images this object holds, in order (default: all).
    """

    def __init__(self, data_path: str, offsets_path: str, rows=None):
        self.data_path = data_path
        self.offsets_path = offsets_path
        self._data = np.load(data_path, mmap_mode="r")
        self._offsets = np.load(offsets_path)
        count = len(self._offsets) - 1
        self.rows = np.arange(count) if rows is None else np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def encoded(self, i: int) -> memoryview:
        row = self.rows[i]
        return memoryview(self._data[self._offsets[row]:self._offsets[row + 1]])

    def decode(self, i: int):
        return decode_bytes(self.encoded(i))

    def select(self, rows) -> "EncodedImages":
        """Rows `rows` of this selection, in that order, sharing the same files."""
        out = EncodedImages.__new__(EncodedImages)
        out.__dict__.update(self.__dict__)
        out.rows = self.rows[np.asarray(rows, np.int64)]
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of the images this selection holds."""
        return int(np.sum(self._offsets[self.rows + 1] - self._offsets[self.rows]))

    def __getstate__(self):
        return {"data_path": self.data_path, "offsets_path": self.offsets_path,
                "rows": self.rows}

    def __setstate__(self, state):
        self.__init__(state["data_path"], state["offsets_path"], state["rows"])
