"""The official workbook: layout, formats, text safety, and LibreOffice rendering.

Built from the golden publication of tests/test_reports.py, on DuckDB and PostgreSQL. LibreOffice
(`soffice`, Debian package ``libreoffice-calc``) is REQUIRED: the test converts the workbook to PDF
and to CSV "as shown" to check what an official actually sees (``78,57%``, ``1.500.000``), under an
English (en-US) and a Vietnamese (vi-VN) locale; the system locales ``en_US.UTF-8`` and
``vi_VN.UTF-8`` must be generated (``locale-gen``).
"""

from __future__ import annotations

import csv
import dataclasses
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa
import xlsxwriter
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from tasks import reports, workbook, workbook_cells
from tasks.calendar import load_calendar
from tests.test_reports import (
    AS_OF,
    P1,
    PERIOD,
    REFERENCE_DIR,
    fresh_warehouse,
    insert_dossier,
    load_golden,
    rows,
)

SHEETS = ["Tổng hợp", "Biểu 06", "Tiến độ giải quyết", "Thanh toán trực tuyến", "Chỉ số 766", "Đơn giản hóa TTHC",
          "Phân cấp, ủy quyền", "Trễ hạn theo cán bộ", "Hồ sơ chưa nộp phí", "Hồ sơ chưa trả kết quả",
          "Hồ sơ tiếp nhận trễ"]
OFFICE = "UBND huyện Tuy Phước"
REPORT_NUMBER = "340/BC-UBND ngày 15/12/2024"
PLACE = "Tuy Phước"
EVIL_OFFICIAL = '=HYPERLINK("http://example.invalid","x")'
EVIL_PROCEDURE = "@SUM(1+1) thủ tục một"
EVIL_UNIT = "-UBND xã B"
EVIL_DOSSIER = "+84-D03"
MARRIAGE = "2.000806.000.00.00.H08"  # 60-day collection window in reference/collection_windows.csv


@pytest.fixture
def golden_workbook(warehouse_url: str, tmp_path: Path) -> Iterator[tuple[sa.Engine, reports.Publication, Path]]:
    engine = fresh_warehouse(warehouse_url)
    load_golden(engine)
    with engine.begin() as conn:
        # text that a spreadsheet would take for a formula
        conn.execute(sa.text("UPDATE core.dossiers SET can_bo_xu_ly = :v WHERE ma_can_bo_xu_ly = 'CB1'"), {"v": EVIL_OFFICIAL})
        conn.execute(sa.text("UPDATE core.procedures SET ten_tthc = :v WHERE ma_tthc = '1.000001.000.00.00.H08'"),
                     {"v": EVIL_PROCEDURE})
        conn.execute(sa.text("UPDATE core.units SET ten_don_vi = :v WHERE ma_don_vi = 'X01'"), {"v": EVIL_UNIT})
        conn.execute(sa.text("UPDATE core.dossiers SET ma_ho_so = :v WHERE ma_ho_so = 'D03'"), {"v": EVIL_DOSSIER})
        conn.execute(sa.text("UPDATE core.payments SET ma_ho_so = :v WHERE ma_ho_so = 'D03'"), {"v": EVIL_DOSSIER})
        # an online dossier submitted on Monday 04/03 08:00, accepted on Thursday 07/03: late acceptance
        insert_dossier(conn, "W01", tthc=P1, don_vi="H01", status=2, received="2024-03-07 09:00", channel=2)
        conn.execute(sa.text("UPDATE core.dossiers SET ngay_nop_ho_so = :t WHERE ma_ho_so = 'W01'"),
                     {"t": date(2024, 3, 4).isoformat() + " 08:00:00"})
        # a marriage result ready since 20/01, never collected: over its 60-day window at the cut
        insert_dossier(conn, "W02", tthc=MARRIAGE, don_vi="X01", status=9, received="2024-01-10 09:00",
                       due="2024-01-25 17:00", end="2024-01-20 09:00")
    load_calendar(engine, date(2024, 1, 1), date(2024, 12, 31), REFERENCE_DIR)  # working hours
    pub = reports.publish(engine, *PERIOD, run_id="wb", as_of=AS_OF, reference_dir=REFERENCE_DIR,
                          period_cut="calendar", period_label="2024-03")
    path = workbook.write_workbook(engine, pub.publication_id, tmp_path / "out" / "bao-cao-2024-03.xlsx",
                                   unit_name=OFFICE, report_number=REPORT_NUMBER, place=PLACE)
    yield engine, pub, path
    engine.dispose()


