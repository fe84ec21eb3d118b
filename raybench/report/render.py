"""Report blocks as Markdown (``report.md``) and self-contained HTML (``report.html``).

Both open with a table of contents (every level-2 and level-3 heading block, so sections
added as blocks appear in it); small multiples (:class:`Grid`) sit side by side in HTML and
follow one another in Markdown.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from raybench.report.blocks import Block, Figure, Grid, Table
from raybench.results.output import to_markdown


def _inline(text: str) -> str:
    """A paragraph's Markdown ``**bold**`` and ``code`` spans as HTML (the rest escaped)."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def headings(blocks: list[Block]) -> list[tuple[int, str, str]]:
    """(level, text, anchor) of every heading block, anchors as GitHub makes them.

    GitHub lower-cases, drops punctuation, turns spaces into ``-`` and numbers repeats
    (``-1``, ``-2``), so the Markdown TOC's links work there and in the HTML alike.
    """
    out: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    for b in blocks:
        if isinstance(b, str) and b.startswith("#"):
            level, text = len(b) - len(b.lstrip("#")), b.lstrip("#").strip()
            base = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.append((level, text, base if n == 0 else f"{base}-{n}"))
    return out


@dataclass(frozen=True)
class _Toc:
    """The table of contents: (level, text, anchor) of the level-2 and level-3 headings."""

    entries: tuple[tuple[int, str, str], ...]


def _with_toc(blocks: list[Block]) -> list[Block | _Toc]:
    """``blocks`` with the table of contents before the first section (level-2 heading)."""
    entries = [h for h in headings(blocks) if h[0] in (2, 3)]
    first = next((i for i, b in enumerate(blocks) if isinstance(b, str) and b.startswith("## ")),
                 None)
    if first is None or not entries:
        return list(blocks)
    return [*blocks[:first], _Toc(tuple(entries)), *blocks[first:]]


def _md_figure(b: Figure, out: Path) -> str:
    return f"![{b.caption}]({b.path.relative_to(out).as_posix()})\n\n*{b.caption}*"


def markdown(blocks: list[Block], out: Path) -> str:
    parts: list[str] = []
    for b in _with_toc(blocks):
        if isinstance(b, _Toc):
            parts.append("**Contents**\n\n" + "\n".join(
                f"{'  ' * (level - 2)}- [{text}](#{anchor})" for level, text, anchor in b.entries))
        elif isinstance(b, Figure):
            parts.append(_md_figure(b, out))
        elif isinstance(b, Grid):  # Markdown has no columns: the small multiples in order
            parts += [_md_figure(f, out) for f in b.figures]
        elif isinstance(b, Table):
            parts.append(to_markdown(b.frame))
        else:
            parts.append(b)
    return "\n\n".join(parts) + "\n"


def _html_figure(b: Figure) -> str:
    data = base64.b64encode(b.path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
            f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")


def _html_toc(toc: _Toc) -> str:
    items = [f'<li class="toc{level}"><a href="#{anchor}">{html.escape(text)}</a></li>'
             for level, text, anchor in toc.entries]
    return f'<nav class="toc"><strong>Contents</strong><ul>{"".join(items)}</ul></nav>'


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;"
         "border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}"
         "figure{margin:0.5em 0}figcaption{font-size:12px;color:#555}"
         # Small multiples: as many columns as fit, each at least 340 px wide.
         ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));"
         "gap:12px;align-items:start}"
         ".toc{background:#f6f8fa;border:1px solid #ddd;padding:0.5em 1em;}"
         ".toc ul{margin:0.3em 0;padding-left:1em;list-style:none}.toc li{break-inside:avoid}"
         ".toc3{padding-left:1.2em;font-size:13px}")


def page(blocks: list[Block], title: str) -> str:
    anchors = iter(h[2] for h in headings(blocks))
    parts: list[str] = []
    for b in _with_toc(blocks):
        if isinstance(b, _Toc):
            parts.append(_html_toc(b))
        elif isinstance(b, Figure):
            parts.append(_html_figure(b))
        elif isinstance(b, Grid):
            parts.append('<div class="grid">' + "".join(map(_html_figure, b.figures)) + "</div>")
        elif isinstance(b, Table):
            parts.append(b.frame.to_html(float_format=lambda v: f"{v:.4g}", na_rep="",
                                         border=0, classes="table"))
        elif b.startswith("#"):
            level = len(b) - len(b.lstrip("#"))
            parts.append(f'<h{level} id="{next(anchors)}">{html.escape(b.lstrip("#").strip())}'
                         f"</h{level}>")
        else:
            parts.append(f"<p>{_inline(b)}</p>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")


