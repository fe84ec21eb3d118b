"""`raybench submit`: job requests, token handling, errors; end to end against a local Ray head."""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from raybench import submit
from raybench.errors import ConfigError, RaybenchError

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "jobs" / "smoke.yaml"
TOKEN = "rbtest-" + "7f3a9c" * 6


@pytest.fixture
def clean_auth_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Ray token anywhere: auth variables unset, HOME an empty folder."""
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS",
                "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# --- addresses ------------------------------------------------------------------------------

def test_dashboard_url_forms(clean_auth_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert submit.dashboard_url("http://head:8265/") == "http://head:8265"
    assert submit.dashboard_url("10.0.0.5:8265") == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://from-env:8265")
    assert submit.dashboard_url(None) == "http://from-env:8265"
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    with pytest.raises(RaybenchError, match="no Ray dashboard address"):
        submit.dashboard_url(None)
    with pytest.raises(RaybenchError, match="no Ray dashboard address"):
        submit.dashboard_url("ray://head:10001")
    with pytest.raises(RaybenchError, match="expected http"):
        submit.dashboard_url("ftp://head:8265")


def test_unreachable_address_is_one_line_within_seconds(clean_auth_env: Path, run_cli) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    code, out, err = run_cli("submit", "--address", f"http://127.0.0.1:{port}", "--status", "x")
    assert time.monotonic() - start < 5
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0
    assert f"cannot reach the Ray dashboard at http://127.0.0.1:{port}" in err


def test_cli_needs_config_or_one_query(clean_auth_env: Path, run_cli) -> None:
    code, _, err = run_cli("submit", "--address", "http://127.0.0.1:1")
    assert code == 2 and "pass --config SPEC" in err
    code, _, err = run_cli("submit", "--address", "http://127.0.0.1:1", "--config", str(SMOKE),
                           "--status", "j1")
    assert code == 2 and "pass --config SPEC" in err


# --- tokens ---------------------------------------------------------------------------------

def test_token_sources_in_ray_order(clean_auth_env: Path, monkeypatch: pytest.MonkeyPatch,
                                    tmp_path: Path) -> None:
    assert submit.auth_token() is None
    default = clean_auth_env / ".ray" / "auth_token"
    default.parent.mkdir(parents=True)
    default.write_text("from-default\n")
    assert submit.auth_token() is None, "the default file counts only with RAY_AUTH_MODE=token"
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert submit.auth_token() == "from-default"
    path = tmp_path / "tok"
    path.write_text("from-path\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert submit.auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert submit.auth_token() == "from-env"


def test_token_problems_are_clear(clean_auth_env: Path, monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(RaybenchError, match="no token found"):
        submit.auth_token()
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(RaybenchError, match="cannot read the Ray auth token file"):
        submit.auth_token()
    (tmp_path / "empty").write_text("  \n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "empty"))
    with pytest.raises(RaybenchError, match="is empty"):
        submit.auth_token()


def test_token_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    assert submit._redact(f"header Bearer {TOKEN} sent", TOKEN) == "header Bearer *** sent"


# --- job requests ---------------------------------------------------------------------------

def test_workdir_request_uploads_the_checkout() -> None:
    opts = submit.SubmitOptions(address=None, config=str(SMOKE), overrides=("train.epochs=1",),
                                results="s3://bucket/raybench", job_id="j-1")
    req = submit.job_request(opts)
    assert shlex.split(req["entrypoint"]) == [
        "python", "-m", "raybench.cli", "sweep", "--config", "jobs/smoke.yaml",
        "--set", "train.epochs=1", "--results", "s3://bucket/raybench"]
    env = req["runtime_env"]
    assert env["working_dir"] == str(REPO)
    for pattern in (".venv", "runs", ".raybench-cache", ".git"):
        assert pattern in env["excludes"]
    assert req["submission_id"] == "j-1"
    assert req["metadata"]["raybench_sweep"] == "smoke"


def test_default_job_id_names_the_sweep() -> None:
    req = submit.job_request(submit.SubmitOptions(address=None, config=str(SMOKE),
                                                  results="s3://b/p", resume=True))
    assert req["submission_id"].startswith("raybench-smoke-")
    assert shlex.split(req["entrypoint"])[-1] == "--resume"


def test_installed_request_uploads_nothing() -> None:
    opts = submit.SubmitOptions(address=None, config="/home/ray/raybench/jobs/paper.yaml",
                                runtime="installed", env=("RAYBENCH_X=1",))
    req = submit.job_request(opts)
    assert shlex.split(req["entrypoint"]) == [
        "raybench", "sweep", "--config", "/home/ray/raybench/jobs/paper.yaml"]
    assert req["runtime_env"] == {"env_vars": {"RAYBENCH_X": "1"}}


def test_bad_requests_fail_before_any_connection(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.nope"):
        submit.job_request(submit.SubmitOptions(address=None, config=str(SMOKE),
                                                overrides=("train.nope=1",)))
    outside = tmp_path / "spec.yaml"
    shutil.copy(SMOKE, outside)
    with pytest.raises(RaybenchError, match="outside the working dir|no raybench checkout"):
        submit.job_request(submit.SubmitOptions(address=None, config=str(outside)))
    with pytest.raises(RaybenchError, match="outside the working dir"):
        submit.job_request(submit.SubmitOptions(address=None, config=str(outside),
                                                working_dir=str(REPO)))
    with pytest.raises(RaybenchError, match="credentials do not go through --env"):
        submit.job_request(submit.SubmitOptions(address=None, config=str(SMOKE),
                                                env=("AWS_SECRET_ACCESS_KEY=x",)))


def test_exit_codes() -> None:
    assert submit.exit_code("SUCCEEDED") == 0
    assert submit.exit_code("FAILED") == 1 and submit.exit_code("STOPPED") == 1


# --- end to end: a local Ray head with its dashboard and token authentication ---------------

def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pids_of(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (this head's private temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


def _wait_for_dashboard(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{tail}")
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=1)
            return
        except urllib.error.HTTPError:  # 401: up, and token authentication is on
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the dashboard at {url} did not come up in {timeout_s} s")


@contextmanager
def ray_head(env: dict[str, str]) -> Iterator[str]:
    """``ray start --head --block`` with its own temp dir and ports; yields the dashboard URL."""
    with ray_head_ports(env) as ports:
        yield f"http://127.0.0.1:{ports['dashboard-port']}"


@contextmanager
def ray_head_ports(env: dict[str, str]) -> Iterator[dict[str, int]]:
    """``ray start --head --block`` with its own temp dir and ports (yielded: ``port`` is the
    GCS's); stops only that head."""
    ray_bin = Path(sys.executable).with_name("ray")
    root = Path(tempfile.mkdtemp(prefix="rb-head-"))  # short: Ray's socket paths are limited
    ports = dict(zip(["port", "dashboard-port", "dashboard-agent-listen-port",
                      "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
                      "ray-client-server-port", "node-manager-port", "object-manager-port"],
                     _free_ports(9)))
    cmd = [str(ray_bin), "start", "--head", "--block", "--include-dashboard", "true",
           "--dashboard-host", "127.0.0.1", "--node-ip-address", "127.0.0.1", "--num-cpus", "4",
           "--temp-dir", str(root / "ray"), "--disable-usage-stats"]
    cmd += [arg for name, port in ports.items() for arg in (f"--{name}", str(port))]
    log = root / "ray-start.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        _wait_for_dashboard(url, proc, log)
        yield ports
    finally:
        _stop_head(proc, str(root))
        shutil.rmtree(root, ignore_errors=True)


def _stop_head(proc: subprocess.Popen, marker: str) -> None:
    proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(0.5)
    for pid in _pids_of(marker):  # stragglers of this head only (workers name its temp dir)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def token_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A local head with the dashboard on 127.0.0.1 and token authentication on.

    Yields (dashboard URL, client environment without any token).
    """
    home = tmp_path_factory.mktemp("home")  # no ~/.ray/auth_token of the real user leaks in
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("RAY_AUTH", "RAY_ADDRESS", "RAY_API_SERVER"))}
    base.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0",
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    head_env = dict(base, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN,
                    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1")
    with ray_head(head_env) as url:
        yield url, base


def _cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raybench.cli", "submit", *args], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.ray
@pytest.mark.slow
def test_submit_without_token_is_refused(token_head: tuple[str, dict[str, str]],
                                         clean_auth_env: Path, monkeypatch: pytest.MonkeyPatch,
                                         run_cli) -> None:
    url, _ = token_head
    args = ("submit", "--address", url, "--config", str(SMOKE), "--results", "/tmp/unused")
    code, out, err = run_cli(*args)
    assert code == 2 and out == "", err
    assert err.count("raybench: error:") == 1
    assert "requires token authentication: set RAY_AUTH_TOKEN" in err
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    code, out, err = run_cli(*args)
    assert code == 2 and "rejected the authentication token" in err
    assert "not-the-token" not in err + out


@pytest.mark.ray
@pytest.mark.slow
def test_submit_wait_runs_the_smoke_sweep(token_head: tuple[str, dict[str, str]],
                                          tmp_path: Path, clean_auth_env: Path,
                                          monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    url, env = token_head
    env = dict(env, RAY_AUTH_TOKEN=TOKEN)
    results = tmp_path / "results"
    start = time.monotonic()
    done = _cli(env, "--address", url, "--config", str(SMOKE), "--wait", "--job-id", "rb-e2e",
                "--set", "sweep.models=[cnnx]", "--set", "sweep.num_samples=1",
                "--set", "train.epochs=1", "--set", f"data.cache_dir={tmp_path / 'cache'}",
                "--results", str(results))
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[0] == "rb-e2e"
    assert "job rb-e2e SUCCEEDED" in done.stderr
    assert TOKEN not in done.stdout + done.stderr
    runs = pd.read_parquet(results / "smoke" / "runs")
    assert runs["trial_id"].tolist() == ["cnnx-synthetic-s0-t000"]
    assert (runs["status"] == "completed").all()
    assert (results / "smoke" / "spec.yaml").is_file()
    assert len(pd.read_parquet(results / "smoke" / "metrics")) > 0
    # Queries of the finished job, in-process (a CLI process start costs seconds).
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    code, out, err = run_cli("submit", "--address", url, "--status", "rb-e2e")
    assert code == 0 and out.startswith("rb-e2e SUCCEEDED"), err
    code, out, _ = run_cli("submit", "--address", url, "--logs", "rb-e2e")
    assert code == 0 and "cnnx-synthetic-s0-t000" in out
    code, out, _ = run_cli("submit", "--address", url, "--stop", "rb-e2e")
    assert code == 0 and "already finished" in out
    code, out, err = run_cli("submit", "--address", url, "--status", "no-such-job")
    assert code == 2 and err.count("\n") == 1 and "no-such-job" in err
    assert TOKEN not in out + err
    print(f"\nsubmit --wait round trip of the tiny smoke sweep: {elapsed:.1f} s")
