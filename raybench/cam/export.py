"""After a trial: CAMs of chosen test images -> ``cams/<trial_id>.npz``, ROI focus -> metrics.

Maps are stored as float16 at the target layer's resolution (``relu(M) / max``, so [0, 1]),
with the input size they upsample to; the uint8 inputs ride along when ``cam.images`` is on.
The ROI-focus rows (``split = "test"``, per class and ``all``) are appended to the trial's
metrics file, which is rewritten with the classification rows it already had.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from raybench import schema as S
from raybench.camset import CamSet
from raybench.cam.methods import compute_cams, resolve_method
from raybench.cam.roi import load_masks, pointing_game, roi_focus
from raybench.config import CamConfig, DataConfig, Spec
from raybench.data.dataset import PreparedData
from raybench.metrics import ALL, Z_95, wilson_interval
from raybench.models import get_model_spec
from raybench.store import ResultStore

log = logging.getLogger(__name__)


@dataclass
class CamExport:
    """What one trial's export produced."""

    cams: CamSet
    focus: np.ndarray  # (N,) ROI focus per image (NaN: no positive energy)
    hits: np.ndarray  # (N,) pointing-game hit per image, 0 / 1
    rows: list[dict]  # metrics-table rows


def select_images(cfg: CamConfig, targets: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Indices into the test split: all, the first ``per_class`` of each class, or misclassified."""
    if cfg.select == "all":
        return np.arange(len(targets))
    if cfg.select == "misclassified":
        return np.flatnonzero(targets != predicted)
    return np.sort(np.concatenate([np.flatnonzero(targets == k)[:cfg.per_class]
                                   for k in np.unique(targets)]))


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and normal-approximation 95% interval of the finite values."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = Z_95 * float(v.std(ddof=1)) / math.sqrt(len(v))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def roi_rows(labels: Sequence[str], targets: np.ndarray, focus: np.ndarray, hits: np.ndarray,
             approx: bool = False, share: Optional[np.ndarray] = None) -> list[dict]:
    """Metrics rows per true class and ``all``: roi_focus (mean, normal CI), pointing_game
    (hit rate, Wilson CI), roi_n and, with ``share`` (each image's mask area share),
    roi_chance: the ROI focus a map spread evenly over those images scores. Names get
    ``_approx`` when the lung template was used."""
    suffix = "_approx" if approx else ""
    rows = []
    groups = [(lab, targets == k) for k, lab in enumerate(labels)] + [(ALL, np.ones_like(hits, bool))]
    for name, sel in groups:
        if not sel.any():
            continue
        mean, low, high = _mean_ci(focus[sel])
        hit_low, hit_high = wilson_interval(int(hits[sel].sum()), int(sel.sum()))
        rows += [
            {S.SPLIT: "test", S.CLASS: name, S.METRIC: f"roi_focus{suffix}", S.VALUE: mean,
             S.CI_LOW: low, S.CI_HIGH: high},
            {S.SPLIT: "test", S.CLASS: name, S.METRIC: f"pointing_game{suffix}",
             S.VALUE: float(hits[sel].mean()), S.CI_LOW: hit_low, S.CI_HIGH: hit_high},
            {S.SPLIT: "test", S.CLASS: name, S.METRIC: f"roi_n{suffix}",
             S.VALUE: float(sel.sum()), S.CI_LOW: math.nan, S.CI_HIGH: math.nan},
        ]
        if share is not None:
            rows.append({S.SPLIT: "test", S.CLASS: name, S.METRIC: f"roi_chance{suffix}",
                         S.VALUE: float(share[sel].mean()), S.CI_LOW: math.nan,
                         S.CI_HIGH: math.nan})
    return rows


def mask_roots(data: PreparedData, cfg: DataConfig) -> list[Path]:
    """Folders that ``mask_path`` cells are relative to (every manifest the data came from)."""
    from raybench.data.dataset import resolve_manifest
    from raybench.data.manifest import manifest_root

    manifests = data.scenario.get("manifests") or [str(resolve_manifest(cfg))]
    return [manifest_root(m) for m in manifests]


def stored_maps(maps: torch.Tensor) -> np.ndarray:
    """``relu(M) / max`` per image as float16 (N, h, w), one device-to-host copy."""
    pos = torch.relu(maps)
    peak = pos.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (pos / peak).to(torch.float16).cpu().numpy()


def trial_cams(model: nn.Module, spec: Spec, data: PreparedData,
               predicted: np.ndarray) -> Optional[CamExport]:
    """CAMs and ROI scores of the test images that ``spec.cam`` selects (None when none are)."""
    cfg, split = spec.cam, data.test
    model_spec = get_model_spec(spec.model.name)
    if not model_spec.cam_layer:
        log.info("CAM: none for %s: %s", spec.model.name, model_spec.cam_note)
        return None
    targets = split.targets.numpy()
    idx = select_images(cfg, targets, predicted)
    if len(idx) == 0:
        log.info("CAM: no test images selected (select=%s)", cfg.select)
        return None
    method = resolve_method(cfg.method, model_spec)
    images = split.images[torch.from_numpy(idx)]  # (N, S, S) uint8
    out = compute_cams(model, spec.model.name, images, method.name, cfg.batch_size)
    size = images.shape[-1]
    ids = [split.image_ids[i] for i in idx]
    masks, from_file = load_masks(data.manifest, ids, mask_roots(data, spec.data), size)
    masks_t = torch.from_numpy(masks).to(out.maps.device)
    focus = roi_focus(out.maps, masks_t).cpu().numpy()
    hits = pointing_game(out.maps, masks_t).cpu().numpy()
    labels = data.labels
    cams = CamSet(image_ids=np.array(ids), labels=np.array([labels[t] for t in targets[idx]]),
                  predicted=np.array([labels[c] for c in out.classes.tolist()]),
                  cams=stored_maps(out.maps), method=method.name,
                  target_layer=model_spec.cam_layer, input_size=(size, size),
                  images=images.numpy() if cfg.images else None)
    share = masks.reshape(len(masks), -1).astype(np.float64).mean(axis=1)  # (N,) area share
    rows = roi_rows(labels, targets[idx], focus, hits, approx=not from_file.all(), share=share)
    return CamExport(cams, focus, hits, rows)


def export_trial_cams(store: ResultStore, spec: Spec, trial_id: str, model: nn.Module,
                      data: PreparedData, result) -> Optional[CamExport]:
    """Writes ``cams/<trial_id>.npz``; returns the export, whose ``rows`` are the ROI metrics.

    Args:
        store: The results store the trial's tables were written to.
        spec: The trial's spec (``spec.cam`` chooses images and method).
        trial_id: The trial.
        model: The trained model (unwrapped or not), on its training device.
        data: The trial's data (the test split is explained).
        result: The trial's :class:`raybench.engine.loop.LoopResult` (test predictions).
    """
    if not spec.cam.enabled or result.test is None:
        return None
    export = trial_cams(model, spec, data, result.test.probs.argmax(axis=1))
    if export is None:
        return None
    store.write_cams(spec.name, trial_id, export.cams)
    focus = export.focus[np.isfinite(export.focus)]
    log.info("CAM: %d maps (%s), ROI focus %.3f, pointing game %.2f", len(export.cams),
             export.cams.method, float(focus.mean()) if len(focus) else math.nan,
             float(export.hits.mean()))
    return export
