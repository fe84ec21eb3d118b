"""URIs to pyarrow filesystems, and atomic writes. The only module that builds filesystems.

A results root or weights location is a local path, a ``file://`` URI or ``s3://bucket/prefix``.
For S3 the endpoint, region and credentials come from the standard AWS variables
(``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``) or from ``?endpoint_override=...&region=...`` in the URI,
so MinIO, Ceph and AWS all work. Credentials never go in a URI (it is saved with the spec), and
every error message is passed through :func:`redact`.
"""
from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Optional
from urllib.parse import parse_qs, urlparse

import pyarrow.fs as pafs

if TYPE_CHECKING:
    import pyarrow as pa

from raybench.deadline import call_with_deadline
from raybench.errors import RaybenchError

#: Query keys an ``s3://`` URI may carry; anything else (e.g. a secret) is refused.
S3_QUERY_KEYS: tuple[str, ...] = ("endpoint_override", "region", "scheme")
#: Seconds :func:`check_writable` may take before it gives up.
CHECK_TIMEOUT_S = 10.0
_UMASK_LOCK = threading.Lock()
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


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


def redact(text: str) -> str:
    """``text`` with the values of AWS credentials (from the environment) replaced by ``***``."""
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return re.sub(r"(?i)((?:secret|access|session)[_-]?(?:access[_-]?)?(?:key|token)[=:]\s*)[^&\s,;]+",
                  r"\1***", text)


