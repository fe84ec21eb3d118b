"""Leakage and quality audit of a manifest (optionally against a second one): the report.

Reports exact duplicates (SHA-256 of the bytes), near duplicates (dHash pairs within a Hamming
distance, :mod:`raybench.data.near_duplicates`), patients in more than one split or in both
manifests, unreadable files, files whose bytes no longer match the manifest's hash, class
balance per source and image format / mode / size per source, and the confound verdict
(:mod:`raybench.data.confounds`). Each file's facts are its
:class:`~raybench.data.fingerprints.Fingerprint`, stored by the import or decoded here.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench.data import manifest as mf
from raybench.data.confounds import confounds
from raybench.data.fingerprints import HASH_SIDE, Fingerprint, fingerprint_rows, read_sidecar
from raybench.data.near_duplicates import NEAR_THRESHOLD, near_pairs

def _hash_matrix(probes: list[Fingerprint]) -> tuple[np.ndarray, np.ndarray]:
    width = HASH_SIDE * HASH_SIDE // 8
    mat = np.zeros((len(probes), width), dtype=np.uint8)
    valid = np.zeros(len(probes), dtype=bool)
    for i, p in enumerate(probes):
        if p.dhash is not None:
            mat[i], valid[i] = p.dhash, True
    return mat, valid


class _Rows:
    """A manifest's columns that a duplicate pair reports, as lists (one lookup per pair;
    ``DataFrame.iloc`` per pair was the audit's slowest step with 10^5 pairs)."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self.cols = {c: list(df[c].to_numpy())
                     for c in (S.IMAGE_ID, S.LABEL, S.SOURCE, S.PATIENT_ID, S.SPLIT, S.SHA256)}

    def pair(self, i: int, other: _Rows, j: int, **extra: Any) -> dict:
        a, b = self.cols, other.cols
        return {"a": a[S.IMAGE_ID][i], "b": b[S.IMAGE_ID][j],
                "labels": [a[S.LABEL][i], b[S.LABEL][j]],
                "same_patient": bool(a[S.SOURCE][i] == b[S.SOURCE][j]
                                     and a[S.PATIENT_ID][i] == b[S.PATIENT_ID][j]),
                "splits": [a[S.SPLIT][i], b[S.SPLIT][j]], **extra}


def _exact_pairs(rows_a: _Rows, rows_b: Optional[_Rows] = None) -> list[dict]:
    """Pairs of rows with the same content hash (within ``rows_a``, or ``rows_a`` x ``rows_b``)."""
    pairs = []
    sha_a = rows_a.cols[S.SHA256]
    if rows_b is None:
        for _, idx in rows_a.df.groupby(S.SHA256, sort=True).indices.items():
            idx = sorted(idx)
            pairs += [rows_a.pair(i, rows_a, j, sha256=sha_a[i])
                      for n, i in enumerate(idx) for j in idx[n + 1:]]
        return pairs
    where_b = rows_b.df.groupby(S.SHA256).indices
    for i, sha in enumerate(sha_a):
        pairs += [rows_a.pair(i, rows_b, j, sha256=sha) for j in where_b.get(sha, [])]
    return pairs


def _patient_key(df: pd.DataFrame) -> pd.Series:
    return df[S.SOURCE] + "/" + df[S.PATIENT_ID]


def _split_overlap(df: pd.DataFrame) -> list[dict]:
    has = df[df[S.SPLIT].notna()]
    splits = has.groupby(_patient_key(has))[S.SPLIT].agg(lambda s: sorted(set(s)))
    return [{"patient": k, "splits": v} for k, v in splits.items() if len(v) > 1]


def _per_source(df: pd.DataFrame, probes: list[Fingerprint]) -> dict[str, dict]:
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


def _problems(df: pd.DataFrame, probes: list[Fingerprint]) -> tuple[list[dict], list[dict]]:
    unreadable, changed = [], []
    rows = zip(df[S.IMAGE_ID], df[S.PATH], df[S.SHA256], probes, strict=True)
    for image_id, path, sha, p in rows:
        if p.error:
            unreadable.append({S.IMAGE_ID: image_id, "path": path, "reason": p.error})
        if p.sha256 and p.sha256 != sha:
            changed.append({S.IMAGE_ID: image_id, "path": path})
    return unreadable, changed


def _near(rows: _Rows, probes: list[Fingerprint], threshold: int,
          other: Optional[tuple[_Rows, list[Fingerprint]]] = None) -> list[dict]:
    mat, valid = _hash_matrix(probes)
    if other is None:
        pairs = near_pairs(mat, valid, threshold)
        rows_b = rows
    else:
        rows_b, probes_b = other
        mat_b, valid_b = _hash_matrix(probes_b)
        pairs = near_pairs(mat, valid, threshold, mat_b, valid_b)
    sha_a, sha_b = rows.cols[S.SHA256], rows_b.cols[S.SHA256]
    return [rows.pair(i, rows_b, j, distance=d) for i, j, d in pairs if sha_a[i] != sha_b[j]]


def _fingerprints(path: Path, df: pd.DataFrame, address: Optional[str]) -> list[Fingerprint]:
    """Every row's fingerprint: stored by the import where the bytes match, else decoded."""
    return fingerprint_rows(df, mf.manifest_root(path), address, read_sidecar(path))


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
    probes = _fingerprints(path, df, address)
    rows = _Rows(df)
    unreadable, changed = _problems(df, probes)
    report: dict[str, Any] = {
        "manifest": str(path), "images": len(df), "near_threshold_bits": near_threshold,
        "hash_bits": HASH_SIDE * HASH_SIDE,
        "exact_duplicates": _exact_pairs(rows),
        "near_duplicates": _near(rows, probes, near_threshold),
        "patients_in_several_splits": _split_overlap(df),
        "unreadable": unreadable, "hash_mismatch": changed,
        "per_source": _per_source(df, probes),
        "confounds": confounds(df, probes),
    }
    report["label_conflicts"] = label_conflicts(report["exact_duplicates"]
                                                + report["near_duplicates"])
    if against is not None:
        report["against"] = _audit_against(rows, probes, Path(against), near_threshold, address)
    return report


def _audit_against(rows: _Rows, probes: list[Fingerprint], other_path: Path,
                   threshold: int, address: Optional[str] = None) -> dict[str, Any]:
    other = mf.read_manifest(other_path)
    other_probes = _fingerprints(other_path, other, address)
    other_rows = _Rows(other)
    unreadable, changed = _problems(other, other_probes)
    shared = sorted(set(_patient_key(rows.df)) & set(_patient_key(other)))
    out: dict[str, Any] = {
        "manifest": str(other_path), "images": len(other),
        "exact_duplicates": _exact_pairs(rows, other_rows),
        "near_duplicates": _near(rows, probes, threshold, (other_rows, other_probes)),
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


def _verdict(conf: dict[str, Any]) -> list[str]:
    lines = conf["verdict"]
    head = (f"confound verdict (a label a rule on one property tells apart with balanced "
            f"accuracy >= {conf['min_balanced_accuracy']:g}): {len(lines)} label(s)")
    return [head] + [f"  {line}" for line in lines]
