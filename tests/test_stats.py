"""stats.py and the calibration metrics: checked against scipy, statsmodels, scikit-learn and
hand-computed or published values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import brier_score_loss, roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from raybench import stats
from raybench.metrics import (
    brier_per_class,
    brier_score,
    calibration_rows,
    compute_metrics,
    expected_calibration_error,
    reliability_bins,
    split_rows,
)


def noisy_probs(y: np.ndarray, k: int, skill: float, rng: np.random.Generator) -> np.ndarray:
    """Scores whose true-class column is raised by ``skill``: higher skill, better model."""
    logits = rng.normal(size=(y.size, k))
    logits[np.arange(y.size), y] += skill
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("a_only,b_only,both", [(3, 9, 20), (0, 5, 7), (12, 12, 1), (1, 0, 4)])
def test_mcnemar_exact_matches_statsmodels(a_only: int, b_only: int, both: int) -> None:
    a = np.array([True] * a_only + [False] * b_only + [True] * both + [False] * 6)
    b = np.array([False] * a_only + [True] * b_only + [True] * both + [False] * 6)
    got = stats.mcnemar_exact(a, b)
    table = [[both, a_only], [b_only, 6]]
    assert (got.only_a, got.only_b) == (a_only, b_only)
    assert got.pvalue == pytest.approx(sm_mcnemar(table, exact=True).pvalue, abs=1e-12)


def test_mcnemar_identical_models_p_is_one() -> None:
    right = np.array([True, False, True, True])
    assert stats.mcnemar_exact(right, right) == stats.McNemar(0, 0, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holm_matches_statsmodels(seed: int) -> None:
    p = np.random.default_rng(seed).uniform(0, 0.2, size=9)
    p[3] = p[5]  # a tie
    assert stats.holm(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-15)


def test_holm_leaves_nan_out_of_the_family() -> None:
    got = stats.holm([0.01, math.nan, 0.04])
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.04)


def test_delong_hand_computed_example() -> None:
    # Positives 0.9, 0.8, 0.4; negatives 0.7, 0.3. V10 = (1, 1, 1/2), V01 = (2/3, 1):
    # AUC 5/6, S10 = var(V10) = 1/12, S01 = 1/18, Var = S10/3 + S01/2 = 1/18.
    pos = np.array([1, 1, 1, 0, 0], bool)
    s = np.array([0.9, 0.8, 0.4, 0.7, 0.3])
    v10, v01 = stats.structural_components(pos, s)
    assert v10 == pytest.approx([1, 1, 0.5]) and v01 == pytest.approx([2 / 3, 1])
    other = np.array([0.1, 0.2, 0.3, 0.8, 0.9])  # AUC 0, independent of the first placements
    res = stats.delong_test(pos, s, other)
    assert res.auc_a == pytest.approx(5 / 6) and res.auc_b == 0.0
    # Model b's placements are constant (all 0), so Var(diff) = Var(AUC_a) = 1/18.
    assert res.se == pytest.approx(math.sqrt(1 / 18))
    assert res.pvalue == pytest.approx(2 * sps.norm.sf((5 / 6) / math.sqrt(1 / 18)))


def naive_components(pos: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = s[pos], s[~pos]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def test_delong_components_variance_and_auc_against_brute_force_and_sklearn() -> None:
    rng = np.random.default_rng(3)
    pos = rng.random(120) < 0.4
    a = np.round(rng.normal(size=120) + pos, 1)  # rounding makes ties
    b = np.round(rng.normal(size=120) + 2 * pos, 1)
    for s in (a, b):
        fast, naive = stats.structural_components(pos, s), naive_components(pos, s)
        assert fast[0] == pytest.approx(naive[0]) and fast[1] == pytest.approx(naive[1])
    res = stats.delong_test(pos, a, b)
    assert res.auc_a == pytest.approx(roc_auc_score(pos, a), abs=1e-12)
    assert res.auc_b == pytest.approx(roc_auc_score(pos, b), abs=1e-12)
    (xa, ya), (xb, yb) = naive_components(pos, a), naive_components(pos, b)
    m, n = pos.sum(), (~pos).sum()
    var = (np.var(xa - xb, ddof=1) / m) + (np.var(ya - yb, ddof=1) / n)  # DeLong (1988) eq.
    assert res.se == pytest.approx(math.sqrt(var), rel=1e-12)
    assert res.pvalue < 0.01  # b separates the classes clearly better


def test_delong_identical_scores_give_p_one() -> None:
    pos = np.array([1, 0, 1, 0, 1, 0], bool)
    s = np.array([0.9, 0.1, 0.4, 0.5, 0.7, 0.2])
    res = stats.delong_test(pos, s, s)
    assert (res.diff, res.se, res.pvalue) == (0.0, 0.0, 1.0)


def test_weighted_metrics_with_unit_weights_equal_compute_metrics() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 90)
    prob = noisy_probs(y, 4, 1.0, rng)
    got = stats.weighted_metrics(y, prob, np.ones((1, y.size)))
    ref = compute_metrics(y, prob, ["a", "b", "c", "d"])
    assert got["accuracy"][0] == pytest.approx(ref.accuracy, abs=1e-15)
    assert got["balanced_accuracy"][0] == pytest.approx(ref.balanced_accuracy, abs=1e-15)
    assert got["macro_auc"][0] == pytest.approx(ref.macro_auc, abs=1e-15)
    assert len(ref.per_class) == 4  # every class is checked below
    for c, cls in enumerate(ref.per_class):
        assert got[f"sensitivity:{c}"][0] == pytest.approx(cls.sensitivity, abs=1e-15)
        assert got[f"specificity:{c}"][0] == pytest.approx(cls.specificity, abs=1e-15)


def test_weighted_auc_equals_auc_of_the_expanded_sample() -> None:
    rng = np.random.default_rng(5)
    pos = rng.random(40) < 0.5
    s = np.round(rng.random(40), 1)
    w = rng.integers(0, 3, size=(3, 40)).astype(float)
    got = stats._weighted_auc(pos, s, w)
    assert len(got) == len(w) == 3  # one AUC per replicate: the loop below checks each
    for row, value in zip(w, got):
        idx = np.repeat(np.arange(40), row.astype(int))
        assert value == pytest.approx(roc_auc_score(pos[idx], s[idx]), abs=1e-12)


def _reference_weighted_auc(pos: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The previous implementation (tie groups by ``reduceat``, a cumsum along each row),
    kept here as the reference the vectorised one must reproduce."""
    order = np.argsort(scores, kind="stable")
    s_sorted = scores[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    wp = np.add.reduceat(w[:, order] * pos[order], starts, axis=1)
    wn = np.add.reduceat(w[:, order] * ~pos[order], starts, axis=1)
    below = np.cumsum(wn, axis=1) - wn
    num = (wp * (below + 0.5 * wn)).sum(axis=1)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


@pytest.mark.parametrize("case", range(60))
def test_weighted_auc_reproduces_the_reference_implementation(case: int) -> None:
    rng = np.random.default_rng([7, case])
    n, b = int(rng.integers(1, 80)), int(rng.integers(1, 12))
    pos = rng.random(n) < rng.random()  # from no positives to all positives
    s = np.round(rng.random(n), int(rng.integers(0, 3)))  # 0-2 decimals: many ties
    w = rng.integers(0, 4, (b, n)).astype(float) if case % 3 else rng.random((b, n))
    got, ref = stats._weighted_auc(pos, s, w), _reference_weighted_auc(pos, s, w)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    if case % 3:  # integer draw counts: every sum is exact, so the AUCs are equal bit for bit
        assert np.array_equal(got, ref, equal_nan=True)
    else:
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14)


