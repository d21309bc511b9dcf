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

import hashlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np

from dnc_jax.errors import DataError
from dnc_jax.data.sources import glyph_classes, glyph_fonts
from dnc_jax.data.store.image_set import ImageSet

FORMAT_VERSION = 1

class GlyphCacheError(DataError):
    """A cache entry exists but cannot be trusted (truncated, edited, other parameters)."""


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
    font_dir = glyph_fonts.font_folder()
    for face in glyph_fonts.FACES:
        with open(os.path.join(font_dir, face.file), "rb") as fh:
            h.update(face.file.encode() + hashlib.sha256(fh.read()).digest())
    return f"v{FORMAT_VERSION}-s{params['image_size']}-seed{params['seed']}-{h.hexdigest()[:16]}"


def _generate(params: dict, progress: bool) -> tuple[dict[str, np.ndarray], dict]:
    from PIL import ImageFont
    from tqdm import tqdm

    size = params["image_size"]
    font_dir = glyph_fonts.font_folder()
    class_set = params.get("classes", "letters")
    listed = dict(glyph_fonts.class_list(params["min_faces"], progress, class_set))
    classes = list(listed)
    if len(classes) < 2:
        raise ValueError(f"only {len(classes)} characters are covered by min_faces="
                         f"{params['min_faces']} faces (of {len(glyph_fonts.FACES)}); lower "
                         f"min_faces")
    font_px = max(glyph_fonts.MASTER_FONT_PX, size * glyph_fonts.supersample(size))
    fonts = [ImageFont.truetype(os.path.join(font_dir, face.file), font_px)
             for face in glyph_fonts.FACES]
    order = np.random.default_rng(params["seed"]).permutation(len(classes))
    classes = [classes[i] for i in order]
    if params["max_classes"] is not None:
        classes = classes[: params["max_classes"]]
    n_test = len(classes) // 2
    splits = {"train": classes[: len(classes) - n_test], "test": classes[len(classes) - n_test:]}

    arrays: dict[str, np.ndarray] = {}
    meta = dict(params=params, faces=[face.name for face in glyph_fonts.FACES], splits={})
    total = sum(len(cs) for cs in splits.values())
    bar = tqdm(total=total, desc="glyphs: images", unit="class", file=sys.stderr,
               disable=not progress, leave=False)
    for split, chars in splits.items():
        images, labels, face_of = [], [], []
        for label, ch in enumerate(chars):
            for f, code_point in sorted(listed[ch].items()):
                master = glyph_fonts.render_master(fonts[f], code_point)
                if master is None:  # drew ink at MASTER_FONT_PX; a bigger size cannot lose it
                    raise RuntimeError(f"{glyph_fonts.FACES[f].file} drew nothing for {ch!r} "
                                       f"at {font_px} px")
                for k in range(params["instances_per_face"]):
                    # One stream per image, so an image does not depend on which other classes
                    # were drawn (max_classes) or on the class order.
                    rng = np.random.default_rng([params["seed"], ord(ch), f, k])
                    images.append(glyph_fonts.place(master, size, **glyph_fonts.jitter(rng)))
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
    glyph_classes.candidates(classes)  # an unknown class set fails here, before any rendering
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
