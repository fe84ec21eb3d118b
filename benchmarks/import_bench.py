"""Importing a 100,000-row ``Data_Entry_2017.csv``-shaped NIH set: rows/s, and whether building
the entries (reading the CSV, indexing the image folders, the label rule) is the bottleneck.

Usage: python benchmarks/import_bench.py [--rows 100000] [--side 16] [--address ADDR] [--profile]

The set is generated first (not timed): ``--rows`` small random grayscale PNGs spread over
``images_001/images`` .. ``images_012/images`` as NIH ships them, the CSV with the official
header and ``|``-joined findings, and the official split lists. Then, timed separately:
entry building (``nih.nih_entries``: no file is read), the per-image rows (``finish`` ->
``build_rows``: hash + full decode of every kept file, fanned out over Ray: ``--address`` /
``RAY_ADDRESS``, else an embedded local Ray), and writing the manifest.
Not a timed test: it prints the numbers recorded in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from raybench.data.importers import ImportOptions, write_import
from raybench.data.importers import nih
from raybench.data.importers.rows import entry_row
from raybench.data.importers.tables import finish
from raybench.cluster import ensure_ray

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
          "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
FINDINGS = ("No Finding", "No Finding", "Pneumonia", "Infiltration|Pneumonia", "Effusion",
            "Atelectasis|Effusion|Infiltration")


def generate(root: Path, rows: int, side: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lines, train, test = [HEADER], [], []
    for i in range(rows):
        patient, follow = 1 + i // 3, i % 3
        name = f"{patient:08d}_{follow:03d}.png"
        folder = root / f"images_{1 + i * 12 // rows:03d}" / "images"
        if not folder.is_dir():
            folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (side, side), dtype=np.uint8)).save(folder / name)
        view = "PA" if i % 5 else "AP"
        lines.append(f"{name},{FINDINGS[i % len(FINDINGS)]},{follow},{patient},{20 + i % 70},"
                     f"{'MF'[i % 2]},{view},2500,2048,0.168,0.168,")
        (test if patient % 5 == 0 else train).append(name)
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")


def _profile_entries(root: Path, opts: ImportOptions) -> str:
    prof = cProfile.Profile()
    prof.enable()
    nih.nih_entries(root, opts)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(12)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--side", type=int, default=16, help="side of each generated PNG")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"))
    parser.add_argument("--profile", action="store_true", help="cProfile the entry building")
    parser.add_argument("--keep", help="generate into this folder and keep it")
    parser.add_argument("--serial-too", action="store_true",
                        help="also time the serial loop of the same per-image body, side by side")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="nih-bench-"))
    try:
        t = time.perf_counter()
        if not (root / "Data_Entry_2017.csv").is_file():
            generate(root, args.rows, args.side)
        print(f"generated {args.rows} rows + PNGs in {time.perf_counter() - t:.1f} s")
        opts = ImportOptions(views=("PA", "AP"), address=args.address)
        if args.address:
            ensure_ray(args.address, tune=False)
        t0 = time.perf_counter()
        entries, missing, classify = nih.nih_entries(root, opts)
        t1 = time.perf_counter()
        result = finish(root, "nih", entries, opts, classify, missing)
        t2 = time.perf_counter()
        write_import(result, root / "manifest.parquet")
        t3 = time.perf_counter()
        total = t3 - t0
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; load average "
              f"{open('/proc/loadavg').read().split()[:3]}; address {args.address or 'none'}")
        print(f"rows in CSV {args.rows}, imported {len(result.df)}, left out "
              f"{dict(result.dropped)}")
        print(f"entries   {t1 - t0:8.2f} s  {args.rows / (t1 - t0):10,.0f} CSV rows/s  "
              f"({100 * (t1 - t0) / total:.1f}% of the import)")
        print(f"rows      {t2 - t1:8.2f} s  {len(entries) / (t2 - t1):10,.0f} images/s")
        print(f"manifest  {t3 - t2:8.2f} s")
        print(f"total     {total:8.2f} s  {args.rows / total:10,.0f} CSV rows/s, "
              f"{len(result.df) / total:,.0f} imported rows/s")
        if args.serial_too:
            t4 = time.perf_counter()
            for e in entries:
                entry_row(root, "nih", e)
            serial = time.perf_counter() - t4
            print(f"rows, serial loop of entry_row in this process: {serial:.2f} s "
                  f"({len(entries) / serial:,.0f} images/s; build_rows / serial = "
                  f"{(t2 - t1) / serial:.2f})")
        if args.profile:
            print(_profile_entries(root, opts))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
