"""What the importers share: options, results, one image to import (:class:`Entry`), label
rules and locating listed files inside the dataset root."""
from __future__ import annotations

import csv
import gzip
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from raybench import schema as S
from raybench.data import manifest as mf
from raybench.data.fingerprints import Fingerprint
from raybench.data.images import BadImage
from raybench.errors import DataError

log = logging.getLogger(__name__)


SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "test": "test", "testing": "test"}

#: Label spellings understood by default (compared lower-case, trimmed).
DEFAULT_LABEL_MAP: dict[str, str] = {
    **{lab: lab for lab in S.MANIFEST_LABELS},
    "covid-19": "covid19", "covid": "covid19", "positive": "covid19",
    "pneumonia/viral/covid-19": "covid19", "no finding": "normal", "negative": "normal",
    "bacterial": "bacteria", "pneumonia/bacterial": "bacteria", "virus": "viral",
    "pneumonia/viral": "viral",
}




@dataclass
class ImportResult:
    """A manifest (paths relative to ``root``), the files left out with reasons, and the rows
    left out by the label rule / view filter (``dropped``: reason -> count)."""

    df: pd.DataFrame
    root: Path
    skipped: list[BadImage] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    #: What the import's decode learned of each kept file (the audit's fingerprints).
    fingerprints: list[Fingerprint] = field(default_factory=list)


@dataclass(frozen=True)
class ImportOptions:
    """Options shared by the importers; unused ones are ignored by a kind.

    Attributes:
        source: Value of the ``source`` column for every row (default depends on the kind).
        source_col: metadata CSV column holding each row's source (hospital / dataset);
            default: a column named ``source`` when the CSV has one and ``source`` is unset.
        on_bad_image: ``fail`` or ``skip``.
        images: Image folder (covidx, metadata_csv); default: next to the label files / CSV.
        file_col / label_col / patient_col / split_col: metadata CSV columns (auto-detected
            among common names when ``None``).
        label: One label for every row (a CSV without a finding column, e.g. Hannover).
        label_map: Extra ``raw value -> label`` pairs, matched case-insensitively.
        unmapped: ``fail`` on a label value outside the map, or ``skip`` such rows.
        views: Keep only these views (``PA``, ``AP``, ...; empty: all); see ``normalise_view``.
        uncertain: CheXpert / MIMIC uncertain findings: ``ignore``, ``zeros`` or ``ones``
            (required by those kinds: no default hides the choice).
        address: Ray cluster the files are hashed on (default: ``RAY_ADDRESS``, else a
            local Ray).
    """

    source: Optional[str] = None
    source_col: Optional[str] = None
    on_bad_image: str = "fail"
    images: Optional[str] = None
    file_col: Optional[str] = None
    label_col: Optional[str] = None
    patient_col: Optional[str] = None
    split_col: Optional[str] = None
    label: Optional[str] = None
    label_map: tuple[tuple[str, str], ...] = ()
    unmapped: str = "fail"
    views: tuple[str, ...] = ()
    uncertain: Optional[str] = None
    address: Optional[str] = None


#: The options every importer defaults to.
DEFAULTS = ImportOptions()


def check_inside(root: Path, file: Path, where: str) -> None:
    real_root, real = os.path.realpath(root), os.path.realpath(file)
    if os.path.commonpath([real_root, real]) != real_root:
        raise DataError(f"{where}: {file} escapes the dataset root {root}; "
                        "image paths must stay inside it")


@dataclass(frozen=True)
class Entry:
    """One image to import: file, label, patient, split and where it was listed."""

    file: Path
    label: str
    patient: Optional[str]
    source: str
    split: Optional[str] = None
    where: str = ""
    view: Optional[str] = None


def require_dir(root: Path, what: str) -> Path:
    if not root.is_dir():
        raise DataError(f"{root}: {what} does not exist or is not a folder")
    return root


def images_in(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in mf.IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder}: class folder holds no images; allowed extensions: "
                        f"{', '.join(mf.IMAGE_EXTENSIONS)}")
    return files


def subdirs(folder: Path) -> dict[str, Path]:
    """Visible sub-folders keyed by lower-case name."""
    return {p.name.lower(): p for p in sorted(folder.iterdir())
            if p.is_dir() and not p.name.startswith(".")}


