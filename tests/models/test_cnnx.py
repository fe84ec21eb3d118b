"""CNN-X: size, shapes, stride, Glorot initialisation, errors."""
from __future__ import annotations

import pytest
import torch

from raybench.errors import ConfigError
from raybench.models.cnnx import CNNX, pooled_size


def test_paper_size_at_224_px_4_classes() -> None:
    model = CNNX(num_classes=4, image_size=224, stride=3)
    # 4 branches x 16 filters x 75 x 75 pooled features -> 4 classes
    assert model.feature_shape == (64, 75, 75)
    n = sum(p.numel() for p in model.parameters())
    assert n == 4 * 64 * 75 * 75 + 4 + 16 * 3 * (9 + 9 + 25 + 81) + 4 * 16 + 4 * 32
    assert n == pytest.approx(1.45e6, abs=0.15e6)  # the issue: 1.3 to 1.6 M


@pytest.mark.parametrize("stride,side", [(2, 112), (3, 75), (4, 56)])
def test_stride_sets_pooled_size(stride: int, side: int) -> None:
    assert pooled_size(224, stride) == side
    model = CNNX(num_classes=2, image_size=64, stride=stride)
    feats = {}
    model.pooled.register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
    out = model(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 2)
    assert feats["x"].shape == (3, 64, pooled_size(64, stride), pooled_size(64, stride))


def test_glorot_initialisation() -> None:
    torch.manual_seed(0)
    model = CNNX(num_classes=4, image_size=64)
    fc = model.fc.weight
    bound = (6.0 / (fc.shape[0] + fc.shape[1])) ** 0.5
    assert fc.abs().max() <= bound
    assert fc.abs().max() > 0.9 * bound  # uniform over the full Glorot range
    assert torch.all(model.fc.bias == 0)


def test_custom_branches() -> None:
    model = CNNX(num_classes=2, image_size=32, branches=[(3, "max"), (7, "avg")], filters=8)
    assert model.feature_shape == (16, 11, 11)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)


@pytest.mark.parametrize("kwargs,match", [
    ({"image_size": 1}, "leaves 0x0 feature maps"),
    ({"image_size": 16, "stride": 15}, r"stride 15 on 16 px inputs leaves 1x1 feature maps; use a stride <= 14"),
    ({"stride": 0}, "stride must be >= 1"),
    ({"branches": [(4, "avg")]}, "positive odd"),
    ({"branches": [(3, "median")]}, "allowed: avg, max"),
])
def test_bad_configuration(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CNNX(num_classes=2, **kwargs)


def test_wrong_input_size_is_a_clear_error() -> None:
    model = CNNX(num_classes=2, image_size=64)
    with pytest.raises(ValueError, match="built for 64 px"):
        model(torch.randn(1, 3, 32, 32))
