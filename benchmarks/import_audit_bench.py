"""``raybench data import folder`` followed by ``raybench data audit`` of the same films: this
tree against an older commit (default 6ce5df4, the serial code before the Ray fan-out), whole
commands, alternating the two in one run.

Usage: python benchmarks/import_audit_bench.py [--films DIR] [--n 3600] [--rounds 2] [--rev REV]

The films (film-like 1024 x 1024 grayscale PNGs, :func:`raybench.bench.data.generate_films`)
are generated into ``--films`` when it holds fewer than ``--n``; the older commit's package is
extracted with ``git archive`` into a temporary folder. Each round runs old then new (the
order flips every round), each as two fresh processes: import to ``<films>/m-<code>.parquet``,
then audit of that manifest (``--json`` to /dev/null). The rate is films / (import + audit
seconds); the ratio is new median over old median. The load average is printed before and
after: on a shared machine the ratio, measured side by side, is the figure to quote.
Not a timed test: it prints the numbers recorded in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _load() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def _extract(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(HERE), "archive", rev, "raybench"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _timed(code: Path, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    # cwd: ``python -m`` puts the working folder first on sys.path, before PYTHONPATH: run from
    # this checkout, the old commit's commands would import this tree's package
    subprocess.run([sys.executable, "-m", "raybench.cli", *args], env=env, check=True,
                   cwd=code,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _pair(code: Path, films: Path, name: str) -> tuple[float, float]:
    manifest = films / f"m-{name}.parquet"
    t_import = _timed(code, "data", "import", "folder", str(films), "--out", str(manifest))
    t_audit = _timed(code, "data", "audit", str(manifest), "--json")
    return t_import, t_audit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", default=os.path.expanduser("~/.cache/raybench/bench-films-1024"))
    parser.add_argument("--n", type=int, default=3600, help="films (generated when missing)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rev", default="6ce5df4", help="the older commit")
    args = parser.parse_args()
    from raybench.bench.data import film_folder

    films = film_folder(args.films, args.n)
    count = len(list(films.rglob("*.png")))
    print(f"{count} films in {films}; {os.cpu_count()} cores; load average {_load()}")
    with tempfile.TemporaryDirectory(prefix="import-audit-") as tmp:
        codes = {"old": _extract(args.rev, Path(tmp)), "new": HERE}
        for name, code in codes.items():
            where = subprocess.run([sys.executable, "-c", "import raybench; print(raybench.__file__)"],
                                   env={**os.environ, "PYTHONPATH": str(code)}, cwd=code,
                                   check=True, capture_output=True, text=True).stdout.strip()
            print(f"{name}: {where}")
        rates: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(args.rounds):
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                t_import, t_audit = _pair(codes[name], films, name)
                rate = count / (t_import + t_audit)
                rates[name].append(rate)
                print(f"round {r + 1} {name:3s}: import {t_import:6.1f} s, audit {t_audit:6.1f} s,"
                      f" {rate:6.1f} films/s (load {_load()})")
    old, new = statistics.median(rates["old"]), statistics.median(rates["new"])
    print(f"median films/s: old ({args.rev}) {old:.1f}, new {new:.1f}; new / old {new / old:.2f}")


if __name__ == "__main__":
    main()
