"""Paired comparisons of trials scored on the same images, from the results tables alone.

``Results.compare_models`` and ``raybench results --table significance`` call
:func:`compare_models`; the report's significance, ranking and shortcut-control sections too.
One trial stands for each cell (scenario x model x roi x seed): the one with the best
validation balanced accuracy (select on validation), so a search sweep's many trials per cell
compare like a grid's one.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Iterator, Optional, Protocol, Sequence, Union

import numpy as np
import pandas as pd
from scipy import stats as sps

from raybench import schema as S
from raybench import bayes, pooling, stats
from raybench.errors import RaybenchError


class Tables(Protocol):
    """What a comparison reads of the results (``raybench.results.Results`` has it); a
    protocol, so this module never imports ``results`` (which imports it)."""

    @property
    def metrics(self) -> pd.DataFrame: ...

    @property
    def predictions(self) -> pd.DataFrame: ...

    def completed_runs(self, scenario: Optional[str] = None) -> pd.DataFrame: ...


ROI = S.ROI
KEYS = [S.SWEEP, S.TRIAL_ID]
#: The metrics a comparison reports and the test behind each p-value.
TESTS: dict[str, str] = {"accuracy": "mcnemar", "balanced_accuracy": "bootstrap",
                         "macro_auc": "bootstrap", "sensitivity": "bootstrap",
                         "specificity": "bootstrap", "auc": "delong"}
SELECT_METRIC = "balanced_accuracy"
TWO_LEVEL = "two-level bootstrap"
TWO_LEVEL_POOLED = "two-level bootstrap, pooled seed variance"
#: The ``test`` column's values and what each means, for the prose of a table.
TEST_NAMES: dict[str, str] = {
    "mcnemar": "exact McNemar test (one seed)",
    "bootstrap": "paired bootstrap (one seed)",
    "delong": "DeLong's test (one seed)",
    TWO_LEVEL: "two-level bootstrap over seeds, then patients (images without patient ids)",
    TWO_LEVEL_POOLED: "two-level bootstrap over seeds, then patients, with the seed variance "
                      "pooled across the study's comparisons (moderated variance, Smyth 2004)",
    "t over seeds": "Student t over the per-seed differences",
}
#: Interval methods across seeds: the two-level bootstrap with the seed variance pooled
#: across the study (default), the same without pooling, or a Student t over the seeds.
POOLED, UNPOOLED = "bootstrap", "unpooled"
INTERVALS: tuple[str, ...] = (POOLED, UNPOOLED, "t")


@dataclass(frozen=True)
class CompareOptions:
    """How to compare: the grouping column, bootstrap size and seed, the split."""

    by: str = S.MODEL  # or "roi": compare a model's roi variants (shortcut control)
    split: str = "test"
    n_boot: int = 2000
    seed: int = 0
    per_seed: bool = False
    interval: str = POOLED  # across seeds: see INTERVALS
    rope: float = bayes.ROPE  # the Bayesian verdict's region of practical equivalence


def cells(res: Tables, scenario: Optional[str] = None) -> pd.DataFrame:
    """Completed trials with ``roi`` filled (``full`` when missing), one per cell and seed:
    the best by validation balanced accuracy, else the first trial id."""
    runs = res.completed_runs(scenario).copy()
    runs[ROI] = runs[ROI].fillna("full") if ROI in runs else "full"
    m = res.metrics
    whole = m[S.SOURCE].isna() if S.SOURCE in m else True
    val = m[whole & (m[S.SPLIT] == "val") & (m[S.CLASS] == "all") & (m[S.METRIC] == SELECT_METRIC)]
    runs = runs.merge(val[KEYS + [S.VALUE]].rename(columns={S.VALUE: "_val"}), on=KEYS, how="left")
    runs = runs.sort_values(["_val", S.TRIAL_ID], ascending=[False, True], na_position="last")
    return runs.drop_duplicates([S.SCENARIO, S.MODEL, ROI, S.SEED]).drop(columns="_val")


def split_predictions(res: Tables, split: str) -> pd.DataFrame:
    """Predictions of one split; files written before the split column count as test."""
    preds = res.predictions
    if preds.empty:
        raise RaybenchError("no predictions in the results: a comparison needs them")
    sp = preds[S.SPLIT].fillna("test") if S.SPLIT in preds else pd.Series("test", preds.index)
    out = preds[sp == split]
    if out.empty:
        raise RaybenchError(f"no {split} predictions; splits present: {sorted(set(sp))}")
    return out


@dataclass(frozen=True)
class Pair:
    """Two trials on the images both scored: labels, both score matrices, patients."""

    y: np.ndarray  # (N,) class indices into labels
    prob_a: np.ndarray  # (N, K)
    prob_b: np.ndarray
    clusters: Optional[np.ndarray]  # patient id per image, None when any is unknown
    labels: list[str]
    image_ids: np.ndarray

    @property
    def units(self) -> np.ndarray:
        """What a bootstrap resamples: patients when known, else images."""
        return self.clusters if self.clusters is not None else self.image_ids


def _by_trial(preds: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each trial's predictions, one row per image (the first), indexed by image id: one pass
    over the table instead of one scan of it per pair and seed."""
    return {str(t): g.drop_duplicates(S.IMAGE_ID).set_index(S.IMAGE_ID)
            for t, g in preds.groupby(S.TRIAL_ID, sort=False)}


