"""Glyphs: a small offline data set for deep metric learning demos and tests.

A *class* is one character (Latin and Greek letters, digits, Cyrillic letters, some punctuation,
math symbols and arrows); an *instance* is that character rendered in one of the font faces that
ship with matplotlib (DejaVu Sans / Sans Mono / Serif, STIX General, Computer Modern), under a
small random affine jitter. So, as in the usual metric-learning benchmarks (CUB, Cars, SOP), the
classes are many, each has a handful of visually different instances, and train and test use
disjoint classes: the model must embed characters it never saw. It needs no download, and renders
in seconds, which makes it the data of the smoke tests and of the CPU demo.

Which faces may stand for a character is read from the fonts' own cmaps with fontTools, then
confirmed by rendering (an empty glyph does not count). Characters that look the same as an
earlier one in most faces (Latin "A", Greek "Α", Cyrillic "А") would be contradictory labels, so
only the first of such a group is kept. Each glyph is scaled to fill the image, so case pairs
such as "o"/"O" or "x"/"X" differ only in proportions and stroke weight: they stay apart, as
hard negatives.

Images are white glyphs on black, so a zero padding of later augmentations blends with the
background. The result is cached under a key that hashes every input of the generation, and
written atomically, so a cache is either complete or absent.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np

from dnc_jax.errors import ConfigError, DataError
from dnc_jax.data import glyph_classes
from dnc_jax.data.image_set import ImageSet

FORMAT_VERSION = 1

# Images are drawn on a canvas up to this many times larger, then box-filtered down: that is the
# antialiasing of the jitter's resampling. Large images need less of it (FreeType antialiases).
_MAX_SUPERSAMPLE = 4
# The larger of the glyph's width and height fills this fraction of the image (before jitter).
_FILL = 0.7
# Masters (unjittered, tightly cropped glyphs) are rendered at least at this font size. Coverage
# and homoglyphs are decided at this size and on canonical renders of _DEDUP_SIZE pixels,
# whatever image_size is, so that the class list does not depend on image_size.
_MASTER_FONT_PX = 128
_DEDUP_SIZE = 32
# Two glyphs are "the same" in a face when their canonical renders differ by less than this
# relative squared distance ||a-b||^2 / (||a||^2 + ||b||^2), and homoglyphs when that holds in
# more than half the faces that cover both. Measured on the default fonts: true homoglyphs (A/Α/А,
# Г/Γ, µ/μ) sit at <= 0.002 in most faces, the closest distinct pair (р/ρ) at 0.03, then
# Й/Ѝ, З/3, п/n, θ/0 and the case pairs (s/S, o/O: 0.08).
_DEDUP_DIST = 0.015
# A rendered master with less ink than this (in fully inked pixels at 128 px) is blank.
_MIN_INK_PX = 20.0

# Jitter ranges.
_ROT_DEG = 8.0
_SCALE = (0.85, 1.1)
_SHIFT = 0.08
_SHEAR = 0.1



class GlyphCacheError(DataError):
    """A cache entry exists but cannot be trusted (truncated, edited, other parameters)."""


@dataclasses.dataclass(frozen=True)
class _Face:
    name: str
    file: str
    # Computer Modern's ttf files keep TeX's own encoding behind a Unicode cmap (code point 161
    # is Gamma, 34 is a closing double quote); their glyph names are the reliable part.
    tex_encoded: bool = False


_FACES = (
    _Face("DejaVu Sans", "DejaVuSans.ttf"),
    _Face("DejaVu Sans Bold", "DejaVuSans-Bold.ttf"),
    _Face("DejaVu Sans Oblique", "DejaVuSans-Oblique.ttf"),
    _Face("DejaVu Sans Bold Oblique", "DejaVuSans-BoldOblique.ttf"),
    _Face("DejaVu Sans Mono", "DejaVuSansMono.ttf"),
    _Face("DejaVu Sans Mono Bold", "DejaVuSansMono-Bold.ttf"),
    _Face("DejaVu Sans Mono Oblique", "DejaVuSansMono-Oblique.ttf"),
    _Face("DejaVu Sans Mono Bold Oblique", "DejaVuSansMono-BoldOblique.ttf"),
    _Face("DejaVu Serif", "DejaVuSerif.ttf"),
    _Face("DejaVu Serif Bold", "DejaVuSerif-Bold.ttf"),
    _Face("DejaVu Serif Italic", "DejaVuSerif-Italic.ttf"),
    _Face("DejaVu Serif Bold Italic", "DejaVuSerif-BoldItalic.ttf"),
    _Face("STIX General", "STIXGeneral.ttf"),
    _Face("STIX General Bold", "STIXGeneralBol.ttf"),
    _Face("STIX General Italic", "STIXGeneralItalic.ttf"),
    _Face("STIX General Bold Italic", "STIXGeneralBolIta.ttf"),
    _Face("CM Roman", "cmr10.ttf", tex_encoded=True),
    _Face("CM Bold", "cmb10.ttf", tex_encoded=True),
    _Face("CM Sans", "cmss10.ttf", tex_encoded=True),
    _Face("CM Typewriter", "cmtt10.ttf", tex_encoded=True),
    _Face("CM Text Italic", "cmti10.ttf", tex_encoded=True),
    # Math italic: Latin and Greek letters; its punctuation slots hold other symbols, which the
    # glyph-name check below rejects. The symbol-only fonts (cmsy, cmex, STIXSiz*, STIXNonUni*,
    # LastResort, *Display) are left out on purpose.
    _Face("CM Math Italic", "cmmi10.ttf", tex_encoded=True),
)


# AGL names that fontTools maps to a compatibility twin (OHM SIGN, INCREMENT, MICRO SIGN) but that
# fonts use for the Greek letter.
_GLYPH_NAME_ALIASES = {"Omega": "Ω", "Delta": "Δ", "mu": "μ"}


def _font_dir() -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


def _glyph_chars(glyph_name: str) -> set[str]:
    """The characters a glyph name stands for (AGL names, uniXXXX); empty for other names."""
    from fontTools import agl

    chars = {agl.toUnicode(glyph_name)} - {""}
    if glyph_name in _GLYPH_NAME_ALIASES:
        chars.add(_GLYPH_NAME_ALIASES[glyph_name])
    return {c for c in chars if len(c) == 1}


def _code_points(face: _Face, path: str, candidates: tuple[str, ...]) -> dict[str, int]:
    """{character: code point to draw it with} for the candidates this face has a glyph for."""
    from fontTools.ttLib import TTFont

    cmap = TTFont(path, lazy=True).getBestCmap()
    found: dict[str, int] = {}
    if face.tex_encoded:
        by_char: dict[str, int] = {}
        for code, name in sorted(cmap.items()):
            for ch in _glyph_chars(name):
                by_char.setdefault(ch, code)
        return {ch: by_char[ch] for ch in candidates if ch in by_char}
    for ch in candidates:
        name = cmap.get(ord(ch))
        if name is None:
            continue
        # A Unicode cmap is trusted unless the glyph's name says it is another character.
        named = _glyph_chars(name)
        if not named or ch in named:
            found[ch] = ord(ch)
    return found


def _render_master(font, code_point: int):
    """The glyph as a tightly cropped 'L' image (ink 255 on 0), or None if it draws nothing."""
    from PIL import Image, ImageDraw

    text = chr(code_point)
    left, top, right, bottom = font.getbbox(text)
    pad = 2
    canvas = Image.new("L", (max(right - left, 1) + 2 * pad, max(bottom - top, 1) + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), text, font=font, fill=255)
    box = canvas.getbbox()
    if box is None:
        # E.g. Computer Modern's Omega, whose slot is U+00AD (soft hyphen): the renderer skips it.
        return None
    master = canvas.crop(box)
    ink = np.asarray(master, dtype=np.float64).sum() / 255.0
    if ink * (_MASTER_FONT_PX / font.size) ** 2 < _MIN_INK_PX:
        return None
    return master


def _supersample(size: int) -> int:
    return int(np.clip(-(-_MASTER_FONT_PX // size), 1, _MAX_SUPERSAMPLE))


def _place(master, size: int, rot_deg=0.0, scale=1.0, shear=0.0, shift=(0.0, 0.0)) -> np.ndarray:
    """Center `master` by its box, fit it to the image, jitter it; uint8 [size, size]."""
    from PIL import Image

    big = size * _supersample(size)
    w, h = master.size
    s = _FILL * big / max(w, h) * scale
    t = np.deg2rad(rot_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    a = rot @ np.array([[1.0, shear], [0.0, 1.0]]) * s
    # Keep the whole glyph inside the image, a pixel clear of its edge: the shift gives way where
    # the jittered box is large.
    corners = np.array([[-w, -h], [w, -h], [-w, h], [w, h]], dtype=np.float64) / 2
    extent = np.abs(corners @ a.T).max(axis=0)
    room = np.maximum(big / 2 - extent - big / size, 0)
    offset = np.clip(np.asarray(shift) * big, -room, room) + big / 2
    inv = np.linalg.inv(a)
    # PIL wants the output->input map: p = inv (q - offset) + center.
    center = np.array([w / 2, h / 2])
    c = center - inv @ offset
    coeffs = (inv[0, 0], inv[0, 1], c[0], inv[1, 0], inv[1, 1], c[1])
    out = master.transform((big, big), Image.AFFINE, coeffs, resample=Image.BICUBIC, fillcolor=0)
    return np.asarray(out.resize((size, size), Image.BOX), dtype=np.uint8)


def _jitter(rng: np.random.Generator) -> dict:
    return dict(
        rot_deg=rng.uniform(-_ROT_DEG, _ROT_DEG),
        scale=rng.uniform(*_SCALE),
        shear=rng.uniform(-_SHEAR, _SHEAR),
        shift=tuple(rng.uniform(-_SHIFT, _SHIFT, size=2)),
    )


def _homoglyph_filter(chars: list[str], canon: dict[tuple[int, str], np.ndarray]) -> list[str]:
    """Keeps each character unless it matches an earlier kept one in most faces they share."""
    faces = sorted({f for f, _ in canon})
    # Per face: the characters it covers as [0, 1] vectors, one matrix product per face.
    index = {ch: i for i, ch in enumerate(chars)}
    n = len(chars)
    same = np.zeros((n, n), dtype=np.int32)
    shared = np.zeros((n, n), dtype=np.int32)
    for f in faces:
        idx = [index[ch] for ch in chars if (f, ch) in canon]
        if not idx:
            continue
        x = np.stack([canon[(f, chars[i])].ravel() for i in idx]).astype(np.float64) / 255.0
        sq = (x * x).sum(1)
        dist = (sq[:, None] + sq[None, :] - 2 * x @ x.T) / (sq[:, None] + sq[None, :])
        ii = np.ix_(idx, idx)
        shared[ii] += 1
        same[ii] += dist < _DEDUP_DIST
    kept: list[int] = []
    for i in range(n):
        if not any(2 * same[i, j] > shared[i, j] for j in kept):
            kept.append(i)
    return [chars[i] for i in kept]


def _params(image_size, seed, min_faces, instances_per_face, max_classes,
            classes="letters") -> dict:
    params = dict(
        format_version=FORMAT_VERSION,
        image_size=int(image_size),
        seed=int(seed),
        min_faces=int(min_faces),
        instances_per_face=int(instances_per_face),
        max_classes=None if max_classes is None else int(max_classes),
    )
    if classes != "letters":  # so that the caches of 'letters' made before the key stay valid
        params["classes"] = classes
    return params


def _cache_key(params: dict) -> str:
    """Hashes the parameters with everything else the pixels depend on: the fonts' bytes and the
    renderer's version, so that a matplotlib or Pillow upgrade does not reuse stale images."""
    import PIL
    from PIL import features

    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    h.update(f"pillow={PIL.__version__};freetype={features.version('freetype2')}".encode())
    font_dir = _font_dir()
    for face in _FACES:
        with open(os.path.join(font_dir, face.file), "rb") as fh:
            h.update(face.file.encode() + hashlib.sha256(fh.read()).digest())
    return f"v{FORMAT_VERSION}-s{params['image_size']}-seed{params['seed']}-{h.hexdigest()[:16]}"


