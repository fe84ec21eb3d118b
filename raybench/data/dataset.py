"""From a data config to decoded, split tensors ready for the training loop."""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench.config import DataConfig
from raybench.data import manifest as mf
from raybench.data.images import BadImage, decode_images
from raybench.data.split import assign_splits, check_disjoint
from raybench.errors import ConfigError, DataError

if TYPE_CHECKING:  # torch is imported where tensors are made: a sweep's driver needs none
    import torch

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    """One split: uint8 images (N, S, S), int64 class indices (N,) and image ids; the
    patient id and source of each image (for the patient bootstrap and per-source metrics)."""

    images: torch.Tensor
    targets: torch.Tensor
    image_ids: list[str]
    patient_ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

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
    scenario: dict = field(default_factory=dict)  # what the scenario used (counts, caps, seed)


def local_folder(cfg: DataConfig) -> str:
    """This node's cache folder: ``cache_dir``, or ``local_cache_dir`` when that is a URI."""
    if "://" not in cfg.cache_dir:
        return cfg.cache_dir
    from raybench.data.cache import DEFAULT_LOCAL_DIR

    return os.path.expanduser(cfg.local_cache_dir or DEFAULT_LOCAL_DIR)


def decoded_manifests(cfg: DataConfig) -> tuple[Path, ...]:
    """The manifests whose decoded-cache entries a run of ``cfg`` reads."""
    return _plan(cfg, resolve_manifest(cfg)).manifests


def resolve_manifest(cfg: DataConfig) -> Path:
    """The manifest to read: ``cfg.manifest``, or a synthetic set generated once into the cache."""
    if cfg.manifest:
        return Path(cfg.manifest)
    from raybench.data.synth import synthesize

    syn = cfg.synthetic
    folder = Path(local_folder(cfg)) / (
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
    import torch

    mask = (df[S.SPLIT] == name).to_numpy()
    index = {lab: i for i, lab in enumerate(labels)}
    targets = torch.tensor([index[lab] for lab in df.loc[mask, S.LABEL]], dtype=torch.int64)
    return SplitData(torch.from_numpy(images[mask]), targets, df.loc[mask, S.IMAGE_ID].tolist(),
                     df.loc[mask, S.PATIENT_ID].astype(str).tolist(),
                     df.loc[mask, S.SOURCE].astype(str).tolist())


@dataclass
class _Plan:
    """Rows to use (split filled), their files, and which manifest each row came from."""

    df: pd.DataFrame
    files: list[Path]
    origins: np.ndarray
    manifests: tuple[Path, ...]
    labels: tuple[str, ...]
    summary: dict


#: Plans kept per process (the driver sizes the splits and warms the cache from one plan; a
#: worker's trials of one data config share one): most recent last.
_PLANS: OrderedDict[tuple[DataConfig, str], tuple[tuple, _Plan]] = OrderedDict()
PLANS_KEPT = 8


def _stamp(paths: Iterable[Path]) -> tuple:
    """What tells that a manifest was rewritten: its path, size and modification time."""
    out: list[tuple[str, Optional[int], Optional[int]]] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), None, None))
    return tuple(out)


def _plan(cfg: DataConfig, path: Path) -> _Plan:
    """:func:`_make_plan`, computed once per data config while its manifests stay unchanged."""
    key = (cfg, str(path))
    hit = _PLANS.get(key)
    if hit is not None and hit[0] == _stamp(dict.fromkeys((path, *hit[1].manifests))):
        _PLANS.move_to_end(key)
        return hit[1]
    plan = _make_plan(cfg, path)
    _PLANS[key] = (_stamp(dict.fromkeys((path, *plan.manifests))), plan)
    while len(_PLANS) > PLANS_KEPT:
        _PLANS.popitem(last=False)
    return plan


