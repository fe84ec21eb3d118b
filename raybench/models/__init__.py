"""Model zoo: the paper's 12 ImageNet CNNs plus CNN-X, in one table.

:mod:`raybench.models.table` (torch-free) holds one entry per model; builders are imported when
a model is built. ``build_model`` and friends import torch on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raybench.models.table import MODELS, ModelSpec, get_model_spec
    from raybench.models.zoo import build_model, count_parameters, unwrap_model

__all__ = ["MODELS", "ModelSpec", "build_model", "count_parameters", "get_model_spec", "unwrap_model"]
_HOME = {"MODELS": "table", "ModelSpec": "table", "get_model_spec": "table",
         "build_model": "zoo", "count_parameters": "zoo", "unwrap_model": "zoo"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'raybench.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"raybench.models.{_HOME[name]}"), name)
