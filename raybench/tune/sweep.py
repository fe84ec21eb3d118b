"""Run a sweep on Ray Tune: one experiment for every cell, per-cell Optuna studies and ASHA.

Layout under the results root (README "Result files") plus Ray's and Optuna's own state::

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

The pieces: :mod:`raybench.cluster` (Ray start-up and patches), :mod:`raybench.tune.claim`
(the name claim), :mod:`raybench.tune.experiment` (Tune wiring), :mod:`raybench.tune.outcome`
(run rows of trials without results, exit status).

Exit status (:func:`run_sweep` raises, the CLI maps): errored trials or lost storage ->
:class:`~raybench.errors.SweepError` (1); Ctrl-C -> :class:`~raybench.errors.SweepInterrupted`
(130); a claimed name or bad input -> :class:`~raybench.errors.RaybenchError` (2).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

from raybench import cluster, killpoint, predict
from raybench.config import Spec, dump_yaml, with_absolute_paths
from raybench.store import ResultStore
from raybench.tune import claim, damage, feasible, ledger, outcome, packing, search, studies
from raybench.tune.claim import Lease, claim_sweep, moved_from, release_claim
from raybench.tune.experiment import make_tuner, plan_of, tune_location

log = logging.getLogger(__name__)


def _prepare_data(spec: Spec, store: ResultStore, lease: Lease, existed: bool) -> None:
    """Builds the decoded-cache entries every cell reads, over the whole cluster, before the
    first trial (instead of the first trial of each node building them while the others wait)."""
    from raybench.data.dataset import warm_decoded_cache
    from raybench.trial import cell_spec, cells, image_size

    specs = [cell_spec(spec, c) for c in cells(spec)]
    try:
        n = warm_decoded_cache((s.data, image_size(s)) for s in specs)
    except BaseException:
        if not existed:
            release_claim(store, spec, lease)
        raise
    log.info("sweep %s: %d decoded-cache entr%s ready", spec.name, n, "y" if n == 1 else "ies")


def _forget_moved_tune_state(spec: Spec, store: ResultStore) -> None:
    """A sweep folder copied from another root: Tune's state there is dropped and rebuilt.

    Tune's pickled state (each trial's config, the searcher) holds the spec with the old root,
    so restored trials would write there; the searcher rebuilds from the Optuna journal and the
    per-trial files instead (trials in flight continue from their own ``_state`` snapshot).
    """
    old = moved_from(store, spec)
    if old is None:
        return
    loc = tune_location(spec).join(spec.name)
    log.info("sweep %s was moved from %s to %s; rebuilding Tune's state from its studies and "
             "result files", spec.name, old, spec.results)
    if store.exists(spec.name, "_tune", spec.name):
        loc.fs.delete_dir(loc.path)


@dataclass(frozen=True)
class RayOptions:
    """Where the sweep runs: a Ray address, or the embedded Ray's logical CPUs and GPUs; and a
    recorded GPU probe file that stands in for the probe (``--probe``)."""

    address: Optional[str] = None
    num_cpus: Optional[int] = None
    num_gpus: Optional[int] = None
    probe_file: Optional[str] = None


def _start(spec: Spec, store: ResultStore, lease: Lease, ray_opts: RayOptions,
           existed: bool) -> tuple[int, Any]:
    """The space checked against the data, the DDP placement rule, then Ray up, one trial
    known to fit, and (``gpus_per_worker: auto``) the GPU shares from the probe.

    Returns:
        The trial slots there are now, and the searcher's plan.
    """
    try:
        plan = plan_of(spec, feasible.batch_sizes(spec, feasible.train_sizes(spec)))
        packing.ddp_checked(spec)  # a placement that cannot work fails before Ray starts
        slots = cluster.trial_slots(spec, ray_opts.address, ray_opts.num_cpus, ray_opts.num_gpus)
        if packing.is_auto(spec) and spec.scaling.num_workers == 1:
            gpu = packing.plan_gpu(spec, plan.batch_sizes, ray_opts.probe_file,
                                   cluster.is_remote(ray_opts.address))
            plan = dataclasses.replace(plan, gpu=gpu)
            predict.save(store, spec, predict.predict(spec, gpu, plan.batch_sizes,
                                                      cluster.gpu_count()))
        return slots, plan
    except BaseException:
        if not existed:
            release_claim(store, spec, lease)
        raise


#: Trials kept pending beyond the slots there are now: enough for an autoscaler to see demand
#: (it adds nodes, then the next pending trials appear), few enough that Tune does not hold
#: a placement group and a trial object for every cell before the first trial runs.
PENDING_EXTRA = 16


def pending_trials(slots: int, total: int, open_at_once: int) -> int:
    """How many trials Tune keeps pending: the slots now plus :data:`PENDING_EXTRA`."""
    return max(1, min(total, open_at_once, max(slots, 1) + PENDING_EXTRA))


def _fit(store: ResultStore, tuner: Any, pending: int) -> Any:
    """``tuner.fit()``; a store that stopped answering becomes a resumable sweep error."""
    with cluster.PendingTrials(pending), cluster.HeadWatch(cluster.head_address()):
        try:
            grid = tuner.fit()
        except Exception:
            lost = outcome.storage_lost(store)
            if lost:
                raise lost from None
            raise
    lost = outcome.storage_lost(store)
    if lost:
        raise lost
    return grid


def run_sweep(spec: Spec, resume: bool = False, address: Optional[str] = None,
              num_cpus: Optional[int] = None, overwrite: bool = False,
              ray_opts: Optional[RayOptions] = None,
              retry_crashed: bool = False) -> list[dict[str, Any]]:
    """Runs (or resumes, or starts with ``resume``) the sweep as one Tune experiment.

    ``retry_crashed`` retries the trials that crashed more often than ``sweep.max_retries``
    once more (their crash count starts again).

    Returns:
        One summary row per trial of this session (trial_id, status, error, hyperparameters).

    Raises:
        SweepError: Errored trials (one line each) or storage lost mid-sweep (exit 1).
        SweepInterrupted: Stopped by Ctrl-C before it finished (exit 130).
        RaybenchError: Claimed name, a live driver's lease, bad resources, unreachable Ray
            or storage (exit 2).
    """
    killpoint.mark_driver()
    spec = with_absolute_paths(spec)
    store = ResultStore(spec.results)
    store.check_writable()  # a bad store fails in seconds, before Ray starts
    if spec.model.weights:  # a file that does not fit fails here, before any trial
        from raybench.models.zoo import check_weights_fit  # torch: only with a weights file

        check_weights_fit(spec.sweep.models, spec.model.weights, spec.model.image_size)
    lease = Lease(store, spec.name)
    existed = claim_sweep(store, spec, resume, overwrite, lease)
    search.retry_crashed(spec.name, retry_crashed)
    ray_opts = ray_opts or RayOptions(address, num_cpus)
    with lease:  # heartbeats while this driver runs the sweep; released when it ends
        return _run(spec, store, lease, existed, ray_opts)


def _run(spec: Spec, store: ResultStore, lease: Lease, existed: bool,
         ray_opts: RayOptions) -> list[dict[str, Any]]:
    """The sweep once claimed: Ray, the studies, the Tune experiment, the outcome."""
    from raybench.tune.progress import Progress

    began = time.monotonic()  # the progress line's elapsed: Ray's start and the data included
    slots, plan = _start(spec, store, lease, ray_opts, existed)
    remote = cluster.is_remote(ray_opts.address)
    _prepare_data(spec, store, lease, existed)
    if not remote:  # this machine's CPUs: hours said first
        predict.warn_if_long(spec, sweep=True)
    if existed:
        _forget_moved_tune_state(spec, store)
    store.write_spec(spec.name, dump_yaml(spec))
    if existed:
        studies.repair(studies.download(spec.results, spec.name))
        damage.check_sweep(spec, store)
    else:
        studies.reset(spec.results, spec.name)
    sw = spec.sweep
    total = plan.budget * len(plan.cells)
    log.info("sweep %s: %s mode, %d cell(s), %d trial(s), %d trial slot(s) now", spec.name,
             sw.mode, len(plan.cells), total, slots)
    progress = Progress(spec.name, sw.metric, sw.metric_mode, total, sw.progress_interval_s,
                        results=spec.results, started=began)
    cluster.quiet_tune()
    ended = ledger.open_ledger(spec.name)
    tuner = make_tuner(spec, existed, progress, remote, plan,
                       functools.partial(outcome.ended_trial, spec))
    cluster.stop_ray_copying_credentials()
    start = time.monotonic()
    grid = _fit(store, tuner, pending_trials(slots, total, len(plan.cells) * plan.cap))
    claim.check_held(spec.name)  # a driver taken over while it stalled writes nothing more
    interrupted = outcome.was_interrupted(spec, time.monotonic() - start)
    summary = outcome.finalize(spec, store, grid, interrupted, ended.rows)
    finals = outcome.final_crashes(spec)
    summary = outcome.with_final_crashes(spec, store, summary, finals)
    studies.upload(spec.results, spec.name)
    store.compact(spec.name)  # a snapshot makes results.load fast on large sweeps
    outcome.check_outcome(summary, interrupted, finals, spec.sweep.max_retries)
    return summary
