"""Data sets by name: each returns {'train': ImageSet, 'test': ImageSet}, class-disjoint.

`ImageSet.images` is an array-like of uint8 [N, S, S, 3] rows (in memory or memory-mapped);
training only ever gathers rows of it by index.
"""
from __future__ import annotations

import os

from dnc_jax.data.errors import DataError
from dnc_jax.data.glyphs import load_glyphs
from dnc_jax.data.image_set import ImageSet

__all__ = ["DataError", "ImageSet", "load_dataset"]


def _glyphs(data_config):
    g = data_config.glyphs
    return load_glyphs(
        cache_dir=os.path.join(os.path.expanduser(data_config.cache_dir), "glyphs"),
        image_size=data_config.image_size, seed=g.seed, min_faces=g.min_faces,
        instances_per_face=g.instances_per_face,
        max_classes=None if g.max_classes < 0 else g.max_classes)


def _sop(data_config):
    from dnc_jax.data import image_lists

    root = _require_root(data_config, "Stanford Online Products",
                         ("Ebay_train.txt", "Ebay_test.txt"))
    return image_lists.load_sop(root, data_config)


def _require_root(data_config, title, files):
    root = os.path.expanduser(data_config.root)
    if not root:
        raise DataError(
            f"{title} needs its folder: set --config.data.root=/path/to/it "
            f"(the folder holding {', '.join(files)})")
    for name in files:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise DataError(
                f"{title} not found: {path} does not exist; set --config.data.root to the "
                f"folder holding {', '.join(files)}")
    return root


_SOURCES = {"glyphs": _glyphs, "sop": _sop}


def load_dataset(data_config) -> dict[str, ImageSet]:
    name = data_config.name
    if name not in _SOURCES:
        raise DataError(f"data.name={name!r} is not one of {sorted(_SOURCES)}")
    return _SOURCES[name](data_config)
