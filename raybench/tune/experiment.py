"""The sweep's Tune experiment: trainable, per-cell ASHA, ``TuneConfig`` and restore-or-build.

Tune's state lives under ``<root>/<sweep>/_tune/<sweep>/``. A resume restores it when it is
readable; when it is missing or unreadable the experiment starts afresh and the searcher
rebuilds from the Optuna journal and raybench's per-trial files (completed trials are not
rerun, unfinished ones rerun from scratch).
"""
from __future__ import annotations

import io
import json
import logging
import os
import pickle
from typing import Any, Callable, Optional

from raybench import schema as S
from raybench.config import Spec
from raybench.errors import SweepError
from raybench.storage import Location
from raybench.store import ResultStore
from raybench.trial import cells

log = logging.getLogger(__name__)


def tune_location(spec: Spec) -> Location:
    """The folder Tune's experiments of this sweep live in (``<root>/<sweep>/_tune``)."""
    return ResultStore(spec.results).location(spec.name, "_tune")


def trainable(spec: Spec) -> Any:
    """The Tune trainable; an in-process trial reserves its worker's resources itself, its GPU
    share read from its config (the driver's share for ``auto``, a whole GPU after an OOM)."""
    from ray import tune

    from raybench.engine.trial import run_trial  # torch: only the process that runs trials
    from raybench.tune.packing import TrialResources

    s = spec.scaling
    if s.single_in_process and s.use_gpu:
        return tune.with_resources(run_trial, TrialResources(s.cpus_per_worker,
                                                             s.worker_resources["GPU"]))
    if s.single_in_process:
        return tune.with_resources(run_trial, s.worker_resources)
    return run_trial


def scheduler(spec: Spec, record: Optional[Callable[[Any], Any]] = None) -> Any:
    """Per-cell ASHA over epochs (optuna mode with ``sweep.asha``), else FIFO; either one hands
    each ended trial to ``record`` and Tune forgets it (:mod:`raybench.tune.ledger`)."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from raybench.tune.ledger import Forgetful
    from raybench.tune.schedule import CellASHA

    sw = spec.sweep
    if sw.mode == "paper" or not sw.asha:
        return Forgetful(spec.name, record)
    return CellASHA(lambda: AsyncHyperBandScheduler(
        time_attr="training_iteration", metric=sw.metric, mode=sw.metric_mode,
        max_t=spec.train.epochs, grace_period=sw.grace_period,
        reduction_factor=sw.reduction_factor,
        # A trial at its last epoch finishes itself: stopping it there would kill it before it
        # writes its results.
        stop_last_trials=False), spec.name, record)


def tune_config(spec: Spec, searcher: Any, remote: bool = False,
                record: Optional[Callable[[Any], Any]] = None) -> Any:
    """The experiment's ``TuneConfig``: the cell searcher, per-cell ASHA, no fixed trial count.

    On the embedded local Ray, in-process trials reuse their actor (process) for the next
    trial: a fresh one costs about 8-10 s on 2 loaded cores (process start + importing torch),
    the reuse 0.03 s. On a cluster (``--address`` / ``RAY_ADDRESS``) actors are not reused:
    measured with Ray 2.60, Tune then kept feeding one reused actor and left nodes that joined
    mid-sweep idle; there a trial's start is small against its training time.
    ``scaling.reuse_actors`` overrides this (:func:`reuses_actors`).
    """
    from ray import tune

    from raybench.tune.search import CellSearch

    sw = spec.sweep
    return tune.TuneConfig(search_alg=CellSearch(searcher), scheduler=scheduler(spec, record),
                           metric=sw.metric,
                           mode=sw.metric_mode, num_samples=-1,
                           # scaling.max_concurrent_trials is applied by the searcher: Tune's
                           # ConcurrencyLimiter forgets its trials on restore and would then
                           # never pass their results on.
                           max_concurrent_trials=None,
                           time_budget_s=sw.time_budget_s, reuse_actors=reuses_actors(spec, remote),
                           trial_dirname_creator=trial_dirname)


def reuses_actors(spec: Spec, remote: bool) -> bool:
    """Whether an in-process trial starts in the process of one that ended
    (``scaling.reuse_actors``; ``auto``: on the local Ray only)."""
    reuse = spec.scaling.reuse_actors
    return spec.scaling.single_in_process and (not remote if reuse == "auto" else bool(reuse))


def trial_dirname(trial: Any) -> str:
    """Tune's folder of a trial: raybench's trial id plus Tune's (unique per session)."""
    return f"{trial.config.get(S.TRIAL_ID, 'trial')}_{trial.trial_id}"


