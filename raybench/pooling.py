"""Seed variance pooled across a study: empirical-Bayes moderated variances (Smyth 2004).

A cell of a study (a model's sensitivity for one class, one pair's difference of balanced
accuracies...) measured on S seeds has a seed variance ``s^2`` with ``d = S - 1`` degrees of
freedom: at 2 seeds, one. Every cell of one study estimates the seed noise of the same recipe,
so, as limma's moderated t does for genes:

- :func:`fit_prior` fits a scaled inverse chi-square prior (``d0``, ``s0^2``) to all cells'
  variances by the moments of ``log s^2`` (limma's ``fitFDist``: the trigamma method);
- :func:`moderate` shrinks each cell's variance towards ``s0^2``:
  ``(d0 s0^2 + d s^2) / (d0 + d)``, with ``d0 + d`` degrees of freedom;
- :func:`pooled_intervals` gives each cell the interval ``mean +- t(dof) * se`` with
  ``se^2 = var(patients) + moderated seed variance / S``; ``var(patients)`` is the variance
  of the mean over seeds under the shared patient draws of the two-level bootstrap, and
  ``dof`` is the Welch-Satterthwaite combination of the two parts (the patient part with
  unlimited dof).
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
    same variance), scale ``s0_sq``, fitted on ``cells`` cells."""

    d0: float
    s0_sq: float
    cells: int


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
    if x.size < MIN_CELLS:  # too few variances to learn their spread: no pooling
        return Prior(0.0, math.nan, int(x.size))
    if not np.any(x > 0):
        return Prior(math.inf, 0.0, int(x.size))
    med = float(np.median(x)) or float(np.median(x[x > 0]))
    x = np.maximum(x, 1e-5 * med)
    e = np.log(x) - special.digamma(d / 2) + np.log(d / 2)
    e_mean = float(e.mean())
    spread = float(np.var(e, ddof=1)) if x.size > 1 else 0.0
    excess = spread - float(np.mean(special.polygamma(1, d / 2)))
    if excess <= 0:
        return Prior(math.inf, math.exp(e_mean), int(x.size))
    d0 = 2.0 * trigamma_inverse(excess)
    return Prior(d0, math.exp(e_mean + float(special.digamma(d0 / 2)) - math.log(d0 / 2)),
                 int(x.size))


def moderate(s2: float, dof: float, prior: Prior) -> tuple[float, float]:
    """(moderated variance, its dof): the cell's variance shrunk towards the prior's."""
    if prior.d0 == 0:  # no prior: the cell's own variance (NaN with one seed)
        return s2, float(dof)
    if math.isinf(prior.d0):
        return prior.s0_sq, math.inf
    if dof <= 0 or not math.isfinite(s2):
        return prior.s0_sq, prior.d0
    return (prior.d0 * prior.s0_sq + dof * s2) / (prior.d0 + dof), prior.d0 + dof


@dataclass(frozen=True)
class SeedCell:
    """One cell of a study: its per-seed values and the mean over seeds under each of B
    shared patient draws (the two-level bootstrap's patient level)."""

    point: np.ndarray  # (S,) finite per-seed values
    every: np.ndarray  # (B,) finite replicate means over the seeds

    @classmethod
    def of(cls, point: np.ndarray, per_seed: np.ndarray) -> "SeedCell":
        """From each seed's value (S,) and its values on B patient draws (B, S); NaN seeds
        and replicates are left out."""
        keep = np.isfinite(np.asarray(point, float))
        x, rep = np.asarray(point, float)[keep], np.asarray(per_seed, float)[:, keep]
        with np.errstate(invalid="ignore"):
            every = rep.mean(axis=1) if x.size else np.zeros(0)
        return cls(x, every[np.isfinite(every)])

    @property
    def seeds(self) -> int:
        return int(self.point.size)

    @property
    def degenerate(self) -> bool:
        """Every seed and every patient draw at one value (a rate of 0 or 1 on every film):
        nothing varies, so the cell neither informs the prior nor borrows from it."""
        return bool(self.seeds > 0 and np.ptp(self.point) == 0 and self.every.size > 0
                    and np.ptp(self.every) == 0)

    @property
    def seed_variance(self) -> float:
        return float(self.point.var(ddof=1)) if self.seeds > 1 else math.nan


def cell_interval(cell: SeedCell, prior: Prior, bounds: Optional[tuple[float, float]] = None
                  ) -> SeedInterval:
    """The moderated interval of one cell (see the module docstring); p against 0."""
    s = cell.seeds
    if s == 0 or cell.every.size == 0:
        return SeedInterval(math.nan if s == 0 else float(cell.point.mean()),
                            math.nan, math.nan, math.nan, s, math.nan, 0)
    est = float(cell.point.mean())
    if cell.degenerate:
        return SeedInterval(est, est, est, 1.0 if est == 0 else 0.0, s, math.inf,
                            int(cell.every.size))
    v_seed_s2, dof = moderate(cell.seed_variance, s - 1, prior)
    v_seed = v_seed_s2 / s if math.isfinite(v_seed_s2) else 0.0  # one seed, no prior
    v_pat = float(np.var(cell.every))
    total = v_seed + v_pat
    ws = math.inf if v_seed == 0 else (total ** 2 / (v_seed ** 2 / dof) if dof < math.inf
                                       else math.inf)
    if total == 0:
        return SeedInterval(est, est, est, 1.0 if est == 0 else 0.0, s, ws, cell.every.size)
    se = math.sqrt(total)
    q = float(sps.t.ppf(0.975, ws)) if ws < math.inf else float(sps.norm.ppf(0.975))
    p = float(2 * (sps.t.sf(abs(est) / se, ws) if ws < math.inf else sps.norm.sf(abs(est) / se)))
    low, high = clip(est - q * se, est + q * se, bounds)
    return SeedInterval(est, low, high, p, s, ws, int(cell.every.size))


def pooled_intervals(cells: Sequence[SeedCell], bounds: Optional[tuple[float, float]] = None
                     ) -> tuple[list[SeedInterval], Prior]:
    """Every cell's moderated interval, the prior fitted to the seed variances of all the
    cells but degenerate ones (:attr:`SeedCell.degenerate`: zero width)."""
    live = [c for c in cells if not c.degenerate]
    prior = fit_prior([c.seed_variance for c in live], [c.seeds - 1 for c in live])
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
