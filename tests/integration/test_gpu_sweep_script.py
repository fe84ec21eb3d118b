"""``benchmarks/gpu_sweep.sh --dry-run``: the GPU study script, tiny, on the CPU with two
logical GPUs and a recorded probe: both runs complete and the summary reports them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_gpu_sweep_dry_run(tmp_path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_SWEEP_WORK": str(tmp_path / "work"),
           "OUT": str(tmp_path / "out")}
    env.pop("RAYBENCH_INJECT_OOM", None)
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_sweep.sh"), "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=560, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = (tmp_path / "out" / "gpu_sweep_summary.txt").read_text().splitlines()
    heads = [line for line in summary if line.startswith(("packed:", "single:"))]
    assert [h.split(":")[0] for h in heads] == ["packed", "single"]
    for head in heads:
        assert "exit 0" in head and "trials 2/2 completed" in head
        assert "mean GPU util n/a" in head and "20-epoch paper study extrapolated" in head
    assert any(line.startswith("packed / one-per-GPU aggregate images/s: ") for line in summary)
    runs = tmp_path / "work" / "runs"
    packed = pd.read_parquet(runs / "gpu-packed" / "runs")
    single = pd.read_parquet(runs / "gpu-single" / "runs")
    # (9 GiB x 1.25 + 0.5 GiB) / 80 GiB = 0.147 -> 0.25; the other run: a whole GPU each
    assert packed["gpu_share"].tolist() == [0.25, 0.25]
    assert single["gpu_share"].tolist() == [1.0, 1.0]
    assert sorted(packed["model"]) == ["cnnx", "squeezenet"]
