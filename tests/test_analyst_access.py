"""What analysts see: the PostgreSQL views, grants and comments, and the DuckDB analyst copy.

PostgreSQL (real server): the pipeline's own role (no superuser) migrates and publishes, the
administrator runs ``grant_analyst``; the analyst ``SELECT *``s ``core.dossiers_public`` and every
``mart`` table, never reads the applicant key, and reads a ``mart`` table created after the grant.
Every ``mart`` table and column carries a comment after a publication (both warehouses).

DuckDB (real files, real processes): the analyst copy is read while another process holds the
warehouse and its writer lock, and republishing replaces it under a reader holding the old one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from tasks import reports
from tasks.analyst import (
    AnalystCopyError,
    analyst_copy_path,
    default_analyst_path,
    publish_analyst_copy,
    refresh_analyst_copy,
)
from tasks.grants import CORE_PUBLIC_VIEWS, CORE_RESTRICTED, grant_analyst
from tasks.settings import PROJECT_ROOT, Settings
from tasks.warehouse import connect
from tests.test_grants import _as, _uid, pipeline, roles  # noqa: F401 - fixtures
from tests.test_reports import PERIOD, REFERENCE_DIR, fresh_warehouse, load_golden

APPLICANT_KEY = "a" * 64  # a pseudonymous key planted on one dossier


def _published(url: str) -> sa.Engine:
    engine = fresh_warehouse(url)
    load_golden(engine)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE core.dossiers SET applicant_key = :k"), {"k": APPLICANT_KEY})
    reports.publish(engine, *PERIOD, run_id="analysts", reference_dir=REFERENCE_DIR)
    return engine


def _mart_tables(conn: sa.Connection) -> list[str]:
    return conn.execute(sa.text(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'mart' ORDER BY 1")).scalars().all()


# ----------------------------------------------------------------------------------------------
# PostgreSQL: views, grants, default privileges
# ----------------------------------------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.empty_warehouse  # the pipeline role migrates it
def test_analyst_selects_star_on_public_views_and_mart_but_never_the_applicant_key(pg_url, roles, pipeline):  # noqa: F811
    as_pipeline = _published(_as(pg_url, pipeline))
    analyst = f"analyst_{_uid()}"
    roles.append(analyst)
    admin = connect(pg_url)
    grant_analyst(admin, analyst, password="pw")
    admin.dispose()
    # after the grant, the pipeline's role adds a mart table and a view (a later migration)
    with as_pipeline.begin() as c:
        c.execute(sa.text("CREATE TABLE mart.rpt_added_later AS SELECT 1 AS a"))
        c.execute(sa.text("CREATE VIEW mart.v_added_later AS SELECT count(*) AS n FROM mart.rpt_progress"))
        mart = _mart_tables(c)
    as_pipeline.dispose()

    reader = connect(_as(pg_url, analyst))
    try:
        with reader.connect() as c:
            rows = c.execute(sa.text("SELECT * FROM core.dossiers_public")).mappings().all()
            assert rows and "applicant_key" not in rows[0] and "ma_ho_so" in rows[0]
            assert APPLICANT_KEY not in str(rows)
            for table in [*mart, "v_added_later"]:  # no new grant for the table and view added later
                c.execute(sa.text(f'SELECT * FROM mart."{table}"')).fetchall()  # noqa: S608 - catalog names
            assert c.execute(sa.text("SELECT count(*) FROM mart.rpt_progress")).scalar_one() > 0
            for other in ("payments", "procedures", "units", "calendar", "dossier_status_history"):
                c.execute(sa.text(f"SELECT * FROM core.{other}")).fetchall()  # noqa: S608 - fixed names
        for forbidden in ("SELECT applicant_key FROM core.dossiers", "SELECT * FROM core.dossiers",
                          "SELECT * FROM raw.dossiers", "SELECT raw_record FROM dq.quarantine"):
            with reader.connect() as c, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                c.execute(sa.text(forbidden))
    finally:
        reader.dispose()


@pytest.mark.postgres
@pytest.mark.empty_warehouse  # the pipeline role migrates it
def test_public_views_reach_only_roles_that_may_use_core(pg_url, roles, pipeline):  # noqa: F811
    """``core.*_public`` is granted to PUBLIC by its migration: a view added later needs no new
    grant for analysts, and a role without USAGE on core (any other login) still reads nothing."""
    as_pipeline = _published(_as(pg_url, pipeline))
    analyst, stranger = f"analyst_{_uid()}", f"stranger_{_uid()}"
    roles.extend([analyst, stranger])
    admin = connect(pg_url)
    grant_analyst(admin, analyst, password="pw")
    db = sa.engine.make_url(pg_url).database
    with admin.begin() as c:
        c.execute(sa.text(f'CREATE ROLE "{stranger}" LOGIN'))
        c.execute(sa.text(f'GRANT CONNECT ON DATABASE "{db}" TO "{stranger}"'))
        # every public view: readable by PUBLIC, no restricted column
        views = c.execute(sa.text(
            "SELECT c.relname, has_table_privilege('public', c.oid, 'SELECT') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'core' AND c.relkind = 'v' "
            "AND c.relname LIKE '%\\_public'")).fetchall()
        assert {v for v, _ in views} >= {name.split(".")[1] for name in CORE_PUBLIC_VIEWS.values()}
        assert all(granted for _, granted in views), views
        for view, _ in views:
            columns = set(c.execute(sa.text("SELECT column_name FROM information_schema.columns "
                                            "WHERE table_schema = 'core' AND table_name = :t"), {"t": view}).scalars())
            assert not columns & set().union(*CORE_RESTRICTED.values()), (view, columns)
    admin.dispose()
    with as_pipeline.begin() as c:  # a later migration's public view, granted the same way
        c.execute(sa.text("CREATE VIEW core.payments_public AS SELECT ma, ma_ho_so, trang_thai FROM core.payments"))
        c.execute(sa.text("GRANT SELECT ON core.payments_public TO PUBLIC"))
    as_pipeline.dispose()
    for role, allowed in ((analyst, True), (stranger, False)):
        engine = connect(_as(pg_url, role))
        for view in ("core.dossiers_public", "core.payments_public"):
            with engine.connect() as c:
                if allowed:
                    assert c.execute(sa.text(f"SELECT count(*) FROM {view}")).scalar_one() > 0  # noqa: S608
                else:
                    with pytest.raises(sa.exc.ProgrammingError, match="permission denied for schema core"):
                        c.execute(sa.text(f"SELECT * FROM {view}"))  # noqa: S608
        engine.dispose()


# ----------------------------------------------------------------------------------------------
# the data dictionary on the objects
# ----------------------------------------------------------------------------------------------
_COMMENTS_PG = """
SELECT c.relname, NULL AS column_name, obj_description(c.oid, 'pg_class') AS comment
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'mart' AND c.relkind IN ('r', 'p', 'v', 'm')
UNION ALL
SELECT c.relname, a.attname, col_description(c.oid, a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = 'mart' AND c.relkind IN ('r', 'p', 'v', 'm')
"""
_COMMENTS_DUCKDB = """
SELECT table_name, NULL AS column_name, comment FROM duckdb_tables() WHERE schema_name = 'mart'
  AND database_name = current_database()
UNION ALL SELECT view_name, NULL, comment FROM duckdb_views() WHERE schema_name = 'mart'
  AND database_name = current_database()
UNION ALL SELECT table_name, column_name, comment FROM duckdb_columns() WHERE schema_name = 'mart'
  AND database_name = current_database()
"""


def test_every_mart_table_and_column_has_a_comment_after_a_publication(warehouse_url):
    engine = _published(warehouse_url)
    reports.publish(engine, *PERIOD, run_id="again", reference_dir=REFERENCE_DIR)  # a restatement too
    sql = _COMMENTS_PG if engine.dialect.name == "postgresql" else _COMMENTS_DUCKDB
    with engine.connect() as c:
        found = c.execute(sa.text(sql)).fetchall()
        tables = _mart_tables(c)
    engine.dispose()
    assert {t for t, col, _ in found if col is None} == set(tables)
    assert len(found) > 300
    missing = sorted(f"mart.{t}" + (f".{col}" if col else "") for t, col, comment in found
                     if not (comment or "").strip())
    assert not missing, f"no comment (add COMMENT ON in the migration that adds them): {missing}"
    comments = {(t, col): comment for t, col, comment in found}
    assert "766" in comments[("rpt_service_indicators", "code_766")]
    assert comments[("rpt_progress", None)].startswith("Dossier-handling results")


# ----------------------------------------------------------------------------------------------
# DuckDB: the analyst copy
# ----------------------------------------------------------------------------------------------
def _python(code: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=PROJECT_ROOT, **kw)


def _ready(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline().strip()
    assert line.startswith("ready"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return line


def test_analyst_copy_is_read_while_a_run_holds_the_warehouse_and_its_writer_lock(tmp_path):
    db = tmp_path / "data" / "dvc.duckdb"
    engine = _published(f"duckdb:///{db}")
    copy = publish_analyst_copy(engine)
    engine.dispose()
    assert copy == tmp_path / "data" / "dvc-analyst.duckdb" and (copy.stat().st_mode & 0o777) == 0o400
    assert sorted(p.name for p in copy.parent.iterdir() if "analyst" in p.name) == ["dvc-analyst.duckdb"]
    # a run: the writer lock and the warehouse file open read-write, in another process
    run = _python(f"""
        import sys
        from tasks.warehouse import connect, writer_lock
        engine = connect("duckdb:///{db}")
        with writer_lock(engine, holder="test run"), engine.connect() as c:
            c.exec_driver_sql("CREATE TABLE mart.being_written AS SELECT 1 AS x")
            print("ready", flush=True)
            sys.stdin.read()
    """)
    try:
        _ready(run)
        with pytest.raises(duckdb.IOException, match="[Ll]ock"):  # the warehouse itself is taken
            duckdb.connect(str(db), read_only=True)
        reader = duckdb.connect(str(copy), read_only=True)
        try:
            assert reader.execute("SELECT count(*) FROM mart.rpt_progress").fetchone()[0] > 0
            assert reader.execute("SELECT count(*) FROM core.dossiers_public").fetchone()[0] > 0
            schemas = {r[0] for r in reader.execute("SELECT DISTINCT table_schema FROM information_schema.tables")
                       .fetchall()}
            assert schemas == {"mart", "core"}
            tables = {r[0] for r in reader.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()}
            assert "core.dossiers" not in tables and "mart.being_written" not in tables
            columns = {r[0] for r in reader.execute("SELECT column_name FROM information_schema.columns").fetchall()}
            assert "applicant_key" not in columns
            assert reader.execute("SELECT comment FROM duckdb_tables() WHERE table_name = 'rpt_progress'").fetchone()[0]
            with pytest.raises(duckdb.Error):  # read-only
                reader.execute("CREATE TABLE mart.x (a INT)")
        finally:
            reader.close()
    finally:
        run.stdin.close()
        assert run.wait(timeout=60) == 0, run.stderr.read()


def test_the_copy_keeps_a_view_over_its_own_tables_as_a_view(tmp_path):
    """A view that reads only tables the copy holds stays a view there, computed from the copy's
    tables when read (``core.dossier_status_history``: a window over every version, which the
    copy no longer computes each night); a view over a relation the copy lacks is stored as a
    table of its rows (``core.dossiers_public``), and so is one the copy cannot read."""
    db = tmp_path / "dvc.duckdb"
    engine = _published(f"duckdb:///{db}")
    with engine.begin() as c:
        c.exec_driver_sql("CREATE VIEW core.v_payments AS WITH p AS (SELECT * FROM core.payments) "
                          "SELECT p.ma_ho_so, u.ten_don_vi FROM p, core.units u")
        c.exec_driver_sql("CREATE VIEW core.v_of_dossiers AS SELECT ma_ho_so FROM core.dossiers")
        c.exec_driver_sql("COMMENT ON VIEW core.v_payments IS 'payments by unit'")
        c.exec_driver_sql("INSERT INTO core.dossier_versions VALUES ('s', 'H1', TIMESTAMP '2024-03-01 08:00', 2, 'r'), "
                          "('s', 'H1', TIMESTAMP '2024-03-02 08:00', 4, 'r'), ('s', 'H1', TIMESTAMP '2024-03-03 08:00', 4, 'r')")
        expected = {v: sorted(c.exec_driver_sql(f"SELECT * FROM core.{v}").fetchall())  # noqa: S608 - fixed names
                    for v in ("dossier_status_history", "v_payments", "v_of_dossiers", "dossiers_public")}
    copy = publish_analyst_copy(engine)
    engine.dispose()
    reader = duckdb.connect(str(copy), read_only=True)
    try:
        views = dict(reader.execute("SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall())
        assert views == {"dossier_status_history": None, "v_payments": "payments by unit"}
        tables = {r[0] for r in reader.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert {"dossiers_public", "v_of_dossiers", "dossier_versions", "payments"} <= tables
        assert len(expected["dossier_status_history"]) == 2  # the third version changed nothing
        for name, rows in expected.items():
            assert sorted(reader.execute(f"SELECT * FROM core.{name}").fetchall()) == rows, name  # noqa: S608
    finally:
        reader.close()


def test_republishing_replaces_the_copy_under_a_reader_of_the_old_one(tmp_path):
    db = tmp_path / "wh.duckdb"
    target = tmp_path / "shared" / "analysts.duckdb"
    engine = _published(f"duckdb:///{db}")
    publish_analyst_copy(engine, target)
    reader = _python(f"""
        import sys, duckdb
        c = duckdb.connect("{target}", read_only=True)
        q = "SELECT count(*) FROM mart.publications"
        print("ready", c.execute(q).fetchone()[0], flush=True)
        sys.stdin.readline()
        print("still", c.execute(q).fetchone()[0], flush=True)
    """)
    try:
        assert _ready(reader) == "ready 1"
        stale = target.with_name(f".{target.name}.999999-dead.tmp")  # left by a writer that was killed
        stale.write_bytes(b"half a copy")
        reports.publish(engine, date(2024, 2, 1), date(2024, 2, 29), run_id="feb", reference_dir=REFERENCE_DIR)
        assert publish_analyst_copy(engine, target) == target.absolute()  # never waits for the reader
        engine.dispose()
        new = duckdb.connect(str(target), read_only=True)
        assert new.execute("SELECT count(*) FROM mart.publications").fetchone()[0] == 2
        new.close()
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "still 1"  # its snapshot, the old file
    finally:
        reader.stdin.close()
        assert reader.wait(timeout=60) == 0, reader.stderr.read()
    assert sorted(p.name for p in target.parent.iterdir()) == ["analysts.duckdb"]  # no temp file left


def test_a_copy_that_cannot_be_written_keeps_the_previous_one_and_never_fails_the_run(tmp_path, caplog):
    db = tmp_path / "wh.duckdb"
    engine = _published(f"duckdb:///{db}")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the copy's folder should be")
    settings = Settings(_env_file=None, warehouse_url=f"duckdb:///{db}", analyst_duckdb=blocked / "a.duckdb")
    assert refresh_analyst_copy(engine, settings) is None
    assert "cannot write the analyst copy" in caplog.text
    with pytest.raises(AnalystCopyError, match="warehouse file itself"):
        publish_analyst_copy(engine, db)
    settings = Settings(_env_file=None, warehouse_url=f"duckdb:///{db}")
    assert refresh_analyst_copy(engine, settings) == tmp_path / "wh-analyst.duckdb"
    engine.dispose()


def test_where_the_copy_goes(tmp_path, monkeypatch):
    for k in ("DVC_ANALYST_DUCKDB", "DVC_WAREHOUSE_URL"):
        monkeypatch.delenv(k, raising=False)
    assert analyst_copy_path(Settings(_env_file=None)) == Path("data/dvc-analyst.duckdb")
    assert default_analyst_path("/srv/wh/prod.duckdb") == Path("/srv/wh/prod-analyst.duckdb")
    assert analyst_copy_path(Settings(_env_file=None, warehouse_url="postgresql+psycopg://u@h/db")) is None
    assert analyst_copy_path(Settings(_env_file=None, warehouse_url="postgresql+psycopg://u@h/db",
                                      analyst_duckdb=tmp_path / "a.duckdb")) is None
    monkeypatch.setenv("DVC_ANALYST_DUCKDB", str(tmp_path / "b.duckdb"))
    assert analyst_copy_path(Settings(_env_file=None)) == tmp_path / "b.duckdb"


def test_the_copy_written_beside_the_workbook_records_the_workbook(tmp_path):
    """``publish_period`` writes the analysts' copy in a thread while it lays the workbook out: the
    copy's snapshot is older than the workbook's record in ``mart.publications``, yet the copy
    names the workbook, as the warehouse does."""
    from tasks.publishing import publish_period

    db = tmp_path / "wh.duckdb"
    engine = _published(f"duckdb:///{db}")
    settings = Settings(_env_file=None, warehouse_url=f"duckdb:///{db}", reports_dir=tmp_path / "reports",
                        reference_dir=REFERENCE_DIR)
    out = publish_period(engine, settings, PERIOD, "beside", analyst_copy=True)
    with engine.connect() as c:
        recorded = dict(c.execute(sa.text("SELECT publication_id, workbook_path FROM mart.publications")).all())
    engine.dispose()
    assert recorded[out["publication_id"]] == out["workbook"] and Path(out["workbook"]).is_file()
    copy = duckdb.connect(str(tmp_path / "wh-analyst.duckdb"), read_only=True)
    try:
        assert dict(copy.execute("SELECT publication_id, workbook_path FROM mart.publications").fetchall()) == recorded
    finally:
        copy.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "analyst" in p.name) == ["wh-analyst.duckdb"]


def test_a_failed_workbook_abandons_the_copy_beside_it(tmp_path, monkeypatch, caplog):
    """The workbook fails while the copy is being written: the error reaches the caller, the
    previous copy stays as it was, no temporary file is left, and the copy is abandoned, not
    reported as a copy that failed."""
    import tasks.workbook
    from tasks.publishing import publish_period

    db = tmp_path / "wh.duckdb"
    engine = _published(f"duckdb:///{db}")
    settings = Settings(_env_file=None, warehouse_url=f"duckdb:///{db}", reports_dir=tmp_path / "reports",
                        reference_dir=REFERENCE_DIR)
    before = publish_analyst_copy(engine)
    old = before.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full while writing the workbook")

    monkeypatch.setattr(tasks.workbook, "lay_out", broken)
    with pytest.raises(OSError, match="disk full"):
        publish_period(engine, settings, (date(2024, 2, 1), date(2024, 2, 29)), "fails", analyst_copy=True)
    engine.dispose()
    assert "cannot write the analyst copy" not in caplog.text
    assert before.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir() if "analyst" in p.name) == ["wh-analyst.duckdb"]
