"""Writes trials with chosen per-image probabilities (val and test), patients, sources and
roi through ResultStore, with metrics rows from raybench.metrics as engine/run.py writes them."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench.metrics import split_rows
from raybench.store import ResultStore

THREE = ("normal", "bacteria", "covid19")


def probs_for(y: np.ndarray, skill: float, rng: np.random.Generator, k: int = 3) -> np.ndarray:
    logits = rng.normal(size=(y.size, k))
    logits[np.arange(y.size), y] += skill
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def write_preds_trial(store: ResultStore, sweep: str, trial_id: str, *, model: str, seed: int,
                      y: np.ndarray, probs: dict[str, np.ndarray], scenario: str = "sc",
                      patients: Optional[Sequence[str]] = None,
                      sources: Optional[Sequence[str]] = None, roi: Optional[str] = None,
                      labels: Sequence[str] = THREE, extra_metrics: Sequence[dict] = (),
                      run_fields: Optional[dict] = None) -> None:
    """A trial as engine/run.py writes it: metrics rows (per source too) and predictions of
    every split in ``probs`` (split -> (N, K)), the same N images in each split; plus
    ``extra_metrics`` rows (ROI focus, say) and ``run_fields`` in its runs row."""
    rows, frames = [], []
    for split, p in probs.items():
        rows += split_rows(y, p, labels, split, sources)
        frames.append(pd.DataFrame({
            S.SPLIT: split, S.IMAGE_ID: [f"{split}{i:03d}" for i in range(y.size)],
            S.PATIENT_ID: list(patients) if patients is not None else None,
            S.SOURCE: list(sources) if sources is not None else "src",
            S.LABEL: [labels[i] for i in y], S.PREDICTED: [labels[i] for i in p.argmax(1)],
            **{f"p_{lab}": p[:, i] for i, lab in enumerate(labels)}}))
    store.write_table(sweep, "metrics", trial_id, rows + list(extra_metrics))
    store.write_table(sweep, "predictions", trial_id, pd.concat(frames, ignore_index=True),
                      S.predictions_schema(labels))
    store.write_table(sweep, "runs", trial_id, [{
        "model": model, "scenario": scenario, "seed": seed, "status": "completed", "roi": roi,
        "epochs": 1, "lr": 3e-4, **(run_fields or {})}])
