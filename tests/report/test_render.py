"""report/render.py: the table of contents needs a section to precede."""
from __future__ import annotations

from pathlib import Path

from raybench.report.render import markdown, page


def test_no_contents_without_a_level_two_heading(tmp_path: Path) -> None:
    blocks = ["# raybench report: s", "### Detail", "Only text."]
    assert markdown(blocks, tmp_path) == "# raybench report: s\n\n### Detail\n\nOnly text.\n"
    html = page(blocks, "raybench report: s")
    assert '<nav class="toc">' not in html and '<h3 id="detail">Detail</h3>' in html
