"""The loader on the embedded DuckDB and the real PostgreSQL: idempotent, order-independent,
newer-wins, atomic with the watermark, quarantine resolved by corrections."""

from __future__ import annotations

import random
from datetime import datetime

import pytest
import sqlalchemy as sa

from tasks.load import get_watermark, load_batch
from tasks.normalize import normalize
from tasks.warehouse import WarehouseBusy, connect, upgrade, writer_lock
from tests.warehouse_state import fingerprint

KEY = b"k"


def _dossier(i: int, status: int = 10, upd: str = "20240105100000", **kw) -> dict:
    rec = {"MaHoSo": f"H-{i:04d}", "MaTTHC": "1.001653.000.00.00.H08", "MaDonVi": "000.00.15.H08",
           "TrangThaiHoSo": status, "NgayTiepNhan": "20240102080000", "NgayHenTra": "20240108170000",
           "NgayKetThucXuLy": "20240104100000", "NgayTra": "20240105090000", "NgayCapNhat": upd,
           "KenhThucHien": 2, "SoGiayToChuHoSo": f"0791234{i:05d}", "ChuHoSo": f"Trần Thị {i}"}
    rec.update(kw)
    return rec


def _load(engine, records, run_id="r1", watermark=None):
    n = normalize("dossiers", records, hash_key=KEY)
    return load_batch(engine, n, n.issues, source="src", run_id=run_id, watermark=watermark)


