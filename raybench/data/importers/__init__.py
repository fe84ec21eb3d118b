"""Importers: the layouts users download -> the manifest (README, "Data").

Each importer (one module per layout) walks or reads its files, builds one :class:`Entry` per
image (file, label, patient, source, split, view) and hands them to :func:`build_rows`, which
hashes and measures every file and returns an :class:`ImportResult` whose paths are relative to
the dataset root; :func:`rebase_paths` then makes them relative to the manifest's folder (or
``file://`` URIs when the images live elsewhere, e.g. a read-only shared folder).

Kinds (the :data:`~raybench.catalog.importers.IMPORTERS` registry): ``kermany`` (Kaggle "chest_xray"), ``covidx`` (label
files + image folders, 2020 layout and CXR-3/4), ``metadata_csv`` (ieee8023 / Figure1 /
Actualmed / Hannover style), ``folder`` (one folder per class) and the public multi-label sets
``nih``, ``chexpert``, ``mimic_cxr_jpg``, ``padchest``, ``rsna_pneumonia``, whose findings a
label rule (:mod:`.labels`) maps to one class per image. Bad images follow ``on_bad_image``: ``fail`` raises naming
the file and the reason, ``skip`` leaves the file out and records it in ``ImportResult.skipped``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

import pandas as pd

from raybench import schema as S
from raybench.catalog.importers import IMPORTERS, Importer
from raybench.data import manifest as mf
from raybench.data.fingerprints import write_sidecar
from raybench.data.importers.common import (
    DEFAULT_LABEL_MAP,
    DEFAULTS,
    Entry,
    ImportOptions,
    ImportResult,
    read_csv_tolerant,
)
from raybench.data.importers.chexpert import import_chexpert
from raybench.data.importers.covidx import import_covidx
from raybench.data.importers.folder import import_folder
from raybench.data.importers.kermany import import_kermany, kermany_label_patient
from raybench.data.importers.labels import LabelRule, parse_label_map, view_reason
from raybench.data.importers.metadata_csv import import_metadata_csv
from raybench.data.importers.mimic import import_mimic
from raybench.data.importers.nih import import_nih
from raybench.data.importers.padchest import import_padchest
from raybench.data.importers.rsna import import_rsna
from raybench.data.importers.rows import build_rows
from raybench.data.importers.tables import log_left_out
from raybench.errors import DataError

__all__ = [
    "DEFAULTS", "DEFAULT_LABEL_MAP", "IMPORTERS", "Entry", "ImportOptions", "ImportResult", "Importer",
    "LabelRule", "build_rows", "filter_views", "import_chexpert",
    "import_covidx", "import_dataset", "import_folder", "import_kermany", "import_metadata_csv",
    "import_mimic", "import_nih", "import_padchest", "import_rsna", "kermany_label_patient",
    "merge_manifests", "parse_label_map", "read_csv_tolerant", "rebase_paths", "write_import",
]


def import_dataset(kind: str, src: str | os.PathLike, opts: ImportOptions = DEFAULTS
                   ) -> ImportResult:
    """Runs the importer registered as ``kind`` (``metadata-csv`` == ``metadata_csv``), then
    keeps only ``opts.views`` (views read from DICOM headers included)."""
    if opts.address:
        from raybench.cluster import ensure_ray

        ensure_ray(opts.address, tune=False)
    result = IMPORTERS.get(kind.replace("-", "_")).load()(src, opts)
    result = filter_views(result, opts.views) if opts.views else result
    log_left_out(result)
    return result


def filter_views(result: ImportResult, views: Sequence[str]) -> ImportResult:
    """Rows whose ``view`` is in ``views`` (normalised); the others are counted as dropped."""
    wanted = {v for v in (mf.normalise_view(x) for x in views) if v}
    keep = result.df[S.VIEW].isin(wanted)
    if keep.all():
        return result
    dropped = dict(result.dropped)
    for view in result.df.loc[~keep, S.VIEW]:
        reason = view_reason(view)
        dropped[reason] = dropped.get(reason, 0) + 1
    if not keep.any():
        raise DataError(f"{result.root}: no image has a view in {', '.join(sorted(wanted))}; "
                        f"views found: {', '.join(sorted(dropped))}")
    df = result.df[keep].reset_index(drop=True)
    return ImportResult(df, result.root, result.skipped, dict(sorted(dropped.items())),
                        result.fingerprints)


def rebase_paths(result: ImportResult, manifest_dir: str | os.PathLike) -> pd.DataFrame:
    """The manifest with paths relative to ``manifest_dir``, or ``file://`` URIs outside it."""
    base, root = os.path.abspath(manifest_dir), os.path.abspath(result.root)
    # a row's path is relative and stays below the root (validated), so the root alone decides
    if os.path.commonpath([base, root]) == base:
        prefix = Path(os.path.relpath(root, base)).as_posix()
        paths = [rel if prefix == "." else f"{prefix}/{rel}" for rel in result.df[S.PATH]]
    else:
        uri = Path(root).as_uri().rstrip("/")
        paths = [f"{uri}/{quote(rel)}" for rel in result.df[S.PATH]]
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

    Skipped files are listed in ``<out>.skipped.csv`` so they stay recorded with the data; the
    files' fingerprints go to ``<out>.fingerprints.parquet``, where ``data audit`` reads them.
    """
    out = Path(out)
    df = rebase_paths(result, out.parent)
    roots = [result.root] if df[S.PATH].str.startswith("file://").any() else []
    if append and out.is_file():
        roots += mf.image_roots(out)[1:]  # keep the roots of earlier imports
        df = merge_manifests([mf.read_manifest(out), df], where=str(out))
    mf.write_manifest(df, out, image_roots=roots)
    write_sidecar(out, result.fingerprints, append=append)
    skipped = out.with_name(out.name + ".skipped.csv")
    if result.skipped:
        pd.DataFrame([vars(b) for b in result.skipped]).to_csv(skipped, index=False)
    return df
