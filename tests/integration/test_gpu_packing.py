"""GPU packing end to end on an embedded Ray with logical GPUs (no CUDA): ``--num-gpus``,
shares from a recorded probe file, packed trials running at once, the OOM retry alone on a GPU
with the probe cache corrected, the does-not-fit and DDP errors before any trial."""
from __future__ import annotations

import json
import logging
import socket

import pandas as pd
import pytest

from tests.helpers.gpuprobes import record, write

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = """name: pack
model: {image_size: 32}
data:
  synthetic: {per_class: 8, size: 32, seed: 0}
  test_fraction: 0.25
train: {epochs: 1, batch_size: 8, num_threads: 1}
scaling: {use_gpu: true, cpus_per_worker: 1}
sweep: {mode: paper, models: [cnnx], seeds: [0, 1, 2]}
cam: {enabled: false}
"""


def _files(tmp_path, peak_gib: float):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    # (peak x 1.25 + 0.5 GiB context) / 80 GiB: 30 GiB -> 38 GiB -> share 0.5
    # bf16: the recorded GPU supports it, so auto resolves to bf16 for the probe's key (the
    # trials themselves, on this CPU, train in fp32)
    probe = write(tmp_path / "probe.json", record("cnnx", 32, 8, peak_gib, 900.0))
    return spec, probe


def _args(tmp_path, spec, probe, *more: str) -> list[str]:
    return ["sweep", "--config", str(spec), "--results", str(tmp_path / "runs"), "--set",
            f"data.cache_dir={tmp_path / 'c'}", "--num-cpus", "4", "--num-gpus", "1",
            "--probe", str(probe), *more]


def test_packed_trials_share_a_gpu_and_an_oom_trial_is_retried_alone(
        tmp_path, run_cli, monkeypatch, caplog) -> None:
    spec, probe = _files(tmp_path, 30.0)
    marker = tmp_path / "oom-marker"
    monkeypatch.setenv("RAYBENCH_INJECT_OOM", json.dumps({"trial": "cnnx-synthetic-s2",
                                                          "marker": str(marker)}))
    with caplog.at_level(logging.INFO):
        code, out, err = run_cli(*_args(tmp_path, spec, probe))
    assert code == 0, err
    runs = pd.read_parquet(tmp_path / "runs" / "pack" / "runs").set_index("trial_id")
    assert sorted(runs.index) == ["cnnx-synthetic-s0", "cnnx-synthetic-s1", "cnnx-synthetic-s2"]
    assert (runs["status"] == "completed").all()
    assert runs["precision"].tolist() == ["fp32"] * 3  # auto on a CPU
    assert not runs["channels_last"].any() and not runs["data_on_device"].any()
    shares = runs["gpu_share"].to_dict()
    assert shares == {"cnnx-synthetic-s0": 0.5, "cnnx-synthetic-s1": 0.5, "cnnx-synthetic-s2": 1.0}
    # Two trials of share 0.5 ran at once on the one logical GPU...
    a, b = runs.loc["cnnx-synthetic-s0"], runs.loc["cnnx-synthetic-s1"]
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]
    # ...and the trial that ran out of memory ran again alone, once both had finished.
    assert marker.read_text() == "out of memory at share 0.5"
    assert runs.loc["cnnx-synthetic-s2", "started_at"] >= max(a["finished_at"], b["finished_at"])
    logs = caplog.text + err
    assert ("trial cnnx-synthetic-s2 ran out of GPU memory at share 0.5; retrying it alone on "
            "a GPU (share 1.0)") in logs
    cache = json.loads((tmp_path / "runs" / "_probes" / "probes.json").read_text())["records"]
    assert [(r["key"]["model"], r["min_share"]) for r in cache] == [("cnnx", 0.625)]
    saved = json.loads((tmp_path / "runs" / "pack" / "gpu_plan.json").read_text())
    assert saved["gpus"] == 1 and saved["cells"][0]["share"] == 0.5
    _check_report_section(tmp_path, runs, saved)


def _check_report_section(tmp_path, runs: pd.DataFrame, saved: dict) -> None:
    from raybench.report.gpu import gpu_blocks
    from raybench.results import load

    blocks = gpu_blocks(load(str(tmp_path / "runs"), "pack"), "pack")
    assert blocks[0] == "## GPU cost"
    assert f"predicted {saved['packed_s'] / 60:.1f} min packed on 1 x Test GPU 80GB" in blocks[1]
    table = blocks[2].frame.loc["cnnx"]
    expected = (runs["wall_s"] * runs["gpu_share"]).sum() / 3600
    assert table["trials"] == 3 and table["gpu_share"] == 1.0
    assert table["gpu_hours"] == pytest.approx(expected, abs=1e-3)
    assert table["probe_peak_gib"] == pytest.approx(30.0, abs=1e-3)


def test_a_model_that_does_not_fit_stops_the_sweep_before_any_trial(tmp_path, run_cli) -> None:
    spec, probe = _files(tmp_path, 70.0)
    code, out, err = run_cli(*_args(tmp_path, spec, probe))
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("raybench: error: cnnx does not fit one GPU: measured peak 70.0 GiB")
    assert "> 80.0 GiB of Test GPU 80GB" in line
    assert not (tmp_path / "runs" / "pack" / "runs").exists()


def test_a_missing_record_without_a_gpu_is_one_line(tmp_path, run_cli) -> None:
    spec, probe = _files(tmp_path, 30.0)
    code, out, err = run_cli(*_args(tmp_path, spec, probe, "--set", "train.batch_size=4"))
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "raybench: error: a GPU probe needs a CUDA device, and node "
        f"{socket.gethostname()} has none visible; give a recorded probe (--probe FILE) or an "
        "explicit scaling.gpus_per_worker")


def test_ddp_with_a_fractional_gpu_is_refused_before_ray(tmp_path, run_cli) -> None:
    spec, probe = _files(tmp_path, 30.0)
    code, out, err = run_cli(*_args(tmp_path, spec, probe, "--set", "scaling.num_workers=2",
                                    "--set", "scaling.gpus_per_worker=0.5"))
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "raybench: error: scaling.gpus_per_worker=0.5 with scaling.num_workers=2: DDP ranks "
        "could land on one GPU (NCCL: Duplicate GPU detected); use gpus_per_worker: auto or a "
        "whole number, or num_workers: 1")
    assert not (tmp_path / "runs" / "pack" / "runs").exists()
