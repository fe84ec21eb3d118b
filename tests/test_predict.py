"""``raybench plan`` from a recorded probe file: per-cell rates, peaks and shares, and the
sweep's predicted time on N GPUs (raybench.predict). No CUDA, no Ray."""
from __future__ import annotations

import pytest

from tests.helpers.gpuprobes import record, write


def _args(tmp_path, *more: str) -> list[str]:
    return ["plan", "--config", "jobs/smoke.yaml", "--results", str(tmp_path / "runs"),
            "--set", f"data.cache_dir={tmp_path / 'c'}", "--set", "sweep.models=[cnnx, resnet18]",
            "--set", "model.image_size=64", "--set", "data.synthetic.per_class=10",
            "--set", "train.epochs=2", "--set", "train.data_on_device=false",
            "--set", "sweep.mode=paper", *more]


def test_plan_prints_each_cell_and_the_predicted_sweep_time(tmp_path, run_cli) -> None:
    from raybench.data.dataset import split_sizes
    from raybench.config import load_spec

    probe = write(tmp_path / "probe.json", record("cnnx", 64, 15, 1.5, 2000.0),
                  record("resnet18", 64, 15, 20.0, 500.0))
    code, out, err = run_cli(*_args(tmp_path, "--probe", str(probe), "--num-gpus", "2"))
    assert code == 0, err
    spec = load_spec("jobs/smoke.yaml", [f"data.cache_dir={tmp_path / 'c'}",
                                         "data.synthetic.per_class=10"])
    sizes = split_sizes(spec.data)
    # One trial: 2 epochs x (train / rate + val / (3 x rate)) + test / (3 x rate) + 10 s.
    def trial_s(rate: float) -> float:
        return 2 * (sizes["train"] / rate + sizes["val"] / (3 * rate)) + sizes["test"] / (
            3 * rate) + 10.0

    seeds = len(spec.sweep.seeds)
    lines = out.splitlines()
    cnnx = [line for line in lines if line.startswith("cnnx-")]
    assert len(cnnx) == seeds and cnnx[0].split()[1:6] == ["64", "15", "2000.0", "1.50", "0.125"]
    resnet = [line for line in lines if line.startswith("resnet18-")][0].split()
    assert resnet[5] == "0.375" and float(resnet[6]) == pytest.approx(trial_s(500.0) / 60, abs=0.05)
    share_s = seeds * (0.125 * trial_s(2000.0) + 0.375 * trial_s(500.0))
    packed = max(trial_s(500.0), share_s / 2)
    one_per_gpu = max(trial_s(500.0), seeds * (trial_s(2000.0) + trial_s(500.0)) / 2)
    total = lines[-1]
    assert total.startswith(f"predicted on 2 x Test GPU 80GB (bf16), {2 * seeds} trial(s): ")
    assert f"{packed / 60:.1f} min packed ({2 * packed / 3600:.2f} GPU-hours)" in total
    assert f"{one_per_gpu / 60:.1f} min one trial per GPU" in total


@pytest.mark.ray
def test_plan_without_a_gpu_or_a_probe_file_says_a_probe_needs_a_gpu(tmp_path, run_cli) -> None:
    code, out, err = run_cli(*_args(tmp_path, "--num-gpus", "1"))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "raybench: error: a GPU probe needs a GPU and this Ray has none; give a recorded probe file "
        "(--probe FILE) or an explicit scaling.gpus_per_worker"]
