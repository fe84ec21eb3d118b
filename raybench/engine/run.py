"""One training run in the current process: data -> model -> loop -> results store.

``raybench train`` uses this directly; the Ray layers (worker / trial) reuse its pieces. The
trial's naming helpers (scenario, searched values) live in :mod:`raybench.trial`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd
import torch

from raybench.version import __version__ as raybench_version
from raybench import schema as S
from raybench import storage
from raybench.config import Spec, dump_yaml
from raybench.data.dataset import PreparedData, SplitData, prepare_data
from raybench.engine.figures import trial_figures
from raybench.engine.loop import (
    FitOptions,
    LoopResult,
    check_batch_size,
    fit,
    resolve_device,
    seed_everything,
)
from raybench.metrics import split_rows
from raybench.models import build_model, count_parameters, get_model_spec
from raybench.models.zoo import check_weights_fit, model_record
from raybench.models import names as model_names
from raybench import tracking
from raybench.storage import check_writable
from raybench.store import ResultStore, check_name
from raybench.trial import image_size, model_options, scenario_name

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """A finished run: its identity, the loop's result and where it was written."""

    sweep: str
    trial_id: str
    result: LoopResult
    data: PreparedData
    run_row: dict[str, Any]


def default_trial_id(spec: Spec) -> str:
    """Deterministic: the same spec gives the same id, so a rerun replaces its files."""
    return check_name("trial", f"{spec.model.name}-seed{spec.train.seed}")


def build_from_spec(spec: Spec, num_classes: int) -> torch.nn.Module:
    """Builds the spec's model (seeded, so weights are reproducible)."""
    seed_everything(spec.train.seed)
    options = model_names.applicable(spec.model.name, spec.model.options)
    return build_model(spec.model.name, num_classes, pretrained=spec.model.pretrained,
                       image_size=image_size(spec), weights_dir=spec.model.weights_dir,
                       weights=spec.model.weights, **options)


