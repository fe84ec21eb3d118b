"""Scenarios: declarative class lists, label merges and caps, split by patient and checked.

A :class:`ScenarioSpec` says which classes a model learns (``classes``, in class-index order),
which manifest labels feed them (``merge``: e.g. bacteria + viral -> pneumonia), how many
training images a class may use at most (``caps``) and optionally where the test set comes from
(``test_from``: a source name in the manifest, or another manifest file).

:func:`build_scenario` turns a spec and a manifest into a split that is disjoint by patient *and*
by image content (byte-identical files are kept in one split), seeded and stratified, and refuses
train/test overlap unless ``allow_overlap``. The paper's three scenarios are registered as
``paper_1``, ``paper_2`` and ``paper_3`` in :mod:`raybench.catalog.scenarios` (``paper-1`` etc.
are accepted too).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench.catalog.scenarios import ScenarioSpec
from raybench.data import manifest as mf
from raybench.data.split import assign_splits
from raybench.errors import DataError

log = logging.getLogger(__name__)

_TRAIN_POOL = ("train", "val")


@dataclass
class BuiltScenario:
    """A scenario applied to data.

    Attributes:
        spec: What was asked for.
        df: Manifest rows used, ``label`` replaced by the class, ``split`` filled.
        files: The local image file of each row of ``df``.
        origins: Per row, the index into ``manifests`` it came from.
        manifests: The manifest files read (the main one, then a ``test_from`` manifest).
        summary: What was used: seed, fractions, caps, counts per split and class, notes.
    """

    spec: ScenarioSpec
    df: pd.DataFrame
    files: list[Path]
    origins: np.ndarray
    manifests: tuple[Path, ...]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes


def _to_classes(df: pd.DataFrame, spec: ScenarioSpec) -> pd.DataFrame:
    classes = df[S.LABEL].map(spec.class_of)
    out = df[classes.notna()].copy()
    out[S.LABEL] = classes[classes.notna()]
    return out


def near_duplicate_pairs(files: list[Path], threshold: Optional[int] = None
                         ) -> list[tuple[int, int, int]]:
    """``(i, j, distance)`` of files whose dHashes lie within the audit's near threshold.

    Hashes are kept per file (path, size, mtime) for the process, so the trials of one worker
    hash each image once; 5,475 real images hash in about 3 s, their 15 M pairs compare in
    well under a second.
    """
    from raybench.data.fingerprints import HASH_SIDE
    from raybench.data.near_duplicates import NEAR_THRESHOLD, near_pairs

    width = HASH_SIDE * HASH_SIDE // 8
    mat = np.zeros((len(files), width), dtype=np.uint8)
    valid = np.zeros(len(files), dtype=bool)
    for i, f in enumerate(files):
        h = _file_dhash(f)
        if h is not None:
            mat[i], valid[i] = h, True
    return near_pairs(mat, valid, NEAR_THRESHOLD if threshold is None else threshold)


_DHASH_MEMO: dict[tuple, Optional[np.ndarray]] = {}


def _file_dhash(path: Path) -> Optional[np.ndarray]:
    from raybench.data.fingerprints import file_dhash

    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DHASH_MEMO:
        _DHASH_MEMO[key] = file_dhash(path)
    return _DHASH_MEMO[key]


def _group_keys(df: pd.DataFrame, near: Optional[list[tuple[int, int, int]]] = None
                ) -> pd.Series:
    """Split unit per row: patients (qualified by source) joined when they share an image hash
    or, given ``near`` (row-position pairs), hold near-duplicate images."""
    keys = (df[S.SOURCE] + "/" + df[S.PATIENT_ID]).tolist()
    parent = {k: k for k in keys}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def join(key: str, other: str) -> None:
        a, b = find(key), find(other)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first: dict[str, str] = {}
    for key, digest in zip(keys, df[S.SHA256], strict=True):
        join(key, first.setdefault(digest, key))
    for i, j, _ in near or []:
        join(keys[i], keys[j])
    return pd.Series([find(k) for k in keys], index=df.index)


Near = Sequence[tuple[int, int, int]]  # (row, row, distance); rows are ``_row`` values


def _near_of(df: pd.DataFrame, near: Near) -> list[tuple[int, int, int]]:
    """``near`` as positions of ``df``'s rows (pairs with a row no longer in ``df`` dropped)."""
    pos = {r: k for k, r in enumerate(df["_row"])}
    return [(pos[i], pos[j], d) for i, j, d in near if i in pos and j in pos]


