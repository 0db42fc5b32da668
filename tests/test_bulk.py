"""The engines' bulk paths (tasks/bulk.py) on the real PostgreSQL: a frame copied as CSV and in
COPY's binary format arrives whole and exact, awkward texts, nulls, old and fractional timestamps
and the rows a mask drops included; a column the binary format cannot carry is refused."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from tasks import bulk
from tasks.warehouse import connect

TEXTS = ['{"a": "x", "b": [1, 2]}', 'say "hi",\nthen\tgo', "", "Nguyễn Văn A", "Nguye\u0302\u0303n", "\\N", "a\\b",
         "=1+2", "\r\n", "𝔘 😀", "'; DROP TABLE t_bulk; --"]


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    text = pd.array([TEXTS[i % len(TEXTS)] + ("y" * int(rng.integers(0, 300)) if i % 3 else "")
                     for i in range(n)], dtype="string")
    text[::11] = pd.NA
    ts = pd.Series(pd.date_range("1999-12-31 23:00:00.123456", periods=n, freq="37min"))
    ts[::13] = pd.NaT
    return pd.DataFrame({"k": pd.array([f"K-{i:05d}" for i in range(n)], dtype="string"), "t": text, "ts": ts})


@pytest.fixture
def engine(pg_url):
    eng = connect(pg_url)
    with eng.begin() as c:
        for name in ("t_csv", "t_bin"):
            c.execute(sa.text(f"CREATE TABLE {name} (k VARCHAR PRIMARY KEY, t TEXT, ts TIMESTAMP)"))
    yield eng
    eng.dispose()


def _rows(engine, table: str) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(f"SELECT k, t, ts FROM {table} ORDER BY k"))]


def test_a_frame_copied_as_csv_and_as_binary_arrives_whole_and_exact(engine):
    frame = _frame(3_000)
    keep = np.ones(len(frame), dtype=bool)
    keep[5::7] = False
    with engine.begin() as c:
        bulk.copy_frame(c, "t_csv", frame, keep, binary=False)
        bulk.copy_frame(c, "t_bin", frame, keep, binary=True)
    want = [(k, None if pd.isna(t) else t, None if pd.isna(ts) else ts.to_pydatetime())
            for k, t, ts in frame[keep].itertuples(index=False)]
    assert _rows(engine, "t_csv") == want
    assert _rows(engine, "t_bin") == want
    texts = {r[1] for r in want}
    assert "" in texts and None in texts and any(r[2] is None for r in want)  # "" stays "", null stays null
    assert min(r[2] for r in want if r[2] is not None).year == 1999  # before PostgreSQL's epoch


def test_the_binary_format_refuses_a_column_it_cannot_carry(engine):
    frame = _frame(10).assign(n=np.arange(10))
    with pytest.raises(TypeError, match="column n is int64"), engine.begin() as c:
        bulk.copy_frame(c, "t_bin", frame, binary=True)


@pytest.mark.parametrize("binary", [False, True])
def test_a_row_the_server_refuses_rolls_the_whole_copy_back(engine, binary):
    frame = _frame(3_000)
    frame.loc[2_500, "k"] = "K-00003"  # a duplicate key late in the frame
    with pytest.raises(psycopg.errors.UniqueViolation), engine.begin() as c:
        bulk.copy_frame(c, "t_bin", frame, binary=binary)
    assert _rows(engine, "t_bin") == []


def test_typed_columns_go_binary_when_they_fit_and_as_csv_when_they_do_not(engine, monkeypatch):
    """Without ``binary``, the catalogue's types decide: integers at each column's width, floats,
    booleans, dates and timestamps go binary; a value that does not fit its column's type exactly
    (text for an integer column) sends the frame as CSV, which the server parses as before."""
    n = 500
    frame = pd.DataFrame({
        "k": pd.array([f"K-{i:05d}" for i in range(n)], dtype="string"),
        "i2": pd.array([None if i % 7 == 0 else (i % 2 * 2 - 1) * 32_000 for i in range(n)], dtype="Int16"),
        "i4": pd.array([None if i % 5 == 0 else i * 4_000_000 - 10 for i in range(n)], dtype="Int64"),
        "i8": pd.array([None if i % 9 == 0 else i * 10**15 for i in range(n)], dtype="Int64"),
        "f8": pd.array([None if i % 4 == 0 else i / 3 - 50 for i in range(n)], dtype="Float64"),
        "b": pd.array([None if i % 6 == 0 else i % 3 == 0 for i in range(n)], dtype="boolean"),
        "d": pd.array([None if i % 8 == 0 else date(1990, 1, 1) + timedelta(days=37 * i) for i in range(n)],
                      dtype=pd.ArrowDtype(pa.date32())),
    })
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE t_typed (k VARCHAR PRIMARY KEY, i2 SMALLINT, i4 INTEGER, i8 BIGINT, "
                          "f8 DOUBLE PRECISION, b BOOLEAN, d DATE)"))
        c.execute(sa.text("CREATE TABLE t_typed_csv (LIKE t_typed)"))
    as_csv = []
    real = bulk.csv_bytes
    monkeypatch.setattr(bulk, "csv_bytes", lambda *a, **kw: as_csv.append(1) or real(*a, **kw))
    with engine.begin() as c:
        bulk.copy_frame(c, "t_typed", frame)
        bulk.copy_frame(c, "t_typed_csv", frame, binary=False)
    assert len(as_csv) == 1  # the forced one only
    with engine.connect() as c:
        got = [tuple(r) for r in c.execute(sa.text("SELECT * FROM t_typed ORDER BY k"))]
        via_csv = [tuple(r) for r in c.execute(sa.text("SELECT * FROM t_typed_csv ORDER BY k"))]
    assert got == via_csv
    assert got[1] == ("K-00001", 32_000, 3_999_990, 10**15, 1 / 3 - 50, False, date(1990, 2, 7))
    assert got[0] == ("K-00000", None, None, None, None, None, None)
    with engine.begin() as c:  # a frame whose text does not fit an integer column: CSV
        c.execute(sa.text("TRUNCATE t_typed"))
        bulk.copy_frame(c, "t_typed", frame[["k"]].assign(i4=frame["i4"].astype("string")))
    assert len(as_csv) == 2
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT sum(i4) FROM t_typed")).scalar() == frame["i4"].sum()
