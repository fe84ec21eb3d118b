"""DICOM radiographs -> 8-bit grayscale, as a viewer would show them (pydicom, optional extra).

The display pipeline of DICOM PS3.3 C.11: stored values -> Modality LUT (Rescale Slope /
Intercept or a Modality LUT Sequence) -> VOI LUT Sequence, else Window Center / Width (LINEAR,
LINEAR_EXACT or SIGMOID), else a percentile window (:data:`PERCENTILE_WINDOW`) -> 0..255;
MONOCHROME1 (white = low values) is inverted. Multi-frame files give their first frame.

Nothing from a header leaves this module except the pixel array, its size, the frame count and
the view (``ViewPosition``): headers hold patient data (names, dates, ids) that must never reach
a manifest, a log or a result.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional, Union

import numpy as np

from raybench.errors import DataError

log = logging.getLogger(__name__)

#: Largest image decoded (PNG, JPEG or DICOM), in pixels (8192 x 8192). Chest radiographs are at
#: most about 4,900 x 4,900 (24 M px); a file declaring more is refused before its pixels are
#: decoded, so a "decompression bomb" (a small file that inflates to gigabytes) costs nothing.
MAX_IMAGE_PIXELS = 8192 * 8192
#: File name suffixes taken as DICOM without looking inside (compared lower-case).
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
#: Where the DICOM Part 10 magic ``DICM`` sits (after the 128-byte preamble).
_MAGIC_AT = 128
#: Percentiles of the modality values mapped to black and white when a file has no window.
PERCENTILE_WINDOW: tuple[float, float] = (0.5, 99.5)
_INSTALL = "install the DICOM extra: pip install 'raybench[dicom]'"

Source = Union[str, os.PathLike, IO[bytes]]


@dataclass(frozen=True)
class DicomInfo:
    """The facts raybench keeps about one DICOM file (no patient data).

    Attributes:
        width / height: Columns / Rows of one frame.
        frames: Number of frames; only the first is used.
        view: ``ViewPosition`` as written (``PA``, ``AP``, ``LL``, ...), None when absent.
        bits: Bits Stored.
        photometric: Photometric Interpretation (``MONOCHROME1``, ``MONOCHROME2``, ``RGB``, ...).
    """

    width: int
    height: int
    frames: int
    view: Optional[str]
    bits: int
    photometric: str


def has_dicom_magic(head: bytes) -> bool:
    """True when ``head`` (the first 132+ bytes of a file) carries the Part 10 ``DICM`` magic."""
    return head[_MAGIC_AT:_MAGIC_AT + 4] == b"DICM"


def is_dicom(path: Union[str, os.PathLike]) -> bool:
    """A ``.dcm`` / ``.dicom`` name, or a file starting with the Part 10 preamble + ``DICM``."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            return has_dicom_magic(fh.read(_MAGIC_AT + 4))
    except OSError:
        return False


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise DataError(f"reading DICOM needs pydicom; {_INSTALL}") from None
    return pydicom


def _read(source: Source, name: object, header_only: bool = False) -> Any:
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(source, stop_before_pixels=header_only, force=True)
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on a broken file
        raise DataError(f"{name}: unreadable DICOM ({type(exc).__name__}: {exc})") from None


