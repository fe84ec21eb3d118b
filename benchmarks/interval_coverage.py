"""Coverage and width of the paper-table intervals over seeds: the two-level bootstrap
(raybench.stats.rates_over_seeds) against the Student t interval over seeds, by simulation.

Each simulated study has a known true sensitivity (probit model: image i of seed s is right
when u_i + d_s + e_si < c, u_i ~ N(0, 1) shared by all seeds, d_s ~ N(0, sd_seed^2), e ~ N(0, 1)),
250 positive films and 40 negatives. Usage: python benchmarks/interval_coverage.py [--studies N]
"""
from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats as sps

from raybench import stats

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--studies", type=int, default=400)
    args = p.parse_args()
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