def _split_by_group(df: pd.DataFrame, val: float, test: float, seed: int,
                    near: Near = ()) -> pd.DataFrame:
    """``assign_splits`` with the group key standing in for the patient id."""
    tmp = df.copy()
    tmp[S.PATIENT_ID] = _group_keys(df, _near_of(df, near))
    out = assign_splits(tmp, val, test, seed)
    out[S.PATIENT_ID] = df[S.PATIENT_ID]
    return out


def _apply_caps(df: pd.DataFrame, caps: Mapping[str, int], seed: int, near: Near = ()
                ) -> pd.DataFrame:
    """Drops training-pool rows beyond each class cap, keeping whole (seeded) groups."""
    if not caps:
        return df
    rng = np.random.default_rng([seed, 1])
    groups = _group_keys(df, _near_of(df, near))
    drop = pd.Series(False, index=df.index)
    for cls, cap in sorted(caps.items()):
        pool = df[S.SPLIT].isin(_TRAIN_POOL) & (df[S.LABEL] == cls)
        sizes = groups[pool].value_counts().sort_index()
        order = sizes.index.to_numpy()
        rng.shuffle(order)
        kept, total = set(), 0
        for g in order:
            if total + sizes[g] <= cap:
                kept.add(g)
                total += sizes[g]
        drop |= pool & ~groups.isin(kept)
    return df[~drop]


def _check_no_overlap(df: pd.DataFrame, allow: bool, near: Near = ()) -> list[str]:
    """Patients or identical images in both the training pool and test; raises unless allowed."""
    train = df[df[S.SPLIT].isin(_TRAIN_POOL)]
    test = df[df[S.SPLIT] == "test"]
    problems = []
    pkey = lambda d: d[S.SOURCE] + "/" + d[S.PATIENT_ID]  # noqa: E731
    shared = sorted(set(pkey(train)) & set(pkey(test)))
    if shared:
        problems.append(f"{len(shared)} patient(s) in train and test, e.g. {shared[:3]}")
    same = test[test[S.SHA256].isin(set(train[S.SHA256]))]
    if len(same):
        twin = train[train[S.SHA256] == same[S.SHA256].iloc[0]][S.IMAGE_ID].iloc[0]
        problems.append(f"{len(same)} test image(s) identical to training images, e.g. "
                        f"{same[S.IMAGE_ID].iloc[0]!r} == {twin!r}")
    problems += _near_across(df, _near_of(df, near))
    if problems and not allow:
        raise DataError("train/test overlap: " + "; ".join(problems)
                        + " (set data.allow_overlap=true to train anyway)")
    for p in problems:
        log.warning("allowed train/test overlap: %s", p)
    return problems


def _near_across(df: pd.DataFrame, near: Near) -> list[str]:
    """Near-duplicate pairs (positions in ``df``) with one image in the training pool and the
    other in test."""
    split = df[S.SPLIT].to_numpy()
    pool = np.isin(split, _TRAIN_POOL)
    across = [(i, j, d) for i, j, d in near
              if (pool[i] and split[j] == "test") or (pool[j] and split[i] == "test")]
    if not across:
        return []
    i, j, d = across[0]
    ids = df[S.IMAGE_ID].to_numpy()
    return [f"{len(across)} near-duplicate pair(s) across train and test, e.g. {ids[i]!r} ~ "
            f"{ids[j]!r} (dHash distance {d})"]


def _load(path: Path, origin: int, allow_outside_root: bool = False
          ) -> tuple[pd.DataFrame, list[Path]]:
    df = mf.read_manifest(path)
    df["_origin"] = origin  # dropped again before returning
    return df, mf.image_files(path, list(df[S.PATH]), allow_outside_root)


def _test_from(df: pd.DataFrame, files: list[Path], test_from: str, spec: ScenarioSpec,
               manifests: list[Path], allow_outside_root: bool = False
               ) -> tuple[pd.DataFrame, pd.Series]:
    """Marks the test rows: a source of ``df`` or all rows of another manifest."""
    df = df.copy()
    df["_file"] = pd.Series(files, index=df.index, dtype=object)
    if test_from in set(df[S.SOURCE]):
        is_test = df[S.SOURCE] == test_from
    elif test_from.endswith(".parquet") or Path(test_from).is_file():
        other, other_files = _load(Path(test_from), len(manifests), allow_outside_root)
        manifests.append(Path(test_from))
        other = _to_classes(other.assign(_file=pd.Series(other_files, index=other.index,
                                                         dtype=object)), spec)
        df = pd.concat([df, other], ignore_index=True)
        is_test = df["_origin"] == len(manifests) - 1
    else:
        raise DataError(f"test_from {test_from!r} is neither a source of the manifest "
                        f"({', '.join(sorted(set(df[S.SOURCE])))}) nor a manifest file")
    return df, is_test


