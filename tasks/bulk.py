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
from typing import Any

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


def copy_frame(conn: Connection, name: str, frame: pd.DataFrame, keep: np.ndarray | None = None,
               *, binary: bool | None = None) -> None:
    """PostgreSQL: ``COPY`` ``frame`` (its rows where ``keep``, if given) into table ``name``.

    In COPY's binary format (:func:`binary_rows`) when every column's values fit its column's type
    in the table exactly (the catalogue says which), as CSV otherwise; ``binary=False`` forces CSV,
    ``binary=True`` refuses a frame binary cannot carry (``TypeError``)."""
    col_list = ", ".join(frame.columns)
    parts: list[Any] | None = None
    if binary is not False:
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if keep is not None:
                table = table.filter(pa.array(keep))
            rows = binary_rows(table, column_types(conn, name))
            parts, options = [PGCOPY_HEADER, rows, PGCOPY_TRAILER], "FORMAT binary"
        except (TypeError, pa.ArrowException, ValueError):
            if binary:
                raise
    if parts is None:
        data, options = csv_bytes(frame, keep)
        parts = [data]
    pg = raw_driver_connection(conn)
    with pg.cursor() as cur, cur.copy(f"COPY {name} ({col_list}) FROM STDIN ({options})") as copy:
        for data in parts:
            view = memoryview(data)
            for i in range(0, len(view), 1 << 20):
                copy.write(view[i : i + (1 << 20)])


def column_types(conn: Connection, name: str) -> dict[str, str]:
    """PostgreSQL: the type of each column of table ``name`` (a temporary table too), as
    ``pg_type.typname`` (``varchar``, ``int2``, ``timestamp``...)."""
    rows = conn.execute(sa.text(
        "SELECT a.attname, t.typname FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(:name) AND a.attnum > 0 AND NOT a.attisdropped"), {"name": name})
    return {column: typname for column, typname in rows}


#: COPY's binary format: the signature, the flags field and the header extension's length
#: (PostgreSQL's documentation of COPY, "Binary Format"); the trailer is a field count of -1.
PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
PGCOPY_TRAILER = b"\xff\xff"
_EMPTY = pa.scalar(b"", pa.large_binary())
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 00:00:00, PostgreSQL's epoch, in Unix microseconds
_PG_EPOCH_DAYS = 10_957  # the same in days since 1970-01-01
#: PostgreSQL's fixed-width types that binary COPY carries here: their big-endian NumPy type
_FIXED = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float4": ">f4", "float8": ">f8", "bool": "u1",
          "timestamp": ">i8", "date": ">i4"}
_TEXT = {"varchar", "text"}


def _fixed(values: np.ndarray, width: int) -> pa.Array:
    """Big-endian ``values`` (a NumPy array of ``width`` bytes a row) as Arrow binary strings of
    ``width`` bytes."""
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(values)])
    return fixed.cast(pa.large_binary())


def _numbers(col: pa.Array, typname: str) -> np.ndarray:
    """A fixed-width column's values as PostgreSQL stores them (nulls as zeros), or ``TypeError``
    if the Arrow type does not fit the column's type exactly."""
    kind = col.type
    if typname == "timestamp" and pa.types.is_timestamp(kind) and kind.tz is None:
        micros = pc.cast(pc.cast(col, pa.timestamp("us"), safe=False), pa.int64())
        return (micros.fill_null(_PG_EPOCH_US).to_numpy() - _PG_EPOCH_US).astype(">i8")
    if typname == "date" and pa.types.is_date32(kind):
        return (pc.cast(col, pa.int32()).fill_null(_PG_EPOCH_DAYS).to_numpy() - _PG_EPOCH_DAYS).astype(">i4")
    if typname == "bool" and pa.types.is_boolean(kind):
        return col.fill_null(False).to_numpy(zero_copy_only=False).astype("u1")
    if (typname.startswith("int") and pa.types.is_integer(kind)) or (
            typname.startswith("float") and (pa.types.is_floating(kind) or pa.types.is_integer(kind))):
        target = {"int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(), "float4": pa.float32(),
                  "float8": pa.float64()}[typname]
        return pc.cast(col, target).fill_null(0).to_numpy().astype(_FIXED[typname])  # an overflow raises
    raise TypeError(f"{kind} does not fit {typname}")


def binary_rows(table: pa.Table, types: dict[str, str] | None = None) -> pa.Buffer:
    """The rows of ``table`` in COPY's binary format, without its header and trailer: each row
    its field count (int16), then each field its length (int32, -1 for null) and its bytes, all
    big-endian, as the type of the table's column (``types``: :func:`column_types`; without it,
    text and timestamps only) expects: text as UTF-8 (the server checks it, as it does CSV's),
    integers and floats at the column's width, timestamps without time zone as microseconds and
    dates as days since 2000-01-01. The server parses this with much less CPU than CSV, whose
    JSON texts it must unquote and whose numbers and dates it must read (bench/README.md). Arrow
    builds each field's length prefix and joins the fields row by row in one C++ pass
    (``binary_join_element_wise``): no Python per row. A column whose values do not fit its type
    exactly raises ``TypeError``."""
    n = table.num_rows
    fields = [_fixed(np.full(n, table.num_columns, dtype=">i2"), 2)]
    for name, col in zip(table.column_names, table.columns, strict=True):
        col = col.combine_chunks()
        typname = (types or {}).get(name) or (
            "timestamp" if pa.types.is_timestamp(col.type) else "text" if types is None else "")
        if typname in _TEXT and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            text = col.cast(pa.large_binary())
            lengths = pc.binary_length(text).fill_null(-1).to_numpy().astype(">i4")
            fields += [_fixed(lengths, 4), text.fill_null(_EMPTY)]
        elif typname in _FIXED:
            try:
                values = _numbers(col, typname)
            except TypeError as exc:
                raise TypeError(f"COPY's binary format: column {name}: {exc}") from None
            width = values.dtype.itemsize
            valid = col.is_valid()
            lengths = np.where(valid.to_numpy(zero_copy_only=False), width, -1).astype(">i4")
            fields += [_fixed(lengths, 4), pc.if_else(valid, _fixed(values, width), _EMPTY)]
        else:
            raise TypeError(f"COPY's binary format: column {name} is {col.type}, for {typname or 'no known type'}")
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
        raw = raw_driver_connection(conn)
        raw.register("stg_keys_df", keys)
        conn.execute(sa.text("CREATE TEMP TABLE stg_keys AS SELECT CAST(record_key AS VARCHAR) AS record_key FROM stg_keys_df"))
        raw.unregister("stg_keys_df")
        return
    conn.execute(sa.text("CREATE TEMP TABLE stg_keys (record_key VARCHAR) ON COMMIT DROP"))
    copy_frame(conn, "stg_keys", keys[["record_key"]])
