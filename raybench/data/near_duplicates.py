"""Near duplicates: pairs of images whose difference hashes (dHash, see
:mod:`raybench.data.fingerprints`) lie within a Hamming distance, found by comparing every pair
when that is cheap and through a bit-sampling hash-table index otherwise.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

#: Hamming distance (of 1024 bits) at or below which two images count as near duplicates.
#: Chosen from measured distances (``benchmarks/near_duplicates.py``, real images): copies of
#: 300 sampled films after photometric edits (rescale, JPEG q50, brightness +15%, contrast
#: +25%, gamma, equalise, a burnt-in marker; 2,400 copies) lie at median 16, 99th percentile 56,
#: maximum 102; the closest pair of distinct films of different patients lies at 144 (5 pairs
#: <= 160), and no same-patient follow-up film is closer than that either. 112 catches every
#: measured copy with 10 bits to spare and stays 32 bits below the closest distinct pair.
#: Geometric edits (a 3% crop: median 184; a 2 degree rotation: median 139) are beyond a
#: global hash: they are not found at any threshold that spares distinct films.
NEAR_THRESHOLD = 112
#: Up to this many pairs ``near_pairs`` compares every pair (exact, and fastest when small).
BRUTE_FORCE_PAIRS = 50_000_000
#: Chance that the hash-table search misses one given pair at the threshold distance.
MISS_PROBABILITY = 1e-9
#: More tables than this (a threshold near half the bits) and all pairs are compared instead.
MAX_TABLES = 1000


def near_pairs(hashes: np.ndarray, valid: np.ndarray, threshold: int,
                other: Optional[np.ndarray] = None, other_valid: Optional[np.ndarray] = None
                ) -> list[tuple[int, int, int]]:
    """``(i, j, distance)`` with distance <= threshold; within one set (i < j) or across two.

    Sorted by ``(i, j)``. Small sets compare every pair; large ones look up candidates in
    bit-sampling hash tables (:func:`_table_plan`) and verify each candidate's exact distance,
    so no pair further than ``threshold`` is reported and a pair within it is missed with
    probability at most :data:`MISS_PROBABILITY`.
    """
    n_b = len(hashes) if other is None else len(other)
    bits, tables = _table_plan(max(len(hashes), n_b), threshold, hashes.shape[1] * 8)
    if len(hashes) * n_b <= BRUTE_FORCE_PAIRS or tables > MAX_TABLES:
        return _all_pairs(hashes, valid, threshold, other, other_valid)
    return _indexed_pairs(hashes, valid, threshold, other, other_valid, bits, tables)


def _all_pairs(hashes: np.ndarray, valid: np.ndarray, threshold: int,
               other: Optional[np.ndarray] = None, other_valid: Optional[np.ndarray] = None
               ) -> list[tuple[int, int, int]]:
    """Every pair compared: ``N x M`` distances in blocks of 1,024 rows."""
    a = np.unpackbits(hashes, axis=1).astype(np.float32)  # (N, bits)
    b = a if other is None else np.unpackbits(other, axis=1).astype(np.float32)
    bv = valid if other_valid is None else other_valid
    na, nb = a.sum(axis=1), b.sum(axis=1)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(a), 1024):
        block = a[start:start + 1024]
        first = start if other is None else 0  # within one set only j >= i can pair
        # Hamming distance of 0/1 vectors: |x| + |y| - 2 x.y (one matmul; exact in float32)
        dist = na[start:start + 1024, None] + nb[None, first:] - 2 * (block @ b[first:].T)
        ii, jj = np.nonzero(dist <= threshold + 0.5)
        keep = valid[ii + start] & bv[jj + first]
        if other is None:
            keep &= ii < jj
        ii, jj = ii[keep], jj[keep]
        dd = np.rint(dist[ii, jj]).astype(np.int64)
        pairs += zip((ii + start).tolist(), (jj + first).tolist(), dd.tolist(), strict=True)
    return pairs


def _table_plan(n: int, threshold: int, width: int) -> tuple[int, int]:
    """Bits per table key and tables for bit-sampling LSH (Indyk & Motwani 1998).

    A key of ``k`` sampled bits collides for two hashes ``r`` bits apart with probability
    ``p = (1 - r / width) ** k``; with ``L`` independent tables a pair at the threshold is missed
    with probability ``(1 - p) ** L``, so ``L = ln(miss) / ln(1 - p)``. ``k ~ log2(n) + 1`` keeps
    random (far) pairs' collisions at about ``n / 4`` per table.
    """
    k = int(min(30, max(12, math.ceil(math.log2(max(n, 2))) + 1)))
    p = (1.0 - min(threshold, width) / width) ** k
    if p <= 0.0:
        return k, MAX_TABLES + 1
    if p >= 1.0:
        return k, 1
    return k, int(math.ceil(math.log(MISS_PROBABILITY) / math.log1p(-p)))


def _bucket_pairs(keys: np.ndarray, side: np.ndarray, across: bool) -> np.ndarray:
    """Index pairs ``(x, y)`` of equal keys (x of side 0, y of side 1 when ``across``),
    as an ``(M, 2)`` array of positions in ``keys``."""
    order = np.argsort(keys)
    sk = keys[order]
    found = []
    for d in range(1, len(sk)):
        same = np.nonzero(sk[:-d] == sk[d:])[0]
        if not len(same):
            break  # runs of equal keys are contiguous: none is longer than d
        x, y = order[same], order[same + d]
        if across:
            keep = side[x] != side[y]
            x, y = x[keep], y[keep]
            x, y = np.where(side[x] == 0, x, y), np.where(side[x] == 0, y, x)
        found.append(np.stack([np.minimum(x, y), np.maximum(x, y)] if not across else [x, y], 1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def _verify(pool: np.ndarray, x: np.ndarray, y: np.ndarray, threshold: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate pairs within ``threshold``, with their exact distances (in blocks, so
    memory holds 2^20 pairs' hashes at a time)."""
    keep_x, keep_y, keep_d = [], [], []
    for s in range(0, len(x), 1 << 20):
        bx, by = x[s:s + (1 << 20)], y[s:s + (1 << 20)]
        if pool.shape[1] % 8 or not hasattr(np, "bitwise_count"):  # numpy < 2.0
            d = np.unpackbits(pool[bx] ^ pool[by], axis=1).sum(axis=1, dtype=np.int64)
        else:
            words = pool.view(np.uint64)
            d = np.bitwise_count(words[bx] ^ words[by]).sum(axis=1, dtype=np.int64)
        ok = d <= threshold
        keep_x.append(bx[ok])
        keep_y.append(by[ok])
        keep_d.append(d[ok])
    empty = np.empty(0, dtype=np.int64)
    return (np.concatenate(keep_x) if keep_x else empty, np.concatenate(keep_y) if keep_y
            else empty, np.concatenate(keep_d) if keep_d else empty)


