"""Builders for the 13 architectures and their registration.

Every builder makes the ImageNet-shaped network first, loads ImageNet weights when asked
(:mod:`raybench.models.weights`), then replaces the classifier head for ``num_classes``. All
layers stay trainable, as in the paper.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Optional

import torch
from torch import nn

from raybench.errors import ConfigError
from raybench.models import weights
from raybench.models.cnnx import CNNX
from raybench.models.names import CNNX_CAM_METHOD, check_options, options_of
from raybench.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    MODELS,
    ModelSpec,
    get_model_spec,
)

IMAGENET_CLASSES = 1000


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module):
            model = inner
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]  # checked on the line above
        else:
            return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, new)


def _replace_head(model: nn.Module, head: str, num_classes: int) -> None:
    old = model.get_submodule(head)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes)
    elif isinstance(old, nn.Conv2d):  # SqueezeNet classifies with a 1x1 convolution
        kh, kw = old.kernel_size
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=(kh, kw))
    else:
        raise TypeError(f"cannot replace head {head} of type {type(old).__name__}")
    _set_module(model, head, new)


def _tv_builder(arch: str, head: str, inception: bool = False) -> Any:
    def build(spec: ModelSpec, num_classes: int, pretrained: bool = False,
              image_size: Optional[int] = None, weights_dir: Optional[str] = None) -> nn.Module:
        import torchvision  # here, not at import: a CNN-X trial process never needs it (~1 s)

        kwargs: dict[str, Any] = {"weights": None}
        if inception:
            # The ImageNet checkpoints carry auxiliary heads and expect transform_input.
            kwargs.update(aux_logits=True, transform_input=pretrained, init_weights=not pretrained)
        model = torchvision.models.get_model(arch, num_classes=IMAGENET_CLASSES, **kwargs)
        if pretrained:
            model.load_state_dict(weights.load_imagenet_state_dict(spec, weights_dir))
        if inception:
            _drop_aux_heads(model)
        _replace_head(model, head, num_classes)
        return model

    return build


def _drop_aux_heads(model: nn.Module) -> None:
    """The paper trains the main classifier only; auxiliary heads would change the loss."""
    model.aux_logits = False  # type: ignore[assignment]  # a plain bool attribute, not a module
    for name in ("aux1", "aux2", "AuxLogits"):
        if hasattr(model, name):
            setattr(model, name, None)


def _timm_builder(arch: str) -> Any:
    def build(spec: ModelSpec, num_classes: int, pretrained: bool = False,
              image_size: Optional[int] = None, weights_dir: Optional[str] = None) -> nn.Module:
        import timm

        model = timm.create_model(arch, pretrained=False, num_classes=IMAGENET_CLASSES)
        if pretrained:
            model.load_state_dict(weights.load_imagenet_state_dict(spec, weights_dir))
        model.reset_classifier(num_classes)  # type: ignore[operator]  # timm's own method
        return model

    return build


def _build_cnnx(spec: ModelSpec, num_classes: int, pretrained: bool = False,
                image_size: Optional[int] = None, weights_dir: Optional[str] = None,
                stride: int = 3) -> nn.Module:
    if pretrained:
        raise ConfigError("cnnx has no ImageNet weights: set model.pretrained=false")
    return CNNX(num_classes=num_classes, image_size=image_size or spec.input_size, stride=stride)


def build_model(name: str, num_classes: int, pretrained: bool = False,
                image_size: Optional[int] = None, weights_dir: Optional[str] = None,
                **options: Any) -> nn.Module:
    """Builds a registered model with a fresh ``num_classes`` head.

    Args:
        name: Registry key, e.g. ``resnet18`` or ``cnnx``.
        num_classes: Output classes.
        pretrained: Load ImageNet weights first (error when none can be found).
        image_size: Input size (only CNN-X depends on it); default: the model's input size.
        weights_dir: Local folder or ``s3://`` prefix with ``<name>.pth`` state dicts.
        **options: The architecture options the model declares (``ModelSpec.options``, e.g.
            CNN-X's ``stride``); unset ones take their defaults.

    Raises:
        ConfigError: Unknown name, an option the model does not declare, an impossible value,
            or missing weights.
    """
    spec = get_model_spec(name)
    if num_classes < 2:
        raise ConfigError(f"{name}: num_classes must be >= 2, got {num_classes}")
    size = image_size or spec.input_size
    if size < spec.min_input_size:
        raise ConfigError(
            f"{name}: image_size {size} is too small; this architecture needs >= {spec.min_input_size}"
        )
    try:
        values = check_options(name, options, size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return spec.builder(spec, num_classes, pretrained=pretrained, image_size=size,
                        weights_dir=weights_dir, **values)


def _register(name: str, paper_name: str, source: str, arch: str, input_size: int,
              min_input_size: int, cam_layer: str, cam_method: str, builder: Any,
              inception_norm: bool = False) -> None:
    mean, std = (INCEPTION_MEAN, INCEPTION_STD) if inception_norm else (IMAGENET_MEAN, IMAGENET_STD)
    MODELS.register(name, ModelSpec(name, paper_name, source, arch, input_size, min_input_size,
                                    mean, std, cam_layer, cam_method, builder,
                                    options=options_of(name)))


_tv = partial(_register, source="torchvision")
_tv("alexnet", "AlexNet", arch="alexnet", input_size=224, min_input_size=63,
    cam_layer="features.11", cam_method="gradcam", builder=_tv_builder("alexnet", "classifier.6"))
_tv("vgg16", "VGG16", arch="vgg16", input_size=224, min_input_size=32,
    cam_layer="features.29", cam_method="gradcam", builder=_tv_builder("vgg16", "classifier.6"))
_tv("vgg19", "VGG19", arch="vgg19", input_size=224, min_input_size=32,
    cam_layer="features.35", cam_method="gradcam", builder=_tv_builder("vgg19", "classifier.6"))
_tv("resnet18", "ResNet18", arch="resnet18", input_size=224, min_input_size=32,
    cam_layer="layer4", cam_method="cam", builder=_tv_builder("resnet18", "fc"))
_tv("resnet50", "ResNet50", arch="resnet50", input_size=224, min_input_size=32,
    cam_layer="layer4", cam_method="cam", builder=_tv_builder("resnet50", "fc"))
_tv("resnet101", "ResNet101", arch="resnet101", input_size=224, min_input_size=32,
    cam_layer="layer4", cam_method="cam", builder=_tv_builder("resnet101", "fc"))
_tv("googlenet", "GoogleNet", arch="googlenet", input_size=224, min_input_size=32,
    cam_layer="inception5b", cam_method="cam",
    builder=_tv_builder("googlenet", "fc", inception=True))
_tv("inception_v3", "Inception-v3", arch="inception_v3", input_size=299, min_input_size=75,
    cam_layer="Mixed_7c", cam_method="cam",
    builder=_tv_builder("inception_v3", "fc", inception=True))
_tv("squeezenet", "SqueezeNet", arch="squeezenet1_1", input_size=224, min_input_size=32,
    cam_layer="features", cam_method="cam", builder=_tv_builder("squeezenet1_1", "classifier.1"))
_register("inception_resnet_v2", "Inception-ResNet-v2", "timm", "inception_resnet_v2", 299, 75,
          "conv2d_7b", "cam", _timm_builder("inception_resnet_v2"), inception_norm=True)
_register("xception", "Xception", "timm", "legacy_xception", 299, 71, "act4", "cam",
          _timm_builder("legacy_xception"), inception_norm=True)
_tv("densenet201", "DenseNet201", arch="densenet201", input_size=224, min_input_size=32,
    cam_layer="features", cam_method="cam", builder=_tv_builder("densenet201", "classifier"))
_register("cnnx", "CNN-X", "raybench", "cnnx", 224, 16, "pooled", CNNX_CAM_METHOD, _build_cnnx,
          inception_norm=True)


def meta_parameter_count(name: str, num_classes: int = 4) -> int:
    """Parameter count without allocating weights (built on the ``meta`` device)."""
    with torch.device("meta"):
        return count_parameters(build_model(name, num_classes))
