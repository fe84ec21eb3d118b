"""Load a results root into pandas; paper-style tables, leaderboards and sweep comparisons.

>>> from raybench.results import load
>>> res = load("s3://bucket/prefix", sweep="paper-s2")
>>> res.runs            # one row per trial: model, scenario, seed, hyperparameters, versions
>>> res.metrics.merge(res.runs, on=["sweep", "trial_id"])   # any table joins on trial id
>>> res.paper_table()   # Table 1 / Table 2 layout, mean and 95% interval over seeds
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Optional, Sequence, Union

import pandas as pd

from raybench import schema as S
from raybench import storage
from raybench.camset import CamSet
from raybench.errors import RaybenchError
from raybench.stats import mean_interval, t95
from raybench.store import ResultStore

__all__ = ["FORMATS", "OVERALL", "Results", "class_order", "format_paper_table", "load",
           "mean_interval", "query", "render", "t95", "to_markdown"]

KEYS: list[str] = [S.SWEEP, S.TRIAL_ID]
#: Columns of :meth:`Results.paper_table` (besides the index).
SENS, SPEC = "sensitivity", "specificity"
LOW, HIGH, SEEDS = "_low", "_high", "seeds"
SUPPORT, N_ALL = "support", "n"  # metrics rows: images of a class, images of the split
N, N_REST, INTERVAL = "n", "n_rest", "interval"
#: Interval methods of a paper table (``interval`` argument) and their labels in its rows.
INTERVALS: tuple[str, ...] = ("bootstrap", "unpooled", "t")
T_OVER_SEEDS, WILSON = "t over seeds", "wilson (one trial)"
OVERALL: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_auc")
FORMATS: tuple[str, ...] = ("table", "csv", "json", "markdown")
def whole_split(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows about a whole split (``source`` null), leaving per-source rows out."""
    return metrics[metrics[S.SOURCE].isna()] if S.SOURCE in metrics else metrics


def class_order(classes: Sequence[str]) -> list[str]:
    """The paper's label order first, then any other class alphabetically."""
    known = [c for c in S.LABELS if c in set(classes)]
    return known + sorted(set(classes) - set(known) - {"all"})


