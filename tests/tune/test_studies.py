"""Counting a trial's crashes across resumes (raybench.tune.studies.crash_count) on a real
Optuna study: retries are new study trials that name their first attempt."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from raybench.tune import studies


def _attempt(study: optuna.Study, first: int | None, state: TrialState, status: str = "",
             reset: bool = False) -> None:
    attrs = {} if first is None else {studies.RETRY_OF: first}
    if reset:
        attrs[studies.BUDGET_RESET] = True
    study.enqueue_trial({"x": 1.0}, user_attrs=attrs)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 2.0)
    if status:
        trial.set_user_attr(studies.STATUS_ATTR, status)
    study.tell(trial, 0.5 if state == TrialState.COMPLETE else None,
               state=None if state == TrialState.COMPLETE else state)


def test_crashes_count_across_retries_and_start_again_after_a_reset() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    _attempt(study, None, TrialState.FAIL, "crashed")        # 0: trial id t000, crashed
    _attempt(study, None, TrialState.COMPLETE)               # 1: t001
    _attempt(study, 0, TrialState.FAIL, "crashed")           # 2: t000's first retry
    _attempt(study, None, TrialState.FAIL, "error")          # 3: t003, failed (final)
    trials = study.get_trials(deepcopy=False)
    assert [studies.crash_count(trials, n) for n in (0, 1, 3)] == [2, 0, 0]
    _attempt(study, 0, TrialState.FAIL, "crashed", reset=True)  # --retry-crashed, crashed
    trials = study.get_trials(deepcopy=False)
    assert studies.crash_count(trials, 0) == 1
    assert studies.latest_attempts(trials)[0].number == 4
