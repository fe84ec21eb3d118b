"""What the importers of the public sets share: reading the official CSVs as published,
locating listed files inside the dataset folder without walking it, and finishing an import
(label-rule drops, missing files, :func:`build_rows`)."""
from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from raybench.data import manifest as mf
from raybench.data.images import BadImage
from raybench.data.importers.common import (
    Entry,
    ImportOptions,
    ImportResult,
    Table,
    decode_csv,
    record_lines,
    require_dir,
)
from raybench.data.importers.labels import Classifier, LabelRule
from raybench.data.importers.rows import build_rows
from raybench.errors import DataError

log = logging.getLogger(__name__)


def find_table(root: Path, names: Sequence[str], what: str) -> Path:
    """The first of ``names`` (or its ``.gz``) in ``root``, else one line naming them all."""
    require_dir(root, f"{what} folder")
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"{root}: no {' or '.join(names)} (or .gz); this is not a {what} download "
                    "(see 'raybench data import --list')")


def read_table(path: Path, required: Sequence[str], ids: Sequence[str] = (),
               names: Sequence[str] = ()) -> Table:
    """An official CSV (``.csv`` or ``.csv.gz``) as a :class:`Table`.

    Args:
        path: The file.
        required: The columns the importer reads (the others may differ between releases).
        ids: Id columns checked for a spreadsheet's rewriting (:func:`check_spreadsheet`).
        names: File-name columns, which must not carry a folder.

    Raises:
        DataError: Not a CSV, a required column missing, or an id column a spreadsheet rewrote.
    """
    text = decode_csv(path)
    try:
        with warnings.catch_warnings():  # NIH's rows end in a comma its header may lack
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                             index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing required column {missing[0]!r}; raybench reads the "
                        f"columns {', '.join(required)}")
    table = Table(path, df, record_lines(text, len(df)))
    check_spreadsheet(table, ids, names)
    return table


#: A number a spreadsheet wrote in scientific notation (``8.3986e+35``): a long id rounded.
_SCIENTIFIC = r"[+-]?\d+(?:[.,]\d*)?[eE][+-]?\d+"


def check_spreadsheet(table: Table, ids: Sequence[str], names: Sequence[str]) -> None:
    """One line for a CSV re-saved by a spreadsheet: ids in scientific notation (rounded, so
    distinct patients would share one) or file names given a folder prefix.

    Raises:
        DataError: Naming the first such value with its file line.
    """
    resaved = "the CSV was re-saved by a spreadsheet; use the file as downloaded"
    for col in ids:
        hits = table.df[col].str.strip().str.fullmatch(_SCIENTIFIC).to_numpy().nonzero()[0]
        if len(hits):
            i = int(hits[0])
            raise DataError(f"{table.where(i)}: {col} {table.df[col].iat[i]!r} is a number in "
                            f"scientific notation ({len(hits)} such rows): long ids were rounded "
                            f"and distinct ones may now be equal; {resaved}")
    for col in names:
        hits = table.df[col].str.contains(r"[/\\]").to_numpy().nonzero()[0]
        if len(hits):
            i = int(hits[0])
            raise DataError(f"{table.where(i)}: {col} {table.df[col].iat[i]!r} carries a folder "
                            f"prefix ({len(hits)} such rows) where the official file lists bare "
                            f"file names; {resaved}")


def listed_problem(rel: str) -> Optional[str]:
    """Why a path a dataset's CSV lists cannot be read from the dataset folder, or None.

    The CSV's files are read from the folder being imported, so a URI is refused like an
    absolute path (a manifest may hold URIs; an official CSV never does)."""
    if not rel:
        return "is empty"
    if "://" in rel:
        return "is a URI; paths in the dataset's CSV must be relative to the dataset folder"
    reason = mf.path_problem(rel)
    if reason and ("absolute" in reason):
        return "is absolute; paths in the dataset's CSV must be relative to the dataset folder"
    return reason.replace("manifest", "dataset") if reason else None


class Listed:
    """Files named by a CSV, relative to ``root``: checked to stay inside it (no ``..``, no
    absolute path, no symlink out), without walking the folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._real = os.path.realpath(root)
        self.missing: list[BadImage] = []

    def resolve(self, rel: str, where: str) -> Path:
        rel = rel.strip().replace("\\", "/")
        reason = listed_problem(rel)
        if reason:
            raise DataError(f"{where}: file {rel!r} {reason}")
        file = self.root / rel
        real = os.path.realpath(file)
        if real != self._real and not real.startswith(self._real + os.sep):
            raise DataError(f"{where}: {rel} escapes the dataset folder {self.root}; image "
                            "paths must stay inside it")
        return file

    def present(self, file: Path, where: str) -> bool:
        """True when ``file`` exists; else it is recorded as missing (a partial download)."""
        if file.is_file():
            return True
        self.missing.append(BadImage(str(file), f"{where}: listed but not found"))
        return False


def rule_of(opts: ImportOptions, default: LabelRule) -> LabelRule:
    """``--label-map`` pairs as a rule, else the kind's default rule."""
    return LabelRule.from_pairs(opts.label_map) if opts.label_map else default


def finish(root: Path, source: str, entries: list[Entry], opts: ImportOptions,
           classify: Classifier, missing: Optional[list[BadImage]] = None) -> ImportResult:
    """Missing files by ``on_bad_image``, then :func:`build_rows`; records the drops."""
    missing = missing or []
    if missing and opts.on_bad_image == "fail":
        raise DataError(f"{missing[0].reason}: {missing[0].path} (a partial download? "
                        f"{len(missing)} listed file(s) missing; --on-bad-image skip leaves "
                        "them out)")
    dropped = dict(sorted(classify.dropped.items()))
    if not entries:
        raise DataError(f"{root}: no rows left to import (label rule "
                        f"{classify.rule.describe()!r}; left out: {_counts(dropped)})")
    result = build_rows(root, source, entries, opts.on_bad_image)
    result.skipped = missing + result.skipped
    result.dropped = dropped
    return result


def log_left_out(result: ImportResult) -> None:
    """One log line with every row an import left out, by reason (label rule, views...)."""
    if result.dropped:
        log.info("%s: left out %s", result.root, _counts(result.dropped))


def _counts(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in dropped.items()) or "nothing"


#: The 14 CheXpert observations (CheXpert's train.csv / valid.csv and MIMIC-CXR-JPG's
#: ``-chexpert.csv``): 1.0 positive, 0.0 negative, -1.0 uncertain, blank not mentioned.
OBSERVATIONS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices")
_STATES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": 0}


def observation_sets(table: Table) -> list[tuple[set[str], set[str]]]:
    """Per row: the positive and the uncertain observations (lower-case names).

    Raises:
        DataError: A value other than 1.0 / 0.0 / -1.0 / blank (naming line and column).
    """
    df = table.df
    out: list[tuple[set[str], set[str]]] = [(set(), set()) for _ in range(len(df))]
    for col in OBSERVATIONS:
        name = col.lower()
        for i, value in enumerate(df[col].tolist()):
            state = _STATES.get(value.strip())
            if state is None:
                raise DataError(f"{table.where(i)}: column {col!r} holds {value!r}; allowed: "
                                "1.0, 0.0, -1.0 (uncertain) or blank")
            if state:
                out[i][0 if state > 0 else 1].add(name)
    return out
