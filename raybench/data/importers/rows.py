"""One image -> one manifest row: the per-image body (hash, displayed size, checks) and the
loop that applies it to an importer's entries."""
from __future__ import annotations

import hashlib
import io
import logging
from functools import partial
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
from PIL import UnidentifiedImageError

from raybench import schema as S
from raybench.data import dicom
from raybench.data import manifest as mf
from raybench.data.images import BadImage
from raybench.data.fingerprints import Fingerprint, read_picture
from raybench.data.importers.common import Entry, ImportResult
from raybench.errors import DataError

log = logging.getLogger(__name__)


def measure(path: Path) -> tuple[int, int, Optional[str], Fingerprint]:
    """``(width, height, view, fingerprint)`` of one file, decoding its pixels fully.

    The view is the DICOM header's ``ViewPosition`` (normalised), None for other formats. The
    fingerprint (SHA-256, and for non-DICOM files the audit's dHash and properties) comes from
    the same read, so the audit need not decode the file again.
    """
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path}: empty file (0 bytes)")
    sha = hashlib.sha256(data).hexdigest()
    if dicom.is_dicom(path):
        _, info = dicom.decode_dicom(io.BytesIO(data), path)  # the whole first frame
        if info.frames > 1:
            log.warning("%s: multi-frame DICOM (%d frames): raybench uses the first frame",
                        path, info.frames)
        # no dHash or mode kept: the mode is a header value, and those stay in the file
        return info.width, info.height, mf.normalise_view(info.view), Fingerprint(sha256=sha)
    facts = Fingerprint(sha256=sha)
    return (*displayed_size(path, data, facts), None, facts)


def displayed_size(path: Path, data: bytes, out: Optional[Fingerprint] = None
                   ) -> tuple[int, int]:
    """``(width, height)`` as displayed (EXIF rotation applied), decoding the pixels fully
    (:func:`~raybench.data.fingerprints.read_picture`, which fills ``out``).

    Raises:
        DataError: ``path`` is not a readable image.
    """
    try:
        return read_picture(data, path, out if out is not None else Fingerprint())
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


def entry_facts(root: Path, dataset: str, e: Entry) -> tuple[dict, Fingerprint]:
    """The manifest row of one entry and its file's fingerprint, from one read of the file.

    A DICOM entry without a view takes the header's ``ViewPosition``: the only header value
    that reaches the manifest.

    The per-image body of every import; :func:`build_rows` applies it to each entry.

    Raises:
        DataError, OSError: The file is missing, empty or not a readable image.
    """
    rel = e.file.relative_to(root).as_posix()
    width, height, header_view, facts = measure(e.file)
    image_id = mf.make_image_id(dataset, rel)
    row = {S.IMAGE_ID: image_id, S.PATH: rel, S.LABEL: e.label,
           S.PATIENT_ID: e.patient or image_id, S.SOURCE: e.source, S.SPLIT: e.split,
           S.SHA256: facts.sha256, S.WIDTH: width, S.HEIGHT: height,
           S.VIEW: e.view or header_view}
    return row, facts


def entry_row(root: Path, dataset: str, e: Entry) -> dict:
    """The manifest row of one entry (:func:`entry_facts` without the fingerprint)."""
    return entry_facts(root, dataset, e)[0]


#: Entries per Ray task of an import (each reads and hashes one whole file).
ROWS_CHUNK = 64


def row_or_error(root: Path, dataset: str, e: Entry
                 ) -> tuple[Optional[tuple[dict, Fingerprint]], Optional[str]]:
    """:func:`entry_facts`, or the reason the entry is bad (so one bad file does not fail a
    chunk)."""
    try:
        return entry_facts(root, dataset, e), None
    except (DataError, OSError) as exc:
        return None, str(exc)


def build_rows(root: Path, dataset: str, entries: Iterable[Entry], on_bad_image: str
               ) -> ImportResult:
    """Hash, measure and fingerprint each entry; bad images raise or are skipped by
    ``on_bad_image``.

    :func:`entry_facts` runs over the Ray cluster in chunks (``raybench.data.prepare``); the
    results come back in entry order, so the manifest is the one the serial loop builds.
    """
    from raybench.data.prepare import map_chunks

    if on_bad_image not in ("fail", "skip"):
        raise DataError(f"on_bad_image={on_bad_image!r}; allowed: fail, skip")
    items = list(entries)
    results = map_chunks(partial(row_or_error, root, dataset), items, chunk_size=ROWS_CHUNK,
                         what="import")
    rows, prints, skipped = [], [], []
    for e, (found, error) in zip(items, results, strict=True):
        if found is not None:
            rows.append(found[0])
            prints.append(found[1])
            continue
        if on_bad_image == "fail":
            raise DataError(f"{e.where + ': ' if e.where else ''}{error}") from None
        log.warning("skipping %s", error)
        skipped.append(BadImage(str(e.file), str(error)))
    if not rows:
        raise DataError(f"{root}: no usable images ({len(skipped)} skipped)")
    df = pd.DataFrame(rows).sort_values(S.PATH, kind="stable").reset_index(drop=True)
    return ImportResult(mf.validate_manifest(df, where=str(root)), root, skipped,
                        fingerprints=prints)
