"""Section ``results``: ``results_load_s``, :func:`raybench.results.load` of a sweep of
10,000 trials (with snapshots), written in raybench's layout."""
from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from raybench import schema as S
from raybench.bench.options import BenchOptions, Section
from raybench.models import names

RESULTS_SWEEP = "bench"
_RESULT_MODELS = (names.PAPER_MODEL, "resnet18", "resnet50", "densenet201", "squeezenet")
_RESULT_METRICS = ("sensitivity", "specificity", "ppv", "f1", "support")


def result_tables(i: int, n_pred: int) -> dict[str, Any]:
    """Trial ``i``'s four tables as raybench writes them (runs 1 row, metrics 24, epochs 20)."""
    import pyarrow as pa


    rng = np.random.default_rng(i)
    base = {S.SWEEP: RESULTS_SWEEP, S.TRIAL_ID: f"t{i:05d}"}
    runs = [{**base, S.MODEL: _RESULT_MODELS[i % 5], S.SCENARIO: "scenario2", S.SEED: i // 5 % 10,
             S.LR: float(rng.choice([1e-4, 3e-4, 1e-3])), S.BATCH_SIZE: 15, S.EPOCHS: 20,
             S.IMAGE_SIZE: 224, S.PRETRAINED: True, S.PARAMS: 11_000_000, S.EPOCHS_RUN: 20,
             S.WALL_S: 600.0, S.TRAIN_IMAGES_PER_S: 14.1, S.DEVICE: "cpu", S.PRECISION: "fp32",
             S.NUM_WORKERS: 1, S.RAYBENCH_VERSION: "0.1.0", S.TORCH_VERSION: "2.x",
             S.RAY_VERSION: "2.60.0", S.TIMM_VERSION: "1.x", S.STATUS: S.STATUS_COMPLETED}]
    metrics = [{**base, S.SPLIT: "test", S.CLASS: c, S.METRIC: m, S.VALUE: float(rng.random()),
                S.CI_LOW: 0.0, S.CI_HIGH: 1.0} for c in S.LABELS for m in _RESULT_METRICS]
    metrics += [{**base, S.SPLIT: "test", S.CLASS: "all", S.METRIC: m, S.VALUE: float(rng.random()),
                 S.CI_LOW: None, S.CI_HIGH: None}
                for m in ("accuracy", "balanced_accuracy", "macro_auc", "n")]
    epochs = [{**base, S.EPOCH: e, S.TRAIN_LOSS: 1 / e, S.VAL_LOSS: 1.1 / e, S.VAL_ACCURACY: 0.5,
               S.VAL_BALANCED_ACCURACY: 0.5, S.VAL_MACRO_AUC: 0.7, S.LR: 3e-4, S.SECONDS: 30.0,
               S.TRAIN_IMAGES_PER_S: 14.1} for e in range(1, 21)]
    # one label per film in every trial, as in a real study (the same test films): with a
    # label per trial the comparisons' per-model bootstrap cache never met a model twice
    labels = np.random.default_rng(n_pred).integers(0, 4, n_pred)
    probs = rng.dirichlet(np.ones(4), n_pred)
    preds = {S.SWEEP: [RESULTS_SWEEP] * n_pred, S.TRIAL_ID: [base[S.TRIAL_ID]] * n_pred,
             S.IMAGE_ID: [f"img{k:04d}" for k in range(n_pred)],
             S.SPLIT: ["test"] * n_pred, S.PATIENT_ID: [f"p{k:04d}" for k in range(n_pred)],
             S.SOURCE: ["bench"] * n_pred, S.LABEL: [S.LABELS[k] for k in labels],
             S.PREDICTED: [S.LABELS[k] for k in probs.argmax(1)],
             **{f"p_{lab}": probs[:, k] for k, lab in enumerate(S.LABELS)}}
    return {S.RUNS_TABLE: pa.Table.from_pylist(runs, S.RUNS_SCHEMA),
            S.METRICS_TABLE: pa.Table.from_pylist(metrics, S.METRICS_SCHEMA),
            S.EPOCHS_TABLE: pa.Table.from_pylist(epochs, S.EPOCHS_SCHEMA),
            S.PREDICTIONS_TABLE: pa.Table.from_pydict(preds, S.predictions_schema(S.LABELS))}


def write_result_range(args: tuple[str, int, int, int]) -> None:
    """Writes trials ``start..stop`` (plain ``pq.write_table``: the load is what is timed)."""
    import pyarrow.parquet as pq

    root, start, stop, n_pred = args
    for i in range(start, stop):
        for table, arrow in result_tables(i, n_pred).items():
            pq.write_table(arrow, os.path.join(root, RESULTS_SWEEP, table, f"t{i:05d}.parquet"))


def generate_results(root: str, trials: int, n_pred: int, procs: int = 2) -> None:
    """A sweep of ``trials`` trials in raybench's layout under ``root``."""

    for table in S.TABLES:
        os.makedirs(os.path.join(root, RESULTS_SWEEP, table), exist_ok=True)
    chunks = [(root, a, min(a + 500, trials), n_pred) for a in range(0, trials, 500)]
    with ProcessPoolExecutor(procs) as pool:
        list(pool.map(write_result_range, chunks))


def timed_load(root: str) -> tuple[float, dict[str, int]]:
    """Seconds to load the sweep and materialise all four tables, and their row counts."""
    from raybench.results.loading import load

    start = time.perf_counter()
    res = load(root, RESULTS_SWEEP)
    rows = {t: len(res.table(t)) for t in S.TABLES}
    return time.perf_counter() - start, rows


def bench_results(opts: BenchOptions, n_pred: int = 50) -> dict[str, Any]:
    """``results_load_s``: loading every table of ``results_trials`` trials (with snapshots)."""
    from raybench.store import ResultStore

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        generate_results(root, opts.results_trials, n_pred)
        generated = time.perf_counter() - start
        start = time.perf_counter()
        ResultStore(root).compact(RESULTS_SWEEP)
        compact = time.perf_counter() - start
        seconds, rows = timed_load(root)
    return {"results_load_s": seconds, "trials": opts.results_trials, "rows": rows,
            "compact_s": compact, "generate_s": generated}


def _lines(out: dict[str, Any]) -> list[str]:
    return [f"results_load_s             {out['results_load_s']:>12.3g}  "
            f"({out['trials']} trials)"]


SECTION = Section("results", bench_results, headline={"results_load_s": "results_load_s"},
                  lines=_lines)
