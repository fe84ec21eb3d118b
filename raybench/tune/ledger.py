"""Tune forgets the trials that ended; raybench keeps their outcome (flat driver memory).

Ray Tune's controller (measured with Ray 2.60) keeps every trial it ever ran: the ``Trial``
object with its last result, its metric windows, two cached JSON copies of its state, its
tracked actor and the tasks queued for it, and it writes every trial's state into every
experiment checkpoint. A driver therefore grew by about 0.2 MiB a trial and each checkpoint took
longer as the sweep went on (``benchmarks/RESULTS.md``). A raybench sweep does not need
an ended trial in Tune: its results are in its own per-trial files, its study trial in the Optuna
journal, and what the end of the session needs of it (its run row when it wrote none, its line
in the summary) is taken here when it ends.

:class:`Forgetful` is the scheduler of every sweep (FIFO; :class:`~raybench.tune.schedule.CellASHA`
builds on it). At the start of each of the controller's scheduling passes it takes every trial
that has ended (``TERMINATED`` or ``ERROR``) and whose actor is gone, records its outcome
(:func:`raybench.tune.outcome.ended_trial`) in this driver's :class:`Ledger`, and removes it from
the controller's trial list, status sets and cached state. A restored experiment then holds only
the trials that had not ended; the searcher knows the others from the journal and the per-trial
files (``raybench.tune.search``). The controller's internals are private: :func:`forget` touches
only attributes it finds, so a Ray without them keeps every trial, as Tune itself does.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ray.tune.logger import JsonLoggerCallback
from ray.tune.progress_reporter import TrialProgressCallback
from ray.tune.schedulers import FIFOScheduler

log = logging.getLogger(__name__)


@dataclass
class Ledger:
    """The ended trials of this driver's session: one summary row each, and counts by status."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def add(self, status: str, row: Optional[dict[str, Any]]) -> None:
        self.statuses[status] += 1
        if row is not None:
            self.rows.append(row)


#: This process's ledgers, by sweep name. The scheduler holding the name is pickled into Tune's
#: ``tuner.pkl`` and comes back on ``Tuner.restore``; the ledger itself stays in the driver.
_LEDGERS: dict[str, Ledger] = {}


def open_ledger(sweep: str) -> Ledger:
    """A fresh ledger for a session of ``sweep`` (one driver runs one session at a time)."""
    _LEDGERS[sweep] = Ledger()
    return _LEDGERS[sweep]


def ledger_of(sweep: str) -> Ledger:
    """The ledger of the current session of ``sweep`` (an empty one when none was opened)."""
    return _LEDGERS.setdefault(sweep, Ledger())


#: The controller's sets of trials by status, and its other per-trial containers (Ray 2.60).
_STATUS_SETS = ("_stopped_trials", "_failed_trials", "_live_trials", "_pending_trials",
                "_running_trials", "_paused_trials", "_staged_trials", "_trials_to_cache")
_BY_TRIAL_ID = ("_trial_metadata", "_cached_trial_decisions", "_queued_trial_decisions")


def ended(controller: Any) -> list[Any]:
    """Trials that ended (``TERMINATED``/``ERROR``) and no longer own an actor."""
    owned = getattr(controller, "_trial_to_actor", None)
    if owned is None:
        return []
    candidates = (set(getattr(controller, "_stopped_trials", ()))
                  | set(getattr(controller, "_failed_trials", ())))
    return [t for t in candidates if t not in owned and t.status in ("TERMINATED", "ERROR")]


