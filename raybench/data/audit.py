"""Leakage and quality audit of a manifest (optionally against a second one).

Reports exact duplicates (SHA-256 of the bytes), near duplicates (a 256-bit difference hash,
dHash, compared by Hamming distance), patients in more than one split or in both manifests,
unreadable files, files whose bytes no longer match the manifest's hash, class balance per
source and image format / mode / size per source. The last two expose source-label confounding
(e.g. every COVID image a large PNG from one hospital, every normal a 224 px JPEG).
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from raybench import schema as S
from raybench.data import manifest as mf
from raybench.data.images import open_image, probe_dicom
from raybench.errors import DataError

log = logging.getLogger(__name__)

#: Side of the difference hash: ``HASH_SIDE ** 2`` bits. 1024 bits (not 256) because the 256-bit
#: hash could not tell distinct films apart from copies: on the real set (Kermany + Hannover,
#: 5,475 images, 15.0 M pairs of different patients) distinct pairs came as close as 13 of 256
#: bits while 1% of re-encoded / rescaled copies were further than 11 (the issue's real
#: cross-hospital pair sat at 11 against a threshold of 12). With 1024 bits the two separate.
HASH_SIDE = 32
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
#: A label counts as determined by a property (source, format, ...) when a rule that looks at
#: that property alone tells the label from all other labels with this balanced accuracy.
CONFOUND_BALANCED_ACCURACY = 0.95


@dataclass
class _Probe:
    """What one read of an image file tells: header facts, dHash, problems."""

    fmt: Optional[str] = None
    mode: Optional[str] = None
    size: Optional[tuple[int, int]] = None
    dhash: Optional[np.ndarray] = None  # (HASH_SIDE**2 / 8,) uint8 packed bits
    sha256: Optional[str] = None
    error: Optional[str] = None


def dhash(img: Image.Image, side: int = HASH_SIDE) -> np.ndarray:
    """Difference hash: sign of horizontal gradients on a (side, side + 1) thumbnail, packed."""
    small = img.convert("L").resize((side + 1, side), Image.Resampling.BOX)
    px = np.asarray(small, dtype=np.int16)
    return np.packbits((px[:, 1:] > px[:, :-1]).ravel())


def _draft_size(size: tuple[int, int]) -> tuple[int, int]:
    """The smallest JPEG decode that keeps >= 4 pixels per hash cell (so pixel noise averages
    out); 1/8 scale when the image is large enough. A 1/8-scale decode of a 224 px film is
    28 px, smaller than the 33 x 32 hash grid: its hash was mostly interpolation."""
    least = 4 * (HASH_SIDE + 1)
    return (min(size[0], max(size[0] // 8, least)), min(size[1], max(size[1] // 8, least)))


def _probe(path: Path) -> _Probe:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _Probe(error=f"cannot read file ({exc.strerror or exc})")
    out = _Probe(sha256=hashlib.sha256(data).hexdigest())
    if not data:
        out.error = "empty file (0 bytes)"
        return out
    try:
        shown = probe_dicom(data, path.name)
        if shown is not None:
            img, out.mode = shown
            out.fmt, out.size, out.dhash = "DICOM", img.size, dhash(img)
            return out
        with open_image(io.BytesIO(data), path.name) as img:
            out.fmt, out.mode, out.size = img.format, img.mode, img.size
            if img.format == "JPEG":  # decode at reduced scale: still reads the whole stream
                img.draft("L", _draft_size(img.size))
            img.load()
            out.dhash = dhash(ImageOps.exif_transpose(img))
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        out.error = f"unreadable image ({exc})"
    return out


#: Files per Ray task of an audit (each is read whole and decoded at reduced scale).
PROBE_CHUNK = 64


def _probe_all(df: pd.DataFrame, root: Path, address: Optional[str] = None) -> list[_Probe]:
    """:func:`_probe` of every row, over the Ray cluster in chunks, in row order."""
    from raybench.data.prepare import map_chunks

    probes: list[Optional[_Probe]] = []
    paths: list[Path] = []
    for p in df[S.PATH]:
        try:
            paths.append(mf.resolve_image_path(root, p))
            probes.append(None)
        except DataError as exc:
            probes.append(_Probe(error=str(exc)))
    found = iter(map_chunks(_probe, paths, chunk_size=PROBE_CHUNK, what="audit",
                            address=address))
    return [p if p is not None else next(found) for p in probes]


def file_dhash(path: Path) -> Optional[np.ndarray]:
    """The dHash of one image file (None when it cannot be read), as the audit computes it."""
    return _probe(path).dhash


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
    pairs = []
    for start in range(0, len(a), 1024):
        block = a[start:start + 1024]
        # Hamming distance of 0/1 vectors: |x| + |y| - 2 x.y (one matmul; exact in float32)
        dist = na[start:start + 1024, None] + nb[None, :] - 2 * (block @ b.T)
        ii, jj = np.nonzero(dist <= threshold + 0.5)
        for i, j in zip(ii + start, jj, strict=True):
            if valid[i] and bv[j] and (other is not None or i < j):
                pairs.append((int(i), int(j), int(round(float(dist[i - start, j])))))
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
    return [(int(i[k]), int(j[k]), int(dist[k])) for k in order]


def _hash_matrix(probes: list[_Probe]) -> tuple[np.ndarray, np.ndarray]:
    width = HASH_SIDE * HASH_SIDE // 8
    mat = np.zeros((len(probes), width), dtype=np.uint8)
    valid = np.zeros(len(probes), dtype=bool)
    for i, p in enumerate(probes):
        if p.dhash is not None:
            mat[i], valid[i] = p.dhash, True
    return mat, valid


def _pair(df_a: pd.DataFrame, i: int, df_b: pd.DataFrame, j: int, **extra: Any) -> dict:
    ra, rb = df_a.iloc[i], df_b.iloc[j]
    return {"a": ra[S.IMAGE_ID], "b": rb[S.IMAGE_ID], "labels": [ra[S.LABEL], rb[S.LABEL]],
            "same_patient": bool(ra[S.SOURCE] == rb[S.SOURCE]
                                 and ra[S.PATIENT_ID] == rb[S.PATIENT_ID]),
            "splits": [ra[S.SPLIT], rb[S.SPLIT]], **extra}


def _exact_pairs(df_a: pd.DataFrame, df_b: Optional[pd.DataFrame] = None) -> list[dict]:
    """Pairs of rows with the same content hash (within ``df_a``, or ``df_a`` x ``df_b``)."""
    pairs = []
    if df_b is None:
        for _, idx in df_a.groupby(S.SHA256, sort=True).indices.items():
            idx = sorted(idx)
            pairs += [_pair(df_a, i, df_a, j, sha256=df_a[S.SHA256].iloc[i])
                      for n, i in enumerate(idx) for j in idx[n + 1:]]
        return pairs
    where_b = df_b.groupby(S.SHA256).indices
    for i, sha in enumerate(df_a[S.SHA256]):
        pairs += [_pair(df_a, i, df_b, j, sha256=sha) for j in where_b.get(sha, [])]
    return pairs


def _patient_key(df: pd.DataFrame) -> pd.Series:
    return df[S.SOURCE] + "/" + df[S.PATIENT_ID]


def _split_overlap(df: pd.DataFrame) -> list[dict]:
    has = df[df[S.SPLIT].notna()]
    splits = has.groupby(_patient_key(has))[S.SPLIT].agg(lambda s: sorted(set(s)))
    return [{"patient": k, "splits": v} for k, v in splits.items() if len(v) > 1]


def _per_source(df: pd.DataFrame, probes: list[_Probe]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for source, idx in sorted(df.groupby(S.SOURCE).indices.items()):
        sub = [probes[i] for i in idx]
        sizes = [p.size for p in sub if p.size]
        ok = [p for p in sub if p.size]
        widths = [w for w, _ in sizes] or [0]
        heights = [h for _, h in sizes] or [0]
        out[str(source)] = {
            "images": len(idx),
            "labels": dict(sorted(Counter(df[S.LABEL].iloc[idx]).items())),
            "formats": dict(Counter(p.fmt for p in ok).most_common()),
            "modes": dict(Counter(p.mode for p in ok).most_common()),
            "sizes": dict(Counter(f"{w}x{h}" for w, h in sizes).most_common(5)),
            "width": [int(min(widths)), int(np.median(widths)), int(max(widths))],
            "height": [int(min(heights)), int(np.median(heights)), int(max(heights))],
        }
    return out


def _problems(df: pd.DataFrame, probes: list[_Probe]) -> tuple[list[dict], list[dict]]:
    unreadable, changed = [], []
    rows = zip(df[S.IMAGE_ID], df[S.PATH], df[S.SHA256], probes, strict=True)
    for image_id, path, sha, p in rows:
        if p.error:
            unreadable.append({S.IMAGE_ID: image_id, "path": path, "reason": p.error})
        if p.sha256 and p.sha256 != sha:
            changed.append({S.IMAGE_ID: image_id, "path": path})
    return unreadable, changed


def _near(df: pd.DataFrame, probes: list[_Probe], threshold: int,
          other: Optional[tuple[pd.DataFrame, list[_Probe]]] = None) -> list[dict]:
    mat, valid = _hash_matrix(probes)
    if other is None:
        pairs = near_pairs(mat, valid, threshold)
        df_b = df
    else:
        df_b, probes_b = other
        mat_b, valid_b = _hash_matrix(probes_b)
        pairs = near_pairs(mat, valid, threshold, mat_b, valid_b)
    return [_pair(df, i, df_b, j, distance=d) for i, j, d in pairs
            if df[S.SHA256].iloc[i] != df_b[S.SHA256].iloc[j]]


def audit_manifest(manifest: str | os.PathLike, against: str | os.PathLike | None = None,
                   near_threshold: Optional[int] = None, address: Optional[str] = None
                   ) -> dict[str, Any]:
    """Audits a manifest (and its overlap with ``against``); returns a JSON-ready dict.

    Keys: ``manifest``, ``images``, ``exact_duplicates`` / ``near_duplicates`` (pairs with ids,
    labels, splits, whether the same patient), ``label_conflicts`` (those pairs whose labels
    differ), ``patients_in_several_splits``, ``unreadable``, ``hash_mismatch``, ``per_source``
    (labels, formats, modes, sizes), ``confounds`` (see :func:`confounds`) and, with
    ``against``, ``against`` holding the same facts across the two manifests.

    Raises:
        DataError: A manifest cannot be read.
    """
    near_threshold = NEAR_THRESHOLD if near_threshold is None else near_threshold
    path = Path(manifest)
    df = mf.read_manifest(path)
    probes = _probe_all(df, mf.manifest_root(path), address)
    unreadable, changed = _problems(df, probes)
    report: dict[str, Any] = {
        "manifest": str(path), "images": len(df), "near_threshold_bits": near_threshold,
        "hash_bits": HASH_SIDE * HASH_SIDE,
        "exact_duplicates": _exact_pairs(df),
        "near_duplicates": _near(df, probes, near_threshold),
        "patients_in_several_splits": _split_overlap(df),
        "unreadable": unreadable, "hash_mismatch": changed,
        "per_source": _per_source(df, probes),
        "confounds": confounds(df, probes),
    }
    report["label_conflicts"] = label_conflicts(report["exact_duplicates"]
                                                + report["near_duplicates"])
    if against is not None:
        report["against"] = _audit_against(df, probes, Path(against), near_threshold, address)
    return report


def _audit_against(df: pd.DataFrame, probes: list[_Probe], other_path: Path,
                   threshold: int, address: Optional[str] = None) -> dict[str, Any]:
    other = mf.read_manifest(other_path)
    other_probes = _probe_all(other, mf.manifest_root(other_path), address)
    unreadable, changed = _problems(other, other_probes)
    shared = sorted(set(_patient_key(df)) & set(_patient_key(other)))
    out: dict[str, Any] = {
        "manifest": str(other_path), "images": len(other),
        "exact_duplicates": _exact_pairs(df, other),
        "near_duplicates": _near(df, probes, threshold, (other, other_probes)),
        "shared_patients": shared, "unreadable": unreadable, "hash_mismatch": changed,
        "per_source": _per_source(other, other_probes),
        "confounds": confounds(other, other_probes),
    }
    out["label_conflicts"] = label_conflicts(out["exact_duplicates"] + out["near_duplicates"])
    return out


def label_conflicts(pairs: list[dict]) -> list[dict]:
    """The duplicate pairs (exact or near) whose two images carry different labels."""
    return [p for p in pairs if p["labels"][0] != p["labels"][1]]


def strict_failures(report: dict[str, Any]) -> list[str]:
    """Why ``audit --strict`` fails: duplicates across splits or manifests, leaked patients,
    label conflicts, confounds (empty when none)."""
    against = report.get("against") or {}
    pairs = report["exact_duplicates"] + report["near_duplicates"]
    across = [p for p in pairs if p["splits"][0] and p["splits"][1]
              and p["splits"][0] != p["splits"][1]]
    counts = {
        "duplicate pair(s) across splits": len(across),
        "duplicate pair(s) across the two manifests": len(against.get("exact_duplicates", []))
        + len(against.get("near_duplicates", [])),
        "patient(s) in several splits": len(report["patients_in_several_splits"]),
        "patient(s) in both manifests": len(against.get("shared_patients", [])),
        "label conflict(s)": len(report["label_conflicts"])
        + len(against.get("label_conflicts", [])),
        "confounded label(s)": len(report["confounds"]["verdict"])
        + len((against.get("confounds") or {}).get("verdict", [])),
    }
    return [f"{n} {what}" for what, n in counts.items() if n]


def format_report(report: dict[str, Any], limit: int = 10) -> str:
    """Human-readable summary of :func:`audit_manifest`'s result."""
    lines = [f"{report['manifest']}: {report['images']} images"]
    lines += _section("exact duplicate pairs", report["exact_duplicates"], limit)
    lines += _section(f"near duplicate pairs (<= {report['near_threshold_bits']} of "
                      f"{report['hash_bits']} bits)", report["near_duplicates"], limit)
    lines += _section("label conflicts (duplicates with different labels)",
                      report["label_conflicts"], limit)
    lines += _section("patients in several splits", report["patients_in_several_splits"], limit)
    lines += _section("unreadable files", report["unreadable"], limit)
    lines += _section("files changed since import (hash mismatch)", report["hash_mismatch"], limit)
    lines += _sources(report["per_source"])
    lines += _verdict(report["confounds"])
    against = report.get("against")
    if against:
        lines.append(f"against {against['manifest']}: {against['images']} images")
        lines += _section("  identical images in both", against["exact_duplicates"], limit)
        lines += _section("  near-identical images in both", against["near_duplicates"], limit)
        lines += _section("  label conflicts", against["label_conflicts"], limit)
        lines += _section("  patients in both", against["shared_patients"], limit)
        lines += _sources(against["per_source"])
        lines += _verdict(against["confounds"])
    return "\n".join(lines)


