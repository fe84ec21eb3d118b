"""The results store: one Parquet file per trial per table, in DESIGN.md section 4's layout.

::

    <root>/<sweep>/spec.yaml
    <root>/<sweep>/runs/<trial_id>.parquet
    <root>/<sweep>/metrics/<trial_id>.parquet
    <root>/<sweep>/epochs/<trial_id>.parquet
    <root>/<sweep>/predictions/<trial_id>.parquet

Each file is written atomically and a retried trial replaces its own files, so writes are
idempotent and ``pandas.read_parquet(<root>/<sweep>/<table>)`` works without raybench.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raybench import schema as S
from raybench import storage
from raybench.errors import RaybenchError

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")


def check_name(kind: str, name: str) -> str:
    """Sweep and trial names become path parts: letters, digits, ``. _ = -`` only."""
    if not _SAFE.match(name or ""):
        raise RaybenchError(f"{kind} name {name!r} is not usable as a file name; "
                            "use letters, digits, '.', '_', '=' and '-'")
    return name


class ResultStore:
    """Reads and writes one results root (a local path or ``s3://bucket/prefix``)."""

    def __init__(self, uri: str) -> None:
        self.root = storage.resolve(uri)

    def location(self, sweep: str, *parts: str) -> storage.Location:
        """Where a sweep's file or folder lives."""
        return self.root.join(check_name("sweep", sweep), *parts)

    def write_spec(self, sweep: str, text: str) -> None:
        """Saves the resolved spec (YAML) before any trial runs."""
        storage.write_bytes_atomic(self.location(sweep, "spec.yaml"), text.encode("utf-8"))

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
        """All trials' rows of one table (empty frame when none were written)."""
        loc = self.location(sweep, table)
        if not storage.exists(loc):
            return pd.DataFrame(columns=S.TABLE_SCHEMAS.get(table, pa.schema([])).names)
        files = [f.path for f in loc.fs.get_file_info(pafs.FileSelector(loc.path))
                 if f.path.endswith(".parquet") and not f.base_name.startswith(".")]
        if not files:
            return pd.DataFrame()
        tables = [pq.read_table(p, filesystem=loc.fs) for p in sorted(files)]
        return pa.concat_tables(tables, promote_options="default").to_pandas()
