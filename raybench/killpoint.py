"""Test-only fault hooks: SIGKILL the sweep driver at a named step, so that a fault test lands
its kill at the same place on every run instead of racing a timer; and a trial that crashes
every time it starts (``RAYBENCH_TEST_CRASH_TRIAL=<trial id>``, :func:`crash_trial`).

``RAYBENCH_TEST_KILL_AT=<step>`` names the step; unset (always, outside the fault tests) every
:func:`kill_at` is a no-op that reads one environment variable. The driver records its pid in
``RAYBENCH_TEST_DRIVER_PID`` when it starts (:func:`mark_driver`); a step reached in a trial's
process kills that pid and then the trial's own process, as a dead driver's trials die with it.
Tune copies both variables into every trial's ``runtime_env``
(:func:`raybench.cluster.stop_ray_copying_credentials`).
"""
from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

KILL_ENV = "RAYBENCH_TEST_KILL_AT"
DRIVER_ENV = "RAYBENCH_TEST_DRIVER_PID"
CRASH_ENV = "RAYBENCH_TEST_CRASH_TRIAL"

#: The named steps: in a trial, after its first epoch file was written (``epoch_written``),
#: after its third epoch's report (``mid_trial``), after its last epoch, before its results
#: (``last_epoch``) and after its run row was written, before it returns (``trial_written``);
#: in the driver, right after a study trial was told complete (``trial_told``) and before a
#: new trial is asked once one has ended (``next_trial``).
STEPS = ("epoch_written", "mid_trial", "last_epoch", "trial_written", "trial_told",
         "next_trial")


def mark_driver() -> None:
    """Records this process as the driver that trial-side kill points kill (tests only)."""
    if os.environ.get(KILL_ENV):
        os.environ[DRIVER_ENV] = str(os.getpid())


def crash_trial(trial_id: str) -> None:
    """Raises (a crash, not a spec or data error) when ``RAYBENCH_TEST_CRASH_TRIAL`` names
    ``trial_id``: a trial that fails the same way on every attempt."""
    if os.environ.get(CRASH_ENV) == trial_id:
        raise RuntimeError(f"test crash of trial {trial_id}")


def kill_at(step: str) -> None:
    """SIGKILLs the driver (and this process) when ``RAYBENCH_TEST_KILL_AT`` names ``step``."""
    if os.environ.get(KILL_ENV) != step:
        return
    driver = int(os.environ.get(DRIVER_ENV) or os.getpid())
    log.warning("test kill point %s: killing the driver (pid %d)", step, driver)
    if driver != os.getpid():
        try:
            os.kill(driver, signal.SIGKILL)
        except ProcessLookupError:  # another trial's kill point got there first
            pass
    os.kill(os.getpid(), signal.SIGKILL)
