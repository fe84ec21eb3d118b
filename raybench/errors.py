"""raybench's user-facing errors: the CLI prints them as one line each and exits with their code
(2 for bad input, 1 for a sweep with errored trials or lost storage, 130 when interrupted)."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, NoReturn, Sequence


class RaybenchError(Exception):
    """A problem with the user's input or environment (not a bug in raybench).

    The message names what is wrong, where it came from and what is allowed.
    """

    #: The CLI's exit code for this error.
    exit_code = 2


class ConfigError(RaybenchError, ValueError):
    """A bad value in a spec file or a ``--set`` override."""


class DataError(RaybenchError, ValueError):
    """A bad dataset, manifest or image."""


class SweepError(RaybenchError):
    """A sweep that ran but did not end cleanly: errored trials or lost storage (exit 1).

    Attributes:
        summary: One row per trial of the session (trial_id, status, hyperparameters).
    """

    exit_code = 1

    def __init__(self, message: str, summary: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.summary = list(summary)


class SweepInterrupted(SweepError):
    """The sweep was stopped (Ctrl-C / SIGINT) before it finished (exit 130)."""

    exit_code = 130


#: The errors a trial fails with that a rerun would repeat: its spec or its data is wrong.
FINAL_ERRORS = (ConfigError, DataError)


def final_error(error: BaseException) -> "BaseException | None":
    """The :data:`FINAL_ERRORS` instance ``error`` is or wraps, else None.

    Looks through the chain (``__cause__``, ``__context__``) and the wrappers Ray puts around
    a trial's exception (``RayTaskError.cause``, a Train run's per-worker failures).
    """
    seen: set[int] = set()
    todo: list[Any] = [error]
    while todo:
        exc = todo.pop()
        if not isinstance(exc, BaseException) or id(exc) in seen or len(seen) > 50:
            continue
        seen.add(id(exc))
        if isinstance(exc, FINAL_ERRORS):
            return exc
        failures = getattr(exc, "worker_failures", None)
        if isinstance(failures, dict):
            todo.extend(failures.values())
        todo.extend([getattr(exc, "cause", None), exc.__cause__, exc.__context__])
    return None


def stop_now(message: str, code: int) -> NoReturn:
    """Ends this process at once (``os._exit``: no cleanup, no further writes) with
    ``raybench: error: <message>`` as its last line: logging is turned off first, so no other
    thread's line (a trial's progress) follows it while the exit runs (coverage, for one,
    saves its data inside ``os._exit``)."""
    logging.disable(logging.CRITICAL)
    sys.stderr.write(f"raybench: error: {message}\n")
    sys.stderr.flush()
    os._exit(code)