# (min_faces, class set) -> _class_list's answer: the slow half of a generation (every
# candidate in every face) is the same for all image sizes, seeds and max_classes, so a process
# computes it once.
_CLASS_LISTS: dict[tuple[int, str], tuple[tuple[str, dict[int, int]], ...]] = {}


def _class_list(min_faces: int, progress: bool,
                class_set: str = "letters") -> tuple[tuple[str, dict[int, int]], ...]:
    """The classes in candidate order, each with {face index: code point} of its faces."""
    key = (min_faces, class_set)
    if key not in _CLASS_LISTS:
        listed = _make_class_list(min_faces, progress, glyph_classes.candidates(class_set),
                                  glyph_classes.excluded_by(class_set))
        if class_set == "scripts":
            kept: dict[str, int] = {}
            capped = []
            for ch, faces in listed:
                block = glyph_classes.super_class(ch)
                if kept.get(block, 0) < glyph_classes.SCRIPTS_PER_BLOCK:
                    kept[block] = kept.get(block, 0) + 1
                    capped.append((ch, faces))
            listed = tuple(capped)
        _CLASS_LISTS[key] = listed
    return _CLASS_LISTS[key]


def _make_class_list(min_faces: int, progress: bool,
                     candidates: tuple[str, ...] = glyph_classes.LETTERS,
                     excluded: tuple[str, ...] = ()
                     ) -> tuple[tuple[str, dict[int, int]], ...]:
    """The covered candidates that survive the homoglyph filter, with their faces. `excluded`
    characters go through the filter first (whatever their coverage), and a candidate that
    looks like one of them is dropped: how 'pretrain' stays disjoint from the targets."""
    from PIL import ImageFont
    from tqdm import tqdm

    font_dir = _font_dir()
    excluded_set = set(excluded)
    candidates = tuple(ch for ch in candidates if ch not in excluded_set)
    everything = tuple(excluded) + candidates
    code_points = [
        _code_points(face, os.path.join(font_dir, face.file), everything) for face in _FACES
    ]
    fonts = [ImageFont.truetype(os.path.join(font_dir, face.file), _MASTER_FONT_PX)
             for face in _FACES]
    canon: dict[tuple[int, str], np.ndarray] = {}
    todo = [(f, ch) for f, cps in enumerate(code_points) for ch in cps]
    for f, ch in tqdm(todo, desc="glyphs: fonts", file=sys.stderr, disable=not progress,
                      leave=False):
        master = _render_master(fonts[f], code_points[f][ch])
        if master is not None:
            canon[(f, ch)] = _place(master, _DEDUP_SIZE)

    def faces(ch):
        return sum((f, ch) in canon for f in range(len(_FACES)))

    covered = [ch for ch in candidates if faces(ch) >= min_faces]
    references = [ch for ch in excluded if faces(ch) >= 1]
    kept = [ch for ch in _homoglyph_filter(references + covered, canon)
            if ch not in excluded_set]
    return tuple(
        (ch, {f: code_points[f][ch] for f in range(len(_FACES)) if (f, ch) in canon})
        for ch in kept
    )


