"""The type CAM users get: one trial's class activation maps, as stored in ``cams/<trial_id>.npz``.

Torch-free (numpy only), so notebooks can read and draw stored CAMs without importing torch.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np

from raybench import schema as S

__all__ = ["CamSet"]


@dataclass(frozen=True, eq=False)
class CamSet:
    """Class activation maps of one trial, as stored in ``cams/<trial_id>.npz``.

    Attributes:
        image_ids: (N,) image ids (the manifest's ``image_id``).
        labels: (N,) true labels.
        predicted: (N,) predicted labels.
        cams: (N, h, w) maps, stored as float16 (usually scaled to [0, 1]).
        method: How the maps were made, e.g. ``cam`` or ``gradcam``.
        target_layer: The module the maps come from, e.g. ``layer4``.
        input_size: (H, W) of the model input the maps explain.
        images: Optional (N, H, W) uint8 grayscale inputs, drawn as the "original" column.
    """

    image_ids: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    cams: np.ndarray
    method: str
    target_layer: str
    input_size: tuple[int, int]
    images: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        cams = np.asarray(self.cams)
        if cams.ndim != 3:
            raise ValueError(f"cams must be (N, h, w), got shape {cams.shape}")
        n = cams.shape[0]
        for name in ("image_ids", "labels", S.PREDICTED):
            arr = np.asarray(getattr(self, name)).astype(str)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "cams", cams.astype(np.float16))
        size = np.broadcast_to(np.asarray(self.input_size, dtype=np.int64).reshape(-1), (2,))
        object.__setattr__(self, "input_size", (int(size[0]), int(size[1])))
        if self.images is not None:
            images = np.asarray(self.images)
            if images.ndim != 3 or images.shape[0] != n or images.dtype != np.uint8:
                raise ValueError(f"images must be uint8 (N={n}, H, W), got {images.dtype} "
                                 f"{images.shape}")

    def __len__(self) -> int:
        return int(self.cams.shape[0])

    def to_npz(self) -> bytes:
        """The NPZ bytes (compressed; strings as unicode arrays, so no pickle is needed)."""
        arrays: dict[str, np.ndarray] = {
            "image_ids": self.image_ids, "labels": self.labels, S.PREDICTED: self.predicted,
            "cams": self.cams, "method": np.array(self.method),
            "target_layer": np.array(self.target_layer),
            "input_size": np.array(self.input_size, dtype=np.int64)}
        if self.images is not None:
            arrays["images"] = self.images
        assert set(arrays) <= set(S.CAM_KEYS)
        sink = io.BytesIO()
        np.savez_compressed(sink, **arrays)  # type: ignore[arg-type]  # numpy's stub: allow_pickle
        return sink.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> "CamSet":
        """Parses :meth:`to_npz` bytes."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return cls(image_ids=npz["image_ids"], labels=npz["labels"],
                       predicted=npz[S.PREDICTED], cams=npz["cams"],
                       method=str(npz["method"]), target_layer=str(npz["target_layer"]),
                       input_size=tuple(npz["input_size"].tolist()),
                       images=npz["images"] if "images" in npz.files else None)
