"""Kaggle "chest_xray" (Kermany et al.): ``[train|val|test/]NORMAL|PNEUMONIA/*.jpeg``."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from raybench.data.importers.common import (
    DEFAULTS,
    SPLIT_NAMES,
    Entry,
    ImportOptions,
    ImportResult,
    check_inside,
    images_in,
    require_dir,
    subdirs,
)
from raybench.data.importers.rows import build_rows
from raybench.errors import DataError

_KERMANY_PNEUMONIA = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE)
_KERMANY_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)-", re.IGNORECASE)


def kermany_label_patient(name: str, folder: str) -> tuple[str, str]:
    """Label and patient id of one Kermany file from its class folder and file name.

    ``personN_bacteria_M`` -> (bacteria, ``personN_bacteria``), ``personN_virus_M`` -> (viral,
    ``personN_virus``): the type is part of the patient id (they are different children).
    Normals ``IM-xxxx-yyyy`` / ``NORMAL2-IM-xxxx-yyyy`` -> (normal, ``IM-xxxx``).

    Raises:
        DataError: A pneumonia file whose name does not give bacteria or virus.
    """
    stem = Path(name).stem
    if folder.lower() == "normal":
        m = _KERMANY_NORMAL.match(stem)
        return "normal", m.group(1) if m else stem
    m = _KERMANY_PNEUMONIA.match(stem)
    if not m:
        raise DataError(f"{folder}/{name}: unknown label: a PNEUMONIA file must be named "
                        "personN_bacteria_M or personN_virus_M")
    kind = m.group(2).lower()
    return ("bacteria" if kind == "bacteria" else "viral"), f"{m.group(1)}_{kind}"


def _kermany_class_dirs(root: Path) -> list[tuple[Path, Optional[str]]]:
    """``(class folder, split)`` pairs of the layout, with or without train/val/test folders."""
    subs = subdirs(root)
    splits = {SPLIT_NAMES[k]: p for k, p in subs.items() if k in SPLIT_NAMES}
    bases = [(p, s) for s, p in splits.items()] if splits else [(root, None)]
    out = []
    for base, split in bases:
        classes = {k: p for k, p in subdirs(base).items() if k in ("normal", "pneumonia")}
        if not classes:
            raise DataError(f"{base}: no NORMAL/ or PNEUMONIA/ folder; expected the Kaggle "
                            "chest_xray layout ([train|val|test/]NORMAL, PNEUMONIA)")
        out += [(p, split) for _, p in sorted(classes.items())]
    return out


def import_kermany(src: str | os.PathLike, opts: ImportOptions = DEFAULTS) -> ImportResult:
    """Kaggle "chest_xray": ``[train|val|test/]NORMAL|PNEUMONIA/*.jpeg``; splits from folders."""
    root = require_dir(Path(src), "Kermany dataset folder")
    source = opts.source or "kermany"
    entries = []
    for folder, split in _kermany_class_dirs(root):
        for file in images_in(folder):
            check_inside(root, file, str(folder))
            label, patient = kermany_label_patient(file.name, folder.name)
            entries.append(Entry(file, label, patient, source, split))
    return build_rows(root, source, entries, opts.on_bad_image)


