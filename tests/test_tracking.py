"""MLflow tracking against a real ``mlflow server`` (SQLite backend) on 127.0.0.1."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from raybench import tracking
from raybench.config import dump_yaml, load_spec
from raybench.errors import ConfigError, RaybenchError

pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow

TINY = ["model.name=cnnx", "model.image_size=32", "data.synthetic.per_class=6",
        "data.synthetic.size=32", "train.epochs=2", "train.batch_size=8", "train.num_threads=1",
        "cam.per_class=1"]
TOKEN = "planted-mlflow-token-4711"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """``mlflow server`` with a SQLite store and served artifacts; yields its URL."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    log = (root / "server.log").open("wb")
    # Without MLflow's job runner: its 8 task consumers (GenAI scorer jobs) cost about 22 s of
    # CPU on 2 cores (benchmarks/RESULTS.md) and serve nothing here.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:  # its graceful stop can take 5-11 s under load; its files are thrown away anyway
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        log.close()


def _spec(tmp_path: Path, uri: str, *extra: str):
    return load_spec(None, [*TINY, f"data.cache_dir={tmp_path / 'cache'}",
                            f"results={tmp_path / 'r'}", "name=track",
                            f"tracking.mlflow.tracking_uri={uri}", *extra])


def _runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return client, client.search_runs([exp.experiment_id])


