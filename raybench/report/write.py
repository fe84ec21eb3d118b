"""Writes a sweep's report: ``report.md`` plus a self-contained ``report.html`` (PNG figures
inlined), atomically (a hidden sibling folder, moved into place at the end)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

from raybench.errors import RaybenchError
from raybench.report.blocks import FIGURES
from raybench.report.render import markdown, page
from raybench.report.sections import build_blocks
from raybench.results.loading import Results, load
from raybench.storage import current_umask


def write_report(uri: str, sweep: str, out: Union[str, Path],
                 results: Optional[Results] = None, *, skip_corrupt: bool = False) -> Path:
    """Writes ``out/report.md``, ``out/report.html`` and ``out/figures/*.png``.

    Everything is written into a hidden sibling folder first and moved into place at the end,
    so a failure leaves ``out`` as it was (no half report). Other files in ``out`` stay.

    Args:
        uri: The results root.
        sweep: The sweep to report on.
        out: Output folder (created when missing).
        results: Already loaded results (default: ``load(uri, sweep)``).
        skip_corrupt: Leave out unreadable result files with a warning instead of failing.

    Returns:
        The path of ``report.html`` (self-contained: its figures are inlined).

    Raises:
        RaybenchError: The sweep is missing or has no completed trial, a result file is
            corrupt, or ``out`` is a file.
    """
    res = results or load(uri, sweep, skip_corrupt=skip_corrupt)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RaybenchError(f"--out {out} is a file; pass a folder for the report")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        blocks = build_blocks(res, sweep, tmp)
        (tmp / "report.md").write_text(markdown(blocks, tmp), encoding="utf-8")
        (tmp / "report.html").write_text(page(blocks, f"raybench report: {sweep}"),
                                         encoding="utf-8")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "report.html"


def _move_into_place(tmp: Path, out: Path) -> None:
    """Renames the finished report from ``tmp`` to ``out`` (same filesystem: renames only)."""
    if not out.exists():
        tmp.rename(out)
        return
    old = tmp / ".old-figures"
    if (out / FIGURES).exists():
        (out / FIGURES).rename(old)
    (tmp / FIGURES).rename(out / FIGURES)
    for name in ("report.md", "report.html"):
        os.replace(tmp / name, out / name)


