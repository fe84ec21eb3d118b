"""The driver hands its heap's free pages back every ``TRIM_EVERY`` ended trials."""
from __future__ import annotations

import pytest

from raybench.tune import ledger


class _Controller:
    """What ``FIFOScheduler.choose_trial_to_run`` reads of Tune's controller: no trials."""

    def get_trials(self) -> list:
        return []


def test_the_heap_is_trimmed_every_trim_every_ended_trials(monkeypatch: pytest.MonkeyPatch):
    every = ledger.TRIM_EVERY
    ended = [every - 50, 49, 1, 0, every, 2 * every - 1, 3, every - 4]  # per scheduling call
    calls = iter(ended)
    trims: list[int] = []
    monkeypatch.setattr(ledger, "forget", lambda controller, record: next(calls))
    monkeypatch.setattr(ledger, "release_free_memory", lambda: trims.append(step) or True)
    scheduler = ledger.Forgetful("trim")
    for step in range(len(ended)):
        assert scheduler.choose_trial_to_run(_Controller()) is None
    # running totals since the last trim: 150, 199, 200 (trim), 0, 200 (trim), 399 (trim),
    # 3, 199
    assert trims == [2, 4, 5]
