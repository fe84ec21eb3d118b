"""How a sweep session ended: run rows for trials without results, and the exit it maps to.

Trials that wrote no results (stopped by ASHA, errored) get a run row here, after ``fit``;
:func:`check_outcome` turns the session's end into the CLI's exit status (errored trials ->
:class:`~raybench.errors.SweepError`, unfinished cells -> :class:`~raybench.errors.SweepInterrupted`).
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from raybench import schema as S
from raybench.config import Spec
from raybench.engine.worker import STATE_DIR
from raybench.errors import RaybenchError, SweepError, SweepInterrupted
from raybench.store import ResultStore
from raybench.trial import TrialConfig, searched_values
from raybench.tune import studies
from raybench.tune.experiment import plan_of

log = logging.getLogger("raybench.tune.sweep")


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

    A trial that ended without results was stopped by ASHA or errored; after an interrupt, a
    trial without results was cut short, not stopped: it gets no row (``--resume`` continues
    it). Returns None for a Tune trial that is not one of raybench's.
    """
    if "spec" not in config:
        return None
    trial = TrialConfig.from_ray(config)
    tspec, trial_id = trial.trial_spec, trial.trial_id
    # A trial writes its run row last: its file exists only once the trial completed.
    done = store.has_trial_file(spec.name, "runs", trial_id)
    status = S.STATUS_ERROR if error else (
        S.STATUS_COMPLETED if done else S.STATUS_INTERRUPTED if interrupted
        else S.STATUS_STOPPED)
    params = searched_values(tspec)
    text = error_text(error) if error else None
    if status == S.STATUS_STOPPED:  # stopped by ASHA: never continued, its state goes
        store.delete_file(spec.name, f"{STATE_DIR}/{trial_id}.pt")
    if (not done and status != S.STATUS_INTERRUPTED) or error:
        store.write_table(spec.name, "runs", trial_id, [{
            S.MODEL: tspec.model.name, S.SCENARIO: trial.cell.scenario,
            S.SEED: tspec.train.seed, **params, S.EPOCHS: tspec.train.epochs,
            S.EPOCHS_RUN: metrics.get(S.EPOCH, 0), S.STATUS: status, S.ERROR: text,
            S.ROI: tspec.data.roi}])
    return {S.TRIAL_ID: trial_id, S.STATUS: status, S.ERROR: text, **params}


def trial_error(trial: Any) -> Optional[BaseException]:
    """The exception an ended Tune trial errored with (read back from its error files)."""
    if trial.status != "ERROR":
        return None
    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception as exc:  # an error file that cannot be read back still is an error
        return RuntimeError(f"failed; its error file is unreadable ({type(exc).__name__})")
    return error or RuntimeError("failed (no error message recorded)")


def ended_trial(spec: Spec, trial: Any) -> tuple[str, Optional[dict[str, Any]]]:
    """What :class:`raybench.tune.ledger.Forgetful` records of a trial that ended: its Tune
    status and its summary row (its run row written first when it wrote none)."""
    row = trial_outcome(spec, ResultStore(spec.results), trial.config or {}, trial_error(trial),
                        trial.last_result or {})
    return trial.status, row


def finalize(spec: Spec, store: ResultStore, grid: Any, interrupted: bool = False,
             ended: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The session's summary: the trials recorded as they ended (``ended``, see
    :mod:`raybench.tune.ledger`), then those still in Tune's ``grid`` at the end.

    Trials of the grid that ended without results (stopped by ASHA, errored) get their run row
    here; after an interrupt, a trial without results was cut short and gets none.
    """
    summary = list(ended)
    for result in grid:
        row = trial_outcome(spec, store, result.config or {}, result.error,
                            result.metrics or {}, interrupted)
        if row is not None:
            summary.append(row)
    return summary


def storage_lost(store: ResultStore) -> Optional[SweepError]:
    """A resumable :class:`SweepError` when the results store stopped answering, else None."""
    try:
        store.check_writable()
    except RaybenchError as exc:
        return SweepError(f"storage lost during the sweep: {exc}; the sweep is resumable: "
                          "continue with --resume once the store is back")
    return None


def unfinished_cells(spec: Spec) -> list[str]:
    """Cells whose study has fewer finished trials than the budget (an errored trial counts)."""
    import optuna
    from optuna.trial import TrialState

    plan = plan_of(spec)
    storage = studies.open_storage(studies.local_journal(spec.results, spec.name))
    names = {s.study_name for s in storage.get_all_studies()}
    out = []
    for cell in plan.cells:
        finished = 0
        if cell.name in names:
            study = optuna.load_study(study_name=cell.name, storage=storage)
            finished = sum(t.state.is_finished()
                           or t.user_attrs.get("raybench_status") == S.STATUS_ERROR
                           for t in study.get_trials(deepcopy=False)
                           if t.state != TrialState.WAITING)
        if finished < plan.budget:
            out.append(cell.name)
    return out


def was_interrupted(spec: Spec, elapsed: float) -> bool:
    """Cells are unfinished and the time budget (if any) was not what ended the sweep."""
    budget = spec.sweep.time_budget_s
    unfinished = unfinished_cells(spec)
    if unfinished and budget and elapsed >= budget:
        log.info("time budget of %.0f s reached; %d cell(s) not finished", budget, len(unfinished))
        return False
    return bool(unfinished)


def check_outcome(summary: list[dict[str, Any]], interrupted: bool) -> None:
    """Raises unless every trial completed or was stopped by the scheduler by design."""
    if interrupted:
        raise SweepInterrupted("interrupted; continue with --resume", summary)
    failed = [s for s in summary if s[S.STATUS] == S.STATUS_ERROR]
    if failed:
        raise SweepError("\n".join(f"trial {s[S.TRIAL_ID]} failed: {s[S.ERROR]}" for s in failed),
                         summary)
