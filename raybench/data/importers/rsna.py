"""RSNA Pneumonia Detection Challenge: stage 2 CSVs + ``stage_2_train_images/*.dcm``."""
from __future__ import annotations

import os
from pathlib import Path

from raybench.data.importers.common import DEFAULTS, Entry, ImportOptions, ImportResult
from raybench.data.importers.labels import Classifier, LabelRule
from raybench.data.importers.tables import Listed, finish, find_table, read_table, rule_of
from raybench.errors import DataError

LABELS = ("stage_2_train_labels.csv", ("patientId", "Target"))
CLASSES = ("stage_2_detailed_class_info.csv", ("patientId", "class"))
IMAGES = "stage_2_train_images"
CLASS_VALUES = ("Normal", "Lung Opacity", "No Lung Opacity / Not Normal")
DEFAULT_RULE = LabelRule.from_pairs([("Lung Opacity", "pneumonia"), ("Normal", "normal")])


def _classes(root: Path) -> dict[str, str]:
    path = find_table(root, [CLASSES[0]], "RSNA Pneumonia")
    table = read_table(path, CLASSES[1], ids=("patientId",))
    out: dict[str, str] = {}
    for i, (pid, cls) in enumerate(zip(table.df["patientId"], table.df["class"], strict=True)):
        where = table.where(i)
        if cls.strip() not in CLASS_VALUES:
            raise DataError(f"{where}: class {cls!r}; allowed: {', '.join(CLASS_VALUES)}")
        if out.setdefault(pid.strip(), cls.strip()) != cls.strip():
            raise DataError(f"{where}: patientId {pid} has classes {out[pid.strip()]!r} and "
                            f"{cls.strip()!r}; one class per image")
    return out


def _targets(root: Path) -> tuple[Path, dict[str, tuple[int, str]]]:
    """patientId -> (Target, first line), in file order; several rows (boxes) per image."""
    path = find_table(root, [LABELS[0]], "RSNA Pneumonia")
    table = read_table(path, LABELS[1], ids=("patientId",))
    out: dict[str, tuple[int, str]] = {}
    for i, (pid, target) in enumerate(zip(table.df["patientId"], table.df["Target"],
                                          strict=True)):
        where = table.where(i)
        if target.strip() not in ("0", "1"):
            raise DataError(f"{where}: Target {target!r}; allowed: 0, 1")
        out.setdefault(pid.strip(), (int(target), where))
    return path, out


def import_rsna(src: str | os.PathLike, opts: ImportOptions = DEFAULTS) -> ImportResult:
    """RSNA Pneumonia: one row per image (``patientId``, which is also the patient); the
    finding is its ``class``; the view comes from the DICOM header (``ViewPosition``)."""
    root = Path(src)
    path, targets = _targets(root)
    classes = _classes(root)
    classify = Classifier(rule_of(opts, DEFAULT_RULE), opts.views)
    listed, entries, source = Listed(root), [], opts.source or "rsna"
    for pid, (target, where) in targets.items():
        cls = classes.get(pid)
        if cls is None:
            raise DataError(f"{where}: patientId {pid} is not in {CLASSES[0]}")
        if (target == 1) != (cls == "Lung Opacity"):
            raise DataError(f"{where}: patientId {pid} has Target {target} but class {cls!r}")
        label = classify({cls.lower()})
        if label is None:
            continue
        file = listed.resolve(f"{IMAGES}/{pid}.dcm", where)
        if listed.present(file, where):
            entries.append(Entry(file, label, pid, source, None, where))
    return finish(root, source, entries, opts, classify, listed.missing)
