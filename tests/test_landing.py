"""The raw layer of a DuckDB warehouse as landed Parquet files (issue 17, ``tasks/landing.py``):
one file per load batch, its manifest row committed with the core rows, ``raw.<entity>`` a view
with the old table's columns and rows; uncommitted files invisible and swept; reloads deduped;
older warehouses converted; retention rewrites files. Real DuckDB and PostgreSQL, real crashes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks import landing
from tasks.entities import ENTITIES
from tasks.load import RAW_COLUMNS, load_batch
from tasks.normalize import normalize
from tasks.retention import purge
from tasks.settings import PROJECT_ROOT
from tasks.warehouse import _apply_migration, connect, migrations, upgrade
from tests.test_load import KEY, _dossier
from tests.warehouse_state import fingerprint

STABLE = [c for c in RAW_COLUMNS if c not in ("_run_id", "_loaded_at", "_source")]


def _engine(url: str) -> sa.Engine:
    eng = connect(url)
    upgrade(eng)
    return eng


def _load(engine, records, run_id="r1"):
    n = normalize("dossiers", records, hash_key=KEY)
    return load_batch(engine, n, n.issues, source="src", run_id=run_id)


def _raw(engine, entity="dossiers") -> list[tuple]:
    with engine.connect() as c:
        return sorted(tuple(r) for r in c.execute(sa.text(f"SELECT {', '.join(STABLE)} FROM raw.{entity}")))


def _manifest(engine) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(
            "SELECT path, source, entity, run_id, rows, bytes FROM dq.landed_files ORDER BY landed_at, path"))]


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_load_lands_one_private_file_per_batch_and_raw_reads_as_on_postgres(duckdb_url, pg_url):
    duck, pg = _engine(duckdb_url), _engine(pg_url)
    root = landing.landing_dir(duck)
    assert root == Path(duckdb_url.removeprefix("duckdb:///")).with_name("wh-landing")
    batches = [[_dossier(i) for i in range(40)], [_dossier(i, status=4, upd="20240103000000") for i in range(30, 60)]]
    for i, batch in enumerate(batches):
        r = _load(duck, batch, run_id=f"r{i}")
        _load(pg, batch, run_id=f"r{i}")
        assert r.raw_new == len(batch)
    manifest = _manifest(duck)
    assert [(m[2], m[3], m[4]) for m in manifest] == [("dossiers", "r0", 40), ("dossiers", "r1", 30)]
    assert _files(root) == {m[0] for m in manifest}
    for m in manifest:
        f = root / m[0]
        assert f.stat().st_size == m[5] and _mode(f) == 0o600
        assert all(_mode(d) == 0o700 for d in (f.parent, f.parent.parent, root))
    assert _raw(duck) == _raw(pg) and len(_raw(duck)) == 70
    # the same columns, types and order as the old table (and PostgreSQL's)
    with duck.connect() as c:
        cols = [(r[0], r[1]) for r in c.execute(sa.text("DESCRIBE raw.dossiers"))]
        assert cols == [(c_, "TIMESTAMP" if c_ == "_loaded_at" else "VARCHAR") for c_ in RAW_COLUMNS]
        for e in ENTITIES[1:]:  # nothing landed: typed and empty
            assert c.execute(sa.text(f"SELECT count(*) FROM raw.{e}")).scalar_one() == 0
        run_ids = dict(c.execute(sa.text("SELECT _run_id, count(*) FROM raw.dossiers GROUP BY 1")).fetchall())
    assert run_ids == {"r0": 40, "r1": 30}
    with pg.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM dq.landed_files")).scalar_one() == 0
    duck.dispose()
    pg.dispose()


def test_reloading_a_batch_leaves_raw_unchanged(duckdb_url):
    eng = _engine(duckdb_url)
    recs = [_dossier(i) for i in range(25)]
    _load(eng, recs)
    before = fingerprint(eng, ["raw.dossiers"])
    with eng.connect() as c:
        first = sorted(tuple(r) for r in c.execute(sa.text("SELECT * FROM raw.dossiers")))
    _load(eng, recs, run_id="r2")
    assert fingerprint(eng, ["raw.dossiers"]) == before
    with eng.connect() as c:  # the first landed copy, its run id and time included
        assert sorted(tuple(r) for r in c.execute(sa.text("SELECT * FROM raw.dossiers"))) == first
    assert len(_manifest(eng)) == 2
    eng.dispose()


def test_a_rolled_back_load_leaves_an_invisible_file_that_the_sweep_deletes(duckdb_url):
    eng = _engine(duckdb_url)
    root = landing.landing_dir(eng)
    _load(eng, [_dossier(1)])
    with pytest.raises(RuntimeError):
        with eng.begin() as conn:
            n = normalize("dossiers", [_dossier(2), _dossier(3)], hash_key=KEY)
            load_batch(conn, n, n.issues, source="src", run_id="r2")
            raise RuntimeError("crash before commit")
    assert len(_files(root)) == 2 and len(_manifest(eng)) == 1
    assert [r[1] for r in _raw(eng)] == ["H-0001"]
    assert landing.sweep(eng) == 1
    assert _files(root) == {m[0] for m in _manifest(eng)}
    assert [r[1] for r in _raw(eng)] == ["H-0001"]
    eng.dispose()


_CRASHING_LOAD = """
import sys
from tasks.warehouse import connect
from tests.test_landing import _load
from tests.test_load import _dossier
_load(connect(sys.argv[1]), [_dossier(i) for i in range(10, 20)], run_id="crashed")
"""


@pytest.mark.parametrize("point", ["load.after_raw", "load.before_commit"])
def test_a_killed_load_leaves_raw_as_it_was_and_the_rerun_converges(duckdb_url, tmp_path, point):
    eng = _engine(duckdb_url)
    root = landing.landing_dir(eng)
    _load(eng, [_dossier(i) for i in range(10)])
    state = fingerprint(eng)
    eng.dispose()
    env = {**os.environ, "DVC_CRASH_AT": point, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run([sys.executable, "-c", _CRASHING_LOAD, duckdb_url], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    eng = _engine(duckdb_url)
    assert fingerprint(eng) == state  # the orphan file is not read
    orphans = _files(root) - {m[0] for m in _manifest(eng)}
    assert len(orphans) == 1 and "crashed" in next(iter(orphans))
    assert landing.sweep(eng) == 1 and not _files(root) - {m[0] for m in _manifest(eng)}
    _load(eng, [_dossier(i) for i in range(10, 20)], run_id="rerun")
    clean = connect(f"duckdb:///{tmp_path / 'clean.duckdb'}")
    upgrade(clean)
    _load(clean, [_dossier(i) for i in range(10)])
    _load(clean, [_dossier(i) for i in range(10, 20)], run_id="rerun")
    assert fingerprint(eng) == fingerprint(clean)
    eng.dispose()
    clean.dispose()


def _old_warehouse(url: str) -> sa.Engine:
    """A DuckDB warehouse as migrations 0001-0007 left it: raw tables, with rows of two sources."""
    eng = connect(url)
    for version, path in migrations("duckdb"):
        if version < "0008":
            _apply_migration(eng, "duckdb", version, path)
    rows = [("src", f"K{i}", f"h{i}", "20240101000000", f'{{"k": {i}}}', "api", "old", datetime(2024, 1, 1, 8, i))
            for i in range(30)] + [("other", "K1", "x1", None, "{}", "file:a.xlsx", "old2", datetime(2024, 2, 1))]
    with eng.begin() as c:
        for e in ("dossiers", "units"):
            c.execute(sa.text(f"INSERT INTO raw.{e} ({', '.join(RAW_COLUMNS)}) VALUES "
                              "(:s, :k, :h, :u, :r, :o, :run, :t)"),
                      [dict(zip(("s", "k", "h", "u", "r", "o", "run", "t"), row, strict=True)) for row in rows])
    return eng


@pytest.mark.empty_warehouse  # an older warehouse, migrated by hand
def test_upgrade_moves_an_old_warehouse_s_raw_tables_to_landed_files(duckdb_url):
    eng = _old_warehouse(duckdb_url)
    with eng.connect() as c:
        before = {e: sorted(tuple(r) for r in c.execute(sa.text(f"SELECT * FROM raw.{e}"))) for e in ENTITIES}
    upgrade(eng)
    with eng.connect() as c:
        after = {e: sorted(tuple(r) for r in c.execute(sa.text(f"SELECT * FROM raw.{e}"))) for e in ENTITIES}
        kinds = {r[0]: r[1] for r in c.execute(sa.text(
            "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'raw'"))}
    assert after == before and len(after["dossiers"]) == 31
    assert kinds == dict.fromkeys(ENTITIES, "VIEW")
    manifest = _manifest(eng)
    assert sorted((m[1], m[2], m[4]) for m in manifest) == [
        ("other", "dossiers", 1), ("other", "units", 1), ("src", "dossiers", 30), ("src", "units", 30)]
    assert upgrade(eng) == [] and _manifest(eng) == manifest  # done once
    _load(eng, [_dossier(1)])  # and loads go on
    assert len(_raw(eng)) == 32
    eng.dispose()


@pytest.mark.empty_warehouse  # an older warehouse, migrated by hand
def test_a_crashed_conversion_is_redone_and_its_orphan_swept(duckdb_url):
    eng = _old_warehouse(duckdb_url)
    with eng.connect() as c:
        before = sorted(tuple(r) for r in c.execute(sa.text("SELECT * FROM raw.dossiers")))
    real = landing._insert_manifest

    def dies(conn, f):  # the export is written, the transaction never commits
        raise RuntimeError("power cut")

    landing._insert_manifest = dies
    try:
        with pytest.raises(RuntimeError, match="power cut"):
            upgrade(eng)
    finally:
        landing._insert_manifest = real
    root = landing.landing_dir(eng)
    assert len(_files(root)) == 1 and not _manifest(eng)
    upgrade(eng)
    assert landing.sweep(eng) == 1
    with eng.connect() as c:
        assert sorted(tuple(r) for r in c.execute(sa.text("SELECT * FROM raw.dossiers"))) == before
    assert _files(root) == {m[0] for m in _manifest(eng)}
    eng.dispose()


def test_a_moved_warehouse_reads_its_moved_landing_folder(duckdb_url, tmp_path):
    eng = _engine(duckdb_url)
    _load(eng, [_dossier(i) for i in range(5)])
    rows = _raw(eng)
    eng.dispose()
    src = Path(duckdb_url.removeprefix("duckdb:///"))
    moved = tmp_path / "moved" / "copy.duckdb"
    moved.parent.mkdir()
    shutil.copyfile(src, moved)
    shutil.copytree(landing.default_landing_dir(src), landing.default_landing_dir(moved))
    shutil.rmtree(landing.default_landing_dir(src))
    other = _engine(f"duckdb:///{moved}")
    assert _raw(other) == rows
    other.dispose()


def _land(engine, conn, rows: list[tuple], run_id: str) -> None:
    frame = pd.DataFrame([("s", k, h, u, "{}", "api", run_id, t) for k, h, u, t in rows], columns=RAW_COLUMNS)
    landing.record(conn, landing.land(engine, "dossiers", "s", run_id, frame, rows[0][3]))


def test_retention_rewrites_the_files_without_the_doomed_rows(duckdb_url):
    eng = _engine(duckdb_url)
    root = landing.landing_dir(eng)
    old, recent, now = datetime(2024, 1, 1, 8), datetime(2024, 6, 1, 8), datetime(2024, 6, 10, 8)
    with eng.begin() as c:
        _land(eng, c, [("A", "a1", "20231201000000", old), ("B", "b1", "20231201000000", old),
                       ("D", "d1", "20231201000000", old)], "r1")
        _land(eng, c, [("A", "a2", "20231215000000", old), ("D", "d1", "20231201000000", old)], "r2")
        _land(eng, c, [("B", "b2", "20240531000000", recent), ("C", "c1", "20240520000000", recent),
                       ("C", "c2", "20240530000000", recent)], "r3")
    files_before = _files(root)
    res = purge(eng, raw_retention_days=30, quarantine_raw_retention_days=30, now=now)
    assert res.raw_versions["dossiers"] == 2  # a1, b1 (d1's second copy is not a version)
    manifest = _manifest(eng)
    with eng.connect() as c:
        left = sorted(r[0] for r in c.execute(sa.text("SELECT record_hash FROM raw.dossiers")))
        on_disk = sorted(r[0] for r in c.execute(sa.text(
            "SELECT record_hash FROM read_parquet([" + ", ".join(f"'{root / m[0]}'" for m in manifest) + "])")))
    assert left == ["a2", "b2", "c1", "c2", "d1"]
    assert on_disk == left  # the doomed versions and d1's extra copy are gone from the files too
    assert _files(root) == {m[0] for m in manifest}  # replaced files deleted after the commit
    assert sorted((m[3], m[4]) for m in manifest) == [("r1", 1), ("r2", 1), ("r3", 3)]
    assert len(files_before & _files(root)) == 1  # r3's file untouched
    assert purge(eng, raw_retention_days=30, quarantine_raw_retention_days=30, now=now).raw_total == 0
    assert _manifest(eng) == manifest
    eng.dispose()