def versions() -> dict[str, str]:
    """Versions recorded with every run (from package metadata: importing timm and Ray just to
    read their versions cost a trial process about 2 s)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return {S.RAYBENCH_VERSION: raybench_version, S.TORCH_VERSION: torch.__version__,
            S.RAY_VERSION: of("ray"), S.TIMM_VERSION: of("timm")}


def describe_device(device: torch.device) -> str:
    """A short, human-readable device name for the runs table."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def accelerator(device: torch.device) -> str:
    """The GPU's name for CUDA devices, else ``cpu`` (the runs table's ``accelerator``)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def timeline_fields(started_at: datetime, device: torch.device,
                    node: Optional[str] = None) -> dict[str, Any]:
    """``started_at`` / ``finished_at`` (UTC, now), ``node`` (Ray node id or host), ``accelerator``."""
    return {S.STARTED_AT: started_at, S.FINISHED_AT: datetime.now(timezone.utc),
            S.NODE: node or socket.gethostname(), S.ACCELERATOR: accelerator(device)}


def settings_fields(spec: Spec, result: LoopResult, device: torch.device,
                    gpu_share: Optional[float] = None) -> dict[str, Any]:
    """The training settings the trial used (resolved for its device), its GPU share and its
    peak GPU memory (``torch.cuda.max_memory_allocated``; null on a CPU)."""
    used = result.train or spec.train
    cuda = device.type == "cuda"
    return {S.PRECISION: used.precision, S.CHANNELS_LAST: bool(used.channels_last),
            S.DATA_ON_DEVICE: bool(used.data_on_device), S.COMPILE: used.compile,
            S.GPU_SHARE: (gpu_share or 1.0) if cuda or gpu_share else None,
            S.PEAK_MEMORY_BYTES: int(torch.cuda.max_memory_allocated(device)) if cuda else None}


def run_row(spec: Spec, trial_id: str, model: torch.nn.Module, result: LoopResult,
            device: torch.device, wall_s: float, status: str = S.STATUS_COMPLETED,
            num_workers: int = 1, gpu_share: Optional[float] = None) -> dict[str, Any]:
    """The runs-table row of one trial."""
    return {
        S.MODEL: spec.model.name, S.SCENARIO: scenario_name(spec),
        S.SEED: spec.train.seed, S.ROI: spec.data.roi, S.LR: spec.train.lr,
        S.BATCH_SIZE: spec.train.batch_size,
        S.EPOCHS: spec.train.epochs, **model_options(spec),
        S.IMAGE_SIZE: image_size(spec), S.PRETRAINED: spec.model.pretrained,
        S.PARAMS: count_parameters(model), S.EPOCHS_RUN: len(result.history), S.WALL_S: wall_s,
        S.TRAIN_IMAGES_PER_S: result.train_images_per_s, S.DEVICE: describe_device(device),
        S.NUM_WORKERS: num_workers, S.STATUS: status,
        **settings_fields(spec, result, device, gpu_share), **versions(),
        **model_record(spec.model.name, spec.model.weights),
    }


def test_origin(spec: Spec, data: PreparedData) -> dict[str, Optional[str]]:
    """``test_from`` (the scenario's or data's ``test_from``, else the held-out split of the
    manifest) and ``test_sources`` (the test images' sources, comma-separated)."""
    origin = data.scenario.get(S.TEST_FROM) or spec.data.test_from
    if not origin:
        name = Path(spec.data.manifest).name if spec.data.manifest else "synthetic data"
        origin = f"held-out split of {name}"
    return {S.TEST_FROM: str(origin), S.TEST_SOURCES: ",".join(sorted(set(data.test.sources)))}


def prediction_frame(split: str, part: SplitData, probs: Any,
                     labels: tuple[str, ...]) -> pd.DataFrame:
    """One split's predictions: identity, patient, source, label, predicted, ``p_<class>``."""
    n = len(part)
    frame = pd.DataFrame({
        S.SPLIT: [split] * n, S.IMAGE_ID: part.image_ids,
        S.PATIENT_ID: part.patient_ids or [None] * n,  # type: ignore[list-item]
        S.SOURCE: part.sources or [None] * n,  # type: ignore[list-item]
        S.LABEL: [labels[i] for i in part.targets.tolist()],
        S.PREDICTED: [labels[i] for i in probs.argmax(axis=1)]})
    for i, lab in enumerate(labels):
        frame[f"{S.PROB_PREFIX}{lab}"] = probs[:, i]
    return frame


def _evaluated(result: LoopResult, data: PreparedData) -> list[tuple[str, SplitData, Any]]:
    """(split name, split data, probabilities) for test and, when it was evaluated, val."""
    assert result.test is not None, "fit() evaluates the test split last"
    out = [("test", data.test, result.test.probs)]
    if result.val is not None:
        out.append(("val", data.val, result.val.probs))
    return out


def write_results(store: ResultStore, spec: Spec, trial_id: str, outcome_row: dict[str, Any],
                  result: LoopResult, data: PreparedData, model: torch.nn.Module) -> None:
    """Writes the trial's epochs, CAMs, metrics (with ROI focus) and predictions, then its run
    row: the run row comes last, so a trial with a run row has all its files."""
    from raybench.cam.export import export_trial_cams

    sweep = spec.name
    store.write_table(sweep, S.EPOCHS_TABLE, trial_id,
                      [dataclasses.asdict(h) for h in result.history])
    cams = export_trial_cams(store, spec, trial_id, model, data, result)
    evaluated = _evaluated(result, data)
    rows: list[dict] = []
    for split, part, probs in evaluated:  # per source too when a split mixes sources
        rows += split_rows(part.targets.numpy(), probs, data.labels, split, part.sources or None)
    store.write_table(sweep, S.METRICS_TABLE, trial_id, rows + (cams.rows if cams else []))
    preds = pd.concat([prediction_frame(split, part, probs, data.labels)
                       for split, part, probs in evaluated], ignore_index=True)
    store.write_table(sweep, S.PREDICTIONS_TABLE, trial_id, preds, S.predictions_schema(data.labels))
    skipped = [{"path": b.path, "reason": b.reason} for b in data.skipped]
    if outcome_row.get(S.FINISHED_AT) is not None:  # writing its results is part of the trial
        outcome_row = {**outcome_row, S.FINISHED_AT: datetime.now(timezone.utc)}
    store.write_table(sweep, S.RUNS_TABLE, trial_id, [{
        **test_origin(spec, data), **outcome_row,
        S.SKIPPED_IMAGES: json.dumps(skipped) if skipped else None}])
    tracking.log_trial(spec, trial_id, outcome_row, result, cams,  # after the results
                       trial_figures(spec.model.name, result, data, cams))


@contextlib.contextmanager
def _spec_while_running(store: ResultStore, spec: Spec) -> Iterator[None]:
    """Writes the sweep's ``spec.yaml`` (atomically) for the run; puts back the previous one
    (or none) if the run fails or is interrupted, so a failed run neither leaves a stale spec
    nor claims the sweep's name."""
    loc = store.location(spec.name, "spec.yaml")
    previous = storage.read_bytes(loc) if storage.exists(loc) else None
    store.write_spec(spec.name, dump_yaml(spec))
    try:
        yield
    except BaseException:
        if previous is not None:
            storage.write_bytes_atomic(loc, previous)
        else:
            storage.delete_file(loc)
            if loc.is_local:
                with contextlib.suppress(OSError):  # only when nothing else is in it
                    os.rmdir(os.path.dirname(loc.path))
        raise


def run_training(spec: Spec, trial_id: Optional[str] = None) -> RunOutcome:
    """Trains ``spec`` in this process and writes its results under ``spec.results``."""
    trial_id = trial_id or default_trial_id(spec)
    started_at = datetime.now(timezone.utc)
    check_writable(spec.results)  # an unusable store fails in seconds, before any training
    tracking.check_tracking(spec)  # so does an unreachable MLflow server
    check_weights_fit([spec.model.name], spec.model.weights, spec.model.image_size)
    store = ResultStore(spec.results)
    t0 = time.perf_counter()
    device = resolve_device(spec.train.device)
    data = prepare_data(spec.data, image_size(spec))
    check_batch_size(data, spec.train.batch_size)
    model = build_from_spec(spec, len(data.labels)).to(device)
    model_spec = get_model_spec(spec.model.name)
    with _spec_while_running(store, spec):  # inputs are valid: the sweep folder may appear
        result = fit(model, data, spec.train, FitOptions((model_spec.mean, model_spec.std), device))
        row = run_row(spec, trial_id, model, result, device, time.perf_counter() - t0)
        row.update(timeline_fields(started_at, device))
        write_results(store, spec, trial_id, row, result, data, model)
    log.info("wrote %s/%s/*/%s.parquet", spec.results, spec.name, trial_id)
    return RunOutcome(spec.name, trial_id, result, data, row)
