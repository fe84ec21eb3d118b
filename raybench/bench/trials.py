"""Section ``trials``: orchestration overhead of short single-worker trials on local Ray.

``trial_overhead_s``: a sweep of short in-process trials run one at a time, wall time minus the
trials' training time (epoch seconds), per trial.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from raybench import schema as S
from raybench.bench.options import BenchOptions, Section


def trial_bench_spec(root: Path, trials: int) -> Any:
    """A sweep of ``trials`` short single-worker trials (cnnx, 32 px, one epoch each)."""
    from raybench.config import load_spec

    seeds = ", ".join(str(s) for s in range(trials))
    return load_spec(None, [
        "name=trialbench", f"results={root / 'results'}", f"data.cache_dir={root / 'cache'}",
        "model.image_size=32", "data.synthetic.per_class=12", "data.synthetic.size=32",
        "train.epochs=1", "train.batch_size=8", "train.num_threads=1", "sweep.mode=paper",
        "sweep.models=[cnnx]", f"sweep.seeds=[{seeds}]", "scaling.max_concurrent_trials=1"])


def bench_trials(opts: BenchOptions) -> dict[str, Any]:
    """``trial_overhead_s``: (sweep wall time - trials' epoch seconds) / trials, serial trials."""
    import ray

    from raybench.data.dataset import prepare_data
    from raybench.store import ResultStore
    from raybench.cluster import ensure_ray
    from raybench.tune.sweep import run_sweep

    started = not ray.is_initialized()
    start = time.perf_counter()
    ensure_ray(None)
    ray_init = time.perf_counter() - start
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spec = trial_bench_spec(Path(tmp), opts.trials)
            prepare_data(spec.data, 32)  # the synthetic set and its cache: once per node
            start = time.perf_counter()
            summary = run_sweep(spec)
            wall = time.perf_counter() - start
            store = ResultStore(spec.results)
            epochs = store.read_table(spec.name, S.EPOCHS_TABLE)
            runs = store.read_table(spec.name, S.RUNS_TABLE)
    finally:
        if started:
            ray.shutdown()
    train_s = float(epochs[S.SECONDS].sum())
    return {"trial_overhead_s": (wall - train_s) / opts.trials, "trials": opts.trials,
            S.STATUS_COMPLETED: sum(s[S.STATUS] == S.STATUS_COMPLETED for s in summary),
            "sweep_wall_s": wall, "training_s": train_s, "ray_init_s": ray_init,
            "trial_wall_s_mean": float(runs[S.WALL_S].mean()), "concurrency": 1}


def _lines(out: dict[str, Any]) -> list[str]:
    return [f"trials: {out['trials']} in {out['sweep_wall_s']:.1f} s, training "
            f"{out['training_s']:.1f} s, Ray start {out['ray_init_s']:.1f} s"]


SECTION = Section("trials", bench_trials, headline={"trial_overhead_s": "trial_overhead_s"},
                  targets={"trial_overhead_s": ("<=", 1.0)}, lines=_lines)
