"""Sweeps on the session's local Ray (``local_ray``: 4 logical CPUs on 2 cores, DESIGN.md
section 7; Ray Train's health check every 0.1 s; S3 credentials, ``RAY_WORKER_ENV``, but no
S3 endpoint): 2-worker DDP with a killed worker, resume after a killed driver, the same sweep
to a folder and to S3. (The smoke sweep runs in ``tests/integration/test_readme.py``, as the
README gives it.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from raybench.config import load_spec
from raybench.tune.sweep import run_sweep
from tests.helpers.rayenv import RAY_WORKER_ENV

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = ["model.image_size=32", "data.synthetic.per_class=12", "data.synthetic.size=32",
        "train.num_threads=1"]


def test_two_worker_ddp_survives_a_killed_worker(local_ray: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(None, TINY + [
        "name=ddp", f"results={tmp_path / 'r'}", f"data.cache_dir={tmp_path / 'cache'}",
        "train.epochs=3", "train.batch_size=8", "scaling.num_workers=2",
        "scaling.max_failures=1", "sweep.mode=paper", "sweep.models=[cnnx]"])
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("RAYBENCH_INJECT_FAILURE", json.dumps({"epoch": 2, "marker": str(marker)}))
    summary = run_sweep(spec)
    assert marker.exists(), "the injected failure happened"
    assert [s["status"] for s in summary] == ["completed"]
    runs = pd.read_parquet(tmp_path / "r" / "ddp" / "runs")
    assert len(runs) == 1 and runs.loc[0, "num_workers"] == 2 and runs.loc[0, "epochs_run"] == 3
    epochs = pd.read_parquet(tmp_path / "r" / "ddp" / "epochs")
    assert epochs["epoch"].tolist() == [1, 2, 3]  # resumed after epoch 2, not restarted
    metrics = pd.read_parquet(tmp_path / "r" / "ddp" / "metrics").query("split == 'test'")
    assert metrics.query("metric == 'n'")["value"].item() == len(
        pd.read_parquet(tmp_path / "r" / "ddp" / "predictions").query("split == 'test'"))


#: Epochs of the killed-driver test: enough that its second trial is still training when the
#: driver dies, however fast the machine (an idle core ran all 5 epochs of a tiny trial within
#: the test's 0.1 s poll).
KILL_EPOCHS = 12


def _sweep_cmd(results: Path, cache: Path, address: str, *extra: str,
               epochs: int = 3) -> list[str]:
    sets = TINY + ["name=res", f"train.epochs={epochs}", "sweep.mode=paper",
                   "sweep.models=[cnnx]", "sweep.seeds=[0, 1, 2]",
                   "scaling.max_concurrent_trials=1", f"data.cache_dir={cache}"]
    cmd = [sys.executable, "-m", "raybench.cli", "sweep", "--config",
           str(REPO / "jobs" / "smoke.yaml"), "--results", str(results), "--address", address]
    for item in sets:
        cmd += ["--set", item]
    return cmd + list(extra)


def _wait_for_trial_actors_to_die(timeout_s: float = 60) -> None:
    import ray
    from ray.util.state import list_actors

    # This session's dashboard, by address: other Ray instances may run on the same machine.
    dashboard = "http://" + ray._private.worker._global_node.address_info["webui_url"]
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        alive = [a for a in list_actors(address=dashboard, filters=[("state", "=", "ALIVE")])
                 if "ImplicitFunc" in a.class_name or "Trainable" in a.class_name]
        if not alive:
            return
        time.sleep(0.5)
    raise AssertionError(f"trial actors still alive after the driver died: {alive}")


def _epoch_rows(path: Path) -> list[dict]:
    try:
        return pd.read_parquet(path).to_dict("records") if path.exists() else []
    except Exception:  # being replaced right now
        return []


def _in_tune_snapshot(sweep: Path, trial_id: str) -> bool:
    """Tune's last experiment snapshot (``experiment_state-*.json``) names the trial."""
    for path in (sweep / "_tune" / sweep.name).glob("experiment_state-*.json"):
        try:
            if trial_id in path.read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:  # being replaced right now
            pass
    return False


