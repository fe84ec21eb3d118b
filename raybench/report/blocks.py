"""The report's building blocks: paragraphs and headings (str), figures, tables, grids.

A section is a list of blocks; :mod:`raybench.report.render` turns a list into Markdown or
HTML. A str starting with "#" is a heading (levels 2 and 3 go into the table of contents),
any other str a paragraph.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pandas as pd

FIGURES = "figures"  # the report's folder of PNG files, next to report.md


@dataclass(frozen=True)
class Figure:
    path: Path  # absolute PNG path
    caption: str


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame


@dataclass(frozen=True)
class Grid:
    """Small multiples (one per model, say): side by side in HTML, in order in Markdown."""

    figures: tuple[Figure, ...]


Block = Union[str, Figure, Table, Grid]


def slug(text: str) -> str:
    """``text`` as a file-name part: runs of other characters become ``-``, at most 60."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:60] or "x"


def fmt(x: Optional[float], digits: int = 3) -> str:
    """A number for prose: ``n/a`` when missing."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    """A p-value for prose: ``< 0.001`` below that, else three decimals."""
    return "n/a" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")
