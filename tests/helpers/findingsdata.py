"""Two studies for the findings: one with every kind of finding planted, one clean.

Both test 240 images (80 per class, two per patient) from two hospitals, ``hospA`` and
``hospB`` (alternating), with the labels of :data:`comparedata.THREE`.

Planted (2 seeds, tested on an external file):
- ``good``: right on 80% of images with probability 0.8, except that 30 of hospB's 40 normal
  films are called covid19 (a covid19 specificity and normal sensitivity gap between sources);
  its ROI focus is 0.20 (below the 224 px chance level 0.29); trained again with the lungs
  hidden (``outside_lungs``) it scores the same (the lungs-hidden control).
- ``shaky``: near perfect on validation, near chance on test (selection disagreement).
- ``flat``: predicts bacteria for every image with probability 0.97 (collapsed, ECE 0.64).

Clean (3 seeds, a held-out split): ``a`` and ``b`` right on 75% / 70% of the images with
that confidence (calibrated), errors spread evenly over sources, ROI focus 0.60, and the same
predictions on validation as on test.
"""
from __future__ import annotations

import numpy as np

from tests.helpers.comparedata import write_preds_trial
from raybench.store import ResultStore

N = 240
Y = np.repeat(np.arange(3), N // 3)
SOURCES = ["hospA" if i % 2 == 0 else "hospB" for i in range(N)]
PATIENTS = [f"pt{i // 2}" for i in range(N)]


def _confident(pred: np.ndarray, top: float) -> np.ndarray:
    """(N, 3) probabilities with ``top`` on the predicted class, the rest split evenly."""
    p = np.full((pred.size, 3), (1.0 - top) / 2)
    p[np.arange(pred.size), pred] = top
    return p


def _errors(rng: np.random.Generator, share_right: float) -> np.ndarray:
    """Predictions right on ``share_right`` of the images, else the next class."""
    right = rng.random(N) < share_right
    return np.where(right, Y, (Y + 1) % 3)


def _roi_rows(value: float) -> list[dict]:
    return [{"split": "test", "class": "all", "metric": metric, "value": v,
             "ci_low": None, "ci_high": None, "source": None}
            for metric, v in (("roi_focus", value), ("pointing_game", value), ("roi_n", 60.0))]


def _good(rng: np.random.Generator) -> np.ndarray:
    pred = np.where(rng.random(N) < 0.95, Y, (Y + 1) % 3)
    hosp_b_normal = np.flatnonzero((Y == 0) & (np.array(SOURCES) == "hospB"))
    pred[hosp_b_normal[:30]] = 2  # 30 of hospB's 40 normal films called covid19
    return _confident(pred, 0.8)


def write_planted(store: ResultStore, sweep: str = "planted") -> None:
    """The planted study (see the module docstring)."""
    external = {"test_from": "external.parquet", "test_sources": "hospA,hospB"}
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        good = _good(rng)
        shaky_val, shaky_test = _confident(_errors(rng, 0.98), 0.9), _confident(
            _errors(rng, 0.4), 0.6)
        flat = _confident(np.ones(N, np.int64), 0.97)
        trials = {"good": ({"test": good, "val": good}, None, _roi_rows(0.20)),
                  "good-hidden": ({"test": good, "val": good}, "outside_lungs", ()),
                  "shaky": ({"test": shaky_test, "val": shaky_val}, None, ()),
                  "flat": ({"test": flat, "val": flat}, None, ())}
        for name, (probs, roi, extra) in trials.items():
            model = name.split("-")[0]
            write_preds_trial(store, sweep, f"{name}-s{seed}", model=model, seed=seed, y=Y,
                              probs=probs, patients=PATIENTS, sources=SOURCES, roi=roi,
                              extra_metrics=extra, run_fields=external)


def write_clean(store: ResultStore, sweep: str = "clean") -> None:
    """The clean study (see the module docstring)."""
    for seed in (0, 1, 2):
        rng = np.random.default_rng(100 + seed)
        for model, share in (("a", 0.75), ("b", 0.7)):
            p = _confident(_errors(rng, share), share)
            write_preds_trial(store, sweep, f"{model}-s{seed}", model=model, seed=seed, y=Y,
                              probs={"test": p, "val": p}, patients=PATIENTS, sources=SOURCES,
                              extra_metrics=_roi_rows(0.60), run_fields={
                                  "test_sources": "hospA,hospB"})
