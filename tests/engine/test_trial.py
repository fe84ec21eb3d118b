"""What a trial's process imports when it starts (``raybench.engine.trial``, Tune's trainable):
every trial of a sweep on a cluster pays for it in a fresh process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_trial_process_does_not_import_scipy() -> None:
    """SciPy serves the report's statistics, not training (its import time:
    ``benchmarks/RESULTS.md``); ``raybench.stats`` imports it in the functions that use it."""
    code = ("import sys, raybench.engine.trial\n"
            "print(sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
