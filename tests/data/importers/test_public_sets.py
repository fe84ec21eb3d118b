"""The public sets import as published: NIH ChestX-ray14, CheXpert, MIMIC-CXR-JPG, PadChest,
RSNA Pneumonia (DICOM), COVIDx CXR-3/4. Fixtures are written here with the official headers and
awkward values; manifests are asserted row by row (path, label, patient, split, view, source)."""
from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers import dicoms
from raybench import schema as S
from raybench.catalog.importers import IMPORTERS, cli_kinds
from raybench.data.importers import (
    ImportOptions,
    import_dataset,
    parse_label_map,
    write_import,
)
from raybench.data.manifest import read_manifest
from raybench.errors import DataError

COLS = [S.PATH, S.LABEL, S.PATIENT_ID, S.SPLIT, S.VIEW, S.SOURCE]


def _img(path: Path, value: int = 90, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return path


def _rows(df: pd.DataFrame) -> list[list]:
    return df[COLS].astype(object).where(df[COLS].notna(), None).values.tolist()


def _write(path: Path, lines: list[str], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# --- NIH ChestX-ray14 --------------------------------------------------------------------------

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
              "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
NIH_ROWS = [
    "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,",
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,",
    "00000003_000.png,Hernia|Pneumonia,0,3,81,F,PA,2582,2991,0.143,0.143,",
    "00000003_001.png,Consolidation|Effusion,1,3,81,F,AP,2500,2048,0.168,0.168,",
    "00000005_000.png,No Finding,0,5,69,F,PA,2048,2500,0.168,0.168,",
    "00000005_001.png,No Finding,1,5,414,F,AP,2048,2500,0.168,0.168,",
]


def _nih(root: Path, rows: list[str] = NIH_ROWS, header: str = NIH_HEADER) -> Path:
    _write(root / "Data_Entry_2017.csv", [header] + rows)
    for i, row in enumerate(rows):
        name = row.split(",")[0]
        folder = "images_001/images" if i < 3 else "images_002/images"
        _img(root / folder / name, 40 + 20 * i)
    _write(root / "train_val_list.txt", ["00000001_000.png", "00000001_001.png",
                                         "00000005_000.png", "00000005_001.png"])
    _write(root / "test_list.txt", ["00000003_000.png", "00000003_001.png"])
    return root


def test_nih_default_rule_views_and_official_split(tmp_path: Path) -> None:
    res = import_dataset("nih", _nih(tmp_path / "nih"))
    assert _rows(res.df) == [
        ["images_001/images/00000003_000.png", "pneumonia", "3", "test", "PA", "nih"],
        ["images_002/images/00000005_000.png", "normal", "5", "train", "PA", "nih"],
        ["images_002/images/00000005_001.png", "normal", "5", "train", "AP", "nih"]]
    assert res.dropped == {"no class": 3}
    pa = import_dataset("nih", tmp_path / "nih", ImportOptions(views=("pa",)))
    assert pa.df[S.PATH].str[-16:].tolist() == ["00000003_000.png", "00000005_000.png"]
    assert pa.dropped == {"no class": 2, "view AP": 2}  # the view filter comes first


def test_nih_yaml_rule_with_precedence(tmp_path: Path) -> None:
    rule = tmp_path / "rule.yaml"
    rule.write_text("pneumonia: [Pneumonia, Consolidation]\nnormal: No Finding\n")
    opts = ImportOptions(label_map=parse_label_map([str(rule)]))
    df = import_dataset("nih", _nih(tmp_path / "nih"), opts).df
    assert dict(zip(df[S.PATH].str[-16:], df[S.LABEL])) == {
        "00000003_000.png": "pneumonia", "00000003_001.png": "pneumonia",
        "00000005_000.png": "normal", "00000005_001.png": "normal"}
    # precedence: a film with both findings takes the first class of the rule
    flags = ImportOptions(label_map=parse_label_map(["Hernia=normal", "Pneumonia=pneumonia"]))
    df = import_dataset("nih", tmp_path / "nih", flags).df
    assert df.loc[df[S.PATH].str.endswith("00000003_000.png"), S.LABEL].item() == "normal"


def test_nih_flat_images_folder_and_partial_download(tmp_path: Path) -> None:
    root = tmp_path / "nih"
    _write(root / "Data_Entry_2017.csv", [NIH_HEADER] + NIH_ROWS[4:])
    _img(root / "images" / "00000005_000.png")
    with pytest.raises(DataError, match=r"line 3: listed but not found under images\*/"):
        import_dataset("nih", root)
    res = import_dataset("nih", root, ImportOptions(on_bad_image="skip"))
    assert res.df[S.PATH].tolist() == ["images/00000005_000.png"]
    assert [Path(b.path).name for b in res.skipped] == ["00000005_001.png"]
    assert res.df[S.SPLIT].tolist() == [None]  # no official lists: the scenario splits


def test_nih_missing_column_is_one_cli_line(tmp_path: Path, run_cli) -> None:
    header = NIH_HEADER.replace(",View Position", "")
    root = _nih(tmp_path / "nih", [r.replace(",PA,", ",").replace(",AP,", ",") for r in NIH_ROWS],
                header)
    code, _, err = run_cli("data", "import", "nih", str(root), "--out", str(tmp_path / "m.parquet"))
    assert code == 2 and err.count("\n") == 1
    assert f"{root / 'Data_Entry_2017.csv'}: missing required column 'View Position'" in err
    assert not (tmp_path / "m.parquet").exists()


# --- CheXpert -------------------------------------------------------------------------------

OBS = ("No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,"
       "Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,"
       "Support Devices")
CHEX_HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + OBS
PFX = "CheXpert-v1.0-small"


def _obs(**values: str) -> str:
    """The 14 observation cells, blank unless given (by column index name)."""
    names = OBS.split(",")
    return ",".join(values.get(n.replace(" ", "_"), "") for n in names)


CHEX_TRAIN = [
    f"{PFX}/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,"
    + _obs(No_Finding="1.0", Pneumothorax="0.0", Support_Devices="1.0"),
    f"{PFX}/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,"
    + _obs(Cardiomegaly="-1.0", Lung_Opacity="1.0", Pneumonia="-1.0", Fracture="1.0"),
    f"{PFX}/train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,"
    + _obs(Lung_Opacity="1.0", Pneumonia="1.0"),
    f"{PFX}/train/patient00003/study1/view1_frontal.jpg,Male,41,Frontal,PA,"
    + _obs(Edema="1.0", Pneumothorax="0.0"),
    f"{PFX}/train/patient00004/study1/view1_frontal.jpg,Female,20,Frontal,PA,"
    + _obs(No_Finding="1.0", Pneumonia="-1.0"),
]
CHEX_VALID = [f"{PFX}/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,"
              + ",".join(["1.0"] + ["0.0"] * 13)]


def _chexpert(tmp_path: Path) -> Path:
    root = tmp_path / PFX
    _write(root / "train.csv", [CHEX_HEADER] + CHEX_TRAIN)
    _write(root / "valid.csv", [CHEX_HEADER] + CHEX_VALID)
    for i, row in enumerate(CHEX_TRAIN + CHEX_VALID):
        _img(tmp_path / row.split(",")[0], 30 + 25 * i)
    return root


CHEX_BASE = [
    ["train/patient00001/study1/view1_frontal.jpg", "normal", "patient00001", "train", "AP"],
    ["train/patient00002/study1/view2_lateral.jpg", "pneumonia", "patient00002", "train",
     "LATERAL"],
]
CHEX_VAL = ["valid/patient64541/study1/view1_frontal.jpg", "normal", "patient64541", "val", "AP"]


@pytest.mark.parametrize("policy,extra,dropped", [
    # patient00002/study2: Pneumonia -1.0; patient00004: No Finding 1.0 and Pneumonia -1.0
    ("ignore", [], {"no class": 1, "uncertain": 2}),
    ("zeros", [["train/patient00004/study1/view1_frontal.jpg", "normal", "patient00004",
                "train", "PA"]], {"no class": 2}),
    ("ones", [["train/patient00002/study2/view1_frontal.jpg", "pneumonia", "patient00002",
               "train", "AP"],
              ["train/patient00004/study1/view1_frontal.jpg", "pneumonia", "patient00004",
               "train", "PA"]], {"no class": 1}),
])
def test_chexpert_uncertainty_policies(tmp_path: Path, policy: str, extra: list,
                                       dropped: dict) -> None:
    res = import_dataset("chexpert", _chexpert(tmp_path), ImportOptions(uncertain=policy))
    expected = sorted([r + ["chexpert"] for r in CHEX_BASE + extra + [CHEX_VAL]])
    assert _rows(res.df) == expected and res.dropped == dropped


def test_chexpert_needs_a_policy_and_frontal_filter(tmp_path: Path, run_cli) -> None:
    root = _chexpert(tmp_path)
    with pytest.raises(DataError, match=r"chexpert: uncertain findings \(-1.0\) need a policy: "
                       r"pass --uncertain ignore\|zeros\|ones"):
        import_dataset("chexpert", root)
    out = tmp_path / "m.parquet"
    code, stdout, err = run_cli("data", "import", "chexpert", str(root), "--uncertain", "zeros",
                                "--views", "PA,AP", "--out", str(out))
    assert code == 0, err
    assert "LATERAL" not in set(read_manifest(out)[S.VIEW])
    assert "left out 2 (no class), 1 (view LATERAL)" in stdout


def test_chexpert_bad_value_and_path_outside(tmp_path: Path) -> None:
    root = _chexpert(tmp_path)
    bad = CHEX_TRAIN[0].replace(",1.0,", ",2.0,", 1)
    _write(root / "train.csv", [CHEX_HEADER, bad])
    with pytest.raises(DataError, match=r"train.csv line 2: column 'No Finding' holds '2.0'"):
        import_dataset("chexpert", root, ImportOptions(uncertain="zeros"))
    outside = CHEX_TRAIN[0].replace(f"{PFX}/train/patient00001", "../../patient00001")
    _write(root / "train.csv", [CHEX_HEADER, outside])
    with pytest.raises(DataError, match=r"line 2: file '\.\./\.\./patient00001.*escapes"):
        import_dataset("chexpert", root, ImportOptions(uncertain="zeros"))
    secret = _img(tmp_path / "secret" / "view1_frontal.jpg")
    (root / "train" / "patient00009").mkdir(parents=True)
    os.symlink(secret.parent, root / "train" / "patient00009" / "study1")
    link = CHEX_TRAIN[0].replace("patient00001", "patient00009")
    _write(root / "train.csv", [CHEX_HEADER, link])
    with pytest.raises(DataError, match=r"line 2: .*escapes the dataset folder"):
        import_dataset("chexpert", root, ImportOptions(uncertain="zeros"))


# --- MIMIC-CXR-JPG ------------------------------------------------------------------------------

MIMIC_META = ("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,"
              "Columns,StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,"
              "ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning")
MIMIC_LABELS = ("subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,"
                "Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,"
                "Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices")
IDS = {"a": "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014",
       "b": "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962",
       "c": "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab",
       "d": "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714",
       "e": "ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c"}


def _mimic(root: Path) -> Path:
    meta = [
        f"{IDS['a']},10000032,50414267,CHEST (PA AND LAT),PA,3056,2544,21800506,213014.531,"
        "CHEST (PA AND LAT),postero-anterior,Erect",
        f"{IDS['b']},10000032,50414267,CHEST (PA AND LAT),LATERAL,3056,2544,21800506,"
        "213014.531,CHEST (PA AND LAT),lateral,Erect",
        f"{IDS['c']},10000032,53189527,CHEST (PA AND LAT),AP,3056,2544,21800626,165500.312,"
        "CHEST (PA AND LAT),antero-posterior,Erect",
        f"{IDS['d']},10000764,57375967,CHEST (PORTABLE AP),,2705,2539,21321031,51051.687,"
        "CHEST (PORTABLE AP),,",
        f"{IDS['e']},10000898,50771383,CHEST (PA AND LAT),PA,2544,3056,21201028,94402.109,"
        "CHEST (PA AND LAT),postero-anterior,Erect",
    ]
    labels = [  # Pneumonia is the 14th column, No Finding the 11th; blank = not mentioned
        "10000032,50414267,,,,,,,,,1.0,,,,,",
        "10000032,53189527,,,,,,,,,,,,-1.0,,",
        "10000764,57375967,,,1.0,,,,,,,,,1.0,,",
    ]  # 10000898/50771383 has no labels
    split = ["dicom_id,study_id,subject_id,split",
             f"{IDS['a']},50414267,10000032,train", f"{IDS['b']},50414267,10000032,train",
             f"{IDS['c']},53189527,10000032,validate", f"{IDS['d']},57375967,10000764,test",
             f"{IDS['e']},50771383,10000898,train"]
    _write(root / "mimic-cxr-2.0.0-metadata.csv.gz", [MIMIC_META] + meta, gz=True)
    _write(root / "mimic-cxr-2.0.0-chexpert.csv.gz", [MIMIC_LABELS] + labels, gz=True)
    _write(root / "mimic-cxr-2.0.0-split.csv", split)
    for i, row in enumerate(meta):
        dicom_id, subject, study = row.split(",")[:3]
        _img(root / f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg", 50 + 30 * i)
    return root


def test_mimic_rows_labels_per_study_and_split(tmp_path: Path) -> None:
    res = import_dataset("mimic-cxr-jpg", _mimic(tmp_path / "mimic"),
                         ImportOptions(uncertain="ones"))
    p = "files/p10/p10000032/s50414267"
    assert _rows(res.df) == [
        [f"{p}/{IDS['a']}.jpg", "normal", "10000032", "train", "PA", "mimic"],
        [f"{p}/{IDS['b']}.jpg", "normal", "10000032", "train", "LATERAL", "mimic"],
        [f"files/p10/p10000032/s53189527/{IDS['c']}.jpg", "pneumonia", "10000032", "val", "AP",
         "mimic"],
        [f"files/p10/p10000764/s57375967/{IDS['d']}.jpg", "pneumonia", "10000764", "test", None,
         "mimic"]]
    assert res.dropped == {"study without labels": 1}
    ignore = import_dataset("mimic-cxr-jpg", tmp_path / "mimic",
                            ImportOptions(uncertain="ignore", views=("PA", "AP")))
    assert ignore.df[S.PATH].str[-48:-4].tolist() == [IDS["a"]]
    assert ignore.dropped == {"study without labels": 1, "uncertain": 1, "view LATERAL": 1,
                              "view unknown": 1}


# --- PadChest -------------------------------------------------------------------------------

PADCHEST_HEADER = (
    "ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,PatientSex_DICOM,"
    "ViewPosition_DICOM,Projection,MethodProjection,Pediatric,Modality_DICOM,Manufacturer_DICOM,"
    "PhotometricInterpretation_DICOM,PixelRepresentation_DICOM,PixelAspectRatio_DICOM,"
    "SpatialResolution_DICOM,BitsStored_DICOM,WindowCenter_DICOM,WindowWidth_DICOM,Rows_DICOM,"
    "Columns_DICOM,XRayTubeCurrent_DICOM,Exposure_DICOM,ExposureInuAs_DICOM,ExposureTime,"
    "RelativeXRayExposure_DICOM,ReportID,Report,MethodLabel,Labels,Localizations,"
    "LabelsLocalizationsBySentence,labelCUIS,LocalizationsCUIS")


def _pad_row(image: str, folder: str, patient: str, dicom_view: str, proj: str, labels: str
             ) -> str:
    return (f'{image},{folder},20140915,st{patient},{patient},1939.0,M,{dicom_view},{proj},'
            f'Manual review of DICOM fields,No,CR,PhilipsMedicalSystems,MONOCHROME2,0,1\\1,'
            f'0.139,12,2048,4096,2000,2500,400,6,6400,16,,4765777,"normal study, no changes",'
            f'Physician,"{labels}",[],"[[\'normal\']]",[],[]')


def _padchest(root: Path) -> Path:
    rows = [
        _pad_row("20536686640136348236148679891455886468_k6ga29.png", "0", "p1",
                 "POSTEROANTERIOR", "PA", "['normal']"),
        _pad_row("135803415504923515076821959678074435083_fzis7d.png", "0", "p1",
                 "LATERAL", "L", "['normal']"),
        _pad_row("313572750430997347502932654319389875966_x2mn9r.png", "1", "p2",
                 "ANTEROPOSTERIOR", "AP_horizontal", "['pneumonia', ' alveolar pattern']"),
        _pad_row("216840111366964012339356563862009048084_zg5kvo.png", "1", "p3", "", "PA",
                 "['COPD signs', 'unchanged']"),
        _pad_row("216840111366964013076187734852011291030_gb9cqz.png", "1", "p4",
                 "POSTEROANTERIOR", "PA", ""),
    ]
    _write(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", [PADCHEST_HEADER] + rows)
    for i, row in enumerate(rows):
        image, folder = row.split(",")[:2]
        arr = np.full((10, 12), 200 * (i + 1), dtype=np.uint16)
        arr[0, 0] = 4000  # 12-bit values in a 16-bit PNG
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / folder / image)
    return root


def test_padchest_list_literals_projections_and_16_bit_pngs(tmp_path: Path) -> None:
    res = import_dataset("padchest", _padchest(tmp_path / "pc"))
    assert _rows(res.df) == [
        ["0/135803415504923515076821959678074435083_fzis7d.png", "normal", "p1", None,
         "LATERAL", "padchest"],
        ["0/20536686640136348236148679891455886468_k6ga29.png", "normal", "p1", None, "PA",
         "padchest"],
        ["1/313572750430997347502932654319389875966_x2mn9r.png", "pneumonia", "p2", None,
         "AP SUPINE", "padchest"]]
    assert res.dropped == {"no class": 2}
    assert res.df[[S.WIDTH, S.HEIGHT]].values.tolist() == [[12, 10]] * 3


def test_padchest_labels_are_parsed_never_evaluated(tmp_path: Path) -> None:
    root = _padchest(tmp_path / "pc")
    csv = root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].replace("['normal']", "__import__('os').system('touch pwned')", 1)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 2: Labels .* is not a list of strings"):
        import_dataset("padchest", root)
    assert not (Path.cwd() / "pwned").exists() and not (root / "pwned").exists()


# --- RSNA Pneumonia (DICOM) -----------------------------------------------------------------

RSNA_IDS = ["0004cfab-14fd-4e49-80ba-63a80b6bddd6", "00436515-870c-4b36-a041-de91049b9ab4",
            "00704310-78a8-4b38-8475-49f4573b2dbb", "003d8fa0-6bf1-40ed-b54c-ac657f8495c5"]


def _rsna(root: Path) -> Path:
    a, b, c, d = RSNA_IDS
    _write(root / "stage_2_train_labels.csv", [
        "patientId,x,y,width,height,Target", f"{a},,,,,0",
        f"{b},264.0,152.0,213.0,379.0,1", f"{b},562.0,152.0,256.0,453.0,1",
        f"{c},323.0,577.0,160.0,104.0,1", f"{c},695.0,575.0,162.0,137.0,1", f"{d},,,,,0"])
    _write(root / "stage_2_detailed_class_info.csv", [
        "patientId,class", f"{a},No Lung Opacity / Not Normal", f"{b},Lung Opacity",
        f"{b},Lung Opacity", f"{c},Lung Opacity", f"{c},Lung Opacity", f"{d},Normal"])
    images = root / "stage_2_train_images"
    dicoms.write(images / f"{a}.dcm", dicoms.gradient(top=255), bits_stored=8, view="PA")
    dicoms.write(images / f"{b}.dcm", dicoms.gradient(top=255), bits_stored=8, view="AP")
    dicoms.write(images / f"{c}.dcm", dicoms.gradient(top=4095), bits_stored=12,
                 photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=1024, view="PA")
    dicoms.write(images / f"{d}.dcm", dicoms.gradient(top=65535), bits_stored=16,
                 RescaleSlope=2, RescaleIntercept=-1024, view="PA")
    return root


def test_rsna_one_row_per_image_views_from_the_header(tmp_path: Path) -> None:
    res = import_dataset("rsna-pneumonia", _rsna(tmp_path / "rsna"))
    _, b, c, d = RSNA_IDS
    assert _rows(res.df) == sorted([
        [f"stage_2_train_images/{b}.dcm", "pneumonia", b, None, "AP", "rsna"],
        [f"stage_2_train_images/{c}.dcm", "pneumonia", c, None, "PA", "rsna"],
        [f"stage_2_train_images/{d}.dcm", "normal", d, None, "PA", "rsna"]])
    assert res.dropped == {"no class": 1}
    assert res.df[[S.WIDTH, S.HEIGHT]].values.tolist() == [[32, 24]] * 3
    pa = import_dataset("rsna-pneumonia", tmp_path / "rsna", ImportOptions(views=("PA",)))
    assert pa.df[S.PATIENT_ID].tolist() == [d, c] and pa.dropped == {"no class": 1,
                                                                      "view AP": 1}


def test_rsna_target_and_class_must_agree(tmp_path: Path) -> None:
    root = _rsna(tmp_path / "rsna")
    csv = root / "stage_2_detailed_class_info.csv"
    csv.write_text(csv.read_text().replace(f"{RSNA_IDS[3]},Normal", f"{RSNA_IDS[3]},Lung Opacity"))
    with pytest.raises(DataError, match=f"line 7: patientId {RSNA_IDS[3]} has Target 0 but "
                       "class 'Lung Opacity'"):
        import_dataset("rsna-pneumonia", root)


def test_dicom_header_patient_data_reaches_no_output(tmp_path: Path, run_cli, caplog) -> None:
    root = _rsna(tmp_path / "rsna")
    (root / "stage_2_train_images" / f"{RSNA_IDS[2]}.dcm").write_bytes(b"DICM broken")
    out = tmp_path / "out"
    code, stdout, err = run_cli("data", "import", "rsna-pneumonia", str(root), "--on-bad-image",
                                "skip", "--out", str(out / "m.parquet"))
    assert code == 0, err
    code, report, err2 = run_cli("data", "audit", str(out / "m.parquet"), "--json")
    assert code == 0, err2
    (out / "audit.json").write_text(report)
    assert (out / "m.parquet.skipped.csv").is_file()
    texts = [stdout, err, report, err2, caplog.text] + [p.read_bytes().decode("latin-1")
                                                        for p in out.iterdir()]
    for planted in (dicoms.PLANTED_NAME, "Planted", dicoms.PLANTED_BIRTH, "X-991"):
        assert not any(planted in t for t in texts), planted
    assert json.loads(report)["per_source"]["rsna"]["formats"] == {"DICOM": 2}


# --- COVIDx CXR-3/4 ---------------------------------------------------------------------------

def test_covidx_cxr4_positive_negative_and_data_sources(tmp_path: Path) -> None:
    root = tmp_path / "covidx"
    _write(root / "train.txt", [
        "419639-003251 MIDRC-RICORD-1C-419639-003251-46647-0.png positive ricord",
        "ffd97f9f-2d1a-4d8b-a3b0-6a8bfe1e7a38 ffd97f9f-2d1a-4d8b-a3b0-6a8bfe1e7a38.png "
        "negative rsna",
        "A860070 A860070-12-28-1901-NA-CHEST_AP_PORT-78603-3.000000-NA-97513-1-1.png positive "
        "stonybrook"])
    _write(root / "val.txt", ["sub-S09249 sub-S09249_ses-E20307_run-1_bp-chest_vp-ap_cr.png "
                              "positive bimcv"])
    _write(root / "test.txt", ["12 covid-19 x-ray (2).png negative sirm"])
    for split, txt in (("train", "train.txt"), ("val", "val.txt"), ("test", "test.txt")):
        for line in (root / txt).read_text().splitlines():
            parts = line.split()
            _img(root / split / " ".join(parts[1:-2]))
    df = import_dataset("covidx", root).df.set_index(S.PATH)
    assert df.loc["train/MIDRC-RICORD-1C-419639-003251-46647-0.png",
                  [S.LABEL, S.PATIENT_ID, S.SOURCE, S.SPLIT]].tolist() == [
        "covid19", "419639-003251", "ricord", "train"]
    assert df.loc["train/ffd97f9f-2d1a-4d8b-a3b0-6a8bfe1e7a38.png", [S.LABEL, S.SOURCE]
                  ].tolist() == ["normal", "rsna"]
    assert df.loc["val/sub-S09249_ses-E20307_run-1_bp-chest_vp-ap_cr.png",
                  [S.SPLIT, S.SOURCE]].tolist() == ["val", "bimcv"]
    assert df.loc["test/covid-19 x-ray (2).png", [S.LABEL, S.PATIENT_ID, S.SOURCE]].tolist() == [
        "normal", "12", "sirm"]
    assert sorted(df[S.SOURCE].unique()) == ["bimcv", "ricord", "rsna", "sirm", "stonybrook"]


# --- label rules, --list, DICOM in the generic importers ---------------------------------------

def test_label_rule_naming_an_unknown_class(tmp_path: Path, run_cli) -> None:
    rule = tmp_path / "rule.yaml"
    rule.write_text("covid: [COVID-19]\nnormal: [No Finding]\n")
    with pytest.raises(DataError, match=r"rule.yaml: class: 'covid' is not a label; allowed: "
                       r"normal, bacteria, viral, covid19, pneumonia"):
        parse_label_map([str(rule)])
    root = _nih(tmp_path / "nih")
    code, _, err = run_cli("data", "import", "nih", str(root), "--label-map", "Pneumonia=pneu",
                           "--out", str(tmp_path / "m.parquet"))
    assert code == 2 and err.count("\n") == 1 and "'pneu' is not a label" in err


def test_list_prints_every_registered_kind_with_its_files(run_cli) -> None:
    code, out, _ = run_cli("data", "import", "--list")
    assert code == 0
    for kind in cli_kinds():
        assert f"\n{kind}: " in "\n" + out
        for item in IMPORTERS.get(kind.replace("-", "_")).expects:
            assert f"    {item}" in out
    assert "stage_2_train_images/<patientId>.dcm" in out and "Data_Entry_2017.csv" in out
    code, out, err = run_cli("data", "import", "nih")
    assert code == 2 and "KIND, SRC and --out are required" in err


def test_help_lists_the_kinds_from_the_registry(run_cli, capsys) -> None:
    with pytest.raises(SystemExit):
        run_cli("data", "import", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "one of " + ", ".join(cli_kinds()) in text


def test_dicom_files_in_folder_and_metadata_csv(tmp_path: Path) -> None:
    dicoms.write(tmp_path / "f" / "normal" / "a.dcm", dicoms.gradient(), view="AP")
    dicoms.write(tmp_path / "f" / "covid19" / "b.dcm", dicoms.gradient(), view=None)
    df = import_dataset("folder", tmp_path / "f").df
    assert df[[S.PATH, S.LABEL, S.VIEW]].astype(object).where(df.notna(), None).values.tolist(
    ) == [["covid19/b.dcm", "covid19", None], ["normal/a.dcm", "normal", "AP"]]
    images = tmp_path / "m" / "images"
    dicoms.write(images / "x1.dcm", dicoms.gradient(), view="PA")
    dicoms.write(images / "x2.dcm", dicoms.gradient(), view="LL")
    csv = _write(tmp_path / "m" / "meta.csv", ["patientid,filename,finding", "p1,x1,COVID-19",
                                               "p2,x2.dcm,No Finding"])
    res = import_dataset("metadata-csv", csv, ImportOptions(views=("PA",)))
    assert _rows(res.df) == [["images/x1.dcm", "covid19", "p1", None, "PA", "m"]]
    assert res.dropped == {"view LATERAL": 1}  # DICOM LL: a left lateral
    out = tmp_path / "m.parquet"
    write_import(res, out)
    assert read_manifest(out)[S.VIEW].tolist() == ["PA"]


def test_the_three_class_job_runs_on_an_imported_covidx(tmp_path: Path) -> None:
    """jobs/public-three-class.yaml: its scenario splits an imported COVIDx 3-class set."""
    from raybench.config import load_spec
    from raybench.catalog.scenarios import get_scenario
    from raybench.data.scenarios import build_scenario

    root, lines = tmp_path / "covidx", {"train": [], "test": []}
    for c, label in enumerate(("normal", "pneumonia", "COVID-19")):
        for i in range(10):
            name, split = f"{label.lower()}-{i}.png", "test" if i < 3 else "train"
            noise = np.random.default_rng(10 * c + i).integers(0, 255, (32, 32), dtype=np.uint8)
            (root / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(noise).save(root / split / name)  # distinct films, no near pairs
            lines[split].append(f"P{c}{i} {name} {label} {'cohen' if c == 2 else 'rsna'}")
    _write(root / "train_COVIDx8A.txt", lines["train"])
    _write(root / "test_COVIDx8A.txt", lines["test"])
    out = tmp_path / "m.parquet"
    write_import(import_dataset("covidx", root), out)
    repo = Path(__file__).resolve().parents[3]
    spec = load_spec(repo / "jobs" / "public-three-class.yaml", [f"data.manifest={out}"])
    (scenario,) = spec.sweep.scenarios
    built = build_scenario(get_scenario(str(repo / scenario)), out, seed=0,
                           val_fraction=spec.data.val_fraction, test_fraction=0.2)
    assert built.classes == ("normal", "pneumonia", "covid19")
    counts = built.summary["counts"]
    assert {c: sum(counts[s][c] for s in S.SPLITS) for c in built.classes} == {
        "normal": 10, "pneumonia": 10, "covid19": 10}
    assert counts["test"] == {"normal": 3, "pneumonia": 3, "covid19": 3}
    assert all(counts["val"][c] + counts["train"][c] == 7 for c in built.classes)


def test_rebase_paths_outside_the_manifest_folder_are_file_uris(tmp_path: Path) -> None:
    from raybench.data.importers import rebase_paths
    from raybench.data.manifest import resolve_image_path

    root = tmp_path / "data set ü"
    _img(root / "normal" / "a b#1.png")
    res = import_dataset("folder", root)
    (uri,) = rebase_paths(res, tmp_path / "elsewhere")[S.PATH]
    assert uri == (root / "normal" / "a b#1.png").as_uri()
    assert resolve_image_path(tmp_path, uri) == root / "normal" / "a b#1.png"
    assert rebase_paths(res, tmp_path)[S.PATH].tolist() == ["data set ü/normal/a b#1.png"]


@pytest.mark.parametrize("kind,make,bad", [
    ("nih", "nih", "../../outside.png"),
    ("padchest", "padchest", "../.."),
])
def test_csv_rows_pointing_outside_the_dataset_are_refused(tmp_path: Path, kind: str, make: str,
                                                          bad: str) -> None:
    _img(tmp_path / "outside.png")
    if make == "nih":
        root = _nih(tmp_path / "d" / "nih", [NIH_ROWS[4].replace("00000005_000.png", bad)])
        match = r"line 2: Image Index '\.\./\.\./outside.png' is not a file name"
    else:
        root = _padchest(tmp_path / "d" / "pc")
        csv = root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
        lines = csv.read_text().splitlines()
        image = lines[1].split(",")[0]
        lines[1] = lines[1].replace(f"{image},0,", f"outside.png,{bad},", 1)
        csv.write_text("\n".join(lines) + "\n")
        match = r"line 2: file '\.\./\.\./outside.png' escapes"
    for policy in ("fail", "skip"):
        with pytest.raises(DataError, match=match):
            import_dataset(kind, root, ImportOptions(on_bad_image=policy))


# --- real files as they arrive: other releases, re-saved copies, awkward records ----------------

def test_nih_v2020_release_with_patient_sex_and_trailing_commas(tmp_path: Path) -> None:
    """The v2020 file renames ``Patient Gender`` (a column raybench never reads) and its rows
    end in a comma its header lacks."""
    root = tmp_path / "nih"
    _nih(root)
    (root / "Data_Entry_2017.csv").unlink()
    header = NIH_HEADER.replace("Patient Gender", "Patient Sex").rstrip(",")
    _write(root / "Data_Entry_2017_v2020.csv", [header] + NIH_ROWS)
    res = import_dataset("nih", root)
    assert _rows(res.df) == [
        ["images_001/images/00000003_000.png", "pneumonia", "3", "test", "PA", "nih"],
        ["images_002/images/00000005_000.png", "normal", "5", "train", "PA", "nih"],
        ["images_002/images/00000005_001.png", "normal", "5", "train", "AP", "nih"]]


def test_mimic_ll_is_lateral_and_every_left_out_row_is_logged(tmp_path: Path, run_cli,
                                                               caplog) -> None:
    """MIMIC's ``LL`` (left lateral) counts as LATERAL; the log line names the rows left out
    for an unknown view too (IDS['d'] has a blank ViewPosition)."""
    root = _mimic(tmp_path / "mimic")
    meta = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    text = gzip.decompress(meta.read_bytes()).decode()
    meta.write_bytes(gzip.compress(text.replace(",LATERAL,", ",LL,").encode()))
    out = tmp_path / "m.parquet"
    with caplog.at_level("INFO", logger="raybench.data.importers"):
        code, stdout, err = run_cli("data", "import", "mimic-cxr-jpg", str(root), "--uncertain",
                                    "ones", "--views", "LATERAL", "--out", str(out))
    assert code == 0, err
    assert read_manifest(out)[S.PATH].str[-40:-4].tolist() == [IDS["b"][-36:]]
    assert read_manifest(out)[S.VIEW].tolist() == ["LATERAL"]
    counts = "view AP x1, view PA x2, view unknown x1"  # the view filter comes first
    assert [r.getMessage() for r in caplog.records if "left out" in r.getMessage()] == [
        f"{root}: left out {counts}"]
    assert stdout.rstrip().endswith("left out 1 (view AP), 2 (view PA), 1 (view unknown)")


PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"


def test_padchest_errors_name_the_file_line_past_quoted_newlines(tmp_path: Path) -> None:
    """Reports hold quoted newlines: record 4 of this file starts on line 7."""
    root = _padchest(tmp_path / "pc")
    csv = root / PADCHEST_CSV
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].replace('"normal study, no changes"', '"normal study,\nno changes\n"')
    lines[4] = lines[4].replace("['COPD signs', 'unchanged']", "COPD signs")
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{PADCHEST_CSV} line 7: Labels 'COPD signs' is not a "
                       "list of strings"):
        import_dataset("padchest", root)
    lines[4] = lines[4].replace("COPD signs", "['COPD signs', 'unchanged']")
    csv.write_text("\n".join(lines) + "\n")  # the newlines stay inside the report's text
    assert _rows(import_dataset("padchest", root).df)[1][:3] == [
        "0/20536686640136348236148679891455886468_k6ga29.png", "normal", "p1"]


@pytest.mark.parametrize("column,value,diagnosis", [
    ("PatientID", "8.3986e+35", r"PatientID '8\.3986e\+35' is a number in scientific notation "
     r"\(2 such rows\): long ids were rounded"),
    ("ImageID", "0\\20536686640136348236148679891455886468_k6ga29.png",
     r"ImageID '0\\\\20536686640136348236148679891455886468_k6ga29\.png' carries a folder "
     r"prefix \(1 such rows\)"),
])
def test_a_csv_resaved_by_a_spreadsheet_gets_its_own_diagnosis(tmp_path: Path, run_cli,
                                                               column: str, value: str,
                                                               diagnosis: str) -> None:
    root = _padchest(tmp_path / "pc")
    csv = root / PADCHEST_CSV
    lines = csv.read_text().splitlines()
    if column == "PatientID":  # p1's two films and p2's: rounded to one float, shared
        lines[2] = lines[2].replace(",stp1,p1,", f",stp1,{value},")
        lines[3] = lines[3].replace(",stp2,p2,", f",stp2,{value},")
    else:
        lines[1] = lines[1].replace(value.split("\\")[1], value, 1)
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.parquet"
    code, _, err = run_cli("data", "import", "padchest", str(root), "--on-bad-image", "skip",
                           "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and "partial download" not in err
    line = 3 if column == "PatientID" else 2
    assert re.search(rf"{PADCHEST_CSV} line {line}: {diagnosis}.*re-saved by a spreadsheet; use "
                     "the file as downloaded", err), err
    assert not out.exists()


@pytest.mark.parametrize("path,reason", [
    ("/data/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "is absolute"),
    ("s3://bucket/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
     "is a URI"),
])
def test_chexpert_absolute_path_and_uri_get_a_message_that_matches(tmp_path: Path, path: str,
                                                                   reason: str) -> None:
    root = _chexpert(tmp_path)
    _write(root / "train.csv", [CHEX_HEADER, CHEX_TRAIN[0].replace(CHEX_TRAIN[0].split(",")[0],
                                                                   path)])
    with pytest.raises(DataError) as err:
        import_dataset("chexpert", root, ImportOptions(uncertain="zeros"))
    assert str(err.value) == (f"{root / 'train.csv'} line 2: file {path!r} {reason}; paths in "
                              "the dataset's CSV must be relative to the dataset folder")
