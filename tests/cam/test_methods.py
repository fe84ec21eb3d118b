"""cam/methods.py: the failures of a CAM request that cannot produce maps."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from raybench.cam import compute_cams
from raybench.models import build_model


class _Bypass(nn.Module):
    """Has the registry's ``layer4`` for resnet18, but its forward never runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def test_a_forward_that_skips_the_target_layer_is_an_error_not_empty_maps() -> None:
    images = torch.zeros((1, 8, 8), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="^the CAM target layer did not run in the forward pass$"):
        compute_cams(_Bypass(), "resnet18", images, method="gradcam")


def test_no_images_is_a_value_error() -> None:
    model = build_model("cnnx", 2, image_size=16)
    with pytest.raises(ValueError, match="^compute_cams: no images$"):
        compute_cams(model, "cnnx", torch.zeros((0, 16, 16), dtype=torch.uint8))
    assert model.training  # eval mode was left again
