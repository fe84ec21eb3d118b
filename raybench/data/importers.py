"""Importers: the layouts users download -> the manifest of DESIGN.md section 4.

Each importer walks or reads one layout and returns an :class:`ImportResult` whose paths are
relative to the dataset root; :func:`rebase_paths` then makes them relative to the manifest's
folder (or ``file://`` URIs when the images live elsewhere, e.g. a read-only shared folder).

Kinds (the :data:`IMPORTERS` registry): ``kermany`` (Kaggle "chest_xray"), ``covidx`` (label
files + image folders), ``metadata_csv`` (ieee8023 / Figure1 / Actualmed / Hannover style) and
``folder`` (one folder per class). Bad images follow ``on_bad_image``: ``fail`` raises naming
the file and the reason, ``skip`` leaves the file out and records it in ``ImportResult.skipped``.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import pandas as pd
from PIL import UnidentifiedImageError

from raybench import schema as S
from raybench.data import manifest as mf
from raybench.data.images import BadImage, open_image
from raybench.errors import DataError
from raybench.registry import Registry

log = logging.getLogger(__name__)

_KERMANY_PNEUMONIA = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE)
_KERMANY_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)-", re.IGNORECASE)
_EXIF_ORIENTATION = 0x0112
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
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
    """A manifest (paths relative to ``root``) and the files left out, with reasons."""

    df: pd.DataFrame
    root: Path
    skipped: list[BadImage] = field(default_factory=list)


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


# --- one image -> one row ---------------------------------------------------------------------


def _displayed_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` as displayed (EXIF rotation applied), decoding the pixels fully.

    A full decode is what catches truncated files; JPEGs decode at 1/8 scale (``draft``),
    which still reads the whole stream but costs a quarter of the time.
    """
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with open_image(path) as img:
            width, height = img.size
            if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            img.load()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None
    return width, height


def _check_inside(root: Path, file: Path, where: str) -> None:
    real_root, real = os.path.realpath(root), os.path.realpath(file)
    if os.path.commonpath([real_root, real]) != real_root:
        raise DataError(f"{where}: {file} escapes the dataset root {root}; "
                        "image paths must stay inside it")


@dataclass(frozen=True)
class _Entry:
    """One image to import: file, label, patient, split and where it was listed."""

    file: Path
    label: str
    patient: Optional[str]
    source: str
    split: Optional[str] = None
    where: str = ""


def _rows(root: Path, dataset: str, entries: Iterable[_Entry], on_bad_image: str
          ) -> ImportResult:
    """Hash and measure each entry; bad images raise or are skipped by ``on_bad_image``."""
    if on_bad_image not in ("fail", "skip"):
        raise DataError(f"on_bad_image={on_bad_image!r}; allowed: fail, skip")
    rows, skipped = [], []
    for e in entries:
        rel = e.file.relative_to(root).as_posix()
        try:
            width, height = _displayed_size(e.file)
        except (DataError, OSError) as exc:
            if on_bad_image == "fail":
                raise DataError(f"{e.where + ': ' if e.where else ''}{exc}") from None
            log.warning("skipping %s", exc)
            skipped.append(BadImage(str(e.file), str(exc)))
            continue
        image_id = mf.make_image_id(dataset, rel)
        rows.append({S.IMAGE_ID: image_id, S.PATH: rel, S.LABEL: e.label,
                     S.PATIENT_ID: e.patient or image_id, S.SOURCE: e.source, S.SPLIT: e.split,
                     S.SHA256: mf.sha256_file(e.file), S.WIDTH: width, S.HEIGHT: height})
    if not rows:
        raise DataError(f"{root}: no usable images ({len(skipped)} skipped)")
    df = pd.DataFrame(rows).sort_values(S.PATH, kind="stable").reset_index(drop=True)
    return ImportResult(mf.validate_manifest(df, where=str(root)), root, skipped)


def _require_dir(root: Path, what: str) -> Path:
    if not root.is_dir():
        raise DataError(f"{root}: {what} does not exist or is not a folder")
    return root


def _images_in(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in mf.IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder}: class folder holds no images; allowed extensions: "
                        f"{', '.join(mf.IMAGE_EXTENSIONS)}")
    return files


def _subdirs(folder: Path) -> dict[str, Path]:
    """Visible sub-folders keyed by lower-case name."""
    return {p.name.lower(): p for p in sorted(folder.iterdir())
            if p.is_dir() and not p.name.startswith(".")}


# --- kermany ----------------------------------------------------------------------------------


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
    subs = _subdirs(root)
    splits = {_SPLIT_NAMES[k]: p for k, p in subs.items() if k in _SPLIT_NAMES}
    bases = [(p, s) for s, p in splits.items()] if splits else [(root, None)]
    out = []
    for base, split in bases:
        classes = {k: p for k, p in _subdirs(base).items() if k in ("normal", "pneumonia")}
        if not classes:
            raise DataError(f"{base}: no NORMAL/ or PNEUMONIA/ folder; expected the Kaggle "
                            "chest_xray layout ([train|val|test/]NORMAL, PNEUMONIA)")
        out += [(p, split) for _, p in sorted(classes.items())]
    return out


