"""Source probe: sources that differ only in intensity or a corner marker are told apart
(AUC near 1); identical sources are not (the interval covers 0.5). Synthetic films."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raybench import schema as S
from raybench.data.manifest import write_manifest
from raybench.data.probe import VERDICT, probe_manifest
from raybench.data.synth import synthesize

LABELS = ("normal", "covid19")


def _altered(tmp: Path, change: str, hosp_b: str = "alternate") -> Path:
    """80 synthetic films per label; every other one (or the covid19 ones) from hospB, whose
    films get ``change``: ``intensity`` (+40 grey levels), ``marker`` (a white corner square)
    or ``none``."""
    df = synthesize(tmp, per_class=80, size=64, seed=3, labels=LABELS)
    b = (np.arange(len(df)) % 2 == 1) if hosp_b == "alternate" else (df[S.LABEL] == "covid19"
                                                                     ).to_numpy()
    df[S.SOURCE] = np.where(b, "hospB", "hospA")
    for i in np.flatnonzero(b):
        path = tmp / df.loc[i, S.PATH]
        px = np.asarray(Image.open(path), dtype=np.int16)
        if change == "intensity":
            px = np.clip(px + 40, 0, 255)
        elif change == "marker":
            px[2:8, 2:8] = 255
        Image.fromarray(px.astype(np.uint8)).save(path)
        df.loc[i, S.SHA256] = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp / "two-sources.parquet"
    write_manifest(df, out)
    return out


@pytest.mark.parametrize("change", ["intensity", "marker"])
def test_sources_that_differ_only_in_pixels_are_told_apart(tmp_path: Path, change: str) -> None:
    probe = probe_manifest(_altered(tmp_path, change), size=64, cache_dir=tmp_path / "cache",
                           n_boot=300)
    assert probe.macro_auc > 0.97 and probe.ci_low > 0.9
    assert [s.source for s in probe.sources] == ["hospA", "hospB"]
    assert [s.images for s in probe.sources] == [80, 80]
    assert probe.label_mix_gap == pytest.approx(0.0)  # same label mix in both hospitals
    assert probe.verdict is None  # predictable, but the source says nothing about the label


def test_identical_sources_give_an_interval_covering_chance(tmp_path: Path) -> None:
    probe = probe_manifest(_altered(tmp_path, "none"), size=64, cache_dir=tmp_path / "cache",
                           n_boot=300)
    assert probe.ci_low < 0.5 < probe.ci_high and probe.chance == 0.5
    assert all(s.ci_low < 0.5 < s.ci_high for s in probe.sources)


def test_verdict_when_the_source_is_predictable_and_the_label_mixes_differ(
        tmp_path: Path, run_cli) -> None:
    manifest = _altered(tmp_path, "intensity", hosp_b="covid19")
    probe = probe_manifest(manifest, size=64, cache_dir=tmp_path / "cache", n_boot=300)
    assert probe.macro_auc > 0.97 and probe.label_mix_gap == pytest.approx(1.0)
    assert probe.verdict == VERDICT
    code, out, err = run_cli("data", "audit", str(manifest), "--probe", "--probe-size", "64",
                             "--cache-dir", str(tmp_path / "cache"), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["source_probe"]["verdict"] == VERDICT
    assert report["source_probe"]["macro_auc"] == pytest.approx(probe.macro_auc, abs=0.02)
    code, out, err = run_cli("data", "audit", str(manifest), "--probe", "--probe-size", "64",
                             "--cache-dir", str(tmp_path / "cache"))
    assert code == 0 and f"verdict: {VERDICT}" in out and "hospB: AUC" in out


def test_one_source_is_one_line(tmp_path: Path, run_cli) -> None:
    synthesize(tmp_path, per_class=4, size=32, seed=0, labels=LABELS)
    code, _, err = run_cli("data", "audit", str(tmp_path / "manifest.parquet"), "--probe",
                           "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and err.count("\n") == 1 and "needs 2 or more sources" in err
    assert isinstance(pd.read_parquet(tmp_path / "manifest.parquet"), pd.DataFrame)


def test_report_has_a_source_probe_section_for_a_two_source_sweep(tmp_path: Path,
                                                                  run_cli) -> None:
    from raybench.store import ResultStore
    from tests.helpers.resultdata import write_scenario2

    manifest = _altered(tmp_path / "data", "intensity", hosp_b="covid19")
    store = ResultStore(str(tmp_path / "runs"))
    write_scenario2(store)
    store.write_spec("s2", f"name: s2\ndata:\n  manifest: {manifest}\n"
                           f"  cache_dir: {tmp_path / 'cache'}\n")
    out = tmp_path / "report"
    code, _, err = run_cli("report", str(tmp_path / "runs"), "--sweep", "s2", "--out", str(out))
    assert code == 0, err
    md = (out / "report.md").read_text()
    section = md[md.index("## Source probe"):md.index("## Scenario")]
    assert "(64 px, decoded cache)" in section and f"**Verdict: {VERDICT}**" in section
    assert "| hospB | 80 |" in section and "chance 0.5" in section
