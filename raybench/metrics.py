"""Classification metrics for the paper's Tables 1 and 2, in numpy (z from ``raybench.stats``).

Every per-class figure is one-vs-rest: for class ``k``, "positive" means "true label is k" and
"predicted positive" means "argmax of the probabilities is k". Undefined ratios (a zero
denominator) are NaN rather than an error or a warning, because a test split can lack a class
and the results table must still be written.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional
from dataclasses import dataclass

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench.stats import Z_95

#: Class name used in long-format rows for whole-set metrics.
ALL = "all"
PER_CLASS_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "f1", "support")
OVERALL_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_auc", "n")
ROW_KEYS: tuple[str, ...] = (S.SPLIT, S.CLASS, S.METRIC, S.VALUE, S.CI_LOW, S.CI_HIGH)
_NAN_CI = (math.nan, math.nan)


def _ratio(num: float, den: float) -> float:
    """``num / den``, or NaN when ``den`` is zero (checked, so numpy never warns)."""
    return float(num) / float(den) if den else math.nan


def _as_labels(y: object, name: str) -> np.ndarray:
    """Validate a 1-D integer label vector and return it as int64."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    # np.asarray([]) is float64; an empty vector carries no labels to misread.
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def confusion_matrix(y_true: object, y_pred: object, num_classes: int) -> np.ndarray:
    """Count (true, predicted) pairs.

    Args:
        y_true: Integer class indices, shape (N,).
        y_pred: Integer class indices, shape (N,).
        num_classes: K, the number of classes.

    Returns:
        int64 array (K, K); ``cm[i, j]`` counts samples of true class i predicted as j.

    Raises:
        ValueError: On shape mismatch, non-integer labels, K < 1 or a label outside [0, K).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an int, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has shape {p.shape}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        bad = arr[(arr < 0) | (arr >= num_classes)]
        if bad.size:
            raise ValueError(f"{name} has label {bad[0]} outside [0, {num_classes})")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Preferred over the normal (Wald) interval because it stays inside [0, 1] and is sensible
    for the small per-class counts of the paper's test sets (e.g. 43 COVID images).

    Args:
        successes: Number of successes, 0 <= successes <= trials.
        trials: Number of trials.
        z: Normal quantile; the default gives a two-sided 95% interval.

    Returns:
        (low, high); (nan, nan) when ``trials == 0``.

    Raises:
        ValueError: If the counts are negative or successes exceeds trials.
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} / {trials}")
    if trials == 0:
        return _NAN_CI
    p, n, z2 = successes / trials, float(trials), z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clip float noise at p = 0 or 1 so the bounds are exactly within [0, 1].
    return max(0.0, centre - half), min(1.0, centre + half)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with tied values given the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    # The tie group of the j-th distinct value spans ranks end_j - count_j + 1 .. end_j.
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def roc_auc_binary(y_true_bool: object, scores: object) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic.

    Equals P(score of a random positive > score of a random negative) + 0.5 P(tie).

    Args:
        y_true_bool: Boolean (or 0/1) positives mask, shape (N,).
        scores: Finite scores, higher meaning more likely positive, shape (N,).

    Returns:
        The AUC in [0, 1], or NaN when only one class is present (or N == 0).

    Raises:
        ValueError: On shape mismatch or non-finite scores.
    """
    pos = np.asarray(y_true_bool).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if pos.ndim != 1 or pos.shape != s.shape:
        raise ValueError(f"need 1-D y_true_bool and scores of one shape: {pos.shape}, {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    u = _average_ranks(s)[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _check_prob(y_true: object, y_prob: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N,) labels against (N, K) probabilities; labels must lie in [0, K)."""
    t = _as_labels(y_true, "y_true")
    p = np.asarray(y_prob, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"y_prob must be 2-D (N, K), got shape {p.shape}")
    if p.shape[0] != t.shape[0]:
        raise ValueError(f"y_true has {t.shape[0]} samples but y_prob has {p.shape[0]} rows")
    if not np.all(np.isfinite(p)):
        raise ValueError("y_prob contains NaN or inf")
    bad = t[(t < 0) | (t >= p.shape[1])]
    if bad.size:
        raise ValueError(f"y_true has label {bad[0]} outside [0, {p.shape[1]})")
    return t, p


def macro_auc_ovr(y_true: object, y_prob: object) -> float:
    """Unweighted mean of one-vs-rest AUCs over the classes whose AUC is defined.

    A class's AUC is defined when it has both positives and negatives in ``y_true``; classes
    absent from the split (or covering every sample) are skipped, not counted as NaN.

    Args:
        y_true: Integer class indices, shape (N,).
        y_prob: Scores per class, shape (N, K).

    Returns:
        The macro AUC, or NaN if no class has a defined AUC.

    Raises:
        ValueError: On shape mismatch, non-finite scores or labels outside [0, K).
    """
    t, p = _check_prob(y_true, y_prob)
    aucs = [roc_auc_binary(t == k, p[:, k]) for k in range(p.shape[1])]
    defined = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(defined)) if defined else math.nan


