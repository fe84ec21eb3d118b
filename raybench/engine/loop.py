"""The training loop: pure PyTorch, no Ray. Unit-tested on its own.

Paper defaults come from :class:`raybench.config.TrainConfig` (Adam, lr 3e-4, batch 15,
20 epochs, all layers trained, cross-entropy). Images arrive as uint8 (N, S, S) tensors and are
normalised batch by batch on the device (:func:`raybench.data.transforms.to_model_input`).

Sharding: with ``rank`` / ``world_size`` each worker takes every ``world_size``-th sample of the
epoch's seeded permutation, so the global batch is ``batch_size`` split across workers (see
:func:`shard_batch_size`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from raybench import schema as S
from raybench.config import TrainConfig
from raybench.data.dataset import PreparedData, SplitData
from raybench.data.transforms import random_affine, to_model_input
from raybench.errors import ConfigError
from raybench.metrics import MetricsResult, compute_metrics

log = logging.getLogger(__name__)


#: The epochs table's columns one epoch fills, in the table's order (the store adds the sweep
#: and the trial id).
EPOCH_COLUMNS: tuple[str, ...] = tuple(n for n in S.EPOCHS_SCHEMA.names
                                       if n not in (S.SWEEP, S.TRIAL_ID))


def _epoch_stats_class() -> type:
    """A frozen dataclass with one field per :data:`EPOCH_COLUMNS` entry (``stats.epoch``,
    ``stats.val_loss``, ...), typed from the schema, so the columns are spelt only there."""
    fields = [(name, int if pa.types.is_integer(S.EPOCHS_SCHEMA.field(name).type) else float)
              for name in EPOCH_COLUMNS]
    cls = dataclasses.make_dataclass("EpochStats", fields, frozen=True)
    cls.__module__ = __name__  # pickled by reference, like any class of this module
    cls.__doc__ = "One epoch's numbers (one row of the epochs table)."
    return cls


if TYPE_CHECKING:
    EpochStats = Any  # built from the schema at import time: its fields are not static
else:
    EpochStats = _epoch_stats_class()


@dataclass
class Evaluation:
    """Loss, probabilities (N, K) and metrics of one split."""

    loss: float
    probs: np.ndarray
    metrics: MetricsResult


@dataclass
class LoopResult:
    """What a training run returns: per-epoch history and the final test evaluation."""

    history: list[EpochStats] = field(default_factory=list)
    test: Optional[Evaluation] = None
    val: Optional[Evaluation] = None  # the last epoch's validation (select on validation)
    train_seconds: float = 0.0
    train_images: int = 0
    train: Optional[TrainConfig] = None  # the settings used, resolved for the device

    @property
    def train_images_per_s(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and torch; call before building the model for identical weights."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a ``ConfigError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


def resolve_train(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """``cfg`` with its GPU-fast defaults decided for ``device``.

    Settings the spec leaves unset (``precision: auto``, ``channels_last`` / ``data_on_device``
    null) become, on CUDA, bf16 autocast where the GPU supports it, the NHWC layout and the
    uint8 splits resident on the GPU; on a CPU, fp32 and neither. A value the spec sets is kept.
    """
    cuda = device.type == "cuda"
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    return dataclasses.replace(
        cfg, precision=precision,
        channels_last=cuda if cfg.channels_last is None else cfg.channels_last,
        data_on_device=cuda if cfg.data_on_device is None else cfg.data_on_device)


def shard_batch_size(global_batch: int, world_size: int) -> int:
    """Per-worker batch for a global batch split over ``world_size`` workers (rounded up)."""
    return max(1, -(-global_batch // world_size))


def _batches(n: int, batch: int, seed: int, epoch: int, rank: int, world: int,
             device: Optional[torch.device] = None) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    # Every rank gets exactly n // world samples, so all ranks run the same number of steps
    # (DDP would hang otherwise); the few left over are seen in other epochs' permutations.
    order = torch.randperm(n, generator=gen)[: n - n % world][rank::world]
    if device is not None:  # one copy per epoch, not a host-to-device copy per step
        order = order.to(device)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        if len(idx) == 1 and start > 0:
            return  # a lone trailing sample breaks BatchNorm statistics; it is seen next epoch
        yield idx


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def place_data(data: SplitData, device: torch.device, on_device: bool) -> SplitData:
    """The split moved to ``device`` once, still uint8, when ``on_device``; else unchanged."""
    if not on_device or data.images.device == device:
        return data
    return SplitData(data.images.to(device), data.targets.to(device), data.image_ids)


def optimize_model(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Applies ``cfg.channels_last`` and ``cfg.compile`` to the (unwrapped) model, in place.

    ``nn.Module.compile`` keeps the module and its ``state_dict`` keys, so checkpoints and CAM
    hooks see the same model; calling this twice compiles once.
    """
    from raybench.models import unwrap_model

    inner = unwrap_model(model)
    if cfg.channels_last:
        inner.to(memory_format=torch.channels_last)
    if cfg.compile and getattr(inner, "_compiled_call_impl", None) is None:
        inner.compile(mode=None if cfg.compile_mode == "default" else cfg.compile_mode)
    return model


