"""The lungs-hidden shortcut control (``data.roi``): masking, mask sources, cache, known answer.

Known answer on synthetic X-rays whose classes show only inside the lungs: a clean set learns
with ``full`` and falls to chance (0.25, 4 classes) with ``outside_lungs``; a marker-leak set
(a class letter in a corner, outside the lungs) keeps its accuracy with the lungs hidden.
Measured (CNN-X, 64 px, 5 epochs, seeds 0 / 1 / 2): leak + outside_lungs 1.00 / 1.00 / 1.00;
clean + outside_lungs 0.22 / 0.25 / 0.22; clean + full 0.78 / 0.97 / 0.88.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raybench import schema as S
from raybench.cam.roi import lung_field_template
from raybench.config import DataConfig, load_spec
from raybench.data.dataset import prepare_data
from raybench.data.manifest import write_manifest
from raybench.data.transforms import ROI_FILL, apply_roi, widen


def test_apply_roi_blanks_complements() -> None:
    images = np.full((2, 8, 8), 200, dtype=np.uint8)
    lungs = np.zeros((2, 8, 8), dtype=bool)
    lungs[:, 2:6, 1:4] = True
    inside = apply_roi(images.copy(), lungs, "outside_lungs")
    outside = apply_roi(images.copy(), lungs, "lungs_only")
    assert (inside[lungs] == ROI_FILL).all() and (inside[~lungs] == 200).all()
    assert (outside[~lungs] == ROI_FILL).all() and (outside[lungs] == 200).all()
    assert apply_roi(images.copy(), lungs, "full").tolist() == images.tolist()
    with pytest.raises(ValueError, match="allowed: full, lungs_only, outside_lungs"):
        apply_roi(images, lungs, "lungs")
    grown = widen(lungs[:1], margin=0.0)  # at least one pixel on each side
    assert grown.sum() == 6 * 5 and grown[0, 1:7, 0:5].all()


def _cfg(manifest: Path, tmp: Path, roi: str) -> DataConfig:
    return DataConfig(manifest=str(manifest), cache_dir=str(tmp / "cache"), roi=roi,
                      labels=S.LABELS)


def test_prepare_data_masks_every_split_from_mask_files(synth_manifest: Path,
                                                        tmp_path: Path) -> None:
    full = prepare_data(_cfg(synth_manifest, tmp_path, "full"), 64)
    hidden = prepare_data(_cfg(synth_manifest, tmp_path, "outside_lungs"), 64)
    only = prepare_data(_cfg(synth_manifest, tmp_path, "lungs_only"), 64)
    assert hidden.scenario["roi"]["masks_from_file"] == 160
    assert len(list((tmp_path / "cache" / "decoded").glob("*/shard-*.npy"))) == 1  # one unmasked entry
    for name in ("train", "val", "test"):
        a, h, o = (getattr(d, name).images.numpy() for d in (full, hidden, only))
        blank_h, blank_o = h == ROI_FILL, o == ROI_FILL
        changed = a != h
        assert changed.any() and (h[changed] == ROI_FILL).all()  # only blanking, nothing else
        # complements: every pixel is kept by exactly one of the two (where it is not 0 already)
        nonzero = a != ROI_FILL
        assert not (blank_h & blank_o & nonzero).any()
        assert ((h == a) | (o == a)).all()
    share = hidden.scenario["roi"]["lung_share"]
    assert 0.15 < share < 0.45  # widened synthetic lung fields


def test_without_mask_path_the_roi_template_is_used(synth_manifest: Path, tmp_path: Path) -> None:
    df = pd.read_parquet(synth_manifest).drop(columns=[S.MASK_PATH])
    df[S.PATH] = [str(synth_manifest.parent / p) for p in df[S.PATH]]
    df[S.PATH] = [Path(p).as_uri() for p in df[S.PATH]]
    path = tmp_path / "m.parquet"
    write_manifest(df, path)
    cfg = DataConfig(manifest=str(path), cache_dir=str(tmp_path / "c"), roi="outside_lungs",
                     allow_outside_root=True)
    data = prepare_data(cfg, 64)
    assert data.scenario["roi"]["masks_from_template"] == 160
    lungs = widen(lung_field_template(64)[None])[0]
    assert (data.train.images.numpy()[:, lungs] == ROI_FILL).all()


def _accuracy(tmp: Path, leak: float, roi: str, seed: int = 0) -> float:
    from raybench.engine.run import run_training
    from raybench.store import ResultStore

    spec = load_spec(None, [
        f"name=l{leak:g}-{roi}", f"results={tmp / 'runs'}", f"data.cache_dir={tmp / 'cache'}",
        "data.synthetic.per_class=40", "data.synthetic.size=64",
        f"data.synthetic.marker_leak={leak}", f"data.synthetic.seed={seed}",
        f"data.split_seed={seed}", f"train.seed={seed}", f"data.roi={roi}", "model.name=cnnx",
        "model.image_size=64", "train.epochs=5", "train.batch_size=16", "train.lr=1e-3",
        "train.device=cpu", "cam.enabled=false"])
    run_training(spec)
    store = ResultStore(spec.results)
    assert store.read_table(spec.name, "runs")["roi"].tolist() == [roi]
    m = store.read_table(spec.name, "metrics")
    row = m[(m["class"] == "all") & (m["split"] == "test") & (m["metric"] == "accuracy")]
    return float(row["value"].iloc[0])


@pytest.mark.slow  # three short CNN-X trainings: 10-25 s on 2 busy cores
def test_known_answer_leak_survives_hidden_lungs_clean_falls_to_chance(
        tmp_path: Path, one_torch_thread: None) -> None:
    leak_hidden = _accuracy(tmp_path, 1.0, "outside_lungs")
    clean_hidden = _accuracy(tmp_path, 0.0, "outside_lungs")
    clean_full = _accuracy(tmp_path, 0.0, "full")
    assert leak_hidden >= 0.9, leak_hidden  # the marker shortcut needs no lungs
    assert clean_hidden <= 0.4, clean_hidden  # chance is 0.25 (32 test images)
    assert clean_full >= 0.6, clean_full  # the same set learns when the lungs are shown
