"""Run a study on Ray Tune: the paper grid or Optuna searches, with ASHA, progress and resume.

Layout under the results root (DESIGN.md section 4) plus Ray's own state::

    <root>/<sweep>/spec.yaml               resolved spec, written first
    <root>/<sweep>/{runs,metrics,epochs,predictions}/<trial_id>.parquet
    <root>/<sweep>/_tune/<group>/          Tune experiment state, checkpoints, searcher state

``paper`` mode is one Tune experiment (group ``paper``): a grid over models x scenarios x seeds
with the paper's hyperparameters. ``optuna`` mode runs one experiment per model x scenario x
seed, each an Optuna TPE search that starts from the paper's defaults.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlparse

from raybench.config import Spec, dump_yaml, to_dict, with_absolute_paths
from raybench.engine.run import scenario_name
from raybench.engine.trial import run_trial
from raybench.engine.worker import trial_spec
from raybench.errors import RaybenchError
from raybench.storage import Location, check_writable, exists, redact
from raybench.store import ResultStore
from raybench.tune.space import PARAM_KEYS, SPACES, first_point

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One model x scenario x seed of the study."""

    model: str
    scenario: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}-{self.scenario}-s{self.seed}"


def cells(spec: Spec) -> list[Cell]:
    """All model x scenario x seed combinations, in spec order."""
    scenarios = spec.sweep.scenarios or (scenario_name(spec),)
    return [Cell(m, s, seed) for m in spec.sweep.models for s in scenarios for seed in spec.sweep.seeds]


def cell_spec(spec: Spec, cell: Cell) -> Spec:
    """The spec of one cell: its model, seed and (when scenarios are listed) scenario."""
    data = spec.data
    if spec.sweep.scenarios:
        data = dataclasses.replace(data, scenario=cell.scenario)
    return dataclasses.replace(spec, model=dataclasses.replace(spec.model, name=cell.model),
                               train=dataclasses.replace(spec.train, seed=cell.seed), data=data)


