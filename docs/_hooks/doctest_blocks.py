"""MkDocs hook: the pages' bare `>>>` examples are shown as Python console code blocks.

The pages are doctested as they are (`--doctest-glob=*.md`), so their examples are plain `>>>` lines
that Markdown would render as nested block quotes. Each run of lines that starts with `>>>` and
ends at a blank line (doctest's own rule for where an example's output ends) is fenced as `pycon`
at build time; the files are not changed. Lines inside existing ``` fences are left alone.
"""

from __future__ import annotations

FENCE = "```"


def fence_doctests(markdown: str) -> str:
    out: list[str] = []
    in_fence = in_example = False
    for line in markdown.split("\n"):
        stripped = line.lstrip()
        if in_example and not stripped:
            out.append(FENCE)
            in_example = False
        if not in_example and stripped.startswith(FENCE):
            in_fence = not in_fence
        elif not in_fence and not in_example and stripped.startswith(">>>"):
            out.append(FENCE + "pycon")
            in_example = True
        out.append(line)
    if in_example:
        out.append(FENCE)
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    return fence_doctests(markdown)
