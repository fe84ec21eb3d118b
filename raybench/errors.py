"""raybench's user-facing error: the CLI prints it as one line and exits with code 2."""
from __future__ import annotations


class RaybenchError(Exception):
    """A problem with the user's input or environment (not a bug in raybench).

    The message names what is wrong, where it came from and what is allowed.
    """


class ConfigError(RaybenchError, ValueError):
    """A bad value in a spec file or a ``--set`` override."""


class DataError(RaybenchError, ValueError):
    """A bad dataset, manifest or image."""
