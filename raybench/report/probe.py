"""The report's source-probe section (see :mod:`raybench.data.probe`): whenever the sweep's
data (its manifest, and a ``test_from`` manifest file) holds two or more sources."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import pandas as pd
import yaml

from raybench import schema as S
from raybench.config.spec import DEFAULT_CACHE_DIR
from raybench.errors import RaybenchError
from raybench.report.blocks import Block, Table, fmt
from raybench.results.loading import Results

log = logging.getLogger(__name__)


def _manifests(res: Results, sweep: str) -> tuple[list[Path], dict]:
    """The sweep's local manifest files (training data, then ``test_from``) and its data spec."""
    text = res.store.read_spec(sweep)
    spec = yaml.safe_load(text) if text else None
    data = (spec or {}).get("data") or {}
    paths = [data.get("manifest"), data.get(S.TEST_FROM)]  # the spec key is the column name
    found = [Path(p) for p in paths if isinstance(p, str) and p.endswith(".parquet")
             and Path(p).is_file()]
    return found, data


def _frames(paths: list[Path], allow_outside: bool) -> list[tuple[pd.DataFrame, list[Path]]]:
    from raybench.data import manifest as mf

    frames = []
    for path in paths:
        df = mf.read_manifest(path)
        frames.append((df, mf.image_files(path, list(df[S.PATH]), allow_outside)))
    return frames


def _size(res: Results) -> int:
    sizes = res.runs[S.IMAGE_SIZE].dropna().tolist() if S.IMAGE_SIZE in res.runs else []
    return int(sizes[0]) if sizes else 224


def probe_blocks(res: Results, sweep: str, n_boot: int = 1000) -> list[Block]:
    """The probe's AUCs per source and its verdict, or nothing for a single-source sweep."""
    from raybench.data.probe import PREDICTABLE_AUC, probe_frames

    paths, data = _manifests(res, sweep)
    try:
        frames = _frames(paths, bool(data.get("allow_outside_root")))
        if len({str(s) for df, _ in frames for s in df[S.SOURCE].dropna()}) < 2:
            return []
        probe = probe_frames(frames, _size(res), data.get("cache_dir") or DEFAULT_CACHE_DIR,
                             n_boot)
    except (RaybenchError, OSError) as exc:
        log.warning("no source probe for %s: %s", sweep, exc)
        return []
    verdict: Optional[str] = probe.verdict
    return ["## Source probe",
            f"Can the source (hospital) be told from the pixels alone, as the models see them "
            f"({_size(res)} px, decoded cache)? Classifier: {probe.classifier}, chosen because it "
            "trains in seconds on a CPU and coarse pixels carry exposure, borders and burnt-in "
            "markers; a CNN could only do better, so this AUC is a lower bound. "
            f"Macro AUC {fmt(probe.macro_auc)} [{fmt(probe.ci_low)}, {fmt(probe.ci_high)}] "
            f"(patient bootstrap), chance {probe.chance:.1f}; the sources' label mixes differ "
            f"by up to {fmt(probe.label_mix_gap, 2)} (total variation).",
            Table(probe.table()),
            f"**Verdict: {verdict}** (AUC >= {PREDICTABLE_AUC} and label mixes that differ)."
            if verdict else "No source shortcut shown: the source is not predictable "
            f"(AUC < {PREDICTABLE_AUC}) or the sources hold the same label mix."]
