"""Publication model: restatement after a late payment, atomicity, one current publication per period.

Runs on DuckDB and PostgreSQL; the dataset is the golden one of tests/test_reports.py.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tasks import reports
from tests.test_reports import (
    PAID,
    PERIOD,
    REFERENCE_DIR,
    fresh_warehouse,
    load_golden,
    rows,
    upsert_payment,
)

FIRST_CUT = datetime(2024, 4, 10, 12, 0)  # every golden row has ngay_cap_nhat = this
PAYMENT_ARRIVES = datetime(2024, 4, 15, 10, 0)


def star_online_payment(engine: sa.Engine) -> dict:
    (r,) = rows(engine, "SELECT * FROM mart.rpt_service_indicators"
                        " WHERE ma_don_vi = '*' AND indicator = 'online_payment'")
    return r


def mart_rows(engine: sa.Engine, table: str) -> list[tuple]:
    """Every row of mart.<table> (a fixed table name), as sorted tuples of text."""
    with engine.connect() as conn:
        result = conn.execute(sa.select(sa.text("*")).select_from(sa.table(table, schema="mart")))
        return sorted(tuple(str(v) for v in r) for r in result)


def test_restatement_after_a_late_payment(warehouse_url: str) -> None:
    engine = fresh_warehouse(warehouse_url)
    load_golden(engine)
    first = reports.publish(engine, *PERIOD, run_id="run-1", reference_dir=REFERENCE_DIR)
    # default as_of = max(NgayCapNhat) of dossiers and payments
    assert first.as_of == FIRST_CUT
    before = star_online_payment(engine)
    # 3.6 (tests/test_reports.py): DuocThanhToanTrucTuyen 1/2 among the fee-paying dossiers received in March
    assert (before["numerator_system"], before["denominator_system"]) == (3, 13)
    assert (before["numerator_paid_only"], before["denominator_paid_only"]) == (3, 9)

    # D18's fee (result issued 2024-03-20) is paid online on 2024-04-15: a new version of its request
    with engine.begin() as conn:
        upsert_payment(conn, "PAY-D18", "D18", 40_000, PAID, "truc-tuyen", updated=PAYMENT_ARRIVES)
    second = reports.publish(engine, *PERIOD, run_id="run-2", reference_dir=REFERENCE_DIR)
    assert second.as_of == PAYMENT_ARRIVES

    # the paid-only rate of March changes: D18 joins the settled population. 3.6 reads the dossier's own
    # flag (still 0 for D18), so the system figure stays and D18 enters the paid-only denominator
    after = star_online_payment(engine)
    assert (after["numerator_system"], after["denominator_system"]) == (3, 13)
    assert (after["numerator_paid_only"], after["denominator_paid_only"]) == (3, 10)
    assert after["rate_paid_only"] == pytest.approx(0.3) and before["rate_paid_only"] == pytest.approx(1 / 3)
    assert (after["excluded_unpaid"], after["excluded_result_issued"]) == (3, 2)
    assert (before["excluded_unpaid"], before["excluded_result_issued"]) == (4, 3)

    # mart.rpt_online_payment shows the new publication only ...
    current = rows(engine, "SELECT * FROM mart.rpt_online_payment WHERE ma_don_vi = 'H01'")
    assert [(r["publication_id"], r["as_of"], r["obligation_completed"], r["paid_online"]) for r in current] == [
        (second.publication_id, PAYMENT_ARRIVES, 4, 3)]
    assert current[0]["rate_paid_only"] == pytest.approx(3 / 4)
    # ... the history keeps the earlier one with its as_of
    hist = rows(engine, "SELECT publication_id, as_of, rate_paid_only FROM mart.rpt_online_payment_history"
                        " WHERE ma_don_vi = 'H01' ORDER BY as_of")
    assert [(r["publication_id"], r["as_of"]) for r in hist] == [
        (first.publication_id, FIRST_CUT), (second.publication_id, PAYMENT_ARRIVES)]
    assert hist[0]["rate_paid_only"] == pytest.approx(2 / 3)
    # D18 left the unpaid work list; the earlier list is still in history
    assert "D18" not in {r["ma_ho_so"] for r in rows(engine, "SELECT ma_ho_so FROM mart.rpt_unpaid_results")}
    assert rows(engine, "SELECT count(*) AS n FROM mart.rpt_unpaid_results_history WHERE ma_ho_so = 'D18'"
                        " AND publication_id = :p", p=first.publication_id)[0]["n"] == 1

    # one current publication per period
    pubs = rows(engine, "SELECT publication_id, is_current, as_of, run_id FROM mart.publications ORDER BY as_of")
    assert [(p["publication_id"], p["is_current"], p["run_id"]) for p in pubs] == [
        (first.publication_id, False, "run-1"), (second.publication_id, True, "run-2")]
    assert reports.current_publication(engine, *PERIOD).publication_id == second.publication_id
    assert reports.get_publication(engine, first.publication_id).is_current is False
    # the earlier publication stays readable: its headline is unchanged
    assert reports.headline(engine, first.publication_id)["online_payment_rate_paid_only"] == pytest.approx(1 / 3)
    assert reports.headline(engine, second)["online_payment_rate_paid_only"] == pytest.approx(0.3)
    # no duplicate rows in the current tables
    for table in reports.REPORT_TABLES:
        cols = rows(engine, "SELECT column_name FROM information_schema.columns WHERE table_schema = 'mart'"
                            " AND table_name = :t ORDER BY ordinal_position", t=table)
        at = [c["column_name"] for c in cols].index("publication_id")
        assert {r[at] for r in mart_rows(engine, table)} <= {second.publication_id}, table


def test_other_periods_are_untouched(warehouse_url: str) -> None:
    engine = fresh_warehouse(warehouse_url)
    load_golden(engine)
    march = reports.publish(engine, *PERIOD, run_id="r", reference_dir=REFERENCE_DIR)
    feb = reports.publish(engine, date(2024, 2, 1), date(2024, 2, 29), run_id="r", reference_dir=REFERENCE_DIR)
    periods = rows(engine, "SELECT DISTINCT period_start, publication_id FROM mart.rpt_progress ORDER BY period_start")
    assert [(p["period_start"], p["publication_id"]) for p in periods] == [
        (date(2024, 2, 1), feb.publication_id), (date(2024, 3, 1), march.publication_id)]
    assert {p["is_current"] for p in rows(engine, "SELECT is_current FROM mart.publications")} == {True}
    # the unpaid and uncollected work lists have no period: they are the latest publication's
    assert {r["publication_id"] for r in rows(engine, "SELECT publication_id FROM mart.rpt_unpaid_results")} == {
        feb.publication_id}
    assert {r["publication_id"] for r in rows(engine, "SELECT publication_id FROM mart.rpt_uncollected_results")} == {
        feb.publication_id}
    # form 06 keeps one set of rows per period
    assert {r["publication_id"] for r in rows(engine, "SELECT publication_id FROM mart.rpt_form06")} == {
        feb.publication_id, march.publication_id}


def snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    tables = (*reports.REPORT_TABLES, *(f"{t}_history" for t in reports.REPORT_TABLES), "publications")
    return {table: mart_rows(engine, table) for table in tables}


@pytest.mark.parametrize("fail_after", ["rpt_progress", "rpt_service_indicators", "rpt_unpaid_results",
                                        "rpt_uncollected_results"])
def test_failed_publication_leaves_the_previous_one_intact(warehouse_url: str, fail_after: str) -> None:
    engine = fresh_warehouse(warehouse_url)
    load_golden(engine)
    first = reports.publish(engine, *PERIOD, run_id="run-1", reference_dir=REFERENCE_DIR)
    with engine.begin() as conn:
        upsert_payment(conn, "PAY-D18", "D18", 40_000, PAID, "truc-tuyen", updated=datetime(2024, 4, 15))
    before = snapshot(engine)

    written: list[str] = []

    def explode(table: str) -> None:
        written.append(table)
        if table == fail_after:
            raise RuntimeError(f"simulated crash after {table}")

    with pytest.raises(RuntimeError, match="simulated crash"):
        reports.publish(engine, *PERIOD, run_id="run-2", reference_dir=REFERENCE_DIR, on_step=explode)
    assert written[-1] == fail_after  # the failure came after some tables were written
    assert snapshot(engine) == before
    assert reports.current_publication(engine, *PERIOD).publication_id == first.publication_id
    # and the warehouse is usable afterwards (temp tables gone with the rollback)
    third = reports.publish(engine, *PERIOD, run_id="run-3", reference_dir=REFERENCE_DIR)
    assert star_online_payment(engine)["publication_id"] == third.publication_id


def test_broken_reference_file_publishes_nothing(warehouse_url: str, tmp_path: Path) -> None:
    engine = fresh_warehouse(warehouse_url)
    load_golden(engine)
    reports.publish(engine, *PERIOD, run_id="run-1", reference_dir=REFERENCE_DIR)
    before = snapshot(engine)
    for name in ("simplifications.csv", "delegations.csv"):
        (tmp_path / name).write_text((REFERENCE_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "unpaid_thresholds.csv").write_text("ma_tthc,threshold_days,note\nX,sixty,\n", encoding="utf-8")
    with pytest.raises(reports.ReportError, match="unpaid_thresholds.csv line 2: threshold_days"):
        reports.publish(engine, *PERIOD, run_id="run-2", reference_dir=tmp_path)
    assert snapshot(engine) == before
    (tmp_path / "unpaid_thresholds.csv").unlink()
    (tmp_path / "targets.csv").write_text("ma_don_vi,indicator,year,target\n*,on_time,2024,95%\n", encoding="utf-8")
    with pytest.raises(reports.ReportError, match="targets.csv line 2: target '95%'"):
        reports.publish(engine, *PERIOD, run_id="run-3", reference_dir=tmp_path)
    assert snapshot(engine) == before


def test_first_publication_failing_leaves_empty_tables(warehouse_url: str) -> None:
    engine = fresh_warehouse(warehouse_url)
    load_golden(engine)

    def explode(table: str) -> None:
        if table == "rpt_simplified_procedures":
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        reports.publish(engine, *PERIOD, run_id="r", reference_dir=REFERENCE_DIR, on_step=explode)
    assert all(v == [] for v in snapshot(engine).values())
