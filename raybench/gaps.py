"""Source gaps as paired differences within seeds.

Two sources of one test split (hospitals) are scored by the same trained models, so the seed
effect is shared: the gap between them is taken per seed (sensitivity or specificity of one
class on source B minus source A, same model, same seed), resampled over patients within each
seed (one patient draw shared by both sources and all seeds, as in
:func:`raybench.stats.shared_weights`) and its seed-to-seed spread is the spread of the gap,
not of each side. The seed variance is pooled across every gap of the table
(:mod:`raybench.pooling`). A pair with the source the models trained on (the one whose films
also make up the validation split) is the internal-versus-external comparison of Zech et al.
(2018).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Optional

import numpy as np
import pandas as pd

from raybench import pooling, stats
from raybench import schema as S
from raybench.compare import Tables, cells, split_predictions
from raybench.errors import RaybenchError
from raybench.intervals import RATES, prob_labels

COLUMNS = [S.MODEL, S.CLASS, S.METRIC, "source_a", "source_b", "value_a", "value_b", "gap",
           S.CI_LOW, S.CI_HIGH, "p", "seeds", "dof", "counts_a", "counts_b", "internal"]


@dataclass(frozen=True)
class SeedSources:
    """One seed's test films of one model: labels, predictions, patients, source per film."""

    y: np.ndarray
    predicted: np.ndarray
    units: np.ndarray
    source: np.ndarray


def _seed(trial: pd.DataFrame, labels: list[str]) -> SeedSources:
    index = {lab: i for i, lab in enumerate(labels)}
    trial = trial[trial[S.LABEL].isin(index) & trial[S.PREDICTED].isin(index)]
    patients = trial[S.PATIENT_ID] if S.PATIENT_ID in trial else None
    units = patients if patients is not None and patients.notna().all() else trial[S.IMAGE_ID]
    return SeedSources(trial[S.LABEL].map(index).to_numpy(np.int64),
                       trial[S.PREDICTED].map(index).to_numpy(np.int64),
                       units.astype(str).to_numpy(), trial[S.SOURCE].astype(str).to_numpy())


