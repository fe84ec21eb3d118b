"""`raybench demo`: the spec teaches (learning models, a planted shortcut) and the output says
where the report is and what to look at. The Ray run itself is in integration/test_sweep_ray.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from raybench.config import load_spec

DEMO = Path(__file__).resolve().parents[1] / "jobs" / "demo.yaml"


def test_demo_spec_plants_a_shortcut_in_part_of_the_data_and_uses_learning_models() -> None:
    spec = load_spec(DEMO)
    assert 0 < spec.data.synthetic.marker_leak < 1  # part of the set carries the marker
    # Models that collapse to one class when trained this briefly from scratch (DESIGN.md 8).
    assert not {"squeezenet", "googlenet", "alexnet"} & set(spec.sweep.models)
    assert spec.sweep.models and spec.cam.enabled and spec.cam.images
    assert {"paper-1", "paper-3"} <= set(spec.sweep.scenarios)


def test_demo_prints_the_report_path_and_three_things_to_look_at(
        run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import raybench
    import raybench.demo

    page = tmp_path / "runs" / "demo" / "report" / "report.html"
    calls = []

    def fake_run_demo(results, spec_path, num_cpus=None, overrides=()):
        calls.append((results, Path(spec_path), tuple(overrides)))
        return [{"trial_id": "cnnx-paper-1-s0", "status": "completed", "lr": 3e-4}], page

    monkeypatch.setattr(raybench.demo, "run_demo", fake_run_demo)
    code, out, err = run_cli("demo", "--results", str(tmp_path / "runs"))
    assert code == 0, err
    # The packaged spec (raybench/specs/demo.yaml), which jobs/demo.yaml links to.
    assert calls == [(str(tmp_path / "runs"), DEMO.resolve(), ())]
    assert DEMO.resolve() == Path(raybench.__file__).parent / "specs" / "demo.yaml"
    lines = out.rstrip("\n").splitlines()
    assert f"report:  {page}" in lines
    tail = lines[lines.index("In the report, look at:") + 1:]
    assert [line[:5] for line in tail] == ["  1. ", "  2. ", "  3. "]
    assert "Class activation maps" in tail[1] and "ROI-focus table" in tail[2]
