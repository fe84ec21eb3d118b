"""Findings: a known-answer test with every kind planted, and none on clean results."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.findingsdata import write_clean, write_planted
from raybench.findings import KINDS
from raybench.results import load
from raybench.store import ResultStore

VERDICTS = {"best model", "verdict", "test origin"}  # what every study of 2+ seeds gets
PROBLEMS = set(KINDS) - VERDICTS


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("findings")
    store = ResultStore(str(path))
    write_planted(store)
    write_clean(store)
    return str(path)


def test_every_planted_kind_is_found_with_its_numbers(root: str) -> None:
    res = load(root, "planted")
    found = res.findings(n_boot=200)
    assert set(found["kind"]) == set(KINDS)
    assert found["severity"].tolist() == sorted(
        found["severity"], key=["critical", "warning", "info"].index)  # most severe first
    by = {(k, m): r for k, m, r in zip(found["kind"], found["model"], found.to_dict("records"),
                                       strict=True)}
    assert by[("collapsed model", "flat")]["value"] == 1.0
    assert "bacteria for 100% of its 240 test images" in by[("collapsed model", "flat")]["finding"]
    gap = found[(found["kind"] == "source gap")].set_index("finding")
    cov = next(t for t in gap.index if "covid19 specificity" in t)
    table = res.paper_table("sc", by_source=True, n_boot=200)
    b, a = (table.loc[("good", src, "covid19"), "specificity"] for src in ("hospB", "hospA"))
    assert f"good covid19 specificity: {b:.3f} on hospB against {a:.3f} on hospA; gap +" in cov
    assert "paired within 2 seed(s); per-seed counts hospB 47/80, 50/80, hospA" in cov
    assert gap.loc[cov, "value"] == pytest.approx(a - b)  # the gap as stated: higher - lower
    assert by[("ROI focus", "good")]["value"] == pytest.approx(0.2)
    ece = res.metrics.query("metric == 'ece' and split == 'test' and source.isna()")
    flat_ece = ece[ece["trial_id"].str.startswith("flat")]["value"].mean()
    assert by[("calibration", "flat")]["value"] == pytest.approx(flat_ece)
    assert by[("lungs-hidden control", "good")]["severity"] == "critical"
    assert by[("selection disagreement", "good")]["finding"].startswith("shaky ranks first on "
                                                                        "validation")
    assert "significantly worse on test than the runner-up good" in by[("best model", "shaky")][
        "finding"]
    assert "external.parquet" in found[found["kind"] == "test origin"]["finding"].iloc[0]
    assert set(found["section"]) >= {"Per source: sc", "Calibration", "ROI focus", "Test sets",
                                     "Shortcut control: the lungs hidden", "Trials"}


def test_clean_results_carry_no_problem(root: str) -> None:
    found = load(root, "clean").findings(n_boot=200)
    assert set(found["kind"]) == VERDICTS
    assert not PROBLEMS & set(found["kind"])
    best = found[found["kind"] == "best model"].iloc[0]
    assert best["model"] == "a" and "not significantly better than the runner-up b" in best[
        "finding"]
    assert "in-distribution" in found[found["kind"] == "test origin"]["finding"].iloc[0]


def test_cli_prints_the_findings_table(root: str, run_cli) -> None:
    code, out, err = run_cli("results", root, "--sweep", "clean", "--table", "findings",
                             "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["kind"] for r in rows] == ["best model", "verdict", "test origin"]
    assert {"kind", "severity", "scenario", "model", "finding", "value", "n", "section"} <= set(
        rows[0])
    assert Path(root, "clean").is_dir()


@pytest.mark.slow  # a whole report with its figures
def test_report_opens_with_every_planted_finding(root: str, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "report"
    code, _, err = run_cli("report", root, "--sweep", "planted", "--out", str(out))
    assert code == 0, err
    md = (out / "report.md").read_text()
    first = md.index("\n## ")
    assert md[first:].startswith("\n## Findings")  # the first section, after the contents
    section = md[first:md.index("\n## ", first + 1)]
    for kind in KINDS:
        assert f"| {kind} |" in section, kind
    assert "per-seed counts hospB 47/80, 50/80, hospA" in section


def _roi(focus: float, chance: float) -> list[dict]:
    return [{"split": "test", "class": "all", "metric": metric, "value": v, "ci_low": None,
             "ci_high": None, "source": None}
            for metric, v in (("roi_focus", focus), ("roi_n", 60.0), ("roi_chance", chance))]


def test_roi_focus_is_judged_against_the_share_of_the_masks_used(tmp_path: Path) -> None:
    """The chance level is what a uniform map scores on the images with CAMs: the masks' mean
    area share (roi_chance rows), not the lung-field template's share of the image."""
    from tests.helpers.comparedata import write_preds_trial
    from tests.helpers.findingsdata import PATIENTS, SOURCES, Y, _confident
    from raybench.report.evidence import roi_chance_note

    store = ResultStore(str(tmp_path))
    p = _confident(Y, 0.9)
    for model, chance in (("wide", 0.20), ("narrow", 0.30)):
        write_preds_trial(store, "roi", f"{model}-s0", model=model, seed=0, y=Y,
                          probs={"test": p, "val": p}, patients=PATIENTS, sources=SOURCES,
                          extra_metrics=_roi(0.25, chance))
    res = load(str(tmp_path), "roi")
    found = res.findings(n_boot=100)
    roi = found[found["kind"] == "ROI focus"]
    assert roi["model"].tolist() == ["narrow"]  # 0.25 is above 0.20 but below 0.30
    assert "at or below the chance level 0.300" in roi["finding"].iloc[0]
    note = roi_chance_note(res)
    assert note is not None and "0.250, the lung masks' mean share" in note


def test_findings_do_not_import_torch(root: str) -> None:
    """README: of the notebook API only compute_cams imports torch."""
    import subprocess
    import sys

    code = ("import sys; from raybench.results import load; "
            f"load({root!r}, 'planted').findings(n_boot=50); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
