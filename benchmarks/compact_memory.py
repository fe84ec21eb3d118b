"""Memory of ``ResultStore.compact`` at the end of a sweep, side by side: the streamed compact
(row groups of ``COMPACT_BATCH`` trial files) against the whole-table way it replaced (each
table read whole with ``read_arrow``, then written with ``write_parquet_atomic``).

Generates one sweep of N trials (``raybench.bench.generate_results``: runs 1 row, metrics 24,
epochs 20 and predictions P rows per trial, raybench's schemas), then compacts the same files
R times with each way in ABBA order (A B B A ...), each run in a fresh process that starts with
no snapshot (``ru_maxrss`` never goes down within a process). Each run prints its RSS before
``compact``, its peak (``ru_maxrss``), the difference and its seconds; then the medians of each
way, the snapshots' row counts (equal for both, or it fails) and the 1-minute load.

    python benchmarks/compact_memory.py --trials 2500 --predictions 624 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import rss_mib  # noqa: E402

WAYS = ("streamed", "whole")


def whole_table_compact(root: str, sweep: str) -> None:
    """The compaction before row groups: every table read whole, then written at once."""
    from raybench import schema as S
    from raybench import storage
    from raybench.store import _INDEX_KEY, COMPACT_DIR, ResultStore

    store = ResultStore(root)
    for table in S.TABLES:
        arrow, stamps = store.read_arrow(sweep, table)
        if arrow is None:
            continue
        arrow = arrow.replace_schema_metadata({_INDEX_KEY: json.dumps(stamps).encode()})
        storage.write_parquet_atomic(store.location(sweep, COMPACT_DIR, f"{table}.parquet"),
                                     arrow)
        del arrow


def child(way: str, root: str) -> dict[str, Any]:
    """One compaction in this process, from no snapshot; its memory and time."""
    from raybench.bench import RESULTS_SWEEP as SWEEP
    from raybench.store import COMPACT_DIR, ResultStore

    shutil.rmtree(os.path.join(root, SWEEP, COMPACT_DIR), ignore_errors=True)
    before = rss_mib()
    max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if way == "streamed":
        ResultStore(root).compact(SWEEP)
    else:
        whole_table_compact(root, SWEEP)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"way": way, "rss_before_mib": round(before, 1),
            "maxrss_before_mib": round(max_before, 1), "peak_mib": round(peak, 1),
            "peak_above_start_mib": round(peak - before, 1), "seconds": round(seconds, 2),
            "load_1m": round(os.getloadavg()[0], 2)}


def snapshot_rows(root: str) -> dict[str, int]:
    import pyarrow.parquet as pq

    from raybench.bench import RESULTS_SWEEP as SWEEP
    from raybench.store import COMPACT_DIR

    folder = Path(root, SWEEP, COMPACT_DIR)
    return {p.stem: pq.read_metadata(p).num_rows for p in sorted(folder.glob("*.parquet"))}


def run_child(way: str, root: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", way, "--root", root],
                         check=True, capture_output=True, text=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["snapshot_rows"] = snapshot_rows(root)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2500)
    parser.add_argument("--predictions", type=int, default=624, help="test images per trial")
    parser.add_argument("--repeats", type=int, default=2, help="ABBA rounds (4 runs each)")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.root)))
        return
    from raybench.bench import generate_results

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        generate_results(root, args.trials, args.predictions)
        print(f"generated {args.trials} trials x {args.predictions} predictions in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        runs = []
        for _ in range(args.repeats):
            for way in ("streamed", "whole", "whole", "streamed"):
                runs.append(run_child(way, root))
                print(json.dumps(runs[-1]), flush=True)
    counts = {json.dumps(r["snapshot_rows"], sort_keys=True) for r in runs}
    assert len(counts) == 1, f"the two ways wrote different snapshots: {counts}"
    report = {"trials": args.trials, "predictions": args.predictions, "runs": runs,
              "snapshot_rows": runs[0]["snapshot_rows"], "load_1m": round(os.getloadavg()[0], 2)}
    for way in WAYS:
        mine = [r for r in runs if r["way"] == way]
        report[f"{way}_peak_above_start_mib_median"] = statistics.median(
            r["peak_above_start_mib"] for r in mine)
        report[f"{way}_seconds_median"] = statistics.median(r["seconds"] for r in mine)
    text = json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
