"""One Tune trial = one training run, in-process or on a ``TorchTrainer`` worker group.

The documented Ray >= 2.43 pattern: a Tune *function* trainable that builds a ``TorchTrainer``
and forwards its metrics with ``TuneReportCallback`` (``Tuner(trainer)`` is deprecated). A
single-worker trial can skip the worker group and run the loop in the trial's own process,
which saves the worker-group start-up (about 10 s per trial on 2 CPUs).
"""
from __future__ import annotations

import logging
from typing import Any

from raybench.engine.loop import resolve_device
from raybench.engine.worker import WorkerContext, run_worker, train_fn_per_worker, trial_spec
from raybench.store import ResultStore

log = logging.getLogger(__name__)


def _run_in_process(config: dict[str, Any]) -> None:
    from ray import tune

    spec = trial_spec(config)
    run_worker(config, WorkerContext(
        rank=0, world=1, device=resolve_device(spec.train.device), report=tune.report,
        checkpoint=tune.get_checkpoint(), checkpoint_cls=tune.Checkpoint,
        prepare_model=lambda model: model))


def _run_trainer(config: dict[str, Any]) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = trial_spec(config)
    scaling = spec.scaling
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker or 1.0
    store = ResultStore(spec.results).location(spec.name, "_train")
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers,
                                               use_gpu=scaling.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=config["trial_id"], storage_path=store.path, storage_filesystem=store.fs,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures)),
    )
    trainer.fit()


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: trains the trial described by ``config``.

    ``config`` holds ``spec`` (the plain-dict :class:`raybench.config.Spec`), ``params`` (the
    searched hyperparameters), ``trial_id`` and ``scenario``.
    """
    from ray import tune

    config = dict(config)
    if not config.get("trial_id"):
        config["trial_id"] = trial_name(config, tune.get_context().get_trial_id())
    spec = trial_spec(config)
    if spec.scaling.num_workers == 1 and spec.scaling.in_process:
        _run_in_process(config)
    else:
        _run_trainer(config)


def trial_name(config: dict[str, Any], tune_trial_id: str) -> str:
    """``<group>-t<NNN>`` from the searcher's trial number, which survives ``Tuner.restore``, so
    a resumed trial keeps its name (and overwrites, never duplicates, its files). Without a
    number (a plain Tune run), Tune's own trial id is used.
    """
    number = config.get("trial_number")
    return f"{config['group']}-t{number:03d}" if number is not None else f"{config['group']}-{tune_trial_id}"
