"""Early stopping per cell: one ASHA state per model x scenario x seed (x roi).

Stopping a vgg16 trial because a cnnx trial was better at epoch 3 compares unlike things;
:class:`CellASHA` keeps an ``AsyncHyperBandScheduler`` per cell (keyed by the trial config's
cell) and sends each trial's results to its own cell's rungs only.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from ray.tune.schedulers import AsyncHyperBandScheduler

from raybench.trial import cell_name_of
from raybench.tune.ledger import Forgetful


class CellASHA(Forgetful):
    """A ``TrialScheduler`` that delegates to one ASHA scheduler per cell.

    Ended trials are recorded and forgotten as in :class:`~raybench.tune.ledger.Forgetful`.

    Args:
        make: Builds a fresh ASHA scheduler (metric and mode set) for a new cell.
        sweep: The sweep's name.
        record: What to record of an ended trial (see ``Forgetful``; by default its status).
    """

    def __init__(self, make: Callable[[], AsyncHyperBandScheduler], sweep: str = "",
                 record: Optional[Callable[[Any], Any]] = None) -> None:
        super().__init__(sweep, record)
        self._make = make
        self.cells: dict[str, AsyncHyperBandScheduler] = {}

    def set_search_properties(self, metric: Optional[str], mode: Optional[str],
                              **spec: Any) -> bool:
        return True  # each cell's ASHA is built with the sweep's metric and mode

    def _of(self, trial: Any) -> AsyncHyperBandScheduler:
        name = cell_name_of(trial.config)
        if name not in self.cells:
            self.cells[name] = self._make()
        return self.cells[name]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        scheduler = self._of(trial)
        if trial.trial_id in scheduler._trial_info:
            scheduler.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        scheduler = self._of(trial)
        if trial.trial_id in scheduler._trial_info:
            scheduler.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        stopped = sum(s._num_stopped for s in self.cells.values())
        return f"per-cell ASHA: {len(self.cells)} cell(s), {stopped} trial(s) stopped"


__all__ = ["CellASHA"]
