"""``ResultStore.compact`` streams each table: the snapshot is written in row groups of
``COMPACT_BATCH`` trial files and holds exactly what reading every trial file gives. Names,
roots, foreign and damaged files get one-line errors (or are skipped when asked)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raybench import store as store_module
from raybench.camset import CamSet
from raybench.errors import RaybenchError
from raybench.store import CorruptResultError, ResultStore, check_name
from tests.helpers.resultdata import FOUR, write_trial

TABLES = ("runs", "metrics", "epochs", "predictions")


def _trials(store: ResultStore, ids: range, epochs: int = 2) -> None:
    for i in ids:
        write_trial(store, "s", f"cnnx-seed{i}", model="cnnx", seed=i, scenario="sc", labels=FOUR,
                    n=3, correct=dict.fromkeys(FOUR, 2), epochs=epochs)


def _frame(table) -> pd.DataFrame:
    frame = table.to_pandas()
    return frame[sorted(frame.columns)].sort_values(list(sorted(frame.columns))).reset_index(
        drop=True)


def _check_snapshots(root: Path) -> None:
    """Each snapshot equals every trial file read and concatenated (no snapshot involved)."""
    reference = ResultStore(str(root))
    for table in TABLES:
        path = root / "s" / "_compact" / f"{table}.parquet"
        snap = pq.read_table(path)
        files = [pq.read_table(f) for f in sorted((root / "s" / table).glob("*.parquet"))]
        whole = store_module._concat(files)
        pd.testing.assert_frame_equal(_frame(snap), _frame(whole), check_dtype=False)
        assert reference.read_table("s", table).shape[0] == whole.num_rows


def test_compact_streams_row_groups_and_matches_the_trial_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "COMPACT_BATCH", 2)
    store = ResultStore(str(tmp_path))
    _trials(store, range(7))
    # A run row with other columns (a failed trial: an error, no timing): promoted, null-filled.
    store.write_table("s", "runs", "cnnx-seed9", [{
        "model": "cnnx", "scenario": "sc", "seed": 9, "epochs": 2, "epochs_run": 0,
        "status": "error", "error": "ValueError: bad"}])
    assert store.compact("s") == {"runs": 8, "metrics": 7, "epochs": 7, "predictions": 7}
    assert pq.ParquetFile(tmp_path / "s" / "_compact" / "runs.parquet").num_row_groups == 4
    _check_snapshots(tmp_path)
    # Rerun one trial, add one, remove one: the old snapshot's kept rows stream into the new.
    _trials(store, range(3, 4), epochs=3)
    _trials(store, range(20, 21))
    store.delete_trial_results("s", "cnnx-seed1")
    store.compact("s")
    _check_snapshots(tmp_path)
    epochs = ResultStore(str(tmp_path)).read_table("s", "epochs")
    assert sorted(epochs.loc[epochs["trial_id"] == "cnnx-seed3", "epoch"]) == [1, 2, 3]
    assert "cnnx-seed1" not in set(epochs["trial_id"])


@pytest.mark.parametrize("name", ["../up", "", "-dash", "a/b", "a b"])
def test_names_that_are_not_plain_file_names_are_refused(tmp_path: Path, name: str) -> None:
    message = (f"sweep name {name!r} is not usable as a file name; use letters, digits, '.', "
               "'_', '=' and '-'")
    with pytest.raises(RaybenchError) as err:
        check_name("sweep", name)
    assert str(err.value) == message
    with pytest.raises(RaybenchError, match="not usable as a file name"):
        ResultStore(str(tmp_path)).read_spec(name)
    assert check_name("trial", "cnnx-seed0_lr=3e-4.1") == "cnnx-seed0_lr=3e-4.1"


def test_a_missing_root_passes_check_root_and_deleting_a_missing_sweep_is_fine(
        tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path / "new"))
    store.check_root()  # the first sweep creates it
    store.delete_sweep("s")
    assert not (tmp_path / "new").exists()
    _trials(store, range(1))
    store.delete_sweep("s")
    assert not (tmp_path / "new" / "s").exists() and store.sweeps() == []


def test_damaged_trial_files_name_empty_and_cut_cam_files(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    cams = CamSet(image_ids=["i0"], labels=["normal"], predicted=["normal"],
                  cams=np.ones((1, 2, 2)), method="cam", target_layer="layer4", input_size=8)
    for trial in ("good", "empty", "cut"):
        store.write_cams("s", trial, cams)
    folder = tmp_path / "s" / "cams"
    (folder / "empty.npz").write_bytes(b"")
    (folder / "cut.npz").write_bytes((folder / "good.npz").read_bytes()[:-10])
    assert store.damaged_trial_files("s") == {"empty": str(folder / "empty.npz"),
                                              "cut": str(folder / "cut.npz")}


def _foreign_runs_file(root: Path, trial: str) -> None:
    """A runs file whose ``seed`` is text: no type holds both it and the others' integers."""
    pq.write_table(pa.table({"sweep": ["s"], "trial_id": [trial], "seed": ["zero"]}),
                   root / "s" / "runs" / f"{trial}.parquet")


