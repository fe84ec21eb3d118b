"""ROI focus: does a CAM look at the lungs? Lung masks and a lung-field approximation.

Two scores per image, computed on the model's device from the raw map upsampled bilinearly to
the input size:

- ``roi_focus``: the share of positive CAM energy inside the lung mask,
  ``sum(relu(M) * mask) / sum(relu(M))`` (NaN when the map has no positive part). A model that
  looks only at the lungs scores 1; one that looks at a corner marker scores near 0. A map
  spread uniformly over the image scores the mask's area share (about 0.2 on the synthetic set).
- ``pointing_game``: 1 when the map's maximum lies inside the mask, else 0.

Masks and the lung-field template come from :mod:`raybench.data.masks`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from raybench.data.masks import lung_field_template, load_masks

__all__ = ["load_masks", "lung_field_template", "pointing_game", "roi_focus", "upsample"]


def upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling of (N, h, w) maps to (N, size, size)."""
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear",
                         align_corners=False)[:, 0]


def roi_focus(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of positive energy inside the mask, per image: (N,) float, NaN without energy.

    Args:
        maps: (N, h, w) raw maps (any resolution; upsampled to the masks' size).
        masks: (N, S, S) bool lung masks.
    """
    pos = torch.relu(upsample(maps, masks.shape[-1]))  # (N, S, S)
    total = pos.sum(dim=(1, 2))
    inside = (pos * masks).sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.nan)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1.0 where the upsampled map's maximum lies inside the mask, else 0.0: (N,)."""
    up = upsample(maps, masks.shape[-1]).flatten(1)  # (N, S*S)
    return masks.flatten(1).gather(1, up.argmax(dim=1, keepdim=True))[:, 0].float()
