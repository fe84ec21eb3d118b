"""The lease primitive (raybench.lease) on local disk and S3, and its two users: the live
driver's lease on a sweep (concurrent resumes refused, stale leases taken over) and the decoded
cache's shard claims. Races are of real threads, like the claim test."""
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

from raybench import lease as leases
from raybench import storage
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
    stopped: list[int] = []
    lease = Lease(store, "sw")
    lease.on_lost = lambda got: stopped.append(got.generation)  # the driver would exit here
    with lease:
        first = json.loads(store.read_file("sw", lease.name or "") or b"{}")["heartbeat"]
        time.sleep(0.5)
        beat = json.loads(store.read_file("sw", lease.name or "") or b"{}")["heartbeat"]
        assert beat > first
        _holder(store, 1)  # another driver took over (as after a long network partition)
        time.sleep(0.4)
        assert lease.lost.is_set() and stopped == [1]  # within one heartbeat of noticing
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


# --- the primitive ----------------------------------------------------------------------------


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def _write(folder: storage.Location, name: str, **record: object) -> None:
    storage.write_bytes_atomic(folder.join(name), json.dumps(record).encode())


def test_staleness_rule(tmp_path: Path) -> None:
    now = 1000.0
    live = {"host": "other-host", "pid": 1, "heartbeat": now - 5, "released": False}
    assert not leases.is_stale(live, 10, now)
    assert leases.is_stale(dict(live, heartbeat=now - 11), 10, now)  # no heartbeat for 11 s
    assert leases.is_stale(dict(live, released=True), 10, now)
    assert leases.is_stale({k: v for k, v in live.items() if k != "heartbeat"}, 10, now)
    assert leases.is_stale({}, 10, now)  # a record cut short by a crash
    here = dict(live, host=socket.gethostname())
    mine = leases.Lease(storage.resolve(str(tmp_path)).join("mine"))
    assert mine.try_acquire().won
    assert not leases.is_stale(dict(here, pid=os.getpid(), token=mine.token), 10, now)
    mine.release()  # let go: stale at once, even had its file not been marked released
    assert leases.is_stale(dict(here, pid=os.getpid(), token=mine.token), 10, now)
    assert leases.is_stale(dict(here, pid=os.getpid(), token="not-held-here"), 10, now)
    assert leases.is_stale(dict(here, pid=_dead_pid()), 10, now)  # its process is gone
    assert not leases.is_stale(dict(live, pid=_dead_pid()), 10, now)  # another host's pid


