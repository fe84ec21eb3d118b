"""Section ``data`` (only when named: ``--only data``; it takes minutes): data preparation on Ray against the serial loop, the
near-duplicate index at 200,000 hashes, and decodes per image across two nodes.

Keys:

* ``prep_images_per_s_serial`` / ``prep_images_per_s_parallel``: images per second of the whole
  preparation (``data import folder``, ``data audit`` and the decoded-cache build at 224 px) of
  >= 3,000 film-like 1024 x 1024 grayscale PNGs, in-process against on local Ray over every
  core, side by side in one run (Ray's start is timed apart: ``ray_start_s``);
* ``prep_parallel_speedup``: their ratio;
* ``prep_peak_rss_mib``: the driver's peak RSS growth during the parallel cache build, beside
  ``prep_entry_mib``, the size of the entry it built (memory stays flat: chunks stream to disk);
* ``near_dup_200k_s`` / ``near_dup_peak_mib``: :func:`raybench.data.near_duplicates.near_pairs` of 200,000
  random 1024-bit hashes with 2% planted near-duplicates, in a fresh process;
* ``decodes_per_image``: decodes / images when two ``ray.cluster_utils`` nodes with separate
  local folders race for an entry in one shared store and then read it (target exactly 1.0);
* ``projection``: hours for 112k / 224k / 377k films on one and on four 16-core nodes, from the
  measured per-core rate and parallel efficiency.

The films are generated once into a reusable folder (:data:`FILMS_DIR`), which takes
minutes; ``--data DIR`` reads a folder of films instead (:func:`generate_films` fills one).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from raybench.bench.options import BenchOptions, Section

log = logging.getLogger(__name__)

#: Where generated films are kept between runs.
FILMS_DIR = "~/.cache/raybench/bench-films-1024"
FILMS = 3000
FILM_SIDE = 1024
FILM_LABELS = ("normal", "bacteria", "viral")
NEAR_DUP_HASHES = 200_000
#: The public sets the projection is for (films).
PROJECTED = {"nih_chestxray14": 112_120, "chexpert": 224_316, "mimic_cxr": 377_110}


def _film(args: tuple[str, int]) -> None:
    from PIL import Image

    from raybench.data.synth import _render

    folder, i = args
    label = FILM_LABELS[i % len(FILM_LABELS)]
    path = Path(folder) / label / f"{label}_{i:05d}.png"
    if path.is_file():
        return
    rng = np.random.default_rng([7, i])
    small, _ = _render(rng, FILM_SIDE // 4, label)  # anatomy at 256 px (fast), then upscaled
    big = np.asarray(Image.fromarray(small).resize((FILM_SIDE, FILM_SIDE),
                                                   Image.Resampling.BILINEAR), dtype=np.int16)
    grain = rng.integers(-4, 5, (FILM_SIDE, FILM_SIDE), dtype=np.int16)  # film grain
    img = np.clip(big + grain, 0, 255).astype(np.uint8)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(img).save(tmp, format="PNG", compress_level=1)  # fast to write, same decode
    os.replace(tmp, path)


def generate_films(folder: str | os.PathLike, n: int = FILMS, procs: int = 0) -> Path:
    """``n`` synthetic 1024 x 1024 grayscale chest films in ``folder/<label>/`` (resumable:
    files already there are kept)."""
    root = Path(os.path.expanduser(os.fspath(folder)))
    for label in FILM_LABELS:
        (root / label).mkdir(parents=True, exist_ok=True)
    todo = [(str(root), i) for i in range(n)]
    with ProcessPoolExecutor(procs or os.cpu_count() or 1) as pool:
        list(pool.map(_film, todo, chunksize=16))
    return root


def film_folder(data: Optional[str], n: int) -> Path:
    """The films to prepare: ``data`` (filled when empty), else the reusable default folder."""
    root = Path(os.path.expanduser(data or FILMS_DIR))
    have = len(list(root.rglob("*.png"))) if root.is_dir() else 0
    if have < n and not (data and have):
        log.info("bench data: generating %d film-like %d px PNGs into %s (minutes, once)",
                 n - have, FILM_SIDE, root)
        generate_films(root, n)
    return root


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def peak_rss() -> Iterator[list[int]]:
    """Samples this process's RSS every 5 ms; yields ``[peak]`` (filled on exit)."""
    out, stop = [_rss()], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out[0] = max(out[0], _rss())
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _serial() -> Iterator[None]:
    from raybench.data import prepare

    before = prepare.in_ray_worker
    prepare.in_ray_worker = lambda: True  # every chunk in this process: the serial loop
    try:
        yield
    finally:
        prepare.in_ray_worker = before


