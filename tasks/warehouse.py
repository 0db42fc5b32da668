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

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tasks.settings import SQL_DIR

log = logging.getLogger(__name__)

MIGRATIONS_DIR = SQL_DIR / "migrations"


class WarehouseError(RuntimeError):
    """A warehouse problem the operator must fix (bad URL, unreachable server, failed migration)."""


def dialect_name(engine_or_conn: Engine | Connection) -> str:
    """'duckdb' or 'postgresql'."""
    return engine_or_conn.dialect.name


def connect(url: str) -> Engine:
    """Engine for a warehouse URL. ``duckdb:///path`` (relative to the working directory) or
    ``postgresql+psycopg://...``."""
    try:
        u = sa.engine.make_url(url)
    except Exception as exc:  # noqa: BLE001 - turned into a clear message
        raise WarehouseError(f"DVC_WAREHOUSE_URL is not a valid SQLAlchemy URL: {exc}") from None
    if u.get_backend_name() == "duckdb":
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(u, poolclass=sa.pool.QueuePool, pool_size=1, max_overflow=0)
    if u.get_backend_name() == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        return sa.create_engine(u, pool_pre_ping=True)
    raise WarehouseError(
        f"unsupported warehouse {u.get_backend_name()!r}: DVC_WAREHOUSE_URL must be duckdb:/// or postgresql://"
    )


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
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242001)"))
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
