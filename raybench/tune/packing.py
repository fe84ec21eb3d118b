"""A sweep's GPU shares (``scaling.gpus_per_worker: auto``): probe, cache, shares, OOM retry.

Before the first trial the driver lists the sweep's workloads (model x input side x batch
size x precision), takes their records from a recorded probe file, the results root's probe
cache, or a probe on a GPU of the cluster (:mod:`raybench.gpu.probe`), and gives each trial
the share :func:`raybench.gpu.packing.share` computes. A workload that does not fit one GPU
stops the sweep with one line before any trial. A packed trial that runs out of GPU memory
anyway is retried once alone on a GPU (Tune's retry of a failed trial, given a whole GPU by
:class:`OomRetry`), and the cache records that its share was too small.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ray.tune import Callback

from raybench import schema as S
from raybench.config import Spec
from raybench.errors import ConfigError
from raybench.gpu import packing
from raybench.gpu.probe import (
    GpuInfo,
    ProbeCache,
    ProbeKey,
    ProbeRecord,
    cluster_gpu,
    lookup,
    probe_on_ray,
    read_probe_file,
)
from raybench.trial import GPU_SHARE, cell_spec, cells, image_size

log = logging.getLogger(__name__)

#: What marks a trial's failure as running out of GPU memory (torch's exception class).
OOM_MARK = "OutOfMemoryError"


@dataclass(frozen=True)
class GpuPlan:
    """The sweep's GPU, its workloads' records and each workload's share.

    Attributes:
        gpu: The GPU the records were measured on.
        records: By workload.
        shares: By workload: the GPU share per worker of its trials.
        data_bytes: By workload: decoded splits kept on the GPU (the largest of its cells).
        precision: The sweep's precision as trials resolve it on this GPU.
    """

    gpu: GpuInfo
    records: Mapping[ProbeKey, ProbeRecord]
    shares: Mapping[ProbeKey, float]
    data_bytes: Mapping[ProbeKey, int] = field(default_factory=dict)
    precision: str = "fp32"

    def key(self, model: str, size: int, batch: int) -> ProbeKey:
        return ProbeKey(model, size, batch, self.precision)

    def need(self, key: ProbeKey) -> packing.Need:
        r = self.records[key]
        return packing.Need(r.peak_allocated_bytes, r.context_bytes, self.data_bytes.get(key, 0))


def is_auto(spec: Spec) -> bool:
    """Whether this sweep's GPU shares come from measured memory."""
    return spec.scaling.use_gpu and spec.scaling.gpus_per_worker == "auto"


def resolved_precision(spec: Spec, gpu: GpuInfo) -> str:
    """``train.precision`` as a trial on ``gpu`` resolves it (``auto``: bf16 where supported)."""
    if spec.train.precision != "auto":
        return spec.train.precision
    return "bf16" if gpu.bf16 else "fp32"


def workloads(spec: Spec, batch_sizes: Mapping[str, tuple[int, ...]], precision: str
              ) -> dict[ProbeKey, int]:
    """Every workload of the sweep and the most bytes of decoded splits one of its cells keeps
    on the GPU (0 when ``train.data_on_device`` is false)."""
    from raybench.data.dataset import split_sizes

    on_device = spec.train.data_on_device is not False
    images: dict[Any, int] = {}
    out: dict[ProbeKey, int] = {}
    for cell in cells(spec):
        cs = cell_spec(spec, cell)
        size = image_size(cs)
        if on_device and cs.data not in images:
            images[cs.data] = sum(split_sizes(cs.data).values())
        data = images.get(cs.data, 0) * size * size  # uint8 (N, S, S)
        for batch in batch_sizes.get(cell.name, (cs.train.batch_size,)):
            key = ProbeKey(cell.model, size, batch, precision)
            out[key] = max(out.get(key, 0), data)
    return out


def _floored(record: Optional[ProbeRecord], cached: list[ProbeRecord]
             ) -> Optional[ProbeRecord]:
    """``record`` with the highest ``min_share`` the cache holds for its workload on its GPU
    (a share that ran out of memory is never given again, whichever file the record is from)."""
    if record is None:
        return None
    floors = [r.min_share for r in cached if r.key == record.key and r.gpu.name == record.gpu.name]
    return dataclasses.replace(record, min_share=max([record.min_share, *floors]))


def _records(spec: Spec, keys: list[ProbeKey], gpu: GpuInfo, given: list[ProbeRecord],
             remote: bool) -> dict[ProbeKey, ProbeRecord]:
    """Each workload's record: the given file's, the cache's, else probed now (and cached)."""
    cache = ProbeCache(spec.results)
    cached = cache.load()
    found = {k: _floored(lookup(given, k, gpu, versions=False) or lookup(cached, k, gpu),
                         cached) for k in keys}
    missing = [k for k, r in found.items() if r is None]
    if missing and given:
        log.info("the probe file has no record of %s; probing them",
                 ", ".join(k.label() for k in missing))
    if missing:
        fresh = probe_on_ray(missing, remote)
        cache.add(fresh)
        found.update({r.key: r for r in fresh})
    else:
        log.info("GPU probe: %d workload(s) on %s from %s", len(keys), gpu.name,
                 "the probe file" if given else "the probe cache")
    return {k: r for k, r in found.items() if r is not None}


