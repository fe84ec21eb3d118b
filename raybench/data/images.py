"""Decoding images to fixed-size uint8 grayscale arrays, with a bad-image policy.

Chest X-rays are grayscale; raybench keeps them as one uint8 channel of the model's input size
(N, S, S) and replicates to three channels only on the device, which keeps host memory and
transfers at a third.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from raybench.data import dicom
from raybench.errors import DataError

log = logging.getLogger(__name__)

#: Largest image decoded, in pixels (:data:`raybench.data.dicom.MAX_IMAGE_PIXELS`: every
#: decoder keeps the same limit).
MAX_IMAGE_PIXELS = dicom.MAX_IMAGE_PIXELS


@contextlib.contextmanager
def open_image(source: Union[str, Path, IO[bytes]], name: object = None) -> Iterator[Image.Image]:
    """``PIL.Image.open`` that refuses images over :data:`MAX_IMAGE_PIXELS` from their header.

    Args:
        source: A path or a binary file object.
        name: What to call the image in messages (default: ``source``).

    Raises:
        DataError: The image declares more than :data:`MAX_IMAGE_PIXELS` pixels.
        UnidentifiedImageError, OSError: As ``Image.open`` (callers turn them into DataError).
    """
    name = source if name is None else name
    try:
        with warnings.catch_warnings():  # PIL warns past its own limit; ours is lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
    except Image.DecompressionBombError as exc:  # past twice PIL's limit: PIL refuses itself
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,}" if found else "too many"
        raise DataError(f"{name}: image of {pixels} pixels exceeds the limit of "
                        f"{MAX_IMAGE_PIXELS:,} (a decompression bomb?)") from None
    with img:
        width, height = img.size
        if width * height > MAX_IMAGE_PIXELS:
            raise DataError(f"{name}: image of {width} x {height} = {width * height:,} pixels "
                            f"exceeds the limit of {MAX_IMAGE_PIXELS:,} (a decompression bomb?)")
        yield img


@dataclass(frozen=True)
class BadImage:
    """An image that could not be used, and why."""

    path: str
    reason: str


def _to_gray(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit radiographs: stretch the used range to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("L")


def _pil_gray(path: Path) -> Image.Image:
    with open_image(path) as img:
        img.load()
        return _to_gray(ImageOps.exif_transpose(img))


def _dicom_gray(path: Path) -> Image.Image:
    pixels, _ = dicom.decode_dicom(path)
    return Image.fromarray(pixels, mode="L")


def probe_dicom(data: bytes, name: str) -> Optional[tuple[Image.Image, str]]:
    """For the audit probe: None when ``data`` is not DICOM (by name or ``DICM`` magic), else
    the first frame as displayed (an ``L`` image) and a mode naming the stored bit depth.

    Raises:
        DataError: A DICOM file that cannot be decoded (the reason names the decoder).
    """
    if Path(name).suffix.lower() not in dicom.DICOM_SUFFIXES and not dicom.has_dicom_magic(data):
        return None
    pixels, info = dicom.decode_dicom(io.BytesIO(data), name)
    return Image.fromarray(pixels, mode="L"), dicom.probe_mode(info)


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """Reads one image as a (size, size) uint8 grayscale array.

    EXIF orientation is applied, 16-bit images are rescaled (full used range), alpha is
    composited on black and RGB / palette / CMYK images are converted to luminance; DICOM files
    (``.dcm`` / ``.dicom`` or the ``DICM`` magic) are decoded by :mod:`raybench.data.dicom` as
    displayed (rescale, window, MONOCHROME1 inverted, first frame); then a bilinear resize.

    Raises:
        DataError: Missing, empty, truncated or unreadable file (message names the file).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
        gray = _dicom_gray(path) if dicom.is_dicom(path) else _pil_gray(path)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def decode_images(paths: Sequence[str | Path], size: int, on_bad_image: str = "fail"
                  ) -> tuple[np.ndarray, np.ndarray, list[BadImage]]:
    """Decodes many images into one (N_ok, size, size) uint8 array.

    Args:
        paths: Image files.
        size: Output side in pixels.
        on_bad_image: ``fail`` raises at the first bad image; ``skip`` leaves it out.

    Returns:
        The array, a boolean mask (N,) of the paths kept, and the skipped images with reasons.
    """
    if on_bad_image not in ("fail", "skip"):
        raise DataError(f"on_bad_image={on_bad_image!r}; allowed: fail, skip")
    out = np.empty((len(paths), size, size), dtype=np.uint8)
    keep = np.zeros(len(paths), dtype=bool)
    bad: list[BadImage] = []
    for i, path in enumerate(paths):
        try:
            out[i] = decode_image(path, size)
            keep[i] = True
        except DataError as exc:
            if on_bad_image == "fail":
                raise
            log.warning("skipping %s", exc)
            bad.append(BadImage(str(path), str(exc)))
    return out[keep] if bad else out, keep, bad
