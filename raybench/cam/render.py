"""Overlays of stored CAMs on their images, as PNG files (``raybench cam``)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from raybench import schema as S
from raybench.errors import RaybenchError
from raybench.camset import CamSet

ALPHA = 0.45  # weight of the heat map over the gray image


def _jet(values: np.ndarray) -> np.ndarray:
    """(H, W) floats in [0, 1] -> (H, W, 3) uint8 through matplotlib's ``jet`` colormap."""
    from matplotlib import colormaps

    return (colormaps["jet"](np.clip(values, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def upsampled(cams: CamSet, k: int) -> np.ndarray:
    """Map ``k`` bilinearly upsampled to its input size, (H, W) float32 in [0, 1]."""
    h, w = cams.input_size
    small = Image.fromarray(cams.cams[k].astype(np.float32), mode="F")
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))


def overlay(cams: CamSet, k: int) -> Image.Image:
    """Image ``k`` and its CAM overlay side by side (the CAM alone when no image is stored)."""
    heat = _jet(upsampled(cams, k)).astype(np.float32)
    if cams.images is None:
        return Image.fromarray(heat.astype(np.uint8))
    gray = np.repeat(cams.images[k][..., None], 3, axis=2).astype(np.float32)
    if gray.shape[:2] != heat.shape[:2]:
        raise RaybenchError(f"CAM file: image {cams.image_ids[k]} is {gray.shape[:2]} but the "
                            f"maps' input size is {heat.shape[:2]}")
    mixed = (1 - ALPHA) * gray + ALPHA * heat
    return Image.fromarray(np.concatenate([gray, mixed], axis=1).round().astype(np.uint8))


def _file_name(image_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("_")[:120] + ".png"


def render_overlays(cams: CamSet, out_dir: str | Path,
                    image_ids: Optional[Sequence[str]] = None) -> list[dict]:
    """Writes ``<out_dir>/<image_id>.png`` per chosen image (default: every image).

    Returns:
        One dict per file: image_id, label, predicted, path.

    Raises:
        RaybenchError: An image id that the CAM file does not hold.
    """
    ids = cams.image_ids.tolist()
    chosen = list(image_ids) if image_ids else ids
    missing = [i for i in chosen if i not in ids]
    if missing:
        raise RaybenchError(f"no CAM for image(s) {', '.join(missing[:5])}; this trial has CAMs "
                            f"of {len(ids)} images, e.g. {', '.join(ids[:3])}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for image_id in chosen:
        k = ids.index(image_id)
        path = out / _file_name(image_id)
        overlay(cams, k).save(path)
        written.append({S.IMAGE_ID: image_id, S.LABEL: str(cams.labels[k]),
                        S.PREDICTED: str(cams.predicted[k]), "path": str(path)})
    return written
