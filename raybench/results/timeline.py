"""When and where each trial ran: one row per trial with its slot (lane) on its node, and the
sweep's slot utilisation (the report's Gantt chart and ``raybench bench``'s sweep section).
"""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from raybench import schema as S


TIMELINE_COLUMNS: list[str] = [S.SWEEP, S.TRIAL_ID, S.MODEL, S.SCENARIO, S.SEED, S.STATUS,
                                S.NODE, S.ACCELERATOR, S.STARTED_AT, S.FINISHED_AT]


def trial_timeline(runs: pd.DataFrame) -> pd.DataFrame:
    """The timeline of a runs table (see :meth:`Results.timeline`)."""
    cols = [c for c in TIMELINE_COLUMNS if c in runs.columns]
    if S.STARTED_AT not in cols or S.FINISHED_AT not in cols:
        return pd.DataFrame(columns=TIMELINE_COLUMNS + ["duration_s", "slot"])
    frame = runs[cols].dropna(subset=[S.STARTED_AT, S.FINISHED_AT])
    frame = frame.sort_values([S.STARTED_AT, S.TRIAL_ID]).reset_index(drop=True)
    frame["duration_s"] = (frame[S.FINISHED_AT] - frame[S.STARTED_AT]).dt.total_seconds()
    frame["slot"] = _lanes(frame)
    return frame


def _lanes(frame: pd.DataFrame) -> list[int]:
    """Greedy interval colouring per node: the lowest lane whose last trial has finished."""
    ends: dict[object, list[pd.Timestamp]] = {}
    lanes = []
    for node, start, end in zip(frame[S.NODE].fillna("?"), frame[S.STARTED_AT],
                                frame[S.FINISHED_AT], strict=True):
        busy = ends.setdefault(node, [])
        lane = next((i for i, t in enumerate(busy) if t <= start), len(busy))
        busy[lane:lane + 1] = [end]
        lanes.append(lane)
    return lanes


def utilisation(timeline: pd.DataFrame, slots: Optional[int] = None) -> float:
    """Sum of trial durations / (slots x span), span = first start to last finish.

    Args:
        timeline: :meth:`Results.timeline` rows.
        slots: Trial slots of the cluster; default the lanes the timeline used (the most
            trials that ran at once on each node, summed over nodes).
    """
    if timeline.empty:
        return math.nan
    span = (timeline[S.FINISHED_AT].max() - timeline[S.STARTED_AT].min()).total_seconds()
    if slots is None:
        slots = int(timeline.groupby(timeline[S.NODE].fillna("?"))["slot"].max().add(1).sum())
    return float(timeline["duration_s"].sum() / (slots * span)) if span > 0 else math.nan
