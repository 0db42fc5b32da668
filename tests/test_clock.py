"""The one clock (``tasks.clock``): local time whatever the machine's zone, month arithmetic, the
data cut, and every timestamp the warehouse records agreeing on a UTC machine.

Reporting periods (``resolve_period``, ``closed_month``) are tested in tests/test_periods.py.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from tasks import reports
from tasks.clock import (
    TIMEZONE,
    ZONE,
    data_cut,
    month_before,
    month_bounds,
    months,
    nightly_periods,
    now_local,
    today_local,
)
from tasks.warehouse import connect
from tests.reliability_support import cli_env, run_cli
from tests.test_reports import (
    LOADED,
    PAID,
    PERIOD,
    REFERENCE_DIR,
    fresh_warehouse,
    load_golden,
    upsert_payment,
)

D = date


# ----------------------------------------------------------------------------------------------
# local time
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("machine_tz", ["UTC", "America/New_York", "Asia/Ho_Chi_Minh", "Pacific/Kiritimati"])
def test_now_local_is_vietnam_time_whatever_the_machine_zone(monkeypatch, machine_tz):
    assert TIMEZONE == "Asia/Ho_Chi_Minh" and ZONE.key == TIMEZONE
    monkeypatch.setenv("TZ", machine_tz)
    time.tzset()
    try:
        vietnam = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=7)  # no daylight saving
        local = now_local()
        assert local.tzinfo is None and local.microsecond == 0
        assert abs(local - vietnam) < timedelta(seconds=5)
        assert today_local() in (vietnam.date(), (vietnam + timedelta(seconds=5)).date())
    finally:
        monkeypatch.undo()
        time.tzset()


# ----------------------------------------------------------------------------------------------
# months
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("day", "bounds", "before"), [
    (D(2024, 3, 15), (D(2024, 3, 1), D(2024, 3, 31)), (D(2024, 2, 1), D(2024, 2, 29))),  # leap February
    (D(2023, 3, 1), (D(2023, 3, 1), D(2023, 3, 31)), (D(2023, 2, 1), D(2023, 2, 28))),
    (D(2025, 1, 31), (D(2025, 1, 1), D(2025, 1, 31)), (D(2024, 12, 1), D(2024, 12, 31))),  # across the year
    (D(2024, 12, 1), (D(2024, 12, 1), D(2024, 12, 31)), (D(2024, 11, 1), D(2024, 11, 30))),
])
def test_month_bounds_and_the_month_before(day, bounds, before):
    assert month_bounds(day) == bounds
    assert month_before(day) == before


def test_months_of_a_range():
    assert months(D(2024, 1, 15), D(2024, 3, 2)) == [
        (D(2024, 1, 1), D(2024, 1, 31)), (D(2024, 2, 1), D(2024, 2, 29)), (D(2024, 3, 1), D(2024, 3, 31))]
    assert months(D(2024, 12, 5), D(2025, 1, 10), clip=True) == [
        (D(2024, 12, 5), D(2024, 12, 31)), (D(2025, 1, 1), D(2025, 1, 10))]  # backfill partitions
    assert months(D(2024, 2, 29), D(2024, 2, 29), clip=True) == [(D(2024, 2, 29), D(2024, 2, 29))]
    assert months(D(2024, 2, 29), D(2024, 2, 29)) == [(D(2024, 2, 1), D(2024, 2, 29))]
    with pytest.raises(ValueError, match="before its start"):
        months(D(2024, 2, 1), D(2024, 1, 1))


def test_months_tile_a_long_range_without_gaps():
    parts = months(D(2023, 11, 17), D(2025, 2, 3), clip=True)
    assert parts[0][0] == D(2023, 11, 17) and parts[-1][1] == D(2025, 2, 3) and len(parts) == 16
    assert all((b[0] - a[1]).days == 1 for a, b in zip(parts, parts[1:], strict=False))


def test_nightly_periods_are_the_month_before_the_data_cut_and_its_month_to_date():
    assert nightly_periods(datetime(2024, 3, 10, 23, 59)) == [
        (D(2024, 2, 1), D(2024, 2, 29)), (D(2024, 3, 1), D(2024, 3, 10))]
    assert nightly_periods(datetime(2025, 1, 1, 0, 5)) == [
        (D(2024, 12, 1), D(2024, 12, 31)), (D(2025, 1, 1), D(2025, 1, 1))]
    assert nightly_periods(None) == []  # an empty warehouse publishes nothing


# ----------------------------------------------------------------------------------------------
# the data cut
# ----------------------------------------------------------------------------------------------
def test_data_cut_is_the_latest_change_of_dossiers_and_payments(duckdb_url):
    engine = fresh_warehouse(duckdb_url)
    try:
        assert data_cut(engine) is None  # nothing loaded
        load_golden(engine)
        assert data_cut(engine) == LOADED
        later = LOADED + timedelta(days=3, hours=2)
        with engine.begin() as conn:
            upsert_payment(conn, "PAY-D18", "D18", 40_000, PAID, "truc-tuyen", updated=later)
            assert data_cut(conn) == later  # on a connection too, inside its transaction
        assert data_cut(engine) == later
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------------------------
# every timestamp the warehouse records, on a UTC machine
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def utc_machine(monkeypatch):
    """This process's zone set to UTC (``TZ`` + ``tzset``: ``datetime.now()`` returns UTC)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_publication_on_a_utc_machine_is_stamped_in_local_time(prefect_harness, utc_machine, tmp_path):
    """With ``TZ=UTC``: the migrations and a publication on the empty warehouse (here), then
    ``dvc-etl report`` on the golden dataset (a subprocess). dq.schema_migrations, dq.runs,
    mart.publications (``published_at``; ``as_of`` of the empty warehouse's publication) and the
    ids that carry a time all say Vietnam's wall time, as ``now_local`` does. A machine-local
    ``datetime.now()`` would put them 7 hours earlier."""
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    since = now_local() - timedelta(seconds=1)
    engine = fresh_warehouse(url)  # the migrations
    try:
        reports.publish(engine, D(2024, 2, 1), D(2024, 2, 29), run_id="empty", reference_dir=REFERENCE_DIR)
        load_golden(engine)
    finally:
        engine.dispose()
    env = cli_env(tmp_path, url, "http://127.0.0.1:9", "unused-token", TZ="UTC",
                  DVC_REFERENCE_DIR=str(REFERENCE_DIR))
    done = run_cli(["report", "--from", f"{PERIOD[0]}", "--to", f"{PERIOD[1]}"], env, tmp_path / "work", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    until = now_local() + timedelta(seconds=1)

    def local_now(value: datetime) -> bool:
        return since <= value <= until

    engine = connect(url)
    try:
        with engine.connect() as c:
            applied = c.execute(sa.text("SELECT applied_at FROM dq.schema_migrations")).scalars().all()
            (run,) = c.execute(sa.text("SELECT run_id, started_at, finished_at, status FROM dq.runs")).fetchall()
            empty, march = c.execute(sa.text(
                "SELECT publication_id, run_id, as_of, published_at, period_start FROM mart.publications"
                " ORDER BY period_start")).fetchall()
    finally:
        engine.dispose()
    assert applied and all(local_now(t) for t in applied), (applied, since, until)
    assert (empty.period_start, march.period_start) == (D(2024, 2, 1), PERIOD[0])
    assert local_now(empty.as_of) and local_now(empty.published_at), (empty, since, until)  # no data: as of now
    assert march.as_of == LOADED  # the data cut
    assert (march.run_id, run.status) == (run.run_id, "success")
    assert local_now(run.started_at) and run.started_at <= march.published_at <= run.finished_at, (run, march)
    for stamped in (empty.publication_id.split("-")[2], march.publication_id.split("-")[2], run.run_id.split("-")[1]):
        assert local_now(datetime.strptime(stamped, "%Y%m%d%H%M%S")), (stamped, since, until)
    assert len(list((tmp_path / "reports").glob("*.xlsx"))) == 1  # a real publication, its workbook included
