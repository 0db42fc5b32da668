"""Golden tests of the report tables (shared/spec/reports.md), on DuckDB and PostgreSQL.

One hand-made dataset (``GOLDEN_*`` below) is loaded straight into core.*, published for March
2024, and every expected figure is worked out by hand in the comments next to the assertions.

Period: 2024-03-01 .. 2024-03-31. Data cut (as_of): 2024-04-10 12:00.

Units (source S1):
  H01  UBND huyện A       level 2 (district)
  X01  UBND xã B          level 3 (commune)
  X02  UBND xã C          level 3 until 2024-03-14, then "UBND thị trấn C" level 2 (changed level)
Procedures (source S1 catalogue):
  P1 = 1.000001.000.00.00.H08  MucDoDVC 4, online payment offered, paper result (KetQuaGiay 1)
  P2 = 1.000002.000.00.00.H08  MucDoDVC 2, no online payment, KetQuaGiay 0
  PS = 1.001653.000.00.00.H08  the simplified procedure of table 2a, MucDoDVC 3, KetQuaGiay 1
  PD = 1.002425.000.00.00.H08  the 2nd delegated procedure of table 2đ (no dossiers)
  (the karaoke licence 1.000903... and the short code 1.001653.H08 are NOT in the catalogue)
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks import reports
from tasks.settings import PROJECT_ROOT
from tasks.warehouse import connect, run_sql_file, upgrade

REFERENCE_DIR = PROJECT_ROOT / "reference"
PERIOD = (date(2024, 3, 1), date(2024, 3, 31))
AS_OF = datetime(2024, 4, 10, 12, 0)
LOADED = datetime(2024, 4, 10, 12, 0)

P1, P2, PS, PD = (
    "1.000001.000.00.00.H08",
    "1.000002.000.00.00.H08",
    "1.001653.000.00.00.H08",
    "1.002425.000.00.00.H08",
)
PS_SHORT = "1.001653.H08"
KARAOKE = "1.000903.000.00.00.H08"
MARRIAGE = "2.000806.000.00.00.H08"


def ts(text: str | None) -> datetime | None:
    """'2024-03-05 09:00' or '2024-03-05' -> datetime."""
    if text is None:
        return None
    return datetime.fromisoformat(text if " " in text else f"{text} 00:00")


# ----------------------------------------------------------------------------------------------
# insert helpers: hand-made rows straight into core.*
# ----------------------------------------------------------------------------------------------
def insert_unit(conn: sa.Connection, ma: str, tu: str, den: str | None, ten: str, cap: int,
                source: str = "S1") -> None:
    conn.execute(sa.text(
        "INSERT INTO core.units (source, ma_don_vi, hieu_luc_tu, hieu_luc_den, ten_don_vi, cap_don_vi,"
        " ma_don_vi_cha, ma_don_vi_ke_nhiem, _source, _run_id, _loaded_at)"
        " VALUES (:s, :m, :tu, :den, :ten, :cap, NULL, NULL, 'api', 'test', :l)"
    ), {"s": source, "m": ma, "tu": date.fromisoformat(tu), "den": date.fromisoformat(den) if den else None,
        "ten": ten, "cap": cap, "l": LOADED})


def insert_procedure(conn: sa.Connection, ma: str, ten: str, muc_do: int, co_tttt: int, kqg: int,
                     source: str = "S1") -> None:
    conn.execute(sa.text(
        "INSERT INTO core.procedures (source, ma_tthc, ten_tthc, muc_do_dvc, co_phi_le_phi,"
        " co_thanh_toan_truc_tuyen, ket_qua_giay, _source, _run_id, _loaded_at)"
        " VALUES (:s, :m, :t, :md, 1, :tt, :k, 'api', 'test', :l)"
    ), {"s": source, "m": ma, "t": ten, "md": muc_do, "tt": co_tttt, "k": kqg, "l": LOADED})


def insert_dossier(conn: sa.Connection, ma: str, *, tthc: str, don_vi: str, status: int, received: str | None,
                   due: str | None = None, end: str | None = None, channel: int | None = 1,
                   dttt: int | None = 0, reuse: bool | None = False, e_result: bool | None = False,
                   can_bo: str | None = None, ten_tthc: str | None = None, source: str = "S1",
                   updated: datetime = LOADED) -> None:
    conn.execute(sa.text(
        "INSERT INTO core.dossiers (source, ma_ho_so, ma_tthc, ten_tthc, ma_don_vi, ten_don_vi, kenh_thuc_hien,"
        " ngay_nop_ho_so, ngay_tiep_nhan, ngay_hen_tra, ngay_ket_thuc_xu_ly, trang_thai,"
        " duoc_thanh_toan_truc_tuyen, has_reuse, has_e_result, ma_can_bo_xu_ly, can_bo_xu_ly,"
        " ngay_cap_nhat, _source, _run_id, _loaded_at)"
        " VALUES (:s, :m, :tthc, :ten_tthc, :dv, :ten_dv, :k, :nop, :tn, :ht, :kt, :st, :dttt, :reuse, :er,"
        " :cb, :cbten, :upd, 'api', 'test', :l)"
    ), {"s": source, "m": ma, "tthc": tthc, "ten_tthc": ten_tthc or f"Tên {tthc}", "dv": don_vi,
        "ten_dv": f"Đơn vị {don_vi} (từ hồ sơ)", "k": channel, "nop": ts(received), "tn": ts(received),
        "ht": ts(due), "kt": ts(end), "st": status, "dttt": dttt, "reuse": reuse, "er": e_result,
        "cb": can_bo, "cbten": f"Cán bộ {can_bo}" if can_bo else None, "upd": updated, "l": LOADED})


def upsert_payment(conn: sa.Connection, ma: str, ma_ho_so: str, so_tien: int, trang_thai: str,
                   hinh_thuc_thanh_toan: str | None = None, hinh_thuc_thu: str = "Thu sau",
                   source: str = "S1", updated: datetime = LOADED) -> None:
    """Insert or replace a payment request (as the loader's upsert does)."""
    conn.execute(sa.text("DELETE FROM core.payments WHERE source = :s AND ma = :m"), {"s": source, "m": ma})
    conn.execute(sa.text(
        "INSERT INTO core.payments (source, ma, ma_ho_so, so_tien, trang_thai, hinh_thuc_thanh_toan,"
        " hinh_thuc_thu, ngay_cap_nhat, _source, _run_id, _loaded_at)"
        " VALUES (:s, :m, :h, :t, :tt, :httt, :htt, :upd, 'api', 'test', :l)"
    ), {"s": source, "m": ma, "h": ma_ho_so, "t": so_tien, "tt": trang_thai, "httt": hinh_thuc_thanh_toan,
        "htt": hinh_thuc_thu, "upd": updated, "l": LOADED})


PAID, WAITING, NOT_PAID, REFUNDED, CANCELLED = (
    "Đã thanh toán", "Chờ thanh toán", "Chưa thanh toán", "Đã hoàn phí", "Hủy thanh toán")


def load_golden(engine: Engine) -> None:
    """The golden dataset. Each line says what it exercises."""
    with engine.begin() as c:
        insert_unit(c, "H01", "2020-01-01", None, "UBND huyện A", 2)
        insert_unit(c, "X01", "2020-01-01", None, "UBND xã B", 3)
        # X02 changed level on 2024-03-15: level as of each dossier's receipt date
        insert_unit(c, "X02", "2020-01-01", "2024-03-14", "UBND xã C", 3)
        insert_unit(c, "X02", "2024-03-15", None, "UBND thị trấn C", 2)

        insert_procedure(c, P1, "Thủ tục một", muc_do=4, co_tttt=1, kqg=1)
        insert_procedure(c, P2, "Thủ tục hai", muc_do=2, co_tttt=0, kqg=0)
        insert_procedure(c, PS, "Đổi, cấp lại Giấy xác nhận khuyết tật", muc_do=3, co_tttt=0, kqg=1)
        insert_procedure(c, PD, "Cấp giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm", 2, 0, 0)

        d = insert_dossier
        # ---- H01 (district) --------------------------------------------------------------------
        # D01 before due (end 03-11 < due 03-12), online, paid online, e-result, reused data
        d(c, "D01", tthc=P1, don_vi="H01", status=10, received="2024-03-05 09:00", due="2024-03-12 17:00",
          end="2024-03-11 10:00", channel=2, reuse=True, e_result=True)
        upsert_payment(c, "PAY-D01", "D01", 50_000, PAID, "truc-tuyen")
        # D02 finished later in the day than the due TIME, on the due DATE -> on time; paid cash
        d(c, "D02", tthc=P1, don_vi="H01", status=10, received="2024-03-05 09:00", due="2024-03-12 08:00",
          end="2024-03-12 16:00", channel=1)
        upsert_payment(c, "PAY-D02", "D02", 50_000, PAID, "tien-mat")
        # D03 late by one day; result issued (status 9), fee awaiting payment
        d(c, "D03", tthc=P1, don_vi="H01", status=9, received="2024-03-05 09:00", due="2024-03-12 17:00",
          end="2024-03-13 09:00", channel=2, can_bo="CB1")
        upsert_payment(c, "PAY-D03", "D03", 30_000, WAITING)
        # D04 withdrawn (7) after its due date -> on time; postal channel
        d(c, "D04", tthc=P1, don_vi="H01", status=7, received="2024-03-06 09:00", due="2024-03-08 17:00",
          end="2024-03-20 09:00", channel=3)
        # D05 rejected at intake (3), D06 not yet accepted (1): never received, counted nowhere
        d(c, "D05", tthc=P1, don_vi="H01", status=3, received="2024-03-06 09:00", channel=2)
        d(c, "D06", tthc=P1, don_vi="H01", status=1, received="2024-03-07 09:00", channel=2)
        # D07 waiting for a supplement (5), due 03-20 < period_end -> still in time
        d(c, "D07", tthc=P1, don_vi="H01", status=5, received="2024-03-10 09:00", due="2024-03-20 17:00",
          channel=2, dttt=None)
        # D08 empty due date -> on time; channel null -> in person
        d(c, "D08", tthc=P2, don_vi="H01", status=10, received="2024-03-10 09:00", due=None,
          end="2024-03-25 09:00", channel=None)
        # D09 received ON period_start, resolved the day AFTER period_end -> in progress at the end,
        # overdue (due 03-29 < 03-31)
        d(c, "D09", tthc=P1, don_vi="H01", status=10, received="2024-03-01 08:00", due="2024-03-29 17:00",
          end="2024-04-01 09:00", channel=1, can_bo="CB2")
        # D10 received ON period_end -> received, in progress, in time
        d(c, "D10", tthc=P2, don_vi="H01", status=4, received="2024-03-31 16:00", due="2024-04-05 17:00")
        # D11 received before the period, open -> carried over, overdue at the end
        d(c, "D11", tthc=P1, don_vi="H01", status=4, received="2024-02-29 09:00", due="2024-03-10 17:00",
          can_bo="CB1")
        # D12 received and resolved before the period -> out of scope
        d(c, "D12", tthc=P1, don_vi="H01", status=10, received="2024-02-20 09:00", due="2024-03-01 17:00",
          end="2024-02-28 09:00")
        # D13 carried over, resolved on period_start, before due
        d(c, "D13", tthc=P2, don_vi="H01", status=10, received="2024-02-25 09:00", due="2024-03-05 17:00",
          end="2024-03-01 09:00")
        # D14 received after the period -> out of scope
        d(c, "D14", tthc=P1, don_vi="H01", status=2, received="2024-04-01 09:00", due="2024-04-05 17:00")
        # D15 refunded request -> no obligation (and not "paid online": the request no longer counts)
        d(c, "D15", tthc=P1, don_vi="H01", status=10, received="2024-03-15 09:00", due="2024-03-20 17:00",
          end="2024-03-18 09:00", channel=2, e_result=True)
        upsert_payment(c, "PAY-D15", "D15", 20_000, REFUNDED, "truc-tuyen")
        # D16 exempt request -> no obligation
        d(c, "D16", tthc=P1, don_vi="H01", status=10, received="2024-03-15 09:00", due="2024-03-20 17:00",
          end="2024-03-16 09:00")
        upsert_payment(c, "PAY-D16", "D16", 10_000, WAITING, hinh_thuc_thu="Đối tượng miễn phí")
        # D17 cancelled request -> no obligation; in progress in time
        d(c, "D17", tthc=P1, don_vi="H01", status=4, received="2024-03-16 09:00", due="2024-04-10 17:00",
          channel=2)
        upsert_payment(c, "PAY-D17", "D17", 30_000, CANCELLED)
        # D18 result issued (e-result in the citizen's store), fee still awaited: the payment arrives
        # later (test_restatement). Reused data.
        d(c, "D18", tthc=P1, don_vi="H01", status=10, received="2024-03-18 09:00", due="2024-03-22 17:00",
          end="2024-03-20 09:00", channel=2, reuse=True, e_result=True)
        upsert_payment(c, "PAY-D18", "D18", 40_000, WAITING)
        # D19 no payment request known, DuocThanhToanTrucTuyen = 2 -> fallback: paid online (settled)
        d(c, "D19", tthc=P1, don_vi="H01", status=10, received="2024-03-20 09:00", due="2024-03-25 17:00",
          end="2024-03-22 09:00", channel=2, dttt=2)
        # D20 waiting for the fee (6), collected before processing, not paid -> in progress, unpaid
        d(c, "D20", tthc=P1, don_vi="H01", status=6, received="2024-03-25 09:00", due="2024-04-05 17:00",
          channel=2)
        upsert_payment(c, "PAY-D20", "D20", 60_000, NOT_PAID, hinh_thuc_thu="Thu trước")
        # D21/D22/D23: the simplified procedure (decision 2023-12-03)
        d(c, "D21", tthc=PS, don_vi="H01", status=10, received="2024-03-04 09:00", due="2024-03-08 17:00",
          end="2024-03-07 09:00")
        d(c, "D22", tthc=PS_SHORT, don_vi="H01", status=10, received="2024-03-04 09:00",
          due="2024-03-08 17:00", end="2024-03-09 09:00", can_bo="CB2",
          ten_tthc="Đổi, cấp lại Giấy xác nhận khuyết tật")
        d(c, "D23", tthc=PS, don_vi="H01", status=10, received="2023-11-20 09:00", due="2023-11-27 17:00",
          end="2024-03-02 09:00", can_bo="CB1")
        # D24 the delegated karaoke licence (not in the catalogue: name from the dossier)
        d(c, "D24", tthc=KARAOKE, don_vi="H01", status=10, received="2024-03-05 09:00",
          due="2024-03-19 17:00", end="2024-03-15 09:00", ten_tthc="Cấp giấy phép kinh doanh Karaoke")

        # ---- X01 (commune) ---------------------------------------------------------------------
        d(c, "D30", tthc=P1, don_vi="X01", status=10, received="2024-03-11 09:00", due="2024-03-12 17:00",
          end="2024-03-14 09:00", channel=2, e_result=True, can_bo="CB3")
        upsert_payment(c, "PAY-D30", "D30", 15_000, PAID, "truc-tuyen")
        d(c, "D31", tthc=P1, don_vi="X01", status=4, received="2024-03-11 09:00", due="2024-03-20 17:00",
          can_bo="CB3")
        # D32 foreign-element marriage, resolved 2024-02-05, fee unpaid: work list, threshold 60 days
        d(c, "D32", tthc=MARRIAGE, don_vi="X01", status=10, received="2024-01-20 09:00",
          due="2024-02-10 17:00", end="2024-02-05 09:00")
        upsert_payment(c, "PAY-D32", "D32", 1_500_000, WAITING)
        # D33 carried over, resolved 03-01 before due, result issued, fee not paid (40 days by as_of)
        d(c, "D33", tthc=P1, don_vi="X01", status=9, received="2024-02-26 09:00", due="2024-03-04 17:00",
          end="2024-03-01 09:00")
        upsert_payment(c, "PAY-D33", "D33", 25_000, NOT_PAID)
        # a second source with the SAME dossier code D01 (units and procedures only in S1's catalogue)
        d(c, "D01", tthc=P1, don_vi="X01", status=10, received="2024-03-08 09:00", due="2024-03-10 17:00",
          end="2024-03-09 09:00", channel=2, source="S2")
        upsert_payment(c, "PAY-D01", "D01", 70_000, WAITING, source="S2")

        # ---- X02 (changed level on 2024-03-15) -------------------------------------------------
        d(c, "D40", tthc=P2, don_vi="X02", status=10, received="2024-03-10 09:00", due="2024-03-15 17:00",
          end="2024-03-12 09:00")
        d(c, "D41", tthc=P2, don_vi="X02", status=10, received="2024-03-20 09:00", due="2024-03-22 17:00",
          end="2024-03-25 09:00", channel=2, can_bo="CB4")


def fresh_warehouse(url: str) -> Engine:
    engine = connect(url)
    upgrade(engine)
    return engine


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


def by_key(records: list[dict[str, Any]], *key: str) -> dict[tuple, dict[str, Any]]:
    out = {tuple(r[k] for k in key): r for r in records}
    assert len(out) == len(records), f"duplicate keys {key}"
    return out


@pytest.fixture
def golden(warehouse_url: str) -> tuple[Engine, reports.Publication]:
    engine = fresh_warehouse(warehouse_url)
    load_golden(engine)
    pub = reports.publish(engine, *PERIOD, run_id="golden", as_of=AS_OF, reference_dir=REFERENCE_DIR)
    yield engine, pub
    engine.dispose()


# ----------------------------------------------------------------------------------------------
# the facts table (the definitions of section 1, per dossier)
# ----------------------------------------------------------------------------------------------
def test_dossier_facts_flags(warehouse_url: str) -> None:
    engine = fresh_warehouse(warehouse_url)
    load_golden(engine)
    with engine.begin() as conn:
        run_sql_file(conn, "reports/_dossier_facts.sql",
                     {"period_start": PERIOD[0], "period_end": PERIOD[1], "as_of": AS_OF})
        facts = {(r["source"], r["ma_ho_so"]): dict(r)
                 for r in conn.execute(sa.text("SELECT * FROM tmp_dossier_facts")).mappings()}
        conn.rollback()
    f = lambda m, s="S1": facts[(s, m)]  # noqa: E731
    # statuses 1 and 3 are never received: with no fee owed they cannot count in any period, so
    # the facts leave them out, as they do a dossier resolved before the period (D12, February)
    assert ("S1", "D05") not in facts and ("S1", "D06") not in facts and ("S1", "D12") not in facts
    # timeliness by date
    assert [f(m)["timeliness"] for m in ("D01", "D02", "D03", "D04", "D08")] == [
        "before_due", "on_time", "late", "on_time", "on_time"]
    # period edges
    assert f("D09")["received_in_period"] and not f("D09")["resolved_in_period"]
    assert f("D09")["in_progress_at_end"] and f("D09")["overdue"]
    assert f("D10")["received_in_period"] and f("D10")["in_progress_at_end"] and not f("D10")["overdue"]
    assert f("D11")["carried_over"] and f("D11")["overdue"]
    assert f("D07")["in_progress_at_end"] and not f("D07")["overdue"]  # status 5: in time
    # unit level as of the receipt date
    assert (f("D40")["cap_don_vi"], f("D40")["ten_don_vi"]) == (3, "UBND xã C")
    assert (f("D41")["cap_don_vi"], f("D41")["ten_don_vi"]) == (2, "UBND thị trấn C")
    # obligations: refunded, exempt and cancelled requests are none
    for m in ("D15", "D16", "D17"):
        assert not f(m)["has_obligation"] and f(m)["fees_settled"]
    assert not f("D15")["paid_online"]
    assert f("D19")["is_payment_fallback"] and f("D19")["paid_online"] and f("D19")["obligation_completed"]
    assert f("D03")["result_issued_fees_unpaid"] and f("D03")["amount_due"] == 30_000
    assert f("D20")["in_progress_fees_unpaid"] and not f("D20")["result_issued_fees_unpaid"]
    # two sources: payments join on (source, ma_ho_so)
    assert f("D01", "S1")["obligation_completed"] and f("D01", "S1")["paid_online"]
    assert f("D01", "S2")["result_issued_fees_unpaid"] and f("D01", "S2")["amount_due"] == 70_000
    assert f("D01", "S2")["cap_don_vi"] == 3  # unit from the other source's catalogue


# ----------------------------------------------------------------------------------------------
# mart.rpt_progress
# ----------------------------------------------------------------------------------------------
def test_golden_progress(golden: tuple[Engine, reports.Publication]) -> None:
    engine, pub = golden
    got = by_key(rows(engine, "SELECT * FROM mart.rpt_progress"), "ma_don_vi", "cap_don_vi")
    assert set(got) == {("H01", 2), ("X01", 3), ("X02", 3), ("X02", 2)}
    # H01. Received in March (status not 1/3): D01 D02 D03 D04 D07 D08 D09 D10 D15 D16 D17 D18 D19 D20
    # D21 D22 D24 = 17. Online (2): D01 D03 D07 D15 D17 D18 D19 D20 = 8; postal: D04 = 1; in person:
    # the other 8 (D08's null channel counts as 1). Carried over: D11 D13 D23 = 3 (D12 resolved in
    # February). Resolved in March: 14 = before due D01 D13 D15 D16 D18 D19 D21 D24 (8) + on time D02
    # (same day) D04 (withdrawn) D08 (no due date) (3) + late D03 D22 D23 (3). In progress at 03-31:
    # D07 (status 5) D10 D17 D20 in time, D09 D11 overdue. 17 + 3 = 14 + 6.
    h = got[("H01", 2)]
    assert {k: h[k] for k in (
        "ten_don_vi", "received_total", "received_online", "received_direct", "received_postal", "carried_over",
        "to_handle_total", "resolved_total", "resolved_before_due", "resolved_on_time", "resolved_late",
        "in_progress_total", "in_progress_in_time", "in_progress_overdue")} == {
        "ten_don_vi": "UBND huyện A", "received_total": 17, "received_online": 8, "received_direct": 8,
        "received_postal": 1, "carried_over": 3, "to_handle_total": 20, "resolved_total": 14,
        "resolved_before_due": 8, "resolved_on_time": 3, "resolved_late": 3, "in_progress_total": 6,
        "in_progress_in_time": 4, "in_progress_overdue": 2}
    assert h["on_time_rate"] == pytest.approx(11 / 14)
    # X01: received D30 D31 S2/D01 (online D30, S2/D01); carried over D33; resolved D30 (late), D33 and
    # S2/D01 (before due); in progress D31 (overdue).
    x = got[("X01", 3)]
    assert (x["received_total"], x["received_online"], x["received_direct"], x["carried_over"]) == (3, 2, 1, 1)
    assert (x["resolved_total"], x["resolved_before_due"], x["resolved_on_time"], x["resolved_late"]) == (3, 2, 0, 1)
    assert (x["in_progress_total"], x["in_progress_in_time"], x["in_progress_overdue"]) == (1, 0, 1)
    assert x["on_time_rate"] == pytest.approx(2 / 3)
    # X02: D40 received as a commune (before 03-15), before due; D41 as level 2, late.
    assert (got[("X02", 3)]["received_total"], got[("X02", 3)]["resolved_before_due"]) == (1, 1)
    assert got[("X02", 3)]["on_time_rate"] == 1.0
    assert got[("X02", 3)]["ten_don_vi"] == "UBND xã C"
    assert (got[("X02", 2)]["received_online"], got[("X02", 2)]["resolved_late"]) == (1, 1)
    assert got[("X02", 2)]["on_time_rate"] == 0.0
    assert got[("X02", 2)]["ten_don_vi"] == "UBND thị trấn C"
    for r in got.values():
        assert r["period_start"] == PERIOD[0] and r["period_end"] == PERIOD[1]
        assert r["as_of"] == AS_OF and r["publication_id"] == pub.publication_id


def test_headline(golden: tuple[Engine, reports.Publication]) -> None:
    engine, pub = golden
    h = reports.headline(engine, pub)
    # received 17 + 3 + 1 + 1 = 22; resolved 14 + 3 + 1 + 1 = 19; late: H01 3 + X01 1 + X02(level 2) 1 = 5,
    # at district level H01 3 + X02(level 2) 1 = 4, at commune level X01 1.
    assert (h["received"], h["resolved"], h["late"], h["late_district"], h["late_commune"]) == (22, 19, 5, 4, 1)
    assert h["sentence"] == "05/19 hồ sơ trễ hạn, trong đó cấp huyện 04, cấp xã 01"
    # on time: (19 - 5) / 19; paid-only 11 / 15 (see test_golden_service_indicators)
    assert h["on_time_rate_system"] == pytest.approx(14 / 19)
    assert h["on_time_rate_paid_only"] == pytest.approx(11 / 15)
    assert h["online_payment_rate_system"] == pytest.approx(3 / 8)
    assert h["online_payment_rate_paid_only"] == pytest.approx(3 / 4)
    assert h["as_of"] == AS_OF
    assert reports.headline(engine, PERIOD)["publication_id"] == pub.publication_id


# ----------------------------------------------------------------------------------------------
# mart.rpt_online_payment
# ----------------------------------------------------------------------------------------------
def test_golden_online_payment(golden: tuple[Engine, reports.Publication]) -> None:
    engine, _ = golden
    got = by_key(rows(engine, "SELECT * FROM mart.rpt_online_payment"), "ma_don_vi", "ma_tthc")
    assert set(got) == {("H01", P1), ("X01", P1)}
    # H01/P1, received in March with an obligation: D01 (paid online), D02 (paid cash), D19 (fallback:
    # paid online), D03 and D18 (result issued, unpaid), D20 (in progress, unpaid). D15/D16/D17 have
    # refunded / exempt / cancelled requests: no obligation.
    h = got[("H01", P1)]
    assert {k: h[k] for k in (
        "with_obligation", "obligation_completed", "paid_online", "paid_online_completed", "paid_offline",
        "unpaid_result_issued", "unpaid_in_progress", "excluded_unpaid", "amount_due")} == {
        "with_obligation": 6, "obligation_completed": 3, "paid_online": 2, "paid_online_completed": 2,
        "paid_offline": 1, "unpaid_result_issued": 2, "unpaid_in_progress": 1, "excluded_unpaid": 3,
        "amount_due": 30_000 + 40_000 + 60_000}
    assert h["rate_system"] == pytest.approx(2 / 6)      # paid online / with obligation
    assert h["rate_paid_only"] == pytest.approx(2 / 3)   # paid online & completed / completed
    assert h["ten_tthc"] == "Thủ tục một" and h["cap_don_vi"] == 2
    # X01/P1: D30 paid online; S2/D01 result issued, unpaid (S1's D01 payment does not leak into it)
    x = got[("X01", P1)]
    assert (x["with_obligation"], x["obligation_completed"], x["paid_online"], x["unpaid_result_issued"]) == (
        2, 1, 1, 1)
    assert (x["rate_system"], x["rate_paid_only"], x["amount_due"]) == (0.5, 1.0, 70_000)


# ----------------------------------------------------------------------------------------------
# mart.rpt_service_indicators
# ----------------------------------------------------------------------------------------------
INDICATOR_COLUMNS = ("numerator_system", "denominator_system", "numerator_paid_only", "denominator_paid_only",
                     "excluded_unpaid", "excluded_result_issued", "excluded_in_progress")


def test_golden_service_indicators(golden: tuple[Engine, reports.Publication]) -> None:
    engine, _ = golden
    got = by_key(rows(engine, "SELECT * FROM mart.rpt_service_indicators"), "ma_don_vi", "cap_don_vi", "indicator")
    assert len(got) == 5 * 7  # 4 unit rows + '*', x 7 indicators

    def counts(unit: str, cap: int | None, indicator: str) -> tuple[int, ...]:
        return tuple(got[(unit, cap, indicator)][k] for k in INDICATOR_COLUMNS)

    # Fees not settled: D03, D18 (result issued), D20 (in progress) in H01; D33, S2/D01 (result issued) in X01.
    # H01, (num, den, num paid-only, den paid-only, excluded, of which result issued, in progress):
    # on_time: 14 resolved, 11 on time; D03 (late) and D18 (before due) removed -> 10/12
    assert counts("H01", 2, "on_time") == (11, 14, 10, 12, 2, 2, 0)
    # online_submission: 8/17 online; D03 D18 D20 (all online) removed -> 5/14
    assert counts("H01", 2, "online_submission") == (8, 17, 5, 14, 3, 2, 1)
    # online_payment: as rpt_online_payment
    assert counts("H01", 2, "online_payment") == (2, 6, 2, 3, 3, 2, 1)
    # e_result: resolved dossiers of KetQuaGiay=1 procedures: P1 D01 D02 D03 D04 D15 D16 D18 D19 + PS D21
    # D23 (D22's short code is not in the catalogue) = 10; e-result D01 D15 D18 = 3; minus D03 D18 -> 2/8
    assert counts("H01", 2, "e_result") == (3, 10, 2, 8, 2, 2, 0)
    # reuse: D01 D18 of 17; minus D03 D18 D20 -> 1/14
    assert counts("H01", 2, "reuse") == (2, 17, 1, 14, 3, 2, 1)
    # online_service_uptake: procedures MucDoDVC 3/4 with a received dossier: P1 (online: yes), PS (D21
    # in person) -> 1/2; paid-only still 1/2 (D01 is settled); 3 dossiers removed (D03 D18 D20)
    assert counts("H01", 2, "online_service_uptake") == (1, 2, 1, 2, 3, 2, 1)
    # online_payment_uptake: P1 (online payment offered) had obligations and D01 paid online -> 1/1
    assert counts("H01", 2, "online_payment_uptake") == (1, 1, 1, 1, 3, 2, 1)

    # X01: resolved D30 (late) D33 S2/D01 (before due, both unpaid) -> 2/3, paid-only 0/1
    assert counts("X01", 3, "on_time") == (2, 3, 0, 1, 2, 2, 0)
    assert got[("X01", 3, "on_time")]["rate_paid_only"] == 0.0
    assert counts("X01", 3, "online_submission") == (2, 3, 1, 2, 1, 1, 0)
    assert counts("X01", 3, "online_payment") == (1, 2, 1, 1, 1, 1, 0)
    assert counts("X01", 3, "e_result") == (1, 3, 1, 1, 2, 2, 0)
    assert counts("X01", 3, "reuse") == (0, 3, 0, 2, 1, 1, 0)
    assert got[("X01", 3, "reuse")]["rate_system"] == 0.0  # a zero numerator is 0, not null

    # X02 at level 2 (D41 only, procedure P2: no fee, no paper result, MucDoDVC 2): zero denominators
    for ind in ("online_payment", "e_result", "online_service_uptake", "online_payment_uptake"):
        r = got[("X02", 2, ind)]
        assert (r["denominator_system"], r["rate_system"], r["rate_paid_only"]) == (0, None, None), ind
    assert counts("X02", 2, "on_time") == (0, 1, 0, 1, 0, 0, 0)
    assert counts("X02", 3, "on_time") == (1, 1, 1, 1, 0, 0, 0)

    # the whole jurisdiction '*': dossier indicators are sums of the units ...
    assert counts("*", None, "on_time") == (14, 19, 11, 15, 4, 4, 0)
    assert counts("*", None, "online_submission") == (11, 22, 7, 18, 4, 3, 1)
    assert counts("*", None, "online_payment") == (3, 8, 3, 4, 4, 3, 1)
    assert counts("*", None, "e_result") == (4, 13, 3, 9, 4, 4, 0)
    assert counts("*", None, "reuse") == (2, 22, 1, 18, 4, 3, 1)
    # ... procedure indicators count each procedure once: P1 and PS -> 1/2 (not 1 + 1 from H01 and X01)
    assert counts("*", None, "online_service_uptake") == (1, 2, 1, 2, 4, 3, 1)
    assert counts("*", None, "online_payment_uptake") == (1, 1, 1, 1, 4, 3, 1)
    star = got[("*", None, "on_time")]
    assert star["rate_system"] == pytest.approx(14 / 19) and star["rate_paid_only"] == pytest.approx(11 / 15)
    assert star["indicator_label"] == "Tỷ lệ hồ sơ giải quyết đúng hạn" and star["indicator_order"] == 1
    # on_time system agrees with rpt_progress (form 06), unit by unit
    progress = by_key(rows(engine, "SELECT * FROM mart.rpt_progress"), "ma_don_vi", "cap_don_vi")
    for (unit, cap), p in progress.items():
        assert got[(unit, cap, "on_time")]["rate_system"] == p["on_time_rate"]


# ----------------------------------------------------------------------------------------------
# tables 2a and 2đ, late by official, unpaid results
# ----------------------------------------------------------------------------------------------
def test_golden_simplified_and_delegated(golden: tuple[Engine, reports.Publication]) -> None:
    engine, _ = golden
    (s,) = rows(engine, "SELECT * FROM mart.rpt_simplified_procedures")
    # D21 (before due) and D22 (short code, late) count; D23 was received before the decision (2023-12-03)
    assert (s["stt"], s["ma_tthc"], s["resolved_on_time"], s["resolved_late"]) == (1, PS, 1, 1)
    assert s["ten_tthc"] == "Đổi, cấp lại Giấy xác nhận khuyết tật"
    assert s["quyet_dinh"] == "Quyết định số 4476/QĐ-UBND ngày 03/12/2023"
    assert s["ngay_quyet_dinh"] == date(2023, 12, 3) and s["so_ngay_cat_giam"] == 1
    assert "05 ngày làm việc xuống còn 04 ngày làm việc" in s["noi_dung_cat_giam"]
    assert s["danh_gia"].startswith("Người dân sẽ giảm chi phí")
    d = by_key(rows(engine, "SELECT * FROM mart.rpt_delegated_procedures"), "stt")
    assert (d[(1,)]["ma_tthc"], d[(1,)]["resolved_on_time"], d[(1,)]["resolved_late"]) == (KARAOKE, 1, 0)
    assert d[(1,)]["ten_tthc"] == "Cấp giấy phép kinh doanh Karaoke"  # from the dossier
    assert d[(1,)]["van_ban"] == "Quyết định số 3394/QĐ-UBND ngày 14/11/2013 của UBND tỉnh"
    assert (d[(2,)]["ma_tthc"], d[(2,)]["resolved_on_time"], d[(2,)]["resolved_late"]) == (PD, 0, 0)
    assert d[(2,)]["ngay_hieu_luc"] == date(2020, 8, 20)  # the later of 12/8/2020 and 20/8/2020
    assert d[(2,)]["ten_tthc"].startswith("Cấp giấy chứng nhận cơ sở đủ điều kiện")  # from the catalogue


def test_golden_late_by_official(golden: tuple[Engine, reports.Publication]) -> None:
    engine, _ = golden
    got = by_key(rows(engine, "SELECT * FROM mart.rpt_late_by_official"), "month", "ma_can_bo", "ma_don_vi")
    # resolved late in March: D03 D23 (CB1), D22 (CB2), D30 (CB3), D41 (CB4);
    # open and overdue on 03-31: D11 (CB1), D09 (CB2, resolved only on 04-01), D31 (CB3); D07 is status 5.
    assert {k: (r["late_resolved"], r["late_in_progress"]) for k, r in got.items()} == {
        ("2024-03", "CB1", "H01"): (2, 1),
        ("2024-03", "CB2", "H01"): (1, 1),
        ("2024-03", "CB3", "X01"): (1, 1),
        ("2024-03", "CB4", "X02"): (1, 0),
    }
    assert got[("2024-03", "CB1", "H01")]["can_bo"] == "Cán bộ CB1"
    assert got[("2024-03", "CB4", "X02")]["cap_don_vi"] == 2


def test_golden_unpaid_results(golden: tuple[Engine, reports.Publication]) -> None:
    engine, pub = golden
    got = by_key(rows(engine, "SELECT * FROM mart.rpt_unpaid_results"), "source", "ma_ho_so")
    # days from date(end) to 2024-04-10: D03 03-13 -> 28, D18 03-20 -> 21, D33 03-01 -> 40,
    # S2/D01 03-09 -> 32, D32 02-05 -> 65 (threshold 60 for the foreign-element marriage, else 30)
    assert {k: (r["days_outstanding"], r["threshold_days"], r["over_threshold"], r["amount_due"])
            for k, r in got.items()} == {
        ("S1", "D03"): (28, 30, False, 30_000),
        ("S1", "D18"): (21, 30, False, 40_000),
        ("S1", "D33"): (40, 30, True, 25_000),
        ("S2", "D01"): (32, 30, True, 70_000),
        ("S1", "D32"): (65, 60, True, 1_500_000),
    }
    assert all(r["as_of"] == AS_OF and r["publication_id"] == pub.publication_id for r in got.values())
    assert "period_start" not in next(iter(got.values()))


# ----------------------------------------------------------------------------------------------
# shape
# ----------------------------------------------------------------------------------------------
def test_current_and_history_tables_have_the_same_columns(warehouse_url: str) -> None:
    engine = fresh_warehouse(warehouse_url)
    for table in reports.REPORT_TABLES:
        cols = {
            t: [r["column_name"] for r in rows(
                engine,
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'mart'"
                " AND table_name = :t ORDER BY ordinal_position", t=t)]
            for t in (table, f"{table}_history")
        }
        assert cols[table] == cols[f"{table}_history"], table
        assert {"as_of", "publication_id"} <= set(cols[table])
        if table not in reports.UNPERIODED_TABLES:
            assert {"period_start", "period_end"} <= set(cols[table])


def test_empty_warehouse_publishes_empty_tables(warehouse_url: str) -> None:
    engine = fresh_warehouse(warehouse_url)
    pub = reports.publish(engine, *PERIOD, run_id="empty", reference_dir=REFERENCE_DIR)
    assert pub.row_counts["rpt_progress"] == 0
    # '*' rows exist with null rates (zero denominators), reference rows with zero counts
    star = rows(engine, "SELECT * FROM mart.rpt_service_indicators WHERE ma_don_vi = '*'")
    assert len(star) == 7 and all(r["rate_system"] is None and r["rate_paid_only"] is None for r in star)
    assert pub.row_counts["rpt_simplified_procedures"] == 1 and pub.row_counts["rpt_delegated_procedures"] == 2


def test_monthly_periods() -> None:
    assert reports.monthly_periods(date(2024, 1, 15), date(2024, 3, 2)) == [
        (date(2024, 1, 1), date(2024, 1, 31)), (date(2024, 2, 1), date(2024, 2, 29)),
        (date(2024, 3, 1), date(2024, 3, 31))]
    assert reports.monthly_periods(date(2024, 12, 5), date(2025, 1, 10), clip=True) == [
        (date(2024, 12, 5), date(2024, 12, 31)), (date(2025, 1, 1), date(2025, 1, 10))]
    with pytest.raises(ValueError):
        reports.monthly_periods(date(2024, 2, 1), date(2024, 1, 1))


def test_reference_files_hold_the_2024_report_rows() -> None:
    ref = reports.load_reference(REFERENCE_DIR)
    assert [(r["ma_tthc"], r["ngay_quyet_dinh"], r["so_ngay_cat_giam"]) for r in ref.simplifications] == [
        (PS, date(2023, 12, 3), 1.0)]
    assert [(r["ma_tthc"], r["ngay_hieu_luc"]) for r in ref.delegations] == [
        (KARAOKE, date(2013, 11, 14)), (PD, date(2020, 8, 20))]
    assert "Công văn số 2417/SYT-NVY ngày 20/8/2020 của Sở Y tế" in ref.delegations[1]["van_ban"]
    assert [(r["ma_tthc"], r["threshold_days"]) for r in ref.unpaid_thresholds] == [(MARRIAGE, 60)]


def test_broken_reference_file_is_refused(tmp_path: Path) -> None:
    for name in ("simplifications.csv", "delegations.csv", "unpaid_thresholds.csv"):
        (tmp_path / name).write_text((REFERENCE_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "delegations.csv").write_text(
        "ma_tthc,van_ban,ngay_hieu_luc,danh_gia\n1.000903.000.00.00.H08,QĐ,14/11/2013,\n", encoding="utf-8")
    with pytest.raises(reports.ReportError, match="delegations.csv row 1 ngay_hieu_luc"):
        reports.load_reference(tmp_path)
    (tmp_path / "delegations.csv").write_text("ma_tthc,van_ban\nx,y\n", encoding="utf-8")
    with pytest.raises(reports.ReportError, match="lacks column"):
        reports.load_reference(tmp_path)


def test_data_dictionary_examples_run(golden: tuple[Engine, reports.Publication]) -> None:
    """The example queries of docs/data-dictionary.md run on both warehouses."""
    engine, _ = golden
    text = (PROJECT_ROOT / "docs" / "data-dictionary.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    with engine.connect() as conn:
        results = [conn.execute(sa.text(b.strip().rstrip(";"))).all() for b in blocks]
    assert len(results[0]) == 2  # March 2024: on_time and online_payment for '*'
    assert len(results[1]) == 1
