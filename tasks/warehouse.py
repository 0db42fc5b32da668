"""The warehouse: one SQLAlchemy engine over embedded DuckDB (default) or PostgreSQL.

Plain functions, no Prefect: the flows call them, the tests call them directly.

- :func:`connect` builds the engine from a URL (creates the DuckDB file's folder).
- :func:`upgrade` applies the versioned migrations of ``sql/migrations`` (never drops data).
- :func:`sql_file` / :func:`run_sql_file` read the SQL kept in ``sql/``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tasks.settings import MEMORY_SIZE, SQL_DIR, Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = SQL_DIR / "migrations"

#: PostgreSQL advisory-lock keys, one place for all of them (a clash makes a run wait on itself).
PG_LOCK_MIGRATE = 4242001  # transaction lock: one migrator at a time
PG_LOCK_WRITER = 4242002  # session lock held by a writing run (writer_lock)
PG_LOCK_PUBLISH = 4242003  # transaction lock: one publication at a time (tasks.reports)


class WarehouseError(RuntimeError):
    """A warehouse problem the operator must fix (bad URL, unreachable server, failed migration)."""


def dialect_name(engine_or_conn: Engine | Connection) -> str:
    """'duckdb' or 'postgresql'."""
    return engine_or_conn.dialect.name


_MEMORY_LIMIT = re.compile(rf"^{MEMORY_SIZE}$", re.IGNORECASE)


def connect(url: str, *, duckdb_memory_limit: str | None = None) -> Engine:
    """Engine for a warehouse URL. ``duckdb:///path`` (relative to the working directory) or
    ``postgresql+psycopg://...``. ``duckdb_memory_limit`` caps DuckDB's buffer pool (bigger work
    spills to disk); None or empty keeps DuckDB's default (80 % of RAM)."""
    try:
        u = sa.engine.make_url(url)
    except Exception as exc:  # noqa: BLE001 - turned into a clear message
        raise WarehouseError(f"DVC_WAREHOUSE_URL is not a valid SQLAlchemy URL: {exc}") from None
    if u.get_backend_name() == "duckdb":
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(u, poolclass=sa.pool.QueuePool, pool_size=1, max_overflow=0)
        limit = (duckdb_memory_limit or "").strip()
        if limit:
            if not _MEMORY_LIMIT.match(limit):
                raise WarehouseError(f"DVC_DUCKDB_MEMORY_LIMIT {limit!r} is not a size such as 512MB or 2GB")

            # SET, not a connect-time config: DuckDB refuses a second connection of the process to
            # the same file with a different config, and the limit is the database's anyway
            @sa.event.listens_for(engine, "connect")
            def _memory_limit(dbapi_connection: Any, _record: Any) -> None:
                cur = dbapi_connection.cursor()
                try:
                    cur.execute(f"SET memory_limit = '{limit}'")
                finally:
                    cur.close()

        return engine
    if u.get_backend_name() == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        return sa.create_engine(u, pool_pre_ping=True)
    raise WarehouseError(
        f"unsupported warehouse {u.get_backend_name()!r}: DVC_WAREHOUSE_URL must be duckdb:/// or postgresql://"
    )


def open_warehouse(settings: Settings) -> Engine:
    """Engine for the configured warehouse (``DVC_WAREHOUSE_URL``, ``DVC_DUCKDB_MEMORY_LIMIT``)."""
    return connect(settings.warehouse_url, duckdb_memory_limit=settings.duckdb_memory_limit)


# ----------------------------------------------------------------------------------------------
# SQL files
# ----------------------------------------------------------------------------------------------
_COMMENT = re.compile(r"--[^\n]*")


def split_statements(sql: str) -> list[str]:
    """Split a SQL script into statements. Comments are stripped first; statements end with ';'.
    (Our SQL files keep ';' and '--' out of string literals.)"""
    body = _COMMENT.sub("", sql)
    return [s.strip() for s in body.split(";") if s.strip()]


def sql_file(relative: str, dialect: str | None = None) -> str:
    """Text of ``sql/<relative>``; a dialect-specific twin ``name.<dialect>.sql`` wins if present."""
    path = SQL_DIR / relative
    if dialect:
        twin = path.with_name(f"{path.stem}.{dialect}{path.suffix}")
        if twin.exists():
            path = twin
    return path.read_text(encoding="utf-8")


def run_sql_file(conn: Connection, relative: str, params: dict | None = None) -> None:
    """Execute every statement of a SQL file on an open connection (inside its transaction)."""
    for stmt in split_statements(sql_file(relative, dialect_name(conn))):
        conn.execute(sa.text(stmt), params or {})


# ----------------------------------------------------------------------------------------------
# Migrations
# ----------------------------------------------------------------------------------------------
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+(\.(duckdb|postgresql))?\.sql$")