@pytest.fixture
def engine(warehouse_url):
    eng = connect(warehouse_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def test_same_input_twice_and_shuffled_gives_same_fingerprint(engine, warehouse_url, tmp_path):
    recs = [_dossier(i) for i in range(200)] + [_dossier(7, status=4, upd="20240103000000")]
    _load(engine, recs)
    first = fingerprint(engine)
    _load(engine, recs, run_id="r2")
    assert fingerprint(engine) == first
    other = connect(f"duckdb:///{tmp_path / 'other.duckdb'}")
    upgrade(other)
    shuffled = recs[:]
    random.Random(3).shuffle(shuffled)
    _load(other, shuffled[:100], run_id="x1")
    _load(other, shuffled[100:], run_id="x2")
    assert fingerprint(other) == first


def test_older_version_never_overwrites_newer(engine):
    _load(engine, [_dossier(1, status=10, upd="20240110000000")])
    _load(engine, [_dossier(1, status=4, upd="20240103000000")], run_id="r2")
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT trang_thai FROM core.dossiers")).scalar_one() == 10
        hist = c.execute(sa.text("SELECT trang_thai_truoc, trang_thai FROM core.dossier_status_history "
                                 "ORDER BY changed_at")).fetchall()
    assert [tuple(r) for r in hist] == [(None, 4), (4, 10)]


def test_quarantine_then_correction_resolves(engine):
    r = _load(engine, [_dossier(1, NgayTiepNhan="31/02/2024"), _dossier(2)])
    assert (r.rows_read, r.rows_loaded, r.rows_quarantined) == (2, 1, 1)
    with engine.connect() as c:
        q = c.execute(sa.text("SELECT record_key, rule, resolved_at, raw_record FROM dq.quarantine")).fetchall()
    assert len(q) == 1 and q[0].record_key == "H-0001" and q[0].rule == "parse_ngay_tiep_nhan"
    assert q[0].resolved_at is None and "31/02/2024" in q[0].raw_record
    _load(engine, [_dossier(1, upd="20240106000000")], run_id="r2")
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM core.dossiers")).scalar_one() == 2
        row = c.execute(sa.text("SELECT resolved_at, resolved_run_id FROM dq.quarantine")).one()
    assert row.resolved_at is not None and row.resolved_run_id == "r2"


def test_failed_transaction_moves_neither_rows_nor_watermark(engine):
    wm = datetime(2024, 1, 5, 10)
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            n = normalize("dossiers", [_dossier(1)], hash_key=KEY)
            load_batch(conn, n, n.issues, source="src", run_id="r1", watermark=wm)
            raise RuntimeError("crash after the load, before commit")
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM core.dossiers")).scalar_one() == 0
        assert c.execute(sa.text("SELECT count(*) FROM raw.dossiers")).scalar_one() == 0
    assert get_watermark(engine, "src", "dossiers") is None
    _load(engine, [_dossier(1)], watermark=wm)
    assert get_watermark(engine, "src", "dossiers") == wm
    _load(engine, [_dossier(2)], watermark=datetime(2023, 1, 1), run_id="r2")
    assert get_watermark(engine, "src", "dossiers") == wm  # never backwards


def test_run_summary_reconciles(engine):
    _load(engine, [_dossier(1), _dossier(1, upd="20240101000000"), _dossier(2, TrangThaiHoSo="x")])
    with engine.connect() as c:
        s = c.execute(sa.text("SELECT * FROM dq.run_summary")).one()
    assert (s.rows_received, s.rows_duplicate, s.rows_read, s.rows_loaded, s.rows_quarantined) == (3, 1, 2, 1, 1)
    assert s.reconciled


def test_writer_lock_excludes_a_second_writer(engine):
    with writer_lock(engine, holder="first"):
        with pytest.raises(WarehouseBusy, match="being written"):
            with writer_lock(engine, wait_seconds=0.2):
                pass
    with writer_lock(engine):  # released
        pass


def test_a_run_left_running_by_a_dead_process_is_closed_as_crashed(engine):
    from tasks.runs import finish_run, start_run

    start_run(engine, "killed-run", "nightly", "src")  # the process dies: no finish_run
    start_run(engine, "next-run", "nightly", "src")
    finish_run(engine, "next-run", "success", True)
    with engine.connect() as c:
        rows = dict(c.execute(sa.text("SELECT run_id, status FROM dq.runs")).fetchall())
        msg = c.execute(sa.text("SELECT message FROM dq.runs WHERE run_id = 'killed-run'")).scalar_one()
    assert rows == {"killed-run": "crashed", "next-run": "success"}
    assert "next-run" in msg


def test_raw_keeps_each_version_once_and_counts_only_the_new_ones(engine):
    first = _load(engine, [_dossier(i) for i in range(3)])
    assert first.raw_new == 3
    again = [_dossier(i) for i in range(3)] + [_dossier(1, status=4, upd="20240107000000"), _dossier(9)]
    second = _load(engine, again, run_id="r2")  # two versions new to raw, three read again
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT record_key, ngay_cap_nhat FROM raw.dossiers ORDER BY 1, 2")).fetchall()
    assert [tuple(r) for r in rows] == [("H-0000", "20240105100000"), ("H-0001", "20240105100000"),
                                        ("H-0001", "20240107000000"), ("H-0002", "20240105100000"),
                                        ("H-0009", "20240105100000")]
    if engine.dialect.name == "postgresql":  # DuckDB counts the rows of its landed file (tasks/load.py)
        assert second.raw_new == 2
    assert _load(engine, again, run_id="r3").raw_new == (0 if engine.dialect.name == "postgresql" else 5)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM raw.dossiers")).scalar_one() == 5


def test_a_load_out_of_duckdb_memory_says_which_setting_and_loads_nothing(tmp_path):
    """DuckDB's memory limit too small for a chunk's load: the error names DVC_DUCKDB_MEMORY_LIMIT,
    the limit and the table's size (not DuckDB's own error, nor the aborted transaction's that
    hid it), nothing of the chunk is loaded, and the same chunk loads once the limit is raised."""
    from tasks.load import WarehouseOutOfMemory

    engine = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    upgrade(engine)
    records = [_dossier(i) for i in range(20_000)]
    with engine.begin() as c:
        c.exec_driver_sql("SET memory_limit = '3MB'")
    with pytest.raises(WarehouseOutOfMemory, match=r"DVC_DUCKDB_MEMORY_LIMIT.*core\.dossiers holds 0 rows"):
        _load(engine, records)
    with engine.begin() as c:
        c.exec_driver_sql("SET memory_limit = '1GB'")
        assert c.execute(sa.text("SELECT count(*) FROM core.dossiers")).scalar() == 0
    assert _load(engine, records).rows_loaded == 20_000
    engine.dispose()


#: Each core table the loader writes, with its key: PostgreSQL's primary key; DuckDB's tables have
#: none (migration 0009), the loader keeps the key unique.
CORE_KEYS = {"dossiers": "source, ma_ho_so", "payments": "source, ma", "procedures": "source, ma_tthc",
             "units": "source, ma_don_vi, hieu_luc_tu", "dossier_versions": "source, ma_ho_so, ngay_cap_nhat",
             "dossier_supplements": "source, ma_ho_so, ngay_cap_nhat, lan"}


def _entity_load(engine, entity, records, run_id, origin="api"):
    n = normalize(entity, records, hash_key=KEY)
    return load_batch(engine, n, n.issues, source="src", run_id=run_id, origin=origin)


def test_overlapping_repeated_and_late_loads_keep_each_key_once(engine):
    """Batches that overlap, repeat, come late (older versions after newer ones) and come again
    from a clerk's file leave one row per key in every core table, on both warehouses."""
    def rounds(n: int) -> list[dict]:
        return [{"NgayBoSung": f"2024010{3 + j}080000", "NgayTiepNhanBoSung": None} for j in range(n)]

    first = [_dossier(i, DanhSachHoSoBoSung=rounds(i % 3)) for i in range(60)]
    newer = [_dossier(i, status=4, upd="20240106100000", DanhSachHoSoBoSung=rounds((i + 1) % 3))
             for i in range(30, 90)]
    pays = [{"Ma": f"P{i}", "MaHoSo": f"H-{i:04d}", "TrangThai": "Chờ thanh toán", "NgayCapNhat": "20240105100000"}
            for i in range(50)]
    paid = [dict(p, Ma=f"P{i}", TrangThai="Đã thanh toán", NgayCapNhat="20240106100000")
            for i, p in enumerate(pays * 2) if 25 <= i < 75]
    procs = [{"MaTTHC": f"1.00{i}", "TenTTHC": f"Thủ tục {i}"} for i in range(5)]
    units = [{"MaDonVi": "U1", "HieuLucTu": "20200101"}, {"MaDonVi": "U1", "HieuLucTu": "20250701"}]
    loads = [("dossiers", first, "api"), ("dossiers", newer, "api"), ("dossiers", first, "api"),
             ("dossiers", newer[::-1], "api"), ("dossiers", first[:40], "file:a.xlsx"),
             ("dossiers", newer, "file:b.csv"), ("payments", pays, "api"), ("payments", paid, "api"),
             ("payments", pays, "file:c.xlsx"), ("payments", paid, "api"), ("procedures", procs, "api"),
             ("procedures", procs[2:], "api"), ("units", units, "api"), ("units", units[::-1], "api")]
    for n, (entity, records, origin) in enumerate(loads):
        assert _entity_load(engine, entity, records, f"r{n}", origin).reconciled
    with engine.connect() as c:
        counts = {t: tuple(c.execute(sa.text(f"SELECT count(*), count(DISTINCT ({k})) FROM core.{t}")).one())
                  for t, k in CORE_KEYS.items()}
        latest = c.execute(sa.text("SELECT count(*) FROM core.dossiers WHERE ngay_cap_nhat = '2024-01-06 10:00:00' "
                                   "AND trang_thai = 4 AND _source = 'api'")).scalar_one()
        supplements = c.execute(sa.text("SELECT count(*) FROM core.dossier_supplements AS s JOIN core.dossiers AS d "
                                        "USING (source, ma_ho_so, ngay_cap_nhat)")).scalar_one()
    assert counts == {"dossiers": (90, 90), "payments": (75, 75), "procedures": (5, 5), "units": (2, 2),
                      "dossier_versions": (120, 120), "dossier_supplements": (counts["dossier_supplements"][0],) * 2}
    assert latest == 60  # the newer versions won, and the files' copies did not replace the API's
    assert supplements == counts["dossier_supplements"][0] == sum(i % 3 for i in range(30)) + sum(
        (i + 1) % 3 for i in range(30, 90))


def test_duckdb_core_tables_have_no_key_index_and_keep_their_columns(tmp_path):
    """Migration 0009 rebuilds DuckDB's core tables without primary keys (their indexes are held in
    memory), with the same columns, types and NOT NULLs, and the rows an older warehouse had."""
    from tasks import landing
    from tasks.warehouse import _apply_migration, migrations

    old = connect(f"duckdb:///{tmp_path / 'old.duckdb'}")
    for version, path in migrations("duckdb"):
        if version < "0009":
            _apply_migration(old, "duckdb", version, path)
    landing.convert_raw_tables(old, landed_at=datetime(2024, 1, 1))  # as upgrade() does after 0008
    landing.refresh_views(old)
    _load(old, [_dossier(i, DanhSachHoSoBoSung=[{"NgayBoSung": "20240103080000"}]) for i in range(20)])
    query = ("SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
             "WHERE table_schema = 'core' AND table_name IN ({}) ORDER BY table_name, ordinal_position"
             ).format(", ".join(f"'{t}'" for t in CORE_KEYS))
    keys = ("SELECT table_name FROM duckdb_constraints() WHERE schema_name = 'core' "
            "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')")
    with old.connect() as c:
        columns, before = c.execute(sa.text(query)).fetchall(), fingerprint(old)
        assert {r[0] for r in c.execute(sa.text(keys))} >= set(CORE_KEYS)
    upgrade(old)
    with old.connect() as c:
        assert c.execute(sa.text(query)).fetchall() == columns
        assert {r[0] for r in c.execute(sa.text(keys))} & set(CORE_KEYS) == set()
        assert c.execute(sa.text("SELECT count(*) FROM core.dossier_status_history")).scalar_one() == 20
    assert fingerprint(old) == before
    _load(old, [_dossier(i, status=4, upd="20240107000000") for i in range(10, 30)], run_id="r2")
    with old.connect() as c:
        assert c.execute(sa.text("SELECT count(*), count(DISTINCT ma_ho_so) FROM core.dossiers")).one() == (30, 30)
    old.dispose()


@pytest.mark.postgres
def test_an_extraction_that_grows_a_table_renews_its_statistics_on_postgresql(pg_url, tmp_path, caplog):
    """The planner sizes its plans by the statistics: a first load leaves them as they were for an
    empty table (the payments' reference lookup then hashed every dossier for each chunk). An
    extraction that grows a table by more than a tenth analyses it at once; a small one leaves it
    to autovacuum; DuckDB has nothing to do."""
    import logging

    from simulator.dataset import generate
    from simulator.server import start_server
    from tasks.load import GROWN_TABLES, refresh_statistics
    from tests.test_faults import DATA_SEED, TOKEN, run_pipeline, settings_for

    with start_server(generate(seed=DATA_SEED, n_dossiers=300), token=TOKEN) as sim, \
            caplog.at_level(logging.INFO, logger="tasks.load"):
        run_pipeline(settings_for(pg_url, sim.url, tmp_path), full_refresh=True)
    renewed = [r.getMessage() for r in caplog.records if "statistics renewed" in r.getMessage()]
    assert [m.split(":")[0] for m in renewed] == ["dossiers", "payments"]
    assert all(t in " ".join(renewed) for tables in GROWN_TABLES.values() for t in tables)
    engine = connect(pg_url)
    try:
        with engine.connect() as c:
            for table in ("core.dossiers", "core.payments"):
                tuples = c.execute(sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"),
                                   {"t": table}).scalar()
                assert tuples == c.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() > 0  # noqa: S608
        held = int(tuples)  # core.payments' rows
        assert refresh_statistics(engine, "payments", held // 20) == []  # a twentieth: autovacuum's to do
        assert refresh_statistics(engine, "payments", held) == ["core.payments", "raw.payments"]
    finally:
        engine.dispose()
    assert refresh_statistics(connect(f"duckdb:///{tmp_path / 'wh.duckdb'}"), "dossiers", 10**6) == []
