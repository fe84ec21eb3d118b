"""The spec's frozen dataclasses, and their plain-dict / YAML forms.

Every knob lives in a frozen dataclass. Configs cross into Ray as plain dicts (:func:`to_dict`)
and are rebuilt with :func:`raybench.config.from_dict` on the other side.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from raybench import schema
from raybench.models import names as model_names


@dataclass(frozen=True)
class ModelConfig:
    """Which architecture to build and how.

    Attributes:
        name: A key of the model registry (``raybench models``).
        pretrained: Start from ImageNet weights (see ``raybench.models.weights``).
        weights_dir: Local folder or ``s3://`` prefix holding ``<model>.pth`` state dicts.
        image_size: Input size in pixels; ``None`` uses the model's default (224 or 299).
        options: Architecture options by name, e.g. ``{stride: 3}`` (CNN-X's pooling stride,
            the paper's 3). Each applies to the models that declare it (``raybench models``);
            unset options take the model's default.
    """

    name: str = model_names.DEFAULT_MODEL
    pretrained: bool = False
    weights_dir: Optional[str] = None
    image_size: Optional[int] = None
    options: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SynthConfig:
    """The synthetic chest X-ray set used when no manifest is given."""

    per_class: int = 40
    size: int = 64
    seed: int = 0
    marker_leak: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they are split.

    Attributes:
        manifest: Path of a manifest Parquet file; ``None`` generates a synthetic set.
        labels: Classes to use, in class-index order; rows with other labels are dropped.
        val_fraction: Share of training patients carved off for validation.
        test_fraction: Share of patients held out for test when the manifest has no split.
        split_seed: Seed of the patient-level split.
        on_bad_image: ``fail`` stops at the first unreadable image; ``skip`` drops it and
            records it with the run.
        cache_dir: Folder for synthetic sets and decoded-image caches.
        scenario: A registered scenario (``paper-1``, ``paper-2``, ``paper-3``) or a scenario
            YAML file; ``None`` uses the manifest as it is. A scenario's classes replace
            ``labels``.
        test_from: Test images from this source of the manifest or from this manifest file
            (overrides the scenario's own ``test_from``; needs ``scenario``).
        allow_overlap: Train even when a patient or an identical image is in train and test.
        allow_outside_root: Let manifest paths point outside the manifest's folder and the
            folders it was imported from.
        decoded_cache: Decode each manifest once per image size into a memory-mapped cache
            under ``cache_dir`` and reuse it across epochs, trials and workers.
        roi: The lungs-hidden shortcut control, applied identically to training and test
            images: ``full`` (as they are), ``lungs_only`` (outside the lung fields blanked)
            or ``outside_lungs`` (the lung fields blanked).
    """

    manifest: Optional[str] = None
    labels: tuple[str, ...] = schema.LABELS
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    split_seed: int = 0
    on_bad_image: str = "fail"
    cache_dir: str = ".raybench-cache"
    scenario: Optional[str] = None
    test_from: Optional[str] = None
    allow_overlap: bool = False
    allow_outside_root: bool = False
    decoded_cache: bool = True
    roi: str = "full"
    synthetic: SynthConfig = field(default_factory=SynthConfig)


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation; defaults are the paper's (Adam, lr 3e-4, batch 15, 20 epochs).

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        precision: ``fp32`` or ``bf16`` (autocast; CUDA only).
        num_threads: CPU threads for torch; ``None`` leaves torch's default.
        data_on_device: Keep every split on the training device as uint8 (a GPU holds
            COVIDx-sized data at 224 px in about 300 MB): no host-to-device copy per batch.
        channels_last: NHWC memory layout for the model and its inputs (faster convolutions
            on tensor-core GPUs).
        compile: ``torch.compile`` the model (first epoch pays the compilation).
        compile_mode: ``torch.compile`` mode.
        augment: Random shift and zoom of each training image, on the device.
    """

    epochs: int = 20
    batch_size: int = 15
    lr: float = 3e-4
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    num_threads: Optional[int] = None
    data_on_device: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    augment: bool = False


@dataclass(frozen=True)
class ScalingSpec:
    """Ray resources of one trial.

    ``batch_size`` is the global batch: each of ``num_workers`` data-parallel workers takes
    ``ceil(batch_size / num_workers)`` samples per step, so the optimiser sees (about) the same
    batch whatever the number of workers.

    Attributes:
        num_workers: Data-parallel Ray Train workers per trial (DDP when > 1).
        use_gpu: Give each worker a GPU share.
        cpus_per_worker: CPUs reserved per worker.
        gpus_per_worker: GPU share per worker; fractions (0.25) let small models share a GPU.
        in_process: Run single-worker trials inside the Tune trial, without a worker group.
        max_concurrent_trials: Upper bound; by default derived from the cluster's resources.
        max_failures: Restarts of a trial (from its latest checkpoint) after a worker dies.
    """

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    in_process: bool = True
    max_concurrent_trials: Optional[int] = None
    max_failures: int = 1

    @property
    def single_in_process(self) -> bool:
        """One worker, trained inside the Tune trial's own process (no Train worker group)."""
        return self.num_workers == 1 and self.in_process

    @property
    def worker_resources(self) -> dict[str, float]:
        """Ray resources of one worker: its CPUs, plus its GPU share when ``use_gpu``."""
        resources = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            resources["GPU"] = self.gpus_per_worker or 1.0
        return resources


@dataclass(frozen=True)
class SearchSpace:
    """The Optuna space around the paper's defaults (which are evaluated first).

    Attributes:
        options: Values to try for a model's tunable options, by option name (e.g.
            ``{stride: [2, 3, 4]}``); an option left out uses the values its model declares.
    """

    lr_min: float = 1e-5
    lr_max: float = 1e-2
    batch_sizes: tuple[int, ...] = (8, 15, 16, 32, 64)
    options: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepConfig:
    """A study: models x scenarios x seeds, in ``paper`` (fixed hyperparameters) or ``optuna`` mode.

    Attributes:
        mode: ``paper`` runs the paper's hyperparameters as a grid; ``optuna`` searches ``space``
            with TPE, ``num_samples`` trials per model x scenario x seed.
        scenarios: Scenario names; empty means the data section as it is.
        metric: Metric that ASHA and Optuna optimise (reported every epoch).
        asha: Stop weak trials early (ASHA, over epochs).
        time_budget_s: Stop starting new trials after this many seconds.
        rois: ``data.roi`` values to run side by side (an extra cell axis); empty means
            ``data.roi`` as it is.
        max_concurrent_per_study: Trials of one cell's Optuna study in flight at once (small,
            so TPE learns from finished trials while other cells fill the cluster).
        progress_interval_s: Seconds between the driver's sweep summary lines.
    """

    mode: str = "paper"
    models: tuple[str, ...] = (model_names.DEFAULT_MODEL,)
    scenarios: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    num_samples: int = 4
    metric: str = schema.VAL_BALANCED_ACCURACY
    metric_mode: str = "max"
    asha: bool = True
    grace_period: int = 1
    reduction_factor: int = 2
    time_budget_s: Optional[float] = None
    rois: tuple[str, ...] = ()
    max_concurrent_per_study: int = 2
    progress_interval_s: float = 30.0
    space: SearchSpace = field(default_factory=SearchSpace)


@dataclass(frozen=True)
class CamConfig:
    """Class activation maps exported after each trial (see :mod:`raybench.cam`).

    Attributes:
        enabled: Compute and store CAMs of test images, and their ROI-focus metrics.
        select: Which test images: ``per_class`` (the first ``per_class`` of each true class),
            ``all``, or ``misclassified``.
        per_class: Images per class when ``select`` is ``per_class``.
        method: ``auto`` (the model registry's method), ``cam``, ``cnnx`` or ``gradcam``.
        batch_size: Images per CAM forward (and backward, for Grad-CAM) pass.
        images: Store the uint8 input images with the maps (the report draws them).
    """

    enabled: bool = True
    select: str = "per_class"
    per_class: int = 4
    method: str = "auto"
    batch_size: int = 16
    images: bool = True


@dataclass(frozen=True)
class MlflowConfig:
    """Mirror every trial as an MLflow run (see :mod:`raybench.tracking`).

    Credentials never go here (the spec is saved with the results): MLflow reads
    ``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``
    from the environment of each trial process, or raybench reads them from the files named
    by ``MLFLOW_TRACKING_TOKEN_FILE`` / ``MLFLOW_TRACKING_PASSWORD_FILE``.

    Attributes:
        tracking_uri: The tracking server, e.g. ``http://mlflow.example:5000``, reachable from
            every node that runs trials; ``None`` turns MLflow off.
        experiment: MLflow experiment name; ``None`` uses the sweep's name.
        check_timeout_s: Seconds the start-of-job reachability check may take.
    """

    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None
    check_timeout_s: float = 5.0


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment trackers that mirror the results store (off by default)."""

    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


@dataclass(frozen=True)
class Spec:
    """One job: a name, a model, data and training settings, and where results go."""

    name: str = "train"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    results: str = "./runs"
    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def _absolute(value: Optional[str]) -> Optional[str]:
    if not value or "://" in value:
        return value
    return str(Path(value).expanduser().absolute())


def with_absolute_paths(spec: Spec) -> Spec:
    """The spec with its local paths made absolute against the current directory.

    Ray runs trials in processes with another working directory: a relative ``./runs`` there
    would silently land somewhere else. URIs (``s3://``) and registered names stay as they are.
    """
    data = spec.data
    scenario = data.scenario
    if scenario and (scenario.endswith((".yaml", ".yml")) or os.sep in scenario):
        scenario = _absolute(scenario)
    test_from = data.test_from
    if test_from and (test_from.endswith(".parquet") or os.sep in test_from):
        test_from = _absolute(test_from)
    data = dataclasses.replace(data, manifest=_absolute(data.manifest), scenario=scenario,
                               cache_dir=_absolute(data.cache_dir) or data.cache_dir,
                               test_from=test_from)
    model = dataclasses.replace(spec.model, weights_dir=_absolute(spec.model.weights_dir))
    return dataclasses.replace(spec, results=_absolute(spec.results) or spec.results, data=data,
                               model=model)


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain nested dict (tuples become lists) for YAML, Ray configs and Parquet rows."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(obj))


def dump_yaml(spec: Spec) -> str:
    """The resolved spec as YAML (what is saved next to the results)."""
    return yaml.safe_dump(to_dict(spec), sort_keys=False)