def test_resume_after_the_driver_is_killed(local_ray: str, tmp_path: Path) -> None:
    """The resume restores Tune's experiment: finished trials keep their Tune trials and are
    not rerun, the in-flight trial continues from its last checkpoint epoch."""
    results, cache = tmp_path / "r", tmp_path / "cache"
    runs_dir, flying = results / "res" / "runs", results / "res" / "epochs" / "cnnx-synthetic-s1.parquet"
    # Tune snapshots its experiment every 10 s or more ("auto"); every second here, and the
    # kill waits for a snapshot that holds s1, so that s1 is one of the trials Tune restores
    # (a trial started after the last snapshot resumes as a new Tune trial, from its state).
    env = dict(os.environ, TUNE_GLOBAL_CHECKPOINT_S="1")
    proc = subprocess.Popen(_sweep_cmd(results, cache, local_ray, epochs=KILL_EPOCHS),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and (len(_epoch_rows(flying)) < 2  # s1 in its 3rd epoch
                                      or not _in_tune_snapshot(results / "res", "cnnx-synthetic-s1")):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _wait_for_trial_actors_to_die()  # a dead driver's actors linger briefly while Ray cleans up
    finished = {p.name: p.stat().st_mtime_ns for p in runs_dir.glob("*.parquet")}
    before = _epoch_rows(flying)
    tune_trials = {p.name for p in (results / "res" / "_tune" / "res").glob("cnnx-*")}
    assert list(finished) == ["cnnx-synthetic-s0.parquet"] and 2 <= len(before) < KILL_EPOCHS, before

    done = subprocess.run(_sweep_cmd(results, cache, local_ray, "--resume", epochs=KILL_EPOCHS),
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming res from" in done.stderr and "rebuilding" not in done.stderr
    runs = pd.read_parquet(runs_dir)
    assert sorted(runs["trial_id"]) == ["cnnx-synthetic-s0", "cnnx-synthetic-s1", "cnnx-synthetic-s2"]
    assert (runs["status"] == "completed").all(), runs[["trial_id", "status", "error"]].to_string()
    for name, mtime in finished.items():
        assert (runs_dir / name).stat().st_mtime_ns == mtime, f"{name} was rerun"
    # Tune restored its trials (a rebuild would have made new ones, with new Tune ids) ...
    after = {p.name for p in (results / "res" / "_tune" / "res").glob("cnnx-*")}
    assert tune_trials <= after and len(after) == 3, (tune_trials, after)
    # ... and s1 continued from its checkpoint: its first epochs are the rows from before the
    # kill, timings included (a retrained epoch would have taken another number of seconds).
    rows = _epoch_rows(flying)
    assert [r["epoch"] for r in rows] == list(range(1, KILL_EPOCHS + 1))
    assert rows[0] == before[0], (before, rows)
    epochs = pd.read_parquet(results / "res" / "epochs")
    assert epochs.groupby("trial_id")["epoch"].apply(list).tolist() == [list(range(1, KILL_EPOCHS + 1))] * 3
    # The studies match the runs table trial for trial: one COMPLETE trial per cell, its value
    # the trial's last epoch's metric (s1's study trial was RUNNING when the driver died).
    import optuna

    from raybench.tune import studies

    storage = studies.open_storage(results / "res" / "optuna" / "journal.log")
    last = epochs.sort_values("epoch").groupby("trial_id")["val_balanced_accuracy"].last()
    for trial_id in runs["trial_id"]:
        trials = optuna.load_study(study_name=trial_id, storage=storage).trials
        assert [(t.state.name, t.value) for t in trials] == [("COMPLETE", last[trial_id])], trial_id


def test_sweep_to_s3_gives_the_same_tables_as_local(local_ray: str, tmp_path: Path,
                                                    s3_bucket: str, s3_endpoint: str) -> None:
    """One code path: the same paper-mode sweep to a folder and to s3:// (Ray state included)."""
    import boto3
    import pyarrow.fs as pafs

    from raybench.results import load

    sets = TINY + ["name=same", "train.epochs=2", "sweep.mode=paper", "sweep.models=[cnnx]",
                   "sweep.seeds=[0, 1]", f"data.cache_dir={tmp_path / 'cache'}"]
    remote_root = f"s3://{s3_bucket}/prefix?endpoint_override={s3_endpoint}"  # for the workers
    for results in (str(tmp_path / "local"), remote_root):
        summary = run_sweep(load_spec(None, sets + [f"results={results}"]))
        assert [s["status"] for s in summary] == ["completed", "completed"]
    local, remote = load(str(tmp_path / "local"), "same"), load(remote_root, "same")
    key = ["trial_id", "split", "class", "metric"]
    a = local.metrics.sort_values(key).reset_index(drop=True)
    b = remote.metrics.sort_values(key).reset_index(drop=True)
    assert len(a) > 40 and a[key + ["value"]].equals(b[key + ["value"]])  # deterministic training
    assert sorted(remote.runs["trial_id"]) == ["cnnx-synthetic-s0", "cnnx-synthetic-s1"]
    s3fs = pafs.S3FileSystem(endpoint_override=s3_endpoint.split("//")[1], scheme="http",
                             region="us-east-1")
    direct = pd.read_parquet(f"{s3_bucket}/prefix/same/metrics", filesystem=s3fs)
    assert len(direct) == len(b)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
            for o in page.get("Contents", [])]
    assert any("/_tune/" in k for k in keys), "Tune state and checkpoints live in the same store"
    # The Optuna studies were uploaded next to the results and open with Optuna itself.
    import optuna

    journal = tmp_path / "journal.log"
    journal.write_bytes(s3.get_object(Bucket=s3_bucket, Key="prefix/same/optuna/journal.log")
                        ["Body"].read())
    from raybench.tune import studies

    study = optuna.load_study(study_name="cnnx-synthetic-s1",
                              storage=studies.open_storage(journal))
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert study.trials[0].params == {"lr": 3e-4, "batch_size": 15, "stride": 3}
    # Neither the workers' secret key nor the driver's reached the store.
    secrets = (RAY_WORKER_ENV["AWS_SECRET_ACCESS_KEY"].encode(),
               os.environ["AWS_SECRET_ACCESS_KEY"].encode())
    leaked = [k for k in keys
              if any(x in s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read() for x in secrets)]
    assert not leaked, f"credential stored in {leaked}"
