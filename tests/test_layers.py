"""The import graph keeps DESIGN.md's layering: no cycle (lazy imports included), engine/ never
imports tune/, nothing below tune/ imports the sweep driver, config and the low tables import
nothing above them, training never imports the report, and data/ models/ cam/ store do not
import upward. The graph is read by ``layers_graph.py`` beside this file."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import layers_graph as ig

REPO = Path(__file__).resolve().parents[1]
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


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_training_never_reaches_the_report() -> None:
    reached = _reachable("raybench.engine.run")
    assert "raybench.tracking" in reached  # the mirror is on the path...
    assert sorted(m for m in reached if ig._under(m, "raybench.report")) == []  # ...the report not


def test_config_reads_the_low_tables() -> None:
    assert {"raybench.catalog.cam_methods", "raybench.catalog.scenarios"} <= \
        _reachable("raybench.config")


@pytest.mark.parametrize("edge,refused", [
    (("raybench.data.dataset", "raybench.cam.roi"), True),
    (("raybench.store", "raybench.camset"), False),
    (("raybench.engine.worker", "raybench.tune.search"), True),
    (("raybench.trial", "raybench.config"), False),
    (("raybench.results", "raybench.report.write"), True),
    (("raybench.config.spec", "raybench.cam.methods"), True),
    (("raybench.config.checks", "raybench.data.scenarios"), True),
    (("raybench.config.spec", "raybench.catalog.cam_methods"), False),
    (("raybench.config.spec", "raybench.models.table"), False),
    (("raybench.config.spec", "raybench.models.zoo"), True),
    (("raybench.catalog.cam_methods", "raybench.models.table"), False),
    (("raybench.catalog.scenarios", "raybench.config"), True),
    (("raybench.models.table", "raybench.config.fields"), True),
    (("raybench.store", "raybench.models.table"), True),
    (("raybench.tracking", "raybench.report"), True),
    (("raybench.engine.run", "raybench.report.figures"), True),
    (("raybench.engine.figures", "raybench.plots"), False),
])
def test_upward_flags_an_edge_that_points_up(edge: tuple[str, str], refused: bool) -> None:
    a, b = edge
    assert (ig.upward({a: {b}, b: set()}) == [f"{a} -> {b}"]) is refused


def test_the_old_tree_had_three_upward_imports() -> None:
    old = {"raybench.config.spec": {"raybench.cam.catalog"},
           "raybench.config.checks": {"raybench.data.scenario_table"},
           "raybench.tracking": {"raybench.report"}}
    assert len(ig.upward({**old, **{b: set() for bs in old.values() for b in bs}})) == 3


def test_cycles_and_levels_on_a_small_graph() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"b"}, "d": set()}
    assert [c for c in ig.components(g) if len(c) > 1] == [["b", "c"]]
    assert ig.levels(g) == 2 and ig.levels({"x": {"y"}, "y": {"z"}, "z": set()}) == 3


def test_no_function_is_over_60_lines() -> None:
    """DESIGN.md section 3: small functions; none over 60 lines (decorators and docstring
    included), so a change that grows one past it splits it."""
    import ast

    long = []
    for path in sorted((REPO / "raybench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > 60:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} {lines}")
    assert long == []


def test_no_cycle_even_counting_type_checking_imports() -> None:
    """A cycle is a cycle: imports under ``if TYPE_CHECKING:`` count here too, and
    ``from pkg import name`` names the package itself unless ``name`` is a submodule (a type
    that two modules need goes in a protocol below both)."""
    import ast

    mods = {}
    for path in (REPO / "raybench").rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[mod] |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in mods:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    graph[mod].add(sub if sub in mods else node.module)
    assert [c for c in ig.components(graph) if len(c) > 1] == []
