"""The claim of a sweep's name and the live driver's lease, on top of the ``ResultStore``.

A new name is claimed by creating ``<sweep>/_claim.json`` if absent (an exclusive create
locally, a conditional ``PutObject`` on S3): of two drivers starting the same sweep at once
exactly one proceeds. ``--resume`` continues an existing sweep with the same spec (taking over
its claim) or starts it when it does not exist; ``--overwrite`` deletes it first.

The driver that runs a sweep holds its :class:`Lease` (``<sweep>/_lease/``, a
:class:`raybench.lease.Lease`): a heartbeat every :data:`HEARTBEAT_S` seconds. A second
``--resume`` while the lease is fresh is refused with one line naming the holder; a stale lease
(released, no heartbeat for :func:`lease_timeout_s` seconds, or a holder process gone from this
host) is taken over.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any, Optional

import yaml

from raybench import lease as leases
from raybench.config import Spec, dump_yaml, from_dict, to_dict
from raybench.errors import ConfigError, RaybenchError, stop_now
from raybench.storage import redact
from raybench.store import LEASE_DIR, ResultStore
from raybench.tune import studies

log = logging.getLogger(__name__)
CLAIM_FILE = "_claim.json"


def _identity(spec: Spec) -> str:
    """The resolved spec without its results root (secrets redacted): a sweep folder copied to
    another root (another disk, S3) is the same sweep."""
    return redact(dump_yaml(dataclasses.replace(spec, results="")))


def spec_hash(spec: Spec) -> str:
    """The claim's key: the sha256 of the resolved spec, its results root left out."""
    return _sha256(_identity(spec))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _saved_hashes(saved: Optional[str]) -> set[str]:
    """The claim keys that drivers wrote for the saved ``spec.yaml``, whatever fields their
    Spec had: the hash of the saved text (claims from before the root was left out) and of
    the saved spec with its root blanked (:func:`spec_hash`). ``dump_yaml`` is
    ``yaml.safe_dump``, so loading and dumping the saved text again gives the same bytes."""
    try:
        doc = yaml.safe_load(saved) if saved else None
    except yaml.YAMLError:
        return set()
    if not isinstance(doc, dict):
        return set()
    return {_sha256(saved or ""), _sha256(redact(yaml.safe_dump({**doc, "results": ""},
                                                                 sort_keys=False)))}


def _same_hash(claim: dict[str, Any], spec: Spec, saved: Optional[str] = None) -> bool:
    """The claim names this spec, or ``saved`` (a ``spec.yaml`` that :func:`same_spec` found
    to be this spec: written by a driver whose Spec lacked fields added since). Claims
    written before the root was left out hashed it too."""
    legacy = _sha256(redact(dump_yaml(spec)))
    return claim.get("spec_sha256") in {spec_hash(spec), legacy, *_saved_hashes(saved)}


def _saved_doc(text: str) -> Any:
    """A saved spec's YAML without its results root; None when it does not parse (cut short)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if isinstance(doc, dict):
        doc.pop("results", None)
    return doc


def _as_today(doc: dict[str, Any]) -> Any:
    """A spec mapping read through today's :class:`Spec`: a field added since it was saved
    takes its default. A mapping today's Spec refuses (a key removed since) stays as it is."""
    try:
        return to_dict(from_dict(Spec, doc, where="the saved spec"))
    except (ConfigError, TypeError, ValueError):
        return doc


def same_spec(saved: str, spec: Spec) -> bool:
    """Whether the saved ``spec.yaml`` is ``spec``, wherever each says the results root is.

    A field added to the Spec after the sweep started is missing from its ``spec.yaml``: both
    are compared as today's Spec reads them, so the new field's default stands in for it (a
    sweep started before ``sweep.max_retries`` existed resumes with the default, not with
    another value).
    """
    doc, ours = _saved_doc(saved), _saved_doc(_identity(spec))
    if not isinstance(doc, dict) or not isinstance(ours, dict):
        return doc is not None and doc == ours
    return doc == ours or _as_today(doc) == _as_today(ours)


