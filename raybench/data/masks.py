"""Lung masks of a manifest's images, and a lung-field approximation for images without one.

Masks come from the manifest's ``mask_path`` column (the synthetic generator writes them). For
real images without masks, :func:`lung_field_template` is a fixed *approximation*: two upright
ellipses where the lungs sit on a centred, upright posteroanterior (PA) chest film that is
cropped to the thorax (centres at 31% and 69% of the width and 46% of the height, half-axes
16% x 29% of the side). It contains no image analysis, so it fails wherever the film departs
from that geometry: anteroposterior (AP) bedside films and children (wider heart, higher
diaphragm), rotated, tilted or off-centre patients, films with much abdomen or neck in view,
lateral views, and collapsed or resected lungs. It also counts the heart borders and the
costophrenic angles only roughly. Metrics computed with it are named ``*_approx`` in the
metrics table so they are never mistaken for mask-based scores.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from raybench import schema as S
from raybench.data import manifest as mf
from raybench.data.images import open_image
from raybench.errors import DataError

log = logging.getLogger(__name__)

# Lung-field template in units of the image side: (centre x, centre y, half-width, half-height).
LUNG_TEMPLATE: tuple[tuple[float, float, float, float], ...] = (
    (0.31, 0.46, 0.16, 0.29),
    (0.69, 0.46, 0.16, 0.29),
)


def lung_field_template(size: int) -> np.ndarray:
    """The approximate lung fields of a centred PA chest film, (size, size) bool."""
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    out = np.zeros((size, size), dtype=bool)
    for cx, cy, rx, ry in LUNG_TEMPLATE:
        out |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    return out


def _read_mask(path: Path, size: int) -> np.ndarray:
    with open_image(path) as img:  # a mask is an image file too: same pixel limit
        small = img.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(small) > 127


def load_masks(manifest: pd.DataFrame, image_ids: Sequence[str], roots: Sequence[Path],
               size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lung masks of ``image_ids`` at ``size``, from the manifest's ``mask_path`` column.

    A relative ``mask_path`` is looked up under each manifest folder in ``roots`` (a scenario
    may read a second manifest for its test set); the first existing file wins. Images without
    a usable mask get :func:`lung_field_template`.

    Returns:
        masks (N, size, size) bool and ``from_file`` (N,) bool (False: the template was used).
    """
    paths: dict[str, Optional[str]] = {}
    if S.MASK_PATH in manifest.columns:
        paths = dict(zip(manifest[S.IMAGE_ID], manifest[S.MASK_PATH], strict=True))
    template = lung_field_template(size)
    masks = np.empty((len(image_ids), size, size), dtype=bool)
    from_file = np.zeros(len(image_ids), dtype=bool)
    for i, image_id in enumerate(image_ids):
        found = _find(paths.get(image_id), roots)
        masks[i] = _read_mask(found, size) if found else template
        from_file[i] = found is not None
    if not from_file.all():
        log.info("lung masks: %d of %d images have no mask file; using the lung-field template "
                 "(ROI-focus metrics named *_approx)", int((~from_file).sum()), len(image_ids))
    return masks, from_file


def _find(mask_path: Optional[str], roots: Sequence[Path]) -> Optional[Path]:
    if not isinstance(mask_path, str) or not mask_path:
        return None
    for root in roots:
        try:
            path = mf.resolve_image_path(root, mask_path)
        except DataError:  # a non-local URI: no mask from it
            return None
        if path.is_file():
            return path
    return None
