"""The CAM methods' functions (registered in :mod:`raybench.catalog.cam_methods`) and batched
computation on the model's device.

Every method returns *raw*, signed class maps at the target layer's resolution, for one class
per image (by default the predicted one):

- ``cam`` (Zhou et al. 2016), exact for a global-average-pooled layer read by a linear head:
  ``M_k(x, y) = sum_c w_kc A_c(x, y)``, so ``logit_k = sum(M_k) / (h w) + b_k``. SqueezeNet
  classifies with a 1x1 convolution, then ReLU, then global average pooling: its map is the
  convolution's class plane after the ReLU, ``relu(W A + b)``, whose mean *is* the logit.
- ``cnnx``: CNN-X's linear layer reads the concatenated pooled maps (64, P, P) directly, so its
  weights reshaped to (K, 64, P, P) give an exact per-position contribution map with
  ``logit_k = sum(M_k) + b_k``.
- ``gradcam`` (Selvaraju et al. 2017): channel weights = spatial mean of d logit / d A, map =
  ``sum_c alpha_c A_c`` (the ReLU of the paper is applied when maps are stored). For a GAP +
  linear model it equals ``cam`` divided by ``h w``. Works for every model; the registry's
  method for AlexNet and the VGGs, whose fully connected heads have no exact CAM.

The exact methods also return ``scale`` and ``offset`` with ``logit = sum(M) * scale + offset``
(the paper's equation 6), which the tests check for every registered model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raybench.catalog.cam_methods import METHODS, CamMethod
from raybench.cam.hooks import (
    Capture,
    capture_target,
    classifier_head,
    eval_mode,
)
from raybench.data.transforms import to_model_input
from raybench.errors import ConfigError
from raybench.models import ModelSpec, get_model_spec, unwrap_model


@dataclass
class CamBatch:
    """Maps of one batch, all tensors on the model's device."""

    maps: torch.Tensor  # (B, h, w) float32, raw signed class maps
    logits: torch.Tensor  # (B, K)
    classes: torch.Tensor  # (B,) int64, the class each map explains
    scale: Optional[float] = None  # exact methods: logit = maps.sum((1, 2)) * scale + offset
    offset: Optional[torch.Tensor] = None  # (B,)


def _pick(logits: torch.Tensor, classes: Optional[torch.Tensor]) -> torch.Tensor:
    return logits.argmax(dim=1) if classes is None else classes.to(logits.device)


def _recorded(cap: Capture) -> torch.Tensor:
    """The captured activation; a forward pass that never reached the layer is a bug."""
    if cap.activation is None:
        raise RuntimeError("the CAM target layer did not run in the forward pass")
    return cap.activation


@torch.no_grad()
def cam_batch(model: nn.Module, spec: ModelSpec, x: torch.Tensor,
              classes: Optional[torch.Tensor]) -> CamBatch:
    """The ``cam`` method: exact CAM of a global-average-pooled layer read by a linear head."""
    head = classifier_head(model)
    with capture_target(model, spec) as cap:
        logits = model(x)
    a = _recorded(cap)  # (B, C, h, w)
    if spec.cam_activation:  # applied functionally after the layer (DenseNet's F.relu)
        a = getattr(F, spec.cam_activation)(a)
    cls = _pick(logits, classes)
    c, h, w = (int(n) for n in a.shape[1:])
    weight = head.weight.reshape(head.weight.shape[0], -1)  # (K, C): Linear, or a 1x1 conv
    if weight.shape[1] != c or (isinstance(head, nn.Conv2d) and head.kernel_size != (1, 1)):
        raise ConfigError(
            f"{spec.name}: the cam method needs global average pooling of {spec.cam_layer} "
            f"({c} channels) read by a linear head, but the head takes {weight.shape[1]} "
            "features; use cam.method=gradcam")
    bias = head.bias if head.bias is not None else torch.zeros_like(weight[:, 0])
    maps = torch.einsum("bchw,bc->bhw", a, weight[cls])
    if isinstance(head, nn.Conv2d):  # SqueezeNet: conv -> ReLU -> GAP; the bias is in the map
        return CamBatch(torch.relu(maps + bias[cls, None, None]), logits, cls, 1.0 / (h * w),
                        torch.zeros_like(bias[cls]))
    return CamBatch(maps, logits, cls, 1.0 / (h * w), bias[cls])


