"""GPU shares from measured memory (raybench.gpu.packing), the DDP rule, the probe records and
their cache (raybench.gpu.probe), and the driver's plan from a recorded probe file
(raybench.tune.packing). No CUDA needed."""
from __future__ import annotations

import json

import pytest

from raybench.config import load_spec
from raybench.errors import ConfigError
from raybench.gpu import packing
from raybench.gpu.probe import GpuInfo, ProbeCache, ProbeKey, lookup, read_probe_file
from tests.helpers.gpuprobes import GIB, GPU, record, write


@pytest.mark.parametrize("peak_gib,context_gib,data_gib,share", [
    (1.5, 0.5, 0.0, 0.125),    # (1.5 x 1.25 + 0.5) / 80 = 0.030 -> one step
    (20.0, 0.5, 0.0, 0.375),   # 25.5 / 80 = 0.319 -> three steps
    (20.0, 0.5, 4.5, 0.375),   # 30.0 / 80 = 0.375 exactly -> still three steps
    (20.0, 0.5, 4.6, 0.5),     # 30.1 / 80 = 0.376 -> four steps
    (63.5, 0.6, 0.0, 1.0),     # 79.975 / 80 -> the whole GPU
])
def test_share_is_the_measured_need_rounded_up_to_eighths(peak_gib, context_gib, data_gib,
                                                          share) -> None:
    need = packing.Need(int(peak_gib * GIB), int(context_gib * GIB), int(data_gib * GIB))
    assert need.total == int(peak_gib * GIB * 1.25) + int(context_gib * GIB) + int(data_gib * GIB)
    assert packing.share(need, 80 * GIB) == pytest.approx(share)
    packing.check_fits("m", need, "Test GPU", 80 * GIB)  # all of these fit


