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
    """Pause the cyclic garbage collector while pages are read and chunks processed: parsed pages
    are millions of small dicts and lists (no cycles) that it would otherwise traverse again and
    again (what that costs: ``bench/README.md``); reference counting frees them. ``read_ahead``
    pauses it for its lifetime and collects the young generations every 50 pages."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()