def _prepare_once(root: Path, work: Path, limit: int) -> dict[str, float]:
    """Import, audit and cache build of the films, timed; returns seconds and RSS figures."""
    from raybench import schema as S
    from raybench.data.audit import audit_manifest
    from raybench.data.cache import decoded_images
    from raybench.data.importers import import_dataset, write_import

    t0 = time.perf_counter()
    result = import_dataset("folder", root)
    result.df = result.df.iloc[:limit].reset_index(drop=True)
    manifest = work / "manifest.parquet"
    write_import(result, manifest)
    t1 = time.perf_counter()
    audit_manifest(manifest)
    t2 = time.perf_counter()
    base = _rss()
    with peak_rss() as peak:
        entry = decoded_images(result.df, [root / p for p in result.df[S.PATH]], 224,
                               work / "cache")
    t3 = time.perf_counter()
    return {"images": len(result.df), "import_s": t1 - t0, "audit_s": t2 - t1,
            "cache_s": t3 - t2, "total_s": t3 - t0,
            "peak_rss_growth_mib": (peak[0] - base) / 2**20,
            "entry_mib": entry.disk_bytes / 2**20}


def bench_prep(root: Path, limit: int) -> dict[str, Any]:
    """Serial and parallel preparation of the same films, one after the other."""
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        with _serial():
            serial = _prepare_once(root, Path(tmp, "serial"), limit)
        start = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), logging_level=logging.WARNING,
                 log_to_driver=False)
        ray_start = time.perf_counter() - start
        try:
            parallel = _prepare_once(root, Path(tmp, "parallel"), limit)
        finally:
            ray.shutdown()
    n = serial["images"]
    return {"serial": serial, "parallel": parallel, "ray_start_s": ray_start,
            "prep_images_per_s_serial": n / serial["total_s"],
            "prep_images_per_s_parallel": n / parallel["total_s"],
            "prep_parallel_speedup": serial["total_s"] / parallel["total_s"],
            "prep_peak_rss_mib": parallel["peak_rss_growth_mib"],
            "prep_entry_mib": parallel["entry_mib"]}


