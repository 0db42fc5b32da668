"""Personal data at rest (issue 14).

- The warehouse file, its WAL, spill folder and lock, and ``reports/`` (workbooks, data docs) are
  readable by the owner only (0600 files, 0700 folders), checked by ``stat`` during and after a
  real ``dvc-etl run`` and a real DuckDB spill.
- Retention (Decree 13/2023 practice): the nightly run clears the raw record of resolved
  quarantine rows; a purge with 0-day retention keeps the latest raw version of each key and every
  report figure (publish, fingerprint, purge, republish, compare), on DuckDB and PostgreSQL.
- ``dvc-etl demo`` never touches the configured warehouse, reports folder or alert webhook.
- Great Expectations data docs show a failing value holding ``<script>`` as text.

Real processes, real warehouses, the simulator on 127.0.0.1, a real webhook receiver.
"""

from __future__ import annotations

import itertools
import os
import stat
import threading
import time
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from typer.testing import CliRunner

from simulator.dataset import generate
from simulator.server import start_server
from tasks.reports import REPORT_TABLES
from tasks.warehouse import connect
from tests.loopback import LoopbackServer
from tests.reliability_support import run_cli, sim_env, start_cli
from tests.warehouse_state import fingerprint

HASH_KEY = "data-at-rest-test-hash-key-0123456789abcdef"  # 32+ bytes
TOKEN = "rest-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MART = [f"mart.{t}" for t in REPORT_TABLES]
CORE = ["core.dossiers", "core.payments", "core.procedures", "core.units", "core.dossier_versions",
        "core.dossier_supplements"]
ENTITIES = ("dossiers", "payments", "procedures", "units")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _open_modes(root: Path) -> dict[str, str]:
    """Every path under ``root`` (and ``root``) readable, writable or searchable by group or others."""
    out = {}
    for p in [root, *root.rglob("*")]:
        try:
            m = _mode(p)
        except FileNotFoundError:
            continue
        if m & 0o077:
            out[str(p)] = oct(m)
    return out


