"""Bad input (issue 3), one test per case, through `load_dataset` as a run sees it: missing
root or list, malformed line, missing image, corrupt and truncated JPEGs (an error, or skipped
with data.skip_bad_images), grayscale / CMYK / alpha images, a one-image class, an empty split,
and a cache left by another data set."""
import os

import numpy as np
import pytest
from PIL import Image

from dnc_jax.data.store import cache
from dnc_jax.data.sources import image_lists
from dnc_jax.data import sources
from dnc_jax.errors import DataError
from dnc_jax.divide.recluster import remove_singletons
from tests.test_sources import _data_config, _image, _sop, _warnings, _write



@pytest.fixture(autouse=True)
def in_process_cache(monkeypatch):
    """The real image cache, checking in this process: a pool of spawned workers per split
    would cost seconds of start-up for a handful of images (test_cache covers the pool)."""
    def cached(files, cache_dir, name, skip_bad=False):
        return cache.cached_images(files, cache_dir, name, workers=1, progress=False,
                                   skip_bad=skip_bad)

    monkeypatch.setattr(image_lists, "_cached", cached)


def _pixels(images, i):
    """Row i of an image set's images, decoded (uint8 [H, W, 3])."""
    return np.asarray(images.decode(i))


def _photo(path, seed, size=(40, 30), mode="RGB", fmt=None):
    """A random-content image (every row of the cache then differs), saved in `mode`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).convert(mode).save(
        path, fmt)
    return path


def _save(image, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)
    return path


def _corrupt(path):
    """A JPEG header followed by garbage."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not a JPEG at all")
    return path


def _truncated(path, seed):
    """A valid JPEG cut to half its bytes: PIL opens it and would decode a partial image
    if it did not load it to the end."""
    _photo(path, seed, size=(64, 48))
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    return path


def _pil_rows(paths):
    """What the cache must give back: PIL's convert('RGB') of each file, and the sizes."""
    images, sizes = [], []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            images.append(np.asarray(im))
            sizes.append((im.height, im.width))
    return images, np.asarray(sizes)


def _csv_data_set(tmp_path, rows, bad=None):
    """A CSV with a split column; rows are (relative path, label, split), images made with
    `_photo` unless `bad` gives a maker for that path."""
    bad = bad or {}
    for k, (rel, _, _) in enumerate(rows):
        path = str(tmp_path / "data" / rel)
        bad[rel](path) if rel in bad else _photo(path, seed=k)
    csv_path = _write(str(tmp_path / "data" / "list.csv"),
                      "".join(f"{rel},{label},{split}\n" for rel, label, split in rows))
    return _data_config(tmp_path, "csv", csv_path)


def _assert_aligned(image_set):
    """Images, sizes, labels and paths of every row describe the same file."""
    want_images, want_sizes = _pil_rows(image_set.paths)
    for i, want in enumerate(want_images):
        np.testing.assert_array_equal(_pixels(image_set.images, i), want)
    np.testing.assert_array_equal(image_set.sizes, want_sizes)
    assert [image_set.class_names[c] for c in image_set.labels] == [
        os.path.basename(os.path.dirname(p)) for p in image_set.paths]
    assert len(image_set.images) == len(image_set) == len(image_set.paths)


# --- the list -------------------------------------------------------------------------------

def test_missing_root_or_list_file(tmp_path):
    config = _data_config(tmp_path, "sop", "")
    with pytest.raises(DataError, match=r"needs its folder: set --config.data.root="):
        sources.load_dataset(config)
    root = _sop(tmp_path / "sop")
    os.remove(root / "Ebay_test.txt")
    with pytest.raises(DataError, match=r"not found: .*Ebay_test.txt does not exist; set "
                                        r"--config.data.root="):
        sources.load_dataset(_data_config(tmp_path, "sop", root))
    with pytest.raises(DataError, match=r"CSV list data set not found: .*nope.csv"):
        sources.load_dataset(_data_config(tmp_path, "csv", tmp_path / "nope.csv"))


def test_malformed_list_line_names_file_and_line(tmp_path):
    root = _sop(tmp_path / "sop")
    _write(str(root / "Ebay_train.txt"), "header\n1 1 1 a/1.jpg\n2 1 a/2.jpg\n")
    with pytest.raises(DataError, match=r"Ebay_train.txt:3: expected 'image_id class_id "
                                        r"super_class_id path', got '2 1 a/2.jpg'") as e:
        sources.load_dataset(_data_config(tmp_path, "sop", root))
    assert "\n" not in str(e.value)


