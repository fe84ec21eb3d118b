"""Every spec in jobs/ loads, validates and names registered models and scenarios."""
from __future__ import annotations

from pathlib import Path

import pytest

from raybench.config import load_spec
from raybench.catalog.scenarios import get_scenario
from raybench.models import MODELS
from raybench.models.names import model_problem
from raybench.trial import cells

JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs").glob("*.yaml"))


def test_the_expected_jobs_exist() -> None:
    names = {p.name for p in JOBS}
    assert {"smoke.yaml", "demo.yaml", "paper-scenario1.yaml", "paper-scenario2.yaml",
            "paper-scenario3.yaml", "optuna-sweep.yaml"} <= names


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_job_is_valid(path: Path) -> None:
    spec = load_spec(path)
    for scenario in spec.sweep.scenarios + ((spec.data.scenario,) if spec.data.scenario else ()):
        assert get_scenario(scenario).classes
    assert all(model_problem(m) is None for m in spec.sweep.models)  # table or library names
    assert cells(spec)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_paper_jobs_cover_all_13_models_with_paper_hyperparameters(n: int) -> None:
    spec = load_spec(JOBS[0].parent / f"paper-scenario{n}.yaml")
    assert sorted(spec.sweep.models) == sorted(MODELS.keys())
    assert (spec.train.lr, spec.train.batch_size, spec.train.epochs) == (3e-4, 15, 20)
    assert spec.sweep.mode == "paper" and spec.scaling.use_gpu
    assert len(cells(spec)) == 13 * len(spec.sweep.seeds)
    assert spec.data.scenario == f"paper-{n}"
