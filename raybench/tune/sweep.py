"""Run a sweep on Ray Tune: one experiment for every cell, per-cell Optuna studies and ASHA.

Layout under the results root (DESIGN.md section 4) plus Ray's and Optuna's own state::

    <root>/<sweep>/spec.yaml               resolved spec, written first
    <root>/<sweep>/_claim.json             who claimed the sweep name (spec hash, host, pid)
    <root>/<sweep>/{runs,metrics,epochs,predictions}/<trial_id>.parquet
    <root>/<sweep>/optuna/journal.log      Optuna JournalStorage: one study per cell
    <root>/<sweep>/_tune/<sweep>/          Tune experiment state, checkpoints, searcher state

Every mode is one Tune experiment served by :class:`raybench.tune.search.CellSearcher`: the
cells (model x scenario x seed, x roi when ``sweep.rois`` is set) share the cluster. ``paper``
mode runs one trial per cell with the spec's hyperparameters; ``optuna`` mode runs
``num_samples`` trials per cell, TPE from the paper's defaults, with per-cell ASHA
(:class:`raybench.tune.schedule.CellASHA`). No trial count is fixed at start: pending trials
are resource requests, so more run at once when nodes join (``scaling.max_concurrent_trials``
stays an explicit cap).

Exit status (:func:`run_sweep` raises, the CLI maps): errored trials or lost storage ->
:class:`~raybench.errors.SweepError` (1); Ctrl-C -> :class:`~raybench.errors.SweepInterrupted`
(130); a claimed name or bad input -> :class:`~raybench.errors.RaybenchError` (2).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from typing import Any, Optional
from urllib.parse import urlparse

from raybench import schema as S
from raybench.config import Spec, dump_yaml, with_absolute_paths
from raybench.engine.run import searched_values
from raybench.engine.trial import run_trial
from raybench.errors import RaybenchError, SweepError, SweepInterrupted
from raybench.storage import Location, check_writable, create_exclusive, exists, redact
from raybench.store import ResultStore
from raybench.tune import studies
from raybench.tune.cells import Cell, TrialConfig, cell_spec, cells  # noqa: F401  (public API)

log = logging.getLogger(__name__)
CLAIM_FILE = "_claim.json"
#: Environment variable of the fault-injection hook (JSON ``{"epoch": N, "marker": path}``).
INJECT_ENV = "RAYBENCH_INJECT_FAILURE"


def _tune_location(spec: Spec) -> Location:
    return ResultStore(spec.results).location(spec.name, "_tune")


def _trainable(spec: Spec) -> Any:
    from ray import tune

    scaling = spec.scaling
    if scaling.num_workers == 1 and scaling.in_process:
        res = {"CPU": scaling.cpus_per_worker}
        if scaling.use_gpu:
            res["GPU"] = scaling.gpus_per_worker or 1.0
        return tune.with_resources(run_trial, res)
    return run_trial


def max_concurrent(spec: Spec, resources: dict[str, float], remote: bool = False) -> int:
    """How many trials fit *now*: CPUs (and GPUs) over what one trial holds.

    Only for the start-up line and the pending-trial count: trials start whenever resources
    are free, so concurrency follows the cluster. On a remote cluster that cannot hold one
    trial yet (an autoscaling KubeRay cluster whose GPU group is at zero), the autoscaler adds
    nodes for the pending trials; on the embedded local Ray nothing would ever come, so that
    is an error.
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
        log.warning("the cluster cannot hold one trial yet (%s); its autoscaler sees the "
                    "pending trials", resources)
        return 1
    if fits < 1:
        raise RaybenchError(f"one trial needs {per_trial_cpu:g} CPUs"
                            + (" and GPUs" if s.use_gpu else "")
                            + f" but the cluster has {resources.get('CPU', 0):g} CPUs, "
                            f"{resources.get('GPU', 0):g} GPUs; lower scaling.num_workers or "
                            "scaling.cpus_per_worker")
    return fits


