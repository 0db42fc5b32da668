"""The GX thread: where Great Expectations' record of a run is made, one batch at a time.

:func:`submit` hands a batch's validation to the one ``gx-record`` thread and waits while the
batches handed over and not validated yet leave no room for its rows (:data:`ROWS_IN_FLIGHT`), so
a slow GX holds the extraction back instead of piling rows up in memory; :func:`in_gx_thread` runs
work after what is queued there (:mod:`tasks.gx` settles a run's record that way).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
#: Rows of consecutive chunks GX validates in one go (a validation costs mostly per call, not per row).
BATCH_ROWS = 50_000
#: Full batches handed to the GX thread and not validated yet, at most (the caller waits beyond).
BATCHES_IN_FLIGHT = 2
#: Rows handed to the GX thread and not validated yet, at most: what a hand-over waits for is
#: room for its rows, so the few small batches of a nightly (its catalogues, one chunk of each
#: entity) go on while the GX host starts (importing GX takes seconds), and the batches of a full
#: load wait as before. A batch larger than this waits until nothing else is in flight.
ROWS_IN_FLIGHT = BATCHES_IN_FLIGHT * BATCH_ROWS


class _RowBudget:
    """Rows in flight to the GX thread, at most ``rows``: :meth:`take` waits for room."""

    def __init__(self, rows: int) -> None:
        self.rows, self._free, self._room = rows, rows, threading.Condition()

    def take(self, rows: int) -> int:
        rows = min(max(rows, 1), self.rows)
        with self._room:
            self._room.wait_for(lambda: self._free >= rows)
            self._free -= rows
        return rows

    def give_back(self, rows: int) -> None:
        with self._room:
            self._free += rows
            self._room.notify_all()


_IN_FLIGHT = _RowBudget(ROWS_IN_FLIGHT)


@functools.cache
def pool() -> ThreadPoolExecutor:
    """The GX thread (one, started when first used)."""
    # one thread: GX's contexts are not thread-safe, and one validation at a time overlaps well
    # enough with the next pages' fetch and the chunk's load (which release the GIL)
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="gx-record")


def submit(fn: Callable[..., T], *args: Any, rows: int = BATCH_ROWS) -> Future[T]:
    """Run ``fn(*args)`` (the validation of a batch of ``rows`` rows) in the GX thread; blocks
    while the batches waiting or running there leave no room for ``rows`` in
    :data:`ROWS_IN_FLIGHT`."""
    taken = _IN_FLIGHT.take(rows)
    try:
        future = pool().submit(fn, *args)
    except BaseException:
        _IN_FLIGHT.give_back(taken)
        raise
    future.add_done_callback(lambda _f: _IN_FLIGHT.give_back(taken))
    return future


def in_gx_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in the GX thread, after the work already queued there, and wait for it."""
    return pool().submit(fn, *args).result()
