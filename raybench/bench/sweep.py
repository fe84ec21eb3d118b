"""Section ``sweep`` (only when named: ``--only sweep``; it takes minutes): one experiment per sweep.

On local Ray with 4 logical CPUs, an Optuna sweep of 4 cells x 4 samples of equal tiny trials
against a ``paper`` grid of 16 equal trials: ``sweep_wall_ratio`` is wall time optuna / grid,
``sweep_utilisation`` the Optuna sweep's trial time / (4 slots x its span from first trial start
to last trial end).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from raybench import schema as S
from raybench.bench.options import BenchOptions, Section

SWEEP_SLOTS = 4


def sweep_bench_specs(root: Path, cells: int = 4, samples: int = 4) -> dict[str, Any]:
    """Equal trials two ways: Optuna (``cells`` x ``samples``, a one-point space) and a grid."""
    from raybench.config import load_spec

    base = [f"results={root / 'results'}", f"data.cache_dir={root / 'cache'}",
            # Trials of a few seconds: long against a slot's first-trial stagger, still tiny.
            "model.image_size=32", "data.synthetic.per_class=48", "data.synthetic.size=32",
            "train.epochs=4", "train.batch_size=8", "train.num_threads=1", "cam.enabled=false",
            "sweep.models=[cnnx]", "sweep.asha=false", "sweep.progress_interval_s=600"]
    seeds = lambda n: "[" + ", ".join(str(i) for i in range(n)) + "]"  # noqa: E731
    optuna = load_spec(None, base + [
        "name=bench-optuna", "sweep.mode=optuna", f"sweep.seeds={seeds(cells)}",
        f"sweep.num_samples={samples}", "sweep.space.lr_min=3e-4", "sweep.space.lr_max=3.0001e-4",
        "sweep.space.batch_sizes=[8]", "sweep.space.options.stride=[3]"])
    grid = load_spec(None, base + ["name=bench-grid", "sweep.mode=paper",
                                   f"sweep.seeds={seeds(cells * samples)}"])
    return {"optuna": optuna, "grid": grid}


def _timed_sweep(spec: Any) -> tuple[float, Any]:
    from raybench.results.loading import load
    from raybench.tune.sweep import run_sweep

    start = time.perf_counter()
    run_sweep(spec)
    wall = time.perf_counter() - start
    return wall, load(spec.results, spec.name).timeline()


def bench_sweep(opts: BenchOptions) -> dict[str, Any]:
    """``sweep_wall_ratio`` (optuna / grid wall time) and ``sweep_utilisation`` (optuna)."""
    import ray

    from raybench.data.dataset import prepare_data
    from raybench.results.timeline import utilisation
    from raybench.cluster import ensure_ray

    cells, samples = (2, 2) if opts.quick else (4, 4)
    started = not ray.is_initialized()
    ensure_ray(None, num_cpus=SWEEP_SLOTS)
    out: dict[str, Any] = {"cells": cells, "samples": samples, "slots": SWEEP_SLOTS}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            specs = sweep_bench_specs(Path(tmp), cells, samples)
            prepare_data(specs["grid"].data, 32)  # the synthetic set and its cache, once
            for name in ("grid", "optuna"):
                wall, tl = _timed_sweep(specs[name])
                span = (tl[S.FINISHED_AT].max() - tl[S.STARTED_AT].min()).total_seconds()
                out[name] = {"wall_s": wall, "trials": len(tl), "span_s": span,
                             "trial_s_mean": float(tl["duration_s"].mean()),
                             "max_concurrent": int(tl["slot"].max() + 1),
                             "utilisation": utilisation(tl, SWEEP_SLOTS)}
    finally:
        if started:
            ray.shutdown()
    out["sweep_wall_ratio"] = out["optuna"]["wall_s"] / out["grid"]["wall_s"]
    out["sweep_utilisation"] = out["optuna"]["utilisation"]
    return out


def _lines(out: dict[str, Any]) -> list[str]:
    lines = []
    for name in ("grid", "optuna"):
        part = out[name]
        lines.append(f"sweep {name}: {part['trials']} trials in {part['wall_s']:.1f} s, span "
                     f"{part['span_s']:.1f} s, trial {part['trial_s_mean']:.1f} s, up to "
                     f"{part['max_concurrent']} at once, utilisation {part['utilisation']:.3f}")
    return lines


SECTION = Section("sweep", bench_sweep,
                  headline={"sweep_wall_ratio": "sweep_wall_ratio",
                            "sweep_utilisation": "sweep_utilisation"},
                  targets={"sweep_wall_ratio": ("<=", 1.15), "sweep_utilisation": (">=", 0.9)},
                  lines=_lines, default=False)
