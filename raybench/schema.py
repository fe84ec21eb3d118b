"""The one place that names result tables, manifest columns and their pyarrow schemas.

Every other module refers to columns through the constants here, so a rename is one edit and
``pandas.read_parquet`` on any table folder sees the same columns raybench writes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import pyarrow as pa

#: The paper's label vocabulary, in the order used for class indices everywhere.
LABELS: tuple[str, ...] = ("normal", "bacteria", "viral", "covid19")
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Labels a manifest may hold: the paper's four plus ``pneumonia`` (type unknown, as in COVIDx's
#: 3-class labelling). A scenario's class list may merge labels (bacteria + viral -> pneumonia).
MANIFEST_LABELS: tuple[str, ...] = LABELS + ("pneumonia",)

# --- manifest (README, "Data") ----------------------------------------------------------------
IMAGE_ID = "image_id"
PATH = "path"
LABEL = "label"
PATIENT_ID = "patient_id"
SOURCE = "source"
SPLIT = "split"
SHA256 = "sha256"
WIDTH = "width"
HEIGHT = "height"
MASK_PATH = "mask_path"
#: The projection as the dataset states it (``PA``, ``AP``, ``LATERAL``, ...); null when unknown.
VIEW = "view"


def _manifest_schema() -> pa.Schema:
    """The manifest's schema (:data:`MANIFEST_SCHEMA`)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(IMAGE_ID, pa.string(), nullable=False),
            pa.field(PATH, pa.string(), nullable=False),
            pa.field(LABEL, pa.string(), nullable=False),
            pa.field(PATIENT_ID, pa.string(), nullable=False),
            pa.field(SOURCE, pa.string(), nullable=False),
            pa.field(SPLIT, pa.string()),
            pa.field(SHA256, pa.string(), nullable=False),
            pa.field(WIDTH, pa.int32(), nullable=False),
            pa.field(HEIGHT, pa.int32(), nullable=False),
            pa.field(MASK_PATH, pa.string()),
            pa.field(VIEW, pa.string()),
        ]
    )


# --- results tables -----------------------------------------------------------------------
RUNS_TABLE = "runs"
METRICS_TABLE = "metrics"
EPOCHS_TABLE = "epochs"
PREDICTIONS_TABLE = "predictions"
TABLES: tuple[str, ...] = (RUNS_TABLE, METRICS_TABLE, EPOCHS_TABLE, PREDICTIONS_TABLE)

# Columns: every result-table column is named here once; other modules use these constants
# (tests/test_seams.py fails on a column spelt as a literal anywhere else in raybench/).
TRIAL_ID = "trial_id"
SWEEP = "sweep"
# runs
MODEL = "model"
SCENARIO = "scenario"
SEED = "seed"
LR = "lr"
BATCH_SIZE = "batch_size"
EPOCHS = "epochs"
IMAGE_SIZE = "image_size"
PRETRAINED = "pretrained"
PARAMS = "params"
EPOCHS_RUN = "epochs_run"
WALL_S = "wall_s"
TRAIN_IMAGES_PER_S = "train_images_per_s"
DEVICE = "device"
PRECISION = "precision"
NUM_WORKERS = "num_workers"
RAYBENCH_VERSION = "raybench_version"
TORCH_VERSION = "torch_version"
RAY_VERSION = "ray_version"
TIMM_VERSION = "timm_version"
#: What the model name built (``torchvision.resnet50``, ``timm.convnext_tiny.in12k_ft_in1k``),
#: the version of its library (``timm 1.0.31``), and the SHA-256 of a ``model.weights`` file.
MODEL_RESOLVED = "model_resolved"
MODEL_LIBRARY = "model_library"
WEIGHTS_SHA256 = "weights_sha256"
STATUS = "status"
ERROR = "error"
SKIPPED_IMAGES = "skipped_images"
ROI = "roi"
TEST_FROM = "test_from"
TEST_SOURCES = "test_sources"
STARTED_AT = "started_at"
FINISHED_AT = "finished_at"
NODE = "node"
ACCELERATOR = "accelerator"
GPU_SHARE = "gpu_share"
CHANNELS_LAST = "channels_last"
DATA_ON_DEVICE = "data_on_device"
COMPILE = "compile"
PEAK_MEMORY_BYTES = "peak_memory_bytes"
# metrics (and SPLIT, SOURCE above)
CLASS = "class"
METRIC = "metric"
VALUE = "value"
CI_LOW = "ci_low"
CI_HIGH = "ci_high"
# epochs (and LR, TRAIN_IMAGES_PER_S above)
EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
VAL_BALANCED_ACCURACY = "val_balanced_accuracy"
VAL_MACRO_AUC = "val_macro_auc"
SECONDS = "seconds"
# predictions (and SPLIT, IMAGE_ID, PATIENT_ID, SOURCE, LABEL above)
PREDICTED = "predicted"
#: Prefix of the predictions table's per-class probability columns (``p_<label>``).
PROB_PREFIX = "p_"