def import_kermany(src: str | os.PathLike, opts: ImportOptions = ImportOptions()) -> ImportResult:
    """Kaggle "chest_xray": ``[train|val|test/]NORMAL|PNEUMONIA/*.jpeg``; splits from folders."""
    root = _require_dir(Path(src), "Kermany dataset folder")
    source = opts.source or "kermany"
    entries = []
    for folder, split in _kermany_class_dirs(root):
        for file in _images_in(folder):
            _check_inside(root, file, str(folder))
            label, patient = kermany_label_patient(file.name, folder.name)
            entries.append(_Entry(file, label, patient, source, split))
    return _rows(root, source, entries, opts.on_bad_image)


# --- folder -----------------------------------------------------------------------------------


def import_folder(src: str | os.PathLike, opts: ImportOptions = ImportOptions()) -> ImportResult:
    """One sub-folder per label (case-insensitive); each image is its own patient."""
    root = _require_dir(Path(src), "dataset folder")
    source = opts.source or root.resolve().name
    subs = _subdirs(root)
    if not subs:
        raise DataError(f"{root}: no class folders found; expected one subfolder per label "
                        f"({', '.join(S.MANIFEST_LABELS)})")
    entries = []
    for name, folder in subs.items():
        if name not in S.MANIFEST_LABELS:
            raise DataError(f"{folder}: folder name {folder.name!r} is not a label; allowed "
                            f"(case-insensitive): {', '.join(S.MANIFEST_LABELS)}")
        for file in _images_in(folder):
            _check_inside(root, file, str(folder))  # a symlink may point anywhere
            entries.append(_Entry(file, name, None, source))
    return _rows(root, source, entries, opts.on_bad_image)


# --- labels, listed files ---------------------------------------------------------------------


