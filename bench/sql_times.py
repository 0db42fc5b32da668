"""Every SQL statement of a bench stage timed, for the figures of where a load's time goes.

With ``BENCH_SQL_TIMES=<prefix>`` in the environment, each stage process of ``bench.run`` times
every statement its SQLAlchemy engines execute (``before_cursor_execute`` /
``after_cursor_execute``), sums the times by the statement's first 90 characters, and at exit
writes the 40 largest, ``seconds  calls  statement``, to ``<prefix>.<stage>.<pid>`` (nothing
for a stage without SQL):

    BENCH_SQL_TIMES=/tmp/sql python -m bench.run --sizes 1000000 --no-pg --no-dlt --no-nightly --no-user-path
    sort -rn /tmp/sql.pipeline.* | head

The statements of DuckDB's own native paths (a registered Arrow table read by ``INSERT ..
SELECT``) are SQLAlchemy statements too; ``COPY`` through psycopg's cursor is not.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import time
from typing import Any


def install(prefix: str, stage: str) -> None:
    """Time this process's statements; write them at exit (see the module's docstring)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    totals: dict[str, tuple[int, float]] = {}
    lock = threading.Lock()

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, _statement: str, *_: Any) -> None:
        conn.info.setdefault("bench_sql_started", []).append(time.perf_counter())

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        took = time.perf_counter() - conn.info["bench_sql_started"].pop()
        key = re.sub(r"\s+", " ", statement)[:90]
        with lock:
            calls, seconds = totals.get(key, (0, 0.0))
            totals[key] = (calls + 1, seconds + took)

    def _write() -> None:
        if not totals:  # a stage without SQL (the raw fetch)
            return
        rows = sorted(totals.items(), key=lambda kv: -kv[1][1])[:40]
        with open(f"{prefix}.{stage}.{os.getpid()}", "w", encoding="utf-8") as fh:
            fh.writelines(f"{seconds:8.2f} {calls:6d} {key}\n" for key, (calls, seconds) in rows)

    atexit.register(_write)
