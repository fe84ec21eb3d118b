"""A driver SIGKILLed at a forced step of a sweep, then one ``--resume``: exit 0, no traceback
or ERROR line, every trial completed once with epochs 1..N, and studies that match the runs
table. The kill points (:mod:`raybench.killpoint`) land the kill at the same place each run."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.faults.sweepfaults import check_sweep, env_with, sweep_cmd, wait_for_actors_to_die

from raybench.killpoint import STEPS

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.parametrize("step", STEPS)
def test_one_resume_completes_after_a_kill_at(step: str, ray_address: str, tmp_path: Path) -> None:
    results, cache = tmp_path / "r", tmp_path / "cache"
    # A snapshot every second: the kill then finds Tune's state written, and a resume takes
    # the restore path (a sweep killed before its first snapshot is rebuilt instead).
    killed = subprocess.run(sweep_cmd(results, cache, ray_address), capture_output=True,
                            text=True, timeout=300,
                            env=env_with(RAYBENCH_TEST_KILL_AT=step, TUNE_GLOBAL_CHECKPOINT_S="1"))
    assert killed.returncode == -9, killed.stderr[-3000:]
    wait_for_actors_to_die()
    done = subprocess.run(sweep_cmd(results, cache, ray_address, "--resume"), capture_output=True,
                          text=True, timeout=300, env=env_with())
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Traceback" not in out and "ERROR" not in out, out[-4000:]
    assert "Could not fetch metrics" not in out, out[-4000:]
    # Tune's snapshot was restored, not rebuilt: the disagreements were reconciled, not avoided
    assert "resuming kill from" in out and "rebuilding" not in out, out[-4000:]
    check_sweep(results / "kill")
