"""Class activation maps: target layers, CAM / CNN-X / Grad-CAM, ROI focus, export, overlays.

>>> from raybench.cam import compute_cams, roi_focus
>>> out = compute_cams(model, "resnet18", images)          # uint8 (N, S, S) -> maps (N, h, w)
>>> roi_focus(out.maps, masks)                              # share of positive energy in the lungs

Names are imported on first use (PEP 562): ``from raybench.cam import CamSet`` (defined in
:mod:`raybench.camset`, beside the results store) stays torch-free, so reading stored CAMs does
not import torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raybench.camset import CamSet
    from raybench.cam.hooks import capture_layer, classifier_head, eval_mode, target_layer
    from raybench.catalog.cam_methods import METHODS, CamMethod
    from raybench.cam.methods import CamBatch, compute_cams, resolve_method
    from raybench.cam.roi import lung_field_template, pointing_game, roi_focus, upsample

#: Public name -> the submodule that defines it.
_SOURCES = {
    "CamSet": "raybench.camset",
    "capture_layer": "hooks", "classifier_head": "hooks", "eval_mode": "hooks",
    "target_layer": "hooks",
    "METHODS": "raybench.catalog.cam_methods", "CamMethod": "raybench.catalog.cam_methods",
    "CamBatch": "methods",
    "compute_cams": "methods", "resolve_method": "methods",
    "lung_field_template": "roi", "pointing_game": "roi", "roi_focus": "roi", "upsample": "roi",
}

__all__ = ["METHODS", "CamBatch", "CamMethod", "CamSet", "capture_layer", "classifier_head",
           "compute_cams", "eval_mode", "lung_field_template", "pointing_game",
           "resolve_method", "roi_focus", "target_layer", "upsample"]


def __getattr__(name: str) -> Any:
    """Imports the submodule that defines ``name`` on first access (PEP 562)."""
    if name not in _SOURCES:
        raise AttributeError(f"module 'raybench.cam' has no attribute {name!r}")
    module = _SOURCES[name]
    value = getattr(importlib.import_module(module if "." in module else f"raybench.cam.{module}"),
                    name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
