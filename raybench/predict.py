"""A sweep's predicted cost on N GPUs, from its probe records (``raybench plan``).

Per cell: the probed training and evaluation images/s, the peak memory and the GPU share of
its workload, and the predicted time of one trial:
``epochs x (train images / train rate + validation images / eval rate) + test images / eval
rate + TRIAL_OVERHEAD_S``. The sweep's wall time on N GPUs is the larger of its longest trial
and its share-seconds over N (packed trials are assumed not to slow each other: the report
puts the actual time beside the prediction); GPU-hours are N GPUs held for that time. The
driver saves the prediction with the sweep (``<sweep>/gpu_plan.json``) for the report.

On CPUs there is no probe: :func:`warn_if_long` applies the same trial time to the training
rates measured on the 2-core development machine
(:data:`raybench.models.cpu_rates.CPU_RATES`), so that a ``train`` or
``sweep`` that would run for hours says so before it starts.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

from raybench.config import Spec
from raybench.models.cpu_rates import CPU_CORES, CPU_RATES
from raybench.store import ResultStore
from raybench.trial import cell_spec, cells, image_size

#: Seconds a trial spends besides its epochs (process or actor start, model build, data).
TRIAL_OVERHEAD_S = 10.0
PLAN_FILE = "gpu_plan.json"
GIB = 1024 ** 3
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellCost:
    """One cell's row of the plan (its first batch size's workload in optuna mode)."""

    cell: str
    model: str
    image_size: int
    batch_size: int
    train_images_per_s: float
    peak_gib: float
    share: float
    trial_s: float
    trials: int


@dataclass(frozen=True)
class Prediction:
    """The sweep's predicted cost on ``gpus`` GPUs."""

    gpu: str
    gpus: int
    precision: str
    cells: list[CellCost] = field(default_factory=list)

    @property
    def packed_s(self) -> float:
        longest = max((c.trial_s for c in self.cells), default=0.0)
        share_s = sum(c.share * c.trial_s * c.trials for c in self.cells)
        return max(longest, share_s / self.gpus)

    @property
    def one_per_gpu_s(self) -> float:
        longest = max((c.trial_s for c in self.cells), default=0.0)
        return max(longest, sum(c.trial_s * c.trials for c in self.cells) / self.gpus)

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.packed_s / 3600

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "packed_s": self.packed_s, "one_per_gpu_s": self.one_per_gpu_s,
                "gpu_hours": self.gpu_hours}


def _trial_seconds(spec: Spec, record: Any, sizes: Mapping[str, int]) -> float:
    train = spec.train.epochs * (sizes["train"] / record.train_images_per_s
                                 + sizes["val"] / record.eval_images_per_s)
    return train + sizes["test"] / record.eval_images_per_s + TRIAL_OVERHEAD_S


def predict(spec: Spec, gpu_plan: Any, batch_sizes: Mapping[str, tuple[int, ...]],
            gpus: int = 1) -> Prediction:
    """The plan of ``spec`` on ``gpus`` GPUs of ``gpu_plan``'s kind.

    Args:
        spec: The sweep spec.
        gpu_plan: Its :class:`raybench.tune.packing.GpuPlan` (records and shares).
        batch_sizes: By cell, the batch sizes its trials may take.
        gpus: GPUs of the cluster.
    """
    from raybench.data.dataset import split_sizes

    per_cell = 1 if spec.sweep.mode == "paper" else spec.sweep.num_samples
    out = Prediction(gpu_plan.gpu.name, gpus, gpu_plan.precision)
    sizes_of: dict[Any, dict[str, int]] = {}
    for cell in cells(spec):
        cs = cell_spec(spec, cell)
        if cs.data not in sizes_of:
            sizes_of[cs.data] = split_sizes(cs.data)
        batch = batch_sizes.get(cell.name, (cs.train.batch_size,))[0]
        key = gpu_plan.key(cell.model, image_size(cs), batch)
        record = gpu_plan.records[key]
        out.cells.append(CellCost(
            cell.name, cell.model, key.image_size, batch, record.train_images_per_s,
            record.peak_allocated_bytes / GIB, gpu_plan.shares[key],
            _trial_seconds(cs, record, sizes_of[cs.data]), per_cell))
    return out


