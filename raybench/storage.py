"""URIs to pyarrow filesystems, and atomic writes. The only module that builds filesystems.

A results root or weights location is a local path, a ``file://`` URI or ``s3://bucket/prefix``.
For S3 the endpoint, region and credentials come from the standard AWS variables
(``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``) or from ``?endpoint_override=...`` in the URI, so MinIO, Ceph and AWS all work.
"""
from __future__ import annotations

import io
import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyarrow.fs as pafs

from raybench.errors import RaybenchError


@dataclass(frozen=True)
class Location:
    """A filesystem plus a path inside it (no scheme), e.g. ``bucket/prefix`` on S3."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> "Location":
        """A child location."""
        path = posixpath.join(self.path, *parts)
        return Location(self.fs, path, posixpath.join(self.uri.split("?")[0], *parts))


def _s3_filesystem(query: dict[str, list[str]]) -> pafs.S3FileSystem:
    endpoint = (query.get("endpoint_override", [None])[0]
                or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    kwargs: dict[str, object] = {
        "region": query.get("region", [None])[0] or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        "connect_timeout": 3.0,
        "request_timeout": 5.0,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=2),
    }
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "https"
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs.update(access_key=key, secret_key=secret,
                      session_token=os.environ.get("AWS_SESSION_TOKEN"))
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str | os.PathLike[str]) -> Location:
    """Parses a local path, ``file://`` or ``s3://`` URI into a :class:`Location`.

    Raises:
        RaybenchError: An unsupported scheme or an S3 URI without a bucket.
    """
    text = os.fspath(uri)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        local = parsed.path if parsed.scheme == "file" else text
        return Location(pafs.LocalFileSystem(), str(Path(local).expanduser().absolute()), text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise RaybenchError(f"{text}: an S3 URI needs a bucket, e.g. s3://bucket/prefix")
        path = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
        return Location(_s3_filesystem(parse_qs(parsed.query)), path, text)
    raise RaybenchError(f"{text}: unsupported storage scheme {parsed.scheme!r}; use a path, file:// or s3://")


def read_bytes(loc: Location) -> bytes:
    """The whole content of a file."""
    with loc.fs.open_input_stream(loc.path) as stream:
        return stream.read()


def exists(loc: Location) -> bool:
    """Whether a file or folder exists at ``loc``."""
    return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound


def write_bytes_atomic(loc: Location, data: bytes) -> None:
    """Writes ``data`` so that readers see the old file or the whole new one, never a part.

    Locally: a temporary file in the same folder, then ``os.replace``. On S3 an object only
    exists once its upload has completed, so a direct put is already atomic.
    """
    parent = posixpath.dirname(loc.path)
    if loc.is_local:
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}-{os.path.basename(loc.path)}")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, loc.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    with loc.fs.open_output_stream(loc.path) as stream:
        stream.write(data)


def write_parquet_atomic(loc: Location, table: "pa.Table") -> None:  # noqa: F821
    """Writes a pyarrow table as one Parquet file, atomically."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    write_bytes_atomic(loc, sink.getvalue())
