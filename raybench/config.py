"""Typed, frozen configuration: YAML spec files, ``--set a.b=c`` overrides and validation.

Every knob lives in a frozen dataclass. A spec file is YAML whose keys mirror the dataclass
fields; unknown keys, wrong types and out-of-range values fail at load time with the file, the
key and what is allowed. Configs cross into Ray as plain dicts (:func:`to_dict`) and are rebuilt
with :func:`from_dict` on the other side.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from raybench import safeyaml, schema
from raybench.errors import ConfigError
from raybench.models import names as model_names
from raybench.safeyaml import short


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


_CHOICES: dict[str, tuple[str, ...]] = {
    "data.on_bad_image": ("fail", "skip"),
    "data.roi": ("full", "lungs_only", "outside_lungs"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("fp32", "bf16"),
    "train.compile_mode": ("default", "reduce-overhead", "max-autotune",
                           "max-autotune-no-cudagraphs"),
    "sweep.mode": ("paper", "optuna"),
    "sweep.metric_mode": ("max", "min"),
    "sweep.metric": (schema.VAL_BALANCED_ACCURACY, schema.VAL_ACCURACY, schema.VAL_MACRO_AUC,
                     schema.VAL_LOSS, schema.TRAIN_LOSS),
    "cam.select": ("per_class", "all", "misclassified"),
    # raybench.cam.METHODS (tested equal)
    "cam.method": ("auto", "cam", model_names.CNNX_CAM_METHOD, "gradcam"),
}


def load_spec(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Loads a YAML spec (or the defaults) and applies ``key=value`` overrides.

    Args:
        path: YAML file; ``None`` starts from the defaults.
        overrides: ``a.b=c`` strings; values are parsed as YAML scalars (``3e-4``, ``true``).

    Raises:
        ConfigError: Unreadable or malformed file, unknown key, wrong type, invalid value.
    """
    raw = _read_yaml(Path(path)) if path else {}
    for item in overrides:
        _apply_override(raw, item)
    where = str(path) if path else "--set"
    if path and overrides:
        where = f"{path} with --set"
    spec = from_dict(Spec, raw, where=where)
    validate(spec, where=where)
    return spec


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"spec file {path} does not exist")
    data = safeyaml.load_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a spec must be a mapping of keys, got {type(data).__name__}")
    return data


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {short(item)}: expected key=value, e.g. train.lr=1e-3")
    try:
        value = safeyaml.safe_load(text, f"--set {key.strip()}") if text.strip() else None
    except ConfigError as exc:
        if "YAML syntax error" not in str(exc):
            raise
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {short(item)}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


#: Keys that moved, so an old spec gets the new name instead of "unknown key".
_RENAMED = {"model.cnnx_stride": "model.options.stride",
            "sweep.space.cnnx_strides": "sweep.space.options.stride"}


