"""report/evidence.py: the statistics sections when the results hold less than a full study
(no predictions, lost metrics, one model)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raybench import schema as S
from raybench import stats
from raybench.report import evidence
from raybench.report.blocks import Figure
from raybench.results import Results, load
from raybench.store import ResultStore
from tests.helpers.comparedata import probs_for, write_preds_trial

Y = np.tile(np.arange(3), 10)


def _roi_study(root: Path, predictions: tuple[str, ...]) -> Results:
    """cnnx on full images and with the lungs hidden, two seeds; only the ``predictions``
    files of the trials whose roi is listed are kept."""
    store = ResultStore(str(root))
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        for roi, skill in (("full", 1.0), ("outside_lungs", 0.0)):
            write_preds_trial(store, "s", f"{roi}-{seed}", model="cnnx", seed=seed, y=Y,
                              probs={"test": probs_for(Y, skill, rng)}, roi=roi)
            if roi not in predictions:
                (root / "s" / "predictions" / f"{roi}-{seed}.parquet").unlink()
    return load(str(root), "s")


def test_without_predictions_the_roi_sections_keep_what_the_metrics_give(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    res = _roi_study(tmp_path, predictions=())
    with caplog.at_level(logging.INFO, logger="raybench.report.evidence"):
        shortcut = evidence.shortcut_blocks(res)
        confusion = evidence.roi_confusion_blocks(res, tmp_path / "figs")
        reliability = evidence.reliability_figure(res, tmp_path / "figs" / "reliability.png")
    accuracy = res.metrics.query("split == 'test' and `class` == 'all' and metric == 'accuracy'")
    hidden = accuracy.merge(res.runs.query("roi == 'outside_lungs'"), on=[S.SWEEP, S.TRIAL_ID])
    assert shortcut[0] == "## Shortcut control: the lungs hidden" and len(shortcut) == 3
    assert shortcut[2].startswith(f"**cnnx (sc): accuracy with the lungs hidden "
                                  f"{hidden[S.VALUE].mean():.3f}** (full images ")
    assert confusion == [] and reliability is None
    assert not (tmp_path / "figs").exists()
    assert ("no shortcut comparison: no predictions in the results: a comparison needs them"
            in caplog.messages)
    assert ("no outside_lungs confusion matrix for cnnx: no predictions for model 'cnnx'"
            in caplog.messages)


def test_no_reliability_diagram_from_predictions_of_other_rois_only(tmp_path: Path) -> None:
    res = _roi_study(tmp_path, predictions=("outside_lungs",))
    assert len(res.predictions) == 2 * len(Y)  # the lungs-hidden trials' predictions exist
    assert evidence.reliability_figure(res, tmp_path / "reliability.png") is None
    assert not (tmp_path / "reliability.png").exists()


def test_ranking_without_metrics_has_no_baseline_and_states_no_claim(tmp_path: Path) -> None:
    """Metrics files lost (predictions kept): no ranks, so no baseline (cnnx, the paper's
    model, is absent): every pair is compared and no claim sentence is written."""
    store = ResultStore(str(tmp_path))
    rng = np.random.default_rng(1)
    for seed in (0, 1):
        for model in ("resnet18", "vgg16"):
            write_preds_trial(store, "s", f"{model}-{seed}", model=model, seed=seed, y=Y,
                              probs={"test": probs_for(Y, 1.0, rng)})
    for path in (tmp_path / "s" / "metrics").iterdir():
        path.unlink()
    blocks = evidence.ranking_blocks(load(str(tmp_path), "s"), "sc", tmp_path, "s0")
    text = [b for b in blocks if isinstance(b, str)]
    assert not any(b.startswith("**The paper's claim, tested:**") for b in text)
    assert not any(b.startswith("Friedman test") for b in text)
    assert any(b.startswith("Paired comparison against each other model on the same test "
                            "images") for b in text)


def test_claim_is_none_without_overall_headline_rows() -> None:
    table = pd.DataFrame({S.METRIC: ["accuracy", "balanced_accuracy"], S.CLASS: ["all", "normal"],
                          S.MODEL: ["vgg16", "vgg16"], "diff": [0.1, 0.1]})
    assert evidence._claim(table, "cnnx") is None


def test_findings_section_is_left_out_when_nothing_was_found() -> None:
    assert evidence.findings_blocks(pd.DataFrame(columns=["severity", "kind", "finding"])) == []


def test_cd_diagram_of_one_model_draws_no_critical_difference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranks = stats.friedman_nemenyi(np.array([[0.8], [0.7]]), ["cnnx"])
    assert np.isnan(ranks.cd)
    texts: list[str] = []
    save = evidence.save_figure

    def keep_texts(fig, path: Path, caption: str) -> Figure:
        texts.extend(t.get_text() for t in fig.axes[0].texts)
        return save(fig, path, caption)

    monkeypatch.setattr(evidence, "save_figure", keep_texts)
    fig = evidence.cd_diagram(ranks, tmp_path / "cd.png")
    assert fig.path.read_bytes().startswith(b"\x89PNG")
    assert texts == ["1", "cnnx (1.00)"]  # the axis tick and the model: no "CD = ..." bar
    assert fig.caption.startswith("critical-difference diagram over 2 block(s) (scenario x seed)")