def test_image_listed_but_missing(tmp_path):
    root = _sop(tmp_path / "sop")
    os.remove(root / "c" / "2.jpg")
    with pytest.raises(DataError, match=r"Ebay_test.txt:4: image listed but missing: "
                                        r".*c/2.jpg; paths are relative to"):
        sources.load_dataset(_data_config(tmp_path, "sop", root))


# --- the pixels -----------------------------------------------------------------------------

def _bad_files_data_set(tmp_path, skip):
    rows = [("cat/0.jpg", "cat", "train"), ("cat/1.jpg", "cat", "train"),
            ("dog/0.jpg", "dog", "train"), ("dog/1.jpg", "dog", "train"),
            ("eel/0.jpg", "eel", "train"),
            ("fox/0.jpg", "fox", "test"), ("fox/1.jpg", "fox", "test"),
            ("gnu/0.jpg", "gnu", "test")]
    config = _csv_data_set(tmp_path, rows, bad={"cat/0.jpg": _corrupt,
                                                "cat/1.jpg": lambda p: _truncated(p, 1),
                                                "fox/1.jpg": lambda p: _truncated(p, 2)})
    config.skip_bad_images = skip
    return config


def test_truncated_jpeg_is_undecodable(tmp_path):
    path = _truncated(str(tmp_path / "t.jpg"), 0)
    with Image.open(path) as im:  # PIL opens it without complaint: the header is intact
        assert im.size == (64, 48)
    with pytest.raises(DataError, match=r"cannot decode image .*t.jpg: OSError: image file is "
                                        r"truncated"):
        cache.read_checked(path)
    # Even when another library has told PIL to pad truncated files.
    from PIL import ImageFile
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(DataError, match="truncated"):
            cache.read_checked(path)
        assert ImageFile.LOAD_TRUNCATED_IMAGES  # restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_corrupt_and_truncated_jpeg_are_an_error_naming_them(tmp_path):
    config = _bad_files_data_set(tmp_path, skip=False)
    with pytest.raises(DataError) as e:
        sources.load_dataset(config)
    message = str(e.value)
    assert message.startswith("2 image(s) of 'csv-train' cannot be decoded: cannot decode image ")
    assert "cat/0.jpg" in message and "cat/1.jpg: OSError: image file is truncated" in message
    assert message.endswith("set --config.data.skip_bad_images=True to skip undecodable images")
    assert "\n" not in message


def test_skip_bad_images_drops_and_counts_them(tmp_path, caplog):
    config = _bad_files_data_set(tmp_path, skip=True)
    sets = sources.load_dataset(config)
    (line,) = _warnings(caplog)
    data = str(tmp_path / "data")
    assert line == (f"skipped 3 undecodable image(s) (data.skip_bad_images=True): train 2, "
                    f"test 1; {data}/cat/0.jpg, {data}/cat/1.jpg, {data}/fox/1.jpg")
    train, test = sets["train"], sets["test"]
    # cat lost both its images: the class is gone and the labels are contiguous again.
    assert train.class_names == ["dog", "eel"] and train.labels.tolist() == [0, 0, 1]
    assert [os.path.relpath(p, data) for p in train.paths] == ["dog/0.jpg", "dog/1.jpg",
                                                               "eel/0.jpg"]
    assert test.class_names == ["fox", "gnu"] and test.labels.tolist() == [0, 1]
    for s in (train, test):
        _assert_aligned(s)
        assert s.labels.dtype == np.int32
    # Selecting rows as the loader does gives the kept images.
    chosen = train.images.select(np.array([2, 0]))
    for i, want in enumerate(_pil_rows([train.paths[2], train.paths[0]])[0]):
        np.testing.assert_array_equal(_pixels(chosen, i), want)

    # The completed cache is reused as it is, and a strict run on it still names the files.
    caplog.clear()
    assert sources.load_dataset(config)["train"].paths == train.paths
    assert len(_warnings(caplog)) == 1
    config.skip_bad_images = False
    with pytest.raises(DataError, match=r"^2 image\(s\) of 'csv-train' cannot be decoded: "
                                        r"cannot decode image .*cat/0.jpg.*; the cache .* was "
                                        r"completed without them. .*skip_bad_images=True"):
        sources.load_dataset(config)


