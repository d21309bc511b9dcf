"""The five benchmarks in their official on-disk layouts (docs/method.md §5), as per-split
ImageLists.

Each parser takes the data set's root folder and returns {split: ImageList} with the splits the
papers use; labels are contiguous within a split (In-shop's query and gallery share theirs).
Errors are one-line DataErrors naming the file (and line) and the config key to set. Counts that
differ from the official ones give one warning line (subsets are allowed).

Class splits of CUB and Cars are "the first half of the sorted classes trains": that is exactly
the official 100/100 (CUB, folders 001-100) and 98/98 (Cars, classes 1-98) split on the full
data, and it still splits a small fake or a subset sensibly.
"""
from __future__ import annotations

import os

import numpy as np

from dnc_jax.errors import DataError
from dnc_jax.data.sources.image_lists import (ROOT_KEY, ImageList, check_images_exist,
                                              is_image_file, make_list, split_by_first_classes,
                                              warn_unofficial_counts)

SOP_TITLE = "Stanford Online Products"
CUB_TITLE = "CUB-200-2011"
CARS_TITLE = "Cars196"
INSHOP_TITLE = "In-shop Clothes Retrieval"
VEHICLEID_TITLE = "PKU VehicleID"

# (images, classes) per split, docs/method.md appendix; None: not fixed by the protocol.
OFFICIAL = {
    "sop": {"train": (59_551, 11_318), "test": (60_502, 11_316)},
    "cub": {"train": (5_864, 100), "test": (5_924, 100)},
    "cars": {"train": (8_054, 98), "test": (8_131, 98)},
    # The 3,985 ids are those of query and gallery together (one shared label space).
    "inshop": {"train": (25_882, 3_997), "query": (14_218, 3_985), "gallery": (12_612, None)},
    "vehicleid": {"train": (None, 13_164), "test_small": (None, 800),
                  "test_medium": (None, 1_600), "test_large": (None, 2_400)},
}

VEHICLEID_LISTS = {"train": "train_list.txt", "test_small": "test_list_800.txt",
                   "test_medium": "test_list_1600.txt", "test_large": "test_list_2400.txt"}


def require_root(root: str, title: str, files: tuple[str, ...]) -> str:
    """The absolute root, after checking that it holds `files` (relative paths)."""
    holding = ", ".join(files)
    if not root:
        raise DataError(f"{title} needs its folder: set {ROOT_KEY}/path/to/it "
                        f"(the folder holding {holding})")
    root = os.path.abspath(os.path.expanduser(root))
    for name in files:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise DataError(f"{title} not found: {path} does not exist; set "
                            f"{ROOT_KEY}<the folder holding {holding}>")
    return root


def _read_rows(path: str, skip: int = 0):
    """(line number, whitespace fields) of each non-blank line after the first `skip` lines."""
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            if line_no > skip and line.strip():
                yield line_no, line.split()


def _bad_line(path, line_no, expected, fields):
    return DataError(f"{path}:{line_no}: expected '{expected}', got {' '.join(fields)!r}")


# --- Stanford Online Products --------------------------------------------------------------

def parse_sop_list(path: str):
    """Ebay_{train,test}.txt: a header line, then `image_id class_id super_class_id path`.

    Returns (relative paths, class ids - 1, line numbers)."""
    paths, labels, lines = [], [], []
    for line_no, fields in _read_rows(path, skip=1):
        if len(fields) != 4 or not fields[1].isdigit() or int(fields[1]) < 1:
            raise _bad_line(path, line_no, "image_id class_id super_class_id path", fields)
        labels.append(int(fields[1]) - 1)
        paths.append(fields[3])
        lines.append(line_no)
    return paths, labels, lines


def sop(root: str) -> dict[str, ImageList]:
    """train: Ebay_train.txt (classes 1-11318), test: Ebay_test.txt (11319-22634)."""
    root = require_root(root, SOP_TITLE, ("Ebay_train.txt", "Ebay_test.txt"))
    out = {}
    for split, name in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        list_path = os.path.join(root, name)
        rel, labels, lines = parse_sop_list(list_path)
        paths = [os.path.join(root, p) for p in rel]
        check_images_exist(paths, [f"{list_path}:{n}" for n in lines],
                           f"paths are relative to the folder set with {ROOT_KEY}")
        # Class names are the official 1-based class_id.
        out[split] = make_list(paths, labels, names={c: c + 1 for c in set(labels)})
    warn_unofficial_counts(SOP_TITLE, out, OFFICIAL["sop"])
    return out


