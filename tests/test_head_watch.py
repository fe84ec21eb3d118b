"""The driver's watch on the Ray head (raybench.cluster.HeadWatch), without Ray: a port that
stops answering ends the process with status 1 and one line, its last; the interval is
configurable."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raybench.cluster import HEAD_CHECK_S, HeadWatch, head_check_s
from raybench.errors import RaybenchError

REPO = Path(__file__).resolve().parents[1]
#: A driver's main thread logs progress lines while the watch runs; ``os._exit`` takes 0.3 s
#: (as when coverage saves its data there).
WATCH = """
import logging, os, sys, time
from raybench.cluster import HeadWatch
exit_now = os._exit
os._exit = lambda code: (time.sleep(0.3), exit_now(code))
with HeadWatch(sys.argv[1]):
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        logging.getLogger("raybench.tune.progress").warning("a progress line")
        time.sleep(0.005)
print("watch ended")
"""


def _closed_port() -> str:
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _watch(address: str, sleep_s: float, interval: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAYBENCH_HEAD_CHECK_S": interval}
    return subprocess.run([sys.executable, "-c", WATCH, address, str(sleep_s)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_head_that_stops_answering_ends_the_driver_with_one_line() -> None:
    address = _closed_port()
    started = time.monotonic()
    done = _watch(address, 30, "0.1")
    took = time.monotonic() - started
    assert done.returncode == 1 and "watch ended" not in done.stdout, done
    lines = done.stderr.splitlines()
    assert lines[-1] == (f"raybench: error: lost the Ray head at {address} mid-sweep; "
                         "start a cluster and continue with --resume")  # the last line
    assert set(lines[:-1]) == {"a progress line"}
    assert took < 20, took  # 4 checks 0.1 s apart, not 4 x 5 s


def test_a_head_that_answers_is_left_alone() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        done = _watch(f"127.0.0.1:{sock.getsockname()[1]}", 1.0, "0.1")
    assert done.returncode == 0 and done.stdout.strip() == "watch ended", done


def test_the_check_interval_defaults_and_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYBENCH_HEAD_CHECK_S", raising=False)
    assert head_check_s() == HEAD_CHECK_S == 5.0
    assert HeadWatch(None).interval_s == HEAD_CHECK_S  # no head to watch: never read
    monkeypatch.setenv("RAYBENCH_HEAD_CHECK_S", "0.25")
    assert head_check_s() == 0.25 and HeadWatch("127.0.0.1:1").interval_s == 0.25
    for bad in ("soon", "0", "-1"):
        monkeypatch.setenv("RAYBENCH_HEAD_CHECK_S", bad)
        with pytest.raises(RaybenchError, match=r"^RAYBENCH_HEAD_CHECK_S=.*expected seconds > 0"):
            HeadWatch("127.0.0.1:1")
