"""cam/hooks.py: target layers, classifier heads, token grids and the capture hook's checks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from raybench.cam.hooks import as_grid, capture_layer, classifier_head, target_layer
from raybench.errors import ConfigError
from raybench.models import get_model_spec


def test_a_registry_layer_the_model_lacks_is_a_config_error() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ConfigError) as err:
        target_layer(model, get_model_spec("resnet18"))
    assert str(err.value) == ("resnet18: CAM target layer 'layer4' (model registry) is not a "
                              "module of Sequential")


class _IdentityHead(nn.Module):
    """A timm-style model whose ``get_classifier`` is no layer (a head reset to Identity)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def get_classifier(self) -> nn.Module:
        return nn.Identity()


def test_classifier_head_falls_back_to_the_last_layer_when_get_classifier_is_no_layer() -> None:
    model = _IdentityHead()
    assert classifier_head(model) is model.fc


def test_classifier_head_of_a_model_without_linear_or_conv_layer() -> None:
    with pytest.raises(ConfigError, match="^Sequential has no linear or convolutional layer$"):
        classifier_head(nn.Sequential(nn.ReLU(), nn.Flatten()))


def test_as_grid_drops_the_prefix_and_refuses_a_non_square_patch_count() -> None:
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # 1 prefix + 2x2
    grid = as_grid(tokens, prefix=1)
    assert grid.shape == (2, 3, 2, 2)
    assert torch.equal(grid[1, :, 0, 1], tokens[1, 2])  # patch 1 (row 0, column 1)
    with pytest.raises(ConfigError, match="^5 patch tokens do not form a square grid$"):
        as_grid(tokens, prefix=0)


@pytest.mark.parametrize(("tokens", "shape"), [(None, "(B, C, h, w)"), (1, "(B, N, C)")])
def test_a_target_with_the_wrong_output_rank_is_named(tokens, shape: str) -> None:
    layer = nn.Linear(4, 3)  # (B, 3) output: neither a feature map nor a token sequence
    with capture_layer(layer, tokens=tokens) as cap, pytest.raises(ConfigError) as err:
        layer(torch.randn(2, 4))
    assert str(err.value) == f"CAM target Linear must output a {shape} tensor, got Tensor"
    assert cap.activation is None and not layer._forward_hooks