def find(ws: Worksheet, text: str) -> tuple[int, int]:
    for row in ws.iter_rows():
        for cell in row:
            if cell.value == text:
                return cell.row, cell.column
    raise AssertionError(f"{text!r} not in sheet {ws.title}")


def texts(ws: Worksheet) -> list[str]:
    return [c.value for row in ws.iter_rows() for c in row if isinstance(c.value, str)]


def merged_range_of(ws: Worksheet, row: int, col: int) -> str | None:
    for rng in ws.merged_cells.ranges:
        if rng.min_row == row and rng.min_col == col:
            return rng.coord
    return None


def table(ws: Worksheet) -> tuple[list[tuple], list[tuple], tuple | None]:
    """(section rows, data rows, total row) below the header ('STT' heads the first column)."""
    stt_row, _ = find(ws, "STT")
    sections, data, total = [], [], None
    for values in ws.iter_rows(min_row=stt_row + 1, values_only=True):
        first = values[0]
        if isinstance(first, int):
            data.append(values)
        elif isinstance(first, str) and first.startswith("Tổng cộng"):
            total = values
            break
        elif isinstance(first, str) and re.match(r"[IVXLC]+\. ", first):
            sections.append(values)
        elif isinstance(first, str) and first.startswith("Người lập biểu"):
            break
    return sections, data, total


def mart(engine: sa.Engine, table_name: str, pub: reports.Publication) -> list[dict]:
    return rows(engine, f"SELECT * FROM mart.{table_name}_history WHERE publication_id = :p", p=pub.publication_id)


