"""What the sweep driver prints: one line per trial report, and a periodic summary line.

The summary line (every ``sweep.progress_interval_s`` seconds, and once at the end) is a
single ``logging`` line so it streams well through ``ray job logs`` / ``raybench submit
--wait`` and ``kubectl logs``::

    sweep demo | 5/16 done, 4 running, 3 pending, 1 errored | best val_balanced_accuracy:
    cnnx-paper-1-s0 0.812, resnet18-paper-1-s0 0.640 | elapsed 2m05s, eta 4m40s

(one line in the log). The ETA is the mean duration of the completed trials times the trials
still to finish, over the trials running at once.

The counts are by trial id, over the whole sweep: the trials that ended in earlier sessions
(their run rows, read when a session starts), those this session's scheduler recorded and let
Tune forget (:mod:`raybench.tune.ledger`), and those still in Tune. A trial Tune stopped at an
interrupt (Ctrl-C) without its last result is ``interrupted``, not done. Elapsed counts from the
start of the session's driver work, Ray's start included.
"""
from __future__ import annotations

import functools
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ray import tune

from raybench import schema as S
from raybench.trial import cell_name_of

log = logging.getLogger(__name__)
MAX_CELLS_SHOWN = 12


def fmt_duration(seconds: Optional[float]) -> str:
    """``1h02m``, ``4m40s``, ``12s``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class SweepCounts:
    """Trial counts and the best metric per cell, as the summary line shows them."""

    total: int
    done: int = 0
    running: int = 0
    pending: int = 0
    errored: int = 0
    interrupted: int = 0
    best: dict[str, float] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)

    def eta(self) -> Optional[float]:
        """Mean completed-trial duration x trials left / trials running at once."""
        left = self.total - self.done - self.errored
        if not self.durations or left <= 0:
            return 0.0 if left <= 0 else None
        mean = sum(self.durations) / len(self.durations)
        return mean * left / max(self.running, 1)


def summary_line(name: str, metric: str, mode: str, c: SweepCounts, elapsed: float) -> str:
    """The periodic summary line (see the module docstring)."""
    ranked = sorted(c.best.items(), key=lambda kv: kv[1], reverse=(mode == "max"))
    best = ", ".join(f"{cell} {value:.3f}" for cell, value in ranked[:MAX_CELLS_SHOWN])
    if len(ranked) > MAX_CELLS_SHOWN:
        best += f", ... (+{len(ranked) - MAX_CELLS_SHOWN} cells)"
    cut = f", {c.interrupted} interrupted" if c.interrupted else ""
    eta = "-" if c.interrupted else fmt_duration(c.eta())  # no trial runs on after an interrupt
    return (f"sweep {name} | {c.done}/{c.total} done, {c.running} running, {c.pending} pending, "
            f"{c.errored} errored{cut} | best {metric}: {best or '-'} | elapsed "
            f"{fmt_duration(elapsed)}, eta {eta}")


@dataclass
class Session:
    """One driver session of a sweep: its trial count, its start and what earlier sessions
    ended. Kept here, by sweep name, because a restored experiment runs the :class:`Progress`
    it was built with (Tune unpickles it, with another session's state)."""

    total: int
    started: float
    results: Optional[str] = None
    done: frozenset[str] = frozenset()
    errored: frozenset[str] = frozenset()
    best: dict[str, float] = field(default_factory=dict)


_SESSIONS: dict[str, Session] = {}

#: Run-row statuses of a trial that ended for good (a ``crashed`` one is retried).
DONE_STATUSES = (S.STATUS_COMPLETED, S.STATUS_STOPPED)
FAILED_STATUSES = (S.STATUS_ERROR,)


def cell_of_trial(trial_id: str) -> str:
    """``<cell>-tNNN`` (optuna mode) or ``<cell>`` (paper mode) -> the cell's name."""
    return re.sub(r"-t\d{3,}$", "", trial_id)


def earlier_session(results: str, name: str, metric: str, mode: str, total: int,
                    started: float) -> Session:
    """The trials that ended in earlier sessions of ``name``, from its run rows, and the best
    ``metric`` per cell from their epoch rows."""
    from raybench.store import ResultStore

    store = ResultStore(results)
    runs = store.read_table(name, S.RUNS_TABLE)
    done = frozenset(runs.loc[runs[S.STATUS].isin(DONE_STATUSES), S.TRIAL_ID])
    errored = frozenset(runs.loc[runs[S.STATUS].isin(FAILED_STATUSES), S.TRIAL_ID])
    best: dict[str, float] = {}
    epochs = store.read_table(name, S.EPOCHS_TABLE) if done else None
    if epochs is not None and metric in epochs.columns:
        ended = epochs[epochs[S.TRIAL_ID].isin(done)].dropna(subset=[metric])
        per_trial = ended.groupby(S.TRIAL_ID)[metric].agg("max" if mode == "max" else "min")
        for trial_id, value in per_trial.items():
            cell = cell_of_trial(str(trial_id))
            old = best.get(cell)
            if old is None or (value > old if mode == "max" else value < old):
                best[cell] = float(value)
    return Session(total, started, results, done, errored, best)


class Progress(tune.Callback):
    """Per-report lines, trial failures, and the periodic sweep summary line."""

    def __init__(self, name: str, metric: str, mode: str, total: int,
                 interval_s: float = 30.0, results: Optional[str] = None,
                 started: Optional[float] = None) -> None:
        self.name, self.metric, self.mode, self.interval_s = name, metric, mode, interval_s
        self.counts = SweepCounts(total)
        self.errors: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._last = time.monotonic()
        began = self._last if started is None else started
        _SESSIONS[name] = (earlier_session(results, name, metric, mode, total, began)
                           if results else Session(total, began))

    @property
    def session(self) -> Session:
        """This driver's session of the sweep (one without earlier trials if none was opened)."""
        return _SESSIONS.setdefault(self.name, Session(self.counts.total, time.monotonic()))

    def setup(self, stop: Any = None, num_samples: Optional[int] = None,
              total_num_samples: Optional[int] = None, **info: Any) -> None:
        """Experiment start (also after ``Tuner.restore`` unpickled this callback)."""
        self._last = time.monotonic()
        self._started = {}
        self.counts = SweepCounts(self.session.total, best=dict(self.session.best))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started.setdefault(trial.trial_id, time.monotonic())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        value = float(result.get(self.metric, float("nan")))
        log.info("trial %s | %s | %s | epoch %s | %s %.4f", result.get("raybench_trial", trial),
                 result.get(S.MODEL), result.get(S.SCENARIO), result.get(S.EPOCH),
                 self.metric, value)
        if math.isfinite(value):
            cell = cell_name_of(trial.config)
            old = self.counts.best.get(cell)
            better = old is None or (value > old if self.mode == "max" else value < old)
            self.counts.best[cell] = value if better else old  # type: ignore[assignment]

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        start = self._started.pop(trial.trial_id, None)
        if start is not None:
            self.counts.durations.append(time.monotonic() - start)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started.pop(trial.trial_id, None)
        self.errors[trial.config.get(S.TRIAL_ID, str(trial))] = error_message(trial)
        log.warning("trial %s failed: %s", trial.config.get(S.TRIAL_ID, trial),
                    self.errors[trial.config.get(S.TRIAL_ID, str(trial))])

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last >= self.interval_s:
            self.emit(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.emit(trials)

    def emit(self, trials: list) -> None:
        """Counts the trials (see the module docstring) and logs the summary line."""
        from raybench.tune.ledger import ledger_of

        count_trials(self.counts, self.session, trials, ledger_of(self.name),
                     functools.partial(wrote_run_row, self.session.results, self.name))
        self._last = time.monotonic()
        log.info(summary_line(self.name, self.metric, self.mode, self.counts,
                              self._last - self.session.started))


def wrote_run_row(results: Optional[str], name: str, trial_id: str) -> bool:
    """Whether the trial wrote its run row (its last act when it completes)."""
    from raybench.store import ResultStore

    return results is not None and ResultStore(results).has_trial_file(name, "runs", trial_id)


def count_trials(c: SweepCounts, session: Session, trials: list, ledger: Any,
                 completed: Callable[[str], bool] = lambda trial_id: False) -> None:
    """Fills ``c`` by trial id: earlier sessions, the ledger's ended trials, Tune's trials.

    A ``TERMINATED`` Tune trial whose last result is not ``done`` was stopped by the interrupt
    (a trial that finished, or that ASHA stopped, ends on a ``done`` result), unless
    ``completed(trial_id)``: it had written its results when the interrupt came.
    """
    done, errored = set(session.done), set(session.errored)
    for row in ledger.rows:
        status = row.get(S.STATUS)
        if status in DONE_STATUSES:
            done.add(row[S.TRIAL_ID])
        elif status in FAILED_STATUSES or status == S.STATUS_CRASHED:
            errored.add(row[S.TRIAL_ID])
    c.running = c.pending = c.interrupted = 0
    for t in trials:
        tid = (t.config or {}).get(S.TRIAL_ID, t.trial_id)
        if t.status == "TERMINATED" and (t.last_result or {}).get("done"):
            done.add(tid)
        elif t.status == "TERMINATED" and tid not in done and completed(tid):
            done.add(tid)
        elif t.status == "TERMINATED" and tid not in done:
            c.interrupted += 1
        elif t.status == "ERROR":
            errored.add(tid)
        elif t.status == "RUNNING":
            c.running += 1
        elif t.status in ("PENDING", "PAUSED"):
            c.pending += 1
    # a ledger that kept statuses only (no rows, so no ids) counts by status
    plain = not ledger.rows
    c.done = len(done) + (ledger.statuses["TERMINATED"] if plain else 0)
    c.errored = len(errored - done) + (ledger.statuses["ERROR"] if plain else 0)


def error_message(trial: Any) -> str:
    """The exception's own message of a failed trial (not Ray's coloured header line)."""
    text = ""
    path = getattr(trial, "error_file", None) or ""
    try:
        if path:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
    except OSError:
        text = ""
    return exception_line(text) or "failed (no error message recorded)"


def exception_line(text: str) -> str:
    """The last ``Type: message`` line of a traceback text, without ANSI colours."""
    import re

    clean = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [ln.strip() for ln in clean.splitlines() if ln.strip()]
    pattern = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\w*)(: .*)?$")
    hits = [ln for ln in lines if pattern.match(ln)]
    line = hits[-1] if hits else (lines[-1] if lines else "")
    return re.sub(r"^ray\.exceptions\.\w+: ", "", line)[:500]
