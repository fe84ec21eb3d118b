"""Coverage and width of the paper-table intervals over seeds: the two-level bootstrap
(raybench.stats.rates_over_seeds) against the Student t interval over seeds, by simulation.

Each simulated study has a known true sensitivity (probit model: image i of seed s is right
when u_i + d_s + e_si < c, u_i ~ N(0, 1) shared by all seeds, d_s ~ N(0, sd_seed^2), e ~ N(0, 1)),
250 positive films and 40 negatives. Usage: python benchmarks/interval_coverage.py
[--studies N] [--part seeds|pooled|gaps|pairs] [--sd SD ...] [--quick]

``--part pooled``: studies of 16 cells (a model x class sensitivity each, true rates 0.3-0.9)
at 2 seeds, seed sds of 0.15-3.0 on the probit scale (rate spreads of 0.03-0.27 on average,
up to 0.64 at the 90th percentile), cells sharing one seed sd or each with its own (0.5-1.5 x),
the pooled interval (raybench.pooling) against the unpooled two-level one; ``--part gaps``:
source gaps paired within seeds with a known true gap (0 and 0.25): the coverage of the pooled
gap interval and the power to flag the 0.25 gap; ``--part pairs``: the same for the paired
difference of two models scored on the same films, each with its own seed effect (the
significance table's intervals); both with shared and unshared seed sds.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats as sps

from raybench import pooling, stats

TRUTH, N_POS, N_NEG = 0.3, 250, 40


def study(rng: np.random.Generator, seeds: int, sd_seed: float, k: int) -> tuple[bool, float,
                                                                                   bool, float]:
    """(two-level covers, its width, t covers, t width) for one simulated study."""
    c = sps.norm.ppf(TRUTH) * math.sqrt(2.0 + sd_seed ** 2)
    right = (rng.normal(size=N_POS) + rng.normal(0, sd_seed, (seeds, 1))
             + rng.normal(size=(seeds, N_POS))) < c
    y = np.r_[np.ones(N_POS, np.int64), np.zeros(N_NEG, np.int64)]
    ids = np.array([f"p{i}" for i in range(y.size)])
    per_seed = [(y, np.r_[r.astype(np.int64), np.zeros(N_NEG, np.int64)], ids) for r in right]
    iv = stats.rates_over_seeds(per_seed, 2, n_boot=400, seed=k)["sensitivity"][1]
    mean, low, high = stats.mean_interval(right.mean(axis=1).tolist(), bounds=(0.0, 1.0))
    return (iv.ci_low <= TRUTH <= iv.ci_high, iv.ci_high - iv.ci_low,
            bool(low <= TRUTH <= high), high - low)


CELLS, N_FILMS = 16, 250


def _seeds_of(right: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """rate_cells input: every film a positive, called right where ``right`` (S, N)."""
    y = np.ones(right.shape[1], np.int64)
    ids = np.array([f"p{i}" for i in range(right.shape[1])])
    return [(y, r.astype(np.int64), ids) for r in right]


def _cell(rng: np.random.Generator, truth: float, sd: float, seeds: int, k: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """One cell's sensitivity at ``seeds`` seeds (probit model of :func:`study`): per-seed
    values (S,) and their values on 200 shared patient draws (200, S)."""
    c = sps.norm.ppf(truth) * math.sqrt(2.0 + sd ** 2)
    right = (rng.normal(size=N_FILMS) + rng.normal(0, sd, (seeds, 1))
             + rng.normal(size=(seeds, N_FILMS))) < c
    return stats.rate_cells(_seeds_of(right), 2, 200, np.random.default_rng(k))["sensitivity"][1]


def pooled_study(rng: np.random.Generator, sd: float, shared: bool, k: int
                 ) -> tuple[float, float, float, float, np.ndarray]:
    """(pooled coverage, unpooled coverage, pooled median width, unpooled median width,
    each cell's seed spread of the rate) over one study's 16 cells at 2 seeds."""
    truths = rng.uniform(0.3, 0.9, CELLS)
    sds = np.full(CELLS, sd) if shared else sd * rng.uniform(0.5, 1.5, CELLS)
    data = [_cell(rng, t, s, 2, k * CELLS + i)
            for i, (t, s) in enumerate(zip(truths, sds, strict=True))]
    cells = [pooling.SeedCell.of_rate(pt, bt, np.full(pt.size, N_FILMS)) for pt, bt in data]
    pooled, _ = pooling.pooled_intervals(cells, stats.RATE_BOUNDS)
    raw = [stats.two_level_interval(pt, bt, rng, stats.RATE_BOUNDS) for pt, bt in data]
    cover = [np.mean([iv.ci_low <= t <= iv.ci_high for iv, t in zip(ivs, truths, strict=True)])
             for ivs in (pooled, raw)]
    width = [float(np.median([iv.ci_high - iv.ci_low for iv in ivs])) for ivs in (pooled, raw)]
    spread = np.array([pt.std(ddof=1) for pt, _ in data])
    return cover[0], cover[1], width[0], width[1], spread


def gap_study(rng: np.random.Generator, sd: float, gap: float, k: int, pairs: bool = False,
              shared_sd: bool = True) -> tuple[float, float]:
    """(share of 16 gap cells whose pooled interval holds the true gap, share flagged) at 2
    seeds: source A true rate 0.75, source B 0.75 - gap, one seed effect for both sources.
    With ``pairs``, A and B are two models scored on the same films: each its own seed effect
    (their paired difference in the significance table). Without ``shared_sd`` each cell's
    seed sd is 0.5-1.5 x ``sd``."""
    cells = []
    sds = np.full(CELLS, sd) if shared_sd else sd * rng.uniform(0.5, 1.5, CELLS)
    for i, cell_sd in enumerate(sds):
        d = rng.normal(0, cell_sd, (2, 1))  # the seed effect: one trained model per seed
        shared = rng.normal(size=N_FILMS) if pairs else None  # two models: the same films
        per = []
        for j, truth in enumerate((0.75, 0.75 - gap)):
            c = sps.norm.ppf(truth) * math.sqrt(2.0 + cell_sd ** 2)
            u = rng.normal(size=N_FILMS) if shared is None else shared  # sources: own films
            if pairs:
                d = rng.normal(0, cell_sd, (2, 1))
            right = u + d + rng.normal(size=(2, N_FILMS)) < c
            per.append(stats.rate_cells(_seeds_of(right), 2, 200, np.random.default_rng(
                [k, i, j]))["sensitivity"][1])
        (pa, ba), (pb, bb) = per
        cells.append(pooling.SeedCell.of(pb - pa, bb - ba))
    ivs, _ = pooling.pooled_intervals(cells, stats.DIFF_BOUNDS)
    cover = np.mean([iv.ci_low <= -gap <= iv.ci_high for iv in ivs])
    flagged = np.mean([iv.ci_high < 0 or iv.ci_low > 0 for iv in ivs])
    return float(cover), float(flagged)


def _spread_words(spreads: np.ndarray) -> str:
    """The cells' seed spreads of the rate: mean, 90th percentile, share >= 0.3."""
    return (f"{spreads.mean():6.3f} {np.quantile(spreads, 0.9):6.3f} "
            f"{np.mean(spreads >= 0.3):6.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--studies", type=int, default=400)
    p.add_argument("--part", choices=["seeds", "pooled", "gaps", "pairs"], default="seeds")
    p.add_argument("--sd", type=float, nargs="+", default=[0.15, 0.5, 1.2, 3.0],
                   help="pooled / gaps / pairs: seed sds on the probit scale")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 10 studies, seed sds 0.15 and 3.0")
    args = p.parse_args()
    if args.quick:
        args.studies, args.sd = 10, [0.15, 3.0]
    if args.part == "pooled":
        print("sd_seed  shared  spread: mean    p90  >=0.3  pooled coverage  width  "
              "unpooled coverage  width")
        for sd in args.sd:
            for shared in (True, False):
                rng = np.random.default_rng([int(100 * sd), shared])
                runs = [pooled_study(rng, sd, shared, k) for k in range(args.studies)]
                rows = np.array([r[:4] for r in runs])
                spreads = np.concatenate([r[4] for r in runs])
                print(f"{sd:7.2f}  {shared!s:6}  {_spread_words(spreads)}  "
                      f"{rows[:, 0].mean():15.3f}  {np.median(rows[:, 2]):5.3f}  "
                      f"{rows[:, 1].mean():17.3f}  {np.median(rows[:, 3]):5.3f}")
        return
    if args.part in ("gaps", "pairs"):
        print("sd_seed  shared  true gap  coverage  share flagged (power when the gap is 0.25)")
        for sd in args.sd:
            for shared in (True, False):
                for gap in (0.0, 0.25):
                    seed = [int(100 * sd), int(100 * gap)] + ([] if shared else [1])
                    rng = np.random.default_rng(seed)
                    rows = np.array([gap_study(rng, sd, gap, k, args.part == "pairs", shared)
                                     for k in range(args.studies)])
                    print(f"{sd:7.2f}  {shared!s:6}  {gap:8.2f}  {rows[:, 0].mean():8.3f}  "
                          f"{rows[:, 1].mean():8.3f}")
        return
    print("seeds  sd_seed  two-level coverage  median width  t coverage  median width")
    for sd_seed in (0.1, 0.2, 0.3):
        for seeds in (2, 3, 10):
            rng = np.random.default_rng([seeds, int(100 * sd_seed)])
            rows = np.array([study(rng, seeds, sd_seed, k) for k in range(args.studies)])
            print(f"{seeds:5d}  {sd_seed:7.1f}  {rows[:, 0].mean():18.3f}  "
                  f"{np.median(rows[:, 1]):12.3f}  {rows[:, 2].mean():10.3f}  "
                  f"{np.median(rows[:, 3]):12.3f}")


if __name__ == "__main__":
    main()
