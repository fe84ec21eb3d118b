"""The data-preparation benchmark alternates serial and parallel passes (ABBA), each from a
warm page cache, and reports the ratio of the median totals (a quick run on a few films)."""
from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from raybench.bench import data as bench_data

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_prep_alternates_abba_and_reports_median_ratio(tmp_path: Path) -> None:
    root = bench_data.generate_films(tmp_path / "films", 12, procs=1)
    out = bench_data.bench_prep(root, 12, rounds=1)
    assert out["order"] == ["serial", "parallel", "parallel", "serial"]
    assert len(out["serial_total_s"]) == 2 and len(out["parallel_total_s"]) == 2
    assert out["serial"]["images"] == out["parallel"]["images"] == 12
    for kind in ("serial", "parallel"):
        assert out[kind]["total_s"] in out[f"{kind}_total_s"]
        assert out[kind]["entry_mib"] == pytest.approx(12 * 224 * 224 / 2**20, rel=0.05)
    ratio = out["prep_parallel_speedup"]
    assert ratio == pytest.approx(out["serial"]["total_s"] / out["parallel"]["total_s"])
    # with two passes a side, the "median" pass is the faster one: the lower median
    assert out["serial"]["total_s"] == min(out["serial_total_s"])
    assert statistics.median_low(out["parallel_total_s"]) == out["parallel"]["total_s"]
