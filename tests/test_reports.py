"""Golden tests of the report tables (the reports specification), on DuckDB and PostgreSQL.

One hand-made dataset (``GOLDEN_*`` below) is loaded straight into core.*, published for March
2024, and every expected figure is worked out by hand in the comments next to the assertions.

Period: 2024-03-01 .. 2024-03-31. Data cut (as_of): 2024-04-10 12:00.

Units (source S1):
  H01  UBND huyện A       level 2 (district)
  X01  UBND xã B          level 3 (commune)
  X02  UBND xã C          level 3 until 2024-03-14, then "UBND thị trấn C" level 2 (changed level)
  X03  UBND xã D          level 3 (only rejected dossiers)
Procedures (source S1 catalogue; CapThucHien '2,3' unless said):
  P1 = 1.000001.000.00.00.H08  MucDoDVC 4, fees, online payment offered, paper result (KetQuaGiay 1),
                               field F1
  P2 = 1.000002.000.00.00.H08  MucDoDVC 2, no fees, no online payment, KetQuaGiay 0, field F2
  PS = 1.001653.000.00.00.H08  the simplified procedure of table 2a, MucDoDVC 3, no fees, KetQuaGiay 1,
                               field BTXH
  PD = 1.002425.000.00.00.H08  the 2nd delegated procedure of table 2đ (no dossiers), CapThucHien '2'
  PC = 1.000004.000.00.00.H08  communes only (CapThucHien '3'), MucDoDVC 3, fees, online payment: no dossiers
  PP = 1.000005.000.00.00.H08  province only (CapThucHien '1'), MucDoDVC 4: offered by no unit here
  (the karaoke licence 1.000903..., the foreign-element marriage 2.000806... and the short code
  1.001653.H08 are NOT in the catalogue)
Dossier flags unless said: KenhThucHien 1, DuocThanhToanTrucTuyen 0, no reuse / e-result /
digitised / national-store document (known false), no supplement round (n_bo_sung 0, known), one fee
line with a price (n_le_phi 1, n_le_phi_co_gia 1), NgayNopHoSo = NgayTiepNhan.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks import reference, reports
from tasks.settings import PROJECT_ROOT
from tasks.warehouse import connect, run_sql_file, upgrade

REFERENCE_DIR = PROJECT_ROOT / "reference"
PERIOD = (date(2024, 3, 1), date(2024, 3, 31))
AS_OF = datetime(2024, 4, 10, 12, 0)
LOADED = datetime(2024, 4, 10, 12, 0)

P1, P2, PS, PD, PC, PP = (
    "1.000001.000.00.00.H08",
    "1.000002.000.00.00.H08",
    "1.001653.000.00.00.H08",
    "1.002425.000.00.00.H08",
    "1.000004.000.00.00.H08",
    "1.000005.000.00.00.H08",
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
                     source: str = "S1", *, co_phi: int = 1, cap: str | None = "2,3",
                     linh_vuc: tuple[str, str] | None = None) -> None:
    conn.execute(sa.text(
        "INSERT INTO core.procedures (source, ma_tthc, ten_tthc, ma_linh_vuc, ten_linh_vuc, cap_thuc_hien,"
        " muc_do_dvc, co_phi_le_phi, co_thanh_toan_truc_tuyen, ket_qua_giay, _source, _run_id, _loaded_at)"
        " VALUES (:s, :m, :t, :lv, :tlv, :cap, :md, :phi, :tt, :k, 'api', 'test', :l)"
    ), {"s": source, "m": ma, "t": ten, "lv": linh_vuc[0] if linh_vuc else None,
        "tlv": linh_vuc[1] if linh_vuc else None, "cap": cap, "md": muc_do, "phi": co_phi, "tt": co_tttt,
        "k": kqg, "l": LOADED})


_SAME = "same as received"


def insert_dossier(conn: sa.Connection, ma: str, *, tthc: str, don_vi: str, status: int, received: str | None,
                   due: str | None = None, end: str | None = None, channel: int | None = 1,
                   dttt: int | None = 0, reuse: bool | None = False, e_result: bool | None = False,
                   can_bo: str | None = None, ten_tthc: str | None = None, source: str = "S1",
                   updated: datetime = LOADED, submitted: str | None = _SAME, rejected: str | None = None,
                   handed_over: str | None = None, n_bo_sung: int | None = 0, digitised: bool | None = False,
                   national: bool | None = False, n_le_phi: int | None = 1, n_le_phi_co_gia: int | None = 1,
                   linh_vuc: tuple[str, str] | None = None) -> None:
    """A dossier. ``received`` is NgayTiepNhan and, unless ``submitted`` is given, NgayNopHoSo."""
    conn.execute(sa.text(
        "INSERT INTO core.dossiers (source, ma_ho_so, ma_tthc, ten_tthc, ma_linh_vuc, ten_linh_vuc, ma_don_vi,"
        " ten_don_vi, kenh_thuc_hien, ngay_nop_ho_so, ngay_tiep_nhan, ngay_hen_tra, ngay_ket_thuc_xu_ly,"
        " ngay_tra, ngay_tu_choi, trang_thai, duoc_thanh_toan_truc_tuyen, has_reuse, has_e_result,"
        " n_bo_sung, has_digitised, has_from_national_store, n_le_phi, n_le_phi_co_gia,"
        " ma_can_bo_xu_ly, can_bo_xu_ly, ngay_cap_nhat, _source, _run_id, _loaded_at)"
        " VALUES (:s, :m, :tthc, :ten_tthc, :lv, :tlv, :dv, :ten_dv, :k, :nop, :tn, :ht, :kt, :tra, :tc, :st,"
        " :dttt, :reuse, :er, :nbs, :dig, :nat, :nlp, :nlpg, :cb, :cbten, :upd, 'api', 'test', :l)"
    ), {"s": source, "m": ma, "tthc": tthc, "ten_tthc": ten_tthc or f"Tên {tthc}",
        "lv": linh_vuc[0] if linh_vuc else None, "tlv": linh_vuc[1] if linh_vuc else None, "dv": don_vi,
        "ten_dv": f"Đơn vị {don_vi} (từ hồ sơ)", "k": channel,
        "nop": ts(received if submitted == _SAME else submitted), "tn": ts(received),
        "ht": ts(due), "kt": ts(end), "tra": ts(handed_over), "tc": ts(rejected), "st": status, "dttt": dttt,
        "reuse": reuse, "er": e_result, "nbs": n_bo_sung, "dig": digitised, "nat": national, "nlp": n_le_phi,
        "nlpg": n_le_phi_co_gia, "cb": can_bo, "cbten": f"Cán bộ {can_bo}" if can_bo else None, "upd": updated,
        "l": LOADED})


def insert_supplement(conn: sa.Connection, ma_ho_so: str, lan: int, requested: str, answered: str | None = None,
                      *, source: str = "S1", version: datetime = LOADED) -> None:
    """A supplement round (DanhSachHoSoBoSung) of the dossier version ``version`` (its NgayCapNhat)."""
    conn.execute(sa.text(
        "INSERT INTO core.dossier_supplements (source, ma_ho_so, ngay_cap_nhat, lan, ngay_bo_sung,"
        " ngay_tiep_nhan_bo_sung, _run_id) VALUES (:s, :m, :v, :lan, :bs, :tnbs, 'test')"
    ), {"s": source, "m": ma_ho_so, "v": version, "lan": lan, "bs": ts(requested), "tnbs": ts(answered)})


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
        insert_unit(c, "X03", "2020-01-01", None, "UBND xã D", 3)

        insert_procedure(c, P1, "Thủ tục một", muc_do=4, co_tttt=1, kqg=1, linh_vuc=("F1", "Lĩnh vực một"))
        insert_procedure(c, P2, "Thủ tục hai", muc_do=2, co_tttt=0, kqg=0, co_phi=0,
                         linh_vuc=("F2", "Lĩnh vực hai"))
        insert_procedure(c, PS, "Đổi, cấp lại Giấy xác nhận khuyết tật", muc_do=3, co_tttt=0, kqg=1, co_phi=0,
                         linh_vuc=("BTXH", "Bảo trợ xã hội"))
        insert_procedure(c, PD, "Cấp giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm", 2, 0, 0, cap="2")
        insert_procedure(c, PC, "Thủ tục cấp xã", muc_do=3, co_tttt=1, kqg=0, cap="3")
        insert_procedure(c, PP, "Thủ tục cấp tỉnh", muc_do=4, co_tttt=1, kqg=0, cap="1")

        d = insert_dossier
        # ---- H01 (district) --------------------------------------------------------------------
        # D01 before due (end 03-11 < due 03-12), online, paid online, e-result, reused data, a
        # digitised document and one from the national store
        d(c, "D01", tthc=P1, don_vi="H01", status=10, received="2024-03-05 09:00", due="2024-03-12 17:00",
          end="2024-03-11 10:00", channel=2, dttt=1, reuse=True, e_result=True, digitised=True, national=True)
        upsert_payment(c, "PAY-D01", "D01", 50_000, PAID, "truc-tuyen")
        # D02 finished later in the day than the due TIME, on the due DATE -> on time; paid cash
        # (digitised, but no electronic result for a paper-result procedure: not 4.2)
        d(c, "D02", tthc=P1, don_vi="H01", status=10, received="2024-03-05 09:00", due="2024-03-12 08:00",
          end="2024-03-12 16:00", channel=1, digitised=True)
        upsert_payment(c, "PAY-D02", "D02", 50_000, PAID, "tien-mat")
        # D03 late by one day; result issued (status 9), fee awaiting payment
        d(c, "D03", tthc=P1, don_vi="H01", status=9, received="2024-03-05 09:00", due="2024-03-12 17:00",
          end="2024-03-13 09:00", channel=2, can_bo="CB1")
        upsert_payment(c, "PAY-D03", "D03", 30_000, WAITING)
        # D04 withdrawn (7) after its due date -> on time; postal channel
        d(c, "D04", tthc=P1, don_vi="H01", status=7, received="2024-03-06 09:00", due="2024-03-08 17:00",
          end="2024-03-20 09:00", channel=3)
        # D05 rejected at intake (3), D06 not yet accepted (1): never received, counted nowhere (but D05
        # in rejected_at_intake); D52 submitted in February, rejected on 03-01: rejected in March;
        # D53 rejected in February: not counted
        d(c, "D05", tthc=P1, don_vi="H01", status=3, received="2024-03-06 09:00", channel=2)
        d(c, "D52", tthc=P1, don_vi="H01", status=3, received=None, submitted="2024-02-28 09:00",
          rejected="2024-03-01 10:00")
        d(c, "D53", tthc=P1, don_vi="H01", status=3, received=None, submitted="2024-02-19 09:00",
          rejected="2024-02-20 10:00")
        d(c, "D06", tthc=P1, don_vi="H01", status=1, received="2024-03-07 09:00", channel=2)
        # D07 waiting for a supplement (5), due 03-20 < period_end -> still in time
        d(c, "D07", tthc=P1, don_vi="H01", status=5, received="2024-03-10 09:00", due="2024-03-20 17:00",
          channel=2, dttt=None)
        # D08 empty due date -> on time; channel null -> in person
        # (digitised, no paper result: 4.2 hit)
        d(c, "D08", tthc=P2, don_vi="H01", status=10, received="2024-03-10 09:00", due=None,
          end="2024-03-25 09:00", channel=None, digitised=True)
        # D09 received ON period_start, resolved the day AFTER period_end -> in progress at the end,
        # overdue (due 03-29 < 03-31)
        d(c, "D09", tthc=P1, don_vi="H01", status=10, received="2024-03-01 08:00", due="2024-03-29 17:00",
          end="2024-04-01 09:00", channel=1, can_bo="CB2")
        # D10 received ON period_end -> received, in progress, in time
        # (digitised flag unknown: left out of 4.2)
        d(c, "D10", tthc=P2, don_vi="H01", status=4, received="2024-03-31 16:00", due="2024-04-05 17:00",
          digitised=None)
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
        # D16 exempt request -> no obligation; its only fee line has Gia 0 -> not in 3.6's denominator
        d(c, "D16", tthc=P1, don_vi="H01", status=10, received="2024-03-15 09:00", due="2024-03-20 17:00",
          end="2024-03-16 09:00", n_le_phi=1, n_le_phi_co_gia=0)
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
        # (national-store flag unknown)
        d(c, "D19", tthc=P1, don_vi="H01", status=10, received="2024-03-20 09:00", due="2024-03-25 17:00",
          end="2024-03-22 09:00", channel=2, dttt=2, national=None)
        # D20 waiting for the fee (6), collected before processing, not paid -> in progress, unpaid
        d(c, "D20", tthc=P1, don_vi="H01", status=6, received="2024-03-25 09:00", due="2024-04-05 17:00",
          channel=2)
        upsert_payment(c, "PAY-D20", "D20", 60_000, NOT_PAID, hinh_thuc_thu="Thu trước")
        # D21/D22/D23: the simplified procedure (decision 2023-12-03)
        # (D21: digitised flag unknown, but a paper-result procedure without e-result: 4.2 known miss)
        d(c, "D21", tthc=PS, don_vi="H01", status=10, received="2024-03-04 09:00", due="2024-03-08 17:00",
          end="2024-03-07 09:00", digitised=None)
        d(c, "D22", tthc=PS_SHORT, don_vi="H01", status=10, received="2024-03-04 09:00",
          due="2024-03-08 17:00", end="2024-03-09 09:00", can_bo="CB2",
          ten_tthc="Đổi, cấp lại Giấy xác nhận khuyết tật", linh_vuc=("BTXH", "Bảo trợ xã hội"))
        d(c, "D23", tthc=PS, don_vi="H01", status=10, received="2023-11-20 09:00", due="2023-11-27 17:00",
          end="2024-03-02 09:00", can_bo="CB1")
        # D24 the delegated karaoke licence (not in the catalogue: name from the dossier)
        d(c, "D24", tthc=KARAOKE, don_vi="H01", status=10, received="2024-03-05 09:00",
          due="2024-03-19 17:00", end="2024-03-15 09:00", ten_tthc="Cấp giấy phép kinh doanh Karaoke",
          reuse=None, linh_vuc=("VH", "Văn hóa"))  # reuse flag unknown

        # ---- X01 (commune) ---------------------------------------------------------------------
        d(c, "D30", tthc=P1, don_vi="X01", status=10, received="2024-03-11 09:00", due="2024-03-12 17:00",
          end="2024-03-14 09:00", channel=2, dttt=1, e_result=True, can_bo="CB3")
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
        # results waiting to be collected (status 9, no NgayTra), resolved before March: D34 the
        # foreign-element marriage, 69 days at the cut (window 60: over), fee paid; D36 41 days (within)
        d(c, "D34", tthc=MARRIAGE, don_vi="X01", status=9, received="2024-01-05 09:00",
          due="2024-02-05 17:00", end="2024-02-01 09:00")
        d(c, "D36", tthc=MARRIAGE, don_vi="X01", status=9, received="2024-02-01 09:00",
          due="2024-03-05 17:00", end="2024-02-29 09:00")
        # D35 status 9 already handed over: not on the uncollected list
        d(c, "D35", tthc=MARRIAGE, don_vi="X01", status=9, received="2024-01-05 09:00",
          due="2024-02-05 17:00", end="2024-02-01 09:00", handed_over="2024-02-02 09:00")
        # a second source with the SAME dossier code D01 (units and procedures only in S1's catalogue)
        d(c, "D01", tthc=P1, don_vi="X01", status=10, received="2024-03-08 09:00", due="2024-03-10 17:00",
          end="2024-03-09 09:00", channel=2, source="S2")
        upsert_payment(c, "PAY-D01", "D01", 70_000, WAITING, source="S2")

        # ---- X02 (changed level on 2024-03-15) -------------------------------------------------
        d(c, "D40", tthc=P2, don_vi="X02", status=10, received="2024-03-10 09:00", due="2024-03-15 17:00",
          end="2024-03-12 09:00")
        d(c, "D41", tthc=P2, don_vi="X02", status=10, received="2024-03-20 09:00", due="2024-03-22 17:00",
          end="2024-03-25 09:00", channel=2, can_bo="CB4")

        # ---- X03: only a rejection in March ----------------------------------------------------
        d(c, "D50", tthc=P1, don_vi="X03", status=3, received=None, submitted="2024-03-20 09:00",
          rejected="2024-03-21 09:00")


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


@contextmanager
def module_warehouse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A warehouse for a module-scoped fixture (``request.param``: duckdb or postgresql), like
    conftest's ``warehouse_url`` (same test ids; a copy of the migrated empty warehouse)."""
    from tests.conftest import create_pg_database, drop_pg_database
    from tests.warehouse_template import duckdb_copy

    if request.param == "duckdb":
        yield duckdb_copy(tmp_path_factory, tmp_path_factory.mktemp("wh") / "wh.duckdb")
        return
    url = create_pg_database(migrated=True)
    try:
        yield url
    finally:
        drop_pg_database(url)


