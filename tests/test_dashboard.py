"""``raybench dashboard``: optuna-dashboard on a sweep's journal, queried over HTTP."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from raybench.dashboard import DashboardOptions, running_dashboard
from raybench.tune.studies import JOURNAL, OPTUNA_DIR

pytest.importorskip("optuna_dashboard")
STUDIES = {"cnnx-synthetic-s0": [0.61, 0.72], "squeezenet-synthetic-s0": [0.55]}


def _journal(path: Path) -> Path:
    """A journal like the sweep engine's: one study per cell, a few finished trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path)))
    for name, values in STUDIES.items():
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        for value in values:
            trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)})
            study.tell(trial, value)
    return path


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def _studies(base: str) -> dict[str, int]:
    """Study name -> study id, from optuna-dashboard's ``GET /api/studies``."""
    status, body = _get(base.removesuffix("/dashboard") + "/api/studies")
    assert status == 200
    return {s["study_name"]: s["study_id"] for s in json.loads(body)["study_summaries"]}


def _values(base: str, study_id: int) -> list[float]:
    """The trial values of one study, from ``GET /api/studies/<id>``."""
    status, body = _get(base.removesuffix("/dashboard") + f"/api/studies/{study_id}")
    assert status == 200
    return [t["values"][0] for t in json.loads(body)["trials"]]


def test_dashboard_serves_the_sweeps_studies(tmp_path: Path) -> None:
    _journal(tmp_path.joinpath("root", "sw", OPTUNA_DIR, JOURNAL))
    with running_dashboard(DashboardOptions(str(tmp_path / "root"), "sw", port=0)) as board:
        assert board.studies == sorted(STUDIES)
        assert board.url.startswith("http://127.0.0.1:") and board.url.endswith("/dashboard")
        ids = _studies(board.url)
        assert set(ids) == set(STUDIES)
        assert {name: _values(board.url, i) for name, i in ids.items()} == STUDIES
        status, page = _get(board.url)
        assert status == 200 and b"<html" in page.lower()


def test_dashboard_cli_prints_the_url_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    _journal(tmp_path.joinpath("root", "sw", OPTUNA_DIR, JOURNAL))
    proc = subprocess.Popen([sys.executable, "-m", "raybench.cli", "dashboard",
                             str(tmp_path / "root"), "--sweep", "sw", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        url = proc.stdout.readline().strip()
        assert first.startswith("optuna-dashboard for sweep sw (2 studies: cnnx-synthetic-s0, ")
        assert set(_studies(url)) == set(STUDIES)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err


def test_missing_journal_is_one_line_exit_2(tmp_path: Path, run_cli) -> None:
    (tmp_path / "root" / "paper-grid").mkdir(parents=True)
    t0 = time.monotonic()
    code, out, err = run_cli("dashboard", str(tmp_path / "root"), "--sweep", "paper-grid")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"raybench: error: no Optuna studies for sweep 'paper-grid': "
        f"{tmp_path / 'root'}/paper-grid/optuna/journal.log does not exist "
        "(an Optuna-mode `raybench sweep` writes it)"]
    assert time.monotonic() - t0 < 10


@pytest.mark.s3
def test_dashboard_on_an_s3_root_serves_a_local_copy(tmp_path: Path, s3_bucket: str,
                                                     s3_endpoint: str) -> None:
    import boto3

    journal = _journal(tmp_path / "journal.log")
    boto3.client("s3", endpoint_url=s3_endpoint).upload_file(
        str(journal), s3_bucket, "res/sw/optuna/journal.log")
    with running_dashboard(DashboardOptions(f"s3://{s3_bucket}/res", "sw", port=0)) as board:
        copy = board.journal
        assert copy.read_bytes() == journal.read_bytes() and copy != journal
        assert set(_studies(board.url)) == set(STUDIES)
    assert not copy.exists()  # the temporary copy goes with the server
