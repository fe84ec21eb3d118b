"""What a spec may name, without importing torch: model keys and CNN-X's pooling arithmetic.

Spec validation runs before torch is imported (a typo costs a second, not the eight a torch +
Ray import takes), so it checks names against this table. The registry in
:mod:`raybench.models.zoo` registers exactly these keys, in this order (a test checks it).
"""
from __future__ import annotations

import difflib

#: The model registry's keys, in registration order.
MODEL_NAMES: tuple[str, ...] = (
    "alexnet", "vgg16", "vgg19", "resnet18", "resnet50", "resnet101", "googlenet",
    "inception_v3", "squeezenet", "inception_resnet_v2", "xception", "densenet201", "cnnx")

#: CNN-X pooling window (the paper's 2x2).
CNNX_POOL_WINDOW = 2
#: Smallest useful side of a CNN-X pooled map.
CNNX_MIN_POOLED = 2


def cnnx_pooled_size(image_size: int, stride: int) -> int:
    """Side of each CNN-X branch's pooled map for a square input (0 when empty)."""
    if image_size < CNNX_POOL_WINDOW:
        return 0
    return (image_size - CNNX_POOL_WINDOW) // stride + 1


def unknown_model_message(name: object) -> str:
    """The registry's one-line message for an unknown model, with a close match if any."""
    close = difflib.get_close_matches(str(name), list(MODEL_NAMES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown model {name!r}{hint}; valid: {', '.join(MODEL_NAMES)}"