class Labeler:
    """Raw label values -> manifest labels, with the ``unmapped`` policy."""

    def __init__(self, opts: ImportOptions) -> None:
        self.map = dict(DEFAULT_LABEL_MAP)
        self.map.update({raw.strip().lower(): lab for raw, lab in opts.label_map})
        self.unmapped = opts.unmapped
        self.dropped: dict[str, int] = {}
        if self.unmapped not in ("fail", "skip"):
            raise DataError(f"unmapped={self.unmapped!r}; allowed: fail, skip")

    def __call__(self, raw: object, where: str) -> Optional[str]:
        value = "" if raw is None or (isinstance(raw, float) and raw != raw) else str(raw)
        label = self.map.get(value.strip().lower())
        if label is None and self.unmapped == "fail":
            raise DataError(f"{where}: unknown label value {value!r}; map it with --label-map "
                            f"'{value}=LABEL' (labels: {', '.join(S.MANIFEST_LABELS)}) or pass "
                            "--unmapped skip")
        if label is None:
            self.dropped[value] = self.dropped.get(value, 0) + 1
        return label


class FileFinder:
    """Finds a listed file inside ``root``: as given, with an image extension, or by stem."""

    def __init__(self, root: Path, seen: Optional[dict[Path, str]] = None) -> None:
        self.root = root
        self._by_stem: Optional[dict[str, list[Path]]] = None
        self._seen = {} if seen is None else seen  # shared across label files: no file twice

    def _stems(self) -> dict[str, list[Path]]:
        if self._by_stem is None:
            self._by_stem = {}
            for p in sorted(self.root.rglob("*")):
                if p.is_file() and p.suffix.lower() in mf.IMAGE_EXTENSIONS:
                    self._by_stem.setdefault(p.stem, []).append(p)
        return self._by_stem

    def find(self, name: str, where: str) -> Path:
        reason = mf.path_problem(name.replace("\\", "/")) if name else "is empty"
        if reason:
            raise DataError(f"{where}: file {name!r} {reason.replace('manifest', 'image')}")
        file = self._locate(name, where)
        check_inside(self.root, file, where)
        if file in self._seen:
            raise DataError(f"{where}: file {name!r} is listed twice (first at {self._seen[file]}); "
                            "each image may appear once")
        self._seen[file] = where
        return file

    def _locate(self, name: str, where: str) -> Path:
        direct = self.root / name
        if direct.is_file():
            return direct
        if not Path(name).suffix:
            for ext in mf.IMAGE_EXTENSIONS:
                if direct.with_name(direct.name + ext).is_file():
                    return direct.with_name(direct.name + ext)
        hits = self._stems().get(Path(name).stem, []) if "/" not in name else []
        if len(hits) == 1:
            return hits[0]
        found = "several files match" if hits else "not found"
        raise DataError(f"{where}: image {name!r} {found} under {self.root}")



def unmapped_counts(labeler: Labeler) -> dict[str, int]:
    """The rows a labeler left out, as ``ImportResult.dropped``."""
    return {f"unmapped label {k!r}": v for k, v in sorted(labeler.dropped.items())}


@dataclass(frozen=True)
class Table:
    """An official CSV as strings (blanks ``""``), with the file line each record starts on
    (a quoted field may hold newlines, so record ``i`` is not always on line ``i + 2``)."""

    path: Path
    df: pd.DataFrame
    lines: Sequence[int]

    def where(self, i: int) -> str:
        """``<file> line N`` for record ``i`` (0-based, header excluded)."""
        return f"{self.path} line {self.lines[i]}"


def record_lines(text: str, n: int, sep: str = ",") -> Sequence[int]:
    """The 1-based file line each of the ``n`` records after the header starts on; blank lines
    are skipped, as pandas skips them."""
    physical = text.count("\n") + (0 if text.endswith("\n") else 1)
    if physical == n + 1:  # one line per record: no quoted newline, no blank line
        return range(2, n + 2)
    lines, reader, end = [], csv.reader(io.StringIO(text), delimiter=sep), 0
    for row in reader:
        if row and end:  # not the header, not a blank line
            lines.append(end + 1)
        end = reader.line_num
    return lines[:n]


def decode_csv(path: Path) -> str:
    """The text of a ``.csv`` / ``.csv.gz``: UTF-8 (BOM or not), else latin-1."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable gzip file ({exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_csv_tolerant(path: Path) -> Table:
    """Reads a CSV as strings: UTF-8 (with or without BOM), else latin-1; ``,`` ``;`` or tab."""
    text = decode_csv(path)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        sep = dialect.delimiter
    except csv.Error:
        sep = ","
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    return Table(path, df, record_lines(text, len(df), sep))


def pick_col(df: pd.DataFrame, given: Optional[str], candidates: Sequence[str], what: str,
              where: Path, required: bool) -> Optional[str]:
    if given:
        if given not in df.columns:
            raise DataError(f"{where}: no column {given!r} for the {what}; columns: "
                            f"{', '.join(df.columns)}")
        return given
    lower = {c.lower(): c for c in df.columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    if required:
        raise DataError(f"{where}: cannot find the {what} column (tried {', '.join(candidates)}); "
                        f"name it with the option; columns: {', '.join(df.columns)}")
    return None