WAREHOUSES = ["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=WAREHOUSES)
def golden(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Engine, reports.Publication]]:
    """The golden dataset published once per warehouse for the module: the tests using it only
    read it (SELECTs, ``reports.headline``)."""
    with module_warehouse(request, tmp_path_factory) as url:
        engine = fresh_warehouse(url)
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
    assert ("S1", "D12") not in facts and ("S1", "D53") not in facts
    # ... except online dossiers submitted in the period (rpt_late_acceptance: D05, D06), a rejection in
    # the period (rejected_at_intake), and results waiting to be collected
    assert not f("D06")["received_in_period"] and not f("D06")["in_progress_at_end"]
    assert f("D05")["rejected_in_period"] and not f("D05")["received_in_period"]
    assert f("D52")["rejected_in_period"]  # submitted in February, rejected on 03-01
    assert ("S1", "D34") in facts and ("S1", "D35") not in facts  # D35 was handed over
    # timeliness by date
    assert [f(m)["timeliness"] for m in ("D01", "D02", "D03", "D04", "D08")] == [
        "before_due", "on_time", "late", "on_time", "on_time"]
    # period edges
    assert f("D09")["received_in_period"] and not f("D09")["resolved_in_period"]
    assert f("D09")["in_progress_at_end"] and f("D09")["overdue"]
    assert f("D10")["received_in_period"] and f("D10")["in_progress_at_end"] and not f("D10")["overdue"]
    assert f("D11")["carried_over"] and f("D11")["overdue"]
    assert f("D07")["in_progress_at_end"] and not f("D07")["overdue"]  # status 5: in time
    # 2.1 at the period's end: D07 (status 5) judged at 03-31 > due 03-20 -> late; D04 withdrawn after
    # its due date -> late; D09 resolved only on 04-01 -> judged at 03-31 > due 03-29 -> late
    assert [f(m)["on_time_at_end"] for m in ("D01", "D02", "D03", "D04", "D07", "D08", "D09", "D10")] == [
        True, True, False, False, False, True, False, True]
    assert f("D07")["judged_end_date"] == PERIOD[1] and f("D01")["judged_end_date"] == date(2024, 3, 11)
    # unknown flags stay null (not false)
    assert f("D10")["has_digitised"] is None and f("D24")["has_reuse"] is None
    # the field: the catalogue's, else the dossier's
    assert (f("D01")["ma_linh_vuc"], f("D22")["ma_linh_vuc"], f("D24")["ten_linh_vuc"]) == ("F1", "BTXH", "Văn hóa")
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


