"""Throughput benchmarks, side by side in one run: raybench vs plain PyTorch, data, orchestration.

``raybench bench [--json] [--quick]`` measures, on this machine:

* ``train_ratio``: images/s of raybench's worker loop (:func:`raybench.engine.loop.train_one_epoch`
  on uint8 images normalised per batch) over a minimal plain PyTorch loop (pre-normalised float
  tensors, the same model, batch, image size and threads); interleaved, best of ``repeats``;
* ``cache_speedup``: an epoch read from the decoded cache over decoding every image each epoch
  (``--data``: a manifest or a folder of images; by default images generated in a temporary
  folder, 224 px synthetic chest X-rays, so nothing outside the repository is needed), and ``cache_peak_memory_ratio``: peak RSS growth of a fresh process
  that builds and reads the cache, over the raw uint8 array;
* ``trial_overhead_s``: a sweep of short single-worker in-process trials on local Ray, wall
  time minus the trials' training time (epoch seconds), per trial;
* CAM images/s per model (when :mod:`raybench.cam` exists);
* ``results_load_s``: :func:`raybench.results.load` of a sweep of 10,000 trials (snapshots);
* ``sweep_wall_ratio`` and ``sweep_utilisation`` (``--only sweep``): on local Ray with 4
  logical CPUs, an Optuna sweep of 4 cells x 4 samples of equal tiny trials against a
  ``paper`` grid of 16 equal trials: wall time optuna / grid, and the Optuna sweep's trial
  time / (4 slots x its span from first trial start to last trial end).

Performance claims live here and in ``benchmarks/RESULTS.md``, never in timed tests.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from raybench import schema as S
from raybench.models import names

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GENERATED_SIDE = 224  # generated images: the side of the Kermany JPEGs this was first run on
GENERATED_IMAGES = 1000  # generated images of a full run (quick: ``cache_images``)
SECTIONS = ("train", "cache", "trials", "cam", "results")
#: Sections run only when asked for (``--only sweep``): the sweep comparison takes minutes.
EXTRA_SECTIONS = ("sweep",)
TARGETS = {"train_ratio": (">=", 0.95), "cache_speedup": (">=", 10.0),
           "trial_overhead_s": ("<=", 1.0), "cache_peak_memory_ratio": ("<=", 1.2)}
SWEEP_TARGETS = {"sweep_wall_ratio": ("<=", 1.15), "sweep_utilisation": (">=", 0.9)}
CACHE_BATCH = 15  # the paper's mini-batch


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
        sections: Which of :data:`SECTIONS` to run.
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
    sections: tuple[str, ...] = SECTIONS
    quick: bool = False

    @classmethod
    def quick_options(cls, **kw: Any) -> "BenchOptions":
        """A smoke run of every section in about a minute (small images, few steps)."""
        base = dict(image_size=64, steps=3, warmup=1, repeats=2, cache_images=300, trials=3,
                    results_trials=200, quick=True)
        return cls(**{**base, **kw})


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
    import ray

    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg": [round(v, 2) for v in os.getloadavg()],
            "gpu": gpu, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "ray": ray.__version__,
            "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------- (a) training loop vs plain PyTorch


def plain_epoch(model: Any, opt: Any, x: Any, y: Any, batch: int, seed: int,
                bf16: bool = False) -> int:
    """The minimal hand-written loop: shuffled mini-batches of ready float tensors."""
    import torch
    import torch.nn.functional as F

    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(x.device)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(order)


def _train_pair(name: str, opts: BenchOptions, device: Any, cfg: Any = None) -> dict[str, Any]:
    """Times raybench's ``train_one_epoch`` and :func:`plain_epoch` on one model, interleaved.

    ``cfg`` (a :class:`raybench.config.TrainConfig`) sets precision, channels_last and
    data_on_device for raybench; the plain loop gets the same precision and layout, with its
    float inputs prepared up front on ``device``.
    """
    import torch

    from raybench.config import TrainConfig
    from raybench.data.dataset import SplitData
    from raybench.data.transforms import to_model_input
    from raybench.engine.loop import optimize_model, place_data, seed_everything, train_one_epoch
    from raybench.models import build_model, get_model_spec

    spec = get_model_spec(name)
    norm = (spec.mean, spec.std)
    n, classes = opts.batch_size * opts.steps, 4
    cfg = cfg or TrainConfig(device=device.type)
    cfg = dataclasses.replace(cfg, batch_size=opts.batch_size, seed=0)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, opts.image_size, opts.image_size), dtype=torch.uint8,
                           generator=gen)  # (N, S, S), as the decoded cache holds them
    targets = torch.randint(0, classes, (n,), generator=gen)
    data = place_data(SplitData(images, targets, [str(i) for i in range(n)]), device,
                      cfg.data_on_device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x_plain = to_model_input(images.to(device), *norm, memory_format=fmt)  # (N, 3, S, S)
    y_plain = targets.to(device)
    models, optims = [], []
    for _ in range(2):
        seed_everything(0)
        model = optimize_model(build_model(name, classes, image_size=opts.image_size).to(device),
                               cfg)
        models.append(model)
        optims.append(torch.optim.Adam(model.parameters(), lr=3e-4))

    def run_raybench(epoch: int, steps: Optional[int] = None) -> int:
        m = n if steps is None else steps * opts.batch_size
        part = SplitData(data.images[:m], data.targets[:m], data.image_ids[:m])
        return train_one_epoch(models[0], optims[0], part, norm, cfg, device, epoch)[1]

    def run_plain(epoch: int, steps: Optional[int] = None) -> int:
        m = n if steps is None else steps * opts.batch_size
        return plain_epoch(models[1], optims[1], x_plain[:m], y_plain[:m], opts.batch_size, epoch,
                           bf16=cfg.precision == "bf16")

    run_raybench(0, opts.warmup)
    run_plain(0, opts.warmup)
    times: dict[str, list[float]] = {"raybench": [], "plain": []}
    for r in range(opts.repeats):  # ABBA order: both loops see the same drift in machine load
        order = [("raybench", run_raybench), ("plain", run_plain)]
        for key, fn in (order if r % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            seen = fn(r + 1)
            _sync(device)
            times[key].append(time.perf_counter() - start)
            assert seen == n, f"{key} trained {seen} images, expected {n}"
    best = {k: min(v) for k, v in times.items()}
    return {"raybench_images_per_s": n / best["raybench"], "plain_images_per_s": n / best["plain"],
            "ratio": best["plain"] / best["raybench"],
            "raybench_s": [round(t, 4) for t in times["raybench"]],
            "plain_s": [round(t, 4) for t in times["plain"]]}


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(opts: BenchOptions, device: str = "cpu") -> dict[str, Any]:
    """``train_ratio`` (the lowest ratio over the models) and per-model images/s."""
    import torch

    threads = opts.threads or os.cpu_count() or 1
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        per_model = {m: _train_pair(m, opts, torch.device(device)) for m in opts.models}
    finally:
        torch.set_num_threads(previous)
    ratios = [r["ratio"] for r in per_model.values()]
    return {"train_ratio": min(ratios),
            "train_ratio_geomean": math.exp(statistics.fmean(math.log(r) for r in ratios)),
            "models": per_model,
            "settings": {S.IMAGE_SIZE: opts.image_size, S.BATCH_SIZE: opts.batch_size,
                         "threads": threads, "steps": opts.steps, "warmup": opts.warmup,
                         "repeats": opts.repeats, S.DEVICE: device, S.PRECISION: "fp32"}}


# ---------------------------------------------------------------- (b) decoded cache vs decoding


def epoch_decode(files: Sequence[Path], order: np.ndarray, size: int) -> int:
    """One epoch that decodes every image (JPEG decode, grayscale, resize) in mini-batches."""
    import torch

    from raybench.data.images import decode_image

    n = 0
    for start in range(0, len(order), CACHE_BATCH):
        batch = np.stack([decode_image(files[i], size) for i in order[start:start + CACHE_BATCH]])
        n += len(torch.from_numpy(batch))
    return n


def epoch_cache(images: np.ndarray, order: np.ndarray) -> int:
    """One epoch gathered from the memory-mapped cache entry in the same mini-batches."""
    import torch

    n = 0
    for start in range(0, len(order), CACHE_BATCH):
        idx = np.sort(order[start:start + CACHE_BATCH])
        n += len(torch.from_numpy(np.ascontiguousarray(images[idx])))
    return n


def _rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRss:
    """Samples this process's RSS in a thread; ``peak`` is the highest value seen."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, _rss_bytes())

    def __enter__(self) -> "_PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def cache_run(data: Optional[str], size: int, limit: Optional[int], decode_epochs: int,
              cache_epochs: int) -> dict[str, Any]:
    """Builds a decoded cache of ``data`` in a temp dir and times decode vs cache epochs.

    Run it in a fresh process (:func:`bench_cache` does) so the RSS figures are its own.
    """
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as images_tmp:
        df, files, origin = bench_images(data, Path(images_tmp), limit or GENERATED_IMAGES)
        df, files = (df.iloc[:limit].reset_index(drop=True), files[:limit]) if limit else (df, files)
        out = _time_cache(df, files, size, decode_epochs, cache_epochs)
    return {"data": origin, **out}


