"""The nightly's workbooks written beside the run (``tasks.workbook_worker``): the workbook a worker
process writes is the one the run would write, recorded only once whole, in the periods' order;
its errors reach the run, and nothing half-written stays behind."""

from __future__ import annotations

import os
import signal
import zipfile
from datetime import date
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa
from xlsxwriter.exceptions import FileCreateError

from tasks import reports
from tasks.settings import Settings
from tasks.workbook import lay_out, partial_path, read_layout
from tasks.workbook_worker import WorkbookWorker, WorkbookWorkerDied
from tests.test_reports import PERIOD, REFERENCE_DIR, fresh_warehouse, load_golden

FEBRUARY = (date(2024, 2, 1), date(2024, 2, 29))


@pytest.fixture
def published(tmp_path: Path):
    engine = fresh_warehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    load_golden(engine)
    pub = reports.publish(engine, *PERIOD, run_id="worker", reference_dir=REFERENCE_DIR)
    yield engine, pub
    engine.dispose()


def _parts(path: Path) -> dict[str, bytes]:
    """The workbook's parts but its creation time (``docProps/core.xml``)."""
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if n != "docProps/core.xml"}


def test_the_worker_writes_the_workbook_the_run_writes(published, tmp_path):
    engine, pub = published
    layout = read_layout(engine, pub.publication_id, unit_name="UBND huyện", report_number="12/BC", place="Hà Nội")
    lay_out(layout, tmp_path / "here.xlsx")
    done: list[int] = []
    with WorkbookWorker() as worker:
        worker.hand_over(layout, tmp_path / "there.xlsx", lambda: done.append(os.getpid()) or "recorded")
        assert worker.pending and done == []  # nothing runs before the answer is read
        assert worker.finish() == "recorded"
        assert not worker.pending and worker.finish() is None
        pid = worker.pid
        assert pid not in (None, os.getpid())  # written in another process, still running
    assert worker.pid is None and not Path(f"/proc/{pid}").exists()  # leaving the context stops it
    assert done == [os.getpid()]  # ``done`` runs in the run
    assert _parts(tmp_path / "there.xlsx") == _parts(tmp_path / "here.xlsx")
    assert (tmp_path / "there.xlsx").stat().st_mode & 0o077 == 0  # owner-only, as the run's files


def test_the_worker_imports_nothing_of_the_warehouse(published, tmp_path):
    """The worker lays a workbook out from what the run read (a publication, Arrow tables): it
    imports neither SQLAlchemy nor pandas (nor the modules that do), which took about half a
    second and a hundred MiB in every nightly's worker."""
    engine, pub = published
    layout = read_layout(engine, pub.publication_id)
    with WorkbookWorker() as worker:
        worker.hand_over(layout, tmp_path / "there.xlsx", lambda: None)
        worker.finish()
        assert worker.pid is not None
        maps = Path(f"/proc/{worker.pid}/maps").read_text()
    assert "/pyarrow/" in maps  # a library imported shows
    assert "/pandas/" not in maps and "/sqlalchemy/" not in maps and "/duckdb/" not in maps


def test_a_second_hand_over_finishes_the_first(published, tmp_path):
    engine, pub = published
    layout = read_layout(engine, pub.publication_id)
    order: list[str] = []
    with WorkbookWorker() as worker:
        worker.hand_over(layout, tmp_path / "a.xlsx", lambda: order.append("a"))
        worker.hand_over(layout, tmp_path / "b.xlsx", lambda: order.append("b"))
        assert order == ["a"] and (tmp_path / "a.xlsx").is_file()
    assert order == ["a", "b"] and (tmp_path / "b.xlsx").is_file()  # leaving waits for the last one


def test_the_workers_error_reaches_the_run_and_leaves_no_file(published, tmp_path):
    engine, pub = published
    layout = read_layout(engine, pub.publication_id)
    target = tmp_path / "missing-folder" / "wb.xlsx"
    with pytest.raises(FileCreateError) as here:
        lay_out(layout, target)
    with WorkbookWorker() as worker:
        worker.hand_over(layout, target, lambda: pytest.fail("recorded a workbook that was not written"))
        with pytest.raises(FileCreateError) as there:  # raised as it is raised in-process
            worker.finish()
        assert str(there.value) == str(here.value)
        worker.hand_over(layout, tmp_path / "after.xlsx", lambda: "ok")  # the worker goes on
        assert worker.finish() == "ok"
    assert not target.exists()


def test_a_worker_that_dies_fails_the_run(published, tmp_path):
    engine, pub = published
    layout = read_layout(engine, pub.publication_id)
    with WorkbookWorker() as worker:
        worker.hand_over(layout, tmp_path / "wb.xlsx", lambda: pytest.fail("recorded"))
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        with pytest.raises(WorkbookWorkerDied, match=r"exit -9.*dvc-etl run.*dvc-etl report"):
            worker.finish()
    assert not (tmp_path / "wb.xlsx").exists()


def test_a_worker_whose_run_has_gone_removes_its_file(published, tmp_path):
    """The run leaves (killed, or an error) while the worker writes: no file stays behind."""
    engine, pub = published
    layout = read_layout(engine, pub.publication_id)
    worker = WorkbookWorker()
    worker.hand_over(layout, tmp_path / "wb.xlsx", lambda: pytest.fail("recorded"))
    proc = worker._proc
    assert proc is not None and proc.stdout is not None
    proc.stdout.close()  # the run's end of the answers is gone: the worker's answer finds no reader
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert list(tmp_path.glob("wb.xlsx*")) == []


