"""``raybench dashboard``: optuna-dashboard on a sweep's stored Optuna studies.

The sweep engine keeps one Optuna study per cell (``<model>-<scenario>-s<seed>``, plus
``-<roi>``) in ``<root>/<sweep>/optuna/journal.log``, an Optuna ``JournalStorage`` file
(located and opened by :mod:`raybench.tune.studies`). A
local root is served as it is (a running sweep's new trials appear on reload); an ``s3://``
root is first copied to a local temporary file (a snapshot: restart to refresh). The server
is optuna-dashboard's WSGI app on the standard library's ``wsgiref`` server, which is meant
for one user on a trusted network: it listens on 127.0.0.1 unless told otherwise.
``optuna-dashboard`` is an optional extra (``pip install 'raybench[dashboard]'``).
"""
from __future__ import annotations

import contextlib
import logging
import posixpath
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from raybench import storage
from raybench.errors import RaybenchError
from raybench.tune import studies as journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DashboardOptions:
    """What ``raybench dashboard`` serves and where.

    Attributes:
        root: Results root: a path or ``s3://bucket/prefix``.
        sweep: The sweep's name.
        host: Interface to listen on.
        port: TCP port; 0 picks a free one.
    """

    root: str
    sweep: str
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass
class Dashboard:
    """A started (not yet serving) dashboard: call :meth:`serve_forever`, then :meth:`close`."""

    server: WSGIServer
    url: str
    studies: list[str]
    journal: Path
    _tmp: Optional[tempfile.TemporaryDirectory] = field(default=None, repr=False)

    def serve_forever(self) -> None:
        """Serves requests until :meth:`shutdown` is called (from another thread)."""
        self.server.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        """Stops :meth:`serve_forever`."""
        self.server.shutdown()

    def close(self) -> None:
        """Closes the socket and removes a downloaded copy."""
        self.server.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        log.debug("dashboard: " + format, *args)


def local_journal(root: str, sweep: str, workdir: Path) -> Path:
    """A local path of the sweep's journal: the file itself, or a copy of the S3 object.

    Raises:
        RaybenchError: The sweep has no journal (no Optuna study stored yet).
    """
    loc = journal.journal_location(root, sweep)
    if not storage.exists(loc):
        where = posixpath.join(storage.redact(root.split("?")[0]), sweep, journal.OPTUNA_DIR,
                               journal.JOURNAL)
        raise RaybenchError(f"no Optuna studies for sweep {sweep!r}: {where} does not exist "
                            "(an Optuna-mode `raybench sweep` writes it)")
    if loc.is_local:
        return Path(loc.path)
    copy = workdir / journal.JOURNAL
    copy.write_bytes(storage.read_bytes(loc))
    return copy


def study_names(journal_file: Path) -> list[str]:
    """Names of the studies in a journal file, sorted."""
    return sorted(optuna_study_names(journal.open_storage(journal_file)))


def optuna_study_names(journal_storage: Any) -> list[str]:
    """The study names of an Optuna storage."""
    from optuna.study import get_all_study_names

    return list(get_all_study_names(journal_storage))


def _wsgi_app(journal_file: Path) -> Any:
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise RaybenchError("raybench dashboard needs optuna-dashboard: "
                            "pip install 'raybench[dashboard]'") from None
    return wsgi(journal.open_storage(journal_file))


def start_dashboard(opts: DashboardOptions) -> Dashboard:
    """Opens the sweep's studies and binds the server (it serves once :meth:`serve_forever` runs).

    Raises:
        RaybenchError: No journal, optuna-dashboard missing, or the address is unusable.
    """
    tmp = None if storage.resolve(opts.root).is_local else tempfile.TemporaryDirectory(
        prefix="raybench-dashboard-")
    try:
        journal_file = local_journal(opts.root, opts.sweep, Path(tmp.name) if tmp else Path("."))
        app = _wsgi_app(journal_file)
        names = study_names(journal_file)
        try:
            server = make_server(opts.host, opts.port, app, handler_class=_QuietHandler)
        except OSError as exc:
            raise RaybenchError(f"cannot listen on {opts.host}:{opts.port}: "
                                f"{exc.strerror or exc}") from None
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    host = f"[{opts.host}]" if ":" in opts.host else opts.host
    url = f"http://{host}:{server.server_port}/dashboard"
    return Dashboard(server, url, names, journal_file, tmp)


@contextlib.contextmanager
def running_dashboard(opts: DashboardOptions) -> Iterator[Dashboard]:
    """A dashboard serving in a background thread for the ``with`` block (tests, notebooks)."""
    board = start_dashboard(opts)
    thread = threading.Thread(target=board.serve_forever, daemon=True, name="raybench-dashboard")
    thread.start()
    try:
        yield board
    finally:
        board.shutdown()
        thread.join(10)
        board.close()
