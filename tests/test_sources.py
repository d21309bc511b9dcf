"""Data sources: tiny fakes of every benchmark in its official on-disk layout, your own data
(class folders, CSV lists), and tfds (never the real tfds.data_source: no download, ever)."""
import logging
import os
import re

import numpy as np
import pytest
import scipy.io
from PIL import Image

from dnc_jax.configs import default
from dnc_jax.data.sources import benchmarks, custom, image_lists
from dnc_jax.data import sources
from dnc_jax.errors import DataError


# --- helpers -------------------------------------------------------------------------------

def _image(path, color=(200, 10, 10), size=(12, 9)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _encoded(color, fmt="PNG"):
    import io

    buf = io.BytesIO()
    Image.new("RGB", (7, 5), color).save(buf, fmt)
    return buf.getvalue()


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def _data_config(tmp_path, name, root=""):
    data = default.get_config().data
    data.name = name
    data.root = str(root)
    data.cache_dir = str(tmp_path / "cache")
    data.image_size = 8
    return data


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture
def fake_decode(monkeypatch):
    """The image cache in this process (parsing is what these tests check), recording the
    split names it is asked for."""
    from dnc_jax.data.store import cache

    calls = []

    def cached(files, cache_dir, name, skip_bad=False):
        calls.append(name)
        return cache.cached_images(files, cache_dir, name, workers=1, progress=False,
                                   skip_bad=skip_bad)

    monkeypatch.setattr(image_lists, "_cached", cached)
    return calls


def _plain(lists):
    """{split: (paths, labels, class names)}, comparable with ==."""
    return {k: (v.paths, v.labels.tolist(), v.class_names) for k, v in lists.items()}


def _names(image_list):
    return [image_list.class_names[i] for i in image_list.labels]


# --- SOP -----------------------------------------------------------------------------------

def _sop(root, train=((1, "a/1.jpg"), (1, "a/2.jpg"), (3, "b/1.jpg")),
         test=((5, "c/1.jpg"), (4, "d/1.jpg"), (5, "c/2.jpg"))):
    for split, rows in (("train", train), ("test", test)):
        lines = ["image_id class_id super_class_id path"]
        lines += [f"{i + 1} {c} 1 {p}" for i, (c, p) in enumerate(rows)]
        _write(str(root / f"Ebay_{split}.txt"), "\n".join(lines) + "\n")
        for _, p in rows:
            _image(str(root / p))
    return root


def test_sop_labels_are_contiguous_per_split_and_named_by_class_id(tmp_path, caplog):
    out = benchmarks.sop(str(_sop(tmp_path / "sop")))
    assert out["train"].class_names == ["1", "3"]
    assert out["train"].labels.tolist() == [0, 0, 1]
    assert out["test"].class_names == ["4", "5"]
    assert _names(out["test"]) == ["5", "4", "5"]
    assert out["test"].paths[0] == str(tmp_path / "sop" / "c" / "1.jpg")
    # A subset: one warning line naming the differing counts.
    (line,) = _warnings(caplog)
    assert line.startswith("Stanford Online Products differs from the official counts")
    assert "train 3 images (official 59,551)" in line and "\n" not in line


def test_sop_bad_line_and_missing_image_name_file_and_line(tmp_path):
    root = _sop(tmp_path / "sop")
    _write(str(root / "Ebay_test.txt"), "header\n1 5 1 c/1.jpg\n2 x 1 c/2.jpg\n")
    with pytest.raises(DataError, match=r"Ebay_test.txt:3: expected 'image_id class_id"):
        benchmarks.sop(str(root))
    _write(str(root / "Ebay_test.txt"), "header\n1 5 1 c/1.jpg\n\n2 5 1 c/nope.jpg\n")
    with pytest.raises(DataError, match=r"Ebay_test.txt:4: image listed but missing: .*nope"):
        benchmarks.sop(str(root))


def test_missing_root_says_which_key_to_set(tmp_path):
    with pytest.raises(DataError, match=r"^Stanford Online Products needs its folder: set "
                                        r"--config.data.root="):
        benchmarks.sop("")
    for parse, missing in ((benchmarks.cars, "cars_annos.mat"),
                           (benchmarks.inshop, "list_eval_partition.txt"),
                           (benchmarks.vehicleid, "train_list.txt"),
                           (benchmarks.cub, "")):
        with pytest.raises(DataError, match=r"--config.data.root=") as e:
            parse(str(tmp_path / "nowhere"))
        assert missing in str(e.value) and "\n" not in str(e.value)


# --- CUB -----------------------------------------------------------------------------------

def _cub(base, classes=("001.Albatross", "002.Auklet", "003.Blackbird", "004.Bobolink",
                        "005.Bunting")):
    images = base / "CUB_200_2011" / "images"
    for k, cls in enumerate(classes):
        for j in range(2 + k % 2):
            _image(str(images / cls / f"{cls}_{j}.jpg"))
        _write(str(images / cls / f"._{cls}_0.jpg"), "resource fork")  # macOS junk
        _write(str(images / cls / "notes.txt"), "not an image")
    return base / "CUB_200_2011"


def test_cub_classes_are_sorted_folders_first_half_trains(tmp_path, caplog):
    root = _cub(tmp_path)
    out = benchmarks.cub(str(root))
    assert out["train"].class_names == ["001.Albatross", "002.Auklet"]
    assert out["test"].class_names == ["003.Blackbird", "004.Bobolink", "005.Bunting"]
    assert out["train"].labels.tolist() == [0, 0, 1, 1, 1]
    every = out["train"].paths + out["test"].paths
    assert len(every) == 12 and all(os.path.basename(p).startswith("0") for p in every)
    assert len(_warnings(caplog)) == 1
    # Its parent works too, when it holds a single candidate.
    assert _plain(benchmarks.cub(str(tmp_path))) == _plain(out)


def test_cub_ambiguous_parent_is_an_error(tmp_path):
    _cub(tmp_path)
    os.makedirs(tmp_path / "copy" / "images")
    with pytest.raises(DataError, match="several candidates .*--config.data.root="):
        benchmarks.cub(str(tmp_path))


# --- Cars196 -------------------------------------------------------------------------------

def _cars(root, classes=(1, 1, 2, 3, 4, 4, 2)):
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annos = np.zeros((1, len(classes)), dtype=[(f, "O") for f in fields])
    for i, c in enumerate(classes):
        rel = f"car_ims/{i + 1:06d}.jpg"
        _image(str(root / rel))
        box = [np.array([[v]], np.uint16) for v in (1, 2, 10, 8)]
        annos[0, i] = (np.array([rel]), *box, np.array([[c]], np.uint8),
                       np.array([[i % 2]], np.uint8))
    names = np.empty((1, 4), dtype=object)
    names[0, :] = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 2012",
                   "BMW M3 2012"]
    scipy.io.savemat(str(root / "cars_annos.mat"), {"annotations": annos, "class_names": names})
    return root