def test_workbook_layout(golden_workbook: tuple[sa.Engine, reports.Publication, Path]) -> None:
    engine, pub, path = golden_workbook
    assert path.exists()
    assert rows(engine, "SELECT workbook_path FROM mart.publications WHERE publication_id = :p",
                p=pub.publication_id)[0]["workbook_path"] == str(path)
    wb = openpyxl.load_workbook(path)  # formulas as written
    values = openpyxl.load_workbook(path, data_only=True)  # totals as cached by the writer
    assert wb.sheetnames == SHEETS

    for ws in wb.worksheets:
        # the issuing body at the left, the national heading at the right, on the same rows
        top = 2 if ws.title == "Biểu 06" else 1
        assert ws.cell(row=top, column=1).value == "UBND HUYỆN TUY PHƯỚC", ws.title
        r, c = find(ws, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM")
        assert r == top and c > 2 and ws.cell(row=r + 1, column=c).value == "Độc lập - Tự do - Hạnh phúc"
        shown = texts(ws)
        assert "Kỳ báo cáo: từ ngày 01/03/2024 đến ngày 31/03/2024 (tháng 3 năm 2024, chốt số liệu theo kỳ dương " \
               "lịch)" in shown, ws.title
        assert f"Kèm theo Báo cáo số {REPORT_NUMBER}" in shown
        assert any(t.startswith("Số liệu tính đến 10/04/2024 12:00") and pub.publication_id in t for t in shown)
        # the signature block, last: date line above the head of the unit
        r_sig, c_left = find(ws, "Người lập biểu")
        assert c_left == 1 and ws.cell(row=r_sig + 1, column=1).value == "(Ký, ghi rõ họ tên)"
        r_head, c_head = find(ws, "Thủ trưởng đơn vị")
        assert r_head == r_sig and c_head == c
        assert ws.cell(row=r_head - 1, column=c_head).value == "Tuy Phước, ngày 10 tháng 04 năm 2024"
        assert ws.cell(row=r_head + 1, column=c_head).value == "(Ký tên, đóng dấu)"
        assert r_sig >= ws.max_row - 1
        assert ws.freeze_panes is not None
        assert ws.page_setup.orientation == "landscape"
        # one page wide (fitToWidth absent = its OOXML default, 1), as many pages down as needed
        assert ws.sheet_properties.pageSetUpPr.fitToPage
        assert (ws.page_setup.fitToWidth or 1) == 1 and ws.page_setup.fitToHeight == 0
        assert ws.page_setup.paperSize == 9 and ws.print_title_rows  # A4, header rows on every page
        # widths in characters (the file stores them with Excel's cell padding: 6 -> 6.71)
        assert 6 <= ws.column_dimensions["A"].width < 7 and ws.column_dimensions["C"].width >= 9

    # --- Biểu 06: form code, title, unit, merged headers, numbered columns, sections, SUM totals ----
    ws, wv = wb["Biểu 06"], values["Biểu 06"]
    assert ws["A1"].value == "Biểu số 06/VPCP/KSTT"
    find(ws, "TÌNH HÌNH, KẾT QUẢ GIẢI QUYẾT TTHC TẠI CƠ QUAN, ĐƠN VỊ TRỰC TIẾP GIẢI QUYẾT TTHC")
    find(ws, "Đơn vị tính: Số hồ sơ TTHC")
    r, c = find(ws, "STT")
    assert merged_range_of(ws, r, c) == f"A{r}:A{r + 2}"
    r_recv, c_recv = find(ws, "Số hồ sơ nhận giải quyết")
    assert r_recv == r and merged_range_of(ws, r, c_recv) == f"C{r}:F{r}"
    assert ws.cell(row=r + 1, column=3).value == "Tổng số" and merged_range_of(ws, r + 1, 3) == f"C{r + 1}:C{r + 2}"
    assert ws.cell(row=r + 1, column=4).value == "Trong đó" and merged_range_of(ws, r + 1, 4) == f"D{r + 1}:F{r + 1}"
    assert [ws.cell(row=r + 2, column=k).value for k in (4, 5, 6)] == [
        "Trực tuyến", "Trực tiếp, dịch vụ bưu chính", "Từ kỳ trước"]
    for group, first, leaves in (("Số hồ sơ đã giải quyết", 7, ["Tổng số", "Trước hạn", "Đúng hạn", "Quá hạn"]),
                                 ("Số hồ sơ đang giải quyết", 11, ["Tổng số", "Trong hạn", "Quá hạn"])):
        assert find(ws, group) == (r, first)
        assert merged_range_of(ws, r, first) == f"{get_column_letter(first)}{r}:{get_column_letter(first + len(leaves) - 1)}{r}"
        assert [ws.cell(row=r + 1, column=first + i).value for i in range(len(leaves))] == leaves
    assert [ws.cell(row=r + 3, column=k).value for k in range(1, 14)] == [f"({k})" for k in range(1, 14)]
    sections, data, _ = table(wv)
    assert [s[0] for s in sections] == ["I. Cấp huyện", "II. Cấp xã"]
    form06 = mart(engine, "rpt_form06", pub)
    assert len(data) == len(form06) and all(isinstance(d[1], str) and d[1] for d in data)
    r_total, _ = find(ws, "Tổng cộng")
    progress = mart(engine, "rpt_progress", pub)
    for k in range(3, 14):
        formula = ws.cell(row=r_total, column=k).value
        assert re.fullmatch(rf"=SUM\({get_column_letter(k)}\d+:{get_column_letter(k)}\d+\)", formula), formula
        assert wv.cell(row=r_total, column=k).value == sum(d[k - 1] for d in data), k
    assert wv.cell(row=r_total, column=3).value == sum(p["to_handle_total"] for p in progress)
    assert wv.cell(row=r_total, column=10).value == sum(p["resolved_late"] for p in progress) == 5
    assert ws.cell(row=r_total, column=3).number_format == workbook.COUNT_FORMAT

    # --- progress: three-row merged header, sections, totals, rejected at intake -------------------
    ws, wv = wb["Tiến độ giải quyết"], values["Tiến độ giải quyết"]
    r, c = find(ws, "STT")
    assert merged_range_of(ws, r, c) == f"A{r}:A{r + 2}"  # STT spans the 3 header rows
    r_done, c_done = find(ws, "Số lượng hồ sơ đã giải quyết")
    assert r_done == r and merged_range_of(ws, r_done, c_done).count(":") == 1
    assert [ws.cell(row=r + 1, column=c_done + i).value for i in range(4)] == ["Tổng số", "Trước hạn", "Đúng hạn",
                                                                              "Trễ hạn"]
    assert find(ws, "Từ chối tiếp nhận") == (r, 17)
    sections, data, total = table(wv)
    assert [s[0] for s in sections] == ["I. Cấp huyện", "II. Cấp xã"]
    assert [d[0] for d in data] == [1, 2, 1, 2, 3]  # STT restarts in each section
    assert [d[1] for d in data] == ["UBND huyện A", "UBND thị trấn C", EVIL_UNIT, "UBND xã C", "UBND xã D"]
    for col in [*range(2, 15), 16]:  # every count column: total = sum of the rows
        assert total[col] == sum(d[col] for d in data), col
    assert total[16] == sum(p["rejected_at_intake"] for p in progress) >= 1  # D05
    assert total[15] == pytest.approx((total[9] + total[10]) / total[8])
    assert total[15] == pytest.approx(14 / 19)
    r_total = find(ws, "Tổng cộng")[0]
    assert ws.cell(row=r_total, column=16).value.startswith('=IF(SUM(I')
    data_row = find(ws, "UBND huyện A")[0]
    assert ws.cell(row=data_row, column=3).number_format == workbook.COUNT_FORMAT
    assert ws.cell(row=data_row, column=16).number_format == workbook.RATE_FORMAT == "[$-42A]0.00%"
    assert ws.cell(row=data_row, column=16).value == pytest.approx(11 / 14)  # a fraction, shown as 78,57%

    # --- table 2a: "Số lượng hồ sơ đã giải quyết" over "Đúng hạn" / "Trễ hạn" ----------------------
    ws = values["Đơn giản hóa TTHC"]
    r, c = find(ws, "Số lượng hồ sơ đã giải quyết")
    assert merged_range_of(wb["Đơn giản hóa TTHC"], r, c) is not None
    assert (ws.cell(row=r + 1, column=c).value, ws.cell(row=r + 1, column=c + 1).value) == ("Đúng hạn", "Trễ hạn")
    sections, data, total = table(ws)
    assert [s[0] for s in sections] == ["I. Thủ tục hành chính"]
    assert data[0][:3] == (1, "1.001653.000.00.00.H08", "Đổi, cấp lại Giấy xác nhận khuyết tật")
    assert (data[0][6], data[0][7]) == (1, 1) and (total[6], total[7]) == (1, 1)

    # --- table 2đ ---------------------------------------------------------------------------------
    ws = values["Phân cấp, ủy quyền"]
    find(ws, "Số lượng hồ sơ phát sinh từ khi phân cấp/ủy quyền")
    _, data, total = table(ws)
    assert [d[1] for d in data] == ["1.000903.000.00.00.H08", "1.002425.000.00.00.H08"]
    assert (total[5], total[6]) == (1, 0)

    # --- online payment, late list, unpaid list: totals are sums -----------------------------------
    ws = values["Thanh toán trực tuyến"]
    _, data, total = table(ws)
    for col in range(4, 12):
        assert total[col] == sum(d[col] for d in data), col
    assert (total[12], total[13]) == (pytest.approx(3 / 8), pytest.approx(3 / 4))
    ws = values["Trễ hạn theo cán bộ"]
    _, data, total = table(ws)
    assert [total[c] for c in (5, 6, 7)] == [sum(d[c] for d in data) for c in (5, 6, 7)] == [5, 3, 8]
    ws = values["Hồ sơ chưa nộp phí"]
    sections, data, total = table(ws)
    assert total[7] == sum(d[7] for d in data) == 1_665_000
    assert total[10] == sum(1 for d in data if d[10] == "Có") == 3
    assert ws.cell(row=find(ws, "D32")[0], column=8).number_format == workbook.COUNT_FORMAT

    # --- uncollected results: the marriage result over its 60-day window --------------------------
    ws = values["Hồ sơ chưa trả kết quả"]
    find(ws, "Thời hạn lưu giữ kết quả (ngày)")
    _, data, total = table(ws)
    uncollected = {r["ma_ho_so"]: r for r in mart(engine, "rpt_uncollected_results", pub)}
    assert sorted(d[1] for d in data) == sorted(uncollected)
    w02 = next(d for d in data if d[1] == "W02")
    assert (w02[6], w02[7], w02[9]) == (uncollected["W02"]["days_waiting"], 60, "Có")
    assert "60 ngày" in w02[8]
    assert total[9] == sum(1 for d in data if d[9] == "Có") >= 1

    # --- late acceptance: W01 waited more than 8 working hours -----------------------------------
    ws = values["Hồ sơ tiếp nhận trễ"]
    find(ws, "Số giờ làm việc đã chờ")
    _, data, _ = table(ws)
    late = {r["ma_ho_so"]: r for r in mart(engine, "rpt_late_acceptance", pub)}
    assert "W01" in late and sorted(d[1] for d in data) == sorted(late)
    w01 = next(d for d in data if d[1] == "W01")
    assert w01[7] == pytest.approx(late["W01"]["working_hours_waited"]) and w01[7] > 8
    assert ws.cell(row=find(ws, "W01")[0], column=8).number_format == workbook.HOURS_FORMAT

    # --- 766 indicators: the jurisdiction first, one row per indicator, targets judged -------------
    ws = values["Chỉ số 766"]
    for label in ("Mã chỉ số (QĐ 766)", "Theo hệ thống", "Chỉ tính hồ sơ đã hoàn thành NVTC", "Số hồ sơ loại trừ",
                  "Số hồ sơ không xác định được", "Mức đạt điểm tối đa", "Chỉ tiêu giao", "Đánh giá"):
        find(ws, label)
    r, c = find(ws, "Theo hệ thống")
    assert merged_range_of(wb["Chỉ số 766"], r, c) == f"D{r}:F{r}"
    assert [ws.cell(row=r + 1, column=k).value for k in (4, 5, 6)] == ["Tử số", "Mẫu số", "Tỷ lệ"]
    sections, data, total = table(ws)
    assert total is None
    indicators = mart(engine, "rpt_service_indicators", pub)
    assert sections[0][0] == "I. Toàn địa bàn"
    assert len(sections) == len({(i["ma_don_vi"], i["cap_don_vi"]) for i in indicators})
    assert sections[1][0] == "II. UBND huyện A (Cấp huyện)"
    star = sorted((i for i in indicators if i["ma_don_vi"] == "*"), key=lambda i: i["indicator_order"])
    assert len(star) == 9 and len(data) == len(indicators)
    for d, i in zip(data, star, strict=False):  # the first section is '*'
        assert (d[1], d[2], d[3], d[4], d[6], d[7]) == (i["code_766"], i["indicator_label"], i["numerator_system"],
                                                        i["denominator_system"], i["numerator_paid_only"],
                                                        i["denominator_paid_only"])
        assert d[5] == (pytest.approx(i["rate_system"]) if i["rate_system"] is not None else "N/A")
        assert (d[9], d[10], d[11]) == (i["excluded_unpaid"], i["excluded_by_list"], i["unknown"])
        assert d[12] == (pytest.approx(i["full_score_at"]) if i["full_score_at"] is not None else None)
        assert d[14] == {True: "Đạt", False: "Chưa đạt", None: None}[i["meets_target"]]
    verdicts = {(d[2], d[14]) for d in data}
    assert ("Tỷ lệ hồ sơ nộp trực tuyến", "Chưa đạt") in verdicts and ("Tỷ lệ hồ sơ nộp trực tuyến", "Đạt") in verdicts
    assert all(d[14] is None for d in data if d[13] is None)  # no target: no verdict
    assert star[0]["code_766"] == "2.1" and data[8][1] is None  # online payment uptake: no 766 code
    row_of = find(ws, "Tỷ lệ hồ sơ nộp trực tuyến")[0]
    assert ws.cell(row=row_of, column=6).number_format == workbook.RATE_FORMAT

    # --- summary: the headline of section II.2, the data cut, a chart --------------------------------
    ws = values["Tổng hợp"]
    shown = texts(ws)
    assert any("05/19 hồ sơ trễ hạn, trong đó cấp huyện 04, cấp xã 01" in t for t in shown)
    assert any("số liệu tính đến 10/04/2024 12:00" in t for t in shown)
    assert len(ws._charts) == 1
    chart = ws._charts[0]
    assert chart.tagname == "barChart" and len(chart.series) == 2
    r, _ = find(ws, "Tỷ lệ hồ sơ nộp trực tuyến")
    assert ws.cell(row=r, column=5).value == pytest.approx(star[1]["rate_system"])
    assert ws.cell(row=r, column=8).value == pytest.approx(star[1]["rate_paid_only"])
    assert ws.cell(row=r, column=5).number_format == workbook.RATE_FORMAT
    r, _ = find(ws, "Tỷ lệ hồ sơ thanh toán trực tuyến")
    assert star[2]["rate_system"] is not None or ws.cell(row=r, column=5).value == "N/A"


def test_heading_texts(golden_workbook: tuple[sa.Engine, reports.Publication, Path]) -> None:
    """The period's label and cut; no report number, no place: no 'Kèm theo' line, a bare date."""
    engine, pub, path = golden_workbook
    h1 = dataclasses.replace(pub, period_start=date(2023, 12, 15), period_end=date(2024, 6, 14),
                             period_cut="decree-09", period_label="2024-H1")
    assert workbook_cells.period_line(h1) == ("Kỳ báo cáo: từ ngày 15/12/2023 đến ngày 14/06/2024 (6 tháng đầu năm 2024, "
                                        "chốt số liệu theo Nghị định 09/2019/NĐ-CP)")
    q2 = dataclasses.replace(pub, period_label="2024-Q2")
    assert workbook_cells.period_line(q2).endswith("(quý II năm 2024, chốt số liệu theo kỳ dương lịch)")
    ranged = dataclasses.replace(pub, period_label=None)
    assert workbook_cells.period_line(ranged).endswith("31/03/2024 (chốt số liệu theo kỳ dương lịch)")
    bare = openpyxl.load_workbook(workbook.write_workbook(engine, pub.publication_id, path.with_name("bare.xlsx")))
    for ws in bare.worksheets:
        shown = texts(ws)
        assert not any(t.startswith("Kèm theo Báo cáo số") for t in shown), ws.title
        assert "Ngày 10 tháng 04 năm 2024" in shown
        assert ws.cell(row=2 if ws.title == "Biểu 06" else 1, column=1).value == "UBND HUYỆN A"  # highest-level unit


def test_formula_like_text_stays_text(golden_workbook: tuple[sa.Engine, reports.Publication, Path]) -> None:
    _, _, path = golden_workbook
    wb = openpyxl.load_workbook(path)
    seen = set()
    for ws in wb.worksheets:
        total_rows = {c.row for row in ws.iter_rows() for c in row if c.value == "Tổng cộng"}
        for row in ws.iter_rows():
            for cell in row:
                if cell.value in (EVIL_OFFICIAL, EVIL_PROCEDURE, EVIL_UNIT, EVIL_DOSSIER):
                    assert cell.data_type == "s", (ws.title, cell.coordinate)
                    assert cell.quotePrefix, (ws.title, cell.coordinate)
                    seen.add(cell.value)
                if cell.data_type == "f":  # only our totals are formulas
                    assert cell.row in total_rows, f"formula in {ws.title}!{cell.coordinate}: {cell.value}"
                    assert re.fullmatch(r'=(SUM|COUNTIF|IF)\((?:[A-Z0-9:(),+=/]|"[^"]*")*\)', cell.value), cell.value
    assert seen == {EVIL_OFFICIAL, EVIL_PROCEDURE, EVIL_UNIT, EVIL_DOSSIER}
    # and in the raw XML: every <f> element is one of our totals, none holds the evil text
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.startswith("xl/worksheets/sheet"):
                for f in re.findall(rb"<f>(.*?)</f>", z.read(name)):
                    assert re.fullmatch(rb"(SUM|COUNTIF|IF)\(.*\)", f) and b"HYPERLINK" not in f, (name, f)


def test_workbook_of_a_period_and_of_an_old_publication(warehouse_url: str, tmp_path: Path) -> None:
    engine = fresh_warehouse(warehouse_url)
    load_golden(engine)
    first = reports.publish(engine, *PERIOD, run_id="r1", as_of=AS_OF, reference_dir=REFERENCE_DIR)
    second = reports.publish(engine, *PERIOD, run_id="r2", reference_dir=REFERENCE_DIR)
    by_period = openpyxl.load_workbook(workbook.write_workbook(engine, PERIOD, tmp_path / "current.xlsx"))
    assert any(second.publication_id in t for t in texts(by_period["Tổng hợp"]))
    old = openpyxl.load_workbook(workbook.write_workbook(engine, first.publication_id, tmp_path / "old.xlsx",
                                                         unit_name="UBND huyện Tuy Phước"))
    assert any(first.publication_id in t for t in texts(old["Tổng hợp"]))
    assert old["Tổng hợp"]["A1"].value == "UBND HUYỆN TUY PHƯỚC"


# ----------------------------------------------------------------------------------------------
# LibreOffice: what the official sees, on an English and on a Vietnamese computer
# ----------------------------------------------------------------------------------------------
LOCALES = {"en-US": "en_US.UTF-8", "vi-VN": "vi_VN.UTF-8"}
CSV_AS_SHOWN = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true,false,false,-1"


def soffice() -> str:
    exe = shutil.which("soffice") or shutil.which("libreoffice")
    if exe is None:
        pytest.fail("LibreOffice is required for the workbook rendering test: apt-get install -y libreoffice-calc")
    return exe


def system_locale(name: str) -> str:
    available = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=True).stdout.lower().split()
    if name.lower().replace("utf-8", "utf8") not in available:
        pytest.fail(f"locale {name} is required: add it to /etc/locale.gen and run locale-gen "
                    "(apt-get install -y locales)")
    return name


