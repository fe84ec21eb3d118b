"""One training run in the current process: data -> model -> loop -> results store.

``raybench train`` uses this directly; the Ray layers (worker / trial) reuse its pieces.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import platform
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import torch

import raybench
from raybench import schema as S
from raybench.config import Spec, dump_yaml
from raybench.data.dataset import PreparedData, prepare_data
from raybench.engine.loop import (
    LoopResult,
    check_batch_size,
    fit,
    resolve_device,
    seed_everything,
)
from raybench.models import build_model, count_parameters, get_model_spec
from raybench.storage import check_writable
from raybench.store import ResultStore, check_name

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


def scenario_name(spec: Spec) -> str:
    """The scenario a run reports: the registered scenario, else ``synthetic`` or the manifest."""
    if spec.data.scenario:
        return spec.data.scenario
    return Path(spec.data.manifest).name.split(".")[0] if spec.data.manifest else "synthetic"


def image_size(spec: Spec) -> int:
    """The input size: the spec's, or the model's default."""
    return spec.model.image_size or get_model_spec(spec.model.name).input_size


def build_from_spec(spec: Spec, num_classes: int) -> torch.nn.Module:
    """Builds the spec's model (seeded, so weights are reproducible)."""
    seed_everything(spec.train.seed)
    options = {"stride": spec.model.cnnx_stride} if spec.model.name == "cnnx" else {}
    return build_model(spec.model.name, num_classes, pretrained=spec.model.pretrained,
                       image_size=image_size(spec), weights_dir=spec.model.weights_dir, **options)


def versions() -> dict[str, str]:
    """Versions recorded with every run."""
    import ray
    import timm

    return {"raybench_version": raybench.__version__, "torch_version": torch.__version__,
            "ray_version": ray.__version__, "timm_version": timm.__version__}


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
    return {"started_at": started_at, "finished_at": datetime.now(timezone.utc),
            "node": node or socket.gethostname(), "accelerator": accelerator(device)}


def run_row(spec: Spec, trial_id: str, model: torch.nn.Module, result: LoopResult,
            device: torch.device, wall_s: float, status: str = "completed",
            num_workers: int = 1) -> dict[str, Any]:
    """The runs-table row of one trial."""
    return {
        S.MODEL: spec.model.name, S.SCENARIO: scenario_name(spec),
        S.SEED: spec.train.seed, "lr": spec.train.lr, "batch_size": spec.train.batch_size,
        "epochs": spec.train.epochs, "cnnx_stride": spec.model.cnnx_stride,
        "image_size": image_size(spec), "pretrained": spec.model.pretrained,
        "params": count_parameters(model), "epochs_run": len(result.history), "wall_s": wall_s,
        "train_images_per_s": result.train_images_per_s, "device": describe_device(device),
        "precision": spec.train.precision, "num_workers": num_workers, "status": status,
        **versions(),
    }


def write_results(store: ResultStore, spec: Spec, trial_id: str, outcome_row: dict[str, Any],
                  result: LoopResult, data: PreparedData, model: torch.nn.Module) -> None:
    """Writes the trial's epochs, CAMs, metrics (with ROI focus) and predictions, then its run
    row: the run row comes last, so a trial with a run row has all its files."""
    from raybench.cam.export import export_trial_cams

    sweep = spec.name
    store.write_table(sweep, "epochs", trial_id, [dataclasses.asdict(h) for h in result.history])
    cams = export_trial_cams(store, spec, trial_id, model, data, result)
    store.write_table(sweep, "metrics", trial_id,
                      result.test.metrics.to_rows("test") + (cams.rows if cams else []))
    probs = result.test.probs
    preds = pd.DataFrame({f"p_{lab}": probs[:, i] for i, lab in enumerate(data.labels)})
    preds.insert(0, S.IMAGE_ID, data.test.image_ids)
    preds.insert(1, S.LABEL, [data.labels[i] for i in data.test.targets.tolist()])
    preds.insert(2, "predicted", [data.labels[i] for i in probs.argmax(axis=1)])
    store.write_table(sweep, "predictions", trial_id, preds, S.predictions_schema(data.labels))
    skipped = [{"path": b.path, "reason": b.reason} for b in data.skipped]
    if outcome_row.get("finished_at") is not None:  # writing its results is part of the trial
        outcome_row = {**outcome_row, "finished_at": datetime.now(timezone.utc)}
    store.write_table(sweep, "runs", trial_id,
                      [{**outcome_row, "skipped_images": json.dumps(skipped) if skipped else None}])


def run_training(spec: Spec, trial_id: Optional[str] = None) -> RunOutcome:
    """Trains ``spec`` in this process and writes its results under ``spec.results``."""
    trial_id = trial_id or default_trial_id(spec)
    started_at = datetime.now(timezone.utc)
    check_writable(spec.results)  # an unusable store fails in seconds, before any training
    store = ResultStore(spec.results)
    t0 = time.perf_counter()
    device = resolve_device(spec.train.device)
    data = prepare_data(spec.data, image_size(spec))
    check_batch_size(data, spec.train.batch_size)
    model = build_from_spec(spec, len(data.labels)).to(device)
    model_spec = get_model_spec(spec.model.name)
    store.write_spec(spec.name, dump_yaml(spec))  # inputs are valid: the sweep folder may appear
    result = fit(model, data, spec.train, (model_spec.mean, model_spec.std), device)
    row = run_row(spec, trial_id, model, result, device, time.perf_counter() - t0)
    row.update(timeline_fields(started_at, device))
    write_results(store, spec, trial_id, row, result, data, model)
    log.info("wrote %s/%s/*/%s.parquet", spec.results, spec.name, trial_id)
    return RunOutcome(spec.name, trial_id, result, data, row)