def test_cars_reads_the_official_mat_and_splits_by_class(tmp_path, caplog):
    root = _cars(tmp_path / "cars")
    out = benchmarks.cars(str(root))
    assert out["train"].class_names == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    assert out["train"].labels.tolist() == [0, 0, 1, 1]  # the official test flag is ignored
    assert [os.path.basename(p) for p in out["train"].paths] == [
        "000001.jpg", "000002.jpg", "000003.jpg", "000007.jpg"]
    assert out["test"].class_names == ["Audi R8 2012", "BMW M3 2012"]
    assert out["test"].labels.tolist() == [0, 1, 1]
    (line,) = _warnings(caplog)
    assert line.startswith("Cars196 differs") and "test 3 images (official 8,131)" in line


def test_cars_missing_image_names_the_annotation(tmp_path):
    root = _cars(tmp_path / "cars")
    os.remove(root / "car_ims" / "000003.jpg")
    with pytest.raises(DataError, match=r"cars_annos.mat: annotation 3: image listed but "
                                        r"missing: .*000003.jpg"):
        benchmarks.cars(str(root))


# --- In-shop -------------------------------------------------------------------------------

_INSHOP_ROWS = [("train", 7), ("train", 7), ("train", 3), ("query", 12), ("gallery", 12),
                ("query", 40), ("gallery", 40), ("gallery", 55)]