def _distinct(codes: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort: faster here than ``np.unique``'s hash table)."""
    codes = np.sort(codes)
    return codes[np.concatenate([[True], codes[1:] != codes[:-1]])] if len(codes) else codes


def _indexed_pairs(hashes: np.ndarray, valid: np.ndarray, threshold: int,
                   other: Optional[np.ndarray], other_valid: Optional[np.ndarray],
                   bits: int, tables: int) -> list[tuple[int, int, int]]:
    """Candidates from ``tables`` hash tables of ``bits`` sampled bits, verified exactly."""
    ia = np.nonzero(valid)[0]
    ib = ia if other is None else np.nonzero(valid if other_valid is None else other_valid)[0]
    pool = hashes[ia] if other is None else np.concatenate([hashes[ia], other[ib]])
    side = np.zeros(len(pool), dtype=np.int8)
    side[len(ia):] = 1
    bit_rows = np.unpackbits(np.ascontiguousarray(pool.T), axis=0)  # (width, n): a bit a row
    rng = np.random.default_rng(0)
    codes: list[np.ndarray] = []
    n = np.int64(len(pool))
    for _ in range(tables):
        cols = rng.choice(bit_rows.shape[0], bits, replace=False)
        keys = np.zeros(len(pool), dtype=np.uint32)
        for shift, col in enumerate(cols):
            keys |= bit_rows[col].astype(np.uint32) << np.uint32(shift)
        pairs = _bucket_pairs(keys, side, other is not None)
        codes.append(pairs[:, 0].astype(np.int64) * n + pairs[:, 1])
        if len(codes) >= 32:
            codes = [_distinct(np.concatenate(codes))]
    cand = _distinct(np.concatenate(codes)) if codes else np.empty(0, dtype=np.int64)
    x, y, dist = _verify(pool, cand // n, cand % n, threshold)
    i = ia[x]
    j = ia[y] if other is None else ib[y - len(ia)]
    order = np.lexsort((j, i))
    return list(zip(i[order].tolist(), j[order].tolist(), dist[order].tolist(), strict=True))


