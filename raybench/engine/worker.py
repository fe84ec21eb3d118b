"""The Ray Train worker: the training loop with per-epoch reports and checkpoints.

:func:`run_worker` is the body shared by both ways a trial trains:

* in a ``TorchTrainer`` worker group (:func:`train_fn_per_worker`): the model is wrapped in DDP
  by ``prepare_model``, each rank trains on its shard of every epoch's seeded permutation
  (:func:`raybench.engine.loop.shard_batch_size` maps the global batch to per-worker batches),
  and ``ray.train.report`` forwards metrics to Tune through ``TuneReportCallback``;
* in-process inside the Tune trial (single worker, no worker group): the same body with
  ``ray.tune.report``.

Rank 0 writes the checkpoint (model, optimiser, epoch, history) every epoch and the results
tables at the end; after a worker failure the run restarts from the latest checkpoint.

An in-process trial keeps its checkpoint in the results store itself, one file replaced
atomically each epoch (:class:`TrialState`, ``<sweep>/_state/<trial_id>.pt``), not as a Tune
checkpoint: Tune (2.60) deletes a trial's older checkpoint as soon as it registers a new one
but writes its experiment state asynchronously, so a driver killed in between left a state
that points at a deleted checkpoint, and the restored trial failed with "Could not recover
from checkpoint as it does not exist on storage anymore". Every Tune checkpoint also forced an
experiment-state write, so those writes grew with the sweep's throughput.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import pickle
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from raybench import killpoint
from raybench import lease as leases
from raybench import schema as S
from raybench.cluster import INJECT_ENV
from raybench.config import DataConfig, Spec
from raybench.data.dataset import PreparedData, prepare_data
from raybench.engine.loop import EPOCH_COLUMNS, EpochStats, FitOptions, LoopResult, check_batch_size, fit
from raybench.engine.run import build_from_spec, run_row, timeline_fields, write_results
from raybench.models import get_model_spec, unwrap_model
from raybench.store import LEASE_DIR, STATE_DIR, CorruptResultError, ResultStore
from raybench.trial import TrialConfig, image_size, searched_values


log = logging.getLogger(__name__)
CKPT_FILE = "state.pt"
HISTORY_FILE = "history.json"


@dataclass
class WorkerContext:
    """What differs between a Train worker and an in-process trial."""

    rank: int
    world: int
    device: torch.device
    report: Callable[..., None]
    checkpoint: Optional[Any]  # a ray.train / ray.tune Checkpoint to resume from
    checkpoint_cls: Any
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module]
    own_state: bool = False  # checkpoint in the store (TrialState), not through ``report``


class TrialState:
    """A trial's own checkpoint: ``<sweep>/_state/<trial_id>.pt`` in the results store.

    One file (model, optimiser, epoch, history), replaced atomically each epoch: a reader
    sees the previous epoch's state or this one's, never a mix or a missing file.
    """

    def __init__(self, store: ResultStore, sweep: str, trial_id: str) -> None:
        self.store, self.sweep, self.name = store, sweep, f"{STATE_DIR}/{trial_id}.pt"

    def load(self) -> Optional[dict[str, Any]]:
        """The saved state; None when there is none, or when it is unreadable (cut short by a
        crash or a full disk: removed, and the trial trains again from epoch 1)."""
        data = self.store.read_file(self.sweep, self.name)
        if data is None:
            return None
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as exc:
            state = None
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        else:
            reason = "" if isinstance(state, dict) else "not a state dict"
        if reason:
            log.warning("%s is damaged (%s); the trial trains again from epoch 1",
                        self.store.location(self.sweep, self.name).uri, reason)
            self.delete()
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.store.replace_file(self.sweep, self.name, buffer.getvalue())

    def delete(self) -> None:
        self.store.delete_file(self.sweep, self.name)


_DATA_MEMO: dict[tuple, PreparedData] = {}


def prepared_data(cfg: DataConfig, size: int) -> PreparedData:
    """``prepare_data``, kept for the next trial of this process (a reused Tune actor).

    Preparing 5,000 images from the decoded cache takes about 5 s (manifest checks, split,
    gather), paid again by every trial otherwise. Keyed by the data config, the size and the
    manifest file's size and mtime; one entry, so memory stays at one prepared dataset.
    """
    stat = os.stat(cfg.manifest) if cfg.manifest and os.path.exists(cfg.manifest) else None
    key = (cfg, size, stat and (stat.st_size, stat.st_mtime_ns))
    if key not in _DATA_MEMO:
        _DATA_MEMO.clear()
        _DATA_MEMO[key] = prepare_data(cfg, size)
    return _DATA_MEMO[key]


def _restore(ckpt: Any, model: torch.nn.Module, opt: torch.optim.Optimizer,
             own: Optional[TrialState] = None) -> tuple[int, list[dict[str, Any]]]:
    state = own.load() if own is not None else None
    if state is not None:
        history = list(state["history"])
    elif ckpt is None:
        return 0, []
    else:
        with ckpt.as_directory() as folder:
            state = torch.load(Path(folder) / CKPT_FILE, map_location="cpu", weights_only=True)
            history = json.loads((Path(folder) / HISTORY_FILE).read_text())
    model.load_state_dict(state["model_state"])
    opt.load_state_dict(state["optimizer"])
    log.info("resuming from epoch %d", state[S.EPOCH])
    return int(state[S.EPOCH]), history


def _maybe_inject_failure(epoch: int, rank: int) -> None:
    """Fault injection for tests: kill this process once at the given epoch (rank 0).

    Read from ``RAYBENCH_INJECT_FAILURE`` (JSON ``{"epoch": N, "marker": path}``), the one
    place the hook exists; the marker file makes it fire once.
    """
    raw = os.environ.get(INJECT_ENV)
    if not raw or rank != 0:
        return
    inject = json.loads(raw)
    if epoch != inject[S.EPOCH]:
        return
    marker = Path(inject["marker"])
    if not marker.exists():
        marker.write_text("failed once")
        os._exit(1)


def trial_fence(results: str, sweep: str) -> Optional[leases.Fence]:
    """The fence of this process's trials of ``sweep``: the lease generation of the driver
    that started them (from :data:`raybench.lease.GENERATION_ENV`), None outside a sweep."""
    name, _, generation = os.environ.get(leases.GENERATION_ENV, "").rpartition(":")
    if name != sweep or not generation.isdigit():
        return None
    folder = ResultStore(results).location(sweep, LEASE_DIR)
    return leases.Fence(leases.Lease(folder, suffix=".json", what=f"sweep {sweep}"),
                        int(generation))


def _kill_points(epoch: int, before_report: bool) -> None:
    """The trial's test kill points (:mod:`raybench.killpoint`) around an epoch's report."""
    if before_report and epoch == 1:
        killpoint.kill_at("epoch_written")
    elif not before_report and epoch == 3:
        killpoint.kill_at("mid_trial")


#: Test hook: JSON ``{"trial": trial_id, "marker": path}``: that trial raises torch's
#: out-of-memory error once, while it holds a GPU share below 1 (the OOM-retry path).
OOM_INJECT_ENV = "RAYBENCH_INJECT_OOM"


def _maybe_inject_oom(trial: TrialConfig) -> None:
    raw = os.environ.get(OOM_INJECT_ENV)
    if not raw or not trial.gpu_share or trial.gpu_share >= 1.0:
        return
    inject = json.loads(raw)
    marker = Path(inject["marker"])
    if inject["trial"] == trial.trial_id and not marker.exists():
        marker.write_text(f"out of memory at share {trial.gpu_share}")
        raise torch.OutOfMemoryError(f"CUDA out of memory (injected at share {trial.gpu_share})")


def completed_before(store: ResultStore, spec: Spec, trial_id: str) -> bool:
    """True when this exact trial already wrote a completed run row.

    A driver killed between a trial's last write and Tune's next state snapshot leaves Tune
    believing the trial unfinished; on resume it is restored, sees its results and stops, so a
    finished trial is never trained or written twice.
    """
    try:
        row = (store.trial_rows(spec.name, S.RUNS_TABLE, trial_id) or [{}])[0]
    except CorruptResultError as exc:  # cut short by a crash: train it again
        log.warning("trial %s: its run row is unreadable (%s); training it again", trial_id,
                    str(exc).split("; ")[0] if str(exc) else type(exc).__name__)
        return False
    same = row.get(S.EPOCHS) == spec.train.epochs and all(
        row.get(key) == value for key, value in searched_values(spec).items())
    return (same and row.get(S.STATUS) == S.STATUS_COMPLETED
            and row.get(S.EPOCHS_RUN) == spec.train.epochs)


def _report_last_epoch(store: ResultStore, trial: TrialConfig, ctx: WorkerContext) -> None:
    """Reports a completed trial's last epoch again, so that a Tune trial restored from a
    snapshot taken before its first report ends with its metric (Tune refuses a trial that
    ends without the metric it optimises)."""
    spec = trial.trial_spec
    try:
        rows = store.trial_rows(spec.name, S.EPOCHS_TABLE, trial.trial_id) or []
    except CorruptResultError:  # its epochs file is unreadable: nothing to report
        rows = []
    _report_again(trial, ctx, rows)


def _report_again(trial: TrialConfig, ctx: WorkerContext, rows: list[dict[str, Any]]) -> None:
    """Reports the last of ``rows`` (epoch rows) again, from rank 0."""
    last = max(rows, key=lambda r: r.get(S.EPOCH) or 0, default=None)
    if ctx.rank == 0 and last is not None:
        ctx.report({**{k: v for k, v in last.items() if k in EPOCH_COLUMNS},
                    S.MODEL: trial.trial_spec.model.name, S.SCENARIO: trial.cell.scenario,
                    "raybench_trial": trial.trial_id})


def _epoch_callback(trial: TrialConfig, ctx: WorkerContext, store: ResultStore,
                    own: Optional[TrialState], opt: torch.optim.Optimizer,
                    history: list[dict[str, Any]]) -> Callable[[EpochStats, torch.nn.Module], None]:
    """What the loop calls after each epoch: the epoch rows, the state, Tune's report."""
    spec, trial_id = trial.trial_spec, trial.trial_id

    def on_epoch(stats: EpochStats, trained: torch.nn.Module) -> None:
        history.append(dataclasses.asdict(stats))
        metrics = {**dataclasses.asdict(stats), S.MODEL: spec.model.name,
                   S.SCENARIO: trial.cell.scenario, "raybench_trial": trial_id}
        if own is not None:  # rank 0 of one: the state goes to the store, then the report
            own.save({"model_state": unwrap_model(trained).state_dict(),
                      "optimizer": opt.state_dict(), S.EPOCH: stats.epoch, "history": history})
            store.write_table(spec.name, S.EPOCHS_TABLE, trial_id, history)
            _kill_points(stats.epoch, before_report=True)
            ctx.report(metrics)
            _kill_points(stats.epoch, before_report=False)
            _maybe_inject_failure(stats.epoch, ctx.rank)
            return
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if ctx.rank == 0:
                torch.save({"model_state": unwrap_model(trained).state_dict(),
                            "optimizer": opt.state_dict(), S.EPOCH: stats.epoch},
                           Path(folder) / CKPT_FILE)
                (Path(folder) / HISTORY_FILE).write_text(json.dumps(history))
                store.write_table(spec.name, S.EPOCHS_TABLE, trial_id, history)
                checkpoint = ctx.checkpoint_cls.from_directory(folder)
            ctx.report(metrics, checkpoint=checkpoint)
        _maybe_inject_failure(stats.epoch, ctx.rank)

    return on_epoch