def _info(ds: Any, name: object) -> DicomInfo:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{name}: unreadable DICOM (no Rows / Columns: not an image)") from None

    if rows * cols > MAX_IMAGE_PIXELS:
        raise DataError(f"{name}: image of {cols} x {rows} = {rows * cols:,} pixels exceeds the "
                        f"limit of {MAX_IMAGE_PIXELS:,} (a decompression bomb?)")
    view = str(ds.get("ViewPosition", "") or "").strip() or None
    return DicomInfo(width=cols, height=rows, frames=int(ds.get("NumberOfFrames", 1) or 1),
                     view=view, bits=int(ds.get("BitsStored", 8) or 8),
                     photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")))


def dicom_info(source: Source, name: object = None) -> DicomInfo:
    """Size, frame count and view from the header only (pixels are not read)."""
    name = source if name is None else name
    return _info(_read(source, name, header_only=True), name)


def _syntax(ds: Any) -> Any:
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if uid is None:
        from pydicom.uid import ImplicitVRLittleEndian

        return ImplicitVRLittleEndian
    return uid


def _decoder_problem(uid: Any) -> Optional[str]:
    """Why the pixels of transfer syntax ``uid`` cannot be decoded here, or None."""
    from pydicom.pixels import get_decoder

    label = f"transfer syntax {getattr(uid, 'name', uid)} ({uid})"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"{label}: pydicom has no decoder for it"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        return f"{label}: missing decoder ({missing}); {_INSTALL}"
    return None


def _first_frame(ds: Any, info: DicomInfo, name: object) -> np.ndarray:
    from pydicom.pixels import pixel_array

    uid = _syntax(ds)
    problem = _decoder_problem(uid)
    if problem:
        raise DataError(f"{name}: cannot decode DICOM pixels: {problem}")
    if "PixelData" not in ds:
        raise DataError(f"{name}: unreadable DICOM (no pixel data)")
    try:
        arr = pixel_array(ds, index=0) if info.frames > 1 else ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - a corrupt stream fails inside the plugin
        raise DataError(f"{name}: cannot decode DICOM pixels (transfer syntax "
                        f"{getattr(uid, 'name', uid)}: {type(exc).__name__}: {exc})") from None
    if info.frames > 1:
        log.info("%s: multi-frame DICOM (%d frames): the first frame is used", name, info.frames)
    return np.asarray(arr)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR"
           ) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 VOI windowing of modality values to [0, 1] (float64).

    ``LINEAR`` (the default; ``width >= 1``), ``LINEAR_EXACT`` (``width > 0``) or ``SIGMOID``.
    """
    x = np.asarray(values, dtype=np.float64)
    function = function.upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise ValueError(f"Window Width {width} < 1 is not allowed for LINEAR")
    if width == 1:  # the standard's step function
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _first(value: Any) -> float:
    """A Window Center / Width may hold several values: the first is the default view."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0]
    return float(value)


def percentile_window(values: np.ndarray) -> np.ndarray:
    """Values between the :data:`PERCENTILE_WINDOW` percentiles -> [0, 1], clipped."""
    lo, hi = np.percentile(values, PERCENTILE_WINDOW)
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float64)
    return np.clip((values.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)


def _voi(values: np.ndarray, ds: Any) -> np.ndarray:
    """Modality values -> [0, 1]: VOI LUT Sequence, else window, else percentile window."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        from pydicom.pixels import apply_voi

        # a LUT is indexed by integer modality values (pydicom warns on floats)
        out = np.asarray(apply_voi(np.rint(values).astype(np.int64), ds), dtype=np.float64)
        lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
        lo, hi = float(lut.min()), float(lut.max())
        return np.clip((out - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(out)
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
        return window(values, _first(center), _first(width), function)
    return percentile_window(values)


def to_display(arr: np.ndarray, ds: Any) -> np.ndarray:
    """One frame of stored values -> (H, W) uint8 as displayed (see the module docstring)."""
    from pydicom.pixels import apply_modality_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour (RGB after pydicom's YBR conversion): ITU-R 601 luminance
        gray = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.clip(np.rint(gray * 255.0 / max(float(gray.max()), 1.0)), 0, 255
                       ).astype(np.uint8)
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    shown = _voi(values, ds)
    if photometric == "MONOCHROME1":
        shown = 1.0 - shown
    return np.rint(shown * 255.0).astype(np.uint8)


def decode_dicom(source: Source, name: object = None) -> tuple[np.ndarray, DicomInfo]:
    """The first frame as displayed, (H, W) uint8, and the file's :class:`DicomInfo`.

    Raises:
        DataError: Not DICOM, no pixels, a transfer syntax without an installed decoder (named
            with the decoder that is missing) or a corrupt pixel stream.
    """
    name = source if name is None else name
    ds = _read(source, name)
    info = _info(ds, name)
    arr = _first_frame(ds, info, name)
    try:
        return to_display(arr, ds), info
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise DataError(f"{name}: cannot display DICOM pixels ({type(exc).__name__}: {exc})"
                        ) from None


def probe_mode(info: DicomInfo) -> str:
    """A Pillow-style mode naming the stored bit depth (the audit's bit-depth property)."""
    return "L" if info.bits <= 8 else "I;16"
