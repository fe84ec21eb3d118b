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


SIZES = {"train": 3000, "val": 500, "test": 1000}


@pytest.mark.parametrize("sets, hours", [
    # DenseNet-201 at 224 px, 20 epochs: 3.1 training images/s on 2 cores (DESIGN.md 7),
    # evaluation 3x that: 20 x (3000 / 3.1 + 500 / 9.3) + 1000 / 9.3 + 10 s.
    (["model.name=densenet201", "train.epochs=20"],
     (20 * (3000 / 3.1 + 500 / 9.3) + 1000 / 9.3 + 10) / 3600),
    # CNN-X at 64 px, 3 epochs: (224 / 64)^2 x 33.7 images/s; seconds, no line.
    (["model.name=cnnx", "model.image_size=64", "train.epochs=3"], None)])
def test_a_cpu_run_over_an_hour_logs_its_estimate_before_it_starts(
        sets, hours, tmp_path, run_cli, monkeypatch, caplog) -> None:
    import logging

    from raybench.data import dataset
    from raybench.engine import run

    monkeypatch.setattr(dataset, "split_sizes", lambda cfg: SIZES)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    started = []
    monkeypatch.setattr(run, "run_training", lambda spec: started.append(spec) or 1 / 0)
    with caplog.at_level(logging.INFO, logger="raybench"):
        with pytest.raises(ZeroDivisionError):  # stops where training would start
            run_cli("train", "--results", str(tmp_path), *[a for s in sets for a in ("--set", s)])
    lines = [r.getMessage() for r in caplog.records if "estimated" in r.getMessage()]
    assert len(started) == 1
    if hours is None:
        assert lines == []
        return
    assert lines == [f"train train: estimated {hours:.1f} h on 2 CPU core(s) (densenet201 at "
                     "224 px: ~3.1 training images/s); fewer epochs (train.epochs) or a smaller "
                     "model.image_size shorten it"]
    assert caplog.records[-1].getMessage() == lines[0]  # the last line before training


def test_a_sweeps_estimate_counts_every_trial_and_scales_with_cores(monkeypatch) -> None:
    from raybench.config import load_spec
    from raybench.data import dataset
    from raybench.predict import cpu_seconds

    monkeypatch.setattr(dataset, "split_sizes", lambda cfg: SIZES)
    spec = load_spec("jobs/smoke.yaml", ["sweep.models=[resnet18, vgg16]", "model.image_size=112",
                                         "train.epochs=2", "sweep.num_samples=3"])

    def trial(rate: float) -> float:  # measured at 224 px: 4x as fast at 112 px
        return 2 * (3000 / (4 * rate) + 500 / (12 * rate)) + 1000 / (12 * rate) + 10

    seconds, slowest = cpu_seconds(spec, 2, sweep=True)
    assert seconds == pytest.approx(3 * (trial(14.1) + trial(0.9)))
    assert slowest == "vgg16 at 112 px: ~3.6 training images/s"
    four = cpu_seconds(spec, 4, sweep=True)[0]
    assert four == pytest.approx(3 * (trial(2 * 14.1) + trial(2 * 0.9)))
    assert cpu_seconds(load_spec("jobs/smoke.yaml", ["sweep.models=[timm.convnext_tiny]"]), 2,
                       sweep=True) is None  # no measured rate: no estimate
