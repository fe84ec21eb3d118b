"""Importers: Kermany, COVIDx, metadata CSV, folder; merging; bad inputs named with the reason."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raybench import schema as S
from raybench.data.importers import (
    ImportOptions,
    import_dataset,
    kermany_label_patient,
    merge_manifests,
    parse_label_map,
    rebase_paths,
    write_import,
)
from raybench.data.manifest import read_manifest, resolve_image_path
from raybench.errors import ConfigError, DataError


def _img(path: Path, size: tuple[int, int] = (20, 10), mode: str = "L", value: int = 100,
         **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode in ("L", "P") else (value,) * len(mode)).save(path, **save)
    return path


def _kermany_tree(root: Path, split: str | None = None) -> Path:
    base = root / split if split else root
    _img(base / "NORMAL" / "IM-0115-0001.jpeg")
    _img(base / "NORMAL" / "NORMAL2-IM-0007-0001.jpeg", value=90)
    _img(base / "PNEUMONIA" / "person1_bacteria_1.jpeg", value=80)
    _img(base / "PNEUMONIA" / "person1_virus_7.jpeg", value=70)
    _img(base / "PNEUMONIA" / "person1_virus_8.jpeg", value=60)
    return root


# --- kermany ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,folder,expected", [
    ("person100_bacteria_478.jpeg", "PNEUMONIA", ("bacteria", "person100_bacteria")),
    ("person100_virus_184.jpeg", "PNEUMONIA", ("viral", "person100_virus")),
    ("person447_virus_921_1.jpeg", "PNEUMONIA", ("viral", "person447_virus")),
    ("IM-0429-0001-0002.jpeg", "NORMAL", ("normal", "IM-0429")),
    ("NORMAL2-IM-1345-0001.jpeg", "NORMAL", ("normal", "NORMAL2-IM-1345")),
])
def test_kermany_label_and_patient_rules(name: str, folder: str, expected: tuple) -> None:
    assert kermany_label_patient(name, folder) == expected


def test_kermany_pneumonia_without_type_is_an_unknown_label() -> None:
    with pytest.raises(DataError, match="PNEUMONIA/scan.jpeg: unknown label"):
        kermany_label_patient("scan.jpeg", "PNEUMONIA")


def test_kermany_small_tree_with_split_folders(tmp_path: Path) -> None:
    _kermany_tree(tmp_path / "cx", "train")
    _kermany_tree(tmp_path / "cx", "test")
    res = import_dataset("kermany", tmp_path / "cx")
    df = res.df
    assert len(df) == 10 and res.skipped == []
    assert df[S.SPLIT].value_counts().to_dict() == {"test": 5, "train": 5}
    row = df[df[S.PATH] == "test/PNEUMONIA/person1_virus_7.jpeg"].iloc[0]
    assert (row[S.LABEL], row[S.PATIENT_ID], row[S.SOURCE]) == ("viral", "person1_virus", "kermany")
    assert row[S.IMAGE_ID] == "kermany/test/PNEUMONIA/person1_virus_7"
    assert (row[S.WIDTH], row[S.HEIGHT]) == (20, 10)


@pytest.mark.slow
def test_import_shared_kermany_and_hannover(shared_data: Path, shared_films) -> None:
    kermany = shared_films.kermany.df
    assert len(kermany) == 5232
    assert kermany[S.LABEL].value_counts().to_dict() == {
        "bacteria": 2538, "normal": 1349, "viral": 1345}
    names = kermany[S.PATH].str.rsplit("/", n=1).str[-1]
    assert (kermany[S.LABEL] == "bacteria").eq(names.str.contains("_bacteria_")).all()
    assert (kermany[S.LABEL] == "viral").eq(names.str.contains("_virus_")).all()
    pneu = kermany[kermany[S.LABEL] != "normal"][S.PATIENT_ID]
    assert pneu.str.fullmatch(r"person\d+_(bacteria|virus)").all()
    normal = kermany[kermany[S.LABEL] == "normal"][S.PATIENT_ID]
    assert normal.str.fullmatch(r"(NORMAL2-)?IM-\d+").all()
    assert {(kermany[S.WIDTH] == 224).all(), (kermany[S.HEIGHT] == 224).all()} == {True}

    hannover = shared_films.hannover.df
    meta = pd.read_csv(shared_data / "hannover-covid" / "data.csv", dtype=str)
    assert len(hannover) == 243 and (hannover[S.LABEL] == "covid19").all()
    expected = dict(zip(meta["image_id"], meta["patient_id"]))
    stems = hannover[S.PATH].map(lambda p: Path(p).stem)
    assert hannover[S.PATIENT_ID].tolist() == [expected[s] for s in stems]
    assert hannover[S.PATIENT_ID].nunique() == 71

    # Both written to one manifest (the session's fixture: write_import, then append=True);
    # the images stay in the read-only folder: file:// URIs.
    out, merged = shared_films.manifest, shared_films.merged
    back = read_manifest(out)
    assert len(back) == 5475 and back[S.SOURCE].value_counts().to_dict() == {
        "kermany": 5232, "hannover": 243}
    first = resolve_image_path(out.parent, back[S.PATH].iloc[0])
    assert first.is_file() and hashlib.sha256(first.read_bytes()).hexdigest() == back[S.SHA256].iloc[0]
    assert merged.equals(back)


# --- bad inputs ------------------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    for kind in ("kermany", "folder", "covidx"):
        with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope")) + ".*does not exist"):
            import_dataset(kind, tmp_path / "nope")
    with pytest.raises(DataError, match="metadata CSV does not exist"):
        import_dataset("metadata-csv", tmp_path / "nope.csv")


def test_empty_class_folder(tmp_path: Path) -> None:
    _kermany_tree(tmp_path)
    shutil.rmtree(tmp_path / "PNEUMONIA")
    (tmp_path / "PNEUMONIA").mkdir()
    (tmp_path / "PNEUMONIA" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"PNEUMONIA: class folder holds no images"):
        import_dataset("kermany", tmp_path)


def test_wrong_layout_names_what_is_expected(tmp_path: Path) -> None:
    _img(tmp_path / "scans" / "a.png")
    with pytest.raises(DataError, match="no NORMAL/ or PNEUMONIA/ folder"):
        import_dataset("kermany", tmp_path)
    with pytest.raises(DataError, match="folder name 'scans' is not a label"):
        import_dataset("folder", tmp_path)


def _corrupt(folder: Path) -> dict[str, Path]:
    good = _img(folder / "normal" / "good.png", (40, 40))
    data = good.read_bytes()
    jpeg = _img(folder / "normal" / "full.jpg", (64, 64), quality=90).read_bytes()
    files = {
        "zero": folder / "normal" / "zero.png",
        "junk": folder / "normal" / "junk.png",
        "truncated": folder / "normal" / "trunc.jpg",
    }
    files["zero"].write_bytes(b"")
    files["junk"].write_bytes(b"definitely not an image" + data[:10])
    files["truncated"].write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "normal" / "full.jpg").unlink()
    _img(folder / "covid19" / "c.png")
    return files


@pytest.mark.parametrize("which,reason", [
    ("zero", "empty file"), ("junk", "unreadable image"), ("truncated", "unreadable image")])
def test_bad_image_fail_names_file_and_reason(tmp_path: Path, which: str, reason: str) -> None:
    files = _corrupt(tmp_path)
    for other in set(files) - {which}:
        files[other].unlink()
    with pytest.raises(DataError, match=re.escape(str(files[which])) + f": {reason}"):
        import_dataset("folder", tmp_path)


def test_bad_image_skip_records_each(tmp_path: Path) -> None:
    files = _corrupt(tmp_path)
    res = import_dataset("folder", tmp_path, ImportOptions(on_bad_image="skip"))
    assert sorted(res.df[S.PATH]) == ["covid19/c.png", "normal/good.png"]
    assert sorted(Path(b.path).name for b in res.skipped) == sorted(p.name for p in files.values())
    out = tmp_path / "out" / "m.parquet"
    write_import(res, out)
    skipped = pd.read_csv(out.with_name("m.parquet.skipped.csv"))
    assert len(skipped) == 3 and skipped["reason"].str.contains("trunc.jpg").any()


def test_formats_are_converted_with_displayed_size(tmp_path: Path) -> None:
    arr16 = (np.arange(30 * 20).reshape(20, 30) * 50).astype(np.uint16)
    Image.fromarray(arr16).save(_img(tmp_path / "normal" / "x16.png").with_name("x16.png"))
    _img(tmp_path / "normal" / "rgba.png", (12, 8), "RGBA")
    Image.new("P", (9, 7), 3).save(tmp_path / "normal" / "pal.png")
    _img(tmp_path / "normal" / "cmyk.jpg", (11, 5), "CMYK")
    rot = Image.new("L", (40, 20), 50)
    exif = rot.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    rot.save(tmp_path / "normal" / "rot.jpg", exif=exif)
    _img(tmp_path / "viral" / "v.png")
    df = import_dataset("folder", tmp_path).df.set_index(S.PATH)
    sizes = {p: (int(r[S.WIDTH]), int(r[S.HEIGHT])) for p, r in df.iterrows()}
    assert sizes == {"normal/x16.png": (30, 20), "normal/rgba.png": (12, 8),
                     "normal/pal.png": (9, 7), "normal/cmyk.jpg": (11, 5),
                     "normal/rot.jpg": (20, 40), "viral/v.png": (20, 10)}


# --- metadata csv ------------------------------------------------------------------------------


def _csv_set(tmp_path: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    for name in ("a.png", "b.png", "c.jpg", "sub/d.png"):
        _img(tmp_path / "images" / name)
    csv = tmp_path / "metadata.csv"
    csv.write_bytes(("patientid,filename,finding,note\n" + "\n".join(rows) + "\n").encode(encoding))
    return csv


def test_metadata_csv_label_map_latin1_and_stems(tmp_path: Path) -> None:
    csv = _csv_set(tmp_path, ["p1,a.png,COVID-19,caf\u00e9", "p1,b,No Finding,x",
                              "p2,c.jpg,Tuberculosis,x", "p3,sub/d.png,Pneumonia/Viral/SARS,x"],
                   encoding="latin-1")
    opts = ImportOptions(images=str(tmp_path / "images"), source="ieee8023",
                         label_map=parse_label_map(["Pneumonia/Viral/SARS -> viral"]),
                         unmapped="skip")
    df = import_dataset("metadata-csv", csv, opts).df
    assert df[[S.PATH, S.LABEL, S.PATIENT_ID]].values.tolist() == [
        ["a.png", "covid19", "p1"], ["b.png", "normal", "p1"], ["sub/d.png", "viral", "p3"]]
    assert set(df[S.SOURCE]) == {"ieee8023"}


def _multi_source_csv(tmp_path: Path, header: str = "patientid,filename,finding,source",
                      empty: bool = False) -> Path:
    """Two hospitals in one CSV: covid19 from 'hannover', normal / viral from 'kermany'."""
    rows = [("h1", "h1.png", "COVID-19", "hannover"), ("h2", "h2.png", "COVID-19", "hannover"),
            ("k1", "k1.png", "normal", "kermany"), ("k2", "k2.png", "viral", "" if empty else
                                                     "kermany")]
    for i, (_, name, _, _) in enumerate(rows):
        _img(tmp_path / "images" / name, value=40 + 50 * i)
    csv = tmp_path / "meta.csv"
    csv.write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    return csv


def test_metadata_csv_source_per_row_from_source_column(tmp_path: Path) -> None:
    csv = _multi_source_csv(tmp_path)
    df = import_dataset("metadata-csv", csv, ImportOptions(images=str(tmp_path / "images"))).df
    assert df[[S.PATH, S.SOURCE, S.LABEL]].values.tolist() == [
        ["h1.png", "hannover", "covid19"], ["h2.png", "hannover", "covid19"],
        ["k1.png", "kermany", "normal"], ["k2.png", "kermany", "viral"]]
    # --source still sets one value for all rows, over the column
    one = import_dataset("metadata-csv", csv, ImportOptions(images=str(tmp_path / "images"),
                                                            source="mixed")).df
    assert set(one[S.SOURCE]) == {"mixed"}


def test_metadata_csv_source_col_option_and_errors(tmp_path: Path) -> None:
    csv = _multi_source_csv(tmp_path, header="patientid,filename,finding,hospital")
    images = str(tmp_path / "images")
    df = import_dataset("metadata-csv", csv, ImportOptions(images=images, source_col="hospital")).df
    assert df[S.SOURCE].value_counts().to_dict() == {"hannover": 2, "kermany": 2}
    # without the option a column not named 'source' is not guessed: one source (the folder)
    plain = import_dataset("metadata-csv", csv, ImportOptions(images=images)).df
    assert set(plain[S.SOURCE]) == {tmp_path.name}
    with pytest.raises(DataError, match="no column 'site' for the source"):
        import_dataset("metadata-csv", csv, ImportOptions(images=images, source_col="site"))
    with pytest.raises(DataError, match="not both"):
        import_dataset("metadata-csv", csv, ImportOptions(images=images, source_col="hospital",
                                                          source="x"))
    empty = _multi_source_csv(tmp_path / "e", empty=True)
    with pytest.raises(DataError, match=r"meta.csv line 5: empty value in source column 'source'"):
        import_dataset("metadata-csv", empty, ImportOptions(images=str(tmp_path / "e" / "images")))


def test_cli_import_source_col(tmp_path: Path, run_cli) -> None:
    csv = _multi_source_csv(tmp_path, header="patientid,filename,finding,hospital")
    out = tmp_path / "m.parquet"
    code, _, err = run_cli("data", "import", "metadata-csv", str(csv), "--images",
                           str(tmp_path / "images"), "--source-col", "hospital", "--out", str(out))
    assert code == 0, err
    assert read_manifest(out)[S.SOURCE].tolist() == ["hannover", "hannover", "kermany", "kermany"]
    code, _, err = run_cli("data", "import", "metadata-csv", str(csv), "--images",
                           str(tmp_path / "images"), "--source-col", "nope", "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and "no column 'nope'" in err


def test_unknown_label_value_names_line_and_value(tmp_path: Path) -> None:
    csv = _csv_set(tmp_path, ["p1,a.png,COVID-19,x", "p2,c.jpg,Tuberculosis,x"])
    with pytest.raises(DataError, match=r"metadata.csv line 3: unknown label value 'Tuberculosis'"):
        import_dataset("metadata-csv", csv, ImportOptions(images=str(tmp_path / "images")))


def test_bad_label_map_target() -> None:
    with pytest.raises(DataError, match="'covid' is not a label"):
        parse_label_map(["COVID-19=covid"])


def test_duplicate_path_is_refused(tmp_path: Path) -> None:
    csv = _csv_set(tmp_path, ["p1,a.png,COVID-19,x", "p2,b.png,normal,x", "p3,a.png,normal,x"])
    with pytest.raises(DataError, match=r"line 4: file 'a.png' is listed twice \(first at .*line 2\)"):
        import_dataset("metadata-csv", csv, ImportOptions(images=str(tmp_path / "images")))


@pytest.mark.parametrize("value", ["../secret.png", "/etc/passwd", "link.png"])
def test_path_escaping_the_root_is_refused(tmp_path: Path, value: str) -> None:
    csv = _csv_set(tmp_path, [f"p1,{value},normal,x"])
    _img(tmp_path / "secret.png")
    os.symlink(tmp_path / "secret.png", tmp_path / "images" / "link.png")
    with pytest.raises(DataError, match=r"line 2: .*(escapes|absolute)"):
        import_dataset("metadata-csv", csv, ImportOptions(images=str(tmp_path / "images")))


def test_missing_listed_file(tmp_path: Path) -> None:
    csv = _csv_set(tmp_path, ["p1,zzz.png,normal,x"])
    with pytest.raises(DataError, match=r"line 2: image 'zzz.png' not found under"):
        import_dataset("metadata-csv", csv, ImportOptions(images=str(tmp_path / "images")))


# --- covidx ------------------------------------------------------------------------------------


def test_covidx_three_and_four_class_labels(tmp_path: Path) -> None:
    for split, names in {"train": ["t1.png", "t2.png", "t 3.png", "t4.png"],
                         "test": ["s1.png"]}.items():
        for n in names:
            _img(tmp_path / split / n)
    (tmp_path / "train_COVIDx8B.txt").write_text(
        "P1 t1.png COVID-19 cohen\nP2 t2.png pneumonia rsna\n\nP3 t 3.png normal rsna\n"
        "P4 t4.png bacteria\n")
    (tmp_path / "test_COVIDx8B.txt").write_text("P9 s1.png viral sirm\n")
    df = import_dataset("covidx", tmp_path).df.set_index(S.PATH)
    assert df.loc["train/t1.png", [S.LABEL, S.PATIENT_ID, S.SOURCE, S.SPLIT]].tolist() == [
        "covid19", "P1", "cohen", "train"]
    assert df.loc["train/t2.png", S.LABEL] == "pneumonia"
    assert df.loc["train/t 3.png", S.LABEL] == "normal"
    assert df.loc["train/t4.png", [S.LABEL, S.SOURCE]].tolist() == ["bacteria", "covidx"]
    assert df.loc["test/s1.png", [S.LABEL, S.SPLIT, S.SOURCE]].tolist() == ["viral", "test", "sirm"]


def test_covidx_without_label_files(tmp_path: Path) -> None:
    _img(tmp_path / "train" / "a.png")
    with pytest.raises(DataError, match="no COVIDx label files"):
        import_dataset("covidx", tmp_path)


def test_unknown_kind_lists_valid() -> None:
    with pytest.raises(ConfigError, match="unknown importer 'kermani'.*valid: kermany"):
        import_dataset("kermani", ".")


# --- merge, rebase -----------------------------------------------------------------------------


def test_merge_keeps_sources_and_refuses_duplicates(tmp_path: Path) -> None:
    _kermany_tree(tmp_path / "k")
    _img(tmp_path / "h" / "covid19" / "x.png")
    a = rebase_paths(import_dataset("kermany", tmp_path / "k"), tmp_path)
    b = rebase_paths(import_dataset("folder", tmp_path / "h"), tmp_path)
    merged = merge_manifests([a, b])
    assert merged[S.SOURCE].value_counts().to_dict() == {"kermany": 5, "h": 1}
    assert "k/NORMAL/IM-0115-0001.jpeg" in set(merged[S.PATH])  # inside: relative
    with pytest.raises(DataError, match="appears twice"):
        merge_manifests([a, a])


@pytest.mark.parametrize("kind", ["kermany", "covidx", "metadata_csv", "folder", "nih",
                                  "chexpert", "mimic_cxr_jpg", "padchest", "rsna_pneumonia"])
def test_each_catalog_entry_names_code_that_exists(kind: str) -> None:
    from raybench.catalog.importers import IMPORTERS
    from raybench.data.importers.labels import LabelRule

    assert list(IMPORTERS) == ["kermany", "covidx", "metadata_csv", "folder", "nih", "chexpert",
                               "mimic_cxr_jpg", "padchest", "rsna_pneumonia"]
    entry = IMPORTERS.get(kind)
    fn = entry.load()
    assert callable(fn) and fn.__name__ == entry.function.rsplit(":", 1)[1]
    rule = entry.default_rule()
    assert (rule is None) == (kind in ("kermany", "covidx", "metadata_csv", "folder"))
    assert rule is None or (isinstance(rule, LabelRule) and "pneumonia" in rule.describe())
