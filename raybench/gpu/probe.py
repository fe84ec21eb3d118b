"""The GPU probe: a few training steps of each workload on a GPU of the cluster, cached.

A workload is (model, input side, batch size, precision). The probe is a Ray task with
``num_gpus=1`` that runs :func:`raybench.engine.measure.measure_training` (the code
``raybench bench`` times) and returns a :class:`ProbeRecord`: the peak allocated memory, the
CUDA context of its process, and training and evaluation images/s. Records are cached in the
results root (``<root>/_probes/probes.json``), keyed by the workload, the GPU's name and the
torch and raybench versions, so a later sweep on the same kind of GPU skips the probe. A
recorded file (a copy of that JSON) can stand in for the probe where there is no GPU
(``raybench plan --probe FILE``, ``raybench sweep --probe FILE``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from raybench import storage
from raybench.errors import ConfigError

log = logging.getLogger(__name__)

CACHE_DIR = "_probes"
CACHE_FILE = "probes.json"
#: Steps of a probe (after ``PROBE_WARMUP``): enough for a stable peak and a rate.
PROBE_STEPS = 8
PROBE_WARMUP = 3


@dataclass(frozen=True, order=True)
class ProbeKey:
    """One workload: what decides a trial's memory and speed on a given GPU."""

    model: str
    image_size: int
    batch_size: int
    precision: str

    def label(self) -> str:
        return f"{self.model} {self.image_size}px batch {self.batch_size} {self.precision}"


@dataclass(frozen=True)
class GpuInfo:
    """The cluster's GPU as the probe sees it (and the versions that key the cache)."""

    name: str
    memory_bytes: int
    bf16: bool
    torch_version: str
    raybench_version: str


@dataclass(frozen=True)
class ProbeRecord:
    """A measured workload on one GPU (one entry of the cache).

    ``min_share`` is set when a packed trial of this workload ran out of memory anyway: the
    share it had plus one step, so the next sweep packs it looser.
    """

    key: ProbeKey
    gpu: GpuInfo
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    context_bytes: int
    train_images_per_s: float
    eval_images_per_s: float
    min_share: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "ProbeRecord":
        return cls(**{**row, "key": ProbeKey(**row["key"]), "gpu": GpuInfo(**row["gpu"])})


def _same_gpu(a: GpuInfo, b: GpuInfo, versions: bool) -> bool:
    if a.name != b.name:
        return False
    return not versions or (a.torch_version, a.raybench_version) == (
        b.torch_version, b.raybench_version)


def parse_records(data: bytes, where: str) -> list[ProbeRecord]:
    """The records of a probe file (``{"records": [...]}``); one line when it is not one."""
    try:
        rows = json.loads(data)["records"]
        return [ProbeRecord.from_json(r) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{where} is not a raybench probe file ({type(exc).__name__}: "
                          f"{str(exc)[:80]}); expected {{\"records\": [...]}} as written to "
                          f"<results>/{CACHE_DIR}/{CACHE_FILE}") from None


def dump_records(records: Iterable[ProbeRecord]) -> bytes:
    return json.dumps({"records": [r.to_json() for r in records]}, indent=1).encode()


def read_probe_file(path: str) -> list[ProbeRecord]:
    """A recorded probe file (local path or URI)."""
    loc = storage.resolve(path)
    if not storage.exists(loc):
        raise ConfigError(f"--probe {path}: no such file")
    return parse_records(storage.read_bytes(loc), path)


class ProbeCache:
    """The probe records of a results root, read and replaced through the storage layer."""

    def __init__(self, root: str) -> None:
        self.loc = storage.resolve(root).join(CACHE_DIR, CACHE_FILE)

    def load(self) -> list[ProbeRecord]:
        if not storage.exists(self.loc):
            return []
        try:
            return parse_records(storage.read_bytes(self.loc), self.loc.uri)
        except ConfigError as exc:  # a damaged cache is measured again, never trusted
            log.warning("%s; probing again", exc)
            return []

    def add(self, records: Iterable[ProbeRecord]) -> None:
        """Stores ``records``, replacing entries of the same workload and GPU."""
        new = list(records)
        keep = [r for r in self.load() if not any(
            r.key == n.key and _same_gpu(r.gpu, n.gpu, True) for n in new)]
        storage.write_bytes_atomic(self.loc, dump_records(keep + new))


def lookup(records: Iterable[ProbeRecord], key: ProbeKey, gpu: Optional[GpuInfo],
           versions: bool = True) -> Optional[ProbeRecord]:
    """The record of ``key`` on ``gpu`` (any GPU when None); the last one written wins."""
    found = None
    for r in records:
        if r.key == key and (gpu is None or _same_gpu(r.gpu, gpu, versions)):
            found = r
    return found


# --- on the GPU node (inside Ray tasks) ---------------------------------------------------
def _need_cuda() -> None:
    import socket

    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"a GPU probe needs a CUDA device, and node {socket.gethostname()} "
                          "has none visible; give a recorded probe (--probe FILE) or an "
                          "explicit scaling.gpus_per_worker")


