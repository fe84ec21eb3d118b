"""Target layers from the model registry, and hooks / eval mode as context managers."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn

from raybench.errors import ConfigError
from raybench.models import ModelSpec, unwrap_model

@dataclass
class Capture:
    """What :func:`capture_layer` recorded in the last forward pass."""

    activation: Optional[torch.Tensor] = None  # (B, C, h, w), the target layer's output


def target_layer(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """The module named by ``spec.cam_layer`` in the (unwrapped) model.

    Raises:
        ConfigError: The model has no CAM layer (``spec.cam_note`` says why), or no such
            module (a registry entry out of date).
    """
    if not spec.cam_layer:
        raise ConfigError(f"{spec.name} cannot have CAMs: {spec.cam_note or 'no CAM layer'}")
    try:
        return unwrap_model(model).get_submodule(spec.cam_layer)
    except AttributeError:
        raise ConfigError(f"{spec.name}: CAM target layer {spec.cam_layer!r} (model registry) "
                          f"is not a module of {type(unwrap_model(model)).__name__}") from None


def classifier_head(model: nn.Module) -> nn.Linear | nn.Conv2d:
    """The final linear layer (or SqueezeNet's 1x1 convolution) that produces the logits."""
    model = unwrap_model(model)
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):  # timm models name their head themselves
        head = get_classifier()
        if isinstance(head, (nn.Linear, nn.Conv2d)):
            return head
    last: nn.Linear | nn.Conv2d | None = None
    for module in model.modules():  # torchvision registers the head last
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            last = module
    if last is None:
        raise ConfigError(f"{type(model).__name__} has no linear or convolutional layer")
    return last


def as_grid(tokens: torch.Tensor, prefix: int) -> torch.Tensor:
    """A transformer block's ``(B, prefix + h*w, C)`` tokens as a ``(B, C, h, w)`` map."""
    patches = tokens[:, prefix:]
    side = int(round(patches.shape[1] ** 0.5))
    if side * side != patches.shape[1]:
        raise ConfigError(f"{patches.shape[1]} patch tokens do not form a square grid")
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def capture_target(model: nn.Module, spec: ModelSpec,
                   track_grad: bool = False) -> contextlib.AbstractContextManager[Capture]:
    """:func:`capture_layer` at ``spec``'s CAM layer (token grids for a transformer)."""
    return capture_layer(target_layer(model, spec), track_grad, spec.cam_tokens)


@contextlib.contextmanager
def capture_layer(layer: nn.Module, track_grad: bool = False,
                  tokens: Optional[int] = None) -> Iterator[Capture]:
    """Records ``layer``'s output during forward passes inside the ``with`` block.

    The record is a copy, so in-place operations after the layer (an inplace ReLU target, or
    DenseNet's ``F.relu(..., inplace=True)``) cannot change it. With ``track_grad`` the record
    is a leaf that requires grad and the rest of the network reads a clone of it, so
    ``torch.autograd.grad(score, capture.activation)`` gives d score / d A without touching any
    parameter's ``.grad`` (safe in a DDP worker after training). With ``tokens`` (a transformer
    block: that many prefix tokens, then the patches) the record is the patch grid
    (:func:`as_grid`) and the network reads the prefix tokens followed by the record's tokens.
    """
    cap = Capture()

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> Optional[torch.Tensor]:
        dims = 4 if tokens is None else 3
        if not isinstance(output, torch.Tensor) or output.dim() != dims:
            raise ConfigError(f"CAM target {type(module).__name__} must output a "
                              f"{'(B, C, h, w)' if tokens is None else '(B, N, C)'} tensor, "
                              f"got {type(output).__name__}")
        grid = output if tokens is None else as_grid(output, tokens)
        cap.activation = grid.detach().clone()
        if not track_grad:
            return None
        cap.activation.requires_grad_(True)
        if tokens is None:
            return cap.activation.clone()
        patches = cap.activation.flatten(2).transpose(1, 2)
        return torch.cat([output[:, :tokens], patches], dim=1)

    handle = layer.register_forward_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Puts ``model`` in eval mode for the block and restores its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