def train_one_epoch(model: nn.Module, opt: torch.optim.Optimizer, data: SplitData,
                    norm: tuple[Sequence[float], Sequence[float]], cfg: TrainConfig,
                    device: torch.device, epoch: int, rank: int = 0, world: int = 1
                    ) -> tuple[float, int]:
    """One pass over the (sharded) training split; returns mean loss and images seen.

    ``cfg`` is resolved for the device (:func:`resolve_train`); nothing waits for the device
    inside the loop: the loss is summed there and read once, at the end of the epoch.
    """
    model.train()
    batch = shard_batch_size(cfg.batch_size, world)
    fmt = _memory_format(bool(cfg.channels_last))
    total, seen = torch.zeros((), device=device), 0
    for idx in _batches(len(data), batch, cfg.seed, epoch, rank, world, data.images.device):
        x = to_model_input(data.images[idx].to(device, non_blocking=True), *norm,
                           memory_format=fmt)
        if cfg.augment:
            x = random_affine(x)
        y = data.targets[idx].to(device, non_blocking=True)
        with _autocast(device, cfg.precision):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Summed on the device: a float() per step would wait for the GPU at every step.
        total += loss.detach().float() * len(idx)
        seen += len(idx)
    return float(total) / max(seen, 1), seen


@torch.no_grad()
def evaluate(model: nn.Module, data: SplitData, labels: Sequence[str],
             norm: tuple[Sequence[float], Sequence[float]], device: torch.device,
             batch_size: int = 64, precision: str = "fp32", channels_last: bool = False
             ) -> Evaluation:
    """Loss, class probabilities and metrics of ``model`` on one split (eval mode)."""
    model.eval()
    logits = []
    for start in range(0, len(data), batch_size):
        x = to_model_input(data.images[start:start + batch_size].to(device), *norm,
                           memory_format=_memory_format(channels_last))
        with _autocast(device, precision):
            logits.append(model(x).float())
    out = torch.cat(logits)  # (N, K)
    targets = data.targets.to(device)
    loss = float(F.cross_entropy(out, targets))
    probs = out.softmax(dim=1).cpu().numpy()
    return Evaluation(loss, probs, compute_metrics(data.targets.cpu().numpy(), probs, labels))


def check_batch_size(data: PreparedData, batch_size: int) -> None:
    """Rejects a batch larger than the training split (it would be one partial batch)."""
    if batch_size > len(data.train):
        raise ConfigError(f"train.batch_size={batch_size} is larger than the training split "
                          f"({len(data.train)} images); use at most {len(data.train)}")


@dataclass
class FitOptions:
    """How one :func:`fit` call runs, besides the optimisation settings (``TrainConfig``).

    Attributes:
        norm: The model's ``(mean, std)``.
        device: Where to train.
        on_epoch: Called after each epoch with its stats and the model (checkpoint / report).
        rank: This worker's rank; ``world``: the number of workers.
        start_epoch: First epoch to run (resume from a checkpoint).
        optimizer: An optimiser to continue with (resume); default a fresh Adam.
    """

    norm: tuple[Sequence[float], Sequence[float]]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    on_epoch: Optional[Callable[[EpochStats, nn.Module], None]] = None
    rank: int = 0
    world: int = 1
    start_epoch: int = 0
    optimizer: Optional[torch.optim.Optimizer] = None


def fit(model: nn.Module, data: PreparedData, cfg: TrainConfig, opts: FitOptions) -> LoopResult:
    """Trains for ``cfg.epochs`` epochs with per-epoch validation, then evaluates on test.

    Args:
        model: Already on ``opts.device`` (and wrapped in DDP by the caller when distributed).
        data: Decoded splits.
        cfg: Optimisation settings.
        opts: Device, normalisation, rank/world, resume point and the per-epoch callback.
    """
    norm, device, rank, world = opts.norm, opts.device, opts.rank, opts.world
    cfg = resolve_train(cfg, device)
    check_batch_size(data, cfg.batch_size)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    opt = opts.optimizer or torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model = optimize_model(model, cfg)
    train, val_split, test_split = (place_data(d, device, bool(cfg.data_on_device))
                                    for d in (data.train, data.val, data.test))
    result = LoopResult(train=cfg)
    for epoch in range(opts.start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        train_loss, seen = train_one_epoch(model, opt, train, norm, cfg, device, epoch, rank, world)
        train_s = time.perf_counter() - t0
        val = evaluate(model, val_split, data.labels, norm, device, precision=cfg.precision,
                       channels_last=bool(cfg.channels_last))
        stats = EpochStats(epoch + 1, train_loss, val.loss, val.metrics.accuracy,
                           val.metrics.balanced_accuracy, val.metrics.macro_auc,
                           opt.param_groups[0]["lr"], time.perf_counter() - t0,
                           seen / train_s if train_s else 0.0)
        result.history.append(stats)
        result.val = val
        result.train_seconds += train_s
        result.train_images += seen
        log.info("epoch %d/%d loss %.4f val_bacc %.3f", stats.epoch, cfg.epochs, train_loss,
                 stats.val_balanced_accuracy)
        if opts.on_epoch is not None:
            opts.on_epoch(stats, model)
    if result.val is None:  # resumed after its last epoch: the restored model's validation
        result.val = evaluate(model, val_split, data.labels, norm, device,
                              precision=cfg.precision, channels_last=bool(cfg.channels_last))
    result.test = evaluate(model, test_split, data.labels, norm, device, precision=cfg.precision,
                           channels_last=bool(cfg.channels_last))
    return result
