"""Memory and threads of a run: the Arrow allocator, handing freed memory back to the OS, reading
the source's pages ahead in a thread, and pausing the cyclic garbage collector while chunks flow.

The units of work in ``tasks.pipeline`` call these; they decide nothing about the data.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

#: The umask of a pipeline process: whatever it (or DuckDB, or Great Expectations) creates is
#: readable by its owner only: 0600 files, 0700 folders.
PRIVATE_UMASK = 0o077


def private_umask() -> None:
    """Set the process umask to :data:`PRIVATE_UMASK` (idempotent). Called where the pipeline
    starts (:func:`tasks.warehouse.open_warehouse`: every CLI command and flow that writes), so
    the files DuckDB creates by itself (the WAL, the spill files under ``<file>.tmp/``) are
    private too; and by the worker processes, which open no warehouse."""
    os.umask(PRIVATE_UMASK)


@functools.cache
def use_system_arrow_pool() -> None:
    """Arrow's buffers (the normaliser's string columns, the frames staged into the warehouse)
    from the C library's allocator instead of pyarrow's bundled mimalloc, which keeps a chunk's
    freed buffers cached; :func:`release_memory`'s ``malloc_trim`` then hands them back. An
    explicit ``ARROW_DEFAULT_MEMORY_POOL`` wins."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


def release_memory() -> None:
    """Hand the memory a chunk freed back to the OS (glibc keeps freed arenas otherwise, so the
    resident size would ratchet up chunk after chunk), as Dask's workers do. No gc.collect():
    the chunk's frames die by reference count, and a full collection is slow once Great
    Expectations is imported (it traverses GX's many objects)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def read_ahead(pages: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``pages`` in a background thread, at most ``depth`` items ahead of the consumer, so
    the next HTTP request is on the wire while a chunk is normalised and loaded. Errors of the
    reader are raised in the consumer; a consumer that stops early stops the reader."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for page in pages:
                if not put(("page", page)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(("error", exc))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=work, name="extract-read-ahead", daemon=True)
    reader.start()
    with gc_paused():
        try:
            n = 0
            while True:
                kind, value = q.get()
                if kind == "page":
                    n += 1
                    if n % 50 == 0:
                        gc.collect(1)
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            stop.set()
            reader.join(timeout=5)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while pages are read, chunks normalised or a workbook
    laid out: parsed pages and a chunk's records are millions of small dicts, lists and strings (no
    cycles, none of them garbage) that every collection would traverse again (a third of the
    normaliser's time; ``bench/README.md``); reference counting still frees them. Nesting-safe
    across threads: the collector is enabled again (if it was) when the last pause ends, so a
    reading thread's pause and a normalising thread's never re-enable it under each other, and
    any cycle left is found then. ``read_ahead`` pauses it for its lifetime and collects the young
    generations every 50 pages."""
    with _GC_LOCK:
        if _gc_state["depth"] == 0:
            _gc_state["was_enabled"] = gc.isenabled()
            gc.disable()
        _gc_state["depth"] += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_state["depth"] -= 1
            if _gc_state["depth"] == 0 and _gc_state["was_enabled"]:
                gc.enable()


_GC_LOCK = threading.Lock()
_gc_state = {"depth": 0, "was_enabled": False}



class ChunkLoader:
    """Loads chunks in one background thread while the caller prepares the next one.

    A chunk's load (its warehouse transaction) runs in the engine's native code, which releases
    the GIL, so normalising chunk N+1 in Python overlaps loading chunk N on the second core.
    At most one load is in flight: :meth:`submit` first waits for the previous one (and raises
    its error), so chunks commit in order, one at a time, as they did one after the other, and
    at most one prepared chunk waits in memory. Leaving the ``with`` block waits for the last
    load; an error of the caller wins over the loader's (which is then chained as context)."""

    def __init__(self, name: str = "load") -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: Any = None

    def submit(self, load: Callable[[], Any]) -> None:
        self.wait()
        self._pending = self._pool.submit(load)

    def wait(self) -> Any:
        """Wait for the load in flight, if any; its result, or its error raised here."""
        pending, self._pending = self._pending, None
        return pending.result() if pending is not None else None

    def __enter__(self) -> ChunkLoader:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc is None:
                self.wait()
            elif self._pending is not None:
                # the caller failed: the chunk in flight still commits (as it would have before the
                # caller went on), then the caller's error propagates
                self._pending.exception()
                self._pending = None
        finally:
            self._pool.shutdown(wait=True)
