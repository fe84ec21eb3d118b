"""One image -> one manifest row: the per-image body (hash, displayed size, checks) and the
loop that applies it to an importer's entries."""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
from PIL import UnidentifiedImageError

from raybench import schema as S
from raybench.data import dicom
from raybench.data import manifest as mf
from raybench.data.images import BadImage, open_image
from raybench.data.importers.common import EXIF_ORIENTATION, Entry, ImportResult
from raybench.errors import DataError

log = logging.getLogger(__name__)



def measure(path: Path) -> tuple[int, int, Optional[str]]:
    """``(width, height, view)`` of one file, decoding its pixels fully.

    The view is the DICOM header's ``ViewPosition`` (normalised), None for other formats.
    """
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    if dicom.is_dicom(path):
        _, info = dicom.decode_dicom(path)  # the whole first frame: catches a corrupt stream
        if info.frames > 1:
            log.warning("%s: multi-frame DICOM (%d frames): raybench uses the first frame",
                        path, info.frames)
        return info.width, info.height, mf.normalise_view(info.view)
    return (*displayed_size(path), None)


def displayed_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` as displayed (EXIF rotation applied), decoding the pixels fully.

    A full decode is what catches truncated files; JPEGs decode at 1/8 scale (``draft``),
    which still reads the whole stream but costs a quarter of the time. DICOM files give
    Columns x Rows of their first frame, decoded.
    """
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    if dicom.is_dicom(path):
        return measure(path)[:2]
    try:
        with open_image(path) as img:
            width, height = img.size
            if img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            img.load()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None
    return width, height


def entry_row(root: Path, dataset: str, e: Entry) -> dict:
    """The manifest row of one entry: reads the whole file (hash, displayed size).

    A DICOM entry without a view takes the header's ``ViewPosition``: the only header value
    that reaches the manifest.

    The per-image body of every import; :func:`build_rows` applies it to each entry.

    Raises:
        DataError, OSError: The file is missing, empty or not a readable image.
    """
    rel = e.file.relative_to(root).as_posix()
    width, height, header_view = measure(e.file)
    image_id = mf.make_image_id(dataset, rel)
    return {S.IMAGE_ID: image_id, S.PATH: rel, S.LABEL: e.label,
            S.PATIENT_ID: e.patient or image_id, S.SOURCE: e.source, S.SPLIT: e.split,
            S.SHA256: mf.sha256_file(e.file), S.WIDTH: width, S.HEIGHT: height,
            S.VIEW: e.view or header_view}


#: Entries per Ray task of an import (each reads and hashes one whole file).
ROWS_CHUNK = 64


def row_or_error(root: Path, dataset: str, e: Entry) -> tuple[Optional[dict], Optional[str]]:
    """:func:`entry_row`, or the reason the entry is bad (so one bad file does not fail a chunk)."""
    try:
        return entry_row(root, dataset, e), None
    except (DataError, OSError) as exc:
        return None, str(exc)


def build_rows(root: Path, dataset: str, entries: Iterable[Entry], on_bad_image: str
               ) -> ImportResult:
    """Hash and measure each entry; bad images raise or are skipped by ``on_bad_image``.

    :func:`entry_row` runs over the Ray cluster in chunks (``raybench.data.prepare``); the
    results come back in entry order, so the manifest is the one the serial loop builds.
    """
    from raybench.data.prepare import map_chunks

    if on_bad_image not in ("fail", "skip"):
        raise DataError(f"on_bad_image={on_bad_image!r}; allowed: fail, skip")
    items = list(entries)
    results = map_chunks(partial(row_or_error, root, dataset), items, chunk_size=ROWS_CHUNK,
                         what="import")
    rows, skipped = [], []
    for e, (row, error) in zip(items, results, strict=True):
        if row is not None:
            rows.append(row)
            continue
        if on_bad_image == "fail":
            raise DataError(f"{e.where + ': ' if e.where else ''}{error}") from None
        log.warning("skipping %s", error)
        skipped.append(BadImage(str(e.file), str(error)))
    if not rows:
        raise DataError(f"{root}: no usable images ({len(skipped)} skipped)")
    df = pd.DataFrame(rows).sort_values(S.PATH, kind="stable").reset_index(drop=True)
    return ImportResult(mf.validate_manifest(df, where=str(root)), root, skipped)
