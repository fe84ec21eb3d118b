"""The identity of a trial, below both ``engine`` and ``tune`` (no Ray or Tune imports).

A *cell* is one model x scenario x seed (x roi when ``sweep.rois`` is set); each cell has its
own Optuna study and its own ASHA rungs. A trial's identity is a frozen :class:`TrialConfig`,
built once in :mod:`raybench.tune`, converted to a plain dict once at the Ray boundary
(:meth:`TrialConfig.to_ray`) and rebuilt once on the worker (:meth:`TrialConfig.from_ray`).
The helpers that name a run's scenario and its searched values live here too: the runs table,
the searcher and the worker all use them.
"""
from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from raybench import schema as S
from raybench.config import Roi, Spec, from_dict, to_dict
from raybench.models import names as model_names
from raybench.models.names import tunable_options

#: Searched training keys and the spec section each one replaces a field of; the other
#: searched keys are the model's tunable options (``model.options``).
PARAM_SECTIONS: dict[str, str] = {S.LR: "train", S.BATCH_SIZE: "train"}
#: The trial config's GPU share per worker (set by the driver; Tune's resource request reads it).
GPU_SHARE = S.GPU_SHARE


def scenario_name(spec: Spec) -> str:
    """The scenario a run reports: the registered scenario, else ``synthetic`` or the manifest."""
    if spec.data.scenario:
        return spec.data.scenario
    return Path(spec.data.manifest).name.split(".")[0] if spec.data.manifest else "synthetic"


def image_size(spec: Spec) -> int:
    """The input size: the spec's, or the model's default."""
    if spec.model.image_size:
        return spec.model.image_size
    from raybench.models import get_model_spec  # fills the model registry (imports torch)

    return get_model_spec(spec.model.name).input_size


def model_options(spec: Spec) -> dict[str, int]:
    """The trial model's declared options with their effective values (runs-table columns)."""
    return model_names.check_options(
        spec.model.name, model_names.applicable(spec.model.name, spec.model.options),
        image_size(spec))


def searched_values(spec: Spec) -> dict[str, Any]:
    """What a sweep may search, as this spec sets it: lr, batch size, the tunable options."""
    tunable = {o.name for o in tunable_options(spec.model.name)}
    options = {k: v for k, v in model_options(spec).items() if k in tunable}
    return {S.LR: spec.train.lr, S.BATCH_SIZE: spec.train.batch_size, **options}


@dataclass(frozen=True)
class Cell:
    """One model x scenario x seed (x roi) of the study."""

    model: str
    scenario: str
    seed: int
    roi: Optional[Roi] = None

    @property
    def name(self) -> str:
        """``<model>-<scenario>-s<seed>`` plus ``-<roi>`` when the sweep lists rois."""
        base = f"{self.model}-{self.scenario}-s{self.seed}"
        return f"{base}-{self.roi}" if self.roi else base

    @property
    def sampler_seed(self) -> int:
        """A seed of this cell's sampler: differs between cells, stable across runs."""
        return zlib.crc32(self.name.encode()) & 0x7FFFFFFF


def cells(spec: Spec) -> list[Cell]:
    """All model x scenario x seed (x roi) combinations, in spec order."""
    sw = spec.sweep
    scenarios = sw.scenarios or (scenario_name(spec),)
    rois: tuple[Optional[Roi], ...] = sw.rois or (None,)
    return [Cell(m, s, seed, roi) for m in sw.models for s in scenarios for seed in sw.seeds
            for roi in rois]


