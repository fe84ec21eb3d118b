"""A Bayesian verdict of practical equivalence between two models (Benavoli et al. 2017,
"Time for a change"): P(A better), P(practically equivalent) and P(B better), where
"equivalent" means a difference within the region of practical equivalence (ROPE, default 1
point of balanced accuracy).

- :func:`t_verdict`: one scenario, the per-seed differences: the posterior of the mean
  difference is Student t with ``n - 1`` dof, location the mean and scale ``sd / sqrt(n)``
  (the Bayesian t-test of baycomp's ``CorrelatedTTest`` without the cross-validation
  correlation: every seed has its own trained model, scored on the same test films).
- :func:`signed_rank_verdict`: several scenarios, one difference per scenario x seed block:
  the Bayesian signed-rank test (Benavoli et al. 2014; baycomp's ``SignedRankTest``), a
  Dirichlet process posterior sampled ``nsamples`` times.

baycomp's hierarchical test needs Stan, which raybench does not install; the signed-rank test
over blocks stands in for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from raybench import schema as S

#: Default region of practical equivalence: 1 point of balanced accuracy.
ROPE = 0.01


@dataclass(frozen=True)
class Verdict:
    """P(A better), P(within the ROPE), P(B better) of B minus A, the test and the blocks."""

    p_a: float
    p_rope: float
    p_b: float
    test: str
    n: int

    def sentence(self, a: str, b: str, rope: float = ROPE) -> str:
        """``b and a are practically equivalent: P = 0.91`` (or which is better)."""
        best = max((self.p_rope, "rope"), (self.p_a, a), (self.p_b, b))
        if best[1] == "rope":
            return (f"{a} and {b} are practically equivalent (within {rope:g}): "
                    f"P = {self.p_rope:.2f}")
        other = b if best[1] == a else a
        return f"{best[1]} is better than {other} by more than {rope:g}: P = {best[0]:.2f}"


def t_verdict(diffs: Sequence[float], rope: float = ROPE) -> Verdict:
    """The Bayesian t-test on per-seed differences (B - A); NaN with fewer than 2."""
    d = np.asarray([v for v in diffs if v == v], float)
    if d.size < 2:
        return Verdict(math.nan, math.nan, math.nan, "Bayesian t-test", int(d.size))
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:  # a point mass at the mean
        return Verdict(float(mean < -rope), float(abs(mean) <= rope), float(mean > rope),
                       "Bayesian t-test", int(d.size))
    post = sps.t(d.size - 1, loc=mean, scale=sd / math.sqrt(d.size))
    p_a, p_b = float(post.cdf(-rope)), float(post.sf(rope))
    return Verdict(p_a, 1.0 - p_a - p_b, p_b, "Bayesian t-test", int(d.size))


def signed_rank_verdict(diffs: Sequence[float], rope: float = ROPE, *, prior: float = 0.5,
                        nsamples: int = 20000, seed: int = 0) -> Verdict:
    """The Bayesian signed-rank test on block differences (B - A), ``nsamples`` draws.

    Each draw weights the blocks (and a prior pseudo-observation at 0 with weight ``prior``)
    by a Dirichlet sample w; P(B better) in that draw is the weight of the pairs (i, j) with
    ``d_i + d_j > 2 rope`` (ties count one half), and the draw votes for the largest of the
    three probabilities.
    """
    d = np.asarray([v for v in diffs if v == v], float)
    if d.size < 2:
        return Verdict(math.nan, math.nan, math.nan, "Bayesian signed-rank test", int(d.size))
    z = np.r_[0.0, d]
    sums = z[:, None] + z[None, :]
    above = (sums > 2 * rope) + 0.5 * (sums == 2 * rope)
    below = (-sums > 2 * rope) + 0.5 * (-sums == 2 * rope)
    alpha = np.r_[prior, np.ones(d.size)]
    w = np.random.default_rng(seed).dirichlet(alpha, nsamples)  # (nsamples, n + 1)
    p_b = np.einsum("si,ij,sj->s", w, above, w)
    p_a = np.einsum("si,ij,sj->s", w, below, w)
    votes = np.bincount(np.argmax(np.column_stack([p_a, 1 - p_a - p_b, p_b]), axis=1),
                        minlength=3) / nsamples
    return Verdict(float(votes[0]), float(votes[1]), float(votes[2]),
                   "Bayesian signed-rank test", int(d.size))


def verdict(diffs: Sequence[float], blocks_from_scenarios: bool, rope: float = ROPE
            ) -> Verdict:
    """The signed-rank test over scenario x seed blocks when there are several scenarios,
    else the t-test over seeds."""
    return signed_rank_verdict(diffs, rope) if blocks_from_scenarios else t_verdict(diffs, rope)


def verdict_sentences(table: pd.DataFrame, metric: str = "balanced_accuracy",
                      rope: float = ROPE) -> list[str]:
    """One sentence per comparison of ``metric`` that has a verdict (several seeds), from a
    ``compare_models`` table: its ``baseline`` is A and its ``model`` (or ``roi``) B."""
    if "p_equivalent" not in table:
        return []
    rows = table[(table[S.METRIC] == metric) & table["p_equivalent"].notna()]
    other = S.MODEL if "baseline" in rows and S.MODEL in rows else S.ROI
    return [Verdict(float(r["p_baseline_better"]), float(r["p_equivalent"]),
                    float(r["p_better"]), "Bayesian t-test", int(r["seeds"])).sentence(
                        str(r["baseline"]), str(r[other]), rope)
            for _, r in rows.iterrows()]