class Results:
    """The tables of one or more sweeps as pandas DataFrames (read lazily, once each)."""

    def __init__(self, store: ResultStore, sweeps: Sequence[str]) -> None:
        self.store = store
        self.sweeps = list(sweeps)

    def __repr__(self) -> str:
        """What was loaded: root, sweeps, trial counts, and which tables are read (rows)."""
        head = f"Results(root={storage.redact(self.store.root.uri)!r}, sweeps={self.sweeps}"
        try:
            runs = self.runs
        except Exception as exc:  # a repr must not raise, even on an unreadable store
            return f"{head}, runs unreadable: {type(exc).__name__})"
        done = int((runs[S.STATUS] == S.STATUS_COMPLETED).sum()) if S.STATUS in runs else 0
        read = [f"{t} {len(self.__dict__[t])} rows" for t in S.TABLES if t in self.__dict__]
        unread = [t for t in S.TABLES if t not in self.__dict__]
        tail = f"; not read yet: {', '.join(unread)}" if unread else ""
        return f"{head}, trials={len(runs)} ({done} completed), tables: {', '.join(read)}{tail})"

    def table(self, name: str) -> pd.DataFrame:
        """``runs``, ``metrics``, ``epochs`` or ``predictions`` of every loaded sweep."""
        if name not in S.TABLES:
            raise RaybenchError(f"unknown table {name!r}; choose from {list(S.TABLES)}")
        return getattr(self, name)

    def _read(self, name: str) -> pd.DataFrame:
        frames = [self.store.read_table(sweep, name) for sweep in self.sweeps]
        frames = [f for f in frames if len(f)] or frames[:1]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    @cached_property
    def runs(self) -> pd.DataFrame:
        """One row per trial: identity, hyperparameters, timing, device, versions, status."""
        return self._read("runs")

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """Long format: split, class, metric, value, ci_low, ci_high per trial."""
        return self._read("metrics")

    @cached_property
    def epochs(self) -> pd.DataFrame:
        """One row per trial and epoch: losses, validation metrics, lr, seconds."""
        return self._read(S.EPOCHS_TABLE)

    @cached_property
    def predictions(self) -> pd.DataFrame:
        """One row per trial and test image: label, predicted, ``p_<class>`` probabilities."""
        return self._read("predictions")

    def compare_models(self, metric: Union[str, Sequence[str], None] = None,
                       scenario: Optional[str] = None, baseline: Optional[str] = None, *,
                       split: str = "test", by: str = S.MODEL, per_seed: bool = False,
                       n_boot: int = 2000, seed: int = 0, interval: str = "bootstrap",
                       rope: float = 0.01) -> pd.DataFrame:
        """Paired comparison of models (or of a model's ``roi`` variants) on the same images.

        For each model against ``baseline`` (default: every pair, the alphabetically first as
        baseline), on the images both scored: the difference (model - baseline) in accuracy,
        balanced accuracy, macro AUC, per-class sensitivity, specificity and one-vs-rest AUC,
        with a 95% interval and a p-value: a paired bootstrap resampling patients when the
        predictions carry patient ids (else images), the exact McNemar test for accuracy and
        DeLong's test for per-class AUC. ``p_holm`` adjusts p across the comparisons of one
        metric and class. With several seeds (matched by seed), one row per comparison holds
        the mean difference over seeds with a two-level bootstrap interval and p-value
        (seeds, then patients resampled; see :func:`raybench.stats.two_level_interval`), or
        with ``interval="t"`` a Student t interval over the seeds and a t test
        (``per_seed=True``: the per-seed rows instead). The ``test`` column names the test of
        each row. Each cell is represented by its trial with the best validation balanced
        accuracy.

        Args:
            metric: One of ``accuracy``, ``balanced_accuracy``, ``macro_auc``, ``sensitivity``,
                ``specificity``, ``auc``, a list of them, or None for all.
            scenario: Restrict to one scenario (default: each scenario separately).
            baseline: The model (or roi, with ``by="roi"``) every other is compared with.
            split: ``test`` or ``val`` (predictions of both are stored).
            by: ``model``, or ``roi`` to compare ``outside_lungs`` / ``lungs_only`` runs of
                one model with ``full`` (the shortcut control).
            per_seed: One row per seed instead of one across seeds.
            n_boot: Bootstrap replicates.
            seed: Seed of the bootstrap.
            interval: ``bootstrap`` (two-level, the default) or ``t`` across seeds.

        Returns:
            Columns ``scenario``, ``roi`` (or ``model``), ``model`` (or ``roi``),
            ``baseline``, ``metric``, ``class``, ``value``, ``baseline_value``, ``diff``,
            ``ci_low``, ``ci_high``, ``p``, ``test``, ``p_holm``, ``seeds``, ``n_images``,
            ``resampled`` (and ``seed`` with ``per_seed``); over several seeds the Bayesian
            verdict of :mod:`raybench.bayes` with region of practical equivalence ``rope``:
            ``p_baseline_better``, ``p_equivalent``, ``p_better``.
        """
        from raybench.compare import CompareOptions, compare_models

        opts = CompareOptions(by=by, split=split, n_boot=n_boot, seed=seed, per_seed=per_seed,
                              interval=interval, rope=rope)
        return compare_models(self, metric, scenario, baseline, opts)

    def findings(self, n_boot: int = 1000) -> pd.DataFrame:
        """What the study found, one row per verdict, most severe first.

        Columns ``kind`` (best model, source gap, collapsed model, ROI focus, lungs-hidden
        control, calibration, test origin, selection disagreement, few seeds), ``severity``,
        ``scenario``, ``model``, ``finding`` (a sentence with the numbers), ``value``, ``n``
        and ``section`` (the report section the numbers come from); see
        :mod:`raybench.findings`.
        """
        from raybench.findings import findings

        return findings(self, n_boot)

    def with_runs(self, frame: pd.DataFrame, columns: Sequence[str] = ()) -> pd.DataFrame:
        """``frame`` joined with the runs table (all its columns, or ``columns``)."""
        runs = self.runs[KEYS + [c for c in columns if c not in KEYS]] if columns else self.runs
        extra = [c for c in runs.columns if c not in frame.columns or c in KEYS]
        return frame.merge(runs[extra], on=KEYS, how="left")

    def completed_runs(self, scenario: Optional[str] = None) -> pd.DataFrame:
        """The runs rows of completed trials (of one scenario, when given).

        Raises:
            RaybenchError: No trial at all, or none of ``scenario`` (the message lists the
                scenarios there are).
        """
        runs = self.runs
        if runs.empty:
            raise RaybenchError(f"no trials found in {self.store.root.uri} "
                                f"(sweeps: {self.sweeps or 'none'})")
        if scenario is not None:
            if scenario not in set(runs[S.SCENARIO]):
                raise RaybenchError(f"no trials of scenario {scenario!r}; found "
                                    f"{sorted(runs[S.SCENARIO].dropna().unique())}")
            runs = runs[runs[S.SCENARIO] == scenario]
        return runs[runs[S.STATUS] == S.STATUS_COMPLETED]

    def scenarios(self) -> list[str]:
        """Scenarios with at least one completed trial."""
        return sorted(self.completed_runs()[S.SCENARIO].dropna().unique())

    def paper_table(self, scenario: Optional[str] = None, *, layout: str = "auto",
                    split: str = "test", positive: Optional[str] = None,
                    by_source: bool = False, roi: Optional[str] = "full",
                    interval: str = "bootstrap", n_boot: int = 2000,
                    seed: int = 0) -> pd.DataFrame:
        """Sensitivity and specificity as in the paper, mean and 95% interval over seeds.

        Args:
            scenario: Which scenario; may be left out when the results hold one.
            layout: ``table1`` (one row per model, for ``positive`` one-vs-rest, as in the
                paper's binary Table 1), ``table2`` (one row per model and class, Table 2) or
                ``auto`` (table1 for two classes, else table2).
            split: The evaluated split.
            positive: Table 1's positive class (default ``covid19``, else the last class).
            by_source: The same per source of the split's images (a ``source`` index level
                after ``model``; only trials whose split held several sources).
            roi: Only trials of this ``data.roi`` (a missing roi counts as ``full``); None
                mixes them.
            interval: ``bootstrap``: the two-level bootstrap over seeds and patients on the
                predictions of one trial per seed (the best on validation), its seed variance
                pooled across the table (``unpooled``: each row's own); ``t``: a
                Student t interval over the trials' values (one trial: its Wilson interval).
                Without predictions the ``t`` interval is used.
            n_boot: Bootstrap replicates; ``seed``: their seed.

        Returns:
            Indexed by ``model`` (table1) or ``model, class`` (table2); columns
            ``sensitivity``, ``sensitivity_low``, ``sensitivity_high``, the same for
            ``specificity``, ``seeds`` (trials averaged), ``n`` (images of the class, mean
            over trials), ``n_rest`` (images of the other classes) and ``interval`` (the
            method of that row's interval).
        """
        if interval not in INTERVALS:
            raise RaybenchError(f"interval {interval!r}: use one of {list(INTERVALS)}")
        scenarios = self.scenarios() if scenario is None else [scenario]
        if len(scenarios) != 1:
            raise RaybenchError(f"the results hold scenarios {scenarios}; pick one")
        runs = self.completed_runs(scenarios[0])
        if roi is not None and S.ROI in runs:
            runs = runs[runs[S.ROI].fillna("full") == roi]
        rows = self._rate_rows(runs, split, by_source, scenarios[0])
        classes = class_order(rows[S.CLASS].unique().tolist())
        layout, keys = _layout(layout, classes, by_source)
        if layout == "table1":
            positive = positive or ("covid19" if "covid19" in classes else classes[-1])
            rows = rows[rows[S.CLASS] == positive]
        out = _aggregate(rows, keys)
        if interval in ("bootstrap", "unpooled"):
            from raybench.intervals import rate_table

            boot = rate_table(self, scenarios[0], roi=roi, split=split, by_source=by_source,
                              n_boot=n_boot, seed=seed, pooled=interval == "bootstrap")
            if layout == "table1" and not boot.empty:
                boot = boot[boot[S.CLASS] == positive]
            out = _with_bootstrap(out, boot, keys)
        if layout == "table2":
            out = out.reindex(sorted(out.index, key=lambda k: (*k[:-1], classes.index(k[-1]))))
        return out

    def _rate_rows(self, runs: pd.DataFrame, split: str, by_source: bool,
                   scenario: str) -> pd.DataFrame:
        """Metrics rows (sensitivity, specificity, support, n) of ``runs`` on ``split``."""
        metrics = self.metrics
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

    def leaderboard(self, metric: str = "balanced_accuracy", *, split: str = "test",
                    cls: str = "all", ascending: bool = False) -> pd.DataFrame:
        """Trials ranked by one metric, with their runs columns (hyperparameters included)."""
        m = whole_split(self.metrics)
        rows = m[(m[S.METRIC] == metric) & (m[S.SPLIT] == split) & (m[S.CLASS] == cls)]
        if rows.empty:
            have = sorted(set(zip(m[S.METRIC], m[S.CLASS], strict=True)))
            raise RaybenchError(f"no {split} rows for metric {metric!r} class {cls!r}; "
                                f"available (metric, class): {have[:20]}")
        board = self.with_runs(rows[KEYS + [S.VALUE, S.CI_LOW, S.CI_HIGH]])
        board = board.rename(columns={S.VALUE: metric})
        board = board.sort_values(metric, ascending=ascending, kind="stable")
        return board.reset_index(drop=True)

    def compare(self, sweep_a: str, sweep_b: str,
                metrics: Sequence[str] = OVERALL, split: str = "test") -> pd.DataFrame:
        """Per model and metric: the mean over completed trials in each sweep and b - a.

        Returns:
            Indexed by ``model, metric``; columns ``<sweep_a>``, ``<sweep_b>``, ``delta``,
            ``n_<sweep_a>``, ``n_<sweep_b>``. A model missing from one sweep gets NaN there.
        """
        if sweep_a == sweep_b:
            raise RaybenchError("compare needs two different sweeps")
        means = {}
        for sweep in (sweep_a, sweep_b):
            res = self if sweep in self.sweeps else load(self.store.root.uri, sweep)
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

    def confusion(self, model: str, scenario: Optional[str] = None,
                  roi: Optional[str] = "full") -> pd.DataFrame:
        """Test confusion counts of ``model``, summed over its completed trials of ``roi``
        (a missing roi counts as ``full``; None: every roi).

        Rows are true labels, columns predicted labels, in :func:`class_order`.
        """
        runs = self.completed_runs(scenario)
        if roi is not None and S.ROI in runs:
            runs = runs[runs[S.ROI].fillna("full") == roi]
        preds = self.predictions
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

    def cam_trials(self, sweep: Optional[str] = None) -> list[str]:
        """Ids of the trials that stored CAMs (of one sweep, or of every loaded sweep)."""
        return [t for name in ([sweep] if sweep else self.sweeps)
                for t in sorted(self.store.cam_trials(name))]

    def cams(self, trial_id: str, sweep: Optional[str] = None) -> CamSet:
        """A trial's class activation maps (``sweep`` is needed only when the id is ambiguous)."""
        return self.store.read_cams(sweep or self._sweep_of(trial_id), trial_id)

    def timeline(self) -> pd.DataFrame:
        """One row per trial that ran: when, where, how long, and its slot on its node.

        Columns: sweep, trial_id, model, scenario, seed, status, node, accelerator,
        started_at, finished_at (UTC), duration_s, slot (0-based lane on its node: a trial
        takes the lowest lane free when it starts, so lanes = trials running at once).
        """
        return trial_timeline(self.runs)

    def utilisation(self, slots: Optional[int] = None) -> float:
        """Sum of trial durations / (slots x span); see :func:`utilisation`."""
        return utilisation(self.timeline(), slots)

    def _sweep_of(self, trial_id: str) -> str:
        hits = self.runs.loc[self.runs[S.TRIAL_ID] == trial_id, S.SWEEP].unique()
        if len(hits) != 1:
            raise RaybenchError(f"trial {trial_id!r} is in sweeps {list(hits)}; name the sweep")
        return str(hits[0])


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