def cell_spec(spec: Spec, cell: Cell) -> Spec:
    """The spec of one cell: its model, seed, scenario (when listed) and roi (when listed).

    The sweep's cell lists shrink to this cell's own values: every Tune trial carries its
    cell's spec in its config, and Tune keeps (and checkpoints) every trial's config, so a
    config holding all 2,000 seeds of a 2,000-cell grid made the driver's memory and each
    experiment checkpoint grow with cells x trials.
    """
    data, sw = spec.data, spec.sweep
    if sw.scenarios:
        data = dataclasses.replace(data, scenario=cell.scenario)
    if cell.roi:
        data = dataclasses.replace(data, roi=cell.roi)
    sweep = dataclasses.replace(
        sw, models=(cell.model,), seeds=(cell.seed,),
        scenarios=(cell.scenario,) if sw.scenarios else (), rois=(cell.roi,) if cell.roi else ())
    return dataclasses.replace(spec, model=dataclasses.replace(spec.model, name=cell.model),
                               train=dataclasses.replace(spec.train, seed=cell.seed), data=data,
                               sweep=sweep)


def apply_params(spec: Spec, params: Mapping[str, Any]) -> Spec:
    """``spec`` with searched ``params`` applied by ``dataclasses.replace``.

    Raises:
        ValueError: A key that is not a searchable parameter (a misspelled tuned key).
    """
    tunable = {o.name for o in tunable_options(spec.model.name)}
    for key, value in params.items():
        section = PARAM_SECTIONS.get(key)
        if section is not None:
            part = dataclasses.replace(getattr(spec, section), **{key: value})
            spec = dataclasses.replace(spec, **{section: part})
        elif key in tunable:
            options = {**spec.model.options, key: value}
            spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, options=options))
        else:
            valid = sorted(PARAM_SECTIONS) + sorted(tunable)
            raise ValueError(f"unknown searched parameter {key!r} for {spec.model.name}; "
                             f"valid: {valid}")
    return spec


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial is: the base spec of its cell, the cell, its id, searched params.

    Attributes:
        spec: The cell's spec before the searched params (see :attr:`trial_spec`).
        cell: The cell the trial belongs to.
        trial_id: ``<cell>`` in paper mode, ``<cell>-t<NNN>`` in optuna mode.
        params: Searched hyperparameters (keys of :data:`PARAM_SECTIONS`).
        number: The trial's number in its cell's Optuna study.
        gpu_share: GPU share per worker the driver gave it (None: the spec's own).
    """

    spec: Spec
    cell: Cell
    trial_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    number: int = 0
    gpu_share: Optional[float] = None

    @property
    def trial_spec(self) -> Spec:
        """The spec this trial trains: the cell's spec with the searched params applied."""
        return apply_params(self.spec, self.params)

    def run_row(self, status: str, error: Optional[str] = None,
                epochs_run: int = 0) -> dict[str, Any]:
        """The runs-table row of a trial that ended without completing (stopped, failed)."""
        tspec = self.trial_spec
        return {S.MODEL: tspec.model.name, S.SCENARIO: self.cell.scenario,
                S.SEED: tspec.train.seed, **searched_values(tspec), S.EPOCHS: tspec.train.epochs,
                S.EPOCHS_RUN: epochs_run, S.STATUS: status, S.ERROR: error, S.ROI: tspec.data.roi}

    def to_ray(self) -> dict[str, Any]:
        """The plain dict that crosses into Ray (Tune's trial config)."""
        return {"spec": to_dict(self.spec), "cell": dataclasses.asdict(self.cell),
                S.TRIAL_ID: self.trial_id, "params": dict(self.params), "number": self.number,
                GPU_SHARE: self.gpu_share}

    @classmethod
    def from_ray(cls, config: Mapping[str, Any]) -> "TrialConfig":
        """Rebuilds the trial from :meth:`to_ray`'s dict (on the worker's first line)."""
        spec = from_dict(Spec, config["spec"], where="trial config")
        trial = cls(spec, Cell(**config["cell"]), config[S.TRIAL_ID], dict(config["params"]),
                    int(config.get("number", 0)), config.get(GPU_SHARE))
        trial.trial_spec  # noqa: B018  an unknown searched key fails here, on arrival
        return trial


def cell_name_of(config: Mapping[str, Any]) -> str:
    """The cell name of a Tune trial config (the key of per-cell schedulers)."""
    return Cell(**config["cell"]).name
