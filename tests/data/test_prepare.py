"""Preparation on Ray: parallel import, audit and cache build give the serial outputs byte for
byte; bad images, a killed worker, a full disk; the shard claim; the progress line."""
from __future__ import annotations

import errno
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raybench import schema as S
from raybench import lease, storage
from raybench.bench.data import planted_hashes
from raybench.data import audit, cache, fingerprints, near_duplicates, prepare
from raybench.data.importers import import_dataset, rows, write_import
from raybench.errors import DataError

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def decodes(local_ray, ray_decode_log: Path):
    """The folder where each decode is logged: the session Ray's workers log there (the
    variable is read when a worker starts), and so does this process while the module runs."""
    os.environ[cache.DECODE_LOG_ENV] = str(ray_decode_log)
    yield ray_decode_log
    os.environ.pop(cache.DECODE_LOG_ENV, None)


@pytest.fixture
def decode_log(decodes: Path) -> Path:
    """The decode log folder, emptied."""
    for p in decodes.iterdir():
        p.unlink()
    return decodes


def _films(root: Path, n: int, side: int = 96) -> Path:
    """``n`` film-like PNGs in class folders; every 10th is a brightened copy of the one before."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / side
    prev = None
    for i in range(n):
        label = ("normal", "viral", "bacteria")[i % 3]
        if i % 10 == 9 and prev is not None:
            arr = np.clip(prev.astype(int) + 12, 0, 255).astype(np.uint8)
        else:
            base = 120 + 80 * np.sin(6 * xx + i) * np.cos(4 * yy - i / 3)
            arr = np.clip(base + rng.normal(0, 20, (side, side)), 0, 255).astype(np.uint8)
        prev = arr
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / label / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _films(tmp_path_factory.mktemp("films"), 120)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many chunks and several shards even for a small set."""
    monkeypatch.setattr(rows, "ROWS_CHUNK", 7)
    monkeypatch.setattr(fingerprints, "PROBE_CHUNK", 9)
    monkeypatch.setattr(cache, "DECODE_CHUNK", 5)
    monkeypatch.setattr(cache, "SHARD_ROWS", 32)