def _source_rates(seeds: list[SeedSources], sources: list[str], k: int, n_boot: int,
                  rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per source: rates on each seed's own films (2, K, S) and on B shared patient draws
    (2, B, K, S); index 0 sensitivity, 1 specificity. NaN where a seed has no such film."""
    wts = stats.shared_weights_t([s.units for s in seeds], n_boot, rng)
    out = {}
    for src in sources:
        point, boot = [], []
        for s, wt in zip(seeds, wts, strict=True):
            m = s.source == src
            point.append(np.stack(stats._rates(stats._class_sums(
                s.y[m], s.predicted[m], k, np.ones((int(m.sum()), 1))), k))[:, 0])  # (2, K)
            boot.append(np.stack(stats._rates(stats._class_sums(
                s.y[m], s.predicted[m], k, wt[m]), k)))  # (2, B, K)
        out[src] = (np.stack(point, axis=-1), np.stack(boot, axis=-1))
    return out


def _counts(seeds: list[SeedSources], src: str, c: int, metric: str) -> str:
    """Per seed ``k/n``: films of the class called it (sensitivity), or films of the other
    classes not called it (specificity), on one source."""
    parts = []
    for s in seeds:
        m = s.source == src
        films = m & ((s.y == c) if metric == "sensitivity" else (s.y != c))
        right = films & ((s.predicted == c) if metric == "sensitivity" else (s.predicted != c))
        parts.append(f"{int(right.sum())}/{int(films.sum())}")
    return ", ".join(parts)


def _pairs(sources: list[str], internal: Optional[str]) -> list[tuple[str, str]]:
    """Every pair of sources, the training source first when it is in the pair."""
    out = []
    for a, b in combinations(sorted(sources), 2):
        out.append((b, a) if b == internal else (a, b))
    return out


def _model_rows(model: str, seeds: list[SeedSources], labels: list[str],
                internal: Optional[str], n_boot: int, seed: int
                ) -> list[tuple[dict, pooling.SeedCell]]:
    sources = sorted({str(v) for s in seeds for v in np.unique(s.source)})
    rates = _source_rates(seeds, sources, len(labels), n_boot, np.random.default_rng(seed))
    rows = []
    for a, b in _pairs(sources, internal):
        for i, metric in enumerate(RATES):
            for c, label in enumerate(labels):
                pa, ba = rates[a][0][i, c], rates[a][1][i, :, c]
                pb, bb = rates[b][0][i, c], rates[b][1][i, :, c]
                cell = pooling.SeedCell.of(pb - pa, bb - ba)
                if cell.seeds == 0:
                    continue
                with np.errstate(invalid="ignore"):
                    va, vb = float(np.nanmean(pa)), float(np.nanmean(pb))
                rows.append(({S.MODEL: model, S.CLASS: label, S.METRIC: metric,
                              "source_a": a, "source_b": b, "value_a": va, "value_b": vb,
                              "counts_a": _counts(seeds, a, c, metric),
                              "counts_b": _counts(seeds, b, c, metric),
                              "internal": internal is not None and a == internal}, cell))
    return rows


def training_source(res: Tables, runs: pd.DataFrame) -> Optional[str]:
    """The source the models trained on: the one source of their validation films."""
    try:
        val = split_predictions(res, "val")
    except RaybenchError:
        return None
    val = val[val[S.TRIAL_ID].isin(runs[S.TRIAL_ID])]
    found = [str(v) for v in val[S.SOURCE].dropna().unique()] if S.SOURCE in val else []
    return found[0] if len(found) == 1 else None


def source_gaps(res: Tables, scenario: str, *, roi: str = "full", n_boot: int = 2000,
                seed: int = 0) -> pd.DataFrame:
    """Every model x class x rate x pair of sources: both sources' means over seeds, the gap
    (B - A) with its pooled two-level interval and p, the per-seed counts (:data:`COLUMNS`).
    Empty when no trial scored several sources."""
    runs = cells(res, scenario)
    runs = runs[runs[S.ROI] == roi] if S.ROI in runs else runs
    try:
        preds = split_predictions(res, "test")
    except RaybenchError:
        return pd.DataFrame(columns=COLUMNS)
    if S.SOURCE not in preds:
        return pd.DataFrame(columns=COLUMNS)
    preds = preds.merge(runs[[S.SWEEP, S.TRIAL_ID, S.MODEL]], on=[S.SWEEP, S.TRIAL_ID])
    preds = preds[preds[S.SOURCE].notna()]
    preds = preds[preds.groupby(S.TRIAL_ID)[S.SOURCE].transform("nunique") > 1]
    if preds.empty:
        return pd.DataFrame(columns=COLUMNS)
    labels, internal = prob_labels(preds), training_source(res, runs)
    found: list[tuple[dict, pooling.SeedCell]] = []
    for model, part in preds.groupby(S.MODEL, sort=True):
        seeds = [_seed(t, labels) for _, t in part.groupby(S.TRIAL_ID, sort=True)]
        found += _model_rows(str(model), seeds, labels, internal, n_boot, seed)
    return _with_intervals(found)


def _with_intervals(found: list[tuple[dict, pooling.SeedCell]]) -> pd.DataFrame:
    """The rows with their pooled intervals (one prior per rate)."""
    rows = []
    for metric in RATES:
        part = [(r, c) for r, c in found if r[S.METRIC] == metric]
        ivs, _ = pooling.pooled_intervals([c for _, c in part], stats.DIFF_BOUNDS)
        for (r, _c), iv in zip(part, ivs, strict=True):
            rows.append({**r, "gap": iv.value, S.CI_LOW: iv.ci_low, S.CI_HIGH: iv.ci_high,
                         "p": iv.pvalue, "seeds": iv.seeds, "dof": iv.dof})
    return pd.DataFrame(rows, columns=COLUMNS)


def gap_sentence(row: pd.Series) -> str:
    """The finding, the lower source first: both sources and values, the gap (higher minus
    lower) with its interval, the per-seed counts."""
    lo, hi = ("a", "b") if row["gap"] >= 0 else ("b", "a")
    gap, low, high = ((row["gap"], row[S.CI_LOW], row[S.CI_HIGH]) if lo == "a" else
                      (-row["gap"], -row[S.CI_HIGH], -row[S.CI_LOW]))
    name = {k: str(row[f"source_{k}"]) for k in ("a", "b")}
    where = dict(name)
    if row["internal"]:
        where["a"] += " (the training source's held-out films)"
    return (f"{row[S.MODEL]} {row[S.CLASS]} {row[S.METRIC]}: {row[f'value_{lo}']:.3f} on "
            f"{where[lo]} against {row[f'value_{hi}']:.3f} on {where[hi]}; gap {gap:+.3f} "
            f"[{low:+.3f}, {high:+.3f}], paired within {int(row['seeds'])} seed(s); per-seed "
            f"counts {name[lo]} {row[f'counts_{lo}']}, {name[hi]} {row[f'counts_{hi}']}.")


def significant_gaps(table: pd.DataFrame) -> pd.DataFrame:
    """The gaps whose interval excludes 0, largest first."""
    if table.empty:
        return table
    out = table[(table[S.CI_LOW] > 0) | (table[S.CI_HIGH] < 0)]
    return out.reindex(out["gap"].abs().sort_values(ascending=False).index)
