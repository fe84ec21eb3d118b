"""Benchmarks and the GPU code paths, on the CPU: structure and sane values, never speed."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raybench.config import TrainConfig, load_spec
from raybench.data.dataset import SplitData
from raybench.data.transforms import random_affine, to_model_input
from raybench.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.image_size=32", "data.synthetic.per_class=12", "data.synthetic.size=32",
        "train.num_threads=1", "train.epochs=2", "train.batch_size=8"]


def test_gpu_path_options_are_validated() -> None:
    spec = load_spec(None, ["train.data_on_device=true", "train.channels_last=true",
                            "train.compile=true", "train.compile_mode=max-autotune",
                            "train.augment=true"])
    assert (spec.train.data_on_device, spec.train.channels_last, spec.train.compile,
            spec.train.compile_mode, spec.train.augment) == (True, True, True, "max-autotune", True)
    with pytest.raises(ConfigError, match="train.compile_mode='fast'; allowed: default"):
        load_spec(None, ["train.compile_mode=fast"])
    with pytest.raises(ConfigError, match="train.channels_last must be bool"):
        load_spec(None, ["train.channels_last=yes please"])


def test_channels_last_input_has_the_same_values() -> None:
    batch = torch.randint(0, 256, (2, 16, 16), dtype=torch.uint8)
    plain = to_model_input(batch, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
    nhwc = to_model_input(batch, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7),
                          memory_format=torch.channels_last)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    torch.testing.assert_close(plain, nhwc)
    assert torch.allclose(plain[:, 0] * 0.5 + 0.1, batch.float() / 255, atol=1e-6)


def test_random_affine_shifts_each_image_and_keeps_shape() -> None:
    torch.manual_seed(0)
    x = torch.zeros(4, 3, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0  # a bright square in the middle
    out = random_affine(x, max_shift=0.2, max_scale=0.1)
    assert out.shape == x.shape
    centres = [(img[0] > 0.5).nonzero().float().mean(0) for img in out]
    assert len({tuple(c.round().tolist()) for c in centres}) > 1  # images moved differently
    bound = 0.2 * 32 / 0.9 + 1  # max_shift of the side, divided by the smallest zoom
    assert all((c - 15.5).abs().max() <= bound for c in centres)
    assert torch.equal(random_affine(x, 0.0, 0.0), x)


@pytest.mark.parametrize("options", [
    {"data_on_device": True, "channels_last": True, "augment": True},
    {"precision": "bf16", "channels_last": True},
])
def test_fit_with_gpu_path_options_on_cpu(synth_manifest: Path, tmp_path: Path,
                                          options: dict) -> None:
    from raybench.engine.run import run_training

    sets = [f"data.manifest={synth_manifest}", f"data.cache_dir={tmp_path / 'c'}",
            f"results={tmp_path / 'r'}", "model.image_size=32", "train.epochs=2",
            "train.batch_size=16", "train.num_threads=1", "train.device=cpu"]
    sets += [f"train.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()]
    outcome = run_training(load_spec(None, sets))
    assert len(outcome.result.history) == 2
    assert outcome.result.train_images == 2 * len(outcome.data.train)
    assert 0.0 <= outcome.result.test.metrics.accuracy <= 1.0
    assert outcome.data.train.images.device.type == "cpu"  # the caller's data is untouched


def test_place_data_and_optimize_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from raybench.engine.loop import optimize_model, place_data

    split = SplitData(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64),
                      ["a", "b", "c"])
    assert place_data(split, torch.device("cpu"), True) is split  # already there
    assert place_data(split, torch.device("meta"), False) is split
    moved = place_data(split, torch.device("meta"), True)
    assert moved.images.device.type == "meta" and moved.images.dtype == torch.uint8
    assert moved.image_ids == split.image_ids
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    optimize_model(model, TrainConfig(channels_last=True))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append(kw) or
                        setattr(self, "_compiled_call_impl", object()))
    cfg = TrainConfig(compile=True, compile_mode="reduce-overhead")
    optimize_model(optimize_model(model, cfg), cfg)
    assert calls == [{"mode": "reduce-overhead"}]  # compiled once, state_dict keys unchanged
    assert list(model.state_dict()) == ["0.weight", "0.bias"]


def test_fractional_gpu_trials_share_one_gpu() -> None:
    from raybench.cluster import max_concurrent

    spec = load_spec(None, ["scaling.use_gpu=true", "scaling.gpus_per_worker=0.25"])
    assert max_concurrent(spec, {"CPU": 16, "GPU": 1}) == 4
    assert max_concurrent(spec, {"CPU": 2, "GPU": 1}) == 2  # CPUs bound it first
    whole = load_spec(None, ["scaling.use_gpu=true"])
    assert max_concurrent(whole, {"CPU": 16, "GPU": 1}) == 1


def test_prepared_data_is_reused_across_trials_of_one_process(synth_manifest: Path,
                                                              tmp_path: Path) -> None:
    from raybench.engine.worker import prepared_data

    cfg = load_spec(None, [f"data.manifest={synth_manifest}",
                           f"data.cache_dir={tmp_path}"]).data
    first = prepared_data(cfg, 32)
    assert prepared_data(cfg, 32) is first
    assert prepared_data(cfg, 48) is not first and prepared_data(cfg, 48).train.images.shape[-1] == 48


def test_plain_epoch_and_paired_epochs_report_sane_numbers() -> None:
    from raybench.bench import BenchOptions, paired_epochs

    out = paired_epochs("cnnx", BenchOptions(image_size=32, batch_size=4, steps=2, warmup=1,
                                           repeats=2), torch.device("cpu"))
    assert out["raybench_images_per_s"] > 0 and out["plain_images_per_s"] > 0
    assert 0.1 < out["ratio"] < 10 and len(out["raybench_s"]) == len(out["plain_s"]) == 2


def test_study_extrapolation() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from gpu_bench import study_minutes
    finally:
        sys.path.pop(0)
    # One model at 100 images/s, one scenario of 1,000 images: 20 epochs of 10 s + 0.5 s val.
    assert study_minutes({"m": 100.0}, {"s": 1000}) == pytest.approx((20 * 10.5 + 2.0) / 60)


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run([str(REPO / "benchmarks" / "gpu.sh"), "--dry-run", "--models", "cnnx",
                           "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["device"] == "cpu"
    assert report["compare"]["cnnx"]["raybench_images_per_s"] > 0
    assert set(report["study_images_per_s"]) == {
        "alexnet", "vgg16", "vgg19", "resnet18", "resnet50", "resnet101", "googlenet",
        "inception_v3", "squeezenet", "inception_resnet_v2", "xception", "densenet201", "cnnx"}
    assert report["study_minutes_upper_bound"] > report["study_minutes_paper_sizes"] > 0
    assert report["settings"]["data_on_device"] and report["settings"]["channels_last"]
    assert "full study" in proc.stdout


def test_gpu_script_refuses_without_gpu_or_dry_run() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_bench.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_bench_cli_quick_json(run_cli) -> None:
    code, out, err = run_cli("bench", "--json", "--quick")
    report = json.loads(out)
    assert code == (1 if any(t["met"] is False for t in report["targets"].values()) else 0), err
    for key in ("machine", "train_ratio", "cache_speedup", "trial_overhead_s",
                "cache_peak_memory_ratio", "results_load_s", "cam", "targets"):
        assert key in report, key
    assert report["machine"]["cores"] >= 1 and len(report["machine"]["loadavg"]) == 3
    assert set(report["train"]["models"]) == {"cnnx", "resnet18"}
    assert 0.1 < report["train_ratio"] < 10
    # Measured on images it generates: no ../shared/data needed (issue 16).
    assert report["cache"]["data"] == "300 generated 224 px PNGs"
    assert report["cache"]["images"] == 300
    assert report["cache_speedup"] > 1 and 0 < report["cache_peak_memory_ratio"] < 5
    assert report["trials"]["completed"] == report["trials"]["trials"] == 3
    assert 0 < report["trial_overhead_s"] < 120
    assert report["results"]["rows"]["runs"] == 200 and report["results_load_s"] > 0
    assert set(report["cam_images_per_s"]) == {"cnnx", "resnet18"}
    assert all(rate > 0 for rate in report["cam_images_per_s"].values())
    assert set(report["targets"]) == {"train_ratio", "cache_speedup", "trial_overhead_s",
                                      "cache_peak_memory_ratio"}
    assert all(t["met"] in (True, False) for t in report["targets"].values())


def test_bench_cli_rejects_unknown_part(run_cli) -> None:
    code, _, err = run_cli("bench", "--only", "train,warp")
    assert code == 2 and "unknown bench section(s) warp" in err


@pytest.mark.slow
def test_bench_quick_runs_from_a_clone_without_shared_data(tmp_path: Path) -> None:
    # A copy of the package in a folder with no ../shared next to it, as on a fresh clone.
    import shutil

    clone = tmp_path / "clone"
    shutil.copytree(REPO / "raybench", clone / "raybench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert not (clone.parent / "shared").exists() and not (clone / "shared").exists()
    env = {**os.environ, "PYTHONPATH": str(clone)}
    proc = subprocess.run([sys.executable, "-m", "raybench.cli", "bench", "--quick", "--json",
                           "--only", "cache"], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=300)
    report = json.loads(proc.stdout)
    missed = [k for k, t in report["targets"].items() if t["met"] is False]  # exit 1 if any
    assert proc.returncode == (1 if missed else 0), proc.stderr[-2000:]
    cache = report["cache"]
    assert cache["data"] == "300 generated 224 px PNGs" and cache["images"] == 300
    assert cache["cache_speedup"] > 1 and cache["entry_bytes"] >= 300 * 64 * 64


def test_bench_images_from_a_manifest_or_a_folder(synth_manifest: Path, tmp_path: Path) -> None:
    from raybench.bench import bench_images

    df, files, origin = bench_images(str(synth_manifest.parent), tmp_path, 0)
    assert origin == str(synth_manifest) and len(df) == len(files) == 160
    assert all(f.is_file() for f in files)
    df2, files2, origin2 = bench_images(str(synth_manifest.parent / "images"), tmp_path, 0)
    assert origin2 == str(synth_manifest.parent / "images") and len(files2) == 160
    assert sorted(files2) == sorted(files) and df2["image_id"].is_unique


@pytest.mark.parametrize("bad, message", [
    ("missing-dir", "bench --data {}: no such file or folder"),
    ("notes.txt", "bench --data {}: expected a manifest (.parquet) or a folder of images"),
    ("empty", "bench --data {}: no .png/.jpg/.jpeg images found"),
])
def test_bench_data_errors_are_one_line(tmp_path: Path, run_cli, bad: str, message: str) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    path = str(tmp_path / bad)
    code, out, err = run_cli("bench", "--quick", "--only", "cache", "--data", path)
    assert code == 2 and out == ""
    assert err == f"raybench: error: {message.format(path)}\n"


def test_runner_checks_default_targets_and_prints_only_sections_that_ran() -> None:
    from raybench.bench import EXTRA_SECTIONS, SECTIONS, check_targets, format_report

    assert SECTIONS == ("train", "cache", "trials", "cam", "results")
    assert EXTRA_SECTIONS == ("sweep", "data", "analysis")
    report = {"machine": {"cpu": "x", "cores": 2, "gpu": None, "loadavg": [1.0, 1, 1],
                          "loadavg_end": [2.0, 1, 1], "torch": "t", "ray": "r"},
              "results": {"results_load_s": 0.5, "trials": 10}, "results_load_s": 0.5,
              "train_ratio": 0.99}
    targets = check_targets(report)
    assert set(targets) == {"train_ratio", "cache_speedup", "cache_peak_memory_ratio",
                            "trial_overhead_s"}  # the sweep's only when it ran
    assert targets["train_ratio"]["met"] is True and targets["cache_speedup"]["met"] is None
    report["sweep"] = {}
    report["sweep_wall_ratio"] = 1.5
    assert check_targets(report)["sweep_wall_ratio"] == {"target": "<= 1.15", "value": 1.5,
                                                         "met": False}
    del report["sweep"]
    lines = format_report({**report, "targets": targets}).splitlines()
    assert lines[1] == "results_load_s                      0.5  (10 trials)"
    assert not any(line.startswith(("train ", "cache:", "trials:")) for line in lines)


def test_machine_needs_no_ray(monkeypatch) -> None:
    """The GPU bench's machine line works where Ray is not installed (the device image)."""
    import sys
    from importlib import metadata

    from raybench.bench.options import machine

    real = metadata.version

    def version(name: str) -> str:
        if name == "ray":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` would raise ImportError
    info = machine()
    assert info["ray"] is None
    assert info["cores"] == os.cpu_count()


def test_missed_targets_are_the_measured_misses() -> None:
    from raybench.bench import missed_targets

    report = {"targets": {"train_ratio": {"target": ">= 0.95", "value": 0.9, "met": False},
                          "cache_speedup": {"target": ">= 10", "value": None, "met": None},
                          "trial_overhead_s": {"target": "<= 1", "value": 0.5, "met": True}}}
    assert missed_targets(report) == ["train_ratio"]
    assert missed_targets({"targets": {}}) == []


@pytest.mark.parametrize("bound, code", [(0.0, 1), (1e9, 0)])
def test_bench_exits_1_when_a_target_is_missed(run_cli, monkeypatch: pytest.MonkeyPatch,
                                               bound: float, code: int) -> None:
    """The results section (no Ray, seconds) given a target it cannot meet, then one it meets."""
    from raybench.bench import results

    monkeypatch.setitem(results.SECTION.targets, "results_load_s", ("<=", bound))
    got, out, err = run_cli("bench", "--quick", "--only", "results")
    assert got == code, err
    verdict = "MISSED" if code else "ok"
    limit = re.escape(f"{bound:g}")
    assert re.search(rf"^results_load_s +[0-9.]+ +target <= {limit} +{verdict}$", out, re.M), out
    missed = "raybench: bench: 1 target(s) missed: results_load_s\n"
    assert (missed in err) == bool(code)