def _time_cache(df: Any, files: list[Path], size: int, decode_epochs: int,
                cache_epochs: int) -> dict[str, Any]:
    """Builds and reopens the cache entry, then times decode and cache epochs, interleaved."""
    from raybench.data.cache import decoded_images

    order = np.random.default_rng(0).permutation(len(files))
    raw = len(files) * size * size
    with tempfile.TemporaryDirectory() as tmp:
        base = _rss_bytes()
        with _PeakRss() as peak:
            start = time.perf_counter()
            entry = decoded_images(df, files, size, tmp)
            build = time.perf_counter() - start
            start = time.perf_counter()
            entry = decoded_images(df, files, size, tmp)  # what every later trial does
            reopen = time.perf_counter() - start
            dec, cache = [], []
            for _ in range(decode_epochs):  # interleaved: both see the same machine load
                start = time.perf_counter()
                epoch_decode(files, order, size)
                dec.append(time.perf_counter() - start)
                for _ in range(cache_epochs):
                    start = time.perf_counter()
                    epoch_cache(entry.images, order)
                    cache.append(time.perf_counter() - start)
            entry_bytes = os.path.getsize(entry.path)
    d, c = statistics.median(dec), statistics.median(cache)
    return {"images": len(files), "size": size, "build_s": build, "reopen_s": reopen,
            "decode_epoch_s": d, "cache_epoch_s": c, "decode_images_per_s": len(files) / d,
            "cache_images_per_s": len(files) / c, "cache_speedup": d / c,
            "raw_bytes": raw, "entry_bytes": entry_bytes, "peak_rss_growth_bytes": peak.peak - base,
            "cache_peak_memory_ratio": (peak.peak - base) / raw}


