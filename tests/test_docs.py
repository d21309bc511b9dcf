"""The documentation holds together without MkDocs: README.md stays a page, every relative link
of README.md and docs/*.md reaches a file (and, where the target is one of our Markdown pages,
a heading of it), every page is in the site's nav, and the configuration reference generated
from dnc_jax/defaults.py gives every key a meaning. `make docs` (mkdocs build --strict, in CI)
checks the built site on top of this."""
import importlib.util
import os
import re
import unicodedata

import pytest

from dnc_jax import defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")
PAGES = sorted(os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))
SNIPPET = re.compile(r'^--8<-- "([^"]+)"\s*$', re.M)


def _load_hook(name):
    path = os.path.join(DOCS, "hooks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"dnc_jax_docs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _load_hook("config_reference")
BENCHMARKS_IMAGES = _load_hook("benchmarks_images")


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _source(path):
    """A page's Markdown as the site builds it: snippets included, the reference generated."""
    text = open(path, encoding="utf-8").read()
    text = SNIPPET.sub(lambda m: open(os.path.join(REPO, m.group(1)), encoding="utf-8").read(),
                       text)
    if os.path.relpath(path, DOCS) == BENCHMARKS_IMAGES.PAGE:
        text = "\n".join(BENCHMARKS_IMAGES.relink(text.split("\n")))
    if GENERATOR.MARKER in text:
        text = text.replace(GENERATOR.MARKER, GENERATOR.render())
    return text


def _prose(text):
    """The text outside fenced code blocks and inline code spans."""
    text = re.sub(r"(?ms)^ *(```|~~~).*?^ *\1[^\n]*$", "", text)
    return re.sub(r"`+[^`\n]*`+", "", text)


def _slug(title):
    """Python-Markdown's toc slugify (MkDocs' anchors), on a heading's text."""
    title = re.sub(r"`([^`]*)`", r"\1", title)                 # code spans keep their text
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)     # links keep theirs
    title = re.sub(r"\*{1,2}([^*]+)\*{1,2}", r"\1", title)          # emphasis
    value = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def _anchors(path):
    text = re.sub(r"(?ms)^ *(```|~~~).*?^ *\1[^\n]*$", "", _source(path))
    slugs, seen = set(), {}
    for title in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        slug = _slug(title)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        slugs.add(slug if n == 0 else f"{slug}_{n}")
    return slugs


def _links(path):
    """(target, anchor) of every relative link or image of a page."""
    out = []
    for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)",
                             _prose(_source(path))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):               # http:, mailto:, ...
            continue
        file, _, anchor = target.partition("#")
        out.append((file, anchor))
    return out


def test_readme_is_a_page_in_front_of_the_site():
    lines = open(os.path.join(REPO, "README.md"), encoding="utf-8").read().splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines: move sections into docs/"


def test_readme_keeps_the_two_commands_ci_runs():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in open(os.path.join(REPO, "Makefile")).read()


@pytest.mark.parametrize("page", [os.path.join(REPO, "README.md")] + PAGES,
                         ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_reaches_a_file_and_a_heading(page):
    here = os.path.dirname(page)
    broken = []
    for file, anchor in _links(page):
        target = os.path.normpath(os.path.join(here, file)) if file else page
        if not os.path.exists(target):
            broken.append(f"{file}: no such file")
        elif anchor and target.endswith(".md") and \
                os.path.dirname(target) in (DOCS, REPO) and anchor not in _anchors(target):
            broken.append(f"{file}#{anchor}: no such heading")
    if page != os.path.join(REPO, "README.md"):
        for snippet in SNIPPET.findall(open(page, encoding="utf-8").read()):
            if not os.path.isfile(os.path.join(REPO, snippet)):
                broken.append(f"--8<-- {snippet}: no such file")
    assert not broken, f"{os.path.relpath(page, REPO)}: {broken}"


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = open(os.path.join(REPO, "mkdocs.yml"), encoding="utf-8").read()
    nav = set(re.findall(r"^\s*- (?:[^:\n]+: )?([\w./-]+\.md)\s*$", config, re.M))
    pages = {os.path.basename(p) for p in PAGES}
    assert nav == pages, (sorted(pages - nav), sorted(nav - pages))
    for hook in re.findall(r"^\s*- (docs/hooks/\S+\.py)", config, re.M):
        assert os.path.isfile(os.path.join(REPO, hook)), hook


def test_the_configuration_reference_gives_every_key_a_meaning():
    reference = GENERATOR.render()
    rows = dict(re.findall(r"^\| `([\w.]+)` \| .+? \| (.*) \|$", reference, re.M))
    keys = set(_leaves(defaults.get_config().to_dict()))
    assert keys <= set(rows), sorted(keys - set(rows))
    assert not [key for key in keys if not rows[key].strip()]
    # The page the site builds it into holds the marker the hook replaces, and the hook is on.
    page = open(os.path.join(DOCS, "config-reference.md"), encoding="utf-8").read()
    assert GENERATOR.MARKER in page
    assert "docs/hooks/config_reference.py" in open(os.path.join(REPO, "mkdocs.yml")).read()


def test_the_reference_reads_the_comments_beside_each_key():
    meanings = dict((key, meaning) for key, _, meaning, _ in GENERATOR.reference())
    assert meanings["data.batch_size"].startswith("global batch of one step")
    assert "(use K x 80" in meanings["data.batch_size"]               # a continuation line
    assert meanings["model.pretrained"].startswith("Backbone weights")  # the comment above
    assert meanings["optim.head.learning_rate"] == meanings["optim.backbone.learning_rate"]
    assert "PAMI" in meanings["optim.masks.learning_rate"]    # its own line, not the loop's
    older = {key: old for key, _, _, old in GENERATOR.reference() if old is not None}
    assert older == defaults.ADDED_KEYS


def test_a_key_without_a_comment_stops_the_reference(tmp_path, monkeypatch):
    source = open(GENERATOR.DEFAULTS).read()
    bare = re.sub(r"(config\.seed = \S+) *#.*", r"\1", source, count=1)
    assert bare != source
    path = tmp_path / "defaults.py"
    path.write_text(bare)
    monkeypatch.setattr(GENERATOR, "DEFAULTS", str(path))
    monkeypatch.setattr(GENERATOR.meanings, "__defaults__", (str(path),))
    with pytest.raises(KeyError, match="seed"):
        GENERATOR.reference()