# --- CUB-200-2011 --------------------------------------------------------------------------

def _cub_root(root: str) -> str:
    """The folder holding images/: root itself, or its one sub-folder that has images/."""
    if not root:
        raise DataError(f"{CUB_TITLE} needs its folder: set {ROOT_KEY}/path/to/CUB_200_2011 "
                        f"(the folder holding images/)")
    root = os.path.abspath(os.path.expanduser(root))
    if os.path.isdir(os.path.join(root, "images")):
        return root
    if not os.path.isdir(root):
        raise DataError(f"{CUB_TITLE} not found: {root} does not exist; set "
                        f"{ROOT_KEY}<the CUB_200_2011 folder, holding images/>")
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "images")))
    if len(found) == 1:  # e.g. the parent of CUB_200_2011, or PAMI's cub-200-2011
        return os.path.join(root, found[0])
    what = f"several candidates ({', '.join(found)})" if found else "no images/ folder"
    raise DataError(f"{CUB_TITLE} not found: {root} has {what}; set "
                    f"{ROOT_KEY}<the CUB_200_2011 folder, holding images/>")


def cub(root: str) -> dict[str, ImageList]:
    """images/<NNN.name>/*.jpg; class = sorted folder index; train = the first half (0-99)."""
    root = _cub_root(root)
    images = os.path.join(root, "images")
    folders = sorted(d for d in os.listdir(images)
                     if not d.startswith(".") and os.path.isdir(os.path.join(images, d)))
    paths, labels = [], []
    for label, folder in enumerate(folders):
        files = sorted(f for f in os.listdir(os.path.join(images, folder)) if is_image_file(f))
        paths += [os.path.join(images, folder, f) for f in files]
        labels += [label] * len(files)
    if len(set(labels)) < 2:
        raise DataError(f"{CUB_TITLE}: {images} needs at least two class folders with images; "
                        f"set {ROOT_KEY}<the CUB_200_2011 folder>")
    out = split_by_first_classes(paths, labels, len(folders) // 2,
                                 names=dict(enumerate(folders)))
    warn_unofficial_counts(CUB_TITLE, out, OFFICIAL["cub"])
    return out


# --- Cars196 -------------------------------------------------------------------------------

def _mat_string(value) -> str:
    return str(np.asarray(value).squeeze())


