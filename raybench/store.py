"""The results store: one file per trial per table, in DESIGN.md section 4's layout.

::

    <root>/<sweep>/spec.yaml
    <root>/<sweep>/runs/<trial_id>.parquet
    <root>/<sweep>/metrics/<trial_id>.parquet
    <root>/<sweep>/epochs/<trial_id>.parquet
    <root>/<sweep>/predictions/<trial_id>.parquet
    <root>/<sweep>/cams/<trial_id>.npz
    <root>/<sweep>/_compact/<table>.parquet      optional snapshot for fast loading

Each file is written atomically and a retried trial replaces its own files, so writes are
idempotent and ``pandas.read_parquet(<root>/<sweep>/<table>)`` works without raybench.

Reading one small Parquet file costs about half a millisecond of footer parsing, so 10,000
trials x 4 tables would take 20 s. :meth:`ResultStore.compact` therefore writes one snapshot
file per table that records which trial files (by size and modification time) it holds; a read
takes the snapshot's rows for unchanged trials and reads only new or changed trial files. The
per-trial files stay the source of truth: a missing or stale snapshot only costs time.
"""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raybench import schema as S
from raybench import storage
from raybench.cam.camset import CamSet  # re-exported: `from raybench.store import CamSet`
from raybench.errors import RaybenchError

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")
COMPACT_DIR = "_compact"
CAMS_DIR = "cams"
_INDEX_KEY = b"raybench.index"
_READ_THREADS = 16  # S3 reads are latency-bound; local reads are no slower in a pool


def check_name(kind: str, name: str) -> str:
    """Sweep and trial names become path parts: letters, digits, ``. _ = -`` only."""
    if not _SAFE.match(name or ""):
        raise RaybenchError(f"{kind} name {name!r} is not usable as a file name; "
                            "use letters, digits, '.', '_', '=' and '-'")
    return name


def _stem(info: pafs.FileInfo) -> str:
    return info.base_name.rsplit(".", 1)[0]


def _stamp(info: pafs.FileInfo) -> list[int]:
    return [int(info.size or 0), int(info.mtime_ns or 0)]


def _parse_parquet(data: bytes) -> pa.Table:
    return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t.replace_schema_metadata(None) for t in tables]
    return pa.concat_tables(tables, promote_options="permissive")


class ResultStore:
    """Reads and writes one results root (a local path or ``s3://bucket/prefix``)."""

    def __init__(self, uri: str) -> None:
        self.root = storage.resolve(uri)

    def location(self, sweep: str, *parts: str) -> storage.Location:
        """Where a sweep's file or folder lives."""
        return self.root.join(check_name("sweep", sweep), *parts)

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
        return storage.read_bytes(loc).decode("utf-8") if storage.exists(loc) else None

    def sweeps(self) -> list[str]:
        """Names of the sweeps under the root (folders with a spec or a runs table)."""
        names = storage.list_dirs(self.root)
        return [n for n in names if _SAFE.match(n) and (
            storage.exists(self.location(n, "spec.yaml")) or storage.exists(self.location(n, "runs")))]

    def write_table(self, sweep: str, table: str, trial_id: str,
                    rows: Sequence[dict[str, Any]] | pd.DataFrame,
                    schema: pa.Schema | None = None) -> None:
        """Writes one trial's rows of ``table``, replacing any earlier file for the trial."""
        schema = schema or S.TABLE_SCHEMAS[table]
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        frame = frame.assign(**{S.SWEEP: sweep, S.TRIAL_ID: trial_id})
        missing = [n for n in schema.names if n not in frame.columns]
        for name in missing:
            frame[name] = None
        arrow = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        loc = self.location(sweep, table, f"{check_name('trial', trial_id)}.parquet")
        storage.write_parquet_atomic(loc, arrow)

    def read_table(self, sweep: str, table: str) -> pd.DataFrame:
        """All trials' rows of one table (an empty frame with the columns when none exist)."""
        arrow, _ = self.read_arrow(sweep, table)
        if arrow is None:
            return pd.DataFrame(columns=S.TABLE_SCHEMAS.get(table, pa.schema([])).names)
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
        return (_concat(parts) if parts else None), stamps

    def _read_files(self, infos: list[pafs.FileInfo]) -> list[pa.Table]:
        locs = [storage.Location(self.root.fs, f.path, f.path) for f in infos]
        if len(locs) < 4:
            return [_parse_parquet(storage.read_bytes(loc)) for loc in locs]
        with ThreadPoolExecutor(_READ_THREADS) as pool:
            return list(pool.map(lambda loc: _parse_parquet(storage.read_bytes(loc)), locs))

    def _read_snapshot(self, sweep: str, table: str) -> tuple[Optional[pa.Table], dict]:
        loc = self.location(sweep, COMPACT_DIR, f"{table}.parquet")
        if not storage.exists(loc):
            return None, {}
        arrow = _parse_parquet(storage.read_bytes(loc))
        index = json.loads((arrow.schema.metadata or {}).get(_INDEX_KEY, b"{}"))
        return arrow, index

    def compact(self, sweep: str, tables: Sequence[str] = S.TABLES) -> dict[str, int]:
        """Writes (or refreshes) the snapshot of each table; returns the trial count of each.

        Safe while trials are still writing: a trial file written after the listing is simply
        not in the snapshot and is read on its own.
        """
        counts = {}
        for table in tables:
            arrow, stamps = self.read_arrow(sweep, table)
            counts[table] = len(stamps)
            if arrow is None:
                continue
            arrow = arrow.replace_schema_metadata({_INDEX_KEY: json.dumps(stamps).encode()})
            storage.write_parquet_atomic(self.location(sweep, COMPACT_DIR, f"{table}.parquet"),
                                         arrow)
        return counts

    def write_cams(self, sweep: str, trial_id: str, cams: CamSet) -> None:
        """Saves one trial's CAMs as ``cams/<trial_id>.npz`` (atomically, replacing)."""
        loc = self.location(sweep, CAMS_DIR, f"{check_name('trial', trial_id)}.npz")
        storage.write_bytes_atomic(loc, cams.to_npz())

    def read_cams(self, sweep: str, trial_id: str) -> CamSet:
        """One trial's CAMs.

        Raises:
            RaybenchError: The trial has no CAM file.
        """
        loc = self.location(sweep, CAMS_DIR, f"{check_name('trial', trial_id)}.npz")
        if not storage.exists(loc):
            raise RaybenchError(f"no CAMs for trial {trial_id!r} at {loc.uri}")
        return CamSet.from_npz(storage.read_bytes(loc))

    def cam_trials(self, sweep: str) -> list[str]:
        """Trial ids that have a CAM file."""
        return [_stem(f) for f in storage.list_files(self.location(sweep, CAMS_DIR), ".npz")]
