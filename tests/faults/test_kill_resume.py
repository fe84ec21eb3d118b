"""A driver SIGKILLed at each forced step of a sweep in turn, each resume killed at the next
step, then a last ``--resume``: every resume restores Tune's snapshot (never rebuilds), none
prints a traceback or an ERROR line, and the sweep ends whole: exit 0, every trial completed
once with epochs 1..N, and studies that match the runs table. The kill points
(:mod:`raybench.killpoint`) land each kill at the same place on every run.

One chain instead of one sweep and one resume per step: the same six kills and resumes in
seven driver runs instead of twelve, and every resume but the first starts from a sweep that
was itself resumed."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.faults.sweepfaults import check_sweep, env_with, sweep_cmd, wait_for_actors_to_die

from raybench.killpoint import STEPS

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _clean(out: str, step: str) -> None:
    assert "Traceback" not in out and "ERROR" not in out, (step, out[-4000:])
    assert "Could not fetch metrics" not in out, (step, out[-4000:])


def test_a_sweep_killed_at_every_step_in_turn_resumes_whole(ray_address: str,
                                                             tmp_path: Path) -> None:
    results, cache = tmp_path / "r", tmp_path / "cache"
    # A snapshot every second: each kill then finds Tune's state written, and a resume takes
    # the restore path (a sweep killed before its first snapshot is rebuilt instead).
    for n, step in enumerate(STEPS):
        extra = ("--resume",) if n else ()
        killed = subprocess.run(sweep_cmd(results, cache, ray_address, *extra),
                                capture_output=True, text=True, timeout=300,
                                env=env_with(RAYBENCH_TEST_KILL_AT=step,
                                             TUNE_GLOBAL_CHECKPOINT_S="1"))
        out = killed.stdout + killed.stderr
        assert killed.returncode == -9, (step, out[-3000:])  # the step was reached
        if n:  # Tune's snapshot was restored, not rebuilt
            assert "resuming kill from" in out and "rebuilding" not in out, (step, out[-3000:])
            _clean(out, step)
        wait_for_actors_to_die()
    done = subprocess.run(sweep_cmd(results, cache, ray_address, "--resume"), capture_output=True,
                          text=True, timeout=300, env=env_with())
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    _clean(out, "the last resume")
    assert "resuming kill from" in out and "rebuilding" not in out, out[-4000:]
    check_sweep(results / "kill")
