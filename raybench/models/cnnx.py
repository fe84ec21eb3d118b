"""CNN-X, the paper's small custom network (Majeed et al. 2020, section 3.3).

The paper describes four parallel convolutional layers of 16 filters with 3x3, 5x5 and 9x9
kernels, batch normalisation and ReLU, average and max pooling with a 2x2 window and stride 3,
concatenation and one fully connected layer, Glorot-initialised. It does not say which branch
gets which kernel and pooling. raybench's default assignment is

    branch 1: 3x3 conv -> BN -> ReLU -> average pool
    branch 2: 3x3 conv -> BN -> ReLU -> max pool
    branch 3: 5x5 conv -> BN -> ReLU -> max pool
    branch 4: 9x9 conv -> BN -> ReLU -> average pool

so the smallest kernel is seen through both poolings (fine texture), max pooling picks focal
opacities at mid scale and the 9x9 average branch responds to diffuse haze. Pass ``branches``
to choose another assignment. Convolutions use "same" padding, so with a 224 px input each
branch pools to 75 x 75 and the linear layer sees 4 * 16 * 75 * 75 = 360,000 features: about
1.44 M parameters with 4 classes, matching the paper's size.

The concatenated pooled maps pass through ``self.pooled`` (an identity) so that CAM hooks have
one named layer whose (B, 64, P, P) output the linear layer reads directly.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from raybench.errors import ConfigError
from raybench.models.table import (
    CNNX_MIN_POOLED,
    CNNX_POOL_WINDOW,
    ModelSpec,
    cnnx_pooled_size,
)

DEFAULT_BRANCHES: tuple[tuple[int, str], ...] = ((3, "avg"), (3, "max"), (5, "max"), (9, "avg"))
POOL_WINDOW = CNNX_POOL_WINDOW
MIN_POOLED = CNNX_MIN_POOLED  # smallest useful side of a pooled map
pooled_size = cnnx_pooled_size  # one formula for the model and for spec validation


class CNNX(nn.Module):
    """CNN-X with configurable branches and pooling stride.

    Args:
        num_classes: Output classes.
        image_size: Square input side in pixels; fixes the size of the linear layer.
        stride: Pooling stride (paper: 3). Tuned by sweeps.
        filters: Filters per branch (paper: 16).
        branches: ``(kernel_size, "avg" | "max")`` per branch.
        in_channels: Input channels (3: grayscale replicated, like the ImageNet models).

    Raises:
        ConfigError: A stride or image size that leaves empty feature maps, or a bad branch.
    """

    def __init__(
        self,
        num_classes: int = 4,
        image_size: int = 224,
        stride: int = 3,
        filters: int = 16,
        branches: Sequence[tuple[int, str]] = DEFAULT_BRANCHES,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if stride < 1:
            raise ConfigError(f"cnnx: pooling stride must be >= 1, got {stride}")
        side = pooled_size(image_size, stride)
        if side < MIN_POOLED:
            # A stride past the first window keeps one value per map: no spatial information
            # left for the classifier or for CAMs, which is a configuration error.
            raise ConfigError(
                f"cnnx: pooling stride {stride} on {image_size} px inputs leaves {side}x{side} "
                f"feature maps; use a stride <= {max((image_size - POOL_WINDOW) // (MIN_POOLED - 1), 1)} "
                f"or a larger image_size"
            )
        self.image_size = image_size
        self.stride = stride
        self.branches = nn.ModuleList(
            [self._branch(in_channels, filters, k, pool, stride) for k, pool in branches]
        )
        self.pooled = nn.Identity()
        self.feature_shape = (filters * len(branches), side, side)
        self.fc = nn.Linear(filters * len(branches) * side * side, num_classes)
        self._glorot()

    @staticmethod
    def _branch(cin: int, filters: int, kernel: int, pool: str, stride: int) -> nn.Sequential:
        if kernel < 1 or kernel % 2 == 0:
            raise ConfigError(f"cnnx: branch kernel must be a positive odd number, got {kernel}")
        pools = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
        if pool not in pools:
            raise ConfigError(f"cnnx: branch pooling {pool!r}; allowed: avg, max")
        return nn.Sequential(
            nn.Conv2d(cin, filters, kernel, padding=kernel // 2),
            nn.BatchNorm2d(filters),
            nn.ReLU(inplace=True),
            pools[pool](POOL_WINDOW, stride=stride),
        )

    def _glorot(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"cnnx was built for {self.image_size} px inputs, got {tuple(x.shape[-2:])}"
            )
        features = self.pooled(torch.cat([b(x) for b in self.branches], dim=1))  # (B, 64, P, P)
        return self.fc(features.flatten(1))


def build_cnnx(spec: ModelSpec, num_classes: int, pretrained: bool = False,
               image_size: Optional[int] = None, weights_dir: Optional[str] = None,
               stride: int = 3) -> nn.Module:
    """The table's builder for CNN-X (no ImageNet weights exist for it)."""
    if pretrained:
        raise ConfigError("cnnx has no ImageNet weights: set model.pretrained=false")
    return CNNX(num_classes=num_classes, image_size=image_size or spec.input_size, stride=stride)
