"""The sweep engine on a local Ray: one experiment for all cells, Optuna studies on disk, exit
codes (errored / interrupted / storage lost), two drivers at once, resume after Tune's state
was truncated."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tests.helpers.rayenv import RAY_WORKER_ENV

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]
TINY = ["model.image_size=32", "data.synthetic.per_class=12", "data.synthetic.size=32",
        "train.num_threads=1", "cam.enabled=false", "sweep.progress_interval_s=2",
        "scaling.reuse_actors=true"]  # as on the local Ray: about 4 s of CPU less per trial
S3_ENV = {k: RAY_WORKER_ENV[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}


@pytest.fixture(scope="module")
def ray_address(local_ray: str):
    """The session's local Ray (4 logical CPUs; its workers have the dummy S3 credentials of
    ``S3_ENV``); this process has them too while the module runs."""
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    yield local_ray
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def _args(tmp: Path, name: str, *sets: str) -> list[str]:
    out = ["sweep", "--config", str(REPO / "jobs" / "smoke.yaml"), "--results", str(tmp / "r")]
    for item in [*TINY, f"name={name}", f"data.cache_dir={tmp / 'cache'}", *sets]:
        out += ["--set", item]
    return out


def _cli(address: str, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "raybench.cli", *args, "--address", address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _overlap(tl: pd.DataFrame) -> bool:
    rows = list(tl.itertuples())
    return any(a.model != b.model and a.started_at < b.finished_at and b.started_at < a.finished_at
               for a in rows for b in rows)


def test_one_experiment_runs_cells_together_and_studies_load(ray_address: str, tmp_path: Path,
                                                             run_cli, caplog) -> None:
    from raybench.report import write_report
    from raybench.results import load
    from raybench.tune import studies

    args = _args(tmp_path, "eng", "sweep.num_samples=3", "sweep.max_concurrent_per_study=2")
    caplog.set_level(logging.INFO, logger="raybench")
    code, out, err = run_cli(*args, "--resume")  # resume-or-start: a new name starts
    assert code == 0, err
    assert "no sweep eng at" in caplog.text and "starting it" in caplog.text
    summary_lines = [r.getMessage() for r in caplog.records
                     if "| best val_balanced_accuracy:" in r.getMessage()]
    assert summary_lines and "6/6 done, 0 running, 0 pending, 0 errored" in summary_lines[-1]
    sweep = tmp_path / "r" / "eng"
    assert [p.name for p in (sweep / "_tune").iterdir()] == ["eng"]  # one Tune experiment
    assert not list((sweep / "_tune").rglob("events.out.tfevents*"))  # TensorBoard logger off
    res = load(str(tmp_path / "r"), "eng")
    runs = res.runs.set_index("trial_id")
    assert sorted(runs.index) == [f"{m}-synthetic-s0-t00{i}" for m in ("cnnx", "squeezenet")
                                  for i in range(3)]
    assert (runs["status"] == "completed").all() and (runs["accelerator"] == "cpu").all()
    assert runs["node"].notna().all() and (runs["finished_at"] > runs["started_at"]).all()
    assert _overlap(res.timeline()), "trials of different cells ran at the same time"
    # Every study loads with Optuna itself and matches the runs and epochs tables.
    storage = studies.open_storage(sweep / "optuna" / "journal.log")
    final = res.epochs.sort_values("epoch").groupby("trial_id")["val_balanced_accuracy"].last()
    for cell in ("cnnx-synthetic-s0", "squeezenet-synthetic-s0"):
        study = optuna.load_study(study_name=cell, storage=storage)
        assert [t.number for t in study.trials] == [0, 1, 2]
        for t in study.trials:
            row = runs.loc[f"{cell}-t{t.number:03d}"]
            assert t.state.name == "COMPLETE" and t.value == pytest.approx(final[row.name])
            assert t.params["lr"] == pytest.approx(row["lr"])
            assert t.params["batch_size"] == row["batch_size"]
    page = write_report(str(tmp_path / "r"), "eng", tmp_path / "report")
    assert (tmp_path / "report" / "figures" / "timeline.png").stat().st_size > 5000
    assert "Sweep timeline" in page.read_text() and "Utilisation" in page.read_text()
    code, _, err = run_cli(*args)  # the same name again, without --resume
    lines = [ln for ln in err.splitlines() if ln.startswith("raybench")]
    assert code == 2 and len(lines) == 1 and "already exists" in lines[0]


def test_errored_trials_exit_1_and_are_fail_in_their_studies(ray_address: str, tmp_path: Path,
                                                              run_cli, monkeypatch) -> None:
    # A batch no cell's training split can take is refused before anything trains (exit 2) ...
    code, _, err = run_cli(*_args(tmp_path, "bad", "sweep.mode=paper", "sweep.models=[cnnx]",
                                  "train.batch_size=500"))
    lines = [ln for ln in err.splitlines() if ln.startswith("raybench")]
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert re.fullmatch(r"raybench: error: train\.batch_size=500 is larger than the training "
                        r"split of cell cnnx-synthetic-s0 \(\d+ images\); use at most \d+", lines[0])
    assert not (tmp_path / "r" / "bad").exists()
    # ... a trial whose process dies at run time crashed: exit 1, its own line, FAIL in its
    # study; --resume retries it under its own id, as a new study trial.
    marker = tmp_path / "died-once"
    monkeypatch.setenv("RAYBENCH_INJECT_FAILURE", json.dumps({"epoch": 1, "marker": str(marker)}))
    args = _args(tmp_path, "bad", "sweep.mode=paper", "sweep.models=[cnnx]", "sweep.seeds=[0, 1]",
                 "scaling.max_failures=0", "scaling.max_concurrent_trials=1")
    code, out, err = run_cli(*args)
    lines = [ln for ln in err.splitlines() if ln.startswith("raybench: error:")]
    assert code == 1 and marker.exists(), err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("raybench: error: trial cnnx-synthetic-s0 "
                                                   "crashed: "), err[-3000:]
    assert lines[0].endswith("; --resume retries it"), lines[0]
    runs = pd.read_parquet(tmp_path / "r" / "bad" / "runs").sort_values("trial_id")
    assert runs["status"].tolist() == ["crashed", "completed"]
    from raybench.tune import studies

    storage = studies.open_storage(tmp_path / "r" / "bad" / "optuna" / "journal.log")

    def states() -> list[list[str]]:
        return [[t.state.name for t in optuna.load_study(
            study_name=f"cnnx-synthetic-s{seed}", storage=storage).trials] for seed in (0, 1)]

    assert states() == [["FAIL"], ["COMPLETE"]]
    code, out, err = run_cli(*args, "--resume")
    assert code == 0, err[-3000:]
    runs = pd.read_parquet(tmp_path / "r" / "bad" / "runs").sort_values("trial_id")
    assert runs["status"].tolist() == ["completed", "completed"]
    assert runs["trial_id"].tolist() == ["cnnx-synthetic-s0", "cnnx-synthetic-s1"]
    assert states() == [["FAIL", "COMPLETE"], ["COMPLETE"]]
    retry = optuna.load_study(study_name="cnnx-synthetic-s0", storage=storage).trials[1]
    assert retry.user_attrs["raybench_retry_of"] == 0


def test_interrupt_exits_130_and_resume_survives_truncated_tune_state(ray_address: str,
                                                                      tmp_path: Path,
                                                                      run_cli, caplog) -> None:
    args = _args(tmp_path, "intr", "sweep.mode=paper", "sweep.models=[cnnx]", "sweep.seeds=[0, 1, 2]", "train.epochs=3",
                 "scaling.max_concurrent_trials=1")
    runs_dir = tmp_path / "r" / "intr" / "runs"
    proc = _cli(ray_address, args)
    deadline = time.time() + 240
    while time.time() < deadline and not list(runs_dir.glob("*.parquet")):
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "raybench: error: interrupted; continue with --resume" in err
    finished = {p.name: p.stat().st_mtime_ns for p in runs_dir.glob("*.parquet")}
    assert 0 < len(finished) < 3
    last = [ln for ln in err.splitlines() if "sweep intr | " in ln][-1]  # trials cut short
    assert re.search(rf"\| {len(finished)}/3 done, 0 running, \d pending, 0 errored"
                     rf"(, 1 interrupted)? \|", last), last
    assert "Tuner.restore(" not in err and "Failed to fetch metrics" not in err
    # A full disk truncated Tune's own state: every file of the experiment is cut to 0 bytes.
    state = tmp_path / "r" / "intr" / "_tune" / "intr"
    for path in [p for p in state.rglob("*") if p.is_file()]:
        path.write_bytes(b"")
    caplog.set_level(logging.INFO, logger="raybench")
    code, _, err = run_cli(*args, "--resume")
    assert code == 0, err[-3000:]
    assert re.search(r"is unreadable \((tuner\.pkl|experiment_state-\S+\.json) is empty\); "
                     r"rebuilding the sweep", caplog.text)
    runs = pd.read_parquet(runs_dir)
    assert sorted(runs["trial_id"]) == [f"cnnx-synthetic-s{s}" for s in range(3)]
    assert (runs["status"] == "completed").all()
    for name, mtime in finished.items():
        assert (runs_dir / name).stat().st_mtime_ns == mtime, f"{name} was rerun"
    epochs = pd.read_parquet(tmp_path / "r" / "intr" / "epochs")
    assert epochs.groupby("trial_id")["epoch"].apply(list).tolist() == [[1, 2, 3]] * 3
    last = [r.getMessage() for r in caplog.records if "sweep intr | " in r.getMessage()][-1]
    assert "| 3/3 done, 0 running, 0 pending, 0 errored |" in last, last
    code, _, err = run_cli(*args, "--resume")  # the sweep is finished: the resume counts it all
    assert code == 0, err[-3000:]
    last = [r.getMessage() for r in caplog.records if "sweep intr | " in r.getMessage()][-1]
    assert "| 3/3 done, 0 running, 0 pending, 0 errored | best val_balanced_accuracy: " \
           "cnnx-synthetic-s0 " in last, last


def test_two_drivers_at_once_one_proceeds(ray_address: str, tmp_path: Path) -> None:
    args = _args(tmp_path, "twice", "sweep.mode=paper", "sweep.models=[cnnx]", "train.epochs=1")
    procs = [_cli(ray_address, args) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=300), p.communicate()[1]) for p in procs)
    (ok, _), (refused, err) = outcomes
    lines = [ln for ln in err.splitlines() if ln.startswith("raybench")]
    assert (ok, refused) == (0, 2), outcomes
    assert len(lines) == 1 and "sweep 'twice' already exists" in lines[0], err[-2000:]
    assert len(pd.read_parquet(tmp_path / "r" / "twice" / "runs")) == 1


def test_storage_lost_mid_sweep_exits_1_naming_the_store_then_resumes(
        ray_address: str, tmp_path: Path, run_cli, caplog) -> None:
    """The S3 endpoint stops mid-sweep: exit 1 with one line. Restarted (the same port, the
    objects it held), one ``--resume`` completes the sweep: exit 0, every trial once."""
    import boto3
    from moto.server import ThreadedMotoServer

    from raybench.store import ResultStore
    from tests.helpers.sweepchecks import trials_once_each

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
    s3.create_bucket(Bucket="lost")
    uri = f"s3://lost/p?endpoint_override={host}:{port}&scheme=http"
    args = _args(tmp_path, "lost", "sweep.mode=paper", "sweep.models=[cnnx]", "train.epochs=4",
                 "scaling.max_concurrent_trials=1", "scaling.max_failures=0")
    args[args.index("--results") + 1] = uri

    def stop_when_training() -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            listed = s3.list_objects_v2(Bucket="lost", Prefix="p/lost/epochs/")
            if listed.get("KeyCount"):
                server.stop()
                return
            time.sleep(0.3)

    watcher = threading.Thread(target=stop_when_training, daemon=True)
    watcher.start()
    # A driver process of its own, as a user runs it: the lease it could not release (the
    # store was gone) is taken over once that process has exited.
    driver = _cli(ray_address, args)
    _, err = driver.communicate(timeout=300)
    watcher.join(timeout=5)
    lines = [ln for ln in err.splitlines() if ln.startswith("raybench: error:")]
    assert driver.returncode == 1, err[-3000:]
    assert "Traceback" not in err and not re.search(r"\bERROR\b", err), err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("raybench: error: storage lost during the "
                                                   "sweep: results store s3://lost/p")
    assert "unreachable" in lines[0] and "continue with --resume" in lines[0]

    # Back where it was, with what it held (moto keeps its objects in this process); the
    # stopped server still holds its listening socket: closed, so the port is free again.
    server._server.server_close()  # type: ignore[union-attr]
    restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    restarted.start()
    try:
        caplog.set_level(logging.INFO, logger="raybench")
        caplog.clear()
        code, out, err = run_cli(*args, "--resume")
        said = out + err + caplog.text
        assert code == 0, said[-3000:]
        assert "Traceback" not in said and not re.search(r"\bERROR\b", said), said[-3000:]
        trials_once_each(ResultStore(uri), "lost", ["cnnx-synthetic-s0"], 4)
    finally:
        restarted.stop()
