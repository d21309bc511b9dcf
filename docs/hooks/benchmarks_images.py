"""BENCHMARKS.md on the Performance page: its image links made relative to the page.

`docs/performance.md` includes BENCHMARKS.md, which stays at the repository's top, with
pymdownx.snippets (`--8<-- "BENCHMARKS.md"`). That file links its plots as `docs/NAME.png`,
relative to the top; on the page, which lives in docs/, the same file is `NAME.png`. A
Markdown preprocessor that runs right after the snippets one rewrites `](docs/` to `](` on that
page only (`relink`), so the site shows the plots and `mkdocs build --strict` finds every link,
and BENCHMARKS.md needs no change. tests/test_docs.py checks the page's links the same way.
"""
from __future__ import annotations

PAGE = "performance.md"
_current = {"page": None}


def relink(lines: list[str]) -> list[str]:
    """The included lines with links into docs/ made relative to a page in docs/."""
    return [line.replace("](docs/", "](") for line in lines]


def on_config(config):
    from markdown import Extension
    from markdown.preprocessors import Preprocessor

    class Relink(Preprocessor):
        def run(self, lines):
            return relink(lines) if _current["page"] == PAGE else lines

    class RelinkExtension(Extension):
        def extendMarkdown(self, md):  # noqa: N802 (Markdown's API)
            # pymdownx.snippets runs at priority 32: this runs just after it.
            md.preprocessors.register(Relink(md), "dnc_jax_benchmarks_images", 31.9)

    config.markdown_extensions.append(RelinkExtension())
    return config


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 (MkDocs hook signature)
    _current["page"] = page.file.src_uri
    return markdown
