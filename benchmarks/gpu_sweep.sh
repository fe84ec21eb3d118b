#!/usr/bin/env bash
# A reduced GPU study with Ray Tune, twice in one call: packed (gpus_per_worker: auto, shares
# from the probe) and one trial per GPU (gpus_per_worker: 1). All 13 models, one full epoch of
# a paper-2-sized training split (synthetic films, >= 5,951 training images) plus validation.
#
#   benchmarks/gpu_wheels.sh                  # once, here: Ray/Optuna wheels into .whl/
#   benchmarks/gpu_sweep.sh                   # on the GPU machine (carry .whl); < 10 min
#   benchmarks/gpu_sweep.sh --compile         # eager vs torch.compile vs CUDA graphs, batch 15
#   benchmarks/gpu_sweep.sh --dry-run         # tiny, on the CPU with 2 logical GPUs (tests)
#
# Samples nvidia-smi once a second during each run; prints each run's wall time, mean GPU
# utilisation, aggregate training images/s and the 20-epoch paper study time extrapolated.
# Output files go to $OUT when set (the device tool brings them back), else to the work dir.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
MODE=study
for arg in "$@"; do
  case $arg in
    --dry-run) MODE=dry ;;
    --compile) MODE=compile ;;
    *) echo "usage: $0 [--dry-run|--compile]" >&2; exit 2 ;;
  esac
