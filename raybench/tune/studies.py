"""Where a sweep's Optuna studies live: ``<root>/<sweep>/optuna/journal.log``.

One Optuna ``JournalStorage`` file per sweep, one study per cell, named after the cell. Optuna
and optuna-dashboard open it themselves::

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend("runs/my-sweep/optuna/journal.log"))
    study = optuna.load_study(study_name="cnnx-paper-1-s0", storage=storage)

On an ``s3://`` root the driver keeps the journal in a local folder (:func:`local_journal`),
downloads it when a sweep starts or resumes and uploads it at each experiment checkpoint and
at the end (through :mod:`raybench.storage`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from raybench import storage
from raybench.store import ResultStore, sweep_location

log = logging.getLogger(__name__)
OPTUNA_DIR = "optuna"
JOURNAL = "journal.log"
#: The journal as a sweep's file in the store (``ResultStore.read_file`` / ``replace_file``).
JOURNAL_NAME = f"{OPTUNA_DIR}/{JOURNAL}"
#: A study trial's user attribute: its raybench status (``running``, ``error``, ``crashed``).
STATUS_ATTR = "raybench_status"
#: A retry's user attribute: the study number of its trial id's first attempt. A crashed trial
#: is ``FAIL`` in its study; ``--resume`` retries it as a new study trial with the same params
#: (Optuna's own retry pattern) under the same raybench trial id.
RETRY_OF = "raybench_retry_of"


def first_number(trial: Any) -> int:
    """The study number a (frozen) study trial's raybench trial id is named after."""
    return int(trial.user_attrs.get(RETRY_OF, trial.number))


def latest_attempts(trials: Any) -> dict[int, Any]:
    """Each raybench trial's latest attempt, by :func:`first_number`.

    The first point an Optuna study has queued but not yet asked (``WAITING``, not a retry) is
    no attempt yet and is left out.
    """
    from optuna.trial import TrialState

    latest: dict[int, Any] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.WAITING and RETRY_OF not in t.user_attrs:
            continue
        latest[first_number(t)] = t
    return latest


def journal_location(results: str, sweep: str) -> storage.Location:
    """The journal's place in the results store: ``<results>/<sweep>/optuna/journal.log``."""
    return sweep_location(storage.resolve(results), sweep, JOURNAL_NAME)


def local_journal(results: str, sweep: str) -> Path:
    """The journal file the driver writes: in the store when it is local, else a local copy.

    The copy's folder depends only on the results URI and the sweep name, so a restored
    searcher (unpickled by ``Tuner.restore``) finds it again on the same machine.
    """
    loc = journal_location(results, sweep)
    if loc.is_local:
        return Path(loc.path)
    digest = hashlib.sha256(f"{results}|{sweep}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "raybench-optuna" / digest / JOURNAL


def open_storage(path: Path) -> Any:
    """Optuna's ``JournalStorage`` on ``path`` (created with its folder when missing): how
    the driver and ``raybench dashboard`` open a journal."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def download(results: str, sweep: str) -> Path:
    """Fetches the stored journal into :func:`local_journal` (S3 roots); returns the path."""
    loc = journal_location(results, sweep)
    path = local_journal(results, sweep)
    if loc.is_local:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ResultStore(results).read_file(sweep, JOURNAL_NAME)
    if data is not None:
        path.write_bytes(data)
        log.info("loaded the Optuna journal from %s", loc.uri)
    elif path.exists():
        path.unlink()  # a stale copy from another sweep of the same name
    return path


def repair(path: Path) -> bool:
    """Cuts a journal's last line when a crash or a full disk cut it short; True if it did.

    Optuna's journal only appends, so only its last line can be cut short. Optuna skips such a
    line when reading, but its next append would continue that line and make the journal
    unreadable; dropping the half-written operation loses at most that one operation.
    """
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return False
        handle.seek(0)
        data = handle.read()
        handle.truncate(data.rfind(b"\n") + 1)
    log.warning("the Optuna journal %s ended in a cut-short line; dropped it", path)
    return True


def upload(results: str, sweep: str) -> None:
    """Copies the local journal to the store (S3 roots; a no-op for local roots)."""
    loc = journal_location(results, sweep)
    path = local_journal(results, sweep)
    if loc.is_local or not path.exists():
        return
    ResultStore(results).replace_file(sweep, JOURNAL_NAME, path.read_bytes())


def reset(results: str, sweep: str) -> None:
    """Removes the local copy of an S3 journal (``--overwrite`` starts empty studies)."""
    loc = journal_location(results, sweep)
    path = local_journal(results, sweep)
    if not loc.is_local and path.exists():
        os.remove(path)
