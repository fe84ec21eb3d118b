"""Synthetic chest X-rays with class-dependent lung patterns, for tests and demos.

Each image is a dark background, a bright body silhouette and two darker lung fields, with
per-image jitter and noise. The class shows only inside the lungs:

- ``normal``: clean lungs;
- ``bacteria``: one or two dense, bright lobar consolidations in one lung;
- ``viral``: diffuse, fine, bilateral haze with a reticular texture;
- ``covid19``: several faint ground-glass patches at the outer edges of both lungs, lower zones.

``marker_leak`` adds a class-correlated letter in a corner, outside the lungs, to imitate the
shortcut the paper warns about (a hospital marker such as the letter "R"). A model that learns
it scores well without looking at the lungs, which CAMs and the ROI focus metric should reveal.

Only numpy and PIL are used; one image (plus its mask) takes well under a millisecond of
compute at 64 px, so tests can make data sets on the fly. The same seed gives byte-identical
files: every image has its own random stream seeded by ``(seed, class index, image index)``.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from raybench import schema
from raybench.data.manifest import make_image_id, validate_manifest, write_manifest
from raybench.errors import DataError

logger = logging.getLogger(__name__)

SOURCE = "synthetic"
MANIFEST_NAME = "manifest.parquet"

# Marker glyphs as polylines in a unit box (x right, y down): the label's initial letter.
_GLYPHS: dict[str, tuple[tuple[tuple[float, float], ...], ...]] = {
    "normal": (((0, 1), (0, 0), (1, 1), (1, 0)),),
    "bacteria": (
        ((0, 1), (0, 0), (0.7, 0), (1, 0.22), (0.7, 0.48), (0, 0.48)),
        ((0.7, 0.48), (1, 0.74), (0.7, 1), (0, 1)),
    ),
    "viral": (((0, 0), (0.5, 1), (1, 0)),),
    "covid19": (((1, 0), (0, 0), (0, 1), (1, 1)),),
}
# Marker corner per class: (0 = left, 1 = right), (0 = top, 1 = bottom).
_CORNERS: dict[str, tuple[int, int]] = {
    "normal": (0, 0),
    "bacteria": (1, 0),
    "viral": (0, 1),
    "covid19": (1, 1),
}


@dataclass(frozen=True)
class Ellipse:
    """An axis-aligned ellipse in pixels; ``side`` is -1 / +1 for the image-left / right lung."""

    cx: float
    cy: float
    rx: float
    ry: float
    side: int = 0

    def radius(self, size: int) -> np.ndarray:
        """Normalised radius (1 on the outline) at every pixel centre, shape (size, size)."""
        yy, xx = _grid(size)
        return np.sqrt(((xx - self.cx) / self.rx) ** 2 + ((yy - self.cy) / self.ry) ** 2)

    def soft(self, size: int) -> np.ndarray:
        """Mask with a short linear ramp at the outline, in [0, 1], shape (size, size)."""
        return np.clip((1.04 - self.radius(size)) / 0.08, 0.0, 1.0)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)``, each (size, size) float32."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return yy, xx


def _blob(size: int, cx: float, cy: float, sigma: float) -> np.ndarray:
    """Isotropic Gaussian bump with peak 1, shape (size, size)."""
    yy, xx = _grid(size)
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * sigma**2))


def _anatomy(rng: np.random.Generator, size: int) -> tuple[Ellipse, Ellipse, Ellipse]:
    """Jittered body and the two lungs (image-left, image-right)."""

    def jit(mean: float, spread: float) -> float:
        return size * (mean + rng.uniform(-spread, spread))

    body = Ellipse(jit(0.5, 0.02), jit(0.57, 0.02), jit(0.43, 0.02), jit(0.47, 0.02))
    cy, gap = jit(0.48, 0.02), jit(0.18, 0.012)
    left, right = (
        Ellipse(body.cx + side * gap, cy + jit(0, 0.01), jit(0.13, 0.01), jit(0.27, 0.02), side)
        for side in (-1, 1)
    )
    return body, left, right


def _normal(rng: np.random.Generator, size: int, lungs: Sequence[Ellipse]) -> np.ndarray:
    """Clean lungs: no added pattern."""
    return np.zeros((size, size), np.float32)


def _bacteria(rng: np.random.Generator, size: int, lungs: Sequence[Ellipse]) -> np.ndarray:
    """One or two dense, flat-topped bright consolidations in one lung."""
    lung = lungs[int(rng.integers(2))]
    out = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, 3))):
        cx = lung.cx + rng.uniform(-0.35, 0.35) * lung.rx
        cy = lung.cy + rng.uniform(-0.45, 0.55) * lung.ry
        bump = np.clip(1.5 * _blob(size, cx, cy, size * rng.uniform(0.055, 0.08)), 0.0, 1.0)
        out = np.maximum(out, rng.uniform(90, 115) * bump)
    return out * lung.soft(size)


def _viral(rng: np.random.Generator, size: int, lungs: Sequence[Ellipse]) -> np.ndarray:
    """Diffuse bilateral haze plus a fine reticular texture (2-px noise, upsampled)."""
    coarse = rng.standard_normal((size // 2, size // 2)).astype(np.float32)
    fine = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR))
    texture = rng.uniform(22, 28) * np.abs(fine)
    return rng.uniform(10, 18) + texture


def _covid19(rng: np.random.Generator, size: int, lungs: Sequence[Ellipse]) -> np.ndarray:
    """Several faint ground-glass patches at the outer, lower edges of both lungs."""
    out = np.zeros((size, size), np.float32)
    for k in range(int(rng.integers(3, 7))):
        lung = lungs[k % 2]
        cx = lung.cx + lung.side * rng.uniform(0.45, 0.8) * lung.rx
        cy = lung.cy + rng.uniform(0.0, 0.75) * lung.ry
        patch = _blob(size, cx, cy, size * rng.uniform(0.045, 0.06))
        out = np.maximum(out, rng.uniform(50, 65) * patch)
    return out


_PATTERNS: dict[str, Callable[[np.random.Generator, int, Sequence[Ellipse]], np.ndarray]] = {
    "normal": _normal,
    "bacteria": _bacteria,
    "viral": _viral,
    "covid19": _covid19,
}


def _render(rng: np.random.Generator, size: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image and its lung mask, both (size, size) uint8."""
    body, left, right = _anatomy(rng, size)
    background, body_level = rng.uniform(10, 22), rng.uniform(140, 160)
    lung_level = body_level * rng.uniform(0.32, 0.4)
    lung_soft = np.maximum(left.soft(size), right.soft(size))
    img = background + (body_level - background) * body.soft(size)
    img = img - (body_level - lung_level) * lung_soft
    img = img + _PATTERNS[label](rng, size, (left, right)) * lung_soft
    img = img + rng.normal(0.0, rng.uniform(3, 6), (size, size))
    mask = (np.minimum(left.radius(size), right.radius(size)) <= 1.0).astype(np.uint8) * 255
    return np.clip(np.rint(img), 0, 230).astype(np.uint8), mask


