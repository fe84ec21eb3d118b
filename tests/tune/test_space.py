"""Sweep construction without a cluster: cells, spaces, first point, schedulers, resources."""
from __future__ import annotations

import optuna
import pytest

from raybench.config import SearchSpace, load_spec
from raybench.errors import RaybenchError
from raybench.tune.space import PAPER_DEFAULTS, SPACES, first_point
from raybench.cluster import max_concurrent
from raybench.trial import cell_spec, cells
from raybench.tune.experiment import scheduler as _scheduler, tune_config as _tune_config


def _spec(*sets: str):
    return load_spec(None, list(sets))


def test_cells_cross_models_scenarios_seeds() -> None:
    spec = _spec("sweep.models=[cnnx, resnet18]", "sweep.scenarios=[paper-1, paper-3]",
                 "sweep.seeds=[0, 1]")
    names = [c.name for c in cells(spec)]
    assert len(names) == 8 and names[0] == "cnnx-paper-1-s0" and names[-1] == "resnet18-paper-3-s1"
    one = cell_spec(spec, cells(spec)[-1])
    assert (one.model.name, one.data.scenario, one.train.seed) == ("resnet18", "paper-3", 1)
    assert [c.name for c in cells(_spec("sweep.mode=optuna", "sweep.models=[cnnx, vgg16]"))] == [
        "cnnx-synthetic-s0", "vgg16-synthetic-s0"]


@pytest.mark.parametrize("model,has_stride", [("cnnx", True), ("resnet50", False)])
def test_conditional_space_and_paper_first_point(model: str, has_stride: bool) -> None:
    space = SearchSpace()
    define = SPACES.get("paper_neighbourhood")(space, model)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    point = first_point(space, model)
    study.enqueue_trial(point)
    first = study.ask()
    assert define(first) == {"trial_number": 0}
    assert first.params == point
    assert point["lr"] == PAPER_DEFAULTS["lr"] and point["batch_size"] == 15
    assert ("stride" in point) is has_stride
    for _ in range(20):
        trial = study.ask()
        define(trial)
        assert 1e-5 <= trial.params["lr"] <= 1e-2
        assert trial.params["batch_size"] in (8, 15, 16, 32, 64)
        assert ("stride" in trial.params) is has_stride
        if has_stride:
            assert trial.params["stride"] in (2, 3, 4)


def test_first_point_stays_inside_a_narrowed_space() -> None:
    point = first_point(SearchSpace(lr_min=1e-3, lr_max=1e-2, batch_sizes=(32,), options={"stride": (2,)}),
                        "cnnx")
    assert point == {"lr": 1e-3, "batch_size": 32, "stride": 2}


def test_optuna_sweep_uses_per_cell_asha_on_the_configured_metric(tmp_path) -> None:
    from raybench.tune.schedule import CellASHA
    from raybench.tune.search import CellSearcher
    from raybench.tune.experiment import plan_of

    spec = _spec("sweep.mode=optuna", "sweep.metric=val_macro_auc", "train.epochs=7",
                 "sweep.num_samples=5", "sweep.grace_period=2", f"results={tmp_path}")
    config = _tune_config(spec, CellSearcher(plan_of(spec)))
    assert isinstance(config.scheduler, CellASHA)
    one = config.scheduler._make()
    assert one._max_t == 7 and one._reduction_factor == 2 and one._metric == "val_macro_auc"
    rungs = [r[0] for r in one._brackets[0]._rungs]  # (milestone, recorded)
    assert min(rungs) == 2  # the grace period: no trial is stopped before epoch 2
    assert (config.metric, config.mode, config.num_samples) == ("val_macro_auc", "max", -1)
    assert config.max_concurrent_trials is None  # concurrency follows the cluster
    capped = CellSearcher(plan_of(_spec("scaling.max_concurrent_trials=3", "sweep.seeds=[0, 1, 2, 3]",
                                        f"results={tmp_path}")))
    assert [capped.suggest(str(i)) is None for i in range(4)] == [False] * 3 + [True]
    from raybench.tune.ledger import Forgetful

    plain = _scheduler(_spec("sweep.models=[cnnx]"))  # paper mode: no early stopping
    assert type(plain) is Forgetful and plain.sweep == "train"


@pytest.mark.parametrize("sets,resources,expected", [
    ([], {"CPU": 4}, 4),
    (["scaling.num_workers=2"], {"CPU": 8}, 2),          # 1 CPU for the trial + 2 workers
    (["scaling.use_gpu=true", "scaling.gpus_per_worker=0.25"], {"CPU": 16, "GPU": 1}, 4),
    (["scaling.max_concurrent_trials=1"], {"CPU": 16}, 1),
])
def test_max_concurrent_trials_from_resources(sets: list[str], resources: dict, expected: int) -> None:
    assert max_concurrent(_spec(*sets), resources) == expected


def test_trial_too_big_for_the_cluster() -> None:
    with pytest.raises(RaybenchError, match="one trial needs 5 CPUs but the cluster has 4 CPUs"):
        max_concurrent(_spec("scaling.num_workers=4"), {"CPU": 4})
    # A remote (autoscaling) cluster may add the GPU nodes: one trial at a time, no error.
    assert max_concurrent(_spec("scaling.use_gpu=true"), {"CPU": 8}, remote=True) == 1


def test_finalize_records_stopped_and_errored_trials(tmp_path) -> None:
    """ASHA-stopped and failed trials get a runs row (``error`` when the spec or data is at
    fault, else ``crashed``); completed ones keep theirs."""
    from types import SimpleNamespace

    from raybench.store import ResultStore
    from raybench.trial import TrialConfig
    from raybench.tune.outcome import finalize as _finalize

    spec = _spec("sweep.mode=optuna", f"results={tmp_path}", "name=fin", "train.epochs=5")
    store = ResultStore(str(tmp_path))
    store.write_table("fin", "runs", "cnnx-synthetic-s0-t000", [{
        "model": "cnnx", "scenario": "synthetic", "seed": 0, "status": "completed"}])
    cell = cells(spec)[0]

    def result(n: int, epoch: int, error=None):
        trial = TrialConfig(cell_spec(spec, cell), cell, f"cnnx-synthetic-s0-t00{n}",
                            {"lr": 1e-3 * (n + 1), "batch_size": 8, "stride": 2}, n)
        return SimpleNamespace(config=trial.to_ray(),
                               metrics={"raybench_trial": trial.trial_id, "epoch": epoch},
                               error=error)

    from raybench.errors import ConfigError

    wrapped = RuntimeError("ray::run_trial failed")  # as Ray wraps a trial's exception
    wrapped.cause = ConfigError("train.lr=-1 must be > 0")  # type: ignore[attr-defined]
    summary = _finalize(spec, store, [result(0, 5), result(1, 2), result(2, 1, RuntimeError("boom")),
                                      result(3, 0, wrapped)])
    assert [s["status"] for s in summary] == ["completed", "stopped", "crashed", "error"]
    assert summary[3]["error"] == "ConfigError: train.lr=-1 must be > 0"
    runs = store.read_table("fin", "runs").set_index("trial_id")
    assert runs.loc["cnnx-synthetic-s0-t001", "epochs_run"] == 2
    assert runs.loc["cnnx-synthetic-s0-t001", "lr"] == pytest.approx(2e-3)
    assert runs.loc["cnnx-synthetic-s0-t002", "error"] == "RuntimeError: boom"
    assert runs.loc["cnnx-synthetic-s0-t000", "status"] == "completed"
