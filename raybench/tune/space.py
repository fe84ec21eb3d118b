"""Search spaces: Optuna define-by-run functions with the paper's defaults evaluated first.

The space is conditional: the CNN-X pooling stride exists only when the model is ``cnnx``.
Keys are flat (``lr``, ``batch_size``, ``cnnx_stride``), as ``OptunaSearch`` requires for
``points_to_evaluate``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from raybench.config import SearchSpace
from raybench.registry import Registry

#: The paper's hyperparameters (Adam, lr 3e-4, mini-batch 15, CNN-X pooling stride 3).
PAPER_DEFAULTS: dict[str, Any] = {"lr": 3e-4, "batch_size": 15, "cnnx_stride": 3}
PARAM_KEYS: tuple[str, ...] = ("lr", "batch_size", "cnnx_stride")

SPACES: Registry[Callable[[SearchSpace, str], Callable[[Any], Any]]] = Registry("search space")


@dataclass(frozen=True)
class PaperNeighbourhood:
    """Define-by-run space around the paper's defaults (a class: Tune pickles the searcher)."""

    space: SearchSpace
    model: str

    def __call__(self, trial: Any) -> dict[str, Any]:
        trial.suggest_float("lr", self.space.lr_min, self.space.lr_max, log=True)
        trial.suggest_categorical("batch_size", list(self.space.batch_sizes))
        if self.model == "cnnx":
            trial.suggest_categorical("cnnx_stride", list(self.space.cnnx_strides))
        # Optuna numbers trials 0, 1, 2...: a deterministic name that survives a restore.
        return {"trial_number": trial.number}


SPACES.register("paper_neighbourhood", PaperNeighbourhood)


def first_point(space: SearchSpace, model: str) -> dict[str, Any]:
    """The paper's defaults as the first trial, restricted to what the space contains."""
    point = {"lr": PAPER_DEFAULTS["lr"], "batch_size": PAPER_DEFAULTS["batch_size"]}
    if model == "cnnx":
        point["cnnx_stride"] = PAPER_DEFAULTS["cnnx_stride"]
    if point["batch_size"] not in space.batch_sizes:
        point["batch_size"] = space.batch_sizes[0]
    if model == "cnnx" and point["cnnx_stride"] not in space.cnnx_strides:
        point["cnnx_stride"] = space.cnnx_strides[0]
    point["lr"] = min(max(point["lr"], space.lr_min), space.lr_max)
    return point
