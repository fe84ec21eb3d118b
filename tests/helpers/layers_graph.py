"""raybench's import graph, read from the source (no import): modules, edges, cycles, levels,
and the edges that point up DESIGN.md's layering.

Definitions (``benchmarks/import_graph.py`` prints the same figures for any commit):

* a *module* is a ``.py`` file under ``raybench/`` (a package's ``__init__.py`` is the package);
* an *edge* A -> B is an ``import`` / ``from ... import`` in A that names module B, at module
  level or inside a function (lazy imports count), but not under ``if TYPE_CHECKING:``;
  ``from raybench.x import y`` names ``raybench.x.y`` when that is a module, else ``raybench.x``;
* *levels*: the longest import chain, counted in strongly connected components;
* a *cycle* is a strongly connected component of more than one module;
* an *upward import* is an edge that :data:`FORBIDDEN` refuses: ``cli > tune > engine >
  trial / data / models / cam > config > the low tables (catalog/, models/table.py, names.py)
  > store > storage``; ``report > results > compare > stats``; ``tracking`` and ``plots`` never
  import the report; training (``engine/``) never imports the report or the results.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Iterator

#: Everything above the low tables (what they must never import).
_ABOVE_TABLES = ("raybench.config", "raybench.cam", "raybench.data", "raybench.models",
                 "raybench.trial", "raybench.engine", "raybench.tune", "raybench.tracking",
                 "raybench.plots", "raybench.results", "raybench.compare", "raybench.report",
                 "raybench.bench", "raybench.cli")
#: Modules of the low tables' layer that live beside their builders (``models/``): counted as
#: ``raybench.catalog`` wherever they appear in an edge.
LOW_TABLES = ("raybench.models.table", "raybench.models.names")
#: Module prefix -> prefixes it must not import (the layering of DESIGN.md section 2).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "raybench.storage": ("raybench.store", "raybench.catalog", *_ABOVE_TABLES),
    "raybench.store": ("raybench.catalog", *_ABOVE_TABLES),
    "raybench.catalog": _ABOVE_TABLES,
    "raybench.config": ("raybench.cam", "raybench.data", "raybench.models", "raybench.trial",
                        "raybench.engine", "raybench.tune", "raybench.tracking",
                        "raybench.plots", "raybench.results", "raybench.compare",
                        "raybench.report", "raybench.bench", "raybench.cli"),
    "raybench.models": ("raybench.data", "raybench.cam", "raybench.engine", "raybench.tune",
                        "raybench.trial", "raybench.store", "raybench.results",
                        "raybench.report", "raybench.cli"),
    "raybench.data": ("raybench.cam", "raybench.engine", "raybench.tune", "raybench.trial",
                      "raybench.results", "raybench.report", "raybench.cli"),
    "raybench.cam": ("raybench.engine", "raybench.tune", "raybench.trial", "raybench.results",
                     "raybench.report", "raybench.cli"),
    "raybench.plots": ("raybench.cam", "raybench.data", "raybench.models", "raybench.engine",
                       "raybench.tune", "raybench.tracking", "raybench.results",
                       "raybench.report", "raybench.cli"),
    "raybench.trial": ("raybench.engine", "raybench.tune", "raybench.cli"),
    "raybench.tracking": ("raybench.engine", "raybench.tune", "raybench.results",
                          "raybench.report", "raybench.bench", "raybench.cli"),
    "raybench.engine": ("raybench.tune", "raybench.cli", "raybench.bench", "raybench.results",
                        "raybench.report"),
    "raybench.stats": ("raybench.compare", "raybench.results", "raybench.report"),
    "raybench.compare": ("raybench.results", "raybench.report"),
    "raybench.results": ("raybench.report",),
}
#: The sweep driver, and the modules allowed to import it (those above ``tune/``).
SWEEP_DRIVER = "raybench.tune.sweep"
ABOVE_TUNE = ("raybench.tune", "raybench.cli", "raybench.bench", "raybench.demo",
              "raybench.submit")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root/raybench``."""
    out = {}
    for path in sorted((root / "raybench").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _named(node: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """(base module, imported names) of an import node, relative imports resolved."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, []
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = module.split(".")
            keep = len(parts) - node.level + (1 if is_package else 0)
            base = ".".join(parts[:keep] + ([base] if base else []))
        yield base, [a.name for a in node.names]


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The raybench modules ``module`` imports (see the module docstring for the rules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for base, names in _named(node, module, path.name == "__init__.py"):
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            out.update(subs)
            if base in modules and len(subs) < max(len(names), 1):
                out.add(base)
    out.discard(module)
    return out


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the raybench modules it imports."""
    files = module_files(root)
    names = set(files)
    return {m: imports_of(m, p, names) for m, p in files.items()}


def components(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), each sorted; dependencies come first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def levels(g: dict[str, set[str]]) -> int:
    """Length of the longest import chain, in strongly connected components."""
    comps = components(g)
    where = {m: i for i, comp in enumerate(comps) for m in comp}
    level: dict[int, int] = {}
    for i, comp in enumerate(comps):  # Tarjan emits a component after everything it imports
        deps = {where[w] for m in comp for w in g[m]} - {i}
        level[i] = 1 + max((level[d] for d in deps), default=0)
    return max(level.values(), default=0)


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _layer(module: str) -> str:
    return "raybench.catalog" if module in LOW_TABLES else module


def upward(g: dict[str, set[str]]) -> list[str]:
    """``A -> B`` for every edge that :data:`FORBIDDEN` refuses, and every import of the sweep
    driver from below ``tune/``."""
    bad = set()
    for a, targets in g.items():
        for b in targets:
            refused = [f for p, fs in FORBIDDEN.items() if _under(_layer(a), p) for f in fs]
            if any(_under(_layer(b), f) for f in refused):
                bad.add(f"{a} -> {b}")
            if b == SWEEP_DRIVER and not any(_under(a, p) for p in ABOVE_TUNE):
                bad.add(f"{a} -> {b}")
    return sorted(bad)