def _scheduler(spec: Spec) -> Any:
    """Per-cell ASHA over epochs (optuna mode with ``sweep.asha``), else None."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from raybench.tune.schedule import CellASHA

    sw = spec.sweep
    if sw.mode == "paper" or not sw.asha:
        return None
    return CellASHA(lambda: AsyncHyperBandScheduler(
        time_attr="training_iteration", metric=sw.metric, mode=sw.metric_mode,
        max_t=spec.train.epochs, grace_period=sw.grace_period,
        reduction_factor=sw.reduction_factor,
        # A trial at its last epoch finishes itself: stopping it there would kill it before it
        # writes its results.
        stop_last_trials=False))


def _tune_config(spec: Spec, searcher: Any, remote: bool = False) -> Any:
    """The experiment's ``TuneConfig``: the cell searcher, per-cell ASHA, no fixed trial count.

    On the embedded local Ray, in-process trials reuse their actor (process) for the next
    trial: a fresh one costs about 8-10 s on 2 loaded cores (process start + importing torch),
    the reuse 0.03 s. On a cluster (``--address`` / ``RAY_ADDRESS``) actors are not reused:
    measured with Ray 2.60, Tune then kept feeding one reused actor and left nodes that joined
    mid-sweep idle; there a trial's start is small against its training time.
    """
    from ray import tune

    sw = spec.sweep
    reuse = spec.scaling.num_workers == 1 and spec.scaling.in_process and not remote
    return tune.TuneConfig(search_alg=searcher, scheduler=_scheduler(spec), metric=sw.metric,
                           mode=sw.metric_mode, num_samples=-1,
                           # scaling.max_concurrent_trials is applied by the searcher: Tune's
                           # ConcurrencyLimiter forgets its trials on restore and would then
                           # never pass their results on.
                           max_concurrent_trials=None,
                           time_budget_s=sw.time_budget_s, reuse_actors=reuse,
                           trial_dirname_creator=trial_dirname)


def trial_dirname(trial: Any) -> str:
    """Tune's folder of a trial: raybench's trial id plus Tune's (unique per session)."""
    return f"{trial.config.get(S.TRIAL_ID, 'trial')}_{trial.trial_id}"


def plan_of(spec: Spec) -> Any:
    """The searcher's plan: the sweep spec and its cells."""
    from raybench.tune.search import SweepPlan

    return SweepPlan(spec, tuple(cells(spec)))


#: Ray Tune copies these into every trial's runtime_env, and Ray's runtime-env agent then logs
#: them in plain text. Trials get credentials from their own environment instead: the local
#: Ray inherits the driver's, cluster pods get them from Kubernetes secrets.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                  "AWS_SECURITY_TOKEN")


def _stop_ray_copying_credentials() -> None:
    """Removes the AWS variables from the set Tune copies into trial runtime environments,
    and adds the fault-injection hook's variable (tests set it after the local Ray started)."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # a Ray without this mechanism copies nothing
        return
    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(CREDENTIAL_ENV)
    class_cache.ENV_VARS_TO_PROPAGATE.add(INJECT_ENV)


def _tune_state_readable(loc: Location) -> bool:
    """Whether Tune's experiment state can be restored (a full disk may have truncated it)."""
    from ray import tune

    if not tune.Tuner.can_restore(loc.path, storage_filesystem=loc.fs):
        return False
    import pyarrow.fs as pafs

    states = [f for f in loc.fs.get_file_info(pafs.FileSelector(loc.path))
              if f.base_name.startswith("experiment_state") and f.base_name.endswith(".json")]
    try:
        for info in states + [loc.fs.get_file_info(f"{loc.path}/tuner.pkl")]:
            with loc.fs.open_input_stream(info.path) as stream:
                data = stream.read()
            if not data or (info.base_name.endswith(".json") and not json.loads(data)):
                return False
    except (OSError, ValueError):
        return False
    return bool(states)


