"""Section ``cam``: CAM images/s per model through :func:`raybench.cam.compute_cams`."""
from __future__ import annotations

import functools
from typing import Any

from raybench import schema as S
from raybench.bench.options import BenchOptions, Section, timed, torch_threads


def bench_cam(opts: BenchOptions, device: str = "cpu") -> dict[str, Any]:
    """CAM images/s per model through :func:`raybench.cam.compute_cams` (its default method).

    Untrained models at the training comparison's size; the best of two passes over
    ``images`` uint8 images after one warm-up pass.
    """
    import torch

    from raybench.cam import compute_cams
    from raybench.models import build_model, get_model_spec

    n = 16 if opts.quick else 48
    with torch_threads(opts) as threads:
        out: dict[str, Any] = {"images": n, S.IMAGE_SIZE: opts.image_size, "threads": threads}
        images = torch.randint(0, 256, (n, opts.image_size, opts.image_size), dtype=torch.uint8)
        rates = {}
        for name in opts.models:
            model = build_model(name, 4, image_size=opts.image_size).to(device)
            compute_cams(model, name, images[:4])
            best = min(timed(functools.partial(compute_cams, model, name, images))
                       for _ in range(2))
            rates[name] = n / best
            out[f"{name}_method"] = get_model_spec(name).cam_method
    out["images_per_s"] = rates
    return out


def _lines(out: dict[str, Any]) -> list[str]:
    return [f"cam {name}: {rate:.1f} images/s"
            for name, rate in out["images_per_s"].items()]


SECTION = Section("cam", bench_cam, headline={"cam_images_per_s": "images_per_s"},
                  lines=_lines)
