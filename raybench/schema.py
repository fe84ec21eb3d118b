"""The one place that names result tables, manifest columns and their pyarrow schemas.

Every other module refers to columns through the constants here, so a rename is one edit and
``pandas.read_parquet`` on any table folder sees the same columns raybench writes.
"""
from __future__ import annotations

import pyarrow as pa

#: The paper's label vocabulary, in the order used for class indices everywhere.
LABELS: tuple[str, ...] = ("normal", "bacteria", "viral", "covid19")
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Labels a manifest may hold: the paper's four plus ``pneumonia`` (type unknown, as in COVIDx's
#: 3-class labelling). A scenario's class list may merge labels (bacteria + viral -> pneumonia).
MANIFEST_LABELS: tuple[str, ...] = LABELS + ("pneumonia",)

# --- manifest (DESIGN.md section 4) -------------------------------------------------------
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

MANIFEST_SCHEMA = pa.schema(
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
    ]
)
MANIFEST_COLUMNS: tuple[str, ...] = tuple(MANIFEST_SCHEMA.names)

# --- results tables -----------------------------------------------------------------------
TRIAL_ID = "trial_id"
SWEEP = "sweep"
MODEL = "model"
SCENARIO = "scenario"
SEED = "seed"

TABLES: tuple[str, ...] = ("runs", "metrics", "epochs", "predictions")

RUNS_SCHEMA = pa.schema(
    [
        pa.field(SWEEP, pa.string()),
        pa.field(TRIAL_ID, pa.string()),
        pa.field(MODEL, pa.string()),
        pa.field(SCENARIO, pa.string()),
        pa.field(SEED, pa.int64()),
        pa.field("lr", pa.float64()),
        pa.field("batch_size", pa.int64()),
        pa.field("epochs", pa.int64()),
        pa.field("stride", pa.int64()),  # a model option (CNN-X's pooling stride); else null
        pa.field("image_size", pa.int64()),
        pa.field("pretrained", pa.bool_()),
        pa.field("params", pa.int64()),
        pa.field("epochs_run", pa.int64()),
        pa.field("wall_s", pa.float64()),
        pa.field("train_images_per_s", pa.float64()),
        pa.field("device", pa.string()),
        pa.field("precision", pa.string()),
        pa.field("num_workers", pa.int64()),
        pa.field("raybench_version", pa.string()),
        pa.field("torch_version", pa.string()),
        pa.field("ray_version", pa.string()),
        pa.field("timm_version", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("skipped_images", pa.string()),  # JSON list of {path, reason} (on_bad_image=skip)
        pa.field("roi", pa.string()),  # data.roi: full | lungs_only | outside_lungs
        pa.field("test_from", pa.string()),  # the test set's origin: scenario test_from or file
        pa.field("test_sources", pa.string()),  # comma-separated sources of the test images
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("node", pa.string()),  # Ray node id / host the trial ran on
        pa.field("accelerator", pa.string()),  # GPU name or "cpu"
    ]
)

METRICS_SCHEMA = pa.schema(
    [
        pa.field(SWEEP, pa.string()),
        pa.field(TRIAL_ID, pa.string()),
        pa.field(SPLIT, pa.string()),
        pa.field(SOURCE, pa.string()),  # null: the whole split; else one source's images
        pa.field("class", pa.string()),  # a label, or "all" for whole-set metrics
        pa.field("metric", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
    ]
)

EPOCHS_SCHEMA = pa.schema(
    [
        pa.field(SWEEP, pa.string()),
        pa.field(TRIAL_ID, pa.string()),
        pa.field("epoch", pa.int64()),
        pa.field("train_loss", pa.float64()),
        pa.field("val_loss", pa.float64()),
        pa.field("val_accuracy", pa.float64()),
        pa.field("val_balanced_accuracy", pa.float64()),
        pa.field("val_macro_auc", pa.float64()),
        pa.field("lr", pa.float64()),
        pa.field("seconds", pa.float64()),
        pa.field("train_images_per_s", pa.float64()),
    ]
)


def predictions_schema(labels: tuple[str, ...] | list[str]) -> pa.Schema:
    """Schema of the predictions table: one probability column ``p_<label>`` per class."""
    fields = [
        pa.field(SWEEP, pa.string()),
        pa.field(TRIAL_ID, pa.string()),
        pa.field(SPLIT, pa.string()),  # test (and val, for selecting on validation)
        pa.field(IMAGE_ID, pa.string()),
        pa.field(PATIENT_ID, pa.string()),  # clusters of the patient bootstrap
        pa.field(SOURCE, pa.string()),
        pa.field(LABEL, pa.string()),
        pa.field("predicted", pa.string()),
    ]
    fields += [pa.field(f"p_{name}", pa.float64()) for name in labels]
    return pa.schema(fields)


TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "runs": RUNS_SCHEMA,
    "metrics": METRICS_SCHEMA,
    "epochs": EPOCHS_SCHEMA,
}

# --- columns the results API refers to (metrics, predictions, epochs, runs) ---------------
CLASS = "class"
METRIC = "metric"
VALUE = "value"
CI_LOW = "ci_low"
CI_HIGH = "ci_high"
PREDICTED = "predicted"
EPOCH = "epoch"
STATUS = "status"
PROB_PREFIX = "p_"
TRAIN_IMAGES_PER_S = "train_images_per_s"
EPOCHS = "epochs"
LR = "lr"
BATCH_SIZE = "batch_size"
#: Model-option columns of the runs table: one per option any model declares
#: (``raybench.models.names.MODEL_OPTIONS``; a test keeps the two in step).
MODEL_OPTION_COLUMNS: tuple[str, ...] = ("stride",)
#: What an Optuna sweep searches: lr, batch size and the tunable model options.
SEARCHED: tuple[str, ...] = (LR, BATCH_SIZE) + MODEL_OPTION_COLUMNS
#: Hyperparameter columns of the runs table (what a sweep varies).
HYPERPARAMETERS: tuple[str, ...] = ("lr", "batch_size", "epochs", "stride", "image_size",
                                    "pretrained")

# --- CAM tensors: <root>/<sweep>/cams/<trial_id>.npz (DESIGN.md section 4) ------------------
#: Array keys of a CAM NPZ file. ``cams`` is float16 (N, h, w); ``images`` (optional) is the
#: uint8 grayscale input (N, H, W) the maps explain; the rest are (N,) strings or scalars.
CAM_KEYS: tuple[str, ...] = ("image_ids", "labels", "predicted", "cams", "method",
                             "target_layer", "input_size", "images")
