"""Training throughput and peak memory of one model, measured with raybench's own loop.

One implementation serves ``raybench bench``'s train section (:mod:`raybench.bench.train`,
which times it against a plain loop) and the GPU probe of a sweep (:mod:`raybench.gpu.probe`,
which packs trials by the peak memory measured here). Both train ``steps`` mini-batches of
random uint8 images (as the decoded cache holds them) with
:func:`raybench.engine.loop.train_one_epoch`, after ``warmup`` untimed steps.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from raybench.config import TrainConfig
from raybench.data.dataset import SplitData
from raybench.engine.loop import (
    evaluate,
    optimize_model,
    place_data,
    resolve_train,
    seed_everything,
    train_one_epoch,
)

#: Classes of the measured model's head (the paper's 4).
CLASSES = 4


@dataclass(frozen=True)
class Workload:
    """What is measured: model, input side, global batch, steps, and the training settings."""

    model: str
    image_size: int
    batch_size: int
    steps: int = 6
    warmup: int = 2
    cfg: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    @property
    def images(self) -> int:
        return self.batch_size * self.steps


@dataclass(frozen=True)
class Measurement:
    """One measured workload.

    Attributes:
        train_images_per_s: Images/s of the timed training steps.
        eval_images_per_s: Images/s of a forward-only pass over the same images (batch 64,
            as :func:`raybench.engine.loop.evaluate` runs validation).
        peak_allocated_bytes: ``torch.cuda.max_memory_allocated`` over warm-up, training and
            the evaluation pass (0 on a CPU).
        peak_reserved_bytes: ``torch.cuda.max_memory_reserved`` (the caching allocator's hold).
        precision: The precision the loop used (``auto`` resolved for the device).
    """

    train_images_per_s: float
    eval_images_per_s: float
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    precision: str


def synthetic_split(n: int, size: int, seed: int = 0) -> SplitData:
    """``n`` random uint8 images (N, S, S) with random labels of :data:`CLASSES` classes."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size), dtype=torch.uint8, generator=gen)
    targets = torch.randint(0, CLASSES, (n,), generator=gen)
    return SplitData(images, targets, [str(i) for i in range(n)])


def build_measured(model: str, size: int, device: torch.device, cfg: TrainConfig
                   ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Model ``model`` (seed 0, ``cfg``'s layout and compilation) on ``device`` and its Adam."""
    from raybench.models import build_model

    seed_everything(0)
    net = optimize_model(build_model(model, CLASSES, image_size=size).to(device), cfg)
    return net, torch.optim.Adam(net.parameters(), lr=cfg.lr)


EpochFn = Callable[[int, Optional[int]], int]


def raybench_runner(work: Workload, device: torch.device, data: SplitData,
                    net: Any = None) -> EpochFn:
    """``fn(epoch, steps)``: trains one epoch of ``data`` (or ``steps`` mini-batches) with
    raybench's loop and returns the images seen."""
    from raybench.models import get_model_spec

    spec = get_model_spec(work.model)
    norm = (spec.mean, spec.std)
    cfg = dataclasses.replace(work.cfg, batch_size=work.batch_size, seed=0)
    model, opt = net or build_measured(work.model, work.image_size, device, cfg)
    placed = place_data(data, device, bool(cfg.data_on_device))

    def run(epoch: int, steps: Optional[int]) -> int:
        m = len(placed) if steps is None else steps * work.batch_size
        part = SplitData(placed.images[:m], placed.targets[:m], placed.image_ids[:m])
        return train_one_epoch(model, opt, part, norm, cfg, device, epoch)[1]

    run.model = model  # type: ignore[attr-defined]  # the evaluation pass reuses it
    return run


def sync(device: torch.device) -> None:
    """Waits for the device's queued work (timing on a GPU is asynchronous otherwise)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_training(work: Workload, device: torch.device) -> Measurement:
    """Trains ``work`` on ``device`` and returns its images/s and peak memory.

    The peak counts warm-up, the timed steps and one forward pass at validation's batch, so
    a trial's evaluation after each epoch fits in what the training measured.
    """
    cfg = resolve_train(work.cfg, device)
    work = dataclasses.replace(work, cfg=cfg)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    data = synthetic_split(work.images, work.image_size)
    run = raybench_runner(work, device, data)
    run(0, work.warmup)
    sync(device)
    start = time.perf_counter()
    seen = run(1, None)
    sync(device)
    train_s = time.perf_counter() - start
    eval_s = _time_evaluation(run.model, work, data, device)  # type: ignore[attr-defined]
    peak_alloc = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    peak_res = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else 0
    return Measurement(seen / train_s, len(data) / eval_s, int(peak_alloc), int(peak_res),
                       cfg.precision)


def _time_evaluation(model: Any, work: Workload, data: SplitData, device: torch.device) -> float:
    from raybench.models import get_model_spec

    spec = get_model_spec(work.model)
    placed = place_data(data, device, bool(work.cfg.data_on_device))
    start = time.perf_counter()
    evaluate(model, placed, tuple(f"c{i}" for i in range(CLASSES)), (spec.mean, spec.std),
             device, precision=work.cfg.precision, channels_last=bool(work.cfg.channels_last))
    sync(device)
    return max(time.perf_counter() - start, 1e-9)
