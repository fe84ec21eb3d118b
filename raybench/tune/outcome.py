"""How a sweep session ended: run rows for trials without results, and the exit it maps to.

Trials that wrote no results (stopped by ASHA, failed) get a run row here, as they end;
:func:`check_outcome` turns the session's end into the CLI's exit status (failed trials ->
:class:`~raybench.errors.SweepError`, unfinished cells -> :class:`~raybench.errors.SweepInterrupted`).

A failed trial is either ``error`` or ``crashed``. ``error``: it failed on its spec or its data
(:data:`raybench.errors.FINAL_ERRORS`; the trial wrote that run row itself before it raised);
a rerun would fail the same way, so it is final. ``crashed``: anything else (its node lost
beyond ``scaling.max_failures``, a killed process, out of memory); ``--resume`` retries it.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence

from raybench import schema as S
from raybench.config import Spec
from raybench.errors import RaybenchError, SweepError, SweepInterrupted, final_error
from raybench.store import STATE_DIR, ResultStore
from raybench.trial import TrialConfig, searched_values
from raybench.tune import claim, studies
from raybench.tune.experiment import plan_of

log = logging.getLogger(__name__)


def error_text(error: BaseException) -> str:
    """The failed trial's own exception, ``Type: message`` on one line (no Ray header)."""
    from raybench.tune.progress import exception_line

    cause = getattr(error, "cause", None) or error
    message = str(cause).strip()
    if message and "\n" not in message and not message.startswith("ray::"):
        return f"{type(cause).__name__}: {message}"[:500]
    return exception_line(str(error)) or type(cause).__name__


def trial_outcome(spec: Spec, store: ResultStore, config: dict[str, Any],
                  error: Optional[BaseException], metrics: dict[str, Any],
                  interrupted: bool = False) -> Optional[dict[str, Any]]:
    """One trial's summary row; writes its run row when it ended without writing one.

    A trial that ended without results was stopped by ASHA or failed (``error`` when it failed
    on its spec or data, else ``crashed``); after an interrupt, a trial without results was cut
    short, not stopped: it gets no row (``--resume`` continues it). Returns None for a Tune
    trial that is not one of raybench's.
    """
    if "spec" not in config:
        return None
    trial = TrialConfig.from_ray(config)
    tspec, trial_id = trial.trial_spec, trial.trial_id
    params = searched_values(tspec)
    text = error_text(error) if error else None
    if error:
        row = store.trial_row(spec.name, S.RUNS_TABLE, trial_id)  # the trial's own, if it wrote one
        final = (row or {}).get(S.STATUS) == S.STATUS_ERROR or final_error(error) is not None
        status = S.STATUS_ERROR if final else S.STATUS_CRASHED
        if final:
            text = (row or {}).get(S.ERROR) or text
    # Otherwise a trial writes its run row last: its file exists only once it completed (a
    # retried crash's old row is removed when the retry starts).
    elif store.has_trial_file(spec.name, S.RUNS_TABLE, trial_id):
        return {S.TRIAL_ID: trial_id, S.STATUS: S.STATUS_COMPLETED, S.ERROR: None, **params}
    else:
        status = S.STATUS_INTERRUPTED if interrupted else S.STATUS_STOPPED
    if status == S.STATUS_STOPPED:  # stopped by ASHA: never continued, its state goes
        store.delete_file(spec.name, f"{STATE_DIR}/{trial_id}.pt")
    if status != S.STATUS_INTERRUPTED:
        store.write_table(spec.name, S.RUNS_TABLE, trial_id, [
            trial.run_row(status, text, metrics.get(S.EPOCH, 0))])
    return {S.TRIAL_ID: trial_id, S.STATUS: status, S.ERROR: text, **params}


def trial_error(trial: Any) -> Optional[BaseException]:
    """The exception an ended Tune trial errored with (read back from its error files)."""
    if trial.status != "ERROR":
        return None
    try:
        error = _staged_error(trial) or trial.get_pickled_error() or trial.get_error()
    except Exception as exc:  # an error file that cannot be read back still is an error
        return RuntimeError(f"failed; its error file is unreadable ({type(exc).__name__})")
    return error or RuntimeError("failed (no error message recorded)")


