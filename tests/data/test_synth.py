"""Tests for raybench.data.synth: layout, manifest, determinism, class patterns, marker leak."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raybench import schema
from raybench.data.importers import ImportOptions, import_folder
from raybench.data.manifest import read_manifest
from raybench.data.synth import synthesize
from raybench.errors import DataError

PER_CLASS = 8
SIZE = 64
BRIGHT = 240  # marker strokes are 255; everything else is clipped at 230


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("clean")
    return out, synthesize(out, per_class=PER_CLASS, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("leaky")
    return out, synthesize(out, per_class=PER_CLASS, size=SIZE, seed=0, marker_leak=1.0)


def _arrays(root: Path, row: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Image as float (H, W) and lung mask as bool (H, W)."""
    img = np.asarray(Image.open(root / row[schema.PATH]), dtype=np.float64)
    mask = np.asarray(Image.open(root / row[schema.MASK_PATH])) > 0
    return img, mask


def _features(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Lung mean, lung std, left/right lung mean gap, outer-lower minus inner lung mean."""
    half = img.shape[1] // 2
    left, right = mask.copy(), mask.copy()
    left[:, half:], right[:, :half] = False, False
    cols = np.arange(img.shape[1])
    outer = mask & ((cols < half * 0.55) | (cols > img.shape[1] - half * 0.55))[None, :]
    outer[: img.shape[0] // 2] = False
    return np.array([
        img[mask].mean(),
        img[mask].std(),
        abs(img[left].mean() - img[right].mean()),
        img[outer].mean() - img[mask & ~outer].mean(),
    ])


def _features_by_label(root: Path, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Feature rows, (n, 4), per label."""
    out: dict[str, list[np.ndarray]] = {}
    for _, row in df.iterrows():
        out.setdefault(row[schema.LABEL], []).append(_features(*_arrays(root, row)))
    return {k: np.stack(v) for k, v in out.items()}


# --- layout and manifest -----------------------------------------------------------------------


def test_layout_and_manifest(clean) -> None:
    root, df = clean
    assert list(df.columns) == list(schema.MANIFEST_COLUMNS)
    assert len(df) == 4 * PER_CLASS
    assert df[schema.LABEL].value_counts().to_dict() == {lab: PER_CLASS for lab in schema.LABELS}
    row = df.iloc[1]
    assert row[schema.PATH] == "images/normal/normal_0001.png"
    assert row[schema.MASK_PATH] == "masks/normal_0001.png"
    assert row[schema.IMAGE_ID] == "synthetic/normal/normal_0001"
    assert row[schema.PATIENT_ID] == "synth-normal-1"
    assert df[schema.PATIENT_ID].is_unique
    assert set(df[schema.SOURCE]) == {"synthetic"} and df[schema.SPLIT].isna().all()
    assert set(df[schema.WIDTH]) == {SIZE} and set(df[schema.HEIGHT]) == {SIZE}
    pd.testing.assert_frame_equal(read_manifest(root / "manifest.parquet"), df)
    assert len(list((root / "images").rglob("*.png"))) == 4 * PER_CLASS
    assert len(list((root / "masks").glob("*.png"))) == 4 * PER_CLASS


def test_sha256_matches_files_and_ids_match_folder_import(clean) -> None:
    root, df = clean
    for _, row in df.iterrows():
        digest = hashlib.sha256((root / row[schema.PATH]).read_bytes()).hexdigest()
        assert row[schema.SHA256] == digest
    imported = import_folder(root / "images", ImportOptions(source="synthetic")).df
    assert sorted(imported[schema.IMAGE_ID]) == sorted(df[schema.IMAGE_ID])
    assert sorted(imported[schema.SHA256]) == sorted(df[schema.SHA256])


def test_images_and_masks_are_8bit_grayscale(clean) -> None:
    root, df = clean
    for _, row in df.iterrows():
        with Image.open(root / row[schema.PATH]) as img:
            assert img.mode == "L" and img.size == (SIZE, SIZE)
        with Image.open(root / row[schema.MASK_PATH]) as mask:
            assert mask.mode == "L" and mask.size == (SIZE, SIZE)
            assert set(np.unique(np.asarray(mask))) == {0, 255}


def test_mask_area_and_lungs_darker_than_body(clean) -> None:
    root, df = clean
    for _, row in df[df[schema.LABEL] == "normal"].iterrows():
        img, mask = _arrays(root, row)
        assert 0.15 < mask.mean() < 0.32  # two lung fields cover about a fifth of the image
        centre_strip = img[SIZE // 3 : 2 * SIZE // 3, SIZE // 2 - 2 : SIZE // 2 + 2]  # mediastinum
        assert centre_strip.mean() > img[mask].mean() + 40
        assert img[:3, :3].mean() < 40  # dark background corner
    _, mask0 = _arrays(root, df.iloc[0])
    _, mask1 = _arrays(root, df.iloc[1])
    assert (mask0 != mask1).any()  # jitter moves the lungs


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_is_byte_identical(clean, tmp_path: Path) -> None:
    root, df = clean
    again = synthesize(tmp_path, per_class=PER_CLASS, size=SIZE, seed=0)
    assert again[schema.SHA256].tolist() == df[schema.SHA256].tolist()
    mask = df[schema.MASK_PATH].iloc[-1]
    assert (tmp_path / mask).read_bytes() == (root / mask).read_bytes()


def test_different_seed_differs(clean, tmp_path: Path) -> None:
    _, df = clean
    other = synthesize(tmp_path, per_class=PER_CLASS, size=SIZE, seed=1)
    assert not set(other[schema.SHA256]) & set(df[schema.SHA256])


def test_images_do_not_depend_on_per_class(clean, tmp_path: Path) -> None:
    _, df = clean
    fewer = synthesize(tmp_path, per_class=2, size=SIZE, seed=0, labels=("viral",))
    expected = df[df[schema.LABEL] == "viral"][schema.SHA256].tolist()[:2]
    assert fewer[schema.SHA256].tolist() == expected


# --- class patterns ----------------------------------------------------------------------------


def test_class_patterns_differ_inside_lungs(clean) -> None:
    feats = {k: v.mean(axis=0) for k, v in _features_by_label(*clean).items()}
    mean, std, asym, outer = 0, 1, 2, 3
    assert feats["bacteria"][mean] > feats["normal"][mean] + 8  # dense consolidation
    assert feats["bacteria"][asym] > 3 * feats["normal"][asym]  # one lung only
    assert feats["bacteria"][asym] > 2 * feats["covid19"][asym]  # covid is bilateral
    assert feats["viral"][mean] > feats["normal"][mean] + 10  # diffuse haze
    assert feats["viral"][std] > feats["normal"][std] + 1  # fine texture
    assert feats["covid19"][outer] > feats["normal"][outer] + 5  # peripheral, lower zones
    assert feats["covid19"][outer] > feats["viral"][outer] + 5


def test_classes_are_separable_by_simple_lung_features(clean, tmp_path: Path) -> None:
    """A nearest-centroid rule on lung features, fit on one seed, generalises to another."""
    train = _features_by_label(*clean)
    test_df = synthesize(tmp_path, per_class=PER_CLASS, size=SIZE, seed=7)
    test = _features_by_label(tmp_path, test_df)
    scale = np.concatenate(list(train.values())).std(axis=0)
    centroids = np.stack([train[lab].mean(axis=0) / scale for lab in schema.LABELS])
    correct = 0
    for i, lab in enumerate(schema.LABELS):
        dist = np.linalg.norm(test[lab][:, None] / scale - centroids[None], axis=2)
        correct += int((dist.argmin(axis=1) == i).sum())
    assert correct / (4 * PER_CLASS) >= 0.75


def test_background_outside_body_is_class_independent(clean) -> None:
    root, df = clean
    corner = {
        lab: np.mean([_arrays(root, r)[0][:6, :6].mean() for _, r in g.iterrows()])
        for lab, g in df.groupby(schema.LABEL)
    }
    assert max(corner.values()) - min(corner.values()) < 5


# --- marker leak -------------------------------------------------------------------------------


def _bright_outside(root: Path, row: pd.Series) -> np.ndarray:
    img, mask = _arrays(root, row)
    return (img >= BRIGHT) & ~mask


def test_no_marker_without_leak(clean) -> None:
    root, df = clean
    for _, row in df.iterrows():
        img, _ = _arrays(root, row)
        assert img.max() < BRIGHT


def test_marker_leak_puts_bright_class_marker_outside_lungs(leaky) -> None:
    root, df = leaky
    corners = {"normal": (0, 0), "bacteria": (0, 1), "viral": (1, 0), "covid19": (1, 1)}
    for _, row in df.iterrows():
        img, mask = _arrays(root, row)
        assert not ((img >= BRIGHT) & mask).any()  # never inside the lungs
        ys, xs = np.nonzero(_bright_outside(root, row))
        assert len(ys) >= 10
        quadrant = (int(ys.mean() >= SIZE / 2), int(xs.mean() >= SIZE / 2))
        assert quadrant == corners[row[schema.LABEL]], row[schema.PATH]


def test_marker_shapes_differ_by_class(leaky) -> None:
    root, df = leaky
    counts = {
        lab: np.mean([_bright_outside(root, r).sum() for _, r in g.iterrows()])
        for lab, g in df.groupby(schema.LABEL)
    }
    assert counts["bacteria"] > counts["viral"] + 5  # "B" has more ink than "V"


def test_partial_leak_marks_some_images(tmp_path: Path) -> None:
    df = synthesize(tmp_path, per_class=PER_CLASS, size=SIZE, seed=3, marker_leak=0.5)
    marked = sum(_bright_outside(tmp_path, r).any() for _, r in df.iterrows())
    assert 0 < marked < len(df)


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_class": 0}, "per_class=0"),
        ({"size": 16}, "size=16"),
        ({"seed": -1}, "seed=-1"),
        ({"marker_leak": 1.5}, "marker_leak=1.5"),
        ({"marker_leak": -0.1}, "marker_leak=-0.1"),
        ({"labels": ("normal", "pneumonia")}, "'pneumonia'"),
        ({"labels": ("normal", "normal")}, "distinct"),
        ({"labels": ()}, "labels=\\[\\]"),
    ],
)
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        synthesize(tmp_path, **kwargs)
    assert not (tmp_path / "manifest.parquet").exists()


def test_label_subset_and_size(tmp_path: Path) -> None:
    df = synthesize(tmp_path, per_class=3, size=48, seed=0, labels=("covid19", "normal"))
    assert df[schema.LABEL].tolist() == ["covid19"] * 3 + ["normal"] * 3
    assert set(df[schema.WIDTH]) == {48}
    assert not (tmp_path / "images" / "viral").exists()


def test_fast_enough(tmp_path: Path) -> None:
    """The requirement is >= 200 images/s at 64 px; allow 4x slack for a busy CI machine."""
    start = time.perf_counter()
    synthesize(tmp_path, per_class=25, size=64, seed=0)
    assert 100 / (time.perf_counter() - start) >= 50
