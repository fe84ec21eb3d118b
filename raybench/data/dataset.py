"""From a data config to decoded, split tensors ready for the training loop."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raybench import schema as S
from raybench.config import DataConfig
from raybench.data import manifest as mf
from raybench.data.images import BadImage, decode_images
from raybench.data.split import assign_splits, check_disjoint
from raybench.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    """One split: uint8 images (N, S, S), int64 class indices (N,) and image ids."""

    images: torch.Tensor
    targets: torch.Tensor
    image_ids: list[str]

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass
class PreparedData:
    """Everything the loop needs; ``labels`` fixes the class-index order."""

    labels: tuple[str, ...]
    train: SplitData
    val: SplitData
    test: SplitData
    manifest: pd.DataFrame
    skipped: list[BadImage] = field(default_factory=list)


def resolve_manifest(cfg: DataConfig) -> Path:
    """The manifest to read: ``cfg.manifest``, or a synthetic set generated once into the cache."""
    if cfg.manifest:
        return Path(cfg.manifest)
    from raybench.data.synth import synthesize

    syn = cfg.synthetic
    folder = Path(cfg.cache_dir) / (
        f"synth-n{syn.per_class}-px{syn.size}-seed{syn.seed}-leak{syn.marker_leak:g}"
    )
    path = folder / "manifest.parquet"
    if not path.is_file():
        log.info("generating synthetic chest X-rays in %s", folder)
        synthesize(folder, per_class=syn.per_class, size=syn.size, seed=syn.seed,
                   marker_leak=syn.marker_leak)
    return path


def _select_labels(df: pd.DataFrame, labels: tuple[str, ...], where: str) -> pd.DataFrame:
    out = df[df[S.LABEL].isin(labels)].reset_index(drop=True)
    counts = out[S.LABEL].value_counts()
    empty = [lab for lab in labels if counts.get(lab, 0) == 0]
    if empty:
        raise DataError(f"{where}: no images with label {', '.join(empty)}; "
                        f"labels present: {', '.join(sorted(df[S.LABEL].unique()))}")
    return out


def _split_tensors(df: pd.DataFrame, images: np.ndarray, labels: tuple[str, ...],
                   name: str) -> SplitData:
    mask = (df[S.SPLIT] == name).to_numpy()
    index = {lab: i for i, lab in enumerate(labels)}
    targets = torch.tensor([index[lab] for lab in df.loc[mask, S.LABEL]], dtype=torch.int64)
    return SplitData(torch.from_numpy(images[mask]), targets, df.loc[mask, S.IMAGE_ID].tolist())


def prepare_data(cfg: DataConfig, image_size: int) -> PreparedData:
    """Reads the manifest, splits by patient, decodes every image once at ``image_size``.

    Raises:
        DataError: Missing manifest or images, empty classes, or an empty split.
    """
    path = resolve_manifest(cfg)
    df = _select_labels(mf.read_manifest(path), cfg.labels, str(path))
    df = assign_splits(df, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    check_disjoint(df)
    root = mf.manifest_root(path)
    files = [root / p for p in df[S.PATH]]
    images, keep, bad = decode_images(files, image_size, cfg.on_bad_image)
    df = df[keep].reset_index(drop=True)
    splits = {n: _split_tensors(df, images, cfg.labels, n) for n in S.SPLITS}
    for name, split in splits.items():
        if len(split) == 0:
            raise DataError(f"{path}: the {name} split is empty after splitting {len(df)} images; "
                            "add images or change data.val_fraction / data.test_fraction")
    log.info("data: %s", ", ".join(f"{n} {len(s)}" for n, s in splits.items()))
    return PreparedData(cfg.labels, splits["train"], splits["val"], splits["test"], df, bad)
