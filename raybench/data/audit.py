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
from raybench.data.images import open_image
from raybench.errors import DataError

log = logging.getLogger(__name__)

#: Side of the difference hash: ``HASH_SIDE ** 2`` bits.
HASH_SIDE = 16
#: Hamming distance (of 256 bits) at or below which two images count as near duplicates.
NEAR_THRESHOLD = 12


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
        with open_image(io.BytesIO(data), path.name) as img:
            out.fmt, out.mode, out.size = img.format, img.mode, img.size
            if img.format == "JPEG":  # decode at reduced scale: still reads the whole stream
                img.draft("L", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            img.load()
            out.dhash = dhash(ImageOps.exif_transpose(img))
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        out.error = f"unreadable image ({exc})"
    return out


def _probe_all(df: pd.DataFrame, root: Path) -> list[_Probe]:
    probes = []
    for p in df[S.PATH]:
        try:
            probes.append(_probe(mf.resolve_image_path(root, p)))
        except DataError as exc:
            probes.append(_Probe(error=str(exc)))
    return probes


def _near_pairs(hashes: np.ndarray, valid: np.ndarray, threshold: int,
                other: Optional[np.ndarray] = None, other_valid: Optional[np.ndarray] = None
                ) -> list[tuple[int, int, int]]:
    """``(i, j, distance)`` with distance <= threshold; within one set (i < j) or across two."""
    a = np.unpackbits(hashes, axis=1).astype(np.float32)  # (N, bits)
    b = a if other is None else np.unpackbits(other, axis=1).astype(np.float32)
    bv = valid if other is None else other_valid
    pairs = []
    for start in range(0, len(a), 1024):
        block = a[start:start + 1024]
        # Hamming distance of 0/1 vectors: x.(1-y) + (1-x).y
        dist = block @ (1 - b).T + (1 - block) @ b.T
        ii, jj = np.nonzero(dist <= threshold)
        for i, j in zip(ii + start, jj):
            if valid[i] and bv[j] and (other is not None or i < j):
                pairs.append((int(i), int(j), int(dist[i - start, j])))
    return pairs


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
        ok = [p for p in sub if p.size]
        widths = [p.size[0] for p in ok] or [0]
        heights = [p.size[1] for p in ok] or [0]
        out[source] = {
            "images": len(idx),
            "labels": dict(sorted(Counter(df[S.LABEL].iloc[idx]).items())),
            "formats": dict(Counter(p.fmt for p in ok).most_common()),
            "modes": dict(Counter(p.mode for p in ok).most_common()),
            "sizes": dict(Counter(f"{p.size[0]}x{p.size[1]}" for p in ok).most_common(5)),
            "width": [int(min(widths)), int(np.median(widths)), int(max(widths))],
            "height": [int(min(heights)), int(np.median(heights)), int(max(heights))],
        }
    return out


def _problems(df: pd.DataFrame, probes: list[_Probe]) -> tuple[list[dict], list[dict]]:
    unreadable, changed = [], []
    rows = zip(df[S.IMAGE_ID], df[S.PATH], df[S.SHA256], probes)
    for image_id, path, sha, p in rows:
        if p.error:
            unreadable.append({"image_id": image_id, "path": path, "reason": p.error})
        if p.sha256 and p.sha256 != sha:
            changed.append({"image_id": image_id, "path": path})
    return unreadable, changed


def _near(df: pd.DataFrame, probes: list[_Probe], threshold: int,
          other: Optional[tuple[pd.DataFrame, list[_Probe]]] = None) -> list[dict]:
    mat, valid = _hash_matrix(probes)
    if other is None:
        pairs = _near_pairs(mat, valid, threshold)
        df_b = df
    else:
        df_b, probes_b = other
        mat_b, valid_b = _hash_matrix(probes_b)
        pairs = _near_pairs(mat, valid, threshold, mat_b, valid_b)
    return [_pair(df, i, df_b, j, distance=d) for i, j, d in pairs
            if df[S.SHA256].iloc[i] != df_b[S.SHA256].iloc[j]]


def audit_manifest(manifest: str | os.PathLike, against: str | os.PathLike | None = None,
                   near_threshold: int = NEAR_THRESHOLD) -> dict[str, Any]:
    """Audits a manifest (and its overlap with ``against``); returns a JSON-ready dict.

    Keys: ``manifest``, ``images``, ``exact_duplicates`` / ``near_duplicates`` (pairs with ids,
    labels, splits, whether the same patient), ``patients_in_several_splits``, ``unreadable``,
    ``hash_mismatch``, ``per_source`` (labels, formats, modes, sizes) and, with ``against``,
    ``against`` holding the same facts across the two manifests.

    Raises:
        DataError: A manifest cannot be read.
    """
    path = Path(manifest)
    df = mf.read_manifest(path)
    probes = _probe_all(df, mf.manifest_root(path))
    unreadable, changed = _problems(df, probes)
    report: dict[str, Any] = {
        "manifest": str(path), "images": len(df), "near_threshold_bits": near_threshold,
        "hash_bits": HASH_SIDE * HASH_SIDE,
        "exact_duplicates": _exact_pairs(df),
        "near_duplicates": _near(df, probes, near_threshold),
        "patients_in_several_splits": _split_overlap(df),
        "unreadable": unreadable, "hash_mismatch": changed,
        "per_source": _per_source(df, probes),
    }
    if against is not None:
        report["against"] = _audit_against(df, probes, Path(against), near_threshold)
    return report


def _audit_against(df: pd.DataFrame, probes: list[_Probe], other_path: Path,
                   threshold: int) -> dict[str, Any]:
    other = mf.read_manifest(other_path)
    other_probes = _probe_all(other, mf.manifest_root(other_path))
    unreadable, changed = _problems(other, other_probes)
    shared = sorted(set(_patient_key(df)) & set(_patient_key(other)))
    return {
        "manifest": str(other_path), "images": len(other),
        "exact_duplicates": _exact_pairs(df, other),
        "near_duplicates": _near(df, probes, threshold, (other, other_probes)),
        "shared_patients": shared, "unreadable": unreadable, "hash_mismatch": changed,
        "per_source": _per_source(other, other_probes),
    }


def has_leakage(report: dict[str, Any]) -> bool:
    """True when the audit found patients in several splits or content shared across manifests."""
    against = report.get("against") or {}
    return bool(report["patients_in_several_splits"] or against.get("exact_duplicates")
                or against.get("shared_patients"))


def format_report(report: dict[str, Any], limit: int = 10) -> str:
    """Human-readable summary of :func:`audit_manifest`'s result."""
    lines = [f"{report['manifest']}: {report['images']} images"]
    lines += _section("exact duplicate pairs", report["exact_duplicates"], limit)
    lines += _section(f"near duplicate pairs (<= {report['near_threshold_bits']} of "
                      f"{report['hash_bits']} bits)", report["near_duplicates"], limit)
    lines += _section("patients in several splits", report["patients_in_several_splits"], limit)
    lines += _section("unreadable files", report["unreadable"], limit)
    lines += _section("files changed since import (hash mismatch)", report["hash_mismatch"], limit)
    lines += _sources(report["per_source"])
    against = report.get("against")
    if against:
        lines.append(f"against {against['manifest']}: {against['images']} images")
        lines += _section("  identical images in both", against["exact_duplicates"], limit)
        lines += _section("  near-identical images in both", against["near_duplicates"], limit)
        lines += _section("  patients in both", against["shared_patients"], limit)
        lines += _sources(against["per_source"])
    return "\n".join(lines)


def _section(title: str, items: list, limit: int) -> list[str]:
    out = [f"{title}: {len(items)}"]
    for item in items[:limit]:
        if isinstance(item, dict) and "a" in item:
            extra = f" (distance {item['distance']})" if "distance" in item else ""
            out.append(f"  {item['a']}  ==  {item['b']}{extra}")
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
