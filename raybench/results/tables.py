"""The paper-style tables of loaded results: Table 1 / Table 2 (sensitivity and specificity,
mean and 95% interval over seeds), leaderboards, sweep comparisons, confusion counts, and their
text cells (:func:`format_paper_table`, :func:`format_significance`).

The functions take a :class:`~raybench.results.loading.Results`; its methods of the same names call
them.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Protocol, Sequence

import pandas as pd

from raybench import schema as S
from raybench.compare import Tables
from raybench.errors import RaybenchError
from raybench.results.choices import INTERVALS
from raybench.stats import mean_interval



class Results(Tables, Protocol):
    """What these tables read of a :class:`~raybench.results.loading.Results` (which calls
    them); a protocol, so this module never imports ``loading``."""

    def scenarios(self) -> list[str]: ...

    def with_runs(self, frame: pd.DataFrame, columns: Sequence[str] = ()) -> pd.DataFrame: ...

KEYS: list[str] = [S.SWEEP, S.TRIAL_ID]
#: Columns of :meth:`Results.paper_table` (besides the index).
SENS, SPEC = "sensitivity", "specificity"
LOW, HIGH, SEEDS = "_low", "_high", "seeds"
SUPPORT, N_ALL = "support", "n"  # metrics rows: images of a class, images of the split
N, N_REST, INTERVAL = "n", "n_rest", "interval"
#: Labels of a paper table row's interval (the methods are :data:`~.choices.INTERVALS`).
T_OVER_SEEDS, WILSON = "t over seeds", "wilson (one trial)"
OVERALL: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_auc")


def whole_split(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows about a whole split (``source`` null), leaving per-source rows out."""
    return metrics[metrics[S.SOURCE].isna()] if S.SOURCE in metrics else metrics


def class_order(classes: Sequence[str]) -> list[str]:
    """The paper's label order first, then any other class alphabetically."""
    known = [c for c in S.LABELS if c in set(classes)]
    return known + sorted(set(classes) - set(known) - {"all"})


def paper_table(res: "Results", scenario: Optional[str] = None, *, layout: str = "auto",
                split: str = "test", positive: Optional[str] = None,
                by_source: bool = False, roi: Optional[str] = "full",
                interval: str = "bootstrap", n_boot: int = 2000,
                seed: int = 0) -> pd.DataFrame:
    """The paper table of ``res``; see :meth:`Results.paper_table`."""
    if interval not in INTERVALS:
        raise RaybenchError(f"interval {interval!r}: use one of {list(INTERVALS)}")
    scenarios = res.scenarios() if scenario is None else [scenario]
    if len(scenarios) != 1:
        raise RaybenchError(f"the results hold scenarios {scenarios}; pick one")
    runs = res.completed_runs(scenarios[0])
    if roi is not None and S.ROI in runs:
        runs = runs[runs[S.ROI].fillna("full") == roi]
    rows = _rate_rows(res, runs, split, by_source, scenarios[0])
    classes = class_order(rows[S.CLASS].unique().tolist())
    layout, keys = _layout(layout, classes, by_source)
    if layout == "table1":
        positive = positive or ("covid19" if "covid19" in classes else classes[-1])
        rows = rows[rows[S.CLASS] == positive]
    out = _aggregate(rows, keys)
    if interval in ("bootstrap", "unpooled"):
        from raybench.intervals import rate_table

        boot = rate_table(res, scenarios[0], roi=roi, split=split, by_source=by_source,
                          n_boot=n_boot, seed=seed, pooled=interval == "bootstrap")
        if layout == "table1" and not boot.empty:
            boot = boot[boot[S.CLASS] == positive]
        out = _with_bootstrap(out, boot, keys)
    if layout == "table2":
        out = out.reindex(sorted(out.index, key=lambda k: (*k[:-1], classes.index(k[-1]))))
    return out


