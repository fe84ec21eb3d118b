#!/usr/bin/env bash
# Wheels that carry Ray, Tune and Optuna to the GPU machine (Python 3.12, x86_64, no network;
# it has torch, timm, pandas, pyarrow, numpy, grpcio, protobuf, msgpack, aiohttp, ...).
#
#   benchmarks/gpu_wheels.sh [PYTHON]     # downloads into .whl/ (ignored), trims Ray's wheel
#
# Ray's wheel (79 MB) is trimmed of what a Python driver and its workers never load: the Java
# worker's jars (32 MB), RLlib and Ray LLM (the dashboard's web client stays: a dashboard
# that finds no client build fails to start on Linux). Their RECORD entries go too, so pip
# installs the rest as usual. Ray then runs without its dashboard (ray[default]'s packages
# are not carried); raybench starts it only when they are there.
# The whole tree that travels (checkout + .whl/) must stay under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
OUT=.whl
mkdir -p "$OUT"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)
# Pinned: one version of each (two stop the install). What the GPU image lacks of
# ray[tune] (jsonschema and its three, tensorboardX) and optuna (alembic, Mako, SQLAlchemy,
# colorlog); the rest of their requirements are in the image.
WHEELS=(ray==2.60.0 optuna==5.1.0 alembic==1.20.1 Mako==1.4.3 SQLAlchemy==2.1.9 colorlog==6.12.0
        jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
        rpds-py==2026.9.1 tensorboardX==2.6.5)
for w in "${WHEELS[@]}"; do
  name=${w%%==*}
  ls "$OUT" | grep -qi "^$(echo "$name" | tr - _)-${w##*==}-" && continue
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$OUT" "$w"
done
"$PY" - "$OUT" <<'PY'
"""Rewrites Ray's wheel without the removed paths (and their RECORD lines); prints sizes."""
import sys
import zipfile
from pathlib import Path

REMOVE = ("ray/jars/", "ray/rllib/", "ray/llm/")
out = Path(sys.argv[1])
for whl in out.glob("ray-*.whl"):
    with zipfile.ZipFile(whl) as src:
        gone = [i for i in src.infolist() if i.filename.startswith(REMOVE)]
        if not gone:
            continue
        tmp = whl.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            dropped = {i.filename for i in gone}
            for info in src.infolist():
                if info.filename in dropped:
                    continue
                data = src.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    data = b"".join(line for line in data.splitlines(keepends=True)
                                    if line.split(b",", 1)[0].decode() not in dropped)
                dst.writestr(info, data)  # keeps each file's mode (gcs_server, raylet: 0755)
        before = whl.stat().st_size
        tmp.replace(whl)
        print(f"trimmed {whl.name}: {before / 2**20:.1f} -> {whl.stat().st_size / 2**20:.1f} MiB, "
              f"{len(gone)} files removed under {', '.join(REMOVE)}")
total = sum(p.stat().st_size for p in out.glob("*.whl"))
print(f"{len(list(out.glob('*.whl')))} wheels, {total / 2**20:.1f} MiB in {out}/")
PY
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
whl=$(du -cb "$OUT"/*.whl | tail -1 | cut -f1)
echo "checkout $((tree / 1048576)) MiB + wheels $((whl / 1048576)) MiB = $(((tree + whl) / 1048576)) MiB (limit 64)"
[ $((tree + whl)) -lt $((64 * 1048576)) ]