@pytest.mark.s3
def test_primitive_race_renew_and_release_locally_and_on_s3(tmp_path: Path,
                                                            s3_bucket: str) -> None:
    for root in (str(tmp_path), f"s3://{s3_bucket}/p"):
        folder = storage.resolve(root).join("res")
        _write(folder, "x-00000001.lock", host="h", pid=1, heartbeat=time.time() - 100)
        _write(folder, "x-00000000.lock", host="h", pid=1, heartbeat=time.time() - 900)
        takers = [leases.Lease(folder, "x-", ".lock", timeout_s=30) for _ in range(6)]
        attempts: list[leases.Attempt] = []
        gate = threading.Barrier(len(takers))

        def take(taker: leases.Lease) -> None:
            gate.wait()
            attempts.append(taker.try_acquire())

        threads = [threading.Thread(target=take, args=(t,)) for t in takers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [t for t in takers if t.generation is not None]
        assert len(winners) == 1 and sum(a.won for a in attempts) == 1, root
        won = next(a for a in attempts if a.won)
        assert won.generation == 2 and won.previous is not None and won.previous["pid"] == 1
        # the predecessor's file stays, older generations go
        names = sorted(f.base_name for f in storage.list_files(folder))
        assert names == ["x-00000001.lock", "x-00000002.lock"], root
        holder = winners[0]
        assert holder.renew() == leases.Renewal(True, 2, None)
        gen, record = holder.current()
        assert gen == 2 and record is not None and record["token"] == holder.token
        # a fresh holder refuses the next taker, naming itself
        late = leases.Lease(folder, "x-", ".lock", timeout_s=30)
        refused = late.try_acquire()
        assert not refused.won and refused.previous is not None
        assert refused.previous["token"] == holder.token and late.generation is None
        holder.release()  # released: taken over at once
        assert late.try_acquire().won and late.generation == 3
        late.release(delete=True)  # its file and the older ones go
        assert storage.list_files(folder) == [], root


def test_a_holder_taken_for_dead_learns_it_lost_the_lease(tmp_path: Path) -> None:
    folder = storage.resolve(str(tmp_path))
    first = leases.Lease(folder, suffix=".json", timeout_s=30)
    assert first.try_acquire().won and first.generation == 0
    _write(folder, first.file_name(0), host="h", pid=1, heartbeat=time.time() - 60)  # a pause
    second = leases.Lease(folder, suffix=".json", timeout_s=30)
    assert second.try_acquire().won and second.generation == 1
    lost = first.renew()
    assert not lost and lost.generation == 1 and lost.holder is not None
    assert lost.holder["token"] == second.token and first.lost.is_set()
    assert bool(second.renew()) and not second.lost.is_set()
    # the loser's heartbeat stops renewing it and tells its owner, once
    heard: list[int] = []
    with leases.Heartbeat([first, second], 0.05, lambda lease, r: heard.append(r.generation)):
        time.sleep(0.4)
    assert heard == []  # first was already known lost: not renewed, not reported again
    third = leases.Lease(folder, suffix=".json", timeout_s=30)
    _write(folder, second.file_name(1), host="h", pid=1, heartbeat=time.time() - 60)
    assert third.try_acquire().won
    with leases.Heartbeat([second], 0.05, lambda lease, r: heard.append(r.generation)):
        time.sleep(0.4)
    assert heard == [2] and second.lost.is_set()
    record = json.loads(storage.read_bytes(folder.join(second.file_name(1))))
    assert time.time() - record["heartbeat"] > 50  # nothing written after it was lost


def test_a_cut_short_record_counts_as_stale_after_a_moment(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "UNREADABLE_S", 0.2)
    folder = storage.resolve(str(tmp_path))
    storage.write_bytes_atomic(folder.join("00000000"), b'{"host": "h", "pi')  # a crash mid-write
    taker = leases.Lease(folder, timeout_s=1e6)
    start = time.monotonic()
    got = taker.try_acquire()
    assert got.won and got.previous == {} and time.monotonic() - start >= 0.2


def test_both_users_go_through_the_one_primitive(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from raybench.data import cache

    seen: list[tuple[str, str]] = []
    real = leases.Lease.try_acquire

    def spy(self: leases.Lease, names: object = None) -> leases.Attempt:
        seen.append((type(self).__module__, self.folder.uri))
        return real(self, names)  # type: ignore[arg-type]

    monkeypatch.setattr(leases.Lease, "try_acquire", spy)
    spec = with_absolute_paths(load_spec(REPO / "jobs" / "smoke.yaml",
                                         [f"results={tmp_path / 'r'}", "name=sw"]))
    store = ResultStore(str(tmp_path / "r"))
    claim_sweep(store, spec, resume=False, overwrite=False, lease=Lease(store, "sw"))
    entry = cache._locate(tmp_path / "c", "k" * 32, 10, 8, None)
    assert cache.claim_shard(entry, 0, set()) is not None
    assert seen == [("raybench.tune.claim", str(tmp_path / "r" / "sw" / LEASE_DIR)),
                    ("raybench.lease", entry.store.uri)]
    assert isinstance(Lease(store, "sw"), leases.Lease)


def test_no_other_module_keeps_its_own_lease_rules() -> None:
    """The staleness rule (a holder's pid probed with os.kill) and exclusive creates live in
    raybench/lease.py; the store's create_file (a sweep's name claim) is the one other caller,
    and the test kill points (raybench/killpoint.py) the one other sender of a signal."""
    import ast

    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "raybench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("kill", "create_exclusive"):
                found.setdefault(node.attr, set()).add(path.relative_to(REPO).as_posix())
    assert found == {"kill": {"raybench/lease.py", "raybench/killpoint.py"},
                     "create_exclusive": {"raybench/lease.py", "raybench/store.py"}}


def test_a_driver_checks_its_lease_before_writing_only_after_a_stall(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """check_held costs a clock read while the last renewal is recent; after a stall longer
    than half the timeout it looks at the lease, and a lost lease stops the driver, naming
    the new holder (one line)."""
    from raybench.tune import claim

    monkeypatch.setenv("RAYBENCH_LEASE_TIMEOUT_S", "30")
    store = ResultStore(str(tmp_path))
    stopped: list[int] = []
    lease = Lease(store, "sw")
    lease.on_lost = lambda got: stopped.append(got.generation)
    with lease:
        assert os.environ[leases.GENERATION_ENV] == "sw:0"
        _holder(store, 1)  # taken over; this driver has not looked yet
        claim.check_held("sw")
        assert stopped == []  # renewed a moment ago: no look at the lease
        lease.renewed_at -= 16  # a stall of more than half the timeout
        monkeypatch.setattr(lease, "renew", lambda: (_ for _ in ()).throw(OSError("no store")))
        claim.check_held("sw")  # a store that does not answer: the write that follows fails
        assert stopped == []
        monkeypatch.undo()
        monkeypatch.setenv("RAYBENCH_LEASE_TIMEOUT_S", "30")
        claim.check_held("sw")
        assert stopped == [1]
    assert leases.GENERATION_ENV not in os.environ
    claim.check_held("sw")  # no lease held on it: nothing to check


#: A fenced driver in a fresh interpreter; a thread logs progress lines meanwhile, and
#: ``os._exit`` takes 0.3 s (as when coverage saves its data there).
FENCED_DRIVER = """
import logging, os, sys, threading, time
from raybench import lease
from raybench.store import ResultStore
from raybench.tune.claim import Lease
exit_now = os._exit
os._exit = lambda code: (time.sleep(0.3), exit_now(code))
def progress():
    while True:
        logging.getLogger("raybench.tune.progress").warning("a progress line")
        time.sleep(0.005)
threading.Thread(target=progress, daemon=True).start()
time.sleep(0.05)
held = Lease(ResultStore(sys.argv[1]), "sw")
held.acquire()
held.on_lost(lease.Renewal(False, 1, {"host": "b-host", "pid": 77}))
print("after")
"""


def test_the_exit_line_of_a_fenced_driver_names_the_new_holder_and_is_its_last(
        tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", FENCED_DRIVER, str(tmp_path)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0] == "a progress line"  # the other thread did log before the stop
    assert lines[-1] == (
        "raybench: error: sweep 'sw' was taken over by b-host pid 77 (lease generation 1) "
        "while this driver was stalled past the 60 s lease timeout; this driver stopped")
    assert set(lines[:-1]) == {"a progress line"}


@pytest.mark.parametrize("root", ["local", "s3"])
def test_a_fenced_trial_publishes_nothing(root: str, tmp_path: Path, request) -> None:
    """A trial of generation 0 writes (its files marked 0) until generation 1 exists; then
    every write and delete is refused, and the files stay as generation 0 left them."""
    import pyarrow.parquet as pq

    from raybench import schema as S
    from raybench.engine.worker import trial_fence
    from raybench.store import GENERATION_KEY

    uri = str(tmp_path) if root == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/p"
    driver = ResultStore(uri)
    _holder(driver, 0)
    os.environ[leases.GENERATION_ENV] = "sw:0"
    try:
        fence = trial_fence(uri, "sw")
        assert fence is not None and trial_fence(uri, "other-sweep") is None
    finally:
        del os.environ[leases.GENERATION_ENV]
    store = ResultStore(uri, fence=fence)
    rows = [{S.EPOCH: 1, "train_loss": 0.5}]
    store.write_table("sw", S.EPOCHS_TABLE, "t0", rows)
    store.replace_file("sw", "_state/t0.pt", b"state-0")
    loc = driver.location("sw", S.EPOCHS_TABLE, "t0.parquet")
    meta = pq.read_schema(loc.path, filesystem=loc.fs).metadata
    assert meta[GENERATION_KEY] == b"0"
    _holder(driver, 1)  # the driver was taken over
    for write in (lambda: store.write_table("sw", S.EPOCHS_TABLE, "t0", rows * 2),
                  lambda: store.replace_file("sw", "_state/t0.pt", b"state-late"),
                  lambda: store.delete_file("sw", "_state/t0.pt")):
        with pytest.raises(leases.Fenced, match="generation 0 was replaced by generation 1"):
            write()
    assert driver.read_file("sw", "_state/t0.pt") == b"state-0"
    assert len(pq.read_table(loc.path, filesystem=loc.fs)) == 1


def test_a_lease_let_go_while_the_store_was_down_is_taken_again_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    folder = storage.resolve(str(tmp_path)).join("res")
    first = leases.Lease(folder, timeout_s=600)
    assert first.try_acquire().won

    def down(*_args: object, **_kwargs: object) -> None:
        raise OSError("the store stopped answering")

    with monkeypatch.context() as m:
        m.setattr(storage, "write_bytes_atomic", down)
        first.release()  # its file still says held, with a fresh heartbeat
    assert "cannot release the lease" in caplog.text
    assert leases.Lease(folder).current()[1]["released"] is False
    again = leases.Lease(folder, timeout_s=600).try_acquire()  # same process: no 600 s wait
    assert again.won and again.generation == 1
    other = dict(again.previous, pid=1, host="another-host")  # another host's: still live
    assert not leases.is_stale(other, 600)