def parse_label_map(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``["COVID-19=covid19", "No finding -> normal"]`` -> pairs; the target must be a label."""
    pairs = []
    for item in items:
        raw, sep, label = item.partition("->") if "->" in item else item.partition("=")
        label = label.strip()
        if not sep or not raw.strip():
            raise DataError(f"label map {item!r}: expected RAW=LABEL, e.g. 'COVID-19=covid19'")
        if label not in S.MANIFEST_LABELS:
            raise DataError(f"label map {item!r}: {label!r} is not a label; allowed: "
                            f"{', '.join(S.MANIFEST_LABELS)}")
        pairs.append((raw.strip(), label))
    return tuple(pairs)


class _Labeler:
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


class _FileFinder:
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
        _check_inside(self.root, file, where)
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


# --- covidx -----------------------------------------------------------------------------------


def _covidx_label_files(root: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(root.glob("*.txt")):
        for token in re.split(r"[^a-z]+", p.stem.lower()):
            if token in _SPLIT_NAMES and _SPLIT_NAMES[token] not in files:
                files[_SPLIT_NAMES[token]] = p
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


def import_covidx(src: str | os.PathLike, opts: ImportOptions = ImportOptions()) -> ImportResult:
    """COVIDx: ``train.txt`` / ``val.txt`` / ``test.txt`` (one line per image: patient id, file,
    label, source) next to image folders ``train/``, ``val/``, ``test/`` (or one folder).

    3-class (normal / pneumonia / COVID-19) and 4-class (normal / bacteria / viral / COVID-19)
    labels are both understood; other spellings go through ``label_map``.
    """
    root = _require_dir(Path(src), "COVIDx folder")
    images = Path(opts.images) if opts.images else root
    labeler, entries = _Labeler(opts), []
    seen: dict[Path, str] = {}
    for split, label_file in _covidx_label_files(root).items():
        base = images / split if (images / split).is_dir() else images
        finder = _FileFinder(base, seen)
        lines = label_file.read_text(encoding="utf-8", errors="replace").splitlines()
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{label_file}:{n}"
            patient, name, raw, source = _covidx_line(line, where)
            label = labeler(raw, where)
            if label:
                entries.append(_Entry(finder.find(name, where), label, patient,
                                      source or opts.source or "covidx", split, where))
    _log_dropped(labeler)
    return _rows(images, opts.source or "covidx", entries, opts.on_bad_image)


def _log_dropped(labeler: _Labeler) -> None:
    if labeler.dropped:
        log.info("left out rows with unmapped labels: %s",
                 ", ".join(f"{k!r} x{v}" for k, v in sorted(labeler.dropped.items())))


# --- metadata csv -----------------------------------------------------------------------------

_FILE_COLS = ("filename", "file", "image", S.IMAGE_ID, "imagename", "path", "file_name")
_LABEL_COLS = ("finding", S.LABEL, "class", "diagnosis")
_PATIENT_COLS = ("patientid", S.PATIENT_ID, "patient", "subject_id")
_SOURCE_COLS = (S.SOURCE,)


def read_csv_tolerant(path: Path) -> pd.DataFrame:
    """Reads a CSV as strings: UTF-8 (with or without BOM), else latin-1."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        sep = dialect.delimiter
    except csv.Error:
        sep = ","
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None


def _pick_col(df: pd.DataFrame, given: Optional[str], candidates: Sequence[str], what: str,
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


def import_metadata_csv(src: str | os.PathLike, opts: ImportOptions = ImportOptions()
                        ) -> ImportResult:
    """A metadata CSV (one row per image) plus its image folder.

    Columns are given in ``opts`` or found among common names (``filename``, ``finding``,
    ``patientid``, ``source``, ...). Each row's source comes from the source column when there
    is one (a multi-hospital CSV keeps its hospitals apart), else ``opts.source`` or the CSV's
    folder name. A file value may be a path relative to the image folder, a name
    without extension, or a unique file stem anywhere below it.
    """
    path = Path(src)
    if not path.is_file():
        raise DataError(f"{path}: metadata CSV does not exist")
    df = read_csv_tolerant(path)
    images = _require_dir(Path(opts.images) if opts.images else path.parent, "image folder")
    cols = {
        "file": _pick_col(df, opts.file_col, _FILE_COLS, "file", path, True),
        S.LABEL: _pick_col(df, opts.label_col, _LABEL_COLS, S.LABEL, path, opts.label is None),
        "patient": _pick_col(df, opts.patient_col, _PATIENT_COLS, "patient id", path, False),
        S.SPLIT: _pick_col(df, opts.split_col, (), S.SPLIT, path, False),
        S.SOURCE: _source_col(df, opts, path),
    }
    if opts.label is not None and opts.label not in S.MANIFEST_LABELS:
        raise DataError(f"label {opts.label!r} is not allowed; allowed: {', '.join(S.MANIFEST_LABELS)}")
    if cols["patient"] is None:
        log.warning("%s: no patient id column; each image is treated as its own patient", path)
    source = opts.source or path.parent.resolve().name
    entries = _csv_entries(df, cols, path, _FileFinder(images), _Labeler(opts), opts, source)
    return _rows(images, source, entries, opts.on_bad_image)


def _source_col(df: pd.DataFrame, opts: ImportOptions, path: Path) -> Optional[str]:
    """The per-row source column: ``opts.source_col``, else ``source`` unless ``opts.source``."""
    if opts.source_col and opts.source:
        raise DataError(f"{path}: give a source column (--source-col {opts.source_col}) or one "
                        f"source for every row (--source {opts.source}), not both")
    if opts.source and not opts.source_col:
        if _pick_col(df, None, _SOURCE_COLS, S.SOURCE, path, False):
            log.info("%s: --source %s given; the CSV's source column is not used",
                     path, opts.source)
        return None
    return _pick_col(df, opts.source_col, _SOURCE_COLS, S.SOURCE, path, False)


def _row_source(row: Mapping[Any, object], col: Optional[str], default: str, where: str) -> str:
    if col is None:
        return default
    value = str(row[col]).strip()
    if not value:
        raise DataError(f"{where}: empty value in source column {col!r}; every row needs a "
                        "source (or pass --source NAME for one source for all rows)")
    return value


def _csv_entries(df: pd.DataFrame, cols: Mapping[str, Optional[str]], path: Path,
                 finder: _FileFinder, labeler: _Labeler, opts: ImportOptions,
                 source: str) -> list[_Entry]:
    entries = []
    for i, row in enumerate(df.to_dict("records")):
        where = f"{path} line {i + 2}"
        label = opts.label or labeler(row[cols[S.LABEL]], where)
        if label is None:
            continue
        split = _SPLIT_NAMES.get(str(row[cols[S.SPLIT]]).strip().lower()) if cols[S.SPLIT] else None
        patient = str(row[cols["patient"]]).strip() if cols["patient"] else None
        file = finder.find(str(row[cols["file"]]).strip(), where)
        row_source = _row_source(row, cols[S.SOURCE], source, where)
        entries.append(_Entry(file, label, patient or None, row_source, split, where))
    _log_dropped(labeler)
    return entries


# --- registry, merge, write -------------------------------------------------------------------

Importer = Callable[[str | os.PathLike, ImportOptions], ImportResult]
IMPORTERS: Registry[Importer] = Registry("importer")
IMPORTERS.register("kermany", import_kermany)
IMPORTERS.register("covidx", import_covidx)
IMPORTERS.register("metadata_csv", import_metadata_csv)
IMPORTERS.register("folder", import_folder)


def import_dataset(kind: str, src: str | os.PathLike, opts: ImportOptions = ImportOptions()
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
