"""Helpers of the sweep fault tests: the smoke sweep cut to two short trials, run through
the CLI on the test's Ray, and the checks that a sweep ended whole."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 4
TRIALS = ["cnnx-synthetic-s0-t000", "cnnx-synthetic-s0-t001"]
#: One trial's process serves the next (the local Ray's default; ``--address`` turns it off):
#: about 4 s of CPU less per trial.
TINY = ["model.image_size=32", "data.synthetic.per_class=12", "data.synthetic.size=32",
        "train.num_threads=1", "scaling.reuse_actors=true"]


def sweep_cmd(results: Path, cache: Path, address: str, *extra: str, name: str = "kill",
              sets: tuple[str, ...] = ()) -> list[str]:
    """The smoke sweep cut to one model, two trials one at a time, on the test's Ray."""
    items = TINY + [f"name={name}", f"train.epochs={EPOCHS}", "sweep.models=[cnnx]",
                    "scaling.max_concurrent_trials=1", f"data.cache_dir={cache}", *sets]
    cmd = [sys.executable, "-m", "raybench.cli", "sweep", "--config",
           str(REPO / "jobs" / "smoke.yaml"), "--results", str(results), "--address", address]
    for item in items:
        cmd += ["--set", item]
    return cmd + list(extra)


def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYBENCH_TEST_")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def wait_for_actors_to_die(job_hex: str | None = None, timeout_s: float = 60) -> None:
    """A dead driver's trial actors linger briefly while Ray cleans up after its job."""
    import ray

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        alive = [a for a in ray._private.state.actors().values()
                 if a["State"] == "ALIVE" and a["JobID"] != ray.get_runtime_context().get_job_id()]
        if not alive:
            return
        time.sleep(0.5)
    raise AssertionError(f"trial actors still alive after the driver died: {len(alive)}")


def check_sweep(sweep: Path, trials: list[str] = TRIALS) -> pd.DataFrame:
    """Every trial completed once, epochs 1..N once each, one set of test predictions each,
    and the studies agree with the runs table."""
    import optuna

    from raybench.tune import studies

    runs = pd.read_parquet(sweep / "runs").sort_values("trial_id")
    assert runs["trial_id"].tolist() == trials
    assert (runs["status"] == "completed").all(), runs[["trial_id", "status", "error"]]
    epochs = pd.read_parquet(sweep / "epochs")
    assert epochs.groupby("trial_id")["epoch"].apply(list).to_dict() == {
        t: list(range(1, EPOCHS + 1)) for t in trials}
    preds = pd.read_parquet(sweep / "predictions")
    counts = preds.groupby("trial_id").size()
    assert counts.nunique() == 1 and sorted(counts.index) == trials  # none twice
    storage = studies.open_storage(sweep / "optuna" / "journal.log")
    last = epochs.sort_values("epoch").groupby("trial_id")["val_balanced_accuracy"].last()
    study = optuna.load_study(study_name="cnnx-synthetic-s0", storage=storage)
    told = {f"cnnx-synthetic-s0-t{studies.first_number(t):03d}": t.value for t in study.trials
            if t.state.name == "COMPLETE"}
    assert told == last.to_dict(), (told, [(t.number, t.state.name) for t in study.trials])
    return runs
