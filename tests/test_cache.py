"""The decode-once cache: content, reuse, resume after an interruption, keys, bad files."""
import os

import numpy as np
import pytest
from PIL import Image

from dnc_jax.data import cache
from dnc_jax.data.errors import DataError

SIDE = 24
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


def expected_rows(files, side=SIDE):
    """What the cache must hold: PIL's own decode, RGB, LANCZOS resize of the whole image."""
    images, sizes = [], []
    for path in files:
        with Image.open(path) as im:
            im = im.convert("RGB")
            images.append(np.asarray(im.resize((side, side), Image.LANCZOS)))
            sizes.append((im.height, im.width))
    return np.stack(images), np.asarray(sizes, np.int32)


def test_parallel_build_equals_direct_decode_and_is_reused(tmp_path, monkeypatch):
    files = write_images(tmp_path)
    images, sizes = cache.decode_cached(files, SIDE, str(tmp_path / "c"), "set", workers=2,
                                        progress=False)
    want_images, want_sizes = expected_rows(files)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(sizes, want_sizes)
    assert sizes.dtype == np.int32 and images.dtype == np.uint8
    assert isinstance(images, np.memmap) and not images.flags.writeable
    with pytest.raises(ValueError):
        images[0, 0, 0, 0] = 1
    paths = cache.cache_paths(files, SIDE, str(tmp_path / "c"), "set")
    assert sorted(os.listdir(tmp_path / "c")) == sorted(  # no partial or done files left
        [os.path.basename(paths.images), os.path.basename(paths.sizes)])

    monkeypatch.setattr(cache, "_build", lambda *a, **k: pytest.fail("rebuilt a complete cache"))
    again, _ = cache.decode_cached(files, SIDE, str(tmp_path / "c"), "set", progress=False)
    np.testing.assert_array_equal(again, want_images)


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
        cache.decode_cached(files, SIDE, folder, "set", workers=1, progress=False)
    paths = cache.cache_paths(files, SIDE, folder, "set")
    assert not os.path.exists(paths.images) and not os.path.exists(paths.sizes)
    done = np.load(paths.done)
    assert done.sum() == (4 if hard_kill else 5)  # periodic checkpoints every 2 rows
    assert set(np.flatnonzero(done)) <= set(first)

    killed.clear()
    second = count_decodes(monkeypatch)
    images, sizes = cache.decode_cached(files, SIDE, folder, "set", workers=1, progress=False)
    assert sorted(second) == sorted(set(range(len(files))) - set(np.flatnonzero(done)))
    want_images, want_sizes = expected_rows(files)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(sizes, want_sizes)
    assert not os.path.exists(paths.done) and not os.path.exists(paths.images_partial)


def test_finalisation_cut_between_renames_recovers(tmp_path, monkeypatch):
    files = write_images(tmp_path, count=3)
    folder = str(tmp_path / "c")
    want, _ = cache.decode_cached(files, SIDE, folder, "set", workers=1, progress=False)
    want = np.array(want)
    paths = cache.cache_paths(files, SIDE, folder, "set")
    os.replace(paths.images, paths.images_partial)  # as if killed after renaming the sizes
    np.save(paths.done, np.ones(len(files), bool))
    decoded = count_decodes(monkeypatch)
    images, _ = cache.decode_cached(files, SIDE, folder, "set", workers=1, progress=False)
    assert decoded == []
    np.testing.assert_array_equal(images, want)


def test_changed_file_gets_a_new_key(tmp_path):
    files = write_images(tmp_path, count=3)
    key = cache.cache_key(files, SIDE)
    assert cache.cache_key(files, SIDE) == key
    assert cache.cache_key(files, SIDE + 1) != key
    assert cache.cache_key(files[::-1], SIDE) != key
    stat = os.stat(files[1])
    os.utime(files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = cache.cache_key(files, SIDE)
    assert touched != key
    with open(files[2], "ab") as f:  # same mtime, different size
        f.write(b"\0")
    os.utime(files[2], ns=(stat.st_atime_ns, os.stat(files[2]).st_mtime_ns))
    assert cache.cache_key(files, SIDE) != touched


def test_undecodable_file_raises_naming_it_and_keeps_the_other_rows(tmp_path):
    files = write_images(tmp_path, count=4)
    bad = str(tmp_path / "broken.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not a JPEG")
    files.insert(2, bad)
    folder = str(tmp_path / "c")
    with pytest.raises(DataError, match="broken.jpg"):
        cache.decode_cached(files, SIDE, folder, "set", workers=1, progress=False)
    paths = cache.cache_paths(files, SIDE, folder, "set")
    assert not os.path.exists(paths.images)
    np.testing.assert_array_equal(np.load(paths.done), [True, True, False, True, True])
    with pytest.raises(DataError, match="missing.*nowhere.png"):
        cache.decode_cached(files + [str(tmp_path / "nowhere.png")], SIDE, folder, "set",
                            workers=1, progress=False)
