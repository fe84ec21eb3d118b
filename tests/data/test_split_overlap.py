"""One duplicate rule for every split: a plain manifest with its own split column is checked
for patients, identical and near-duplicate images across train and test, like a scenario."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raybench.config import load_spec
from raybench.data import dataset
from raybench.data.dataset import decoded_manifests, split_sizes
from raybench.data.manifest import sha256_file
from raybench.errors import DataError


def _manifest(tmp: Path) -> tuple[Path, pd.DataFrame]:
    from raybench.data.synth import synthesize

    synthesize(tmp / "d", per_class=4, size=32, seed=3)
    path = tmp / "d" / "manifest.parquet"
    df = pd.read_parquet(path)
    df["split"] = ["test" if i % 4 == 0 else "train" for i in range(len(df))]
    return path, df


def _data(path: Path, *sets: str):
    return load_spec(None, [f"data.manifest={path}", *sets]).data


def _copy_into_test(tmp: Path, df: pd.DataFrame, change: bool) -> pd.DataFrame:
    """Test row 0 becomes a copy (or a one-pixel variant) of a training image, new patient."""
    train = df.index[df["split"] == "train"][0]
    test = df.index[df["split"] == "test"][0]
    src = tmp / "d" / df.loc[train, "path"]
    dst = tmp / "d" / "twin.png"
    shutil.copy(src, dst)
    if change:
        pixels = np.array(Image.open(dst))
        pixels[0, 0] = pixels[0, 0] // 2
        Image.fromarray(pixels).save(dst)
    df.loc[test, ["path", "sha256", "label"]] = ["twin.png", sha256_file(dst), df.loc[train, "label"]]
    return df


@pytest.mark.parametrize("change", [False, True], ids=["identical", "near-duplicate"])
def test_plain_manifest_split_refuses_duplicates_across_train_and_test(tmp_path: Path,
                                                                       change: bool) -> None:
    path, df = _manifest(tmp_path)
    df.to_parquet(path)
    assert split_sizes(_data(path))["test"] == len(df) // 4  # its own split, nothing shared
    _copy_into_test(tmp_path, df, change).to_parquet(path)
    what = "near-duplicate pair(s) across train and test" if change else \
        "test image(s) identical to training images"
    pattern = rf"^train/test overlap: 1 {re.escape(what)}.*\(set data.allow_overlap=true to train anyway\)$"
    with pytest.raises(DataError, match=pattern):
        split_sizes(_data(path))
    assert split_sizes(_data(path, "data.allow_overlap=true"))["test"] == len(df) // 4


def test_one_plan_per_data_config_until_the_manifest_changes(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path, df = _manifest(tmp_path)
    df.to_parquet(path)
    made: list[Path] = []
    real = dataset._make_plan
    monkeypatch.setattr(dataset, "_PLANS", type(dataset._PLANS)())  # none from earlier tests
    monkeypatch.setattr(dataset, "_make_plan", lambda c, p: made.append(p) or real(c, p))
    cfg = _data(path)
    assert split_sizes(cfg) == split_sizes(_data(path)) == {"train": 8, "val": 4, "test": 4}
    assert decoded_manifests(cfg) == (path,)
    assert made == [path]  # sizing the splits and planning the cache: one plan
    split_sizes(_data(path, "data.allow_overlap=true"))
    assert len(made) == 2  # another data config: its own plan
    df.assign(split=["train" if i % 4 == 0 else "test" for i in range(len(df))]).to_parquet(path)
    assert split_sizes(cfg)["test"] == 12  # the manifest was rewritten: planned again
    assert len(made) == 3