def test_a_share_floor_from_an_out_of_memory_trial_wins() -> None:
    need = packing.Need(int(1.5 * GIB), GIB // 2)
    assert packing.share(need, 80 * GIB, floor=0.25) == 0.25


def test_a_workload_that_does_not_fit_names_model_peak_and_gpu_memory() -> None:
    need = packing.Need(70 * GIB, GIB // 2)
    with pytest.raises(ConfigError) as err:
        packing.check_fits("densenet201", need, "Test GPU 80GB", 80 * GIB)
    text = str(err.value)
    assert "\n" not in text and "densenet201 does not fit one GPU" in text
    assert "measured peak 70.0 GiB" in text and "> 80.0 GiB of Test GPU 80GB" in text


@pytest.mark.parametrize("workers,share,auto,out", [
    (1, 0.25, False, 0.25), (1, None, True, None), (2, None, True, 1.0), (4, 2.0, False, 2.0),
    (2, 1.0, False, 1.0)])
def test_ddp_ranks_get_whole_gpus(workers, share, auto, out) -> None:
    assert packing.ddp_share(workers, share, auto) == out


def test_an_explicit_fraction_with_ddp_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"gpus_per_worker=0.5 with scaling.num_workers=2: "
                                          r"DDP ranks could land on one GPU"):
        packing.ddp_share(2, 0.5, False)


def test_the_cache_keys_records_by_workload_gpu_and_versions(tmp_path) -> None:
    cache = ProbeCache(str(tmp_path))
    assert cache.load() == []
    a = record("cnnx", 224, 15, 1.0, 2000.0)
    cache.add([a, record("resnet50", 224, 15, 6.0, 668.0)])
    assert (tmp_path / "_probes" / "probes.json").is_file()
    assert len(cache.load()) == 2
    corrected = record("cnnx", 224, 15, 1.0, 2000.0)
    corrected = type(a)(**{**corrected.__dict__, "min_share": 0.25})
    cache.add([corrected])  # replaces the same workload on the same GPU
    loaded = cache.load()
    assert len(loaded) == 2
    assert lookup(loaded, a.key, GPU).min_share == 0.25
    other = GpuInfo(GPU.name, GPU.memory_bytes, True, "9.9", GPU.raybench_version)
    assert lookup(loaded, a.key, other) is None  # another torch: measured again
    assert lookup(loaded, a.key, other, versions=False) is not None
    assert lookup(loaded, ProbeKey("cnnx", 224, 16, "bf16"), GPU) is None


def test_a_damaged_probe_file_is_one_line(tmp_path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(ConfigError, match=r"p.json is not a raybench probe file"):
        read_probe_file(str(bad))
    with pytest.raises(ConfigError, match=r"--probe .*nothere.json: no such file"):
        read_probe_file(str(tmp_path / "nothere.json"))


def _spec(tmp_path, *sets: str):
    return load_spec(None, [f"results={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'c'}",
                            "scaling.use_gpu=true", "sweep.models=[cnnx, resnet18]",
                            "model.image_size=64", "data.synthetic.per_class=10", *sets])


def test_auto_shares_come_from_a_recorded_probe_file(tmp_path) -> None:
    from raybench.tune import packing as tp

    spec = _spec(tmp_path, "train.data_on_device=false")
    probe = write(tmp_path / "probe.json", record("cnnx", 64, 15, 1.5, 2000.0),
                  record("resnet18", 64, 15, 20.0, 1500.0))
    plan = tp.plan_gpu(spec, {}, str(probe))
    assert plan.gpu == GPU and plan.precision == "bf16"  # auto on a bf16 GPU
    assert {k.model: v for k, v in plan.shares.items()} == {"cnnx": 0.125, "resnet18": 0.375}
    fixed = tp.plan_gpu(_spec(tmp_path, "train.data_on_device=false",
                              "scaling.gpus_per_worker=0.25"), {}, str(probe))
    assert set(fixed.shares.values()) == {0.25}  # an explicit number overrides the measure


def test_data_kept_on_the_gpu_counts_in_the_share(tmp_path) -> None:
    from raybench.tune import packing as tp

    spec = _spec(tmp_path)  # data_on_device unset: on a GPU the splits stay there
    probe = write(tmp_path / "probe.json", record("cnnx", 64, 15, 1.5, 2000.0),
                  record("resnet18", 64, 15, 20.0, 1500.0))
    plan = tp.plan_gpu(spec, {}, str(probe))
    key = ProbeKey("cnnx", 64, 15, "bf16")
    assert plan.data_bytes[key] == 40 * 64 * 64  # 4 classes x 10 synthetic films, uint8


def test_a_workload_that_does_not_fit_stops_the_plan(tmp_path) -> None:
    from raybench.tune import packing as tp

    spec = _spec(tmp_path, "sweep.models=[cnnx, densenet201]")
    probe = write(tmp_path / "probe.json", record("cnnx", 64, 15, 1.5, 2000.0),
                  record("densenet201", 64, 15, 70.0, 127.0))
    with pytest.raises(ConfigError, match=r"densenet201 does not fit one GPU: measured peak "
                                          r"70.0 GiB"):
        tp.plan_gpu(spec, {}, str(probe))


def test_fixed_shares_and_the_ddp_rule_on_the_spec(tmp_path) -> None:
    from raybench.tune import packing as tp

    assert tp.ddp_checked(_spec(tmp_path, "scaling.gpus_per_worker=0.25")) == 0.25
    assert tp.ddp_checked(_spec(tmp_path, "scaling.num_workers=2")) == 1.0  # auto
    with pytest.raises(ConfigError, match="DDP ranks could land on one GPU"):
        tp.ddp_checked(_spec(tmp_path, "scaling.num_workers=2", "scaling.gpus_per_worker=0.5"))
    assert tp.ddp_checked(load_spec(None, [])) is None  # no GPU asked for


@pytest.mark.parametrize("value,message", [
    ("half", "scaling.gpus_per_worker must be float or auto, got 'half'"),
    ("-1", "scaling.gpus_per_worker must be auto or a number >= 0, got -1.0")])
def test_a_bad_gpu_share_is_one_line(value, message) -> None:
    with pytest.raises(ConfigError) as err:
        load_spec(None, ["scaling.use_gpu=true", f"scaling.gpus_per_worker={value}"])
    assert str(err.value).endswith(message)


def test_gpu_share_is_auto_by_default_and_a_number_when_given() -> None:
    assert load_spec(None, ["scaling.use_gpu=true"]).scaling.gpus_per_worker == "auto"
    assert load_spec(None, ["scaling.use_gpu=true",
                            "scaling.gpus_per_worker=0.25"]).scaling.gpus_per_worker == 0.25
