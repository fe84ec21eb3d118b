"""The manifest: one Parquet row per image, the only thing raybench reads about a dataset.

Paths in a manifest are relative to the folder the manifest file sits in (see
:func:`manifest_root`), or URIs with a scheme such as ``s3://``. Columns and their types come
from :mod:`raybench.schema`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import posixpath
import re
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raybench import schema
from raybench.errors import DataError
from raybench.storage import follow_umask

logger = logging.getLogger(__name__)

#: Image file extensions the importers pick up (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")

#: Spellings of the same projection across datasets -> the ``view`` value raybench stores.
#: Every lateral film is ``LATERAL``: CheXpert's ``Lateral``, PadChest's ``L``, DICOM's and
#: MIMIC's ``LL`` / ``RL`` (left / right lateral), MIMIC's ``XTABLE LATERAL`` (cross-table).
#: Other values are kept upper-cased (MIMIC's ``AP AXIAL``, ``LAO``; PadChest's ``COSTAL``).
VIEW_ALIASES: dict[str, str] = {
    "POSTEROANTERIOR": "PA", "POSTERO_ANTERIOR": "PA", "ANTEROPOSTERIOR": "AP",
    "ANTERO_POSTERIOR": "AP", "L": "LATERAL", "LAT": "LATERAL", "LL": "LATERAL",
    "RL": "LATERAL", "XTABLE LATERAL": "LATERAL", "LEFT LATERAL": "LATERAL",
    "RIGHT LATERAL": "LATERAL",
    "AP_HORIZONTAL": "AP SUPINE", "AP SUPINE": "AP SUPINE",
}

#: Columns a manifest may omit; :func:`validate_manifest` adds them as nulls.
OPTIONAL_COLUMNS: tuple[str, ...] = (schema.SPLIT, schema.MASK_PATH, schema.VIEW)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(
    c for c in schema.MANIFEST_COLUMNS if c not in OPTIONAL_COLUMNS
)
_INT_COLUMNS: tuple[str, ...] = (schema.WIDTH, schema.HEIGHT)
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 of a file's bytes.

    Args:
        path: File to hash.

    Returns:
        64 lowercase hex characters.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_image_id(source: str, rel_path: str) -> str:
    """Build the stable image id ``<source>/<relative path without extension>``.

    Args:
        source: Dataset / hospital name.
        rel_path: Posix path of the image relative to its dataset root.

    Returns:
        The image id.
    """
    return f"{source}/{posixpath.splitext(rel_path)[0]}"


def manifest_root(manifest_path: str | os.PathLike) -> Path:
    """Return the folder a manifest sits in; its relative paths are relative to it.

    Args:
        manifest_path: Path of the manifest Parquet file.

    Returns:
        The manifest's parent folder.
    """
    return Path(manifest_path).parent


# --- views ------------------------------------------------------------------------------------


def normalise_view(value: object) -> str | None:
    """A dataset's projection value as the manifest's ``view``: upper-case, one space between
    words, aliases of :data:`VIEW_ALIASES` resolved; None for a blank / missing value."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return _view(str(value))


@functools.lru_cache(maxsize=1024)  # a dataset has a handful of distinct values, once per row
def _view(value: str) -> str | None:
    text = " ".join(value.split()).upper()
    if not text or text in ("NAN", "NONE", "UNK", "UNKNOWN"):
        return None
    return VIEW_ALIASES.get(text, VIEW_ALIASES.get(text.replace(" ", "_"), text))


# --- validation ------------------------------------------------------------------------------


def _show(value: object) -> str:
    """``repr`` of a cell value, with numpy scalars shown as plain Python values."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _row_name(df: pd.DataFrame, pos: int) -> str:
    """Describe row ``pos`` as ``row N (image_id=...)`` for error messages."""
    return f"row {pos} (image_id={df[schema.IMAGE_ID].iloc[pos]!r})"


def _check_columns(df: pd.DataFrame, where: str) -> None:
    """Raise if a required column is missing or holds nulls."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{where}: manifest lacks required column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}"
        )
    for col in REQUIRED_COLUMNS:
        nulls = df[col].isna().to_numpy().nonzero()[0]
        if len(nulls):
            raise DataError(f"{where}: row {nulls[0]}: column {col!r} is empty; it is required")


