"""Model zoo: the paper's 12 ImageNet CNNs plus CNN-X, behind one registry.

The package imports torch only when one of its names is used, so ``raybench.models.names``
(what spec validation needs) stays torch-free.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raybench.models.registry import MODELS, ModelSpec, get_model_spec
    from raybench.models.zoo import build_model, count_parameters, unwrap_model

__all__ = ["MODELS", "ModelSpec", "build_model", "count_parameters", "get_model_spec", "unwrap_model"]
_HOME = {"MODELS": "registry", "ModelSpec": "registry", "get_model_spec": "registry",
         "build_model": "zoo", "count_parameters": "zoo", "unwrap_model": "zoo"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'raybench.models' has no attribute {name!r}")
    importlib.import_module("raybench.models.zoo")  # fills the registry
    return getattr(importlib.import_module(f"raybench.models.{_HOME[name]}"), name)
