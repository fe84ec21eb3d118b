"""report.py: report.md + self-contained report.html with PNG figures, CAM grids from NPZ."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from raybench.camset import CamSet
from raybench.report import cam_grid_figure
from raybench.results import format_paper_table, load
from raybench.store import ResultStore
from tests.helpers.resultdata import FOUR, write_scenario2

PNG = b"\x89PNG\r\n\x1a\n"


def camset(ids: list[str], labels: list[str], seed: int, images: bool = True) -> CamSet:
    rng = np.random.default_rng(seed)
    return CamSet(image_ids=ids, labels=labels, predicted=labels[::-1], cams=rng.random((len(ids), 7, 7)),
                  method="cam", target_layer="features", input_size=48,
                  images=rng.integers(0, 255, (len(ids), 48, 48), dtype=np.uint8) if images else None)


def test_report_writes_html_with_figures_and_numbers(tmp_path: Path, run_cli) -> None:
    store = ResultStore(str(tmp_path / "runs"))
    write_scenario2(store)
    ids = ["img000", "img010", "img020", "img030"]
    store.write_cams("s2", "cnnx-seed0", camset(ids, list(FOUR), 0))
    store.write_cams("s2", "resnet18-seed1", camset(ids[::-1], list(FOUR)[::-1], 1))
    out = tmp_path / "report"
    code, stdout, err = run_cli("report", str(tmp_path / "runs"), "--sweep", "s2", "--out", str(out))
    assert code == 0, err
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["cams.png", "confusion-s0-cnnx.png", "confusion-s0-resnet18.png",
                       "curves-s0.png", "sensspec-s0-cnnx.png", "sensspec-s0-resnet18.png"]
    for name in figures:
        assert (out / "figures" / name).read_bytes().startswith(PNG)
    page = (out / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(figures) and 'src="figures/' not in page  # self-contained
    assert base64.b64decode(embedded[0]).startswith(PNG)
    # The paper table's cells as the API computes them (the report draws 1000 replicates).
    table = format_paper_table(load(str(tmp_path / "runs"), "s2").paper_table(n_boot=1000))
    cell = table.loc[("cnnx", "covid19")]
    assert cell["Sensitivity"].startswith("0.950 [") and cell["Specificity"].startswith("0.833 [")
    assert cell["Sensitivity"] in page and cell["Specificity"] in page
    # 10 of 10 on both seeds: censored at 1, it borrows the table's pooled seed variance
    full = table.loc[("resnet18", "normal"), "Sensitivity"]
    assert full.startswith("1.000 [") and full.endswith(", 1.000]") and full != "1.000 [1.000, 1.000]"
    assert full in page and "Scenario: scenario2" in page
    md = (out / "report.md").read_text()
    assert (f"| cnnx | covid19 | {cell['Sensitivity']} | {cell['Specificity']} | 2 | 10 / 30 | "
            "two-level bootstrap, seed variance pooled across the table") in md
    assert "](figures/cams.png)" in md and "| resnet18-seed1 | resnet18 | scenario2 | 1 |" in md
    assert "Bayesian verdict on balanced accuracy over the seeds (region of practical " in md
    assert f"wrote {out / 'report.html'}" in stdout


def test_cam_grid_rows_are_shared_images_and_columns_models(tmp_path: Path) -> None:
    a = camset(["i1", "i2", "i3"], ["normal", "viral", "covid19"], 0, images=False)
    b = camset(["i3", "i2", "x9"], ["covid19", "viral", "normal"], 1, images=False)
    fig = cam_grid_figure({"cnnx": a, "vgg16": b}, tmp_path / "grid.png")
    assert fig.path.read_bytes().startswith(PNG)
    import matplotlib.image as mpimg

    height, width = mpimg.imread(fig.path).shape[:2]
    # 2 shared images (i2, i3) x 3 columns (original, cnnx, vgg16) at 1.9 in and 100 dpi.
    assert (height, width) == (380, 570)


def test_report_without_a_sweep_is_one_line(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("report", str(tmp_path), "--sweep", "none", "--out", str(tmp_path / "o"))
    assert code == 2 and err.count("\n") == 1 and "no sweep 'none'" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("missing", ["epochs", "predictions"])
def test_report_skips_sections_without_data(tmp_path: Path, run_cli, missing: str) -> None:
    store = ResultStore(str(tmp_path / "runs"))
    write_scenario2(store)
    for p in (tmp_path / "runs" / "s2" / missing).iterdir():
        p.unlink()
    code, _, err = run_cli("report", str(tmp_path / "runs"), "--sweep", "s2", "--out",
                           str(tmp_path / "o"))
    assert code == 0, err
    names = {p.name.split("-")[0] for p in (tmp_path / "o" / "figures").iterdir()}
    assert names == {"sensspec", "confusion", "curves"} - {"epochs": {"curves"},
                                                          "predictions": {"confusion"}}[missing]


def _scenario2_report(tmp_path: Path, run_cli) -> Path:
    store = ResultStore(str(tmp_path / "runs"))
    write_scenario2(store)
    out = tmp_path / "report"
    code, _, err = run_cli("report", str(tmp_path / "runs"), "--sweep", "s2", "--out", str(out))
    assert code == 0, err
    return out


def test_report_has_a_table_of_contents_linking_every_section(tmp_path: Path, run_cli) -> None:
    out = _scenario2_report(tmp_path, run_cli)
    page = (out / "report.html").read_text()
    ids = re.findall(r'<h[23] id="([^"]+)">', page)
    assert ids == ["findings", "scenario-scenario2", "per-class-sensitivity--specificity",
                   "learning-curves", "confusion-matrices", "ranking-and-significance-scenario2",
                   "trials"]
    nav = re.search(r'<nav class="toc">(.*?)</nav>', page).group(1)
    assert re.findall(r'href="#([^"]+)"', nav) == ids
    assert page.index("<nav") < page.index('<h2 id="findings">')  # before section 1
    md = (out / "report.md").read_text()
    assert "**Contents**\n\n- [Findings](#findings)\n- [Scenario: scenario2](#scenario-scenario2)\n" \
           "  - [Per-class sensitivity / specificity](#per-class-sensitivity--specificity)" in md
    assert "- [Trials](#trials)" in md and md.index("**Contents**") < md.index("## Scenario")


def test_toc_anchors_number_repeated_headings_as_github_does() -> None:
    from raybench.report import headings

    blocks = ["# r", "## Scenario: a", "### Confusion matrices", "## Scenario: b",
              "### Confusion matrices", "text", "### Confusion matrices"]
    assert [h[2] for h in headings(blocks)] == [
        "r", "scenario-a", "confusion-matrices", "scenario-b", "confusion-matrices-1",
        "confusion-matrices-2"]


def test_small_multiples_sit_side_by_side_in_html_and_in_order_in_markdown(
        tmp_path: Path, run_cli) -> None:
    out = _scenario2_report(tmp_path, run_cli)
    page = (out / "report.html").read_text()
    grids = re.findall(r'<div class="grid">(.*?)</div>', page)
    # One grid of per-class bars and one of confusion matrices, two models each.
    assert [g.count("<figure>") for g in grids] == [2, 2]
    assert "cnnx: per-class" in grids[0] and "resnet18: test confusion" in grids[1]
    assert ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr))" in page
    md = (out / "report.md").read_text()
    assert md.index("figures/confusion-s0-cnnx.png") < md.index("figures/confusion-s0-resnet18.png")


def test_learning_curves_have_integer_epoch_ticks() -> None:
    import pandas as pd

    from raybench.report import learning_curves_plot

    epochs = pd.DataFrame({"model": ["cnnx"] * 4, "trial_id": ["t0"] * 4, "epoch": [1, 2, 3, 4],
                           "train_loss": [1.0, 0.8, 0.6, 0.5], "val_loss": [1.1, 0.9, 0.8, 0.7],
                           "val_balanced_accuracy": [0.3, 0.5, 0.6, 0.7]})
    fig = learning_curves_plot(epochs, "s")
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if low <= t <= high]
        assert shown == [1.0, 2.0, 3.0, 4.0]  # matplotlib's default gave 1.0, 1.5, ..., 4.0


def test_cam_grid_row_labels_of_long_ids_do_not_overlap() -> None:
    from raybench.plots import cam_grid_plot, row_label

    ids = [f"kermany-person{1000 + i}_bacteria_{4000 + i}-a-very-long-image-identifier.jpeg"
           for i in range(4)]
    fig = cam_grid_plot({"cnnx": camset(ids, list(FOUR), 0), "vgg16": camset(ids, list(FOUR), 1)})
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    boxes = [fig.axes[3 * r].yaxis.label.get_window_extent(renderer) for r in range(4)]
    for upper, lower in zip(boxes, boxes[1:]):
        assert lower.y1 < upper.y0  # label r+1 ends below where label r starts
    assert all(b.x0 >= 0 for b in boxes)  # and none is pushed off the figure's left edge
    labels = [fig.axes[3 * r].get_ylabel() for r in range(4)]
    assert len(set(labels)) == 4 and "person1002" in labels[2]  # ids stay distinguishable
    assert row_label("a" * 30, width=24) == "a" * 24 + "\n" + "a" * 6
    assert row_label("x" * 40 + "END", width=10, lines=2) == "x" * 10 + "\n\u2026" + "x" * 6 + "END"


def test_report_statistics_sections(tmp_path: Path, run_cli) -> None:
    """Significance, CD diagram, claim sentence, per-source flags, shortcut control,
    calibration and the test-set origin, from trials whose answers are known."""
    from tests.helpers.comparedata import probs_for, write_preds_trial

    rng = np.random.default_rng(0)
    store = ResultStore(str(tmp_path / "runs"))
    y = np.tile(np.arange(3), 40)
    sources = np.where(np.arange(120) < 60, "kermany", "hannover").tolist()
    for seed in (0, 1, 2):
        for model, skill in (("cnnx", 1.0), ("xception", 3.0), ("vgg16", 0.2)):
            p = probs_for(y, skill, rng)
            if model == "cnnx":  # hannover normals called covid19: a source shortcut
                p[(np.array(sources) == "hannover") & (y == 0)] = [0.05, 0.05, 0.9]
            write_preds_trial(store, "st", f"{model}-{seed}", model=model, seed=seed, y=y,
                              probs={"test": p, "val": p}, sources=sources, roi="full")
        write_preds_trial(store, "st", f"cnnx-out-{seed}", model="cnnx", seed=seed, y=y,
                          roi="outside_lungs", probs={"test": probs_for(y, 0.0, rng)})
    store.write_table("st", "runs", "cnnx-0", [{
        **store.read_table("st", "runs").query("trial_id == 'cnnx-0'").iloc[0].to_dict(),
        "test_from": "hannover.parquet", "test_sources": "hannover,kermany"}])
    out = tmp_path / "report"
    code, _, err = run_cli("report", str(tmp_path / "runs"), "--sweep", "st", "--out", str(out))
    assert code == 0, err
    assert {"cd-s0.png", "reliability.png"} <= {p.name for p in (out / "figures").iterdir()}
    md = (out / "report.md").read_text()
    for heading in ("## Test sets", "### Ranking and significance: sc", "### Per source: sc",
                    "## Shortcut control: the lungs hidden", "## Calibration"):
        assert heading in md
    assert "| sc | hannover.parquet | hannover,kermany |" in md
    claim = re.search(r"cnnx vs xception: balanced accuracy ([-+]\d\.\d{3}) "
                      r"\[([-+]\d\.\d{3}), ([-+]\d\.\d{3})\], p = ([<\d. ]+) \(Holm; cnnx worse\)", md)
    assert claim and float(claim[1]) < float(claim[3]) < 0, md[:3000]
    assert ("Flagged (the gap between two sources, paired within seeds, has a 95% interval "
            "that excludes 0): cnnx normal sensitivity: 0.000 on hannover against") in md
    assert "paired within 3 seed(s); per-seed counts hannover 0/20, 0/20, 0/20, kermany" in md
    # The findings open the report (after the contents) and state what the sections show.
    findings = md[md.index("## Findings"):md.index("## Test sets")]
    assert md.index("## Findings") < md.index("## Test sets") < md.index("## Scenario: sc")
    for kind in ("| source gap | sc | cnnx |", "| best model | sc | xception |",
                 "| lungs-hidden control | sc | cnnx |", "| test origin | sc |"):
        assert kind in findings
    assert "it needs the lungs" in findings  # outside_lungs trials score at chance here
    # Every table's prose names its tests, from the table's own `test` column.
    assert "(the `test` column): two-level bootstrap over seeds, then patients" in md
    assert "## Confusion matrices with other rois" in md and "cnnx (outside_lungs, sc)" in md
    # per-source rows; 0/20 on every seed: censored at 0, it borrows the pooled seed variance
    zero = re.search(r"\| cnnx \| hannover \| normal \| 0\.000 \[0\.000, (\d\.\d{3})\] \|", md)
    assert zero and float(zero[1]) > 0
    assert re.search(r"\| cnnx \| hannover \| normal \| [^|]+ \| [^|]+ \| 3 \| 20 / 40 \|", md)
    # The paper table counts the 3 full-image trials only (not the 3 outside_lungs ones).
    assert re.search(r"\| cnnx \| normal \| [^|]+ \| [^|]+ \| 3 \|", md)
    assert re.search(r"\| sc \| outside_lungs \| cnnx \| full \| balanced_accuracy \| all \|", md)
    assert re.search(r"\*\*cnnx \(sc\): accuracy with the lungs hidden 0\.[0-4]\d\d\*\*", md)
    assert re.search(r"\| xception \| 1 \| 0\.9\d+ \| 0\.9\d+ \| 3 \|", md)  # rank by val


def test_html_paragraphs_render_bold_and_code_and_escape_the_rest() -> None:
    from raybench.report.render import _inline

    assert _inline("**The claim:** a `x<y` & b") == \
        "<strong>The claim:</strong> a <code>x&lt;y</code> &amp; b"
    assert _inline("2 * 3 < 4") == "2 * 3 &lt; 4"
