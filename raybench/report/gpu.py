"""The report's GPU cost section: predicted against actual sweep time, and per model the
GPU-hours (wall time x GPU share x workers) and peak memory (measured by the probe and by the
trials themselves)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from raybench import predict
from raybench import schema as S
from raybench.report.blocks import Block, Table
from raybench.results import Results

GIB = 1024 ** 3


def _actual_minutes(runs: pd.DataFrame) -> float:
    span = runs[S.FINISHED_AT].max() - runs[S.STARTED_AT].min()
    return float(span.total_seconds()) / 60 if pd.notna(span) else float("nan")


def _per_model(runs: pd.DataFrame, plan: Any) -> pd.DataFrame:
    share = runs[S.GPU_SHARE].fillna(0.0) * runs[S.NUM_WORKERS].fillna(1)
    frame = runs.assign(gpu_hours=runs[S.WALL_S].fillna(0.0) * share / 3600,
                        peak_gib=runs[S.PEAK_MEMORY_BYTES] / GIB)
    table = frame.groupby(S.MODEL).agg(trials=(S.TRIAL_ID, "count"),
                                       gpu_share=(S.GPU_SHARE, "max"),
                                       gpu_hours=("gpu_hours", "sum"),
                                       peak_gib=("peak_gib", "max"))
    if plan:
        probed = pd.DataFrame(plan["cells"]).groupby(S.MODEL).agg(
            probe_peak_gib=("peak_gib", "max"), predicted_trial_min=("trial_s", "mean"))
        table = table.join(probed.assign(predicted_trial_min=probed.predicted_trial_min / 60))
    return table.round(3)


def gpu_blocks(res: Results, sweep: str) -> list[Block]:
    """The section, or nothing for a sweep that held no GPU."""
    runs = res.runs
    if S.GPU_SHARE not in runs or runs[S.GPU_SHARE].isna().all():
        return []
    plan = predict.load(res.store, sweep)
    line = f"Actual sweep time {_actual_minutes(runs):.1f} min (first start to last finish)"
    if plan:
        line += (f"; predicted {plan['packed_s'] / 60:.1f} min packed on {plan['gpus']} x "
                 f"{plan['gpu']} ({plan['gpu_hours']:.2f} GPU-hours)")
    return ["## GPU cost", line + ". GPU-hours per model: wall time x GPU share x workers.",
            Table(_per_model(runs, plan))]
