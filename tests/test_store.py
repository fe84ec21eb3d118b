"""``ResultStore.compact`` streams each table: the snapshot is written in row groups of
``COMPACT_BATCH`` trial files and holds exactly what reading every trial file gives."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from raybench import store as store_module
from raybench.store import ResultStore
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
