"""The near-duplicate index's miss bound, for the sampling the code does: each table's key bits
are drawn without replacement, so a table collides with the hypergeometric probability; a
Monte-Carlo run of the index itself on planted pairs checks the formula (and rejects the
with-replacement one it replaced)."""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import hypergeom

from raybench.data import near_duplicates as nd


def test_collision_probability_is_scipys_hypergeometric() -> None:
    for bits, distance, width in ((14, 112, 1024), (19, 112, 1024), (30, 14, 128), (5, 60, 64)):
        want = hypergeom.pmf(0, width, distance, bits)  # no differing bit among those drawn
        assert math.isclose(nd.collision_probability(bits, distance, width), want, rel_tol=1e-9)


def test_table_plan_meets_the_miss_probability() -> None:
    for n in (7_100, 200_000):
        bits, tables = nd._table_plan(n, 112, 1024)
        p = hypergeom.pmf(0, 1024, 112, bits)
        assert (1 - p) ** tables <= nd.MISS_PROBABILITY < (1 - p) ** (tables - 1)
        # README's figures: the bound the plan achieves at these sizes
        assert math.isclose(nd.miss_probability(bits, tables, 112, 1024), (1 - p) ** tables,
                            rel_tol=1e-6)
    assert nd._table_plan(200_000, 400, 1024)[1] > nd.MAX_TABLES  # brute force instead


def _planted(rng: np.random.Generator, pairs: int, width: int, distance: int) -> np.ndarray:
    """``pairs`` random hashes, then for each a partner exactly ``distance`` bits away."""
    base = rng.integers(0, 256, (pairs, width // 8), dtype=np.uint8)
    flipped = np.unpackbits(base, axis=1)
    for row in flipped:
        row[rng.choice(width, distance, replace=False)] ^= 1
    return np.concatenate([base, np.packbits(flipped, axis=1)])


def test_monte_carlo_miss_rate_matches_the_bound() -> None:
    """A weakened plan (128-bit hashes, 30-bit keys, tables for a 2% miss) where the sampling
    matters: the with-replacement formula says 0.15%, the hypergeometric one 2%. Each of 40
    index seeds (its tables) serves 100 planted pairs; the standard error is taken across
    seeds, since pairs that share tables are not independent."""
    width, distance, bits, seeds, pairs = 128, 14, 30, 40, 100
    tables = math.ceil(math.log(0.02) / math.log1p(-nd.collision_probability(bits, distance,
                                                                             width)))
    expected = nd.miss_probability(bits, tables, distance, width)
    wrong = (1 - (1 - distance / width) ** bits) ** tables  # bits drawn with replacement
    rng = np.random.default_rng(7)
    rates = []
    for seed in range(seeds):
        hashes = _planted(rng, pairs, width, distance)
        found = nd._indexed_pairs(hashes, np.ones(len(hashes), dtype=bool), distance, None, None,
                                  bits, tables, seed=seed)
        hits = {(i, j) for i, j, d in found if j == i + pairs and d == distance}
        assert all(d <= distance for _, _, d in found)  # verified exactly: nothing further
        rates.append(1 - len(hits) / pairs)
    rate = float(np.mean(rates))
    se = max(float(np.std(rates, ddof=1)) / math.sqrt(seeds),
             math.sqrt(expected * (1 - expected) / (seeds * pairs)))
    assert 0.015 < expected < 0.025 and wrong < 0.002
    assert abs(rate - expected) <= 4 * se, (rate, expected, se)
    assert abs(rate - wrong) > 4 * se, (rate, wrong, se)  # the old formula would fail here
