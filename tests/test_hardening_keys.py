"""Issue 14, the applicant-ID hash key: the commands and flows that write applicants' data refuse
a development, empty or short DVC_HASH_KEY (exit 2, one line naming it; flows raise before they
touch the warehouse); ``dvc-etl demo`` keeps working with its own key; every applicant key is
stored with the id of its key (``core.dossiers.applicant_key_id``), so a rotation shows."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tasks.cli import EXIT_USAGE, app
from tasks.load import load_batch
from tasks.normalize import applicant_key, normalize
from tasks.settings import (
    DEMO_HASH_KEY,
    DEV_HASH_KEY,
    HashKeyError,
    Settings,
    demo_hash_key_allowed,
    get_settings,
    hash_key_id,
    hash_key_problem,
)
from tasks.warehouse import connect, upgrade
from tests.reliability_support import cli_env, run_cli

KEY_A = "key-A-0123456789abcdef0123456789abcdef"
KEY_B = "key-B-0123456789abcdef0123456789abcdef"
WEAK = {"the development default": DEV_HASH_KEY, "empty": "", "31 bytes": "x" * 31,
        "the demo key outside the demo": DEMO_HASH_KEY}


def _dossier(i: int, id_number: str | None = "079123456789") -> dict:
    return {"MaHoSo": f"H-{i:04d}", "MaTTHC": "1.001653.000.00.00.H08", "MaDonVi": "000.00.15.H08",
            "TrangThaiHoSo": 10, "NgayTiepNhan": "20240102080000", "NgayHenTra": "20240108170000",
            "NgayCapNhat": "20240105100000", "KenhThucHien": 2, "SoGiayToChuHoSo": id_number}


def test_two_keys_give_two_ids_and_the_id_reveals_nothing():
    a, b = hash_key_id(KEY_A), hash_key_id(KEY_B)
    assert re.fullmatch(r"[0-9a-f]{8}", a) and re.fullmatch(r"[0-9a-f]{8}", b)
    assert a != b
    assert a == hash_key_id(KEY_A.encode()) == hash_key_id(KEY_A)  # stable, str or bytes
    assert a not in applicant_key("079123456789", KEY_A.encode())  # not a prefix of any hash


def test_each_applicant_key_is_stored_with_its_key_id(warehouse_url):
    engine = connect(warehouse_url)
    upgrade(engine)
    try:
        n = normalize("dossiers", [_dossier(1), _dossier(2, id_number=None)], hash_key=KEY_A.encode())
        load_batch(engine, n, n.issues, source="src", run_id="r1")
        with engine.connect() as c:
            rows = dict(c.execute(sa.text("SELECT ma_ho_so, applicant_key_id FROM core.dossiers")).fetchall())
        assert rows == {"H-0001": hash_key_id(KEY_A), "H-0002": None}  # no ID number: no hash, no key id
        # the key rotated: the same version read again is hashed with the new key, and it shows
        n = normalize("dossiers", [_dossier(1)], hash_key=KEY_B.encode())
        load_batch(engine, n, n.issues, source="src", run_id="r2")
        with engine.connect() as c:
            key, kid = c.execute(sa.text(
                "SELECT applicant_key, applicant_key_id FROM core.dossiers WHERE ma_ho_so = 'H-0001'")).one()
        assert (key, kid) == (applicant_key("079123456789", KEY_B.encode()), hash_key_id(KEY_B))
    finally:
        engine.dispose()


@pytest.mark.parametrize("key", WEAK.values(), ids=WEAK.keys())
def test_hash_key_problem_names_the_setting_never_the_value(key):
    problem = hash_key_problem(Settings(_env_file=None, hash_key=key))
    assert problem and "DVC_HASH_KEY" in problem
    assert not key or key not in problem
    assert hash_key_problem(Settings(_env_file=None, hash_key=KEY_A)) is None


def test_the_demo_key_is_accepted_only_inside_the_demo():
    settings = Settings(_env_file=None, hash_key=DEMO_HASH_KEY)
    assert hash_key_problem(settings)
    with demo_hash_key_allowed():
        assert hash_key_problem(settings) is None
    assert hash_key_problem(settings)


@pytest.mark.parametrize("key", [DEV_HASH_KEY, "", "short-key"], ids=["dev", "empty", "short"])
@pytest.mark.parametrize("command", ["run", "backfill", "ingest-files", "report"])
def test_each_cli_command_refuses_a_weak_key_with_exit_2_and_one_line(command, key, dvc_env, tmp_path):
    wh = tmp_path / "wh.duckdb"
    dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{wh}", DVC_SOURCE_URL="http://127.0.0.1:9", DVC_HASH_KEY=key)
    export = tmp_path / "export.csv"
    export.write_text("MaHoSo\nH-1\n", encoding="utf-8")
    args = {"run": ["run"], "backfill": ["backfill", "--from", "2024-01-01", "--to", "2024-01-31"],
            "ingest-files": ["ingest-files", str(export)],
            "report": ["report", "--period", "2024-06"]}[command]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == EXIT_USAGE, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DVC_HASH_KEY" in lines[0], lines
    assert "Traceback" not in res.output
    assert not wh.exists()  # refused before touching the warehouse


def test_the_dev_key_unset_in_the_environment_is_refused(dvc_env, monkeypatch, tmp_path):
    """No DVC_HASH_KEY at all: the shipped default, refused."""
    dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{tmp_path / 'wh.duckdb'}", DVC_SOURCE_URL="http://127.0.0.1:9")
    monkeypatch.delenv("DVC_HASH_KEY")
    get_settings.cache_clear()
    res = CliRunner().invoke(app, ["run"])
    assert res.exit_code == EXIT_USAGE and "DVC_HASH_KEY" in res.stderr and "development" in res.stderr


@pytest.mark.parametrize("flow_name", ["nightly", "report", "backfill", "inbox"])
def test_the_flows_refuse_a_weak_key_before_touching_anything(flow_name, prefect_harness, dvc_env, tmp_path):
    from datetime import date

    from flows.nightly import nightly, report
    from flows.ops import backfill, inbox

    wh = tmp_path / "wh.duckdb"
    dvc_env(DVC_WAREHOUSE_URL=f"duckdb:///{wh}", DVC_SOURCE_URL="http://127.0.0.1:9", DVC_HASH_KEY=DEV_HASH_KEY)
    call = {"nightly": lambda: nightly(), "report": lambda: report(date(2024, 6, 1), date(2024, 6, 30)),
            "backfill": lambda: backfill(date(2024, 1, 1), date(2024, 1, 31)), "inbox": lambda: inbox()}[flow_name]
    with pytest.raises(HashKeyError, match="DVC_HASH_KEY"):
        call()
    assert not wh.exists()


def test_demo_still_works_with_its_own_key(prefect_harness, tmp_path):
    """`dvc-etl demo` with no DVC_HASH_KEY configured (the development default) runs, and hashes
    with the demo's own key, whose id is stored."""
    env = cli_env(tmp_path, "duckdb:///unused.duckdb", "http://127.0.0.1:9", "unused")
    for name in ("DVC_HASH_KEY", "DVC_SOURCE_URL", "DVC_SOURCE_TOKEN", "DVC_WAREHOUSE_URL"):
        env.pop(name, None)
    url = f"duckdb:///{tmp_path / 'demo.duckdb'}"
    p = run_cli(["demo", "--dossiers", "300", "-q", "--warehouse-url", url, "--reports-dir",
                 str(tmp_path / "demo-reports")], env, tmp_path / "work", timeout=500)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            ids = dict(c.execute(sa.text("SELECT applicant_key_id, count(*) FROM core.dossiers "
                                         "WHERE applicant_key IS NOT NULL GROUP BY 1")).fetchall())
    finally:
        engine.dispose()
    assert set(ids) == {hash_key_id(DEMO_HASH_KEY)}, ids
    assert os.environ.get("DVC_HASH_KEY") != DEMO_HASH_KEY  # the demo set it in its own process only
    assert Path(tmp_path / "demo-reports").exists()