def plan_of(spec: Spec, batch_sizes: Optional[dict[str, tuple[int, ...]]] = None) -> Any:
    """The searcher's plan: the sweep spec, its cells and (checked) batch sizes per cell."""
    from raybench.tune.search import SweepPlan

    return SweepPlan(spec, tuple(cells(spec)), batch_sizes or {})


def unreadable_tune_state(loc: Location) -> Optional[str]:
    """Why Tune's experiment state at ``loc`` cannot be restored, or None when it can.

    The recognised signs (a crash or a full disk cut the files short): no ``tuner.pkl`` or
    experiment state, an empty file, experiment state that is not JSON, or a ``tuner.pkl``
    that does not unpickle to its end; the same for the newest searcher state
    (``searcher-state-*.pkl``, which Tune would skip silently, leaving the searcher without
    its trials in flight) and search-generator state (``search_gen_state-*.json``).
    """
    import pyarrow.fs as pafs

    infos = [f for f in loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
             if f.type == pafs.FileType.File]
    states = [f for f in infos
              if f.base_name.startswith("experiment_state") and f.base_name.endswith(".json")]
    tuner = [f for f in infos if f.base_name == "tuner.pkl"]
    if not tuner or not states:
        return "no tuner.pkl" if not tuner else "no experiment_state-*.json"
    newest = []  # Tune reads the newest of each (the greatest name: a timestamp)
    for prefix, suffix in (("searcher-state-", ".pkl"), ("search_gen_state-", ".json")):
        kind = [f for f in infos if f.base_name.startswith(prefix)
                and f.base_name.endswith(suffix)]
        newest += [max(kind, key=lambda f: f.base_name)] if kind else []
    for info in tuner + states + newest:
        with loc.fs.open_input_stream(info.path) as stream:
            data = stream.read()
        # search_gen_state-*.json is a (cloud)pickle despite its name (Ray 2.60's _atomic_save)
        reason = _cut_short(info.base_name, data, pickled=not info.base_name.startswith(
            "experiment_state"))
        if reason:
            return reason
    return None


#: :func:`disagreeing_tune_state`'s reason for a snapshot taken once every trial had ended.
NO_TRIALS = "it holds no trial (every trial had ended)"


