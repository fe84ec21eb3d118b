"""Torch-free questions about the model table: names, options, messages.

Spec validation runs before torch is imported (a typo costs a second, not the eight a torch +
Ray import takes); everything here reads :mod:`raybench.models.table`, which holds no torch.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from raybench.models.table import (
    CNNX_CAM_METHOD,
    CNNX_MIN_POOLED,
    CNNX_POOL_WINDOW,
    DEFAULT_MODEL,
    LIBRARIES,
    MODELS,
    PAPER_MODEL,
    ModelOption,
    cnnx_pooled_size,
)
from raybench.registry import load_ref

__all__ = ["CNNX_CAM_METHOD", "CNNX_MIN_POOLED", "CNNX_POOL_WINDOW", "DEFAULT_MODEL", "LIBRARIES",
           "MODEL_NAMES", "PAPER_MODEL", "ModelOption", "applicable", "check_options",
           "cnnx_pooled_size", "library_name", "model_problem", "options_of", "tunable_options",
           "unknown_model_message"]

#: The table's keys, in table order.
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def library_name(name: object) -> Optional[tuple[str, str]]:
    """``(library, name)`` of a library model name (``timm.convnext_tiny``), else ``None``."""
    library, dot, arch = str(name).partition(".")
    return (library, arch) if dot and library in LIBRARIES and arch else None


def unknown_model_message(name: object) -> str:
    """The one-line message for an unknown model, with a close match if any."""
    text = str(name)
    library, slash, arch = text.partition("/")
    if slash and library in LIBRARIES:  # the hub spelling; a '/' cannot be part of a file name
        return f"unknown model {text!r} (did you mean '{library}.{arch}'?): library models are " \
               "named <library>.<name>"
    return (f"{MODELS.unknown_message(name)}; or any {' / '.join(LIBRARIES)} model as "
            "timm.<name> or torchvision.<name> (raybench models --search 'PATTERN')")


def model_problem(name: object) -> Optional[str]:
    """Why ``name`` names no model (one line, with a close match), or ``None``.

    Table names are checked without torch; a library name imports its library (seconds).
    """
    if name in MODELS:
        return None
    if library_name(name) is not None:
        problem: Optional[str] = load_ref("raybench.models.generic:name_problem")(str(name))
        return problem
    return unknown_model_message(name)


def options_of(name: str) -> tuple[ModelOption, ...]:
    """The options model ``name`` declares (empty for most of the zoo, and for unknown names)."""
    return MODELS.get(name).options if name in MODELS else ()


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
