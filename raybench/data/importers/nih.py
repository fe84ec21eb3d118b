"""NIH ChestX-ray14: ``Data_Entry_2017.csv`` + ``images*/`` (or ``images_0NN/images/``) +
the official ``train_val_list.txt`` / ``test_list.txt``."""
from __future__ import annotations

import os
from pathlib import Path

from raybench.data import manifest as mf
from raybench.data.images import BadImage
from raybench.data.importers.common import DEFAULTS, Entry, ImportOptions, ImportResult
from raybench.data.importers.labels import Classifier, LabelRule
from raybench.data.importers.tables import finish, find_table, read_table, rule_of
from raybench.errors import DataError

CSV_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
#: The columns read (the v2020 release renames others, e.g. ``Patient Sex``).
COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
SPLIT_FILES = (("train_val_list.txt", "train"), ("test_list.txt", "test"))
DEFAULT_RULE = LabelRule.from_pairs([("Pneumonia", "pneumonia"), ("No Finding", "normal")])


def _inside(real_root: str, path: str, where: Path) -> None:
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise DataError(f"{where}: {path} escapes the dataset folder; image paths must stay "
                        "inside it")


def image_index(root: Path) -> dict[str, Path]:
    """File name -> its folder, over ``images*/`` and ``images*/images/`` (one listing each)."""
    real_root, index = os.path.realpath(root), dict[str, Path]()
    bases = [b for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower().startswith("images")
             for b in (d, d / "images") if b.is_dir()]
    for base in bases:
        _inside(real_root, str(base), root)
        with os.scandir(base) as it:
            for e in it:
                if not e.is_file() or e.name.startswith("."):
                    continue
                if e.is_symlink():
                    _inside(real_root, e.path, base)
                if e.name in index:
                    raise DataError(f"{root}: image {e.name} is in both {index[e.name]} and "
                                    f"{base}; each image may be present once")
                index[e.name] = base
    return index


def official_splits(root: Path) -> dict[str, str]:
    """Image name -> ``train`` / ``test`` from the official lists, when present."""
    splits: dict[str, str] = {}
    for name, split in SPLIT_FILES:
        path = root / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.strip():
                    splits[line.strip()] = split
    return splits


def import_nih(src: str | os.PathLike, opts: ImportOptions = DEFAULTS) -> ImportResult:
    """NIH ChestX-ray14: one row per image of ``Data_Entry_2017.csv``; findings are
    ``|``-joined (``No Finding`` for none); patient = ``Patient ID``; view = ``View Position``;
    split from the official lists (train_val -> train, val is carved from it later)."""
    root = Path(src)
    entries, missing, classify = nih_entries(root, opts)
    return finish(root, opts.source or "nih", entries, opts, classify, missing)


def nih_entries(root: Path, opts: ImportOptions = DEFAULTS
                ) -> tuple[list[Entry], list[BadImage], Classifier]:
    """The entries of :func:`import_nih` (no file is read: one listing per image folder)."""
    csv = find_table(root, CSV_NAMES, "NIH ChestX-ray14")
    table = read_table(csv, COLUMNS, ids=("Patient ID",))
    index, splits, source = image_index(root), official_splits(root), opts.source or "nih"
    classify = Classifier(rule_of(opts, DEFAULT_RULE), opts.views)
    entries, missing = [], []
    cols = [table.df[c].tolist() for c in COLUMNS]
    for i, (name, findings, patient, raw_view) in enumerate(zip(*cols, strict=True)):
        where = table.where(i)
        name, view = name.strip(), mf.normalise_view(raw_view)
        if not classify.view_ok(view):
            continue
        label = classify({f.strip().lower() for f in findings.split("|")})
        if label is None:
            continue
        if not name or "/" in name or "\\" in name:
            raise DataError(f"{where}: Image Index {name!r} is not a file name (the official "
                            "CSV lists names such as 00000001_000.png)")
        folder = index.get(name)
        if folder is None:
            missing.append(BadImage(str(root / "images" / name),
                                    f"{where}: listed but not found under images*/"))
            continue
        entries.append(Entry(folder / name, label, patient.strip() or None, source,
                             splits.get(name), where, view))
    return entries, missing, classify
