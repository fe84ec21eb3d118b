"""The results of one or more sweeps as pandas DataFrames: :func:`load` opens a results root,
:class:`Results` reads each table lazily, once, and answers the notebook's questions (the
tables are built in :mod:`~raybench.results.tables`, the timeline in
:mod:`~raybench.results.timeline`).
"""
from __future__ import annotations

from functools import cached_property
from typing import Optional, Sequence, Union

import pandas as pd

from raybench import schema as S
from raybench import storage
from raybench.camset import CamSet
from raybench.errors import RaybenchError
import raybench.results.tables as tables
from raybench.results.tables import KEYS, OVERALL
from raybench.results.timeline import trial_timeline, utilisation
from raybench.store import ResultStore


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
        return self._read(S.RUNS_TABLE)

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """Long format: split, class, metric, value, ci_low, ci_high per trial."""
        return self._read(S.METRICS_TABLE)

    @cached_property
    def epochs(self) -> pd.DataFrame:
        """One row per trial and epoch: losses, validation metrics, lr, seconds."""
        return self._read(S.EPOCHS_TABLE)

    @cached_property
    def predictions(self) -> pd.DataFrame:
        """One row per trial and test image: label, predicted, ``p_<class>`` probabilities."""
        return self._read(S.PREDICTIONS_TABLE)

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
        return tables.paper_table(self, scenario, layout=layout, split=split, positive=positive,
                                  by_source=by_source, roi=roi, interval=interval,
                                  n_boot=n_boot, seed=seed)

    def leaderboard(self, metric: str = "balanced_accuracy", *, split: str = "test",
                    cls: str = "all", ascending: bool = False) -> pd.DataFrame:
        """Trials ranked by one metric, with their runs columns (hyperparameters included)."""
        return tables.leaderboard(self, metric, split=split, cls=cls, ascending=ascending)

    def compare(self, sweep_a: str, sweep_b: str,
                metrics: Sequence[str] = OVERALL, split: str = "test") -> pd.DataFrame:
        """Per model and metric: the mean over completed trials in each sweep and b - a.

        Returns:
            Indexed by ``model, metric``; columns ``<sweep_a>``, ``<sweep_b>``, ``delta``,
            ``n_<sweep_a>``, ``n_<sweep_b>``. A model missing from one sweep gets NaN there.
        """
        if sweep_a == sweep_b:
            raise RaybenchError("compare needs two different sweeps")
        each = {sweep: self if sweep in self.sweeps else load(self.store.root.uri, sweep)
                for sweep in (sweep_a, sweep_b)}
        return tables.compare_sweeps(each, sweep_a, sweep_b, metrics, split)

    def confusion(self, model: str, scenario: Optional[str] = None,
                  roi: Optional[str] = "full") -> pd.DataFrame:
        """Test confusion counts of ``model``, summed over its completed trials of ``roi``
        (a missing roi counts as ``full``; None: every roi).

        Rows are true labels, columns predicted labels, in :func:`class_order`.
        """
        return tables.confusion(self, model, scenario, roi)

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
        if not any(storage.exists(store.location(sweep, p)) for p in (S.RUNS_TABLE, "spec.yaml")):
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
