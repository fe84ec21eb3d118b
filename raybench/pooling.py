"""Seed variance pooled across a study: empirical-Bayes moderated variances (Smyth 2004).

A cell of a study (a model's sensitivity for one class, one pair's difference of balanced
accuracies...) measured on S seeds has a seed variance ``s^2`` with ``d = S - 1`` degrees of
freedom: at 2 seeds, one. Every cell of one study estimates the seed noise of the same recipe,
so, as limma's moderated t does for genes:

- a scaled inverse chi-square prior (``d0``, ``s0^2``) is fitted to all cells' variances: for
  logit rates by the moments of ``log s^2`` (:func:`fit_prior`, limma's ``fitFDist``), for
  differences by the moments of ``s^2`` (:func:`fit_prior_moments`: bounded differences pile
  up, and near-ties of two seeds mislead the log scale);
- :func:`moderate` shrinks each cell's variance towards ``s0^2``:
  ``(d0 s0^2 + d s^2) / (d0 + d)``, with ``d0 + d`` degrees of freedom, at most the dof of
  the ``s0^2`` estimate itself (:attr:`Prior.fitted_dof`); a cell whose seeds and draws all
  sit at one value (a rate of 0 or 1 on every film) is censored, not measured: it has 0 dof
  of its own and takes ``s0^2`` (:attr:`SeedCell.degenerate`);
- :func:`pooled_intervals` gives each cell the interval ``mean +- t(dof) * se`` with
  ``se^2 = var(patients) + max(moderated s^2 - within, 0) / S``; ``var(patients)`` is the
  variance of the mean over seeds under the shared patient draws of the two-level bootstrap,
  ``within`` the seeds' own sampling noise (in both parts, so taken out of one) and ``dof``
  the Welch-Satterthwaite dof of ``se^2`` with the seed part's dof.

Rates (sensitivity, specificity) are pooled on the logit scale (:meth:`SeedCell.of_rate`,
a rate of 0 or 1 moved 0.5 / (films + 1) inside: Haldane's correction), where one seed effect
moves cells at different rates alike; their interval for the mean logit is mapped back
through the mean rate of a logit-normal seed distribution (:func:`mean_rate`), the quantity
the mean of the seeds' rates estimates, so it stays inside [0, 1]. Differences (paired model
differences, source gaps) are pooled on their own scale and clipped to [-1, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import special
from scipy import stats as sps

from raybench.stats import SeedInterval, clip


#: Fewest cells with a seed variance that a prior is fitted to.
MIN_CELLS = 3


@dataclass(frozen=True)
class Prior:
    """The prior of the seed variances: ``d0`` degrees of freedom (inf: every cell has the
    same variance), scale ``s0_sq``, fitted on ``cells`` cells; ``fitted_dof``: the dof of
    the ``s0_sq`` estimate (the cells' total dof for the pooled variance of
    :func:`fit_prior_moments`, fewer for :func:`fit_prior`'s log-scale mean)."""

    d0: float
    s0_sq: float
    cells: int
    fitted_dof: float = math.inf


def trigamma_inverse(x: float) -> float:
    """y with ``trigamma(y) = x`` (x > 0): Smyth's Newton iteration from ``0.5 + 1 / x``."""
    if x > 1e7:
        return 1.0 / math.sqrt(x)
    if x < 1e-6:
        return 1.0 / x
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = float(special.polygamma(1, y))
        step = tri * (1.0 - tri / x) / float(special.polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def fit_prior(s2: Sequence[float], dof: Sequence[float]) -> Prior:
    """limma's ``fitFDist`` without covariates: ``d0`` and ``s0^2`` from the mean and the
    variance of ``log s^2`` over cells (cells with no dof or no finite variance left out).

    With fewer than :data:`MIN_CELLS` cells the prior has 0 dof (each cell keeps its own
    variance). Variances of exactly 0 are raised to 1e-5 x the median (as limma does) so that a cell
    whose seeds agree does not send ``log s^2`` to minus infinity.
    """
    x, d = np.asarray(s2, float), np.asarray(dof, float)
    ok = np.isfinite(x) & (d > 0)
    x, d = np.maximum(x[ok], 0.0), d[ok]
    n, total = int(x.size), float(d.sum())
    if n < MIN_CELLS:  # too few variances to learn their spread: no pooling
        return Prior(0.0, math.nan, n, total)
    if not np.any(x > 0):
        return Prior(math.inf, 0.0, n, total)
    med = float(np.median(x)) or float(np.median(x[x > 0]))
    x = np.maximum(x, 1e-5 * med)
    e = np.log(x) - special.digamma(d / 2) + np.log(d / 2)
    e_mean = float(e.mean())
    spread = float(np.var(e, ddof=1)) if x.size > 1 else 0.0
    # s0^2 is exp(mean of e), and e of a cell with d dof varies by trigamma(d / 2): a
    # variance estimate with nu dof has var(log) ~ 2 / nu, so s0^2 carries about
    # 2 n / mean(trigamma(d / 2)) dof (6.5 for 16 two-seed cells, not 16), at most the total
    sampling = float(np.mean(special.polygamma(1, d / 2)))
    held = min(total, 2.0 * n / sampling)
    excess = spread - sampling
    if excess <= 0:
        return Prior(math.inf, math.exp(e_mean), n, held)
    d0 = 2.0 * trigamma_inverse(excess)
    return Prior(d0, math.exp(e_mean + float(special.digamma(d0 / 2)) - math.log(d0 / 2)),
                 n, held)


def fit_prior_moments(s2: Sequence[float], dof: Sequence[float]) -> Prior:
    """The same scaled inverse chi-square prior fitted by the moments of ``s^2`` instead of
    ``log s^2``: ``E[s^2] = mu = s0^2 d0 / (d0 - 2)`` is estimated by the pooled variance
    (``sum d s^2 / sum d``) and ``E[s^4] / (1 + 2 / d) = E[sigma^4] = mu^2 (d0 - 2) / (d0 - 4)``
    by the cells' mean, so ``k = E[sigma^4] / mu^2`` gives ``d0 = (4k - 2) / (k - 1)``
    (unlimited when ``k <= 1``: the cells' variances spread no more than sampling does).

    For differences of rates: they are bounded and pile up (at 0 where both sides saturate,
    at the largest gap where the curve is flat), so two seeds often nearly tie, and ``log s^2``
    gets a long left tail that :func:`fit_prior` reads as variances differing between cells;
    on the variance scale a near-tie weighs nothing and the pooled variance is unbiased
    whatever the seeds' distribution. Same cells, dof and no-pooling rule as :func:`fit_prior`.
    """
    x, d = np.asarray(s2, float), np.asarray(dof, float)
    ok = np.isfinite(x) & (d > 0)
    x, d = np.maximum(x[ok], 0.0), d[ok]
    n, total = int(x.size), float(d.sum())
    if n < MIN_CELLS:
        return Prior(0.0, math.nan, n, total)
    mu = float((d * x).sum() / total)
    if mu == 0:
        return Prior(math.inf, 0.0, n, total)
    k = float(np.mean(x ** 2 / (1.0 + 2.0 / d))) / mu ** 2
    if k <= 1:
        return Prior(math.inf, mu, n, total)
    d0 = (4.0 * k - 2.0) / (k - 1.0)
    return Prior(d0, mu * (d0 - 2.0) / d0, n, total)


def moderate(s2: float, dof: float, prior: Prior) -> tuple[float, float]:
    """(moderated variance, its dof): the cell's variance shrunk towards the prior's.

    The dof never exceed the prior's ``fitted_dof``: ``s0^2`` is itself estimated from the
    cells' variances, so a prior of unlimited dof (every cell alike) makes the cell's
    variance ``s0^2`` with the dof of that estimate, not a known variance (16 two-seed
    cells: at most 16, not unlimited)."""
    if prior.d0 == 0:  # no prior: the cell's own variance (NaN with one seed)
        return s2, float(dof)
    cap = prior.fitted_dof
    if math.isinf(prior.d0):
        return prior.s0_sq, cap
    if dof <= 0 or not math.isfinite(s2):
        return prior.s0_sq, min(prior.d0, cap)
    return (prior.d0 * prior.s0_sq + dof * s2) / (prior.d0 + dof), min(prior.d0 + dof, cap)


@dataclass(frozen=True)
class SeedCell:
    """One cell of a study: its per-seed values and the mean over seeds under each of B
    shared patient draws (the two-level bootstrap's patient level).

    ``within`` is the part of one seed's patient variance that the seeds do not share (each
    seed's own sampling noise on the same films): it is in the seed spread already, so it is
    taken out of the seed part rather than counted twice. Cells made by :meth:`of` keep it
    at 0 (a conservative double count); :meth:`of_rate` measures it. ``rate`` (the mean of
    the raw per-seed rates) is set on cells of logit rates, whose interval is mapped back to
    the rate scale."""

    point: np.ndarray  # (S,) finite per-seed values
    every: np.ndarray  # (B,) finite replicate means over the seeds
    within: float = 0.0
    rate: Optional[float] = None

    @classmethod
    def of(cls, point: np.ndarray, per_seed: np.ndarray) -> "SeedCell":
        """From each seed's value (S,) and its values on B patient draws (B, S); NaN seeds
        and replicates are left out."""
        keep = np.isfinite(np.asarray(point, float))
        x, rep = np.asarray(point, float)[keep], np.asarray(per_seed, float)[:, keep]
        with np.errstate(invalid="ignore"):
            every = rep.mean(axis=1) if x.size else np.zeros(0)
        return cls(x, every[np.isfinite(every)])

    @classmethod
    def of_rate(cls, point: np.ndarray, per_seed: np.ndarray, films: np.ndarray) -> "SeedCell":
        """A rate's cell on the logit scale, where a seed effect shifts every cell's rate by a
        like amount (on the rate scale the seed variance shrinks towards 0 and 1, so cells at
        different rates do not share one). ``films`` (S,): each seed's films behind the rate;
        a rate of 0 or 1 is taken as ``0.5 / (films + 1)`` from the bound (Haldane)."""
        keep = np.isfinite(np.asarray(point, float))
        raw, rep = np.asarray(point, float)[keep], np.asarray(per_seed, float)[:, keep]
        eps = 0.5 / (np.asarray(films, float)[keep] + 1.0)
        rep = rep[np.isfinite(rep).all(axis=1)]
        x, rep = (special.logit(np.clip(v, eps, 1 - eps)) for v in (raw, rep))
        rate = float(raw.mean()) if raw.size else math.nan
        return cls(x, rep.mean(axis=1), unshared_variance(rep), rate)

    @property
    def seeds(self) -> int:
        return int(self.point.size)

    @property
    def degenerate(self) -> bool:
        """Every seed and every patient draw at one value (a rate of 0 or 1 on every film):
        the seed spread is censored at the bound, not measured, so the cell does not inform
        the prior and takes the prior's variance (:func:`cell_interval`)."""
        return bool(self.seeds > 0 and np.ptp(self.point) == 0 and self.every.size > 0
                    and np.ptp(self.every) == 0)

    @property
    def seed_variance(self) -> float:
        return float(self.point.var(ddof=1)) if self.seeds > 1 else math.nan


def unshared_variance(rep: np.ndarray) -> float:
    """Per-seed replicates (B, S): the mean variance of one seed minus the mean covariance of
    two (what a seed's value varies by that the other seeds' values do not share)."""
    if rep.shape[1] < 2 or rep.shape[0] < 2:
        return 0.0
    c = np.cov(rep, rowvar=False)
    s = c.shape[0]
    return max(float(np.trace(c)) / s - float(c.sum() - np.trace(c)) / (s * (s - 1)), 0.0)


#: Gauss-Hermite nodes for the mean rate of a logit-normal seed distribution.
_GH_X, _GH_W = np.polynomial.hermite.hermgauss(40)


def mean_rate(mu: float, var: float) -> float:
    """E[expit(mu + sd Z)], Z standard normal, sd^2 = ``var``: the mean over seeds of a rate
    whose logit has mean ``mu`` and seed variance ``var`` (monotone in ``mu``)."""
    if not math.isfinite(mu):
        return 0.0 if mu < 0 else 1.0
    vals = special.expit(mu + math.sqrt(2.0 * max(var, 0.0)) * _GH_X)
    return float(np.dot(_GH_W, vals) / math.sqrt(math.pi))


def cell_interval(cell: SeedCell, prior: Prior, bounds: Optional[tuple[float, float]] = None
                  ) -> SeedInterval:
    """The moderated interval of one cell (see the module docstring); p against 0. A cell of
    logit rates gets the interval of its mean logit mapped through :func:`mean_rate` and the
    mean of its raw rates as the value (no p)."""
    s = cell.seeds
    if s == 0 or cell.every.size == 0:
        value = math.nan if s == 0 else cell.rate if cell.rate is not None else cell.point.mean()
        return SeedInterval(float(value), math.nan, math.nan, math.nan, s, math.nan, 0)
    est = float(cell.point.mean())
    shown = est if cell.rate is None else cell.rate
    # a degenerate cell's seed spread is censored at a bound, not measured: 0 dof of its own,
    # so it takes the prior's variance (limma's squeezeVar for a gene without residual dof)
    own, own_dof = (math.nan, 0) if cell.degenerate else (cell.seed_variance, s - 1)
    v_seed_s2, dof = moderate(own, own_dof, prior)
    v_seed = v_seed_s2 / s if math.isfinite(v_seed_s2) else 0.0  # one seed, no prior
    # the seeds' own sampling noise is in both the seed spread and the patient draws: counted
    # once, with the seed effect's variance kept >= 0; the dof are those of the whole spread
    total = max(v_seed - cell.within / s, 0.0) + float(np.var(cell.every))
    ws = math.inf if v_seed == 0 or dof == math.inf else total ** 2 / (v_seed ** 2 / dof)
    if total == 0:
        return SeedInterval(shown, shown, shown, 1.0 if shown == 0 else 0.0, s, ws,
                            cell.every.size)
    se = math.sqrt(total)
    q = float(sps.t.ppf(0.975, ws)) if ws < math.inf else float(sps.norm.ppf(0.975))
    if cell.rate is not None:
        spread = max(v_seed_s2 - cell.within, 0.0) if math.isfinite(v_seed_s2) else 0.0
        low, high = (mean_rate(v, spread) for v in (est - q * se, est + q * se))
        return SeedInterval(shown, min(low, shown), max(high, shown), math.nan, s, ws,
                            int(cell.every.size))
    p = float(2 * (sps.t.sf(abs(est) / se, ws) if ws < math.inf else sps.norm.sf(abs(est) / se)))
    low, high = clip(est - q * se, est + q * se, bounds)
    return SeedInterval(est, low, high, p, s, ws, int(cell.every.size))


def pooled_intervals(cells: Sequence[SeedCell], bounds: Optional[tuple[float, float]] = None
                     ) -> tuple[list[SeedInterval], Prior]:
    """Every cell's moderated interval, the prior fitted to the seed variances of all the
    cells but degenerate ones (:attr:`SeedCell.degenerate`: they borrow the prior's): by
    :func:`fit_prior` for logit rates, by :func:`fit_prior_moments` for differences."""
    live = [c for c in cells if not c.degenerate]
    rates = all(c.rate is not None for c in live)  # logit rates: limma's fit; else moments
    prior = (fit_prior if rates else fit_prior_moments)(
        [c.seed_variance for c in live], [c.seeds - 1 for c in live])
    return [cell_interval(c, prior, bounds) for c in cells], prior


def dof_words(d0: float) -> str:
    """A prior's dof for a table's prose: ``none`` (not pooled), ``unlimited`` or the number."""
    return "none" if d0 == 0 else "unlimited" if math.isinf(d0) else f"{d0:.1f}"


def dof_range(dofs: Sequence[float]) -> str:
    """The span of interval dofs for a table's prose: ``12.3-40.1``, ``12.3`` when they agree,
    ``unlimited`` when every one is (a prior of unlimited dof), ``12.3 to unlimited``."""
    d = np.asarray(dofs, float)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return "none"
    low, high = (dof_words(v) for v in (float(d.min()), float(d.max())))
    return low if low == high else f"{low} to {high}" if high == "unlimited" else f"{low}-{high}"
