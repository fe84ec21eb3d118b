"""The CAM target of any classifier, found from its structure on the ``meta`` device.

The rule (README, "Any backbone"):

1. One forward pass of a ``(1, 3, S, S)`` meta tensor at the model's default input size ``S``
   records every module's output in completion order, and every torch function called.
2. The target is the **last module, before the classifier head starts, whose output is a
   spatial map**: a 4-D ``(B, C, h, w)`` tensor with ``h * w > 1`` that no pooling module
   produced (a module whose class name contains ``Pool``) and that is not a dropout. A
   container whose output is its last child's tensor completes after the child, so the
   outermost name wins (``layer4``, not ``layer4.2.relu``).
3. The method: exact ``cam`` when the head is one ``nn.Linear`` over the map's channels and the
   functions called between the target and the head are a single global average pooling plus
   shape-only steps (flatten, view, dropout), optionally preceded by a functional ReLU, which
   becomes the spec's ``cam_activation`` (torchvision's DenseNet). Anything else in between
   (a LayerNorm, a 1x1 conv head, max pooling) gives ``gradcam``.
4. Vision transformers (a timm model with ``blocks`` and ``num_prefix_tokens``, or torchvision's
   ``encoder.layers``) get Grad-CAM on the last block's patch tokens as its attention reads
   them (the block's first LayerNorm: a class-token head takes no gradient from the patch
   tokens the last block outputs), the prefix tokens dropped and the rest reshaped to the
   square grid (``cam_tokens``). Models whose features are
   channels-last (timm's ``output_fmt == "NHWC"``: Swin and friends) or that have no spatial
   map get no CAMs (``cam_layer == ""``, with the reason); they still train.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

#: Functions that only reshape or pass a tensor through (or read its shape).
_SHAPE_ONLY = {"flatten", "view", "reshape", "contiguous", "dropout", "squeeze", "__get__",
               "size", "dim", "identity", "permute_if_needed", "_assert"}
_GLOBAL_AVG = {"adaptive_avg_pool2d", "mean"}


@dataclass(frozen=True)
class CamTarget:
    """Where and how a model's CAMs are computed.

    Attributes:
        layer: Dotted module path ("" when the model cannot have CAMs).
        method: ``cam`` or ``gradcam``.
        activation: A functional activation between the layer and the pooling (``relu``).
        tokens: ViTs: the prefix tokens dropped before the reshape to the grid; else ``None``.
        note: Why the model has no CAMs ("" when it has).
    """

    layer: str
    method: str = "gradcam"
    activation: Optional[str] = None
    tokens: Optional[int] = None
    note: str = ""


class _Calls(TorchFunctionMode):
    """Records the name of every torch function called while active."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def head_module(model: nn.Module) -> tuple[str, nn.Module]:
    """The classifier layer's path and module: timm's ``get_classifier``, else the last
    ``nn.Linear`` / ``nn.Conv2d`` registered (torchvision registers its head last)."""
    get = getattr(model, "get_classifier", None)
    named = dict(model.named_modules())
    if callable(get):
        head = get()
        for path, module in named.items():
            if module is head and isinstance(head, (nn.Linear, nn.Conv2d)):
                return path, head
    last = [(p, m) for p, m in named.items() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not last:
        raise ValueError(f"{type(model).__name__} has no linear or convolutional layer")
    return last[-1]


def vit_target(model: nn.Module) -> Optional[CamTarget]:
    """The documented ViT rule: Grad-CAM on the patch tokens entering the last block's
    attention, if ``model`` is a vision transformer."""
    blocks = getattr(model, "blocks", None)
    prefix = getattr(model, "num_prefix_tokens", None)
    if isinstance(blocks, nn.Sequential) and isinstance(prefix, int) and len(blocks):
        return CamTarget(f"blocks.{len(blocks) - 1}.norm1", tokens=prefix)
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if isinstance(layers, nn.Sequential) and hasattr(model, "class_token") and len(layers):
        last = list(layers.named_children())[-1][0]
        return CamTarget(f"encoder.layers.{last}.ln_1", tokens=1)
    return None


def find_cam_target(model: nn.Module, size: int) -> CamTarget:
    """The CAM target of ``model`` (built on any device) by the module docstring's rule."""
    vit = vit_target(model)
    if vit is not None:
        return vit
    if getattr(model, "output_fmt", "NCHW") != "NCHW":
        return CamTarget("", note="its features are channels-last (NHWC)")
    head_path, head = head_module(model)
    events, calls = _trace(model, size, head)
    spatial = [e for e in events if e[3]]
    if not spatial:
        return CamTarget("", note="it has no spatial feature map before its head")
    layer, out, at, _ = spatial[-1]
    method, activation = _method(calls.names[at:events[-1][2]], head, out)
    return CamTarget(layer, method, activation)


def _trace(model: nn.Module, size: int,
           head: nn.Module) -> tuple[list[tuple[str, Any, int, bool]], _Calls]:
    """Module completions up to the head's start: (path, output, call index, is spatial)."""
    calls = _Calls()
    events: list[tuple[str, Any, int, bool]] = []
    pooled: list[Any] = []  # tensors a pooling module produced (kept alive: compared by id)
    state = {"done": False}

    def after(path: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if state["done"] or path == "":
                return
            with torch._C.DisableTorchFunction():  # reading shapes is not the model's work
                if "Pool" in type(module).__name__:
                    pooled.append(output)
                spatial = (isinstance(output, torch.Tensor) and output.dim() == 4
                           and output.shape[2] * output.shape[3] > 1
                           and not any(output is p for p in pooled)
                           and not isinstance(module, nn.Dropout))
            events.append((path, output, len(calls.names), spatial))
        return hook

    def before_head(module: nn.Module, inputs: Any) -> None:
        if not state["done"]:
            events.append(("<head>", None, len(calls.names), False))
            state["done"] = True

    handles = [m.register_forward_hook(after(p)) for p, m in model.named_modules()]
    handles.append(head.register_forward_pre_hook(before_head))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad(), calls:
            model(torch.zeros(1, 3, size, size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return events, calls


def _method(between: list[str], head: nn.Module, out: torch.Tensor) -> tuple[str, Optional[str]]:
    """``(method, activation)`` from the functions called between the target and the head."""
    if not isinstance(head, nn.Linear) or head.in_features != out.shape[1]:
        return "gradcam", None
    steps = [n for n in between if n not in _SHAPE_ONLY]
    activation = None
    if steps[:1] == ["relu"]:
        activation, steps = "relu", steps[1:]
    if len(steps) == 1 and steps[0] in _GLOBAL_AVG:
        return "cam", activation
    return "gradcam", None
