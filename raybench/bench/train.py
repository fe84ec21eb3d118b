"""Section ``train``: raybench's worker loop against a minimal plain PyTorch loop.

``train_ratio`` is images/s of :func:`raybench.engine.loop.train_one_epoch` (uint8 images
normalised per batch) over :func:`plain_epoch` (pre-normalised float tensors, the same model,
batch, image size and threads); interleaved, best of ``repeats``; the lowest ratio over the models.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Any, Callable, Optional

from raybench import schema as S
from raybench.bench.options import BenchOptions, Section, torch_threads

EpochFn = Callable[[int, Optional[int]], int]


def plain_epoch(model: Any, opt: Any, x: Any, y: Any, batch: int, seed: int,
                bf16: bool = False) -> int:
    """The minimal hand-written loop: shuffled mini-batches of ready float tensors."""
    import torch
    import torch.nn.functional as F

    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(x.device)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(order)


def paired_epochs(name: str, opts: BenchOptions, device: Any,
                  cfg: Any = None) -> dict[str, Any]:
    """Times raybench's ``train_one_epoch`` and :func:`plain_epoch` on one model, interleaved.

    Both loops train their own copy of model ``name`` (same seed) on the same random uint8
    images, ``opts.steps`` mini-batches of ``opts.batch_size`` per timed epoch, after
    ``opts.warmup`` untimed steps; ``opts.repeats`` timed epochs each, in ABBA order.

    Args:
        name: A registered model.
        opts: Image size, batch, steps, warm-up and repeats.
        device: A ``torch.device``.
        cfg: A :class:`raybench.config.TrainConfig` whose precision, channels_last and
            data_on_device raybench uses; the plain loop gets the same precision and layout,
            with its float inputs prepared up front on ``device``.

    Returns:
        ``raybench_images_per_s`` and ``plain_images_per_s`` (best epoch each), ``ratio``
        (plain time / raybench time) and the epoch times ``raybench_s`` / ``plain_s``.
    """
    from raybench.engine.measure import sync

    runners = _pair_runners(name, opts, device, cfg)
    n = opts.batch_size * opts.steps
    for fn in runners.values():
        fn(0, opts.warmup)
    times: dict[str, list[float]] = {"raybench": [], "plain": []}
    for r in range(opts.repeats):  # ABBA order: both loops see the same drift in machine load
        order = list(runners.items())
        for key, fn in (order if r % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            seen = fn(r + 1, None)
            sync(device)
            times[key].append(time.perf_counter() - start)
            assert seen == n, f"{key} trained {seen} images, expected {n}"
    best = {k: min(v) for k, v in times.items()}
    return {"raybench_images_per_s": n / best["raybench"], "plain_images_per_s": n / best["plain"],
            "ratio": best["plain"] / best["raybench"],
            "raybench_s": [round(t, 4) for t in times["raybench"]],
            "plain_s": [round(t, 4) for t in times["plain"]]}


def _pair_runners(name: str, opts: BenchOptions, device: Any, cfg: Any) -> dict[str, EpochFn]:
    """``{"raybench": fn, "plain": fn}``: ``fn(epoch, steps)`` trains one epoch (or ``steps``
    mini-batches) and returns the images it saw. raybench's is the measuring code the GPU
    probe uses (:mod:`raybench.engine.measure`)."""
    import torch

    from raybench.config import TrainConfig
    from raybench.data.transforms import to_model_input
    from raybench.engine.loop import resolve_train
    from raybench.engine.measure import Workload, build_measured, raybench_runner, synthetic_split
    from raybench.models import get_model_spec

    spec = get_model_spec(name)
    cfg = resolve_train(cfg or TrainConfig(device=device.type, precision="fp32"), device)
    cfg = dataclasses.replace(cfg, batch_size=opts.batch_size, seed=0)
    work = Workload(name, opts.image_size, opts.batch_size, opts.steps, opts.warmup, cfg)
    data = synthetic_split(work.images, opts.image_size)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x_plain = to_model_input(data.images.to(device), spec.mean, spec.std,
                             memory_format=fmt)  # (N, 3, S, S)
    y_plain = data.targets.to(device)
    twins = [build_measured(name, opts.image_size, device, cfg) for _ in range(2)]
    plain_model, plain_opt = twins[1]

    def run_plain(epoch: int, steps: Optional[int]) -> int:
        m = len(data) if steps is None else steps * opts.batch_size
        return plain_epoch(plain_model, plain_opt, x_plain[:m], y_plain[:m], opts.batch_size,
                           epoch, bf16=cfg.precision == "bf16")

    return {"raybench": raybench_runner(work, device, data, twins[0]), "plain": run_plain}


def bench_train(opts: BenchOptions, device: str = "cpu") -> dict[str, Any]:
    """``train_ratio`` (the lowest ratio over the models) and per-model images/s."""
    import torch

    with torch_threads(opts) as threads:
        per_model = {m: paired_epochs(m, opts, torch.device(device)) for m in opts.models}
    ratios = [r["ratio"] for r in per_model.values()]
    return {"train_ratio": min(ratios),
            "train_ratio_geomean": math.exp(statistics.fmean(math.log(r) for r in ratios)),
            "models": per_model,
            "settings": {S.IMAGE_SIZE: opts.image_size, S.BATCH_SIZE: opts.batch_size,
                         "threads": threads, "steps": opts.steps, "warmup": opts.warmup,
                         "repeats": opts.repeats, S.DEVICE: device, S.PRECISION: "fp32"}}


def _lines(out: dict[str, Any]) -> list[str]:
    return [f"train {name}: raybench {per['raybench_images_per_s']:.1f} images/s, plain "
            f"{per['plain_images_per_s']:.1f} images/s, ratio {per['ratio']:.3f}"
            for name, per in out["models"].items()]


SECTION = Section("train", bench_train, headline={"train_ratio": "train_ratio"},
                  targets={"train_ratio": (">=", 0.95)}, lines=_lines)
