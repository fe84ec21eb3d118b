"""The ``analysis`` bench section: the report study's layout, its targets and its lines."""
from __future__ import annotations

from raybench import schema as S
from raybench.bench import analysis, check_targets, format_report
from raybench.models import names


def test_report_study_cycles_models_then_seeds_then_scenarios() -> None:
    seen = set()
    for i in range(analysis.REPORT_MODELS * analysis.SEEDS * len(analysis.REPORT_SCENARIOS)):
        run = analysis._report_trial(i, 3)["runs"].to_pylist()[0]
        seen.add((run[S.MODEL], run[S.SEED], run[S.SCENARIO]))
        assert run[S.TRIAL_ID] == f"t{i:05d}"
    assert len(seen) == 390 == 13 * 10 * 3  # every cell once
    assert {m for m, _, _ in seen} == set(names.MODEL_NAMES)


def test_analysis_targets_are_checked_only_when_it_ran() -> None:
    report = {"machine": {"cpu": "x", "cores": 2, "gpu": None, "loadavg": [1.0, 1, 1],
                          "loadavg_end": [2.0, 1, 1], "torch": "t", "ray": "r"}}
    assert "significance_s" not in check_targets(report)
    sig = {"wall_s": 12.0, "cpu_s": 9.5, "load_before": 3.0, "load_after": 4.0}
    rep = {"wall_s": 50.0, "cpu_s": 45.0, "load_before": 3.0, "load_after": 4.0}
    report["analysis"] = {"significance_s": 12.0, "report_s": 50.0, "films": 2000,
                          "report_trials": 390, "significance": sig, "report": rep}
    report.update(significance_s=12.0, report_s=50.0)
    targets = check_targets(report)
    assert targets["significance_s"] == {"target": "<= 10", "value": 12.0, "met": False}
    assert targets["report_s"]["met"] is True
    text = format_report({**report, "targets": targets})
    assert "significance_s                       12  (5 models x 10 seeds, 2000 films; cpu 9.5 s" \
        in text
