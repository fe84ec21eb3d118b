"""The live driver's lease on a sweep: concurrent resumes are refused, stale leases taken over,
atomically on local disk and on S3 (a race of real threads, like the claim test)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raybench.config import dump_yaml, load_spec, with_absolute_paths
from raybench.errors import RaybenchError
from raybench.store import ResultStore
from raybench.tune.claim import LEASE_DIR, Lease, claim_sweep

REPO = Path(__file__).resolve().parents[1]


def _holder(store: ResultStore, gen: int, *, host: str = "other-host", pid: int = 4242,
            age_s: float = 0.0, released: bool = False) -> None:
    """A lease file as another driver left it."""
    store.replace_file("sw", f"{LEASE_DIR}/{gen:08d}.json", json.dumps(
        {"host": host, "pid": pid, "heartbeat": time.time() - age_s,
         "released": released}).encode())


def _race(store: ResultStore, n: int = 6) -> tuple[list[Lease], list[str]]:
    won: list[Lease] = []
    refused: list[str] = []
    gate = threading.Barrier(n)

    def one() -> None:
        lease = Lease(store, "sw")
        gate.wait()
        try:
            lease.acquire()
            won.append(lease)
        except RaybenchError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, refused


@pytest.mark.s3
def test_lease_race_one_taker_locally_and_on_s3(tmp_path: Path, s3_bucket: str) -> None:
    for root in (str(tmp_path), f"s3://{s3_bucket}/p"):
        store = ResultStore(root)
        _holder(store, 3, age_s=600)  # a driver whose pod died ten minutes ago
        won, refused = _race(store)
        assert len(won) == 1 and len(refused) == 5, (root, refused)
        assert all("taken over by another driver" in r or "is being run by" in r
                   for r in refused), refused
        gen, record = won[0].current()
        assert gen == 4 and record is not None and record["pid"] == os.getpid()
        assert won[0].name == f"{LEASE_DIR}/00000004.json" and record["released"] is False
        assert store.file_names("sw", LEASE_DIR) == ["00000003.json", "00000004.json"]


def test_fresh_lease_refuses_stale_and_dead_are_taken_over(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultStore(str(tmp_path))
    _holder(store, 0, age_s=5)
    with pytest.raises(RaybenchError, match=r"^sweep 'sw' is being run by other-host pid 4242 "
                                            r"\(heartbeat \d+ s ago\); wait for it, or retry "
                                            r"after 60 s without a heartbeat$"):
        Lease(store, "sw").acquire()
    monkeypatch.setenv("RAYBENCH_LEASE_TIMEOUT_S", "3")  # the documented override
    Lease(store, "sw").acquire()  # 5 s without a heartbeat is stale now
    assert store.file_names("sw", LEASE_DIR) == ["00000000.json", "00000001.json"]
    monkeypatch.delenv("RAYBENCH_LEASE_TIMEOUT_S")
    # A holder on this host whose process is gone (a killed local driver): stale at once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    _holder(store, 2, host=socket.gethostname(), pid=int(dead.stdout))
    lease = Lease(store, "sw")
    lease.acquire()
    assert lease.name == f"{LEASE_DIR}/00000003.json"
    lease.release()  # released: the next driver need not wait
    Lease(store, "sw").acquire()


def test_heartbeat_renews_and_a_lost_lease_stops_renewing(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from raybench.tune import claim

    monkeypatch.setattr(claim, "HEARTBEAT_S", 0.1)
    store = ResultStore(str(tmp_path))
    with Lease(store, "sw") as lease:
        first = json.loads(store.read_file("sw", lease.name or "") or b"{}")["heartbeat"]
        time.sleep(0.5)
        beat = json.loads(store.read_file("sw", lease.name or "") or b"{}")["heartbeat"]
        assert beat > first
        _holder(store, 1)  # another driver took over (as after a long network partition)
        time.sleep(0.4)
        assert lease._stop.is_set()
    record = json.loads(store.read_file("sw", f"{LEASE_DIR}/00000000.json") or b"{}")
    assert record["released"] is True


def test_second_resume_while_the_lease_is_fresh_is_one_line_exit_2(tmp_path: Path) -> None:
    spec = with_absolute_paths(load_spec(REPO / "jobs" / "smoke.yaml",
                                         [f"results={tmp_path}", "name=sw"]))
    store = ResultStore(str(tmp_path))
    assert claim_sweep(store, spec, resume=False, overwrite=False, lease=Lease(store, "sw")) is False
    store.write_spec("sw", dump_yaml(spec))
    _holder(store, 1, age_s=2)  # the first driver, alive on another host (a RayJob retry)
    proc = subprocess.run([sys.executable, "-m", "raybench.cli", "sweep", "--config",
                           str(REPO / "jobs" / "smoke.yaml"), "--results", str(tmp_path),
                           "--set", "name=sw", "--resume"],
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("raybench: error: sweep 'sw' is being run by other-host pid 4242")
    with pytest.raises(RaybenchError, match="is being run by other-host"):  # nor --overwrite
        claim_sweep(store, spec, resume=False, overwrite=True)


def test_a_cut_short_claim_is_taken_over_by_a_resume_with_the_same_spec(tmp_path: Path) -> None:
    spec = with_absolute_paths(load_spec(REPO / "jobs" / "smoke.yaml",
                                         [f"results={tmp_path}", "name=sw"]))
    store = ResultStore(str(tmp_path))
    claim_sweep(store, spec, resume=False, overwrite=False)
    store.write_spec("sw", dump_yaml(spec))
    (tmp_path / "sw" / "_claim.json").write_bytes(b'{"spec_sha2')  # a crash mid-write
    assert claim_sweep(store, spec, resume=True, overwrite=False, lease=Lease(store, "sw"))
    assert json.loads((tmp_path / "sw" / "_claim.json").read_bytes())["pid"] == os.getpid()


def test_a_cut_short_spec_is_rewritten_when_the_claim_matches_else_one_line(tmp_path: Path,
                                                                              caplog) -> None:
    spec = with_absolute_paths(load_spec(REPO / "jobs" / "smoke.yaml",
                                         [f"results={tmp_path}", "name=sw"]))
    other = with_absolute_paths(load_spec(REPO / "jobs" / "smoke.yaml",
                                          [f"results={tmp_path}", "name=sw", "train.epochs=3"]))
    store = ResultStore(str(tmp_path))
    claim_sweep(store, spec, resume=False, overwrite=False)
    whole = dump_yaml(spec)
    (tmp_path / "sw" / "spec.yaml").write_text(whole[: len(whole) // 2])  # a crash mid-write
    with pytest.raises(RaybenchError, match="was started with another spec"):
        claim_sweep(store, other, resume=True, overwrite=False)  # the claim names another hash
    assert claim_sweep(store, spec, resume=True, overwrite=False, lease=Lease(store, "sw"))
    assert "spec.yaml is damaged (cut short?); the claim's spec hash matches" in caplog.text
    (tmp_path / "sw" / "spec.yaml").write_text("")
    (tmp_path / "sw" / "_claim.json").write_bytes(b"")
    with pytest.raises(RaybenchError) as err:
        claim_sweep(store, spec, resume=True, overwrite=False)
    assert str(err.value) == (f"sweep 'sw' at {tmp_path / 'sw'}: both _claim.json and spec.yaml "
                              "are damaged or from another spec, so the spec it was started "
                              "with is unknown; --overwrite starts it again")
