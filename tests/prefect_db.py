"""An empty Prefect server database, migrated once per test session and copied for every Prefect
server the tests start (the session's test harness in each xdist worker, the real ``prefect server
start`` of tests/test_prefect_server.py and tests/test_prefect_auth.py).

A server started on an empty SQLite file runs Prefect's ~200 migrations and registers its block
types first: some 10 s of CPU per server, every time. The copy is what that first start leaves
(the schema at Prefect's head revision and the block types), built by Prefect's own
``create_db`` and block registration, so the server starts as on a database it created itself.
Built under a lock in a folder every xdist worker of the session shares (pytest's base temp
folder, cleaned up by pytest), never kept from one test session to the next.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.session_files import built_once

#: What a starting server does to an empty database: migrate, then register the block types.
_BUILD = """
import asyncio

from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration


async def main():
    db = provide_database_interface()
    await db.create_db()
    session = await db.session()
    async with session:
        await run_block_auto_registration(session=session)
        await session.commit()
    await (await db.engine()).dispose()


asyncio.run(main())
"""


def _build(work: Path) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(work), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{work / 'prefect.db'}")
    out = subprocess.run([sys.executable, "-c", _BUILD], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"building the Prefect database failed:\n{out.stderr[-3000:]}"
    con = sqlite3.connect(work / "prefect.db")
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file
    finally:
        con.close()
    return work / "prefect.db"


def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's migrated empty database file (built by the first caller, others wait)."""
    return built_once(tmp_path_factory, "prefect-template.db", _build)


def seed(tmp_path_factory: pytest.TempPathFactory, dest: Path) -> Path:
    """Copy the session's migrated empty database to ``dest`` (a server's database file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template(tmp_path_factory), dest)
    return dest
