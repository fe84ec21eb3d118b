"""Per-model sensitivity and specificity over seeds with two-level bootstrap intervals.

:meth:`raybench.results.Results.paper_table` calls :func:`rate_table`: one trial stands for
each seed (the best by validation balanced accuracy, as in :func:`raybench.compare.cells`),
its predictions are pooled with the other seeds', and :func:`raybench.stats.rates_over_seeds`
resamples seeds, then patients (images when patient ids are unknown).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench import pooling, stats
from raybench.compare import ROI, TWO_LEVEL, Tables, cells, split_predictions
from raybench.errors import RaybenchError

RATES = ("sensitivity", "specificity")


def prob_labels(preds: pd.DataFrame) -> list[str]:
    """The classes the predictions score (their ``p_<class>`` columns with values)."""
    return [str(c)[len(S.PROB_PREFIX):] for c in preds.columns
            if str(c).startswith(S.PROB_PREFIX) and preds[c].notna().any()]


def _seed_arrays(trial: pd.DataFrame, labels: list[str]) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """(y, predicted, units) of one trial's images: class indices and patient (else image) ids."""
    index = {lab: i for i, lab in enumerate(labels)}
    trial = trial[trial[S.LABEL].isin(index) & trial[S.PREDICTED].isin(index)]
    y = trial[S.LABEL].map(index).to_numpy(np.int64)
    pred = trial[S.PREDICTED].map(index).to_numpy(np.int64)
    patients = trial[S.PATIENT_ID] if S.PATIENT_ID in trial else None
    units = patients if patients is not None and patients.notna().all() else trial[S.IMAGE_ID]
    return y, pred, units.astype(str).to_numpy()


def _selected_predictions(res: Tables, scenario: str, roi: Optional[str], split: str,
                          by_source: bool) -> pd.DataFrame:
    """The split's predictions of one trial per model and seed (several sources only, when
    ``by_source``); empty when the results hold none."""
    runs = cells(res, scenario)
    if roi is not None:
        runs = runs[runs[ROI] == roi]
    try:
        preds = split_predictions(res, split)
    except RaybenchError:
        return pd.DataFrame()
    preds = preds.merge(runs[[S.SWEEP, S.TRIAL_ID, S.MODEL]], on=[S.SWEEP, S.TRIAL_ID])
    if by_source:
        if S.SOURCE not in preds:
            return preds[:0]
        several = preds.groupby(S.TRIAL_ID)[S.SOURCE].transform("nunique") > 1
        preds = preds[several & preds[S.SOURCE].notna()]
    return preds


def rate_table(res: Tables, scenario: str, *, roi: Optional[str] = "full", split: str = "test",
               by_source: bool = False, n_boot: int = 2000, seed: int = 0,
               pooled: bool = True) -> pd.DataFrame:
    """One row per model (and source) and class: ``sensitivity``, ``sensitivity_low``,
    ``sensitivity_high``, the same for ``specificity``, ``seeds`` and ``interval``.

    With ``pooled`` the seed variance of every multi-seed row is moderated across the table's
    rows on the logit scale (one prior per rate, :mod:`raybench.pooling`), else each row's
    own two-level bootstrap interval."""
    preds = _selected_predictions(res, scenario, roi, split, by_source)
    if preds.empty:
        return pd.DataFrame()
    labels = prob_labels(preds)
    rows: list[dict] = []
    cells: dict[str, list[pooling.SeedCell]] = {name: [] for name in RATES}
    groups = [S.MODEL, S.SOURCE] if by_source else [S.MODEL]
    for key, part in preds.groupby(groups, sort=True):
        seeds = [_seed_arrays(t, labels) for _, t in part.groupby(S.TRIAL_ID, sort=True)]
        rng = np.random.default_rng(seed)
        out = stats.rate_cells(seeds, len(labels), n_boot, rng)
        ivs = {name: [stats.two_level_interval(pt, bt, rng, stats.RATE_BOUNDS)
                      for pt, bt in out[name]] for name in RATES}
        ident = dict(zip(groups, key, strict=True))
        films = rate_films(seeds, len(labels))
        for c, label in enumerate(labels):
            row: dict = {**ident, S.CLASS: label, "seeds": len(seeds), "interval": TWO_LEVEL}
            for name in RATES:
                iv = ivs[name][c]
                row.update({name: iv.value, f"{name}_low": iv.ci_low, f"{name}_high": iv.ci_high})
                cells[name].append(pooling.SeedCell.of_rate(*out[name][c], films[name][c]))
            rows.append(row)
    if pooled:
        _pool_rates(rows, cells)
    return pd.DataFrame(rows)


def rate_films(seeds: list[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int
               ) -> dict[str, np.ndarray]:
    """Per rate, the films behind each class's rate on each seed (K, S): the class's films
    (sensitivity), the other classes' (specificity)."""
    of_class = np.stack([np.bincount(y, minlength=k) for y, _, _ in seeds], axis=1)
    return {"sensitivity": of_class, "specificity": of_class.sum(axis=0) - of_class}


def _pool_rates(rows: list[dict], cells: dict[str, list[pooling.SeedCell]]) -> None:
    """The moderated interval of every row with several seeds; the ``interval`` column
    names the method and both rates' prior dof."""
    priors = {}
    for name in RATES:
        ivs, priors[name] = pooling.pooled_intervals(cells[name], stats.RATE_BOUNDS)
        for row, iv in zip(rows, ivs, strict=True):
            if row["seeds"] > 1:
                row.update({f"{name}_low": iv.ci_low, f"{name}_high": iv.ci_high})
    label = pooled_label(priors)
    for row in rows:
        if row["seeds"] > 1:
            row["interval"] = label


def pooled_label(priors: dict[str, pooling.Prior]) -> str:
    """``two-level bootstrap, seed variance pooled (prior dof: sensitivity 7.3, ...)``; the
    variance pooled is the logit rate's (:meth:`raybench.pooling.SeedCell.of_rate`)."""
    dofs = ", ".join(f"{name} {pooling.dof_words(p.d0)}" for name, p in priors.items())
    return f"{TWO_LEVEL}, seed variance pooled across the table (prior dof: {dofs})"
