"""A lease: which live process holds a shared resource, on the storage layer's conditional create.

A lease is a series of generation files in one folder, ``<prefix><generation:08d><suffix>``.
Taking it creates the next generation with :func:`raybench.storage.create_exclusive`
(``O_EXCL`` locally, ``If-None-Match: *`` on S3), and only when the newest generation is
stale (or there is none), so of any number of racing takers exactly one wins each generation.
A holder's file records its ``host``, ``pid``, a random ``token``, its last ``heartbeat``
(Unix time) and whether it was ``released``.

One staleness rule (:func:`is_stale`): a lease is stale when released, when its holder ran on
this host and its process is gone, or when it has had no heartbeat for the lease's
``timeout_s``. One heartbeat (:class:`Heartbeat`): a thread rewrites each held lease's own file.
:meth:`Lease.renew` reports the newest generation, so a holder taken for dead (a long pause,
a network partition) learns that it lost the lease and stops renewing it.

Two users: the sweep driver's lease (:mod:`raybench.tune.claim`) and the decoded cache's shard
claims (:mod:`raybench.data.cache`).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

from raybench import storage
from raybench.errors import RaybenchError

log = logging.getLogger(__name__)

#: The environment variable naming the lease generation a holder's helpers work for
#: (``<resource>:<generation>``; a sweep driver sets it for its trials).
GENERATION_ENV = "RAYBENCH_LEASE_GENERATION"

#: Seconds a generation file may read empty or partial (being written) before it counts as
#: cut short by a crash, which is stale.
UNREADABLE_S = 2.0


#: Tokens of the leases this process holds or is taking right now. A record of this process
#: whose token is not here was let go, even when marking it released failed (the store had
#: stopped answering): this process may take it again at once instead of after the timeout.
_LIVE_TOKENS: set[str] = set()


def _pid_gone(record: dict[str, Any]) -> bool:
    """The holder ran on this host and its process is gone (a crashed local holder), or it is
    this process and it let the lease go."""
    pid = record.get("pid")
    if record.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return record.get("token") not in _LIVE_TOKENS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def is_stale(record: dict[str, Any], timeout_s: float, now: Optional[float] = None) -> bool:
    """Whether a lease record's holder is gone: released, its process gone from this host, or
    no heartbeat for ``timeout_s`` seconds (a record without one, e.g. cut short, is stale)."""
    if record.get("released") or _pid_gone(record):
        return True
    beat = record.get("heartbeat")
    now = time.time() if now is None else now
    return not isinstance(beat, (int, float)) or now - beat > timeout_s


@dataclass(frozen=True)
class Attempt:
    """The outcome of :meth:`Lease.try_acquire`.

    Attributes:
        won: This call created generation ``generation``.
        generation: The generation created (won), else the newest one found.
        previous: Won: the stale record taken over (None for the first generation). Lost: the
            live holder's record, or None when another taker won the race or the newest file
            vanished meanwhile (look again later).
    """

    won: bool
    generation: int
    previous: Optional[dict[str, Any]]


@dataclass(frozen=True)
class Renewal:
    """The outcome of :meth:`Lease.renew`: whether this holder still holds the lease, and the
    newest generation with its holder's record (another holder's when ``held`` is False)."""

    held: bool
    generation: int
    holder: Optional[dict[str, Any]]

    def __bool__(self) -> bool:
        return self.held


class Lease:
    """A lease on one resource: the generation files ``<prefix>NNNNNNNN<suffix>`` in ``folder``.

    Args:
        folder: Where the generation files live (local or S3).
        prefix, suffix: Around the zero-padded generation number in each file name.
        timeout_s: Seconds without a heartbeat after which the lease is stale.
        what: Names the resource in log lines (``sweep 'x'``, ``shard-00003 of ...``).
    """

    def __init__(self, folder: storage.Location, prefix: str = "", suffix: str = "", *,
                 timeout_s: float = 60.0, what: str = "") -> None:
        self.folder, self.prefix, self.suffix = folder, prefix, suffix
        self._timeout_s = timeout_s
        self.what = what or folder.uri
        self.token = uuid.uuid4().hex
        #: The generation this object holds, None when it holds none.
        self.generation: Optional[int] = None
        #: Set once :meth:`renew` found another holder's newer generation.
        self.lost = threading.Event()
        #: ``time.monotonic()`` of the last acquire or renewal that found the lease held.
        self.renewed_at = 0.0

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def file_name(self, generation: int) -> str:
        return f"{self.prefix}{generation:08d}{self.suffix}"

    def _loc(self, name: str) -> storage.Location:
        return self.folder.join(name)

    def generations(self, names: Optional[Iterable[str]] = None) -> dict[int, str]:
        """Generation -> file name, from ``names`` (a listing of ``folder``) or a new listing."""
        if names is None:
            names = (f.base_name for f in storage.list_files(self.folder))
        out = {}
        for name in names:
            middle = name[len(self.prefix):len(name) - len(self.suffix)]
            if name.startswith(self.prefix) and name.endswith(self.suffix) and middle.isdigit():
                out[int(middle)] = name
        return out

    def _read_once(self, loc: storage.Location) -> Optional[bytes]:
        if not storage.exists(loc):
            return None
        try:
            return storage.read_bytes(loc)
        except RaybenchError:
            if storage.exists(loc):
                raise
            return None  # deleted between the two looks

    def read(self, name: str) -> Optional[dict[str, Any]]:
        """A generation's record; None when the file is gone. A file being written right now
        (locally, created before its bytes land) reads empty for a moment; one still
        unreadable after :data:`UNREADABLE_S` seconds was cut short by a crash: ``{}``."""
        deadline = time.monotonic() + UNREADABLE_S
        while True:
            data = self._read_once(self._loc(name))
            if data is None:
                return None
            try:
                record = json.loads(data) if data else None
            except ValueError:
                record = None
            if isinstance(record, dict):
                return record
            if time.monotonic() >= deadline:
                return {}
            time.sleep(0.05)

    def current(self, names: Optional[Iterable[str]] = None
                ) -> tuple[int, Optional[dict[str, Any]]]:
        """The newest generation and its record (-1 and None when there is none)."""
        gens = self.generations(names)
        if not gens:
            return -1, None
        newest = max(gens)
        return newest, self.read(gens[newest])

    def _record(self, released: bool = False) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "token": self.token, "heartbeat": time.time(),
                           "released": released}).encode()

    def try_acquire(self, names: Optional[Iterable[str]] = None) -> Attempt:
        """Takes the lease when it is free or stale (``names``: a listing of ``folder`` to use
        instead of a new one). The predecessor's file stays (who held it before); older
        generations go."""
        gens = self.generations(names)
        newest = max(gens, default=-1)
        record = self.read(gens[newest]) if gens else None
        if gens and (record is None or not is_stale(record, self.timeout_s)):
            return Attempt(False, newest, record)
        _LIVE_TOKENS.add(self.token)  # before the file exists: no thread here takes it as let go
        won = False
        try:
            won = storage.create_exclusive(self._loc(self.file_name(newest + 1)), self._record())
        finally:
            if not won and self.generation is None:
                _LIVE_TOKENS.discard(self.token)
        if not won:
            return Attempt(False, newest + 1, None)
        self.generation = newest + 1
        self.renewed_at = time.monotonic()
        self.lost.clear()
        for gen, name in gens.items():
            if gen < newest:
                storage.delete_file(self._loc(name))
        return Attempt(True, newest + 1, record)

    def renew(self) -> Renewal:
        """A fresh heartbeat in this holder's file, unless another holder has a newer
        generation (then :attr:`lost` is set and nothing is written)."""
        gens = self.generations()
        newest = max(gens, default=-1)
        if self.generation is None or newest != self.generation:
            self.lost.set()
            return Renewal(False, newest, self.read(gens[newest]) if gens else None)
        storage.write_bytes_atomic(self._loc(self.file_name(newest)), self._record())
        self.renewed_at = time.monotonic()
        return Renewal(True, newest, None)

    def confirm(self, max_age_s: float) -> Renewal:
        """Whether this holder still holds the lease, renewing it (one listing and one write)
        only when the last renewal is older than ``max_age_s``: a holder renewed within half
        its timeout cannot have been taken for dead, so a check costs a clock read."""
        if (self.generation is not None and not self.lost.is_set()
                and time.monotonic() - self.renewed_at < max_age_s):
            return Renewal(True, self.generation, None)
        return self.renew()

    def release(self, delete: bool = False) -> None:
        """Marks the lease released (the next taker need not wait), or with ``delete`` removes
        this holder's file and the older generations (the resource needs no lease any more).
        A store that stopped answering is logged: the lease then goes stale instead."""
        if self.generation is None:
            return
        gen, self.generation = self.generation, None
        _LIVE_TOKENS.discard(self.token)
        try:
            if not delete:
                storage.write_bytes_atomic(self._loc(self.file_name(gen)),
                                           self._record(released=True))
                return
            for old, name in self.generations().items():
                if old <= gen:
                    storage.delete_file(self._loc(name))
        except (RaybenchError, OSError) as exc:
            log.warning("cannot release the lease of %s: %s", self.what, exc)


class Fence:
    """Refuses the writes of a holder whose generation is no longer the newest.

    A holder's helpers (a sweep driver's trials, in other processes) carry the generation
    they work for; before each write they call the fence, which lists the lease's folder and
    raises :class:`Fenced` when a newer generation exists (the holder was taken for dead and
    replaced). A write that passed the check a moment before the takeover still lands; the
    new holder's own writes replace it.
    """

    def __init__(self, lease: Lease, generation: int) -> None:
        self.lease, self.generation = lease, generation

    def __call__(self) -> None:
        newest = max(self.lease.generations(), default=-1)
        if newest > self.generation:
            raise Fenced(f"{self.lease.what}: generation {self.generation} was replaced by "
                         f"generation {newest}; this write was refused")


class Fenced(RaybenchError):
    """A write refused because the lease it was made under was taken over."""


class Heartbeat:
    """Renews leases every ``interval_s`` seconds from one daemon thread while the ``with``
    block runs. A lease found lost is no longer renewed; ``on_lost`` hears of it."""

    def __init__(self, leases: Sequence[Lease], interval_s: float,
                 on_lost: Optional[Callable[[Lease, Renewal], None]] = None) -> None:
        self.leases, self.interval_s, self.on_lost = list(leases), interval_s, on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raybench-lease", daemon=True)

    def _beat(self, lease: Lease) -> None:
        try:
            renewal = lease.renew()
        except Exception as exc:  # a store that stopped answering: its users report it
            log.warning("cannot renew the lease of %s: %s", lease.what, exc)
            return
        if not renewal:
            holder = renewal.holder or {}
            log.warning("%s: another holder has the lease now (generation %d, %s pid %s)",
                        lease.what, renewal.generation, holder.get("host", "?"),
                        holder.get("pid", "?"))
            if self.on_lost is not None:
                self.on_lost(lease, renewal)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            live = [lease for lease in self.leases if not lease.lost.is_set()]
            if not live:
                return
            for lease in live:
                self._beat(lease)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