def migrations(dialect: str) -> list[tuple[str, Path]]:
    """(version, file) in order; ``NNNN_name.<dialect>.sql`` replaces ``NNNN_name.sql``."""
    chosen: dict[str, Path] = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = _MIGRATION.match(path.name)
        if not m:
            raise WarehouseError(f"badly named migration {path.name} (want NNNN_name[.dialect].sql)")
        file_dialect = m.group(3)
        if file_dialect and file_dialect != dialect:
            continue
        version = path.name.split(".")[0]
        if file_dialect or version not in chosen:
            chosen[version] = path
    return sorted(chosen.items())


def applied_versions(conn: Connection) -> set[str]:
    insp = sa.inspect(conn)
    if not insp.has_table("schema_migrations", schema="dq"):
        return set()
    return {r[0] for r in conn.execute(sa.text("SELECT version FROM dq.schema_migrations"))}


def upgrade(engine: Engine) -> list[str]:
    """Apply pending migrations, each in its own transaction. Returns the versions applied."""
    dialect = dialect_name(engine)
    done: list[str] = []
    try:
        with engine.connect() as conn:
            already = applied_versions(conn)
            conn.rollback()
        for version, path in migrations(dialect):
            if version in already:
                continue
            with engine.begin() as conn:
                if dialect == "postgresql":
                    # one migrator at a time across processes
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_MIGRATE})
                    if version in applied_versions(conn):
                        continue
                for stmt in split_statements(path.read_text(encoding="utf-8")):
                    conn.execute(sa.text(stmt))
                conn.execute(
                    sa.text("INSERT INTO dq.schema_migrations (version, applied_at) VALUES (:v, :t)"),
                    {"v": version, "t": datetime.now().replace(microsecond=0)},
                )
            log.info("applied migration %s", path.name)
            done.append(version)
    except sa.exc.OperationalError as exc:
        raise WarehouseError(f"cannot reach the warehouse ({engine.url.render_as_string()}): {exc.orig}") from None
    return done


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as conn:
        yield conn


def raw_driver_connection(conn: Connection):
    """The DBAPI driver connection under a SQLAlchemy connection (duckdb or psycopg), for native
    bulk paths (DuckDB register + INSERT ... SELECT; PostgreSQL COPY). Same transaction."""
    return conn.connection.driver_connection


# ----------------------------------------------------------------------------------------------
# One writer at a time
# ----------------------------------------------------------------------------------------------
_LOCAL_LOCKS: dict[str, __import__("threading").Lock] = {}


def local_write_lock(engine: Engine):
    """A per-warehouse lock inside this process: concurrent tasks (threads) of one run take turns
    for their write transactions, so they never conflict with each other."""
    import threading

    key = engine.url.render_as_string(hide_password=True)
    return _LOCAL_LOCKS.setdefault(key, threading.Lock())


class WarehouseBusy(WarehouseError):
    """Another process holds the warehouse's writer lock."""




def _await_duckdb_file(db: str, *, grace: float) -> None:
    """The previous writer released the run lock, but its process may hold the DuckDB file open a
    moment longer (closing connections, printing its summary) and DuckDB admits one process per
    file: wait, bounded, for DuckDB's own file lock instead of failing the run on it."""
    import time

    import duckdb

    if not Path(db).exists():
        return
    deadline = time.monotonic() + grace
    while True:
        try:
            duckdb.connect(db).close()
            return
        except Exception as exc:  # noqa: BLE001 - only DuckDB's cross-process file lock is waited for
            if "Conflicting lock" not in str(exc):
                return
            if time.monotonic() >= deadline:
                raise WarehouseBusy(f"the warehouse {db} is still open in another process: {exc}") from None
            time.sleep(0.2)


@contextmanager
def writer_lock(engine: Engine, *, wait_seconds: float = 0.0, holder: str = "") -> Iterator[None]:
    """Hold the warehouse's writer lock for the duration of a run.

    DuckDB: an exclusive ``flock`` on ``<database>.lock`` beside the file. PostgreSQL: a session
    advisory lock held on a dedicated connection. Works across processes and machines sharing the
    warehouse (PostgreSQL), inside or outside Prefect. Raises :class:`WarehouseBusy` with a clear
    message when the lock is still taken after ``wait_seconds``.
    """
    import time

    deadline = time.monotonic() + wait_seconds
    if dialect_name(engine) == "duckdb":
        import fcntl

        db = engine.url.database or ":memory:"
        if db == ":memory:":
            yield
            return
        lock_path = Path(db).with_suffix(Path(db).suffix + ".lock")
        fh = lock_path.open("a+")
        try:
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        fh.seek(0)
                        other = fh.read().strip() or "another dvc-etl process"
                        raise WarehouseBusy(
                            f"the warehouse {db} is being written by {other}; wait for it to finish"
                        ) from None
                    time.sleep(0.5)
            fh.seek(0)
            fh.truncate()
            fh.write(holder or f"pid {__import__('os').getpid()}")
            fh.flush()
            _await_duckdb_file(db, grace=max(30.0, deadline - time.monotonic()))
            yield
        finally:
            fh.close()  # closing releases the flock
        return
    conn = engine.connect()
    try:
        while True:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_WRITER}).scalar_one()
            conn.commit()
            if got:
                break
            if time.monotonic() >= deadline:
                raise WarehouseBusy(
                    "the PostgreSQL warehouse is being written by another dvc-etl run "
                    "(advisory lock held); wait for it to finish"
                )
            time.sleep(0.5)
        yield
    finally:
        try:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_WRITER})
            conn.commit()
        finally:
            conn.close()


