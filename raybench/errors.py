"""raybench's user-facing errors: the CLI prints them as one line each and exits with their code
(2 for bad input, 1 for a sweep with errored trials or lost storage, 130 when interrupted)."""
from __future__ import annotations

from typing import Any, Sequence


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
