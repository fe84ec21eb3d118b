"""A driver SIGKILLed at a forced step of a sweep, then one ``--resume``: exit 0, no traceback
or ERROR line, every trial completed once with epochs 1..N, and studies that match the runs
table. The kill points (:mod:`raybench.killpoint`) land the kill at the same place each run.

The six kill points are six independent sweeps (one results folder each): they run side by
side on the session's Ray, the killed drivers together and then the resumes together, which
takes about a third of the time of one after the other on two cores.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.faults.sweepfaults import check_sweep, env_with, sweep_cmd, wait_for_actors_to_die

from raybench.killpoint import STEPS

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _run_all(cmds: dict[str, list[str]], envs: dict[str, dict[str, str]],
             timeout_s: float = 400) -> dict[str, tuple[int, str]]:
    """Starts every command at once; returns each one's exit status and stdout + stderr."""
    procs = {step: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=envs[step]) for step, cmd in cmds.items()}
    done = {}
    try:
        for step, proc in procs.items():
            out, err = proc.communicate(timeout=timeout_s)
            done[step] = (proc.returncode, out + err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return done


def test_one_resume_completes_after_a_kill_at_each_step(ray_address: str, tmp_path: Path) -> None:
    dirs = {step: (tmp_path / step / "r", tmp_path / step / "cache") for step in STEPS}
    # A snapshot every second: the kill then finds Tune's state written, and a resume takes
    # the restore path (a sweep killed before its first snapshot is rebuilt instead).
    killed = _run_all({s: sweep_cmd(*dirs[s], ray_address) for s in STEPS},
                      {s: env_with(RAYBENCH_TEST_KILL_AT=s, TUNE_GLOBAL_CHECKPOINT_S="1")
                       for s in STEPS})
    for step, (code, out) in killed.items():
        assert code == -9, f"{step}: {out[-3000:]}"
    wait_for_actors_to_die()
    resumed = _run_all({s: sweep_cmd(*dirs[s], ray_address, "--resume") for s in STEPS},
                       {s: env_with() for s in STEPS})
    for step, (code, out) in resumed.items():
        assert code == 0, f"{step}: {out[-4000:]}"
        assert "Traceback" not in out and "ERROR" not in out, f"{step}: {out[-4000:]}"
        assert "Could not fetch metrics" not in out, f"{step}: {out[-4000:]}"
        # Tune's snapshot was restored, not rebuilt: the disagreements were reconciled
        assert "resuming kill from" in out and "rebuilding" not in out, f"{step}: {out[-4000:]}"
        check_sweep(dirs[step][0] / "kill")