def from_dict(cls: type, data: Any, where: str = "spec", prefix: str = "") -> Any:
    """Builds dataclass ``cls`` from a nested mapping, checking keys and types.

    Raises:
        ConfigError: Naming the key path, the source and what is allowed.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'spec'} must be a mapping, got {short(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if prefix + str(key) in _RENAMED:
            raise ConfigError(f"{where}: {prefix + str(key)!r} is now "
                              f"{_RENAMED[prefix + str(key)]!r}")
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}: unknown key {prefix + str(key)!r}{hint}; allowed: {', '.join(names)}"
            )
    kwargs = {k: _convert(hints[k], v, where, f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where, key)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, prefix=f"{key}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {short(value)}")
        inner = typing.get_args(tp)[1]
        return {str(k): _convert(inner, v, where, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {short(value)}")
        inner = typing.get_args(tp)[0]
        return tuple(_convert(inner, v, where, f"{key}[{i}]") for i, v in enumerate(value))
    return _scalar(tp, value, where, key)


def _scalar(tp: Any, value: Any, where: str, key: str) -> Any:
    number: Optional[float] = None
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif tp is float and isinstance(value, str):
        try:
            number = float(value)  # YAML 1.1 reads "3e-4" as a string
        except ValueError:
            pass
    if number is not None:
        if not math.isfinite(number):
            raise ConfigError(f"{where}: {key} must be a finite number, got {short(value)}")
        return number
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: {key} must be {tp.__name__}, got {short(value)}")


#: Largest input side accepted (pixels). The decoded cache holds every image at this size
#: (10,000 images at 1024 px are 10 GB) and activations grow with its square: a VGG-16 batch
#: of 15 at 1024 px needs over 40 GB; the paper's models are built for 224-299 px.
MAX_IMAGE_SIZE = 1024
_POSITIVE = ("train.epochs", "train.batch_size", "train.lr",
             "data.synthetic.per_class", "data.synthetic.size", "scaling.num_workers",
             "sweep.num_samples", "sweep.grace_period", "sweep.reduction_factor",
             "sweep.space.lr_min", "sweep.space.lr_max", "cam.per_class", "cam.batch_size",
             "sweep.max_concurrent_per_study")
_NON_NEGATIVE = ("train.seed", "train.weight_decay", "data.split_seed", "data.synthetic.seed",
                 "scaling.cpus_per_worker", "scaling.gpus_per_worker", "scaling.max_failures")
_AT_LEAST_ONE = ("train.num_threads", "scaling.max_concurrent_trials", "sweep.time_budget_s")


def validate(spec: Spec, where: str = "spec") -> None:
    """Checks value ranges and choices that types alone cannot express.

    Raises:
        ConfigError: Naming the key, the bad value (a short prefix of it) and what is allowed.
    """
    flat = _flatten(to_dict(spec))
    for key, allowed in _CHOICES.items():
        if flat[key] not in allowed:
            raise ConfigError(f"{where}: {key}={short(flat[key])}; allowed: {', '.join(allowed)}")
    _validate_ranges(flat, where)
    _validate_sweep(spec, where)
    _validate_tracking(spec, where)
    if not spec.name or "/" in spec.name:
        raise ConfigError(f"{where}: name must be a non-empty string without '/', got "
                          f"{short(spec.name)}")
    if spec.data.scenario:
        _check_scenario(spec.data.scenario, where, "data.scenario")
    _check_list(where, "data.labels", spec.data.labels)
    unknown = [lab for lab in spec.data.labels if lab not in schema.LABELS]
    if unknown or len(spec.data.labels) < 2:
        raise ConfigError(f"{where}: data.labels={short(list(spec.data.labels))}; need >= 2 of "
                          f"{', '.join(schema.LABELS)}")


def _validate_ranges(flat: dict[str, Any], where: str) -> None:
    for key in _POSITIVE:
        if flat[key] <= 0:
            raise ConfigError(f"{where}: {key} must be > 0, got {flat[key]!r}")
    for key in _NON_NEGATIVE:
        if flat[key] < 0:
            raise ConfigError(f"{where}: {key} must be >= 0, got {flat[key]!r}")
    for key in _AT_LEAST_ONE:
        if flat[key] is not None and flat[key] < 1:
            raise ConfigError(f"{where}: {key} must be >= 1 (or left unset), got {flat[key]!r}")
    for key in ("data.val_fraction", "data.test_fraction", "data.synthetic.marker_leak"):
        if not 0.0 <= flat[key] < 1.0 + (key.endswith("leak")):
            raise ConfigError(f"{where}: {key} must be in [0, 1), got {flat[key]!r}")
    for key, low in (("model.image_size", 16), ("data.synthetic.size", 1)):
        size = flat[key]
        if size is not None and not low <= size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"{where}: {key} must be in [{low}, {MAX_IMAGE_SIZE}] px, got "
                              f"{size} (larger inputs multiply cache and GPU memory; the "
                              "paper's models use 224-299 px)")


def _check_list(where: str, key: str, values: tuple[Any, ...]) -> None:
    """No empty and no repeated entries (a repeat would run or count the same thing twice)."""
    for i, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ConfigError(f"{where}: {key}[{i}] is empty")
        if value in values[:i]:
            raise ConfigError(f"{where}: {key} lists {short(value)} twice; each entry once")


def _check_scenario(name: str, where: str, key: str) -> None:
    from raybench.data.scenarios import get_scenario  # pandas, not torch

    try:
        get_scenario(name)  # an unknown name fails here, listing the valid ones
    except ConfigError as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None


def _validate_sweep(spec: Spec, where: str) -> None:
    sweep = spec.sweep
    for key in ("models", "seeds", "scenarios", "rois"):
        _check_list(where, f"sweep.{key}", getattr(sweep, key))
    if not sweep.models:
        raise ConfigError(f"{where}: sweep.models must list at least one model")
    for name in sweep.models + (spec.model.name,):
        if name not in model_names.MODEL_NAMES:
            raise ConfigError(f"{where}: {model_names.unknown_model_message(name)}")
    for i, name in enumerate(sweep.scenarios):
        _check_scenario(name, where, f"sweep.scenarios[{i}]")
    bad_roi = [r for r in sweep.rois if r not in _CHOICES["data.roi"]]
    if bad_roi:
        raise ConfigError(f"{where}: sweep.rois has {short(bad_roi[0])}; allowed: "
                          f"{', '.join(_CHOICES['data.roi'])}")
    if min(sweep.seeds, default=0) < 0:
        raise ConfigError(f"{where}: sweep.seeds must be >= 0, got {min(sweep.seeds)}")
    space = sweep.space
    if not space.lr_min < space.lr_max:
        raise ConfigError(f"{where}: sweep.space.lr_min must be < lr_max, got "
                          f"{space.lr_min} and {space.lr_max}")
    lists = [("batch_sizes", space.batch_sizes)]
    lists += [(f"options.{k}", v) for k, v in space.options.items()]
    for key, values in lists:
        if not values or min(values) < 1:
            raise ConfigError(f"{where}: sweep.space.{key} must be a non-empty list of ints >= 1")
        _check_list(where, f"sweep.space.{key}", values)
    if not sweep.seeds:
        raise ConfigError(f"{where}: sweep.seeds must list at least one seed")
    if spec.sweep.max_concurrent_per_study < 1 or not spec.sweep.progress_interval_s > 0:
        raise ConfigError(f"{where}: sweep.max_concurrent_per_study must be >= 1 and "
                          "sweep.progress_interval_s > 0")
    _validate_model_options(spec, where)
    if spec.scaling.gpus_per_worker > 0 and not spec.scaling.use_gpu:
        raise ConfigError(f"{where}: scaling.gpus_per_worker is set but scaling.use_gpu is false")


def _validate_tracking(spec: Spec, where: str) -> None:
    """A tracking URI without credentials, and mlflow installed, before anything runs."""
    import importlib.util
    from urllib.parse import urlparse

    cfg = spec.tracking.mlflow
    if cfg.tracking_uri is None:
        return
    parsed = urlparse(cfg.tracking_uri)
    if "@" in parsed.netloc:  # never echo the URI: the part before '@' may be a secret
        raise ConfigError(f"{where}: tracking.mlflow.tracking_uri must not hold credentials "
                          "(user:secret@); set MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME"
                          " / MLFLOW_TRACKING_PASSWORD in the environment of every node")
    if not cfg.tracking_uri.strip():
        raise ConfigError(f"{where}: tracking.mlflow.tracking_uri is empty; leave it out to "
                          "turn MLflow off")
    if cfg.check_timeout_s <= 0:
        raise ConfigError(f"{where}: tracking.mlflow.check_timeout_s must be > 0, got "
                          f"{cfg.check_timeout_s!r}")
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(f"{where}: tracking.mlflow needs the mlflow package, which is not "
                          "installed: pip install 'raybench[tracking]'")


def _validate_model_options(spec: Spec, where: str) -> None:
    """Every option the spec sets belongs to one of its models, and every value it can
    produce (searched ones included) builds at the spec's image size."""
    names = dict.fromkeys((spec.model.name,) + spec.sweep.models)
    declared = {o.name for n in names for o in model_names.options_of(n)}
    for section, keys in (("model.options", spec.model.options),
                          ("sweep.space.options", spec.sweep.space.options)):
        for key in keys:
            if key not in declared:
                raise ConfigError(f"{where}: {section}.{key}: no model of this spec has an option "
                                  f"{short(key)}; their options: {', '.join(sorted(declared)) or 'none'}")
    for name in names:
        # 224: the default input of every model that has options; build_model checks again
        # with the model's real size.
        size = spec.model.image_size or 224
        for values in _option_values(spec, name):
            try:
                model_names.check_options(name, values, size)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None


def _option_values(spec: Spec, name: str) -> list[dict[str, int]]:
    """The option settings of model ``name`` the spec can produce: its own, plus each searched
    value of each tunable option in ``optuna`` mode."""
    own = model_names.applicable(name, spec.model.options)
    settings = [own]
    if spec.sweep.mode == "optuna" and name in spec.sweep.models:
        for opt in model_names.options_of(name):
            for value in spec.sweep.space.options.get(opt.name, opt.search):
                settings.append({**own, opt.name: value})
    return settings


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
