"""Patient-level, stratified, seeded train / val / test splits.

No patient ever appears in two splits: whole patients are assigned, stratified by their label
(a patient's most frequent label), with a seeded shuffle so the same seed gives the same split.
A manifest's own ``split`` column is kept where set; validation patients are then carved out of
its training patients.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench.errors import DataError


def _patient_labels(df: pd.DataFrame) -> pd.Series:
    """Each patient's most frequent label (ties: the label seen first), indexed by patient."""
    # Vectorised: a per-group value_counts took seconds on a few thousand patients.
    counts = df.groupby([S.PATIENT_ID, S.LABEL], sort=False).size().reset_index(name="_n")
    counts = counts.sort_values("_n", ascending=False, kind="stable")
    return counts.drop_duplicates(S.PATIENT_ID).set_index(S.PATIENT_ID)[S.LABEL].sort_index()


def _take(patients: pd.Series, fraction: float, rng: np.random.Generator) -> set[str]:
    """Per label, a seeded random ``fraction`` of its patients (at least one when >= 2)."""
    chosen: set[str] = set()
    for _, group in patients.groupby(patients, sort=True):
        ids = np.array(sorted(group.index))
        rng.shuffle(ids)
        n = int(round(len(ids) * fraction))
        if fraction > 0 and n == 0 and len(ids) >= 2:
            n = 1
        chosen.update(ids[:n].tolist())
    return chosen


def assign_splits(df: pd.DataFrame, val_fraction: float, test_fraction: float,
                  seed: int) -> pd.DataFrame:
    """Returns a copy of ``df`` whose ``split`` column is filled with train / val / test.

    Rows that already have a split keep it. Rows without one are assigned by patient: a
    ``test_fraction`` of patients to test (only when no row is already marked test) and a
    ``val_fraction`` of the remaining training patients to val.

    Raises:
        DataError: A patient whose pre-set splits disagree (it would leak across splits).
    """
    out = df.copy()
    split = out[S.SPLIT].astype(object).where(out[S.SPLIT].notna(), None)
    mixed = out[split.notna()].groupby(S.PATIENT_ID)[S.SPLIT].nunique()
    if (mixed > 1).any():
        raise DataError(f"patient {mixed[mixed > 1].index[0]!r} appears in more than one split "
                        "in the manifest; splits must be disjoint by patient")
    rng = np.random.default_rng(seed)
    unset = split.isna()
    if unset.any() and not (split == "test").any() and test_fraction > 0:
        test = _take(_patient_labels(out[unset]), test_fraction, rng)
        split[unset & out[S.PATIENT_ID].isin(test)] = "test"
    unset = split.isna()
    split[unset] = "train"
    has_val = (split == "val").any()
    if not has_val and val_fraction > 0:
        train = split == "train"
        val = _take(_patient_labels(out[train]), val_fraction, rng)
        split[train & out[S.PATIENT_ID].isin(val)] = "val"
    out[S.SPLIT] = split
    return out


def check_disjoint(df: pd.DataFrame) -> None:
    """Raises ``DataError`` naming a patient found in more than one split."""
    counts = df.groupby(S.PATIENT_ID)[S.SPLIT].nunique()
    if (counts > 1).any():
        raise DataError(f"patient {counts[counts > 1].index[0]!r} is in more than one split")
