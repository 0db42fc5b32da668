"""Test-only crash points: ``crash_point(name)`` kills the current process with SIGKILL when the
environment variable ``DVC_CRASH_AT`` names it.

``DVC_CRASH_AT=load.after_raw`` kills at the first hit of that point; ``DVC_CRASH_AT=load.after_raw#3``
at the third. The reliability tests (``tests/test_reliability_crash.py``) run a real ``dvc-etl run``
subprocess with it set and check that a rerun converges to the warehouse of an uninterrupted run
and that ``mart`` never shows a half-published period.

Zero cost in production: when ``DVC_CRASH_AT`` is unset (read once, at import) the function
returns at its first line. SIGKILL, not an exception: nothing of the process runs after it (no
``finally``, no ``atexit``, no rollback sent by the client), as with a power cut or the OOM killer.
"""

from __future__ import annotations

import os
import signal
import threading

_TARGET = os.environ.get("DVC_CRASH_AT") or None
_NAME, _, _NTH = (_TARGET or "").partition("#")
_WANT = int(_NTH) if _NTH.isdigit() else 1
_hits = 0
_lock = threading.Lock()

#: Every crash point the code calls, for the tests (a typo in a test would otherwise never fire).
POINTS = (
    "extract.after_page",        # tasks/pipeline.py: a page was read, its chunk not yet loaded
    "load.after_raw",            # tasks/load.py: raw rows inserted, core not yet (inside the transaction)
    "load.after_core",           # tasks/load.py: core upserted (inside the transaction)
    "load.before_commit",        # tasks/load.py: watermark and run summary written, not committed
    "load.after_commit",         # tasks/pipeline.py: the chunk's transaction committed
    "extract.after_entity",      # tasks/pipeline.py: an entity fully extracted and its checks recorded
    "publish.table",             # tasks/reports.py: inside the publication, after each rpt table
    "publish.before_commit",     # tasks/reports.py: publications row written, not committed
    "publish.after_commit",      # tasks/pipeline.py: publication committed, workbook not written
    "workbook.after_write",      # tasks/pipeline.py: workbook written, workbook_path not recorded
    "run.before_finish",         # flows/nightly.py: everything done, dq.runs not yet 'success'
)


def crash_point(name: str) -> None:
    """SIGKILL this process if ``DVC_CRASH_AT`` is ``name`` (or ``name#n`` and this is the n-th hit)."""
    if _TARGET is None or name != _NAME:
        return
    global _hits
    with _lock:
        _hits += 1
        if _hits != _WANT:
            return
    os.kill(os.getpid(), signal.SIGKILL)
