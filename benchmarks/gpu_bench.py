"""GPU throughput: raybench's loop vs a plain PyTorch loop, and the paper's full study time.

Run through ``benchmarks/gpu.sh`` (one run, under 8 minutes on one GPU). For each comparison
model (resnet50, densenet201, cnnx) it times raybench's ``train_one_epoch`` with the GPU path
on (the split resident on the GPU as uint8, normalisation on the GPU, bf16 autocast,
channels_last) against a minimal plain loop on ready float tensors already on the GPU with the
same precision and layout, interleaved, best of ``--repeats``. It then measures raybench's
training images/s of every model of the study (or, with ``--dry-run``, uses the mean cost of the
measured ones as a proxy) and extrapolates the full study: 13 models x 3 scenarios x 20 epochs,
serially, with one validation pass per epoch and a fixed per-trial overhead.

``--dry-run`` runs the same code on the CPU with tiny images and steps (what the test runs).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

PAPER_MODELS = ("alexnet", "vgg16", "vgg19", "resnet18", "resnet50", "resnet101", "googlenet",
                "inception_v3", "squeezenet", "inception_resnet_v2", "xception", "densenet201",
                "cnnx")
SCENARIO_TRAIN = {"paper-1": 1452, "paper-2": 5951, "paper-3": 1161}  # DESIGN.md section 5
UPPER_BOUND_IMAGES = 5951  # the bound: every scenario as large as scenario 2
EPOCHS = 20
VAL_FRACTION = 0.15  # validation forward pass per epoch, at about 3x the training rate
TRIAL_OVERHEAD_S = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny images (a test runs it)")
    parser.add_argument("--models", default="resnet50,densenet201,cnnx")
    parser.add_argument("--batch-size", type=int, default=15)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--study-steps", type=int, default=20, help="steps per study model")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (slow start)")
    parser.add_argument("--out", help="write the JSON report here")
    return parser.parse_args(argv)


def study_minutes(per_model_ips: dict[str, float], images_per_scenario: dict[str, int]) -> float:
    """Serial wall time of 13 models x scenarios x 20 epochs from training images/s per model."""
    total = 0.0
    for ips in per_model_ips.values():
        for n in images_per_scenario.values():
            epoch = n / ips + n * VAL_FRACTION / (3 * ips)
            total += EPOCHS * epoch + TRIAL_OVERHEAD_S
    return total / 60


def _study_rates(args: argparse.Namespace, device: Any, cfg: Any, size: int | None,
                 measured: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """raybench images/s of every study model; proxies (mean measured cost) where not measured."""
    from raybench.bench import BenchOptions, paired_epochs
    from raybench.models import get_model_spec

    rates, proxied = dict(measured), []
    for name in PAPER_MODELS:
        if name in rates:
            continue
        if args.dry_run:
            proxied.append(name)
            continue
        side = size or get_model_spec(name).input_size
        opts = BenchOptions(models=(name,), image_size=side, batch_size=args.batch_size,
                            steps=args.study_steps, warmup=3, repeats=1)
        rates[name] = paired_epochs(name, opts, device, cfg)["raybench_images_per_s"]
        print(f"study model {name}: {rates[name]:.0f} images/s", flush=True)
    if proxied:
        mean_cost = sum(1 / r for r in measured.values()) / len(measured)
        rates.update({name: 1 / mean_cost for name in proxied})
    return rates, proxied


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from raybench.bench import BenchOptions, machine, paired_epochs
    from raybench.config import TrainConfig
    from raybench.models import get_model_spec

    if not torch.cuda.is_available() and not args.dry_run:
        print("gpu_bench: no CUDA device; use --dry-run to check the script on the CPU",
              file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:
        args.batch_size, args.steps, args.repeats = 2, 1, 1
    else:
        torch.backends.cudnn.benchmark = True
    # bf16 autocast is slow on most CPUs: the dry run checks the rest of the path in fp32.
    cfg = TrainConfig(device=device.type, precision="fp32" if args.dry_run else "bf16",
                      data_on_device=True, channels_last=True, compile=args.compile)
    size = 32 if args.dry_run else None
    start = time.perf_counter()
    compare = {}
    for name in args.models.split(","):
        side = size or get_model_spec(name).input_size
        opts = BenchOptions(models=(name,), image_size=side, batch_size=args.batch_size,
                            steps=args.steps, warmup=1 if args.dry_run else 5,
                            repeats=args.repeats)
        compare[name] = paired_epochs(name, opts, device, cfg)
        print(f"{name}: raybench {compare[name]['raybench_images_per_s']:.0f} images/s, plain "
              f"{compare[name]['plain_images_per_s']:.0f}, ratio {compare[name]['ratio']:.3f}",
              flush=True)
    measured = {m: r["raybench_images_per_s"] for m, r in compare.items()}
    rates, proxied = _study_rates(args, device, cfg, size, measured)
    report = {
        "machine": machine(), "dry_run": args.dry_run, "device": str(device),
        "settings": {**dataclasses.asdict(cfg), "batch_size": args.batch_size,
                     "steps": args.steps, "repeats": args.repeats},
        "compare": compare, "min_ratio": min(r["ratio"] for r in compare.values()),
        "study_images_per_s": rates, "study_proxied_models": proxied,
        "study_minutes_upper_bound": study_minutes(rates, {s: UPPER_BOUND_IMAGES
                                                           for s in SCENARIO_TRAIN}),
        "study_minutes_paper_sizes": study_minutes(rates, SCENARIO_TRAIN),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(f"min ratio raybench / plain: {report['min_ratio']:.3f} (target >= 0.9)")
    print(f"full study, serial: {report['study_minutes_upper_bound']:.1f} min with 5,951 images "
          f"per scenario, {report['study_minutes_paper_sizes']:.1f} min with the paper's "
          "scenario sizes (target <= 60)")
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
