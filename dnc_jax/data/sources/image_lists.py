"""A split as a list of image files, the helpers every file-based source shares, and the step
that turns such a list into an ImageSet through the image cache (`cache.py`), leaving out
the images that cannot be decoded when `data.skip_bad_images` allows it.

Parsers (`benchmarks.py`, `custom.py`, `tfds_source.py`) only read lists and folders and return
ImageLists; nothing here decodes an image, so parsing is tested without pixels.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Optional, Sequence

import numpy as np
from absl import logging

from dnc_jax.errors import DataError
from dnc_jax.data.store.image_set import ImageSet, SelectedRows

ROOT_KEY = "--config.data.root="  # the flag that locates a data set, named in errors

# What torchvision's ImageFolder accepts (the CUB loader of the official code is an ImageFolder).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True)
class ImageList:
    """One split: absolute image paths, labels indexing `class_names`."""

    paths: list[str]
    labels: np.ndarray      # int32 [N]
    class_names: list[str]  # len C; a split's classes, or the ones it shares (In-shop q/g)

    def __len__(self) -> int:
        return len(self.paths)


def is_image_file(name: str) -> bool:
    """An image by its extension; macOS resource forks (`._x.jpg`) and hidden files are not."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def contiguous(raw_labels: Sequence, classes: Optional[Iterable] = None):
    """(int32 labels 0..C-1, class names) from raw labels, in sorted order of the raw values.

    `classes` fixes the label space (In-shop query and gallery share one); by default it is the
    set of raw labels present.
    """
    classes = sorted(set(raw_labels) if classes is None else set(classes))
    index = {c: i for i, c in enumerate(classes)}
    labels = np.fromiter((index[r] for r in raw_labels), np.int32, count=len(raw_labels))
    return labels, [str(c) for c in classes]


def make_list(paths: list[str], raw_labels: Sequence, classes=None, names=None) -> ImageList:
    """An ImageList with contiguous labels; `names` maps a raw label to a readable class name."""
    labels, class_names = contiguous(raw_labels, classes)
    if names is not None:
        keys = sorted(set(raw_labels) if classes is None else set(classes))
        class_names = [str(names.get(k, k)) for k in keys]
    return ImageList(list(paths), labels, class_names)


def split_by_first_classes(paths, raw_labels, num_train_classes, names=None):
    """{'train': the first `num_train_classes` sorted classes, 'test': the rest}."""
    classes = sorted(set(raw_labels))
    train = set(classes[:num_train_classes])
    out = {}
    for split, keep in (("train", lambda c: c in train), ("test", lambda c: c not in train)):
        rows = [i for i, c in enumerate(raw_labels) if keep(c)]
        out[split] = make_list([paths[i] for i in rows], [raw_labels[i] for i in rows],
                               names=names)
    return out


def check_images_exist(paths: Sequence[str], where: Sequence[str], config_hint: str) -> None:
    """DataError naming the first missing image by its place in the list (`file:line`)."""
    missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
    if missing:
        i = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{where[i]}: image listed but missing: {paths[i]}{more}; "
                        f"{config_hint}")


def warn_unofficial_counts(title: str, lists: dict[str, ImageList],
                           official: dict[str, tuple[Optional[int], Optional[int]]],
                           extra: Sequence[str] = ()) -> bool:
    """One warning line when image or class counts differ from the official ones.

    `official` maps a split to (images, classes), None where the protocol does not fix it;
    `extra` adds other discrepancies to the same line.
    Not an error: subsets are legitimate (quick runs, cleaned copies), but the numbers are then
    not comparable with the papers, which the line says.
    """
    diffs = list(extra)
    for split, (images, classes) in official.items():
        got = lists.get(split)
        n_img = len(got) if got is not None else 0
        n_cls = len(got.class_names) if got is not None else 0
        if images is not None and n_img != images:
            diffs.append(f"{split} {n_img:,} images (official {images:,})")
        if classes is not None and n_cls != classes:
            diffs.append(f"{split} {n_cls:,} classes (official {classes:,})")
    if diffs:
        logging.warning("%s differs from the official counts, results are not comparable with "
                        "published ones: %s", title, "; ".join(diffs))
    return bool(diffs)


def to_image_set(image_list: ImageList, data_config, name: str) -> ImageSet:
    """The list's images through the image cache: their bytes (`EncodedImages`), checked
    once, with their (height, width).

    With `data.skip_bad_images` the rows of undecodable files are kept, with size (0, 0)
    (`undecodable_rows`), for `without_rows` to drop; otherwise such a file is a DataError.
    """
    images, sizes = _cached(list(image_list.paths), os.path.expanduser(data_config.cache_dir),
                            name, bool(data_config.skip_bad_images))
    return ImageSet(images=images, labels=np.asarray(image_list.labels, np.int32),
                    class_names=list(image_list.class_names), sizes=sizes,
                    paths=list(image_list.paths))


def undecodable_rows(image_set: ImageSet) -> np.ndarray:
    """Rows whose file could not be decoded: original size (0, 0), which no image has."""
    from dnc_jax.data.store.cache import bad_rows

    if image_set.sizes is None or not len(image_set.sizes):
        return np.zeros(0, np.int64)
    return bad_rows(image_set.sizes)


def without_rows(image_sets: dict[str, ImageSet], drop: dict[str, np.ndarray],
                 shared: Sequence[Sequence[str]] = ()) -> dict[str, ImageSet]:
    """The splits without the rows `drop[split]`, images, labels, sizes and paths alike.

    A class left without an image disappears and labels are made contiguous again. Splits named
    together in `shared` (In-shop's query and gallery) share one label space: it keeps the
    classes still present in any of them, so their labels still compare. The splits of a label
    space that loses no row are returned as they are.
    """
    groups = [[s for s in group if s in image_sets] for group in shared]
    groups = [g for g in groups if g]
    grouped = {s for g in groups for s in g}
    groups += [[s] for s in image_sets if s not in grouped]
    out = {}
    for group in groups:
        if not any(len(drop.get(s, ())) for s in group):
            out.update({s: image_sets[s] for s in group})
            continue
        keep = {s: np.setdiff1d(np.arange(len(image_sets[s])), drop.get(s, ())) for s in group}
        class_names = image_sets[group[0]].class_names
        present = np.unique(np.concatenate(
            [image_sets[s].labels[keep[s]] for s in group])).astype(np.int64)
        new_label = np.full(len(class_names), -1, np.int32)
        new_label[present] = np.arange(len(present), dtype=np.int32)
        for s in group:
            old, rows = image_sets[s], keep[s]
            out[s] = ImageSet(
                images=(old.images.select(rows) if hasattr(old.images, "select") else
                        SelectedRows(old.images, rows)), labels=new_label[old.labels[rows]],
                class_names=[class_names[c] for c in present],
                sizes=None if old.sizes is None else np.asarray(old.sizes)[rows],
                paths=None if old.paths is None else [old.paths[i] for i in rows])
    return {s: out[s] for s in image_sets}


def _cached(files, cache_dir, name, skip_bad=False):
    # Imported here: the cache pulls in multiprocessing machinery parsers never need.
    from dnc_jax.data.store.cache import cached_images

    return cached_images(files, cache_dir, name, skip_bad=skip_bad)
