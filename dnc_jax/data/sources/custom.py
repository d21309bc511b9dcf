"""Your own data: a folder of class folders, or a CSV list of `path,label[,split]`.

Without a split (class folders directly under `data.root`, or a CSV without a split column) the
loader splits by class, as the benchmarks do: the sorted class names are shuffled with
`data.split_seed` and the first `data.train_fraction` of them train, the rest test, so test
classes are never seen in training and the split is the same on every run and machine. With
split folders (`root/train/<class>/`, `root/test/<class>/`; or `train/`, `query/`, `gallery/`)
or a split column, the data decides (train and test, or train, query and gallery); query and
gallery share one label space, as In-shop's do. A class named in both training and evaluation
splits is kept with a warning (the benchmarks never do that). A root mixing split folders with
class folders, or holding an incomplete set of split folders, is a one-line DataError.
"""
from __future__ import annotations

import csv
import os

import numpy as np
from absl import logging

from dnc_jax.errors import DataError
from dnc_jax.data.sources.image_lists import ROOT_KEY, ImageList, is_image_file, make_list

FOLDER_TITLE = "Image folder data set"
CSV_TITLE = "CSV list data set"
CSV_SPLITS = ("train", "test", "query", "gallery")
SPLIT_LAYOUTS = (("train", "test"), ("train", "query", "gallery"))  # split folders
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


def _subfolders(path: str) -> list[str]:
    """The sorted names of the sub-folders of `path`, hidden ones ('.x') left out."""
    return sorted(name for name in os.listdir(path)
                  if not name.startswith(".") and os.path.isdir(os.path.join(path, name)))


def _class_images(path: str):
    """(paths, labels) of `path/<class>/**/<image>`: every sub-folder of `path` is a class."""
    paths, labels = [], []
    for name in _subfolders(path):
        for dirpath, dirnames, filenames in os.walk(os.path.join(path, name)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if is_image_file(f):
                    paths.append(os.path.join(dirpath, f))
                    labels.append(name)
    return paths, labels


def _listed(names, most: int = 4) -> str:
    shown = ", ".join(f"{n}/" for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def folder(root: str, seed: int, train_fraction: float) -> dict[str, ImageList]:
    """`root/<class>/**/<image>`: every sub-folder of root is a class, split by class; or
    `root/<split>/<class>/**/<image>` with split folders train + test, or train + query +
    gallery (names in any case), which are the splits."""
    root = _given(root, FOLDER_TITLE, "folder", "/path/to/it",
                  "one sub-folder of images per class, or train/ and test/ of class folders",
                  os.path.isdir)
    names = _subfolders(root)
    split_dirs = [n for n in names if n.lower() in CSV_SPLITS]
    if split_dirs:
        return _split_folders(root, names, split_dirs)
    paths, labels = _class_images(root)
    if len(set(labels)) < 2:
        raise DataError(f"{FOLDER_TITLE}: {root} needs at least two sub-folders holding images "
                        f"(one per class), found {len(set(labels))}; set {ROOT_KEY}<such a folder>")
    return _split_by_classes(paths, labels, seed, train_fraction)


def _split_folders(root: str, names, split_dirs) -> dict[str, ImageList]:
    """The splits `root/<split>/<class>/...` name, checked to be one of SPLIT_LAYOUTS."""
    layouts = "train/ and test/, or train/, query/ and gallery/"
    classes = [n for n in names if n not in split_dirs]
    if classes:
        raise DataError(f"{FOLDER_TITLE}: {root} mixes split folders ({_listed(split_dirs)}) "
                        f"with class folders ({_listed(classes)}); use either split folders "
                        f"({layouts}, each holding class folders) or class folders alone")
    present = sorted({n.lower() for n in split_dirs}, key=CSV_SPLITS.index)
    if len(present) < len(split_dirs):
        raise DataError(f"{FOLDER_TITLE}: {root} has split folders differing only in case "
                        f"({_listed(split_dirs)}); keep one of each")
    if tuple(present) not in SPLIT_LAYOUTS:
        raise DataError(f"{FOLDER_TITLE}: {root} has split folders {_listed(split_dirs)} only; "
                        f"it needs {layouts} (each holding one sub-folder per class)")
    paths, labels, splits = [], [], []
    for name in split_dirs:
        split_dir = os.path.join(root, name)
        found, of_class = _class_images(split_dir)
        if not found:
            loose = [f for f in sorted(os.listdir(split_dir)) if is_image_file(f)]
            held = (f"holds images outside class folders (e.g. {loose[0]}); put each in "
                    f"{name}/<class>/" if loose else "holds no class folder of images")
            raise DataError(f"{FOLDER_TITLE}: {split_dir} {held}; the '{name.lower()}' split "
                            f"needs {name}/<class>/<image> files")
        paths += found
        labels += of_class
        splits += [name.lower()] * len(found)
    return _given_splits(root, paths, labels, splits)


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
