"""A decoded-image cache: each manifest's images decoded and resized once per cluster.

One cache entry per (manifest content, size, colour mode), stored as **shards** of
:data:`SHARD_ROWS` images under ``<cache_dir>/decoded/<key>/``: ``shard-00000.npy`` holds
uint8 ``(n, size, size)`` images of consecutive manifest rows, ``shard-00000.json`` which of
them decoded and the bad files. The key hashes every row's image id and content hash, so an
edited manifest gets a new entry (the cache is rebuilt, never patched).

``cache_dir`` is a local folder, a folder every node mounts, or an ``s3://`` prefix. With
``s3://`` a node keeps what it downloads in a node-local folder (``local_dir``) and
memory-maps it from there; with a folder the shards are memory-mapped where they lie.

Who decodes: a missing shard is claimed with a :class:`raybench.lease.Lease` (the sweep
driver's lease primitive) of ``shard-00000.claim-<generation>`` files, each created only if
absent (``O_EXCL`` locally, ``If-None-Match: *`` on S3). Exactly one builder wins; the others
build other shards, or wait for it and download its shard. The builder's heartbeat renews its
claims every :data:`CLAIM_RENEW_S` while it decodes; a claim whose builder died (same host and
its process gone, or not renewed for :data:`CLAIM_STALE_S`) is taken over by creating the next
generation, again atomically. A builder lets go of its claims once it has published, so a
claim won on an older listing of the folder may be of a shard published meanwhile: the folder
is listed again after winning, and such a shard is fetched, not decoded a second time. The
builder decodes its shards'
images over the Ray cluster in chunks (:mod:`raybench.data.prepare`) and streams each chunk
into a temporary file on disk, in row order: memory holds a few chunks, never the entry.

Readers never see a partial shard: the array and then its metadata are moved into place (or
uploaded in one request) only once complete, the metadata last, and a shard counts only once
its metadata exists. Nothing is published until every shard the builder claimed is complete,
so under ``on_bad_image=fail`` a bad image (or a full disk) leaves no trace but the error.

Diagnostics: with ``RAYBENCH_DECODE_LOG=<folder>`` every decode also creates one empty file
there (named by process id), which is how the tests count decodes across processes and nodes.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench import lease, storage
from raybench.data.images import BadImage, decode_image
from raybench.errors import DataError

log = logging.getLogger(__name__)

#: Colour modes the decoder produces (one grayscale channel; see ``images.decode_image``).
MODES: tuple[str, ...] = ("L",)
#: Bump when decoding or the entry layout changes, so old entries are not reused.
DECODER_VERSION = 2
#: Images per shard: 2,048 images are 103 MB at 224 px, 183 MB at 299 px.
SHARD_ROWS = 2048
#: Images per Ray task: about 0.4 s of work for a 1024 px PNG on one core.
DECODE_CHUNK = 32
#: A claim not renewed for this long is taken to be a dead builder's (seconds).
CLAIM_STALE_S = 900.0
#: A builder renews its claims this often while it decodes (seconds).
CLAIM_RENEW_S = 60.0
#: Seconds between two looks at the store while another builder holds a shard.
POLL_S = 0.5
#: Node-local folder for downloaded shards when ``cache_dir`` is ``s3://`` and none is given.
DEFAULT_LOCAL_DIR = "~/.cache/raybench"
DECODE_LOG_ENV = "RAYBENCH_DECODE_LOG"


class ShardedImages:
    """``(N, size, size)`` uint8 images over several memory-mapped shards, indexed like an array
    along the first axis (an int, a slice, an int array or a boolean mask)."""

    def __init__(self, shards: list[np.ndarray]) -> None:
        self.shards = shards
        self.starts = np.cumsum([0] + [len(s) for s in shards])
        self.shape: tuple[int, ...] = (int(self.starts[-1]),) + tuple(shards[0].shape[1:])
        self.dtype = shards[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx),) + self.shape[1:], dtype=self.dtype)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        for k in np.unique(which):
            sel = which == k
            out[sel] = self.shards[k][idx[sel] - self.starts[k]]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            head = self[key[0]]
            rest = key[1:] if np.ndim(key[0]) == 0 else (slice(None),) + key[1:]
            return head[rest]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"index {key} out of range for {len(self)} images")
            k = int(np.searchsorted(self.starts, i, side="right") - 1)
            return self.shards[k][i - self.starts[k]]
        if isinstance(key, slice):
            return self._rows(np.arange(len(self))[key])
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        idx = np.where(idx < 0, idx + len(self), idx).astype(np.int64)
        return self._rows(idx)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self._rows(np.arange(len(self)))
        return arr if dtype is None else arr.astype(dtype)


Images = Union[np.ndarray, ShardedImages]


@dataclass
class DecodedImages:
    """A cache entry: ``images[i]`` is row ``i`` of the manifest (valid where ``ok[i]``).

    ``images`` is the shard's read-only ``np.memmap`` when the entry has one shard, else a
    :class:`ShardedImages` over the shards' memory maps.
    """

    images: Images  # (N, size, size) uint8, memory-mapped read-only
    ok: np.ndarray  # (N,) bool
    image_ids: list[str]
    bad: list[BadImage]
    path: Path  # the node-local folder holding the shards
    built: bool  # True when this call decoded images, False when it reused them
    files: list[Path] = field(default_factory=list)  # the shard arrays, in row order

    @property
    def disk_bytes(self) -> int:
        """Bytes of the shard arrays on this node."""
        return sum(f.stat().st_size for f in self.files)


def cache_key(df: pd.DataFrame, size: int, mode: str = "L") -> str:
    """Hex key of a manifest's content (ids + content hashes, in row order), size and mode."""
    digest = hashlib.sha256(f"v{DECODER_VERSION}|{size}|{mode}\n".encode())
    for image_id, sha in zip(df[S.IMAGE_ID], df[S.SHA256], strict=True):
        digest.update(f"{image_id}\t{sha}\n".encode())
    return digest.hexdigest()[:32]


