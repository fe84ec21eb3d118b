"""Decoded-image cache vs decoding every image every epoch, side by side on the shared Kermany set.

Usage: python benchmarks/cache_bench.py [--size 224] [--data ../shared/data/kermany-cxr-train]

An "epoch" here is what the training loop needs from the data: every image of the manifest as
a uint8 (S, S) array, gathered in shuffled mini-batches of 15 (the paper's batch size) into a
torch tensor. Decoding = ``images.decode_image`` per file per epoch (JPEG decode, grayscale,
bilinear resize); cache = one read of the memory-mapped entry built by ``raybench.data.cache``.
Not a timed test: it prints the numbers recorded in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from raybench import schema as S
from raybench.bench import epoch_cache as _epoch_cache
from raybench.bench import epoch_decode as _epoch_decode
from raybench.data.cache import decoded_images
from raybench.data.importers import import_dataset

def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(here.parent / "shared/data/kermany-cxr-train"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2, help="decode epochs to time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    res = import_dataset("kermany", args.data)
    files = [res.root / p for p in res.df[S.PATH]]
    order = np.random.default_rng(0).permutation(len(files))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        entry = decoded_images(res.df, files, args.size, tmp)
        build = time.perf_counter() - t0
        size_mb = os.path.getsize(entry.path) / 2**20
        reuse0 = time.perf_counter()
        entry = decoded_images(res.df, files, args.size, tmp)  # what each new trial does
        reuse = time.perf_counter() - reuse0
        dec, cache = [], []
        for _ in range(args.epochs):  # interleaved, so both see the same machine load
            t = time.perf_counter()
            _epoch_decode(files, order, args.size)
            dec.append(time.perf_counter() - t)
            for _ in range(3):
                t = time.perf_counter()
                _epoch_cache(entry.images, order)
                cache.append(time.perf_counter() - t)
    d, c = statistics.median(dec), statistics.median(cache)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch threads 1")
    print(f"images: {len(files)} Kermany JPEGs (224x224) -> {args.size}x{args.size} uint8")
    print(f"cache build (first use): {build:.2f} s, {size_mb:.0f} MiB; reopen: {reuse * 1e3:.1f} ms")
    print(f"epoch, decode every image: {d:.2f} s ({len(files) / d:.0f} images/s)")
    print(f"epoch, from the cache:     {c:.3f} s ({len(files) / c:.0f} images/s)")
    print(f"ratio (decode / cache): {d / c:.1f}x")


if __name__ == "__main__":
    main()