def test_skip_keeps_query_and_gallery_labels_comparable(tmp_path):
    rows = [("cat/0.jpg", "cat", "train"), ("cat/1.jpg", "cat", "train"),
            ("eel/q.jpg", "eel", "query"), ("fox/q.jpg", "fox", "query"),
            ("eel/g.jpg", "eel", "gallery"), ("fox/g.jpg", "fox", "gallery"),
            ("gnu/g.jpg", "gnu", "gallery")]
    config = _csv_data_set(tmp_path, rows, bad={"eel/q.jpg": _corrupt, "gnu/g.jpg": _corrupt})
    config.skip_bad_images = True
    sets = sources.load_dataset(config)
    # eel keeps its gallery image, so it stays in the shared space; gnu had only the bad one.
    assert sets["query"].class_names == sets["gallery"].class_names == ["eel", "fox"]
    assert sets["query"].labels.tolist() == [1] and sets["gallery"].labels.tolist() == [0, 1]
    for split in ("query", "gallery"):
        _assert_aligned(sets[split])
    assert sets["train"].paths[0].endswith("cat/0.jpg")


@pytest.mark.parametrize("mode, ext", [("L", "png"), ("CMYK", "jpg"), ("RGBA", "png"),
                                       ("LA", "png"), ("P", "png")])
def test_grayscale_cmyk_alpha_images_become_rgb_as_pil_converts_them(tmp_path, mode, ext):
    rows = [(f"cat/{k}.{ext}", "cat", "train") for k in range(2)] + [
        (f"dog/{k}.{ext}", "dog", "test") for k in range(2)]
    for k, (rel, _, _) in enumerate(rows):
        _photo(str(tmp_path / "data" / rel), seed=k, mode=mode)
    csv_path = _write(str(tmp_path / "data" / "list.csv"),
                      "".join(f"{r},{c},{s}\n" for r, c, s in rows))
    sets = sources.load_dataset(_data_config(tmp_path, "csv", csv_path))
    for s in sets.values():
        with Image.open(s.paths[0]) as im:
            assert im.mode == mode
        _assert_aligned(s)  # equal to PIL's convert("RGB") of each file


def test_solid_colours_convert_exactly(tmp_path):
    """Values, not only equality with PIL: grey replicated, alpha dropped (not composited on
    black or white, as torchvision's loader does), CMYK as PIL inverts it."""
    folder = tmp_path / "pets"
    _save(Image.new("L", (20, 10), 77), str(folder / "a" / "gray.png"))
    _save(Image.new("RGBA", (20, 10), (10, 200, 30, 0)), str(folder / "a" / "clear.png"))
    _save(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), str(folder / "b" / "cmyk.jpg"))
    _image(str(folder / "b" / "red.png"))
    sets = sources.load_dataset(_data_config(tmp_path, "folder", folder))
    pixel = {os.path.basename(p): _pixels(s.images, i)[5, 10].tolist()
             for s in sets.values() for i, p in enumerate(s.paths)}
    assert pixel["gray.png"] == [77, 77, 77]
    assert pixel["clear.png"] == [10, 200, 30]
    red = pixel["cmyk.jpg"]  # JPEG rounding: near (255, 0, 0)
    assert red[0] > 245 and red[1] < 10 and red[2] < 10


# --- the classes and splits -----------------------------------------------------------------

def test_class_with_one_image_is_kept(tmp_path):
    rows = [("cat/0.jpg", "cat", "train"), ("cat/1.jpg", "cat", "train"),
            ("dog/0.jpg", "dog", "train"),
            ("eel/0.jpg", "eel", "test"), ("fox/0.jpg", "fox", "test")]
    train = sources.load_dataset(_csv_data_set(tmp_path, rows))["train"]
    assert train.class_names == ["cat", "dog"] and train.labels.tolist() == [0, 0, 1]
    # The sampler's rule sets it aside later, per cluster; loading must not.
    assert remove_singletons(train.labels, np.zeros(3, np.int32)).tolist() == [0, 0, -1]


