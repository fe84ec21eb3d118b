"""Tune's log lines as raybench rewrites them (``raybench.cluster.quiet_tune``'s filters): a
failed experiment-state snapshot is one warning line, not an ERROR with a traceback."""
from __future__ import annotations

import logging

import pytest

from raybench.cluster import TUNE_ERRORS_ONE_LINE, TUNE_LINES_DROPPED, DropLines, OneLineSyncError


@pytest.fixture
def tune_log():
    """A logger with the filters ``quiet_tune`` puts on ``ray.tune.tune`` (Ray's own logger
    is left alone: other tests' Tune runs must not depend on this one)."""
    log = logging.getLogger("raybench-test.tune.tune")
    filters = [OneLineSyncError(start, then) for name, start, then in TUNE_ERRORS_ONE_LINE
               if name == "ray.tune.tune"]
    filters += [DropLines(start) for name, start in TUNE_LINES_DROPPED if name == "ray.tune.tune"]
    for f in filters:
        log.addFilter(f)
    yield log
    for f in filters:
        log.removeFilter(f)


def test_tunes_failed_final_snapshot_is_one_warning_and_its_trial_list_is_dropped(
        tune_log: logging.Logger, caplog) -> None:
    caplog.set_level(logging.INFO, logger=tune_log.name)
    try:
        raise OSError("cannot write s3://b/p/_tune: endpoint http://127.0.0.1:9 is unreachable\n"
                      "second line")
    except OSError:  # as tune.run logs it (Ray 2.60.0)
        tune_log.error("Experiment state snapshotting failed:", exc_info=True, stack_info=True)
    tune_log.error("Trials did not complete: %s", ["run_trial_56f1dcf3"])
    tune_log.error("Experiment state snapshotting failed:")  # no exception: left as it is
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Experiment state snapshotting failed (OSError: cannot write s3://b/p/_tune: "
                    "endpoint http://127.0.0.1:9 is unreachable); --resume starts from the last "
                    "snapshot saved"),
        ("ERROR", "Experiment state snapshotting failed:")]
    assert "Traceback" not in caplog.text and "Stack (most recent call last)" not in caplog.text
