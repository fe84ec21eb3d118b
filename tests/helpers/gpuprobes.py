"""Recorded GPU probe files for tests (no CUDA needed): records as the probe writes them."""
from __future__ import annotations

from pathlib import Path

from raybench.gpu.probe import GpuInfo, ProbeKey, ProbeRecord, dump_records

GIB = 1024 ** 3
#: An 80 GiB GPU of the recorded file (the torch and raybench versions are not checked for a
#: file given with --probe, only for the results root's cache).
GPU = GpuInfo("Test GPU 80GB", 80 * GIB, True, "0.0-test", "0.0-test")


def record(model: str, size: int, batch: int, peak_gib: float, images_per_s: float,
           precision: str = "bf16", context_gib: float = 0.5, gpu: GpuInfo = GPU) -> ProbeRecord:
    return ProbeRecord(ProbeKey(model, size, batch, precision), gpu, int(peak_gib * GIB),
                       int(peak_gib * 1.1 * GIB), int(context_gib * GIB), images_per_s,
                       3 * images_per_s)


def write(path: Path, *records: ProbeRecord) -> Path:
    path.write_bytes(dump_records(records))
    return path
