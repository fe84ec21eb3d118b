"""cam/export.py: a trial with nothing to explain writes no CAM file."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from raybench.cam import export
from raybench.config import load_spec
from raybench.data.dataset import PreparedData, SplitData
from raybench.engine.loop import Evaluation, LoopResult
from raybench.metrics import compute_metrics
from raybench.models import build_model, get_model_spec
from raybench.store import ResultStore

LABELS = ("normal", "viral")
TARGETS = np.array([0, 1, 1, 0])


def _data() -> PreparedData:
    def split(n: int) -> SplitData:
        return SplitData(torch.zeros((n, 16, 16), dtype=torch.uint8),
                         torch.from_numpy(TARGETS[:n]), [f"img{i}" for i in range(n)])

    return PreparedData(LABELS, split(2), split(2), split(4), pd.DataFrame())


def _right_every_time() -> LoopResult:
    """Test predictions that match every target (nothing is misclassified)."""
    probs = np.eye(2)[TARGETS] * 0.8 + 0.1
    return LoopResult(test=Evaluation(0.1, probs, compute_metrics(TARGETS, probs, LABELS)))


def test_no_misclassified_test_image_means_no_cam_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = load_spec(None, ["model.name=cnnx", "cam.select=misclassified"])
    store = ResultStore(str(tmp_path))
    model = build_model("cnnx", 2, image_size=16)
    with caplog.at_level(logging.INFO, logger="raybench.cam.export"):
        out = export.export_trial_cams(store, spec, "cnnx-seed0", model, _data(),
                                       _right_every_time())
    assert out is None
    assert "CAM: no test images selected (select=misclassified)" in caplog.messages
    assert store.cam_trials(spec.name) == [] and not (tmp_path / spec.name).exists()


def test_a_model_without_a_cam_layer_gets_none_and_the_registry_note(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    flat = dataclasses.replace(get_model_spec("cnnx"), cam_layer="",
                               cam_note="no spatial layer before the head")
    monkeypatch.setattr(export, "get_model_spec", lambda name: flat)
    spec = load_spec(None, ["model.name=cnnx", "cam.select=all"])
    with caplog.at_level(logging.INFO, logger="raybench.cam.export"):
        out = export.trial_cams(build_model("cnnx", 2, image_size=16), spec, _data(), TARGETS)
    assert out is None
    assert caplog.messages == ["CAM: none for cnnx: no spatial layer before the head"]