def _staged_error(trial: Any) -> Optional[BaseException]:
    """The error Tune has just written into the trial's local folder (Ray 2.60 copies it to
    the storage path only at its next sync, after the trial has ended here)."""
    import pickle

    path = getattr(trial, "pickled_error_file", None)
    if path and os.path.exists(path):
        try:
            with open(path, "rb") as handle:
                error = pickle.load(handle)  # Tune's own file, written by this driver
        except Exception:  # a class this driver cannot import: the text file says it
            error = None
        if isinstance(error, BaseException):
            return error
    text = getattr(trial, "error_file", None)
    if text and os.path.exists(text):
        with open(text, encoding="utf-8", errors="replace") as handle:
            return RuntimeError(handle.read().strip() or "failed (no error message recorded)")
    return None


def ended_trial(spec: Spec, trial: Any) -> tuple[str, Optional[dict[str, Any]]]:
    """What :class:`raybench.tune.ledger.Forgetful` records of a trial that ended: its Tune
    status and its summary row (its run row written first when it wrote none)."""
    claim.check_held(spec.name)
    row = trial_outcome(spec, ResultStore(spec.results), trial.config or {}, trial_error(trial),
                        trial.last_result or {})
    return trial.status, row


def finalize(spec: Spec, store: ResultStore, grid: Any, interrupted: bool = False,
             ended: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The session's summary: the trials recorded as they ended (``ended``, see
    :mod:`raybench.tune.ledger`), then those still in Tune's ``grid`` at the end.

    Trials of the grid that ended without results (stopped by ASHA, failed) get their run row
    here; after an interrupt, a trial without results was cut short and gets none. A trial id
    seen twice (a Tune trial restored as ended, then its retry) keeps its latest row.
    """
    summary = list(ended)
    for result in grid:
        row = trial_outcome(spec, store, result.config or {}, result.error,
                            result.metrics or {}, interrupted)
        if row is not None:
            summary.append(row)
    latest = {row[S.TRIAL_ID]: row for row in summary}
    return list(latest.values())


def storage_lost(store: ResultStore) -> Optional[SweepError]:
    """A resumable :class:`SweepError` when the results store stopped answering, else None."""
    try:
        store.check_writable()
    except RaybenchError as exc:
        return SweepError(f"storage lost during the sweep: {exc}; the sweep is resumable: "
                          "continue with --resume once the store is back")
    return None


def final_crashes(spec: Spec) -> dict[str, int]:
    """Trials whose latest attempt crashed more often than ``sweep.max_retries`` (counted
    across resumes, :func:`raybench.tune.studies.crash_count`): trial id -> crashes.
    ``--resume`` no longer retries them; ``--resume --retry-crashed`` does."""
    plan = plan_of(spec)
    storage = studies.open_storage(studies.local_journal(spec.results, spec.name))
    names = {s.study_name for s in storage.get_all_studies()}
    out = {}
    for cell in (c for c in plan.cells if c.name in names):
        trials = storage.get_all_trials(storage.get_study_id_from_name(cell.name), deepcopy=False)
        for first, t in studies.latest_attempts(trials).items():
            if t.state.name == "FAIL" and t.user_attrs.get(studies.STATUS_ATTR) == S.STATUS_CRASHED:
                crashes = studies.crash_count(trials, first)
                if crashes > spec.sweep.max_retries:
                    out[plan.trial_id(cell, first)] = crashes
    return out


def with_final_crashes(spec: Spec, store: ResultStore, summary: list[dict[str, Any]],
                       finals: dict[str, int]) -> list[dict[str, Any]]:
    """The summary, plus a row for each final crashed trial that did not run this session
    (its run row's error), so that the exit line names it."""
    seen = {row[S.TRIAL_ID] for row in summary}
    extra = []
    for trial_id in sorted(set(finals) - seen):
        row = store.trial_row(spec.name, S.RUNS_TABLE, trial_id) or {}
        extra.append({S.TRIAL_ID: trial_id, S.STATUS: S.STATUS_CRASHED,
                      S.ERROR: row.get(S.ERROR) or "no error recorded"})
    return summary + extra


def unfinished_cells(spec: Spec, crashed_done: bool = False) -> list[str]:
    """Cells whose study has fewer finished trial ids than the budget.

    A trial id counts by its latest attempt: finished (an ``error`` trial included) counts, a
    crashed one counts only with ``crashed_done`` (it ended this session; ``--resume`` retries
    it).
    """
    plan = plan_of(spec)
    storage = studies.open_storage(studies.local_journal(spec.results, spec.name))
    names = {s.study_name for s in storage.get_all_studies()}
    out = []
    for cell in plan.cells:
        finished = 0
        if cell.name in names:
            study_id = storage.get_study_id_from_name(cell.name)
            latest = studies.latest_attempts(storage.get_all_trials(study_id, deepcopy=False))
            for t in latest.values():
                status = t.user_attrs.get(studies.STATUS_ATTR)
                if status == S.STATUS_CRASHED:
                    finished += crashed_done
                else:
                    finished += t.state.is_finished() or status == S.STATUS_ERROR
        if finished < plan.budget:
            out.append(cell.name)
    return out


def was_interrupted(spec: Spec, elapsed: float) -> bool:
    """Cells are unfinished and the time budget (if any) was not what ended the sweep.

    A cell left unfinished only by trials that crashed was not interrupted: the session ends
    with those trials' errors (exit 1), and ``--resume`` retries them.
    """
    budget = spec.sweep.time_budget_s
    unfinished = unfinished_cells(spec, crashed_done=True)
    if unfinished and budget and elapsed >= budget:
        log.info("time budget of %.0f s reached; %d cell(s) not finished", budget, len(unfinished))
        return False
    return bool(unfinished)


def check_outcome(summary: list[dict[str, Any]], interrupted: bool,
                  finals: Optional[dict[str, int]] = None, max_retries: int = 2) -> None:
    """Raises unless every trial completed or was stopped by the scheduler by design.

    ``finals``: the crashed trials past their retry budget (:func:`final_crashes`), whose
    line says that ``--resume`` no longer retries them.
    """
    if interrupted:
        raise SweepInterrupted("interrupted; continue with --resume", summary)
    finals = finals or {}

    def line(s: dict[str, Any]) -> str:
        trial_id = s[S.TRIAL_ID]
        if s[S.STATUS] == S.STATUS_ERROR:
            return f"trial {trial_id} failed: {s[S.ERROR]}"
        if trial_id in finals:
            return (f"trial {trial_id} crashed: {s[S.ERROR]}; it crashed {finals[trial_id]} "
                    f"times, more than sweep.max_retries ({max_retries}): final; "
                    "--resume --retry-crashed retries it")
        return f"trial {trial_id} crashed: {s[S.ERROR]}; --resume retries it"

    lines = [line(s) for s in summary if s[S.STATUS] in (S.STATUS_ERROR, S.STATUS_CRASHED)]
    if lines:
        raise SweepError("\n".join(lines), summary)


def earlier_sessions(store: ResultStore, sweep: str, summary: Sequence[dict[str, Any]],
                     had_rows: set[str], since: Any) -> set[str]:
    """The trials of a resumed session's ``summary`` that ended in an earlier session: Tune
    restored them from its snapshot and they ended again without training.

    Args:
        had_rows: The trial ids that had a run row when the session started (a listing, read
            before the sweep; only these few rows are opened here).
        since: When the session started (UTC ``datetime``); a row that finished before it is
            an earlier session's.
    """
    out = set()
    for row in summary:
        trial_id = row[S.TRIAL_ID]
        if trial_id not in had_rows or row[S.STATUS] == S.STATUS_CRASHED:
            continue
        finished = (store.trial_row(sweep, S.RUNS_TABLE, trial_id) or {}).get(S.FINISHED_AT)
        if finished is not None and finished < since:
            out.add(trial_id)
    return out