def disagreeing_tune_state(loc: Location) -> Optional[str]:
    """Why Tune's newest experiment state and searcher state at ``loc`` cannot be restored
    together, or None: they name different trials in flight, or there is no trial at all
    (:data:`NO_TRIALS`: Tune forgot every ended trial, and has nothing to restore).

    Tune writes the two files one after the other and uploads them in one copy, so a driver
    killed in between leaves one snapshot newer than the other. Restored together, a trial
    Tune runs would be unknown to the searcher (its study never told), or the searcher would
    wait for a trial Tune does not have; a rebuild from the studies has neither problem.
    """
    import pyarrow.fs as pafs

    infos = [f for f in loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
             if f.type == pafs.FileType.File]
    newest = {}
    for prefix, suffix in (("experiment_state", ".json"), ("searcher-state-", ".pkl")):
        kind = [f for f in infos if f.base_name.startswith(prefix) and f.base_name.endswith(suffix)]
        if not kind:
            return None
        with loc.fs.open_input_stream(max(kind, key=lambda f: f.base_name).path) as stream:
            newest[prefix] = stream.read()
    trials = [json.loads(t) for t, _ in json.loads(newest["experiment_state"])["trial_data"]]
    if not trials:  # Ray 2.60's restore fails on it ("Failed to restore the run state")
        return NO_TRIALS
    flying = {t["trial_id"] for t in trials if t.get("status") not in ("TERMINATED", "ERROR")}
    try:  # CellSearcher.save's own file: a dict of plain values, no class to import
        live = set(_PlainUnpickler(io.BytesIO(newest["searcher-state-"])).load()["live"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        return f"its searcher state is not CellSearcher's ({type(exc).__name__})"
    if flying == live:
        return None
    return (f"Tune's trials in flight ({len(flying)}) and its searcher's ({len(live)}) differ: "
            "a driver killed between writing the two")


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain values only (dicts, tuples, strings, numbers): no class is imported."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not a plain value")


def _cut_short(name: str, data: bytes, pickled: bool) -> Optional[str]:
    if not data:
        return f"{name} is empty"
    if not pickled:
        try:
            json.loads(data)
        except ValueError:
            return f"{name} is not valid JSON"
        return None
    if not data.endswith(b"."):  # every pickle ends with the STOP opcode
        return f"{name} is cut short"
    return None


def _restore(spec: Spec, path: Location) -> Any:
    """``Tuner.restore``; any failure here is a sweep error, never a silent rebuild."""
    from ray import tune

    log.info("resuming %s from %s", spec.name, path.uri)
    try:
        return tune.Tuner.restore(path.path, trainable(spec), resume_unfinished=True,
                                  resume_errored=False, storage_filesystem=path.fs)
    except Exception as exc:
        raise SweepError(f"cannot restore Tune's state at {path.uri}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}; --overwrite starts "
                         "the sweep again") from exc


def make_tuner(spec: Spec, resume: bool, progress: Any, remote: bool = False,
               plan: Any = None, record: Optional[Callable[[Any], Any]] = None) -> Any:
    """``Tuner.restore`` of the sweep's experiment when resuming and readable, else a new one.

    ``record(trial)`` takes each trial that ended (its Tune status, its summary row) before
    Tune forgets it (:mod:`raybench.tune.ledger`); a restored experiment keeps the ``record``
    of the session that built it (Tune unpickles its scheduler).
    """
    from ray import tune

    from raybench.tune.ledger import JsonLog, TrialProgress
    from raybench.tune.search import CellSearcher

    # Tune's automatic CSV and TensorBoard loggers stay off (read when fit starts): raybench
    # writes its own tables, and event files under _tune/ would only cost storage. Tune's
    # result.json stays: its ResultGrid reads trial metrics from it.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    loc = tune_location(spec)
    path = loc.join(spec.name)
    there = resume and ResultStore(spec.results).exists(spec.name, "_tune", spec.name)
    reason = unreadable_tune_state(path) if there else None
    disagree = disagreeing_tune_state(path) if there and reason is None else None
    if there and reason is None and disagree is None:
        return _restore(spec, path)
    if there:
        level, what = logging.WARNING, f"unreadable ({reason})"
        if reason is None:
            level, what = ((logging.INFO, str(disagree)) if disagree == NO_TRIALS
                           else (logging.WARNING, f"inconsistent ({disagree})"))
        log.log(level, "Tune's state at %s is %s; rebuilding the sweep from the Optuna studies "
                "and the per-trial result files", path.uri, what)
        loc.fs.delete_dir(path.path)
    callbacks = [progress, JsonLog(), TrialProgress(metric=spec.sweep.metric)]
    if plan is not None and plan.gpu is not None:
        from raybench.tune.packing import OomRetry

        callbacks.append(OomRetry(spec.results, plan.gpu))
    run_config = tune.RunConfig(
        name=spec.name, storage_path=loc.path, storage_filesystem=loc.fs, verbose=0,
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=spec.scaling.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    return tune.Tuner(trainable(spec), param_space={},
                      tune_config=tune_config(spec, CellSearcher(plan or plan_of(spec)), remote,
                                              record),
                      run_config=run_config)
