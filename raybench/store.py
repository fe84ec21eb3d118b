"""The results store: one file per trial per table, in the layout of the README's
"Results, reports and CAMs" section.

::

    <root>/<sweep>/spec.yaml
    <root>/<sweep>/runs/<trial_id>.parquet
    <root>/<sweep>/metrics/<trial_id>.parquet
    <root>/<sweep>/epochs/<trial_id>.parquet
    <root>/<sweep>/predictions/<trial_id>.parquet
    <root>/<sweep>/cams/<trial_id>.npz
    <root>/<sweep>/_compact/<table>.parquet      optional snapshot for fast loading
    <root>/<sweep>/_compact/cams.json            CAM files checked readable (resume skips them)

Each file is written atomically and a retried trial replaces its own files, so writes are
idempotent and ``pandas.read_parquet(<root>/<sweep>/<table>)`` works without raybench.

Reading one small Parquet file costs about half a millisecond of footer parsing, so 10,000
trials x 4 tables would take 20 s. :meth:`ResultStore.compact` therefore writes one snapshot
file per table that records which trial files (by size and modification time) it holds; a read
takes the snapshot's rows for unchanged trials and reads only new or changed trial files. The
per-trial files stay the source of truth: a missing or stale snapshot only costs time.
"""
from __future__ import annotations

import difflib
import json
import logging
import posixpath
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raybench import schema as S
from raybench import storage
from raybench.camset import CamSet
from raybench.errors import RaybenchError

log = logging.getLogger(__name__)
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")
COMPACT_DIR = "_compact"
CAMS_DIR = "cams"
#: A trial's own checkpoint, ``<sweep>/_state/<trial_id>.pt`` (written by the engine's worker;
#: named here so that the sweep driver can remove it without importing torch).
STATE_DIR = "_state"
#: A sweep's lease folder (the live driver's generation files; :mod:`raybench.tune.claim`).
LEASE_DIR = "_lease"
#: In ``_compact/``: the (size, mtime) of each CAM file whose ZIP directory read back whole.
CAMS_INDEX = "cams.json"
_INDEX_KEY = b"raybench.index"
#: Parquet metadata of a trial file: the sweep lease generation its trial worked for.
GENERATION_KEY = b"raybench.generation"
_READ_THREADS = 16  # S3 reads are latency-bound; local reads are no slower in a pool
#: Trial files :meth:`ResultStore.compact` reads at a time (one row group of the snapshot).
COMPACT_BATCH = 256
#: Rows of an old snapshot read at a time while it is rewritten.
COMPACT_ROWS = 65_536


def check_name(kind: str, name: str) -> str:
    """Sweep and trial names become path parts: letters, digits, ``. _ = -`` only."""
    if not _SAFE.match(name or ""):
        raise RaybenchError(f"{kind} name {name!r} is not usable as a file name; "
                            "use letters, digits, '.', '_', '=' and '-'")
    return name


def sweep_location(root: storage.Location, sweep: str, *parts: str) -> storage.Location:
    """Where a sweep's file or folder lives under a results root (the store's layout)."""
    return root.join(check_name(S.SWEEP, sweep), *parts)


def _stem(info: pafs.FileInfo) -> str:
    return info.base_name.rsplit(".", 1)[0]


def _stamp(info: pafs.FileInfo) -> list[int]:
    return [int(info.size or 0), int(info.mtime_ns or 0)]


#: What to do about a corrupt result file (the message of :class:`CorruptResultError`).
CORRUPT_FIX = ("remove it and resume the sweep (raybench sweep --resume reruns that trial), "
               "or pass --skip-corrupt (skip_corrupt=True) to leave it out")
_KEY_COLUMNS = (S.SWEEP, S.TRIAL_ID)


class CorruptResultError(RaybenchError):
    """A result file that cannot be read, or is not one of raybench's (truncated, foreign).

    Attributes:
        uri: The file.
    """

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"corrupt result file {uri}: {reason}; {CORRUPT_FIX}")
        self.uri = uri


def _parse_parquet(data: bytes, uri: str = "?") -> pa.Table:
    try:
        table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise CorruptResultError(uri, f"not a readable Parquet file ({reason})") from None
    return table