def planted_hashes(n: int, seed: int = 0, share: float = 0.02,
                   copies: Optional[int] = None) -> np.ndarray:
    """``n`` random 1024-bit hashes; ``copies`` of them (default ``share`` of ``n``) copies of
    others with 0-140 bits flipped."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 256, (n, 128), dtype=np.uint8)
    m = int(n * share) if copies is None else copies
    src = rng.choice(n, m, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), m, replace=False)
    bits = np.unpackbits(hashes[src], axis=1)
    for r in range(m):
        bits[r, rng.choice(1024, rng.integers(0, 141), replace=False)] ^= 1
    hashes[dst] = np.packbits(bits, axis=1)
    return hashes


def near_dup_child(n: int) -> dict[str, Any]:
    """Run in a fresh process: time ``near_pairs`` on ``n`` planted hashes; peak RSS."""
    from raybench.data.near_duplicates import NEAR_THRESHOLD, near_pairs

    hashes = planted_hashes(n)
    start = time.perf_counter()
    pairs = near_pairs(hashes, np.ones(n, dtype=bool), NEAR_THRESHOLD)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"hashes": n, "pairs": len(pairs), "near_pairs_s": seconds, "peak_mib": peak}


def bench_near_dup(n: int) -> dict[str, Any]:
    code = (f"import json; from raybench.bench.data import near_dup_child; "
            f"print(json.dumps(near_dup_child({n})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    return {**child, "near_dup_200k_s": child["near_pairs_s"], "near_dup_peak_mib": child["peak_mib"]}


def _node_read(manifest: str, size: int, store: str, local: str) -> bool:
    from raybench import schema as S
    from raybench.data import manifest as mf
    from raybench.data.cache import decoded_images

    df = mf.read_manifest(Path(manifest))
    files = mf.image_files(Path(manifest), list(df[S.PATH]))
    return decoded_images(df, files, size, store, local_dir=local).built


def bench_two_nodes(root: Path, limit: int) -> dict[str, Any]:
    """Two cluster_utils nodes race for an entry in one shared store, then read it."""
    import ray
    from ray.cluster_utils import Cluster

    from raybench.data import cache
    from raybench.data.importers import build_rows, write_import
    from raybench.data.importers.common import Entry

    with tempfile.TemporaryDirectory() as tmp:
        files = sorted(root.rglob("*.png"))[:limit]
        with _serial():  # in-process: no local Ray may run before the cluster starts
            result = build_rows(root, "films", [Entry(f, f.parent.name, None, "films")
                                                for f in files], "fail")
        manifest = Path(tmp, "m.parquet")
        write_import(result, manifest)
        log_dir = Path(tmp, "decodes")
        log_dir.mkdir()
        os.environ[cache.DECODE_LOG_ENV] = str(log_dir)
        cluster = Cluster(initialize_head=True,
                          head_node_args={"num_cpus": 1, "resources": {"node_a": 1}})
        try:
            cluster.add_node(num_cpus=1, resources={"node_b": 1})
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
            task = ray.remote(num_cpus=0)(_node_read)
            for _ in range(2):  # a race for the missing entry, then reads of the built one
                ray.get([task.options(resources={node: 0.01}).remote(
                    str(manifest), 64, str(Path(tmp, "store")), str(Path(tmp, node)))
                    for node in ("node_a", "node_b")])
        finally:
            ray.shutdown()
            cluster.shutdown()
            os.environ.pop(cache.DECODE_LOG_ENV, None)
        decodes = len(list(log_dir.iterdir()))
    return {"images": limit, "decodes": decodes, "decodes_per_image": decodes / limit}


def projection(per_core: float, efficiency: float) -> dict[str, dict[str, float]]:
    """Hours to prepare each public set on one and four 16-core nodes."""
    out = {}
    for name, films in PROJECTED.items():
        out[name] = {"films": films, **{f"{nodes}x16_cores_h": films / (per_core * 16 * nodes
                                                                        * efficiency) / 3600
                                        for nodes in (1, 4)}}
    return out


def bench_data(opts: BenchOptions) -> dict[str, Any]:
    """The data section (keys in the module docstring); ``quick`` is a small smoke run."""
    data, quick = opts.data, opts.quick
    n = 120 if quick else FILMS
    root = film_folder(data, n) if not quick else generate_films(
        Path(tempfile.mkdtemp(prefix="rb-films-")), n, procs=1)
    out: dict[str, Any] = {"films": str(root)}
    out["near_dup"] = bench_near_dup(20_000 if quick else NEAR_DUP_HASHES)
    log.info("bench data: near_dup %s", json.dumps(out["near_dup"]))
    out["two_nodes"] = bench_two_nodes(root, 60 if quick else 300)
    log.info("bench data: two_nodes %s", json.dumps(out["two_nodes"]))
    out["prep"] = bench_prep(root, n)
    log.info("bench data: prep %s", json.dumps(out["prep"]))
    for part in ("prep", "near_dup", "two_nodes"):
        out.update({k: v for k, v in out[part].items() if k in (
            "prep_images_per_s_serial", "prep_images_per_s_parallel", "prep_parallel_speedup",
            "prep_peak_rss_mib", "prep_entry_mib", "near_dup_200k_s", "near_dup_peak_mib",
            "decodes_per_image")})
    cores = os.cpu_count() or 1
    eff = min(1.0, out["prep_parallel_speedup"] / cores)
    out["per_core_images_per_s"] = out["prep_images_per_s_serial"]
    out["parallel_efficiency"] = eff
    out["projection"] = projection(out["prep_images_per_s_serial"], eff)
    return out


def format_data(out: dict[str, Any]) -> list[str]:
    """The section's report lines."""
    p, s = out["prep"]["parallel"], out["prep"]["serial"]
    lines = [f"data prep: {s['images']} films, serial {s['total_s']:.1f} s (import "
             f"{s['import_s']:.1f}, audit {s['audit_s']:.1f}, cache {s['cache_s']:.1f}), "
             f"parallel {p['total_s']:.1f} s (import {p['import_s']:.1f}, audit "
             f"{p['audit_s']:.1f}, cache {p['cache_s']:.1f}); Ray start "
             f"{out['prep']['ray_start_s']:.1f} s",
             f"data prep peak RSS growth {out['prep_peak_rss_mib']:.0f} MiB for an entry of "
             f"{out['prep_entry_mib']:.0f} MiB",
             f"near duplicates: {out['near_dup']['hashes']} hashes, "
             f"{out['near_dup']['pairs']} pairs in {out['near_dup']['near_pairs_s']:.1f} s, peak "
             f"{out['near_dup_peak_mib']:.0f} MiB",
             f"two nodes: {out['two_nodes']['decodes']} decodes for "
             f"{out['two_nodes']['images']} images"]
    for name, row in out["projection"].items():
        lines.append(f"projection {name} ({row['films']:,} films): 1 x 16 cores "
                     f"{row['1x16_cores_h']:.2f} h, 4 x 16 cores {row['4x16_cores_h']:.2f} h")
    return lines


SECTION = Section("data", bench_data,
                  headline={k: k for k in (
                      "prep_images_per_s_serial", "prep_images_per_s_parallel",
                      "prep_parallel_speedup", "prep_peak_rss_mib", "near_dup_200k_s",
                      "decodes_per_image")},
                  targets={"prep_parallel_speedup": (">=", 1.6), "near_dup_200k_s": ("<=", 60.0),
                           "decodes_per_image": ("<=", 1.0)},
                  lines=format_data, default=False)
