"""The glyph set's fonts: which faces draw which characters, and how one image is drawn.

In: the font files that ship with matplotlib and a class set's candidate characters
(`glyph_classes.py`). Out: the class list (each kept character with {face: code point}, after
the coverage and homoglyph filters) and, per image, a master render placed on the canvas under
a small random affine jitter. `glyphs.py` turns these into the cached data set.

Which faces may stand for a character is read from the fonts' own cmaps with fontTools, then
confirmed by rendering (an empty glyph does not count). Characters that look the same as an
earlier one in most faces (Latin "A", Greek "Α", Cyrillic "А") would be contradictory labels,
so only the first of such a group is kept.
"""
from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

from dnc_jax.data.sources import glyph_classes

# Images are drawn on a canvas up to this many times larger, then box-filtered down: that is the
# antialiasing of the jitter's resampling. Large images need less of it (FreeType antialiases).
_MAX_SUPERSAMPLE = 4
# The larger of the glyph's width and height fills this fraction of the image (before jitter).
_FILL = 0.7
# Masters (unjittered, tightly cropped glyphs) are rendered at least at this font size. Coverage
# and homoglyphs are decided at this size and on canonical renders of _DEDUP_SIZE pixels,
# whatever image_size is, so that the class list does not depend on image_size.
MASTER_FONT_PX = 128
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



@dataclasses.dataclass(frozen=True)
class Face:
    name: str
    file: str
    # Computer Modern's ttf files keep TeX's own encoding behind a Unicode cmap (code point 161
    # is Gamma, 34 is a closing double quote); their glyph names are the reliable part.
    tex_encoded: bool = False


FACES = (
    Face("DejaVu Sans", "DejaVuSans.ttf"),
    Face("DejaVu Sans Bold", "DejaVuSans-Bold.ttf"),
    Face("DejaVu Sans Oblique", "DejaVuSans-Oblique.ttf"),
    Face("DejaVu Sans Bold Oblique", "DejaVuSans-BoldOblique.ttf"),
    Face("DejaVu Sans Mono", "DejaVuSansMono.ttf"),
    Face("DejaVu Sans Mono Bold", "DejaVuSansMono-Bold.ttf"),
    Face("DejaVu Sans Mono Oblique", "DejaVuSansMono-Oblique.ttf"),
    Face("DejaVu Sans Mono Bold Oblique", "DejaVuSansMono-BoldOblique.ttf"),
    Face("DejaVu Serif", "DejaVuSerif.ttf"),
    Face("DejaVu Serif Bold", "DejaVuSerif-Bold.ttf"),
    Face("DejaVu Serif Italic", "DejaVuSerif-Italic.ttf"),
    Face("DejaVu Serif Bold Italic", "DejaVuSerif-BoldItalic.ttf"),
    Face("STIX General", "STIXGeneral.ttf"),
    Face("STIX General Bold", "STIXGeneralBol.ttf"),
    Face("STIX General Italic", "STIXGeneralItalic.ttf"),
    Face("STIX General Bold Italic", "STIXGeneralBolIta.ttf"),
    Face("CM Roman", "cmr10.ttf", tex_encoded=True),
    Face("CM Bold", "cmb10.ttf", tex_encoded=True),
    Face("CM Sans", "cmss10.ttf", tex_encoded=True),
    Face("CM Typewriter", "cmtt10.ttf", tex_encoded=True),
    Face("CM Text Italic", "cmti10.ttf", tex_encoded=True),
    # Math italic: Latin and Greek letters; its punctuation slots hold other symbols, which the
    # glyph-name check below rejects. The symbol-only fonts (cmsy, cmex, STIXSiz*, STIXNonUni*,
    # LastResort, *Display) are left out on purpose.
    Face("CM Math Italic", "cmmi10.ttf", tex_encoded=True),
)


# AGL names that fontTools maps to a compatibility twin (OHM SIGN, INCREMENT, MICRO SIGN) but that
# fonts use for the Greek letter.
_GLYPH_NAME_ALIASES = {"Omega": "Ω", "Delta": "Δ", "mu": "μ"}


def font_folder() -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


