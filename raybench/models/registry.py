"""The model registry: the paper's 13 architectures as :class:`ModelSpec` entries."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from raybench import schema as S
from raybench.models.names import ModelOption
from raybench.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelSpec:
    """Everything raybench knows about one architecture.

    Attributes:
        name: Registry key (snake_case).
        paper_name: The name used in Majeed et al. 2020.
        source: ``torchvision``, ``timm`` or ``raybench``.
        arch: The architecture's name in its source library.
        input_size: Default square input side (224, or 299 for the Inception family).
        min_input_size: Smallest input the architecture accepts (used by smoke tests).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        cam_layer: Dotted module path of the CAM target layer (last conv block).
        cam_method: ``cam`` (GAP + linear head), ``gradcam`` (fully connected head) or ``cnnx``.
        builder: ``builder(spec, num_classes, pretrained, image_size, weights_dir, **options)``;
            it takes exactly the options the spec declares.
        options: Architecture options (``model.options.<name>``); tunable ones are what a
            sweep's search space may vary besides lr and batch size.
    """

    name: str
    paper_name: str
    source: str
    arch: str
    input_size: int
    min_input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cam_layer: str
    cam_method: str
    builder: Callable[..., nn.Module]
    options: tuple[ModelOption, ...] = ()

    @property
    def tunables(self) -> tuple[str, ...]:
        """Names of the options a sweep may tune."""
        return tuple(o.name for o in self.options if o.tunable)


MODELS: Registry[ModelSpec] = Registry(S.MODEL)


def get_model_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``; unknown names raise ``ConfigError`` listing all."""
    return MODELS.get(name)