def test_bootstrap_metrics_match_per_replicate_scikit_learn() -> None:
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 120)
    prob = noisy_probs(y, 3, 1.0, rng)
    w = stats.draw_counts(y.size, 5, rng)
    got = stats.weighted_metrics(y, prob, w)
    for b, row in enumerate(w):
        idx = np.repeat(np.arange(y.size), row.astype(int))
        ref = compute_metrics(y[idx], prob[idx], ["a", "b", "c"])
        assert got["accuracy"][b] == pytest.approx(ref.accuracy, abs=1e-12)
        assert got["macro_auc"][b] == pytest.approx(
            roc_auc_score(y[idx], prob[idx], multi_class="ovr"), abs=1e-12)
        for c, cls in enumerate(ref.per_class):
            assert got[f"specificity:{c}"][b] == pytest.approx(cls.specificity, abs=1e-12)


def test_paired_over_seeds_is_the_same_with_a_shared_cache() -> None:
    rng = np.random.default_rng(9)
    y = rng.integers(0, 3, 60)
    ids = np.array([f"p{i // 2}" for i in range(60)])
    models = [[noisy_probs(y, 3, skill, rng) for _ in range(3)] for skill in (0.5, 1.0, 1.5)]
    cache = stats.BootCache()
    for a, b in ((0, 1), (0, 2), (1, 2)):
        pairs = [(y, models[a][s], models[b][s], ids) for s in range(3)]
        alone = stats.paired_over_seeds(pairs, n_boot=200, seed=3)
        shared = stats.paired_over_seeds(pairs, n_boot=200, seed=3, cache=cache)
        assert alone == shared
    assert len(cache._metrics) == 9  # three models x three seeds, each computed once


