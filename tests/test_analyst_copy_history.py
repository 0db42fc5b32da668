"""The analysts' copy keeps the publication history of the previous copy and appends to it.

``mart.rpt_*_history`` grows by every publication (two a night) and never changes, so the copy
starts as a file copy of the previous one, keeps those rows and appends the new publications';
everything else is written again. Each test ends with the copy equal to the warehouse, relation by
relation, row by row and comment by comment, whatever the previous copy held.
"""

from __future__ import annotations

import logging
from datetime import date

import duckdb
import pytest
import sqlalchemy as sa

from tasks import reports
from tasks.analyst import copy_blocks, publish_analyst_copy
from tests.test_analyst_access import _published
from tests.test_reports import REFERENCE_DIR

FEB = (date(2024, 2, 1), date(2024, 2, 29))
HISTORY = "mart.rpt_progress_history"


def _state(con: duckdb.DuckDBPyConnection, database: str, names: set[tuple[str, str]] | None = None) -> dict:
    """Every relation of mart and core in ``database`` (those in ``names``): its rows sorted, its
    columns and their comments."""
    rels = con.execute(
        "SELECT schema_name, table_name, comment FROM duckdb_tables() WHERE database_name = ? "
        "AND schema_name IN ('mart', 'core') UNION ALL SELECT schema_name, view_name, comment FROM duckdb_views() "
        "WHERE database_name = ? AND schema_name IN ('mart', 'core') AND NOT internal", [database, database]).fetchall()
    out = {}
    for schema, name, comment in rels:
        if names is not None and (schema, name) not in names:
            continue
        cols = con.execute("SELECT column_name, data_type, comment FROM duckdb_columns() WHERE database_name = ? "
                           "AND schema_name = ? AND table_name = ? ORDER BY column_index",
                           [database, schema, name]).fetchall()
        rows = con.execute(f'SELECT * FROM "{database}"."{schema}"."{name}"').fetchall()  # noqa: S608 - catalog
        out[(schema, name)] = (comment, cols, sorted(rows, key=repr))
    return out


def _assert_copy_is_the_warehouse(engine: sa.Engine, copy_path) -> None:
    engine.dispose()
    wh = duckdb.connect(engine.url.database, read_only=True)
    try:
        wh.execute(f"ATTACH '{copy_path}' AS c (READ_ONLY)")
        copy = _state(wh, "c")
        name = wh.execute("SELECT current_database()").fetchone()[0]
        warehouse = _state(wh, name, set(copy))
    finally:
        wh.close()
    assert set(copy) == set(warehouse)
    assert ("mart", "rpt_progress_history") in copy and ("core", "dossiers_public") in copy
    for rel, state in warehouse.items():
        assert copy[rel] == state, rel


def _appended(caplog) -> tuple[int, int]:
    rec = [r for r in caplog.records if r.name == "tasks.analyst" and "history tables kept" in r.getMessage()][-1]
    kept, rows = rec.args[2], rec.args[3]
    return kept, rows


def _history_rows(engine: sa.Engine, publication_id: str | None = None) -> int:
    """Rows of every ``mart.*_history`` table (of one publication)."""
    where, params = (" WHERE publication_id = ?", (publication_id,)) if publication_id else ("", ())
    with engine.connect() as c:
        tables = c.exec_driver_sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'mart' "
                                   "AND suffix(table_name, '_history')").scalars().all()
        return sum(c.exec_driver_sql(f"SELECT count(*) FROM mart.{t}{where}", params).scalar_one()  # noqa: S608
                   for t in tables)


def _feb(engine: sa.Engine) -> str:
    return reports.publish(engine, *FEB, run_id="feb", reference_dir=REFERENCE_DIR).publication_id


