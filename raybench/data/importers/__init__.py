"""Importers: the layouts users download -> the manifest of DESIGN.md section 4.

Each importer (one module per layout) walks or reads its files, builds one :class:`Entry` per
image (file, label, patient, source, split, view) and hands them to :func:`build_rows`, which
hashes and measures every file and returns an :class:`ImportResult` whose paths are relative to
the dataset root; :func:`rebase_paths` then makes them relative to the manifest's folder (or
``file://`` URIs when the images live elsewhere, e.g. a read-only shared folder).

Kinds (the :data:`IMPORTERS` registry): ``kermany`` (Kaggle "chest_xray"), ``covidx`` (label
files + image folders), ``metadata_csv`` (ieee8023 / Figure1 / Actualmed / Hannover style) and
``folder`` (one folder per class). Bad images follow ``on_bad_image``: ``fail`` raises naming
the file and the reason, ``skip`` leaves the file out and records it in ``ImportResult.skipped``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from raybench import schema as S
from raybench.data import manifest as mf
from raybench.data.importers.common import (
    DEFAULT_LABEL_MAP,
    DEFAULTS,
    Entry,
    ImportOptions,
    ImportResult,
    parse_label_map,
    read_csv_tolerant,
)
from raybench.data.importers.covidx import import_covidx
from raybench.data.importers.folder import import_folder
from raybench.data.importers.kermany import import_kermany, kermany_label_patient
from raybench.data.importers.metadata_csv import import_metadata_csv
from raybench.data.importers.rows import build_rows
from raybench.errors import DataError
from raybench.registry import Registry

__all__ = [
    "DEFAULTS", "DEFAULT_LABEL_MAP", "IMPORTERS", "Entry", "ImportOptions", "ImportResult", "Importer",
    "build_rows", "import_covidx", "import_dataset", "import_folder", "import_kermany",
    "import_metadata_csv", "kermany_label_patient", "merge_manifests", "parse_label_map",
    "read_csv_tolerant", "rebase_paths", "write_import",
]

Importer = Callable[[str | os.PathLike, ImportOptions], ImportResult]
IMPORTERS: Registry[Importer] = Registry("importer")
IMPORTERS.register("kermany", import_kermany)
IMPORTERS.register("covidx", import_covidx)
IMPORTERS.register("metadata_csv", import_metadata_csv)
IMPORTERS.register("folder", import_folder)


def import_dataset(kind: str, src: str | os.PathLike, opts: ImportOptions = DEFAULTS
                   ) -> ImportResult:
    """Runs the importer registered as ``kind`` (``metadata-csv`` == ``metadata_csv``)."""
    return IMPORTERS.get(kind.replace("-", "_"))(src, opts)


def rebase_paths(result: ImportResult, manifest_dir: str | os.PathLike) -> pd.DataFrame:
    """The manifest with paths relative to ``manifest_dir``, or ``file://`` URIs outside it."""
    base = os.path.abspath(manifest_dir)
    paths = []
    for rel in result.df[S.PATH]:
        full = os.path.abspath(result.root / rel)
        inside = os.path.commonpath([base, full]) == base
        paths.append(Path(os.path.relpath(full, base)).as_posix() if inside else Path(full).as_uri())
    out = result.df.copy()
    out[S.PATH] = paths
    return out


def merge_manifests(frames: Sequence[pd.DataFrame], where: str = "merge") -> pd.DataFrame:
    """Concatenates manifests (same folder basis), keeping ``source``; ids and paths must be unique.

    Raises:
        DataError: An image id or a path present in two of them.
    """
    df = pd.concat(frames, ignore_index=True)
    dup = df[S.PATH].duplicated()
    if dup.any():
        raise DataError(f"{where}: path {df[S.PATH][dup].iloc[0]!r} appears twice; "
                        "each image may be imported once")
    return mf.validate_manifest(df, where=where)


def write_import(result: ImportResult, out: str | os.PathLike, append: bool = False) -> pd.DataFrame:
    """Writes ``result`` as the manifest ``out`` (merged into it when ``append``); returns it.

    Skipped files are listed in ``<out>.skipped.csv`` so they stay recorded with the data.
    """
    out = Path(out)
    df = rebase_paths(result, out.parent)
    roots = [result.root] if df[S.PATH].str.startswith("file://").any() else []
    if append and out.is_file():
        roots += mf.image_roots(out)[1:]  # keep the roots of earlier imports
        df = merge_manifests([mf.read_manifest(out), df], where=str(out))
    mf.write_manifest(df, out, image_roots=roots)
    skipped = out.with_name(out.name + ".skipped.csv")
    if result.skipped:
        pd.DataFrame([vars(b) for b in result.skipped]).to_csv(skipped, index=False)
    return df