def test_a_memo_shared_by_caches_scores_each_model_once_with_the_same_numbers(monkeypatch) -> None:
    rng = np.random.default_rng(10)
    y = rng.integers(0, 3, 60)
    ids = np.array([f"p{i // 2}" for i in range(60)])
    models = [[noisy_probs(y, 3, skill, rng) for _ in range(2)] for skill in (0.5, 1.0, 1.5)]
    calls = []
    real = stats._metrics_t
    monkeypatch.setattr(stats, "_metrics_t", lambda *a: calls.append(a[2].shape[1]) or real(*a))
    memo: dict = {}
    for baseline in (0, 1):  # two comparison tables one after another, each its own cache
        cache = stats.BootCache(memo)
        for other in {0, 1, 2} - {baseline}:
            pairs = [(y, models[baseline][s], models[other][s], ids) for s in range(2)]
            alone = stats.paired_over_seeds(pairs, n_boot=150, seed=4)
            assert stats.paired_over_seeds(pairs, n_boot=150, seed=4, cache=cache) == alone
    assert len(memo) == 6  # three models x two seeds
    # replicate scorings: 6 through the memo, 2 x 2 x 2 x 2 for the uncached references
    assert sum(1 for b in calls if b == 150) == 6 + 16


def test_identical_models_p_near_one_and_interval_covers_zero() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 150)
    prob = noisy_probs(y, 3, 1.0, rng)
    res = stats.paired_bootstrap(y, prob, prob.copy(), n_boot=500)
    for name in ("balanced_accuracy", "macro_auc", "sensitivity:0"):
        assert res[name].diff == 0.0 and res[name].ci_low <= 0.0 <= res[name].ci_high
        assert res[name].pvalue == 1.0


def test_clearly_better_model_gives_small_p() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 200)
    weak, strong = noisy_probs(y, 3, 0.3, rng), noisy_probs(y, 3, 3.0, rng)
    res = stats.paired_bootstrap(y, weak, strong, n_boot=1000)
    ba = res["balanced_accuracy"]
    assert ba.diff > 0.3 and ba.ci_low > 0 and ba.pvalue < 0.01
    assert stats.mcnemar_exact(weak.argmax(1) == y, strong.argmax(1) == y).pvalue < 0.01


def test_bootstrap_interval_agrees_with_scipy_bootstrap() -> None:
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 300)
    a, b = noisy_probs(y, 2, 0.5, rng), noisy_probs(y, 2, 1.5, rng)
    ours = stats.paired_bootstrap(y, a, b, n_boot=4000, seed=1)["accuracy"]
    hit_a, hit_b = (a.argmax(1) == y).astype(float), (b.argmax(1) == y).astype(float)
    ref = sps.bootstrap((hit_a, hit_b), lambda u, v, axis: v.mean(axis) - u.mean(axis),
                        paired=True, n_resamples=4000, method="percentile",
                        rng=np.random.default_rng(2))
    assert ours.diff == pytest.approx(hit_b.mean() - hit_a.mean())
    assert ours.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.012)
    assert ours.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.012)


def test_patient_bootstrap_widens_the_interval_when_images_repeat_per_patient() -> None:
    rng = np.random.default_rng(9)
    patients = 60
    y_p = rng.integers(0, 2, patients)
    a_p, b_p = noisy_probs(y_p, 2, 0.5, rng), noisy_probs(y_p, 2, 1.0, rng)
    # Each patient contributes 6 images with identical scores: maximal within-patient correlation.
    rep = np.repeat(np.arange(patients), 6)
    y, a, b = y_p[rep], a_p[rep], b_p[rep]
    by_image = stats.paired_bootstrap(y, a, b, n_boot=2000)["accuracy"]
    by_patient = stats.paired_bootstrap(y, a, b, clusters=[f"p{i}" for i in rep],
                                        n_boot=2000)["accuracy"]
    width_i = by_image.ci_high - by_image.ci_low
    width_p = by_patient.ci_high - by_patient.ci_low
    assert by_image.diff == by_patient.diff
    # Six perfectly correlated images per cluster: the width grows by about sqrt(6) = 2.45.
    assert 1.9 < width_p / width_i < 3.0


