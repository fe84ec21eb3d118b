"""Checks that a finished sweep is whole, through the results store (a local root or S3)."""
from __future__ import annotations

from raybench.store import ResultStore


def trials_once_each(store: ResultStore, sweep: str, trials: list[str], epochs: int) -> None:
    """Every trial completed once, epochs 1..N once each, no duplicated prediction, and no
    trial file cut short (every Parquet footer and CAM archive whole)."""
    assert store.damaged_trial_files(sweep) == {}
    runs = store.read_table(sweep, "runs")
    assert sorted(runs["trial_id"]) == trials, runs
    assert (runs["status"] == "completed").all(), runs[["trial_id", "status", "error"]]
    preds = store.read_table(sweep, "predictions")
    assert not preds.duplicated(["trial_id", "split", "image_id"]).any()
    assert sorted(preds["trial_id"].unique()) == trials
    per_trial = store.read_table(sweep, "epochs").groupby("trial_id")["epoch"].apply(sorted)
    assert per_trial.to_dict() == {t: list(range(1, epochs + 1)) for t in trials}