def _pool_map(fn: Any, items: Sequence[Any]) -> list[Any]:
    """``fn`` over ``items``, in a pool of :data:`_READ_THREADS` from 4 items on (S3 reads
    are latency-bound); the results in order."""
    if len(items) < 4:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        return list(pool.map(fn, items))


def _parquet_unreadable(fs: pafs.FileSystem, info: pafs.FileInfo) -> bool:
    """Whether a Parquet file's footer cannot be read (empty, or cut short)."""
    if not info.size:
        return True
    try:
        pq.read_metadata(info.path, filesystem=fs)
    except (pa.ArrowException, OSError, ValueError):
        return True
    return False


def _zip_unreadable(fs: pafs.FileSystem, info: pafs.FileInfo) -> bool:
    """Whether an NPZ (ZIP) file's central directory cannot be read (empty, or cut short)."""
    if not info.size:
        return True
    try:
        with fs.open_input_file(info.path) as handle, zipfile.ZipFile(handle) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return True
    return False


def _check_trial_table(table: pa.Table, uri: str, trial: str) -> pa.Table:
    """A trial file must carry the key columns and its own trial id (not a copied file)."""
    missing = [c for c in _KEY_COLUMNS if c not in table.column_names]
    if missing:
        raise CorruptResultError(uri, f"not a raybench table (no {', '.join(missing)} column)")
    ids = set(table.column(S.TRIAL_ID).to_pylist())
    if ids - {trial}:
        raise CorruptResultError(uri, f"holds rows of trial(s) {sorted(map(str, ids))[:3]}, "
                                 f"not {trial!r}")
    return table


class ResultSchemaError(ValueError):
    """A result row that does not fit its table's schema.

    A ``ValueError``, not a :class:`RaybenchError`: the rows come from raybench's own code, so
    this is a bug to see with its traceback, not a user error for a one-line message.
    """