def _make_tuner(spec: Spec, resume: bool, progress: Any, remote: bool = False) -> Any:
    """``Tuner.restore`` of the sweep's experiment when resuming and readable, else a new one.

    When Tune's state is missing or unreadable the experiment starts afresh and the searcher
    rebuilds from the Optuna journal and raybench's per-trial files (completed trials are not
    rerun, unfinished ones rerun from scratch).
    """
    from ray import tune

    from raybench.tune.search import CellSearcher

    from ray.tune.logger import JsonLoggerCallback

    # Tune's automatic CSV and TensorBoard loggers stay off (read when fit starts): raybench
    # writes its own tables, and event files under _tune/ would only cost storage. Tune's
    # result.json stays: its ResultGrid reads trial metrics from it.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    loc = _tune_location(spec)
    path = loc.join(spec.name)
    if resume and _tune_state_readable(path):
        log.info("resuming %s from %s", spec.name, path.uri)
        try:
            return tune.Tuner.restore(path.path, _trainable(spec), resume_unfinished=True,
                                      resume_errored=True, storage_filesystem=loc.fs)
        except Exception as exc:  # an unpicklable or truncated tuner.pkl: rebuild below
            log.warning("cannot restore Tune's state at %s (%s)", path.uri, exc)
    if resume and exists(path):
        log.warning("Tune's state at %s is unreadable; rebuilding the sweep from the Optuna "
                    "studies and the per-trial result files", path.uri)
        loc.fs.delete_dir(path.path)
    run_config = tune.RunConfig(
        name=spec.name, storage_path=loc.path, storage_filesystem=loc.fs, verbose=0,
        callbacks=[progress, JsonLoggerCallback()],
        failure_config=tune.FailureConfig(max_failures=spec.scaling.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    return tune.Tuner(_trainable(spec), param_space={},
                      tune_config=_tune_config(spec, CellSearcher(plan_of(spec)), remote),
                      run_config=run_config)


def error_text(error: BaseException) -> str:
    """The failed trial's own exception, ``Type: message`` on one line (no Ray header)."""
    from raybench.tune.progress import exception_line

    cause = getattr(error, "cause", None) or error
    message = str(cause).strip()
    if message and "\n" not in message and not message.startswith("ray::"):
        return f"{type(cause).__name__}: {message}"[:500]
    return exception_line(str(error)) or type(cause).__name__


def _finalize(spec: Spec, store: ResultStore, grid: Any,
              interrupted: bool = False) -> list[dict[str, Any]]:
    """Records trials that ended without results (stopped by ASHA, errored) in the runs table.

    After an interrupt, a trial without results was cut short, not stopped: it gets no row
    (``--resume`` continues it).
    """
    summary = []
    for result in grid:
        config = result.config or {}
        if "spec" not in config:
            continue
        trial = TrialConfig.from_ray(config)
        tspec, trial_id, metrics = trial.trial_spec, trial.trial_id, result.metrics or {}
        # A trial writes its run row last: its file exists only once the trial completed.
        done = exists(store.location(spec.name, "runs", f"{trial_id}.parquet"))
        status = S.STATUS_ERROR if result.error else (
            S.STATUS_COMPLETED if done else S.STATUS_INTERRUPTED if interrupted
            else S.STATUS_STOPPED)
        params = searched_values(tspec)
        error = error_text(result.error) if result.error else None
        summary.append({S.TRIAL_ID: trial_id, S.STATUS: status, S.ERROR: error, **params})
        if (not done and status != "interrupted") or result.error:
            store.write_table(spec.name, "runs", trial_id, [{
                S.MODEL: tspec.model.name, S.SCENARIO: trial.cell.scenario,
                S.SEED: tspec.train.seed, **params, S.EPOCHS: tspec.train.epochs,
                S.EPOCHS_RUN: metrics.get(S.EPOCH, 0), S.STATUS: status, S.ERROR: error,
                S.ROI: tspec.data.roi}])
    return summary


def _quiet_ray() -> None:
    """raybench prints its own progress lines; keep Ray's and Optuna's banners out of them."""
    for key, value in (("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1"), ("RAY_AIR_NEW_OUTPUT", "0"),
                       ("RAY_DEDUP_LOGS", "0")):
        os.environ.setdefault(key, value)
    _quiet_tune()


def _quiet_tune() -> None:
    """Driver-side Tune settings read when ``fit`` starts (also on a Ray someone else started)."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _skip_callback_telemetry()


def _skip_callback_telemetry() -> None:
    """With Ray's usage stats off, skip Tune's callback telemetry.

    ``tune.run`` records which callbacks a sweep passes by importing every built-in logger
    integration, ``mlflow`` among them: 1.3 s of driver start (measured with ``cProfile`` on
    ``run_sweep``) whenever mlflow is installed, for a tag that is never sent when usage stats
    are disabled. Only the tag is skipped; a Ray without this function is left alone.
    """
    try:
        from ray._common.usage.usage_lib import usage_stats_enabled
        from ray.air._internal import usage as air_usage
    except ImportError:
        return
    if not usage_stats_enabled() and hasattr(air_usage, "tag_callbacks"):
        air_usage.tag_callbacks = lambda callbacks: False


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


def _spec_hash(spec: Spec) -> str:
    return hashlib.sha256(redact(dump_yaml(spec)).encode()).hexdigest()


def _claim_record(spec: Spec) -> bytes:
    return json.dumps({"spec_sha256": _spec_hash(spec), "host": socket.gethostname(),
                       "pid": os.getpid(), "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                       time.gmtime())}).encode()


def _read_claim(loc: Location) -> Optional[dict[str, Any]]:
    from raybench.storage import read_bytes

    if not exists(loc):
        return None
    try:
        return json.loads(read_bytes(loc))
    except ValueError:
        return {}  # a claim cut short by a crash: held, by an unknown spec


def _holder(claim: dict[str, Any]) -> str:
    return (f"claimed by {claim.get('host', '?')} pid {claim.get('pid', '?')} at "
            f"{claim.get('claimed_at', '?')}")


def _claim_resume(store: ResultStore, spec: Spec, saved: Optional[str]) -> bool:
    """``--resume``: same spec only; a claim with the same spec hash is taken over."""
    where, loc = store.location(spec.name).uri, store.location(spec.name, CLAIM_FILE)
    if saved is not None and saved != redact(dump_yaml(spec)):
        raise RaybenchError(f"sweep {spec.name!r} at {where} was started with another spec; "
                            "resume it with the same spec and --set values")
    held = _read_claim(loc)
    if held is None:
        if not create_exclusive(loc, _claim_record(spec)):
            raise RaybenchError(f"sweep {spec.name!r} at {where} was claimed by another driver "
                                "a moment ago")
        if saved is None:
            log.info("no sweep %s at %s yet: starting it", spec.name, where)
        return saved is not None
    if held.get("spec_sha256") != _spec_hash(spec):
        raise RaybenchError(f"sweep {spec.name!r} at {where} is {_holder(held)} with another "
                            "spec; resume it with the same spec and --set values")
    # The same spec: a driver that crashed (or a RayJob retry) left it; this driver continues.
    log.info("taking over sweep %s (%s)", spec.name, _holder(held))
    from raybench.storage import write_bytes_atomic

    write_bytes_atomic(loc, _claim_record(spec))
    return True


def claim_sweep(store: ResultStore, spec: Spec, resume: bool, overwrite: bool) -> bool:
    """Claims the sweep name atomically (see :func:`raybench.storage.create_exclusive`).

    A new name is claimed by creating ``<sweep>/_claim.json`` if absent: of two drivers
    starting the same sweep at once exactly one proceeds. ``--resume`` continues an existing
    sweep with the same spec (taking over its claim) or starts it when it does not exist;
    ``--overwrite`` deletes it first.

    Returns:
        Whether the sweep existed before (there may be state to resume).

    Raises:
        RaybenchError: The name is taken (another driver, another spec), or both flags.
    """
    if resume and overwrite:
        raise RaybenchError("--resume and --overwrite exclude each other")
    where, loc = store.location(spec.name).uri, store.location(spec.name, CLAIM_FILE)
    saved = store.read_spec(spec.name)
    if resume:
        return _claim_resume(store, spec, saved)
    if overwrite and exists(store.location(spec.name)):
        log.warning("overwriting sweep %s at %s", spec.name, where)
        store.delete_sweep(spec.name)
        studies.reset(spec.results, spec.name)
        saved = None
    if not create_exclusive(loc, _claim_record(spec)):
        held = _read_claim(loc) or {}
        raise RaybenchError(f"sweep {spec.name!r} already exists at {where} ({_holder(held)}); "
                            "use --resume to continue it, --overwrite to start again, or "
                            "another name")
    if saved is not None:  # a sweep from before claims existed
        from raybench.storage import delete_file

        delete_file(loc)
        raise RaybenchError(f"sweep {spec.name!r} already exists at {where}; use --resume to "
                            "continue it, --overwrite to start again, or another name")
    return False


def _release_claim(store: ResultStore, spec: Spec) -> None:
    """Gives a fresh name back when the sweep could not start (nothing else was written)."""
    from raybench.storage import delete_file

    if store.read_spec(spec.name) is None:
        delete_file(store.location(spec.name, CLAIM_FILE))


def _storage_lost(spec: Spec) -> Optional[SweepError]:
    try:
        check_writable(spec.results)
    except RaybenchError as exc:
        return SweepError(f"storage lost during the sweep: {exc}; the sweep is resumable: "
                          "continue with --resume once the store is back")
    return None


def unfinished_cells(spec: Spec) -> list[str]:
    """Cells whose study has fewer finished trials than the budget (an errored trial counts)."""
    import optuna
    from optuna.trial import TrialState

    plan = plan_of(spec)
    storage = studies.open_storage(studies.local_journal(spec.results, spec.name))
    names = {s.study_name for s in storage.get_all_studies()}
    out = []
    for cell in plan.cells:
        finished = 0
        if cell.name in names:
            study = optuna.load_study(study_name=cell.name, storage=storage)
            finished = sum(t.state.is_finished()
                           or t.user_attrs.get("raybench_status") == S.STATUS_ERROR
                           for t in study.get_trials(deepcopy=False)
                           if t.state != TrialState.WAITING)
        if finished < plan.budget:
            out.append(cell.name)
    return out


def _was_interrupted(spec: Spec, elapsed: float) -> bool:
    """Cells are unfinished and the time budget (if any) was not what ended the sweep."""
    budget = spec.sweep.time_budget_s
    unfinished = unfinished_cells(spec)
    if unfinished and budget and elapsed >= budget:
        log.info("time budget of %.0f s reached; %d cell(s) not finished", budget, len(unfinished))
        return False
    return bool(unfinished)


def _check_outcome(spec: Spec, summary: list[dict[str, Any]], interrupted: bool) -> None:
    """Raises unless every trial completed or was stopped by the scheduler by design."""
    if interrupted:
        raise SweepInterrupted("interrupted; continue with --resume", summary)
    failed = [s for s in summary if s[S.STATUS] == S.STATUS_ERROR]
    if failed:
        raise SweepError("\n".join(f"trial {s[S.TRIAL_ID]} failed: {s[S.ERROR]}" for s in failed),
                         summary)


class _PendingTrials:
    """Lets Tune keep up to ``n`` trials pending (resource requests the autoscaler sees)."""

    KEY = "TUNE_MAX_PENDING_TRIALS_PG"

    def __init__(self, n: int) -> None:
        self.n, self.set = n, self.KEY not in os.environ

    def __enter__(self) -> None:
        if self.set:
            os.environ[self.KEY] = str(self.n)

    def __exit__(self, *exc: Any) -> None:
        if self.set:
            os.environ.pop(self.KEY, None)


def _start(spec: Spec, store: ResultStore, address: Optional[str], num_cpus: Optional[int],
           existed: bool) -> int:
    """Ray up and one trial known to fit; returns the trial slots there are now."""
    import ray

    try:
        ensure_ray(address, num_cpus)
        remote = bool(address or os.environ.get("RAY_ADDRESS"))
        return max_concurrent(spec, ray.cluster_resources(), remote=remote)
    except BaseException:
        if not existed:
            _release_claim(store, spec)
        raise


def run_sweep(spec: Spec, resume: bool = False, address: Optional[str] = None,
              num_cpus: Optional[int] = None, overwrite: bool = False) -> list[dict[str, Any]]:
    """Runs (or resumes, or starts with ``resume``) the sweep as one Tune experiment.

    Returns:
        One summary row per trial of this session (trial_id, status, error, hyperparameters).

    Raises:
        SweepError: Errored trials (one line each) or storage lost mid-sweep (exit 1).
        SweepInterrupted: Stopped by Ctrl-C before it finished (exit 130).
        RaybenchError: Claimed name, bad resources, unreachable Ray or storage (exit 2).
    """
    from raybench.tune.progress import Progress

    spec = with_absolute_paths(spec)
    check_writable(spec.results)  # a bad store fails in seconds, before Ray starts
    store = ResultStore(spec.results)
    existed = claim_sweep(store, spec, resume, overwrite)
    slots = _start(spec, store, address, num_cpus, existed)
    store.write_spec(spec.name, dump_yaml(spec))
    if existed:
        studies.download(spec.results, spec.name)
    else:
        studies.reset(spec.results, spec.name)
    plan = plan_of(spec)
    sw = spec.sweep
    total = plan.budget * len(plan.cells)
    log.info("sweep %s: %s mode, %d cell(s), %d trial(s), %d trial slot(s) now", spec.name,
             sw.mode, len(plan.cells), total, slots)
    progress = Progress(spec.name, sw.metric, sw.metric_mode, total, sw.progress_interval_s)
    _quiet_tune()
    tuner = _make_tuner(spec, existed, progress, bool(address or os.environ.get("RAY_ADDRESS")))
    _stop_ray_copying_credentials()
    start = time.monotonic()
    with _PendingTrials(max(slots, min(total, len(plan.cells) * plan.cap))):
        try:
            grid = tuner.fit()
        except Exception:
            lost = _storage_lost(spec)
            if lost:
                raise lost from None
            raise
    lost = _storage_lost(spec)
    if lost:
        raise lost
    interrupted = _was_interrupted(spec, time.monotonic() - start)
    summary = _finalize(spec, store, grid, interrupted)
    studies.upload(spec.results, spec.name)
    store.compact(spec.name)  # a snapshot makes results.load fast on large sweeps
    _check_outcome(spec, summary, interrupted)
    return summary
