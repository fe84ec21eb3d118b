"""Value ranges and choices of a spec that its types alone cannot express."""
from __future__ import annotations

from typing import Any

from raybench import schema
from raybench.config.spec import Spec, to_dict
from raybench.errors import ConfigError
from raybench.models import names as model_names
from raybench.safeyaml import short


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