def test_the_next_copy_keeps_the_history_and_appends_the_new_publication(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tasks.analyst")
    engine = _published(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    copy = publish_analyst_copy(engine)
    assert _appended(caplog) == (0, 0)  # no previous copy: written from scratch
    feb = _feb(engine)
    assert publish_analyst_copy(engine) == copy
    kept, rows = _appended(caplog)
    assert kept >= 9 and rows == _history_rows(engine, feb) > 0  # the new publication's rows, no more
    _assert_copy_is_the_warehouse(engine, copy)
    assert copy.stat().st_mode & 0o777 == 0o400
    assert sorted(p.name for p in tmp_path.iterdir() if "analyst" in p.name) == ["wh-analyst.duckdb"]


def test_a_publication_described_otherwise_is_written_again(tmp_path, caplog):
    """The warehouse was rebuilt under the same publication id (its metadata differ): its rows are
    the warehouse's, not the previous copy's."""
    caplog.set_level(logging.INFO, logger="tasks.analyst")
    engine = _published(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    copy = publish_analyst_copy(engine)
    with engine.begin() as c:
        c.exec_driver_sql("UPDATE mart.publications SET run_id = 'rebuilt'")
        c.exec_driver_sql(f"UPDATE {HISTORY} SET ten_don_vi = 'rebuilt'")
    publish_analyst_copy(engine)
    assert _appended(caplog)[1] == _history_rows(engine)  # every publication's rows again
    _assert_copy_is_the_warehouse(engine, copy)


def test_a_history_table_with_other_rows_or_columns_is_written_again(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tasks.analyst")
    engine = _published(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    copy = publish_analyst_copy(engine)
    with engine.begin() as c:
        c.exec_driver_sql(f"DELETE FROM {HISTORY} WHERE rowid % 2 = 0")  # rows gone, the publication alike
        c.exec_driver_sql("ALTER TABLE mart.rpt_online_payment_history ADD COLUMN note VARCHAR DEFAULT 'x'")
        c.exec_driver_sql("COMMENT ON COLUMN mart.rpt_late_acceptance_history.ma_ho_so IS NULL")
        c.exec_driver_sql("COMMENT ON TABLE mart.rpt_unpaid_results_history IS 'unpaid, every publication'")
    _feb(engine)
    publish_analyst_copy(engine)
    assert f"{HISTORY} differs from the previous copy's; written again" in caplog.text
    assert _appended(caplog)[0] == 8  # of 10: one with a new column, one with rows gone
    _assert_copy_is_the_warehouse(engine, copy)


def test_relations_gone_from_the_warehouse_leave_the_copy(tmp_path):
    engine = _published(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE mart.rpt_scratch_history (publication_id VARCHAR, n INTEGER)")
        c.exec_driver_sql("INSERT INTO mart.rpt_scratch_history VALUES ('p', 1)")
        c.exec_driver_sql("CREATE VIEW core.v_units AS SELECT * FROM core.units")
    copy = publish_analyst_copy(engine)
    with engine.begin() as c:
        c.exec_driver_sql("DROP TABLE mart.rpt_scratch_history")
        c.exec_driver_sql("DROP VIEW core.v_units")
        c.exec_driver_sql("CREATE TABLE core.v_units AS SELECT ma_don_vi FROM core.units")  # a table now
    publish_analyst_copy(engine)
    _assert_copy_is_the_warehouse(engine, copy)


@pytest.mark.parametrize("damage", ["garbage", "empty"])
def test_a_previous_copy_that_cannot_be_read_is_set_aside(tmp_path, caplog, damage):
    caplog.set_level(logging.INFO, logger="tasks.analyst")
    engine = _published(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    copy = publish_analyst_copy(engine)
    copy.chmod(0o600)
    copy.write_bytes(b"not a database" * 1000 if damage == "garbage" else b"")
    copy.chmod(0o400)
    _feb(engine)
    assert publish_analyst_copy(engine) == copy
    assert damage == "empty" or "cannot be reused" in caplog.text
    assert _appended(caplog) == (0, 0)
    _assert_copy_is_the_warehouse(engine, copy)
    assert sorted(p.name for p in tmp_path.iterdir() if "analyst" in p.name) == ["wh-analyst.duckdb"]


def test_a_previous_copy_grown_loose_is_written_afresh(tmp_path, caplog, monkeypatch):
    """A previous copy with more free blocks than ``REWRITE_FREE_SHARE`` of its used ones (each
    night frees the blocks of the tables written again; what it does not reuse stays) is not
    started from: the copy is written from scratch, compact, and equal to the warehouse."""
    import tasks.analyst

    caplog.set_level(logging.INFO, logger="tasks.analyst")
    engine = _published(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    copy = publish_analyst_copy(engine)
    _feb(engine)
    publish_analyst_copy(engine)
    assert _appended(caplog)[0] > 0  # kept: the share not reached
    monkeypatch.setattr(tasks.analyst, "REWRITE_FREE_SHARE", -1.0)  # any copy counts as loose
    _feb(engine)
    publish_analyst_copy(engine)
    assert "free blocks for" in caplog.text and _appended(caplog) == (0, 0)
    assert copy_blocks(copy)[1] == 0
    _assert_copy_is_the_warehouse(engine, copy)


@pytest.mark.parametrize("fails", [False, True])
def test_the_copy_drops_insertion_order_on_its_own_connection_only(tmp_path, monkeypatch, fails):
    """The copy writes its tables without DuckDB's insertion order (every thread writes), on its
    connection only, and that connection goes back to the pool with the warehouse's setting, the
    copy written or failed."""
    import tasks.analyst

    engine = _published(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    seen = {}
    write_copy = tasks.analyst._write_copy

    def spy(conn, *args):
        raw = conn.connection.driver_connection
        seen["raw"] = raw
        seen["during"] = raw.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0]
        with engine.connect() as other:  # another connection of the same database
            seen["other"] = other.exec_driver_sql("SELECT current_setting('preserve_insertion_order')").scalar()
        out = write_copy(conn, *args)
        if fails:
            raise OSError("disk full")
        return out

    monkeypatch.setattr(tasks.analyst, "_write_copy", spy)
    if fails:
        with pytest.raises(tasks.analyst.AnalystCopyError, match="disk full"):
            publish_analyst_copy(engine)
    else:
        publish_analyst_copy(engine)
    assert seen["during"] is False and seen["other"] is True
    assert seen["raw"].execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0] is True
    engine.dispose()