def test_run_training_is_mirrored_as_an_mlflow_run(mlflow_server: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from raybench.engine.run import run_training

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)  # the server ignores it; it must not leak
    spec = _spec(tmp_path, mlflow_server, "tracking.mlflow.experiment=raybench-test",
                 "train.lr=0.002")
    with caplog.at_level("INFO"):
        outcome = run_training(spec)
    client, runs = _runs(mlflow_server, "raybench-test")
    assert len(runs) == 1
    run = runs[0]
    tags = run.data.tags
    assert (tags["raybench.sweep"], tags["raybench.model"], tags["raybench.scenario"],
            tags["raybench.seed"], tags["raybench.trial_id"]) == (
        "track", "cnnx", "synthetic", "0", outcome.trial_id)
    assert tags["mlflow.runName"] == outcome.trial_id and run.info.status == "FINISHED"
    params = run.data.params
    assert (params["lr"], params["batch_size"], params["epochs"], params["image_size"],
            params["stride"], params["seed"]) == ("0.002", "8", "2", "32", "3", "0")
    history = client.get_metric_history(run.info.run_id, "val_loss")
    epochs = pd.read_parquet(tmp_path / "r" / "track" / "epochs")
    assert [m.step for m in history] == [1, 2] == epochs["epoch"].tolist()
    assert [m.value for m in history] == pytest.approx(epochs["val_loss"].tolist(), rel=1e-12)
    m = outcome.result.test.metrics
    assert run.data.metrics["test_accuracy"] == pytest.approx(m.accuracy, rel=1e-12)
    assert run.data.metrics["test_balanced_accuracy"] == pytest.approx(m.balanced_accuracy)
    sens = {c.name: c.sensitivity for c in m.per_class}
    assert run.data.metrics["test_sensitivity_covid19"] == pytest.approx(sens["covid19"])
    artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert artifacts == ["cams.png", "confusion.png", "spec.yaml"]
    folder = client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl"))
    png = Path(folder, "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert Path(folder, "spec.yaml").read_text() == dump_yaml(spec)
    # The token is in the process environment, yet in no result file, artifact or log line.
    files = [p for p in (tmp_path / "r").rglob("*") if p.is_file()] + list(Path(folder).iterdir())
    assert not [p for p in files if TOKEN.encode() in p.read_bytes()]
    assert TOKEN not in caplog.text and "mirrored as MLflow run" in caplog.text

    # A rerun of the same trial replaces its run: still one active run, with fresh metrics.
    run_training(spec)
    _, again = _runs(mlflow_server, "raybench-test")
    assert len(again) == 1 and again[0].info.run_id != run.info.run_id
    assert len(client.get_metric_history(again[0].info.run_id, "val_loss")) == 2


def test_unreachable_server_fails_fast_with_one_line(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    args = [sys.executable, "-m", "raybench.cli", "train", *sum((["--set", s] for s in TINY), []),
            "--set", f"tracking.mlflow.tracking_uri={uri}", "--results", str(tmp_path / "r")]
    t0 = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("INFO ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"raybench: error: MLflow tracking server {uri} is unreachable")
    assert time.monotonic() - t0 < 60  # the interpreter start and imports, not a retry loop
    assert not (tmp_path / "r").exists()  # nothing written, not even the spec


def test_tracking_failure_after_start_warns_and_keeps_the_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from raybench.engine.run import run_training

    # The server was reachable at the start (check passed) and is gone when the trial ends.
    monkeypatch.setattr(tracking, "check_tracking", lambda spec: None)
    spec = _spec(tmp_path, f"http://127.0.0.1:{_free_port()}", "train.epochs=1")
    with caplog.at_level("WARNING"):
        outcome = run_training(spec)
    runs = pd.read_parquet(tmp_path / "r" / "track" / "runs")
    assert runs["trial_id"].tolist() == [outcome.trial_id] and runs["status"].tolist() == ["completed"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "raybench.tracking"]
    assert len(warnings) == 1 and "its results are written" in warnings[0]


@pytest.mark.parametrize("uri", ["http://alice:s3cr3t-pw@mlflow.example:5000",
                                 "https://tok-9f8e7d@mlflow.example"])
def test_credentials_in_the_tracking_uri_are_refused(uri: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_spec(None, [f"tracking.mlflow.tracking_uri={uri}"])
    assert "must not hold credentials" in str(err.value)
    assert "s3cr3t" not in str(err.value) and "tok-9f8e7d" not in str(err.value)


def test_tracking_without_mlflow_installed_is_a_spec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` sees when absent
    with pytest.raises(ConfigError, match=r"needs the mlflow package.*raybench\[tracking\]"):
        load_spec(None, ["tracking.mlflow.tracking_uri=http://127.0.0.1:5000"])
    assert load_spec(None, []).tracking.mlflow.tracking_uri is None  # off: mlflow not needed


def test_token_file_is_read_into_the_environment(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN_FILE", str(secret))
    tracking.load_credentials()
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == TOKEN
    assert tracking.redact(f"GET /api?token={TOKEN} failed") == "GET /api?token=*** failed"
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(RaybenchError, match="MLFLOW_TRACKING_TOKEN_FILE=.*missing: cannot read"):
        tracking.load_credentials()


def test_sweep_trials_log_from_their_own_process(mlflow_server: str, local_ray: str,
                                                 tmp_path: Path) -> None:
    """A Tune trial (a Ray worker process, not the driver) mirrors itself to the server.

    The driver joins the session's Ray, so this module's tests share one worker under
    pytest-xdist (``tests/conftest.py``) and with it one MLflow server."""
    args = [sys.executable, "-m", "raybench.cli", "sweep", "--config", "jobs/smoke.yaml",
            "--set", "sweep.models=[cnnx]", "--set", "sweep.num_samples=1",
            "--set", "train.epochs=1", "--set", f"data.cache_dir={tmp_path / 'cache'}",
            "--set", f"tracking.mlflow.tracking_uri={mlflow_server}",
            "--set", "tracking.mlflow.experiment=raybench-sweep-test",
            "--results", str(tmp_path / "r"), "--address", local_ray]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=400,
                          cwd=Path(__file__).resolve().parents[1], env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = pd.read_parquet(tmp_path / "r" / "smoke" / "runs")
    client, mirrored = _runs(mlflow_server, "raybench-sweep-test")
    assert sorted(r.data.tags["raybench.trial_id"] for r in mirrored) == \
        sorted(runs["trial_id"]) and len(mirrored) == 1
    run = mirrored[0]
    assert run.data.tags["raybench.sweep"] == "smoke" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1]
    assert float(run.data.params["lr"]) == runs["lr"].iloc[0]