def _trial(preds: pd.DataFrame, trial: str, frames: Optional[dict[str, pd.DataFrame]]
           ) -> pd.DataFrame:
    if frames is not None:
        return frames.get(trial, preds.iloc[:0].set_index(S.IMAGE_ID))
    return preds[preds[S.TRIAL_ID] == trial].drop_duplicates(S.IMAGE_ID).set_index(S.IMAGE_ID)


def _paired(preds: pd.DataFrame, trial_a: str, trial_b: str,
            frames: Optional[dict[str, pd.DataFrame]] = None) -> Pair:
    """Labels, both probability matrices and clusters on the images both trials scored
    (``frames``: :func:`_by_trial` of ``preds``, when several pairs are read)."""
    a, b = _trial(preds, trial_a, frames), _trial(preds, trial_b, frames)
    shared = a.index.intersection(b.index)
    if len(shared) == 0:
        raise RaybenchError(f"trials {trial_a} and {trial_b} share no scored image")
    a, b = a.loc[shared], b.loc[shared]
    cols = [c for c in a.columns if c.startswith(S.PROB_PREFIX)
            and a[c].notna().all() and b[c].notna().all()]
    labels = [c[len(S.PROB_PREFIX):] for c in cols]
    index = {lab: i for i, lab in enumerate(labels)}
    keep = a[S.LABEL].isin(index).to_numpy()
    y = np.array([index[v] for v in a[S.LABEL][keep]], dtype=np.int64)
    patients = a[S.PATIENT_ID][keep] if S.PATIENT_ID in a else None
    clusters = (patients.astype(str).to_numpy()
                if patients is not None and patients.notna().all() else None)
    return Pair(y, a[cols].to_numpy(float)[keep], b[cols].to_numpy(float)[keep], clusters,
                labels, a.index[keep].astype(str).to_numpy())


def _pair_rows(preds: pd.DataFrame, trial_a: str, trial_b: str,
               opts: CompareOptions) -> list[dict]:
    """Every metric of trial_b minus trial_a, with its interval and p-value."""
    pair = _paired(preds, trial_a, trial_b)
    y, pa, pb, clusters, labels = pair.y, pair.prob_a, pair.prob_b, pair.clusters, pair.labels
    boot = stats.paired_bootstrap(y, pa, pb, clusters, opts.n_boot, opts.seed)
    base = {"n_images": int(y.size), "resampled": "patients" if clusters is not None else "images"}
    rows = []
    mc = stats.mcnemar_exact(pa.argmax(1) == y, pb.argmax(1) == y)
    for name in ("accuracy", "balanced_accuracy", "macro_auc"):
        r = boot[name]
        p = mc.pvalue if name == "accuracy" else r.pvalue
        rows.append({**base, S.METRIC: name, S.CLASS: "all", S.VALUE: r.value_b,
                     "baseline_value": r.value_a, "diff": r.diff, S.CI_LOW: r.ci_low,
                     S.CI_HIGH: r.ci_high, "p": p, "test": TESTS[name]})
    for c, label in enumerate(labels):
        for name in ("sensitivity", "specificity"):
            r = boot[f"{name}:{c}"]
            rows.append({**base, S.METRIC: name, S.CLASS: label, S.VALUE: r.value_b,
                         "baseline_value": r.value_a, "diff": r.diff, S.CI_LOW: r.ci_low,
                         S.CI_HIGH: r.ci_high, "p": r.pvalue, "test": "bootstrap"})
        d = stats.delong_test(y == c, pa[:, c], pb[:, c])
        rows.append({**base, S.METRIC: "auc", S.CLASS: label, S.VALUE: d.auc_b,
                     "baseline_value": d.auc_a, "diff": d.diff, S.CI_LOW: d.ci_low,
                     S.CI_HIGH: d.ci_high, "p": d.pvalue, "test": "delong"})
    return rows