done
WORK=${GPU_SWEEP_WORK:-$(mktemp -d /tmp/raybench-gpu.XXXXXX)}
DEST=${OUT:-$WORK}
mkdir -p "$WORK" "$DEST"
if [ "$MODE" != dry ] && ! "$PY" -c "import ray, optuna" 2>/dev/null; then
  [ -d .whl ] || { echo "no Ray/Optuna here and no .whl/: run benchmarks/gpu_wheels.sh" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
export TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1
rb() { "$PY" -m raybench.cli "$@"; }

if [ "$MODE" = compile ]; then
  exec timeout 540 "$PY" - <<'PY'
"""Eager vs torch.compile vs CUDA graphs (mode reduce-overhead) at batch 15, bf16,
channels_last, data on the GPU; compile time reported beside the rate (raybench.engine.measure)."""
import dataclasses, time
import torch
from raybench.config import TrainConfig
from raybench.engine.measure import Workload, measure_training
dev = torch.device("cuda")
for model in ("cnnx", "squeezenet", "resnet18", "alexnet", "googlenet"):
    for label, extra in (("eager", {}), ("compile", {"compile": True}),
                         ("cudagraphs", {"compile": True, "compile_mode": "reduce-overhead"})):
        cfg = TrainConfig(device="cuda", **extra)
        t0 = time.perf_counter()
        m = measure_training(Workload(model, 224, 15, steps=60, warmup=10, cfg=cfg), dev)
        print(f"{model:<12} {label:<11} {m.train_images_per_s:8.0f} images/s  "
              f"(whole measurement {time.perf_counter() - t0:5.1f} s incl. compilation)", flush=True)
PY
fi

if [ "$MODE" = dry ]; then
  MODELS="[cnnx, squeezenet]"; PER_CLASS=12; SIZE=32; MODEL_SEC="model: {image_size: 32}"
  TEST_FRACTION=0.25
  RAYARGS=(--num-cpus 4 --num-gpus 2 --probe "$WORK/probe.json"); LIMIT=300
  "$PY" - "$WORK/probe.json" <<'PY'
"""The dry run's recorded probe (no GPU here): 2 workloads on an 80 GiB GPU."""
import sys
from raybench.gpu.probe import GpuInfo, ProbeKey, ProbeRecord, dump_records
gpu = GpuInfo("dry-run GPU", 80 * 2**30, True, "dry", "dry")
recs = [ProbeRecord(ProbeKey(m, 32, 15, "bf16"), gpu, 9 * 2**30, 10 * 2**30, 2**29, 500.0, 1500.0)
        for m in ("cnnx", "squeezenet")]
open(sys.argv[1], "wb").write(dump_records(recs))
PY
else
  MODELS="[alexnet, vgg16, vgg19, resnet18, resnet50, resnet101, googlenet, inception_v3, squeezenet, inception_resnet_v2, xception, densenet201, cnnx]"
  # 4 x 1850 films, 5 % test, 15 % of the rest validation: about 5,975 training images.
  # Films at 128 px (3x faster to make; the cache resizes them to 224 and 299 anyway).
  PER_CLASS=1850; SIZE=128; MODEL_SEC="model: {}"; RAYARGS=(); LIMIT=230; TEST_FRACTION=0.05
fi

rb data synth "$WORK/films" --per-class "$PER_CLASS" --size "$SIZE" --seed 0 >/dev/null
for run in packed single; do
  share=auto; [ $run = single ] && share=1
  cat > "$WORK/$run.yaml" <<YAML
name: gpu-$run
$MODEL_SEC
data:
  manifest: $WORK/films/manifest.parquet
  test_fraction: $TEST_FRACTION
  cache_dir: $WORK/cache
train: {epochs: 1, batch_size: 15}
scaling: {use_gpu: true, cpus_per_worker: 1, gpus_per_worker: $share, max_failures: 1}
sweep: {mode: paper, models: $MODELS, seeds: [0], progress_interval_s: 15}
cam: {enabled: false}
YAML
done
# The decoded cache is built once, before both runs, so neither run pays for it.
"$PY" - "$WORK/packed.yaml" <<'PY'
import sys
from raybench.config import load_spec
from raybench.data.dataset import split_sizes, warm_decoded_cache
from raybench.trial import cell_spec, cells, image_size
spec = load_spec(sys.argv[1], [])
specs = [cell_spec(spec, c) for c in cells(spec)]
n = warm_decoded_cache({(s.data, image_size(s)) for s in specs})
print(f"decoded cache ready ({n} entries); splits: {split_sizes(spec.data)}", flush=True)
PY

for run in packed single; do
  smi=""
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,memory.total \
      --format=csv,noheader,nounits -l 1 > "$DEST/smi-$run.csv" & smi=$!
  fi
  start=$(date +%s.%N); rc=0
  timeout "$LIMIT" "$PY" -m raybench.cli sweep --config "$WORK/$run.yaml" \
    --results "$WORK/runs" "${RAYARGS[@]}" > "$DEST/sweep-$run.log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  [ -n "$smi" ] && kill "$smi" 2>/dev/null || true
  echo "$run $start $end $rc" >> "$WORK/walls.txt"
  tail -n 3 "$DEST/sweep-$run.log"
done

"$PY" - "$WORK" "$DEST" <<'PY'
"""Per run: wall, GPU utilisation, aggregate images/s, the 20-epoch paper study extrapolated."""
import sys
from pathlib import Path
import pandas as pd
from raybench.config import load_spec
from raybench.data.dataset import split_sizes

work, dest = Path(sys.argv[1]), Path(sys.argv[2])
PAPER_TRAIN = (1452, 5951, 1161)  # the paper's three scenarios' training images
lines, agg = [], {}
for row in (work / "walls.txt").read_text().split("\n"):
    if not row.strip():
        continue
    run, start, end, rc = row.split()
    wall = float(end) - float(start)
    train = split_sizes(load_spec(str(work / f"{run}.yaml"), []).data)["train"]
    folder = work / "runs" / f"gpu-{run}" / "runs"
    runs = pd.read_parquet(folder) if folder.exists() else pd.DataFrame()
    done = runs[runs["status"] == "completed"] if len(runs) else runs
    span = ((done["finished_at"].max() - done["started_at"].min()).total_seconds()
            if len(done) else float("nan"))
    util, mem = "n/a", "n/a"
    smi = dest / f"smi-{run}.csv"
    if smi.exists() and smi.stat().st_size:
        s = pd.read_csv(smi, header=None, names=["t", "util", "mem", "total"], skipinitialspace=True)
        util, mem = f"{s['util'].mean():.0f}%", f"{s['mem'].max() / 1024:.1f} GiB"
    agg[run] = len(done) * train / span if span == span and span > 0 else float("nan")
    study = 20 * span * sum(PAPER_TRAIN) / train / 60
    lines.append(f"{run}: exit {rc}, wall {wall:.0f} s, trials {len(done)}/{len(runs)} "
                 f"completed, span {span:.0f} s, mean GPU util {util}, peak GPU memory {mem}, "
                 f"{train} train images each, aggregate {agg[run]:.0f} train images/s; "
                 f"20-epoch paper study extrapolated {study:.1f} min")
    if len(done):
        cols = ["model", "gpu_share", "precision", "train_images_per_s", "wall_s",
                "peak_memory_bytes"]
        lines.append(done[cols].sort_values("model").to_string(index=False))
if "packed" in agg and "single" in agg:
    lines.append(f"packed / one-per-GPU aggregate images/s: {agg['packed'] / agg['single']:.2f}")
text = "\n".join(lines)
print(text)
(dest / "gpu_sweep_summary.txt").write_text(text + "\n")
PY
