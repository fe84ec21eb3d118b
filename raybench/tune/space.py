"""Search spaces: Optuna define-by-run functions with the paper's defaults evaluated first.

The space is conditional: besides lr and batch size it holds each *tunable option* the cell's
model declares in its model table entry (:mod:`raybench.models.table`, e.g. CNN-X's
pooling stride); other models have none. Keys are flat (``lr``, ``batch_size``, the option
names), one namespace per cell study.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from raybench import schema as S
from raybench.config import SearchSpace
from raybench.models.names import ModelOption, tunable_options
from raybench.registry import Registry

#: The paper's hyperparameters (Adam, lr 3e-4, mini-batch 15); model options default to the
#: values their models declare (CNN-X: stride 3).
PAPER_DEFAULTS: dict[str, Any] = {S.LR: 3e-4, S.BATCH_SIZE: 15}

SPACES: Registry[Callable[[SearchSpace, str], Callable[[Any], Any]]] = Registry("search space")


def option_choices(space: SearchSpace, option: ModelOption) -> tuple[int, ...]:
    """The values a sweep tries for ``option``: ``sweep.space.options`` or the model's own."""
    return tuple(space.options.get(option.name, option.search))


@dataclass(frozen=True)
class PaperNeighbourhood:
    """Define-by-run space around the paper's defaults (a class: Tune pickles the searcher)."""

    space: SearchSpace
    model: str

    def __call__(self, trial: Any) -> dict[str, Any]:
        trial.suggest_float(S.LR, self.space.lr_min, self.space.lr_max, log=True)
        trial.suggest_categorical(S.BATCH_SIZE, list(self.space.batch_sizes))
        for option in tunable_options(self.model):
            trial.suggest_categorical(option.name, list(option_choices(self.space, option)))
        # Optuna numbers trials 0, 1, 2...: a deterministic name that survives a restore.
        return {"trial_number": trial.number}


SPACES.register("paper_neighbourhood", PaperNeighbourhood)


def first_point(space: SearchSpace, model: str) -> dict[str, Any]:
    """The paper's defaults as the first trial, restricted to what the space contains."""
    point = dict(PAPER_DEFAULTS)
    if point[S.BATCH_SIZE] not in space.batch_sizes:
        point[S.BATCH_SIZE] = space.batch_sizes[0]
    point[S.LR] = min(max(point[S.LR], space.lr_min), space.lr_max)
    for option in tunable_options(model):
        choices = option_choices(space, option)
        point[option.name] = option.default if option.default in choices else choices[0]
    return point
