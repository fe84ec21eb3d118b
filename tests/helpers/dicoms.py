"""DICOM files written with pydicom for the tests: a planted patient name, windows, rescales,
MONOCHROME1, multi-frame and compressed transfer syntaxes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

#: Patient data planted in every header; no output file may contain it.
PLANTED_NAME = "Planted^Secret"
PLANTED_BIRTH = "19230407"


def dataset(arr: np.ndarray, bits_stored: int = 12, photometric: str = "MONOCHROME2",
            view: Optional[str] = "PA", signed: bool = False, **attrs: Any) -> Any:
    """A Digital X-Ray dataset holding ``arr`` ((H, W) or (frames, H, W)) natively."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX for presentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientBirthDate, ds.PatientID = PLANTED_NAME, PLANTED_BIRTH, "X-991"
    ds.Modality = "DX"
    if view:
        ds.ViewPosition = view
    frames = arr.shape[0] if arr.ndim == 3 else 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, int(signed)
    dtype = {(8, False): np.uint8, (16, False): np.uint16, (16, True): np.int16}[
        (ds.BitsAllocated, signed)]
    ds.PixelData = arr.astype(dtype).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def save(ds: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write(path: Path, arr: np.ndarray, **kw: Any) -> Path:
    return save(dataset(arr, **kw), path)


def gradient(h: int = 24, w: int = 32, top: int = 4095) -> np.ndarray:
    """A horizontal ramp 0..top (distinct columns: resizing and windowing show)."""
    return np.tile(np.linspace(0, top, w).round(), (h, 1)).astype(np.int64)