def gpu_info_here() -> GpuInfo:
    """This process's GPU (index 0 of what Ray made visible)."""
    import torch

    from raybench.version import __version__ as raybench_version

    _need_cuda()
    props = torch.cuda.get_device_properties(0)
    return GpuInfo(props.name, int(props.total_memory), bool(torch.cuda.is_bf16_supported()),
                   torch.__version__, raybench_version)


def probe_here(key: ProbeKey) -> ProbeRecord:
    """Measures ``key`` on this process's GPU (the body of the probe task)."""
    import torch

    from raybench.config import TrainConfig
    from raybench.engine.measure import Workload, measure_training

    gpu = gpu_info_here()
    device = torch.device("cuda", 0)
    torch.zeros(1, device=device)  # the CUDA context exists from here on
    free, total = torch.cuda.mem_get_info(device)
    # What the GPU holds beyond this process's tensors: its CUDA context (and any other
    # process's memory on a shared GPU, which errs on the safe side).
    context = max(int(total - free - torch.cuda.memory_reserved(device)), 0)
    cfg = TrainConfig(device="cuda", precision=key.precision)  # type: ignore[arg-type]
    m = measure_training(Workload(key.model, key.image_size, key.batch_size, PROBE_STEPS,
                                  PROBE_WARMUP, cfg), device)
    torch.cuda.empty_cache()  # the worker lives on (Ray reuses it): its cache must not hold
    # GPU memory the packed trials were promised
    log.info("probe %s on %s: peak %.2f GiB, %.0f images/s", key.label(), gpu.name,
             m.peak_allocated_bytes / 1024 ** 3, m.train_images_per_s)
    return ProbeRecord(key, gpu, m.peak_allocated_bytes, m.peak_reserved_bytes, context,
                       m.train_images_per_s, m.eval_images_per_s)


# --- on the driver --------------------------------------------------------------------------
def _ray_get(refs: Any, what: str) -> Any:
    import ray

    from raybench.errors import final_error

    try:
        return ray.get(refs)
    except Exception as exc:
        # Ray's error text is the task's traceback; its last line is the exception's own.
        inner = getattr(exc, "cause", None) or exc
        last = (str(inner).strip().splitlines() or [type(inner).__name__])[-1]
        if final_error(exc) is not None:
            raise ConfigError(last.split("Error: ", 1)[-1]) from None
        raise ConfigError(f"the GPU probe failed ({what}): {last}") from None


def _check_gpus(remote: bool, what: str) -> None:
    """One line instead of a Ray task that would wait forever for a GPU that never comes."""
    import ray

    if not ray.is_initialized() or (not remote and not ray.cluster_resources().get("GPU")):
        raise ConfigError(f"{what}a GPU probe needs a GPU and this Ray has none; give a "
                          "recorded probe file (--probe FILE) or an explicit "
                          "scaling.gpus_per_worker")


def cluster_gpu(remote: bool = False) -> GpuInfo:
    """The GPU of the cluster (one Ray task holding a whole GPU).

    Raises:
        ConfigError: The embedded local Ray (``remote`` false) has no GPU: the task would wait
            forever. A remote cluster's autoscaler may still add one, so there it waits.
    """
    import ray

    _check_gpus(remote, "")

    return _ray_get(ray.remote(num_gpus=1, max_retries=0)(gpu_info_here).remote(),
                    "reading the GPU")  # type: ignore[no-any-return]


def probe_on_ray(keys: list[ProbeKey], remote: bool = False) -> list[ProbeRecord]:
    """Each workload measured by its own Ray task holding a whole GPU (in parallel across the
    cluster's GPUs; Ray reuses the worker processes, so torch is imported once per GPU)."""
    import ray

    _check_gpus(remote, f"no record of {keys[0].label()}"
                        f"{f' and {len(keys) - 1} more' if len(keys) > 1 else ''}: ")

    task = ray.remote(num_gpus=1, max_retries=0)(probe_here)
    log.info("probing %d workload(s) on the cluster's GPUs: %s", len(keys),
             ", ".join(k.label() for k in keys))
    return _ray_get([task.remote(k) for k in keys], "measuring")  # type: ignore[no-any-return]