def test_trial_files_with_incompatible_columns_are_one_line_on_read_and_compact(
        tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    _trials(store, range(1))
    _foreign_runs_file(tmp_path, "foreign")
    expected = f"^{tmp_path / 's' / 'runs'}: trial files with incompatible columns \\("
    with pytest.raises(RaybenchError, match=expected) as err:
        store.read_table("s", "runs")
    assert str(err.value).endswith("a foreign file may be among them: remove it and resume "
                                   "the sweep")
    with pytest.raises(RaybenchError, match=expected):
        store.compact("s", ["runs"])
    assert not (tmp_path / "s" / "_compact" / "runs.parquet").exists()


def test_an_unreadable_snapshot_is_ignored_and_written_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ResultStore(str(tmp_path))
    _trials(store, range(3))
    snapshot = tmp_path / "s" / "_compact" / "runs.parquet"
    snapshot.parent.mkdir()
    snapshot.write_bytes(b"PAR1 cut short")
    with caplog.at_level(logging.WARNING, logger="raybench.store"):
        assert store.compact("s", ["runs"]) == {"runs": 3}
    assert any(m.startswith(f"ignoring the load snapshot {snapshot} (") for m in caplog.messages)
    assert sorted(pq.read_table(snapshot)["trial_id"].to_pylist()) == [
        "cnnx-seed0", "cnnx-seed1", "cnnx-seed2"]


def test_compacting_past_a_corrupt_trial_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without skip_corrupt compact names the file; with it, no snapshot of that table is
    written, so the file is not taken as read: later loads and resumes still see it."""
    monkeypatch.setattr(store_module, "COMPACT_BATCH", 1)  # the bad file is a batch of its own
    _trials(ResultStore(str(tmp_path)), range(2))
    bad = tmp_path / "s" / "runs" / "cnnx-seed1.parquet"
    bad.write_bytes(b"cut")
    with pytest.raises(CorruptResultError, match=f"^corrupt result file {bad}: not a readable"):
        ResultStore(str(tmp_path)).compact("s")
    assert list((tmp_path / "s" / "_compact").iterdir()) == []  # no snapshot, no temp file
    skipping = ResultStore(str(tmp_path), skip_corrupt=True)
    assert skipping.compact("s") == dict.fromkeys(TABLES, 2)
    assert skipping.skipped == [str(bad)]
    names = sorted(p.name for p in (tmp_path / "s" / "_compact").iterdir())
    assert names == ["epochs.parquet", "metrics.parquet", "predictions.parquet"]
    with pytest.raises(CorruptResultError):
        ResultStore(str(tmp_path)).read_table("s", "runs")
    assert ResultStore(str(tmp_path)).damaged_trial_files("s") == {"cnnx-seed1": str(bad)}
