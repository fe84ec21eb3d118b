"""The retry budget of crashed trials: ``sweep.max_retries`` counts a trial's crashes across
resumes; past it the trial is final ``crashed`` (named by the exit line and the summary) until
``--resume --retry-crashed`` gives it as many retries again."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tests.faults.sweepfaults import sweep_cmd

from raybench.tune import studies

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TRIAL = "cnnx-synthetic-s0"
SETS = ("sweep.mode=paper", "sweep.max_retries=1", "scaling.max_failures=0", "train.epochs=1")


@pytest.fixture
def run(ray_address: str, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch):
    """Runs the sweep in-process on the test's Ray (the trial crashes unless ``crash`` is
    False); returns (exit code, its ``raybench: error:`` lines, everything it printed)."""
    results, cache = tmp_path / "r", tmp_path / "cache"

    def go(*extra: str, crash: bool = True) -> tuple[int, list[str], str]:
        if crash:  # Tune copies it into every trial's environment
            monkeypatch.setenv("RAYBENCH_TEST_CRASH_TRIAL", TRIAL)
        else:
            monkeypatch.delenv("RAYBENCH_TEST_CRASH_TRIAL", raising=False)
        argv = sweep_cmd(results, cache, ray_address, *extra, name="budget", sets=SETS)
        code, out, err = run_cli(*argv[argv.index("sweep"):])
        assert "Traceback" not in err, err[-3000:]
        errors = [ln for ln in err.splitlines() if ln.startswith("raybench: error:")]
        return code, errors, out + err

    return go


def _attempts(results: Path) -> list[tuple[str, bool]]:
    import optuna

    storage = studies.open_storage(results / "budget" / "optuna" / "journal.log")
    study = optuna.load_study(study_name=TRIAL, storage=storage)
    return [(t.state.name, bool(t.user_attrs.get(studies.BUDGET_RESET))) for t in study.trials]


def test_a_trial_that_always_crashes_stops_after_its_retries(run, tmp_path: Path) -> None:
    results = tmp_path / "r"
    code, errors, _ = run()
    assert code == 1 and errors == [
        f"raybench: error: trial {TRIAL} crashed: RuntimeError: test crash of trial {TRIAL}; "
        "--resume retries it"]
    code, errors, _ = run("--resume")  # the one retry
    final = (f"raybench: error: trial {TRIAL} crashed: RuntimeError: test crash of trial "
             f"{TRIAL}; it crashed 2 times, more than sweep.max_retries (1): final; "
             "--resume --retry-crashed retries it")
    assert code == 1 and errors == [final]
    assert _attempts(results) == [("FAIL", False), ("FAIL", False)]
    # Past the budget: a resume does not run it again and still names it.
    code, errors, out = run("--resume")
    assert code == 1 and errors == [final], out[-3000:]
    assert _attempts(results) == [("FAIL", False), ("FAIL", False)]
    assert f"{TRIAL}" in out and "crashed" in out.split("raybench: error")[0]  # the summary
    # --retry-crashed: one more budget; the cause is gone now, so it completes.
    code, errors, out = run("--resume", "--retry-crashed", crash=False)
    assert code == 0 and errors == [], out[-3000:]
    assert _attempts(results) == [("FAIL", False), ("FAIL", False), ("COMPLETE", True)]
    runs = pd.read_parquet(results / "budget" / "runs")
    assert runs[["trial_id", "status"]].values.tolist() == [[TRIAL, "completed"]]


def test_retry_crashed_needs_resume(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("sweep", "--config", str(Path(__file__).parents[2] / "jobs" / "smoke.yaml"),
                           "--results", str(tmp_path), "--retry-crashed")
    assert code == 2 and err.strip() == ("raybench: error: --retry-crashed continues a sweep: "
                                         "give it with --resume")
