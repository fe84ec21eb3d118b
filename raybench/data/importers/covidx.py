"""COVIDx: label files (``train.txt`` / ``val.txt`` / ``test.txt``) next to image folders."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from raybench.data.importers.common import (
    DEFAULT_LABEL_MAP,
    DEFAULTS,
    SPLIT_NAMES,
    Entry,
    FileFinder,
    ImportOptions,
    ImportResult,
    Labeler,
    unmapped_counts,
    require_dir,
)
from raybench.data.importers.rows import build_rows
from raybench.errors import DataError


def _covidx_label_files(root: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(root.glob("*.txt")):
        for token in re.split(r"[^a-z]+", p.stem.lower()):
            if token in SPLIT_NAMES and SPLIT_NAMES[token] not in files:
                files[SPLIT_NAMES[token]] = p
                break
    if not files:
        raise DataError(f"{root}: no COVIDx label files; expected train.txt / val.txt / test.txt "
                        "(names containing train, val or test)")
    return files


def _covidx_line(line: str, where: str) -> tuple[str, str, str, Optional[str]]:
    """``patient file label [source]``; a file name may contain spaces."""
    parts = line.split()
    if len(parts) < 3:
        raise DataError(f"{where}: expected 'patient_id file label [source]', got {line!r}")
    if len(parts) == 3 or parts[-1].lower() in DEFAULT_LABEL_MAP:
        return parts[0], " ".join(parts[1:-1]), parts[-1], None
    return parts[0], " ".join(parts[1:-2]), parts[-2], parts[-1]


def import_covidx(src: str | os.PathLike, opts: ImportOptions = DEFAULTS) -> ImportResult:
    """COVIDx: ``train.txt`` / ``val.txt`` / ``test.txt`` (one line per image: patient id, file,
    label, source) next to image folders ``train/``, ``val/``, ``test/`` (or one folder).

    3-class (normal / pneumonia / COVID-19) and 4-class (normal / bacteria / viral / COVID-19)
    labels are both understood, and CXR-3/4's ``positive`` / ``negative`` (COVID-19 positive
    -> covid19, negative -> normal: CXR-3/4's negatives include non-COVID pneumonia, so map
    them yourself when that matters); other spellings go through ``label_map``. Each line's
    ``data_source`` is its row's source (COVIDx mixes many hospitals).
    """
    root = require_dir(Path(src), "COVIDx folder")
    images = Path(opts.images) if opts.images else root
    labeler, entries = Labeler(opts), []
    seen: dict[Path, str] = {}
    for split, label_file in _covidx_label_files(root).items():
        base = images / split if (images / split).is_dir() else images
        finder = FileFinder(base, seen)
        lines = label_file.read_text(encoding="utf-8", errors="replace").splitlines()
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{label_file}:{n}"
            patient, name, raw, source = _covidx_line(line, where)
            label = labeler(raw, where)
            if label:
                entries.append(Entry(finder.find(name, where), label, patient,
                                      source or opts.source or "covidx", split, where))
    result = build_rows(images, opts.source or "covidx", entries, opts.on_bad_image)
    result.dropped = unmapped_counts(labeler)
    return result