def test_the_nightly_writes_the_first_periods_workbook_beside_the_second(published, tmp_path, monkeypatch):
    """``run_nightly``'s publication of two periods: the first period's workbook is handed to the
    worker and recorded after the second's is written, before the second's is recorded; both
    are recorded in the warehouse and in the analysts' copy, and ``on_publication`` runs for each
    once its workbook is recorded."""
    import tasks.workbook as workbook_mod
    from tasks.publishing import publish_period

    engine, _ = published
    settings = Settings(_env_file=None, warehouse_url=str(engine.url), reports_dir=tmp_path / "reports",
                        reference_dir=REFERENCE_DIR)
    events: list[tuple] = []
    record, lay = workbook_mod.record_workbook, workbook_mod.lay_out
    monkeypatch.setattr(workbook_mod, "record_workbook",
                        lambda e, p, partial, path: events.append(("recorded", path.name)) or record(e, p, partial, path))
    monkeypatch.setattr(workbook_mod, "lay_out",
                        lambda layout, path: events.append(("here", layout.doc.pub.period_start)) or lay(layout, path))

    def published_(engine: sa.Engine, pub: reports.Publication) -> None:
        with engine.connect() as c:
            path = c.execute(sa.text("SELECT workbook_path FROM mart.publications WHERE publication_id = :p"),
                             {"p": pub.publication_id}).scalar_one()
        events.append(("published", pub.period_start, Path(path).is_file()))

    with WorkbookWorker() as worker:
        first = publish_period(engine, settings, FEBRUARY, "two", on_publication=published_, analyst_copy=False,
                               workbook_worker=worker, in_background=True)
        assert worker.pending and events == []  # handed over: nothing written here, nothing recorded
        assert not Path(first["workbook"]).exists()
        second = publish_period(engine, settings, PERIOD, "two", on_publication=published_, analyst_copy=True,
                                workbook_worker=worker, in_background=False)
        assert not worker.pending
    assert events == [("here", PERIOD[0]), ("recorded", Path(first["workbook"]).name), ("published", FEBRUARY[0], True),
                      ("recorded", Path(second["workbook"]).name), ("published", PERIOD[0], True)]
    with engine.connect() as c:
        recorded = dict(c.execute(sa.text("SELECT publication_id, workbook_path FROM mart.publications "
                                          "WHERE workbook_path IS NOT NULL")).all())
    assert recorded == {first["publication_id"]: first["workbook"], second["publication_id"]: second["workbook"]}
    engine.dispose()
    copy = duckdb.connect(str(tmp_path / "wh-analyst.duckdb"), read_only=True)
    try:
        assert dict(copy.execute("SELECT publication_id, workbook_path FROM mart.publications "
                                 "WHERE workbook_path IS NOT NULL").fetchall()) == recorded
    finally:
        copy.close()
    assert sorted(p.name for p in (tmp_path / "reports").iterdir() if p.suffix == ".xlsx" or "partial" in p.name) == \
        sorted(Path(p).name for p in recorded.values())
    assert _parts(Path(first["workbook"])).keys() == _parts(Path(second["workbook"])).keys()
    assert partial_path(Path(first["workbook"])).name.startswith(".")


def test_a_duckdb_layout_reads_arrow_and_gives_the_rows_sqlalchemy_gives(published):
    """On DuckDB the layout holds Arrow tables (read in the engine, sent without pickling each row);
    the sheets get the dicts SQLAlchemy's rows give, value for value and type for type."""
    import pyarrow as pa

    import tasks.workbook as workbook_mod

    engine, pub = published
    layout = read_layout(engine, pub.publication_id)
    assert all(isinstance(t, pa.Table) for t in layout.tables.values())
    with engine.connect() as conn:
        for table, order in workbook_mod.TABLES.items():
            result = conn.execute(sa.text(f"SELECT * FROM mart.{table}_history WHERE publication_id = :p "  # noqa: S608
                                          f"ORDER BY {order}"), {"p": pub.publication_id})
            want = [dict(r._mapping) for r in result]
            got = layout.data()[table]
            assert got == want, table
            assert [{k: type(v) for k, v in r.items()} for r in got] == \
                [{k: type(v) for k, v in r.items()} for r in want], table
    assert sum(len(rows) for rows in layout.data().values()) > 20  # the golden publication has rows to compare


def test_each_work_list_is_made_into_dicts_once_and_not_kept(published, tmp_path, monkeypatch):
    """The sheets read each table's dicts when they write it (made from Arrow then, not kept
    for the whole workbook); the work lists, a province's largest tables, are made once."""
    import tasks.workbook_layout as layout_mod

    engine, pub = published
    layout = read_layout(engine, pub.publication_id)
    made: list[str] = []
    dicts = layout_mod._dicts
    names = {id(rows): name for name, rows in layout.tables.items()}
    monkeypatch.setattr(layout_mod, "_dicts", lambda rows: made.append(names[id(rows)]) or dicts(rows))
    lay_out(layout, tmp_path / "wb.xlsx")
    for table in ("rpt_unpaid_results", "rpt_uncollected_results", "rpt_late_acceptance", "rpt_late_by_official"):
        assert made.count(table) == 1, (table, made)
    made.clear()
    data = layout.data()
    assert made == []  # nothing made before a sheet reads it
    assert data["rpt_unpaid_results"] is not data["rpt_unpaid_results"]  # nor kept
    assert made == ["rpt_unpaid_results"] * 2
