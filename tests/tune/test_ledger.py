"""Tune forgets ended trials; raybench's ledger keeps each one's outcome exactly once."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import pandas as pd

from raybench.config import load_spec

REPO = Path(__file__).resolve().parents[2]


def _state_trials(folder: Path) -> list[dict]:
    [state] = glob.glob(str(folder / "experiment_state-*.json"))
    return json.loads(Path(state).read_text())["trial_data"]


def test_ended_trials_are_recorded_once_and_leave_tunes_state(local_ray, tmp_path: Path) -> None:
    from ray import tune

    from raybench.tune.ledger import Forgetful, ledger_of, open_ledger

    def report_or_fail(config: dict) -> None:  # defined here: pickled by value for the workers
        from ray import tune

        if config["i"] == 3:
            raise ValueError("trial 3 fails on purpose")
        tune.report({"m": float(config["i"]), "epoch": 1})

    seen: list[tuple[int, str]] = []

    def record(trial):
        seen.append((trial.config["i"], trial.status))
        return trial.status, {"i": trial.config["i"], "status": trial.status}

    open_ledger("forget")
    tuner = tune.Tuner(
        report_or_fail, param_space={"i": tune.grid_search(list(range(8)))},
        tune_config=tune.TuneConfig(scheduler=Forgetful("forget", record), metric="m",
                                    mode="max", max_concurrent_trials=2),
        run_config=tune.RunConfig(name="forget", storage_path=str(tmp_path), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)))
    grid = tuner.fit()
    left = {r.config["i"] for r in grid}
    recorded = [i for i, _ in seen]
    # Every trial is either recorded as it ended or still in Tune's grid, never both.
    assert sorted(recorded + sorted(left)) == list(range(8)) and len(set(recorded)) == len(recorded)
    assert len(recorded) >= 5  # all but the last few were forgotten while the others ran
    assert dict(seen).get(3, "ERROR") == "ERROR"
    ledger = ledger_of("forget")
    assert ledger.statuses["TERMINATED"] + ledger.statuses["ERROR"] == len(recorded)
    assert [row["i"] for row in ledger.rows] == recorded
    # Tune's experiment state holds only what it had not forgotten when it was last saved.
    assert len(_state_trials(tmp_path / "forget")) <= len(left) + 2


def test_a_sweep_summarises_every_trial_while_tune_keeps_few(local_ray, tmp_path: Path) -> None:
    from raybench.tune.sweep import run_sweep

    spec = load_spec(REPO / "jobs" / "smoke.yaml", [
        "name=led", f"results={tmp_path / 'r'}", "train.epochs=1", "sweep.models=[cnnx]",
        "sweep.seeds=[0, 1, 2, 3, 4]", "sweep.mode=paper", f"data.cache_dir={tmp_path / 'c'}",
        "data.synthetic.per_class=4", "train.batch_size=4", "cam.enabled=false", "scaling.max_concurrent_trials=1"])
    summary = run_sweep(spec)
    ids = [f"cnnx-synthetic-s{s}" for s in range(5)]
    assert sorted(s["trial_id"] for s in summary) == ids
    assert all(s["status"] == "completed" for s in summary)
    runs = pd.read_parquet(tmp_path / "r" / "led" / "runs")
    assert sorted(runs["trial_id"]) == ids and (runs["status"] == "completed").all()
    assert len(_state_trials(tmp_path / "r" / "led" / "_tune" / "led")) <= 2


def test_the_driver_can_trim_its_heap_on_glibc() -> None:
    import platform

    from raybench.tune.ledger import release_free_memory

    assert release_free_memory() is (platform.libc_ver()[0] == "glibc")
