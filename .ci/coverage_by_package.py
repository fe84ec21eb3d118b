"""Prints the line + branch coverage of raybench/ in total and per package, from the combined
coverage data (``coverage json``); run after ``pytest --cov`` in the repository root."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

#: The figures issue-tracked per package (store is the module raybench/store.py).
GROUPS = ("tune", "engine", "data", "cam", "report", "store")


def _group(path: str) -> str:
    parts = Path(path).parts
    tail = parts[parts.index("raybench") + 1:] if "raybench" in parts else parts
    if len(tail) > 1:
        return tail[0]
    return Path(tail[0]).stem if Path(tail[0]).stem in GROUPS else "(top-level modules)"


def _percent(c: dict[str, int]) -> float:
    total = c["num_statements"] + c["num_branches"]
    return 100.0 * (c["covered_lines"] + c["covered_branches"]) / total if total else 100.0


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        subprocess.run([sys.executable, "-m", "coverage", "json", "-q", "-o", str(out)], check=True)
        files = json.loads(out.read_text())["files"]
    keys = ("covered_lines", "num_statements", "covered_branches", "num_branches")
    sums: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(keys, 0))
    for path, info in files.items():
        for name in (_group(path), "TOTAL"):
            for key in keys:
                sums[name][key] += info["summary"][key]
    lines = [f"{'coverage (line+branch)':<24}{'lines':>14}{'branches':>14}{'total':>8}"]
    names = [*GROUPS, *sorted(set(sums) - {*GROUPS, "TOTAL"}), "TOTAL"]
    for name in [n for n in names if n in sums]:
        c = sums[name]
        lines.append(f"{name:<24}{c['covered_lines']:>7}/{c['num_statements']:<6}"
                     f"{c['covered_branches']:>7}/{c['num_branches']:<6}{_percent(c):>7.1f}%")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