class _Watcher:
    """stat()s the given paths (recursively) every few milliseconds while a run writes: the WAL and
    DuckDB's spill files live only while the run does. ``opened``: every path that did not exist
    when the watch started and was ever seen readable by group or others."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.before = {str(p) for root in paths for p in [root, *root.rglob("*")]}
        self.seen: set[str] = set()
        self.opened: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for root in self.paths:
                for p in [root, *(root.rglob("*") if root.is_dir() else [])]:
                    try:
                        m = _mode(p)
                    except OSError:
                        continue
                    self.seen.add(str(p))
                    if m & 0o077 and str(p) not in self.before:
                        self.opened.setdefault(str(p), oct(m))
            time.sleep(0.005)

    def __enter__(self) -> _Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# ----------------------------------------------------------------------------------------------
# 0600 / 0700
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow  # ~40 s; test_duckdb_spill_folder_and_wal_are_owner_only stays in make test
def test_a_real_run_leaves_warehouse_and_reports_owner_only(prefect_harness, tmp_path: Path) -> None:
    """``dvc-etl run`` on the simulator: the DuckDB file, its WAL and lock, the workbooks and the
    data docs are 0600 in 0700 folders, also a warehouse and reports folder left 0644/0755 by an
    earlier version, and whatever the umask of the shell that started it."""
    work = tmp_path / "work"
    data, reports = work / "data", work / "reports"
    db = data / "wh.duckdb"
    url = f"duckdb:///{db}"
    # an earlier version's files: world-readable
    engine = connect(url)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE leftover AS SELECT 1 AS x")
    engine.dispose()
    reports.mkdir(parents=True)
    old_workbook = reports / "bao-cao-old.xlsx"
    old_workbook.write_bytes(b"old")
    for p, m in ((data, 0o755), (db, 0o644), (reports, 0o755), (old_workbook, 0o644)):
        p.chmod(m)
    env = sim_env(work, url, DVC_HASH_KEY=HASH_KEY)
    old_umask = os.umask(0o022)  # the subprocess inherits a permissive umask
    try:
        with _Watcher([data, reports]) as watch:
            p = start_cli(["run", "-q"], env, work)
            out, errs = p.communicate(timeout=400)
    finally:
        os.umask(old_umask)
    assert p.returncode == 0, errs[-3000:]
    assert any(k.endswith(".wal") for k in watch.seen), "no WAL seen during the run"
    assert not watch.opened, f"readable by others during the run: {watch.opened}"
    workbooks = sorted(reports.glob("bao-cao-2*.xlsx"))
    docs = sorted(reports.glob("data-docs/*/index.html"))
    assert workbooks and docs, sorted(str(x) for x in reports.rglob("*"))[:20]
    assert not _open_modes(reports), _open_modes(reports)
    assert {k: v for k, v in _open_modes(data).items() if k != str(data)} == {}
    assert _mode(data) == 0o755  # the folder chosen for the warehouse, when it exists, is the operator's
    for f in [db, *workbooks, *docs, old_workbook]:
        assert _mode(f) == 0o600, (f, oct(_mode(f)))
    for d in [reports, reports / "data-docs", docs[0].parent]:
        assert _mode(d) == 0o700, (d, oct(_mode(d)))
    lock = db.with_name(db.name + ".lock")
    assert lock.exists() and _mode(lock) == 0o600


def test_duckdb_spill_folder_and_wal_are_owner_only(tmp_path: Path) -> None:
    """The files DuckDB creates by itself (WAL, ``<file>.tmp/`` spill files) under the process umask
    that ``open_warehouse`` sets where the pipeline starts."""
    from tasks.settings import Settings
    from tasks.warehouse import open_warehouse

    db = tmp_path / "wh" / "spill.duckdb"
    old_umask = os.umask(0o022)
    try:
        engine = open_warehouse(Settings(warehouse_url=f"duckdb:///{db}", duckdb_memory_limit="48MB",
                                         hash_key=HASH_KEY))
        with engine.begin() as c:
            c.exec_driver_sql("SET enable_progress_bar = false")
            c.exec_driver_sql("SET threads = 1")
            c.exec_driver_sql("CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(1500000)")
            c.exec_driver_sql("CREATE TABLE u AS SELECT * FROM t ORDER BY s DESC")  # spills past 48 MB
            spill = db.with_name(db.name + ".tmp")
            assert spill.is_dir() and any(spill.iterdir()), "the sort did not spill"
            seen = {str(p): oct(_mode(p)) for p in [spill, *spill.iterdir()]}
        wal = db.with_name(db.name + ".wal")
        assert wal.exists()
        seen |= {str(p): oct(_mode(p)) for p in (db, wal, db.parent)}
        engine.dispose()
    finally:
        os.umask(old_umask)
    assert seen[str(spill)] == oct(0o700) and seen[str(db.parent)] == oct(0o700), seen
    files = {k: v for k, v in seen.items() if k not in (str(spill), str(db.parent))}
    assert set(files.values()) == {oct(0o600)}, seen


# ----------------------------------------------------------------------------------------------
# Retention
# ----------------------------------------------------------------------------------------------
def _raw_rows(engine: sa.Engine) -> dict[str, list[tuple]]:
    with engine.connect() as c:
        return {e: [tuple(r) for r in c.execute(sa.text(
            f"SELECT source, record_key, record_hash, ngay_cap_nhat, _loaded_at FROM raw.{e}"))] for e in ENTITIES}


def _latest(rows: list[tuple]) -> set[tuple]:
    """(source, key, hash) of the latest version of each key: highest NgayCapNhat (ties: last
    loaded), and the last loaded one."""
    by_key: dict[tuple, list[tuple]] = defaultdict(list)
    for r in rows:
        by_key[(r[0], r[1])].append(r)
    out = set()
    for versions in by_key.values():
        by_clock = max(versions, key=lambda r: (r[3] is not None, r[3] or "", r[4], r[2]))
        by_load = max(versions, key=lambda r: (r[4], r[2]))
        out |= {by_clock[:3], by_load[:3]}
    return out


def _quarantine(engine: sa.Engine) -> dict[str, tuple]:
    with engine.connect() as c:
        return {r.record_key: (r.resolved_at, r.raw_record) for r in c.execute(sa.text(
            "SELECT record_key, resolved_at, raw_record FROM dq.quarantine WHERE entity = 'dossiers'"))}


@pytest.mark.slow_on_postgres
def test_purge_keeps_every_report_figure_and_the_latest_version(prefect_harness, warehouse_url, dvc_env,
                                                                 tmp_path: Path) -> None:
    from flows.nightly import nightly, report
    from tasks.cli import app

    ds = generate(seed=23, n_dossiers=250, start=date(2024, 1, 1), end=date(2024, 3, 31))
    d0 = next(d for d in ds.records("dossiers") if d["TrangThaiHoSo"] == 10 and not d["DanhSachHoSoBoSung"])
    stamp = d0["NgayCapNhat"]
    fixed = {**d0, "MaHoSo": "REST-FIXED", "TrangThaiHoSo": 11, "ChuHoSo": "Nguyễn Văn A"}
    stays = {**d0, "MaHoSo": "REST-STAYS", "TrangThaiHoSo": 11, "ChuHoSo": "Trần Thị B"}
    engine = connect(warehouse_url)
    with start_server(ds, token=TOKEN) as sim:
        r = requests.post(f"{sim.url}/_sim/inject", json={"dossiers": [fixed, stays]}, headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        dvc_env(DVC_SOURCE_URL=sim.url, DVC_SOURCE_TOKEN=TOKEN, DVC_WAREHOUSE_URL=warehouse_url,
                DVC_HASH_KEY=HASH_KEY, DVC_CRITICAL_THRESHOLD="1000")
        first = nightly(full_refresh=True, publish=False)
        assert first["purged"]["quarantine_resolved"] == 0, first["purged"]
        q = _quarantine(engine)
        assert q["REST-FIXED"][1] and q["REST-STAYS"][1]  # unresolved, recent: kept for the ops team
        # a day of activity (new versions of many keys) and the corrected record
        r = requests.post(f"{sim.url}/_sim/advance", params={"changes": 120, "seed": 1}, headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        now = datetime.strptime(r.json()["now"], "%Y%m%d%H%M%S")
        corrected = {**fixed, "TrangThaiHoSo": 10, "NgayCapNhat": (now - timedelta(minutes=5)).strftime("%Y%m%d%H%M%S")}
        assert corrected["NgayCapNhat"] > stamp
        r = requests.post(f"{sim.url}/_sim/inject", params={"replace": "1"},
                          json={"dossiers": [corrected, stays]}, headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        second = nightly(publish=False)
    # the nightly run's own purge: the resolved row's raw record is gone, the open one stays
    q = _quarantine(engine)
    assert q["REST-FIXED"][0] is not None and q["REST-FIXED"][1] is None, q["REST-FIXED"]
    assert q["REST-STAYS"][0] is None and "Trần Thị B" in q["REST-STAYS"][1]
    assert second["purged"]["quarantine_resolved"] == 1 and second["purged"]["raw_versions"]["dossiers"] == 0

    before_raw = _raw_rows(engine)
    assert sum(len(v) for v in before_raw.values()) > sum(
        len({(r[0], r[1]) for r in v}) for v in before_raw.values()), "no key has two versions: nothing to purge"
    report(date(2024, 1, 1), date(2024, 3, 31))
    report(date(2024, 1, 1), date(2024, 1, 31))
    figures, core = fingerprint(engine, MART), fingerprint(engine, CORE)
    assert not figures["mart.rpt_progress"].startswith("0:") and not figures["mart.rpt_service_indicators"].startswith("0:")

    res = CliRunner().invoke(app, ["db", "purge", "--raw-days", "0", "--quarantine-days", "0"])
    assert res.exit_code == 0, res.output
    assert "purged:" in res.output

    after_raw = _raw_rows(engine)
    for e in ENTITIES:
        kept = {r[:3] for r in after_raw[e]}
        assert kept == _latest(before_raw[e]), e  # the latest version of each key, nothing else
        assert {r[:2] for r in after_raw[e]} == {r[:2] for r in before_raw[e]}, e  # no key lost
    assert len(after_raw["dossiers"]) < len(before_raw["dossiers"])
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM dq.quarantine WHERE raw_record IS NOT NULL")).scalar_one() == 0
        assert c.execute(sa.text("SELECT count(*) FROM dq.quarantine")).scalar_one() == 2  # the reasons stay
    assert fingerprint(engine, CORE) == core
    report(date(2024, 1, 1), date(2024, 3, 31))
    report(date(2024, 1, 1), date(2024, 1, 31))
    assert fingerprint(engine, MART) == figures
    engine.dispose()


def test_purge_respects_the_retention_days(warehouse_url, tmp_path: Path) -> None:
    """Rows younger than the retention stay; older superseded versions and raw records go; the
    latest version stays whatever its age."""
    from tasks.retention import purge
    from tasks.warehouse import upgrade

    engine = connect(warehouse_url)
    upgrade(engine)
    old, recent = datetime(2024, 1, 1, 8), datetime(2024, 6, 1, 8)
    now = datetime(2024, 6, 10, 8)
    rows = [  # key, hash, NgayCapNhat, loaded at
        ("A", "a1", "20231201000000", old), ("A", "a2", "20231215000000", old),  # a2 latest: kept
        ("B", "b1", "20231201000000", old), ("B", "b2", "20240531000000", recent),  # b1 old: goes
        ("C", "c1", "20240520000000", recent), ("C", "c2", "20240530000000", recent),  # young: kept
        ("D", "d1", "20231201000000", old),  # only version, old: kept
        ("E", "e2", "20240101000000", old), ("E", "e1", "20231101000000", recent),  # late read of an
        # older version: the latest by NgayCapNhat (e2) and the last loaded (e1) both stay
    ]
    with engine.begin() as c:
        if engine.dialect.name == "duckdb":  # raw.dossiers is a view over landed files (tasks/landing.py)
            import pandas as pd

            from tasks import landing
            frame = pd.DataFrame([("s", key, h, upd, '{"ChuHoSo": "x"}', "api", "r", at) for key, h, upd, at in rows],
                                 columns=landing.COLUMNS)
            landing.record(c, landing.land(engine, "dossiers", "s", "r", frame, now))
        for key, h, upd, at in rows if engine.dialect.name != "duckdb" else ():
            c.execute(sa.text(
                "INSERT INTO raw.dossiers (source, record_key, record_hash, ngay_cap_nhat, record, _source, _run_id, "
                "_loaded_at) VALUES ('s', :k, :h, :u, '{\"ChuHoSo\": \"x\"}', 'api', 'r', :t)"),
                {"k": key, "h": h, "u": upd, "t": at})
        for key, resolved, seen in (("Q1", None, old), ("Q2", None, recent), ("Q3", recent, recent)):
            c.execute(sa.text(
                "INSERT INTO dq.quarantine (source, entity, record_key, rule, severity, detail, raw_record, run_id, "
                "first_seen_at, last_seen_at, resolved_at) VALUES ('s', 'dossiers', :k, 'r', 'critical', 'd', "
                "'{\"ChuHoSo\": \"x\"}', 'r', :t, :t, :res)"), {"k": key, "t": seen, "res": resolved})
    res = purge(engine, raw_retention_days=30, quarantine_raw_retention_days=30, now=now)
    with engine.connect() as c:
        left = {r[0] for r in c.execute(sa.text("SELECT record_hash FROM raw.dossiers"))}
        q = {r[0]: r[1] for r in c.execute(sa.text("SELECT record_key, raw_record FROM dq.quarantine"))}
    assert left == {"a2", "b2", "c1", "c2", "d1", "e1", "e2"}
    assert res.raw_versions["dossiers"] == 2
    assert q["Q1"] is None and q["Q2"] is not None and q["Q3"] is None
    assert (res.quarantine_resolved, res.quarantine_expired) == (1, 1)
    engine.dispose()


# ----------------------------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------------------------
class _Receiver(LoopbackServer):
    """A real webhook receiver on 127.0.0.1 that records every request."""

    path = "/hook"

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        super().__init__()
        self.__enter__()

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, bytes, str | None]:
        self.requests.append((path, body))
        return 200, b"ok", None

    def close(self) -> None:
        self.__exit__()


@pytest.mark.slow  # three CLI runs, ~2 min; tests/test_hardening_keys.py runs the demo in make test
def test_demo_never_touches_the_configured_warehouse_reports_or_alerts(prefect_harness, tmp_path: Path) -> None:
    receiver = _Receiver()
    try:
        configured = tmp_path / "configured"
        work = tmp_path / "work"
        env = sim_env(work, f"duckdb:///{configured / 'wh.duckdb'}", DVC_HASH_KEY=HASH_KEY,
                      DVC_REPORTS_DIR=str(configured / "reports"), DVC_ALERT_WEBHOOK_URL=receiver.url,
                      DVC_WARNING_ALERT_THRESHOLD="0")
        # the receiver is real: a run on the configured settings alerts it (freshness, warnings)
        probe = run_cli(["run", "-q", "--no-publish"], {**env, "DVC_WAREHOUSE_URL": f"duckdb:///{tmp_path / 'probe.duckdb'}",
                                                      "DVC_REPORTS_DIR": str(tmp_path / "probe-reports")}, work)
        assert probe.returncode in (0, 3), probe.stderr[-2000:]
        assert receiver.requests, "the configured webhook got nothing from a normal run: the test proves nothing"
        receiver.requests.clear()

        p = run_cli(["demo", "--dossiers", "400", "-q"], env, work, timeout=400)
        assert p.returncode == 0, p.stderr[-3000:]
        assert not configured.exists(), sorted(str(x) for x in configured.rglob("*"))
        assert receiver.requests == []
        assert (work / "demo" / "dvc.duckdb").is_file()
        assert (work / "demo" / "reports" / "bao-cao-20240101-20240630.xlsx").is_file()
        assert _mode(work / "demo" / "dvc.duckdb") == 0o600 and _mode(work / "demo" / "reports") == 0o700

        # told otherwise, explicitly
        other = tmp_path / "explicit"
        p = run_cli(["demo", "--dossiers", "200", "-q", "--warehouse-url", f"duckdb:///{other / 'x.duckdb'}",
                     "--reports-dir", str(other / "rep")], env, work, timeout=400)
        assert p.returncode == 0, p.stderr[-3000:]
        assert (other / "x.duckdb").is_file() and (other / "rep" / "bao-cao-20240101-20240630.xlsx").is_file()
        assert not configured.exists() and receiver.requests == []
    finally:
        receiver.close()


# ----------------------------------------------------------------------------------------------
# Great Expectations data docs
# ----------------------------------------------------------------------------------------------
def test_a_script_in_a_record_shows_as_text_in_the_data_docs(tmp_path: Path) -> None:
    """A failing value holding ``<script>`` goes through the pipeline's quality step (normalise,
    check, GX validation and data docs, load): the rendered HTML holds it escaped, never raw; the
    warehouse keeps the value as it was."""
    from tasks import pipeline
    from tasks.settings import Settings
    from tasks.warehouse import upgrade

    script = "<script>alert(1)</script>"
    ds = generate(seed=11, n_dossiers=60, start=date(2024, 1, 1), end=date(2024, 1, 31))
    engine = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    upgrade(engine)
    settings = Settings(hash_key=HASH_KEY, reports_dir=tmp_path / "reports")
    records = [dict(r) for r in itertools.islice(ds.records("dossiers"), 20)]
    records[0]["MaTTHC"] = script  # fails the procedure-code pattern (a warning: the row loads)
    key = records[0]["MaHoSo"]
    res = pipeline.EntityResult("dossiers")
    ctx = pipeline.check_context(engine, settings.source_name, "dossiers", settings, pipeline.now_local())
    pipeline.process_records(engine, "dossiers", records, settings=settings, run_id="run-xss", result=res, context=ctx)
    assert res.data_docs and res.gx_success is False
    pages = list((tmp_path / "reports" / "data-docs").rglob("*.html"))
    assert pages
    text = {str(p): p.read_text(encoding="utf-8") for p in pages}
    assert not [p for p, t in text.items() if "<script>alert(1)" in t]
    assert [p for p, t in text.items() if "&lt;script&gt;alert(1)&lt;/script&gt;" in t], "the value is not shown"
    with engine.connect() as c:
        stored = c.execute(sa.text("SELECT ma_tthc FROM core.dossiers WHERE ma_ho_so = :k"), {"k": key}).scalar_one()
    assert stored == script
    engine.dispose()
