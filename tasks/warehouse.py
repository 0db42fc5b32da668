"""The warehouse: one SQLAlchemy engine over embedded DuckDB (default) or PostgreSQL.

Plain functions, no Prefect: the flows call them, the tests call them directly.

- :func:`connect` builds the engine from a URL (creates the DuckDB file's folder, owner-only).
- :func:`private_umask` / :func:`make_private`: personal data at rest is readable by the owner only
  (0600 files, 0700 folders): the warehouse file, its WAL, spill folder and lock, its landing
  folder of raw files (:mod:`tasks.landing`), ``reports/``.
- :func:`upgrade` applies the versioned migrations of ``sql/migrations`` (never drops data).
- :func:`sql_file` / :func:`run_sql_file` read the SQL kept in ``sql/``.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tasks import landing
from tasks.clock import now_local
from tasks.resources import PRIVATE_UMASK, private_umask  # noqa: F401 - part of this module's interface
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

def make_private(path: Path | str, *, recursive: bool = False) -> None:
    """chmod an existing file to 0600 or folder to 0700 (with ``recursive``, everything under it).
    Files created before the umask was set, by an older version, or by another tool are
    tightened; a path that is missing or that another user owns is left alone."""
    path = Path(path)
    try:
        st = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return
    mode = stat.S_IMODE(st.st_mode)
    try:
        if mode & 0o077:  # group and others lose every bit; the owner's stay (0644 -> 0600, 0755 -> 0700)
            path.chmod(mode & 0o700)
        if recursive and stat.S_ISDIR(st.st_mode):
            for child in path.iterdir():
                make_private(child, recursive=True)
    except OSError as exc:  # a read-only mount, a file gone meanwhile: never fatal
        log.warning("could not restrict the permissions of %s: %s", path, exc)


def private_dir(path: Path | str) -> Path:
    """Create a folder (and missing parents) owner-only, or tighten it if it exists; returns it."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for p in missing:  # the folders created here; parents that existed are the operator's choice
        make_private(p)
    make_private(path)
    return path


def duckdb_files(database: str | Path) -> list[Path]:
    """The files of a DuckDB warehouse: the database, its WAL, spill folder and writer lock."""
    db = Path(database).expanduser()
    return [db, *(db.with_name(db.name + suffix) for suffix in (".wal", ".tmp", ".lock"))]


def connect(url: str, *, duckdb_memory_limit: str | None = None, landing_dir: str | Path | None = None) -> Engine:
    """Engine for a warehouse URL. ``duckdb:///path`` (relative to the working directory) or
    ``postgresql+psycopg://...``. ``duckdb_memory_limit`` caps DuckDB's buffer pool (bigger work
    spills to disk); None or empty keeps DuckDB's default (80 % of RAM). ``landing_dir``: the
    DuckDB warehouse's landing folder of raw files (``DVC_LANDING_DIR``; None or empty: beside
    the file, :mod:`tasks.landing`)."""
    try:
        u = sa.engine.make_url(url)
    except Exception as exc:  # noqa: BLE001 - turned into a clear message
        raise WarehouseError(f"DVC_WAREHOUSE_URL is not a valid SQLAlchemy URL: {exc}") from None
    if u.get_backend_name() == "duckdb":
        on_file = bool(u.database) and u.database != ":memory:"
        if on_file:
            db = Path(u.database).expanduser()
            if not db.parent.exists():
                private_dir(db.parent)  # data/: created owner-only
            for f in duckdb_files(db):  # personal data at rest: 0600, spill folder 0700
                make_private(f, recursive=True)
        # two connections to a file (they share one database in the process): a chunk loads on one
        # while the next chunk's checks read on the other (tasks.resources.ChunkLoader); an
        # in-memory database is one connection's own, so it keeps one
        engine = sa.create_engine(u, poolclass=sa.pool.QueuePool, pool_size=2 if on_file else 1, max_overflow=0)
        landing.configure(engine, landing_dir)
        if on_file:
            make_private(landing.landing_dir(engine))  # its raw files are made 0600 when landed
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
    """Engine for the configured warehouse (``DVC_WAREHOUSE_URL``, ``DVC_DUCKDB_MEMORY_LIMIT``).
    The pipeline starts here: the process umask becomes :data:`PRIVATE_UMASK` first, so the
    warehouse's files and the reports written afterwards are readable by the owner only."""
    private_umask()
    return connect(settings.warehouse_url, duckdb_memory_limit=settings.duckdb_memory_limit,
                   landing_dir=settings.landing_dir)


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


#: PostgreSQL SQLSTATEs after which a migration transaction is simply tried again: a deadlock
#: with a reader (an analyst reading ``mart`` while a migration alters two of its tables) or a
#: serialisation failure. PostgreSQL rolled the migration back; nothing was half-applied.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})
MIGRATION_ATTEMPTS = 5


def upgrade(engine: Engine) -> list[str]:
    """Apply pending migrations, each in its own transaction. Returns the versions applied.

    On DuckDB, then: the raw tables of an older warehouse become landed files and views
    (:func:`tasks.landing.convert_raw_tables`, once) and the raw views are rebuilt over this
    engine's landing folder (:func:`tasks.landing.refresh_views`).
    On PostgreSQL a migration that loses a deadlock against a reader is retried (with a short
    back-off, :data:`MIGRATION_ATTEMPTS` times in all) instead of failing the run."""
    dialect = dialect_name(engine)
    done: list[str] = []
    try:
        with engine.connect() as conn:
            already = applied_versions(conn)
            conn.rollback()
        for version, path in migrations(dialect):
            if version in already:
                continue
            for attempt in range(1, MIGRATION_ATTEMPTS + 1):
                try:
                    applied = _apply_migration(engine, dialect, version, path)
                    break
                except sa.exc.OperationalError as exc:
                    if getattr(exc.orig, "sqlstate", None) not in _RETRY_SQLSTATES or attempt == MIGRATION_ATTEMPTS:
                        raise
                    log.warning("migration %s lost a lock conflict (%s); trying again (%d/%d)",
                                path.name, str(exc.orig).splitlines()[0], attempt + 1, MIGRATION_ATTEMPTS)
                    time.sleep(0.2 * 2 ** (attempt - 1))
            if applied:
                log.info("applied migration %s", path.name)
                done.append(version)
        if dialect == "duckdb":
            landing.convert_raw_tables(engine, landed_at=now_local())
            landing.refresh_views(engine)
    except sa.exc.OperationalError as exc:
        raise WarehouseError(f"cannot reach the warehouse ({engine.url.render_as_string()}): {exc.orig}") from None
    return done


def _apply_migration(engine: Engine, dialect: str, version: str, path: Path) -> bool:
    """One migration in one transaction; False if another process applied it meanwhile."""
    with engine.begin() as conn:
        if dialect == "postgresql":
            # one migrator at a time across processes
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_MIGRATE})
            if version in applied_versions(conn):
                return False
        for stmt in split_statements(path.read_text(encoding="utf-8")):
            conn.execute(sa.text(stmt))
        conn.execute(
            sa.text("INSERT INTO dq.schema_migrations (version, applied_at) VALUES (:v, :t)"),
            {"v": version, "t": now_local()},
        )
    return True


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