def plan_gpu(spec: Spec, batch_sizes: Mapping[str, tuple[int, ...]],
             probe_file: Optional[str] = None, remote: bool = False) -> GpuPlan:
    """The sweep's :class:`GpuPlan` (probing what neither ``probe_file`` nor the cache holds).

    Raises:
        ConfigError: A workload that does not fit one GPU, or a probe that cannot run (one
            line, before any trial).
    """
    given = read_probe_file(probe_file) if probe_file else []
    if probe_file and not given:
        raise ConfigError(f"--probe {probe_file} holds no records")
    gpu = given[0].gpu if given else cluster_gpu(remote)
    precision = resolved_precision(spec, gpu)
    data = workloads(spec, batch_sizes, precision)
    records = _records(spec, sorted(data), gpu, given, remote)
    base = GpuPlan(gpu, records, {}, data, precision)
    shares = {}
    for key in sorted(data):
        need = base.need(key)
        packing.check_fits(key.model, need, gpu.name, gpu.memory_bytes)
        shares[key] = packing.share(need, gpu.memory_bytes, records[key].min_share)
    fixed = ddp_checked(spec) if not is_auto(spec) else None
    if fixed is not None:  # an explicit number (or DDP's whole GPUs) overrides the measure
        shares = {key: fixed for key in shares}
    plan = dataclasses.replace(base, shares=shares)
    for key, value in shares.items():
        log.info("GPU share %s: %.3g (peak %.2f GiB of %.0f GiB %s)", key.label(), value,
                 records[key].peak_allocated_bytes / packing.GIB, gpu.memory_bytes / packing.GIB,
                 gpu.name)
    return plan


def plan_sweep(spec: Spec, gpus: Optional[int] = None, probe_file: Optional[str] = None,
               address: Optional[str] = None) -> Any:
    """``raybench plan``: the sweep's :class:`raybench.predict.Prediction` on ``gpus`` GPUs.

    Without ``probe_file`` the records come from the results root's cache or a probe on the
    cluster (``address``, else an embedded Ray), which needs a GPU there.
    """
    from raybench import cluster, predict
    from raybench.tune import feasible

    batch_sizes = feasible.batch_sizes(spec, feasible.train_sizes(spec))
    gpu_spec = dataclasses.replace(spec, scaling=dataclasses.replace(spec.scaling, use_gpu=True))
    if not probe_file:
        cluster.ensure_ray(address)
    plan = plan_gpu(gpu_spec, batch_sizes, probe_file, cluster.is_remote(address))
    return predict.predict(gpu_spec, plan, batch_sizes, gpus or (
        cluster.gpu_count() if not probe_file else 1))


def ddp_checked(spec: Spec) -> Optional[float]:
    """The explicit share per worker after the DDP rule (:func:`raybench.gpu.packing.ddp_share`);
    None for ``auto`` trials of one worker (their shares come from the probe)."""
    s = spec.scaling
    if not s.use_gpu:
        return None
    auto = s.gpus_per_worker == "auto"
    explicit = None if auto else float(s.gpus_per_worker or 1.0)
    return packing.ddp_share(s.num_workers, explicit, auto)


def share_of(plan: Optional[GpuPlan], spec: Spec, model: str, batch: int) -> Optional[float]:
    """The GPU share per worker of a trial (``spec`` is its cell's spec); None: the spec's."""
    fixed = ddp_checked(spec)
    if fixed is not None or plan is None:
        return fixed
    return plan.shares.get(plan.key(model, image_size(spec), batch))


@dataclass(frozen=True)
class TrialResources:
    """Tune's resource request of an in-process trial: its CPUs and its config's GPU share."""

    cpus: float
    default_gpu: float

    def __call__(self, config: Mapping[str, Any]) -> Any:
        from ray.tune import PlacementGroupFactory

        share = config.get(GPU_SHARE) or self.default_gpu
        return PlacementGroupFactory([{"CPU": self.cpus, **({"GPU": share} if share else {})}])


def _ran_out_of_memory(trial: Any) -> bool:
    """Whether the trial's latest failure (Tune's error file) was torch's out-of-memory."""
    try:
        with open(trial.error_file, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except (OSError, TypeError):
        return False
    return OOM_MARK in text.rsplit("Failure #", 1)[-1]


class OomRetry(Callback):
    """A Tune callback: a packed trial that ran out of GPU memory is retried alone on a GPU.

    Tune retries a failed trial (``scaling.max_failures`` >= 1) with the resources it had;
    before it does, this gives the trial a whole GPU, logs it, and corrects the probe cache
    (the workload's ``min_share`` becomes its failed share plus one step).
    """

    def __init__(self, results: str, plan: GpuPlan) -> None:
        self.results, self.plan = results, plan

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        share = trial.config.get(GPU_SHARE)
        if not share or share >= 1.0 or not _ran_out_of_memory(trial):
            return
        log.warning("trial %s ran out of GPU memory at share %g; retrying it alone on a GPU "
                    "(share 1.0)", trial.config.get(S.TRIAL_ID, trial.trial_id), share)
        trial.config[GPU_SHARE] = 1.0
        bundles: list[dict[str, float]] = trial.placement_group_factory.bundles
        cpus = bundles[0].get("CPU", 1.0) if bundles else 1.0
        trial.update_resources(TrialResources(cpus, 1.0)(trial.config))
        self.correct(trial.config, share)

    def correct(self, config: Mapping[str, Any], failed: float) -> None:
        """Records in the probe cache that ``failed`` was too small for the trial's workload."""
        from raybench.trial import TrialConfig

        t = TrialConfig.from_ray(config)
        key = self.plan.key(t.cell.model, image_size(t.trial_spec), t.trial_spec.train.batch_size)
        record = self.plan.records.get(key)
        if record is None:
            return
        fixed = dataclasses.replace(record, gpu=self.plan.gpu,
                                    min_share=min(1.0, failed + packing.STEP))
        ProbeCache(self.results).add([fixed])
