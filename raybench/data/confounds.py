"""Confounds: whether a label is (nearly) told apart by its source or by an image property
(format, mode, bit depth, size) alone, e.g. every COVID image a large PNG from one hospital,
every normal a 224 px JPEG. The properties come from each file's
:class:`~raybench.data.fingerprints.Fingerprint`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench.data.fingerprints import Fingerprint

#: A label counts as determined by a property (source, format, ...) when a rule that looks at
#: that property alone tells the label from all other labels with this balanced accuracy.
CONFOUND_BALANCED_ACCURACY = 0.95
#: Properties a label may be confounded with; ``size`` is the longer side in pixels.
PROPERTIES: tuple[str, ...] = (S.SOURCE, "format", "mode", "bit_depth", "size")
_BITS = {"1": 1, "L": 8, "P": 8, "LA": 8, "PA": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8,
         "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


def _property_table(df: pd.DataFrame, probes: list[Fingerprint]) -> pd.DataFrame:
    """One row per readable image: label and the properties of :data:`PROPERTIES`."""
    ok = [i for i, p in enumerate(probes) if p.size]
    return pd.DataFrame({
        S.LABEL: df[S.LABEL].iloc[ok].to_numpy(), S.SOURCE: df[S.SOURCE].iloc[ok].to_numpy(),
        "format": [probes[i].fmt for i in ok], "mode": [probes[i].mode for i in ok],
        "bit_depth": [f"{_BITS.get(probes[i].mode or '', 8)}-bit" for i in ok],
        "size": [max(probes[i].size or (0, 0)) for i in ok]})


def _lookup_score(values: pd.Series, is_label: np.ndarray) -> float:
    """Balanced accuracy of the best rule "label iff the value is in a set" (categorical)."""
    pos = values[is_label].value_counts(normalize=True)
    neg = values[~is_label].value_counts(normalize=True).reindex(pos.index, fill_value=0.0)
    chosen = pos > neg  # the rule that maximises sensitivity + specificity
    return float(0.5 * (pos[chosen].sum() + 1.0 - neg[chosen].sum()))


def _stump_score(sizes: np.ndarray, is_label: np.ndarray) -> float:
    """Balanced accuracy of the best rule "label iff size > t" (or <= t) over thresholds t."""
    cuts = np.unique(sizes)
    pos, neg = np.sort(sizes[is_label]), np.sort(sizes[~is_label])
    above_pos = 1.0 - np.searchsorted(pos, cuts, side="right") / len(pos)
    above_neg = 1.0 - np.searchsorted(neg, cuts, side="right") / len(neg)
    bal = 0.5 * (above_pos + 1.0 - above_neg)
    return float(max(bal.max(), (1.0 - bal).max()))


def _top(values: pd.Series, prop: str) -> dict[str, Any]:
    if prop == "size":
        return {"value": f"{int(np.median(values))} px (median longer side)",
                "range": [int(values.min()), int(values.max())]}
    counts = values.value_counts()
    return {"value": str(counts.index[0]), "share": round(float(counts.iloc[0] / len(values)), 4)}


def _label_confound(table: pd.DataFrame, label: str) -> dict[str, Any]:
    is_label = (table[S.LABEL] == label).to_numpy()
    props: dict[str, Any] = {}
    for prop in PROPERTIES:
        col = table[prop]
        score = (_stump_score(col.to_numpy(), is_label) if prop == "size"
                 else _lookup_score(col, is_label))
        props[prop] = {"balanced_accuracy": round(score, 4), "label": _top(col[is_label], prop),
                       "others": _top(col[~is_label], prop)}
    by = [p for p in PROPERTIES if props[p]["balanced_accuracy"] >= CONFOUND_BALANCED_ACCURACY]
    return {"images": int(is_label.sum()), "determined_by": by, "properties": props}


def confounds(df: pd.DataFrame, probes: list[Fingerprint]) -> dict[str, Any]:
    """For each label, whether its source or image properties (nearly) determine it.

    A label is *determined by* a property when a rule that looks only at that property (for
    source, format, mode and bit depth: "the value is one of these"; for the longer side in
    pixels: "above / below a threshold") tells the label's images from all other labels'
    images with balanced accuracy >= :data:`CONFOUND_BALANCED_ACCURACY`. A model can then
    score well on that label without looking at the lungs.

    Returns:
        ``{"min_balanced_accuracy", "labels": {label: {images, determined_by, properties:
        {prop: {balanced_accuracy, label: {value, share}, others: {value, share}}}}},
        "verdict": [one line per determined label]}``.
    """
    table = _property_table(df, probes)
    labels = sorted(table[S.LABEL].unique())
    out: dict[str, Any] = {"min_balanced_accuracy": CONFOUND_BALANCED_ACCURACY, "labels": {},
                           "verdict": []}
    if len(labels) < 2:
        return out
    for label in labels:
        info = _label_confound(table, label)
        out["labels"][label] = info
        if info["determined_by"]:
            out["verdict"].append(_verdict_line(label, info))
    return out


def _describe(side: dict[str, Any], prop: str) -> str:
    if prop == "size":
        return side["value"].split(" (")[0]
    prefix = "from " if prop == S.SOURCE else ""
    return f"{side['share']:.0%} {prefix}{side['value']}"


def _verdict_line(label: str, info: dict[str, Any]) -> str:
    """E.g. ``covid19: 100% from hannover (100% PNG, 640 px); other labels: 100% from
    kermany (100% JPEG, 224 px); determined by source, format, size``."""
    by = info["determined_by"]
    main = [p for p in by if p == S.SOURCE] or by[:1]
    rest = [p for p in by if p not in main]

    def side(key: str) -> str:
        first = ", ".join(_describe(info["properties"][p][key], p) for p in main)
        more = ", ".join(_describe(info["properties"][p][key], p) for p in rest)
        return f"{first} ({more})" if more else first

    return (f"{label}: {side('label')}; other labels: {side('others')}; determined by "
            f"{', '.join(p.replace('_', ' ') for p in by)}")