def _make_plan(cfg: DataConfig, path: Path) -> _Plan:
    """The scenario's split when ``cfg.scenario`` is set, else the manifest's labels as they are."""
    if cfg.scenario:
        from raybench.catalog.scenarios import get_scenario
        from raybench.data.scenarios import build_scenario

        b = build_scenario(get_scenario(cfg.scenario), path, cfg.split_seed, cfg.val_fraction,
                           cfg.test_fraction, cfg.test_from, cfg.allow_overlap,
                           allow_outside_root=cfg.allow_outside_root)
        return _Plan(b.df, b.files, b.origins, b.manifests, b.classes, b.summary)
    if cfg.test_from:
        raise ConfigError(f"data.test_from={cfg.test_from!r} needs data.scenario")
    df = _select_labels(mf.read_manifest(path), cfg.labels, str(path))
    own_split = bool(df[S.SPLIT].notna().any())
    df = assign_splits(df, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    check_disjoint(df)
    files = mf.image_files(path, list(df[S.PATH]), cfg.allow_outside_root)
    if own_split:  # the manifest's own split: the scenarios' duplicate rule holds for it too
        _check_overlap(df, files, cfg.allow_overlap)
    return _Plan(df, files, np.zeros(len(df), dtype=int), (path,), tuple(cfg.labels), {})


def _check_overlap(df: pd.DataFrame, files: list[Path], allow: bool) -> None:
    """Patients, identical and near-duplicate images across the training pool and test.

    The same rule (and ``data.allow_overlap`` override) as a scenario's split, for a plain
    manifest that brings its own split column.

    Raises:
        DataError: An overlap, unless ``allow``.
    """
    from raybench.data.scenarios import _check_no_overlap, near_duplicate_pairs

    _check_no_overlap(df.assign(_row=np.arange(len(df))), allow, near_duplicate_pairs(files))


def _decode_cached(cfg: DataConfig, plan: _Plan, size: int
                   ) -> tuple[np.ndarray, np.ndarray, list[BadImage]]:
    """Like ``decode_images``, reading each whole manifest through the decoded cache."""
    from raybench.data.cache import decoded_images

    out = np.empty((len(plan.df), size, size), dtype=np.uint8)
    keep = np.ones(len(plan.df), dtype=bool)
    bad: list[BadImage] = []
    for k, mpath in enumerate(plan.manifests):
        full = mf.read_manifest(mpath)
        entry = decoded_images(full, mf.image_files(mpath, list(full[S.PATH]), cfg.allow_outside_root),
                               size, cfg.cache_dir, on_bad_image=cfg.on_bad_image,
                               local_dir=cfg.local_cache_dir)
        pos = {image_id: i for i, image_id in enumerate(entry.image_ids)}
        rows = np.nonzero(plan.origins == k)[0]
        idx = np.array([pos[i] for i in plan.df[S.IMAGE_ID].iloc[rows]], dtype=np.int64)
        out[rows] = entry.images[idx]
        keep[rows] = entry.ok[idx]
        used = {str(plan.files[r]) for r in rows}
        bad += [b for b in entry.bad if b.path in used]
    return (out[keep] if bad else out), keep, bad


def prepare_data(cfg: DataConfig, image_size: int) -> PreparedData:
    """Reads the manifest, splits by patient, decodes every image once at ``image_size``.

    Raises:
        DataError: Missing manifest or images, empty classes, or an empty split.
    """
    path = resolve_manifest(cfg)
    plan = _plan(cfg, path)
    df = plan.df
    if cfg.decoded_cache:
        images, keep, bad = _decode_cached(cfg, plan, image_size)
    else:
        images, keep, bad = decode_images(plan.files, image_size, cfg.on_bad_image)
    df = df[keep].reset_index(drop=True)
    summary = dict(plan.summary)
    if cfg.roi != "full":
        images, summary[S.ROI] = _hide(cfg.roi, df, images, plan.manifests)
    splits = {n: _split_tensors(df, images, plan.labels, n) for n in S.SPLITS}
    for name, split in splits.items():
        if len(split) == 0:
            raise DataError(f"{path}: the {name} split is empty after splitting {len(df)} images; "
                            "add images or change data.val_fraction / data.test_fraction")
    log.info("data: %s", ", ".join(f"{n} {len(s)}" for n, s in splits.items()))
    return PreparedData(plan.labels, splits["train"], splits["val"], splits["test"], df, bad,
                        summary)


def _hide(roi: str, df: pd.DataFrame, images: np.ndarray, manifests: tuple[Path, ...]
          ) -> tuple[np.ndarray, dict]:
    """Applies ``data.roi`` to every row alike (train, val and test), after the decoded cache.

    The cache holds the unmasked images, one entry for all three rois: masking the gathered
    copy here means an entry can never serve masked pixels to a ``full`` run or the reverse.
    Lung fields come from each row's ``mask_path`` (relative to its manifest) where the file
    exists, else from the lung-field template (:mod:`raybench.data.masks`).
    """
    from raybench.data.masks import load_masks
    from raybench.data.transforms import ROI_FILL, ROI_MARGIN, apply_roi, widen

    size = images.shape[-1]
    roots = [mf.manifest_root(m) for m in manifests]
    masks, from_file = load_masks(df, df[S.IMAGE_ID].tolist(), roots, size)
    lungs = widen(masks)
    apply_roi(images, lungs, roi)
    info = {S.ROI: roi, "masks_from_file": int(from_file.sum()),
            "masks_from_template": int((~from_file).sum()), "fill": ROI_FILL,
            "margin": ROI_MARGIN, "lung_share": round(float(lungs.mean()), 4)}
    log.info("data.roi=%s: %s lung fields blanked with gray %d (%d masks from files, %d from "
             "the template)", roi, "everything but the" if roi == "lungs_only" else "the",
             ROI_FILL, info["masks_from_file"], info["masks_from_template"])
    return images, info


def split_sizes(cfg: DataConfig) -> dict[str, int]:
    """Images per split from the manifest and the split rules, without decoding any image.

    An upper bound: images that fail to decode later are left out of their split.
    """
    plan = _plan(cfg, resolve_manifest(cfg))
    return {name: int((plan.df[S.SPLIT] == name).sum()) for name in S.SPLITS}


def warm_decoded_cache(jobs: Iterable[tuple[DataConfig, int]], address: Optional[str] = None
                       ) -> int:
    """Makes sure the decoded-cache entry of every (manifest, input size) the jobs read exists,
    building the missing ones over the cluster now instead of in the first trial of each node.

    Args:
        jobs: ``(data config, image size)`` of each cell; configs without ``decoded_cache``
            are ignored, and one manifest at one size is prepared once.
        address: Ray cluster to decode on (default: the connected Ray).

    Returns:
        How many entries were prepared (built or found).

    Raises:
        DataError: A bad image under ``on_bad_image: fail`` (named), an unreadable manifest.
    """
    from raybench.data.cache import decoded_images

    done: set[tuple[str, str, int]] = set()
    for cfg, size in jobs:
        if not cfg.decoded_cache:
            continue
        for mpath in decoded_manifests(cfg):  # cells sharing a data config share one plan
            key = (str(mpath), cfg.cache_dir, size)
            if key in done:
                continue
            df = mf.read_manifest(mpath)
            files = mf.image_files(mpath, list(df[S.PATH]), cfg.allow_outside_root)
            decoded_images(df, files, size, cfg.cache_dir, on_bad_image=cfg.on_bad_image,
                           local_dir=cfg.local_cache_dir, address=address)
            done.add(key)
    return len(done)