def bench_images(data: Optional[str], tmp: Path, count: int) -> tuple[Any, list[Path], str]:
    """The cache benchmark's images: (manifest-like frame, local files, where they came from).

    Args:
        data: A manifest, a folder with ``manifest.parquet``, a folder of image files, or
            ``None`` to generate ``count`` synthetic images under ``tmp``.
        tmp: A scratch folder for generated images.
        count: How many images to generate.
    """
    from raybench.data import manifest as mf

    if data is None:
        from raybench.data.synth import synthesize

        df = synthesize(tmp / "generated", per_class=math.ceil(count / 4), size=GENERATED_SIDE,
                        seed=0)
        files = mf.image_files(tmp / "generated" / "manifest.parquet", df[S.PATH].tolist())
        return df, files, f"{len(df)} generated {GENERATED_SIDE} px PNGs"
    path = Path(data)
    manifest = path / "manifest.parquet" if path.is_dir() else path
    if manifest.is_file():
        df = mf.read_manifest(manifest)
        return df, mf.image_files(manifest, df[S.PATH].tolist()), str(manifest)
    return _folder_images(path)


def _folder_images(root: Path) -> tuple[Any, list[Path], str]:
    """Every image file below ``root``, keyed by relative path, size and mtime (no hashing:
    the benchmark builds its cache entry in a fresh folder, so the key only has to be unique)."""
    import pandas as pd

    from raybench.errors import ConfigError

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"bench --data {root}: no {'/'.join(IMAGE_SUFFIXES)} images found")
    rel = [p.relative_to(root).as_posix() for p in files]
    stats = [p.stat() for p in files]
    df = pd.DataFrame({S.IMAGE_ID: rel, S.SHA256: [f"{s.st_size}-{s.st_mtime_ns}" for s in stats]})
    return df, files, str(root)


