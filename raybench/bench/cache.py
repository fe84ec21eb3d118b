"""Section ``cache``: an epoch read from the decoded cache against decoding every image.

``cache_speedup``: decode-epoch time over cache-epoch time (``--data``: a manifest or a folder
of images; by default images generated in a temporary folder, 224 px synthetic chest X-rays,
so nothing outside the repository is needed). ``cache_peak_memory_ratio``: peak RSS growth of a
fresh process while it builds, reopens and reads the cache once, over the raw uint8 array; each
code path runs once on a few images first, so first-use imports are not counted.
"""
from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from raybench import schema as S
from raybench.bench.options import BenchOptions, Section

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GENERATED_SIDE = 224  # generated images: the side of the Kermany JPEGs this was first run on
GENERATED_IMAGES = 1000  # generated images of a full run (quick: ``cache_images``)
CACHE_BATCH = 15  # the paper's mini-batch


def epoch_decode(files: Sequence[Path], order: np.ndarray, size: int) -> int:
    """One epoch that decodes every image (JPEG decode, grayscale, resize) in mini-batches."""
    import torch

    from raybench.data.images import decode_image

    n = 0
    for start in range(0, len(order), CACHE_BATCH):
        batch = np.stack([decode_image(files[i], size) for i in order[start:start + CACHE_BATCH]])
        n += len(torch.from_numpy(batch))
    return n


def epoch_cache(images: Any, order: np.ndarray) -> int:
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


def _warm_imports(files: list[Path], size: int, tmp: str) -> None:
    """Runs each code path once on a few images (decoders, torch, the cache's writer, and the
    local Ray the build decodes on), so the memory figure that follows counts the cache, not
    first-use imports, Ray's start and their buffers."""
    import functools

    import pandas as pd

    from raybench.data.cache import DECODE_CHUNK, decode_or_error, decoded_images
    from raybench.data.prepare import LOCAL_RAY_MIN_ITEMS, map_chunks

    if len(files) >= LOCAL_RAY_MIN_ITEMS:  # the build decodes on Ray: start it now
        map_chunks(functools.partial(decode_or_error, size),
                   [str(f) for f in files[:2 * DECODE_CHUNK]], chunk_size=DECODE_CHUNK,
                   what="warm-up", parallel=True)
    few = list(range(min(len(files), CACHE_BATCH)))
    epoch_decode(files, np.array(few), size)
    df = pd.DataFrame({S.IMAGE_ID: [f"warm{i}" for i in few], S.SHA256: [f"w{i}" for i in few]})
    entry = decoded_images(df, [files[i] for i in few], size, os.path.join(tmp, "warm"))
    epoch_cache(entry.images, np.array(few))


def _time_cache(df: Any, files: list[Path], size: int, decode_epochs: int,
                cache_epochs: int) -> dict[str, Any]:
    """Builds and reopens the cache entry, measuring the RSS growth of that and of a cache
    epoch alone; then times decode and cache epochs, interleaved."""
    from raybench.data.cache import decoded_images

    order = np.random.default_rng(0).permutation(len(files))
    raw = len(files) * size * size
    with tempfile.TemporaryDirectory() as tmp:
        _warm_imports(files, size, tmp)
        base = _rss_bytes()
        with _PeakRss() as peak:
            start = time.perf_counter()
            entry = decoded_images(df, files, size, tmp)
            build = time.perf_counter() - start
            start = time.perf_counter()
            entry = decoded_images(df, files, size, tmp)  # what every later trial does
            reopen = time.perf_counter() - start
            epoch_cache(entry.images, order)  # every page of the entry read once
        dec, cache = [], []
        for _ in range(decode_epochs):  # interleaved: both see the same machine load
            start = time.perf_counter()
            epoch_decode(files, order, size)
            dec.append(time.perf_counter() - start)
            for _ in range(cache_epochs):
                start = time.perf_counter()
                epoch_cache(entry.images, order)
                cache.append(time.perf_counter() - start)
        entry_bytes = entry.disk_bytes
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


def _lines(out: dict[str, Any]) -> list[str]:
    return [f"cache: decode epoch {out['decode_epoch_s']:.2f} s, cache epoch "
            f"{out['cache_epoch_s']:.4f} s ({out['images']} images: "
            f"{out['data']}); peak memory {out['cache_peak_memory_ratio']:.2f}x the raw array"]


SECTION = Section("cache", bench_cache,
                  headline={"cache_speedup": "cache_speedup",
                            "cache_peak_memory_ratio": "cache_peak_memory_ratio"},
                  targets={"cache_speedup": (">=", 10.0), "cache_peak_memory_ratio": ("<=", 1.2)},
                  lines=_lines)
