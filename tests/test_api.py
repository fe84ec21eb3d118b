"""The notebook API: ``import raybench`` is cheap, names are curated, reprs say what was loaded."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import raybench
from raybench.errors import RaybenchError
from tests.helpers.resultdata import write_scenario2

REPO = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=_env())


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def test_public_names_resolve_to_their_modules() -> None:
    from raybench.camset import CamSet
    from raybench.cam.methods import compute_cams
    from raybench.config import load_spec
    from raybench.report import write_report
    from raybench.results import Results, load

    assert raybench.__all__ == ["CamSet", "Results", "compute_cams", "load", "load_spec",
                                "write_report"]
    assert (raybench.load, raybench.Results, raybench.write_report, raybench.compute_cams,
            raybench.CamSet, raybench.load_spec) == (load, Results, write_report, compute_cams,
                                                     CamSet, load_spec)
    assert set(raybench.__all__) <= set(dir(raybench))
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        raybench.fit  # noqa: B018


def test_import_raybench_and_reading_results_import_neither_torch_nor_ray() -> None:
    proc = _python(
        "import sys, raybench\n"
        "raybench.load; raybench.Results; raybench.CamSet; raybench.load_spec\n"
        "from raybench.cam import CamSet\n"
        "import raybench.cam.render\n"
        "print(sorted(m for m in ('torch', 'ray', 'torchvision', 'timm') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_compute_cams_is_imported_on_first_use() -> None:
    proc = _python("import sys, raybench\nbefore = 'torch' in sys.modules\n"
                   "f = raybench.compute_cams\nprint(before, 'torch' in sys.modules, f.__module__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "raybench.cam.methods"]


@pytest.mark.slow  # a whole report in a fresh interpreter
def test_report_leaves_the_matplotlib_backend_alone(tmp_path: Path) -> None:
    # A notebook user's backend (svg stands in for inline/Qt): importing raybench.report and
    # writing a whole report must not switch it, nor open pyplot figures.
    code = (
        "import sys\n"
        "import matplotlib; matplotlib.use('svg')\n"
        "import raybench.report\n"
        "from tests.helpers.resultdata import write_scenario2\n"
        "from raybench.store import ResultStore\n"
        f"write_scenario2(ResultStore({str(tmp_path / 'runs')!r}))\n"
        f"raybench.report.write_report({str(tmp_path / 'runs')!r}, 's2', {str(tmp_path / 'o')!r})\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["svg", "False"]
    assert (tmp_path / "o" / "report.html").stat().st_size > 10_000


def test_results_repr_names_sweeps_trials_and_tables(tmp_path: Path) -> None:
    from raybench.store import ResultStore

    write_scenario2(ResultStore(str(tmp_path)))
    res = raybench.load(str(tmp_path), "s2")
    assert repr(res) == (f"Results(root={str(tmp_path)!r}, sweeps=['s2'], trials=4 (4 completed), "
                         "tables: runs 4 rows; not read yet: metrics, epochs, predictions)")
    res.metrics  # noqa: B018
    rows = len(pd.read_parquet(tmp_path / "s2" / "metrics"))  # read without raybench
    assert rows == 96  # 4 trials x (4 classes x 5 metrics + 4 overall)
    assert f"tables: runs 4 rows, metrics {rows} rows; not read yet: epochs, predictions)" \
        in repr(res)


def test_results_public_helpers(tmp_path: Path) -> None:
    from raybench.store import ResultStore

    store = ResultStore(str(tmp_path))
    write_scenario2(store)
    res = raybench.load(str(tmp_path), "s2")
    done = res.completed_runs("scenario2")
    assert sorted(done["trial_id"]) == ["cnnx-seed0", "cnnx-seed1", "resnet18-seed0",
                                        "resnet18-seed1"]
    assert res.cam_trials() == []
    with pytest.raises(RaybenchError, match="found \\['scenario2'\\]"):
        res.completed_runs("paper-1")


def test_results_api_names_stay_functions_once_every_submodule_is_imported() -> None:
    import importlib

    import raybench.results as r

    for sub in ("choices", "loading", "tables", "timeline", "output"):
        importlib.import_module(f"raybench.results.{sub}")
    assert (r.load.__module__, r.render.__module__, r.query.__module__) == (
        "raybench.results.loading", "raybench.results.output", "raybench.results.output")
    assert set(r.__all__) <= set(dir(r)) and callable(r.load) and callable(r.render)