def _inshop(root, rows=_INSHOP_ROWS, declared=None):
    lines = [str(len(rows) if declared is None else declared),
             "image_name item_id evaluation_status"]
    for i, (status, item) in enumerate(rows):
        name = f"img/WOMEN/Dresses/id_{item:08d}/{i:02d}_1_front.jpg"
        _image(str(root / name))
        lines.append(f"{name}  id_{item:08d}  {status}")
    _write(str(root / "Eval" / "list_eval_partition.txt"), "\n".join(lines) + "\n")
    return root


def test_inshop_query_and_gallery_share_one_label_space(tmp_path, caplog):
    out = benchmarks.inshop(str(_inshop(tmp_path / "inshop")))
    assert set(out) == {"train", "query", "gallery"}
    assert out["train"].class_names == ["id_00000003", "id_00000007"]
    assert out["train"].labels.tolist() == [1, 1, 0]
    shared = ["id_00000012", "id_00000040", "id_00000055"]
    assert out["query"].class_names == out["gallery"].class_names == shared
    assert out["query"].labels.tolist() == [0, 1]
    assert out["gallery"].labels.tolist() == [0, 1, 2]
    assert out["query"].paths[0].endswith("img/WOMEN/Dresses/id_00000012/03_1_front.jpg")
    assert len(_warnings(caplog)) == 1


def test_inshop_declared_count_and_bad_line(tmp_path, caplog):
    root = _inshop(tmp_path / "inshop", declared=52712)
    benchmarks.inshop(str(root))
    (line,) = _warnings(caplog)
    assert "8 rows listed, the first line declares 52,712" in line
    path = root / "Eval" / "list_eval_partition.txt"
    text = path.read_text().splitlines()
    text[5] = text[5].replace("query", "validation")
    path.write_text("\n".join(text))
    with pytest.raises(DataError, match=r"list_eval_partition.txt:6: expected"):
        benchmarks.inshop(str(root))


# --- VehicleID -----------------------------------------------------------------------------

def _vehicleid(root):
    lists = {"train_list.txt": [("0001", 5), ("0002", 5), ("0003", 9)],
             "test_list_800.txt": [("0101", 20), ("0102", 20)],
             "test_list_1600.txt": [("0101", 20), ("0102", 20), ("0103", 31)],
             "test_list_2400.txt": [("0101", 20), ("0102", 20), ("0103", 31), ("0104", 44)]}
    for file_name, rows in lists.items():
        _write(str(root / "train_test_split" / file_name),
               "".join(f"{n} {v}\n" for n, v in rows))
        for n, _ in rows:
            _image(str(root / "image" / f"{n}.jpg"))
    return root


def test_vehicleid_lists_and_test_choice(tmp_path, fake_decode, caplog):
    root = _vehicleid(tmp_path / "vid")
    out = benchmarks.vehicleid(str(root))
    assert out["train"].class_names == ["5", "9"] and out["train"].labels.tolist() == [0, 0, 1]
    assert out["test_large"].labels.tolist() == [0, 0, 1, 2]
    assert out["test_small"].paths == [str(root / "image" / "0101.jpg"),
                                       str(root / "image" / "0102.jpg")]
    (line,) = _warnings(caplog)
    assert "test_small 1 classes (official 800)" in line
    config = _data_config(tmp_path, "vehicleid", root)
    config.vehicleid_test = "small"
    sets = sources.load_dataset(config)
    assert set(sets) == {"train", "test", "test_small", "test_medium", "test_large"}
    assert sets["test"] is sets["test_small"]
    config.vehicleid_test = "huge"
    with pytest.raises(DataError, match="data.vehicleid_test='huge'"):
        sources.load_dataset(config)


def test_vehicleid_bad_line(tmp_path):
    root = _vehicleid(tmp_path / "vid")
    _write(str(root / "train_test_split" / "test_list_1600.txt"), "0101 20\n0102\n")
    with pytest.raises(DataError, match=r"test_list_1600.txt:2: expected 'image_name "
                                        r"vehicle_id'"):
        benchmarks.vehicleid(str(root))