def _draw_marker(img: Image.Image, rng: np.random.Generator, label: str) -> None:
    """Stroke the label's initial letter at 255 in the label's corner, outside the lungs."""
    size = img.width
    gw, gh = 0.11 * size, 0.15 * size
    margin = size * (0.04 + rng.uniform(0, 0.02))
    right, bottom = _CORNERS[label]
    x0 = size - margin - gw if right else margin
    y0 = size - margin - gh if bottom else margin
    draw = ImageDraw.Draw(img)
    for stroke in _GLYPHS[label]:
        points = [(x0 + u * gw, y0 + v * gh) for u, v in stroke]
        draw.line(points, fill=255, width=max(1, round(size / 40)), joint="curve")


def _png_bytes(img: Image.Image) -> bytes:
    """Encode a grayscale image as PNG (deterministic: no timestamps or metadata)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _check_int(name: str, value: object, minimum: int, unit: str = "") -> None:
    """Raise DataError unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(
            f"synthesize: {name}={value!r} is not allowed; it must be an integer >= {minimum}{unit}"
        )


def _check_args(
    per_class: int, size: int, seed: int, labels: Sequence[str], marker_leak: float
) -> None:
    """Raise DataError for an argument outside its allowed range."""
    _check_int("per_class", per_class, 1)
    _check_int("size", size, 32, " (pixels)")
    _check_int("seed", seed, 0)
    if not isinstance(marker_leak, (int, float)) or not 0.0 <= marker_leak <= 1.0:
        raise DataError(
            f"synthesize: marker_leak={marker_leak!r} is not allowed; it must be in [0, 1]"
        )
    bad = [lab for lab in labels if lab not in schema.LABELS]
    if bad or not labels or len(set(labels)) != len(labels):
        unknown = f" (unknown: {', '.join(map(repr, bad))})" if bad else ""
        raise DataError(
            f"synthesize: labels={list(labels)!r} is not allowed; give distinct labels from "
            f"{', '.join(schema.LABELS)}{unknown}"
        )


