"""Least privilege: the pipeline's own PostgreSQL user is no superuser.

A role with only the grants of docs/security.md (LOGIN; CONNECT, CREATE and TEMPORARY on its
database; nothing else) runs ``dvc-etl db upgrade``, a nightly ``dvc-etl run`` and a
``dvc-etl report``, all real subprocesses against the simulator.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.conftest import PG_ADMIN_URL, create_pg_database, drop_pg_database
from tests.reliability_support import mart_problems, run_cli, sim_env

pytestmark = pytest.mark.postgres

#: The grants docs/security.md documents, applied by a database administrator.
GRANTS = [
    'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
    'REVOKE ALL ON DATABASE "{db}" FROM PUBLIC',
    'GRANT CONNECT, CREATE, TEMPORARY ON DATABASE "{db}" TO "{role}"',
]


def test_pipeline_runs_as_a_non_superuser(prefect_harness, tmp_path):
    admin_db = create_pg_database("dvc_priv")
    db = sa.engine.make_url(admin_db).database
    role = f"dvc_etl_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            for g in GRANTS:
                c.execute(sa.text(g.format(role=role, db=db)))
        url = sa.engine.make_url(admin_db).set(username=role, password=None).render_as_string(hide_password=False)
        env = sim_env(tmp_path, url)
        for args in (["db", "upgrade"], ["run", "-q"], ["report", "--from", "2024-01-01", "--to", "2024-03-31", "-q"]):
            p = run_cli(args, env, tmp_path)
            assert p.returncode == 0, f"dvc-etl {' '.join(args)} as {role}: {p.stderr[-3000:]}"
        engine = sa.create_engine(url)
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles "
                                     "WHERE rolname = current_user")).scalar_one() is False
            assert c.execute(sa.text("SELECT count(*) FROM mart.publications WHERE is_current")).scalar_one() >= 3
            assert c.execute(sa.text("SELECT count(*) FROM core.dossiers")).scalar_one() > 0
            assert mart_problems(c) == []
            owners = {r[0] for r in c.execute(sa.text(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('raw', 'core', 'mart', 'dq')"))}
            assert owners == {role}
            for forbidden in ("ALTER SYSTEM SET work_mem = '1GB'", "CREATE ROLE intruder", "CREATE DATABASE x"):
                with pytest.raises(sa.exc.DBAPIError):
                    c.execute(sa.text(forbidden))
                c.rollback()
        engine.dispose()
    finally:
        drop_pg_database(admin_db)
        with admin.connect() as c:
            c.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()
