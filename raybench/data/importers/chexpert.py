"""CheXpert (Stanford): ``train.csv`` / ``valid.csv`` with ``Path`` and 14 observations."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from raybench.data import manifest as mf
from raybench.data.importers.common import DEFAULTS, Entry, ImportOptions, ImportResult
from raybench.data.importers.labels import Classifier, LabelRule, check_uncertain
from raybench.data.importers.tables import (
    OBSERVATIONS,
    Listed,
    finish,
    find_table,
    observation_sets,
    read_table,
    rule_of,
)
from raybench.errors import DataError

CSV_FILES = (("train.csv", "train"), ("valid.csv", "val"))
COLUMNS = ("Path", "Frontal/Lateral", "AP/PA") + OBSERVATIONS
DEFAULT_RULE = LabelRule.from_pairs([("Pneumonia", "pneumonia"), ("No Finding", "normal")])
_PATIENT = re.compile(r"(?:^|/)(patient\d+)/")


def chexpert_view(frontal_lateral: str, ap_pa: str) -> Optional[str]:
    """``Lateral`` -> LATERAL; a frontal film -> its AP/PA value, FRONTAL when that is blank."""
    if frontal_lateral.strip().lower() == "lateral":
        return "LATERAL"
    view = mf.normalise_view(ap_pa)
    return view or ("FRONTAL" if frontal_lateral.strip() else None)


def _relative(root: Path, path: str) -> str:
    """``Path`` values start with the download's folder (``CheXpert-v1.0-small/train/...``):
    that first part is dropped when it is not a folder of ``root``."""
    path = path.strip()
    if "://" in path or re.match(r"^[A-Za-z]:", path):  # a URI or a drive: refused as given
        return path
    first, sep, rest = path.replace("\\", "/").partition("/")
    return rest if sep and not (root / first).is_dir() else path


def import_chexpert(src: str | os.PathLike, opts: ImportOptions = DEFAULTS) -> ImportResult:
    """CheXpert: each listed CSV's rows; patient from ``patientNNNNN`` in the path; view from
    ``Frontal/Lateral`` + ``AP/PA``; train.csv -> train, valid.csv -> val."""
    root = Path(src)
    find_table(root, [name for name, _ in CSV_FILES], "CheXpert")
    classify = Classifier(rule_of(opts, DEFAULT_RULE), opts.views,
                          check_uncertain(opts.uncertain, "chexpert"))
    listed, entries, source = Listed(root), [], opts.source or "chexpert"
    for name, split in CSV_FILES:
        if (root / name).is_file():
            entries += _csv_entries(root / name, split, listed, classify, source)
    return finish(root, source, entries, opts, classify, listed.missing)


def _csv_entries(csv: Path, split: str, listed: Listed, classify: Classifier, source: str
                 ) -> list[Entry]:
    table = read_table(csv, COLUMNS)
    obs = observation_sets(table)
    cols = [table.df[c].tolist() for c in COLUMNS[:3]]
    entries = []
    for i, (path, fl, ap_pa) in enumerate(zip(*cols, strict=True)):
        where = table.where(i)
        view = chexpert_view(fl, ap_pa)
        if not classify.view_ok(view):
            continue
        label = classify(*obs[i])
        if label is None:
            continue
        rel = _relative(listed.root, path)
        file = listed.resolve(rel, where)
        patient = _PATIENT.search("/" + rel)
        if patient is None:
            raise DataError(f"{where}: Path {path!r} holds no patientNNNNN folder (the "
                            "official layout is train/patientNNNNN/studyN/viewN_frontal.jpg)")
        if listed.present(file, where):
            entries.append(Entry(file, label, patient.group(1), source, split, where, view))
    return entries
