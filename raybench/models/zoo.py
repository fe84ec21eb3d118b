"""Builders of the torchvision and timm architectures of :mod:`raybench.models.table`.

Every builder makes the ImageNet-shaped network first, loads ImageNet weights when asked
(:mod:`raybench.models.weights`), then replaces the classifier head for ``num_classes``. All
layers stay trainable, as in the paper.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any, Optional, Sequence

import torch
from torch import nn

from raybench.version import __version__ as raybench_version
from raybench import schema as S
from raybench.errors import ConfigError
from raybench.models import weights
from raybench.models.names import check_options
from raybench.models.table import ModelSpec, get_model_spec
from raybench.models.weightfile import file_sha256, load_weights_file, read_weights

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


def build_torchvision(spec: ModelSpec, num_classes: int, pretrained: bool = False,
                      image_size: Optional[int] = None,
                      weights_dir: Optional[str] = None) -> nn.Module:
    """A torchvision architecture (``spec.arch``) with a ``num_classes`` head at ``spec.head``."""
    import torchvision  # here, not at import: a CNN-X trial process never needs it (~1 s)

    kwargs: dict[str, Any] = {"weights": None}
    if spec.aux_heads:
        # The ImageNet checkpoints carry auxiliary heads and expect transform_input.
        kwargs.update(aux_logits=True, transform_input=pretrained, init_weights=not pretrained)
    kwargs.update(_transformer_size(spec, image_size, pretrained, "image_size"))
    model = torchvision.models.get_model(spec.arch, num_classes=IMAGENET_CLASSES, **kwargs)
    if pretrained:
        model.load_state_dict(weights.load_imagenet_state_dict(spec, weights_dir))
    if spec.aux_heads:
        _drop_aux_heads(model)
    _replace_head(model, spec.head, num_classes)
    return model


def _transformer_size(spec: ModelSpec, image_size: Optional[int], pretrained: bool,
                      key: str) -> dict[str, Any]:
    """``{key: image_size}`` for a vision transformer at another size than its default (its
    position embedding is sized for one input), else nothing."""
    if spec.cam_tokens is None or not image_size or image_size == spec.input_size:
        return {}
    if pretrained:  # ImageNet's position embedding is for the default size
        raise ConfigError(f"{spec.name}: its ImageNet weights are for {spec.input_size} px "
                          f"inputs, not {image_size}; leave model.image_size unset")
    return {key: image_size}


def _drop_aux_heads(model: nn.Module) -> None:
    """The paper trains the main classifier only; auxiliary heads would change the loss."""
    model.aux_logits = False  # type: ignore[assignment]  # a plain bool attribute, not a module
    for name in ("aux1", "aux2", "AuxLogits"):
        if hasattr(model, name):
            setattr(model, name, None)


def build_timm(spec: ModelSpec, num_classes: int, pretrained: bool = False,
               image_size: Optional[int] = None, weights_dir: Optional[str] = None) -> nn.Module:
    """A timm architecture (``spec.arch``) with a ``num_classes`` classifier."""
    import timm

    kwargs = _transformer_size(spec, image_size, pretrained, "img_size")
    # The tag's own class count (1000 for ImageNet-1k, 21841 for 22k tags), so that its
    # pretrained checkpoint loads before the head is replaced.
    model = timm.create_model(spec.arch, pretrained=False, **kwargs)
    if pretrained:
        model.load_state_dict(weights.load_imagenet_state_dict(spec, weights_dir))
    model.reset_classifier(num_classes)  # type: ignore[operator]  # timm's own method
    return model


def build_model(name: str, num_classes: int, pretrained: bool = False,
                image_size: Optional[int] = None, weights_dir: Optional[str] = None,
                weights: Optional[str] = None, **options: Any) -> nn.Module:
    """Builds a registered model with a fresh ``num_classes`` head.

    Args:
        name: Registry key, e.g. ``resnet18`` or ``cnnx``, or a library model
            (``timm.convnext_tiny``, ``torchvision.efficientnet_b0``).
        num_classes: Output classes.
        pretrained: Load ImageNet weights first (error when none can be found).
        image_size: Input size (only CNN-X depends on it); default: the model's input size.
        weights_dir: Local folder or ``s3://`` prefix with ``<name>.pth`` state dicts.
        weights: A weights file for the backbone (:mod:`raybench.models.weightfile`), used
            instead of ImageNet's; the head stays new.
        **options: The architecture options the model declares (``ModelSpec.options``, e.g.
            CNN-X's ``stride``); unset ones take their defaults.

    Raises:
        ConfigError: Unknown name, an option the model does not declare, an impossible value,
            or missing weights.
    """
    spec = get_model_spec(name)
    if pretrained and weights:
        raise ConfigError(f"{name}: model.pretrained=true and model.weights both choose the "
                          "starting weights; set one")
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
    model = spec.load_builder()(spec, num_classes, pretrained=pretrained, image_size=size,
                                weights_dir=weights_dir, **values)
    assert isinstance(model, nn.Module), f"{name}: its builder returned {type(model).__name__}"
    if weights:
        load_weights_file(model, name, spec.head, weights)
    return model


def meta_parameter_count(name: str, num_classes: int = 4) -> int:
    """Parameter count without allocating weights (built on the ``meta`` device)."""
    with torch.device("meta"):
        return count_parameters(build_model(name, num_classes))


def check_weights_fit(names: Sequence[str], weights: Optional[str],
                      image_size: Optional[int] = None) -> None:
    """Refuses (one line, ``ConfigError``) a ``model.weights`` file that does not fit one of
    ``names``; a driver calls it before any trial starts. Built on the ``meta`` device."""
    if not weights:
        return
    read_weights(weights)  # read outside the meta context: its tensors must hold data
    for name in dict.fromkeys(names):
        try:
            with torch.device("meta"):
                build_model(name, 2, image_size=image_size, weights=weights)
        except NotImplementedError:  # an initialiser that reads values: build it for real
            build_model(name, 2, image_size=image_size, weights=weights)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return raybench_version if package == "raybench" else "not installed"


def model_record(name: str, weights: Optional[str] = None) -> dict[str, Optional[str]]:
    """The runs-table columns that say what ``name`` built: the resolved library name, that
    library's version and the weights file's SHA-256."""
    spec = get_model_spec(name)
    return {S.MODEL_RESOLVED: spec.resolved,
            S.MODEL_LIBRARY: f"{spec.source} {_version(spec.source)}",
            S.WEIGHTS_SHA256: file_sha256(weights)}