def _write(path: Path, data: bytes) -> None:
    """Write bytes to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _make_one(out_dir: Path, label: str, i: int, size: int, seed: int, marker_leak: float) -> dict:
    """Render, write and describe one image and its mask."""
    rng = np.random.default_rng([seed, schema.LABELS.index(label), i])
    pixels, mask = _render(rng, size, label)
    img = Image.fromarray(pixels)
    if rng.random() < marker_leak:
        _draw_marker(img, rng, label)
    name = f"{label}_{i:04d}.png"
    rel, mask_rel = f"images/{label}/{name}", f"masks/{name}"
    data = _png_bytes(img)
    _write(out_dir / rel, data)
    _write(out_dir / mask_rel, _png_bytes(Image.fromarray(mask)))
    return {
        schema.IMAGE_ID: make_image_id(SOURCE, f"{label}/{name}"),
        schema.PATH: rel,
        schema.LABEL: label,
        schema.PATIENT_ID: f"synth-{label}-{i}",
        schema.SOURCE: SOURCE,
        schema.SPLIT: None,
        schema.SHA256: hashlib.sha256(data).hexdigest(),
        schema.WIDTH: size,
        schema.HEIGHT: size,
        schema.MASK_PATH: mask_rel,
    }


def synthesize(
    out_dir: str | os.PathLike,
    per_class: int = 40,
    size: int = 64,
    seed: int = 0,
    labels: Sequence[str] = schema.LABELS,
    marker_leak: float = 0.0,
) -> pd.DataFrame:
    """Write a synthetic chest X-ray data set with lung masks and a manifest.

    Layout: ``out_dir/images/<label>/<label>_<i:04d>.png`` (8-bit grayscale),
    ``out_dir/masks/<label>_<i:04d>.png`` (lung mask, 0/255) and ``out_dir/manifest.parquet``
    (paths relative to ``out_dir``; one patient per image; source ``"synthetic"``).

    Args:
        out_dir: Destination folder (created if needed).
        per_class: Images per label, >= 1.
        size: Image side in pixels, >= 32.
        seed: Non-negative seed; the same seed gives byte-identical files.
        labels: Labels to generate, a subset of ``schema.LABELS``.
        marker_leak: Probability in [0, 1] that an image carries its class's corner marker.

    Returns:
        The manifest written to ``out_dir/manifest.parquet``.

    Raises:
        DataError: An argument is out of range or a label is unknown.
    """
    labels = tuple(labels)
    _check_args(per_class, size, seed, labels, marker_leak)
    out_dir = Path(out_dir)
    rows = [
        _make_one(out_dir, label, i, size, seed, float(marker_leak))
        for label in labels
        for i in range(per_class)
    ]
    df = validate_manifest(pd.DataFrame(rows), where=str(out_dir))
    write_manifest(df, out_dir / MANIFEST_NAME)
    logger.info("synthesized %d images (%d px, seed %d) in %s", len(df), size, seed, out_dir)
    return df