# --- Every registered name through load_dataset --------------------------------------------

def test_load_dataset_returns_image_sets(tmp_path, fake_decode):
    roots = {"sop": _sop(tmp_path / "sop"), "cub": _cub(tmp_path / "cub"),
             "cars": _cars(tmp_path / "cars"), "inshop": _inshop(tmp_path / "inshop")}
    for name, root in roots.items():
        sets = sources.load_dataset(_data_config(tmp_path, name, root))
        for split, s in sets.items():
            assert len(s.images) == len(s)
            assert s.sizes.tolist() == [[9, 12]] * len(s)
            assert s.labels.dtype == np.int32 and len(s.paths) == len(s)
    assert "cub-train" in fake_decode and "inshop-gallery" in fake_decode
    assert set(sources.NAMES) == {"glyphs", "sop", "cub", "cars", "inshop", "vehicleid",
                                  "folder", "csv", "tfds"}


def test_held_out_only_never_packs_the_training_split(tmp_path, fake_decode):
    """What `evaluate` asks for: every split but 'train', whose images are not even cached."""
    roots = {"sop": _sop(tmp_path / "sop"), "inshop": _inshop(tmp_path / "inshop"),
             "vehicleid": _vehicleid(tmp_path / "vid")}
    for name, root in roots.items():
        everything = sources.load_dataset(_data_config(tmp_path, name, root))
        del fake_decode[:]
        held_out = sources.load_dataset(_data_config(tmp_path, name, root), held_out_only=True)
        assert set(held_out) == set(everything) - {"train"}
        assert not [call for call in fake_decode if call.endswith("-train")], fake_decode
        for split, s in held_out.items():
            assert s.paths == everything[split].paths
            assert s.labels.tolist() == everything[split].labels.tolist()


def test_real_decode_cache(tmp_path):
    """The same path through the real cache (dnc_jax/data/store/cache.py)."""
    sets = sources.load_dataset(_data_config(tmp_path, "sop", _sop(tmp_path / "sop")))
    assert len(sets["test"].images) == 3
    assert sets["test"].sizes.tolist() == [[9, 12]] * 3
    assert int(np.asarray(sets["train"].images.decode(0))[4, 4, 0]) > 150  # the red of _image


# --- Your own data: class folders ----------------------------------------------------------

def _folder(root, classes=("cat", "dog", "eel", "fox", "gnu", "hen")):
    for k, cls in enumerate(classes):
        for j in range(2):
            _image(str(root / cls / ("sub" if j else "") / f"{j}.png"), color=(k * 30, 0, 0))
        _write(str(root / cls / "._0.png"), "junk")
    return root


def test_folder_split_is_class_disjoint_seeded_and_deterministic(tmp_path):
    root = str(_folder(tmp_path / "pets"))
    out = custom.folder(root, seed=0, train_fraction=0.5)
    train, test = set(out["train"].class_names), set(out["test"].class_names)
    assert len(train) == 3 and not train & test and train | test == {
        "cat", "dog", "eel", "fox", "gnu", "hen"}
    assert train == custom.split_classes(train | test, 0, 0.5)
    assert len(out["train"]) == 6 and all("._" not in p for p in out["train"].paths)
    assert _plain(custom.folder(root, seed=0, train_fraction=0.5)) == _plain(out)
    splits = {frozenset(custom.folder(root, s, 0.5)["train"].class_names) for s in range(8)}
    assert len(splits) > 1  # the seed matters
    assert len(custom.folder(root, 0, 0.2)["train"].class_names) == 1
    with pytest.raises(DataError, match="data.train_fraction"):
        custom.folder(root, 0, 1.0)


def _split_folder(root, splits):
    """root/<split>/<class>/<k>.{png,jpg}: `splits` maps a split folder's name to its classes."""
    for split, classes in splits.items():
        for k, cls in enumerate(classes):
            _image(str(root / split / cls / "0.png"), color=(k * 30, 0, 0))
            _image(str(root / split / cls / "deep" / "1.jpg"), color=(k * 30, 9, 0))
    return root


