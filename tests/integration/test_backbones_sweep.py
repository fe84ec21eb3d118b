"""A Ray sweep mixing a library model with a paper model: trial ids, runs-table records, CAMs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from raybench.config import load_spec
from raybench.tune.sweep import run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_paper_sweep_with_a_timm_and_a_paper_model(local_ray: None, tmp_path: Path) -> None:
    from importlib.metadata import version

    spec = load_spec(None, [
        "name=mixed", "sweep.mode=paper", "sweep.models=[timm.test_resnet, torchvision.resnet18]",
        "model.image_size=32", "data.synthetic.per_class=12", "data.synthetic.size=32",
        "train.num_threads=1", "train.epochs=1", "train.batch_size=8", "train.device=cpu",
        f"data.cache_dir={tmp_path / 'cache'}", f"results={tmp_path / 'r'}", "cam.select=all"])
    run_sweep(spec)
    runs = pd.read_parquet(tmp_path / "r" / "mixed" / "runs").set_index("trial_id").sort_index()
    assert runs.index.tolist() == ["timm.test_resnet-synthetic-s0",
                                   "torchvision.resnet18-synthetic-s0"]
    assert (runs["status"] == "completed").all()
    assert runs["model_resolved"].str.startswith(("timm.test_resnet.", "torchvision.resnet18")).all()
    assert runs["model_library"].tolist() == [f"timm {version('timm')}",
                                              f"torchvision {version('torchvision')}"]
    assert runs["weights_sha256"].isna().all()
    cams = sorted(p.name for p in (tmp_path / "r" / "mixed" / "cams").glob("*.npz"))
    assert cams == [f"{t}.npz" for t in runs.index]
