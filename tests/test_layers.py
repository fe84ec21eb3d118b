"""The import graph keeps DESIGN.md's layering: no cycle (lazy imports included), engine/ never
imports tune/, nothing below tune/ imports the sweep driver, and data/ models/ cam/ store do
not import upward. The analysis is benchmarks/import_graph.py's (it also prints the figures)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import import_graph as ig  # noqa: E402

GRAPH = ig.graph(REPO)


def test_the_scan_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    assert len(GRAPH) > 60 and "raybench.tune.sweep" in GRAPH
    # cli imports the sweep driver only inside a command's run(): a lazy import is an edge.
    assert "raybench.tune.sweep" in GRAPH["raybench.cli"]
    # raybench/__init__.py names its API under TYPE_CHECKING and imports it lazily by string.
    assert "raybench.results" not in GRAPH["raybench"]


def test_no_import_cycle() -> None:
    assert [c for c in ig.components(GRAPH) if len(c) > 1] == []


def test_engine_never_imports_tune() -> None:
    edges = [f"{a} -> {b}" for a, bs in GRAPH.items() for b in bs
             if a.startswith("raybench.engine") and b.startswith("raybench.tune")]
    assert edges == []


def test_nothing_below_tune_imports_the_sweep_driver() -> None:
    importers = sorted(a for a, bs in GRAPH.items() if ig.SWEEP_DRIVER in bs)
    assert importers and all(any(ig._under(a, p) for p in ig.ABOVE_TUNE) for a in importers), importers


def test_no_upward_import() -> None:
    assert ig.upward(GRAPH) == []


@pytest.mark.parametrize("edge,refused", [
    (("raybench.data.dataset", "raybench.cam.roi"), True),
    (("raybench.store", "raybench.camset"), False),
    (("raybench.engine.worker", "raybench.tune.search"), True),
    (("raybench.trial", "raybench.config"), False),
    (("raybench.results", "raybench.report.write"), True),
])
def test_upward_flags_an_edge_that_points_up(edge: tuple[str, str], refused: bool) -> None:
    a, b = edge
    assert (ig.upward({a: {b}, b: set()}) == [f"{a} -> {b}"]) is refused


def test_cycles_and_levels_on_a_small_graph() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"b"}, "d": set()}
    assert [c for c in ig.components(g) if len(c) > 1] == [["b", "c"]]
    assert ig.levels(g) == 2 and ig.levels({"x": {"y"}, "y": {"z"}, "z": set()}) == 3
