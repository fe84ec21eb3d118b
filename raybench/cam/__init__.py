"""Class activation maps: target layers, CAM / CNN-X / Grad-CAM, ROI focus, export, overlays.

>>> from raybench.cam import compute_cams, roi_focus
>>> out = compute_cams(model, "resnet18", images)          # uint8 (N, S, S) -> maps (N, h, w)
>>> roi_focus(out.maps, masks)                              # share of positive energy in the lungs
"""
from raybench.cam.hooks import capture_layer, classifier_head, eval_mode, target_layer
from raybench.cam.methods import (
           METHODS,
           CamBatch,
           CamMethod,
           compute_cams,
           resolve_method,
)
from raybench.cam.roi import lung_field_template, pointing_game, roi_focus, upsample

__all__ = ["METHODS", "CamBatch", "CamMethod", "capture_layer", "classifier_head",
           "compute_cams", "eval_mode", "lung_field_template", "pointing_game",
           "resolve_method", "roi_focus", "target_layer", "upsample"]
