"""The glyphs data set: content, determinism, the cache and its failure modes."""
import hashlib
import json
import os

import numpy as np
import pytest

from dnc_jax.data.sources import glyph_classes, glyph_fonts, glyphs

SMALL = dict(image_size=24, max_classes=20, progress=False)


def _entry(cache_dir):
    (name,) = [n for n in os.listdir(cache_dir) if not n.startswith(".")]
    return os.path.join(cache_dir, name)


def _arrays(ds):
    return {f"{split}_{k}": getattr(s, k) for split, s in ds.items() for k in ("images", "labels")}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The default data set, generated once (a few seconds)."""
    cache = tmp_path_factory.mktemp("glyphs_full")
    return glyphs.load_glyphs(cache_dir=str(cache), progress=False), str(cache)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cache = tmp_path_factory.mktemp("glyphs_small")
    return glyphs.load_glyphs(cache_dir=str(cache), **SMALL), str(cache)


def test_shapes_dtypes_labels_and_split(small):
    ds, _ = small
    assert set(ds) == {"train", "test"}
    for s in ds.values():
        n = len(s.labels)
        assert s.images.shape == (n, 24, 24, 3) and s.images.dtype == np.uint8
        assert s.labels.dtype == np.int32
        # Contiguous labels, every class present, names one per class.
        assert np.array_equal(np.unique(s.labels), np.arange(len(s.class_names)))
        assert len(set(s.class_names)) == len(s.class_names)
        # Gray: three identical channels.
        assert (s.images == s.images[..., :1]).all()
        # min_faces=12 faces, one instance each.
        assert np.bincount(s.labels).min() >= 12
    assert len(ds["train"].class_names) == len(ds["test"].class_names) == 10
    assert not set(ds["train"].class_names) & set(ds["test"].class_names)


def test_default_set(full):
    ds, cache = full
    names = ds["train"].class_names + ds["test"].class_names
    assert 200 <= len(names) <= 400
    assert not set(ds["train"].class_names) & set(ds["test"].class_names)
    for s in ds.values():
        assert s.images.shape[1:] == (32, 32, 3)
        assert np.bincount(s.labels).min() >= 12
    # Homoglyphs: the first of a group stays (Latin before Greek before Cyrillic), its twins go;
    # look-alikes that are not the same glyph (O/0, Θ/0, p/ρ) stay.
    for kept in "AaOo0pXx\u0393\u03a0\u03a9\u03bc\u03c1\u0398\u0416\u0436":
        assert kept in names, kept
    # Greek Alpha, Omicron, omicron; Cyrillic A, O, o, a, Ghe (= Gamma), Pe (= Pi), Dze (= S);
    # the micro sign (= mu).
    for dropped in "\u0391\u039f\u03bf\u0410\u041e\u043e\u0430\u0413\u041f\u0405\u00b5":
        assert dropped not in names, dropped
    # meta.json names a face for every image.
    with open(os.path.join(_entry(cache), "meta.json"), encoding="utf-8") as fh:
        meta = json.load(fh)
    for split, s in ds.items():
        faces = meta["splits"][split]["face_index"]
        assert len(faces) == len(s.labels) and 0 <= min(faces) and max(faces) < len(meta["faces"])


def test_images_have_a_glyph_inside_the_frame(full):
    ds, _ = full
    for s in ds.values():
        gray = s.images[..., 0].astype(np.float32) / 255
        ink = gray.sum(axis=(1, 2))
        assert gray.max(axis=(1, 2)).min() > 0.5  # a stroke reaches full ink
        assert ink.min() > 8.0  # the smallest glyphs ('.', '-') still cover a few pixels
        assert ink.max() < 0.7 * 32 * 32  # white on black, never a filled frame
        # Fitted to ~70%: the outermost ring of pixels stays (nearly) background.
        ring = np.concatenate([gray[:, 0], gray[:, -1], gray[:, :, 0], gray[:, :, -1]], axis=1)
        assert ring.max() < 0.25


def test_different_classes_differ(full):
    ds, _ = full
    # No image occurs twice, within or across classes.
    seen = {}
    for split, s in ds.items():
        for i, image in enumerate(s.images):
            key = hashlib.sha1(image.tobytes()).hexdigest()
            assert key not in seen, (split, i, seen.get(key))
            seen[key] = (split, i)
    # Class means (over faces and jitter) are distinct: no two classes are the same picture.
    s = ds["train"]
    means = np.stack([s.images[s.labels == c, :, :, 0].mean(0).ravel()
                      for c in range(len(s.class_names))]) / 255
    sq = (means ** 2).sum(1)
    dist = (sq[:, None] + sq[None] - 2 * means @ means.T) / (sq[:, None] + sq[None])
    np.fill_diagonal(dist, np.inf)
    assert dist.min() > 0.005


def test_deterministic(tmp_path):
    a = glyphs.load_glyphs(cache_dir=str(tmp_path / "a"), **SMALL)
    # Recompute the class list too, so nothing is shared with the first generation.
    glyph_fonts._CLASS_LISTS.clear()
    b = glyphs.load_glyphs(cache_dir=str(tmp_path / "b"), **SMALL)
    for split in ("train", "test"):
        assert a[split].class_names == b[split].class_names
    for key, array in _arrays(a).items():
        assert np.array_equal(array, _arrays(b)[key]), key


def test_other_seed_other_split_and_jitter(full, tmp_path):
    a, _ = full
    b = glyphs.load_glyphs(cache_dir=str(tmp_path), seed=1, progress=False)
    assert a["train"].class_names != b["train"].class_names
    assert sorted(a["train"].class_names + a["test"].class_names) == sorted(
        b["train"].class_names + b["test"].class_names)
    # The same class, from the same faces, is jittered differently.
    ch = a["train"].class_names[0]
    split = "train" if ch in b["train"].class_names else "test"
    img_a = a["train"].images[a["train"].labels == 0]
    img_b = b[split].images[b[split].labels == b[split].class_names.index(ch)]
    assert img_a.shape == img_b.shape
    assert all(not np.array_equal(x, y) for x, y in zip(img_a, img_b))


def test_max_classes_is_a_prefix_with_the_same_images(tmp_path):
    few = glyphs.load_glyphs(cache_dir=str(tmp_path), image_size=24, max_classes=6,
                             progress=False)
    more = glyphs.load_glyphs(cache_dir=str(tmp_path), **SMALL)
    more_names = more["train"].class_names + more["test"].class_names
    few_names = few["train"].class_names + few["test"].class_names
    assert set(few_names) <= set(more_names[:6]) and len(few_names) == 6
    ch = few["test"].class_names[0]
    split = "train" if ch in more["train"].class_names else "test"
    img_few = few["test"].images[few["test"].labels == 0]
    img_more = more[split].images[more[split].labels == more[split].class_names.index(ch)]
    assert np.array_equal(img_few, img_more)


def test_cache_is_reused(small, monkeypatch):
    ds, cache = small
    stamp = {n: os.stat(os.path.join(_entry(cache), n)).st_mtime_ns
             for n in os.listdir(_entry(cache))}

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although the cache holds this data set")

    monkeypatch.setattr(glyphs, "_generate", fail)
    again = glyphs.load_glyphs(cache_dir=cache, **SMALL)
    for key, array in _arrays(ds).items():
        assert np.array_equal(array, _arrays(again)[key]), key
    assert again["train"].class_names == ds["train"].class_names
    assert stamp == {n: os.stat(os.path.join(_entry(cache), n)).st_mtime_ns
                     for n in os.listdir(_entry(cache))}
    # One entry, no scratch folder left behind.
    assert os.listdir(cache) == [os.path.basename(_entry(cache))]


def test_other_parameters_get_their_own_entry(tmp_path):
    glyphs.load_glyphs(cache_dir=str(tmp_path), **SMALL)
    glyphs.load_glyphs(cache_dir=str(tmp_path), **dict(SMALL, instances_per_face=2))
    assert len(os.listdir(tmp_path)) == 2


@pytest.mark.parametrize("victim", ["train_images.npy", "test_labels.npy", "meta.json"])
def test_truncated_cache_file_is_an_error_naming_it(tmp_path, victim):
    glyphs.load_glyphs(cache_dir=str(tmp_path), **SMALL)
    path = os.path.join(_entry(str(tmp_path)), victim)
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    with pytest.raises(glyphs.GlyphCacheError, match=victim):
        glyphs.load_glyphs(cache_dir=str(tmp_path), **SMALL)


def test_missing_cache_file_is_an_error(tmp_path):
    glyphs.load_glyphs(cache_dir=str(tmp_path), **SMALL)
    os.remove(os.path.join(_entry(str(tmp_path)), "train_labels.npy"))
    with pytest.raises(glyphs.GlyphCacheError, match="train_labels.npy"):
        glyphs.load_glyphs(cache_dir=str(tmp_path), **SMALL)


def test_interrupted_generation_leaves_no_entry(tmp_path, monkeypatch):
    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(glyphs.np, "save", die)
    with pytest.raises(KeyboardInterrupt):
        glyphs.load_glyphs(cache_dir=str(tmp_path), **SMALL)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    ds = glyphs.load_glyphs(cache_dir=str(tmp_path), **SMALL)
    assert len(ds["train"].class_names) == 10


def test_face_coverage_uses_glyph_names_for_tex_encoded_fonts():
    font_dir = glyph_fonts.font_folder()
    faces = {f.file: f for f in glyph_fonts.FACES}
    cmr = glyph_fonts.face_code_points(faces["cmr10.ttf"], os.path.join(font_dir, "cmr10.ttf"),
                                       glyph_classes.LETTERS)
    # Slot 34 holds a closing double quote and slot 60 an inverted exclamation mark: not '"', '<'.
    assert '"' not in cmr and "<" not in cmr
    assert cmr["A"] == ord("A") and cmr["Γ"] == 161 and cmr["¡"] == 60
    # Cyrillic is absent from Computer Modern.
    assert "Ж" not in cmr
    tt = glyph_fonts.face_code_points(faces["cmtt10.ttf"], os.path.join(font_dir, "cmtt10.ttf"),
                                      glyph_classes.LETTERS)
    assert tt['"'] == 34 and tt["<"] == 60


def test_bad_arguments():
    with pytest.raises(ValueError):
        glyphs.load_glyphs(image_size=4)
    with pytest.raises(ValueError):
        glyphs.load_glyphs(max_classes=1)
    with pytest.raises(ValueError):
        glyphs.load_glyphs(seed=-1)


def test_scripts_set_has_blocks_as_super_classes(tmp_path):
    ds = glyphs.load_glyphs(cache_dir=str(tmp_path), image_size=16, classes="scripts",
                            progress=False)
    names = ds["train"].class_names + ds["test"].class_names
    assert len(names) == len(set(names)) > 300
    blocks = [glyph_classes.super_class(ch) for ch in names]
    counts = {b: blocks.count(b) for b in set(blocks)}
    # Every block is present, none is empty or over its cap, and no character is outside them.
    assert set(counts) == {name for name, _ in glyph_classes.SCRIPT_BLOCKS}
    assert max(counts.values()) <= glyph_classes.SCRIPTS_PER_BLOCK and min(counts.values()) >= 20
    # Train and test classes are disjoint but both cover every block.
    train_blocks = {glyph_classes.super_class(ch) for ch in ds["train"].class_names}
    test_blocks = {glyph_classes.super_class(ch) for ch in ds["test"].class_names}
    assert train_blocks == test_blocks == set(counts)
    meta = json.load(open(os.path.join(_entry(str(tmp_path)), "meta.json"), encoding="utf-8"))
    assert meta["splits"]["train"]["super_classes"] == [
        glyph_classes.super_class(ch) for ch in ds["train"].class_names]
    # Every class is drawn by at least min_faces faces.
    assert np.bincount(ds["train"].labels).min() >= 12


def test_letters_cache_key_did_not_change_with_the_class_set_key():
    # Caches of the default set written before `classes` existed must still be found.
    args = (32, 0, 12, 1, None)
    assert "classes" not in glyphs._params(*args)
    assert glyphs._cache_key(glyphs._params(*args)) != glyphs._cache_key(
        glyphs._params(*args, classes="scripts"))
    with pytest.raises(ValueError, match="data.glyphs.classes"):
        glyphs.load_glyphs(classes="runes")
