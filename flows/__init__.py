"""Prefect flows of dvc-etl (thin wiring over ``tasks``).

Importing this package is cheap (no Prefect): it holds what the CLI needs before a flow runs:
the current run id for log lines (:data:`CURRENT_RUN_ID`, :class:`RunIdFilter`) and the progress
callback a flow hands to its extraction tasks (:func:`reporting_progress`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The dvc-etl run id (``dq.runs.run_id``) of the run in progress; set by every flow.
CURRENT_RUN_ID: ContextVar[str | None] = ContextVar("dvc_run_id", default=None)

_progress: Callable[[str, int, int | None], None] | None = None


class RunIdFilter(logging.Filter):
    """Adds ``record.run_id`` (the current run id, or ``-``) so log formats can show it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = CURRENT_RUN_ID.get() or "-"
        return True


def current_progress() -> Callable[[str, int, int | None], None] | None:
    """The progress callback set by :func:`reporting_progress` (``None``: no progress shown)."""
    return _progress


@contextmanager
def reporting_progress(fn: Callable[[str, int, int | None], None] | None) -> Iterator[None]:
    """Flows called in this block report extraction and load progress to ``fn(label, done, total)``
    (see ``tasks.pipeline.extract_entity``). Process-wide: the CLI runs one flow at a time."""
    global _progress
    previous, _progress = _progress, fn
    try:
        yield
    finally:
        _progress = previous
