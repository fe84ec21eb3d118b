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

from raybench import schema as S
from raybench.errors import final_error
from raybench.store import ResultStore
from raybench.trial import TrialConfig

log = logging.getLogger(__name__)


def _run_in_process(trial: TrialConfig) -> None:
    from ray import tune

    from raybench.engine.loop import resolve_device
    from raybench.engine.worker import WorkerContext, run_worker

    run_worker(trial, WorkerContext(
        rank=0, world=1, device=resolve_device(trial.trial_spec.train.device),
        report=tune.report, checkpoint=None, checkpoint_cls=tune.Checkpoint,
        prepare_model=lambda model: model, own_state=True))


def _run_trainer(trial: TrialConfig, config: dict[str, Any]) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raybench.engine.worker import train_fn_per_worker

    scaling = trial.spec.scaling
    store = ResultStore(trial.spec.results).location(trial.spec.name, "_train")
    resources = dict(scaling.worker_resources)
    if trial.gpu_share:  # the driver's share (auto packing, the DDP rule, an OOM retry)
        resources["GPU"] = trial.gpu_share
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config=config,  # the same plain dict; each worker rebuilds it once
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers,
                                               use_gpu=scaling.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=trial.trial_id, storage_path=store.path, storage_filesystem=store.fs,
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]  # a Train callback
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures)),
    )
    trainer.fit()


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: trains the trial that ``config`` (a ``TrialConfig`` dict) is.

    A trial that fails on its spec or its data (:data:`raybench.errors.FINAL_ERRORS`) writes
    its run row with status ``error`` before it raises: the driver then knows it is final
    (``--resume`` does not retry it), whatever Ray makes of the exception on its way.
    """
    trial = TrialConfig.from_ray(config)
    try:
        if trial.spec.scaling.single_in_process:
            _run_in_process(trial)
        else:
            _run_trainer(trial, config)
    except Exception as exc:
        final = final_error(exc)
        if final is not None:
            _write_error_row(trial, final)
        raise


def _write_error_row(trial: TrialConfig, error: BaseException) -> None:
    from raybench.engine.worker import trial_fence

    spec = trial.trial_spec
    text = f"{type(error).__name__}: {str(error).strip()}"[:500]
    try:
        store = ResultStore(spec.results, fence=trial_fence(spec.results, spec.name))
        store.write_table(spec.name, S.RUNS_TABLE, trial.trial_id,
                                              [trial.run_row(S.STATUS_ERROR, text)])
    except Exception as exc:  # the trial's own error is what the driver must see
        log.warning("trial %s: could not write its error row (%s)", trial.trial_id, exc)
