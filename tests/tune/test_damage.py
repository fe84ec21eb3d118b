"""Damaged-file detection without Ray: ``ResultStore.damaged_trial_files`` (a resume's check of
the per-trial result files) and ``raybench.tune.damage.check_sweep`` (removing a damaged
trial's files so it runs again). The end-to-end resumes are in faults/test_sweep_cut_short.py."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from raybench.camset import CamSet
from raybench.store import ResultStore
from tests.helpers.resultdata import write_trial

SWEEP = "dmg"
TRIALS = ("t0", "t1", "t2", "t3")  # four: the checks take the thread pool's path (>= 4 files)


def _cams(n: int = 3) -> CamSet:
    rng = np.random.default_rng(0)
    return CamSet(image_ids=np.array([f"img{i}" for i in range(n)]), labels=np.array(["a"] * n),
                  predicted=np.array(["b"] * n), cams=rng.random((n, 4, 4)), method="cam",
                  target_layer="layer4", input_size=(32, 32))


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    """Four whole trials (four tables and a CAM file each), not yet compacted."""
    store = ResultStore(str(tmp_path))
    for i, trial in enumerate(TRIALS):
        write_trial(store, SWEEP, trial, model="cnnx", seed=i, scenario="s", labels=("a", "b"),
                    n=3, correct={"a": 2, "b": 1}, epochs=2)
        store.write_cams(SWEEP, trial, _cams())
    return store


def _cut(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "half" else b"")


def test_whole_files_are_not_damaged_compacted_or_not(store: ResultStore) -> None:
    assert store.damaged_trial_files(SWEEP) == {}
    store.compact(SWEEP)
    assert store.damaged_trial_files(SWEEP) == {}
    assert store.damaged_trial_files("no-such-sweep") == {}


@pytest.mark.parametrize("compacted", [False, True])
def test_each_cut_short_file_names_its_trial_once(store: ResultStore, tmp_path: Path,
                                                  compacted: bool) -> None:
    if compacted:
        store.compact(SWEEP)  # a changed (size, mtime) leaves the snapshot's index: read again
    sweep = tmp_path / SWEEP
    _cut(sweep / "runs" / "t0.parquet", "half")
    _cut(sweep / "predictions" / "t0.parquet", "empty")  # t0 twice: its first file is named
    _cut(sweep / "epochs" / "t1.parquet", "empty")
    _cut(sweep / "metrics" / "t2.parquet", "half")
    _cut(sweep / "cams" / "t3.npz", "half")
    assert store.damaged_trial_files(SWEEP) == {
        "t0": str(sweep / "runs" / "t0.parquet"), "t1": str(sweep / "epochs" / "t1.parquet"),
        "t2": str(sweep / "metrics" / "t2.parquet"), "t3": str(sweep / "cams" / "t3.npz")}


def test_files_in_the_snapshot_index_unchanged_are_not_opened(store: ResultStore,
                                                              tmp_path: Path) -> None:
    """Why a resume after a finished session reads almost nothing: a file whose size and mtime
    match the snapshot's index is trusted (here garbage of the same size, mtime restored)."""
    store.compact(SWEEP)
    for rel in ("runs/t1.parquet", "cams/t2.npz"):
        path = tmp_path / SWEEP / rel
        stat = path.stat()
        path.write_bytes(b"x" * stat.st_size)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.damaged_trial_files(SWEEP) == {}
    (tmp_path / SWEEP / "_compact" / "cams.json").write_bytes(b"")  # index lost: all CAMs read
    assert store.damaged_trial_files(SWEEP) == {"t2": str(tmp_path / SWEEP / "cams" / "t2.npz")}


def test_a_cut_short_snapshot_is_removed_and_the_trial_files_read(store: ResultStore,
                                                                  tmp_path: Path,
                                                                  caplog) -> None:
    store.compact(SWEEP)
    snapshot = tmp_path / SWEEP / "_compact" / "runs.parquet"
    _cut(snapshot, "half")
    _cut(tmp_path / SWEEP / "runs" / "t3.parquet", "empty")
    caplog.set_level(logging.WARNING, logger="raybench")
    assert store.damaged_trial_files(SWEEP) == {"t3": str(tmp_path / SWEEP / "runs" / "t3.parquet")}
    assert not snapshot.exists()
    assert f"the load snapshot {snapshot} is damaged" in caplog.text
    store.delete_trial_results(SWEEP, "t3")  # as check_sweep does, then the rerun
    assert store.compact(SWEEP)["runs"] == 3 and snapshot.stat().st_size > 0  # written again


def test_check_sweep_removes_only_the_damaged_trials_files(store: ResultStore, tmp_path: Path,
                                                           caplog) -> None:
    from raybench.config import load_spec
    from raybench.tune.damage import check_sweep

    sweep = tmp_path / SWEEP
    _cut(sweep / "predictions" / "t1.parquet", "half")
    caplog.set_level(logging.WARNING, logger="raybench")
    check_sweep(load_spec(None, [f"name={SWEEP}"]), store)
    assert f"{sweep / 'predictions' / 't1.parquet'} is damaged" in caplog.text
    for table in ("runs", "metrics", "epochs", "predictions"):
        assert sorted(p.stem for p in (sweep / table).glob("*.parquet")) == ["t0", "t2", "t3"]
    assert sorted(p.stem for p in (sweep / "cams").glob("*.npz")) == ["t0", "t2", "t3"]
    assert sorted(store.read_table(SWEEP, "runs")["trial_id"]) == ["t0", "t2", "t3"]
    assert store.damaged_trial_files(SWEEP) == {}
