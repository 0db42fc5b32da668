"""The analyst role reads mart and the non-personal columns of core, nothing else (PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tasks.warehouse import connect, grant_analyst, upgrade

pytestmark = pytest.mark.postgres


def test_analyst_reads_mart_not_raw_or_personal_columns(pg_url):
    engine = connect(pg_url)
    upgrade(engine)
    role = f"analyst_{uuid.uuid4().hex[:8]}"
    grant_analyst(engine, role, password="analyst-pw")
    analyst = connect(str(sa.engine.make_url(pg_url).set(username=role, password="analyst-pw")))
    try:
        with analyst.connect() as c:
            c.execute(sa.text("SELECT count(*) FROM mart.publications")).scalar_one()
            c.execute(sa.text("SELECT ma_ho_so, trang_thai, ngay_tiep_nhan FROM core.dossiers")).fetchall()
            c.execute(sa.text("SELECT * FROM core.payments")).fetchall()
        for forbidden in ("SELECT * FROM raw.dossiers", "SELECT record FROM raw.payments",
                          "SELECT applicant_key FROM core.dossiers", "SELECT * FROM core.dossiers",
                          "SELECT * FROM dq.quarantine", "CREATE TABLE mart.x (a int)",
                          "DELETE FROM mart.publications"):
            with analyst.connect() as c, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                c.execute(sa.text(forbidden))
    finally:
        analyst.dispose()
        with engine.begin() as c:
            c.execute(sa.text(f'DROP OWNED BY "{role}"'))
            c.execute(sa.text(f'DROP ROLE "{role}"'))
        engine.dispose()
