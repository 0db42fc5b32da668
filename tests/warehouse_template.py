"""Migrated empty warehouses for the tests, built once and copied for every test that asks.

A fresh warehouse runs every migration of ``sql/migrations`` (~400 statements, most of them
comments on the analysts' columns): about 0.5 s on an idle machine, a second under the suite's
load, and the suite made some hundred of them. The warehouse fixtures of ``tests/conftest.py``
now start from a copy of a warehouse that :func:`tasks.warehouse.upgrade` migrated once:

- DuckDB: a file migrated once per test session (``tests/session_files.py``), copied per test;
- PostgreSQL: a template database ``dvc_tmpl_<hash of the migrations and tasks/warehouse.py>`` on the test server, built
  once (under an advisory lock) and kept from one session to the next while the migrations stay
  the same; each test's database is ``CREATE DATABASE ... TEMPLATE`` of it (~0.15 s). A template
  of other migrations is dropped when the new one is built. Nothing ever connects to the
  template after it is built, as ``CREATE DATABASE ... TEMPLATE`` requires.

The copy is what ``upgrade`` leaves on an empty warehouse (the code under test still calls
``upgrade``, which finds nothing to apply). A test about migrating an empty or older warehouse
asks for an empty one with ``@pytest.mark.empty_warehouse``.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.session_files import built_once

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "sql" / "migrations"
_PG_LOCK = 0x64766374  # "dvct": one builder of the template at a time, across workers and sessions


@functools.cache
def migrations_hash() -> str:
    """What a migrated empty warehouse follows from: the migrations and the code that applies them."""
    h = hashlib.sha256()
    for path in [*sorted(MIGRATIONS.glob("*.sql")), ROOT / "tasks" / "warehouse.py"]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _build_duckdb(work: Path) -> Path:
    from tasks.warehouse import connect, upgrade

    engine = connect(f"duckdb:///{work / 'wh.duckdb'}")
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("CHECKPOINT")  # everything in the one file
    finally:
        engine.dispose()
    return work / "wh.duckdb"


def duckdb_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's migrated empty DuckDB file (built by the first caller, others wait)."""
    return built_once(tmp_path_factory, f"warehouse-template-{migrations_hash()}.duckdb", _build_duckdb)


def duckdb_copy(tmp_path_factory: pytest.TempPathFactory, dest: Path) -> str:
    """A migrated empty DuckDB warehouse at ``dest``; returns its URL."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(duckdb_template(tmp_path_factory), dest)
    return f"duckdb:///{dest}"


@functools.cache
def pg_template(admin_url: str) -> str:
    """The name of the migrated empty template database on the test server (built if missing;
    looked up once per process)."""
    from tasks.warehouse import connect, upgrade

    name = f"dvc_tmpl_{migrations_hash()}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK})
            try:
                names = set(c.execute(sa.text(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'dvc\\_tmpl\\_%'")).scalars())
                if name not in names:
                    for stale in names:  # other migrations' templates, and a build that died
                        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)'))
                    build = f"{name}_build"
                    c.execute(sa.text(f'CREATE DATABASE "{build}"'))
                    engine = connect(sa.engine.make_url(admin_url).set(database=build)
                                     .render_as_string(hide_password=False))
                    try:
                        upgrade(engine)
                    finally:
                        engine.dispose()
                    c.execute(sa.text(f'ALTER DATABASE "{build}" RENAME TO "{name}"'))
            finally:
                c.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK})
    finally:
        admin.dispose()
    return name