def _pairs(values: Sequence[str], baseline: Optional[str]) -> list[tuple[str, str]]:
    """(baseline, other) pairs: against ``baseline``, else every pair in sorted order."""
    values = sorted(values)
    if baseline is None:
        return list(combinations(values, 2))
    return [(baseline, v) for v in values if v != baseline] if baseline in values else []


def _comparisons(runs: pd.DataFrame, baseline: Optional[str], opts: CompareOptions
                 ) -> Iterator[tuple[dict, list[tuple[int, str, str]]]]:
    """Every pair in every context (scenario and the other cell column): the row's identity
    and the (seed, trial of the baseline, trial of the other) it pairs."""
    other = ROI if opts.by == S.MODEL else S.MODEL
    for (scenario, ctx), group in runs.groupby([S.SCENARIO, other], sort=True):
        trial = {(r[opts.by], r[S.SEED]): r[S.TRIAL_ID] for _, r in group.iterrows()}
        for a, b in _pairs(group[opts.by].unique().tolist(), baseline):
            seeds = sorted({s for v, s in trial if v == a} & {s for v, s in trial if v == b})
            head = {S.SCENARIO: scenario, other: ctx, opts.by: b, "baseline": a}
            yield head, [(seed, trial[(a, seed)], trial[(b, seed)]) for seed in seeds]


def _seed_rows(runs: pd.DataFrame, preds: pd.DataFrame, baseline: Optional[str],
               opts: CompareOptions) -> list[dict]:
    """Per-seed rows of every pair in every context."""
    return [{**head, S.SEED: seed, **row} for head, seeds in _comparisons(runs, baseline, opts)
            for seed, ta, tb in seeds for row in _pair_rows(preds, ta, tb, opts)]


#: Per results object: replicate metrics by content, shared by its comparisons (BootCache).
_MEMOS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _memo(res: Tables) -> Optional[dict]:
    try:
        return _MEMOS.setdefault(res, {})
    except TypeError:  # an object that cannot be weakly referenced: no memo
        return None


def _two_level_rows(runs: pd.DataFrame, preds: pd.DataFrame, baseline: Optional[str],
                    opts: CompareOptions, memo: Optional[dict] = None) -> list[dict]:
    """One row per pair and metric over its seeds (two-level bootstrap, the seed variance
    pooled across the study unless ``opts.interval`` is ``unpooled``); with one seed, that
    seed's own tests (McNemar, paired bootstrap, DeLong)."""
    rows: list[dict] = []
    cells: list[pooling.SeedCell] = []  # one per multi-seed row, pooled at the end
    caches: dict[tuple, stats.BootCache] = {}  # one per context: its models share draws
    frames = _by_trial(preds)
    for head, seeds in _comparisons(runs, baseline, opts):
        if len(seeds) == 1:
            rows += [{**head, **row, "seeds": 1} for row in _pair_rows(preds, *seeds[0][1:], opts)]
        elif seeds:
            pairs = [_paired(preds, ta, tb, frames) for _, ta, tb in seeds]
            context = tuple(v for k, v in head.items() if k not in (opts.by, "baseline"))
            if context not in caches:
                caches.clear()  # contexts come one after another: keep only the current one
                caches[context] = stats.BootCache(memo)
            for row, cell in _pooled_rows(pairs, opts, caches[context]):
                rows.append({**head, **row, "_cell": len(cells)})
                cells.append(cell)
    if opts.interval == POOLED:
        _fill_pooled(rows, cells)
    return [{k: v for k, v in row.items() if k != "_cell"} for row in rows]