def test_draw_weights_keep_clusters_together() -> None:
    w = stats.draw_weights(["a", "a", "b", "c", "c", "c"], 6, 50, np.random.default_rng(0))
    assert w.shape == (50, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 5]).all()
    assert (w[:, [0, 2, 3]].sum(axis=1) == 3).all()  # 3 clusters drawn per replicate


def test_friedman_matches_scipy_and_demsar_critical_difference() -> None:
    rng = np.random.default_rng(10)
    x = rng.random((8, 4))
    x[:, 2] += 0.5
    res = stats.friedman_nemenyi(x, ["a", "b", "c", "d"])
    ref = sps.friedmanchisquare(*x.T)
    assert res.statistic == pytest.approx(ref.statistic) and res.pvalue == pytest.approx(ref.pvalue)
    ranks = sps.rankdata(-x, axis=1).mean(axis=0)
    assert res.mean_ranks == pytest.approx(tuple(ranks))
    assert res.mean_ranks[2] == min(res.mean_ranks)
    # Demšar (2006) Table 5a, q_0.05 for k = 2..6; CD = q sqrt(k (k + 1) / (6 N)).
    for k, q in zip(range(2, 7), (1.960, 2.343, 2.569, 2.728, 2.850)):
        assert stats.nemenyi_cd(k, 10) == pytest.approx(q * math.sqrt(k * (k + 1) / 60), abs=2e-3)


def test_friedman_needs_three_models_for_the_test() -> None:
    res = stats.friedman_nemenyi(np.array([[0.9, 0.8], [0.7, 0.6]]), ["a", "b"])
    assert res.mean_ranks == (1.0, 2.0) and math.isnan(res.pvalue)
    assert res.cd == pytest.approx(1.960 * math.sqrt(6 / 12), abs=2e-3)


# --- calibration ----------------------------------------------------------------------------

def test_brier_matches_sklearn_multiclass_and_per_class() -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 4, 80)
    prob = noisy_probs(y, 4, 1.0, rng)
    assert brier_score(y, prob) == pytest.approx(brier_score_loss(y, prob), abs=1e-15)
    per = brier_per_class(y, prob)
    for k in range(4):
        assert per[k] == pytest.approx(brier_score_loss(y == k, prob[:, k]), abs=1e-15)


def test_ece_hand_computed_example() -> None:
    # 4 bins. Confidences 0.9, 0.8 (bin (0.75, 1]; one right, one wrong: acc 0.5, conf 0.85)
    # and 0.6, 0.6 (bin (0.5, 0.75]; both right: acc 1, conf 0.6).
    # ECE = 2/4 |0.5 - 0.85| + 2/4 |1 - 0.6| = 0.175 + 0.2 = 0.375.
    prob = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(y, prob, bins=4) == pytest.approx(0.375)
    rel = reliability_bins(y, prob, bins=4)
    assert rel.count.tolist() == [0, 0, 2, 2]
    assert rel.accuracy[2:] == pytest.approx([1.0, 0.5])
    assert rel.confidence[2:] == pytest.approx([0.6, 0.85])


def test_calibration_rows_and_per_source_rows() -> None:
    rng = np.random.default_rng(12)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    prob = noisy_probs(y, 3, 2.0, rng)
    rows = calibration_rows(y, prob, ["n", "b", "v"], "test")
    assert [(r["class"], r["metric"]) for r in rows] == [
        ("all", "ece"), ("all", "brier"), ("n", "brier"), ("b", "brier"), ("v", "brier")]
    src = ["h1"] * 6 + ["h2"] * 4
    all_rows = split_rows(y, prob, ["n", "b", "v"], "test", src)
    whole = [r for r in all_rows if r["source"] is None]
    assert len(whole) == 5 * 3 + 4 + 5
    h2 = {(r["class"], r["metric"]): r["value"] for r in all_rows if r["source"] == "h2"}
    ref = compute_metrics(y[6:], prob[6:], ["n", "b", "v"])
    assert h2[("all", "accuracy")] == ref.accuracy and h2[("all", "n")] == 4.0
    assert h2[("all", "brier")] == pytest.approx(brier_score(y[6:], prob[6:]))
    assert len(split_rows(y, prob, ["n", "b", "v"], "test", ["h1"] * 10)) == len(whole)