def _serial(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes every chunk run in this process, as a Ray task's body does."""
    monkeypatch.setattr(prepare, "in_ray_worker", lambda: True)


def _decoders(log_dir: Path) -> set[int]:
    return {int(p.name.split("-")[0]) for p in log_dir.iterdir()}


def test_parallel_outputs_equal_serial(decode_log: Path, films: Path, small_chunks,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log_dir = decode_log
    par = import_dataset("folder", films)
    write_import(par, tmp_path / "par" / "m.parquet")
    par_audit = audit.audit_manifest(tmp_path / "par" / "m.parquet")
    files = [films / p for p in par.df[S.PATH]]
    par_cache = cache.decoded_images(par.df, files, 48, tmp_path / "c-par")
    assert _decoders(log_dir) - {os.getpid()}, "the parallel build ran outside this process"
    with monkeypatch.context() as m:
        _serial(m)
        ser = import_dataset("folder", films)
        write_import(ser, tmp_path / "ser" / "m.parquet")
        ser_audit = audit.audit_manifest(tmp_path / "ser" / "m.parquet")
        ser_cache = cache.decoded_images(ser.df, files, 48, tmp_path / "c-ser")
    assert (tmp_path / "par" / "m.parquet").read_bytes() == \
        (tmp_path / "ser" / "m.parquet").read_bytes()
    assert len(par.df) == 120
    assert len(par_audit["near_duplicates"]) >= 10  # the planted copies were found
    strip = lambda r: json.dumps({k: v for k, v in r.items() if k != "manifest"})  # noqa: E731
    assert strip(par_audit) == strip(ser_audit)
    assert len(par_cache.files) == 4  # 120 rows in shards of 32
    for a, b in zip(par_cache.files, ser_cache.files, strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert np.array_equal(np.asarray(par_cache.images), np.asarray(ser_cache.images))
    assert np.array_equal(par_cache.images[77], cache.decode_image(files[77], 48))


def test_sharded_images_index_like_an_array(local_ray, films: Path, small_chunks,
                                            tmp_path: Path) -> None:
    df = import_dataset("folder", films).df
    entry = cache.decoded_images(df, [films / p for p in df[S.PATH]], 24, tmp_path)
    whole = np.asarray(entry.images)
    assert isinstance(entry.images, cache.ShardedImages) and whole.shape == (120, 24, 24)
    idx = np.array([119, 0, 31, 32, 64, 5])
    assert np.array_equal(entry.images[idx], whole[idx])
    assert np.array_equal(entry.images[10:70:3], whole[10:70:3])
    mask = np.arange(120) % 7 == 0
    assert np.array_equal(entry.images[mask], whole[mask])
    assert np.array_equal(entry.images[-1], whole[-1])
    assert np.array_equal(entry.images[idx, 2:5], whole[idx, 2:5])
    with pytest.raises(IndexError):
        entry.images[120]


def test_bad_images_parallel(local_ray, films: Path, small_chunks, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "d"
    shutil.copytree(films, root)
    df = import_dataset("folder", root).df
    files = [root / p for p in df[S.PATH]]
    files[40].write_bytes(b"not a png")
    files[90].write_bytes(b"")
    with pytest.raises(DataError, match=f"{files[40]}: unreadable image"):
        cache.decoded_images(df, files, 32, tmp_path / "c")
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]  # nothing written
    entry = cache.decoded_images(df, files, 32, tmp_path / "c", on_bad_image="skip")
    assert np.nonzero(~entry.ok)[0].tolist() == [40, 90]
    assert [b.path for b in entry.bad] == [str(files[40]), str(files[90])]
    assert not entry.images[40].any() and entry.images[41].any()
    with pytest.raises(DataError, match=f"{files[40]}: unreadable.*2 bad image"):
        cache.decoded_images(df, files, 32, tmp_path / "c")
    with pytest.raises(DataError, match=r"\.png: (unreadable image|empty file)"):
        import_dataset("folder", root)
    skipped = import_dataset("folder", root, opts=_skip())
    assert len(skipped.df) == 118
    assert sorted(b.path for b in skipped.skipped) == sorted([str(files[40]), str(files[90])])


def _skip():
    from raybench.data.importers import ImportOptions

    return ImportOptions(on_bad_image="skip")


@pytest.mark.slow
def test_killed_worker_chunk_is_rebuilt(decode_log: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = _films(tmp_path / "big", 300, side=384)
    df = import_dataset("folder", root).df
    files = [root / p for p in df[S.PATH]]
    log_dir = decode_log
    monkeypatch.setattr(cache, "DECODE_CHUNK", 4)
    killed: list[float] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            others = _decoders(log_dir) - {os.getpid()}
            if others:
                os.kill(others.pop(), signal.SIGKILL)
                killed.append(time.monotonic())
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one)
    killer.start()
    entry = cache.decoded_images(df, files, 64, tmp_path / "c")
    done = time.monotonic()
    killer.join()
    assert killed and killed[0] < done, "a decoding worker was killed mid-build"
    with monkeypatch.context() as m:
        _serial(m)
        ref = cache.decoded_images(df, files, 64, tmp_path / "ref")
    assert entry.ok.all() and np.array_equal(np.asarray(entry.images), np.asarray(ref.images))


def test_full_disk_leaves_no_entry(small_chunks, films: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _serial(monkeypatch)
    df = import_dataset("folder", films).df
    files = [films / p for p in df[S.PATH]]
    real_add = cache._ShardWriter.add
    calls = []

    def add(self, path, arr, error) -> None:  # noqa: ANN001 - the method's own signature
        calls.append(path)
        if len(calls) == 50:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_add(self, path, arr, error)

    monkeypatch.setattr(cache._ShardWriter, "add", add)
    with pytest.raises(DataError, match=r"cannot write the decoded cache in .*: No space left"):
        cache.decoded_images(df, files, 32, tmp_path / "c")
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]  # no shard, no claim
    monkeypatch.setattr(cache._ShardWriter, "add", real_add)
    assert cache.decoded_images(df, files, 32, tmp_path / "c").ok.all()


def test_shard_claim_race_has_one_winner(tmp_path: Path) -> None:
    entry = cache._locate(tmp_path, "k" * 32, 10, 8, None)
    won: list[object] = []
    barrier = threading.Barrier(8)

    def racer(token: str) -> None:
        barrier.wait()
        if cache.claim_shard(entry, 0, cache._store_names(entry)):
            won.append(token)

    threads = [threading.Thread(target=racer, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert cache.claim_shard(entry, 0, cache._store_names(entry)) is None


def test_dead_builders_claim_is_taken_over(films: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import socket
    import sys

    _serial(monkeypatch)
    df = import_dataset("folder", films).df
    files = [films / p for p in df[S.PATH]]
    key = cache.cache_key(df, 16)
    folder = tmp_path / "decoded" / key
    folder.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    claim = {"host": socket.gethostname(), "pid": int(gone.stdout), "heartbeat": time.time(),
             "token": "dead"}
    (folder / "shard-00000.claim-0").write_text(json.dumps(claim))
    (folder / ".shard-00000.abc.tmp").write_bytes(b"\x93NUMPY half")  # its half-written file
    entry = cache.decoded_images(df, files, 16, tmp_path)
    assert entry.built and entry.ok.all()
    assert sorted(p.name for p in folder.iterdir()) == ["shard-00000.json", "shard-00000.npy"]
    live = dict(claim, pid=os.getpid(), host="another-host")
    assert not lease.is_stale(live, cache.CLAIM_STALE_S)
    assert lease.is_stale(dict(live, heartbeat=time.time() - 1e4), cache.CLAIM_STALE_S)


def test_s3_store_downloads_into_the_local_folder(s3_bucket: str, films: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _serial(monkeypatch)
    monkeypatch.setattr(cache, "SHARD_ROWS", 50)
    df = import_dataset("folder", films).df
    files = [films / p for p in df[S.PATH]]
    first = cache.decoded_images(df, files, 32, f"s3://{s3_bucket}/cache", local_dir=tmp_path / "a")
    log_dir = tmp_path / "decodes"
    log_dir.mkdir()
    monkeypatch.setenv(cache.DECODE_LOG_ENV, str(log_dir))
    second = cache.decoded_images(df, files, 32, f"s3://{s3_bucket}/cache", local_dir=tmp_path / "b")
    assert first.built and not second.built and not list(log_dir.iterdir())
    assert np.array_equal(np.asarray(first.images), np.asarray(second.images))
    assert [p.parent.parent.parent for p in second.files] == [tmp_path / "b"] * 3
    store = storage.resolve(f"s3://{s3_bucket}/cache").join("decoded", first.path.name)
    assert [f.base_name for f in storage.list_files(store)] == [
        f"shard-0000{k}.{ext}" for k in range(3) for ext in ("json", "npy")]


def test_progress_line(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(prepare.time, "monotonic", lambda: now[0])
    with caplog.at_level(logging.INFO, logger="raybench.data.prepare"):
        bar = prepare.Progress("import", 1000, interval_s=30)
        now[0] += 10
        bar.update(100)  # 10 s after the start: no line yet
        now[0] += 20
        bar.update(200)  # 30 s: 300 images at 10/s, 700 to go
        now[0] += 5
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["import: 300/1000 images (30%), 10.0 images/s, ETA 1m10s",
                     "import: 300/1000 images (30%), 8.6 images/s, ETA 1m22s (35s)"]


def test_map_chunks_keeps_order_without_ray() -> None:
    out = prepare.map_chunks(abs, list(range(-50, 50)), chunk_size=7, what="t", parallel=False)
    assert out == [abs(i) for i in range(-50, 50)]


def _faiss_pairs(a: np.ndarray, threshold: int, b: np.ndarray | None = None) -> list:
    """The brute force of an independent implementation: faiss's exhaustive binary index."""
    faiss = pytest.importorskip("faiss")
    index = faiss.IndexBinaryFlat(a.shape[1] * 8)
    index.add(a if b is None else b)
    lims, dist, ids = index.range_search(a, threshold + 1)  # faiss: distance < radius
    return sorted((i, int(ids[k]), int(dist[k])) for i in range(len(a))
                  for k in range(lims[i], lims[i + 1]) if b is not None or ids[k] > i)


def test_near_pairs_index_equals_brute_force() -> None:
    hashes = planted_hashes(20_000, 1, copies=400)
    valid = np.ones(len(hashes), dtype=bool)
    valid[::997] = False
    found = near_duplicates.near_pairs(hashes, valid, near_duplicates.NEAR_THRESHOLD)
    assert len(hashes) ** 2 > near_duplicates.BRUTE_FORCE_PAIRS  # the index path ran
    ref = [p for p in _faiss_pairs(hashes, near_duplicates.NEAR_THRESHOLD) if valid[p[0]] and valid[p[1]]]
    assert len(ref) > 250 and found == ref
    assert found == near_duplicates.near_pairs(hashes, valid, near_duplicates.NEAR_THRESHOLD)  # deterministic


def test_near_pairs_all_pairs_path_equals_faiss() -> None:
    """The block-wise comparison that small sets take, within one set and across two."""
    hashes = planted_hashes(3000, 3, copies=200)
    valid = np.ones(len(hashes), dtype=bool)
    valid[::97] = False
    found = near_duplicates._all_pairs(hashes, valid, 112)
    ref = [p for p in _faiss_pairs(hashes, 112) if valid[p[0]] and valid[p[1]]]
    assert len(ref) > 100 and found == ref
    a, b = hashes[:1800], hashes[1800:]
    across = near_duplicates._all_pairs(a, valid[:1800], 112, b, valid[1800:])
    ref = [p for p in _faiss_pairs(a, 112, b) if valid[p[0]] and valid[1800 + p[1]]]
    assert len(ref) > 20 and across == ref


def test_near_pairs_index_across_two_sets() -> None:
    both = planted_hashes(16_000, 2, copies=300)
    a, b = both[:9000], both[9000:]
    va, vb = np.ones(len(a), dtype=bool), np.ones(len(b), dtype=bool)
    found = near_duplicates.near_pairs(a, va, 100, b, vb)
    assert len(a) * len(b) > near_duplicates.BRUTE_FORCE_PAIRS
    ref = _faiss_pairs(a, 100, b)
    assert len(ref) > 50 and found == ref


def test_sweep_start_builds_every_cells_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              synth_manifest: Path) -> None:
    from raybench.config import load_spec
    from raybench.data import manifest as mf
    from raybench.store import ResultStore
    from raybench.tune import sweep

    spec = load_spec(None, [f"results={tmp_path / 'r'}", "name=prep", "sweep.models=[cnnx, resnet18]",
                            "sweep.seeds=[0, 1]", f"data.manifest={synth_manifest}",
                            f"data.cache_dir={tmp_path / 'c'}", "model.image_size=40"])
    from raybench.tune.claim import Lease

    store = ResultStore(spec.results)
    sweep._prepare_data(spec, store, Lease(store, spec.name), existed=True)
    df = mf.read_manifest(synth_manifest)
    entries = [p.name for p in (tmp_path / "c" / "decoded").iterdir()]
    assert entries == [cache.cache_key(df, 40)]  # 4 cells, one manifest at one size
    files = mf.image_files(synth_manifest, list(df[S.PATH]))
    assert not cache.decoded_images(df, files, 40, tmp_path / "c").built  # trials only read


def test_unreachable_address_is_one_line(run_cli, films: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh CLI process
    code, _, err = run_cli("data", "import", "folder", str(films), "--out",
                           str(tmp_path / "m.parquet"), "--address", "127.0.0.1:1")
    assert code == 2 and err.strip().count("\n") == 0 and "cannot reach Ray at 127.0.0.1:1" in err
    assert not (tmp_path / "m.parquet").exists()


def test_a_long_build_renews_its_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = cache._locate(tmp_path, "r" * 32, 10, 8, None)
    claim = cache.claim_shard(entry, 0, set())
    assert claim is not None and claim.generation == 0
    loc = entry.store.join(claim.file_name(0))
    old = json.loads(storage.read_bytes(loc))
    storage.write_bytes_atomic(loc, json.dumps(dict(old, heartbeat=time.time() - 1e4)).encode())
    assert lease.is_stale(json.loads(storage.read_bytes(loc)) | {"host": "elsewhere"},
                          cache.CLAIM_STALE_S)
    monkeypatch.setattr(cache, "CLAIM_RENEW_S", 0.05)
    with lease.Heartbeat([claim], cache.CLAIM_RENEW_S):  # as _ensure runs a build
        time.sleep(0.3)
    renewed = json.loads(storage.read_bytes(loc))
    assert renewed["token"] == claim.token
    assert not lease.is_stale(renewed | {"host": "elsewhere"}, cache.CLAIM_STALE_S)
    names = cache._store_names(entry)
    assert cache.claim_shard(entry, 0, names) is None  # still held


def test_bench_projection_and_planted_hashes() -> None:
    from raybench.bench import data as bench_data

    table = bench_data.projection(per_core=86.0, efficiency=0.9)
    nih = table["nih_chestxray14"]
    assert nih["films"] == 112_120
    assert nih["1x16_cores_h"] == pytest.approx(112_120 / (86.0 * 16 * 0.9) / 3600)
    assert nih["4x16_cores_h"] == pytest.approx(nih["1x16_cores_h"] / 4)
    hashes = bench_data.planted_hashes(3000, share=0.02)
    pairs = near_duplicates.near_pairs(hashes, np.ones(3000, dtype=bool), 140)
    assert len(pairs) >= 60  # the 60 planted copies (0-140 bits from their originals)
