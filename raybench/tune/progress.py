"""What the sweep driver prints: one line per trial report, and a periodic summary line.

The summary line (every ``sweep.progress_interval_s`` seconds, and once at the end) is a
single ``logging`` line so it streams well through ``ray job logs`` / ``raybench submit
--wait`` and ``kubectl logs``::

    sweep demo | 5/16 done, 4 running, 3 pending, 1 errored | best val_balanced_accuracy:
    cnnx-paper-1-s0 0.812, resnet18-paper-1-s0 0.640 | elapsed 2m05s, eta 4m40s

(one line in the log). The ETA is the mean duration of the completed trials times the trials
still to finish, over the trials running at once.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

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
    return (f"sweep {name} | {c.done}/{c.total} done, {c.running} running, {c.pending} pending, "
            f"{c.errored} errored | best {metric}: {best or '-'} | elapsed "
            f"{fmt_duration(elapsed)}, eta {fmt_duration(c.eta())}")


class Progress(tune.Callback):
    """Per-report lines, trial failures, and the periodic sweep summary line."""

    def __init__(self, name: str, metric: str, mode: str, total: int,
                 interval_s: float = 30.0) -> None:
        self.name, self.metric, self.mode, self.interval_s = name, metric, mode, interval_s
        self.counts = SweepCounts(total)
        self.errors: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._last = self._t0

    def setup(self, stop: Any = None, num_samples: Optional[int] = None,
              total_num_samples: Optional[int] = None, **info: Any) -> None:
        """Experiment start (also after ``Tuner.restore`` unpickled this callback)."""
        self._t0 = self._last = time.monotonic()
        self._started = {}

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
        """Counts the trials by status (Tune's, plus those it forgot) and logs the summary."""
        from raybench.tune.ledger import ledger_of

        status = [t.status for t in trials]
        forgotten = ledger_of(self.name).statuses
        c = self.counts
        c.done = status.count("TERMINATED") + forgotten["TERMINATED"]
        c.running = status.count("RUNNING")
        c.pending = status.count("PENDING") + status.count("PAUSED")
        c.errored = status.count("ERROR") + forgotten["ERROR"]
        self._last = time.monotonic()
        log.info(summary_line(self.name, self.metric, self.mode, c, self._last - self._t0))


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
