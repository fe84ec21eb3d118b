"""Fencing through the CLI: a driver frozen (SIGSTOP) past the lease timeout while a second
``--resume`` driver takes the sweep over, then thawed. The thawed driver stops with one line
naming the new holder; the new one completes the sweep; nothing is written twice."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.faults.sweepfaults import check_sweep, env_with, sweep_cmd, wait_for_actors_to_die

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TIMEOUT_S = 4


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, f"no {path}"
        time.sleep(0.05)


def test_a_thawed_driver_that_lost_its_lease_stops_and_writes_nothing(
        ray_address: str, tmp_path: Path) -> None:
    results, cache = tmp_path / "r", tmp_path / "cache"
    sweep = results / "kill"
    env = env_with(RAYBENCH_LEASE_TIMEOUT_S=str(TIMEOUT_S), TUNE_GLOBAL_CHECKPOINT_S="1")
    first = subprocess.Popen(sweep_cmd(results, cache, ray_address), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    second = None
    try:
        _wait_for(sweep / "epochs" / "cnnx-synthetic-s0-t000.parquet", first)
        os.kill(first.pid, signal.SIGSTOP)  # its Ray workers go on training
        time.sleep(TIMEOUT_S + 1)
        second = subprocess.Popen(sweep_cmd(results, cache, ray_address, "--resume"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)
        _wait_for(sweep / "_lease" / "00000001.json", second)
        os.kill(first.pid, signal.SIGCONT)
        _, err1 = first.communicate(timeout=120)
        wait_for_actors_to_die()
        out2, err2 = second.communicate(timeout=400)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
    assert second.returncode == 0, err2[-4000:]
    assert "Traceback" not in out2 + err2 and "ERROR" not in out2 + err2, err2[-4000:]
    assert first.returncode == 1 and "Traceback" not in err1, err1[-4000:]
    last = err1.strip().splitlines()[-1]
    assert last.startswith("raybench: error: sweep 'kill' was taken over by ") and (
        f"pid {second.pid} (lease generation 1)" in last), err1[-2000:]
    assert [ln for ln in err1.splitlines() if ln.startswith("raybench: error")] == [last]
    check_sweep(sweep)