def _rate_rows(res: "Results", runs: pd.DataFrame, split: str, by_source: bool,
               scenario: str) -> pd.DataFrame:
    """Metrics rows (sensitivity, specificity, support, n) of ``runs`` on ``split``."""
    metrics = res.metrics
    if by_source:
        metrics = metrics[metrics[S.SOURCE].notna()] if S.SOURCE in metrics else metrics[:0]
    else:
        metrics = whole_split(metrics)
    wanted = metrics[S.METRIC].isin([SENS, SPEC, SUPPORT, N_ALL])
    rows = metrics[(metrics[S.SPLIT] == split) & wanted]
    rows = rows.merge(runs[KEYS + [S.MODEL, S.SEED]], on=KEYS)
    n_all = rows[rows[S.METRIC] == N_ALL]
    rows = rows[rows[S.METRIC] != N_ALL]
    if not rows[S.METRIC].isin([SENS, SPEC]).any():
        raise RaybenchError(f"no {split} sensitivity/specificity rows"
                            f"{' per source' if by_source else ''} for scenario "
                            f"{scenario!r}")
    group = KEYS + ([S.SOURCE] if by_source else [])
    n_all = n_all[group + [S.VALUE]].rename(columns={S.VALUE: "_n_all"})
    return rows.merge(n_all, on=group, how="left")


def leaderboard(res: "Results", metric: str = "balanced_accuracy", *, split: str = "test",
                cls: str = "all", ascending: bool = False) -> pd.DataFrame:
    """Trials ranked by one metric; see :meth:`Results.leaderboard`."""
    m = whole_split(res.metrics)
    rows = m[(m[S.METRIC] == metric) & (m[S.SPLIT] == split) & (m[S.CLASS] == cls)]
    if rows.empty:
        have = sorted(set(zip(m[S.METRIC], m[S.CLASS], strict=True)))
        raise RaybenchError(f"no {split} rows for metric {metric!r} class {cls!r}; "
                            f"available (metric, class): {have[:20]}")
    board = res.with_runs(rows[KEYS + [S.VALUE, S.CI_LOW, S.CI_HIGH]])
    board = board.rename(columns={S.VALUE: metric})
    board = board.sort_values(metric, ascending=ascending, kind="stable")
    return board.reset_index(drop=True)


def compare_sweeps(each: Mapping[str, "Results"], sweep_a: str, sweep_b: str,
                   metrics: Sequence[str] = OVERALL, split: str = "test") -> pd.DataFrame:
    """Per model and metric, the means of ``each[sweep_a]`` and ``each[sweep_b]`` and b - a;
    see :meth:`Results.compare`."""
    means = {}
    for sweep in (sweep_a, sweep_b):
        res = each[sweep]
        runs = res.completed_runs()
        runs = runs[runs[S.SWEEP] == sweep]
        m = whole_split(res.metrics)
        rows = m[(m[S.SPLIT] == split) & (m[S.CLASS] == "all") & m[S.METRIC].isin(metrics)]
        rows = rows.merge(runs[KEYS + [S.MODEL]], on=KEYS)
        means[sweep] = rows.groupby([S.MODEL, S.METRIC])[S.VALUE].agg(["mean", "count"])
    a, b = means[sweep_a], means[sweep_b]
    out = pd.DataFrame({sweep_a: a["mean"], sweep_b: b["mean"]})
    out["delta"] = out[sweep_b] - out[sweep_a]
    out[f"n_{sweep_a}"] = a["count"].reindex(out.index).fillna(0).astype(int)
    out[f"n_{sweep_b}"] = b["count"].reindex(out.index).fillna(0).astype(int)
    return out


def confusion(res: "Results", model: str, scenario: Optional[str] = None,
              roi: Optional[str] = "full") -> pd.DataFrame:
    """Test confusion counts of ``model``; see :meth:`Results.confusion`."""
    runs = res.completed_runs(scenario)
    if roi is not None and S.ROI in runs:
        runs = runs[runs[S.ROI].fillna("full") == roi]
    preds = res.predictions
    if S.SPLIT in preds:  # test images only (val predictions are stored too)
        preds = preds[preds[S.SPLIT].fillna("test") == "test"]
    preds = preds.merge(runs[KEYS][runs[S.MODEL] == model], on=KEYS)
    if preds.empty:
        raise RaybenchError(f"no predictions for model {model!r}")
    probs = [c for c in preds.columns if c.startswith(S.PROB_PREFIX)]
    classes = class_order(list(preds[S.LABEL].unique()) + [c[len(S.PROB_PREFIX):] for c in probs
                                                           if preds[c].notna().any()])
    counts = pd.crosstab(preds[S.LABEL], preds[S.PREDICTED])
    return counts.reindex(index=classes, columns=classes, fill_value=0).astype(int)


