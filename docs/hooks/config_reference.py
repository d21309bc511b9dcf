"""The configuration reference, generated from `dnc_jax/defaults.py` so that it cannot drift.

Every key of `defaults.get_config()` with its default and its meaning: the comment beside the
key's assignment in defaults.py, its continuation lines (comment-only lines indented past the
statement) and a comment on the line above it. `ADDED_KEYS` gives what a run saved before the
key existed is completed with.

Used two ways:
  * as an MkDocs hook (mkdocs.yml `hooks:`): `docs/config-reference.md` holds the marker
    line below, which the build replaces with the tables (`on_page_markdown`);
  * as a script: `python docs/hooks/config_reference.py` prints the tables.

A key without a meaning stops the build (`KeyError` naming it), as the tests would
(tests/test_configs.py::test_every_default_key_has_a_comment, tests/test_docs.py).
"""
from __future__ import annotations

import html
import io
import os
import re
import sys
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULTS = os.path.join(ROOT, "dnc_jax", "defaults.py")
MARKER = ("<!-- config-reference: generated from dnc_jax/defaults.py by "
          "docs/hooks/config_reference.py -->")

# `config.data.batch_size = 80`, `config.optim[group].learning_rate = 1e-5`: the target, with
# a subscript by a loop variable standing for any section name.
_ASSIGN = re.compile(r"^(\s*)config((?:\.\w+|\[\w+\])+)\s*=(?!=)")
_SECTIONS = {
    "": "Run",
    "data": "Data", "data.glyphs": "Data: the glyph sets",
    "augment": "Augmentation", "model": "Model", "model.vit": "Model: ViT backbones",
    "loss": "Loss and miner", "optim": "Optimiser", "optim.backbone": "Optimiser: backbone",
    "optim.head": "Optimiser: head", "optim.masks": "Optimiser: learned masks",
    "divide": "Divide and Conquer", "eval": "Evaluation", "checkpoint": "Checkpoints",
}


def _comments(path: str = DEFAULTS) -> dict[int, tuple[int, str]]:
    """Line number -> (column, text) of every comment in the file."""
    out = {}
    with open(path, "rb") as f:
        for tok in tokenize.tokenize(f.readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = (tok.start[1], tok.string.lstrip("#").strip())
    return out


def meanings(path: str = DEFAULTS) -> list[tuple[str, str, bool]]:
    """(key pattern, meaning, whether it makes a section) for every assignment of get_config()
    in source order; a pattern's `[...]` part stands for any one section name."""
    lines = open(path).read().splitlines()
    comments = _comments(path)
    start = next(i for i, line in enumerate(lines) if line.startswith("def get_config"))
    out = []
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line and not line[0].isspace():
            break                                            # the end of get_config
        match = _ASSIGN.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        pattern = match.group(2).lstrip(".")
        parts = []
        above = comments.get(i)                              # line numbers are 1-based
        if above and not lines[i - 1].strip().startswith("config") and \
                lines[i - 1].strip().startswith("#"):
            # The comment block above the statement, at its own indentation.
            j = i
            block = []
            while j >= 1 and lines[j - 1].strip().startswith("#") and \
                    comments.get(j, (-1,))[0] == indent:
                block.insert(0, comments[j][1])
                j -= 1
            parts.extend(block)
        if (i + 1) in comments:
            parts.append(comments[i + 1][1])                 # beside the statement
        j = i + 2
        while j in comments and lines[j - 1].strip().startswith("#") and \
                comments[j][0] > indent:
            parts.append(comments[j][1])                     # continuation lines
            j += 1
        out.append((pattern, " ".join(p for p in parts if p), "ConfigDict()" in line))
    return out


def _pattern_regex(pattern: str) -> re.Pattern:
    regex = ""
    for part in re.findall(r"\.?(\w+)|\[(\w+)\]", pattern):
        name, sub = part
        regex += (r"\." if regex else "") + (r"\w+" if sub else re.escape(name))
    return re.compile(regex + r"\Z")


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _defaults():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from dnc_jax import defaults

    return defaults


def reference() -> list[tuple[str, object, str, object]]:
    """(key, default, meaning, value for runs saved before the key existed or None) for every
    key of `defaults.get_config()`: sections in the order defaults.py first sets them (a
    section's own keys before its sub-sections'), keys in the order it sets them. Raises
    KeyError for a key without a meaning."""
    defaults = _defaults()
    found = [(_pattern_regex(p), "[" in p, m) for p, m, section in meanings() if not section]
    rows = []
    missing = object()
    for key, value in _leaves(defaults.get_config().to_dict()):
        # A key's own line wins over a loop's (`optim.masks.learning_rate` over
        # `optim[group].learning_rate`).
        matches = sorted((loop, n, m) for n, (regex, loop, m) in enumerate(found)
                         if regex.match(key))
        _, place, meaning = matches[0] if matches else (False, -1, "")
        if not meaning:
            raise KeyError(f"{key}: no comment beside it in dnc_jax/defaults.py")
        older = defaults.ADDED_KEYS.get(key, missing)
        rows.append((place, key, value, meaning, None if older is missing else older))
    first = {}                   # a section, and a top-level section with its sub-sections
    for place, key, *_ in rows:
        section = key.rpartition(".")[0]
        for name in (section, "top:" + section.partition(".")[0]):
            first[name] = min(first.get(name, place), place)

    def order(row):
        section = row[1].rpartition(".")[0]
        top = section.partition(".")[0]
        return (first["top:" + top], section != top, first[section], section, row[0], row[1])

    return [row[1:] for row in sorted(rows, key=order)]


def section_notes() -> dict[str, str]:
    """Section -> the comment beside the line that makes it (`config.model.vit = ConfigDict()
    # ViT backbones only ...`); a loop's sections (`config.optim[group]`) have none."""
    return {pattern: meaning for pattern, meaning, section in meanings()
            if section and meaning and "[" not in pattern}


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|")


def _value(value) -> str:
    text = repr(value)
    return "`" + text.replace("|", "\\|") + "`"


def render() -> str:
    """The reference as Markdown: one table per section."""
    rows = reference()
    notes = section_notes()
    out = io.StringIO()
    section = None
    for key, value, meaning, older in rows:
        parent = key.rpartition(".")[0]
        if parent != section:
            section = parent
            title = _SECTIONS.get(parent, f"`{parent}`")
            name = f" (`{parent}.*`)" if parent else ""
            out.write(f"\n## {title}{name}\n\n")
            if parent in notes:
                out.write(f"{_cell(notes[parent])}.\n\n")
            out.write("| key | default | meaning |\n|---|---|---|\n")
        note = "" if older is None else f" *Runs saved before this key: {_value(older)}.*"
        out.write(f"| `{key}` | {_value(value)} | {_cell(meaning)}{note} |\n")
    return out.getvalue().lstrip("\n")


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 (MkDocs hook signature)
    if MARKER in markdown:
        return markdown.replace(MARKER, render())
    return markdown


if __name__ == "__main__":
    sys.stdout.write(render())
