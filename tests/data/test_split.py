"""Patient-level splits: disjoint, stratified, seeded; manifest splits respected."""
from __future__ import annotations

import pandas as pd
import pytest

from raybench.data.split import assign_splits, check_disjoint
from raybench.errors import DataError


def _frame(n_patients: int = 40, per_patient: int = 3) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        label = ["normal", "covid19"][p % 2]
        for i in range(per_patient):
            rows.append({"image_id": f"p{p}-{i}", "patient_id": f"p{p}", "label": label,
                         "split": None})
    return pd.DataFrame(rows)


def test_patient_level_stratified_and_seeded() -> None:
    df = assign_splits(_frame(), val_fraction=0.25, test_fraction=0.25, seed=7)
    check_disjoint(df)
    per_patient = df.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()
    counts = df.drop_duplicates("patient_id").groupby(["split", "label"]).size()
    assert counts[("test", "normal")] == counts[("test", "covid19")] == 5   # 25% of 20
    assert counts[("val", "normal")] == counts[("val", "covid19")] == 4    # 25% of 15, rounded
    again = assign_splits(_frame(), 0.25, 0.25, seed=7)
    other = assign_splits(_frame(), 0.25, 0.25, seed=8)
    assert again["split"].tolist() == df["split"].tolist()
    assert other["split"].tolist() != df["split"].tolist()


def test_manifest_test_split_is_kept_and_val_carved_from_train() -> None:
    df = _frame()
    df.loc[df["patient_id"].isin(["p0", "p1"]), "split"] = "test"
    out = assign_splits(df, val_fraction=0.2, test_fraction=0.5, seed=0)
    assert set(out.loc[out["split"] == "test", "patient_id"]) == {"p0", "p1"}
    assert (out["split"] == "val").sum() > 0


def test_patient_in_two_preset_splits_is_an_error() -> None:
    df = _frame()
    df.loc[0, "split"] = "train"
    df.loc[1, "split"] = "test"
    with pytest.raises(DataError, match="patient 'p0' appears in more than one split"):
        assign_splits(df, 0.2, 0.2, 0)
