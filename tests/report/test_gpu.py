"""report/gpu.py: the GPU cost section of a sweep that saved no prediction (fixed GPU shares)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raybench import predict
from raybench.report.blocks import Table
from raybench.report.gpu import GIB, gpu_blocks
from raybench.results import load
from raybench.store import ResultStore
from tests.helpers.comparedata import probs_for, write_preds_trial


def test_without_a_saved_prediction_only_the_actual_cost_is_shown(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    y = np.tile(np.arange(3), 4)
    start = pd.Timestamp("2026-01-01 10:00", tz="UTC")
    for seed in (0, 1):  # 60 min each, the second starting 30 min after the first
        begin = start + pd.Timedelta(minutes=30 * seed)
        write_preds_trial(store, "s", f"cnnx-{seed}", model="cnnx", seed=seed, y=y,
                          probs={"test": probs_for(y, 1.0, np.random.default_rng(seed))},
                          run_fields={"gpu_share": 0.5, "num_workers": 2, "wall_s": 3600.0,
                                      "started_at": begin,
                                      "finished_at": begin + pd.Timedelta(minutes=60),
                                      "peak_memory_bytes": (1 + seed) * GIB})
    res = load(str(tmp_path), "s")
    assert predict.load(store, "s") is None
    heading, line, table = gpu_blocks(res, "s")
    assert heading == "## GPU cost"
    assert line == ("Actual sweep time 90.0 min (first start to last finish). GPU-hours per "
                    "model: wall time x GPU share x workers.")
    assert isinstance(table, Table)
    assert list(table.frame.columns) == ["trials", "gpu_share", "gpu_hours", "peak_gib"]
    assert table.frame.loc["cnnx"].tolist() == [2, 0.5, 2.0, 2.0]  # 2 x 1 h x 0.5 x 2 workers
