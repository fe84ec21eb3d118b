"""Tests for raybench.data.manifest: building (with the folder importer), validating, writing and
reading manifests."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raybench import schema
from raybench.data.importers import ImportOptions, import_folder
from raybench.data.manifest import (
    manifest_root,
    read_manifest,
    sha256_file,
    validate_manifest,
    write_manifest,
)
from raybench.errors import DataError

KERMANY = Path(__file__).resolve().parents[3] / "shared" / "data" / "kermany-cxr-train"  # ../shared


def _image(path: Path, size: tuple[int, int], value: int = 100) -> Path:
    """Write a small grayscale image (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A class-folder dataset: 2 normal (mixed case folder), 3 bacteria (one nested), 1 covid19."""
    root = tmp_path / "hospital_a"
    _image(root / "Normal" / "b.png", (40, 30))
    _image(root / "Normal" / "a.JPG", (50, 20))
    _image(root / "bacteria" / "p1_x.jpeg", (33, 44))
    _image(root / "bacteria" / "p1_y.bmp", (32, 32))
    _image(root / "bacteria" / "sub" / "p2_z.tif", (20, 25))
    _image(root / "covid19" / "c.png", (64, 48))
    (root / "bacteria" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("top-level files are ignored")
    return root


def _frame(**overrides) -> pd.DataFrame:
    """A valid two-row manifest; keyword arguments replace whole columns."""
    data = {
        schema.IMAGE_ID: ["s/a", "s/b"],
        schema.PATH: ["normal/a.png", "viral/b.png"],
        schema.LABEL: ["normal", "viral"],
        schema.PATIENT_ID: ["p1", "p2"],
        schema.SOURCE: ["s", "s"],
        schema.SHA256: ["0" * 64, "1" * 64],
        schema.WIDTH: [10, 20],
        schema.HEIGHT: [11, 21],
    }
    data.update(overrides)
    return pd.DataFrame(data)


# --- sha256 / manifest_root -------------------------------------------------------------------


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    payload = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    path.write_bytes(payload)
    assert sha256_file(path) == hashlib.sha256(payload).hexdigest()
    assert sha256_file(str(path)) == hashlib.sha256(payload).hexdigest()


def test_manifest_root_is_the_manifest_folder(tmp_path: Path) -> None:
    assert manifest_root(tmp_path / "d" / "manifest.parquet") == tmp_path / "d"
    assert manifest_root("rel/m.parquet") == Path("rel")


# --- the folder importer's manifest -------------------------------------------------------------


def manifest_from_folder(root: Path, source: str | None = None) -> pd.DataFrame:
    """The manifest the folder importer builds (one folder per class, one patient per image)."""
    return import_folder(root, ImportOptions(source=source)).df


def test_from_folder_rows_columns_and_values(dataset: Path) -> None:
    df = manifest_from_folder(dataset)
    assert list(df.columns) == list(schema.MANIFEST_COLUMNS)
    assert len(df) == 6
    assert df[schema.PATH].tolist() == [
        "Normal/a.JPG",
        "Normal/b.png",
        "bacteria/p1_x.jpeg",
        "bacteria/p1_y.bmp",
        "bacteria/sub/p2_z.tif",
        "covid19/c.png",
    ]
    assert df[schema.LABEL].value_counts().to_dict() == {"bacteria": 3, "normal": 2, "covid19": 1}
    assert df[schema.IMAGE_ID].iloc[4] == "hospital_a/bacteria/sub/p2_z"
    assert (df[schema.PATIENT_ID] == df[schema.IMAGE_ID]).all()
    assert set(df[schema.SOURCE]) == {"hospital_a"}
    assert df[schema.SPLIT].isna().all() and df[schema.MASK_PATH].isna().all()
    assert df[schema.WIDTH].tolist() == [50, 40, 33, 32, 20, 64]
    assert df[schema.HEIGHT].tolist() == [20, 30, 44, 32, 25, 48]
    assert df[schema.WIDTH].dtype == "int32" and df[schema.HEIGHT].dtype == "int32"
    assert df[schema.SHA256].iloc[5] == sha256_file(dataset / "covid19" / "c.png")


def test_from_folder_source(dataset: Path) -> None:
    df = manifest_from_folder(dataset, source="hosp")
    assert df[schema.IMAGE_ID].iloc[0] == "hosp/Normal/a"
    assert df[schema.PATIENT_ID].tolist() == [
        "hosp/Normal/a", "hosp/Normal/b", "hosp/bacteria/p1_x", "hosp/bacteria/p1_y",
        "hosp/bacteria/sub/p2_z", "hosp/covid19/c"]  # one patient per image
    assert set(df[schema.SOURCE]) == {"hosp"}


def test_from_folder_is_deterministic(dataset: Path) -> None:
    pd.testing.assert_frame_equal(manifest_from_folder(dataset), manifest_from_folder(dataset))


def test_from_folder_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        manifest_from_folder(missing)


def test_from_folder_bad_class_folder(dataset: Path) -> None:
    (dataset / "Other").mkdir()
    _image(dataset / "Other" / "x.png", (8, 8))
    with pytest.raises(DataError, match="'Other'.*normal, bacteria, viral, covid19, pneumonia"):
        manifest_from_folder(dataset)


def test_from_folder_empty_class_folder(dataset: Path) -> None:
    (dataset / "viral").mkdir()
    (dataset / "viral" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=re.escape(str(dataset / "viral"))):
        manifest_from_folder(dataset)


def test_from_folder_no_class_folders(tmp_path: Path) -> None:
    _image(tmp_path / "flat.png", (8, 8))
    with pytest.raises(DataError, match="no class folders"):
        manifest_from_folder(tmp_path)


def test_from_folder_corrupt_image(dataset: Path) -> None:
    bad = dataset / "covid19" / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=re.escape(str(bad))):
        manifest_from_folder(dataset)


def test_from_folder_duplicate_ids(tmp_path: Path) -> None:
    _image(tmp_path / "normal" / "a.png", (8, 8))
    _image(tmp_path / "normal" / "a.jpg", (8, 8))
    with pytest.raises(DataError, match="image_id '.*/normal/a' is duplicated"):
        manifest_from_folder(tmp_path)


def _copy_kermany(dst: Path, per_class: int = 3) -> dict[str, list[Path]]:
    """Copy a few real images per class into ``dst/<label>/`` (never writing into shared)."""
    picks = {
        "normal": sorted((KERMANY / "NORMAL").glob("*.jpeg"))[:per_class],
        "bacteria": sorted((KERMANY / "PNEUMONIA").glob("*_bacteria_*.jpeg"))[:per_class],
        "viral": sorted((KERMANY / "PNEUMONIA").glob("*_virus_*.jpeg"))[:per_class],
    }
    for label, files in picks.items():
        (dst / label).mkdir(parents=True)
        for f in files:
            shutil.copy2(f, dst / label / f.name)
    return picks


@pytest.mark.skipif(not KERMANY.is_dir(), reason=f"real data not present at {KERMANY}")
def test_from_folder_on_real_kermany_copy(tmp_path: Path) -> None:
    root = tmp_path / "kermany"
    picks = _copy_kermany(root)
    df = manifest_from_folder(root)
    assert len(df) == 9
    assert df[schema.LABEL].value_counts().to_dict() == {"normal": 3, "bacteria": 3, "viral": 3}
    assert set(df[schema.WIDTH]) == {224} and set(df[schema.HEIGHT]) == {224}
    first_normal = picks["normal"][0]
    row = df[df[schema.PATH] == f"normal/{first_normal.name}"].iloc[0]
    assert row[schema.SHA256] == hashlib.sha256(first_normal.read_bytes()).hexdigest()
    assert row[schema.IMAGE_ID] == f"kermany/normal/{first_normal.stem}"
    assert (df[schema.PATIENT_ID] == df[schema.IMAGE_ID]).all()  # the folder layout names none


@pytest.mark.skipif(not KERMANY.is_dir(), reason=f"real data not present at {KERMANY}")
def test_original_kermany_layout_gives_normal_and_pneumonia(tmp_path: Path) -> None:
    for folder in ("NORMAL", "PNEUMONIA"):
        (tmp_path / folder).mkdir()
        src = sorted((KERMANY / folder).glob("*.jpeg"))[0]
        shutil.copy2(src, tmp_path / folder / src.name)
    # ``pneumonia`` is a manifest label; the kermany importer splits it into bacteria / viral.
    assert manifest_from_folder(tmp_path)[schema.LABEL].tolist() == ["normal", "pneumonia"]


# --- validate_manifest -------------------------------------------------------------------------


def test_validate_adds_optional_columns_and_orders() -> None:
    df = _frame()[[schema.LABEL, schema.PATH, schema.IMAGE_ID, schema.PATIENT_ID,
                   schema.SOURCE, schema.SHA256, schema.HEIGHT, schema.WIDTH]]
    out = validate_manifest(df, where="m.parquet")
    assert list(out.columns) == list(schema.MANIFEST_COLUMNS)
    assert out[schema.SPLIT].tolist() == [None, None]
    assert out[schema.MASK_PATH].tolist() == [None, None]
    assert out[schema.WIDTH].dtype == "int32" and out[schema.WIDTH].tolist() == [10, 20]
    assert out[schema.LABEL].dtype == object


def test_validate_missing_columns_listed() -> None:
    df = _frame().drop(columns=[schema.SHA256, schema.WIDTH])
    with pytest.raises(DataError, match="m.parquet.*sha256, width"):
        validate_manifest(df, where="m.parquet")


def test_validate_bad_label_names_row_and_value() -> None:
    with pytest.raises(DataError, match=r"m.parquet: row 1 \(image_id='s/b'\): label 'pneumonitis'"):
        validate_manifest(_frame(label=["normal", "pneumonitis"]), where="m.parquet")


def test_validate_labels_are_case_sensitive() -> None:
    with pytest.raises(DataError, match="'Normal'"):
        validate_manifest(_frame(label=["Normal", "viral"]), where="m")


def test_validate_duplicate_image_id() -> None:
    with pytest.raises(DataError, match="image_id 's/a' is duplicated"):
        validate_manifest(_frame(image_id=["s/a", "s/a"]), where="m")


def test_validate_split_values() -> None:
    ok = validate_manifest(_frame(split=["train", None]), where="m")
    assert ok[schema.SPLIT].tolist() == ["train", None]
    with pytest.raises(DataError, match="split 'training'.*train, val, test"):
        validate_manifest(_frame(split=["train", "training"]), where="m")


def test_validate_empty_required_value() -> None:
    with pytest.raises(DataError, match="row 0: column 'patient_id' is empty"):
        validate_manifest(_frame(patient_id=[None, "p2"]), where="m")


@pytest.mark.parametrize("bad", [0, -3, 2.5, "wide"])
def test_validate_bad_width(bad) -> None:
    with pytest.raises(DataError, match=f"width {bad!r}"):
        validate_manifest(_frame(width=[10, bad]), where="m")


@pytest.mark.parametrize(
    "bad", ["/abs/a.png", "../up.png", "a/../../up.png", "C:\\data\\a.png", "..\\up.png", ""]
)
def test_validate_rejects_escaping_paths(bad: str) -> None:
    with pytest.raises(DataError, match=re.escape(f"path {bad!r}")):
        validate_manifest(_frame(path=["normal/a.png", bad]), where="m")


def test_validate_rejects_escaping_mask_path() -> None:
    with pytest.raises(DataError, match=re.escape("mask_path '../m.png'")):
        validate_manifest(_frame(mask_path=[None, "../m.png"]), where="m")


def test_validate_accepts_uris_and_inner_dotdot() -> None:
    out = validate_manifest(
        _frame(path=["s3://bucket/x/a.png", "normal/sub/../b.png"]), where="m"
    )
    assert out[schema.PATH].tolist() == ["s3://bucket/x/a.png", "normal/sub/../b.png"]


# --- write / read ------------------------------------------------------------------------------


def test_write_read_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "manifest.parquet"
    df = validate_manifest(_frame(split=["train", "test"], mask_path=["m/a.png", None]), "m")
    assert write_manifest(df, path) == path
    assert pq.read_schema(path).remove_metadata().equals(schema.MANIFEST_SCHEMA)
    back = read_manifest(path)
    pd.testing.assert_frame_equal(back, df)
    assert [p.name for p in path.parent.iterdir()] == ["manifest.parquet"]  # no temp files left
    plain = pd.read_parquet(path)  # readable without raybench
    assert plain[schema.LABEL].tolist() == ["normal", "viral"]


def test_write_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.parquet"
    write_manifest(_frame(), path)
    write_manifest(_frame().iloc[:1], path)
    assert len(read_manifest(path)) == 1


def test_write_invalid_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "manifest.parquet"
    with pytest.raises(DataError, match=re.escape(str(path))):
        write_manifest(_frame(label=["normal", "flu"]), path)
    assert list(tmp_path.iterdir()) == []


def test_read_missing_and_corrupt(tmp_path: Path) -> None:
    missing = tmp_path / "missing.parquet"
    with pytest.raises(DataError, match=re.escape(f"{missing}: manifest file does not exist")):
        read_manifest(missing)
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(DataError, match=re.escape(str(junk))):
        read_manifest(junk)


def test_read_validates(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    _frame(label=["normal", "flu"]).to_parquet(path)
    with pytest.raises(DataError, match=re.escape(f"{path}: row 1") + ".*'flu'"):
        read_manifest(path)