def _section(title: str, items: list, limit: int) -> list[str]:
    out = [f"{title}: {len(items)}"]
    for item in items[:limit]:
        if isinstance(item, dict) and "a" in item:
            extra = f", distance {item['distance']}" if "distance" in item else ""
            (la, lb), (sa, sb) = item["labels"], item["splits"]
            where = f"; splits {sa}/{sb}" if sa or sb else ""
            who = "same" if item["same_patient"] else "different"
            out.append(f"  {item['a']} [{la}]  ==  {item['b']} [{lb}]  ({who} patient{extra}"
                       f"{where})")
        else:
            out.append(f"  {item}")
    if len(items) > limit:
        out.append(f"  ... {len(items) - limit} more (--json lists all)")
    return out


def _sources(per_source: dict[str, dict]) -> list[str]:
    out = ["per source:"]
    for source, info in per_source.items():
        labels = ", ".join(f"{k} {v}" for k, v in info["labels"].items())
        fmts = ", ".join(f"{k} {v}" for k, v in info["formats"].items())
        modes = ", ".join(f"{k} {v}" for k, v in info["modes"].items())
        out.append(f"  {source}: {info['images']} images; labels {labels}; formats {fmts}; "
                   f"modes {modes}; width {info['width'][0]}-{info['width'][2]}, "
                   f"height {info['height'][0]}-{info['height'][2]}")
    return out