def test_train_and_test_folders_are_the_splits(tmp_path, caplog, fake_decode):
    root = _split_folder(tmp_path / "pets", {"train": ("cat", "dog"), "test": ("eel", "fox"),
                                             ".hidden": ("gnu",)})
    out = custom.folder(str(root), seed=0, train_fraction=0.5)
    assert set(out) == {"train", "test"}
    assert out["train"].class_names == ["cat", "dog"] and len(out["train"]) == 4
    assert out["test"].class_names == ["eel", "fox"] and _names(out["test"]) == [
        "eel", "eel", "fox", "fox"]
    assert all(p.startswith(str(root / "test")) for p in out["test"].paths)
    assert _plain(custom.folder(str(root), seed=5, train_fraction=0.2)) == _plain(out)
    assert not _warnings(caplog)
    # Through load_dataset: the ImageSets of the same splits (leave-one-out on 'test').
    sets = sources.load_dataset(_data_config(tmp_path, "folder", root))
    assert set(sets) == {"train", "test"} and sets["test"].class_names == ["eel", "fox"]
    # A class in both splits is the user's choice, warned about (as a CSV split column is).
    _image(str(root / "test" / "cat" / "0.png"))
    assert custom.folder(str(root), 0, 0.5)["test"].class_names == ["cat", "eel", "fox"]
    assert "1 classes are in both training and evaluation" in _warnings(caplog)[0]


def test_train_query_gallery_folders_are_in_shops_protocol(tmp_path, caplog, fake_decode):
    """Query and gallery share one label space (as benchmarks.inshop gives them), train has
    its own; the evaluator then runs query against gallery."""
    from dnc_jax.evaluation import protocols

    root = _split_folder(tmp_path / "shop", {"Train": ("a", "b"), "query": ("c", "d"),
                                             "gallery": ("c", "d", "e")})
    out = custom.folder(str(root), seed=0, train_fraction=0.5)
    assert set(out) == {"train", "query", "gallery"}
    assert out["train"].class_names == ["a", "b"]
    assert out["query"].class_names == out["gallery"].class_names == ["c", "d", "e"]
    assert out["query"].labels.tolist() == [0, 0, 1, 1]
    assert out["gallery"].labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert not _warnings(caplog)
    sets = sources.load_dataset(_data_config(tmp_path, "folder", root), held_out_only=True)
    assert set(sets) == {"query", "gallery"}
    assert not [c for c in fake_decode if c.endswith("-train")]
    assert protocols.protocol_for_dataset("folder", split_names=list(sets)) == "query_gallery"


@pytest.mark.parametrize("layout, expected", [
    ({"train": ("a",), "cat": ("x",), "dog": ("y",)},
     r"^Image folder data set: {root} mixes split folders \(train/\) with class folders "
     r"\(cat/, dog/\); use either split folders \(train/ and test/, or train/, query/ and "
     r"gallery/, each holding class folders\) or class folders alone$"),
    ({"test": ("a", "b")},
     r"^Image folder data set: {root} has split folders test/ only; it needs train/ and test/, "
     r"or train/, query/ and gallery/ \(each holding one sub-folder per class\)$"),
    ({"train": ("a", "b"), "query": ("c",)},
     r"^Image folder data set: {root} has split folders query/, train/ only; it needs"),
    ({"train": ("a", "b"), "gallery": ("c",), "test": ("d",)},
     r"^Image folder data set: {root} has split folders gallery/, test/, train/ only"),
    ({"train": ("a", "b"), "Test": ("c",), "test": ("d",)},
     r"^Image folder data set: {root} has split folders differing only in case \(Test/, "
     r"test/, train/\); keep one of each$"),
])
def test_a_mixed_or_incomplete_folder_layout_is_one_line(tmp_path, layout, expected):
    root = _split_folder(tmp_path / "mine", layout)
    with pytest.raises(DataError, match=expected.format(root=re.escape(str(root)))) as e:
        custom.folder(str(root), 0, 0.5)
    assert "\n" not in str(e.value)


