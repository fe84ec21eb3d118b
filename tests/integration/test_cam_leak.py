"""Shortcut learning made visible: CNN-X on leaky vs clean synthetic X-rays (in-process, no Ray).

With ``marker_leak=1.0`` every image carries its class's letter in a class-specific corner,
outside the lungs. The leaky model classifies well, but its CAM energy sits outside the lung
masks: its ROI focus must be clearly lower than the clean model's.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from raybench.config import load_spec
from raybench.engine.run import run_training
from raybench.store import ResultStore

pytestmark = pytest.mark.slow  # two short trainings: about 10 s on 2 CPU cores


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread: None) -> None:
    """Every test of this module runs torch on one thread (see conftest)."""


def _train(tmp: Path, leak: float):
    spec = load_spec(None, [
        f"name=leak{leak:g}", f"results={tmp / 'runs'}", f"data.cache_dir={tmp / 'cache'}",
        "data.synthetic.per_class=40", "data.synthetic.size=64",
        f"data.synthetic.marker_leak={leak}", "model.name=cnnx", "model.image_size=64",
        "train.epochs=5", "train.batch_size=16", "train.lr=1e-3", "train.device=cpu",
        "cam.select=all"])
    outcome = run_training(spec)
    metrics = ResultStore(spec.results).read_table(spec.name, "metrics")
    overall = metrics[(metrics["class"] == "all") & (metrics["split"] == "test")]
    return spec, outcome, dict(zip(overall["metric"], overall["value"]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("leak")
    return tmp, _train(tmp, 1.0), _train(tmp, 0.0)


def test_leaky_model_looks_outside_the_lungs(trained) -> None:
    _, (_, _, leaky), (_, _, clean) = trained
    assert leaky["accuracy"] >= 0.9, leaky  # the shortcut works: accuracy looks fine
    assert leaky["roi_n"] == clean["roi_n"] > 20
    # a uniform map's score: the synthetic lung masks' mean share, not the 64 px template's 0.29
    assert 0.15 < clean["roi_chance"] < 0.27 and 0.15 < leaky["roi_chance"] < 0.27
    assert leaky["roi_focus"] < 0.6 * clean["roi_focus"], (leaky, clean)
    assert leaky["pointing_game"] < clean["pointing_game"], (leaky, clean)


def test_export_writes_cams_and_per_class_roi_rows(trained) -> None:
    _, (spec, outcome, _), _ = trained
    store = ResultStore(spec.results)
    cams = store.read_cams(spec.name, outcome.trial_id)
    n = len(outcome.data.test)
    assert len(cams) == n and cams.method == "cnnx" and cams.target_layer == "pooled"
    assert cams.cams.shape == (n, 21, 21) and cams.input_size == (64, 64)  # (64 - 2) // 3 + 1
    assert cams.images.shape == (n, 64, 64) and 0 <= cams.cams.min() and cams.cams.max() <= 1
    assert list(cams.image_ids) == outcome.data.test.image_ids
    metrics = store.read_table(spec.name, "metrics")
    roi = metrics[metrics["metric"] == "roi_focus"]
    assert set(roi["class"]) == {*outcome.data.labels, "all"} and set(roi["split"]) == {"test"}
    sens = metrics[(metrics["metric"] == "sensitivity") & (metrics["split"] == "test")]
    assert len(sens) == len(outcome.data.labels)  # kept


def test_report_shows_the_cam_figure_and_cli_renders(trained, run_cli) -> None:
    tmp, (spec, outcome, _), _ = trained
    code, out, err = run_cli("report", spec.results, "--sweep", spec.name, "--out",
                             str(tmp / "report"))
    assert code == 0, err
    md = (tmp / "report" / "report.md").read_text()
    assert "## Class activation maps" in md and "figures/cams.png" in md
    assert "| trial_id | class | pointing_game | roi_focus |" in md  # the ROI-focus table
    assert "Chance level of ROI focus: 0.2" in md and "the lung masks' mean share" in md
    assert (tmp / "report" / "figures" / "cams.png").stat().st_size > 10_000
    image_id = outcome.data.test.image_ids[0]
    code, out, err = run_cli("cam", spec.results, "--sweep", spec.name, "--trial",
                             outcome.trial_id, "--images", image_id, "--out", str(tmp / "png"))
    assert code == 0 and image_id in out, err
    assert len(list((tmp / "png").glob("*.png"))) == 1
