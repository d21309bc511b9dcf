"""Your own data: a folder of class folders, or a CSV list of `path,label[,split]`.

Without a split column the loader splits by class, as the benchmarks do: the sorted class names
are shuffled with `data.split_seed` and the first `data.train_fraction` of them train, the rest
test, so test classes are never seen in training and the split is the same on every run and
machine. With a split column the file decides (train and test, or train, query and gallery).
"""
from __future__ import annotations

import csv
import os

import numpy as np
from absl import logging

from dnc_jax.errors import DataError
from dnc_jax.data.image_lists import ROOT_KEY, ImageList, is_image_file, make_list

FOLDER_TITLE = "Image folder data set"
CSV_TITLE = "CSV list data set"
CSV_SPLITS = ("train", "test", "query", "gallery")
_HEADERS = (["path", "label"], ["path", "label", "split"])


def _given(path: str, title: str, noun: str, example: str, what: str, exists,
           described: str = "") -> str:
    """The absolute `data.root`, or a DataError saying which key to set and to what."""
    if not path:
        raise DataError(f"{title} needs its {noun}: set {ROOT_KEY}{example} ({what})")
    path = os.path.abspath(os.path.expanduser(path))
    if not exists(path):
        raise DataError(f"{title} not found: {path} does not exist; set "
                        f"{ROOT_KEY}<{described or 'a folder with ' + what}>")
    return path


def split_classes(class_names, seed: int, train_fraction: float) -> set:
    """The training classes of a class-disjoint split: a seeded shuffle of the sorted names."""
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"data.train_fraction={train_fraction} must be between 0 and 1 "
                        f"(exclusive); set --config.data.train_fraction=0.5")
    classes = sorted(class_names)
    if len(classes) < 2:
        raise DataError(f"a class-disjoint split needs at least two classes, found "
                        f"{len(classes)}")
    order = np.random.default_rng(seed).permutation(len(classes))
    # At least one class on each side, whatever the fraction.
    num_train = min(max(int(round(train_fraction * len(classes))), 1), len(classes) - 1)
    return {classes[i] for i in order[:num_train]}


def _split_by_classes(paths, labels, seed, train_fraction) -> dict[str, ImageList]:
    train = split_classes(set(labels), seed, train_fraction)
    out = {}
    for split, keep in (("train", True), ("test", False)):
        rows = [i for i, c in enumerate(labels) if (c in train) == keep]
        out[split] = make_list([paths[i] for i in rows], [labels[i] for i in rows])
    return out


def folder(root: str, seed: int, train_fraction: float) -> dict[str, ImageList]:
    """`root/<class>/**/<image>`: every sub-folder of root is a class, split by class."""
    root = _given(root, FOLDER_TITLE, "folder", "/path/to/it",
                  "one sub-folder of images per class", os.path.isdir)
    paths, labels = [], []
    for name in sorted(os.listdir(root)):
        class_dir = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(class_dir):
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if is_image_file(f):
                    paths.append(os.path.join(dirpath, f))
                    labels.append(name)
    if len(set(labels)) < 2:
        raise DataError(f"{FOLDER_TITLE}: {root} needs at least two sub-folders holding images "
                        f"(one per class), found {len(set(labels))}; set {ROOT_KEY}<such a folder>")
    return _split_by_classes(paths, labels, seed, train_fraction)


def _read_csv_rows(path: str):
    """(line number, [path, label, split or '']) per row; the header row, if any, skipped."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        for fields in reader:
            line_no = reader.line_num
            fields = [x.strip() for x in fields]
            if not any(fields):
                continue
            if not rows and [x.lower() for x in fields] in _HEADERS:
                continue
            if len(fields) not in (2, 3) or not fields[0] or not fields[1]:
                raise DataError(f"{path}:{line_no}: expected 'path,label' or "
                                f"'path,label,split', got {','.join(fields)!r}")
            rows.append((line_no, fields + [""] * (3 - len(fields))))
    if not rows:
        raise DataError(f"{path}: no rows; expected 'path,label[,split]' lines")
    return rows


def csv_list(path: str, seed: int, train_fraction: float) -> dict[str, ImageList]:
    """A `path,label[,split]` CSV; paths relative to the CSV's folder or absolute."""
    path = _given(path, CSV_TITLE, "list", "/path/to/list.csv", "lines 'path,label[,split]'",
                  os.path.isfile, "a CSV file of 'path,label[,split]' lines")
    base = os.path.dirname(path)
    rows = _read_csv_rows(path)
    with_split = [bool(split) for _, (_, _, split) in rows]
    if any(with_split) and not all(with_split):
        line_no = rows[with_split.index(False)][0]
        raise DataError(f"{path}:{line_no}: no split, while other rows give one; give a "
                        f"split ({'/'.join(CSV_SPLITS)}) on every row or on none")
    paths, labels, splits = [], [], []
    for line_no, (image, label, split) in rows:
        image_path = os.path.join(base, os.path.expanduser(image))
        if not os.path.isfile(image_path):
            raise DataError(f"{path}:{line_no}: image listed but missing: {image_path}")
        if split and split.lower() not in CSV_SPLITS:
            raise DataError(f"{path}:{line_no}: split {split!r} is not one of "
                            f"{', '.join(CSV_SPLITS)}")
        paths.append(image_path)
        labels.append(label)
        splits.append(split.lower())
    if not all(with_split):
        return _split_by_classes(paths, labels, seed, train_fraction)
    return _given_splits(path, paths, labels, splits)


def _given_splits(path, paths, labels, splits) -> dict[str, ImageList]:
    present = set(splits)
    lone = len(present & {"query", "gallery"}) == 1
    if "train" not in present or lone or not ({"test"} <= present
                                              or {"query", "gallery"} <= present):
        raise DataError(f"{path}: the split column gives {sorted(present)}; it needs train "
                        f"and test, or train, query and gallery")
    rows = {s: [i for i, x in enumerate(splits) if x == s] for s in present}
    pick = lambda s, xs: [xs[i] for i in rows[s]]  # noqa: E731
    out = {s: make_list(pick(s, paths), pick(s, labels)) for s in ("train", "test") if s in rows}
    if {"query", "gallery"} <= present:
        # Query and gallery share one label space, so their labels compare.
        shared = set(pick("query", labels)) | set(pick("gallery", labels))
        for s in ("query", "gallery"):
            out[s] = make_list(pick(s, paths), pick(s, labels), classes=shared)
    evaluated = set().union(*(out[s].class_names for s in out if s != "train"))
    overlap = set(out["train"].class_names) & evaluated
    if overlap:
        logging.warning("%s: %d classes are in both training and evaluation splits (e.g. %r); "
                        "deep metric learning usually tests on unseen classes", path,
                        len(overlap), sorted(overlap)[0])
    return out
