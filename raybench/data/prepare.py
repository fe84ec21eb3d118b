"""Preparation as Ray work: a per-item body applied to chunks of items over the cluster's CPUs.

Import (hashing, decoding, fingerprints), the audit's probes and the decoded-cache build all
have the same shape: one cheap, independent body per image (``entry_facts``,
``fingerprint_file``, ``decode_image``) applied to up to hundreds of thousands of images.
:func:`imap_chunks` cuts the items into chunks, runs each chunk as one Ray task (the serial loop
is the task's body), and yields the chunks' results **in order**, so whatever the caller builds
from them (manifest rows, an audit report, a shard file written front to back) is byte for byte
what the serial loop built.

Ray tasks rather than Ray Data: the bodies are plain functions of a path, the outputs go back to
one writer in row order, and a task retried after its worker died simply recomputes its chunk;
Ray Data's streaming executor would add its own scheduling, block format and start-up (seconds)
for no gain here.

Where it runs: the Ray the process is already connected to; else ``address`` / ``RAY_ADDRESS``;
else an embedded local Ray, started only for jobs of :data:`LOCAL_RAY_MIN_ITEMS` items or more. Inside a Ray task or
actor (e.g. a trial) the chunks run in-process: fanning out from a trial that holds a CPU could
wait forever for CPUs held by the other trials.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections import deque
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Seconds between two progress lines: a long import shows it is alive at least this often.
PROGRESS_INTERVAL_S = 30.0
#: Chunks in flight per CPU of the cluster: enough to keep every CPU busy while results stream
#: back, few enough that memory holds a bounded number of chunks' results.
IN_FLIGHT_PER_CPU = 2
#: Fewest items for which an embedded local Ray is started (about 5-10 s here): below that
#: the serial loop is done sooner. A Ray already connected, ``address`` or ``RAY_ADDRESS`` is
#: used for any job of more than one chunk.
LOCAL_RAY_MIN_ITEMS = 1000


def fmt_eta(seconds: float) -> str:
    """``1h02m``, ``4m40s``, ``12s``; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """``what: done/total images (pct), N images/s, ETA`` every ``interval_s`` and at the end.

    One ``logging`` line each time, so it streams through ``ray job logs`` and ``raybench
    submit --wait``; a tqdm bar instead when stderr is a terminal.
    """

    def __init__(self, what: str, total: int, interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self.what, self.total, self.interval_s = what, total, interval_s
        self.done = 0
        self.start = self.last = time.monotonic()
        self.bar: Any = None
        if sys.stderr.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit="img", file=sys.stderr)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.what}: {self.done}/{self.total} images ({pct:.0f}%), "
                f"{rate:.1f} images/s, ETA {fmt_eta(eta)}")

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.interval_s and self.done < self.total:  # close() says 100%
            self.last = now
            log.info("%s", self.line())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        log.info("%s (%s)", self.line(), fmt_eta(time.monotonic() - self.start))


def run_chunk(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """The serial loop: the body of one chunk (and of the whole job without Ray)."""
    return [fn(item) for item in items]


def in_ray_worker() -> bool:
    """Whether this process is a Ray task or actor (not a driver)."""
    if "ray" not in sys.modules:
        return False
    import ray

    return bool(ray.is_initialized()
                and ray.get_runtime_context().worker.mode == ray.WORKER_MODE)


def _use_ray(n_items: int, n_chunks: int, address: Optional[str], parallel: Optional[bool]
             ) -> bool:
    if parallel is False or in_ray_worker():
        return False
    if parallel is True:
        return True
    connected = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    if connected or address or os.environ.get("RAY_ADDRESS"):
        return n_chunks > 1
    return n_chunks > 1 and n_items >= LOCAL_RAY_MIN_ITEMS


def _chunks(items: Sequence[T], chunk_size: int) -> list[Sequence[T]]:
    return [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]


def _ray_chunks(fn: Callable[[T], R], chunks: list[Sequence[T]], address: Optional[str]
                ) -> Iterator[list[R]]:
    """Each chunk as a Ray task (retried when its worker dies), results in order."""
    import ray

    from raybench.cluster import ensure_ray

    ensure_ray(address, tune=False)
    task: Any = ray.remote(num_cpus=1, max_retries=3)(run_chunk)
    window = max(2, IN_FLIGHT_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
    fn_ref = ray.put(fn)
    pending: deque[Any] = deque()
    todo = iter(chunks)
    for chunk in todo:
        pending.append(task.remote(fn_ref, list(chunk)))
        if len(pending) >= window:
            break
    try:
        while pending:
            result = ray.get(pending.popleft())
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(task.remote(fn_ref, list(nxt)))
            yield result
    finally:  # the caller stopped early (a bad image under fail): drop the queued work
        for ref in pending:
            ray.cancel(ref)


def imap_chunks(fn: Callable[[T], R], items: Sequence[T], *, chunk_size: int, what: str,
                address: Optional[str] = None, parallel: Optional[bool] = None,
                progress: bool = True) -> Iterator[list[R]]:
    """Applies ``fn`` to every item, one chunk per Ray task; yields each chunk's results in order.

    Args:
        fn: The per-item body: a module-level (picklable) function or ``functools.partial``.
        items: Picklable items (paths, ``Entry`` objects).
        chunk_size: Items per task.
        what: Name in the progress line (``import``, ``audit``, ``decode 224 px``).
        address: Ray address (default: the connected Ray, ``RAY_ADDRESS``, or a local Ray).
        parallel: ``False`` runs in-process; ``True`` uses Ray even for one chunk; ``None``
            uses Ray for more than one chunk when Ray is up or an address is given, and
            starts a local Ray for :data:`LOCAL_RAY_MIN_ITEMS` items or more.
        progress: Print the progress line.
    """
    chunks = _chunks(items, max(1, chunk_size))
    bar = Progress(what, len(items)) if progress else None
    if _use_ray(len(items), len(chunks), address, parallel):
        results = _ray_chunks(fn, chunks, address)
    else:
        results = (run_chunk(fn, chunk) for chunk in chunks)
    for result in results:
        if bar is not None:
            bar.update(len(result))
        yield result
    if bar is not None:
        bar.close()


def map_chunks(fn: Callable[[T], R], items: Sequence[T], *, chunk_size: int, what: str,
               address: Optional[str] = None, parallel: Optional[bool] = None) -> list[R]:
    """``[fn(x) for x in items]``, computed as :func:`imap_chunks` does (ordered, on Ray)."""
    out: list[R] = []
    for result in imap_chunks(fn, items, chunk_size=chunk_size, what=what, address=address,
                              parallel=parallel):
        out.extend(result)
    return out
