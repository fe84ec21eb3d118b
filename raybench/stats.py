"""Paired model comparison on the same test images, and rank tests across many models.

- :func:`paired_bootstrap`: the difference of two models' metrics with a percentile interval,
  resampling *patients* (clusters) when patient ids are known, else images. Images of one
  patient are not independent (same anatomy, same device), so resampling them one by one
  understates the uncertainty.
- :func:`mcnemar_exact`: the exact McNemar test on per-image correctness (a binomial test on
  the discordant pairs, ``scipy.stats.binomtest``).
- :func:`delong_test`: DeLong, DeLong & Clarke-Pearson (1988) for two correlated ROC AUCs.
- :func:`holm`: Holm's step-down adjustment of a family of p-values.
- :func:`friedman_nemenyi`: mean ranks, the Friedman test (``scipy.stats``) and the Nemenyi
  critical difference of Demšar (2006).
- :func:`mean_interval` and :func:`t95`: the mean of per-seed values with a Student t interval.
  :data:`Z_95` is the one spelling of the normal 0.975 quantile in raybench.

All functions take numpy arrays: ``y`` integer class indices (N,), ``prob`` (N, K) scores.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

#: Two-sided 95% normal quantile, ``Phi^-1(0.975)`` (Wilson, DeLong and t intervals use it).
Z_95 = 1.959963984540054
#: Two-sided 95% Student t quantiles for 1..30 degrees of freedom.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
#: Metric names :func:`weighted_metrics` returns; per-class ones are ``<metric>:<class index>``.
OVERALL_STATS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_auc")
CLASS_STATS: tuple[str, ...] = ("sensitivity", "specificity", "auc")
#: Every metric here is a proportion (or an AUC) in [0, 1], so a difference of two lies in
#: [-1, 1]; an interval is clipped to its quantity's range.
RATE_BOUNDS = (0.0, 1.0)
DIFF_BOUNDS = (-1.0, 1.0)


def clip(low: float, high: float, bounds: Optional[tuple[float, float]]) -> tuple[float, float]:
    """``(low, high)`` within ``bounds`` (unchanged when None; NaN stays NaN)."""
    if bounds is None:
        return low, high
    return (low if math.isnan(low) else max(bounds[0], low),
            high if math.isnan(high) else min(bounds[1], high))


def t95(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom."""
    if dof < 1:
        return math.nan
    if dof <= len(_T95):
        return _T95[dof - 1]
    return Z_95 + (Z_95 ** 3 + Z_95) / (4 * dof)  # Cornish-Fisher, within 1e-3 beyond 30 dof