def _did_you_mean(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_columns(table: str, trial_id: str, rows: Sequence[dict[str, Any]] | pd.DataFrame,
                  schema: pa.Schema) -> None:
    """Checks that ``rows`` of ``table`` use only ``schema``'s columns and all required ones.

    Raises:
        ResultSchemaError: Naming the table, the trial and the offending column(s).
    """
    added = {S.SWEEP, S.TRIAL_ID}  # write_table sets these itself
    required = [c for c in S.required_columns(table, schema) if c not in added]
    keyed = [list(rows.columns)] if isinstance(rows, pd.DataFrame) else [list(r) for r in rows]
    problems: list[str] = []
    for keys in keyed:
        unknown = [k for k in keys if k not in schema.names]
        problems += [f"unknown column {k!r}{_did_you_mean(str(k), schema.names)}"
                     for k in unknown]
        absent = [c for c in required if c not in keys]
        if absent:
            problems.append(f"missing required column(s) {', '.join(map(repr, absent))}")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise ResultSchemaError(f"{table} row of trial {trial_id}: {'; '.join(unique)}")


def _conform(part: pa.Table, schema: pa.Schema) -> pa.Table:
    """``part`` with ``schema``'s columns in its order (absent ones null), cast to its types."""
    columns = [part.column(f.name).cast(f.type) if f.name in part.column_names
               else pa.nulls(len(part), f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


class _SkippedWhileCompacting(Exception):
    """Discards a snapshot being written: its index would list a corrupt trial file that was
    skipped, and later loads and resumes would then take that trial as read, silently."""


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t.replace_schema_metadata(None) for t in tables]
    return pa.concat_tables(tables, promote_options="permissive")


class ResultStore:
    """Reads and writes one results root (a local path or ``s3://bucket/prefix``)."""

    def __init__(self, uri: str, *, skip_corrupt: bool = False,
                 fence: Optional[Callable[[], None]] = None) -> None:
        """Opens ``uri``; with ``skip_corrupt`` unreadable trial files are logged and left out.

        ``fence`` (a trial's :class:`raybench.lease.Fence`) runs before every write and
        raises when the sweep's lease has moved to a newer generation than the one the
        trial works for: a fenced driver's trials publish nothing more. Parquet files then
        carry that generation in their metadata (:data:`GENERATION_KEY`).
        """
        self.root = storage.resolve(uri)
        self.skip_corrupt = skip_corrupt
        self.skipped: list[str] = []
        self.fence = fence

    def _publish(self) -> dict[bytes, bytes]:
        """Runs the fence (if any); the metadata that marks the writer's generation."""
        if self.fence is None:
            return {}
        self.fence()
        generation = getattr(self.fence, "generation", None)
        return {} if generation is None else {GENERATION_KEY: str(generation).encode()}

    def _corrupt(self, exc: CorruptResultError) -> None:
        """Re-raises ``exc`` unless corrupt files are skipped; then warns and records it."""
        if not self.skip_corrupt:
            raise exc
        log.warning("skipping %s", exc.args[0].split("; ")[0])
        self.skipped.append(exc.uri)

    def check_root(self) -> None:
        """One line for a results root that is a file, or a sweep's folder instead of its root.

        Raises:
            RaybenchError: Naming the path and what to pass instead.
        """
        with storage.io_errors(self.root):
            info = self.root.fs.get_file_info(self.root.path)
        if info.type == pafs.FileType.File:
            raise RaybenchError(f"{self.root.uri} is a file, not a results root (the folder "
                                "that holds <sweep>/runs, e.g. ./runs)")
        if info.type == pafs.FileType.NotFound:
            return
        with storage.io_errors(self.root):
            spec = self.root.fs.get_file_info(self.root.join("spec.yaml").path)
        if spec.type == pafs.FileType.File or storage.list_files(self.root.join(S.RUNS_TABLE),
                                                                 ".parquet"):
            parent, name = posixpath.split(self.root.uri.split("?")[0].rstrip("/"))
            raise RaybenchError(f"{self.root.uri} is a sweep's folder, not a results root: pass "
                                f"{parent or '.'} with --sweep {name}")

    def location(self, sweep: str, *parts: str) -> storage.Location:
        """Where a sweep's file or folder lives."""
        return sweep_location(self.root, sweep, *parts)

    def write_spec(self, sweep: str, text: str) -> None:
        """Saves the resolved spec (YAML) before any trial runs."""
        storage.write_bytes_atomic(self.location(sweep, "spec.yaml"),
                                   storage.redact(text).encode("utf-8"))

    def delete_sweep(self, sweep: str) -> None:
        """Removes a sweep's folder (its tables, spec and Tune state)."""
        loc = self.location(sweep)
        if storage.exists(loc):
            loc.fs.delete_dir(loc.path)

    def read_spec(self, sweep: str) -> Optional[str]:
        """The saved spec, or None."""
        loc = self.location(sweep, "spec.yaml")
        if not storage.exists(loc):
            return None
        return storage.read_bytes(loc).decode("utf-8", errors="replace")  # cut short: no match

    # --- a sweep's own small files (claim, lease): read, create-if-absent, replace ----------
    def read_file(self, sweep: str, name: str) -> Optional[bytes]:
        """The bytes of ``<sweep>/<name>``, or None when it does not exist."""
        loc = self.location(sweep, name)
        return storage.read_bytes(loc) if storage.exists(loc) else None

    def create_file(self, sweep: str, name: str, data: bytes) -> bool:
        """Creates ``<sweep>/<name>`` only if absent (atomic on local disk and S3); True if so."""
        return storage.create_exclusive(self.location(sweep, name), data)

    def replace_file(self, sweep: str, name: str, data: bytes) -> None:
        """Writes ``<sweep>/<name>`` atomically (readers see the old or the new bytes)."""
        self._publish()
        storage.write_bytes_atomic(self.location(sweep, name), data)

    def delete_file(self, sweep: str, name: str) -> None:
        """Removes ``<sweep>/<name>``; a missing file is fine."""
        self._publish()
        storage.delete_file(self.location(sweep, name))

    def file_names(self, sweep: str, folder: str, suffix: str = "") -> list[str]:
        """Names of the files in ``<sweep>/<folder>`` ending in ``suffix`` (none: empty)."""
        return sorted(info.base_name for info in
                      storage.list_files(self.location(sweep, folder), suffix))

    def has_trial_file(self, sweep: str, table: str, trial_id: str) -> bool:
        """Whether the trial wrote its file of ``table`` (a run row exists once it completed)."""
        return storage.exists(self.location(sweep, table, f"{trial_id}.parquet"))

    def trial_rows(self, sweep: str, table: str, trial_id: str) -> Optional[list[dict[str, Any]]]:
        """The rows of the trial's file of ``table``; None when the trial has no such file.

        Raises:
            CorruptResultError: The file is cut short (a crash) or is not Parquet.
        """
        loc = self.location(sweep, table, f"{trial_id}.parquet")
        if not storage.exists(loc):
            return None
        return _parse_parquet(storage.read_bytes(loc), loc.uri).to_pylist()

    def trial_row(self, sweep: str, table: str, trial_id: str) -> Optional[dict[str, Any]]:
        """The first row of the trial's file of ``table``; None when it is missing or unreadable
        (cut short by a crash)."""
        try:
            rows = self.trial_rows(sweep, table, trial_id)
        except RaybenchError:
            return None
        return rows[0] if rows else None

    def delete_trial_file(self, sweep: str, table: str, trial_id: str) -> None:
        """Removes the trial's file of ``table``; a missing file is fine."""
        self.delete_file(sweep, f"{table}/{trial_id}.parquet")

    def check_writable(self) -> None:
        """Fails in seconds, with one line, when the root cannot be written."""
        storage.check_writable(self.root.uri)

    def exists(self, sweep: str, *parts: str) -> bool:
        """Whether a sweep's file or folder exists."""
        return storage.exists(self.location(sweep, *parts))

    def sweeps(self) -> list[str]:
        """Names of the sweeps under the root (folders with a spec or a runs table)."""
        names = storage.list_dirs(self.root)
        return [n for n in names if _SAFE.match(n) and (
            storage.exists(self.location(n, "spec.yaml")) or storage.exists(self.location(n, S.RUNS_TABLE)))]

    def write_table(self, sweep: str, table: str, trial_id: str,
                    rows: Sequence[dict[str, Any]] | pd.DataFrame,
                    schema: pa.Schema | None = None) -> None:
        """Writes one trial's rows of ``table``, replacing any earlier file for the trial.

        ``sweep`` and ``trial_id`` are added to every row; optional columns a row lacks are
        written as null.

        Raises:
            ResultSchemaError: A row has a column the table's schema lacks (a misspelt key
                would otherwise vanish), or lacks a required one (``schema.REQUIRED``);
                nothing is written.
        """
        schema = schema or S.TABLE_SCHEMAS[table]
        check_columns(table, trial_id, rows, schema)
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        frame = frame.assign(**{S.SWEEP: sweep, S.TRIAL_ID: trial_id})
        missing = [n for n in schema.names if n not in frame.columns]
        for name in missing:
            frame[name] = None
        arrow = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        loc = self.location(sweep, table, f"{check_name('trial', trial_id)}.parquet")
        mark = self._publish()
        if mark:
            arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **mark})
        storage.write_parquet_atomic(loc, arrow)

    def read_table(self, sweep: str, table: str) -> pd.DataFrame:
        """All trials' rows of one table (an empty frame with the columns when none exist)."""
        arrow, _ = self.read_arrow(sweep, table)
        if arrow is None:  # predictions: the columns every label set has (no p_<label>)
            schema = S.TABLE_SCHEMAS.get(table)
            return pd.DataFrame(columns=schema.names if schema else S.REQUIRED.get(table, ()))
        return arrow.to_pandas()

    def read_arrow(self, sweep: str, table: str) -> tuple[Optional[pa.Table], dict[str, list[int]]]:
        """All trials' rows of ``table`` as Arrow, and the (size, mtime) of each trial file."""
        files = {_stem(f): f for f in storage.list_files(self.location(sweep, table), ".parquet")}
        stamps = {trial: _stamp(info) for trial, info in files.items()}
        snapshot, index = self._read_snapshot(sweep, table)
        kept = [t for t, stamp in stamps.items() if index.get(t) == stamp]
        parts: list[pa.Table] = []
        if snapshot is not None and kept:
            if len(kept) != len(index):
                snapshot = snapshot.filter(pc.is_in(snapshot[S.TRIAL_ID], pa.array(kept)))
            parts.append(snapshot)
        fresh = [files[t] for t in stamps if index.get(t) != stamps[t]]
        parts += self._read_files(fresh)
        try:
            return (_concat(parts) if parts else None), stamps
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            folder = self.location(sweep, table).uri
            raise RaybenchError(f"{folder}: trial files with incompatible columns "
                                f"({str(exc).splitlines()[0][:160]}); a foreign file may be "
                                "among them: remove it and resume the sweep") from None

    def _read_one(self, info: pafs.FileInfo) -> pa.Table | CorruptResultError:
        loc = storage.Location(self.root.fs, info.path, info.path)
        uri = self._uri_of(info.path)
        try:
            return _check_trial_table(_parse_parquet(storage.read_bytes(loc), uri), uri,
                                      _stem(info))
        except CorruptResultError as exc:  # returned: the pool must not drop the others
            return exc

    def _uri_of(self, path: str) -> str:
        """A file's URI as the user spelt the root (``s3://...`` or the local path)."""
        if self.root.is_local:
            return path
        return f"s3://{path}"

    def _read_files(self, infos: list[pafs.FileInfo]) -> list[pa.Table]:
        tables = []
        for item in _pool_map(self._read_one, infos):
            if isinstance(item, CorruptResultError):
                self._corrupt(item)
            else:
                tables.append(item)
        return tables

    def _read_snapshot(self, sweep: str, table: str) -> tuple[Optional[pa.Table], dict]:
        loc = self.location(sweep, COMPACT_DIR, f"{table}.parquet")
        if not storage.exists(loc):
            return None, {}
        try:
            arrow = _parse_parquet(storage.read_bytes(loc), loc.uri)
            index = json.loads((arrow.schema.metadata or {}).get(_INDEX_KEY, b"{}"))
        except (CorruptResultError, ValueError) as exc:
            # Only a cache of the trial files: read those instead (slower, still exact).
            log.warning("ignoring the load snapshot %s (%s); reading the trial files",
                        loc.uri, str(exc).split("; ")[0])
            return None, {}
        return arrow, index

    def damaged_trial_files(self, sweep: str) -> dict[str, str]:
        """Trial files a crash or a full disk cut short: ``{trial_id: uri of its first one}``.

        A table's trial file still in the table's snapshot with the same size and mtime was
        read whole when the snapshot was written, so only the others are checked (their
        Parquet footer); likewise a CAM file's ZIP directory is read unless ``_compact/``'s
        :data:`CAMS_INDEX` lists it unchanged. A resume after a finished session therefore
        reads almost nothing.
        An unreadable snapshot is removed (it is only a cache; :meth:`compact` writes it again).
        """
        damaged: dict[str, str] = {}
        for table in S.TABLES:
            index = self._snapshot_index(sweep, table)
            infos = storage.list_files(self.location(sweep, table), ".parquet")
            todo = [f for f in infos if index.get(_stem(f)) != _stamp(f)]
            checked = _pool_map(lambda f: _parquet_unreadable(self.root.fs, f), todo)
            for info, bad in zip(todo, checked, strict=True):
                if bad:
                    damaged.setdefault(_stem(info), self._uri_of(info.path))
        for info in self._unchecked_cams(sweep)[1]:
            damaged.setdefault(_stem(info), self._uri_of(info.path))
        return damaged

    def _unchecked_cams(self, sweep: str) -> tuple[dict[str, list[int]], list[pafs.FileInfo]]:
        """The CAM files' index of readable files (:data:`CAMS_INDEX`, brought up to date) and
        the unreadable ones; only files not in the stored index are opened."""
        loc = self.location(sweep, COMPACT_DIR, CAMS_INDEX)
        try:
            index = json.loads(storage.read_bytes(loc)) if storage.exists(loc) else {}
        except (RaybenchError, ValueError):
            index = {}
        index = index if isinstance(index, dict) else {}
        infos = storage.list_files(self.location(sweep, CAMS_DIR), ".npz")
        todo = [f for f in infos if index.get(_stem(f)) != _stamp(f)]
        checked = _pool_map(lambda f: _zip_unreadable(self.root.fs, f), todo)
        bad = [f for f, b in zip(todo, checked, strict=True) if b]
        gone = {_stem(f) for f in bad}
        fresh = {_stem(f): _stamp(f) for f in infos if _stem(f) not in gone}
        return fresh, bad

    def _snapshot_index(self, sweep: str, table: str) -> dict[str, list[int]]:
        """The snapshot's index from its footer alone; an unreadable snapshot is removed."""
        loc = self.location(sweep, COMPACT_DIR, f"{table}.parquet")
        if not storage.exists(loc):
            return {}
        try:
            meta = pq.read_schema(loc.path, filesystem=loc.fs).metadata or {}
            return json.loads(meta.get(_INDEX_KEY, b"{}"))
        except (pa.ArrowException, OSError, ValueError) as exc:
            log.warning("the load snapshot %s is damaged (%s); removed, it is written again at "
                        "the end of the sweep", loc.uri, str(exc).splitlines()[0][:160])
            storage.delete_file(loc)
            return {}

    def delete_trial_results(self, sweep: str, trial_id: str) -> None:
        """Removes one trial's files of every table and its CAMs (its rerun writes them again)."""
        for table in S.TABLES:
            self.delete_trial_file(sweep, table, trial_id)
        self.delete_file(sweep, f"{CAMS_DIR}/{trial_id}.npz")

    def compact(self, sweep: str, tables: Sequence[str] = S.TABLES) -> dict[str, int]:
        """Writes (or refreshes) the snapshot of each table; returns the trial count of each.

        Safe while trials are still writing: a trial file written after the listing is simply
        not in the snapshot and is read on its own. Each table is streamed: the old snapshot's
        kept rows and the new trial files (:data:`COMPACT_BATCH` at a time) go to the new one
        as row groups, so memory holds one batch, not the table.
        """
        counts = {table: self._compact_table(sweep, table) for table in tables}
        cams, _ = self._unchecked_cams(sweep)
        if cams:  # which CAM files were found readable, so a resume need not open them again
            storage.write_bytes_atomic(self.location(sweep, COMPACT_DIR, CAMS_INDEX),
                                       json.dumps(cams).encode())
        return counts

    def _compact_table(self, sweep: str, table: str) -> int:
        """One table's snapshot, streamed; returns its trial count."""
        files = {_stem(f): f for f in storage.list_files(self.location(sweep, table), ".parquet")}
        stamps = {trial: _stamp(info) for trial, info in files.items()}
        snapshot, index = self._snapshot_file(sweep, table)
        kept = [t for t, stamp in stamps.items() if index.get(t) == stamp]
        fresh = [files[t] for t in stamps if index.get(t) != stamps[t]]
        try:
            self._write_snapshot(sweep, table, snapshot if kept else None,
                                 (kept, index, stamps), fresh)
        except _SkippedWhileCompacting:
            log.warning("no new load snapshot of %s: corrupt trial files were skipped",
                        self.location(sweep, table).uri)
        finally:
            if snapshot is not None:
                snapshot.close()
        return len(stamps)

    def _write_snapshot(self, sweep: str, table: str, old: Optional[pq.ParquetFile],
                        trials: tuple[list[str], dict, dict], fresh: list[pafs.FileInfo]) -> None:
        """Streams the old snapshot's ``kept`` rows and the ``fresh`` files into a new one."""
        kept, index, stamps = trials
        schema = self._unified_schema(sweep, table, old, fresh)
        if schema is None:
            return
        schema = schema.with_metadata({_INDEX_KEY: json.dumps(stamps).encode()})
        loc = self.location(sweep, COMPACT_DIR, f"{table}.parquet")
        skipped = len(self.skipped)
        with storage.atomic_writer(loc) as handle, pq.ParquetWriter(handle, schema) as writer:
            if old is not None:
                keep = None if len(kept) == len(index) else pa.array(kept)
                for batch in old.iter_batches(batch_size=COMPACT_ROWS, use_threads=False):
                    part = pa.Table.from_batches([batch])
                    if keep is not None:
                        part = part.filter(pc.is_in(part[S.TRIAL_ID], value_set=keep))
                    writer.write_table(_conform(part, schema))
            for start in range(0, len(fresh), COMPACT_BATCH):
                parts = self._read_files(fresh[start:start + COMPACT_BATCH])
                if parts:
                    writer.write_table(_conform(_concat(parts), schema))
            if len(self.skipped) > skipped:  # raised inside the writer: nothing is published
                raise _SkippedWhileCompacting

    def _snapshot_file(self, sweep: str, table: str) -> tuple[Optional[pq.ParquetFile], dict]:
        """The table's snapshot opened for batch reads (its footer only), and its index."""
        loc = self.location(sweep, COMPACT_DIR, f"{table}.parquet")
        if not storage.exists(loc):
            return None, {}
        try:
            snapshot = pq.ParquetFile(loc.fs.open_input_file(loc.path))
            index = json.loads((snapshot.schema_arrow.metadata or {}).get(_INDEX_KEY, b"{}"))
        except (pa.ArrowException, OSError, ValueError) as exc:
            log.warning("ignoring the load snapshot %s (%s); reading the trial files", loc.uri,
                        str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__)
            return None, {}
        return snapshot, index

    def _unified_schema(self, sweep: str, table: str, snapshot: Optional[pq.ParquetFile],
                        fresh: list[pafs.FileInfo]) -> Optional[pa.Schema]:
        """The schema every part is cast to (as :func:`_concat` promotes), from footers only;
        None when there is nothing to write. Unreadable files are left to the read."""
        def footer(info: pafs.FileInfo) -> Optional[pa.Schema]:
            try:
                return pq.read_schema(info.path, filesystem=self.root.fs)
            except (pa.ArrowException, OSError, ValueError):
                return None

        schemas = [snapshot.schema_arrow] if snapshot is not None else []
        schemas += [s for s in _pool_map(footer, fresh) if s is not None]
        if not schemas:
            return None
        try:
            return pa.unify_schemas([s.remove_metadata() for s in schemas],
                                    promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            folder = self.location(sweep, table).uri
            raise RaybenchError(f"{folder}: trial files with incompatible columns "
                                f"({str(exc).splitlines()[0][:160]}); a foreign file may be "
                                "among them: remove it and resume the sweep") from None

    def write_cams(self, sweep: str, trial_id: str, cams: CamSet) -> None:
        """Saves one trial's CAMs as ``cams/<trial_id>.npz`` (atomically, replacing)."""
        loc = self.location(sweep, CAMS_DIR, f"{check_name('trial', trial_id)}.npz")
        self._publish()
        storage.write_bytes_atomic(loc, cams.to_npz())

    def read_cams(self, sweep: str, trial_id: str) -> CamSet:
        """One trial's CAMs.

        Raises:
            RaybenchError: The trial has no CAM file.
        """
        loc = self.location(sweep, CAMS_DIR, f"{check_name('trial', trial_id)}.npz")
        if not storage.exists(loc):
            raise RaybenchError(f"no CAMs for trial {trial_id!r} at {loc.uri}")
        try:
            return CamSet.from_npz(storage.read_bytes(loc))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise CorruptResultError(loc.uri, f"not a readable CAM file ({reason})") from None

    def read_cams_or_none(self, sweep: str, trial_id: str) -> Optional[CamSet]:
        """:meth:`read_cams`, or None for a corrupt file when corrupt files are skipped."""
        try:
            return self.read_cams(sweep, trial_id)
        except CorruptResultError as exc:
            self._corrupt(exc)
            return None

    def cam_trials(self, sweep: str) -> list[str]:
        """Trial ids that have a CAM file."""
        return [_stem(f) for f in storage.list_files(self.location(sweep, CAMS_DIR), ".npz")]
