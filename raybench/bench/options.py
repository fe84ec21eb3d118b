"""What a benchmark run measures (:class:`BenchOptions`), a section's shape, shared helpers."""
from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from raybench.models import names

#: A target: (``">="`` or ``"<="``, bound).
Target = tuple[str, float]


@dataclass(frozen=True)
class BenchOptions:
    """What to measure and how long. ``quick`` shrinks everything to a smoke run (tests).

    Attributes:
        models: Architectures of the training comparison.
        image_size: Input side of the training comparison.
        batch_size: Mini-batch of both loops.
        threads: torch CPU threads of both loops (default: every core).
        steps: Optimiser steps per timed epoch; ``warmup`` untimed steps before.
        repeats: Timed epochs per loop (interleaved; the best is kept).
        data: The cache benchmark's images: a manifest (``.parquet``), a folder holding
            ``manifest.parquet``, or a folder of image files (searched recursively).
            ``None``: generated synthetic images (``GENERATED_IMAGES`` of them).
        cache_images: Use only the first N images (``None``: all).
        trials: Trials of the orchestration sweep.
        results_trials: Trials of the results-loading benchmark.
        sections: Names of the sections to run; empty runs every section that runs by
            default (:data:`raybench.bench.SECTIONS`).
    """

    models: tuple[str, ...] = (names.DEFAULT_MODEL, "resnet18")
    image_size: int = 224
    batch_size: int = 15
    threads: Optional[int] = None
    steps: int = 6
    warmup: int = 2
    repeats: int = 3
    data: Optional[str] = None
    cache_images: Optional[int] = None
    trials: int = 6
    results_trials: int = 10_000
    sections: tuple[str, ...] = ()
    quick: bool = False

    @classmethod
    def quick_options(cls, **kw: Any) -> "BenchOptions":
        """A smoke run of every section in about a minute (small images, few steps)."""
        base = dict(image_size=64, steps=3, warmup=1, repeats=2, cache_images=300, trials=3,
                    results_trials=200, quick=True)
        return cls(**{**base, **kw})


@dataclass(frozen=True)
class Section:
    """One benchmark section: a module of :mod:`raybench.bench` defines one as ``SECTION``.

    Attributes:
        name: What ``--only`` calls it (and its key in the report).
        run: Measures; returns the section's JSON-ready dict.
        headline: Report key -> key of the section's dict, copied to the top of the report.
        targets: Headline key -> the target it should meet.
        lines: The human-readable lines of the section's dict, when it ran
            (:func:`raybench.bench.format_report`).
        default: Runs without ``--only``; a section that takes minutes runs only when named
            (its targets are then checked only when it ran).
    """

    name: str
    run: Callable[[BenchOptions], dict[str, Any]]
    headline: dict[str, str] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    lines: Callable[[dict[str, Any]], list[str]] = lambda out: []
    default: bool = True


def machine() -> dict[str, Any]:
    """Where the numbers come from: CPU, cores, load, GPU, library versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg": [round(v, 2) for v in os.getloadavg()],
            "gpu": gpu, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "ray": _version("ray"),
            "torch_threads": torch.get_num_threads()}


def _version(package: str) -> Optional[str]:
    """An installed package's version, None where it is absent (the GPU bench needs no Ray)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def torch_threads(opts: BenchOptions) -> Iterator[int]:
    """torch's CPU threads set to ``opts.threads`` (default: every core) inside the block."""
    import torch

    threads = opts.threads or os.cpu_count() or 1
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