#: Values of the runs table's ``status`` column.
STATUS_COMPLETED = "completed"
STATUS_STOPPED = "stopped"
STATUS_INTERRUPTED = "interrupted"
#: The trial failed on its spec or its data (``ConfigError``, ``DataError``): final.
STATUS_ERROR = "error"
#: The trial failed for any other reason (a lost node beyond ``scaling.max_failures``, a
#: killed process, out of memory): ``--resume`` retries it under the same trial id.
STATUS_CRASHED = "crashed"


def prob_column(label: str) -> str:
    """The predictions column holding the probability of ``label``."""
    return f"{PROB_PREFIX}{label}"


#: The runs table's own columns and their types, pyarrow-free; :func:`runs_schema` adds the
#: model options after ``epochs``.
_RUNS_FIELDS: tuple[tuple[str, str], ...] = (
    (SWEEP, "string"),
    (TRIAL_ID, "string"),
    (MODEL, "string"),
    (SCENARIO, "string"),
    (SEED, "int64"),
    (LR, "float64"),
    (BATCH_SIZE, "int64"),
    (EPOCHS, "int64"),
    (IMAGE_SIZE, "int64"),
    (PRETRAINED, "bool"),
    (PARAMS, "int64"),
    (EPOCHS_RUN, "int64"),
    (WALL_S, "float64"),
    (TRAIN_IMAGES_PER_S, "float64"),
    (DEVICE, "string"),
    (PRECISION, "string"),
    (NUM_WORKERS, "int64"),
    (RAYBENCH_VERSION, "string"),
    (TORCH_VERSION, "string"),
    (RAY_VERSION, "string"),
    (TIMM_VERSION, "string"),
    (MODEL_RESOLVED, "string"),  # what the model name built (timm.convnext_tiny...)
    (MODEL_LIBRARY, "string"),  # its library and version (timm 1.0.31)
    (WEIGHTS_SHA256, "string"),  # model.weights: the file's SHA-256
    (STATUS, "string"),
    (ERROR, "string"),
    (SKIPPED_IMAGES, "string"),  # JSON list of {path, reason} (on_bad_image=skip)
    (ROI, "string"),  # data.roi: full | lungs_only | outside_lungs
    (TEST_FROM, "string"),  # the test set's origin: scenario test_from or file
    (TEST_SOURCES, "string"),  # comma-separated sources of the test images
    (STARTED_AT, "timestamp"),
    (FINISHED_AT, "timestamp"),
    (NODE, "string"),  # Ray node id / host the trial ran on
    (ACCELERATOR, "string"),  # GPU name or "cpu"
    (GPU_SHARE, "float64"),  # GPU share per worker; null without a GPU
    (CHANNELS_LAST, "bool"),  # the training settings the trial used, resolved for its device
    (DATA_ON_DEVICE, "bool"),
    (COMPILE, "bool"),
    (PEAK_MEMORY_BYTES, "int64"),  # torch.cuda.max_memory_allocated; null on a CPU
)

# --- model options: runs-table columns that only models/ names ------------------------------
#: One int64 column of the runs table per architecture option a model declares (null for the
#: models without it). :mod:`raybench.models.table` adds each as it registers its entries,
#: at import time like every registry; the names below read them.
_MODEL_OPTIONS: list[str] = []