@dataclass(frozen=True)
class ClassMetrics:
    """One-vs-rest counts and rates for one class; NaN marks an undefined rate."""

    name: str
    support: int  # positives in y_true, tp + fn
    tp: int
    fn: int
    fp: int
    tn: int
    sensitivity: float  # tp / (tp + fn); NaN if the class is absent from y_true
    specificity: float  # tn / (tn + fp); NaN if every sample is of this class
    ppv: float  # tp / (tp + fp); NaN if the class is never predicted
    f1: float  # 2tp / (2tp + fp + fn); NaN if that denominator is 0
    sensitivity_ci: tuple[float, float]  # Wilson 95%
    specificity_ci: tuple[float, float]  # Wilson 95%


def _class_metrics(cm: np.ndarray, k: int, name: str) -> ClassMetrics:
    """One-vs-rest metrics for class ``k`` of a (K, K) confusion matrix."""
    tp = int(cm[k, k])
    fn = int(cm[k, :].sum()) - tp
    fp = int(cm[:, k].sum()) - tp
    tn = int(cm.sum()) - tp - fn - fp
    return ClassMetrics(
        name=name, support=tp + fn, tp=tp, fn=fn, fp=fp, tn=tn,
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        ppv=_ratio(tp, tp + fp),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        sensitivity_ci=wilson_interval(tp, tp + fn),
        specificity_ci=wilson_interval(tn, tn + fp),
    )


# eq=False: the ndarray field makes generated __eq__/__hash__ ambiguous or unhashable.
@dataclass(frozen=True, eq=False)
class MetricsResult:
    """All metrics of one split. ``confusion`` is read-only, rows true and columns predicted."""

    labels: tuple[str, ...]
    confusion: np.ndarray
    per_class: tuple[ClassMetrics, ...]
    accuracy: float
    balanced_accuracy: float
    macro_auc: float
    n: int

    def to_rows(self, split: str) -> list[dict]:
        """Long-format rows for the metrics table (keys ``ROW_KEYS``).

        Per class: sensitivity and specificity with Wilson 95% CIs; ppv, f1 and support with
        NaN CIs. Then class ``"all"``: accuracy, balanced_accuracy, macro_auc and n (NaN CIs).
        So 5 K + 4 rows; every value is a float to match the table's float64 column.
        """
        rows = []
        for c in self.per_class:
            cis = {"sensitivity": c.sensitivity_ci, "specificity": c.specificity_ci}
            for metric in PER_CLASS_METRICS:
                rows.append(_row(split, c.name, metric, getattr(c, metric), cis.get(metric)))
        for metric in OVERALL_METRICS:
            rows.append(_row(split, ALL, metric, getattr(self, metric), None))
        return rows

    def table(self) -> pd.DataFrame:
        """Per-class table in the paper's Table 2 layout, indexed by class name."""
        data = {m: [getattr(c, m) for c in self.per_class] for m in PER_CLASS_METRICS}
        return pd.DataFrame(data, index=pd.Index(self.labels, name=S.CLASS))


def _row(split: str, cls: str, metric: str, value: float, ci: tuple[float, float] | None) -> dict:
    """One long-format row; a missing CI becomes (NaN, NaN)."""
    low, high = ci if ci is not None else _NAN_CI
    return {S.SPLIT: split, S.CLASS: cls, S.METRIC: metric,
            S.VALUE: float(value), S.CI_LOW: float(low), S.CI_HIGH: float(high)}


def compute_metrics(y_true: object, y_prob: object, labels: Sequence[str]) -> MetricsResult:
    """Confusion matrix, one-vs-rest per-class metrics, accuracy and AUCs of one split.

    The prediction is ``argmax(y_prob, axis=1)`` (the lowest index wins a tie). Balanced
    accuracy is the mean sensitivity over the classes present in ``y_true``, so a class absent
    from the split does not turn it into NaN. ``macro_auc`` follows ``macro_auc_ovr``.

    Args:
        y_true: Integer class indices, shape (N,).
        y_prob: Class probabilities, shape (N, K).
        labels: K distinct class names, in class-index order; ``"all"`` is reserved.

    Returns:
        A ``MetricsResult``.

    Raises:
        ValueError: If N == 0, on shape mismatches, bad labels or non-finite probabilities.
    """
    t, p = _check_prob(y_true, y_prob)
    names = tuple(str(x) for x in labels)
    if len(names) != p.shape[1]:
        raise ValueError(f"{len(names)} labels {names} but y_prob has {p.shape[1]} columns")
    if len(set(names)) != len(names) or ALL in names:
        raise ValueError(f"labels must be distinct and must not include {ALL!r}, got {names}")
    if t.size == 0:
        raise ValueError("cannot compute metrics on 0 samples")
    cm = confusion_matrix(t, p.argmax(axis=1), len(names))
    cm.setflags(write=False)
    per_class = tuple(_class_metrics(cm, k, name) for k, name in enumerate(names))
    present = [c.sensitivity for c in per_class if c.support > 0]
    return MetricsResult(
        labels=names, confusion=cm, per_class=per_class,
        accuracy=float(np.trace(cm)) / t.size,
        balanced_accuracy=float(np.mean(present)),
        macro_auc=macro_auc_ovr(t, p),
        n=int(t.size),
    )