def _glyph_chars(glyph_name: str) -> set[str]:
    """The characters a glyph name stands for (AGL names, uniXXXX); empty for other names."""
    from fontTools import agl

    chars = {agl.toUnicode(glyph_name)} - {""}
    if glyph_name in _GLYPH_NAME_ALIASES:
        chars.add(_GLYPH_NAME_ALIASES[glyph_name])
    return {c for c in chars if len(c) == 1}


def face_code_points(face: Face, path: str, candidates: tuple[str, ...]) -> dict[str, int]:
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


def render_master(font, code_point: int):
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
    if ink * (MASTER_FONT_PX / font.size) ** 2 < _MIN_INK_PX:
        return None
    return master


def supersample(size: int) -> int:
    return int(np.clip(-(-MASTER_FONT_PX // size), 1, _MAX_SUPERSAMPLE))


def place(master, size: int, rot_deg=0.0, scale=1.0, shear=0.0, shift=(0.0, 0.0)) -> np.ndarray:
    """Center `master` by its box, fit it to the image, jitter it; uint8 [size, size]."""
    from PIL import Image

    big = size * supersample(size)
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


def jitter(rng: np.random.Generator) -> dict:
    return dict(
        rot_deg=rng.uniform(-_ROT_DEG, _ROT_DEG),
        scale=rng.uniform(*_SCALE),
        shear=rng.uniform(-_SHEAR, _SHEAR),
        shift=tuple(rng.uniform(-_SHIFT, _SHIFT, size=2)),
    )


def homoglyph_filter(chars: list[str], canon: dict[tuple[int, str], np.ndarray]) -> list[str]:
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


# (min_faces, class set) -> class_list's answer: the slow half of a generation (every
# candidate in every face) is the same for all image sizes, seeds and max_classes, so a process
# computes it once.
_CLASS_LISTS: dict[tuple[int, str], tuple[tuple[str, dict[int, int]], ...]] = {}


def class_list(min_faces: int, progress: bool,
               class_set: str = "letters") -> tuple[tuple[str, dict[int, int]], ...]:
    """The classes in candidate order, each with {face index: code point} of its faces."""
    key = (min_faces, class_set)
    if key not in _CLASS_LISTS:
        listed = make_class_list(min_faces, progress, glyph_classes.candidates(class_set),
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


def make_class_list(min_faces: int, progress: bool,
                    candidates: tuple[str, ...] = glyph_classes.LETTERS,
                    excluded: tuple[str, ...] = ()
                    ) -> tuple[tuple[str, dict[int, int]], ...]:
    """The covered candidates that survive the homoglyph filter, with their faces. `excluded`
    characters go through the filter first (whatever their coverage), and a candidate that
    looks like one of them is dropped: how 'pretrain' stays disjoint from the targets."""
    from PIL import ImageFont
    from tqdm import tqdm

    font_dir = font_folder()
    excluded_set = set(excluded)
    candidates = tuple(ch for ch in candidates if ch not in excluded_set)
    everything = tuple(excluded) + candidates
    code_points = [
        face_code_points(face, os.path.join(font_dir, face.file), everything) for face in FACES
    ]
    fonts = [ImageFont.truetype(os.path.join(font_dir, face.file), MASTER_FONT_PX)
             for face in FACES]
    canon: dict[tuple[int, str], np.ndarray] = {}
    todo = [(f, ch) for f, cps in enumerate(code_points) for ch in cps]
    for f, ch in tqdm(todo, desc="glyphs: fonts", file=sys.stderr, disable=not progress,
                      leave=False):
        master = render_master(fonts[f], code_points[f][ch])
        if master is not None:
            canon[(f, ch)] = place(master, _DEDUP_SIZE)

    def faces(ch):
        return sum((f, ch) in canon for f in range(len(FACES)))

    covered = [ch for ch in candidates if faces(ch) >= min_faces]
    references = [ch for ch in excluded if faces(ch) >= 1]
    kept = [ch for ch in homoglyph_filter(references + covered, canon)
            if ch not in excluded_set]
    return tuple(
        (ch, {f: code_points[f][ch] for f in range(len(FACES)) if (f, ch) in canon})
        for ch in kept
    )

