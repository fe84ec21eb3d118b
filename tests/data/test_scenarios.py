"""Scenarios: registry, user specs, merges, caps, test_from, patient/content-disjoint splits."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from raybench import schema as S
from raybench.config import DataConfig, load_spec
from raybench.data.dataset import prepare_data
from raybench.data.importers import import_dataset, write_import
from raybench.data.manifest import write_manifest
from raybench.catalog.scenarios import SCENARIOS, ScenarioSpec, get_scenario
from raybench.data.scenarios import build_scenario
from raybench.errors import ConfigError, DataError


def _manifest(path: Path, counts: dict[str, int], source: str = "a", per_patient: int = 2,
              split: str | None = None) -> Path:
    """Rows only (no pixels are read when building a scenario); ``per_patient`` images each."""
    rows = []
    for label, n in counts.items():
        for i in range(n):
            rows.append({S.IMAGE_ID: f"{source}/{label}/{i}", S.PATH: f"{label}/{i}.png",
                         S.LABEL: label, S.PATIENT_ID: f"{label}-{i // per_patient}",
                         S.SOURCE: source, S.SPLIT: split,
                         S.SHA256: f"{source}-{label}-{i}", S.WIDTH: 8, S.HEIGHT: 8})
    write_manifest(pd.DataFrame(rows), path)
    return path


def _key(df: pd.DataFrame) -> pd.Series:
    return df[S.SOURCE] + "/" + df[S.PATIENT_ID]


def _counts(built, split: str) -> dict[str, int]:
    return built.summary["counts"][split]


def test_registry_has_the_paper_scenarios() -> None:
    assert SCENARIOS.keys() == ["paper_1", "paper_2", "paper_3"]
    assert get_scenario("paper-1").classes == ("normal", "covid19")
    assert dict(get_scenario("paper-3").caps) == {"normal": 350, "bacteria": 350, "viral": 350}
    with pytest.raises(ConfigError, match="unknown scenario 'paper_4'.*valid: paper_1, paper_2"):
        get_scenario("paper-4")


def test_bad_specs_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="merge target 'pneumonia' is not in classes"):
        ScenarioSpec("x", ("normal", "covid19"), merge=(("viral", "pneumonia"),))
    with pytest.raises(ConfigError, match="class 'pneumo' is neither a manifest label"):
        ScenarioSpec("x", ("normal", "pneumo"))
    with pytest.raises(ConfigError, match="cap normal=0"):
        ScenarioSpec("x", ("normal", "viral"), caps=(("normal", 0),))
    bad = tmp_path / "s.yaml"
    bad.write_text("classes: [normal, viral]\ncapz: {normal: 3}\n")
    with pytest.raises(ConfigError, match=r"s.yaml: unknown key\(s\) capz"):
        get_scenario(str(bad))


def test_paper_2_is_disjoint_seeded_and_stratified(tmp_path: Path) -> None:
    m = _manifest(tmp_path / "m.parquet", {"normal": 60, "bacteria": 80, "viral": 40, "covid19": 20})
    a = build_scenario(get_scenario("paper-2"), m, seed=3, val_fraction=0.2, test_fraction=0.25)
    b = build_scenario(get_scenario("paper-2"), m, seed=3, val_fraction=0.2, test_fraction=0.25)
    c = build_scenario(get_scenario("paper-2"), m, seed=4, val_fraction=0.2, test_fraction=0.25)
    assert a.df.equals(b.df) and not a.df.equals(c.df)
    assert (a.df.groupby(_key(a.df))[S.SPLIT].nunique() == 1).all()
    assert _counts(a, "test") == {"normal": 16, "bacteria": 20, "viral": 10, "covid19": 4}
    assert sum(sum(v.values()) for v in a.summary["counts"].values()) == 200
    assert a.summary["seed"] == 3 and a.summary["paper_counts"]["test"]["normal"] == 234


def test_caps_trim_training_only_and_keep_the_test_set(tmp_path: Path) -> None:
    m = _manifest(tmp_path / "m.parquet", {"normal": 60, "bacteria": 80, "viral": 40, "covid19": 20})
    capped = ScenarioSpec("small", ("normal", "bacteria", "viral", "covid19"),
                          caps=(("normal", 10), ("bacteria", 11), ("viral", 10)))
    full = build_scenario(get_scenario("paper-2"), m, seed=0)
    cut = build_scenario(capped, m, seed=0)
    for cls, cap in (("normal", 10), ("bacteria", 10), ("viral", 10)):  # 11 -> 10: whole patients
        assert _counts(cut, "train")[cls] + _counts(cut, "val")[cls] == cap
    assert _counts(cut, "train")["covid19"] + _counts(cut, "val")["covid19"] == 16  # uncapped
    test_ids = lambda b: sorted(b.df.loc[b.df[S.SPLIT] == "test", S.IMAGE_ID])  # noqa: E731
    assert test_ids(cut) == test_ids(full)


def test_user_scenario_merges_labels(tmp_path: Path) -> None:
    m = _manifest(tmp_path / "m.parquet", {"normal": 20, "bacteria": 10, "viral": 10, "covid19": 6})
    spec_file = tmp_path / "pn.yaml"
    spec_file.write_text("name: pneumonia_vs_normal\nclasses: [normal, pneumonia]\n"
                         "merge: {bacteria: pneumonia, viral: pneumonia}\ncaps: {normal: 12}\n")
    built = build_scenario(get_scenario(str(spec_file)), m, seed=0, test_fraction=0.2)
    assert built.classes == ("normal", "pneumonia")
    assert set(built.df[S.LABEL]) == {"normal", "pneumonia"}
    total = {c: sum(built.summary["counts"][s][c] for s in S.SPLITS) for c in built.classes}
    assert total["pneumonia"] == 20  # covid19 left out: not a class of the scenario
    assert _counts(built, "train")["normal"] + _counts(built, "val")["normal"] <= 12
    assert built.summary["merge"] == {"bacteria": "pneumonia", "viral": "pneumonia"}


def test_identical_images_of_different_patients_stay_in_one_split(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "m.parquet", {"normal": 40, "viral": 40}, per_patient=1)
    df = pd.read_parquet(path)
    df.loc[df[S.IMAGE_ID].str.startswith("a/viral/"), S.SHA256] = "same-bytes-for-all-viral"
    write_manifest(df, path)
    built = build_scenario(ScenarioSpec("v", ("normal", "viral")), path, seed=0)
    viral = built.df[built.df[S.LABEL] == "viral"]
    assert viral[S.SPLIT].nunique() == 1 and len(viral) == 40


def test_test_from_source_and_from_manifest(tmp_path: Path) -> None:
    a = _manifest(tmp_path / "a.parquet", {"normal": 30, "covid19": 10}, source="a")
    b = _manifest(tmp_path / "b.parquet", {"normal": 6, "covid19": 4}, source="b")
    both = pd.concat([pd.read_parquet(a), pd.read_parquet(b)], ignore_index=True)
    write_manifest(both, tmp_path / "ab.parquet")
    by_source = build_scenario(get_scenario("paper-1"), tmp_path / "ab.parquet", test_from="b")
    by_file = build_scenario(get_scenario("paper-1"), a, test_from=str(b))
    for built in (by_source, by_file):
        test = built.df[built.df[S.SPLIT] == "test"]
        assert set(test[S.SOURCE]) == {"b"} and len(test) == 10
        assert set(built.df.loc[built.df[S.SPLIT] != "test", S.SOURCE]) == {"a"}
    assert by_file.manifests == (a, b) and sorted(set(by_file.origins)) == [0, 1]
    with pytest.raises(DataError, match="test_from 'zz' is neither a source"):
        build_scenario(get_scenario("paper-1"), a, test_from="zz")


def test_train_test_overlap_is_refused_naming_images(tmp_path: Path) -> None:
    a = _manifest(tmp_path / "a.parquet", {"normal": 30, "covid19": 10}, source="a")
    b_path = _manifest(tmp_path / "b.parquet", {"normal": 6, "covid19": 4}, source="b")
    b = pd.read_parquet(b_path)
    b.loc[0, S.SHA256] = "a-covid19-3"  # the same file as a training image of source a
    write_manifest(b, b_path)
    with pytest.raises(DataError, match=r"train/test overlap: 1 test image\(s\) identical to "
                                        r"training images, e.g. 'b/normal/0' == 'a/covid19/3'"):
        build_scenario(get_scenario("paper-1"), a, test_from=str(b_path))
    built = build_scenario(get_scenario("paper-1"), a, test_from=str(b_path), allow_overlap=True)
    assert len(built.summary["overlap_allowed"]) == 1


def test_missing_class_is_named(tmp_path: Path) -> None:
    m = _manifest(tmp_path / "m.parquet", {"normal": 20, "bacteria": 10})
    with pytest.raises(DataError, match="no training images of class\\(es\\) covid19"):
        build_scenario(get_scenario("paper-1"), m)


def test_prepare_data_with_a_scenario(synth_manifest: Path, tmp_path: Path) -> None:
    cfg = DataConfig(manifest=str(synth_manifest), scenario="paper-1", cache_dir=str(tmp_path),
                     test_fraction=0.25)
    data = prepare_data(cfg, 32)
    assert data.labels == ("normal", "covid19")
    counts = data.scenario["counts"]
    assert len(data.train) == sum(counts["train"].values()) and len(data.test) == 20
    assert sorted(data.test.targets.tolist()) == [0] * 10 + [1] * 10
    assert data.train.images.shape[1:] == (32, 32)
    with pytest.raises(ConfigError, match="unknown scenario 'paper_9'"):
        load_spec(None, ["data.scenario=paper-9"])
    with pytest.raises(ConfigError, match="needs data.scenario"):
        prepare_data(dataclasses.replace(cfg, scenario=None, test_from="x"), 32)


@pytest.mark.slow
def test_paper_scenarios_on_the_shared_sets(shared_films) -> None:
    out = shared_films.manifest  # Kermany and Hannover, imported once per session
    spec = get_scenario("paper-2")
    one = build_scenario(spec, out, seed=7)
    two = build_scenario(spec, out, seed=7)
    assert one.df.equals(two.df) and one.files == two.files
    splits_per_patient = one.df.groupby(_key(one.df))[S.SPLIT].nunique()
    assert len(one.df) == 5475 and (splits_per_patient == 1).all()  # no patient in two splits
    # byte-identical Kermany pairs never straddle splits
    assert (one.df.groupby(S.SHA256)[S.SPLIT].nunique() == 1).all()
    three = build_scenario(get_scenario("paper-3"), out, seed=7)
    for cls in ("normal", "bacteria", "viral"):
        assert 340 <= _counts(three, "train")[cls] + _counts(three, "val")[cls] <= 350
    assert _counts(three, "test") == _counts(one, "test")


def _film(path: Path, seed: int) -> Path:
    """A smooth 128 px gray image (real films are smooth at the hash's 32 x 32 scale)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (8, 8)).astype(np.uint8)).resize(
        (128, 128), Image.Resampling.BICUBIC).save(path)
    return path


