"""A deadline for a blocking call that has no timeout of its own (one place, used by the
storage check and the tracking check)."""
from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

from raybench.errors import RaybenchError

T = TypeVar("T")


def call_with_deadline(func: Callable[[], T], seconds: float, what: str,
                       thread_name: str = "raybench-deadline") -> T:
    """``func()`` in a daemon thread; its result, or its exception re-raised here.

    Raises:
        RaybenchError: ``func`` has not returned within ``seconds`` (the thread is left to
            finish on its own; being a daemon, it never holds the process open).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["returned"] = func()
        except BaseException as exc:  # re-raised in the caller's thread
            box["raised"] = exc

    thread = threading.Thread(target=target, daemon=True, name=thread_name)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise RaybenchError(f"{what}: no answer within {seconds:g} s")
    if "raised" in box:
        raise box["raised"]
    return box["returned"]
