"""raybench's import graph and module sizes: modules, levels, upward imports, cycles.

    python benchmarks/import_graph.py                 # the working tree's raybench/
    python benchmarks/import_graph.py --rev 6ce5df4   # a commit (read with git archive)
    python benchmarks/import_graph.py --json

The definitions (modules, edges, levels, cycles, upward imports) are those of
``tests/helpers/layers_graph.py``, which ``tests/test_layers.py`` asserts on; this script prints the
figures, for the working tree or any commit, so they compare across commits.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the checkout's tests package
from tests.helpers.layers_graph import components, graph, levels, module_files, upward  # noqa: E402


def figures(root: Path, largest: int = 8) -> dict[str, Any]:
    """Module count, largest modules (lines), and the graph's levels, upward imports, cycles."""
    files = module_files(root)
    g = graph(root)
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in files.items()}
    cycles = [c for c in components(g) if len(c) > 1]
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:largest]
    return {"modules": len(files), "lines": sum(sizes.values()),
            "largest": [{"module": m, "lines": n} for m, n in top],
            "edges": sum(len(v) for v in g.values()), "levels": levels(g),
            "upward_imports": upward(g), "cycles": cycles}


def checkout(rev: str, into: Path) -> Path:
    """``raybench/`` of commit ``rev`` extracted under ``into`` (``git archive``)."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev, "raybench"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def _print(fig: dict[str, Any], label: str) -> None:
    print(f"{label}: {fig['modules']} modules, {fig['lines']} lines, {fig['edges']} import "
          f"edges, {fig['levels']} levels, {len(fig['upward_imports'])} upward imports, "
          f"{len(fig['cycles'])} cycles")
    print("  largest: " + ", ".join(f"{r['module']} {r['lines']}" for r in fig["largest"]))
    for edge in fig["upward_imports"]:
        print(f"  upward: {edge}")
    for cycle in fig["cycles"]:
        print(f"  cycle: {' <-> '.join(cycle)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a commit to measure instead of the working tree")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = checkout(args.rev, Path(tmp)) if args.rev else REPO
        fig = figures(root)
    if args.json:
        print(json.dumps(fig, indent=2))
    else:
        _print(fig, args.rev or "working tree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
