"""The demo job: a few models trained on synthetic chest X-rays, results under ``./runs``."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from raybench.config import load_spec
from raybench.engine.run import RunOutcome, run_training

#: Small, fast models so the demo finishes in about a minute on two CPU cores.
DEMO_MODELS: tuple[str, ...] = ("cnnx", "resnet18")


def run_demo(results: str, spec_path: str | Path) -> list[RunOutcome]:
    """Trains every demo model with the demo spec; returns their outcomes."""
    base = load_spec(spec_path, [f"results={results}"])
    outcomes = []
    for name in DEMO_MODELS:
        spec = dataclasses.replace(base, model=dataclasses.replace(base.model, name=name))
        outcomes.append(run_training(spec))
    return outcomes
