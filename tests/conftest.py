"""Shared fixtures.

Warehouses are real: an embedded DuckDB file in a temp folder, and a fresh PostgreSQL database
created on the machine's server (127.0.0.1:5432, trust auth) for each use and dropped afterwards,
so parallel test runs never see each other's tables. Both start as a copy of a warehouse migrated
once (``tests/warehouse_template.py``), or empty for a test marked ``empty_warehouse``.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

# Prefect and GX settings must be in place before either is imported.
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="dvc-prefect-home-"))
os.environ.setdefault("PREFECT_HOME", str(_PREFECT_HOME))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from tests.warehouse_template import duckdb_copy, pg_template  # noqa: E402

PG_ADMIN_URL = os.environ.get("DVC_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        eng = sa.create_engine(PG_ADMIN_URL)
        with eng.connect() as c:
            c.execute(sa.text("SELECT 1"))
        eng.dispose()
        return True
    except Exception:  # noqa: BLE001
        return False


def create_pg_database(prefix: str = "dvc_t", *, migrated: bool = False) -> str:
    """Create a database on the test server, empty or (``migrated``) a copy of the migrated empty
    warehouse (``tests/warehouse_template.py``); returns its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    template = f' TEMPLATE "{pg_template(PG_ADMIN_URL)}"' if migrated else ""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"{template}'))
    admin.dispose()
    return sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _migrated(request: pytest.FixtureRequest) -> bool:
    """Warehouse fixtures give a migrated empty warehouse (a copy, ``tests/warehouse_template.py``)
    unless the test is marked ``empty_warehouse``."""
    return request.node.get_closest_marker("empty_warehouse") is None


@pytest.fixture
def duckdb_url(request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    if not _migrated(request):
        return f"duckdb:///{tmp_path / 'wh.duckdb'}"
    return duckdb_copy(tmp_path_factory, tmp_path / "wh.duckdb")


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if not _pg_available():
        pytest.fail(
            "PostgreSQL is not reachable on 127.0.0.1:5432; start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
    url = create_pg_database(migrated=_migrated(request))
    try:
        yield url
    finally:
        drop_pg_database(url)


#: The test files that keep one worker busiest (about a minute each on a 2-core machine, measured
#: with ``--durations=0``), heaviest first. They run first: ``make test`` hands whole files to its
#: two workers in collection order (``--dist loadfile --no-loadscope-reorder``), and one of them
#: handed out last (the wheel's, Prefect's server) kept one worker busy for a minute while the other
#: had nothing left to run.
RUN_FIRST = (
    "test_prefect_server.py", "test_reliability_crash.py", "test_inbox.py", "test_faults.py",
    "test_wheel.py", "test_grants.py", "test_api_vs_files.py", "test_gx_deferred.py", "test_prefect_auth.py",
    "test_reliability_concurrency.py",
)


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files of :data:`RUN_FIRST` first (the others in their order), and
    ``@pytest.mark.slow_on_postgres``: the test's PostgreSQL variant runs with ``make test-all``
    only (its DuckDB variant stays in ``make test``; other default tests cover PostgreSQL)."""
    items.sort(key=lambda item: RUN_FIRST.index(item.path.name) if item.path.name in RUN_FIRST else len(RUN_FIRST))
    for item in items:
        callspec = getattr(item, "callspec", None)
        if (item.get_closest_marker("slow_on_postgres") and callspec is not None
                and callspec.params.get("warehouse_url") == "postgresql"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The same test against the embedded DuckDB and the real PostgreSQL."""
    if request.param == "duckdb":
        yield request.getfixturevalue("duckdb_url")
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """One Prefect test server for the whole session: Prefect's ``prefect_test_harness``, its
    SQLite database (in the temporary folder the harness makes) a copy of the session's migrated
    empty database (tests/prefect_db.py) instead of an empty file to migrate (~10 s)."""
    import prefect.testing.utilities as harness

    from tests.prefect_db import seed

    folder = Path(tempfile.mkdtemp(prefix="dvc-prefect-harness-"))
    seed(tmp_path_factory, folder / "prefect-test.db")  # the file name the harness gives its database
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "mkdtemp", lambda: str(folder))
        with harness.prefect_test_harness(server_startup_timeout=180):
            mp.undo()
            yield


@pytest.fixture
def dvc_env(monkeypatch, tmp_path):
    """Point the settings at a test warehouse/folders; returns a function(**DVC_settings)."""
    from tasks.settings import get_settings

    def apply(**values: str) -> None:
        base = {
            "DVC_REPORTS_DIR": str(tmp_path / "reports"),
            "DVC_INBOX_DIR": str(tmp_path / "inbox"),
            "DVC_HASH_KEY": "test-hash-key-of-at-least-32-bytes-0001",  # run/flows refuse < 32 bytes
        }
        base.update(values)
        for k, v in base.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()
