"""Source probe: can a quick classifier tell an image's source (hospital) from its pixels?

Zech et al. (2018) showed that CNNs identify the hospital from the film alone; when the
sources' label mixes differ, a model can then learn the hospital instead of the disease.

The probe reads the images as the models see them, from the decoded, resized cache
(:func:`raybench.data.cache.decoded_images`), reduces each to 16 x 16 block means, and fits a
multinomial logistic regression (scikit-learn, standardised features) in 5 folds that keep each
patient in one fold (``StratifiedGroupKFold``). Why this classifier: it trains in seconds on a
CPU for tens of thousands of images, it is deterministic, and coarse pixels already carry what
separates hospitals most often (exposure, contrast, borders, burnt-in markers); a CNN could
only find more, so the probe's AUC is a lower bound on how predictable the source is.

The out-of-fold probabilities give the macro one-vs-rest AUC and each source's AUC, with 95%
percentile intervals from a bootstrap over patients (:func:`raybench.stats.weighted_metrics`);
chance is 0.5.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench import stats
from raybench.config.spec import DEFAULT_CACHE_DIR
from raybench.errors import DataError

SIDE = 16  # the classifier sees SIDE x SIDE block means of each cached image
FOLDS = 5
PREDICTABLE_AUC = 0.9
MIX_GAP = 0.1  # total-variation distance between a source's label mix and the others'
CLASSIFIER = ("logistic regression on 16 x 16 block means of the cached images, 5 "
              "patient-disjoint folds")
VERDICT = "the models can learn the hospital instead of the disease"


@dataclass(frozen=True)
class SourceAuc:
    """One source's one-vs-rest AUC with its 95% interval and image count."""

    source: str
    images: int
    auc: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class SourceProbe:
    """What the probe found: the macro AUC, per-source AUCs, the label-mix gap, a verdict."""

    macro_auc: float
    ci_low: float
    ci_high: float
    sources: tuple[SourceAuc, ...]
    label_mix_gap: float
    verdict: Optional[str]
    chance: float = 0.5
    classifier: str = CLASSIFIER

    def table(self) -> pd.DataFrame:
        """One row per source: images, AUC, interval, chance."""
        return pd.DataFrame([{**asdict(s), "chance": self.chance} for s in self.sources])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def features(images: np.ndarray, side: int = SIDE) -> np.ndarray:
    """(N, side * side) block means in [0, 1] of (N, H, W) uint8 images."""
    n, h, w = images.shape
    side = min(side, h, w)
    bh, bw = h // side, w // side
    blocks = np.asarray(images[:, :bh * side, :bw * side], dtype=np.float32)
    return (blocks.reshape(n, side, bh, side, bw).mean(axis=(2, 4)) / 255.0).reshape(n, -1)


def out_of_fold(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, K) source probabilities, each image scored by a model that never saw its patient."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(y.max()) + 1
    folds = min(FOLDS, len(np.unique(groups)))
    prob = np.full((len(y), k), 1.0 / k)
    split = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in split.split(x, y, groups):
        if len(np.unique(y[train])) < 2:
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(x[train], y[train])
        prob[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    return prob


def label_mix_gap(sources: np.ndarray, labels: np.ndarray) -> float:
    """The largest total-variation distance between one source's label mix and the rest's."""
    mix = pd.crosstab(pd.Series(sources, name="s"), pd.Series(labels, name="l"))
    gaps = []
    for s in mix.index:
        own, rest = mix.loc[s], mix.drop(index=s).sum()
        if own.sum() and rest.sum():
            gaps.append(0.5 * float(np.abs(own / own.sum() - rest / rest.sum()).sum()))
    return max(gaps, default=math.nan)


def probe_images(images: np.ndarray, sources: Sequence[str], patients: Sequence[str],
                 labels: Sequence[str], n_boot: int = 1000, seed: int = 0) -> SourceProbe:
    """The probe on decoded images (N, H, W) with each image's source, patient and label.

    Raises:
        DataError: Fewer than two sources.
    """
    names, y = np.unique(np.asarray(sources, dtype=str), return_inverse=True)
    if len(names) < 2:
        raise DataError(f"the source probe needs 2 or more sources; found {list(names)}")
    groups = np.asarray(patients, dtype=str)
    prob = out_of_fold(features(images), y, groups, seed)
    ones = np.ones((1, len(y)))
    point = stats.weighted_metrics(y, prob, ones)
    boot = stats.weighted_metrics(y, prob, stats.draw_weights(
        groups, len(y), n_boot, np.random.default_rng(seed)))

    def interval(name: str) -> tuple[float, float, float]:
        low, high = np.nanpercentile(boot[name], [2.5, 97.5])
        return float(point[name][0]), float(low), float(high)

    per = tuple(SourceAuc(str(s), int((y == c).sum()), *interval(f"auc:{c}"))
                for c, s in enumerate(names))
    auc, low, high = interval("macro_auc")
    gap = label_mix_gap(np.asarray(sources, dtype=str), np.asarray(labels, dtype=str))
    verdict = VERDICT if auc >= PREDICTABLE_AUC and gap >= MIX_GAP else None
    return SourceProbe(auc, low, high, per, gap, verdict)


def probe_frames(frames: Sequence[tuple[pd.DataFrame, Sequence[Path]]], size: int,
                 cache_dir: str | os.PathLike, n_boot: int = 1000,
                 seed: int = 0) -> SourceProbe:
    """The probe on manifests (each with its local files), read through the decoded cache."""
    from raybench.data.cache import decoded_images

    images, meta = [], []
    for df, files in frames:
        entry = decoded_images(df, files, size, cache_dir, on_bad_image="skip")
        images.append(np.asarray(entry.images)[entry.ok])
        meta.append(df[entry.ok])
    rows = pd.concat(meta, ignore_index=True)
    patients = rows[S.PATIENT_ID].fillna(rows[S.IMAGE_ID]).astype(str)
    return probe_images(np.concatenate(images), rows[S.SOURCE].astype(str).tolist(),
                        patients.tolist(), rows[S.LABEL].astype(str).tolist(), n_boot, seed)


def probe_manifest(path: str | os.PathLike, size: int = 224,
                   cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR,
                   allow_outside_root: bool = False, n_boot: int = 1000) -> SourceProbe:
    """:func:`probe_frames` on one manifest file."""
    from raybench.data import manifest as mf

    if not 16 <= size <= 1024:
        raise DataError(f"source probe size {size} px is not allowed; use 16 to 1024")
    df = mf.read_manifest(path)
    files = mf.image_files(path, list(df[S.PATH]), allow_outside_root)
    return probe_frames([(df, files)], size, cache_dir, n_boot)


def format_probe(probe: SourceProbe) -> str:
    """The probe as a few lines of text (``raybench data audit --probe``)."""
    lines = [f"source probe ({probe.classifier}): macro AUC {probe.macro_auc:.3f} "
             f"[{probe.ci_low:.3f}, {probe.ci_high:.3f}], chance {probe.chance:.1f}"]
    lines += [f"  {s.source}: AUC {s.auc:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}], "
              f"{s.images} images" for s in probe.sources]
    lines.append(f"  label mixes differ by up to {probe.label_mix_gap:.2f} (total variation)")
    lines.append(f"  verdict: {probe.verdict}" if probe.verdict else
                 "  verdict: no source shortcut shown (AUC < 0.9 or similar label mixes)")
    return "\n".join(lines)