def mean_interval(values: Sequence[float], low: Sequence[float] = (),
                  high: Sequence[float] = (),
                  bounds: Optional[tuple[float, float]] = None) -> tuple[float, float, float]:
    """Mean and 95% interval of per-seed values.

    With two or more seeds: mean +- t * sd / sqrt(n), clipped to ``bounds``. With one seed
    there is no spread to measure, so the run's own interval (``low``/``high``, Wilson on the
    test counts) is used.
    """
    x = np.asarray([v for v in values if v is not None and v == v], dtype=float)  # NaN != NaN
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if x.size == 1:
        lo = float(low[0]) if len(low) else math.nan
        hi = float(high[0]) if len(high) else math.nan
        return float(x[0]), lo, hi
    half = t95(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    low_, high_ = clip(float(x.mean() - half), float(x.mean() + half), bounds)
    return float(x.mean()), low_, high_


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs and the exact two-sided p-value."""

    only_a: int  # images model A gets right and model B wrong
    only_b: int
    pvalue: float


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact McNemar test: under H0 each discordant image is A's or B's with probability 1/2.

    Args:
        correct_a: Boolean (N,), model A right per image.
        correct_b: Boolean (N,), model B right on the same images.

    Returns:
        The counts and p-value; p = 1 when the models never disagree.
    """
    from scipy import stats as sps
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"correctness vectors differ in shape: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return McNemar(0, 0, 1.0)
    p = sps.binomtest(only_a, only_a + only_b, 0.5).pvalue
    return McNemar(only_a, only_b, float(min(1.0, p)))


def holm(pvalues: "Sequence[float] | np.ndarray") -> np.ndarray:
    """Holm (1979) step-down adjusted p-values; NaN entries stay NaN and are not counted.

    The i-th smallest of m p-values is multiplied by (m - i + 1), then a running maximum
    keeps the adjusted values in the order of the raw ones, capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def structural_components(pos: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's placements: V10 (one per positive) and V01 (one per negative).

    ``V10_i`` is the share of negatives scored below positive i (ties count 1/2); ``V01_j``
    the share of positives scored above negative j. Both average to the AUC.
    """
    from scipy import stats as sps
    pos = np.asarray(pos, bool)
    s = np.asarray(scores, float)
    x, y = s[pos], s[~pos]
    # Midranks make this O(N log N): rank among all minus rank among its own group.
    r_all = sps.rankdata(s)
    v10 = (r_all[pos] - sps.rankdata(x)) / y.size
    v01 = 1.0 - (r_all[~pos] - sps.rankdata(y)) / x.size
    return v10, v01


@dataclass(frozen=True)
class DeLong:
    """Two correlated AUCs, their difference, its standard error, z and two-sided p."""

    auc_a: float
    auc_b: float
    diff: float  # auc_b - auc_a
    se: float
    z: float
    pvalue: float
    ci_low: float
    ci_high: float


def delong_test(pos: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DeLong:
    """DeLong's test of ``AUC_b - AUC_a`` for two models scored on the same images.

    Args:
        pos: Boolean (N,) positives (one-vs-rest: true label is the class).
        scores_a: Model A's scores (N,) for the positive class.
        scores_b: Model B's scores (N,).

    Returns:
        A :class:`DeLong`; NaN fields when a class has no positives or no negatives; p = 1
        and a zero-width interval when the two models' placements are identical.
    """
    from scipy import stats as sps
    pos = np.asarray(pos, bool)
    m, n = int(pos.sum()), int((~pos).sum())
    if m < 2 or n < 2:
        return DeLong(*(math.nan,) * 8)
    v10 = np.vstack([structural_components(pos, s)[0] for s in (scores_a, scores_b)])
    v01 = np.vstack([structural_components(pos, s)[1] for s in (scores_a, scores_b)])
    cov = np.cov(v10) / m + np.cov(v01) / n  # (2, 2)
    auc = v10.mean(axis=1)
    diff = float(auc[1] - auc[0])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    if se == 0.0:
        z, p = (0.0, 1.0) if diff == 0.0 else (math.copysign(math.inf, diff), 0.0)
    else:
        z = diff / se
        p = float(2 * sps.norm.sf(abs(z)))
    half = Z_95 * se
    low, high = clip(diff - half, diff + half, DIFF_BOUNDS)
    return DeLong(float(auc[0]), float(auc[1]), diff, se, z, p, low, high)


def _pairs_below(wt: np.ndarray, run_idx: np.ndarray, other_idx: np.ndarray,
                 scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per replicate: the weighted count of (run, other) image pairs with the run image
    scored below the other one (a tie counts one half), and each group's total weight.

    ``wt`` is (N, B), one row of B replicate weights per image. The images ``run_idx`` add
    their rows to a running sum in score order (contiguous vector additions); each image of
    the other group reads the sums just below and at its score, gathered for all of them at
    once by one sparse product, and a row-wise dot product gives all B counts.
    """
    from scipy import sparse
    order = run_idx[np.argsort(scores[run_idx], kind="stable")]
    run = np.zeros((order.size + 1, wt.shape[1]))
    for j, i in enumerate(order):
        np.add(run[j], wt[i], out=run[j + 1])
    s_run, at = scores[order], scores[other_idx]
    lo = np.searchsorted(s_run, at, side="left")
    hi = np.searchsorted(s_run, at, side="right")
    m = other_idx.size
    pick = sparse.csr_array(  # rows 0..R: half-weights at lo and hi; row R + 1: the total
        (np.r_[np.full(2 * m, 0.5), np.ones(m)],
         (np.r_[lo, hi, np.full(m, order.size + 1)], np.tile(other_idx, 3))),
        shape=(order.size + 2, wt.shape[0]))
    other = pick @ wt
    return np.einsum("kb,kb->b", run, other[:-1]), run[-1], other[-1]


def _auc_t(pos: np.ndarray, scores: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """:func:`_weighted_auc` from the transposed weights ``wt`` (N, B)."""
    pos = np.asarray(pos, bool)
    s = np.asarray(scores, float)
    p_idx, n_idx = np.flatnonzero(pos), np.flatnonzero(~pos)
    if p_idx.size > n_idx.size:  # the running sum goes over the smaller group
        num, wn_tot, wp_tot = _pairs_below(wt, n_idx, p_idx, s)
    else:  # pairs with the positive above = all pairs - pairs with the positive below
        below, wp_tot, wn_tot = _pairs_below(wt, p_idx, n_idx, s)
        num = wp_tot * wn_tot - below
    den = wp_tot * wn_tot
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _weighted_auc(pos: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC of one class under B weightings of the images: ``w`` (B, N) -> (B,).

    An integer weight is how often the bootstrap drew the image, so this equals the
    Mann-Whitney AUC of the resampled set. One sort serves all B replicates: each image of
    the smaller group adds its B weights to a running sum in score order, and a product of
    the other group's weights with the sums below their scores gives every replicate's
    numerator at once.
    """
    return _auc_t(pos, scores, np.ascontiguousarray(np.asarray(w, float).T))


def _class_sums(y: np.ndarray, predicted: np.ndarray, k: int, wt: np.ndarray) -> np.ndarray:
    """(3K + 2, B) sums of the weights ``wt`` (N, B) in one pass: true positives, support and
    calls per class, then hits and the total (a sparse product: no threads, no copies)."""
    from scipy import sparse
    n = y.size
    rows = np.r_[np.where(predicted == y, y, -1), k + y, 2 * k + predicted,
                 np.where(predicted == y, 3 * k, -1), np.full(n, 3 * k + 1)]
    cols = np.tile(np.arange(n), 5)
    keep = rows >= 0
    pick = sparse.csr_array((np.ones(int(keep.sum())), (rows[keep], cols[keep])),
                            shape=(3 * k + 2, n))
    return pick @ wt


def _rates(sums: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, specificity), each (B, K), from :func:`_class_sums`."""
    tp, support, called, total = sums[:k].T, sums[k:2 * k].T, sums[2 * k:3 * k].T, sums[-1:].T
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / support, (total - support - (called - tp)) / (total - support)


def weighted_rates(y: np.ndarray, predicted: np.ndarray, k: int, w: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest sensitivity and specificity of ``k`` classes under weightings ``w`` (B, N):
    two (B, K) arrays, NaN where a class has no positives (or no negatives)."""
    wt = np.ascontiguousarray(np.asarray(w, float).T)
    return _rates(_class_sums(np.asarray(y), np.asarray(predicted), k, wt), k)


def weighted_metrics(y: np.ndarray, prob: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro AUC and per-class sensitivity / specificity / AUC.

    With ``w = np.ones((1, N))`` these equal :func:`raybench.metrics.compute_metrics`; a
    bootstrap passes one row of draw counts per replicate.

    Args:
        y: Integer labels (N,).
        prob: Scores (N, K); the prediction is the argmax.
        w: Non-negative weights (B, N).

    Returns:
        Name -> (B,) values; per-class names are ``sensitivity:k``, ``specificity:k``, ``auc:k``.
    """
    return _metrics_t(y, prob, np.ascontiguousarray(np.asarray(w, float).T))


def _metrics_t(y: np.ndarray, prob: np.ndarray, wt: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`weighted_metrics` from the transposed weights ``wt`` (N, B)."""
    k = prob.shape[1]
    sums = _class_sums(y, prob.argmax(axis=1), k, wt)
    sens, spec = _rates(sums, k)
    support = sums[k:2 * k].T
    aucs = np.column_stack([_auc_t(y == c, prob[:, c], wt) for c in range(k)])
    with warnings.catch_warnings():  # a replicate without any defined AUC is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {"accuracy": sums[3 * k] / sums[3 * k + 1],
               "balanced_accuracy": np.nanmean(np.where(support > 0, sens, np.nan), axis=1),
               "macro_auc": np.nanmean(aucs, axis=1)}
    for c in range(k):
        out[f"sensitivity:{c}"], out[f"specificity:{c}"] = sens[:, c], spec[:, c]
        out[f"auc:{c}"] = aucs[:, c]
    return out


def draw_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n): how often each of ``n`` units is drawn when a replicate draws ``n`` of
    them with replacement (a transposed view of :func:`draw_counts_t`)."""
    return draw_counts_t(n, n_boot, rng).T


def draw_counts_t(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n, n_boot): :func:`draw_counts` laid out one row per unit, the layout the AUC reads."""
    picks = rng.integers(0, n, size=(n_boot, n)) * n_boot + np.arange(n_boot)[:, None]
    return np.bincount(picks.reshape(-1), minlength=n_boot * n).reshape(n, n_boot).astype(float)


def cluster_codes(clusters: "Optional[Sequence[str] | np.ndarray]", n: int
                  ) -> tuple[np.ndarray, int]:
    """(codes (n,), number of clusters): a cluster index per image, or one cluster per image
    when ``clusters`` is None."""
    if clusters is None:
        return np.arange(n), n
    _, codes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    codes = codes.reshape(-1)
    return codes, int(codes.max()) + 1 if codes.size else 0


def draw_weights(clusters: "Optional[Sequence[str] | np.ndarray]", n: int, n_boot: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) draw counts: each replicate draws as many clusters as there are, with
    replacement, and every image of a drawn cluster counts once per draw."""
    codes, n_clusters = cluster_codes(clusters, n)
    return draw_counts(n_clusters, n_boot, rng)[:, codes]


@dataclass(frozen=True)
class Bootstrap:
    """Point difference (B - A), percentile 95% interval and two-sided bootstrap p-value."""

    value_a: float
    value_b: float
    diff: float
    ci_low: float
    ci_high: float
    pvalue: float
    n_boot: int


def _summarise(a0: float, b0: float, d: np.ndarray) -> Bootstrap:
    """Percentile interval of the replicate differences; p from the share on each side of 0."""
    d = d[np.isfinite(d)]
    if d.size == 0 or math.isnan(a0) or math.isnan(b0):
        return Bootstrap(a0, b0, b0 - a0, math.nan, math.nan, math.nan, int(d.size))
    low, high = np.percentile(d, [2.5, 97.5])
    # (count + 1) / (B + 1): never exactly 0 from a finite number of replicates.
    side = min(int((d <= 0).sum()), int((d >= 0).sum()))
    p = min(1.0, 2 * (side + 1) / (d.size + 1))
    return Bootstrap(a0, b0, b0 - a0, float(low), float(high), p, int(d.size))


def paired_bootstrap(y: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray,
                     clusters: "Optional[Sequence[str] | np.ndarray]" = None, n_boot: int = 2000,
                     seed: int = 0) -> dict[str, Bootstrap]:
    """Every :func:`weighted_metrics` metric of model B minus model A, paired bootstrap.

    Both models are scored on the same resampled images in each replicate, so what the two
    share (hard images, easy patients) cancels out of the difference.

    Args:
        y: Integer labels (N,).
        prob_a: Model A's scores (N, K); ``prob_b`` likewise for model B.
        clusters: Patient id per image (N,), or None to resample images.
        n_boot: Replicates.
        seed: Seed of the resampling (the same seed gives the same interval).

    Returns:
        Metric name -> :class:`Bootstrap`.
    """
    y = np.asarray(y, dtype=np.int64)
    pa, pb = np.asarray(prob_a, float), np.asarray(prob_b, float)
    if pa.shape != pb.shape or pa.shape[0] != y.shape[0]:
        raise ValueError(f"shapes differ: y {y.shape}, prob_a {pa.shape}, prob_b {pb.shape}")
    w = draw_weights(clusters, y.size, n_boot, np.random.default_rng(seed))
    ones = np.ones((1, y.size))
    point_a, point_b = weighted_metrics(y, pa, ones), weighted_metrics(y, pb, ones)
    boot_a, boot_b = weighted_metrics(y, pa, w), weighted_metrics(y, pb, w)
    return {name: _summarise(float(point_a[name][0]), float(point_b[name][0]),
                             boot_b[name] - boot_a[name]) for name in point_a}


@dataclass(frozen=True)
class SeedInterval:
    """The mean over seeds of a per-seed value with its two-level bootstrap 95% interval."""

    value: float
    ci_low: float
    ci_high: float
    pvalue: float  # two-sided, against a value of 0 (meaningful for differences)
    seeds: int
    dof: float  # Welch-Satterthwaite degrees of freedom of the t expansion (inf: none)
    n_boot: int


def _seed_deviation(rep: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(all-seed mean, seed deviation) per replicate from per-seed values ``rep`` (B, S).

    The deviation is the mean over S seeds drawn with replacement minus the mean over all,
    scaled by sqrt(S / (S - 1)) so that its variance estimates var(seed) / S without the
    plug-in bias (half the variance at 2 seeds). Zero with one seed.
    """
    finite = np.isfinite(rep)
    vals = np.where(finite, rep, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        every = vals.sum(axis=1) / finite.sum(axis=1)
        s = rep.shape[1]
        if s < 2:
            return every, np.zeros_like(every)
        c = draw_counts(s, rep.shape[0], rng) * finite
        drawn = (vals * c).sum(axis=1) / c.sum(axis=1)
    return every, math.sqrt(s / (s - 1)) * (drawn - every)


def _t_expansion(every: np.ndarray, dev: np.ndarray, seeds: int) -> tuple[float, float]:
    """(factor, dof): the Student t quantile over z for the Welch-Satterthwaite degrees of
    freedom of var(patients) + var(seeds), the seed part estimated from ``seeds - 1`` dof."""
    from scipy import stats as sps
    v_seed, v_patients = float(np.var(dev)), float(np.var(every))
    if seeds < 2 or v_seed == 0.0:
        return 1.0, math.inf
    dof = (v_seed + v_patients) ** 2 / (v_seed ** 2 / (seeds - 1))
    return float(sps.t.ppf(0.975, dof)) / Z_95, dof


def two_level_interval(point: np.ndarray, per_seed: np.ndarray, rng: np.random.Generator,
                       bounds: Optional[tuple[float, float]] = None) -> SeedInterval:
    """Mean over seeds and its 95% interval from a two-level bootstrap (seeds, then patients).

    Args:
        point: Each seed's value (S,) on its own images; NaN seeds are left out.
        per_seed: The same values on B patient draws (B, S), one draw shared by all seeds.
        rng: Draws the seeds.
        bounds: Clip the interval (a proportion stays within [0, 1]).

    Returns:
        A :class:`SeedInterval`: the percentile interval of (patient draw + bias-corrected
        seed draw), widened about the mean by t(dof) / z, the Welch-Satterthwaite dof of the
        two variance parts (a seed spread measured on 2 seeds has 1 dof).
    """
    keep = np.isfinite(np.asarray(point, float))
    x, rep = np.asarray(point, float)[keep], np.asarray(per_seed, float)[:, keep]
    if x.size == 0:
        return SeedInterval(*(math.nan,) * 4, 0, math.nan, 0)
    every, dev = _seed_deviation(rep, rng)
    ok = np.isfinite(every) & np.isfinite(dev)
    every, dev = every[ok], dev[ok]
    est = float(x.mean())
    if every.size == 0:
        return SeedInterval(est, math.nan, math.nan, math.nan, int(x.size), math.nan, 0)
    factor, dof = _t_expansion(every, dev, int(x.size))
    spread = est + factor * (every + dev - est)  # the replicates, widened about the mean
    low, high = (float(v) for v in np.percentile(spread, [2.5, 97.5]))
    side = min(int((spread <= 0).sum()), int((spread >= 0).sum()))
    p = min(1.0, 2 * (side + 1) / (spread.size + 1))
    low, high = clip(low, high, bounds)
    return SeedInterval(est, low, high, p, int(x.size), dof, int(spread.size))


def shared_weights(clusters: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator
                   ) -> list[np.ndarray]:
    """One patient draw for every seed: per seed (n_boot, N_s) draw counts of its images.

    ``clusters`` holds each seed's cluster ids (patient ids, else image ids); a patient scored
    by several seeds is drawn as often in all of them, so what the seeds share cancels.
    """
    return [wt.T for wt in shared_weights_t(clusters, n_boot, rng)]


def shared_weights_t(clusters: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator
                     ) -> list[np.ndarray]:
    """:func:`shared_weights` as per-seed (N_s, n_boot) arrays, one row per image."""
    every = np.concatenate([np.asarray(c).astype(str) for c in clusters])
    codes, n = cluster_codes(every, every.size)
    counts = draw_counts_t(n, n_boot, rng)
    ends = np.cumsum([len(c) for c in clusters])[:-1]
    return [counts[part] for part in np.split(codes, ends)]


def rates_over_seeds(seeds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int,
                     n_boot: int = 2000, seed: int = 0) -> dict[str, list[SeedInterval]]:
    """Per-class sensitivity and specificity, mean over seeds, two-level bootstrap intervals.

    Args:
        seeds: Per seed ``(y, predicted, clusters)``: labels and predicted class indices (N_s,)
            and each image's patient id (else image id).
        k: Number of classes.
        n_boot: Replicates.
        seed: Seed of the resampling.

    Returns:
        ``{"sensitivity": [one SeedInterval per class], "specificity": [...]}``.
    """
    rng = np.random.default_rng(seed)
    cells = rate_cells(seeds, k, n_boot, rng)
    return {name: [two_level_interval(pt, bt, rng, RATE_BOUNDS) for pt, bt in per_class]
            for name, per_class in cells.items()}


def rate_cells(seeds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int,
               n_boot: int, rng: np.random.Generator
               ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per rate and class: each seed's value (S,) and its values on shared patient draws
    (B, S), what :func:`rates_over_seeds` and a study-wide pooled interval start from."""
    wts = shared_weights_t([c for _, _, c in seeds], n_boot, rng)
    point = [_rates(_class_sums(y, p, k, np.ones((len(y), 1))), k) for y, p, _ in seeds]
    boot = [_rates(_class_sums(y, p, k, wt), k) for (y, p, _), wt in zip(seeds, wts, strict=True)]
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for i, name in enumerate(("sensitivity", "specificity")):
        pt = np.stack([pp[i][0] for pp in point], axis=1)  # (K, S)
        bt = np.stack([bb[i] for bb in boot], axis=2)  # (B, K, S)
        out[name] = [(pt[c], bt[:, c, :]) for c in range(k)]
    return out


@dataclass(frozen=True)
class PairedSeeds:
    """Model B minus model A over seeds: the mean of each, and the difference's interval."""

    value_a: float
    value_b: float
    diff: SeedInterval


def _digest(*arrays: np.ndarray) -> str:
    """A content key for arrays (their dtype, shape and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class BootCache:
    """Replicate weights and per-model replicate metrics shared by the comparisons of one
    study: a model meets every other model on the same seeds' images with the same patient
    draws, so its bootstrap metrics are computed once, not once per pair. The numbers are
    the same with or without it (the generator's state after the draw is cached too).

    ``memo`` keeps the replicate metrics by content (the draw's key, the seed's place in it,
    the scores) beyond this cache: comparisons of one study made one after another (the
    findings' and the report's ranking) then score each model once; the draws themselves are
    not kept beyond this cache (they are large and quick to redraw)."""

    def __init__(self, memo: Optional[dict] = None) -> None:
        self._weights: dict[tuple, tuple[list[np.ndarray], Any]] = {}
        self._metrics: dict[tuple, dict[str, np.ndarray]] = {} if memo is None else memo
        self._draw: dict[int, tuple] = {}  # id of a held weight array -> (draw key, seed)

    def weights(self, units: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator
                ) -> list[np.ndarray]:
        """:func:`shared_weights_t`, drawn once per set of units, size and generator state."""
        key = (_digest(*(np.asarray(u).astype(str) for u in units)), n_boot,
               repr(rng.bit_generator.state))
        if key not in self._weights:
            ws = shared_weights_t(units, n_boot, rng)
            self._weights[key] = (ws, rng.bit_generator.state)
            self._draw.update({id(w): (key, i) for i, w in enumerate(ws)})
        ws, state = self._weights[key]
        rng.bit_generator.state = state
        return ws

    def metrics(self, y: np.ndarray, prob: np.ndarray, wt: np.ndarray
                ) -> dict[str, np.ndarray]:
        """:func:`weighted_metrics` of one model's scores under one seed's weights ``wt``."""
        draw = self._draw.get(id(wt))  # weights drawn here: known by content across caches
        key = (draw if draw is not None else ("local", id(self), id(wt)), _digest(y, prob))
        if key not in self._metrics:
            self._metrics[key] = _metrics_t(y, prob, wt)
        return self._metrics[key]


@dataclass(frozen=True)
class PairedCell:
    """B minus A on each seed: both models' means, the per-seed differences (S,) and the
    differences on B shared patient draws (B, S)."""

    value_a: float
    value_b: float
    point: np.ndarray
    per_seed: np.ndarray


def paired_cells(pairs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                 n_boot: int, rng: np.random.Generator, cache: Optional[BootCache] = None
                 ) -> dict[str, PairedCell]:
    """Every :func:`weighted_metrics` metric of B minus A per seed and per patient draw: what
    :func:`paired_over_seeds` (one pair) and a study-wide pooled interval start from."""
    cache = cache if cache is not None else BootCache()
    wts = cache.weights([p[3] for p in pairs], n_boot, rng)
    a0: dict[str, list[float]] = {}
    b0: dict[str, list[float]] = {}
    boot: dict[str, list[np.ndarray]] = {}
    for (y, pa, pb, _), wt in zip(pairs, wts, strict=True):
        ones = np.ones((len(y), 1))
        pa0, pb0 = _metrics_t(y, pa, ones), _metrics_t(y, pb, ones)
        ba, bb = cache.metrics(y, pa, wt), cache.metrics(y, pb, wt)
        for name in pa0:
            a0.setdefault(name, []).append(float(pa0[name][0]))
            b0.setdefault(name, []).append(float(pb0[name][0]))
            boot.setdefault(name, []).append(bb[name] - ba[name])
    with warnings.catch_warnings():  # a metric undefined in every seed is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return {name: PairedCell(float(np.nanmean(a0[name])), float(np.nanmean(b0[name])),
                                 np.subtract(b0[name], a0[name]), np.column_stack(boot[name]))
                for name in a0}


def paired_over_seeds(pairs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                      n_boot: int = 2000, seed: int = 0,
                      cache: Optional[BootCache] = None) -> dict[str, PairedSeeds]:
    """Every :func:`weighted_metrics` metric of B minus A, over seeds (two-level bootstrap).

    Args:
        pairs: Per seed ``(y, prob_a, prob_b, clusters)`` on the images both models scored
            with that seed; the class columns are the same in every pair.
        n_boot: Replicates.
        seed: Seed of the resampling.
        cache: Shares each model's replicate metrics between the pairs of one study.
    """
    rng = np.random.default_rng(seed)
    cells = paired_cells(pairs, n_boot, rng, cache)
    return {name: PairedSeeds(c.value_a, c.value_b,
                              two_level_interval(c.point, c.per_seed, rng, DIFF_BOUNDS))
            for name, c in cells.items()}


@dataclass(frozen=True)
class Friedman:
    """Mean ranks (1 = best), the Friedman test and the Nemenyi critical difference."""

    models: tuple[str, ...]
    mean_ranks: tuple[float, ...]
    statistic: float
    pvalue: float
    cd: float  # two models whose mean ranks differ by more than this differ (alpha 0.05)
    n_blocks: int


def nemenyi_cd(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Demšar (2006) critical difference: ``q_alpha * sqrt(k (k + 1) / (6 N))``.

    ``q_alpha`` is the studentized range quantile over sqrt(2) (Demšar's Table 5a:
    1.960, 2.343, 2.569 ... for k = 2, 3, 4).
    """
    from scipy import stats as sps
    q = float(sps.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6.0 * n_blocks))


def friedman_nemenyi(scores: np.ndarray, models: Sequence[str],
                     higher_is_better: bool = True) -> Friedman:
    """Ranks models within each block (row: a scenario x seed), averages the ranks.

    Args:
        scores: (n_blocks, k) metric values, no NaN.
        models: k model names (the columns).
        higher_is_better: Rank 1 goes to the highest score when True.

    Returns:
        A :class:`Friedman`; statistic and p are NaN with fewer than 3 models or 2 blocks
        (``scipy.stats.friedmanchisquare`` needs them).
    """
    from scipy import stats as sps
    x = np.asarray(scores, float)
    if x.ndim != 2 or x.shape[1] != len(models):
        raise ValueError(f"scores must be (blocks, {len(models)}), got {x.shape}")
    ranks = sps.rankdata(-x if higher_is_better else x, axis=1)
    stat, p = math.nan, math.nan
    if x.shape[1] >= 3 and x.shape[0] >= 2:
        res = sps.friedmanchisquare(*x.T)
        stat, p = float(res.statistic), float(res.pvalue)
    return Friedman(tuple(models), tuple(float(r) for r in ranks.mean(axis=0)), stat, p,
                    nemenyi_cd(x.shape[1], x.shape[0]) if x.shape[1] >= 2 else math.nan,
                    int(x.shape[0]))
