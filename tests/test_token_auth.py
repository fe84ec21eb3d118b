"""Token authentication: ``raybench sweep --address`` with only ``RAY_AUTH_TOKEN`` set connects
to a head that requires a token; the embedded local Ray's token notice is not passed on."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from tests.test_submit import TOKEN, ray_head_ports

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def token_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A local head on 127.0.0.1 with token authentication on; stopped after the module.

    Yields (GCS address host:port, a client environment holding no token and no auth mode).
    """
    home = tmp_path_factory.mktemp("home")  # no ~/.ray/auth_token of the real user leaks in
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("RAY_AUTH", "RAY_ADDRESS", "RAY_API_SERVER"))}
    base.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO),
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    head_env = dict(base, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN,
                    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1")
    with ray_head_ports(head_env) as ports:
        yield f"127.0.0.1:{ports['port']}", base


def _sweep(env: dict[str, str], address: str, results: Path) -> subprocess.CompletedProcess:
    sets = ["name=tok", "sweep.mode=paper", "sweep.models=[cnnx]", "train.epochs=1",
            "model.image_size=32", "data.synthetic.per_class=12", f"data.cache_dir={results}-c"]
    cmd = [sys.executable, "-m", "raybench.cli", "sweep", "--config",
           str(REPO / "jobs" / "smoke.yaml"), "--results", str(results), "--address", address]
    for item in sets:
        cmd += ["--set", item]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_address_with_only_the_token_connects(token_gcs: tuple[str, dict[str, str]],
                                                    tmp_path: Path) -> None:
    address, env = token_gcs
    done = _sweep(dict(env, RAY_AUTH_TOKEN=TOKEN), address, tmp_path / "r")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "InvalidAuthToken" not in done.stderr
    runs = pd.read_parquet(tmp_path / "r" / "tok" / "runs")
    assert runs["status"].tolist() == ["completed"]
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    done = _sweep(dict(env, RAY_AUTH_TOKEN_PATH=str(path)), address, tmp_path / "r2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert pd.read_parquet(tmp_path / "r2" / "tok" / "runs")["status"].tolist() == ["completed"]


def test_token_mode_follows_a_given_token_and_keeps_the_users_mode(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from raybench.cluster import token_auth

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    token_auth("127.0.0.1:6379")
    assert "RAY_AUTH_MODE" not in os.environ  # no token: Ray's own default
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    token_auth("127.0.0.1:6379")
    assert os.environ["RAY_AUTH_MODE"] == "disabled"  # the user's choice stays
    monkeypatch.delenv("RAY_AUTH_MODE")
    token_auth("127.0.0.1:6379")
    assert os.environ["RAY_AUTH_MODE"] == "token"
    from ray._raylet import AuthenticationMode, get_authentication_mode

    assert get_authentication_mode() == AuthenticationMode.TOKEN  # Ray's cached config too
    from ray._raylet import Config

    # Ray caches its config: read the environment again as this test found it, or the next
    # Ray started in this process (the session's local Ray) runs in another auth mode than its
    # driver expects ("InvalidAuthToken ... RAY_AUTH_MODE is currently 'disabled'")
    monkeypatch.undo()
    Config.initialize("")


@pytest.mark.parametrize("address", [None, "local"])
def test_the_local_token_notice_is_not_passed_on(caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 address: str | None) -> None:
    """Ray's notice on a new local Ray (token mode by default) is dropped; its warning that
    authentication is off is not."""
    from ray._private.authentication import authentication_token_setup as setup

    from raybench.cluster import token_auth

    monkeypatch.setattr(setup.logger, "filters", [])  # as in a new process
    token_auth(address)
    with caplog.at_level(logging.WARNING):
        setup._warn_token_auth_enabled()
        setup._warn_token_auth_disabled()
    assert [r.getMessage()[:39] for r in caplog.records] == [
        "Token authentication is disabled for th"]
