"""The audit's near-pair step (pairs found, then reported) on 3,600 alike films: 30 groups of
120 near copies, about 214,000 pairs.

Usage: PYTHONPATH=<checkout> python benchmarks/near_pair_tail.py LABEL (it runs the audit of
whichever checkout PYTHONPATH names; an extracted older commit works too). Not a timed test.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench.data import audit

rng = np.random.default_rng(0)
n, groups = 3600, 30
base = rng.integers(0, 2, (groups, 1024), dtype=np.uint8)
bits = base[np.arange(n) % groups].copy()
flip = rng.random(bits.shape) < 0.02  # about 20 bits from the group's hash: pairs ~40 apart
bits ^= flip.astype(np.uint8)
hashes = np.packbits(bits, axis=1)
df = pd.DataFrame({S.IMAGE_ID: [f"d/{i}" for i in range(n)], S.LABEL: ["normal"] * n,
                   S.SOURCE: ["d"] * n, S.PATIENT_ID: [str(i) for i in range(n)],
                   S.SPLIT: [None] * n, S.SHA256: [f"{i:064x}" for i in range(n)]})
if hasattr(audit, "_Probe"):
    probes = [audit._Probe(dhash=h) for h in hashes]
    t = time.perf_counter()
    pairs = audit._near(df, probes, 112)
else:
    from raybench.data.fingerprints import Fingerprint
    probes = [Fingerprint(dhash=h) for h in hashes]
    t = time.perf_counter()
    pairs = audit._near(audit._Rows(df), probes, 112)
print(f"{sys.argv[1]}: {len(pairs)} near pairs in {time.perf_counter() - t:.2f} s")