def test_dossier_facts_catalogue_precedence(warehouse_url: str) -> None:
    """Which catalogue row describes a dossier: its own source's first, then the others (units: the
    latest row valid on the receipt date; procedures: by source); each dossier alone, however many
    dossiers share its source, unit, receipt date or procedure."""
    engine = fresh_warehouse(warehouse_url)
    with engine.begin() as conn:
        insert_unit(conn, "U1", "2020-01-01", None, "S1 cũ", 2)
        insert_unit(conn, "U1", "2024-03-10", None, "S1 mới", 3)  # overlaps the older row from 03-10
        insert_unit(conn, "U1", "2020-01-01", "2024-03-14", "S2 cũ", 2, source="S2")
        insert_unit(conn, "U1", "2024-03-15", None, "S2 mới", 3, source="S2")
        insert_procedure(conn, P1, "P1 của S1", 4, 1, 1)
        insert_procedure(conn, P1, "P1 của S2", 3, 0, 0, source="S2")
        cases = {  # dossier: source, received
            "A1": ("S1", "2024-03-05 08:00"), "A2": ("S1", "2024-03-12 08:00"), "A3": ("S1", "2024-03-12 09:00"),
            "B1": ("S2", "2024-03-12 08:00"), "B2": ("S2", "2024-03-16 08:00"),
            "C1": ("S3", "2024-03-05 08:00"), "C2": ("S3", "2024-03-20 08:00"),
        }
        for ma, (source, received) in cases.items():
            insert_dossier(conn, ma, tthc=P1, don_vi="U1", status=4, received=received, source=source)
        run_sql_file(conn, "reports/_dossier_facts.sql",
                     {"period_start": PERIOD[0], "period_end": PERIOD[1], "as_of": AS_OF})
        facts = {r["ma_ho_so"]: (r["ten_don_vi"], r["cap_don_vi"], r["ten_tthc"], r["muc_do_dvc"])
                 for r in conn.execute(sa.text("SELECT * FROM tmp_dossier_facts")).mappings()}
        conn.rollback()
    assert facts == {
        "A1": ("S1 cũ", 2, "P1 của S1", 4), "A2": ("S1 mới", 3, "P1 của S1", 4), "A3": ("S1 mới", 3, "P1 của S1", 4),
        "B1": ("S2 cũ", 2, "P1 của S2", 3), "B2": ("S2 mới", 3, "P1 của S2", 3),
        # no catalogue of its own: the latest valid row of any source (S1's and S2's start the same
        # day before 03-10: either is the latest, so the test gives them one name), the procedure by source
        "C1": (facts["C1"][0], 2, "P1 của S1", 4), "C2": ("S2 mới", 3, "P1 của S1", 4),
    }
    assert facts["C1"][0] in ("S1 cũ", "S2 cũ")


# ----------------------------------------------------------------------------------------------
# mart.rpt_progress
# ----------------------------------------------------------------------------------------------
def test_golden_progress(golden: tuple[Engine, reports.Publication]) -> None:
    engine, pub = golden
    got = by_key(rows(engine, "SELECT * FROM mart.rpt_progress"), "ma_don_vi", "cap_don_vi")
    # X03 had only a rejection at intake: it still gets a row
    assert set(got) == {("H01", 2), ("X01", 3), ("X02", 3), ("X02", 2), ("X03", 3)}
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
    # rejected at intake in March: D05 (03-06) and D52 (submitted in February, rejected on 03-01); not
    # D53 (rejected in February)
    assert h["rejected_at_intake"] == 2
    x3 = got[("X03", 3)]
    assert (x3["rejected_at_intake"], x3["received_total"], x3["to_handle_total"], x3["on_time_rate"]) == (
        1, 0, 0, None)
    assert got[("X01", 3)]["rejected_at_intake"] == 0
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
    # the '*' rates of the nine indicators (see test_golden_service_indicators)
    assert h["on_time_rate_system"] == pytest.approx(14 / 22)
    assert h["on_time_rate_paid_only"] == pytest.approx(11 / 18)
    assert h["online_payment_rate_system"] == pytest.approx(3 / 13)
    assert h["online_payment_rate_paid_only"] == pytest.approx(3 / 9)
    assert h["digitised_rate_system"] == pytest.approx(2 / 21)
    assert h["online_service_uptake_rate_system"] == pytest.approx(1 / 3)
    assert h["online_payment_uptake_rate_paid_only"] == pytest.approx(1 / 2)
    assert all(f"{code}_rate_system" in h and f"{code}_rate_paid_only" in h for code in reports.INDICATORS)
    assert (h["period_cut"], h["period_label"]) == ("calendar", None)
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
                     "excluded_unpaid", "excluded_result_issued", "excluded_in_progress", "unknown")