# --- calibration ---------------------------------------------------------------------------
#: Equal-width confidence bins of the expected calibration error and the reliability diagram.
ECE_BINS = 15
CALIBRATION_METRICS: tuple[str, ...] = ("ece", "brier")


def brier_score(y_true: object, y_prob: object) -> float:
    """Multiclass Brier score: the mean over images of ``sum_k (p_k - [y == k])^2``.

    Brier's (1950) original definition, in [0, 2]; for two classes it is twice the binary
    score of either class. scikit-learn's ``brier_score_loss`` gives the same for multiclass.
    """
    t, p = _check_prob(y_true, y_prob)
    if t.size == 0:
        return math.nan
    return float(((p - np.eye(p.shape[1])[t]) ** 2).sum(axis=1).mean())


def brier_per_class(y_true: object, y_prob: object) -> np.ndarray:
    """One-vs-rest Brier score per class: ``mean((p_k - [y == k])^2)``, shape (K,)."""
    t, p = _check_prob(y_true, y_prob)
    return ((p - np.eye(p.shape[1])[t]) ** 2).mean(axis=0)


@dataclass(frozen=True, eq=False)
class Reliability:
    """Top-label confidence bins: edges (B + 1,), then per bin count, accuracy, confidence."""

    edges: np.ndarray
    count: np.ndarray
    accuracy: np.ndarray  # NaN for an empty bin
    confidence: np.ndarray


def reliability_bins(y_true: object, y_prob: object, bins: int = ECE_BINS) -> Reliability:
    """Bins the images by top-label confidence (max probability) into equal-width bins.

    A confidence equal to a bin's upper edge belongs to that bin (bins are ``(lo, hi]``, the
    first also holding 0), so a confidence of 1.0 lands in the last bin.
    """
    t, p = _check_prob(y_true, y_prob)
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == t).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=hit, minlength=bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=bins) / count
    return Reliability(edges, count.astype(np.int64), acc, mean_conf)


def expected_calibration_error(y_true: object, y_prob: object, bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017): ``sum_b n_b / N * |accuracy_b - confidence_b|`` over top-label
    confidence bins (see :func:`reliability_bins`)."""
    rel = reliability_bins(y_true, y_prob, bins)
    n = rel.count.sum()
    if n == 0:
        return math.nan
    full = rel.count > 0
    return float((rel.count[full] / n * np.abs(rel.accuracy[full] - rel.confidence[full])).sum())


def calibration_rows(y_true: object, y_prob: object, labels: Sequence[str],
                     split: str) -> list[dict]:
    """Metrics rows: ``ece`` and ``brier`` (class ``all``) and one-vs-rest ``brier`` per class."""
    per_class = brier_per_class(y_true, y_prob)
    rows = [_row(split, ALL, "ece", expected_calibration_error(y_true, y_prob), None),
            _row(split, ALL, "brier", brier_score(y_true, y_prob), None)]
    rows += [_row(split, str(name), "brier", float(v), None) for name, v in
             zip(labels, per_class, strict=True)]
    return rows


def split_rows(y_true: object, y_prob: object, labels: Sequence[str], split: str,
               sources: Optional[Sequence[str]] = None) -> list[dict]:
    """Every metric row of one split (classification and calibration, ``source`` null), and
    the same again per source when the split holds images of more than one source."""
    t, p = _check_prob(y_true, y_prob)
    rows = [{**r, S.SOURCE: None} for r in
            compute_metrics(t, p, labels).to_rows(split) + calibration_rows(t, p, labels, split)]
    if sources is None:
        return rows
    src = np.asarray([str(s) for s in sources], dtype=object)
    names = sorted(set(src.tolist()))
    if len(names) < 2:
        return rows
    for name in names:
        sel = src == name
        part = compute_metrics(t[sel], p[sel], labels).to_rows(split)
        part += calibration_rows(t[sel], p[sel], labels, split)
        rows += [{**r, S.SOURCE: name} for r in part]
    return rows
