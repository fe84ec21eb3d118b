"""The sweep's progress summary line at the edges: after Ctrl-C (interrupted trials are not
done; elapsed is the session's) and on a resumed sweep that had already finished (the trials of
earlier sessions count, with their best metric)."""
from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from raybench.store import ResultStore
from raybench.tune.ledger import Ledger
from tests.helpers.resultdata import write_trial

METRIC = "val_balanced_accuracy"


@dataclass
class FakeTrial:
    """What the summary reads of a Tune trial."""

    trial_id: str
    status: str
    config: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)


def _trial(tid: str, status: str, done: bool = False) -> FakeTrial:
    result = {METRIC: 0.5, "done": True} if done else ({METRIC: 0.4} if status != "PENDING" else {})
    return FakeTrial(f"tune_{tid}", status, {"trial_id": tid}, result)


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("sweep ")]


def test_after_ctrl_c_interrupted_trials_are_not_done(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from raybench.tune import ledger, progress

    monkeypatch.setitem(ledger._LEDGERS, "cc", Ledger())
    now = time.monotonic()
    monkeypatch.setattr(progress.time, "monotonic", lambda: now)  # elapsed exactly 12.2 s
    p = progress.Progress("cc", METRIC, "max", 5, results=str(tmp_path), started=now - 12.2)
    p.setup()
    # b wrote its results, and the interrupt came before Tune took its last result
    write_trial(ResultStore(str(tmp_path)), "cc", "b-s-s0", model="b", seed=0, scenario="s",
                labels=("normal", "covid19"), n=4, correct={"normal": 4, "covid19": 2})
    # Tune after Ctrl-C: stop_trial marks the running trials TERMINATED (and calls
    # on_trial_complete) without a `done` result; the trials that finished ended on one.
    trials = [_trial("a-s-s0", "TERMINATED", done=True), _trial("b-s-s0", "TERMINATED"),
              _trial("c-s-s0", "TERMINATED"), _trial("d-s-s0", "TERMINATED"),
              _trial("e-s-s0", "PENDING")]
    with caplog.at_level(logging.INFO, logger="raybench"):
        p.on_experiment_end(trials)
    assert _lines(caplog) == [
        "sweep cc | 2/5 done, 0 running, 1 pending, 0 errored, 2 interrupted | best "
        f"{METRIC}: - | elapsed 12s, eta -"]


def test_a_resumed_finished_sweep_counts_its_earlier_trials(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from raybench.tune import ledger, progress

    store, root = ResultStore(str(tmp_path)), str(tmp_path)
    ids = ["cnnx-s-s0-t000", "cnnx-s-s0-t001", "squeezenet-s-s0-t000", "squeezenet-s-s0-t001"]
    for i, tid in enumerate(ids):  # epochs 1..3+i: best val_balanced_accuracy 0.4 + 0.1 x (3+i)
        write_trial(store, "fin", tid, model=tid.split("-")[0], seed=0, scenario="s",
                    labels=("normal", "covid19"), n=4, correct={"normal": 4, "covid19": 2},
                    epochs=3 + i)
    write_trial(store, "fin", "cnnx-s-s1-t000", model="cnnx", seed=1, scenario="s",
                labels=("normal", "covid19"), n=4, correct={"normal": 4, "covid19": 2},
                status="crashed")  # retried by the resume: not ended
    monkeypatch.setitem(ledger._LEDGERS, "fin", Ledger())
    # The experiment Tune restores runs the Progress of the first session, unpickled, with
    # that session's counts; the resumed driver builds a fresh one for the same sweep.
    first = progress.Progress("fin", METRIC, "max", 5)
    first.counts.done, first.counts.best = 1, {"cnnx-s-s0": 0.1}
    restored = pickle.loads(pickle.dumps(first))
    progress.Progress("fin", METRIC, "max", 5, results=root, started=time.monotonic() - 65)
    restored.setup()
    left = [_trial("squeezenet-s-s0-t001", "TERMINATED", done=True)]  # also in the run rows
    with caplog.at_level(logging.INFO, logger="raybench"):
        restored.on_experiment_end(left)
    assert _lines(caplog) == [
        "sweep fin | 4/5 done, 0 running, 0 pending, 0 errored | best "
        f"{METRIC}: squeezenet-s-s0 1.000, cnnx-s-s0 0.800 | elapsed 1m05s, eta ?"]


def test_tunes_restore_advice_and_missing_result_json_lines_are_dropped(
        caplog: pytest.LogCaptureFixture) -> None:
    """Ray 2.60's own code emits both; raybench's filters drop exactly those lines."""
    from types import SimpleNamespace

    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis

    from raybench import cluster

    cluster.quiet_tune()

    def missing(trial: Any) -> None:
        raise FileNotFoundError(f"Could not fetch metrics for {trial}: both result.json and "
                                "progress.csv were not found at /x")

    trials = [SimpleNamespace(trial_id=tid) for tid in ("t1", "t2")]
    analysis = SimpleNamespace(trials=trials, _fetch_trial_dataframe=missing)
    with caplog.at_level(logging.WARNING):
        frames = ExperimentAnalysis._fetch_trial_dataframes(analysis)  # type: ignore[arg-type]
        logging.getLogger("ray.tune.tune").warning(
            "Experiment has been interrupted, but the most recent state was saved.\nResume "
            'experiment with: Tuner.restore(path="/r/_tune/x", trainable=...)')
        logging.getLogger("ray.tune.tune").warning("Trial t1 errored")
    assert sorted(frames) == ["t1", "t2"]
    assert [r.getMessage() for r in caplog.records] == ["Trial t1 errored"]
