"""What ``raybench results`` prints: :func:`query` picks a table, :func:`render` writes it as
aligned text, CSV, JSON or Markdown (the names it accepts are in
:mod:`~raybench.results.choices`).
"""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from raybench import schema as S
from raybench.errors import RaybenchError
from raybench.results.choices import FORMATS, QUERIES
from raybench.results.loading import load
from raybench.results.tables import format_paper_table, format_significance


def to_markdown(frame: pd.DataFrame, float_digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (index included when it is named)."""
    frame = frame.reset_index() if any(n is not None for n in frame.index.names) else frame

    def text(v: object) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{float_digits}g}"
        return str(v).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(text(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def render(frame: pd.DataFrame, fmt: str) -> str:
    """``frame`` as ``table`` (aligned text), ``csv``, ``json`` (records) or ``markdown``."""
    if fmt == "table":
        return frame.to_string()
    if fmt == "csv":
        return frame.to_csv(index=any(n is not None for n in frame.index.names)).rstrip("\n")
    if fmt == "json":
        flat = frame.reset_index() if any(n is not None for n in frame.index.names) else frame
        return flat.to_json(orient="records", indent=2)
    if fmt == "markdown":
        return to_markdown(frame)
    raise RaybenchError(f"unknown format {fmt!r}; choose from {list(FORMATS)}")


def query(uri: str, sweep: Optional[str], table: str, scenario: Optional[str] = None,
          baseline: Optional[str] = None, split: str = "test", *,
          skip_corrupt: bool = False, interval: str = "bootstrap") -> pd.DataFrame:
    """What ``raybench results`` prints: ``runs``, ``metrics``, the formatted ``paper`` table,
    the ``significance`` table (:meth:`Results.compare_models`, rounded) or ``findings``."""
    res = load(uri, sweep, skip_corrupt=skip_corrupt)
    if table == "paper":
        return format_paper_table(res.paper_table(scenario, interval=interval))
    if table == "findings":
        return res.findings()
    if table == "significance":
        return format_significance(res.compare_models(None, scenario, baseline, split=split,
                                                      interval=interval))
    if table not in S.TABLES:
        raise RaybenchError(f"unknown table {table!r}; choose from {', '.join(QUERIES)}")
    return res.table(table)
