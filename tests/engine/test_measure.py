"""The shared measuring code (raybench.engine.measure) on the CPU, and the GPU-fast defaults
it and every trial resolve per device (raybench.engine.loop.resolve_train)."""
from __future__ import annotations

import pytest
import torch

from raybench.config import TrainConfig
from raybench.engine.loop import resolve_train
from raybench.engine.measure import Workload, measure_training


def test_measure_training_on_the_cpu_counts_images_and_no_gpu_memory() -> None:
    torch.set_num_threads(1)
    m = measure_training(Workload("cnnx", 32, 4, steps=2, warmup=1), torch.device("cpu"))
    assert m.train_images_per_s > 0 and m.eval_images_per_s > 0
    assert (m.peak_allocated_bytes, m.peak_reserved_bytes, m.precision) == (0, 0, "fp32")


def test_unset_settings_resolve_to_gpu_fast_defaults_on_cuda(monkeypatch) -> None:
    cfg = TrainConfig()
    assert (cfg.precision, cfg.channels_last, cfg.data_on_device) == ("auto", None, None)
    cpu = resolve_train(cfg, torch.device("cpu"))
    assert (cpu.precision, cpu.channels_last, cpu.data_on_device) == ("fp32", False, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    gpu = resolve_train(cfg, torch.device("cuda"))
    assert (gpu.precision, gpu.channels_last, gpu.data_on_device) == ("bf16", True, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_train(cfg, torch.device("cuda")).precision == "fp32"  # e.g. a V100


@pytest.mark.parametrize("given", [dict(precision="fp32"), dict(channels_last=False),
                                   dict(data_on_device=False)])
def test_what_the_spec_sets_is_kept_on_cuda(monkeypatch, given) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    out = resolve_train(TrainConfig(**given), torch.device("cuda"))
    assert {k: getattr(out, k) for k in given} == given
    defaults = {"precision": "bf16", "channels_last": True, "data_on_device": True}
    assert {k: getattr(out, k) for k in defaults if k not in given} == {
        k: v for k, v in defaults.items() if k not in given}
