"""Transforms: on the training device uint8 grayscale -> normalised 3-channel; on the host the
lungs-hidden control (``data.roi``) that blanks the lung fields or everything but them."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from raybench.config import spec as config_spec


def to_model_input(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   size: int | None = None,
                   memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Turns a uint8 batch (B, H, W) into the model's float input (B, 3, S, S).

    Scales to [0, 1], optionally resizes bilinearly to ``size``, replicates the gray channel
    and normalises with the model's per-channel ``mean`` / ``std`` (ImageNet statistics for
    the pretrained models), all on the batch's device. ``memory_format=torch.channels_last``
    lays the result out as NHWC (for a model converted to channels_last).
    """
    x = batch.unsqueeze(1).float().div_(255.0)  # (B, 1, H, W)
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.expand(-1, 3, -1, -1)  # (B, 3, S, S), a view: no copy until normalisation
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    out = (x - mean_t) / std_t
    return out if memory_format == torch.contiguous_format else out.contiguous(
        memory_format=memory_format)


def random_affine(x: torch.Tensor, max_shift: float = 0.06, max_scale: float = 0.06,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Light augmentation on the device: a random shift and zoom per image (B, C, S, S).

    One batched ``grid_sample``: shifts up to ``max_shift`` of the side, zooms by up to
    ``max_scale``; borders are filled by replicating edge pixels. No flips (the heart's side
    matters in a chest X-ray).
    """
    b = x.shape[0]
    rand = torch.rand(b, 3, generator=generator, device=generator.device if generator else None)
    rand = rand.to(x.device) * 2 - 1  # (B, 3) in [-1, 1)
    scale = 1 + max_scale * rand[:, 0]
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = 2 * max_shift * rand[:, 1:]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    nhwc = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return out.contiguous(memory_format=torch.channels_last) if nhwc else out


#: Gray level of hidden pixels under ``data.roi``: 0, black, a constant for every image and
#: split. A per-image value (its mean, or the mean of the hidden part) would not do: the
#: brightness of the hidden part differs by class (haze, consolidation) and would leak into the
#: fill. Black is also what a radiograph shows where nothing absorbs (air outside the body).
ROI_FILL = 0
#: The lung fields are widened by this share of the side (at least 1 px) before masking, so that
#: the soft lung borders (and a mask drawn slightly tight) are hidden with the lungs under
#: ``outside_lungs``; ``lungs_only`` keeps the same widened region, so the two are complements.
ROI_MARGIN = 0.02


def widen(masks: np.ndarray, margin: float = ROI_MARGIN) -> np.ndarray:
    """Dilates (N, S, S) bool masks by ``margin`` of the side (a square, at least 1 px)."""
    r = max(1, int(round(margin * masks.shape[-1])))
    t = torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None]  # (N, 1, S, S)
    return (F.max_pool2d(t, 2 * r + 1, stride=1, padding=r)[:, 0] > 0).numpy()


def apply_roi(images: np.ndarray, lungs: np.ndarray, roi: str, fill: int = ROI_FILL) -> np.ndarray:
    """Blanks part of each image for the lungs-hidden shortcut control, in place.

    Args:
        images: (N, S, S) uint8, changed in place and returned.
        lungs: (N, S, S) bool lung fields (already widened, see :func:`widen`).
        roi: ``full`` (unchanged), ``lungs_only`` (outside the lungs set to ``fill``) or
            ``outside_lungs`` (the lungs set to ``fill``).
        fill: Gray level of hidden pixels.

    Raises:
        ValueError: An unknown ``roi`` or masks of another shape.
    """
    if roi not in ROIS:
        raise ValueError(f"roi={roi!r}; allowed: {', '.join(ROIS)}")
    if roi == "full":
        return images
    if lungs.shape != images.shape:
        raise ValueError(f"lung masks {lungs.shape} do not match images {images.shape}")
    images[~lungs if roi == "lungs_only" else lungs] = fill
    return images


#: ``data.roi`` values: the spec's ``Roi`` type.
ROIS = config_spec.ROIS
