"""Tests for raybench.metrics against hand-computed values."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from raybench.metrics import (
    ClassMetrics,
    compute_metrics,
    confusion_matrix,
    macro_auc_ovr,
    roc_auc_binary,
    wilson_interval,
)

# Any numpy RuntimeWarning (e.g. 0/0) must not leak out of the module.
pytestmark = pytest.mark.filterwarnings("error")

# Three classes, N = 9:
#   y_true = 0 0 0 | 1 1 1 1 | 2 2
#   y_pred = 0 0 1 | 1 1 1 2 | 0 2
# Confusion (rows true, cols predicted):
#   [[2, 1, 0],
#    [0, 3, 1],
#    [1, 0, 1]]
# class 0: tp 2, fn 1, fp 1 (row 2), tn 9-2-1-1 = 5 -> sens 2/3, spec 5/6, ppv 2/3, f1 4/6
# class 1: tp 3, fn 1, fp 1 (row 0), tn 4          -> sens 3/4, spec 4/5, ppv 3/4, f1 6/8
# class 2: tp 1, fn 1, fp 1 (row 1), tn 6          -> sens 1/2, spec 6/7, ppv 1/2, f1 2/4
# accuracy = trace 6 / 9; balanced accuracy = (2/3 + 3/4 + 1/2) / 3 = 23/36.
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 1, 1, 2, 0, 2])
CM = np.array([[2, 1, 0], [0, 3, 1], [1, 0, 1]])
LABELS = ("normal", "bacteria", "viral")


def _probs(y_pred: np.ndarray, k: int, hi: float = 0.6) -> np.ndarray:
    """Probabilities whose argmax is y_pred: ``hi`` there, the rest shared evenly."""
    p = np.full((len(y_pred), k), (1.0 - hi) / (k - 1))
    p[np.arange(len(y_pred)), y_pred] = hi
    return p


def test_confusion_matrix_hand_computed():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, CM)


def test_confusion_matrix_counts_unused_classes_as_zero():
    cm = confusion_matrix([1, 1], [1, 0], 4)
    assert cm.shape == (4, 4)
    assert cm.sum() == 2 and cm[1, 1] == 1 and cm[1, 0] == 1


@pytest.mark.parametrize(
    ("y_true", "y_pred", "k", "match"),
    [
        ([0, 3], [0, 1], 3, "y_true has label 3"),
        ([0, 1], [0, -1], 3, "y_pred has label -1"),
        ([0, 1, 2], [0, 1], 3, "shape"),
        ([0.0, 1.5], [0, 1], 3, "integer"),
        ([[0, 1]], [[0, 1]], 3, "1-D"),
        ([0], [0], 0, "num_classes"),
    ],
)
def test_confusion_matrix_rejects_bad_input(y_true, y_pred, k, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(y_true, y_pred, k)


def test_wilson_8_of_10_matches_published_value():
    # p = 0.8, n = 10, z^2 = 3.8415: centre = (0.8 + 0.19208) / 1.38415 = 0.71680,
    # half = 1.96 * sqrt(0.016 + 0.0096) / 1.38415 = 0.22656 -> (0.4902, 0.9433).
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=5e-5)
    assert high == pytest.approx(0.9433, abs=5e-5)


def test_wilson_edges():
    z = 1.959963984540054
    # At p = 0 the interval is [0, z^2 / (n + z^2)]; at p = 1 it mirrors to [n / (n + z^2), 1].
    assert wilson_interval(0, 10) == pytest.approx((0.0, z * z / (10 + z * z)))
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z * z), 1.0))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_auc_with_ties_is_075():
    # Negatives score 0.3 and 0.5, positives 0.5 and 0.5. Of the 4 (pos, neg) pairs each
    # positive beats 0.3 (1) and ties 0.5 (1/2): (1.5 + 1.5) / 4 = 0.75.
    assert roc_auc_binary([False, False, True, True], [0.3, 0.5, 0.5, 0.5]) == 0.75


@pytest.mark.parametrize(
    ("y", "s", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),
        ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),
        # Pairs: pos 0.4 beats 0.1, loses to 0.8; pos 0.9 beats both -> 3/4.
        ([0, 1, 0, 1], [0.1, 0.4, 0.8, 0.9], 0.75),
    ],
)
def test_auc_simple_cases(y, s, expected):
    assert roc_auc_binary(np.array(y, dtype=bool), s) == pytest.approx(expected)


def test_auc_nan_with_one_class_and_rejects_bad_scores():
    assert math.isnan(roc_auc_binary([True, True], [0.1, 0.9]))
    assert math.isnan(roc_auc_binary([], []))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc_binary([True, False], [0.1, np.nan])
    with pytest.raises(ValueError, match="shape"):
        roc_auc_binary([True, False], [0.1, 0.2, 0.3])


def test_compute_metrics_three_classes():
    r = compute_metrics(Y_TRUE, _probs(Y_PRED, 3), LABELS)
    np.testing.assert_array_equal(r.confusion, CM)
    assert r.n == 9
    assert r.accuracy == pytest.approx(6 / 9)
    assert r.balanced_accuracy == pytest.approx(23 / 36)
    expected = {  # (tp, fn, fp, tn, sens, spec, ppv, f1), see the header comment
        "normal": (2, 1, 1, 5, 2 / 3, 5 / 6, 2 / 3, 4 / 6),
        "bacteria": (3, 1, 1, 4, 3 / 4, 4 / 5, 3 / 4, 6 / 8),
        "viral": (1, 1, 1, 6, 1 / 2, 6 / 7, 1 / 2, 2 / 4),
    }
    for c in r.per_class:
        tp, fn, fp, tn, sens, spec, ppv, f1 = expected[c.name]
        assert (c.tp, c.fn, c.fp, c.tn, c.support) == (tp, fn, fp, tn, tp + fn)
        assert (c.sensitivity, c.specificity, c.ppv, c.f1) == pytest.approx((sens, spec, ppv, f1))
        assert c.sensitivity_ci == wilson_interval(tp, tp + fn)
        assert c.specificity_ci == wilson_interval(tn, tn + fp)


def test_macro_auc_three_classes():
    # Each score column takes only two values (0.6 where predicted, 0.2 elsewhere), so each
    # one-vs-rest AUC is (sens + spec) / 2: class 0 -> (2/3 + 5/6) / 2 = 0.75, which pairs
    # confirm: positives .6,.6,.2 vs negatives five .2 and one .6 -> (2*(5 + .5) + 5*.5) / 18.
    # Class 1 -> (3/4 + 4/5) / 2 = 0.775; class 2 -> (1/2 + 6/7) / 2 = 19/28.
    expected = (0.75 + 0.775 + 19 / 28) / 3
    assert macro_auc_ovr(Y_TRUE, _probs(Y_PRED, 3)) == pytest.approx(expected)
    assert compute_metrics(Y_TRUE, _probs(Y_PRED, 3), LABELS).macro_auc == pytest.approx(expected)


def test_absent_class():
    # K = 4; y_true = 0 0 1 1, y_pred = 0 2 1 1. Class 2 is absent but predicted once,
    # class 3 is absent and never predicted.
    # class 2: tp 0, fn 0 -> sens NaN; fp 1, tn 3 -> spec 3/4; ppv 0/1 = 0; f1 0/(0+1+0) = 0.
    # class 3: all zero but tn 4 -> sens NaN, spec 1, ppv NaN, f1 NaN (0/0).
    # balanced accuracy over present classes: (1/2 + 2/2) / 2 = 3/4; accuracy 3/4.
    # AUC: class 0 positives .55, .15 vs negatives .15, .15 -> (2 + 2*.5) / 4 = 3/4;
    # class 1 positives .55, .55 vs negatives (rows 0 and 1) .15, .15 -> 1.
    # Classes 2 and 3 have no positives and are skipped: macro AUC (3/4 + 1) / 2 = 7/8.
    y_true = np.array([0, 0, 1, 1])
    r = compute_metrics(y_true, _probs(np.array([0, 2, 1, 1]), 4, hi=0.55), "abcd")
    c2, c3 = r.per_class[2], r.per_class[3]
    assert math.isnan(c2.sensitivity) and all(math.isnan(v) for v in c2.sensitivity_ci)
    assert c2.specificity == pytest.approx(3 / 4)
    assert math.isfinite(c2.specificity_ci[0]) and math.isfinite(c2.specificity_ci[1])
    assert (c2.ppv, c2.f1, c2.support) == (0.0, 0.0, 0)
    assert math.isnan(c3.sensitivity) and math.isnan(c3.ppv) and math.isnan(c3.f1)
    assert c3.specificity == 1.0
    assert r.balanced_accuracy == pytest.approx(3 / 4)
    assert r.accuracy == pytest.approx(3 / 4)
    assert r.macro_auc == pytest.approx(7 / 8)


def test_macro_auc_nan_when_no_class_defined():
    assert math.isnan(macro_auc_ovr([1, 1, 1], _probs(np.array([0, 1, 1]), 2)))


def test_argmax_tie_picks_lowest_index():
    r = compute_metrics([1], [[0.5, 0.5]], ("a", "b"))
    np.testing.assert_array_equal(r.confusion, [[0, 0], [1, 0]])


def test_to_rows_layout():
    r = compute_metrics(Y_TRUE, _probs(Y_PRED, 3), LABELS)
    rows = r.to_rows("test")
    assert len(rows) == 5 * 3 + 4
    keys = ["split", "class", "metric", "value", "ci_low", "ci_high"]
    assert all(list(row) == keys for row in rows)
    assert {row["split"] for row in rows} == {"test"}
    by_key = {(row["class"], row["metric"]): row for row in rows}
    assert len(by_key) == len(rows)
    sens = by_key[("normal", "sensitivity")]
    assert sens["value"] == pytest.approx(2 / 3)
    assert (sens["ci_low"], sens["ci_high"]) == wilson_interval(2, 3)
    spec = by_key[("viral", "specificity")]
    assert (spec["ci_low"], spec["ci_high"]) == wilson_interval(6, 7)
    for metric in ("ppv", "f1", "support"):
        assert math.isnan(by_key[("bacteria", metric)]["ci_low"])
        assert math.isnan(by_key[("bacteria", metric)]["ci_high"])
    assert by_key[("bacteria", "support")]["value"] == 4.0
    assert by_key[("all", "accuracy")]["value"] == pytest.approx(6 / 9)
    assert by_key[("all", "balanced_accuracy")]["value"] == pytest.approx(23 / 36)
    assert by_key[("all", "n")]["value"] == 9.0
    assert ("all", "macro_auc") in by_key
    assert all(isinstance(row["value"], float) for row in rows)


def test_table_layout():
    t = compute_metrics(Y_TRUE, _probs(Y_PRED, 3), LABELS).table()
    assert list(t.index) == list(LABELS)
    assert list(t.columns) == ["sensitivity", "specificity", "ppv", "f1", "support"]
    assert t.loc["viral", "specificity"] == pytest.approx(6 / 7)
    assert t.loc["bacteria", "support"] == 4


def test_results_are_frozen():
    r = compute_metrics(Y_TRUE, _probs(Y_PRED, 3), LABELS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.accuracy = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.per_class[0].tp = 0  # type: ignore[misc]
    with pytest.raises(ValueError):
        r.confusion[0, 0] = 99
    assert isinstance(r.per_class[0], ClassMetrics)


@pytest.mark.parametrize(
    ("y_true", "y_prob", "labels", "match"),
    [
        ([], np.zeros((0, 2)), ("a", "b"), "0 samples"),
        ([0, 1], [[0.5, 0.5]], ("a", "b"), "2 samples"),
        ([0, 1], [0.5, 0.5], ("a", "b"), "2-D"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ("a", "b", "c"), "3 labels"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], ("a", "b"), "outside"),
        ([0, 1], [[0.5, 0.5], [0.5, np.nan]], ("a", "b"), "NaN"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ("a", "a"), "distinct"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ("a", "all"), "distinct"),
    ],
)
def test_compute_metrics_rejects_bad_input(y_true, y_prob, labels, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(y_true, y_prob, labels)
