"""The image cache: content (the files' own bytes and sizes), reuse, resume after an
interruption, keys, bad files."""
import os

import numpy as np
import pytest
from PIL import Image

from dnc_jax.data.store import cache
from dnc_jax.errors import DataError

REAL_DECODE_ROW = cache._decode_row


def write_images(folder, count=7):
    """Small files of every kind the PIL loader must turn into RGB: JPEG, grayscale PNG,
    palette GIF, RGBA PNG, CMYK JPEG."""
    rng = np.random.default_rng(0)
    files = []
    for k in range(count):
        h, w = 20 + 3 * k, 30 + 5 * (k % 3)
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        kind = ("RGB", "L", "P", "RGBA", "CMYK")[k % 5]
        ext = {"RGB": "jpg", "L": "png", "P": "gif", "RGBA": "png", "CMYK": "jpg"}[kind]
        path = str(folder / f"img{k}.{ext}")
        image.convert(kind).save(path)
        files.append(path)
    return files


def expected(files):
    """What the cache must hold: each file's bytes, unchanged, and PIL's RGB (height, width)."""
    data, sizes = [], []
    for path in files:
        with open(path, "rb") as f:
            data.append(f.read())
        with Image.open(path) as im:
            im = im.convert("RGB")
            sizes.append((im.height, im.width))
    return data, np.asarray(sizes, np.int32)


def assert_holds(images, sizes, files):
    want_data, want_sizes = expected(files)
    assert len(images) == len(files)
    assert [bytes(images.encoded(i)) for i in range(len(files))] == want_data
    np.testing.assert_array_equal(sizes, want_sizes)
    for i, path in enumerate(files):  # decoding the stored bytes is decoding the file
        with Image.open(path) as im:
            np.testing.assert_array_equal(np.asarray(images.decode(i)),
                                          np.asarray(im.convert("RGB")))


def test_parallel_build_equals_direct_decode_and_is_reused(tmp_path, monkeypatch):
    files = write_images(tmp_path)
    images, sizes = cache.cached_images(files, str(tmp_path / "c"), "set", workers=2,
                                        progress=False)
    assert_holds(images, sizes, files)
    assert sizes.dtype == np.int32
    paths = cache.cache_paths(files, str(tmp_path / "c"), "set")
    assert sorted(os.listdir(tmp_path / "c")) == sorted(  # no partial or done files left
        os.path.basename(p) for p in (paths.images, paths.offsets, paths.sizes))
    assert os.path.getsize(paths.images) - 128 == sum(os.path.getsize(f) for f in files)

    monkeypatch.setattr(cache, "_build", lambda *a, **k: pytest.fail("rebuilt a complete cache"))
    again, _ = cache.cached_images(files, str(tmp_path / "c"), "set", progress=False)
    assert_holds(again, sizes, files)
    subset = again.select([4, 0])
    assert bytes(subset.encoded(0)) == bytes(again.encoded(4)) and len(subset) == 2


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt / SIGTERM arriving mid-build."""


def count_decodes(monkeypatch, fail_after=None, on_fail=None):
    """Record the rows decoded in-process (workers=1); raise Interrupted at call `fail_after`."""
    decoded = []

    def decode_row(job):
        if fail_after is not None and len(decoded) == fail_after:
            if on_fail:
                on_fail()
            raise Interrupted()
        decoded.append(job[0])
        return REAL_DECODE_ROW(job)

    monkeypatch.setattr(cache, "_decode_row", decode_row)
    return decoded


@pytest.mark.parametrize("hard_kill", [False, True])
def test_resume_decodes_only_missing_rows(tmp_path, monkeypatch, hard_kill):
    """An interrupted build keeps its checkpointed rows and a restart decodes only the others.
    hard_kill: no final checkpoint runs (SIGKILL), so only the periodic ones count."""
    files = write_images(tmp_path, count=9)
    folder = str(tmp_path / "c")
    monkeypatch.setattr(cache, "CHECKPOINT_EVERY", 2)
    real_checkpoint = cache._checkpoint
    killed = []
    monkeypatch.setattr(cache, "_checkpoint",
                        lambda *a: None if killed else real_checkpoint(*a))
    first = count_decodes(monkeypatch, fail_after=5,
                          on_fail=(lambda: killed.append(True)) if hard_kill else None)
    with pytest.raises(Interrupted):
        cache.cached_images(files, folder, "set", workers=1, progress=False)
    paths = cache.cache_paths(files, folder, "set")
    assert not os.path.exists(paths.images) and not os.path.exists(paths.sizes)
    done = np.load(paths.done)
    assert done.sum() == (4 if hard_kill else 5)  # periodic checkpoints every 2 rows
    assert set(np.flatnonzero(done)) <= set(first)

    killed.clear()
    second = count_decodes(monkeypatch)
    images, sizes = cache.cached_images(files, folder, "set", workers=1, progress=False)
    assert sorted(second) == sorted(set(range(len(files))) - set(np.flatnonzero(done)))
    assert_holds(images, sizes, files)
    assert not os.path.exists(paths.done) and not os.path.exists(paths.images_partial)


def test_finalisation_cut_between_renames_recovers(tmp_path, monkeypatch):
    files = write_images(tmp_path, count=3)
    folder = str(tmp_path / "c")
    cache.cached_images(files, folder, "set", workers=1, progress=False)
    paths = cache.cache_paths(files, folder, "set")
    os.replace(paths.images, paths.images_partial)  # as if killed after renaming the sizes
    np.save(paths.done, np.ones(len(files), bool))
    decoded = count_decodes(monkeypatch)
    images, sizes = cache.cached_images(files, folder, "set", workers=1, progress=False)
    assert decoded == []
    assert_holds(images, sizes, files)


def test_changed_file_gets_a_new_key(tmp_path):
    files = write_images(tmp_path, count=3)
    key = cache.cache_key(files)
    assert cache.cache_key(files) == key
    assert cache.cache_key(files[::-1]) != key
    stat = os.stat(files[1])
    os.utime(files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = cache.cache_key(files)
    assert touched != key
    with open(files[2], "ab") as f:  # same mtime, different size
        f.write(b"\0")
    os.utime(files[2], ns=(stat.st_atime_ns, os.stat(files[2]).st_mtime_ns))
    assert cache.cache_key(files) != touched


def test_undecodable_file_raises_naming_it_and_keeps_the_other_rows(tmp_path):
    files = write_images(tmp_path, count=4)
    bad = str(tmp_path / "broken.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not a JPEG")
    files.insert(2, bad)
    folder = str(tmp_path / "c")
    with pytest.raises(DataError, match="broken.jpg"):
        cache.cached_images(files, folder, "set", workers=1, progress=False)
    paths = cache.cache_paths(files, folder, "set")
    assert not os.path.exists(paths.images)
    np.testing.assert_array_equal(np.load(paths.done), [True, True, False, True, True])
    with pytest.raises(DataError, match="missing.*nowhere.png"):
        cache.cached_images(files + [str(tmp_path / "nowhere.png")], folder, "set",
                            workers=1, progress=False)