# ----------------------------------------------------------------------------------------------
# Fingerprint: proves two loads gave the same warehouse
# ----------------------------------------------------------------------------------------------
#: Run metadata that legitimately differs between two loads of the same data.
VOLATILE_COLUMNS = {
    "_run_id", "_loaded_at", "run_id", "resolved_run_id", "first_seen_at", "last_seen_at", "resolved_at",
    "recorded_at", "updated_at", "published_at", "publication_id", "workbook_path", "_source",
}
FINGERPRINT_TABLES = [
    "raw.dossiers", "raw.payments", "raw.procedures", "raw.units",
    "core.dossiers", "core.payments", "core.procedures", "core.units", "core.dossier_versions",
    "core.dossier_supplements",
    "dq.quarantine", "dq.watermarks",
]


def table_fingerprint(conn: Connection, table: str) -> str:
    """sha256 of a table's rows (volatile run-metadata columns left out), independent of row order."""
    import hashlib

    import pandas as pd

    frame = pd.read_sql(sa.text(f"SELECT * FROM {table}"), conn)  # noqa: S608 - table from a fixed list
    frame = frame[[c for c in frame.columns if c not in VOLATILE_COLUMNS]]
    lines = ["\x1f".join("" if pd.isna(v) else str(v) for v in row) for row in frame.itertuples(index=False)]
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return f"{len(frame)}:{digest.hexdigest()[:16]}"


def fingerprint(engine: Engine, tables: list[str] | None = None) -> dict[str, str]:
    with engine.connect() as conn:
        return {t: table_fingerprint(conn, t) for t in tables or FINGERPRINT_TABLES}


# ----------------------------------------------------------------------------------------------
# Analysts' access (PostgreSQL)
# ----------------------------------------------------------------------------------------------
#: Columns of core tables an analyst must not read (pseudonymous applicant key).
CORE_RESTRICTED = {"core.dossiers": {"applicant_key"}}


def grant_analyst(engine: Engine, role: str, *, password: str | None = None) -> None:
    """Read access to ``mart`` (all tables, present and future) and to ``core`` without the
    restricted columns; ``raw`` and ``dq`` stay closed. Creates ``role`` (LOGIN) if missing."""
    if dialect_name(engine) != "postgresql":
        raise WarehouseError("grant-analyst needs a PostgreSQL warehouse (DuckDB files have no roles)")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", role):
        raise WarehouseError(f"invalid role name {role!r}")
    with engine.begin() as conn:
        q = conn.dialect.identifier_preparer.quote
        r = q(role)
        exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        if not exists:
            conn.execute(sa.text(f"CREATE ROLE {r} LOGIN"))
        if password is not None:
            from psycopg import sql as pgsql

            literal = pgsql.Literal(password).as_string(raw_driver_connection(conn))
            conn.execute(sa.text(f"ALTER ROLE {r} PASSWORD {literal}"))
        db = q(conn.execute(sa.text("SELECT current_database()")).scalar_one())
        conn.execute(sa.text(f"GRANT CONNECT ON DATABASE {db} TO {r}"))
        for schema in ("raw", "dq"):
            conn.execute(sa.text(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {r}"))
            conn.execute(sa.text(f"REVOKE ALL ON SCHEMA {schema} FROM {r}"))
        conn.execute(sa.text(f"GRANT USAGE ON SCHEMA mart TO {r}"))
        conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA mart TO {r}"))
        conn.execute(sa.text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA mart GRANT SELECT ON TABLES TO {r}"))
        conn.execute(sa.text(f"GRANT USAGE ON SCHEMA core TO {r}"))
        rows = conn.execute(
            sa.text(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'core' "
                "ORDER BY table_name, ordinal_position"
            )
        ).fetchall()
        tables: dict[str, list[str]] = {}
        for t, c in rows:
            tables.setdefault(f"core.{t}", []).append(c)
        for table, cols in tables.items():
            conn.execute(sa.text(f"REVOKE ALL ON {table} FROM {r}"))
            allowed = [c for c in cols if c not in CORE_RESTRICTED.get(table, set())]
            conn.execute(sa.text(f"GRANT SELECT ({', '.join(q(c) for c in allowed)}) ON {table} TO {r}"))
