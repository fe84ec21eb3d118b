"""The names ``raybench results`` offers: tables, output formats, interval methods.

Pandas-free, so the CLI builds its parser from them without importing pandas; the modules that
act on each name (:mod:`~raybench.results.output`, :mod:`~raybench.results.tables`) read them
from here.
"""
from __future__ import annotations

from raybench import schema as S

#: Tables :func:`~raybench.results.output.query` builds besides the stored ones.
DERIVED: tuple[str, ...] = ("paper", "significance", "findings")
#: What ``raybench results --table`` offers: two stored tables, then the derived ones.
QUERIES: tuple[str, ...] = (S.RUNS_TABLE, S.METRICS_TABLE, *DERIVED)
#: Output formats of :func:`~raybench.results.output.render` (``--format``).
FORMATS: tuple[str, ...] = ("table", "csv", "json", "markdown")
#: Interval methods of a paper table (``interval`` argument, ``--interval``).
INTERVALS: tuple[str, ...] = ("bootstrap", "unpooled", "t")