def add_model_option(name: str) -> None:
    """Adds the runs-table column of a model option (once, whichever models declare it).

    Raises:
        ValueError: ``name`` is already one of the runs table's own columns.
    """
    if any(column == name for column, _ in _RUNS_FIELDS):
        raise ValueError(f"model option {name!r} would shadow the runs column {name!r}")
    if name not in _MODEL_OPTIONS:
        _MODEL_OPTIONS.append(name)


def runs_schema() -> pa.Schema:
    """The runs table's schema: its own columns, with the model options after ``epochs``."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(),
             "bool": pa.bool_(), "timestamp": pa.timestamp("us", tz="UTC")}
    at = next(i for i, (column, _) in enumerate(_RUNS_FIELDS) if column == EPOCHS) + 1
    fields = [*_RUNS_FIELDS[:at], *((name, "int64") for name in _MODEL_OPTIONS),
              *_RUNS_FIELDS[at:]]
    return pa.schema([pa.field(column, types[kind]) for column, kind in fields])


def _metrics_schema() -> pa.Schema:
    """The metrics table's schema (:data:`METRICS_SCHEMA`)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(SWEEP, pa.string()),
            pa.field(TRIAL_ID, pa.string()),
            pa.field(SPLIT, pa.string()),
            pa.field(SOURCE, pa.string()),  # null: the whole split; else one source's images
            pa.field(CLASS, pa.string()),  # a label, or "all" for whole-set metrics
            pa.field(METRIC, pa.string()),
            pa.field(VALUE, pa.float64()),
            pa.field(CI_LOW, pa.float64()),
            pa.field(CI_HIGH, pa.float64()),
        ]
    )


