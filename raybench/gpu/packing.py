"""GPU shares from measured memory, and the rules that keep packed trials and DDP ranks safe.

A trial's need is its probe's peak (``torch.cuda.max_memory_allocated`` over a few training
steps and one validation-sized forward pass) times ``1 + MARGIN``, plus the CUDA context its
own process holds, plus the decoded splits it keeps on the GPU. The share is that need over
the GPU's memory, rounded *up* to a multiple of :data:`STEP` (1/8), so shares of one GPU add
up exactly (Ray's fractional GPU resources are logical: it checks the numbers add up, never
the memory).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

from raybench.errors import ConfigError

log = logging.getLogger(__name__)

#: Shares are multiples of this.
STEP = 1 / 8
#: Head-room over the measured allocated peak: the caching allocator's fragmentation (its
#: reserved memory runs 5-20% above the allocated peak) and batch-to-batch variation.
MARGIN = 0.25
GIB = 1024 ** 3


@dataclass(frozen=True)
class Need:
    """What one trial of a workload needs on a GPU, in bytes."""

    peak_allocated: int
    context: int
    data: int = 0

    @property
    def total(self) -> int:
        return int(self.peak_allocated * (1 + MARGIN)) + self.context + self.data


def share(need: Need, gpu_memory: int, floor: float = 0.0) -> float:
    """The GPU share that fits ``need`` on a GPU of ``gpu_memory`` bytes: a multiple of
    :data:`STEP`, at least ``floor`` (a share a trial already ran out of memory at, plus a
    step); may exceed 1.0 when it does not fit (see :func:`check_fits`)."""
    steps = math.ceil(need.total / gpu_memory / STEP - 1e-9)
    return max(STEP * max(steps, 1), floor)


def check_fits(model: str, need: Need, gpu_name: str, gpu_memory: int) -> None:
    """One line when ``need`` exceeds one GPU: the model, its measured peak, the GPU's memory.

    Raises:
        ConfigError: It does not fit (exit 2, before any trial starts).
    """
    if need.total > gpu_memory:
        raise ConfigError(
            f"{model} does not fit one GPU: measured peak {need.peak_allocated / GIB:.1f} GiB "
            f"(+{MARGIN:.0%} margin, {need.context / GIB:.1f} GiB CUDA context, "
            f"{need.data / GIB:.1f} GiB data = {need.total / GIB:.1f} GiB) > "
            f"{gpu_memory / GIB:.1f} GiB of {gpu_name}; lower train.batch_size or "
            "model.image_size, or set train.data_on_device: false")


def ddp_share(num_workers: int, share_per_worker: Optional[float], auto: bool) -> Optional[float]:
    """The GPU share of each DDP rank.

    Ray gives fractional GPU bundles of one node the same physical GPU when they fit there,
    and NCCL refuses two ranks on one GPU ("Duplicate GPU detected") mid-run. raybench places
    the ranks of a trial with ``num_workers > 1`` on distinct GPUs by giving each a whole GPU:
    ``auto`` does so with a log line; an explicit fraction is refused here, before any trial.

    Returns:
        ``share_per_worker`` unchanged for one worker; 1.0 for ``auto`` DDP.

    Raises:
        ConfigError: An explicit fraction below 1 with ``num_workers > 1``.
    """
    if num_workers <= 1:
        return share_per_worker
    if auto:
        log.info("DDP trials (%d workers): each rank gets a whole GPU, so no two ranks share "
                 "one (NCCL refuses that)", num_workers)
        return 1.0
    if share_per_worker is not None and share_per_worker < 1.0:
        raise ConfigError(
            f"scaling.gpus_per_worker={share_per_worker:g} with scaling.num_workers="
            f"{num_workers}: DDP ranks could land on one GPU (NCCL: Duplicate GPU detected); "
            "use gpus_per_worker: auto or a whole number, or num_workers: 1")
    return share_per_worker
