"""One Tune trial = one training run, in-process or on a ``TorchTrainer`` worker group.

The documented Ray >= 2.43 pattern: a Tune *function* trainable that builds a ``TorchTrainer``
and forwards its metrics with ``TuneReportCallback`` (``Tuner(trainer)`` is deprecated). A
single-worker trial can skip the worker group and run the loop in the trial's own process,
which saves the worker-group start-up (about 10 s per trial on 2 CPUs).

The trial's identity arrives as the plain dict of :meth:`raybench.trial.TrialConfig.to_ray`
and is rebuilt once, here, with :meth:`~raybench.trial.TrialConfig.from_ray`.
"""
from __future__ import annotations

import logging
from typing import Any

from raybench.engine.loop import resolve_device
from raybench.engine.worker import WorkerContext, run_worker, train_fn_per_worker
from raybench.store import ResultStore
from raybench.trial import TrialConfig

log = logging.getLogger(__name__)


def _run_in_process(trial: TrialConfig) -> None:
    from ray import tune

    run_worker(trial, WorkerContext(
        rank=0, world=1, device=resolve_device(trial.trial_spec.train.device),
        report=tune.report, checkpoint=None, checkpoint_cls=tune.Checkpoint,
        prepare_model=lambda model: model, own_state=True))


def _run_trainer(trial: TrialConfig, config: dict[str, Any]) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    scaling = trial.spec.scaling
    store = ResultStore(trial.spec.results).location(trial.spec.name, "_train")
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config=config,  # the same plain dict; each worker rebuilds it once
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers,
                                               use_gpu=scaling.use_gpu,
                                               resources_per_worker=scaling.worker_resources),
        run_config=ray.train.RunConfig(
            name=trial.trial_id, storage_path=store.path, storage_filesystem=store.fs,
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]  # a Train callback
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures)),
    )
    trainer.fit()


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: trains the trial that ``config`` (a ``TrialConfig`` dict) is."""
    trial = TrialConfig.from_ray(config)
    if trial.spec.scaling.single_in_process:
        _run_in_process(trial)
    else:
        _run_trainer(trial, config)
