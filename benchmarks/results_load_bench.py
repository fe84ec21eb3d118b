"""How long ``raybench.results.load`` takes on a sweep of 10,000 trials.

Generates N trials (runs: 1 row, metrics: 24 rows, epochs: 20 rows, predictions: P rows each,
the same schemas raybench writes) into a temporary folder, then times, each in a fresh
``Results`` object: the first load (every per-trial file read), ``compact`` (writing the
snapshots) and a load with the snapshots. Prints one line per measurement.

    python benchmarks/results_load_bench.py --trials 10000 --predictions 50
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raybench import schema as S
from raybench.results import load
from raybench.store import ResultStore

SWEEP = "bench"
MODELS = ("cnnx", "resnet18", "resnet50", "densenet201", "squeezenet")
METRICS = ("sensitivity", "specificity", "ppv", "f1", "support")


def _tables(i: int, n_pred: int) -> dict[str, pa.Table]:
    rng = np.random.default_rng(i)
    trial = f"t{i:05d}"
    base = {S.SWEEP: SWEEP, S.TRIAL_ID: trial}
    runs = [{**base, S.MODEL: MODELS[i % 5], S.SCENARIO: "scenario2", S.SEED: i // 5 % 10,
             "lr": float(rng.choice([1e-4, 3e-4, 1e-3])), "batch_size": 15, "epochs": 20,
             "image_size": 224, "pretrained": True, "params": 11_000_000, "epochs_run": 20,
             "wall_s": 600.0, "train_images_per_s": 14.1, "device": "cpu", "precision": "fp32",
             "num_workers": 1, "raybench_version": "0.1.0", "torch_version": "2.x",
             "ray_version": "2.60.0", "timm_version": "1.x", S.STATUS: "completed"}]
    metrics = [{**base, S.SPLIT: "test", S.CLASS: c, S.METRIC: m, S.VALUE: float(rng.random()),
                S.CI_LOW: 0.0, S.CI_HIGH: 1.0} for c in S.LABELS for m in METRICS]
    metrics += [{**base, S.SPLIT: "test", S.CLASS: "all", S.METRIC: m, S.VALUE: float(rng.random()),
                 S.CI_LOW: None, S.CI_HIGH: None}
                for m in ("accuracy", "balanced_accuracy", "macro_auc", "n")]
    epochs = [{**base, S.EPOCH: e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_accuracy": 0.5,
               "val_balanced_accuracy": 0.5, "val_macro_auc": 0.7, "lr": 3e-4, "seconds": 30.0,
               "train_images_per_s": 14.1} for e in range(1, 21)]
    labels = rng.integers(0, 4, n_pred)
    probs = rng.dirichlet(np.ones(4), n_pred)
    preds = {S.SWEEP: [SWEEP] * n_pred, S.TRIAL_ID: [trial] * n_pred,
             S.IMAGE_ID: [f"img{k:04d}" for k in range(n_pred)],
             S.LABEL: [S.LABELS[k] for k in labels],
             S.PREDICTED: [S.LABELS[k] for k in probs.argmax(1)],
             **{f"p_{lab}": probs[:, k] for k, lab in enumerate(S.LABELS)}}
    return {"runs": pa.Table.from_pylist(runs, S.RUNS_SCHEMA),
            "metrics": pa.Table.from_pylist(metrics, S.METRICS_SCHEMA),
            "epochs": pa.Table.from_pylist(epochs, S.EPOCHS_SCHEMA),
            "predictions": pa.Table.from_pydict(preds, S.predictions_schema(S.LABELS))}


def _write_range(args: tuple[str, int, int, int]) -> None:
    root, start, stop, n_pred = args
    for i in range(start, stop):
        for table, arrow in _tables(i, n_pred).items():
            pq.write_table(arrow, os.path.join(root, SWEEP, table, f"t{i:05d}.parquet"))


def generate(root: str, trials: int, n_pred: int, procs: int = 2) -> None:
    """Writes the sweep's per-trial files (plain pq.write_table: the load is what is timed)."""
    for table in S.TABLES:
        os.makedirs(os.path.join(root, SWEEP, table), exist_ok=True)
    chunks = [(root, a, min(a + 500, trials), n_pred) for a in range(0, trials, 500)]
    with ProcessPoolExecutor(procs) as pool:
        list(pool.map(_write_range, chunks))


def timed_load(root: str) -> tuple[float, dict[str, int]]:
    """Seconds to load the sweep and materialise all four tables, and their row counts."""
    start = time.perf_counter()
    res = load(root, SWEEP)
    rows = {t: len(res.table(t)) for t in S.TABLES}
    return time.perf_counter() - start, rows


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
        start = time.perf_counter()
        ResultStore(root).compact(SWEEP)
        print(f"compact: {time.perf_counter() - start:.2f} s")
        seconds, rows = timed_load(root)
        print(f"load with snapshots: {seconds:.2f} s  rows {rows}")
        for i in range(10):  # ten trials rerun after the snapshot
            _write_range((root, i, i + 1, args.predictions + 1))
        seconds, rows = timed_load(root)
        print(f"load with snapshots + 10 rerun trials: {seconds:.2f} s  rows {rows}")
        start = time.perf_counter()
        res = load(root, SWEEP)
        res.runs
        print(f"load runs table only, with snapshots: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
