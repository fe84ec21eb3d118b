#!/usr/bin/env bash
# GPU benchmark in one run (under 8 minutes on one H100-class GPU): images/s of raybench's loop
# vs a plain PyTorch loop for resnet50, densenet201 and cnnx, every study model's images/s,
# and the extrapolated time of the paper's full study. See benchmarks/gpu_bench.py.
#
#   benchmarks/gpu.sh [--dry-run] [--out FILE] [gpu_bench.py options]
#
# --dry-run runs the same code on the CPU with tiny images (tests/bench/test_bench.py runs it).
# Environment: PYTHON (default: python3), GPU_BENCH_TIMEOUT (seconds, default 470).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
PYTHON="${PYTHON:-python3}"
exec timeout --signal=INT "${GPU_BENCH_TIMEOUT:-470}" "$PYTHON" benchmarks/gpu_bench.py "$@"