def render(pred: Prediction) -> list[str]:
    """The plan as text lines: one per cell, then the sweep's totals."""
    lines = [f"{'cell':<36} {'size':>4} {'batch':>5} {'images/s':>9} {'peak GiB':>8} "
             f"{'share':>6} {'trial min':>9}"]
    for c in pred.cells:
        lines.append(f"{c.cell:<36} {c.image_size:>4} {c.batch_size:>5} "
                     f"{c.train_images_per_s:>9.1f} {c.peak_gib:>8.2f} {c.share:>6.3f} "
                     f"{c.trial_s / 60:>9.1f}")
    trials = sum(c.trials for c in pred.cells)
    lines.append(f"predicted on {pred.gpus} x {pred.gpu} ({pred.precision}), {trials} trial(s): "
                 f"{pred.packed_s / 60:.1f} min packed ({pred.gpu_hours:.2f} GPU-hours), "
                 f"{pred.one_per_gpu_s / 60:.1f} min one trial per GPU")
    return lines


def save(store: ResultStore, spec: Spec, pred: Prediction) -> None:
    """Keeps the prediction with the sweep, for the report's predicted-against-actual table."""
    store.replace_file(spec.name, PLAN_FILE, json.dumps(pred.to_json(), indent=1).encode())


def load(store: ResultStore, sweep: str) -> Optional[dict[str, Any]]:
    """The saved prediction of ``sweep`` (None when it ran without ``auto`` GPU shares)."""
    data = store.read_file(sweep, PLAN_FILE)
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


#: A run predicted to take longer than this logs its estimate before it starts.
LONG_RUN_S = 3600.0


@dataclass(frozen=True)
class _Rates:
    train_images_per_s: float
    eval_images_per_s: float


def _cpu_rates(model: str, size: int, cores: int) -> _Rates:
    """A model's rates at ``size`` px on ``cores`` cores: the measured rate scaled by pixels
    (a convolution's cost grows with the image's area) and by cores."""
    rate = CPU_RATES[model]
    train = rate.images_per_s * (rate.size / size) ** 2 * cores / CPU_CORES
    return _Rates(train, 3 * train)


def cpu_seconds(spec: Spec, cores: int, sweep: bool) -> Optional[tuple[float, str]]:
    """The predicted wall time of ``spec``'s trials on ``cores`` CPU cores (one run, or every
    trial of the sweep: trials running at once share the cores), and the slowest model's rate
    as text; None for a GPU spec or a model without a measured rate."""
    from raybench.data.dataset import split_sizes
    from raybench.models.table import get_model_spec

    if spec.scaling.use_gpu:
        return None
    runs = [(cell_spec(spec, c), 1 if spec.sweep.mode == "paper" else spec.sweep.num_samples)
            for c in cells(spec)] if sweep else [(spec, 1)]
    total, slowest = 0.0, (0.0, "")
    sizes_of: dict[Any, dict[str, int]] = {}
    for cs, count in runs:
        if cs.model.name not in CPU_RATES:
            return None
        size = cs.model.image_size or get_model_spec(cs.model.name).input_size
        rates = _cpu_rates(cs.model.name, size, cores)
        if cs.data not in sizes_of:
            sizes_of[cs.data] = split_sizes(cs.data)
        seconds = _trial_seconds(cs, rates, sizes_of[cs.data]) * count
        total += seconds
        if seconds > slowest[0]:
            slowest = (seconds, f"{cs.model.name} at {size} px: ~{rates.train_images_per_s:.3g} "
                                "training images/s")
    return total, slowest[1]


def warn_if_long(spec: Spec, sweep: bool, cores: Optional[int] = None) -> Optional[float]:
    """Logs one line with the estimate when ``spec`` would run longer than :data:`LONG_RUN_S`
    on this machine's CPU cores; returns the estimate in seconds (None: no estimate)."""
    cores = cores or os.cpu_count() or 1
    found = cpu_seconds(spec, cores, sweep)
    if found is None:
        return None
    seconds, slowest = found
    if seconds > LONG_RUN_S:
        log.warning("%s%s: estimated %.1f h on %d CPU core(s) (%s); fewer epochs "
                    "(train.epochs) or a smaller model.image_size shorten it",
                    "sweep " if sweep else "train ", spec.name, seconds / 3600, cores, slowest)
    return seconds