def run_worker(trial: TrialConfig, ctx: WorkerContext) -> Optional[LoopResult]:
    """Trains one trial on this worker; rank 0 checkpoints and writes the results."""
    started_at = datetime.now(timezone.utc)
    spec, trial_id = trial.trial_spec, trial.trial_id
    store = ResultStore(spec.results, fence=trial_fence(spec.results, spec.name))
    own = TrialState(store, spec.name, trial_id) if ctx.own_state else None
    if completed_before(store, spec, trial_id):
        log.info("trial %s already completed; not training it again", trial_id)
        _report_last_epoch(store, trial, ctx)
        return None
    killpoint.crash_trial(trial_id)
    data = prepared_data(spec.data, image_size(spec))
    check_batch_size(data, spec.train.batch_size)
    model = build_from_spec(spec, len(data.labels)).to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=spec.train.lr,
                           weight_decay=spec.train.weight_decay)
    start, history = _restore(ctx.checkpoint, model, opt, own)
    if start >= spec.train.epochs:
        # Killed after its last epoch, before its run row: it writes its results without
        # training, and Tune must still see the metric of a trial that ends.
        _report_again(trial, ctx, history)
    model = ctx.prepare_model(model)
    on_epoch = _epoch_callback(trial, ctx, store, own, opt, history)

    spec_model = get_model_spec(spec.model.name)
    t0 = time.perf_counter()
    _maybe_inject_oom(trial)
    result = fit(model, data, spec.train, FitOptions(
        (spec_model.mean, spec_model.std), ctx.device, on_epoch=on_epoch, rank=ctx.rank,
        world=ctx.world, start_epoch=start, optimizer=opt))
    killpoint.kill_at("last_epoch")
    if ctx.rank == 0:
        result.history = [EpochStats(**h) for h in history]
        row = run_row(spec, trial_id, unwrap_model(model), result, ctx.device,
                      time.perf_counter() - t0, num_workers=ctx.world,
                      gpu_share=trial.gpu_share)
        row.update(scenario=trial.cell.scenario, roi=spec.data.roi,
                   **timeline_fields(started_at, ctx.device, ray_node()))
        # Rank 0 alone, on the unwrapped module: CAMs need a local forward, no DDP collective.
        write_results(store, spec, trial_id, row, result, data, unwrap_model(model))
        if own is not None:
            own.delete()  # the run row says it completed; the state is not needed any more
        killpoint.kill_at("trial_written")
    return result


def ray_node() -> Optional[str]:
    """The Ray node id this process runs on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # no Ray context: the host name is used instead
        return None


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """``TorchTrainer`` entry point: one data-parallel worker of a trial."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    run_worker(TrialConfig.from_ray(config), WorkerContext(
        rank=ctx.get_world_rank(), world=ctx.get_world_size(),
        device=ray.train.torch.get_device(), report=ray.train.report,
        checkpoint=ray.train.get_checkpoint(), checkpoint_cls=ray.train.Checkpoint,
        prepare_model=ray.train.torch.prepare_model))