def _fill_pooled(rows: list[dict], cells: list[pooling.SeedCell]) -> None:
    """Each multi-seed row's moderated interval; one prior per metric, fitted to the seed
    variances of all that metric's rows in the study."""
    by_metric: dict[str, list[dict]] = {}
    for row in rows:
        if "_cell" in row:
            by_metric.setdefault(str(row[S.METRIC]), []).append(row)
    for part in by_metric.values():
        ivs, prior = pooling.pooled_intervals([cells[r["_cell"]] for r in part],
                                              stats.DIFF_BOUNDS)
        for row, iv in zip(part, ivs, strict=True):
            row.update({"diff": iv.value, S.CI_LOW: iv.ci_low, S.CI_HIGH: iv.ci_high,
                        "p": iv.pvalue, "dof": iv.dof, "prior_dof": prior.d0,
                        "pooled_cells": prior.cells, "test": TWO_LEVEL_POOLED})


def _pooled_rows(pairs: list[Pair], opts: CompareOptions, cache: Optional[stats.BootCache] = None
                 ) -> list[tuple[dict, pooling.SeedCell]]:
    """Every metric over the seeds' pairs (:func:`raybench.stats.paired_cells`), with the
    unpooled two-level interval, and the cell a pooled interval starts from."""
    labels = pairs[0].labels
    if any(p.labels != labels for p in pairs[1:]):
        raise RaybenchError(f"the seeds of one comparison score different classes: "
                            f"{sorted({tuple(p.labels) for p in pairs})}")
    rng = np.random.default_rng(opts.seed)
    out = stats.paired_cells([(p.y, p.prob_a, p.prob_b, p.units) for p in pairs],
                             opts.n_boot, rng, cache)
    patients = all(p.clusters is not None for p in pairs)
    base = {"n_images": len(set().union(*(p.image_ids.tolist() for p in pairs))),
            "resampled": f"seeds x {'patients' if patients else 'images'}",
            "seeds": len(pairs), "test": TWO_LEVEL}
    names = [(m, "all", m) for m in stats.OVERALL_STATS] + [
        (m, lab, f"{m}:{c}") for c, lab in enumerate(labels) for m in stats.CLASS_STATS]
    rows = []
    for metric, cls, key in names:
        c = out[key]
        iv = stats.two_level_interval(c.point, c.per_seed, rng, stats.DIFF_BOUNDS)
        v = bayes.t_verdict(c.point.tolist(), opts.rope)
        rows.append(({**base, S.METRIC: metric, S.CLASS: cls, S.VALUE: c.value_b,
                      "baseline_value": c.value_a, "diff": iv.value, S.CI_LOW: iv.ci_low,
                      S.CI_HIGH: iv.ci_high, "p": iv.pvalue, "dof": iv.dof,
                      "p_baseline_better": v.p_a, "p_equivalent": v.p_rope, "p_better": v.p_b},
                     pooling.SeedCell.of(c.point, c.per_seed)))
    return rows


def _over_seeds(part: pd.DataFrame) -> pd.Series:
    """One row from per-seed rows: the mean difference with a t interval over seeds and a
    one-sample t test; with one seed, that seed's own interval and test."""
    first = part.iloc[0].copy()
    first["seeds"] = len(part)
    if len(part) == 1:
        return first
    diffs = part["diff"].to_numpy(float)
    interval = stats.mean_interval(diffs.tolist(), bounds=stats.DIFF_BOUNDS)
    first["diff"], first[S.CI_LOW], first[S.CI_HIGH] = interval
    first[S.VALUE], first["baseline_value"] = part[S.VALUE].mean(), part["baseline_value"].mean()
    if np.all(diffs == diffs[0]):
        first["p"] = 1.0 if diffs[0] == 0 else math.nan  # no spread: a t test is undefined
    else:
        first["p"] = float(sps.ttest_1samp(diffs, 0.0).pvalue)
    first["test"] = "t over seeds"
    return first


def _holm_series(p: pd.Series) -> pd.Series:
    return pd.Series(stats.holm(p.to_numpy(float)), index=p.index)


