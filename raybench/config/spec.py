"""The spec's frozen dataclasses, with each field's check beside it, and their dict / YAML forms.

Every knob lives in a frozen dataclass. Choices are ``Literal`` types or read from their
registry (models, CAM methods); ranges are declared with the field (:mod:`raybench.config.fields`)
and checked on construction. Configs cross into Ray as plain dicts (:func:`to_dict`) and are
rebuilt with :func:`raybench.config.from_dict` on the other side.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args
from urllib.parse import urlparse

import yaml

from raybench import schema
from raybench.catalog.cam_methods import METHODS as CAM_METHODS
from raybench.config.fields import (
    Checked,
    FieldError,
    choice_problem,
    at_least_one,
    checked,
    distinct,
    fraction,
    image_side,
    non_negative,
    positive,
)
from raybench.models.names import model_problem
from raybench.models.table import DEFAULT_MODEL
from raybench.safeyaml import short

#: ``data.roi``: the lungs-hidden shortcut control.
Roi = Literal["full", "lungs_only", "outside_lungs"]
ROIS: tuple[str, ...] = get_args(Roi)
#: Metrics a sweep may optimise (reported every epoch).
#: The decoded-image cache's folder when a spec sets no ``data.cache_dir`` (relative to the
#: working directory, so a checkout's runs share it).
DEFAULT_CACHE_DIR = ".raybench-cache"
SWEEP_METRICS = (schema.VAL_BALANCED_ACCURACY, schema.VAL_ACCURACY, schema.VAL_MACRO_AUC,
                 schema.VAL_LOSS, schema.TRAIN_LOSS)


def _model(name: str) -> Optional[str]:
    problem = model_problem(name)
    return f": {problem}" if problem else None


def _cam_method(name: str) -> Optional[str]:
    return choice_problem(name, ("auto", *CAM_METHODS))


def _sweep_metric(name: str) -> Optional[str]:
    return choice_problem(name, SWEEP_METRICS)


def _roi(name: str) -> Optional[str]:
    return None if name in ROIS else f" has {short(name)}; allowed: {', '.join(ROIS)}"


def _seed(value: int) -> Optional[str]:
    return None if value >= 0 else f" must be >= 0, got {value}"


_NO_INTS = " must be a non-empty list of ints >= 1"


def _positive_int(value: int) -> Optional[str]:
    return None if value >= 1 else f"{_NO_INTS}, got {value}"


def _option_values(values: tuple[int, ...]) -> Optional[str]:
    check = distinct(tuple, _positive_int, if_empty=_NO_INTS).metadata["check"]
    problem: Optional[str] = check(values)
    return problem


def _tracking_uri(uri: Optional[str]) -> Optional[str]:
    if uri is None:
        return None
    if "@" in urlparse(uri).netloc:  # never echo the URI: the part before '@' may be a secret
        return (" must not hold credentials (user:secret@); set MLFLOW_TRACKING_TOKEN or "
                "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in the environment of "
                "every node")
    if not uri.strip():
        return " is empty; leave it out to turn MLflow off"
    return None


def _gpu_share(value: Any) -> Optional[str]:
    if value == "auto" or (isinstance(value, float) and value >= 0):
        return None
    return f" must be auto or a number >= 0, got {short(value)}"


def _auto_or_bool(value: Any) -> Optional[str]:
    if value == "auto" or isinstance(value, bool):
        return None
    return f" must be auto, true or false, got {short(value)}"


def _spec_name(name: str) -> Optional[str]:
    if name and "/" not in name:
        return None
    return f" must be a non-empty string without '/', got {short(name)}"


@dataclass(frozen=True)
class ModelConfig(Checked):
    """Which architecture to build and how.

    Attributes:
        name: A key of the model registry, or a library model ``timm.<name>`` /
            ``torchvision.<name>`` (``raybench models --search``).
        pretrained: Start from ImageNet weights (see ``raybench.models.weights``).
        weights_dir: Local folder or ``s3://`` prefix holding ``<model>.pth`` state dicts.
        weights: A weights file (local or ``s3://``; state dict or safetensors) that
            initialises the backbone instead of ImageNet (``raybench.models.weightfile``).
        image_size: Input size in pixels; ``None`` uses the model's default (224 or 299).
        options: Architecture options by name, e.g. ``{stride: 3}`` (CNN-X's pooling stride,
            the paper's 3). Each applies to the models that declare it (``raybench models``);
            unset options take the model's default.
    """

    name: str = checked(DEFAULT_MODEL, _model)
    pretrained: bool = False
    weights_dir: Optional[str] = None
    weights: Optional[str] = None
    image_size: Optional[int] = image_side(None, low=16)
    options: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SynthConfig(Checked):
    """The synthetic chest X-ray set used when no manifest is given."""

    per_class: int = positive(40)
    size: int = image_side(64, low=1)
    seed: int = non_negative(0)
    marker_leak: float = fraction(0.0, closed=True)


@dataclass(frozen=True)
class DataConfig(Checked):
    """Where images come from and how they are split.

    Attributes:
        manifest: Path of a manifest Parquet file; ``None`` generates a synthetic set.
        labels: Classes to use, in class-index order; rows with other labels are dropped.
        val_fraction: Share of training patients carved off for validation.
        test_fraction: Share of patients held out for test when the manifest has no split.
        split_seed: Seed of the patient-level split.
        on_bad_image: ``fail`` stops at the first unreadable image; ``skip`` drops it and
            records it with the run.
        cache_dir: Folder for synthetic sets and decoded-image caches: a local folder, a
            folder every node mounts, or an ``s3://`` prefix the cluster's nodes share (each
            image is then decoded once per cluster).
        local_cache_dir: Node-local folder for decoded shards downloaded from an ``s3://``
            ``cache_dir`` (and for synthetic sets); ``None``: ``~/.cache/raybench``.
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
    labels: tuple[str, ...] = distinct(lambda: schema.LABELS)
    val_fraction: float = fraction(0.15)
    test_fraction: float = fraction(0.2)
    split_seed: int = non_negative(0)
    on_bad_image: Literal["fail", "skip"] = "fail"
    cache_dir: str = DEFAULT_CACHE_DIR
    local_cache_dir: Optional[str] = None
    scenario: Optional[str] = None
    test_from: Optional[str] = None
    allow_overlap: bool = False
    allow_outside_root: bool = False
    decoded_cache: bool = True
    roi: Roi = "full"
    synthetic: SynthConfig = field(default_factory=SynthConfig)

    def check_fields(self) -> None:
        super().check_fields()
        unknown = [lab for lab in self.labels if lab not in schema.LABELS]
        if unknown or len(self.labels) < 2:
            raise FieldError("labels", f"={short(list(self.labels))}; need >= 2 of "
                             f"{', '.join(schema.LABELS)}")


@dataclass(frozen=True)
class TrainConfig(Checked):
    """The optimisation; defaults are the paper's (Adam, lr 3e-4, batch 15, 20 epochs).

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        precision: ``auto`` (bf16 autocast on a GPU that supports it, else fp32), ``fp32``
            or ``bf16``.
        num_threads: CPU threads for torch; ``None`` leaves torch's default.
        data_on_device: Keep every split on the training device as uint8 (a GPU holds
            COVIDx-sized data at 224 px in about 300 MB): no host-to-device copy per batch.
            ``None``: on a GPU, yes; on a CPU, no.
        channels_last: NHWC memory layout for the model and its inputs (faster convolutions
            on tensor-core GPUs). ``None``: on a GPU, yes; on a CPU, no.
        compile: ``torch.compile`` the model (first epoch pays the compilation).
        compile_mode: ``torch.compile`` mode.
        augment: Random shift and zoom of each training image, on the device.
    """

    epochs: int = positive(20)
    batch_size: int = positive(15)
    lr: float = positive(3e-4)
    weight_decay: float = non_negative(0.0)
    seed: int = non_negative(0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_threads: Optional[int] = at_least_one()
    data_on_device: Optional[bool] = None
    channels_last: Optional[bool] = None
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs"] = "default"
    augment: bool = False


@dataclass(frozen=True)
class ScalingSpec(Checked):
    """Ray resources of one trial.

    ``batch_size`` is the global batch: each of ``num_workers`` data-parallel workers takes
    ``ceil(batch_size / num_workers)`` samples per step, so the optimiser sees (about) the same
    batch whatever the number of workers.

    Attributes:
        num_workers: Data-parallel Ray Train workers per trial (DDP when > 1).
        use_gpu: Give each worker a GPU share.
        cpus_per_worker: CPUs reserved per worker.
        gpus_per_worker: GPU share per worker. ``auto``: measured by a probe of each model,
            input size, batch size and precision on a GPU of the cluster before the first
            trial, and packed in steps of 1/8 (README, "Running on GPUs"); a number fixes it
            (fractions such as 0.25 let small models share a GPU; 0 means a whole GPU).
        in_process: Run single-worker trials inside the Tune trial, without a worker group.
        reuse_actors: Start the next in-process trial in the process of one that ended (Tune's
            ``reuse_actors``), saving a process start and the import of torch: several seconds
            per trial. ``auto``: on the local Ray a sweep starts itself, not on a cluster it
            joins (``--address``), where Tune keeps feeding a reused process and leaves nodes
            that join mid-sweep idle; ``true`` suits a cluster of fixed size.
        max_concurrent_trials: Upper bound; by default derived from the cluster's resources.
        max_failures: Restarts of a trial (from its latest checkpoint) after a worker dies.
    """

    num_workers: int = positive(1)
    use_gpu: bool = False
    cpus_per_worker: float = non_negative(1.0)
    gpus_per_worker: Union[float, Literal["auto"]] = checked("auto", _gpu_share)
    in_process: bool = True
    reuse_actors: Union[bool, Literal["auto"]] = checked("auto", _auto_or_bool)
    max_concurrent_trials: Optional[int] = at_least_one()
    max_failures: int = non_negative(1)

    def check_fields(self) -> None:
        super().check_fields()
        if self.gpus_per_worker != "auto" and self.gpus_per_worker > 0 and not self.use_gpu:
            raise FieldError("gpus_per_worker", " is set but scaling.use_gpu is false")

    @property
    def single_in_process(self) -> bool:
        """One worker, trained inside the Tune trial's own process (no Train worker group)."""
        return self.num_workers == 1 and self.in_process

    @property
    def worker_resources(self) -> dict[str, float]:
        """Ray resources of one worker: its CPUs, plus its GPU share when ``use_gpu``."""
        resources = {"CPU": self.cpus_per_worker}
        if self.use_gpu:  # auto: a whole GPU until the sweep's probe gives each trial its share
            share = self.gpus_per_worker
            resources["GPU"] = 1.0 if share == "auto" else share or 1.0
        return resources


@dataclass(frozen=True)
class SearchSpace(Checked):
    """The Optuna space around the paper's defaults (which are evaluated first).

    Attributes:
        options: Values to try for a model's tunable options, by option name (e.g.
            ``{stride: [2, 3, 4]}``); an option left out uses the values its model declares.
    """

    lr_min: float = positive(1e-5)
    lr_max: float = positive(1e-2)
    batch_sizes: tuple[int, ...] = distinct(lambda: (8, 15, 16, 32, 64), _positive_int,
                                            if_empty=_NO_INTS)
    options: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def check_fields(self) -> None:
        super().check_fields()
        if not self.lr_min < self.lr_max:
            raise FieldError("lr_min", f" must be < lr_max, got {self.lr_min} and {self.lr_max}")
        for key, values in self.options.items():
            problem = _option_values(values)
            if problem:
                raise FieldError(f"options.{key}", problem)


@dataclass(frozen=True)
class SweepConfig(Checked):
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
        max_retries: Times ``--resume`` retries a trial that crashed (counted across
            resumes); a trial that crashed more often stays ``crashed`` until
            ``--resume --retry-crashed`` gives it as many retries again.
    """

    mode: Literal["paper", "optuna"] = "paper"
    models: tuple[str, ...] = distinct(lambda: (DEFAULT_MODEL,), _model,
                                       if_empty=" must list at least one model")
    scenarios: tuple[str, ...] = distinct(tuple)
    seeds: tuple[int, ...] = distinct(lambda: (0,), _seed, if_empty=" must list at least one seed")
    num_samples: int = positive(4)
    metric: str = checked(schema.VAL_BALANCED_ACCURACY, _sweep_metric)
    metric_mode: Literal["max", "min"] = "max"
    asha: bool = True
    grace_period: int = positive(1)
    reduction_factor: int = positive(2)
    time_budget_s: Optional[float] = at_least_one()
    rois: tuple[Roi, ...] = distinct(tuple, _roi)
    max_concurrent_per_study: int = positive(2)
    progress_interval_s: float = positive(30.0)
    max_retries: int = non_negative(2)
    space: SearchSpace = field(default_factory=SearchSpace)


@dataclass(frozen=True)
class CamConfig(Checked):
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
    select: Literal["per_class", "all", "misclassified"] = "per_class"
    per_class: int = positive(4)
    method: str = checked("auto", _cam_method)
    batch_size: int = positive(16)
    images: bool = True


@dataclass(frozen=True)
class MlflowConfig(Checked):
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

    tracking_uri: Optional[str] = checked(None, _tracking_uri)
    experiment: Optional[str] = None
    check_timeout_s: float = positive(5.0)


@dataclass(frozen=True)
class TrackingConfig(Checked):
    """Experiment trackers that mirror the results store (off by default)."""

    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


@dataclass(frozen=True)
class Spec(Checked):
    """One job: a name, a model, data and training settings, and where results go."""

    name: str = checked("train", _spec_name)
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
                               local_cache_dir=_absolute(data.local_cache_dir),
                               test_from=test_from)
    model = dataclasses.replace(spec.model, weights_dir=_absolute(spec.model.weights_dir),
                                weights=_absolute(spec.model.weights))
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