def test_golden_service_indicators(golden: tuple[Engine, reports.Publication]) -> None:
    engine, _ = golden
    got = by_key(rows(engine, "SELECT * FROM mart.rpt_service_indicators"), "ma_don_vi", "cap_don_vi", "indicator")
    assert len(got) == 5 * 9  # 4 unit rows + '*', x 9 indicators (X03, rejections only, has none)

    def counts(unit: str, cap: int | None, indicator: str) -> tuple[int, ...]:
        return tuple(got[(unit, cap, indicator)][k] for k in INDICATOR_COLUMNS)

    # P = received in March. H01: D01 D02 D03 D04 D07 D08 D09 D10 D15 D16 D17 D18 D19 D20 D21 D22 D24 (17).
    # Fees not settled: D03, D18 (result issued), D20 (in progress) in H01; S2/D01 (result issued) in X01.
    # (num, den, num paid-only, den paid-only, excluded, of which result issued, in progress, unknown):
    #
    # on_time (2.1, at 03-31): late D03 (end 03-13 > due 03-12), D04 (withdrawn, end 03-20 > 03-08),
    # D07 (status 5, open: 03-31 > 03-20), D09 (resolved 04-01: 03-31 > 03-29), D22 (03-09 > 03-08);
    # in time D10 D17 D20 (open, due after 03-31) -> 12/17; minus D03 (late) D18 D20 (on time) -> 10/14
    assert counts("H01", 2, "on_time") == (12, 17, 10, 14, 3, 2, 1, 0)
    # online_submission (3.3): online AND (no paper result or an e-result): D01 D15 D18 (P1 with e-result);
    # D03 D07 D17 D19 D20 are online P1 dossiers without e-result -> 3/17; minus D03 D18 D20 -> 2/14
    assert counts("H01", 2, "online_submission") == (3, 17, 2, 14, 3, 2, 1, 0)
    # online_payment (3.6): the dossier's own DuocThanhToanTrucTuyen. Members: P1 (CoPhiLePhi 1) dossiers
    # D01 D02 D03 D04 D07 D09 D15 D17 D18 D19 D20 (D16's only fee line has Gia 0: out); D07's flag is
    # unknown -> 10 known; DTTT 1/2: D01, D19 -> 2/10; minus D03 D18 D20 (not paid online) -> 2/7
    assert counts("H01", 2, "online_payment") == (2, 10, 2, 7, 3, 2, 1, 1)
    # e_result (4.1): KetQuaGiay 1: the 12 P1 dossiers + D21 (PS) = 13 (D22's short code is not in the
    # catalogue: KetQuaGiay 0); e-result D01 D15 D18 -> 3/13; minus D03 D18 D20 -> 2/10
    assert counts("H01", 2, "e_result") == (3, 13, 2, 10, 3, 2, 1, 0)
    # digitised (4.2): D01 (digitised, e-result), D08 (digitised, no paper result) hit; D02 digitised but
    # paper result without e-result: miss; D21 flag unknown but paper result without e-result: a known
    # miss (null and false = false); D10 flag unknown, no paper result: unknown -> 2/16; paid-only 2/13
    assert counts("H01", 2, "digitised") == (2, 16, 2, 13, 3, 2, 1, 1)
    # reuse (4.3): D01 D18 of 16 (D24 unknown); minus D03 D18 D20 -> 1/13
    assert counts("H01", 2, "reuse") == (2, 16, 1, 13, 3, 2, 1, 1)
    # from_national_store (4.4): D01 of 16 (D19 unknown); paid-only 1/13
    assert counts("H01", 2, "from_national_store") == (1, 16, 1, 13, 3, 2, 1, 1)
    # online_service_uptake (3.2): MucDoDVC 3/4 offered at level 2: P1, PS (PC is communes only, PP
    # province only) -> 2; P1 had online dossiers, PS only D21 in person -> 1/2; paid-only: D01 is settled
    # -> 1/2; excluded: the unsettled dossiers of offered procedures D03 D18 D20
    assert counts("H01", 2, "online_service_uptake") == (1, 2, 1, 2, 3, 2, 1, 0)
    # online_payment_uptake: CoPhiLePhi 1 and CoThanhToanTrucTuyen 1 offered at level 2: P1 -> 1; D01 and
    # D19 paid online -> 1/1; D07's flag unknown
    assert counts("H01", 2, "online_payment_uptake") == (1, 1, 1, 1, 3, 2, 1, 1)

    # X01 (commune): D30 (online, e-result, DTTT 1, late), D31 (in person, open, overdue at 03-31),
    # S2/D01 (online, no e-result, before due, fee unpaid). All P1.
    assert counts("X01", 3, "on_time") == (1, 3, 0, 2, 1, 1, 0, 0)
    assert got[("X01", 3, "on_time")]["rate_paid_only"] == 0.0
    assert counts("X01", 3, "online_submission") == (1, 3, 1, 2, 1, 1, 0, 0)
    assert counts("X01", 3, "online_payment") == (1, 3, 1, 2, 1, 1, 0, 0)
    assert counts("X01", 3, "e_result") == (1, 3, 1, 2, 1, 1, 0, 0)
    assert counts("X01", 3, "reuse") == (0, 3, 0, 2, 1, 1, 0, 0)
    assert got[("X01", 3, "reuse")]["rate_system"] == 0.0  # a zero numerator is 0, not null
    # level 3 offers P1, PS and PC (3.2) and P1, PC (payment); only P1 had a hit (D30)
    assert counts("X01", 3, "online_service_uptake") == (1, 3, 1, 3, 1, 1, 0, 0)
    assert counts("X01", 3, "online_payment_uptake") == (1, 2, 1, 2, 1, 1, 0, 0)

    # X02 at level 2 (D41: P2, online, no fee, no paper result, late) and level 3 (D40: P2, in person)
    for ind in ("online_payment", "e_result"):
        r = got[("X02", 2, ind)]
        assert (r["denominator_system"], r["rate_system"], r["rate_paid_only"]) == (0, None, None), ind
    assert counts("X02", 2, "on_time") == (0, 1, 0, 1, 0, 0, 0, 0)
    assert counts("X02", 2, "online_submission") == (1, 1, 1, 1, 0, 0, 0, 0)  # no paper result needed
    assert counts("X02", 3, "on_time") == (1, 1, 1, 1, 0, 0, 0, 0)
    # procedures offered, none with a dossier: 0, not null
    assert counts("X02", 2, "online_service_uptake")[:2] == (0, 2)
    assert counts("X02", 3, "online_service_uptake")[:2] == (0, 3)
    assert got[("X02", 3, "online_payment_uptake")]["rate_system"] == 0.0

    # the whole jurisdiction '*': dossier indicators are sums of the units ...
    assert counts("*", None, "on_time") == (14, 22, 11, 18, 4, 3, 1, 0)
    assert counts("*", None, "online_submission") == (5, 22, 4, 18, 4, 3, 1, 0)
    assert counts("*", None, "online_payment") == (3, 13, 3, 9, 4, 3, 1, 1)
    assert counts("*", None, "e_result") == (4, 16, 3, 12, 4, 3, 1, 0)
    assert counts("*", None, "digitised") == (2, 21, 2, 17, 4, 3, 1, 1)
    assert counts("*", None, "reuse") == (2, 21, 1, 17, 4, 3, 1, 1)
    assert counts("*", None, "from_national_store") == (1, 21, 1, 17, 4, 3, 1, 1)
    # ... procedure indicators count each procedure once: P1, PS, PC offered by some unit (PP by none);
    # P1 had online dossiers -> 1/3 (not 1 + 1 from H01 and X01); payment: P1, PC -> 1/2
    assert counts("*", None, "online_service_uptake") == (1, 3, 1, 3, 4, 3, 1, 0)
    assert counts("*", None, "online_payment_uptake") == (1, 2, 1, 2, 4, 3, 1, 1)
    star = got[("*", None, "on_time")]
    assert star["rate_system"] == pytest.approx(14 / 22) and star["rate_paid_only"] == pytest.approx(11 / 18)
    assert star["indicator_label"] == "Tỷ lệ hồ sơ xử lý trước hạn, đúng hạn" and star["indicator_order"] == 1
    assert all(r["excluded_by_list"] == 0 for r in got.values())  # no listed procedure has a dossier

    # codes, scores, targets (reference/targets.csv: '*' on_time 0.95 and online_submission 0.5 in 2024)
    codes = {r["indicator"]: (r["indicator_order"], r["code_766"], r["full_score_at"])
             for (u, _, _), r in got.items() if u == "*"}
    assert codes == {
        "on_time": (1, "2.1", None), "online_submission": (2, "3.3", 0.5), "online_payment": (3, "3.6", None),
        "e_result": (4, "4.1", None), "digitised": (5, "4.2", 0.8), "reuse": (6, "4.3", 0.8),
        "from_national_store": (7, "4.4", None), "online_service_uptake": (8, "3.2", 0.8),
        "online_payment_uptake": (9, None, None)}
    assert (star["target"], star["meets_target"]) == (0.95, False)  # 14/22
    assert (got[("X02", 3, "on_time")]["target"], got[("X02", 3, "on_time")]["meets_target"]) == (0.95, True)
    assert got[("X02", 2, "online_submission")]["meets_target"] is True  # 1/1 >= 0.5
    assert got[("H01", 2, "online_submission")]["meets_target"] is False  # 3/17 < 0.5
    r = got[("H01", 2, "reuse")]
    assert (r["target"], r["meets_target"]) == (None, None)
    r = got[("X02", 2, "online_payment")]  # a target but no rate
    assert (r["rate_system"], r["target"], r["meets_target"]) == (None, None, None)


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
    # S2/D01 03-09 -> 32, D32 02-05 -> 65 (the default threshold 30: the 60-day window of the foreign-
    # element marriage is a collection window now, reference/collection_windows.csv)
    assert {k: (r["days_outstanding"], r["threshold_days"], r["over_threshold"], r["amount_due"])
            for k, r in got.items()} == {
        ("S1", "D03"): (28, 30, False, 30_000),
        ("S1", "D18"): (21, 30, False, 40_000),
        ("S1", "D33"): (40, 30, True, 25_000),
        ("S2", "D01"): (32, 30, True, 70_000),
        ("S1", "D32"): (65, 30, True, 1_500_000),
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
    assert len(star) == 9 and all(r["rate_system"] is None and r["rate_paid_only"] is None for r in star)
    assert all(r["meets_target"] is None for r in star)
    assert pub.row_counts["rpt_form06"] == 0 and pub.row_counts["rpt_uncollected_results"] == 0
    assert pub.row_counts["rpt_simplified_procedures"] == 1 and pub.row_counts["rpt_delegated_procedures"] == 2


def test_reference_files_hold_the_2024_report_rows() -> None:
    ref = reference.load_reference(REFERENCE_DIR)
    assert [(r["ma_tthc"], r["ngay_quyet_dinh"], r["so_ngay_cat_giam"]) for r in ref.simplifications] == [
        (PS, date(2023, 12, 3), 1.0)]
    assert [(r["ma_tthc"], r["ngay_hieu_luc"]) for r in ref.delegations] == [
        (KARAOKE, date(2013, 11, 14)), (PD, date(2020, 8, 20))]
    assert "Công văn số 2417/SYT-NVY ngày 20/8/2020 của Sở Y tế" in ref.delegations[1]["van_ban"]
    assert ref.unpaid_thresholds == []  # the 60-day marriage row moved to collection_windows.csv
    assert [(r["ma_tthc"], r["days"]) for r in ref.collection_windows] == [(MARRIAGE, 60)]
    assert "III.5" in ref.collection_windows[0]["can_cu"]
    # the two civil-status procedures the 2024 report asks to stop counting for reuse
    assert [r["ma_tthc"] for r in ref.reuse_exclusions] == ["2.000635.000.00.00.H08", "1.004873.000.00.00.H08"]
    assert ("*", "on_time", 2024, 0.95) in [(r["ma_don_vi"], r["indicator"], r["year"], r["target"])
                                            for r in ref.targets]
    assert ref.unit_procedures == []


def copy_reference(tmp_path: Path) -> Path:
    for f in REFERENCE_DIR.glob("*.csv"):
        (tmp_path / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path


def test_broken_reference_file_is_refused(tmp_path: Path) -> None:
    copy_reference(tmp_path)
    (tmp_path / "delegations.csv").write_text(
        "ma_tthc,van_ban,ngay_hieu_luc,danh_gia\n1.000903.000.00.00.H08,QĐ,14/11/2013,\n", encoding="utf-8")
    with pytest.raises(reference.ReportError, match="delegations.csv line 2: ngay_hieu_luc '14/11/2013'"):
        reference.load_reference(tmp_path)
    (tmp_path / "delegations.csv").write_text("ma_tthc,van_ban\nx,y\n", encoding="utf-8")
    with pytest.raises(reference.ReportError, match="delegations.csv line 1: lacks column"):
        reference.load_reference(tmp_path)


TARGETS_HEADER = "ma_don_vi,indicator,year,target\n"


@pytest.mark.parametrize(("name", "text", "message"), [
    ("targets.csv", TARGETS_HEADER + "*,on_time,2024,0.95\n*,online_submission,2024,95%\n",
     "targets.csv line 3: target '95%' is not a fraction between 0 and 1"),
    ("targets.csv", TARGETS_HEADER + "*,on_time,2024,1.5\n",
     "targets.csv line 2: target '1.5' is not a fraction between 0 and 1"),
    ("targets.csv", TARGETS_HEADER + "\n*,on_tme,2024,0.9\n", "targets.csv line 3: indicator 'on_tme' is not one of"),
    ("targets.csv", TARGETS_HEADER + "*,on_time,24,0.9\n", "targets.csv line 2: year '24' is not a year"),
    ("targets.csv", TARGETS_HEADER + "*,on_time,2024,0.9\n*,on_time,2024,0.8\n",
     "targets.csv line 3: .* already has a target on line 2"),
    ("targets.csv", TARGETS_HEADER + ",on_time,2024,0.9\n", "targets.csv line 2: ma_don_vi is empty"),
    ("targets.csv", "ma_don_vi,indicator,target\n", "targets.csv line 1: lacks column\\(s\\) year"),
    ("unit_procedures.csv", "ma_don_vi,ma_tthc\nX01,\n", "unit_procedures.csv line 2: ma_tthc is empty"),
    ("unit_procedures.csv", "ma_don_vi,ma_tthc\n*,1.000001.000.00.00.H08\n", "unit_procedures.csv line 2: ma_don_vi '\\*'"),
    ("reuse_exclusions.csv", "ma_tthc,ten_tthc\n,Tên\n", "reuse_exclusions.csv line 2: ma_tthc is empty"),
    ("collection_windows.csv", "ma_tthc,days,can_cu\n2.000806.000.00.00.H08,sixty,x\n",
     "collection_windows.csv line 2: days 'sixty' is not a whole number of days"),
    ("collection_windows.csv", "ma_tthc,days,can_cu\n2.000806.000.00.00.H08,-1,x\n",
     "collection_windows.csv line 2: days '-1'"),
    ("unpaid_thresholds.csv", "ma_tthc,threshold_days,note\nX,1.5,\n",
     "unpaid_thresholds.csv line 2: threshold_days '1.5'"),
    ("simplifications.csv", "ma_tthc,quyet_dinh,ngay_quyet_dinh,so_ngay_cat_giam,noi_dung_cat_giam,danh_gia\n"
     "X,QĐ,2023-12-03,một,,\n", "simplifications.csv line 2: so_ngay_cat_giam 'một' is not a number"),
    ("delegations.csv", "ma_tthc,van_ban,ngay_hieu_luc,danh_gia\n,QĐ,2013-11-14,\n",
     "delegations.csv line 2: ma_tthc is empty"),
])
def test_reference_errors_name_the_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    copy_reference(tmp_path)
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(reference.ReportError, match=message):
        reference.load_reference(tmp_path)


def test_missing_or_empty_reference_files_are_empty_lists(tmp_path: Path) -> None:
    """Every reference file is optional and read from the given folder only (no fallback)."""
    ref = reference.load_reference(tmp_path)  # an empty folder
    assert all(getattr(ref, f) == [] for f in (
        "simplifications", "delegations", "unpaid_thresholds", "targets", "unit_procedures",
        "reuse_exclusions", "collection_windows"))
    (tmp_path / "targets.csv").write_text(TARGETS_HEADER, encoding="utf-8")
    (tmp_path / "collection_windows.csv").write_text("", encoding="utf-8")
    assert reference.load_reference(tmp_path).targets == []
    assert reference.load_reference(tmp_path).collection_windows == []


def test_unknown_period_cut_is_refused(warehouse_url: str) -> None:
    engine = fresh_warehouse(warehouse_url)
    with pytest.raises(reports.ReportError, match="period cut 'fiscal'"):
        reports.publish(engine, *PERIOD, run_id="r", reference_dir=REFERENCE_DIR, period_cut="fiscal")


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


# ----------------------------------------------------------------------------------------------
# mart.rpt_form06 and mart.rpt_uncollected_results (golden dataset)
# ----------------------------------------------------------------------------------------------
FORM06_COLUMNS = ("received_total", "received_online", "received_direct_postal", "carried_over", "resolved_total",
                  "resolved_before_due", "resolved_on_time", "resolved_late", "in_progress_total",
                  "in_progress_in_time", "in_progress_overdue")


def test_golden_form06(golden: tuple[Engine, reports.Publication]) -> None:
    engine, pub = golden
    got = by_key(rows(engine, "SELECT * FROM mart.rpt_form06"), "cap_don_vi", "ma_linh_vuc")
    assert set(got) == {(2, "BTXH"), (2, "F1"), (2, "F2"), (2, "VH"), (3, "F1"), (3, "F2")}

    def counts(cap: int, field: str) -> tuple[int, ...]:
        return tuple(got[(cap, field)][k] for k in FORM06_COLUMNS)

    # level 2, F1 (P1 at H01): received online D01 D03 D07 D15 D17 D18 D19 D20 (8), direct/postal D02 D04 D09
    # D16 (4), carried over D11; resolved D01 D15 D16 D18 D19 before due, D02 D04 on time, D03 late;
    # in progress D07 D17 D20 in time, D09 D11 overdue
    assert counts(2, "F1") == (13, 8, 4, 1, 8, 5, 2, 1, 5, 3, 2)
    # level 2, F2 (P2): H01 D08 D10 + carried D13, X02 as a level-2 unit D41 (online, late)
    assert counts(2, "F2") == (4, 1, 2, 1, 3, 1, 1, 1, 1, 1, 0)
    # level 2, BTXH: D21 (PS), D22 (short code: the dossier's field), carried D23 (late)
    assert counts(2, "BTXH") == (3, 0, 2, 1, 3, 1, 0, 2, 0, 0, 0)
    # level 2, VH: the karaoke licence D24, not in the catalogue: field and name from the dossier
    assert counts(2, "VH") == (1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0)
    assert got[(2, "VH")]["ten_linh_vuc"] == "Văn hóa" and got[(2, "F1")]["ten_linh_vuc"] == "Lĩnh vực một"
    # level 3, F1: X01 D30 D31 S2/D01, carried D33; F2: X02 as a commune D40
    assert counts(3, "F1") == (4, 2, 1, 1, 3, 2, 0, 1, 1, 0, 1)
    assert counts(3, "F2") == (1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0)
    # stt numbers the fields within a level
    assert [got[(2, f)]["stt"] for f in ("BTXH", "F1", "F2", "VH")] == [1, 2, 3, 4]
    assert [got[(3, f)]["stt"] for f in ("F1", "F2")] == [1, 2]
    # the same counts as rpt_progress, regrouped
    progress = rows(engine, "SELECT * FROM mart.rpt_progress")
    for cap in (2, 3):
        p = [r for r in progress if r["cap_don_vi"] == cap]
        f = [r for r in got.values() if r["cap_don_vi"] == cap]
        assert sum(r["to_handle_total"] for r in p) == sum(r["received_total"] for r in f)
        for col in ("carried_over", "resolved_total", "resolved_late", "in_progress_overdue"):
            assert sum(r[col] for r in p) == sum(r[col] for r in f), col
    assert all(r["publication_id"] == pub.publication_id and r["as_of"] == AS_OF for r in got.values())


def test_golden_uncollected_results(golden: tuple[Engine, reports.Publication]) -> None:
    engine, pub = golden
    got = by_key(rows(engine, "SELECT * FROM mart.rpt_uncollected_results"), "source", "ma_ho_so")
    # status 9 without NgayTra: D03 (end 03-13: 28 days to 04-10, fee unpaid), D33 (03-01: 40 days,
    # unpaid), D34 (marriage, 02-01: 69 days > the 60-day window), D36 (marriage, 02-29: 41 days). D35 was
    # handed over. No window for P1: over_window null.
    assert {k: (r["days_waiting"], r["window_days"], r["over_window"], r["fees_unpaid"]) for k, r in got.items()} == {
        ("S1", "D03"): (28, None, None, True),
        ("S1", "D33"): (40, None, None, True),
        ("S1", "D34"): (69, 60, True, False),
        ("S1", "D36"): (41, 60, False, False),
    }
    assert "III.5" in got[("S1", "D34")]["can_cu"] and got[("S1", "D03")]["can_cu"] is None
    assert got[("S1", "D34")]["cap_don_vi"] == 3
    assert all(r["as_of"] == AS_OF and r["publication_id"] == pub.publication_id for r in got.values())
    assert "period_start" not in next(iter(got.values()))


# ----------------------------------------------------------------------------------------------
# the official-figures dataset: supplements, unknown flags, fee lines, narrowing, exclusions, targets
# ----------------------------------------------------------------------------------------------
HT_COPY, MARITAL, BIRTH = "2.000635.000.00.00.H08", "1.004873.000.00.00.H08", "1.001193.000.00.00.H08"


def load_official(engine: Engine) -> None:
    """Units U1, U2, U3 (communes). HT_COPY and MARITAL are the reuse exclusions of the 2024 report
    (fees, online payment; HT_COPY at levels 2 and 3, MARITAL at 3); BIRTH: MucDoDVC 3, no fees."""
    with engine.begin() as c:
        for u in ("U1", "U2", "U3"):
            insert_unit(c, u, "2020-01-01", None, f"UBND xã {u}", 3)
        insert_procedure(c, HT_COPY, "Cấp bản sao trích lục hộ tịch", muc_do=4, co_tttt=1, kqg=0)
        insert_procedure(c, MARITAL, "Cấp Giấy xác nhận tình trạng hôn nhân", muc_do=4, co_tttt=1, kqg=0, cap="3")
        insert_procedure(c, BIRTH, "Đăng ký khai sinh", muc_do=3, co_tttt=0, kqg=0, co_phi=0, cap="3")
        d = insert_dossier
        # ---- U1: 2.1 at the period's end (BIRTH, all received 03-04 unless said) -----------------
        # E01: one round (asked 03-05, answered 03-06), resolved 03-07 <= due 03-08 -> on time
        d(c, "E01", tthc=BIRTH, don_vi="U1", status=10, received="2024-03-04 08:00", due="2024-03-08 17:00",
          end="2024-03-07 09:00", n_bo_sung=1)
        insert_supplement(c, "E01", 1, "2024-03-05 09:00", "2024-03-06 09:00")
        # E02: two rounds by its end -> late, although resolved before the due date
        d(c, "E02", tthc=BIRTH, don_vi="U1", status=10, received="2024-03-04 08:00", due="2024-03-20 17:00",
          end="2024-03-15 09:00", n_bo_sung=2)
        insert_supplement(c, "E02", 1, "2024-03-05 09:00", "2024-03-06 09:00")
        insert_supplement(c, "E02", 2, "2024-03-08 09:00", "2024-03-09 09:00")
        # E03: waiting for a supplement asked on 03-10, still open at 03-31 -> E = 03-10 <= due 03-12
        d(c, "E03", tthc=BIRTH, don_vi="U1", status=5, received="2024-03-04 08:00", due="2024-03-12 17:00",
          n_bo_sung=1)
        insert_supplement(c, "E03", 1, "2024-03-10 09:00")
        # E04: asked 03-10, answered only on 04-02 (open at 03-31) -> E = 03-10, on time; its second
        # round (04-03) comes after E
        d(c, "E04", tthc=BIRTH, don_vi="U1", status=4, received="2024-03-04 08:00", due="2024-03-12 17:00",
          n_bo_sung=2)
        insert_supplement(c, "E04", 1, "2024-03-10 09:00", "2024-04-02 09:00")
        insert_supplement(c, "E04", 2, "2024-04-03 09:00")
        # E05: round answered 03-08, still open at 03-31 -> E = 03-31 > due 03-12 -> late
        d(c, "E05", tthc=BIRTH, don_vi="U1", status=4, received="2024-03-04 08:00", due="2024-03-12 17:00",
          n_bo_sung=1)
        insert_supplement(c, "E05", 1, "2024-03-06 09:00", "2024-03-08 09:00")
        # E06: received online 03-20, open, due 04-05 -> on time at 03-31; two rounds of a superseded
        # version (another NgayCapNhat) are ignored
        d(c, "E06", tthc=BIRTH, don_vi="U1", status=4, received="2024-03-20 08:00", due="2024-04-05 17:00",
          channel=2)
        insert_supplement(c, "E06", 1, "2024-03-21 09:00", version=datetime(2024, 3, 25, 8, 0))
        insert_supplement(c, "E06", 2, "2024-03-22 09:00", version=datetime(2024, 3, 25, 8, 0))
        # E07: supplement list unknown (a file export) -> 2.1 unknown
        d(c, "E07", tthc=BIRTH, don_vi="U1", status=10, received="2024-03-04 08:00", due="2024-03-08 17:00",
          end="2024-03-07 09:00", n_bo_sung=None)

        # ---- U2: unknown flags, zero-price fee lines, reuse exclusions ----------------------------
        # G01: HT_COPY, online, DTTT 1 (no payment request: fallback, settled), fee lines with a price
        d(c, "G01", tthc=HT_COPY, don_vi="U2", status=10, received="2024-03-05 08:00", due="2024-03-06 17:00",
          end="2024-03-05 15:00", channel=2, dttt=1, n_le_phi=2, n_le_phi_co_gia=2)
        # G02: HT_COPY, reused data, DTTT 1, its only fee line has Gia 0 -> not in 3.6's denominator
        d(c, "G02", tthc=HT_COPY, don_vi="U2", status=10, received="2024-03-05 08:00", due="2024-03-06 17:00",
          end="2024-03-05 15:00", dttt=1, reuse=True, n_le_phi=1, n_le_phi_co_gia=0)
        # G03: MARITAL, DTTT unknown, fee awaited (result issued)
        d(c, "G03", tthc=MARITAL, don_vi="U2", status=10, received="2024-03-05 08:00", due="2024-03-08 17:00",
          end="2024-03-07 15:00", dttt=None)
        upsert_payment(c, "PAY-G03", "G03", 15_000, WAITING)
        # G04: BIRTH (no fees: not in 3.6 even with no fee list), reused data
        d(c, "G04", tthc=BIRTH, don_vi="U2", status=10, received="2024-03-05 08:00", due="2024-03-08 17:00",
          end="2024-03-07 15:00", reuse=True, n_le_phi=None, n_le_phi_co_gia=None)
        # G05: HT_COPY, reuse unknown, no fee list -> 3.6 membership unknown
        d(c, "G05", tthc=HT_COPY, don_vi="U2", status=10, received="2024-03-05 08:00", due="2024-03-06 17:00",
          end="2024-03-05 15:00", reuse=None, n_le_phi=None, n_le_phi_co_gia=None)
        # G06: BIRTH, digitised flag unknown, a document from the national store
        d(c, "G06", tthc=BIRTH, don_vi="U2", status=10, received="2024-03-05 08:00", due="2024-03-08 17:00",
          end="2024-03-07 15:00", digitised=None, national=True)


def official_reference(tmp_path: Path) -> Path:
    copy_reference(tmp_path)
    (tmp_path / "targets.csv").write_text(
        TARGETS_HEADER + "*,reuse,2024,0.5\nU2,reuse,2024,0.3\n*,on_time,2023,0.99\n", encoding="utf-8")
    # U2 offers only HT_COPY (a listed code missing from the catalogue is not offered)
    (tmp_path / "unit_procedures.csv").write_text(
        f"ma_don_vi,ma_tthc\nU2,{HT_COPY}\nU2,9.999999.000.00.00.H08\n", encoding="utf-8")
    return tmp_path


@pytest.fixture(scope="module", params=WAREHOUSES)
def official(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The official dataset published once per warehouse for the module: its tests only read it."""
    with module_warehouse(request, tmp_path_factory) as url:
        engine = fresh_warehouse(url)
        load_official(engine)
        reports.publish(engine, *PERIOD, run_id="official", as_of=AS_OF,
                        reference_dir=official_reference(tmp_path_factory.mktemp("official-reference")),
                        period_cut="decree-09", period_label="2024-03")
        yield engine
        engine.dispose()


def test_official_on_time_with_supplements(official: Engine) -> None:
    got = by_key(rows(official, "SELECT * FROM mart.rpt_service_indicators WHERE indicator = 'on_time'"),
                 "ma_don_vi")
    # U1: on time E01 (one round), E03 (open supplement: E = 03-10), E04 (answered after 03-31: open),
    # E06 (in progress, not yet due); late E02 (two rounds), E05 (in progress, overdue at 03-31);
    # E07 unknown -> 4/6
    u1 = got[("U1",)]
    assert tuple(u1[k] for k in INDICATOR_COLUMNS) == (4, 6, 4, 6, 0, 0, 0, 1)
    # the 2023 target does not apply to a 2024 period
    assert (u1["target"], u1["meets_target"]) == (None, None)
    # form 06 (section 1: NgayHenTra only, status 5 in time) sees E02 resolved before due, E04 E05 overdue
    # and E03 (status 5) in time. Before due: E01 E02 E07 and the six of U2 (no field: one null row)
    (f,) = rows(official, "SELECT * FROM mart.rpt_form06 WHERE ma_linh_vuc IS NULL")
    assert (f["resolved_before_due"], f["resolved_late"], f["in_progress_in_time"], f["in_progress_overdue"]) == (
        9, 0, 2, 2)  # in time: E03, E06


def test_official_unknown_flags_fee_lines_and_reuse_exclusions(official: Engine) -> None:
    got = by_key(rows(official, "SELECT * FROM mart.rpt_service_indicators WHERE ma_don_vi = 'U2'"), "indicator")

    def counts(indicator: str) -> tuple[int, ...]:
        return tuple(got[(indicator,)][k] for k in (*INDICATOR_COLUMNS, "excluded_by_list"))

    # reuse: G02 G04 reused, G01 G03 G06 not, G05 unknown -> 2/5. Paid-only: G03 unsettled (excluded_unpaid);
    # G01 G02 are HT_COPY, on the exclusion list (excluded_by_list 2) -> G04 G06 left: 1/2
    assert counts("reuse") == (2, 5, 1, 2, 1, 1, 0, 1, 2)
    # the other indicators do not use the list
    assert got[("on_time",)]["excluded_by_list"] == 0
    # online_payment: members G01 (fee lines with a price), G03 (MARITAL); G02's only line has Gia 0 (out),
    # G04 G06 are BIRTH (no fees: out, even with no fee list), G05 has no fee list (unknown), G03's DTTT is
    # unknown -> G01 paid online: 1/1, 2 unknown, nothing excluded (G03 is not in the denominator)
    assert counts("online_payment") == (1, 1, 1, 1, 0, 0, 0, 2, 0)
    # digitised: G06's flag unknown (no paper result: null and true = null); the others known false
    assert counts("digitised") == (0, 5, 0, 4, 1, 1, 0, 1, 0)
    assert counts("from_national_store") == (1, 6, 1, 5, 1, 1, 0, 0, 0)
    # target: U2's own row (0.3) overrides '*' (0.5): 2/5 = 0.4 >= 0.3
    assert (got[("reuse",)]["target"], got[("reuse",)]["meets_target"]) == (0.3, True)
    u1 = rows(official, "SELECT * FROM mart.rpt_service_indicators WHERE ma_don_vi = 'U1' AND indicator = 'reuse'")[0]
    assert (u1["rate_system"], u1["target"], u1["meets_target"]) == (0.0, 0.5, False)


def test_official_unit_procedures_narrowing(official: Engine) -> None:
    got = by_key(rows(official, "SELECT * FROM mart.rpt_service_indicators WHERE indicator LIKE '%uptake'"),
                 "ma_don_vi", "indicator")

    def counts(unit: str, indicator: str) -> tuple[int, ...]:
        return tuple(got[(unit, indicator)][k] for k in INDICATOR_COLUMNS)

    # U1 (not listed): level 3 offers HT_COPY, MARITAL, BIRTH (3.2) -> BIRTH had an online dossier (E06): 1/3;
    # payment uptake: HT_COPY, MARITAL, no dossier -> 0/2
    assert counts("U1", "online_service_uptake") == (1, 3, 1, 3, 0, 0, 0, 0)
    assert counts("U1", "online_payment_uptake") == (0, 2, 0, 2, 0, 0, 0, 0)
    # U2 (listed: HT_COPY only) -> G01 online: 1/1; payment: G01 paid online: 1/1. G03 (MARITAL) is not a
    # procedure U2 offers: neither unknown nor excluded there
    assert counts("U2", "online_service_uptake") == (1, 1, 1, 1, 0, 0, 0, 0)
    assert counts("U2", "online_payment_uptake") == (1, 1, 1, 1, 0, 0, 0, 0)
    # '*': offered by some unit interval (U1, U2, U3): HT_COPY MARITAL BIRTH; hits BIRTH (E06), HT_COPY (G01)
    # -> 2/3. Payment: HT_COPY (hit), MARITAL (G03: DTTT unknown, unsettled) -> 1/2
    assert counts("*", "online_service_uptake") == (2, 3, 2, 3, 1, 1, 0, 0)
    assert counts("*", "online_payment_uptake") == (1, 2, 1, 2, 1, 1, 0, 1)


def test_official_publication_records_the_cut(official: Engine) -> None:
    (p,) = rows(official, "SELECT * FROM mart.publications")
    assert (p["period_cut"], p["period_label"]) == ("decree-09", "2024-03")
    pub = reports.current_publication(official, *PERIOD)
    assert (pub.period_cut, pub.period_label) == ("decree-09", "2024-03")
    assert reports.headline(official, pub)["period_label"] == "2024-03"


# ----------------------------------------------------------------------------------------------
# mart.rpt_late_acceptance: working hours over core.calendar
# ----------------------------------------------------------------------------------------------
def test_late_acceptance_working_hours(warehouse_url: str) -> None:
    from tasks.calendar import load_calendar

    engine = fresh_warehouse(warehouse_url)
    load_calendar(engine, date(2024, 1, 1), date(2024, 12, 31), REFERENCE_DIR)
    with engine.begin() as c:
        insert_unit(c, "U3", "2020-01-01", None, "UBND xã U3", 3)
        insert_procedure(c, BIRTH, "Đăng ký khai sinh", muc_do=3, co_tttt=0, kqg=0, co_phi=0, cap="3")
        d = insert_dossier
        # L01: Fri 03-08 10:00 -> Mon 03-11 10:00: Fri 1.5 + 3.5, weekend 0, Mon 3 = 8.00: not MORE than 8
        d(c, "L01", tthc=BIRTH, don_vi="U3", status=4, channel=2, submitted="2024-03-08 10:00",
          received="2024-03-11 10:00")
        # L02: the same, accepted 30 minutes later: 8.50
        d(c, "L02", tthc=BIRTH, don_vi="U3", status=4, channel=2, submitted="2024-03-08 10:00",
          received="2024-03-11 10:30")
        # L03: across two lunch breaks: Tue 03-12 11:00 -> Wed 03-13 13:45: Tue 0.5 + 3.5, Wed 4.5 + 0.25 = 8.75
        d(c, "L03", tthc=BIRTH, don_vi="U3", status=4, channel=2, submitted="2024-03-12 11:00",
          received="2024-03-13 13:45")
        # L04: never accepted: Fri 03-29 16:00 -> the cut Wed 04-10 12:00: 1 + 5 days x 8 + 2 x 8 + 4.5 = 61.5
        d(c, "L04", tthc=BIRTH, don_vi="U3", status=1, channel=2, submitted="2024-03-29 16:00", received=None)
        # L05: rejected (NgayTuChoi) Thu 03-14 11:00 after Tue 03-12 11:00: 4 + 8 + 4 = 16
        d(c, "L05", tthc=BIRTH, don_vi="U3", status=3, channel=2, submitted="2024-03-12 11:00", received=None,
          rejected="2024-03-14 11:00")
        # L06: in person, accepted a week later: not an online dossier
        d(c, "L06", tthc=BIRTH, don_vi="U3", status=4, channel=1, submitted="2024-03-12 11:00",
          received="2024-03-19 11:00")
        # L07: the Hùng Kings day (Thu 2024-04-18) is not a working day: Wed 04-17 16:00 -> Mon 04-22 08:00:
        # Wed 1 + Thu 0 + Fri 8 + weekend 0 + Mon 1 = 10 (18 if the holiday counted)
        d(c, "L07", tthc=BIRTH, don_vi="U3", status=4, channel=2, submitted="2024-04-17 16:00",
          received="2024-04-22 08:00")
    march = reports.publish(engine, *PERIOD, run_id="m", as_of=AS_OF, reference_dir=REFERENCE_DIR)
    got = {r["ma_ho_so"]: r for r in rows(
        engine, "SELECT * FROM mart.rpt_late_acceptance_history WHERE publication_id = :p", p=march.publication_id)}
    assert {m: r["working_hours_waited"] for m, r in got.items()} == {
        "L02": 8.5, "L03": 8.75, "L04": 61.5, "L05": 16.0}
    assert got["L04"]["ngay_tiep_nhan"] is None
    assert got["L05"]["ngay_tiep_nhan"] == datetime(2024, 3, 14, 11, 0)  # the rejection
    assert got["L02"]["ngay_nop_ho_so"] == datetime(2024, 3, 8, 10, 0) and got["L02"]["cap_don_vi"] == 3
    # L05 is also a rejection at intake of March
    assert rows(engine, "SELECT rejected_at_intake FROM mart.rpt_progress WHERE ma_don_vi = 'U3'")[0][
        "rejected_at_intake"] == 1
    reports.publish(engine, date(2024, 4, 1), date(2024, 4, 30), run_id="a", as_of=datetime(2024, 5, 10),
                    reference_dir=REFERENCE_DIR)
    april = rows(engine, "SELECT * FROM mart.rpt_late_acceptance WHERE period_start = :s", s=date(2024, 4, 1))
    assert [(r["ma_ho_so"], r["working_hours_waited"]) for r in april] == [("L07", 10.0)]
    # the current table keeps both periods
    assert {r["period_start"] for r in rows(engine, "SELECT period_start FROM mart.rpt_late_acceptance")} == {
        date(2024, 3, 1), date(2024, 4, 1)}