@torch.no_grad()
def cnnx_batch(model: nn.Module, spec: ModelSpec, x: torch.Tensor,
               classes: Optional[torch.Tensor]) -> CamBatch:
    """The ``cnnx`` method: CNN-X's exact per-position contribution map."""
    net = unwrap_model(model)
    if not hasattr(net, "feature_shape") or not isinstance(getattr(net, "fc", None), nn.Linear):
        raise ConfigError(f"{spec.name}: the cnnx method needs a CNN-X model; use cam.method="
                          "auto, cam or gradcam")
    with capture_target(model, spec) as cap:
        logits = model(x)
    cls = _pick(logits, classes)
    fc: nn.Linear = net.fc  # type: ignore[assignment]  # checked to be nn.Linear above
    shape: tuple[int, ...] = tuple(net.feature_shape)  # type: ignore[arg-type]
    weight = fc.weight.view(fc.out_features, *shape)  # (K, 64, P, P)
    maps = (_recorded(cap) * weight[cls]).sum(dim=1)  # (B, P, P)
    return CamBatch(maps, logits, cls, 1.0, fc.bias[cls])


def gradcam_batch(model: nn.Module, spec: ModelSpec, x: torch.Tensor,
                  classes: Optional[torch.Tensor]) -> CamBatch:
    """The ``gradcam`` method: Grad-CAM at the model's CAM layer (any model)."""
    with torch.enable_grad(), capture_target(model, spec, track_grad=True) as cap:
        logits = model(x)
        cls = _pick(logits.detach(), classes)
        # Images are independent in eval mode, so one backward of the summed scores gives
        # every image's own gradient.
        score = logits.gather(1, cls[:, None]).sum()
        (grads,) = torch.autograd.grad(score, _recorded(cap))  # (B, C, h, w)
    a = _recorded(cap).detach()
    if spec.cam_activation:  # the map the pooling reads (DenseNet's F.relu after the layer)
        a = getattr(F, spec.cam_activation)(a)
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return CamBatch((alpha * a).sum(dim=1), logits.detach(), cls)


def resolve_method(name: str, spec: ModelSpec) -> CamMethod:
    """``auto`` -> the registry's method for the model; otherwise a registered method."""
    return METHODS.get(spec.cam_method if name == "auto" else name)


def compute_cams(model: nn.Module, model_name: str, images: torch.Tensor, method: str = "auto",
                 batch_size: int = 16, classes: Optional[torch.Tensor] = None,
                 norm: Optional[tuple[Sequence[float], Sequence[float]]] = None) -> CamBatch:
    """CAMs of uint8 images (N, S, S), in batches on the model's device, in eval mode.

    Args:
        model: A trained model (DDP / compile wrappers are unwrapped).
        model_name: Its registry key (target layer, default method, normalisation).
        images: uint8 (N, S, S) grayscale inputs at the model's input size.
        method: ``auto`` or a key of :data:`METHODS`.
        batch_size: Images per pass.
        classes: (N,) classes to explain; default the predicted class of each image.
        norm: ``(mean, std)``; default the model's.

    Returns:
        One :class:`CamBatch` for all images (maps (N, h, w)), still on the device.
    """
    spec = get_model_spec(model_name)
    fn = resolve_method(method, spec).load()
    net = unwrap_model(model)
    device = next(net.parameters()).device
    norm = norm or (spec.mean, spec.std)
    parts: list[CamBatch] = []
    with eval_mode(net):
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start:start + batch_size].to(device), *norm)
            sel = None if classes is None else classes[start:start + batch_size]
            parts.append(fn(net, spec, x, sel))
    return _concat(parts)


def _concat(parts: list[CamBatch]) -> CamBatch:
    if not parts:
        raise ValueError("compute_cams: no images")
    offsets = [p.offset for p in parts if p.offset is not None]
    offset = torch.cat(offsets) if len(offsets) == len(parts) else None
    return CamBatch(torch.cat([p.maps for p in parts]), torch.cat([p.logits for p in parts]),
                    torch.cat([p.classes for p in parts]), parts[0].scale, offset)
