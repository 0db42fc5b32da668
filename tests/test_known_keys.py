"""The tracker of a core table's keys (tasks/known_keys.py): a chunk's new rows are appended and
its exact re-reads skipped, without the upsert (on DuckDB, an update and an anti-join that read
the whole table; on PostgreSQL, a staged INSERT .. ON CONFLICT), and the warehouse ends as the
untracked load leaves it, on both warehouses; what it cannot vouch for takes the long way."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sqlalchemy as sa

from tasks import known_keys
from tasks.known_keys import HashSet, tracking
from tasks.load import load_batch
from tasks.normalize import normalize
from tasks.warehouse import connect, upgrade
from tests.test_load import CORE_KEYS, _dossier
from tests.warehouse_state import fingerprint

KEY = b"k"


def _rounds(n: int) -> list[dict]:
    return [{"NgayBoSung": f"2024010{3 + j}080000", "NgayTiepNhanBoSung": None} for j in range(n)]


def _batch(keys, upd="20240105100000", status=10) -> list[dict]:
    return [_dossier(i, status=status, upd=upd, DanhSachHoSoBoSung=_rounds(i % 3)) for i in keys]


#: A first load's chunks: new keys, the last ones of the chunk before read again at the page
#: boundary, a key changed since, an older version read late, a broken record, a payment chunk.
CHUNKS = [
    ("dossiers", _batch(range(0, 60))),
    ("dossiers", _batch(range(55, 120))),  # 55-59: exact re-reads
    ("dossiers", _batch(range(115, 150)) + _batch([3], upd="20240107000000", status=4)  # 3 changed
     + _batch([70], upd="20240101000000", status=2)),  # 70: an older version, read late
    ("dossiers", [_dossier(160, NgayTiepNhan="31/02/2024")] + _batch(range(148, 160))),
    ("payments", [{"Ma": f"P{i}", "MaHoSo": f"H-{i:04d}", "TrangThai": "Chờ thanh toán",
                   "NgayCapNhat": "20240105100000"} for i in range(40)]),
    ("payments", [{"Ma": f"P{i}", "MaHoSo": f"H-{i:04d}", "TrangThai": "Đã thanh toán" if i >= 35 else "Chờ thanh toán",
                   "NgayCapNhat": "20240106100000" if i >= 35 else "20240105100000"} for i in range(30, 70)]),
]


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def duck(request, tmp_path, tmp_path_factory):
    """Fresh warehouses by name, all DuckDB files or all PostgreSQL databases (copies of the
    migrated empty warehouse)."""
    from tests.conftest import _pg_available, create_pg_database, drop_pg_database
    from tests.warehouse_template import duckdb_copy

    engines, databases = [], []

    def make(name: str):
        if request.param == "duckdb":
            url = duckdb_copy(tmp_path_factory, tmp_path / f"{name}.duckdb")
        else:
            if not _pg_available():
                pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432")
            url = create_pg_database(migrated=True)
            databases.append(url)
        eng = connect(url)
        upgrade(eng)
        engines.append(eng)
        return eng

    yield make
    for eng in engines:
        eng.dispose()
    for url in databases:
        drop_pg_database(url)


def _statements(engine) -> list[str]:
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cur, stmt, *a: seen.append(stmt))
    return seen


def _long_way(statements: list[str]) -> list[str]:
    """The statements of :func:`tasks.load._upsert` (DuckDB: an update and an anti-join insert;
    PostgreSQL: an insert on conflict, written here as DuckDB's), and the supplements' delete."""
    out = []
    for s in statements:
        m = re.match(r"(UPDATE|DELETE FROM|INSERT INTO) (core\.\w+)", s)
        if m and m[1] == "INSERT INTO" and "ON CONFLICT" in s:
            if "DO UPDATE" in s:
                out.append(f"UPDATE {m[2]}")
            out.append(f"INSERT INTO {m[2]} (anti-join)")
        elif m and (m[1] != "INSERT INTO" or "NOT EXISTS" in s):
            out.append(f"{m[1]} {m[2]}" + (" (anti-join)" if "NOT EXISTS" in s else ""))
    return out


def _load_all(engine, chunks, trackers: dict | None, seen: list[str] | None = None,
              lookups: list[int] | None = None) -> list[list[str]]:
    """Load ``chunks``; the long-way statements of each, and in ``lookups`` the number of raw
    versions' lookups (PostgreSQL's ``_append_raw``) of each."""
    per_chunk = []
    for n, (entity, records) in enumerate(chunks):
        norm = normalize(entity, records, hash_key=KEY)
        before = len(seen) if seen is not None else 0
        result = load_batch(engine, norm, norm.issues, source="src", run_id=f"r{n}",
                            known=trackers.get(entity) if trackers else None)
        assert result.reconciled
        per_chunk.append(_long_way(seen[before:]) if seen is not None else [])
        if lookups is not None and seen is not None:
            lookups.append(sum(1 for s in seen[before:] if "FROM stg_raw_ids AS s JOIN raw." in s))
    return per_chunk


def test_a_tracked_first_load_inserts_new_rows_skips_exact_re_reads_and_ends_as_the_untracked_load(duck):
    plain, tracked = duck("plain"), duck("tracked")
    _load_all(plain, CHUNKS, None)
    seen: list[str] = _statements(tracked)
    lookups: list[int] = []
    with tracking(tracked, "src", "dossiers", skip=0) as dossiers, tracking(tracked, "src", "payments", skip=0) as payments:
        long_ways = _load_all(tracked, CHUNKS, {"dossiers": dossiers, "payments": payments}, seen, lookups)
        assert len(dossiers) == 160 and len(payments) == 70  # H-0160 was quarantined
    assert fingerprint(tracked) == fingerprint(plain)
    with tracked.connect() as c:
        for table, key in CORE_KEYS.items():
            assert c.execute(sa.text(f"SELECT count(*) - count(DISTINCT ({key})) FROM core.{table}")).scalar_one() == 0
    # the first chunk reads an empty table, the second holds only new rows and exact re-reads
    assert long_ways[0] == long_ways[1] == []
    # a changed key and a version read late take the long way, and only they
    assert sorted(set(long_ways[2])) == ["DELETE FROM core.dossier_supplements", "INSERT INTO core.dossier_supplements (anti-join)",
                                         "INSERT INTO core.dossier_versions (anti-join)", "INSERT INTO core.dossiers (anti-join)",
                                         "UPDATE core.dossier_supplements", "UPDATE core.dossiers"]
    assert long_ways[3] == [] and long_ways[4] == []
    assert sorted(set(long_ways[5])) == ["INSERT INTO core.payments (anti-join)", "UPDATE core.payments"]
    # PostgreSQL looks up the raw versions of a chunk only if it holds keys the raw table held
    # (the quarantined H-0160 included); DuckDB's raw layer is its landed files
    pg = tracked.dialect.name == "postgresql"
    assert lookups == ([0, 1, 1, 1, 0, 1] if pg else [0] * 6)


def test_a_tracker_reads_the_keys_a_table_already_holds(duck):
    plain, tracked = duck("plain"), duck("tracked")
    _load_all(plain, CHUNKS, None)
    _load_all(tracked, CHUNKS[:2], None)  # an earlier run loaded these, untracked
    seen = _statements(tracked)
    with tracking(tracked, "src", "dossiers", skip=0) as dossiers, tracking(tracked, "src", "payments", skip=0) as payments:
        # the same chunks read again: every key is in the table, none of it in the last loads
        long_ways = _load_all(tracked, CHUNKS, {"dossiers": dossiers, "payments": payments}, seen)
    assert "UPDATE core.dossiers" in long_ways[0] and "UPDATE core.dossiers" in long_ways[1]
    assert fingerprint(tracked) == fingerprint(plain)
    with tracked.connect() as c:
        assert c.execute(sa.text("SELECT count(*), count(DISTINCT ma_ho_so) FROM core.dossiers")).one() == (160, 160)


def test_keys_with_commas_quotes_and_line_breaks_are_read_back_as_held(duck):
    engine = duck("wh")
    odd = [dict(_dossier(i), MaHoSo=k) for i, k in enumerate(['H,1', 'H"2', 'H\n3', ' H4 ', 'H\\5', 'Hồ sơ 6'])]
    norm = normalize("dossiers", odd, hash_key=KEY)
    load_batch(engine, norm, norm.issues, source="src", run_id="r1")
    with tracking(engine, "src", "dossiers", skip=0) as known:
        load_batch(engine, norm, norm.issues, source="src", run_id="r2", known=known)
        assert known._recent == [{}, {}] and len(known) == 6  # every key was held: none inserted
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*), count(DISTINCT ma_ho_so) FROM core.dossiers")).one() == (6, 6)


def test_a_row_written_the_long_way_is_never_taken_for_an_exact_re_read(duck):
    """The same version stamp sent with other content replaces the row, and the first content sent
    again replaces it back: the tracker forgets what it inserted once a key took the long way."""
    chunks = [("dossiers", _batch(range(10))),
              ("dossiers", _batch(range(5, 15), status=4)),  # 5-9: the same NgayCapNhat, another status
              ("dossiers", _batch(range(5, 10)))]  # the first content again
    plain, tracked = duck("plain"), duck("tracked")
    _load_all(plain, chunks, None)
    with tracking(tracked, "src", "dossiers", skip=0) as known:
        _load_all(tracked, chunks, {"dossiers": known})
    assert fingerprint(tracked) == fingerprint(plain)
    with tracked.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM core.dossiers WHERE trang_thai = 10")).scalar_one() == 10


def test_by_default_the_first_load_goes_the_long_way_and_reads_no_keys(duck):
    """An extraction of one chunk (a nightly's) pays nothing for the tracker: the tables' keys are
    read at its second load."""
    engine = duck("wh")
    _load_all(engine, CHUNKS[:1], None)
    seen = _statements(engine)
    with tracking(engine, "src", "dossiers") as known:
        long_ways = _load_all(engine, CHUNKS[1:3], {"dossiers": known}, seen)
        assert known._keys is not None and len(known) == 150
    assert "UPDATE core.dossiers" in long_ways[0] and "INSERT INTO core.dossiers (anti-join)" in long_ways[0]
    assert long_ways[1].count("UPDATE core.dossiers") == 1  # key 3 changed; the rest new or read again
    with tracking(engine, "src", "dossiers") as known:
        _load_all(engine, CHUNKS[3:4], {"dossiers": known})
        assert known._keys is None and known._raw_keys is None  # one load: nothing read


def test_a_load_rolled_back_teaches_the_tracker_nothing(duck, monkeypatch):
    import tasks.load as load

    engine = duck("wh")
    with tracking(engine, "src", "dossiers", skip=0) as known:
        norm = normalize("dossiers", _batch(range(20)), hash_key=KEY)
        real = load.add_run_summary

        def fail(*a, **kw):
            raise RuntimeError("the disk is full")

        monkeypatch.setattr(load, "add_run_summary", fail)
        with pytest.raises(RuntimeError, match="disk is full"):
            load_batch(engine, norm, norm.issues, source="src", run_id="r1", known=known)
        assert len(known) == 0  # read from the empty table; the rolled-back keys were not learnt
        monkeypatch.setattr(load, "add_run_summary", real)
        load_batch(engine, norm, norm.issues, source="src", run_id="r2", known=known)
        load_batch(engine, norm, norm.issues, source="src", run_id="r3", known=known)  # all exact re-reads
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*), count(DISTINCT ma_ho_so) FROM core.dossiers")).one() == (20, 20)
        assert c.execute(sa.text("SELECT count(*) FROM core.dossier_versions")).scalar_one() == 20


def test_a_second_extraction_or_another_load_of_the_entity_switches_its_trackers_off(duck):
    engine, other = duck("wh"), duck("other")
    norm = normalize("dossiers", _batch(range(5)), hash_key=KEY)
    with tracking(engine, "src", "dossiers") as a:
        with tracking(engine, "src", "payments") as p, tracking(engine, "src2", "dossiers") as s2, \
                tracking(other, "src", "dossiers") as o:
            assert a.usable and p.usable and s2.usable and o.usable
            load_batch(engine, norm, norm.issues, source="src", run_id="r1", known=a)  # its own load
            assert a.usable
            load_batch(engine, norm, norm.issues, source="src2", run_id="r2")  # a load the tracker does not see
            assert not s2.usable and a.usable and p.usable and o.usable  # another source, entity, warehouse
            with tracking(engine, "src", "dossiers") as b:  # a backfill's second partition
                assert not a.usable and not b.usable
            assert o.usable
    assert known_keys._ACTIVE == {}
    with tracking(engine, "src", "dossiers") as fresh:
        assert fresh.usable
    with tracking(engine, "src", "units") as none:  # a catalogue: loaded whole, once
        assert none is None


@pytest.mark.postgres
def test_on_postgresql_a_key_the_tracker_wrongly_took_for_new_fails_the_load_and_duplicates_nothing(pg_url):
    import psycopg

    engine = connect(pg_url)
    upgrade(engine)
    norm = normalize("dossiers", _batch(range(10)), hash_key=KEY)
    with tracking(engine, "src", "dossiers", skip=0) as known:
        load_batch(engine, norm, norm.issues, source="src", run_id="r1", known=known)
        known._keys = HashSet()  # as if it had lost what it learnt
        known._recent = [{}, {}]
        with pytest.raises(psycopg.errors.UniqueViolation):
            load_batch(engine, norm, norm.issues, source="src", run_id="r2", known=known)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*), count(DISTINCT ma_ho_so) FROM core.dossiers")).one() == (10, 10)
    engine.dispose()


def test_the_key_hashes_are_kept_in_few_sorted_runs_and_found_again():
    rng = np.random.default_rng(1)
    seed = rng.integers(0, 2**64 - 1, 1000, dtype=np.uint64)
    known = HashSet(np.concatenate([seed, seed[:10]]))
    added: set[int] = set(seed.tolist())
    for size in [100, 3, 15_000, 15_000, 1, 15_000, 7, 15_000, 15_000, 200]:
        batch = rng.integers(0, 2**64 - 1, size, dtype=np.uint64)
        known.add(np.concatenate([batch, batch[:2], seed[:5]]))  # repeats, and hashes held already
        added |= set(batch.tolist())
        assert len(known.runs) <= 2 * int(np.log2(len(added)) + 1)
        assert all((r[1:] > r[:-1]).all() for r in known.runs)
    probe = np.concatenate([np.fromiter(added, dtype=np.uint64)[:5000], rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64)])
    assert known.holds(probe).tolist() == [int(v) in added for v in probe]
    assert len(known) == len(added)


def test_an_extraction_hands_every_chunk_a_tracker_that_outlives_its_last_load(tmp_path, monkeypatch):
    """``extract_entity`` loads its chunks in a thread: the tracker must still be there (and on)
    when the last one loads, after the extraction's reading is done."""
    import time
    from datetime import date

    from simulator.dataset import generate
    from simulator.server import start_server
    from tasks import pipeline
    from tasks.settings import Settings
    from tasks.source_api import SourceClient

    monkeypatch.setattr(pipeline, "_validate_with_gx", lambda *a, **k: None)
    real = pipeline.load_batch
    seen: list[tuple[bool, bool]] = []

    def slow_load(*args, known=None, **kwargs):
        time.sleep(0.2)  # the reading is over before the last chunk loads
        seen.append((known is not None and known.usable, known in known_keys._ACTIVE.get(
            ("duckdb:///" + str(tmp_path / "wh.duckdb"), "default", args[1].entity), [])))
        return real(*args, known=known, **kwargs)

    monkeypatch.setattr(pipeline, "load_batch", slow_load)
    ds = generate(seed=3, n_dossiers=600, start=date(2024, 1, 1), end=date(2024, 2, 28))
    engine = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    upgrade(engine)
    try:
        with start_server(ds, token="t") as sim:
            settings = Settings(source_url=sim.url, source_token="t", warehouse_url=str(engine.url), page_size=100,
                                hash_key="test-hash-key", reports_dir=tmp_path / "r", inbox_dir=tmp_path / "i",
                                http_backoff_max=0.1)
            with SourceClient.from_settings(settings) as client:
                res = pipeline.extract_entity(engine, client, "dossiers", settings=settings, run_id="r1",
                                              window=(None, None), chunk_records=150)
        assert res.rows_loaded > 450 and len(seen) >= 4
        assert seen == [(True, True)] * len(seen)
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT count(*) - count(DISTINCT ma_ho_so) FROM core.dossiers")).scalar_one() == 0
    finally:
        engine.dispose()
