"""Sources: where the images come from. `load_dataset(config.data)` is the entry point.

In: `data.name` and its options (a benchmark's official files under `data.root`, a folder, a
csv, a TFDS data set, or the rendered glyphs). Out: {split: ImageSet}, the train classes
disjoint from the evaluated ones, image files packed into the store's cache on the way
(`image_lists.to_image_set`). One module per kind of source: `benchmarks.py` (the official
list files), `custom.py` (folder, csv), `tfds_source.py`, `glyphs.py` (with `glyph_fonts.py`,
`glyph_classes.py`), and `image_lists.py`, the file lists they share.

Splits: always 'train'; then 'test' (leave-one-out retrieval over the test set: glyphs, sop,
cub, cars, folder, csv, tfds), or 'query' + 'gallery' (inshop; folder with such split folders;
csv with such a split column).
vehicleid gives 'test_small', 'test_medium', 'test_large' and 'test', the one of them named by
`data.vehicleid_test` (the same ImageSet, decoded once).

`ImageSet.images` is an array-like of uint8 [N, S, S, 3] rows (in memory or memory-mapped);
training only ever gathers rows of it by index.

Bad input: a corrupt or truncated image is a DataError naming it, or, with
`data.skip_bad_images=True`, is left out of its split with one warning line for the whole data
set (`_drop_undecodable`); a class left without an image then disappears. An empty split (none
listed, or none left) is a one-line DataError naming it. A class of a single image is kept: the
sampler sets such images aside per cluster.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
from absl import logging

from dnc_jax import defaults
from dnc_jax.data.sources import benchmarks, custom, glyph_classes
from dnc_jax.errors import ConfigError, DataError
from dnc_jax.data.sources.glyphs import load_glyphs
from dnc_jax.data.sources.image_lists import ImageList, to_image_set, undecodable_rows, without_rows
from dnc_jax.data.store.image_set import ImageSet

__all__ = ["DataError", "ImageSet", "load_dataset", "NAMES"]

VEHICLEID_TESTS = ("small", "medium", "large")
SHARED_LABEL_SPACES = (("query", "gallery"),)  # splits whose labels compare with each other
_NAMED_SKIPPED = 3  # undecodable files named in the warning line


def _glyphs(data_config, wanted):
    g = data_config.glyphs
    sets = load_glyphs(
        cache_dir=os.path.join(os.path.expanduser(data_config.cache_dir), "glyphs"),
        image_size=data_config.image_size, seed=g.seed, min_faces=g.min_faces,
        instances_per_face=g.instances_per_face,
        max_classes=None if g.max_classes < 0 else g.max_classes,
        classes=g.classes)
    labels = defaults.filled(g, "data.glyphs").labels
    if labels == "block":
        sets = {split: by_block(s, g.classes) for split, s in sets.items()}
    elif labels != "character":
        raise ConfigError(f"data.glyphs.labels must be 'character' or 'block', got {labels!r}")
    return {split: s for split, s in sets.items() if wanted(split)}


def by_block(image_set: ImageSet, class_set: str) -> ImageSet:
    """The same images labelled by their character's block (data.glyphs.labels='block')."""
    blocks = [glyph_classes.super_class(name, class_set) for name in image_set.class_names]
    if not all(blocks):
        raise ConfigError(f"data.glyphs.labels='block' needs a set built from blocks "
                          f"('scripts' or 'pretrain'), got data.glyphs.classes={class_set!r}")
    names = sorted(set(blocks))
    of_class = np.asarray([names.index(b) for b in blocks], np.int32)
    return dataclasses.replace(image_set, labels=of_class[np.asarray(image_set.labels)],
                               class_names=names)


def _data_set(data_config) -> str:
    """The data set and the config key that locates it, for error messages."""
    if data_config.name == "tfds":
        return f"data set 'tfds' (--config.data.tfds_name={data_config.tfds_name})"
    return f"data set '{data_config.name}' (--config.data.root={data_config.root})"


def _decode_all(lists: dict[str, ImageList], data_config, prefix: str,
                wanted) -> dict[str, ImageSet]:
    lists = {split: lst for split, lst in lists.items() if wanted(split)}
    for split, image_list in lists.items():  # before decoding the others for nothing
        if not len(image_list):
            raise DataError(f"the '{split}' split of {_data_set(data_config)} is empty: no "
                            f"image listed for it")
    sets = {split: to_image_set(lst, data_config, f"{prefix}-{split}")
            for split, lst in lists.items()}
    return _drop_undecodable(sets, data_config)


def _drop_undecodable(sets: dict[str, ImageSet], data_config) -> dict[str, ImageSet]:
    """The splits without the images the cache could not decode (only present with
    data.skip_bad_images=True), after one warning line counting them per split."""
    bad = {split: undecodable_rows(s) for split, s in sets.items()}
    if not any(len(rows) for rows in bad.values()):
        return sets
    named = [sets[split].paths[i] for split, rows in bad.items() for i in rows]
    counts = ", ".join(f"{split} {len(rows):,}" for split, rows in bad.items() if len(rows))
    more = len(named) - _NAMED_SKIPPED
    logging.warning("skipped %s undecodable image(s) (data.skip_bad_images=True): %s; %s%s",
                    f"{len(named):,}", counts, ", ".join(named[:_NAMED_SKIPPED]),
                    f" and {more:,} more" if more > 0 else "")
    sets = without_rows(sets, bad, SHARED_LABEL_SPACES)
    for split, s in sets.items():
        if not len(s):
            raise DataError(f"the '{split}' split of {_data_set(data_config)} is empty: all "
                            f"{len(bad[split]):,} of its images are undecodable (skipped by "
                            f"data.skip_bad_images)")
    return sets


def _benchmark(parse):
    def load(data_config, wanted):
        return _decode_all(parse(data_config.root), data_config, data_config.name, wanted)
    return load


def _vehicleid(data_config, wanted):
    choice = data_config.vehicleid_test
    if choice not in VEHICLEID_TESTS:
        raise DataError(f"data.vehicleid_test={choice!r} is not one of {VEHICLEID_TESTS}; set "
                        f"--config.data.vehicleid_test=large")
    out = _decode_all(benchmarks.vehicleid(data_config.root), data_config, "vehicleid", wanted)
    out["test"] = out[f"test_{choice}"]
    return out


def _folder(data_config, wanted):
    lists = custom.folder(data_config.root, data_config.split_seed, data_config.train_fraction)
    return _decode_all(lists, data_config, "folder", wanted)


def _csv(data_config, wanted):
    lists = custom.csv_list(data_config.root, data_config.split_seed,
                            data_config.train_fraction)
    return _decode_all(lists, data_config, "csv", wanted)


def _tfds(data_config, wanted):
    from dnc_jax.data.sources import tfds_source

    lists = tfds_source.load(data_config.tfds_name, data_config)
    return _decode_all(lists, data_config, f"tfds-{data_config.tfds_name}", wanted)


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


def load_dataset(data_config, held_out_only: bool = False) -> dict[str, ImageSet]:
    """{split: ImageSet} of the data set `data_config` names. `held_out_only`: every split but
    'train', which is then neither listed for decoding nor packed into the cache (evaluating a
    trained model needs only the held-out classes)."""
    name = data_config.name
    if name not in _SOURCES:
        raise DataError(f"data.name={name!r} is not one of {sorted(_SOURCES)}")
    return _SOURCES[name](data_config, lambda split: not held_out_only or split != "train")
