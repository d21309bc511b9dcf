"""Data sets by name (`data.name`): each returns {split: ImageSet}, train classes disjoint from
the evaluated ones.

Splits: always 'train'; then 'test' (leave-one-out retrieval over the test set: glyphs, sop,
cub, cars, folder, csv, tfds), or 'query' + 'gallery' (inshop; csv with such a split column).
vehicleid gives 'test_small', 'test_medium', 'test_large' and 'test', the one of them named by
`data.vehicleid_test` (the same ImageSet, decoded once).

`ImageSet.images` is an array-like of uint8 [N, S, S, 3] rows (in memory or memory-mapped);
training only ever gathers rows of it by index.
"""
from __future__ import annotations

import os

from dnc_jax.data import benchmarks, custom
from dnc_jax.data.errors import DataError
from dnc_jax.data.glyphs import load_glyphs
from dnc_jax.data.image_lists import ImageList, to_image_set
from dnc_jax.data.image_set import ImageSet

__all__ = ["DataError", "ImageSet", "load_dataset", "NAMES"]

VEHICLEID_TESTS = ("small", "medium", "large")


def _glyphs(data_config):
    g = data_config.glyphs
    return load_glyphs(
        cache_dir=os.path.join(os.path.expanduser(data_config.cache_dir), "glyphs"),
        image_size=data_config.image_size, seed=g.seed, min_faces=g.min_faces,
        instances_per_face=g.instances_per_face,
        max_classes=None if g.max_classes < 0 else g.max_classes)


def _decode_all(lists: dict[str, ImageList], data_config, prefix: str) -> dict[str, ImageSet]:
    return {split: to_image_set(lst, data_config, f"{prefix}-{split}")
            for split, lst in lists.items()}


def _benchmark(parse):
    def load(data_config):
        return _decode_all(parse(data_config.root), data_config, data_config.name)
    return load


def _vehicleid(data_config):
    choice = data_config.vehicleid_test
    if choice not in VEHICLEID_TESTS:
        raise DataError(f"data.vehicleid_test={choice!r} is not one of {VEHICLEID_TESTS}; set "
                        f"--config.data.vehicleid_test=large")
    out = _decode_all(benchmarks.vehicleid(data_config.root), data_config, "vehicleid")
    out["test"] = out[f"test_{choice}"]
    return out


def _folder(data_config):
    lists = custom.folder(data_config.root, data_config.split_seed, data_config.train_fraction)
    return _decode_all(lists, data_config, "folder")


def _csv(data_config):
    lists = custom.csv_list(data_config.root, data_config.split_seed,
                            data_config.train_fraction)
    return _decode_all(lists, data_config, "csv")


def _tfds(data_config):
    from dnc_jax.data import tfds_source

    lists = tfds_source.load(data_config.tfds_name, data_config)
    return _decode_all(lists, data_config, f"tfds-{data_config.tfds_name}")


_SOURCES = {
    "glyphs": _glyphs,
    "sop": _benchmark(benchmarks.sop),
    "cub": _benchmark(benchmarks.cub),
    "cars": _benchmark(benchmarks.cars),
    "inshop": _benchmark(benchmarks.inshop),
    "vehicleid": _vehicleid,
    "folder": _folder,
    "csv": _csv,
    "tfds": _tfds,
}
NAMES = tuple(_SOURCES)


def load_dataset(data_config) -> dict[str, ImageSet]:
    name = data_config.name
    if name not in _SOURCES:
        raise DataError(f"data.name={name!r} is not one of {sorted(_SOURCES)}")
    return _SOURCES[name](data_config)
