"""Audit: duplicates (exact, near), patient overlap, unreadable files, per-source facts."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raybench import schema as S
from raybench.data.audit import audit_manifest, strict_failures
from raybench.data import fingerprints
from raybench.data.fingerprints import dhash
from raybench.data.importers import ImportOptions, import_dataset, write_import
from raybench.data.manifest import write_manifest


def _xray(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (8, 8)).astype(np.uint8)
    return Image.fromarray(arr).resize((size, size), Image.Resampling.BICUBIC)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """normal: 4 distinct images + a byte copy + a re-encoded copy; covid19: 2 large RGB JPEGs."""
    root = tmp_path / "d"
    (root / "normal").mkdir(parents=True)
    (root / "covid19").mkdir()
    for i in range(4):
        _xray(i).save(root / "normal" / f"n{i}.png")
    shutil.copy(root / "normal" / "n0.png", root / "normal" / "n0_copy.png")
    _xray(1).resize((60, 60)).save(root / "normal" / "n1_small.png")
    for i in range(2):
        _xray(10 + i, 96).convert("RGB").save(root / "covid19" / f"c{i}.jpg", quality=90)
    write_import(import_dataset("folder", root), root / "m.parquet")
    return root / "m.parquet"


def test_dhash_is_stable_under_resize_and_differs_between_images() -> None:
    a, b, c = dhash(_xray(1)), dhash(_xray(1).resize((40, 40))), dhash(_xray(2))
    bits = lambda x, y: int(np.unpackbits(x ^ y).sum())  # noqa: E731
    # 1024 bits (32 x 32 gradients, packed); the threshold is 112 (see audit.NEAR_THRESHOLD)
    assert a.shape == (128,) and bits(a, b) <= 60 and bits(a, c) > 300


def test_audit_finds_duplicates_and_source_facts(dataset: Path) -> None:
    report = audit_manifest(dataset)
    assert report["images"] == 8
    exact = [(p["a"], p["b"]) for p in report["exact_duplicates"]]
    assert exact == [("d/normal/n0", "d/normal/n0_copy")]
    near = {(p["a"], p["b"]) for p in report["near_duplicates"]}
    assert near == {("d/normal/n1", "d/normal/n1_small")}
    facts = report["per_source"]["d"]
    assert facts["labels"] == {"covid19": 2, "normal": 6}
    assert facts["formats"] == {"PNG": 6, "JPEG": 2} and facts["modes"] == {"L": 6, "RGB": 2}
    assert facts["width"] == [60, 64, 96]
    assert report["unreadable"] == [] and report["hash_mismatch"] == []
    assert not [f for f in strict_failures(report) if "patient" in f or "duplicate" in f]
    json.dumps(report)  # JSON-ready


def _counting_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every file the audit decodes (the audit's one decoding body)."""
    decoded: list[Path] = []
    real = fingerprints.fingerprint_file

    def counted(path: Path) -> fingerprints.Fingerprint:
        decoded.append(path)
        return real(path)

    monkeypatch.setattr(fingerprints, "fingerprint_file", counted)
    return decoded


