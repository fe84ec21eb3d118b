"""Section ``analysis`` (only when named): the statistics of a study at the scale the sweeps
run, as whole commands.

* ``significance_s``: ``raybench results --table significance`` of 5 models x 10 seeds with
  2,000 test films per trial (:func:`raybench.bench.generate_results`), every pair over the
  seeds by the two-level bootstrap (2,000 replicates);
* ``report_s``: ``raybench report`` of 13 models x 3 scenarios x 10 seeds (390 trials, 2,000
  test films each).

Each command runs in its own process (imports included), so the figure is what a user waits.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from raybench import schema as S
from raybench.bench.options import BenchOptions, Section
from raybench.bench.results import RESULTS_SWEEP, generate_results, result_tables
from raybench.models import names

#: The report study: every registered model (13) x 3 scenarios x 10 seeds.
REPORT_MODELS = len(names.MODEL_NAMES)
REPORT_SCENARIOS = ("scenario1", "scenario2", "scenario3")
SEEDS = 10
FILMS = 2000


def _report_trial(i: int, n_pred: int) -> dict[str, Any]:
    """Trial ``i`` of the report study: :func:`result_tables` with its model, scenario and
    seed set from ``i`` (models cycle fastest, then seeds, then scenarios)."""
    import pyarrow as pa

    tables = result_tables(i, n_pred)
    runs = tables["runs"].to_pylist()
    runs[0].update({S.MODEL: names.MODEL_NAMES[i % REPORT_MODELS], S.SEED: i // REPORT_MODELS % SEEDS,
                    S.SCENARIO: REPORT_SCENARIOS[i // (REPORT_MODELS * SEEDS)]})
    tables["runs"] = pa.Table.from_pylist(runs, S.RUNS_SCHEMA)
    return tables


def _write_report_range(args: tuple[str, int, int, int]) -> None:
    import pyarrow.parquet as pq

    root, start, stop, n_pred = args
    for i in range(start, stop):
        for table, arrow in _report_trial(i, n_pred).items():
            pq.write_table(arrow, os.path.join(root, RESULTS_SWEEP, table, f"t{i:05d}.parquet"))


def generate_report_study(root: str, n_pred: int = FILMS, procs: int = 2) -> int:
    """13 models x 3 scenarios x 10 seeds under ``root``; returns the number of trials."""
    trials = REPORT_MODELS * len(REPORT_SCENARIOS) * SEEDS
    for table in S.TABLES:
        os.makedirs(os.path.join(root, RESULTS_SWEEP, table), exist_ok=True)
    chunks = [(root, a, min(a + 50, trials), n_pred) for a in range(0, trials, 50)]
    with ProcessPoolExecutor(procs) as pool:
        list(pool.map(_write_report_range, chunks))
    return trials


def timed_command(args: list[str]) -> dict[str, float]:
    """Wall seconds, CPU seconds of the child (user + system) and the 1-minute load average
    before and after one ``raybench`` command; raises when it fails."""
    before_cpu = os.times()
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "raybench.cli", *args], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after_cpu = os.times()
    cpu = (after_cpu.children_user - before_cpu.children_user
           + after_cpu.children_system - before_cpu.children_system)
    return {"elapsed_s": wall, "cpu_s": cpu, "load_before": load_before,
            "load_after": os.getloadavg()[0]}


def bench_analysis(opts: BenchOptions) -> dict[str, Any]:
    """``significance_s`` and ``report_s`` (a quick run shrinks the films to 200)."""
    films = 200 if opts.quick else FILMS
    with tempfile.TemporaryDirectory() as root:
        generate_results(root, 5 * SEEDS, films)
        sig = timed_command(["results", root, "--table", "significance", "--format", "csv"])
    with tempfile.TemporaryDirectory() as root:
        trials = generate_report_study(root, films)
        rep = timed_command(["report", root, "--sweep", RESULTS_SWEEP, "--out",
                             os.path.join(root, "report")])
    return {"significance_s": sig["elapsed_s"], "report_s": rep["elapsed_s"], "films": films,
            "report_trials": trials, "significance": sig, "report": rep}


def _lines(out: dict[str, Any]) -> list[str]:
    return [f"significance_s             {out['significance_s']:>12.3g}  (5 models x 10 seeds, "
            f"{out['films']} films; cpu {out['significance']['cpu_s']:.1f} s, load "
            f"{out['significance']['load_before']:.1f})",
            f"report_s                   {out['report_s']:>12.3g}  ({out['report_trials']} "
            f"trials; cpu {out['report']['cpu_s']:.1f} s, load "
            f"{out['report']['load_before']:.1f})"]


SECTION = Section("analysis", bench_analysis,
                  headline={"significance_s": "significance_s", "report_s": "report_s"},
                  targets={"significance_s": ("<=", 10.0), "report_s": ("<=", 60.0)},
                  lines=_lines, default=False)
