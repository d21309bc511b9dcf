"""Which characters a glyph class set draws: 'letters', 'scripts' and 'pretrain'.

'letters' and 'scripts' are demo targets (train and test halves of their classes). 'pretrain' is
a corpus for pretraining a backbone before fine-tuning on either target, as the papers start
from ImageNet weights: characters of blocks neither target draws from (IPA, historic Cyrillic,
Hebrew, Arabic, Lao, Canadian syllabics, technical and miscellaneous symbols, dingbats, ...),
and none of them a look-alike of a target character (the homoglyph filter of `glyphs` runs on
the targets' characters first and drops every 'pretrain' character that matches one). Accented
forms of target letters (Latin Extended-A, Greek Extended) are left out on purpose: a letter
with a diacritic is too close to a class of the target to call the corpora disjoint.
"""
from __future__ import annotations

from dnc_jax.errors import ConfigError


def _chars(first: int, last: int, skip: tuple[int, ...] = ()) -> list[str]:
    return [chr(c) for c in range(first, last + 1) if c not in skip]


# 'letters', in priority order: of a homoglyph group the earliest one stays.
LETTERS: tuple[str, ...] = tuple(
    _chars(ord("A"), ord("Z"))
    + _chars(ord("a"), ord("z"))
    + _chars(ord("0"), ord("9"))
    + _chars(0x391, 0x3A9, skip=(0x3A2,))  # Greek capitals (0x3A2 is unassigned)
    + _chars(0x3B1, 0x3C9)  # Greek small, final sigma included
    + _chars(0x410, 0x44F)  # Russian Cyrillic
    + _chars(0x400, 0x40F)  # other Slavic Cyrillic capitals (Ё, Ђ, Є, Ї, Љ, ...)
    + _chars(0x450, 0x45F)  # and their small letters
    + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    + list("§¶©®°±×÷€£¥¢¿¡«»•†‡‰µ")
    + list("∞≈≠≤≥√∑∏∫∂∇∈∉∩∪⊂⊃∀∃¬∧∨⊕⊗")
    + list("→←↑↓↔⇒⇔♠♣♥♦★☆✓✗")
)

# 'scripts': characters of several scripts and symbol blocks, the block being a *super-class*
# (as SOP's bicycles, chairs, ...). Classes of one block share their strokes and layout
# (letters of an alphabet; line segments of box drawing; filled and outlined shapes), so
# features could group whole classes by block. Measured (BENCHMARKS.md, Accuracy): they do not
# much more than on 'letters': an untrained network's clusters split classes by font face in
# both sets, and a trained one's keep classes whole in both, grouped by shape across blocks.
SCRIPT_BLOCKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Latin", tuple(_chars(ord("A"), ord("Z")) + _chars(ord("a"), ord("z")))),
    ("Greek", tuple(_chars(0x391, 0x3A9, skip=(0x3A2,)) + _chars(0x3B1, 0x3C9))),
    ("Cyrillic", tuple(_chars(0x410, 0x44F))),
    ("Armenian", tuple(_chars(0x531, 0x556) + _chars(0x561, 0x586))),
    ("Georgian", tuple(_chars(0x10D0, 0x10F0))),
    ("box drawing", tuple(_chars(0x2500, 0x257F))),
    ("geometric shapes", tuple(_chars(0x25A0, 0x25FF))),
    ("arrows", tuple(_chars(0x2190, 0x21FF))),
    ("math operators", tuple(_chars(0x2200, 0x22FF))),
)
# Classes kept per block (the first in code-point order, after the homoglyph filter), so that
# no block dominates and the set stays as small as the demo's.
SCRIPTS_PER_BLOCK = 40

# 'pretrain': blocks that neither target draws from. Which of them the bundled faces cover
# (DejaVu's 12 faces cover most; Canadian syllabics, Hebrew, Arabic and Yijing only DejaVu Sans'
# 4) decides the class count at a given min_faces: about 1,300 characters at 4 faces.
PRETRAIN_BLOCKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("IPA", tuple(_chars(0x250, 0x2AF))),
    ("Cyrillic supplement", tuple(_chars(0x460, 0x52F))),
    ("Hebrew", tuple(_chars(0x5D0, 0x5EA))),
    ("Arabic", tuple(_chars(0x621, 0x64A))),
    ("Lao", tuple(_chars(0xE81, 0xEDD))),
    ("Canadian syllabics", tuple(_chars(0x1400, 0x167F))),
    ("letterlike symbols", tuple(_chars(0x2100, 0x214F))),
    ("number forms", tuple(_chars(0x2150, 0x218F))),
    ("miscellaneous technical", tuple(_chars(0x2300, 0x23FF))),
    ("block elements", tuple(_chars(0x2580, 0x259F))),
    ("miscellaneous symbols", tuple(_chars(0x2600, 0x26FF))),
    ("dingbats", tuple(_chars(0x2700, 0x27BF))),
    ("supplemental arrows", tuple(_chars(0x27F0, 0x27FF) + _chars(0x2900, 0x297F))),
    ("miscellaneous math", tuple(_chars(0x27C0, 0x27EF) + _chars(0x2980, 0x29FF))),
    ("supplemental math operators", tuple(_chars(0x2A00, 0x2AFF))),
    ("miscellaneous symbols and arrows", tuple(_chars(0x2B00, 0x2BFF))),
    ("Latin Extended-C/D", tuple(_chars(0x2C60, 0x2C7F) + _chars(0xA720, 0xA7FF))),
    ("Cyrillic Extended-B", tuple(_chars(0xA640, 0xA69F))),
    ("Yijing hexagrams", tuple(_chars(0x4DC0, 0x4DFF))),
    ("Lisu", tuple(_chars(0xA4D0, 0xA4FF))),
    ("modifier tone letters", tuple(_chars(0xA700, 0xA71F))),
)

CLASS_SETS = ("letters", "scripts", "pretrain")


def _blocks(class_set: str):
    return {"scripts": SCRIPT_BLOCKS, "pretrain": PRETRAIN_BLOCKS}.get(class_set, ())


def candidates(class_set: str) -> tuple[str, ...]:
    """The set's characters before coverage and homoglyph filtering, in priority order."""
    if class_set == "letters":
        return LETTERS
    if class_set in ("scripts", "pretrain"):
        return tuple(ch for _, chars in _blocks(class_set) for ch in chars)
    raise ConfigError(f"data.glyphs.classes must be one of {CLASS_SETS}, got {class_set!r}")


def excluded_by(class_set: str) -> tuple[str, ...]:
    """Characters whose look-alikes the set must not hold: the targets', for 'pretrain'."""
    if class_set != "pretrain":
        return ()
    seen = dict.fromkeys(LETTERS + candidates("scripts"))
    return tuple(seen)


def super_class(ch: str, class_set: str = "scripts") -> str:
    """The block of a character in a block-built set ('' outside those blocks)."""
    return next((name for name, chars in _blocks(class_set) if ch in chars), "")