def _endpoint(query: dict[str, list[str]]) -> Optional[str]:
    return (query.get("endpoint_override", [None])[0]
            or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


def _s3_filesystem(query: dict[str, list[str]], connect_timeout: float = 3.0,
                   request_timeout: float = 5.0, attempts: int = 2) -> pafs.S3FileSystem:
    endpoint = _endpoint(query)
    kwargs: dict[str, object] = {
        "region": query.get("region", [None])[0] or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        "connect_timeout": connect_timeout,
        "request_timeout": request_timeout,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
    }
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = query.get("scheme", [None])[0] or parsed.scheme or "https"
    # No explicit keys: the AWS SDK's default chain reads AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY
    # (or a profile, or the instance role) itself. Explicit keys would be pickled with the
    # filesystem into Ray's experiment state and checkpoints metadata, i.e. into the results.
    return pafs.S3FileSystem(**kwargs)


def _s3_query(text: str, query: str) -> dict[str, list[str]]:
    parsed = parse_qs(query)
    unknown = sorted(set(parsed) - set(S3_QUERY_KEYS))
    if unknown:  # names only: the value may be a secret
        raise RaybenchError(f"{text.split('?')[0]}: unsupported URI parameter(s) {unknown}; "
                            f"allowed: {list(S3_QUERY_KEYS)} (credentials come from the "
                            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment variables)")
    return parsed


def resolve(uri: str | os.PathLike[str], **s3_options: Any) -> Location:
    """Parses a local path, ``file://`` or ``s3://`` URI into a :class:`Location`.

    Args:
        uri: The location.
        **s3_options: ``connect_timeout``, ``request_timeout``, ``attempts`` for S3.

    Raises:
        RaybenchError: An unsupported scheme, an S3 URI without a bucket, or a URI parameter
            other than ``endpoint_override``, ``region`` and ``scheme``.
    """
    text = os.fspath(uri)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        local = parsed.path if parsed.scheme == "file" else text
        return Location(pafs.LocalFileSystem(), str(Path(local).expanduser().absolute()), text)
    if parsed.scheme == "s3":
        if "@" in parsed.netloc:  # never echo it: the part before '@' may be a secret
            raise RaybenchError("an s3:// URI must not hold credentials (user:secret@); use the "
                                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment variables")
        if not parsed.netloc:
            raise RaybenchError(f"{text}: an S3 URI needs a bucket, e.g. s3://bucket/prefix")
        path = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
        fs = _s3_filesystem(_s3_query(text, parsed.query), **s3_options)
        return Location(fs, path, text)
    raise RaybenchError(f"{redact(text)}: unsupported storage scheme {parsed.scheme!r}; "
                        "use a path, file:// or s3://")


@contextlib.contextmanager
def io_errors(loc: Location, what: str = "read") -> Iterator[None]:
    """Turns an ``OSError`` of the filesystem into one secret-free RaybenchError line.

    On S3 a refused, unreachable or silent endpoint (connect and request timeouts, see
    :func:`resolve`) then reads e.g. ``cannot read s3://b/p: endpoint http://h:9000 is
    unreachable``.
    """
    try:
        yield
    except OSError as exc:
        if loc.is_local:
            reason = exc.strerror or str(exc).splitlines()[0]
        else:
            reason = describe_s3_error(exc, loc.path.split("/", 1)[0], endpoint_of(loc))
        raise RaybenchError(redact(f"cannot {what} {loc.uri}: {reason}")) from None


def endpoint_of(loc: Location) -> str:
    """The S3 endpoint a location talks to, for messages (``AWS S3`` when none is set)."""
    try:
        options = loc.fs.__reduce__()[1][0]  # the keyword arguments it was built with
        host, scheme = options.get("endpoint_override"), options.get("scheme") or "https"
    except (AttributeError, IndexError, TypeError, KeyError):
        host, scheme = None, "https"
    return f"{scheme}://{host}" if host else (_endpoint({}) or "AWS S3")


def read_bytes(loc: Location) -> bytes:
    """The whole content of a file.

    Raises:
        RaybenchError: Missing file, unreadable file or unreachable store.
    """
    with io_errors(loc), loc.fs.open_input_stream(loc.path) as stream:
        return stream.read()


def exists(loc: Location) -> bool:
    """Whether a file or folder exists at ``loc``."""
    with io_errors(loc):
        return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound


def list_files(loc: Location, suffix: str = "") -> list[pafs.FileInfo]:
    """Visible files (not starting with ``.`` or ``_``) directly in folder ``loc``, by name.

    A missing folder has no files.
    """
    selector = pafs.FileSelector(loc.path, allow_not_found=True)
    with io_errors(loc, "list"):
        found = loc.fs.get_file_info(selector)
    infos = [f for f in found
             if f.type == pafs.FileType.File and f.base_name.endswith(suffix)
             and not f.base_name.startswith((".", "_"))]
    return sorted(infos, key=lambda f: f.base_name)


def list_dirs(loc: Location) -> list[str]:
    """Names of the visible sub-folders of ``loc``."""
    selector = pafs.FileSelector(loc.path, allow_not_found=True)
    with io_errors(loc, "list"):
        found = loc.fs.get_file_info(selector)
    return sorted(f.base_name for f in found
                  if f.type == pafs.FileType.Directory and not f.base_name.startswith((".", "_")))


@contextlib.contextmanager
def atomic_writer(loc: Location) -> Iterator[IO[bytes]]:
    """A binary file whose content appears at ``loc`` only if the ``with`` block succeeds.

    Readers see the old file or the whole new one, never a part: locally the bytes go to a
    hidden temporary file in the same folder, then ``os.replace``; on S3 they are buffered and
    uploaded in one request when the block ends (an object exists only once its upload has
    completed). An exception or a killed process leaves the old file (or none) in place.
    """
    if loc.is_local:
        try:
            yield from _local_atomic_writer(loc)
        except OSError as exc:  # disk full, read-only, permissions: one line, earlier files kept
            raise RaybenchError(f"cannot write {loc.uri}: {exc.strerror or exc}") from None
        return
    buffer = io.BytesIO()
    yield buffer
    _put_object(loc, buffer.getbuffer())


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def follow_umask(fd: int) -> None:
    """Gives a ``tempfile.mkstemp`` file (always 0600) the mode a plain ``open`` would have.

    Results are meant to be shared: with the usual umask 022 they become 0644.
    """
    os.fchmod(fd, 0o666 & ~current_umask())


def _local_atomic_writer(loc: Location) -> Iterator[IO[bytes]]:
    parent = os.path.dirname(loc.path)
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(loc.path), dir=parent)
    try:
        follow_umask(fd)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, loc.path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _put_object(loc: Location, data: memoryview | bytes) -> None:
    try:
        with loc.fs.open_output_stream(loc.path) as stream:
            stream.write(data)
    except OSError as exc:
        reason = describe_s3_error(exc, loc.path.split("/", 1)[0], endpoint_of(loc))
        raise RaybenchError(redact(f"cannot write {loc.uri}: {reason}")) from None


def write_bytes_atomic(loc: Location, data: bytes) -> None:
    """Writes ``data`` so that readers see the old file or the whole new one, never a part."""
    with atomic_writer(loc) as handle:
        handle.write(data)


def write_parquet_atomic(loc: Location, table: pa.Table) -> None:
    """Writes a pyarrow table as one Parquet file, atomically."""
    import pyarrow.parquet as pq

    with atomic_writer(loc) as handle:
        pq.write_table(table, handle)


def delete_file(loc: Location) -> None:
    """Removes a file; a missing one is fine."""
    with contextlib.suppress(FileNotFoundError):
        loc.fs.delete_file(loc.path)


def create_exclusive(loc: Location, data: bytes) -> bool:
    """Creates the file ``loc`` with ``data`` only if nothing exists there; atomic on each store.

    Locally an exclusive create (``O_CREAT | O_EXCL``); on S3 a conditional
    ``PutObject`` with ``If-None-Match: *`` (AWS S3, MinIO and moto answer 412 when the key
    exists). Two callers racing for the same path: exactly one gets True.

    Returns:
        True when this call created the file, False when it already existed.

    Raises:
        RaybenchError: The store cannot be written (one line naming it).
    """
    if loc.is_local:
        os.makedirs(os.path.dirname(loc.path), exist_ok=True)
        try:
            fd = os.open(loc.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise RaybenchError(f"cannot write {loc.uri}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return True
    return _s3_put_if_absent(loc, data)


def _s3_put_if_absent(loc: Location, data: bytes) -> bool:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    # The endpoint and region the location's own filesystem was built with (a child
    # location's URI does not carry the root's ?endpoint_override= query).
    options = loc.fs.__reduce__()[1][0]
    host, scheme = options.get("endpoint_override"), options.get("scheme") or "https"
    endpoint = f"{scheme}://{host}" if host and "://" not in host else host
    region = options.get("region") or "us-east-1"
    bucket, _, key = loc.path.partition("/")
    client = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        return True
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
            return False
        raise RaybenchError(redact(f"cannot write {loc.uri}: {code or exc}")) from None
    except BotoCoreError as exc:
        raise RaybenchError(redact(f"cannot write {loc.uri}: {exc}")) from None


# --- fail-fast check of a results root ---------------------------------------------------

_S3_ERRORS: tuple[tuple[str, str], ...] = (
    ("NO_SUCH_BUCKET", "bucket {bucket!r} does not exist"),
    ("INVALID_ACCESS_KEY_ID", "the credentials were rejected (unknown access key; check "
                              "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"),
    ("SIGNATURE_DOES_NOT_MATCH", "the credentials were rejected (bad secret key; check "
                                 "AWS_SECRET_ACCESS_KEY)"),
    ("ACCESS_DENIED", "access denied: the credentials were rejected or may not write to "
                      "bucket {bucket!r} (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"),
    ("NETWORK_CONNECTION", "endpoint {endpoint} is unreachable"),
    ("curlCode", "endpoint {endpoint} is unreachable"),
)


def describe_s3_error(exc: BaseException, bucket: str = "?", endpoint: str = "?") -> str:
    """A short, secret-free reason for a pyarrow S3 error."""
    text = str(exc)
    for code, reason in _S3_ERRORS:
        if code in text:
            return reason.format(bucket=bucket, endpoint=endpoint)
    first = text.splitlines()[0] if text else type(exc).__name__
    return redact(re.sub(r"\s*\(Request ID: [^)]*\)", "", first))


def _check_local(loc: Location) -> None:
    path = Path(loc.path)
    if path.exists() and not path.is_dir():
        raise RaybenchError(f"results store {loc.uri}: {path} exists and is not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise RaybenchError(f"results store {loc.uri}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RaybenchError(f"results store {loc.uri}: {existing} is not writable")


def _check_s3(loc: Location, endpoint: str) -> None:
    bucket = loc.path.split("/", 1)[0]
    listing = pafs.FileSelector(loc.path, allow_not_found=True)
    try:
        if loc.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise RaybenchError(f"results store {loc.uri}: bucket {bucket!r} does not exist "
                                f"at {endpoint}")
        loc.fs.get_file_info(listing)
        return
    except OSError as exc:
        reason = describe_s3_error(exc, bucket, endpoint)
    if "unreachable" not in reason:
        try:  # HEAD answers carry no body; a listing's error names the exact cause
            loc.fs.get_file_info(listing)
        except OSError as exc:
            reason = describe_s3_error(exc, bucket, endpoint)
    raise RaybenchError(redact(f"results store {loc.uri}: {reason}"))


def check_writable(uri: str | os.PathLike[str], timeout_s: float = CHECK_TIMEOUT_S) -> Location:
    """Fails fast, with one clear line, if results cannot be written to ``uri``.

    Locally: the folder (or its nearest existing parent) must be a writable folder. On S3:
    the endpoint must answer, the bucket exist and the credentials be accepted (a HEAD of
    the bucket and a listing of the prefix). Nothing is written or created.

    Returns:
        The resolved location.

    Raises:
        RaybenchError: Within ``timeout_s`` seconds, naming the store and the reason (an
            unreachable endpoint, a missing bucket, rejected credentials); never a secret.
    """
    loc = resolve(uri)
    if loc.is_local:
        _check_local(loc)
        return loc
    query = _s3_query(os.fspath(uri), urlparse(os.fspath(uri)).query)
    endpoint = _endpoint(query) or "AWS S3"
    quick = resolve(uri, connect_timeout=min(2.0, timeout_s / 4),
                    request_timeout=min(3.0, timeout_s / 3), attempts=1)
    call_with_deadline(lambda: _check_s3(quick, endpoint), timeout_s,
                       redact(f"results store {loc.uri}: endpoint {endpoint}"),
                       "raybench-storage-check")
    return loc

