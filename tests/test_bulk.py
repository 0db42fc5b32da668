"""The engines' bulk paths (tasks/bulk.py) on the real PostgreSQL: a frame copied as CSV and in
COPY's binary format arrives whole and exact, awkward texts, nulls, old and fractional timestamps
and the rows a mask drops included; a column the binary format cannot carry is refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
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
        bulk.copy_frame(c, "t_csv", frame, keep)
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
