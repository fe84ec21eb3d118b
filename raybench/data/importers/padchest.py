"""PadChest (BIMCV): one CSV of 160K rows; 16-bit PNGs in numbered folders (``ImageDir``)."""
from __future__ import annotations

import ast
import os
from pathlib import Path

from raybench.catalog.importers import PADCHEST_CSV
from raybench.data import manifest as mf
from raybench.data.importers.common import DEFAULTS, Entry, ImportOptions, ImportResult
from raybench.data.importers.labels import Classifier, LabelRule
from raybench.data.importers.tables import Listed, finish, find_table, read_table, rule_of
from raybench.errors import DataError

CSV_NAME = PADCHEST_CSV
COLUMNS = ("ImageID", "ImageDir", "PatientID", "Projection", "ViewPosition_DICOM", "Labels")
DEFAULT_RULE = LabelRule.from_pairs([("pneumonia", "pneumonia"), ("normal", "normal")])


def parse_labels(text: str, where: str) -> set[str]:
    """``"['pneumonia', 'normal']"`` -> ``{"pneumonia", "normal"}`` (a literal, never eval'd).

    Raises:
        DataError: Not a list of strings.
    """
    if not text.strip():
        return set()
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: Labels {text[:60]!r} is not a list of strings such as "
                        "['pneumonia', 'normal']")
    return {v.strip().lower() for v in value if v.strip()}


def import_padchest(src: str | os.PathLike, opts: ImportOptions = DEFAULTS) -> ImportResult:
    """PadChest: file ``<ImageDir>/<ImageID>`` (or ``<ImageID>`` in a flat copy); patient =
    ``PatientID``; view = ``Projection`` (``L`` -> LATERAL, ``AP_horizontal`` -> AP SUPINE),
    else ``ViewPosition_DICOM``; findings from ``Labels``."""
    root = Path(src)
    csv = find_table(root, [CSV_NAME], "PadChest")
    table = read_table(csv, COLUMNS, ids=("PatientID",), names=("ImageID",))
    classify = Classifier(rule_of(opts, DEFAULT_RULE), opts.views)
    listed, entries, source = Listed(root), [], opts.source or "padchest"
    cols = [table.df[c].tolist() for c in COLUMNS]
    for i, (image, folder, patient, proj, dicom_view, labels) in enumerate(zip(*cols,
                                                                               strict=True)):
        where = table.where(i)
        view = mf.normalise_view(proj) or mf.normalise_view(dicom_view)
        if not classify.view_ok(view):
            continue
        label = classify(parse_labels(labels, where))
        if label is None:
            continue
        file = listed.resolve(f"{folder.strip()}/{image.strip()}", where)
        if not file.is_file() and (root / image.strip()).is_file():
            file = listed.resolve(image, where)
        if listed.present(file, where):
            entries.append(Entry(file, label, patient.strip() or None, source, None, where,
                                 view))
    return finish(root, source, entries, opts, classify, listed.missing)