def decode_or_error(size: int, path: str) -> tuple[Optional[np.ndarray], Optional[str]]:
    """:func:`decode_image`, or the reason it failed: the per-image body of a cache build."""
    log_dir = os.environ.get(DECODE_LOG_ENV)
    if log_dir:
        Path(log_dir, f"{os.getpid()}-{uuid.uuid4().hex}").touch()
    try:
        return decode_image(path, size), None
    except DataError as exc:
        return None, str(exc)


# --- where an entry lives ------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """An entry's shared location, its node-local folder and its shard layout."""

    store: storage.Location
    local: Path
    n: int
    size: int

    @property
    def n_shards(self) -> int:
        return max(1, -(-self.n // SHARD_ROWS))

    def rows(self, k: int) -> range:
        return range(k * SHARD_ROWS, min(self.n, (k + 1) * SHARD_ROWS))

    @staticmethod
    def stem(k: int) -> str:
        return f"shard-{k:05d}"


def _locate(cache_dir: str | os.PathLike, key: str, n: int, size: int,
            local_dir: Optional[str | os.PathLike]) -> _Entry:
    store = storage.resolve(os.fspath(cache_dir)).join("decoded", key)
    if store.is_local:
        local = Path(store.path)
    else:
        base = Path(os.path.expanduser(os.fspath(local_dir or DEFAULT_LOCAL_DIR)))
        local = base / "decoded" / key
    local.mkdir(parents=True, exist_ok=True)
    return _Entry(store, local, n, size)


def _store_names(entry: _Entry) -> set[str]:
    if entry.store.is_local:
        return {p.name for p in entry.local.iterdir() if not p.name.startswith(".")}
    return {f.base_name for f in storage.list_files(entry.store)}


# --- claims ---------------------------------------------------------------------------------


def shard_lease(entry: _Entry, k: int) -> lease.Lease:
    """The claim of shard ``k``: ``shard-00000.claim-<generation>`` files in the entry's folder."""
    return lease.Lease(entry.store, f"{entry.stem(k)}.claim-", timeout_s=CLAIM_STALE_S,
                       what=f"{entry.stem(k)} of {entry.store.uri}")


def claim_shard(entry: _Entry, k: int, names: set[str]) -> Optional[lease.Lease]:
    """Claims shard ``k`` for this builder; returns the held claim, or None when taken.

    ``names`` is this round's listing of the entry's folder. Generation ``g + 1`` of the claim
    is created only over a stale generation ``g``, atomically, so of any number of racing
    builders exactly one wins each generation.
    """
    claim = shard_lease(entry, k)
    got = claim.try_acquire(names)
    if not got.won:
        return None
    if got.previous is not None:
        log.warning("shard %s: took over the claim of a builder that is gone (%s pid %s)",
                    entry.stem(k), got.previous.get("host"), got.previous.get("pid"))
        for tmp in entry.local.glob(f".{entry.stem(k)}.*.tmp"):  # its half-written file
            tmp.unlink(missing_ok=True)
    return claim


# --- building -------------------------------------------------------------------------------


class _ShardWriter:
    """A shard's ``.npy`` written front to back into a hidden temporary file."""

    def __init__(self, entry: _Entry, k: int) -> None:
        self.k, self.rows = k, entry.rows(k)
        fd, name = tempfile.mkstemp(prefix=f".{entry.stem(k)}.", suffix=".tmp", dir=entry.local)
        self.tmp = Path(name)
        storage.follow_umask(fd)
        self.fh: IO[bytes] = os.fdopen(fd, "wb")
        header = {"descr": "|u1", "fortran_order": False,
                  "shape": (len(self.rows), entry.size, entry.size)}
        np.lib.format.write_array_header_1_0(self.fh, header)
        self.ok: list[bool] = []
        self.bad: list[dict[str, str]] = []
        self.blank = np.zeros((entry.size, entry.size), dtype=np.uint8)

    def add(self, path: str, arr: Optional[np.ndarray], error: Optional[str]) -> None:
        self.fh.write((self.blank if arr is None else np.ascontiguousarray(arr)).tobytes())
        self.ok.append(arr is not None)
        if error is not None:
            self.bad.append({"path": path, "reason": error})

    def close(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def meta(self) -> bytes:
        return json.dumps({"rows": [self.rows.start, self.rows.stop], "ok": self.ok,
                           "bad": self.bad}).encode()


def _decode_into(entry: _Entry, writers: list[_ShardWriter], files: Sequence[Path],
                 on_bad_image: str, address: Optional[str]) -> None:
    """Decodes the writers' rows over Ray, in row order, into their files."""
    from raybench.data.prepare import imap_chunks

    rows = [r for w in writers for r in w.rows]
    paths = [str(files[r]) for r in rows]
    owner = iter(w for w in writers for _ in w.rows)
    body = functools.partial(decode_or_error, entry.size)
    chunks = imap_chunks(body, paths, chunk_size=DECODE_CHUNK, address=address,
                         what=f"decode {entry.size} px")
    pos = 0
    for chunk in chunks:
        for arr, error in chunk:
            if error is not None and on_bad_image == "fail":
                raise DataError(error)
            next(owner).add(paths[pos], arr, error)
            pos += 1


def _publish(entry: _Entry, w: _ShardWriter) -> None:
    """Moves a complete shard into the store (and the node-local folder), metadata last."""
    stem = entry.stem(w.k)
    if entry.store.is_local:
        os.replace(w.tmp, entry.local / f"{stem}.npy")
        storage.write_bytes_atomic(entry.store.join(f"{stem}.json"), w.meta())
        return
    with open(w.tmp, "rb") as src, storage.atomic_writer(entry.store.join(f"{stem}.npy")) as dst:
        while block := src.read(1 << 24):
            dst.write(block)
    storage.write_bytes_atomic(entry.store.join(f"{stem}.json"), w.meta())
    os.replace(w.tmp, entry.local / f"{stem}.npy")
    storage.write_bytes_atomic(storage.resolve(str(entry.local / f"{stem}.json")), w.meta())


def _build(entry: _Entry, shards: list[int], files: Sequence[Path], on_bad_image: str,
           address: Optional[str]) -> None:
    """Decodes the claimed shards; publishes them only once all are complete.

    Raises:
        DataError: A bad image under ``fail`` (nothing published), or the disk is full.
    """
    writers: list[_ShardWriter] = []
    try:
        writers = [_ShardWriter(entry, k) for k in shards]
        log.info("decoding %d images at %d px into %d shard(s) of %s", sum(len(w.rows)
                 for w in writers), entry.size, len(writers), entry.store.uri)
        _decode_into(entry, writers, files, on_bad_image, address)
        for w in writers:
            w.close()
        for w in writers:
            _publish(entry, w)
    except OSError as exc:
        raise DataError(f"cannot write the decoded cache in {entry.local}: "
                        f"{exc.strerror or exc}") from None
    finally:
        for w in writers:
            with contextlib.suppress(OSError):
                w.fh.close()
            w.tmp.unlink(missing_ok=True)


# --- fetching and opening -------------------------------------------------------------------


def _have_local(entry: _Entry, k: int) -> bool:
    return (entry.local / f"{entry.stem(k)}.json").is_file()


def _download(entry: _Entry, k: int) -> None:
    """Copies a complete shard from the store into the node-local folder (array, then meta)."""
    stem = entry.stem(k)
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".dl", dir=entry.local)
    try:
        with os.fdopen(fd, "wb") as dst, storage.io_errors(entry.store), \
                entry.store.fs.open_input_stream(entry.store.join(f"{stem}.npy").path) as src:
            while block := src.read(1 << 24):
                dst.write(block)
        os.replace(name, entry.local / f"{stem}.npy")
    except OSError as exc:  # the node-local folder is full or read-only
        raise DataError(f"cannot write the decoded cache in {entry.local}: "
                        f"{exc.strerror or exc}") from None
    finally:
        Path(name).unlink(missing_ok=True)
    meta = storage.read_bytes(entry.store.join(f"{stem}.json"))
    storage.write_bytes_atomic(storage.resolve(str(entry.local / f"{stem}.json")), meta)


def _ensure(entry: _Entry, files: Sequence[Path], on_bad_image: str,
            address: Optional[str]) -> bool:
    """Makes every shard present locally: fetch what the store has, build what we claim,
    wait for the rest. Returns whether this call decoded any."""
    missing = [k for k in range(entry.n_shards) if not _have_local(entry, k)]
    built = False
    while missing:
        names = _store_names(entry)
        for k in [k for k in missing if f"{entry.stem(k)}.json" in names]:
            if not entry.store.is_local:
                _download(entry, k)
            missing.remove(k)
        claims = {k: c for k in missing if (c := claim_shard(entry, k, names))}
        if claims:  # a builder may have published and let go since our listing: look again
            published = _store_names(entry)
            late = [k for k in claims if f"{entry.stem(k)}.json" in published]
            for k in late:
                claims.pop(k).release(delete=True)
            if late and not claims:
                continue  # the next round fetches them
        if claims:
            try:
                with lease.Heartbeat(list(claims.values()), CLAIM_RENEW_S):
                    _build(entry, sorted(claims), files, on_bad_image, address)
            finally:  # published shards need no claim; failed ones are free to rebuild
                for claim in claims.values():
                    claim.release(delete=True)
            built = True
            missing = [k for k in missing if k not in claims]
        elif missing:
            time.sleep(POLL_S)
    return built


def _open(entry: _Entry, image_ids: list[str], built: bool) -> DecodedImages:
    shards, ok, bad, paths = [], [], [], []
    for k in range(entry.n_shards):
        npy = entry.local / f"{entry.stem(k)}.npy"
        info = json.loads((entry.local / f"{entry.stem(k)}.json").read_text(encoding="utf-8"))
        shards.append(np.load(npy, mmap_mode="r"))
        ok += info["ok"]
        bad += [BadImage(b["path"], b["reason"]) for b in info["bad"]]
        paths.append(npy)
    images: Images = shards[0] if len(shards) == 1 else ShardedImages(shards)
    return DecodedImages(images, np.array(ok, dtype=bool), image_ids, bad, entry.local, built,
                         paths)


def decoded_images(df: pd.DataFrame, files: Sequence[Path], size: int, cache_dir: str | os.PathLike,
                   mode: str = "L", on_bad_image: str = "fail", *,
                   local_dir: Optional[str | os.PathLike] = None,
                   address: Optional[str] = None) -> DecodedImages:
    """Returns the decoded images of a manifest, building the missing shards on first use.

    Args:
        df: The manifest (its ``image_id`` and ``sha256`` columns form the key).
        files: Local image file of each row (readable at that path on every node that decodes).
        size: Side in pixels.
        cache_dir: ``DataConfig.cache_dir``: a folder (local or shared) or an ``s3://`` prefix.
        mode: Colour mode; only ``L`` (grayscale) today.
        on_bad_image: ``fail`` raises naming the first bad file; ``skip`` returns ``ok`` False
            for it and lists it in ``bad``. Bad files are recorded in the entry either way.
        local_dir: Node-local folder for shards downloaded from an ``s3://`` ``cache_dir``
            (``DataConfig.local_cache_dir``; default ``~/.cache/raybench``).
        address: Ray cluster to decode on (default: the connected Ray, ``RAY_ADDRESS``, or a
            local Ray; in-process inside a Ray task).

    Raises:
        DataError: A bad image under ``fail``, or an unknown mode / policy.
    """
    if mode not in MODES:
        raise DataError(f"decoded cache mode {mode!r}; allowed: {', '.join(MODES)}")
    if on_bad_image not in ("fail", "skip"):
        raise DataError(f"on_bad_image={on_bad_image!r}; allowed: fail, skip")
    if len(files) != len(df):
        raise ValueError(f"{len(files)} files for {len(df)} manifest rows")
    entry = _locate(cache_dir, cache_key(df, size, mode), len(df), size, local_dir)
    built = _ensure(entry, files, on_bad_image, address)
    out = _open(entry, df[S.IMAGE_ID].tolist(), built)
    if out.bad and on_bad_image == "fail":
        raise DataError(f"{out.bad[0].reason} (on_bad_image=fail; "
                        f"{len(out.bad)} bad image(s) in all)")
    return out