def _near_copy(src: Path, dst: Path) -> None:
    """The same radiograph as another collection republishes it: brighter, re-encoded JPEG."""
    from PIL import Image, ImageEnhance

    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as img:
        ImageEnhance.Brightness(img.convert("L")).enhance(1.1).save(dst, quality=80)


def _folder_set(root: Path, counts: dict[str, int], seed: int) -> None:
    for k, (label, n) in enumerate(counts.items()):
        for i in range(n):
            _film(root / label / f"{label[0]}{i}.png", seed + 100 * k + i)


def test_near_duplicates_across_train_and_test_are_refused(tmp_path: Path) -> None:
    _folder_set(tmp_path / "a", {"normal": 8, "covid19": 8}, seed=0)
    _folder_set(tmp_path / "b", {"normal": 3}, seed=1000)  # another hospital's test images
    _near_copy(tmp_path / "a" / "covid19" / "c3.png", tmp_path / "b" / "normal" / "twin.jpg")
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_import(import_dataset("folder", tmp_path / "a"), a)
    write_import(import_dataset("folder", tmp_path / "b"), b)
    with pytest.raises(DataError, match=r"1 near-duplicate pair\(s\) across train and test, e.g. "
                                        r"'a/covid19/c3' ~ 'b/normal/twin' "
                                        r"\(dHash distance \d+\).*allow_overlap"):
        build_scenario(get_scenario("paper-1"), a, test_from=str(b))
    built = build_scenario(get_scenario("paper-1"), a, test_from=str(b), allow_overlap=True)
    assert [p for p in built.summary["overlap_allowed"] if "near-duplicate" in p]


def test_near_duplicates_of_different_patients_stay_in_one_split(tmp_path: Path) -> None:
    _folder_set(tmp_path / "a", {"normal": 15, "viral": 15}, seed=0)
    _near_copy(tmp_path / "a" / "viral" / "v2.png", tmp_path / "a" / "viral" / "copy.jpg")
    path = tmp_path / "a.parquet"  # the folder importer: every image its own patient
    write_import(import_dataset("folder", tmp_path / "a"), path)
    for seed in range(4):
        built = build_scenario(ScenarioSpec("v", ("normal", "viral")), path, seed=seed)
        twin = built.df[built.df[S.IMAGE_ID].isin(["a/viral/copy", "a/viral/v2"])]
        assert len(twin) == 2 and twin[S.SPLIT].nunique() == 1, (seed, twin)
