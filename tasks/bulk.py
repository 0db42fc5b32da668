"""DataFrames into warehouse tables by each engine's native bulk path, never ``executemany``.

DuckDB scans a frame registered as an Arrow table (``INSERT ... SELECT``, about a million rows a
second); PostgreSQL reads it by ``COPY ... FROM STDIN`` as CSV that Arrow's C++ writer encodes.
:func:`stage` fills a temporary table shaped like a warehouse table, :func:`insert` appends
straight into one, :func:`stage_keys` stages a list of record keys. Table and column names come
from the callers' constants and the entity registry; values never enter the SQL text.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasks.warehouse import dialect_name, raw_driver_connection


def stage(conn: Connection, name: str, frame: pd.DataFrame, like: str) -> None:
    """Create temp table ``name`` shaped like table ``like`` (columns of ``frame``, in order) and
    fill it with ``frame``."""
    cols = list(frame.columns)
    col_list = ", ".join(cols)
    dialect = dialect_name(conn)
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    if dialect == "duckdb":
        with registered(conn, f"{name}_df", frame) as view:
            conn.execute(sa.text(f"CREATE TEMP TABLE {name} AS SELECT {col_list} FROM {like} LIMIT 0"))
            conn.execute(sa.text(f"INSERT INTO {name} ({col_list}) SELECT {col_list} FROM {view}"))
        return
    conn.execute(sa.text(f"CREATE TEMP TABLE {name} ON COMMIT DROP AS SELECT {col_list} FROM {like} LIMIT 0"))
    if frame.empty:
        return
    copy_frame(conn, name, frame)


@contextlib.contextmanager
def registered(conn: Connection, view: str, frame: pd.DataFrame) -> Iterator[str]:
    """DuckDB: ``frame`` registered as ``view`` in the connection for the block's statements."""
    raw = raw_driver_connection(conn)
    raw.register(view, as_arrow(frame))
    try:
        yield view
    except BaseException:
        with contextlib.suppress(Exception):  # an aborted transaction refuses it: the error that aborted it goes on
            raw.unregister(view)
        raise
    raw.unregister(view)


def as_arrow(frame: pd.DataFrame) -> pa.Table | pd.DataFrame:
    """The frame as an Arrow table (DuckDB scans it without converting values one by one; the
    normaliser's string columns are Arrow already); the frame itself if Arrow cannot convert it."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        return frame


def csv_bytes(frame: pd.DataFrame, keep: np.ndarray | None = None) -> tuple[bytes | pa.Buffer, str]:
    """``frame`` (its rows where ``keep``, if given) as CSV for ``COPY`` and the COPY options that
    read it back.

    Arrow's C++ writer (every valid value quoted, nulls as unquoted empty fields: an empty string
    stays an empty string) is much faster than ``DataFrame.to_csv`` (``bench/README.md``); frames
    Arrow cannot convert (mixed object columns) go through pandas."""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if keep is not None:
            table = table.filter(pa.array(keep))  # column by column in Arrow: no copy of pandas' frame
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
        return sink.getvalue(), "FORMAT csv"  # an Arrow buffer, written from without a copy
    except (pa.ArrowException, TypeError, ValueError):
        buf = io.StringIO()
        out = frame.copy() if keep is None else frame[keep]
        for c in out.columns:
            if str(out[c].dtype) == "boolean":
                out[c] = out[c].map({True: "t", False: "f"}, na_action="ignore")
        out.to_csv(buf, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%d %H:%M:%S")
        return buf.getvalue().encode("utf-8"), "FORMAT csv, NULL '\\N'"


def copy_frame(conn: Connection, name: str, frame: pd.DataFrame, keep: np.ndarray | None = None) -> None:
    data, options = csv_bytes(frame, keep)
    col_list = ", ".join(frame.columns)
    pg = raw_driver_connection(conn)
    with pg.cursor() as cur, cur.copy(f"COPY {name} ({col_list}) FROM STDIN ({options})") as copy:
        view = memoryview(data)
        for i in range(0, len(view), 1 << 20):
            copy.write(view[i : i + (1 << 20)])


def where(frame: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """``frame[mask]``, without copying the frame when the mask keeps every row (a first load's
    chunks: every row new)."""
    return frame if mask.all() else frame[mask]


def insert(conn: Connection, table: str, frame: pd.DataFrame) -> None:
    """Append rows whose keys ``table`` certainly lacks (:mod:`tasks.known_keys`): DuckDB straight
    from the registered frame, PostgreSQL by ``COPY`` straight into the table (its key index
    would refuse a key it holds: the load fails, it never duplicates)."""
    if frame.empty:
        return
    if dialect_name(conn) == "postgresql":
        copy_frame(conn, table, frame)
        return
    cols = ", ".join(frame.columns)
    with registered(conn, "ins_df", frame) as view:
        conn.execute(sa.text(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {view}"))


def stage_keys(conn: Connection, keys: pd.DataFrame) -> None:
    conn.execute(sa.text("DROP TABLE IF EXISTS stg_keys"))
    if dialect_name(conn) == "duckdb":
        raw = raw_driver_connection(conn)
        raw.register("stg_keys_df", keys)
        conn.execute(sa.text("CREATE TEMP TABLE stg_keys AS SELECT CAST(record_key AS VARCHAR) AS record_key FROM stg_keys_df"))
        raw.unregister("stg_keys_df")
        return
    conn.execute(sa.text("CREATE TEMP TABLE stg_keys (record_key VARCHAR) ON COMMIT DROP"))
    copy_frame(conn, "stg_keys", keys[["record_key"]])