def _generate(params: dict, progress: bool) -> tuple[dict[str, np.ndarray], dict]:
    from PIL import ImageFont
    from tqdm import tqdm

    size = params["image_size"]
    font_dir = _font_dir()
    class_set = params.get("classes", "letters")
    listed = dict(_class_list(params["min_faces"], progress, class_set))
    classes = list(listed)
    if len(classes) < 2:
        raise ValueError(f"only {len(classes)} characters are covered by min_faces="
                         f"{params['min_faces']} faces (of {len(_FACES)}); lower min_faces")
    font_px = max(_MASTER_FONT_PX, size * _supersample(size))
    fonts = [ImageFont.truetype(os.path.join(font_dir, face.file), font_px) for face in _FACES]
    order = np.random.default_rng(params["seed"]).permutation(len(classes))
    classes = [classes[i] for i in order]
    if params["max_classes"] is not None:
        classes = classes[: params["max_classes"]]
    n_test = len(classes) // 2
    splits = {"train": classes[: len(classes) - n_test], "test": classes[len(classes) - n_test:]}

    arrays: dict[str, np.ndarray] = {}
    meta = dict(params=params, faces=[face.name for face in _FACES], splits={})
    total = sum(len(cs) for cs in splits.values())
    bar = tqdm(total=total, desc="glyphs: images", unit="class", file=sys.stderr,
               disable=not progress, leave=False)
    for split, chars in splits.items():
        images, labels, face_of = [], [], []
        for label, ch in enumerate(chars):
            for f, code_point in sorted(listed[ch].items()):
                master = _render_master(fonts[f], code_point)
                if master is None:  # drew ink at _MASTER_FONT_PX; a bigger size cannot lose it
                    raise RuntimeError(f"{_FACES[f].file} drew nothing for {ch!r} at {font_px} px")
                for k in range(params["instances_per_face"]):
                    # One stream per image, so an image does not depend on which other classes
                    # were drawn (max_classes) or on the class order.
                    rng = np.random.default_rng([params["seed"], ord(ch), f, k])
                    images.append(_place(master, size, **_jitter(rng)))
                    labels.append(label)
                    face_of.append(f)
            bar.update(1)
        gray = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
        arrays[f"{split}_images"] = np.repeat(gray[..., None], 3, axis=-1)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int32)
        meta["splits"][split] = dict(class_names=chars, face_index=face_of)
        if class_set != "letters":
            meta["splits"][split]["super_classes"] = [glyph_classes.super_class(ch, class_set)
                                                      for ch in chars]
    bar.close()
    return arrays, meta


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write(entry: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Writes the whole entry in a scratch folder beside it, then renames it into place: a reader
    sees either no entry or a complete one, even if this process dies half way."""
    parent = os.path.dirname(entry)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(entry) + "-", dir=parent)
    try:
        files = {}
        for name, array in arrays.items():
            path = os.path.join(tmp, name + ".npy")
            np.save(path, array, allow_pickle=False)
            files[name] = dict(file=name + ".npy", shape=list(array.shape),
                               dtype=str(array.dtype), sha256=_sha256_file(path))
        meta = dict(meta, files=files)
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as fh:
            json.dump(meta, fh, ensure_ascii=False, indent=1)
        try:
            os.rename(tmp, entry)
        except OSError:
            # Another process finished the same entry first; theirs is as good as ours.
            if not os.path.isdir(entry):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read(entry: str, params: dict) -> tuple[dict[str, np.ndarray], dict]:
    def bad(path: str, why: str) -> GlyphCacheError:
        return GlyphCacheError(
            f"glyphs cache file {path} is unusable ({why}); delete {entry} to regenerate it")

    meta_path = os.path.join(entry, "meta.json")
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as e:
        raise bad(meta_path, str(e)) from e
    try:
        if meta["params"] != params:
            raise bad(meta_path, f"made for {meta['params']}, asked for {params}")
        files = {f"{split}_{kind}": {key: meta["files"][f"{split}_{kind}"][key]
                                     for key in ("file", "sha256", "shape", "dtype")}
                 for split in ("train", "test") for kind in ("images", "labels")}
        for split in ("train", "test"):
            list(meta["splits"][split]["class_names"])
    except (KeyError, TypeError) as e:
        raise bad(meta_path, f"missing entry {e}") from e
    arrays = {}
    for name, info in files.items():
        path = os.path.join(entry, info["file"])
        try:
            digest = _sha256_file(path)
        except OSError as e:
            raise bad(path, str(e)) from e
        if digest != info["sha256"]:
            raise bad(path, "checksum mismatch: truncated or modified")
        array = np.load(path, allow_pickle=False)
        if list(array.shape) != info["shape"] or str(array.dtype) != info["dtype"]:
            raise bad(path, f"{array.dtype}{list(array.shape)}, meta.json says "
                            f"{info['dtype']}{info['shape']}")
        arrays[name] = array
    return arrays, meta


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dnc_jax", "glyphs")


def load_glyphs(cache_dir: str | None = None, image_size: int = 32, seed: int = 0,
                min_faces: int = 12, instances_per_face: int = 1,
                max_classes: int | None = None, progress: bool = True,
                classes: str = "letters") -> dict[str, ImageSet]:
    """Returns {'train': ImageSet, 'test': ImageSet}, class-disjoint.

    `classes` picks the characters: 'letters' (Latin, Greek, Cyrillic, digits, punctuation,
    symbols) or 'scripts' (up to 40 characters from each of nine scripts and symbol blocks,
    the block being a super-class). Classes are shuffled by `seed`, cut to the first
    `max_classes` (for tiny runs) and halved:
    the first half (the larger, if odd) trains, the rest tests. Each class has one image per
    covering face per `instances_per_face`. Generated on first use into `cache_dir` (default
    ~/.cache/dnc_jax/glyphs); later calls read it back, and a damaged cache entry raises
    GlyphCacheError naming the file.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    if min_faces < 1 or instances_per_face < 1:
        raise ValueError("min_faces and instances_per_face must be at least 1")
    if max_classes is not None and max_classes < 2:
        raise ValueError(f"max_classes must be at least 2 (one class per split), got {max_classes}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    glyph_classes.candidates(classes)  # an unknown class set fails here, before anything is rendered
    params = _params(image_size, seed, min_faces, instances_per_face, max_classes, classes)
    entry = os.path.join(cache_dir or default_cache_dir(), _cache_key(params))
    if os.path.isdir(entry):
        arrays, meta = _read(entry, params)
    else:
        arrays, meta = _generate(params, progress)
        _write(entry, arrays, meta)
    return {
        split: ImageSet(images=arrays[f"{split}_images"], labels=arrays[f"{split}_labels"],
                        class_names=list(meta["splits"][split]["class_names"]))
        for split in ("train", "test")
    }