def _layout(layout: str, classes: list[str], by_source: bool) -> tuple[str, list[str]]:
    """(layout, index keys) of a paper table; ``auto`` picks table1 for two classes."""
    if layout == "auto":
        layout = "table1" if len(classes) == 2 else "table2"
    if layout not in ("table1", "table2"):
        raise RaybenchError(f"unknown layout {layout!r}; use auto, table1 or table2")
    keys = [S.MODEL] if layout == "table1" else [S.MODEL, S.CLASS]
    return layout, keys[:1] + [S.SOURCE] + keys[1:] if by_source else keys


def _aggregate(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and t interval over trials (one trial: its Wilson interval), with the counts."""
    out = {}
    for key, group in rows.groupby(keys, sort=True):
        entry: dict[str, object] = {}
        for metric in (SENS, SPEC):
            part = group[group[S.METRIC] == metric]
            mean, low, high = mean_interval(part[S.VALUE].tolist(), part[S.CI_LOW].tolist(),
                                            part[S.CI_HIGH].tolist(), bounds=(0.0, 1.0))
            entry.update({metric: mean, metric + LOW: low, metric + HIGH: high})
        trials = int(group[S.TRIAL_ID].nunique())
        support = group[group[S.METRIC] == SUPPORT]
        entry.update({SEEDS: trials, N: _mean_count(support[S.VALUE]),
                      N_REST: _mean_count(support["_n_all"] - support[S.VALUE]),
                      INTERVAL: T_OVER_SEEDS if trials > 1 else WILSON})
        out[key] = entry
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index = (pd.MultiIndex.from_tuples(frame.index, names=keys) if len(keys) > 1
                   else pd.Index([k[0] if isinstance(k, tuple) else k for k in frame.index],
                                 name=keys[0]))
    return frame


def _mean_count(values: pd.Series) -> float:
    """The mean image count over trials, rounded (NaN when no trial has one)."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return float(round(v.mean())) if len(v) else math.nan


def _with_bootstrap(out: pd.DataFrame, boot: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``out`` with the means, intervals and seeds of the bootstrap rows that match it."""
    if boot.empty:
        return out
    boot = boot.set_index(keys)
    shared = out.index.intersection(boot.index)
    cols = [m + suffix for m in (SENS, SPEC) for suffix in ("", LOW, HIGH)] + [SEEDS, INTERVAL]
    out = out.copy()
    for col in cols:
        out.loc[shared, col] = boot.loc[shared, col]
    return out


def format_paper_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The paper table as text cells: ``mean [low, high]`` for sensitivity and specificity."""
    def cell(row: pd.Series, metric: str) -> str:
        mean, low, high = row[metric], row[metric + LOW], row[metric + HIGH]
        if pd.isna(mean):
            return "n/a"
        if pd.isna(low) or pd.isna(high):
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    def count(v: object) -> str:
        return "" if pd.isna(v) else str(int(v))  # type: ignore[call-overload]

    out = pd.DataFrame({"Sensitivity": table.apply(cell, axis=1, metric=SENS),
                        "Specificity": table.apply(cell, axis=1, metric=SPEC),
                        "Seeds": table[SEEDS]}, index=table.index)
    if N in table:  # images of the class / of the other classes, per trial
        out["n (class / rest)"] = [f"{count(a)} / {count(b)}" for a, b in
                                   zip(table[N], table[N_REST], strict=True)]
    if INTERVAL in table:
        out["Interval"] = table[INTERVAL]
    return out


def format_significance(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """The comparison table with numbers rounded and the columns a reader needs first."""
    first = [c for c in (S.SCENARIO, S.ROI, S.MODEL, "baseline", S.METRIC, S.CLASS, S.VALUE,
                         "baseline_value", "diff", S.CI_LOW, S.CI_HIGH, "p", "p_holm", "test",
                         "seeds", "n_images", "resampled") if c in table]
    out = table[first + [c for c in table if c not in first]].copy()
    for col in (S.VALUE, "baseline_value", "diff", S.CI_LOW, S.CI_HIGH):
        out[col] = out[col].astype(float).round(digits)
    for col in ("p", "p_holm"):
        out[col] = out[col].astype(float).map(lambda p: float(f"{p:.3g}"))
    return out