def test_a_split_folder_without_class_folders_is_one_line(tmp_path):
    root = _split_folder(tmp_path / "mine", {"train": ("a", "b")})
    _image(str(root / "test" / "loose.jpg"))
    with pytest.raises(DataError, match=(
            f"^Image folder data set: {re.escape(str(root / 'test'))} holds images outside "
            r"class folders \(e.g. loose.jpg\); put each in test/<class>/; the 'test' split needs "
            r"test/<class>/<image> files$")):
        custom.folder(str(root), 0, 0.5)
    os.remove(root / "test" / "loose.jpg")
    os.makedirs(root / "test" / "empty")
    with pytest.raises(DataError, match=f"^Image folder data set: {re.escape(str(root))}/test "
                                        f"holds no class folder of images"):
        custom.folder(str(root), 0, 0.5)


# --- Your own data: CSV lists --------------------------------------------------------------

def test_csv_without_split_relative_and_absolute_paths(tmp_path, fake_decode):
    _folder(tmp_path / "pets")
    absolute = str(tmp_path / "pets" / "fox" / "0.png")
    csv_path = _write(str(tmp_path / "lists" / "all.csv"),
                      "path,label\n../pets/cat/0.png,cat\n../pets/cat/sub/1.png,cat\n"
                      f"../pets/dog/0.png,dog\n{absolute},\"fox, red\"\n"
                      "../pets/eel/0.png,eel\n")
    out = custom.csv_list(csv_path, seed=1, train_fraction=0.5)
    assert sorted(out["train"].class_names + out["test"].class_names) == [
        "cat", "dog", "eel", "fox, red"]
    assert absolute in out["train"].paths + out["test"].paths
    config = _data_config(tmp_path, "csv", csv_path)
    config.split_seed = 1
    assert set(sources.load_dataset(config)) == {"train", "test"}


def test_csv_with_split_column(tmp_path, caplog):
    _folder(tmp_path / "pets")
    csv_path = _write(str(tmp_path / "split.csv"),
                      "pets/cat/0.png,cat,train\npets/dog/0.png,dog,train\n"
                      "pets/eel/0.png,eel,query\npets/eel/sub/1.png,eel,gallery\n"
                      "pets/fox/0.png,fox,gallery\n")
    out = custom.csv_list(csv_path, 0, 0.5)
    assert set(out) == {"train", "query", "gallery"}
    assert out["query"].class_names == out["gallery"].class_names == ["eel", "fox"]
    assert out["gallery"].labels.tolist() == [0, 1]
    assert not _warnings(caplog)
    _write(csv_path, "pets/cat/0.png,cat,train\npets/cat/sub/1.png,cat,test\n")
    assert custom.csv_list(csv_path, 0, 0.5)["test"].class_names == ["cat"]
    assert "1 classes are in both training and evaluation" in _warnings(caplog)[0]


@pytest.mark.parametrize("text, match", [
    ("path,label\npets/cat/0.png,cat\npets/cat/9.png,cat\n",
     r"split.csv:3: image listed but missing: .*9.png"),
    ("pets/cat/0.png,cat,train\npets/dog/0.png,dog,validation\n",
     r"split.csv:2: split 'validation' is not one of"),
    ("pets/cat/0.png,cat,train\npets/dog/0.png,dog\n", r"split.csv:2: no split"),
    ("pets/cat/0.png\n", r"split.csv:1: expected 'path,label'"),
    ("pets/cat/0.png,cat,train\npets/dog/0.png,dog,query\n", r"split.csv: the split column"),
])
def test_csv_errors_name_the_line(tmp_path, text, match):
    _folder(tmp_path / "pets")
    with pytest.raises(DataError, match=match):
        custom.csv_list(_write(str(tmp_path / "split.csv"), text), 0, 0.5)


# --- tfds ----------------------------------------------------------------------------------

@pytest.fixture
def no_real_tfds(monkeypatch):
    import tensorflow_datasets as tfds

    def refuse(*args, **kwargs):
        raise AssertionError("the real tfds.data_source must never run in tests")

    monkeypatch.setattr(tfds, "data_source", refuse)
    return tfds