def to_markdown(frame: pd.DataFrame, float_digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (index included when it is named)."""
    frame = frame.reset_index() if any(n is not None for n in frame.index.names) else frame

    def text(v: object) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{float_digits}g}"
        return str(v).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(text(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def render(frame: pd.DataFrame, fmt: str) -> str:
    """``frame`` as ``table`` (aligned text), ``csv``, ``json`` (records) or ``markdown``."""
    if fmt == "table":
        return frame.to_string()
    if fmt == "csv":
        return frame.to_csv(index=any(n is not None for n in frame.index.names)).rstrip("\n")
    if fmt == "json":
        flat = frame.reset_index() if any(n is not None for n in frame.index.names) else frame
        return flat.to_json(orient="records", indent=2)
    if fmt == "markdown":
        return to_markdown(frame)
    raise RaybenchError(f"unknown format {fmt!r}; choose from {list(FORMATS)}")


def load(uri: str, sweep: Optional[str] = None, *, compact: bool = False,
         skip_corrupt: bool = False) -> Results:
    """Opens a results root (local path or ``s3://bucket/prefix``).

    Args:
        uri: The results root.
        sweep: One sweep's name, or None for every sweep under the root.
        compact: Also write or refresh each sweep's snapshot (``_compact/``), which makes
            later loads of large sweeps fast; needs write access.
        skip_corrupt: Leave out (with a warning) trial files that cannot be read, instead of
            failing; their paths collect in ``Results.store.skipped``.

    Raises:
        RaybenchError: The root is a file or a sweep's folder, holds no sweep, or not the
            named one.
        CorruptResultError: A truncated or foreign result file (named, with the fix), unless
            ``skip_corrupt``.
    """
    store = ResultStore(uri, skip_corrupt=skip_corrupt)
    store.check_root()
    if sweep is not None:
        sweeps = [sweep]
        if not any(storage.exists(store.location(sweep, p)) for p in ("runs", "spec.yaml")):
            raise RaybenchError(f"no sweep {sweep!r} in {store.root.uri}; found "
                                f"{store.sweeps() or 'none'}")
    else:
        sweeps = store.sweeps()
        if not sweeps:
            raise RaybenchError(f"no sweeps found in {store.root.uri}")
    if compact:
        for name in sweeps:
            store.compact(name)
    return Results(store, sweeps)


def query(uri: str, sweep: Optional[str], table: str, scenario: Optional[str] = None,
          baseline: Optional[str] = None, split: str = "test", *,
          skip_corrupt: bool = False, interval: str = "bootstrap") -> pd.DataFrame:
    """What ``raybench results`` prints: ``runs``, ``metrics``, the formatted ``paper`` table,
    the ``significance`` table (:meth:`Results.compare_models`, rounded) or ``findings``."""
    res = load(uri, sweep, skip_corrupt=skip_corrupt)
    if table == "paper":
        return format_paper_table(res.paper_table(scenario, interval=interval))
    if table == "findings":
        return res.findings()
    if table == "significance":
        return format_significance(res.compare_models(None, scenario, baseline, split=split,
                                                      interval=interval))
    if table not in S.TABLES:
        raise RaybenchError(f"unknown table {table!r}; choose runs, metrics, paper, "
                            "significance or findings")
    return res.table(table)