def _check_values(df: pd.DataFrame, col: str, allowed: tuple[str, ...], where: str) -> None:
    """Raise naming the first row whose non-null ``col`` value is not in ``allowed``."""
    bad = (df[col].notna() & ~df[col].isin(allowed)).to_numpy().nonzero()[0]
    if len(bad):
        pos = bad[0]
        raise DataError(
            f"{where}: {_row_name(df, pos)}: {col} {df[col].iloc[pos]!r} is not allowed; "
            f"allowed: {', '.join(allowed)}"
        )


def _check_unique_ids(df: pd.DataFrame, where: str) -> None:
    """Raise naming the first duplicated image id."""
    dup = df[schema.IMAGE_ID].duplicated().to_numpy().nonzero()[0]
    if len(dup):
        pos = dup[0]
        raise DataError(
            f"{where}: row {pos}: image_id {df[schema.IMAGE_ID].iloc[pos]!r} is duplicated; "
            "image ids must be unique"
        )


def path_problem(path: str) -> str | None:
    """Say why a manifest path is not allowed, or return None if it is fine.

    A path must be relative and stay inside the manifest's root after normalisation, unless it
    is a URI with a scheme (``s3://bucket/key``).

    Args:
        path: The path as stored in the manifest.

    Returns:
        A short reason, or None.
    """
    if _URI_RE.match(path):
        return None
    posix = path.replace("\\", "/")
    if not posix or posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "is absolute or empty; paths must be relative to the manifest's folder or a URI"
    norm = posixpath.normpath(posix)
    if norm == ".." or norm.startswith("../"):
        return "escapes the manifest's folder ('..'); paths must stay inside it"
    return None


def _check_paths(df: pd.DataFrame, col: str, where: str) -> None:
    """Raise naming the first row whose non-null path in ``col`` is not allowed."""
    for pos, value in enumerate(df[col]):
        if value is None:
            continue
        reason = path_problem(value)
        if reason:
            raise DataError(f"{where}: {_row_name(df, pos)}: {col} {value!r} {reason}")


def _as_strings(series: pd.Series) -> pd.Series:
    """Return ``series`` as object dtype with ``None`` for nulls (same on pandas 2 and 3)."""
    values = [None if _is_null(v) else str(v) for v in series]
    return pd.Series(values, dtype=object)


def _is_null(value: object) -> bool:
    """Return True for None, NaN and pandas' NA / NaT scalars."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))  # type: ignore[call-overload]


def _as_int32(df: pd.DataFrame, col: str, where: str) -> pd.Series:
    """Return ``df[col]`` as int32, raising on non-integer or non-positive values."""
    values = pd.to_numeric(df[col], errors="coerce")
    bad = (values.isna() | (values <= 0) | (values % 1 != 0)).to_numpy().nonzero()[0]
    if len(bad):
        pos = bad[0]
        raise DataError(
            f"{where}: {_row_name(df, pos)}: {col} {_show(df[col].iloc[pos])} is not allowed; "
            "it must be a positive integer (pixels)"
        )
    return values.astype("int32").reset_index(drop=True)


def _normalise(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Add missing optional columns, order columns as the schema does and fix dtypes."""
    columns = {}
    for col in schema.MANIFEST_COLUMNS:
        if col in _INT_COLUMNS:
            columns[col] = _as_int32(df, col, where)
        elif col in df.columns:
            columns[col] = _as_strings(df[col])
        else:
            columns[col] = pd.Series([None] * len(df), dtype=object)
    return pd.DataFrame(columns)