def test_tfds_not_prepared_fails_fast_with_the_build_command(tmp_path, no_real_tfds):
    config = _data_config(tmp_path, "tfds")
    config.tfds_name = "caltech_birds2011"
    config.tfds_data_dir = str(tmp_path / "tfds")
    # Fast by construction: the fixture makes any call of the real tfds.data_source (which
    # would retry a download for minutes) fail the test.
    with pytest.raises(DataError) as e:
        sources.load_dataset(config)
    message = str(e.value)
    assert "not prepared" in message and "\n" not in message
    assert (f"tfds build caltech_birds2011 --data_dir={tmp_path / 'tfds'} "
            "--file_format=array_record") in message
    # Prepared, but as TFRecord: data sources cannot read it.
    _write(str(tmp_path / "tfds" / "caltech_birds2011" / "0.2.0" / "dataset_info.json"), "{}")
    with pytest.raises(DataError, match="has no ArrayRecord files"):
        sources.load_dataset(config)
    config.tfds_name = "mnist"
    with pytest.raises(DataError, match="data.tfds_name='mnist'"):
        sources.load_dataset(config)


def _prepared(data_dir, name, version):
    folder = data_dir / name / version
    _write(str(folder / "dataset_info.json"), '{"name": "%s"}' % name)
    _write(str(folder / f"{name}-train.array_record-00000-of-00001"), "")


def test_tfds_cars_merges_splits_and_resplits_by_class(tmp_path, monkeypatch, fake_decode):
    import tensorflow_datasets as tfds

    _prepared(tmp_path / "tfds", "cars196", "2.1.0")
    _prepared(tmp_path / "tfds", "cars196", "2.0.0")  # the newest version is read
    records = {"train": [(0, (255, 0, 0)), (2, (0, 255, 0)), (3, (0, 0, 255))],
               "test": [(0, (9, 9, 9)), (1, (1, 1, 1)), (3, (3, 3, 3))]}
    calls = []

    def data_source(name, *, data_dir, download, decoders):
        calls.append(name)
        assert not download and isinstance(decoders["image"], tfds.decode.SkipDecoding)
        return {split: [{"image": _encoded(c, "JPEG" if label == 3 else "PNG"), "label": label}
                        for label, c in rows] for split, rows in records.items()}

    monkeypatch.setattr(tfds, "data_source", data_source)
    config = _data_config(tmp_path, "tfds")
    config.tfds_name, config.tfds_data_dir = "cars196", str(tmp_path / "tfds")
    sets = sources.load_dataset(config)
    assert calls == ["cars196:2.1.0"]
    assert sets["train"].class_names == ["0", "1"] and sets["test"].class_names == ["2", "3"]
    assert sets["train"].labels.tolist() == [0, 0, 1] and sets["test"].labels.tolist() == [0, 1, 1]
    assert sets["train"].sizes.tolist() == [[5, 7]] * 3
    assert sets["test"].paths[1].endswith(".jpg") and sets["train"].paths[0].endswith(".png")
    assert "tfds-cars196-train" in fake_decode
    # Extracted once: the next load reads the manifest, not tfds.
    again = sources.load_dataset(config)
    assert calls == ["cars196:2.1.0"] and again["test"].paths == sets["test"].paths


def test_tfds_sop_keeps_its_class_disjoint_splits(tmp_path, monkeypatch, fake_decode):
    import tensorflow_datasets as tfds

    _prepared(tmp_path / "tfds", "stanford_online_products", "1.0.0")
    rows = {"train": [0, 0, 4], "test": [7, 8]}
    monkeypatch.setattr(tfds, "data_source", lambda name, **kw: {
        split: [{"image": _encoded((c, c, c)), "class_id": c, "super_class_id": 1}
                for c in classes] for split, classes in rows.items()})
    config = _data_config(tmp_path, "tfds")
    config.tfds_name = "stanford_online_products"
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))  # the default data_dir
    sets = sources.load_dataset(config)
    assert sets["train"].class_names == ["1", "5"] and sets["train"].labels.tolist() == [0, 0, 1]
    assert sets["test"].class_names == ["8", "9"]
