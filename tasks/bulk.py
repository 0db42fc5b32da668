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
import pyarrow.compute as pc
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


def _table(frame: pd.DataFrame, keep: np.ndarray | None) -> pa.Table:
    """``frame`` as an Arrow table, its rows where ``keep`` (filtered column by column in Arrow:
    no copy of pandas' frame)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table if keep is None else table.filter(pa.array(keep))


def csv_bytes(frame: pd.DataFrame, keep: np.ndarray | None = None) -> tuple[bytes | pa.Buffer, str]:
    """``frame`` (its rows where ``keep``, if given) as CSV for ``COPY`` and the COPY options that
    read it back.

    Arrow's C++ writer (every valid value quoted, nulls as unquoted empty fields: an empty string
    stays an empty string) is much faster than ``DataFrame.to_csv`` (``bench/README.md``); frames
    Arrow cannot convert (mixed object columns) go through pandas."""
    try:
        table = _table(frame, keep)
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


def copy_frame(conn: Connection, name: str, frame: pd.DataFrame, keep: np.ndarray | None = None,
               *, binary: bool = False) -> None:
    """PostgreSQL: ``COPY`` ``frame`` (its rows where ``keep``, if given) into table ``name``, as
    CSV, or with ``binary`` in COPY's binary format (:func:`binary_rows`): the caller vouches that
    the table's columns are text and ``TIMESTAMP`` (the raw tables), as that format carries no
    types."""
    col_list = ", ".join(frame.columns)
    if binary:
        parts, options = [PGCOPY_HEADER, binary_rows(_table(frame, keep)), PGCOPY_TRAILER], "FORMAT binary"
    else:
        data, options = csv_bytes(frame, keep)
        parts = [data]
    pg = raw_driver_connection(conn)
    with pg.cursor() as cur, cur.copy(f"COPY {name} ({col_list}) FROM STDIN ({options})") as copy:
        for data in parts:
            view = memoryview(data)
            for i in range(0, len(view), 1 << 20):
                copy.write(view[i : i + (1 << 20)])


#: COPY's binary format: the signature, the flags field and the header extension's length
#: (PostgreSQL's documentation of COPY, "Binary Format"); the trailer is a field count of -1.
PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
PGCOPY_TRAILER = b"\xff\xff"
_EMPTY = pa.scalar(b"", pa.large_binary())
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 00:00:00, PostgreSQL's timestamp epoch, in Unix microseconds


def _fixed(values: np.ndarray, width: int) -> pa.Array:
    """Big-endian ``values`` (a structured or plain NumPy array of ``width`` bytes a row) as Arrow
    binary strings of ``width`` bytes."""
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(values)])
    return fixed.cast(pa.large_binary())


def binary_rows(table: pa.Table) -> pa.Buffer:
    """The rows of ``table`` in COPY's binary format, without its header and trailer: each row
    its field count (int16), then each field its length (int32, -1 for null) and its bytes, all
    big-endian. Text columns go as their UTF-8 bytes (the server checks them, as it does CSV's),
    timestamps without time zone as microseconds since 2000-01-01. The server parses this at
    about half the CPU of the same rows' CSV, whose JSON texts it must unquote (bench/README.md).
    Arrow builds each field's length prefix and joins the fields row by row in one C++ pass
    (``binary_join_element_wise``): no Python per row. Other column types raise ``TypeError``."""
    n = table.num_rows
    fields = [_fixed(np.full(n, table.num_columns, dtype=">i2"), 2)]
    for name, col in zip(table.column_names, table.columns, strict=True):
        col = col.combine_chunks()
        if pa.types.is_timestamp(col.type) and col.type.tz is None:
            valid = col.is_valid()
            micros = pc.cast(pc.cast(col, pa.timestamp("us"), safe=False), pa.int64()).fill_null(_PG_EPOCH_US).to_numpy()
            lengths = np.where(valid.to_numpy(zero_copy_only=False), 8, -1).astype(">i4")
            value = pc.if_else(valid, _fixed((micros - _PG_EPOCH_US).astype(">i8"), 8), _EMPTY)
            fields += [_fixed(lengths, 4), value]
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            text = col.cast(pa.large_binary())
            lengths = pc.binary_length(text).fill_null(-1).to_numpy().astype(">i4")
            fields += [_fixed(lengths, 4), text.fill_null(_EMPTY)]
        else:
            raise TypeError(f"COPY's binary format: column {name} is {col.type}, not text or a timestamp")
    rows = pc.binary_join_element_wise(*fields, _EMPTY)
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64, count=n + 1, offset=rows.offset * 8)
    return rows.buffers()[2][offsets[0]:offsets[-1]]


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
        with registered(conn, "stg_keys_df", keys) as view:
            conn.execute(sa.text(
                f"CREATE TEMP TABLE stg_keys AS SELECT CAST(record_key AS VARCHAR) AS record_key FROM {view}"))
        return
    conn.execute(sa.text("CREATE TEMP TABLE stg_keys (record_key VARCHAR) ON COMMIT DROP"))
    copy_frame(conn, "stg_keys", keys[["record_key"]])