def convert(paths: list[Path], target: str, outdir: Path, locale: str = "en-US") -> None:
    """Convert with a fresh LibreOffice profile whose locale is ``locale`` (and the same system
    locale in the environment)."""
    profile = outdir / f"lo-profile-{locale}"
    (profile / "user").mkdir(parents=True, exist_ok=True)
    (profile / "user" / "registrymodifications.xcu").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        '<item oor:path="/org.openoffice.Setup/L10N"><prop oor:name="ooSetupSystemLocale" oor:op="fuse">'
        f"<value>{locale}</value></prop></item>\n</oor:items>\n", encoding="utf-8")
    env_locale = system_locale(LOCALES[locale])
    subprocess.run(
        [soffice(), f"-env:UserInstallation=file://{profile}", "--headless", "--convert-to", target,
         "--outdir", str(outdir), *map(str, paths)],
        check=True, capture_output=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(outdir), "LANG": env_locale, "LC_ALL": env_locale},
    )


def shown_csv(outdir: Path, stem: str, sheet: str) -> list[list[str]]:
    with open(outdir / f"{stem}-{sheet}.csv", encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def formats_probe(path: Path) -> Path:
    """A one-sheet workbook with the workbook's own formats on chosen values, and a control cell in
    a plain '0.00%' that follows the locale (proof that the locale did change)."""
    book = xlsxwriter.Workbook(str(path), workbook.WORKBOOK_OPTIONS)
    sheet = workbook.Sheet(book, {}, "Probe")
    values = [("count", 14_122), ("count", 999), ("count", 1_500_000), ("count", 1_234_567_890),
              ("rate", 0.9993), ("rate", None), ("hours", 12.5)]
    for row, (kind, value) in enumerate(values, start=1):
        sheet.put(row, 1, kind)
        sheet.put(row, 2, value, workbook_cells.number_format(kind), workbook_cells.empty_of(kind))
    sheet.put(len(values) + 1, 1, "control")
    sheet.put(len(values) + 1, 2, 0.9993, {"num_format": "0.00%"})
    book.close()
    return path


@pytest.mark.slow_on_postgres  # rendering does not depend on the warehouse; the DuckDB variant stays
@pytest.mark.parametrize("locale", ["en-US", "vi-VN"])
def test_libreoffice_renders_the_workbook(golden_workbook: tuple[sa.Engine, reports.Publication, Path],
                                          tmp_path: Path, locale: str) -> None:
    _, _, path = golden_workbook
    out = tmp_path / "lo"
    out.mkdir()
    probe = formats_probe(tmp_path / "probe.xlsx")
    if locale == "en-US":
        convert([path], "pdf", out, locale)
        pdf = out / f"{path.stem}.pdf"
        assert pdf.exists() and pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 10_000
    # CSV "as shown" (token 9 = true), every sheet (token 12 = -1): the displayed text of each cell
    convert([path, probe], CSV_AS_SHOWN, out, locale)
    shown = {sheet: shown_csv(out, path.stem, sheet) for sheet in SHEETS}

    got = {r[0]: r[1] for r in shown_csv(out, "probe", "Probe")}
    assert got["control"] == {"en-US": "99.93%", "vi-VN": "99,93%"}[locale]  # the locale did change
    probe_rows = [r[1] for r in shown_csv(out, "probe", "Probe")]
    assert probe_rows[:7] == ["14.122", "999", "1.500.000", "1.234.567.890", "99,93%", "N/A", "12,50"]

    progress = {r[1]: r for r in shown["Tiến độ giải quyết"] if len(r) > 1}
    assert progress["UBND huyện A"][15] == "78,57%"  # decimal comma, two decimals
    total = next(r for r in shown["Tiến độ giải quyết"] if r[0] == "Tổng cộng")
    assert total[15] == "73,68%"  # 14/19, the total's formula computed by LibreOffice
    unpaid = {r[1]: r for r in shown["Hồ sơ chưa nộp phí"] if len(r) > 1}
    assert unpaid["D32"][7] == "1.500.000"  # '.' thousands separator
    assert unpaid[EVIL_DOSSIER][1] == EVIL_DOSSIER  # shown as typed, not evaluated
    total = next(r for r in shown["Hồ sơ chưa nộp phí"] if r[0] == "Tổng cộng")
    assert total[7] == "1.665.000"
    payment = {r[1]: r for r in shown["Thanh toán trực tuyến"] if len(r) > 1}
    assert payment["UBND huyện A"][10] == "130.000"
    summary = {r[1]: r for r in shown["Tổng hợp"] if len(r) > 1}
    assert re.fullmatch(r"\d{1,3},\d\d%", summary["Tỷ lệ hồ sơ nộp trực tuyến"][4])
    indicators = [r for r in shown["Chỉ số 766"] if len(r) > 14]
    assert any(r[5] == "N/A" for r in indicators) and any(r[14] == "Chưa đạt" for r in indicators)
    form06 = shown["Biểu 06"]
    assert ["(1)", "(2)", "(3)"] == next(r for r in form06 if r and r[0] == "(1)")[:3]
    late = {r[4]: r for r in shown["Trễ hạn theo cán bộ"] if len(r) > 4}
    assert EVIL_OFFICIAL in late