def test_empty_split_is_one_line_naming_split_and_key(tmp_path):
    root = _sop(tmp_path / "sop")
    _write(str(root / "Ebay_test.txt"), "image_id class_id super_class_id path\n")
    with pytest.raises(DataError) as e:
        sources.load_dataset(_data_config(tmp_path, "sop", root))
    assert str(e.value) == (f"the 'test' split of data set 'sop' (--config.data.root={root}) "
                            "is empty: no image listed for it")
    # Every image of a split undecodable: empty once they are skipped.
    rows = [("cat/0.jpg", "cat", "train"), ("cat/1.jpg", "cat", "train"),
            ("dog/0.jpg", "dog", "test"), ("dog/1.jpg", "dog", "test")]
    config = _csv_data_set(tmp_path / "b", rows, bad={"dog/0.jpg": _corrupt,
                                                      "dog/1.jpg": _corrupt})
    config.skip_bad_images = True
    with pytest.raises(DataError, match=r"^the 'test' split of data set 'csv' "
                                        r"\(--config.data.root=.*list.csv\) is empty: all 2 of "
                                        r"its images are undecodable") as e:
        sources.load_dataset(config)
    assert "\n" not in str(e.value)
    # A CSV whose split column leaves out the evaluated classes.
    _write(config.root, "cat/0.jpg,cat,train\ncat/1.jpg,cat,train\n")
    with pytest.raises(DataError, match=r"list.csv: the split column gives \['train'\]; it "
                                        r"needs train and test"):
        sources.load_dataset(config)


def test_cache_of_another_data_set_is_not_reused(tmp_path):
    """Same cache_dir, same name ('folder-train'), another data set: another key, new pixels."""
    def folder(name, colour):
        for cls in ("a", "b"):
            for k in range(2):
                _save(Image.new("RGB", (12, 9), colour), str(tmp_path / name / cls / f"{k}.png"))
        return tmp_path / name

    first = sources.load_dataset(_data_config(tmp_path, "folder", folder("red", (250, 0, 0))))
    second = sources.load_dataset(_data_config(tmp_path, "folder", folder("blue", (0, 0, 250))))
    assert _pixels(first["train"].images, 0)[4, 4].tolist() == [250, 0, 0]
    assert _pixels(second["train"].images, 0)[4, 4].tolist() == [0, 0, 250]
    # The same paths holding other images (a data set replaced in place): another key too.
    for path in second["train"].paths + second["test"].paths:
        Image.new("RGB", (16, 12), (0, 250, 0)).save(path)
        os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))  # a later, distinct mtime
    third = sources.load_dataset(_data_config(tmp_path, "folder", tmp_path / "blue"))
    assert _pixels(third["train"].images, 0)[4, 4].tolist() == [0, 250, 0]
    assert third["train"].sizes.tolist() == [[12, 16]] * 2
    # data.image_size (the glyphs' side) does not touch image files: the same cache serves.
    config = _data_config(tmp_path, "folder", tmp_path / "blue")
    config.image_size = 5
    assert sources.load_dataset(config)["train"].sizes.tolist() == [[12, 16]] * 2
    names = sorted(f for f in os.listdir(tmp_path / "cache") if f.endswith("-sizes.npy"))
    assert len(names) == 6 and all(n.startswith("folder-") for n in names)


# --- the cache under skip_bad ---------------------------------------------------------------

def test_skip_retries_transient_failures_and_resumes_a_failed_build(tmp_path, monkeypatch):
    files = [_photo(str(tmp_path / f"{k}.jpg"), seed=k) for k in range(5)]
    _corrupt(files[1])
    real_decode_row, decoded, flaky = cache._decode_row, [], {3}

    def decode_row(job):  # row 3 fails once, as on a network filesystem hiccup
        decoded.append(job[0])
        if job[0] in flaky:
            flaky.discard(job[0])
            return job[0], None, f"cannot decode image {job[1]}: OSError: hiccup"
        return real_decode_row(job)

    monkeypatch.setattr(cache, "_decode_row", decode_row)
    images, sizes = cache.cached_images(files, str(tmp_path / "a"), "set", workers=1,
                                        progress=False, skip_bad=True)
    assert sorted(decoded) == [0, 1, 1, 2, 3, 3, 4]  # 1 and 3 retried once, in this process
    assert cache.bad_rows(sizes).tolist() == [1]
    assert not np.asarray(images.encoded(1)).any() and sizes[1].tolist() == [0, 0]
    for i, want in zip([0, 2, 3, 4], _pil_rows(files[:1] + files[2:])[0]):
        np.testing.assert_array_equal(_pixels(images, i), want)

    # A skip build after a failed strict one decodes only the rows the strict one could not.
    folder = str(tmp_path / "b")
    with pytest.raises(DataError, match=r"1 image\(s\) of 'set' cannot be decoded: .*1.jpg"):
        cache.cached_images(files, folder, "set", workers=1, progress=False)
    decoded.clear()
    cache.cached_images(files, folder, "set", workers=1, progress=False, skip_bad=True)
    assert decoded == [1, 1]