def validate_manifest(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check a manifest and return it with schema column order and dtypes.

    Args:
        df: Candidate manifest.
        where: Where it came from (a file or folder), used in error messages.

    Returns:
        A new frame: columns in ``schema.MANIFEST_COLUMNS`` order, strings as ``object`` with
        ``None`` for nulls, width/height as int32, missing ``split``/``mask_path`` as None.

    Raises:
        DataError: A required column is missing or empty, a label or split is not allowed, an
            image id repeats, a width/height is not a positive integer or a path is absolute or
            escapes the manifest's folder.
    """
    df = df.reset_index(drop=True)
    _check_columns(df, where)
    out = _normalise(df, where)
    _check_values(out, schema.LABEL, schema.MANIFEST_LABELS, where)
    _check_values(out, schema.SPLIT, schema.SPLITS, where)
    _check_unique_ids(out, where)
    _check_paths(out, schema.PATH, where)
    _check_paths(out, schema.MASK_PATH, where)
    return out


# --- reading and writing ---------------------------------------------------------------------


IMAGE_ROOTS_KEY = b"raybench.image_roots"


def write_manifest(df: pd.DataFrame, path: str | os.PathLike,
                   image_roots: Sequence[str | os.PathLike] = ()) -> Path:
    """Validate a manifest and write it as Parquet, atomically.

    The table is written to a temporary file in the destination folder, then moved into
    place, so readers never see a half-written manifest.

    Args:
        df: The manifest.
        path: Destination ``.parquet`` file; its folder is created if needed.
        image_roots: Folders outside the manifest's own folder that its ``file://`` paths may
            point into (the import sources); recorded in the file's metadata.

    Returns:
        The path written.

    Raises:
        DataError: The manifest is invalid.
    """
    path = Path(path)
    table = pa.Table.from_pandas(
        validate_manifest(df, where=str(path)), schema=schema.MANIFEST_SCHEMA, preserve_index=False
    )
    roots = sorted({os.path.realpath(r) for r in image_roots})
    if roots:
        table = table.replace_schema_metadata({IMAGE_ROOTS_KEY: json.dumps(roots).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    follow_umask(fd)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote manifest %s (%d rows)", path, table.num_rows)
    return path


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a manifest Parquet file.

    Args:
        path: The manifest file.

    Returns:
        The validated manifest (see :func:`validate_manifest`).

    Raises:
        DataError: The file is missing, not Parquet, or not a valid manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest file does not exist")
    try:
        df = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet manifest ({exc})") from exc
    return validate_manifest(df, where=str(path))


def image_roots(manifest_path: str | os.PathLike) -> list[Path]:
    """The folders a manifest's images may live in: its own folder plus recorded import roots."""
    meta = pq.read_schema(manifest_path).metadata or {}
    extra = json.loads(meta[IMAGE_ROOTS_KEY]) if IMAGE_ROOTS_KEY in meta else []
    return [Path(os.path.realpath(manifest_root(manifest_path)))] + [Path(r) for r in extra]


def image_files(manifest_path: str | os.PathLike, paths: Sequence[str],
                allow_outside_root: bool = False) -> list[Path]:
    """The local files of a manifest's ``path`` cells, refusing any outside its image roots.

    A manifest may only read below its own folder or the folders it was imported from (see
    :func:`write_manifest`), so a crafted or mistyped row cannot read arbitrary files.

    Raises:
        DataError: A path outside the allowed folders (unless ``allow_outside_root``).
    """
    root = manifest_root(manifest_path)
    files = [resolve_image_path(root, p) for p in paths]
    if allow_outside_root:
        return files
    roots = [str(r) for r in image_roots(manifest_path)]
    for cell, file in zip(paths, files, strict=True):
        real = os.path.realpath(file)
        if not any(os.path.commonpath([r, real]) == r for r in roots):
            raise DataError(f"{manifest_path}: image path {cell!r} is outside the manifest's "
                            f"folders ({', '.join(roots)}); set data.allow_outside_root: true "
                            "to allow it")
    return files


def resolve_image_path(root: str | os.PathLike, path: str) -> Path:
    """Return the local file of a manifest ``path``: ``root / path``, or a ``file://`` URI's file.

    Args:
        root: The manifest's folder (see :func:`manifest_root`).
        path: The ``path`` cell of a manifest row.

    Raises:
        DataError: A URI scheme other than ``file://`` (not readable as a local file).
    """
    if path.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(path).path))
    if _URI_RE.match(path):
        raise DataError(f"{path}: only relative paths and file:// URIs can be read locally")
    return Path(root) / path