def test_audit_reads_the_import_fingerprints(dataset: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    turned = dataset.parent / "normal" / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: 40 x 72 stored, 72 x 40 shown
    _xray(5, 72).resize((40, 72)).save(turned, quality=90, exif=exif)
    write_import(import_dataset("folder", dataset.parent), dataset)
    df = pd.read_parquet(dataset).set_index(S.PATH)
    assert (df.loc["normal/turned.jpg", S.WIDTH], df.loc["normal/turned.jpg", S.HEIGHT]) == (72, 40)
    stored = pd.read_parquet(fingerprints.sidecar_path(dataset))
    assert len(stored) == 8  # 9 files, two of them the same bytes: keyed by content
    assert set(stored[S.SHA256]) == set(df[S.SHA256])
    decoded = _counting_decodes(monkeypatch)
    with_prints = audit_manifest(dataset)
    assert decoded == []  # every file matched its stored fingerprint
    assert with_prints["per_source"]["d"]["sizes"]["40x72"] == 1  # as stored, like a decode
    fingerprints.sidecar_path(dataset).unlink()
    decoded_again = audit_manifest(dataset)
    assert len(decoded) == 9
    assert json.dumps(with_prints) == json.dumps(decoded_again)


def test_audit_decodes_files_changed_since_import(dataset: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    changed = dataset.parent / "normal" / "n3.png"
    _xray(40).save(changed)
    fingerprints.sidecar_path(dataset).write_bytes(b"not parquet")  # a damaged sidecar
    decoded = _counting_decodes(monkeypatch)
    report = audit_manifest(dataset)
    assert len(decoded) == 8  # the damaged sidecar is ignored: every file is decoded
    assert [c["image_id"] for c in report["hash_mismatch"]] == ["d/normal/n3"]
    write_import(import_dataset("folder", dataset.parent), dataset)
    _xray(41).save(changed)
    decoded.clear()
    report = audit_manifest(dataset)
    assert decoded == [changed]  # only the file whose bytes no longer match
    assert [c["image_id"] for c in report["hash_mismatch"]] == ["d/normal/n3"]


def test_unreadable_and_changed_files(dataset: Path) -> None:
    (dataset.parent / "normal" / "n2.png").write_bytes(b"garbage")
    report = audit_manifest(dataset)
    assert [u["image_id"] for u in report["unreadable"]] == ["d/normal/n2"]
    assert "unreadable image" in report["unreadable"][0]["reason"]
    assert [c["image_id"] for c in report["hash_mismatch"]] == ["d/normal/n2"]


def test_patient_overlap_across_splits_and_manifests(dataset: Path, tmp_path: Path) -> None:
    df = pd.read_parquet(dataset)
    df[S.PATIENT_ID] = "p1"
    df[S.SPLIT] = ["train"] * 7 + ["test"]
    write_manifest(df, dataset)
    other = tmp_path / "other" / "m.parquet"
    shutil.copytree(dataset.parent / "covid19", other.parent / "covid19")
    write_import(import_dataset("folder", other.parent, ImportOptions(source="d")), other)
    report = audit_manifest(dataset, against=other)
    assert report["patients_in_several_splits"] == [{"patient": "d/p1", "splits": ["test", "train"]}]
    against = report["against"]
    assert sorted((p["a"], p["b"]) for p in against["exact_duplicates"]) == [
        ("d/covid19/c0", "d/covid19/c0"), ("d/covid19/c1", "d/covid19/c1")]
    failures = strict_failures(report)
    assert "1 patient(s) in several splits" in failures
    assert "2 duplicate pair(s) across the two manifests" in failures


def test_cli_audit_json(dataset: Path, run_cli) -> None:
    code, out, err = run_cli("data", "audit", str(dataset), "--json")
    assert code == 0, err
    assert len(json.loads(out)["exact_duplicates"]) == 1
    code, out, _ = run_cli("data", "audit", str(dataset))
    assert code == 0 and "exact duplicate pairs: 1" in out


@pytest.mark.slow
@pytest.mark.ray  # 5,232 films: the CLI's import fans out on an embedded Ray
def test_cli_audit_on_shared_kermany(shared_data: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "k.parquet"
    code, _, err = run_cli("data", "import", "kermany", str(shared_data / "kermany-cxr-train"),
                           "--out", str(out))
    assert code == 0, err
    code, text, err = run_cli("data", "audit", str(out), "--json")
    assert code == 0, err
    report = json.loads(text)
    pairs = report["exact_duplicates"]
    assert len(pairs) == 28  # 24 groups of byte-identical files (README: "about 26")
    assert {"kermany/PNEUMONIA/person357_virus_734", "kermany/PNEUMONIA/person357_virus_735"} in [
        {p["a"], p["b"]} for p in pairs]
    assert sum(not p["same_patient"] for p in pairs) == 0
    assert report["per_source"]["kermany"]["formats"] == {"JPEG": 5232}
    assert report["unreadable"] == [] and report["near_duplicates"] == []


def _two_hospitals(tmp_path: Path) -> Path:
    """covid19: 4 large grayscale PNGs from 'hosp_b'; normal / viral: 64 px RGB JPEGs from
    'hosp_a'; the covid19 image c0 is a brighter, rescaled copy of viral v0 (a label conflict)."""
    from PIL import ImageEnhance

    a, b = tmp_path / "hosp_a", tmp_path / "hosp_b"
    for label, seeds in (("normal", range(3)), ("viral", range(3, 6))):
        (a / label).mkdir(parents=True)
        for k, s in enumerate(seeds):
            _xray(s).convert("RGB").save(a / label / f"{label[0]}{k}.jpg", quality=92)
    (b / "covid19").mkdir(parents=True)
    for k in range(1, 4):
        _xray(20 + k, 160).save(b / "covid19" / f"c{k}.png")
    with Image.open(a / "viral" / "v0.jpg") as img:
        ImageEnhance.Brightness(img.convert("L").resize((160, 160))).enhance(1.1).save(
            b / "covid19" / "c0.png")
    out = tmp_path / "m.parquet"
    write_import(import_dataset("folder", a, ImportOptions(source="hosp_a")), out)
    write_import(import_dataset("folder", b, ImportOptions(source="hosp_b")), out, append=True)
    return out


def test_label_conflicts_and_confound_verdict(tmp_path: Path) -> None:
    report = audit_manifest(_two_hospitals(tmp_path))
    conflicts = [(p["a"], p["b"], p["labels"]) for p in report["label_conflicts"]]
    assert conflicts == [("hosp_a/viral/v0", "hosp_b/covid19/c0", ["viral", "covid19"])]
    assert report["label_conflicts"][0]["distance"] <= report["near_threshold_bits"]
    conf = report["confounds"]
    covid = conf["labels"]["covid19"]
    assert covid["determined_by"] == ["source", "format", "mode", "size"]
    assert covid["properties"]["source"]["label"] == {"value": "hosp_b", "share": 1.0}
    assert covid["properties"]["size"]["others"]["value"].startswith("64 px")
    assert covid["properties"]["bit_depth"]["balanced_accuracy"] == 0.5  # all 8-bit
    assert conf["labels"]["normal"]["determined_by"] == []  # hosp_a holds viral too
    assert conf["verdict"] == [
        "covid19: 100% from hosp_b (100% PNG, 100% L, 160 px); other labels: 100% from hosp_a "
        "(100% JPEG, 100% RGB, 64 px); determined by source, format, mode, size"]
    json.dumps(report)


def test_cli_audit_text_shows_labels_and_strict_exits_1(tmp_path: Path, run_cli) -> None:
    manifest = _two_hospitals(tmp_path)
    code, out, err = run_cli("data", "audit", str(manifest))
    assert code == 0, err
    assert "label conflicts (duplicates with different labels): 1" in out
    assert ("hosp_a/viral/v0 [viral]  ==  hosp_b/covid19/c0 [covid19]  (different patient, "
            "distance") in out
    assert "confound verdict" in out and "  covid19: 100% from hosp_b" in out
    code, out, err = run_cli("data", "audit", str(manifest), "--strict")
    assert code == 1
    assert err.strip() == ("raybench: audit failed (--strict): 1 label conflict(s); "
                           "1 confounded label(s)")


def test_strict_passes_a_clean_manifest(tmp_path: Path, run_cli) -> None:
    root = tmp_path / "d"
    for label, seeds in (("normal", (1, 2, 3)), ("viral", (4, 5, 6))):
        (root / label).mkdir(parents=True)
        for s in seeds:
            _xray(s).save(root / label / f"{s}.png")
    write_import(import_dataset("folder", root), tmp_path / "m.parquet")
    code, out, err = run_cli("data", "audit", str(tmp_path / "m.parquet"), "--strict")
    assert (code, err) == (0, "") and "confound verdict" in out and ": 0 label(s)" in out


@pytest.mark.slow
def test_confound_verdict_on_shared_kermany_and_hannover(shared_data: Path, tmp_path: Path,
                                                         run_cli) -> None:
    """A subset of the real sets (copied to a temp dir): COVID only from Hannover."""
    k, h = tmp_path / "k", tmp_path / "h"
    src = shared_data / "kermany-cxr-train"
    for folder, n in (("NORMAL", 30), ("PNEUMONIA", 40)):
        (k / folder).mkdir(parents=True)
        for f in sorted((src / folder).glob("*.jpeg"))[:n]:
            shutil.copy(f, k / folder / f.name)
    (h / "png").mkdir(parents=True)
    meta = pd.read_csv(shared_data / "hannover-covid" / "data.csv", dtype=str).head(20)
    meta.to_csv(h / "data.csv", index=False)
    for stem in meta["image_id"]:
        shutil.copy(shared_data / "hannover-covid" / "png" / f"{stem}.png", h / "png")
    out = tmp_path / "m.parquet"
    write_import(import_dataset("kermany", k), out)
    write_import(import_dataset("metadata-csv", h / "data.csv",
                                ImportOptions(label="covid19", source="hannover")), out,
                 append=True)
    report = audit_manifest(out)
    verdict = report["confounds"]["verdict"]
    assert len(verdict) == 1, verdict
    assert verdict[0].startswith("covid19: 100% from hannover (100% PNG, "), verdict
    assert "other labels: 100% from kermany (100% JPEG, 100% RGB, 224 px)" in verdict[0], verdict
    covid = report["confounds"]["labels"]["covid19"]
    assert {"source", "format", "size"} <= set(covid["determined_by"])
    assert report["label_conflicts"] == []
    code, _, err = run_cli("data", "audit", str(out), "--strict")
    assert code == 1 and "1 confounded label(s)" in err
