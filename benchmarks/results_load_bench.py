"""How long ``raybench.results.load`` takes on a sweep of 10,000 trials.

Generates N trials (runs: 1 row, metrics: 24 rows, epochs: 20 rows, predictions: P rows each,
the same schemas raybench writes) into a temporary folder, then times, each in a fresh
``Results`` object: the first load (every per-trial file read), ``compact`` (writing the
snapshots) and a load with the snapshots; and the check a ``--resume`` makes for cut-short
trial files (``ResultStore.damaged_trial_files``) before and after the snapshots. Prints one
line per measurement.

    python benchmarks/results_load_bench.py --trials 10000 --predictions 50
"""
from __future__ import annotations

import argparse
import tempfile
import time

from raybench.bench import RESULTS_SWEEP as SWEEP
from raybench.bench import generate_results as generate
from raybench.bench import timed_load
from raybench.bench import write_result_range as _write_range
from raybench.results import load
from raybench.store import ResultStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--predictions", type=int, default=50, help="test images per trial")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        generate(root, args.trials, args.predictions)
        print(f"generated {args.trials} trials in {time.perf_counter() - start:.1f} s")
        seconds, rows = timed_load(root)
        print(f"first load (every per-trial file): {seconds:.2f} s  rows {rows}")
        before = _damage_check(root, "no snapshots: every trial file's footer")
        start = time.perf_counter()
        ResultStore(root).compact(SWEEP)
        print(f"compact: {time.perf_counter() - start:.2f} s")
        after = _damage_check(root, "with snapshots")
        print(f"resume damage check, ratio without/with snapshots: {before / after:.1f}x")
        seconds, rows = timed_load(root)
        print(f"load with snapshots: {seconds:.2f} s  rows {rows}")
        for i in range(10):  # ten trials rerun after the snapshot
            _write_range((root, i, i + 1, args.predictions + 1))
        seconds, rows = timed_load(root)
        print(f"load with snapshots + 10 rerun trials: {seconds:.2f} s  rows {rows}")
        start = time.perf_counter()
        res = load(root, SWEEP)
        _ = res.runs  # the first access reads the table: that is what is timed
        print(f"load runs table only, with snapshots: {time.perf_counter() - start:.2f} s")


def _damage_check(root: str, what: str) -> float:
    start = time.perf_counter()
    damaged = ResultStore(root).damaged_trial_files(SWEEP)
    seconds = time.perf_counter() - start
    print(f"resume damage check, {what}: {seconds:.2f} s  damaged {len(damaged)}")
    return seconds


if __name__ == "__main__":
    main()
