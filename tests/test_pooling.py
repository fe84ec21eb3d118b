"""Moderated seed variances (raybench.pooling) against an independent computation of limma's
fitFDist with scipy (root-finding instead of Newton's method), a known prior recovered from
simulated variances, and Student t intervals written out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special
from scipy import stats as sps

from raybench import pooling


def _fit_fdist_scipy(s2: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """Smyth (2004), section 6.2, written out: e = log s2 - digamma(d/2) + log(d/2);
    trigamma(d0/2) = var(e) - mean(trigamma(d/2)); s0^2 = exp(mean(e) + digamma(d0/2) -
    log(d0/2)). The trigamma equation is solved with brentq."""
    e = np.log(s2) - special.digamma(d / 2) + np.log(d / 2)
    target = np.var(e, ddof=1) - np.mean(special.polygamma(1, d / 2))
    half = optimize.brentq(lambda h: special.polygamma(1, h) - target, 1e-8, 1e8, xtol=1e-14,
                           rtol=1e-14)
    d0 = 2 * half
    return d0, math.exp(e.mean() + special.digamma(d0 / 2) - math.log(d0 / 2))


def _draw_variances(rng: np.random.Generator, cells: int, d: np.ndarray, d0: float,
                    s0_sq: float) -> np.ndarray:
    """s2 | sigma2 ~ sigma2 chi2(d) / d, with 1 / sigma2 ~ chi2(d0) / (d0 s0_sq)."""
    sigma2 = d0 * s0_sq / rng.chisquare(d0, cells)
    return sigma2 * rng.chisquare(d, cells) / d


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_prior_matches_the_formula_solved_by_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = rng.choice([1.0, 2.0, 9.0], 400)  # 2, 3 and 10 seeds
    s2 = _draw_variances(rng, 400, d, 4.0, 0.02)
    prior = pooling.fit_prior(s2, d)
    d0, s0_sq = _fit_fdist_scipy(s2, d)
    assert prior.d0 == pytest.approx(d0, rel=1e-7)
    assert prior.s0_sq == pytest.approx(s0_sq, rel=1e-7)
    assert prior.cells == 400 and 2 < prior.d0 < 8


def test_fit_prior_recovers_a_known_prior_from_many_cells() -> None:
    rng = np.random.default_rng(3)
    d = np.full(20000, 1.0)  # every cell measured on 2 seeds
    prior = pooling.fit_prior(_draw_variances(rng, 20000, d, 6.0, 0.01), d)
    assert prior.d0 == pytest.approx(6.0, rel=0.15)
    assert prior.s0_sq == pytest.approx(0.01, rel=0.05)


def test_equal_true_variances_give_unlimited_prior_dof() -> None:
    rng = np.random.default_rng(4)
    d = np.full(5000, 2.0)
    prior = pooling.fit_prior(0.04 * rng.chisquare(2, 5000) / 2, d)
    assert math.isinf(prior.d0) or prior.d0 > 30  # 30x the cells own dof: no spread left
    assert prior.s0_sq == pytest.approx(0.04, rel=0.05)


@pytest.mark.parametrize(("seeds", "held"), [(2, 2 * 16 / special.polygamma(1, 0.5)),
                                              (10, 2 * 16 / special.polygamma(1, 4.5))])
def test_the_log_scale_prior_holds_the_dof_of_a_mean_of_log_variances(seeds: int,
                                                                      held: float) -> None:
    # s0^2 = exp(mean log s^2): var(log s0^2) = trigamma(d / 2) / n, i.e. 2 n / trigamma(d / 2)
    # dof (a variance with nu dof has var(log) ~ 2 / nu): 6.5 for 16 two-seed cells, not 16
    rng = np.random.default_rng(12)
    d = np.full(16, seeds - 1.0)
    prior = pooling.fit_prior(0.02 * rng.chisquare(seeds - 1, 16) / (seeds - 1), d)
    assert prior.fitted_dof == pytest.approx(min(held, d.sum()), rel=1e-12)
    assert moderate_dof(prior) <= prior.fitted_dof


def moderate_dof(prior: pooling.Prior) -> float:
    return pooling.moderate(0.02, 1.0, prior)[1]


@pytest.mark.parametrize("x", [1e-3, 0.1, 1.0, 10.0, 1e4])
def test_trigamma_inverse(x: float) -> None:
    assert float(special.polygamma(1, pooling.trigamma_inverse(x))) == pytest.approx(x, rel=1e-7)


def test_cell_interval_is_the_moderated_t_interval_written_out() -> None:
    point = np.array([0.30, 0.52])  # 2 seeds, d = 1
    cell = pooling.SeedCell(point, np.full(50, point.mean()))  # no patient variance
    prior = pooling.Prior(d0=5.0, s0_sq=0.004, cells=16)
    s2 = (5.0 * 0.004 + 1 * point.var(ddof=1)) / 6.0
    low, high = sps.t.interval(0.95, 6.0, loc=point.mean(), scale=math.sqrt(s2 / 2))
    got = pooling.cell_interval(cell, prior)
    assert (got.ci_low, got.ci_high) == pytest.approx((low, high), abs=1e-12)
    assert got.dof == pytest.approx(6.0)
    assert got.pvalue == pytest.approx(2 * sps.t.sf(point.mean() / math.sqrt(s2 / 2), 6.0))


def test_patient_and_seed_parts_combine_by_welch_satterthwaite() -> None:
    rng = np.random.default_rng(5)
    point = np.array([0.40, 0.46, 0.43])
    every = 0.43 + rng.normal(0, 0.01, 4000)
    prior = pooling.Prior(d0=8.0, s0_sq=0.002, cells=10)
    got = pooling.cell_interval(pooling.SeedCell(point, every), prior)
    v_seed = (8.0 * 0.002 + 2 * point.var(ddof=1)) / 10.0 / 3
    v_pat = every.var()
    dof = (v_seed + v_pat) ** 2 / (v_seed ** 2 / 10.0)
    half = sps.t.ppf(0.975, dof) * math.sqrt(v_seed + v_pat)
    assert got.dof == pytest.approx(dof)
    assert (got.ci_low, got.ci_high) == pytest.approx((point.mean() - half, point.mean() + half))


def test_pooling_narrows_two_seed_intervals_that_share_a_seed_variance() -> None:
    rng = np.random.default_rng(6)
    cells = []
    for _ in range(16):  # 16 cells, 2 seeds each, one true seed sd of 0.05
        point = 0.5 + rng.normal(0, 0.05, 2)
        cells.append(pooling.SeedCell(point, np.full(100, point.mean())))
    ivs, prior = pooling.pooled_intervals(cells, (0.0, 1.0))
    assert prior.d0 > 10  # the shared variance is found
    widths = [iv.ci_high - iv.ci_low for iv in ivs]
    raw = [2 * sps.t.ppf(0.975, 1) * c.point.std(ddof=1) / math.sqrt(2) for c in cells]
    assert np.median(widths) < 0.5 * np.median(raw)  # t(1) = 12.7 is gone
    assert min(iv.dof for iv in ivs) > 10
    assert all(0.0 <= iv.ci_low <= iv.ci_high <= 1.0 for iv in ivs)


def test_cells_at_one_value_everywhere_borrow_the_prior_variance() -> None:
    # a cell whose every seed and draw sit at one value is censored at a bound: its spread is
    # unknown, not 0, so it is left out of the prior and takes the prior's variance (0 dof of
    # its own; a zero-width [0, 0] missed every true rate above 0 in the coverage simulation)
    rng = np.random.default_rng(7)
    varied = [pooling.SeedCell(0.5 + rng.normal(0, 0.05, 2), 0.5 + rng.normal(0, 0.01, 50))
              for _ in range(5)]
    flat = [pooling.SeedCell(np.zeros(3), np.zeros(20)), pooling.SeedCell(np.ones(2), np.ones(9))]
    ivs, prior = pooling.pooled_intervals(flat + varied)
    assert prior.cells == 5  # the flat cells do not inform the prior
    dof = min(prior.d0, prior.fitted_dof)  # the prior's dof, at most the 5 cells' own
    for iv, cell in zip(ivs[:2], flat, strict=True):
        low, high = sps.t.interval(0.95, dof, loc=cell.point.mean(),
                                   scale=math.sqrt(prior.s0_sq / cell.seeds))
        assert (iv.ci_low, iv.ci_high) == pytest.approx((low, high))
        assert iv.dof == pytest.approx(dof)
    assert ivs[0].pvalue == pytest.approx(1.0)
    assert all(iv.ci_high > iv.ci_low for iv in ivs)


def test_flat_cells_stay_zero_width_with_no_prior_to_borrow() -> None:
    flat = [pooling.SeedCell(np.zeros(3), np.zeros(20)), pooling.SeedCell(np.ones(2), np.ones(9))]
    ivs, prior = pooling.pooled_intervals(flat)
    assert prior.d0 == 0
    assert (ivs[0].value, ivs[0].ci_low, ivs[0].ci_high, ivs[0].pvalue) == (0.0, 0.0, 0.0, 1.0)
    assert (ivs[1].ci_low, ivs[1].ci_high) == (1.0, 1.0)


def test_a_rate_at_one_on_every_film_gets_the_logit_normal_interval_written_out() -> None:
    # both seeds right on all 250 films: logit of 1 - 0.5 / 251 (Haldane), the prior's
    # variance, t(dof) on the mean logit, then the mean rate over a logit-normal seed
    # distribution, here by scipy's quadrature instead of Gauss-Hermite
    films = np.full(2, 250)
    flat = pooling.SeedCell.of_rate(np.ones(2), np.ones((40, 2)), films)
    rng = np.random.default_rng(8)
    live = [pooling.SeedCell.of_rate(p, p + rng.normal(0, 0.01, (40, 2)), films)
            for p in rng.uniform(0.55, 0.95, (12, 2))]
    ivs, prior = pooling.pooled_intervals([flat] + live, (0.0, 1.0))
    top = special.logit(1 - 0.5 / 251)
    s2, dof = pooling.moderate(math.nan, 0, prior)
    assert s2 == prior.s0_sq and math.isfinite(dof)
    q = sps.t.ppf(0.975, dof)

    def mean_rate(mu: float) -> float:
        f = lambda z: special.expit(mu + math.sqrt(s2) * z) * sps.norm.pdf(z)  # noqa: E731
        return integrate.quad(f, -40, 40)[0]

    assert ivs[0].value == 1.0 and ivs[0].ci_high == 1.0
    assert ivs[0].ci_low == pytest.approx(mean_rate(top - q * math.sqrt(s2 / 2)), abs=1e-9)
    assert 0.5 < ivs[0].ci_low < 0.99


def test_moment_prior_matches_the_inverse_gamma_moments_scipy_gives() -> None:
    # the fitted prior as scipy's inverse gamma (shape d0 / 2, scale d0 s0^2 / 2) has the
    # cells' pooled variance as its mean and their E[s^4] / (1 + 2 / d) as its second moment
    rng = np.random.default_rng(9)
    d = rng.choice([1.0, 2.0, 9.0], 300)
    s2 = _draw_variances(rng, 300, d, 9.0, 0.03)
    prior = pooling.fit_prior_moments(s2, d)
    dist = sps.invgamma(prior.d0 / 2, scale=prior.d0 * prior.s0_sq / 2)
    assert dist.mean() == pytest.approx(np.sum(d * s2) / np.sum(d), rel=1e-9)
    assert dist.moment(2) == pytest.approx(np.mean(s2 ** 2 / (1 + 2 / d)), rel=1e-9)
    assert prior.cells == 300 and prior.fitted_dof == d.sum()


def test_moment_prior_recovers_a_known_prior_and_finds_equal_variances() -> None:
    rng = np.random.default_rng(10)
    d = np.full(40000, 1.0)
    prior = pooling.fit_prior_moments(_draw_variances(rng, 40000, d, 12.0, 0.01), d)
    assert prior.d0 == pytest.approx(12.0, rel=0.25)
    assert prior.s0_sq == pytest.approx(0.01, rel=0.05)
    alike = pooling.fit_prior_moments(0.04 * rng.chisquare(2, 5000) / 2, np.full(5000, 2.0))
    assert math.isinf(alike.d0) or alike.d0 > 100
    assert alike.s0_sq == pytest.approx(0.04, rel=0.05)


def test_differences_pool_by_moments_and_rates_by_limma() -> None:
    rng = np.random.default_rng(11)
    diffs = [pooling.SeedCell(rng.normal(0, 0.1, 2), rng.normal(0, 0.01, 30)) for _ in range(8)]
    _, prior = pooling.pooled_intervals(diffs)
    s2 = [c.seed_variance for c in diffs]
    assert prior == pooling.fit_prior_moments(s2, [1.0] * 8)
    films = np.full(2, 200)
    rates = [pooling.SeedCell.of_rate(p, p + rng.normal(0, 0.01, (30, 2)), films)
             for p in rng.uniform(0.3, 0.9, (8, 2))]
    _, prior = pooling.pooled_intervals(rates)
    assert prior == pooling.fit_prior([c.seed_variance for c in rates], [1.0] * 8)


def test_fewer_than_three_cells_keep_their_own_variance() -> None:
    cells = [pooling.SeedCell(np.array([0.2, 0.4]), np.full(10, 0.3)),
             pooling.SeedCell(np.array([0.5, 0.52]), np.full(10, 0.51))]
    ivs, prior = pooling.pooled_intervals(cells)
    assert prior.d0 == 0 and prior.cells == 2
    half = sps.t.ppf(0.975, 1) * np.std([0.2, 0.4], ddof=1) / math.sqrt(2)
    assert (ivs[0].ci_low, ivs[0].ci_high) == pytest.approx((0.3 - half, 0.3 + half))


@pytest.mark.parametrize(("dofs", "words"), [
    ([math.inf, math.inf], "unlimited"),
    ([3.25, math.inf], "3.2 to unlimited"),
    ([3.25, 7.0, math.nan], "3.2-7.0"),
    ([4.0, 4.0], "4.0"),
    ([math.nan], "none"),
])
def test_dof_range_words(dofs: list[float], words: str) -> None:
    assert pooling.dof_range(dofs) == words


def test_table_prose_never_prints_inf_for_an_unlimited_prior() -> None:
    import pandas as pd

    from raybench import compare

    table = pd.DataFrame({"metric": ["accuracy"] * 2, "test": [compare.TWO_LEVEL_POOLED] * 2,
                          "prior_dof": [math.inf] * 2, "dof": [math.inf] * 2,
                          "pooled_cells": [6, 6]})
    prose = compare.describe_tests(table)
    assert "inf" not in prose.replace("unlimited", "")
    assert "accuracy: 6 comparisons, prior dof unlimited, interval dof unlimited" in prose
