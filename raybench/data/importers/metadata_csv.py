"""A metadata CSV (ieee8023 / Figure1 / Actualmed / Hannover style) plus its image folder."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd

from raybench import schema as S
from raybench.data.importers.common import (
    DEFAULTS,
    SPLIT_NAMES,
    Entry,
    FileFinder,
    ImportOptions,
    ImportResult,
    Labeler,
    Table,
    unmapped_counts,
    pick_col,
    read_csv_tolerant,
    require_dir,
)
from raybench.data.importers.rows import build_rows
from raybench.errors import DataError

log = logging.getLogger(__name__)


_FILE_COLS = ("filename", "file", "image", S.IMAGE_ID, "imagename", "path", "file_name")
_LABEL_COLS = ("finding", S.LABEL, "class", "diagnosis")
_PATIENT_COLS = ("patientid", S.PATIENT_ID, "patient", "subject_id")
_SOURCE_COLS = (S.SOURCE,)


def import_metadata_csv(src: str | os.PathLike, opts: ImportOptions = DEFAULTS
                        ) -> ImportResult:
    """A metadata CSV (one row per image) plus its image folder.

    Columns are given in ``opts`` or found among common names (``filename``, ``finding``,
    ``patientid``, ``source``, ...). Each row's source comes from the source column when there
    is one (a multi-hospital CSV keeps its hospitals apart), else ``opts.source`` or the CSV's
    folder name. A file value may be a path relative to the image folder, a name
    without extension, or a unique file stem anywhere below it.
    """
    path = Path(src)
    if not path.is_file():
        raise DataError(f"{path}: metadata CSV does not exist")
    table = read_csv_tolerant(path)
    df = table.df
    images = require_dir(Path(opts.images) if opts.images else path.parent, "image folder")
    cols = {
        "file": pick_col(df, opts.file_col, _FILE_COLS, "file", path, True),
        S.LABEL: pick_col(df, opts.label_col, _LABEL_COLS, S.LABEL, path, opts.label is None),
        "patient": pick_col(df, opts.patient_col, _PATIENT_COLS, "patient id", path, False),
        S.SPLIT: pick_col(df, opts.split_col, (), S.SPLIT, path, False),
        S.SOURCE: _source_col(df, opts, path),
    }
    if opts.label is not None and opts.label not in S.MANIFEST_LABELS:
        raise DataError(f"label {opts.label!r} is not allowed; allowed: {', '.join(S.MANIFEST_LABELS)}")
    if cols["patient"] is None:
        log.warning("%s: no patient id column; each image is treated as its own patient", path)
    source = opts.source or path.parent.resolve().name
    labeler = Labeler(opts)
    entries = _csv_entries(table, cols, FileFinder(images), labeler, opts, source)
    result = build_rows(images, source, entries, opts.on_bad_image)
    result.dropped = unmapped_counts(labeler)
    return result


def _source_col(df: pd.DataFrame, opts: ImportOptions, path: Path) -> Optional[str]:
    """The per-row source column: ``opts.source_col``, else ``source`` unless ``opts.source``."""
    if opts.source_col and opts.source:
        raise DataError(f"{path}: give a source column (--source-col {opts.source_col}) or one "
                        f"source for every row (--source {opts.source}), not both")
    if opts.source and not opts.source_col:
        if pick_col(df, None, _SOURCE_COLS, S.SOURCE, path, False):
            log.info("%s: --source %s given; the CSV's source column is not used",
                     path, opts.source)
        return None
    return pick_col(df, opts.source_col, _SOURCE_COLS, S.SOURCE, path, False)


def _row_source(row: Mapping[Any, object], col: Optional[str], default: str, where: str) -> str:
    if col is None:
        return default
    value = str(row[col]).strip()
    if not value:
        raise DataError(f"{where}: empty value in source column {col!r}; every row needs a "
                        "source (or pass --source NAME for one source for all rows)")
    return value


def _csv_entries(table: Table, cols: Mapping[str, Optional[str]], finder: FileFinder,
                 labeler: Labeler, opts: ImportOptions, source: str) -> list[Entry]:
    entries = []
    for i, row in enumerate(table.df.to_dict("records")):
        where = table.where(i)
        label = opts.label or labeler(row[cols[S.LABEL]], where)
        if label is None:
            continue
        split = SPLIT_NAMES.get(str(row[cols[S.SPLIT]]).strip().lower()) if cols[S.SPLIT] else None
        patient = str(row[cols["patient"]]).strip() if cols["patient"] else None
        file = finder.find(str(row[cols["file"]]).strip(), where)
        row_source = _row_source(row, cols[S.SOURCE], source, where)
        entries.append(Entry(file, label, patient or None, row_source, split, where))
    return entries


