"""The claim of a sweep's name, on top of :class:`~raybench.store.ResultStore`.

A new name is claimed by creating ``<sweep>/_claim.json`` if absent (an exclusive create
locally, a conditional ``PutObject`` on S3): of two drivers starting the same sweep at once
exactly one proceeds. ``--resume`` continues an existing sweep with the same spec (taking over
its claim) or starts it when it does not exist; ``--overwrite`` deletes it first.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from typing import Any, Optional

from raybench.config import Spec, dump_yaml
from raybench.errors import RaybenchError
from raybench.storage import redact
from raybench.store import ResultStore
from raybench.tune import studies

log = logging.getLogger("raybench.tune.sweep")
CLAIM_FILE = "_claim.json"


def spec_hash(spec: Spec) -> str:
    """The claim's key: the sha256 of the resolved spec (secrets redacted)."""
    return hashlib.sha256(redact(dump_yaml(spec)).encode()).hexdigest()


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


def _claim_resume(store: ResultStore, spec: Spec, saved: Optional[str]) -> bool:
    """``--resume``: same spec only; a claim with the same spec hash is taken over."""
    where = store.location(spec.name).uri
    if saved is not None and saved != redact(dump_yaml(spec)):
        raise RaybenchError(f"sweep {spec.name!r} at {where} was started with another spec; "
                            "resume it with the same spec and --set values")
    held = read_claim(store, spec.name)
    if held is None:
        if not store.create_file(spec.name, CLAIM_FILE, _claim_record(spec)):
            raise RaybenchError(f"sweep {spec.name!r} at {where} was claimed by another driver "
                                "a moment ago")
        if saved is None:
            log.info("no sweep %s at %s yet: starting it", spec.name, where)
        return saved is not None
    if held.get("spec_sha256") != spec_hash(spec):
        raise RaybenchError(f"sweep {spec.name!r} at {where} is {holder(held)} with another "
                            "spec; resume it with the same spec and --set values")
    # The same spec: a driver that crashed (or a RayJob retry) left it; this driver continues.
    log.info("taking over sweep %s (%s)", spec.name, holder(held))
    store.replace_file(spec.name, CLAIM_FILE, _claim_record(spec))
    return True


def claim_sweep(store: ResultStore, spec: Spec, resume: bool, overwrite: bool) -> bool:
    """Claims the sweep name atomically (see :func:`raybench.storage.create_exclusive`).

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
        return _claim_resume(store, spec, saved)
    if overwrite and store.exists(spec.name):
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
    return False


def release_claim(store: ResultStore, spec: Spec) -> None:
    """Gives a fresh name back when the sweep could not start (nothing else was written)."""
    if store.read_spec(spec.name) is None:
        store.delete_file(spec.name, CLAIM_FILE)
