"""What a trial's process and a sweep's driver import: every trial of a sweep on a cluster
pays for its imports in a fresh process, and the driver of every sweep pays for its own."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> list[str]:
    """The top-level packages imported by running ``code`` in a fresh interpreter."""
    code += "\nimport sys\nprint(sorted({m.split('.')[0] for m in sys.modules}))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def test_a_trial_process_does_not_import_scipy() -> None:
    """SciPy serves the report's statistics, not training (its import time:
    ``benchmarks/RESULTS.md``); ``raybench.stats`` imports it in the functions that use it."""
    modules = _modules_after("import raybench.engine.trial, raybench.engine.worker")
    assert "torch" in modules  # the trial's training modules were imported
    assert "scipy" not in modules


def test_a_sweeps_driver_does_not_import_torch(tmp_path: Path) -> None:
    """The driver hands Tune the trainable and sizes the splits; it trains nothing, so torch
    (1.2 s of CPU per driver: ``benchmarks/RESULTS.md``) stays in the trials' processes."""
    code = (f"from raybench.config import load_spec\n"
            f"from raybench.data.dataset import split_sizes\n"
            f"from raybench.tune.experiment import trainable\n"
            f"spec = load_spec({str(REPO / 'jobs' / 'smoke.yaml')!r}, "
            f"['data.cache_dir={tmp_path / 'cache'}'])\n"
            f"trainable(spec)\n"
            f"assert sum(split_sizes(spec.data).values()) == 48, split_sizes(spec.data)\n")
    modules = _modules_after(code)
    assert "ray" in modules  # Tune's trainable was built
    assert "torch" not in modules
