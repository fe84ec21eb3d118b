"""Tensor transforms applied on the training device: uint8 grayscale -> normalised 3-channel."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def to_model_input(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   size: int | None = None) -> torch.Tensor:
    """Turns a uint8 batch (B, H, W) into the model's float input (B, 3, S, S).

    Scales to [0, 1], optionally resizes bilinearly to ``size``, replicates the gray channel
    and normalises with the model's per-channel ``mean`` / ``std`` (ImageNet statistics for
    the pretrained models), all on the batch's device.
    """
    x = batch.unsqueeze(1).float().div_(255.0)  # (B, 1, H, W)
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.expand(-1, 3, -1, -1)  # (B, 3, S, S), a view: no copy until normalisation
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t