# --- confound verdict -------------------------------------------------------------------------

#: Properties a label may be confounded with; ``size`` is the longer side in pixels.
PROPERTIES: tuple[str, ...] = (S.SOURCE, "format", "mode", "bit_depth", "size")
_BITS = {"1": 1, "L": 8, "P": 8, "LA": 8, "PA": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8,
         "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


def _property_table(df: pd.DataFrame, probes: list[_Probe]) -> pd.DataFrame:
    """One row per readable image: label and the properties of :data:`PROPERTIES`."""
    ok = [i for i, p in enumerate(probes) if p.size]
    return pd.DataFrame({
        S.LABEL: df[S.LABEL].iloc[ok].to_numpy(), S.SOURCE: df[S.SOURCE].iloc[ok].to_numpy(),
        "format": [probes[i].fmt for i in ok], "mode": [probes[i].mode for i in ok],
        "bit_depth": [f"{_BITS.get(probes[i].mode or '', 8)}-bit" for i in ok],
        "size": [max(probes[i].size or (0, 0)) for i in ok]})


def _lookup_score(values: pd.Series, is_label: np.ndarray) -> float:
    """Balanced accuracy of the best rule "label iff the value is in a set" (categorical)."""
    pos = values[is_label].value_counts(normalize=True)
    neg = values[~is_label].value_counts(normalize=True).reindex(pos.index, fill_value=0.0)
    chosen = pos > neg  # the rule that maximises sensitivity + specificity
    return float(0.5 * (pos[chosen].sum() + 1.0 - neg[chosen].sum()))


def _stump_score(sizes: np.ndarray, is_label: np.ndarray) -> float:
    """Balanced accuracy of the best rule "label iff size > t" (or <= t) over thresholds t."""
    cuts = np.unique(sizes)
    pos, neg = np.sort(sizes[is_label]), np.sort(sizes[~is_label])
    above_pos = 1.0 - np.searchsorted(pos, cuts, side="right") / len(pos)
    above_neg = 1.0 - np.searchsorted(neg, cuts, side="right") / len(neg)
    bal = 0.5 * (above_pos + 1.0 - above_neg)
    return float(max(bal.max(), (1.0 - bal).max()))


def _top(values: pd.Series, prop: str) -> dict[str, Any]:
    if prop == "size":
        return {"value": f"{int(np.median(values))} px (median longer side)",
                "range": [int(values.min()), int(values.max())]}
    counts = values.value_counts()
    return {"value": str(counts.index[0]), "share": round(float(counts.iloc[0] / len(values)), 4)}


def _label_confound(table: pd.DataFrame, label: str) -> dict[str, Any]:
    is_label = (table[S.LABEL] == label).to_numpy()
    props: dict[str, Any] = {}
    for prop in PROPERTIES:
        col = table[prop]
        score = (_stump_score(col.to_numpy(), is_label) if prop == "size"
                 else _lookup_score(col, is_label))
        props[prop] = {"balanced_accuracy": round(score, 4), "label": _top(col[is_label], prop),
                       "others": _top(col[~is_label], prop)}
    by = [p for p in PROPERTIES if props[p]["balanced_accuracy"] >= CONFOUND_BALANCED_ACCURACY]
    return {"images": int(is_label.sum()), "determined_by": by, "properties": props}


def confounds(df: pd.DataFrame, probes: list[_Probe]) -> dict[str, Any]:
    """For each label, whether its source or image properties (nearly) determine it.

    A label is *determined by* a property when a rule that looks only at that property (for
    source, format, mode and bit depth: "the value is one of these"; for the longer side in
    pixels: "above / below a threshold") tells the label's images from all other labels'
    images with balanced accuracy >= :data:`CONFOUND_BALANCED_ACCURACY`. A model can then
    score well on that label without looking at the lungs.

    Returns:
        ``{"min_balanced_accuracy", "labels": {label: {images, determined_by, properties:
        {prop: {balanced_accuracy, label: {value, share}, others: {value, share}}}}},
        "verdict": [one line per determined label]}``.
    """
    table = _property_table(df, probes)
    labels = sorted(table[S.LABEL].unique())
    out: dict[str, Any] = {"min_balanced_accuracy": CONFOUND_BALANCED_ACCURACY, "labels": {},
                           "verdict": []}
    if len(labels) < 2:
        return out
    for label in labels:
        info = _label_confound(table, label)
        out["labels"][label] = info
        if info["determined_by"]:
            out["verdict"].append(_verdict_line(label, info))
    return out


def _describe(side: dict[str, Any], prop: str) -> str:
    if prop == "size":
        return side["value"].split(" (")[0]
    prefix = "from " if prop == S.SOURCE else ""
    return f"{side['share']:.0%} {prefix}{side['value']}"


def _verdict_line(label: str, info: dict[str, Any]) -> str:
    """E.g. ``covid19: 100% from hannover (100% PNG, 640 px); other labels: 100% from
    kermany (100% JPEG, 224 px); determined by source, format, size``."""
    by = info["determined_by"]
    main = [p for p in by if p == S.SOURCE] or by[:1]
    rest = [p for p in by if p not in main]

    def side(key: str) -> str:
        first = ", ".join(_describe(info["properties"][p][key], p) for p in main)
        more = ", ".join(_describe(info["properties"][p][key], p) for p in rest)
        return f"{first} ({more})" if more else first

    return (f"{label}: {side('label')}; other labels: {side('others')}; determined by "
            f"{', '.join(p.replace('_', ' ') for p in by)}")


def _verdict(conf: dict[str, Any]) -> list[str]:
    lines = conf["verdict"]
    head = (f"confound verdict (a label a rule on one property tells apart with balanced "
            f"accuracy >= {conf['min_balanced_accuracy']:g}): {len(lines)} label(s)")
    return [head] + [f"  {line}" for line in lines]