def compare_models(res: Tables, metric: Union[str, Sequence[str], None] = None,
                   scenario: Optional[str] = None, baseline: Optional[str] = None,
                   opts: CompareOptions = CompareOptions()) -> pd.DataFrame:
    """The paired comparison table; see :meth:`raybench.results.Results.compare_models`."""
    if opts.by not in (S.MODEL, ROI):
        raise RaybenchError(f"compare by {opts.by!r}: use 'model' or 'roi'")
    if opts.interval not in INTERVALS:
        raise RaybenchError(f"interval {opts.interval!r}: use one of {list(INTERVALS)}")
    wanted = [metric] if isinstance(metric, str) else list(metric or TESTS)
    unknown = [m for m in wanted if m not in TESTS]
    if unknown:
        raise RaybenchError(f"cannot compare metric(s) {unknown}; choose from {list(TESTS)}")
    runs = cells(res, scenario)
    if baseline is not None and baseline not in set(runs[opts.by]):
        raise RaybenchError(f"baseline {baseline!r} is not a {opts.by} of the results; found "
                            f"{sorted(runs[opts.by].dropna().unique())}")
    preds = split_predictions(res, opts.split)
    preds = preds[preds[S.TRIAL_ID].isin(runs[S.TRIAL_ID])]
    two_level = opts.interval in (POOLED, UNPOOLED) and not opts.per_seed
    rows = pd.DataFrame(_two_level_rows(runs, preds, baseline, opts, _memo(res)) if two_level
                        else _seed_rows(runs, preds, baseline, opts))
    if rows.empty:
        raise RaybenchError(f"nothing to compare: need two {opts.by}s scored with the same "
                            f"seed in one scenario")
    rows = rows[rows[S.METRIC].isin(wanted)]
    other = ROI if opts.by == S.MODEL else S.MODEL
    keys = [S.SCENARIO, other, opts.by, "baseline", S.METRIC, S.CLASS]
    if opts.per_seed:
        rows = rows.assign(seeds=1)
    elif not two_level:
        grouped: Any = rows.groupby(keys, sort=False)  # pandas-stubs lack include_groups
        rows = grouped.apply(_over_seeds, include_groups=False)
        rows = rows.reset_index(level=keys).reset_index(drop=True)
        rows = rows.drop(columns=[S.SEED])
    family = [S.SCENARIO, other, S.METRIC, S.CLASS] + ([S.SEED] if opts.per_seed else [])
    rows["p_holm"] = rows.groupby(family, sort=False)["p"].transform(_holm_series)
    return rows.reset_index(drop=True)


def describe_tests(table: pd.DataFrame) -> str:
    """Which test gave each metric's p-value and interval, read from the table's ``test``
    column (the prose of a table names what the table itself says)."""
    parts = []
    for test, part in table.groupby("test", sort=True):
        metrics = ", ".join(dict.fromkeys(str(m) for m in part[S.METRIC]))
        parts.append(f"{TEST_NAMES.get(str(test), str(test))} for {metrics}"
                     + (_pooled_dof(part) if test == TWO_LEVEL_POOLED else ""))
    return "; ".join(parts)


def _pooled_dof(part: pd.DataFrame) -> str:
    """The prior's and the rows' degrees of freedom of pooled intervals, per metric."""
    out = []
    for metric, rows in part.groupby(S.METRIC, sort=False):
        d0 = float(rows["prior_dof"].iloc[0])
        out.append(f"{metric}: {int(rows['pooled_cells'].iloc[0])} comparisons, prior dof "
                   f"{pooling.dof_words(d0)}, interval dof "
                   f"{pooling.dof_range(rows['dof'].astype(float).tolist())}")
    return " (" + "; ".join(out) + ")"


def rank_models(res: Tables, metric: str = "balanced_accuracy", split: str = "test",
                roi: str = "full", scenario: Optional[str] = None) -> Optional[stats.Friedman]:
    """Mean ranks, Friedman test and Nemenyi CD over blocks (scenario x seed), using each
    cell's selected trial; blocks missing a model are left out. None with < 2 models."""
    runs = cells(res, scenario)
    runs = runs[runs[ROI] == roi]
    m = res.metrics
    whole = m[S.SOURCE].isna() if S.SOURCE in m else True
    vals = m[whole & (m[S.SPLIT] == split) & (m[S.CLASS] == "all") & (m[S.METRIC] == metric)]
    table = runs.merge(vals[KEYS + [S.VALUE]], on=KEYS).pivot_table(
        index=[S.SCENARIO, S.SEED], columns=S.MODEL, values=S.VALUE).dropna()
    if table.shape[1] < 2 or table.shape[0] < 1:
        return None
    return stats.friedman_nemenyi(table.to_numpy(), [str(c) for c in table.columns])
