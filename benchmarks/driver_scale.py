"""Driver at scale: many trials through the real searcher, scheduler and store bookkeeping.

The trainable reports once and returns (after writing its run row the way a trial does), so
what is measured is the driver: :class:`raybench.tune.search.CellSearcher` with its Optuna
journal, per-cell ASHA (optuna mode), Tune's controller and experiment checkpoints, and
:func:`raybench.tune.outcome.finalize`. Everything else is ``raybench.tune.sweep.run_sweep``.

    python benchmarks/driver_scale.py --cells 2500 --samples 4 --json driver.json   # 10,000
    python benchmarks/driver_scale.py --cells 2000 --mode paper --first-only         # start-up

Samples the driver's RSS every ``--every`` finished trials, and records how long Tune's
experiment checkpoints took (each ``TuneController.save_to_dir``, Ray 2.60).
``--first-only`` stops at the first finished trial (Ctrl-C semantics) and reports the time
and RSS there: the start-up figure of issue 23.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import CHECKPOINTS, rss_mib, time_checkpoints  # noqa: E402

START = time.monotonic()
STARTUP_RSS_MIB = rss_mib()  # the interpreter with this script's imports, before Ray


def peak_rss_mib() -> float:
    """The process's peak RSS so far (``ru_maxrss``: KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report_once(config: dict[str, Any]) -> None:
    """A trainable that reports one epoch and writes its run row (no data, no model)."""
    import random

    from ray import tune

    from raybench import schema as S
    from raybench.store import ResultStore
    from raybench.trial import TrialConfig, searched_values

    trial = TrialConfig.from_ray(config)
    spec = trial.trial_spec
    value = random.Random(trial.trial_id).random()
    ResultStore(spec.results).write_table(spec.name, "runs", trial.trial_id, [{
        S.MODEL: spec.model.name, S.SCENARIO: trial.cell.scenario, S.SEED: spec.train.seed,
        **searched_values(spec), S.EPOCHS: 1, S.EPOCHS_RUN: 1, S.STATUS: S.STATUS_COMPLETED}])
    tune.report({spec.sweep.metric: value, S.EPOCH: 1})


def bench_spec(root: str, cells: int, samples: int, mode: str) -> Any:
    from raybench.config import load_spec

    seeds = ", ".join(str(i) for i in range(cells))
    return load_spec(None, [
        "name=drv", f"results={root}", "model.image_size=32", "train.epochs=1",
        "sweep.models=[cnnx]", f"sweep.seeds=[{seeds}]", f"sweep.mode={mode}",
        f"sweep.num_samples={samples}", "sweep.progress_interval_s=60", "cam.enabled=false",
        "scaling.cpus_per_worker=1", "sweep.max_concurrent_per_study=1"])


class Watch(threading.Thread):
    """Counts run rows; samples RSS every ``every``; optionally interrupts at the first one."""

    def __init__(self, runs: Path, every: int, first_only: bool) -> None:
        super().__init__(daemon=True)
        self.runs, self.every, self.first_only = runs, every, first_only
        self.samples: list[dict[str, Any]] = []
        self.first: dict[str, Any] = {}
        self.stop = threading.Event()

    def count(self) -> int:
        return sum(1 for _ in os.scandir(self.runs)) if self.runs.is_dir() else 0

    def run(self) -> None:
        mark = self.every
        while not self.stop.is_set():
            done = self.count()
            if done and not self.first:
                self.first = {"t_s": round(time.monotonic() - START, 1),
                              "driver_rss_mib": round(rss_mib(), 1)}
                print(json.dumps({"first_trial": self.first}), flush=True)
                if self.first_only:
                    os.kill(os.getpid(), signal.SIGINT)
                    return
            if done >= mark:
                row = {"trials": done, "driver_rss_mib": round(rss_mib(), 1),
                       "t_s": round(time.monotonic() - START, 1),
                       "load_1m": round(os.getloadavg()[0], 2)}
                self.samples.append(row)
                print(json.dumps(row), flush=True)
                mark = (done // self.every + 1) * self.every
            self.stop.wait(0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2500)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--mode", default="optuna", choices=["optuna", "paper"])
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--num-cpus", type=int, default=4)
    parser.add_argument("--first-only", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    from ray import tune

    from raybench.errors import SweepInterrupted
    from raybench.tune import experiment
    from raybench.tune.sweep import run_sweep

    experiment.trainable = lambda spec: tune.with_resources(  # type: ignore[assignment]
        report_once, spec.scaling.worker_resources)
    time_checkpoints()
    ckpt = CHECKPOINTS
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "runs")
        watch = Watch(Path(root) / "drv" / "runs", args.every, args.first_only)
        watch.start()
        status = "completed"
        try:
            run_sweep(bench_spec(root, args.cells, args.samples, args.mode),
                      num_cpus=args.num_cpus, overwrite=True)
        except SweepInterrupted:
            status = "interrupted"
        watch.stop.set()
        total = watch.count()
    report = {"cells": args.cells, "samples": args.samples, "mode": args.mode,
              "trials_done": total, "status": status, "first_trial": watch.first,
              "wall_s": round(time.monotonic() - START, 1), "samples_rss": watch.samples,
              "final_driver_rss_mib": round(rss_mib(), 1),
              # compaction included: run_sweep ends with ResultStore.compact
              "startup_rss_mib": round(STARTUP_RSS_MIB, 1),
              "peak_rss_mib": round(peak_rss_mib(), 1),
              "peak_above_first_trial_mib": round(
                  peak_rss_mib() - watch.first.get("driver_rss_mib", 0.0), 1),
              "checkpoints": len(ckpt),
              "checkpoint_s_first_10_mean": round(sum(ckpt[:10]) / max(len(ckpt[:10]), 1), 4),
              "checkpoint_s_last_10_mean": round(sum(ckpt[-10:]) / max(len(ckpt[-10:]), 1), 4),
              "checkpoint_s_max": round(max(ckpt, default=0.0), 4),
              "load_1m": round(os.getloadavg()[0], 2)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
