"""MIMIC-CXR-JPG (PhysioNet): metadata, CheXpert labels per study and the official split."""
from __future__ import annotations

import os
from pathlib import Path

from raybench.catalog.importers import MIMIC_PREFIX
from raybench.data import manifest as mf
from raybench.data.importers.common import DEFAULTS, Entry, ImportOptions, ImportResult
from raybench.data.importers.labels import Classifier, LabelRule, check_uncertain
from raybench.data.importers.tables import (
    OBSERVATIONS,
    Listed,
    Table,
    finish,
    find_table,
    observation_sets,
    read_table,
    rule_of,
)
from raybench.errors import DataError

PREFIX = MIMIC_PREFIX
METADATA = (f"{PREFIX}-metadata.csv", ("dicom_id", "subject_id", "study_id", "ViewPosition"))
_IDS = ("subject_id", "study_id")
LABELS = (f"{PREFIX}-chexpert.csv", ("subject_id", "study_id") + OBSERVATIONS)
SPLITS = (f"{PREFIX}-split.csv", ("dicom_id", "split"))
SPLIT_VALUES = {"train": "train", "validate": "val", "test": "test"}
DEFAULT_RULE = LabelRule.from_pairs([("Pneumonia", "pneumonia"), ("No Finding", "normal")])
NO_LABELS = "study without labels"


def mimic_path(subject: str, study: str, dicom_id: str) -> str:
    """``files/pNN/p<subject>/s<study>/<dicom_id>.jpg`` (NN: the subject's first two digits)."""
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg"


def _table(root: Path, spec: tuple[str, tuple[str, ...]]) -> Table:
    path = find_table(root, [spec[0]], "MIMIC-CXR-JPG")
    return read_table(path, spec[1], ids=[c for c in _IDS if c in spec[1]])


def _study_labels(root: Path) -> dict[tuple[str, str], tuple[set[str], set[str]]]:
    table = _table(root, LABELS)
    df, obs = table.df, observation_sets(table)
    keys = zip(df["subject_id"].str.strip(), df["study_id"].str.strip(), strict=True)
    return {key: obs[i] for i, key in enumerate(keys)}


def _splits(root: Path) -> dict[str, str]:
    table = _table(root, SPLITS)
    out = {}
    for i, (dicom_id, value) in enumerate(zip(table.df["dicom_id"], table.df["split"],
                                              strict=True)):
        split = SPLIT_VALUES.get(value.strip().lower())
        if split is None:
            raise DataError(f"{table.where(i)}: split {value!r}; allowed: "
                            f"{', '.join(SPLIT_VALUES)}")
        out[dicom_id.strip()] = split
    return out


def import_mimic(src: str | os.PathLike, opts: ImportOptions = DEFAULTS) -> ImportResult:
    """MIMIC-CXR-JPG: one row per image of the metadata CSV; labels of its study; patient =
    ``subject_id``; view = ``ViewPosition``; split from ``-split.csv`` (validate -> val)."""
    root = Path(src)
    classify = Classifier(rule_of(opts, DEFAULT_RULE), opts.views,
                          check_uncertain(opts.uncertain, "mimic-cxr-jpg"))
    meta = _table(root, METADATA)
    labels, splits = _study_labels(root), _splits(root)
    listed, entries, source = Listed(root), [], opts.source or "mimic"
    cols = [meta.df[c].str.strip().tolist() for c in METADATA[1]]
    for i, (dicom_id, subject, study, raw_view) in enumerate(zip(*cols, strict=True)):
        where = meta.where(i)
        view = mf.normalise_view(raw_view)
        if not classify.view_ok(view):
            continue
        found = labels.get((subject, study))
        if found is None:
            classify.dropped[NO_LABELS] += 1
            continue
        label = classify(*found)
        if label is None:
            continue
        file = listed.resolve(mimic_path(subject, study, dicom_id), where)
        if listed.present(file, where):
            entries.append(Entry(file, label, subject, source, splits.get(dicom_id), where, view))
    return finish(root, source, entries, opts, classify, listed.missing)
