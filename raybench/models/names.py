"""What a spec may name, without importing torch: model keys, their options, CNN-X's pooling.

Spec validation runs before torch is imported (a typo costs a second, not the eight a torch +
Ray import takes), so it checks names against this table. The registry in
:mod:`raybench.models.zoo` registers exactly these keys, in this order (a test checks it).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from raybench import schema as S

#: The model registry's keys, in registration order.
MODEL_NAMES: tuple[str, ...] = (
    "alexnet", "vgg16", "vgg19", "resnet18", "resnet50", "resnet101", "googlenet",
    "inception_v3", "squeezenet", "inception_resnet_v2", "xception", "densenet201", "cnnx")

#: The paper's own model, CNN-X: the baseline the report compares the others against.
PAPER_MODEL = "cnnx"
#: The model a spec trains when it names none: CNN-X, the paper's own (and the fastest).
DEFAULT_MODEL = PAPER_MODEL
#: The CAM method of CNN-X: its exact per-position contribution map (``raybench.cam.methods``).
CNNX_CAM_METHOD = "cnnx"
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


@dataclass(frozen=True)
class ModelOption:
    """An architecture option a model declares; a spec sets it as ``model.options.<name>``.

    Attributes:
        name: Key under ``model.options`` (and the runs-table column that records it).
        default: The value used when the spec leaves it unset (the paper's).
        doc: One line for error messages and ``raybench models``.
        search: The values an Optuna sweep tries when the option is tuned (empty: not
            tunable); ``sweep.space.options.<name>`` overrides them.
        check: ``check(value, image_size)`` returns why a value cannot work, or ``None``.
    """

    name: str
    default: int
    doc: str
    search: tuple[int, ...] = ()
    check: Optional[Callable[[int, int], Optional[str]]] = None

    @property
    def tunable(self) -> bool:
        """Whether a sweep may vary it."""
        return bool(self.search)


def _cnnx_stride_fits(stride: int, image_size: int) -> Optional[str]:
    side = cnnx_pooled_size(image_size, stride)
    if side >= CNNX_MIN_POOLED:
        return None
    return (f"CNN-X stride {stride} on {image_size} px inputs leaves {side}x{side} feature maps; "
            "lower the stride or raise model.image_size")


#: Every model's architecture options (torch-free: spec validation reads them before torch is
#: imported). The registry's :class:`~raybench.models.registry.ModelSpec` entries carry the same
#: tuples (a test checks it); a model not listed here takes no options.
MODEL_OPTIONS: dict[str, tuple[ModelOption, ...]] = {
    "cnnx": (ModelOption(S.STRIDE, 3, "CNN-X pooling stride (the paper's 3)", search=(2, 3, 4),
                          check=_cnnx_stride_fits),),
}


def options_of(name: str) -> tuple[ModelOption, ...]:
    """The options model ``name`` declares (empty for most of the zoo)."""
    return MODEL_OPTIONS.get(name, ())


def tunable_options(name: str) -> tuple[ModelOption, ...]:
    """The options of model ``name`` that a sweep may search."""
    return tuple(o for o in options_of(name) if o.tunable)


def applicable(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``options`` (a spec's ``model.options``) that model ``name`` declares."""
    declared = {o.name for o in options_of(name)}
    return {k: v for k, v in options.items() if k in declared}


def check_options(name: str, options: Mapping[str, Any], image_size: int) -> dict[str, int]:
    """Model ``name``'s options: the declared defaults updated with ``options``.

    Raises:
        ValueError: An option the model does not declare, a value that is not an int >= 1, or
            one its check refuses at ``image_size``.
    """
    declared = {o.name: o for o in options_of(name)}
    unknown = sorted(set(options) - set(declared))
    if unknown:
        allowed = ", ".join(sorted(declared)) or "none"
        raise ValueError(f"model {name!r} has no option {unknown[0]!r}; its options: {allowed}")
    values = {key: opt.default for key, opt in declared.items()}
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} option {key!r} must be an int >= 1, got {value!r}")
        values[key] = value
    for key, value in values.items():
        check = declared[key].check
        problem = check(value, image_size) if check is not None else None
        if problem:
            raise ValueError(problem)
    return values