def forget(controller: Any, record: Callable[[Any], None]) -> int:
    """Records and removes the ended trials from Tune's controller; returns how many.

    ``record(trial)`` runs first for each one; a trial whose record fails stays in Tune.
    """
    trials = getattr(controller, "_trials", None)
    if not isinstance(trials, list):
        return 0
    gone = set()
    for trial in ended(controller):
        record(trial)
        gone.add(trial)
    if not gone:
        return 0
    trials[:] = [t for t in trials if t not in gone]
    for name in _STATUS_SETS:
        container = getattr(controller, name, None)
        if isinstance(container, set):
            container -= gone
    for name in _BY_TRIAL_ID:
        container = getattr(controller, name, None)
        if isinstance(container, dict):
            for trial in gone:
                container.pop(trial.trial_id, None)
    pending = getattr(controller, "_pending_trials_list", None)
    if isinstance(pending, list):
        pending[:] = [t for t in pending if t not in gone]
    by_resources = getattr(controller, "_resources_to_pending_trials", None)
    if isinstance(by_resources, dict):
        for group in by_resources.values():
            group -= gone
    _drop_stale_actor_queues(getattr(controller, "_actor_manager", None))
    return len(gone)


def _drop_stale_actor_queues(manager: Any) -> None:
    """Ray 2.60's actor manager keeps a (``defaultdict``) queue of tasks for every actor that
    was once pending, also after the actor started or was removed: one entry per trial."""
    queues = getattr(manager, "_pending_actors_to_enqueued_actor_tasks", None)
    pending = getattr(manager, "_pending_actors_to_attrs", None)
    if not isinstance(queues, dict) or not isinstance(pending, dict):
        return
    for actor in [a for a in queues if a not in pending]:
        del queues[actor]


def status_only(trial: Any) -> tuple[str, None]:
    """A ``record`` that keeps only an ended trial's Tune status (no run row, no summary)."""
    return trial.status, None


#: Ended trials between two :func:`release_free_memory` calls.
TRIM_EVERY = 200


def release_free_memory() -> bool:
    """Hands the C heap's free pages back to the system (glibc ``malloc_trim``); False elsewhere.

    What Tune frees of a forgotten trial is freed memory the heap keeps: measured on the
    driver-only benchmark, 450 trials grew the driver by 36 MiB, 13 MiB once trimmed.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


class Forgetful(FIFOScheduler):
    """FIFO scheduling that first hands the ended trials to the sweep's ledger (see module).

    Args:
        sweep: The sweep's name (which :class:`Ledger` to record into).
        record: ``record(trial) -> (status, summary row or None)``: the trial's outcome, its run
            row written when it wrote none (:func:`raybench.tune.outcome.ended_trial`).
    """

    def __init__(self, sweep: str,
                 record: Optional[Callable[[Any], tuple[str, Optional[dict]]]] = None) -> None:
        super().__init__()
        self.sweep, self.record = sweep, record or status_only
        self._since_trim = 0

    def _note(self, trial: Any) -> None:
        status, row = self.record(trial)
        ledger_of(self.sweep).add(status, row)

    def choose_trial_to_run(self, tune_controller: Any) -> Optional[Any]:
        controller = getattr(tune_controller, "_tune_controller", tune_controller)
        self._since_trim = getattr(self, "_since_trim", 0) + forget(controller, self._note)
        if self._since_trim >= TRIM_EVERY:
            self._since_trim = 0
            release_free_memory()
        return super().choose_trial_to_run(tune_controller)


class JsonLog(JsonLoggerCallback):
    """Tune's ``result.json`` writer without its leak: Ray 2.60's ``JsonLoggerCallback`` keeps
    every trial's config in a dict keyed by the ``Trial`` (so every ended trial stays alive with
    all it holds); this one drops the entry once the trial's log ends (a retried trial sets it
    again when it starts)."""

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        super().log_trial_end(trial, failed)
        configs = getattr(self, "_trial_configs", None)
        if isinstance(configs, dict):
            configs.pop(trial, None)


class TrialProgress(TrialProgressCallback):
    """Tune's per-trial result printer (which Tune adds when none is given) without its leak:
    Ray 2.60's keeps sets and dicts keyed by every ``Trial`` it printed; this one drops a trial
    from them once it completed or errored."""

    def _forget(self, trial: Any) -> None:
        for value in vars(self).values():
            if isinstance(value, dict):
                value.pop(trial, None)
            elif isinstance(value, set):
                value.discard(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        super().on_trial_complete(iteration, trials, trial, **info)
        self._forget(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        super().on_trial_error(iteration, trials, trial, **info)
        self._forget(trial)