def _epochs_schema() -> pa.Schema:
    """The epochs table's schema (:data:`EPOCHS_SCHEMA`)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(SWEEP, pa.string()),
            pa.field(TRIAL_ID, pa.string()),
            pa.field(EPOCH, pa.int64()),
            pa.field(TRAIN_LOSS, pa.float64()),
            pa.field(VAL_LOSS, pa.float64()),
            pa.field(VAL_ACCURACY, pa.float64()),
            pa.field(VAL_BALANCED_ACCURACY, pa.float64()),
            pa.field(VAL_MACRO_AUC, pa.float64()),
            pa.field(LR, pa.float64()),
            pa.field(SECONDS, pa.float64()),
            pa.field(TRAIN_IMAGES_PER_S, pa.float64()),
        ]
    )


def predictions_schema(labels: tuple[str, ...] | list[str]) -> pa.Schema:
    """Schema of the predictions table: one probability column ``p_<label>`` per class."""
    import pyarrow as pa

    fields = [
        pa.field(SWEEP, pa.string()),
        pa.field(TRIAL_ID, pa.string()),
        pa.field(SPLIT, pa.string()),  # test (and val, for selecting on validation)
        pa.field(IMAGE_ID, pa.string()),
        pa.field(PATIENT_ID, pa.string()),  # clusters of the patient bootstrap
        pa.field(SOURCE, pa.string()),
        pa.field(LABEL, pa.string()),
        pa.field(PREDICTED, pa.string()),
    ]
    fields += [pa.field(prob_column(name), pa.float64()) for name in labels]
    return pa.schema(fields)


# The pyarrow objects are built on first use (PEP 562), so that reading a name from this module
# imports no pyarrow: the CLI's parser and spec validation read names only.
MANIFEST_SCHEMA: pa.Schema
MANIFEST_COLUMNS: tuple[str, ...]
RUNS_SCHEMA: pa.Schema
METRICS_SCHEMA: pa.Schema
EPOCHS_SCHEMA: pa.Schema
TABLE_SCHEMAS: dict[str, pa.Schema]
MODEL_OPTION_COLUMNS: tuple[str, ...]
SEARCHED: tuple[str, ...]
HYPERPARAMETERS: tuple[str, ...]
_LAZY: dict[str, Callable[[], Any]] = {
    "MANIFEST_SCHEMA": _manifest_schema,
    "MANIFEST_COLUMNS": lambda: tuple(_lazy("MANIFEST_SCHEMA").names),
    "METRICS_SCHEMA": _metrics_schema,
    "EPOCHS_SCHEMA": _epochs_schema,
}


def _lazy(name: str) -> Any:
    """The object :data:`_LAZY` builds for ``name``, built once."""
    if name not in globals():
        globals()[name] = _LAZY[name]()
    return globals()[name]


def _following_options(name: str) -> Any:
    """The names that follow the model options registered so far, read like constants:

    * ``RUNS_SCHEMA``: :func:`runs_schema`; ``TABLE_SCHEMAS``: table name -> schema (the
      predictions' depends on the labels: :func:`predictions_schema`);
    * ``MODEL_OPTION_COLUMNS``: the model-option columns, in the order models declared them;
    * ``SEARCHED``: what an Optuna sweep searches (lr, batch size, the model options);
    * ``HYPERPARAMETERS``: the runs table's hyperparameter columns (what a sweep varies).
    """
    options = tuple(_MODEL_OPTIONS)
    if name == "RUNS_SCHEMA":
        return runs_schema()
    if name == "TABLE_SCHEMAS":
        return {RUNS_TABLE: runs_schema(), METRICS_TABLE: _lazy("METRICS_SCHEMA"),
                EPOCHS_TABLE: _lazy("EPOCHS_SCHEMA")}
    if name == "MODEL_OPTION_COLUMNS":
        return options
    if name == "SEARCHED":
        return (LR, BATCH_SIZE) + options
    if name == "HYPERPARAMETERS":
        return (LR, BATCH_SIZE, EPOCHS) + options + (IMAGE_SIZE, PRETRAINED)
    raise AttributeError(f"module 'raybench.schema' has no attribute {name!r}")


if not TYPE_CHECKING:  # type checkers read the declarations above
    def __getattr__(name: str) -> Any:
        if name in _LAZY:
            return _lazy(name)
        return _following_options(name)


#: Columns every row of a table must carry (``ResultStore.write_table`` refuses a row without
#: one; it adds ``sweep`` and ``trial_id`` itself). Chosen from what every writer provides:
#: completed and stopped/errored run rows, metric and CAM/ROI metric rows, epoch history rows
#: and prediction rows. The predictions table also requires each ``p_<label>`` column of its
#: schema (see :func:`required_columns`); the other columns are filled with null when absent.
REQUIRED: dict[str, tuple[str, ...]] = {
    RUNS_TABLE: (SWEEP, TRIAL_ID, MODEL, SCENARIO, SEED, STATUS),
    METRICS_TABLE: (SWEEP, TRIAL_ID, SPLIT, CLASS, METRIC, VALUE),
    EPOCHS_TABLE: (SWEEP, TRIAL_ID, EPOCH),
    PREDICTIONS_TABLE: (SWEEP, TRIAL_ID, SPLIT, IMAGE_ID, LABEL, PREDICTED),
}


def required_columns(table: str, schema: pa.Schema) -> tuple[str, ...]:
    """The columns a row of ``table`` (written with ``schema``) must have.

    Args:
        table: A name from :data:`TABLES`.
        schema: The table's schema (for predictions, the one with its ``p_<label>`` columns).

    Returns:
        :data:`REQUIRED`'s columns, plus the probability columns for predictions.
    """
    probs = tuple(n for n in schema.names if n.startswith(PROB_PREFIX))
    return REQUIRED[table] + (probs if table == PREDICTIONS_TABLE else ())


# --- CAM tensors: <root>/<sweep>/cams/<trial_id>.npz (README, "Results, reports and CAMs") --
#: Array keys of a CAM NPZ file. ``cams`` is float16 (N, h, w); ``images`` (optional) is the
#: uint8 grayscale input (N, H, W) the maps explain; the rest are (N,) strings or scalars.
CAM_KEYS: tuple[str, ...] = ("image_ids", "labels", PREDICTED, "cams", "method",
                             "target_layer", "input_size", "images")
