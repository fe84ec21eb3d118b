"""A decoded-image cache: each manifest's images decoded and resized once, memory-mapped after.

One cache entry per (manifest content, size, colour mode) under ``<cache_dir>/decoded/``:
``<key>.npy`` holds uint8 ``(N, size, size)`` images in manifest row order, ``<key>.json`` the
image ids, which rows decoded and the bad files. The key hashes every row's image id and
content hash, so an edited manifest gets a new entry (the cache is rebuilt, never patched).

Creation is atomic: the array and then the metadata are written under temporary names and
moved into place, the metadata last, so an entry exists only once complete; an exclusive file
lock makes concurrent builders on one node wait for the first instead of decoding twice. Readers
open the array read-only with ``mmap``; files are never modified in place, so any number of
trials and workers can share one entry.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench.data.images import BadImage, decode_image
from raybench.errors import DataError

log = logging.getLogger(__name__)

#: Colour modes the decoder produces (one grayscale channel; see ``images.decode_image``).
MODES: tuple[str, ...] = ("L",)
#: Bump when decoding changes, so old entries are not reused.
DECODER_VERSION = 1


@dataclass
class DecodedImages:
    """A cache entry: ``images[i]`` is row ``i`` of the manifest (valid where ``ok[i]``)."""

    images: np.ndarray  # (N, size, size) uint8, memory-mapped read-only
    ok: np.ndarray  # (N,) bool
    image_ids: list[str]
    bad: list[BadImage]
    path: Path
    built: bool  # True when this call decoded the images, False when it reused them


def cache_key(df: pd.DataFrame, size: int, mode: str = "L") -> str:
    """Hex key of a manifest's content (ids + content hashes, in row order), size and mode."""
    digest = hashlib.sha256(f"v{DECODER_VERSION}|{size}|{mode}\n".encode())
    for image_id, sha in zip(df[S.IMAGE_ID], df[S.SHA256], strict=True):
        digest.update(f"{image_id}\t{sha}\n".encode())
    return digest.hexdigest()[:32]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _atomic_target(folder: Path, name: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return tmp


def _open(npy: Path, meta: Path) -> DecodedImages:
    info = json.loads(meta.read_text(encoding="utf-8"))
    images = np.load(npy, mmap_mode="r")
    bad = [BadImage(b["path"], b["reason"]) for b in info["bad"]]
    return DecodedImages(images, np.array(info["ok"], dtype=bool), info["image_ids"], bad, npy,
                         built=False)


def _build(files: Sequence[Path], image_ids: list[str], size: int, npy: Path, meta: Path,
           on_bad_image: str) -> None:
    """Decodes every file into a temporary ``.npy`` and moves it, then its metadata, in place.

    Under ``fail`` the first bad image raises and nothing is written.
    """
    tmp = _atomic_target(npy.parent, npy.name)
    try:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(len(files), size, size))
        ok, bad = np.ones(len(files), dtype=bool), []
        for i, file in enumerate(files):
            try:
                arr[i] = decode_image(file, size)
            except DataError as exc:
                if on_bad_image == "fail":
                    raise
                arr[i] = 0
                ok[i] = False
                bad.append({"path": str(file), "reason": str(exc)})
        arr.flush()
        del arr
        os.replace(tmp, npy)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    info = {"image_ids": image_ids, "ok": ok.tolist(), "bad": bad, "size": size}
    tmp = _atomic_target(meta.parent, meta.name)
    Path(tmp).write_text(json.dumps(info), encoding="utf-8")
    os.replace(tmp, meta)


def decoded_images(df: pd.DataFrame, files: Sequence[Path], size: int, cache_dir: str | os.PathLike,
                   mode: str = "L", on_bad_image: str = "fail") -> DecodedImages:
    """Returns the decoded images of a manifest, building the cache entry on first use.

    Args:
        df: The manifest (its ``image_id`` and ``sha256`` columns form the key).
        files: Local image file of each row.
        size: Side in pixels.
        cache_dir: ``DataConfig.cache_dir``.
        mode: Colour mode; only ``L`` (grayscale) today.
        on_bad_image: ``fail`` raises naming the first bad file; ``skip`` returns ``ok`` False
            for it and lists it in ``bad``. Bad files are recorded in the entry either way.

    Raises:
        DataError: A bad image under ``fail``, or an unknown mode / policy.
    """
    if mode not in MODES:
        raise DataError(f"decoded cache mode {mode!r}; allowed: {', '.join(MODES)}")
    if on_bad_image not in ("fail", "skip"):
        raise DataError(f"on_bad_image={on_bad_image!r}; allowed: fail, skip")
    if len(files) != len(df):
        raise ValueError(f"{len(files)} files for {len(df)} manifest rows")
    folder = Path(cache_dir) / "decoded"
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(df, size, mode)
    npy, meta = folder / f"{key}.npy", folder / f"{key}.json"
    built = False
    if not meta.is_file():
        with _locked(folder / f"{key}.lock"):
            if not meta.is_file():  # another process may have built it while we waited
                log.info("decoding %d images at %d px into %s", len(files), size, npy)
                _build(files, df[S.IMAGE_ID].tolist(), size, npy, meta, on_bad_image)
                built = True
    entry = _open(npy, meta)
    entry.built = built
    if entry.bad and on_bad_image == "fail":
        raise DataError(f"{entry.bad[0].reason} (on_bad_image=fail; "
                        f"{len(entry.bad)} bad image(s) in all)")
    return entry
