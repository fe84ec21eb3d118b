"""The dataset layouts ``raybench data import`` reads, as data: name, code reference, files.

Pandas-free, so the CLI lists the kinds (and ``raybench --help`` runs) without importing the
importers; :func:`Importer.load` imports a layout's code when it runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from raybench import schema as S
from raybench.registry import Registry, load_ref

#: MIMIC-CXR-JPG's file-name prefix (its metadata, label and split CSVs).
MIMIC_PREFIX = "mimic-cxr-2.0.0"
#: PadChest's label CSV.
PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
_IMPORTERS = "raybench.data.importers"


@dataclass(frozen=True)
class Importer:
    """One registered layout: the code that imports it and what a download must hold.

    Attributes:
        function: ``module:function`` of ``(src, opts) -> ImportResult``.
        summary: One line: the dataset and what ``src`` is.
        expects: The files and folders it reads, as ``raybench data import --list`` prints them.
        rule: ``module:attribute`` of a multi-label set's default label rule (``--label-map``
            replaces it).
    """

    function: str
    summary: str
    expects: tuple[str, ...]
    rule: Optional[str] = None

    def load(self) -> Callable[..., Any]:
        """The import function, imported now (it imports pandas)."""
        fn: Callable[..., Any] = load_ref(self.function)
        return fn

    def default_rule(self) -> Any:
        """The default ``LabelRule``, or None for a single-label layout."""
        return load_ref(self.rule) if self.rule else None


def _ref(module: str, name: str) -> str:
    return f"{_IMPORTERS}.{module}:{name}"


IMPORTERS: Registry[Importer] = Registry("importer")
IMPORTERS.register("kermany", Importer(
    _ref("kermany", "import_kermany"), "Kaggle chest_xray (Kermany et al.); SRC: the folder",
    ("[train|val|test/]NORMAL/*.jpeg", "[train|val|test/]PNEUMONIA/personN_bacteria|virus_M.jpeg")))
IMPORTERS.register("covidx", Importer(
    _ref("covidx", "import_covidx"),
    "COVIDx (COVID-Net), 2020 layout and CXR-3/4; SRC: the folder",
    ("train.txt / val.txt / test.txt (names containing train, val, test): lines "
     "'patient_id filename class [data_source]'; class COVID-19/pneumonia/normal or "
     "positive/negative; data_source becomes the source",
     "train/ val/ test/ image folders (or one folder, --images)")))
IMPORTERS.register("metadata_csv", Importer(
    _ref("metadata_csv", "import_metadata_csv"),
    "a metadata CSV (ieee8023, Figure1, Actualmed, Hannover); SRC: the CSV",
    ("SRC.csv: file, finding (or --label), patient, [source], [split] columns",
     "images next to it or under --images (png, jpg, dcm, ...)")))
IMPORTERS.register("folder", Importer(
    _ref("folder", "import_folder"), "one sub-folder per label; SRC: the folder",
    ("<label>/* for label in " + ", ".join(S.MANIFEST_LABELS) + " (png, jpg, dcm, ...)",)))
IMPORTERS.register("nih", Importer(
    _ref("nih", "import_nih"), "NIH ChestX-ray14; SRC: the download folder",
    ("Data_Entry_2017.csv or Data_Entry_2017_v2020.csv (Image Index, Finding Labels, "
     "Patient ID, View Position)", "images*/*.png or images_0NN/images/*.png",
     "train_val_list.txt, test_list.txt (optional: the official split)"),
    _ref("nih", "DEFAULT_RULE")))
IMPORTERS.register("chexpert", Importer(
    _ref("chexpert", "import_chexpert"),
    "CheXpert (Stanford); SRC: CheXpert-v1.0[-small]/; needs --uncertain",
    ("train.csv, valid.csv (Path, Frontal/Lateral, AP/PA, 14 observations "
     "1.0/0.0/-1.0/blank)", "train/patientNNNNN/studyN/viewN_frontal|lateral.jpg, valid/..."),
    _ref("chexpert", "DEFAULT_RULE")))
IMPORTERS.register("mimic_cxr_jpg", Importer(
    _ref("mimic", "import_mimic"),
    "MIMIC-CXR-JPG 2.0.0 (PhysioNet); SRC: the download folder; needs --uncertain",
    (f"{MIMIC_PREFIX}-metadata.csv[.gz] (dicom_id, subject_id, study_id, ViewPosition)",
     f"{MIMIC_PREFIX}-chexpert.csv[.gz] (subject_id, study_id, 14 observations)",
     f"{MIMIC_PREFIX}-split.csv[.gz] (dicom_id, split)",
     "files/pNN/p<subject_id>/s<study_id>/<dicom_id>.jpg"), _ref("mimic", "DEFAULT_RULE")))
IMPORTERS.register("padchest", Importer(
    _ref("padchest", "import_padchest"), "PadChest (BIMCV); SRC: the download folder",
    (f"{PADCHEST_CSV}[.gz] (ImageID, ImageDir, PatientID, Projection, "
     "ViewPosition_DICOM, Labels as a list literal)", "<ImageDir>/<ImageID> (16-bit PNG)"),
    _ref("padchest", "DEFAULT_RULE")))
IMPORTERS.register("rsna_pneumonia", Importer(
    _ref("rsna", "import_rsna"),
    "RSNA Pneumonia Detection Challenge (stage 2); SRC: the download folder",
    ("stage_2_train_labels.csv (patientId, Target; a row per box)",
     "stage_2_detailed_class_info.csv (patientId, class)",
     "stage_2_train_images/<patientId>.dcm (DICOM; view from ViewPosition)"),
    _ref("rsna", "DEFAULT_RULE")))


def cli_kinds() -> list[str]:
    """The registered kinds as the CLI spells them (``metadata-csv``)."""
    return [k.replace("_", "-") for k in IMPORTERS]


def describe_kinds() -> str:
    """Every kind with the files it expects (``raybench data import --list``)."""
    lines = []
    for key in IMPORTERS:
        imp = IMPORTERS.get(key)
        lines.append(f"{key.replace('_', '-')}: {imp.summary}")
        lines += [f"    {item}" for item in imp.expects]
        rule = imp.default_rule()
        if rule is not None:
            lines.append(f"    default label rule: {rule.describe()} (--label-map replaces it)")
    return "\n".join(lines)
