"""Load a results root into pandas; paper-style tables, leaderboards and sweep comparisons.

>>> from raybench.results import load
>>> res = load("s3://bucket/prefix", sweep="paper-s2")
>>> res.runs            # one row per trial: model, scenario, seed, hyperparameters, versions
>>> res.metrics.merge(res.runs, on=["sweep", "trial_id"])   # any table joins on trial id
>>> res.paper_table()   # Table 1 / Table 2 layout, mean and 95% interval over seeds

One concept per module: :mod:`~raybench.results.loading` (:func:`load`, :class:`Results`),
:mod:`~raybench.results.tables` (the paper table, leaderboards, comparisons, confusion counts),
:mod:`~raybench.results.timeline` (when and where trials ran, slot utilisation),
:mod:`~raybench.results.output` (what ``raybench results`` prints) and
:mod:`~raybench.results.choices` (the names it offers; pandas-free, for the CLI's parser).
The names below are imported on first use (PEP 562), so importing ``choices`` stays cheap.
(No submodule is named like a public function: importing ``raybench.results.load`` would
otherwise replace the function ``load`` on the package.)
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raybench.results.choices import FORMATS, INTERVALS, QUERIES
    from raybench.results.loading import Results, load
    from raybench.results.output import query, render, to_markdown
    from raybench.results.tables import OVERALL, class_order, format_paper_table

#: Public name -> the submodule that defines it.
_SOURCES = {"FORMATS": "choices", "INTERVALS": "choices", "QUERIES": "choices",
            "Results": "loading", "load": "loading", "query": "output", "render": "output",
            "to_markdown": "output", "OVERALL": "tables", "class_order": "tables",
            "format_paper_table": "tables"}

__all__ = ["FORMATS", "INTERVALS", "OVERALL", "QUERIES", "Results", "class_order",
           "format_paper_table", "load", "query", "render", "to_markdown"]


def __getattr__(name: str) -> Any:
    """Imports the submodule that defines ``name`` on first access (PEP 562)."""
    if name not in _SOURCES:
        raise AttributeError(f"module 'raybench.results' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"raybench.results.{_SOURCES[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