def parse_cars_annos(path: str):
    """cars_annos.mat: (relative image paths, 1-based classes, {class: name})."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, squeeze_me=True)
    except Exception as e:  # scipy raises several types for a damaged file
        raise DataError(f"{path}: cannot read it as a MATLAB file ({e})") from None
    annos = mat.get("annotations")
    if annos is None or annos.dtype.names is None or not {"relative_im_path", "class"} <= set(
            annos.dtype.names):
        raise DataError(f"{path}: expected a struct array 'annotations' with fields "
                        f"relative_im_path and class")
    annos = np.atleast_1d(annos)
    paths, classes = [], []
    for i, record in enumerate(annos):
        rel = _mat_string(record["relative_im_path"])
        try:
            label = int(np.asarray(record["class"]).squeeze())
        except (TypeError, ValueError):
            label = 0
        if not rel or label < 1:
            raise DataError(f"{path}: annotation {i + 1}: expected relative_im_path and a "
                            f"1-based class, got {rel!r}, {record['class']!r}")
        paths.append(rel)
        classes.append(label)
    names = {}
    if "class_names" in mat:
        all_names = [_mat_string(n) for n in np.atleast_1d(mat["class_names"])]
        names = {i + 1: n for i, n in enumerate(all_names)}
    return paths, classes, names


def cars(root: str) -> dict[str, ImageList]:
    """cars_annos.mat; the official `test` flag is ignored: train = first half (1-98)."""
    root = require_root(root, CARS_TITLE, ("cars_annos.mat",))
    mat_path = os.path.join(root, "cars_annos.mat")
    rel, classes, names = parse_cars_annos(mat_path)
    paths = [os.path.join(root, p) for p in rel]
    check_images_exist(paths, [f"{mat_path}: annotation {i + 1}" for i in range(len(paths))],
                       f"the folder set with {ROOT_KEY} must hold car_ims/")
    out = split_by_first_classes(paths, classes, len(set(classes)) // 2, names=names)
    warn_unofficial_counts(CARS_TITLE, out, OFFICIAL["cars"])
    return out


# --- In-shop Clothes Retrieval -------------------------------------------------------------

INSHOP_LIST = os.path.join("Eval", "list_eval_partition.txt")


def parse_inshop_list(path: str):
    """list_eval_partition.txt: a count line, a header, then `image_name item_id status`.

    Returns ({status: [(image_name, item number, line)]}, the declared count)."""
    rows = {"train": [], "query": [], "gallery": []}
    with open(path) as f:
        first = f.readline().strip()
    declared = int(first) if first.isdigit() else None
    for line_no, fields in _read_rows(path, skip=2):
        item = fields[1] if len(fields) == 3 else ""
        number = item[3:] if item.startswith("id_") else ""
        if len(fields) != 3 or not number.isdigit() or fields[2] not in rows:
            raise _bad_line(path, line_no, "image_name id_XXXXXXXX train|query|gallery", fields)
        rows[fields[2]].append((fields[0], int(number), line_no))
    return rows, declared


def inshop(root: str) -> dict[str, ImageList]:
    """train / query / gallery; labels remapped separately for train and for query+gallery."""
    root = require_root(root, INSHOP_TITLE, (INSHOP_LIST,))
    list_path = os.path.join(root, INSHOP_LIST)
    rows, declared = parse_inshop_list(list_path)
    paths = {s: [os.path.join(root, name) for name, _, _ in r] for s, r in rows.items()}
    for split, r in rows.items():
        check_images_exist(paths[split], [f"{list_path}:{n}" for _, _, n in r],
                           f"the folder set with {ROOT_KEY} must hold img/")
    ids = {s: [i for _, i, _ in r] for s, r in rows.items()}
    shared = set(ids["query"]) | set(ids["gallery"])
    name = "id_{:08d}".format  # the list's own spelling of an item id
    out = {"train": make_list(paths["train"], ids["train"],
                              names={i: name(i) for i in set(ids["train"])})}
    for split in ("query", "gallery"):
        out[split] = make_list(paths[split], ids[split], classes=shared,
                               names={i: name(i) for i in shared})
    if not len(out["train"]) or not len(out["query"]) or not len(out["gallery"]):
        raise DataError(f"{list_path}: needs train, query and gallery rows")
    listed = sum(len(r) for r in rows.values())
    # Reported with the counts: a truncated file and a deliberate subset look the same.
    extra = ([f"{listed:,} rows listed, the first line declares {declared:,}"]
             if declared is not None and declared != listed else [])
    warn_unofficial_counts(INSHOP_TITLE, out, OFFICIAL["inshop"], extra)
    return out


# --- PKU VehicleID -------------------------------------------------------------------------

def parse_vehicleid_list(path: str):
    """`<image_name> <vehicle_id>` lines: (image names, vehicle ids, line numbers)."""
    names, ids, lines = [], [], []
    for line_no, fields in _read_rows(path):
        if len(fields) != 2 or not fields[1].isdigit():
            raise _bad_line(path, line_no, "image_name vehicle_id", fields)
        names.append(fields[0])
        ids.append(int(fields[1]))
        lines.append(line_no)
    return names, ids, lines


def vehicleid(root: str) -> dict[str, ImageList]:
    """train, test_small (800 ids), test_medium (1600), test_large (2400); ids per list."""
    lists = tuple(os.path.join("train_test_split", f) for f in VEHICLEID_LISTS.values())
    root = require_root(root, VEHICLEID_TITLE, lists)
    out = {}
    for split, file_name in VEHICLEID_LISTS.items():
        list_path = os.path.join(root, "train_test_split", file_name)
        names, ids, lines = parse_vehicleid_list(list_path)
        paths = [os.path.join(root, "image", n + ".jpg") for n in names]
        check_images_exist(paths, [f"{list_path}:{n}" for n in lines],
                           f"the folder set with {ROOT_KEY} must hold image/")
        out[split] = make_list(paths, ids)
    warn_unofficial_counts(VEHICLEID_TITLE, out, OFFICIAL["vehicleid"])
    return out