def check_data(data: Optional[str]) -> None:
    """Refuses a ``--data`` that is neither a manifest file nor a folder, before any section runs.

    Raises:
        ConfigError: ``data`` does not exist, is a file that is not ``.parquet``, or is a
            folder with neither a manifest nor an image.
    """
    from raybench.errors import ConfigError

    if data is None:
        return
    path = Path(data)
    if not path.exists():
        raise ConfigError(f"bench --data {data}: no such file or folder")
    if path.is_file() and path.suffix != ".parquet":
        raise ConfigError(f"bench --data {data}: expected a manifest (.parquet) or a folder "
                          "of images")
    if path.is_dir() and not (path / "manifest.parquet").is_file() and not any(
            p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*")):
        raise ConfigError(f"bench --data {data}: no {'/'.join(IMAGE_SUFFIXES)} images found")


def bench_cache(opts: BenchOptions) -> dict[str, Any]:
    """``cache_speedup`` and ``cache_peak_memory_ratio``, measured in a fresh process."""
    import multiprocessing

    epochs = (1, 3) if opts.quick else (2, 3)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(cache_run, opts.data, opts.image_size if opts.quick else 224,
                           opts.cache_images, *epochs).result()


# ---------------------------------------------------------------- (c) orchestration overhead


def trial_bench_spec(root: Path, trials: int) -> Any:
    """A sweep of ``trials`` short single-worker trials (cnnx, 32 px, one epoch each)."""
    from raybench.config import load_spec

    seeds = ", ".join(str(s) for s in range(trials))
    return load_spec(None, [
        "name=trialbench", f"results={root / 'results'}", f"data.cache_dir={root / 'cache'}",
        "model.image_size=32", "data.synthetic.per_class=12", "data.synthetic.size=32",
        "train.epochs=1", "train.batch_size=8", "train.num_threads=1", "sweep.mode=paper",
        "sweep.models=[cnnx]", f"sweep.seeds=[{seeds}]", "scaling.max_concurrent_trials=1"])


def bench_trials(opts: BenchOptions) -> dict[str, Any]:
    """``trial_overhead_s``: (sweep wall time - trials' epoch seconds) / trials, serial trials."""
    import pandas as pd
    import ray

    from raybench.data.dataset import prepare_data
    from raybench.cluster import ensure_ray
    from raybench.tune.sweep import run_sweep

    started = not ray.is_initialized()
    start = time.perf_counter()
    ensure_ray(None)
    ray_init = time.perf_counter() - start
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spec = trial_bench_spec(Path(tmp), opts.trials)
            prepare_data(spec.data, 32)  # the synthetic set and its cache: once per node
            start = time.perf_counter()
            summary = run_sweep(spec)
            wall = time.perf_counter() - start
            epochs = pd.read_parquet(Path(tmp) / "results" / spec.name / S.EPOCHS_TABLE)
            runs = pd.read_parquet(Path(tmp) / "results" / spec.name / "runs")
    finally:
        if started:
            ray.shutdown()
    train_s = float(epochs[S.SECONDS].sum())
    return {"trial_overhead_s": (wall - train_s) / opts.trials, "trials": opts.trials,
            "completed": sum(s[S.STATUS] == "completed" for s in summary),
            "sweep_wall_s": wall, "training_s": train_s, "ray_init_s": ray_init,
            "trial_wall_s_mean": float(runs[S.WALL_S].mean()), "concurrency": 1}


# ---------------------------------------------------------------- (c2) one experiment per sweep

SWEEP_SLOTS = 4


def sweep_bench_specs(root: Path, cells: int = 4, samples: int = 4) -> dict[str, Any]:
    """Equal trials two ways: Optuna (``cells`` x ``samples``, a one-point space) and a grid."""
    from raybench.config import load_spec

    base = [f"results={root / 'results'}", f"data.cache_dir={root / 'cache'}",
            # Trials of a few seconds: long against a slot's first-trial stagger, still tiny.
            "model.image_size=32", "data.synthetic.per_class=48", "data.synthetic.size=32",
            "train.epochs=4", "train.batch_size=8", "train.num_threads=1", "cam.enabled=false",
            "sweep.models=[cnnx]", "sweep.asha=false", "sweep.progress_interval_s=600"]
    seeds = lambda n: "[" + ", ".join(str(i) for i in range(n)) + "]"  # noqa: E731
    optuna = load_spec(None, base + [
        "name=bench-optuna", "sweep.mode=optuna", f"sweep.seeds={seeds(cells)}",
        f"sweep.num_samples={samples}", "sweep.space.lr_min=3e-4", "sweep.space.lr_max=3.0001e-4",
        "sweep.space.batch_sizes=[8]", "sweep.space.options.stride=[3]"])
    grid = load_spec(None, base + ["name=bench-grid", "sweep.mode=paper",
                                   f"sweep.seeds={seeds(cells * samples)}"])
    return {"optuna": optuna, "grid": grid}


def _timed_sweep(spec: Any) -> tuple[float, Any]:
    from raybench.results import load
    from raybench.tune.sweep import run_sweep

    start = time.perf_counter()
    run_sweep(spec)
    wall = time.perf_counter() - start
    return wall, load(spec.results, spec.name).timeline()


def bench_sweep(opts: BenchOptions) -> dict[str, Any]:
    """``sweep_wall_ratio`` (optuna / grid wall time) and ``sweep_utilisation`` (optuna)."""
    import ray

    from raybench.data.dataset import prepare_data
    from raybench.results import utilisation
    from raybench.cluster import ensure_ray

    cells, samples = (2, 2) if opts.quick else (4, 4)
    started = not ray.is_initialized()
    ensure_ray(None, num_cpus=SWEEP_SLOTS)
    out: dict[str, Any] = {"cells": cells, "samples": samples, "slots": SWEEP_SLOTS}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            specs = sweep_bench_specs(Path(tmp), cells, samples)
            prepare_data(specs["grid"].data, 32)  # the synthetic set and its cache, once
            for name in ("grid", "optuna"):
                wall, tl = _timed_sweep(specs[name])
                span = (tl[S.FINISHED_AT].max() - tl[S.STARTED_AT].min()).total_seconds()
                out[name] = {"wall_s": wall, "trials": len(tl), "span_s": span,
                             "trial_s_mean": float(tl["duration_s"].mean()),
                             "max_concurrent": int(tl["slot"].max() + 1),
                             "utilisation": utilisation(tl, SWEEP_SLOTS)}
    finally:
        if started:
            ray.shutdown()
    out["sweep_wall_ratio"] = out["optuna"]["wall_s"] / out["grid"]["wall_s"]
    out["sweep_utilisation"] = out["optuna"]["utilisation"]
    return out


# ---------------------------------------------------------------- (d) CAM throughput


def bench_cam(opts: BenchOptions, device: str = "cpu") -> dict[str, Any]:
    """CAM images/s per model through :func:`raybench.cam.compute_cams` (its default method).

    Untrained models at the training comparison's size; the best of ``repeats`` passes over
    ``images`` uint8 images after one warm-up pass.
    """
    if importlib.util.find_spec("raybench.cam") is None:
        return {"skipped": "raybench.cam is not available in this checkout"}
    import torch

    from raybench.cam import compute_cams
    from raybench.models import build_model, get_model_spec

    n = 16 if opts.quick else 48
    threads = opts.threads or os.cpu_count() or 1
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    out: dict[str, Any] = {"images": n, S.IMAGE_SIZE: opts.image_size, "threads": threads}
    try:
        images = torch.randint(0, 256, (n, opts.image_size, opts.image_size), dtype=torch.uint8)
        rates = {}
        for name in opts.models:
            model = build_model(name, 4, image_size=opts.image_size).to(device)
            compute_cams(model, name, images[:4])
            best = min(_timed(functools.partial(compute_cams, model, name, images))
                       for _ in range(2))
            rates[name] = n / best
            out[f"{name}_method"] = get_model_spec(name).cam_method
    finally:
        torch.set_num_threads(previous)
    out["images_per_s"] = rates
    return out


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------- (e) loading 10,000 trials

RESULTS_SWEEP = "bench"
_RESULT_MODELS = (names.PAPER_MODEL, "resnet18", "resnet50", "densenet201", "squeezenet")
_RESULT_METRICS = ("sensitivity", "specificity", "ppv", "f1", "support")


def result_tables(i: int, n_pred: int) -> dict[str, Any]:
    """Trial ``i``'s four tables as raybench writes them (runs 1 row, metrics 24, epochs 20)."""
    import pyarrow as pa


    rng = np.random.default_rng(i)
    base = {S.SWEEP: RESULTS_SWEEP, S.TRIAL_ID: f"t{i:05d}"}
    runs = [{**base, S.MODEL: _RESULT_MODELS[i % 5], S.SCENARIO: "scenario2", S.SEED: i // 5 % 10,
             S.LR: float(rng.choice([1e-4, 3e-4, 1e-3])), S.BATCH_SIZE: 15, S.EPOCHS: 20,
             S.IMAGE_SIZE: 224, S.PRETRAINED: True, S.PARAMS: 11_000_000, S.EPOCHS_RUN: 20,
             S.WALL_S: 600.0, S.TRAIN_IMAGES_PER_S: 14.1, S.DEVICE: "cpu", S.PRECISION: "fp32",
             S.NUM_WORKERS: 1, S.RAYBENCH_VERSION: "0.1.0", S.TORCH_VERSION: "2.x",
             S.RAY_VERSION: "2.60.0", S.TIMM_VERSION: "1.x", S.STATUS: "completed"}]
    metrics = [{**base, S.SPLIT: "test", S.CLASS: c, S.METRIC: m, S.VALUE: float(rng.random()),
                S.CI_LOW: 0.0, S.CI_HIGH: 1.0} for c in S.LABELS for m in _RESULT_METRICS]
    metrics += [{**base, S.SPLIT: "test", S.CLASS: "all", S.METRIC: m, S.VALUE: float(rng.random()),
                 S.CI_LOW: None, S.CI_HIGH: None}
                for m in ("accuracy", "balanced_accuracy", "macro_auc", "n")]
    epochs = [{**base, S.EPOCH: e, S.TRAIN_LOSS: 1 / e, S.VAL_LOSS: 1.1 / e, S.VAL_ACCURACY: 0.5,
               S.VAL_BALANCED_ACCURACY: 0.5, S.VAL_MACRO_AUC: 0.7, S.LR: 3e-4, S.SECONDS: 30.0,
               S.TRAIN_IMAGES_PER_S: 14.1} for e in range(1, 21)]
    labels = rng.integers(0, 4, n_pred)
    probs = rng.dirichlet(np.ones(4), n_pred)
    preds = {S.SWEEP: [RESULTS_SWEEP] * n_pred, S.TRIAL_ID: [base[S.TRIAL_ID]] * n_pred,
             S.IMAGE_ID: [f"img{k:04d}" for k in range(n_pred)],
             S.SPLIT: ["test"] * n_pred, S.PATIENT_ID: [f"p{k:04d}" for k in range(n_pred)],
             S.SOURCE: ["bench"] * n_pred, S.LABEL: [S.LABELS[k] for k in labels],
             S.PREDICTED: [S.LABELS[k] for k in probs.argmax(1)],
             **{f"p_{lab}": probs[:, k] for k, lab in enumerate(S.LABELS)}}
    return {"runs": pa.Table.from_pylist(runs, S.RUNS_SCHEMA),
            "metrics": pa.Table.from_pylist(metrics, S.METRICS_SCHEMA),
            S.EPOCHS_TABLE: pa.Table.from_pylist(epochs, S.EPOCHS_SCHEMA),
            "predictions": pa.Table.from_pydict(preds, S.predictions_schema(S.LABELS))}


def write_result_range(args: tuple[str, int, int, int]) -> None:
    """Writes trials ``start..stop`` (plain ``pq.write_table``: the load is what is timed)."""
    import pyarrow.parquet as pq

    root, start, stop, n_pred = args
    for i in range(start, stop):
        for table, arrow in result_tables(i, n_pred).items():
            pq.write_table(arrow, os.path.join(root, RESULTS_SWEEP, table, f"t{i:05d}.parquet"))


def generate_results(root: str, trials: int, n_pred: int, procs: int = 2) -> None:
    """A sweep of ``trials`` trials in raybench's layout under ``root``."""

    for table in S.TABLES:
        os.makedirs(os.path.join(root, RESULTS_SWEEP, table), exist_ok=True)
    chunks = [(root, a, min(a + 500, trials), n_pred) for a in range(0, trials, 500)]
    with ProcessPoolExecutor(procs) as pool:
        list(pool.map(write_result_range, chunks))


def timed_load(root: str) -> tuple[float, dict[str, int]]:
    """Seconds to load the sweep and materialise all four tables, and their row counts."""
    from raybench.results import load

    start = time.perf_counter()
    res = load(root, RESULTS_SWEEP)
    rows = {t: len(res.table(t)) for t in S.TABLES}
    return time.perf_counter() - start, rows


def bench_results(opts: BenchOptions, n_pred: int = 50) -> dict[str, Any]:
    """``results_load_s``: loading every table of ``results_trials`` trials (with snapshots)."""
    from raybench.store import ResultStore

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        generate_results(root, opts.results_trials, n_pred)
        generated = time.perf_counter() - start
        start = time.perf_counter()
        ResultStore(root).compact(RESULTS_SWEEP)
        compact = time.perf_counter() - start
        seconds, rows = timed_load(root)
    return {"results_load_s": seconds, "trials": opts.results_trials, "rows": rows,
            "compact_s": compact, "generate_s": generated}


# ---------------------------------------------------------------- the whole run


def _section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    log.info("bench: %s ...", name)
    start = time.perf_counter()
    out = fn()
    out["section_s"] = round(time.perf_counter() - start, 2)
    log.info("bench: %s done in %.1f s", name, out["section_s"])
    return out


def check_targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each CPU target with the measured value and whether it holds (``None``: not measured)."""
    out = {}
    targets = {**TARGETS, **(SWEEP_TARGETS if "sweep" in report else {})}
    for key, (op, bound) in targets.items():
        value = report.get(key)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[key] = {"target": f"{op} {bound:g}", "value": value, "met": met}
    return out


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Runs the selected sections; returns the JSON-ready report (keys in the module docstring)."""
    unknown = [s for s in opts.sections if s not in SECTIONS + EXTRA_SECTIONS]
    if unknown:
        from raybench.errors import ConfigError

        raise ConfigError(f"unknown bench section(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(SECTIONS)}")
    check_data(opts.data)
    start = time.perf_counter()
    report: dict[str, Any] = {"machine": machine(), "quick": opts.quick}
    runs = {"train": lambda: bench_train(opts), "cache": lambda: bench_cache(opts),
            "trials": lambda: bench_trials(opts), "cam": lambda: bench_cam(opts),
            "results": lambda: bench_results(opts), "sweep": lambda: bench_sweep(opts)}
    headline = {"train": "train_ratio", "cache": "cache_speedup", "trials": "trial_overhead_s",
                "results": "results_load_s"}
    for name in SECTIONS + EXTRA_SECTIONS:
        if name not in opts.sections:
            continue
        report[name] = _section(name, runs[name])
        if name in headline:
            report[headline[name]] = report[name].get(headline[name])
        if name == "cache":
            report["cache_peak_memory_ratio"] = report[name].get("cache_peak_memory_ratio")
        if name == "sweep":
            report.update({k: report[name][k] for k in SWEEP_TARGETS})
    report["cam_images_per_s"] = report.get("cam", {}).get("images_per_s")
    report["targets"] = check_targets(report)
    report["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a few human-readable lines."""
    m = report["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, gpu {m['gpu'] or 'none'}, "
             f"load {m['loadavg'][0]:.1f} -> {m['loadavg_end'][0]:.1f}, torch {m['torch']}, "
             f"ray {m['ray']}"]
    for name, per in report.get("train", {}).get("models", {}).items():
        lines.append(f"train {name}: raybench {per['raybench_images_per_s']:.1f} images/s, plain "
                     f"{per['plain_images_per_s']:.1f} images/s, ratio {per['ratio']:.3f}")
    cache = report.get("cache", {})
    if "cache_speedup" in cache:
        lines.append(f"cache: decode epoch {cache['decode_epoch_s']:.2f} s, cache epoch "
                     f"{cache['cache_epoch_s']:.4f} s ({cache['images']} images: "
                     f"{cache['data']}); peak memory {cache['cache_peak_memory_ratio']:.2f}x "
                     "the raw array")
    trials = report.get("trials", {})
    if "trial_overhead_s" in trials:
        lines.append(f"trials: {trials['trials']} in {trials['sweep_wall_s']:.1f} s, training "
                     f"{trials['training_s']:.1f} s, Ray start {trials['ray_init_s']:.1f} s")
    sweep = report.get("sweep", {})
    for name in ("grid", "optuna") if "sweep_wall_ratio" in sweep else ():
        part = sweep[name]
        lines.append(f"sweep {name}: {part['trials']} trials in {part['wall_s']:.1f} s, span "
                     f"{part['span_s']:.1f} s, trial {part['trial_s_mean']:.1f} s, up to "
                     f"{part['max_concurrent']} at once, utilisation {part['utilisation']:.3f}")
    cam = report.get("cam", {})
    if cam.get("skipped"):
        lines.append(f"cam: skipped ({cam['skipped']})")
    for name, rate in (cam.get("images_per_s") or {}).items():
        lines.append(f"cam {name}: {rate:.1f} images/s")
    for key, t in report["targets"].items():
        value = "not measured" if t["value"] is None else f"{t['value']:.3g}"
        verdict = {True: "ok", False: "MISSED", None: "-"}[t["met"]]
        lines.append(f"{key:<26} {value:>12}  target {t['target']:<8} {verdict}")
    if report.get("results_load_s") is not None:
        lines.append(f"results_load_s             {report['results_load_s']:>12.3g}  "
                     f"({report['results']['trials']} trials)")
    return "\n".join(lines)
