"""A sweep's report: ``report.md`` plus a self-contained ``report.html`` (PNG figures inlined).

Modules, each importing only the ones listed before it:

- :mod:`~raybench.report.blocks`: the blocks a section is made of (headings and paragraphs as
  str, :class:`Figure`, :class:`Table`, :class:`Grid` of small multiples).
- :mod:`~raybench.report.figures`: the report's figures as blocks, drawn with the primitives of
  :mod:`raybench.plots` (shared with the MLflow mirror).
- :mod:`~raybench.report.evidence`: the statistics sections (test origin, ranking and
  significance, per source, shortcut control, calibration).
- :mod:`~raybench.report.sections`: every section in order (:func:`build_blocks`).
- :mod:`~raybench.report.render`: Markdown and HTML, with a table of contents.
- :mod:`~raybench.report.write`: :func:`write_report`, atomic.
"""
from __future__ import annotations

from raybench.plots import cam_grid_plot, new_figure
from raybench.report.blocks import Block, Figure, Grid, Table
from raybench.report.figures import (
    cam_grid_figure, confusion_figure, gantt_figure, learning_curves_plot, save_figure,
)
from raybench.report.render import headings
from raybench.report.sections import build_blocks
from raybench.report.write import write_report

__all__ = ["Block", "Figure", "Grid", "Table", "build_blocks", "cam_grid_figure", "cam_grid_plot",
           "confusion_figure", "gantt_figure", "headings", "learning_curves_plot", "new_figure",
           "save_figure", "write_report"]
