"""One folder per class: ``<root>/<label>/*``; each image is its own patient."""
from __future__ import annotations

import os
from pathlib import Path

from raybench import schema as S
from raybench.data.importers.common import (
    DEFAULTS,
    Entry,
    ImportOptions,
    ImportResult,
    check_inside,
    images_in,
    require_dir,
    subdirs,
)
from raybench.data.importers.rows import build_rows
from raybench.errors import DataError


def import_folder(src: str | os.PathLike, opts: ImportOptions = DEFAULTS) -> ImportResult:
    """One sub-folder per label (case-insensitive); each image is its own patient."""
    root = require_dir(Path(src), "dataset folder")
    source = opts.source or root.resolve().name
    subs = subdirs(root)
    if not subs:
        raise DataError(f"{root}: no class folders found; expected one subfolder per label "
                        f"({', '.join(S.MANIFEST_LABELS)})")
    entries = []
    for name, folder in subs.items():
        if name not in S.MANIFEST_LABELS:
            raise DataError(f"{folder}: folder name {folder.name!r} is not a label; allowed "
                            f"(case-insensitive): {', '.join(S.MANIFEST_LABELS)}")
        for file in images_in(folder):
            check_inside(root, file, str(folder))  # a symlink may point anywhere
            entries.append(Entry(file, name, None, source))
    return build_rows(root, source, entries, opts.on_bad_image)