def build_scenario(spec: ScenarioSpec, manifest: str | os.PathLike, seed: int = 0,
                   val_fraction: float = 0.15, test_fraction: float = 0.2,
                   test_from: Optional[str] = None, allow_overlap: bool = False,
                   allow_outside_root: bool = False) -> BuiltScenario:
    """Applies ``spec`` to a manifest: classes, merges, patient-level splits, caps, checks.

    Rows keep a pre-set ``split``; otherwise a seeded ``test_fraction`` of groups goes to test
    (unless test images come from ``test_from`` or are pre-set), caps trim the training pool,
    then ``val_fraction`` of the remaining training groups becomes validation.

    Raises:
        DataError: Unreadable manifest, a class without images, or train/test overlap.
    """
    manifests = [Path(manifest)]
    df, files = _load(manifests[0], 0, allow_outside_root)
    df = _to_classes(df.assign(_file=pd.Series(files, index=df.index, dtype=object)), spec)
    test_from = test_from or spec.test_from
    if test_from:
        df, is_test = _test_from(df.drop(columns="_file"), list(df["_file"]), test_from, spec,
                                 manifests, allow_outside_root)
        df.loc[is_test, S.SPLIT] = "test"
    df = df.reset_index(drop=True)
    df["_row"] = np.arange(len(df))
    near = near_duplicate_pairs(list(df["_file"]))
    df = _split_by_group(df, 0.0, 0.0 if test_from else test_fraction, seed, near)
    df = _apply_caps(df, dict(spec.caps), seed, near)
    df = _carve_val(df, val_fraction, seed, near)
    _check_classes(df, spec, manifests[0])
    _assert_disjoint(df)
    overlap = _check_no_overlap(df, allow_overlap, near)
    df = df.sort_values([S.SPLIT, S.IMAGE_ID], kind="stable").reset_index(drop=True)
    built = BuiltScenario(spec, df.drop(columns=["_file", "_origin", "_row"]), list(df["_file"]),
                          df["_origin"].to_numpy(), tuple(manifests))
    built.summary = _summary(built, seed, val_fraction, test_fraction, test_from, overlap)
    return built


def _carve_val(df: pd.DataFrame, val_fraction: float, seed: int, near: Near = ()
               ) -> pd.DataFrame:
    if (df[S.SPLIT] == "val").any() or val_fraction <= 0:
        return df
    train = df[S.SPLIT] == "train"
    part = df[train].copy()
    part[S.SPLIT] = None
    part = _split_by_group(part, val_fraction, 0.0, seed + 1, near)
    out = df.copy()
    out.loc[train, S.SPLIT] = part[S.SPLIT]
    return out


def _check_classes(df: pd.DataFrame, spec: ScenarioSpec, where: Path) -> None:
    present = set(df.loc[df[S.SPLIT] == "train", S.LABEL])
    missing = [c for c in spec.classes if c not in present]
    if missing:
        raise DataError(f"{where}: scenario {spec.name!r} has no training images of class(es) "
                        f"{', '.join(missing)}; classes present: {', '.join(sorted(present))}")


def _assert_disjoint(df: pd.DataFrame) -> None:
    key = df[S.SOURCE] + "/" + df[S.PATIENT_ID]
    counts = df.groupby(key)[S.SPLIT].nunique()
    if (counts > 1).any():
        raise DataError(f"patient {counts[counts > 1].index[0]!r} is in more than one split")


def _summary(built: BuiltScenario, seed: int, val: float, test: float,
             test_from: Optional[str], overlap: list[str]) -> dict[str, Any]:
    df = built.df
    counts = {split: {c: int(((df[S.SPLIT] == split) & (df[S.LABEL] == c)).sum())
                      for c in built.classes} for split in S.SPLITS}
    return {
        S.SCENARIO: built.spec.name, "description": built.spec.description,
        "classes": list(built.classes), "merge": dict(built.spec.merge),
        "caps": dict(built.spec.caps), S.SEED: seed, "val_fraction": val,
        "test_fraction": 0.0 if test_from else test, S.TEST_FROM: test_from,
        "manifests": [str(m) for m in built.manifests], "counts": counts,
        "paper_counts": built.spec.paper_counts, "overlap_allowed": overlap,
    }