def moved_from(store: ResultStore, spec: Spec) -> Optional[str]:
    """The results root the saved spec names when it is not ``spec.results`` (the sweep folder
    was copied there from it), else None."""
    saved = store.read_spec(spec.name)
    try:
        doc = yaml.safe_load(saved) if saved else None
    except yaml.YAMLError:
        return None
    root = doc.get("results") if isinstance(doc, dict) else None
    return root if isinstance(root, str) and root and root != spec.results else None


def _claim_record(spec: Spec) -> bytes:
    return json.dumps({"spec_sha256": spec_hash(spec), "host": socket.gethostname(),
                       "pid": os.getpid(), "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                       time.gmtime())}).encode()


def read_claim(store: ResultStore, sweep: str) -> Optional[dict[str, Any]]:
    """The claim record, ``{}`` for one cut short by a crash, None when unclaimed."""
    data = store.read_file(sweep, CLAIM_FILE)
    if data is None:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        return {}  # a claim cut short by a crash: held, by an unknown spec
    return record if isinstance(record, dict) else {}


def holder(claim: dict[str, Any]) -> str:
    """``claimed by <host> pid <pid> at <time>`` for one-line messages."""
    return (f"claimed by {claim.get('host', '?')} pid {claim.get('pid', '?')} at "
            f"{claim.get('claimed_at', '?')}")


def _claim_resume(store: ResultStore, spec: Spec, saved: Optional[str],
                  lease: Optional["Lease"]) -> bool:
    """``--resume``: same spec only; a claim with the same spec hash is taken over once the
    lease of the driver that held it is stale."""
    where = store.location(spec.name).uri
    held = read_claim(store, spec.name)
    if saved is not None and not same_spec(saved, spec):
        if held and _same_hash(held, spec):
            # The claim names this spec: the saved copy was cut short (it is rewritten).
            log.warning("%s is damaged (cut short?); the claim's spec hash matches, so it is "
                        "rewritten", store.location(spec.name, "spec.yaml").uri)
            saved = redact(dump_yaml(spec))
        elif held == {}:
            raise RaybenchError(
                f"sweep {spec.name!r} at {where}: both {CLAIM_FILE} and spec.yaml are damaged "
                "or from another spec, so the spec it was started with is unknown; --overwrite "
                "starts it again")
        else:
            raise RaybenchError(f"sweep {spec.name!r} at {where} was started with another "
                                "spec; resume it with the same spec and --set values")
    if held is None:
        if not store.create_file(spec.name, CLAIM_FILE, _claim_record(spec)):
            raise RaybenchError(f"sweep {spec.name!r} at {where} was claimed by another driver "
                                "a moment ago")
        if lease is not None:
            lease.acquire()
        if saved is None:
            log.info("no sweep %s at %s yet: starting it", spec.name, where)
        return saved is not None
    if not held and saved is not None:  # the claim was cut short; spec.yaml says it is ours
        log.warning("the claim %s was cut short; the saved spec matches, taking it over",
                    store.location(spec.name, CLAIM_FILE).uri)
    elif not _same_hash(held, spec, saved):
        raise RaybenchError(f"sweep {spec.name!r} at {where} is {holder(held)} with another "
                            "spec; resume it with the same spec and --set values")
    # The same spec: a driver that crashed (or a RayJob retry) left it; this driver continues
    # once that driver's lease is stale (a live one refuses here, naming its holder).
    if lease is not None:
        lease.acquire()
    log.info("taking over sweep %s (%s)", spec.name, holder(held))
    store.replace_file(spec.name, CLAIM_FILE, _claim_record(spec))
    return True


def claim_sweep(store: ResultStore, spec: Spec, resume: bool, overwrite: bool,
                lease: Optional["Lease"] = None) -> bool:
    """Claims the sweep name atomically (see :func:`raybench.storage.create_exclusive`).

    With ``lease``, the driver's :class:`Lease` is acquired as part of the claim: a
    ``--resume`` while another driver's lease is fresh is refused.

    Returns:
        Whether the sweep existed before (there may be state to resume).

    Raises:
        RaybenchError: The name is taken (another driver, another spec), or both flags.
    """
    if resume and overwrite:
        raise RaybenchError("--resume and --overwrite exclude each other")
    where = store.location(spec.name).uri
    saved = store.read_spec(spec.name)
    if resume:
        return _claim_resume(store, spec, saved, lease)
    if overwrite and store.exists(spec.name):
        Lease(store, spec.name).check_free()  # never delete a sweep a live driver runs
        log.warning("overwriting sweep %s at %s", spec.name, where)
        store.delete_sweep(spec.name)
        studies.reset(spec.results, spec.name)
        saved = None
    if not store.create_file(spec.name, CLAIM_FILE, _claim_record(spec)):
        held = read_claim(store, spec.name) or {}
        raise RaybenchError(f"sweep {spec.name!r} already exists at {where} ({holder(held)}); "
                            "use --resume to continue it, --overwrite to start again, or "
                            "another name")
    if saved is not None:  # a sweep from before claims existed
        store.delete_file(spec.name, CLAIM_FILE)
        raise RaybenchError(f"sweep {spec.name!r} already exists at {where}; use --resume to "
                            "continue it, --overwrite to start again, or another name")
    if lease is not None:
        lease.acquire()
    return False


def release_claim(store: ResultStore, spec: Spec, lease: Optional["Lease"] = None) -> None:
    """Gives a fresh name back when the sweep could not start (nothing else was written)."""
    if lease is not None:
        lease.release()
    if store.read_spec(spec.name) is None:  # only the claim and the lease are there: ours
        store.delete_sweep(spec.name)


# --- the live driver's lease ------------------------------------------------------------
#: Seconds after its last heartbeat that a lease counts as stale (``RAYBENCH_LEASE_TIMEOUT_S``).
LEASE_TIMEOUT_S = 60.0
#: Seconds between the live driver's heartbeats (a third of a shorter lease timeout).
HEARTBEAT_S = 10.0


def heartbeat_s() -> float:
    """Seconds between heartbeats: :data:`HEARTBEAT_S`, or a third of a shorter timeout."""
    return min(HEARTBEAT_S, lease_timeout_s() / 3)


def lease_timeout_s() -> float:
    """The stale timeout: :data:`LEASE_TIMEOUT_S` unless ``RAYBENCH_LEASE_TIMEOUT_S`` is set."""
    raw = os.environ.get("RAYBENCH_LEASE_TIMEOUT_S")
    try:
        return float(raw) if raw else LEASE_TIMEOUT_S
    except ValueError:
        raise RaybenchError(f"RAYBENCH_LEASE_TIMEOUT_S={raw!r} is not a number of "
                            "seconds") from None


class Lease(leases.Lease):
    """The live driver's lease on a sweep: ``<sweep>/_lease/<generation>.json``, a
    :class:`raybench.lease.Lease` with the sweep's one-line refusals.

    The driver heartbeats every :data:`HEARTBEAT_S` seconds while the ``with`` block runs and
    marks the lease released when it ends; the lease is stale after
    :func:`lease_timeout_s` seconds without a heartbeat (or released, or its holder's
    process gone from this host).
    """

    def __init__(self, store: ResultStore, sweep: str) -> None:
        super().__init__(store.location(sweep, LEASE_DIR), suffix=".json", what=f"sweep {sweep}")
        self.store, self.sweep = store, sweep
        self._heartbeat: Optional[leases.Heartbeat] = None

    @property
    def timeout_s(self) -> float:
        return lease_timeout_s()

    @property
    def name(self) -> Optional[str]:
        """The held generation's file, relative to the sweep's folder (None: not held)."""
        return None if self.generation is None else f"{LEASE_DIR}/{self.file_name(self.generation)}"

    def check_free(self) -> tuple[int, Optional[dict[str, Any]]]:
        """The newest generation and record; raises when a live driver holds the lease."""
        gen, record = self.current()
        if record is not None and not leases.is_stale(record, self.timeout_s):
            raise self._held(record)
        return gen, record

    def _held(self, record: dict[str, Any]) -> RaybenchError:
        age = time.time() - float(record.get("heartbeat", 0))
        return RaybenchError(
            f"sweep {self.sweep!r} is being run by {record.get('host', '?')} pid "
            f"{record.get('pid', '?')} (heartbeat {age:.0f} s ago); wait for it, or "
            f"retry after {self.timeout_s:.0f} s without a heartbeat")

    def acquire(self) -> None:
        """Takes the lease, or raises naming the live holder (one line, exit 2)."""
        got = self.try_acquire()
        if not got.won and got.previous is not None:
            raise self._held(got.previous)
        if not got.won:
            raise RaybenchError(f"sweep {self.sweep!r} was taken over by another driver a "
                                "moment ago")
        if got.previous is not None:
            log.info("took over the lease of sweep %s from %s pid %s", self.sweep,
                     got.previous.get("host", "?"), got.previous.get("pid", "?"))

    def __enter__(self) -> "Lease":
        if self.generation is None:
            self.acquire()
        _HELD[self.sweep] = self
        # The sweep's trials carry this driver's generation: their writes are fenced by it.
        os.environ[leases.GENERATION_ENV] = f"{self.sweep}:{self.generation}"
        self._heartbeat = leases.Heartbeat([self], heartbeat_s(),
                                           lambda _lease, got: self.on_lost(got)).__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._heartbeat is not None:
            self._heartbeat.__exit__(*exc)
        if _HELD.get(self.sweep) is self:
            del _HELD[self.sweep]
            os.environ.pop(leases.GENERATION_ENV, None)
        self.release()

    def on_lost(self, renewal: leases.Renewal) -> None:
        """Stops this driver at once: another driver took the sweep over (this one stalled
        past the lease timeout). Exiting writes nothing more (no Tune snapshot, no study
        update); Ray ends the trials of the driver's job, and what they still try to write is
        refused by their fence (:class:`raybench.lease.Fence`)."""
        holder = renewal.holder or {}
        # Once: the heartbeat thread and the main thread (check_held) may both notice; the
        # second blocks here until the first's os._exit ends the process.
        _STOPPING.acquire()
        stop_now(f"sweep {self.sweep!r} was taken over by {holder.get('host', '?')} "
                 f"pid {holder.get('pid', '?')} (lease generation {renewal.generation}) while "
                 f"this driver was stalled past the {self.timeout_s:.0f} s lease timeout; this "
                 "driver stopped", FENCED_EXIT)


#: The exit status of a driver stopped because another driver took its sweep over.
FENCED_EXIT = 1
#: Taken by the first :meth:`Lease.on_lost` of this process and never released.
_STOPPING = threading.Lock()
#: The sweep lease this process holds, by sweep name (:func:`check_held`).
_HELD: dict[str, Lease] = {}


def check_held(sweep: str) -> None:
    """Stops this driver (:meth:`Lease.on_lost`) when it no longer holds the sweep's lease.

    Called before the driver writes to the sweep (a study update, a Tune snapshot, a run row):
    it costs a clock read while the last heartbeat is younger than half the lease timeout, so
    only a driver that stalled (a frozen process, a paused VM) looks at the lease again before
    it writes. No-op when this process holds no lease on ``sweep``.
    """
    lease = _HELD.get(sweep)
    if lease is None:
        return
    try:
        got = lease.confirm(lease.timeout_s / 2)
    except (RaybenchError, OSError) as exc:  # the store stopped answering: the write that
        log.warning("cannot check the lease of sweep %s: %s", sweep, exc)  # follows says so
        return
    if not got:
        lease.on_lost(got)