def _trial_config(spec: Spec, cell: Cell, trial_id: str = "",
                  inject_failure: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    config = {"spec": to_dict(cell_spec(spec, cell)), "scenario": cell.scenario,
              "group": cell.name, "trial_id": trial_id}
    if inject_failure:
        config["inject_failure"] = inject_failure
    return config


def _tune_location(spec: Spec) -> Location:
    return ResultStore(spec.results).location(spec.name, "_tune")


def _trainable(spec: Spec) -> Any:
    from ray import tune

    scaling = spec.scaling
    if scaling.num_workers == 1 and scaling.in_process:
        res = {"CPU": scaling.cpus_per_worker}
        if scaling.use_gpu:
            res["GPU"] = scaling.gpus_per_worker or 1.0
        return tune.with_resources(_entry, res)
    return _entry


def _entry(config: dict[str, Any]) -> None:
    """Flattens Tune's config (grid cell or searched keys) into the trial config."""
    base = dict(config.get("cell", config))
    base["params"] = {k: config[k] for k in PARAM_KEYS if k in config}
    base["trial_number"] = config.get("trial_number")
    run_trial(base)


def max_concurrent(spec: Spec, resources: dict[str, float], remote: bool = False) -> int:
    """How many trials fit at once: CPUs (and GPUs) over what one trial holds.

    On a remote cluster that cannot hold one trial *now* (an autoscaling KubeRay cluster whose
    GPU group is scaled to zero), one trial at a time is started and the autoscaler adds nodes;
    on the embedded local Ray nothing would ever come, so that is an error.
    """
    s = spec.scaling
    if s.max_concurrent_trials:
        return s.max_concurrent_trials
    per_trial_cpu = s.cpus_per_worker * s.num_workers + (0 if s.num_workers == 1 and s.in_process else 1)
    fits = int(resources.get("CPU", 1) // max(per_trial_cpu, 1e-9))
    if s.use_gpu:
        gpu = (s.gpus_per_worker or 1.0) * s.num_workers
        fits = min(fits, int(resources.get("GPU", 0) // gpu))
    if fits < 1 and remote:
        log.warning("the cluster cannot hold one trial yet (%s); starting one at a time and "
                    "waiting for the autoscaler", resources)
        return 1
    if fits < 1:
        raise RaybenchError(f"one trial needs {per_trial_cpu:g} CPUs"
                            + (" and GPUs" if s.use_gpu else "")
                            + f" but the cluster has {resources.get('CPU', 0):g} CPUs, "
                            f"{resources.get('GPU', 0):g} GPUs; lower scaling.num_workers or "
                            "scaling.cpus_per_worker")
    return fits


def _progress_callback() -> Any:
    from ray import tune

    class Progress(tune.Callback):
        """One line per trial report: trial, model, scenario, epoch, the tuned metric."""

        def __init__(self, metric: str) -> None:
            self.metric = metric

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            log.info("trial %s | %s | %s | epoch %s | %s %.4f", result.get("raybench_trial", trial),
                     result.get("model"), result.get("scenario"), result.get("epoch"),
                     self.metric, float(result.get(self.metric, float("nan"))))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            log.warning("trial %s failed: see %s", trial, trial.path)

    return Progress


def _tune_config(spec: Spec, group: str, concurrency: int,
                 inject_failure: Optional[dict[str, Any]] = None) -> tuple[Any, Any]:
    """``(TuneConfig, param_space)`` for the paper grid or one Optuna group."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    sw = spec.sweep
    # In-process trials reuse their actor (process) for the next trial: a fresh one costs about
    # 8-10 s on 2 loaded cores (process start + importing torch / torchvision), the reuse 0.03 s.
    reuse = spec.scaling.num_workers == 1 and spec.scaling.in_process
    if sw.mode == "paper":
        grid = [_trial_config(spec, c, c.name, inject_failure) for c in cells(spec)]
        return (tune.TuneConfig(max_concurrent_trials=concurrency, num_samples=1,
                                time_budget_s=sw.time_budget_s, reuse_actors=reuse),
                {"cell": tune.grid_search(grid)})
    cell = next(c for c in cells(spec) if c.name == group)
    space = SPACES.get("paper_neighbourhood")(sw.space, cell.model)
    search = OptunaSearch(space=space, metric=sw.metric, mode=sw.metric_mode, seed=cell.seed,
                          points_to_evaluate=[first_point(sw.space, cell.model)])
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=spec.train.epochs,
                               grace_period=sw.grace_period, reduction_factor=sw.reduction_factor)
                 if sw.asha else None)
    config = tune.TuneConfig(search_alg=search, scheduler=scheduler, metric=sw.metric,
                             mode=sw.metric_mode, num_samples=sw.num_samples,
                             max_concurrent_trials=concurrency, time_budget_s=sw.time_budget_s,
                             reuse_actors=reuse)
    return config, {"cell": _trial_config(spec, cell, inject_failure=inject_failure)}


def groups(spec: Spec) -> list[str]:
    """The Tune experiments of a sweep: ``paper`` or one per model x scenario x seed."""
    return ["paper"] if spec.sweep.mode == "paper" else [c.name for c in cells(spec)]


#: Ray Tune copies these into every trial's runtime_env, and Ray's runtime-env agent then logs
#: them in plain text. Trials get credentials from their own environment instead: the local
#: Ray inherits the driver's, cluster pods get them from Kubernetes secrets.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                  "AWS_SECURITY_TOKEN")


def _stop_ray_copying_credentials() -> None:
    """Removes the AWS variables from the set Tune copies into trial runtime environments."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # a Ray without this mechanism copies nothing
        return
    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(CREDENTIAL_ENV)


def _run_group(spec: Spec, group: str, concurrency: int, resume: bool,
               inject_failure: Optional[dict[str, Any]] = None) -> Any:
    from ray import tune

    loc = _tune_location(spec)
    path = loc.join(group)
    trainable = _trainable(spec)
    if resume and tune.Tuner.can_restore(path.path, storage_filesystem=loc.fs):
        log.info("resuming %s from %s", group, path.uri)
        tuner = tune.Tuner.restore(path.path, trainable, resume_unfinished=True,
                                   resume_errored=True, storage_filesystem=loc.fs)
    else:
        tune_config, param_space = _tune_config(spec, group, concurrency, inject_failure)
        run_config = tune.RunConfig(
            name=group, storage_path=loc.path, storage_filesystem=loc.fs, verbose=0,
            callbacks=[_progress_callback()(spec.sweep.metric)],
            failure_config=tune.FailureConfig(max_failures=spec.scaling.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                           run_config=run_config)
    _stop_ray_copying_credentials()
    return tuner.fit()


def _finalize(spec: Spec, store: ResultStore, grid: Any) -> list[dict[str, Any]]:
    """Records trials that ended without results (stopped by ASHA, errored) in the runs table."""
    summary = []
    for result in grid:
        config = dict((result.config or {}).get("cell", {}))
        config["params"] = {k: result.config[k] for k in PARAM_KEYS if k in (result.config or {})}
        trial = trial_spec(config) if config.get("spec") else spec
        metrics = result.metrics or {}
        trial_id = metrics.get("raybench_trial") or config.get("trial_id")
        # A trial writes its run row last: its file exists only once the trial completed. One
        # existence check per trial of this group, not a read of the whole sweep's runs table.
        done = bool(trial_id) and exists(store.location(spec.name, "runs", f"{trial_id}.parquet"))
        status = "error" if result.error else ("completed" if done else "stopped")
        params = {"lr": trial.train.lr, "batch_size": trial.train.batch_size,
                  "cnnx_stride": trial.model.cnnx_stride if trial.model.name == "cnnx" else None}
        summary.append({"trial_id": trial_id, "status": status, **params})
        if trial_id and not done:
            store.write_table(spec.name, "runs", trial_id, [{
                "model": trial.model.name, "scenario": config.get("scenario"),
                "seed": trial.train.seed, **params, "epochs": trial.train.epochs,
                "epochs_run": metrics.get("epoch", 0), "status": status,
                "error": str(result.error).splitlines()[0] if result.error else None}])
    return summary


def _quiet_ray() -> None:
    """raybench prints its own progress lines; keep Ray's and Optuna's banners out of them."""
    for key, value in (("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1"), ("RAY_AIR_NEW_OUTPUT", "0"),
                       ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0"),
                       ("RAY_DEDUP_LOGS", "0")):
        os.environ.setdefault(key, value)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fails in seconds, with one line, when nothing listens at a Ray address."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or port is None:
        raise RaybenchError(f"Ray address {address!r} is not host:port (or ray://host:port)")
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        raise RaybenchError(f"cannot reach Ray at {address}: {exc.strerror or exc}; start the "
                            "cluster or drop --address to use a local Ray") from None


def ensure_ray(address: Optional[str], num_cpus: Optional[int] = None) -> None:
    """Connects to ``address`` (or ``RAY_ADDRESS``), else starts an embedded local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    _quiet_ray()
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, logging_level=logging.WARNING, log_to_driver=False,
                     include_dashboard=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RaybenchError(f"cannot connect to Ray at {address or 'local'}: "
                            f"{str(exc).splitlines()[0]}") from None


def _claim_sweep(store: ResultStore, spec: Spec, resume: bool, overwrite: bool) -> None:
    """A sweep name is used once per results root: resume it, overwrite it, or pick another."""
    saved = store.read_spec(spec.name)
    where = store.location(spec.name).uri
    if resume and overwrite:
        raise RaybenchError("--resume and --overwrite exclude each other")
    if resume and saved is None:
        raise RaybenchError(f"nothing to resume: no sweep {spec.name!r} at {where}")
    if resume and saved != redact(dump_yaml(spec)):
        raise RaybenchError(f"sweep {spec.name!r} at {where} was started with another spec; "
                            "resume it with the same spec and --set values")
    if saved is not None and not resume:
        if not overwrite:
            raise RaybenchError(f"sweep {spec.name!r} already exists at {where}; use --resume to "
                                "continue it, --overwrite to start again, or another name")
        log.warning("overwriting sweep %s at %s", spec.name, where)
        store.delete_sweep(spec.name)


def run_sweep(spec: Spec, resume: bool = False, address: Optional[str] = None,
              num_cpus: Optional[int] = None, overwrite: bool = False,
              inject_failure: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Runs (or resumes) every Tune experiment of the sweep; returns one summary row a trial.

    ``inject_failure`` (``{"epoch": N, "marker": path}``) kills rank 0 once at epoch N: the
    fault-injection hook of the reliability tests.

    Raises:
        RaybenchError: Bad resources, unreachable Ray or storage, unknown names.
    """
    import ray

    spec = with_absolute_paths(spec)
    check_writable(spec.results)  # a bad store fails in seconds, before Ray starts
    store = ResultStore(spec.results)
    _claim_sweep(store, spec, resume, overwrite)
    ensure_ray(address, num_cpus)
    store.write_spec(spec.name, dump_yaml(spec))
    remote = bool(address or os.environ.get("RAY_ADDRESS"))
    concurrency = max_concurrent(spec, ray.cluster_resources(), remote=remote)
    log.info("sweep %s: %s mode, %d group(s), up to %d trial(s) at once", spec.name,
             spec.sweep.mode, len(groups(spec)), concurrency)
    summary = []
    for group in groups(spec):
        grid = _run_group(spec, group, concurrency, resume, inject_failure)
        summary += _finalize(spec, store, grid)
    store.compact(spec.name)  # a snapshot makes results.load fast on large sweeps
    return summary
