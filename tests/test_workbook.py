"""The official workbook: layout, formats, text safety, and LibreOffice rendering.

Built from the golden publication of tests/test_reports.py, on DuckDB and PostgreSQL. LibreOffice
(`soffice`, Debian package ``libreoffice-calc``) is REQUIRED: the test converts the workbook to PDF
and to CSV "as shown" to check what an official actually sees (``73,7%``, ``1.500.000``).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from tasks import reports, workbook
from tests.test_reports import AS_OF, PERIOD, REFERENCE_DIR, fresh_warehouse, load_golden, rows

SHEETS = ["Tổng hợp", "Tiến độ giải quyết", "Thanh toán trực tuyến", "07 chỉ tiêu", "Đơn giản hóa TTHC",
          "Phân cấp, ủy quyền", "Trễ hạn theo cán bộ", "Hồ sơ chưa nộp phí"]
EVIL_OFFICIAL = '=HYPERLINK("http://example.invalid","x")'
EVIL_PROCEDURE = "@SUM(1+1) thủ tục một"
EVIL_UNIT = "-UBND xã B"
EVIL_DOSSIER = "+84-D03"


@pytest.fixture
def golden_workbook(warehouse_url: str, tmp_path: Path) -> Iterator[tuple[sa.Engine, reports.Publication, Path]]:
    engine = fresh_warehouse(warehouse_url)
    load_golden(engine)
    with engine.begin() as conn:  # text that a spreadsheet would take for a formula
        conn.execute(sa.text("UPDATE core.dossiers SET can_bo_xu_ly = :v WHERE ma_can_bo_xu_ly = 'CB1'"), {"v": EVIL_OFFICIAL})
        conn.execute(sa.text("UPDATE core.procedures SET ten_tthc = :v WHERE ma_tthc = '1.000001.000.00.00.H08'"),
                     {"v": EVIL_PROCEDURE})
        conn.execute(sa.text("UPDATE core.units SET ten_don_vi = :v WHERE ma_don_vi = 'X01'"), {"v": EVIL_UNIT})
        conn.execute(sa.text("UPDATE core.dossiers SET ma_ho_so = :v WHERE ma_ho_so = 'D03'"), {"v": EVIL_DOSSIER})
        conn.execute(sa.text("UPDATE core.payments SET ma_ho_so = :v WHERE ma_ho_so = 'D03'"), {"v": EVIL_DOSSIER})
    pub = reports.publish(engine, *PERIOD, run_id="wb", as_of=AS_OF, reference_dir=REFERENCE_DIR)
    path = workbook.write_workbook(engine, pub.publication_id, tmp_path / "out" / "bao-cao-2024-03.xlsx")
    yield engine, pub, path
    engine.dispose()


def find(ws: Worksheet, text: str) -> tuple[int, int]:
    for row in ws.iter_rows():
        for cell in row:
            if cell.value == text:
                return cell.row, cell.column
    raise AssertionError(f"{text!r} not in sheet {ws.title}")


def merged_range_of(ws: Worksheet, row: int, col: int) -> str | None:
    for rng in ws.merged_cells.ranges:
        if rng.min_row == row and rng.min_col == col:
            return rng.coord
    return None


def table(ws: Worksheet) -> tuple[list[tuple], list[tuple], tuple]:
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
        elif isinstance(first, str) and first.split(".")[0] in ("I", "II", "III", "IV"):
            sections.append(values)
    assert total is not None, f"no total row in {ws.title}"
    return sections, data, total


def test_workbook_layout(golden_workbook: tuple[sa.Engine, reports.Publication, Path]) -> None:
    engine, pub, path = golden_workbook
    assert path.exists()
    assert rows(engine, "SELECT workbook_path FROM mart.publications WHERE publication_id = :p",
                p=pub.publication_id)[0]["workbook_path"] == str(path)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == SHEETS

    for ws in wb.worksheets:
        # heading: unit, title, period, data cut
        assert ws["A1"].value == "UBND HUYỆN A"
        assert ws["A3"].value == "Từ ngày 01/03/2024 đến ngày 31/03/2024"
        assert ws["A4"].value.startswith("Số liệu tính đến 10/04/2024 12:00")
        assert ws.freeze_panes is not None
        assert ws.page_setup.orientation == "landscape"
        # one page wide (fitToWidth absent = its OOXML default, 1), as many pages down as needed
        assert ws.sheet_properties.pageSetUpPr.fitToPage
        assert (ws.page_setup.fitToWidth or 1) == 1 and ws.page_setup.fitToHeight == 0
        assert ws.page_setup.paperSize == 9 and ws.print_title_rows  # A4, header rows on every page
        # widths in characters (the file stores them with Excel's cell padding: 6 -> 6.71)
        assert 6 <= ws.column_dimensions["A"].width < 7 and ws.column_dimensions["C"].width >= 10

    # --- progress (form 06): three-row merged header, sections, totals ---------------------------
    ws = wb["Tiến độ giải quyết"]
    r, c = find(ws, "STT")
    assert merged_range_of(ws, r, c) == f"A{r}:A{r + 2}"  # STT spans the 3 header rows
    r_done, c_done = find(ws, "Số lượng hồ sơ đã giải quyết")
    assert r_done == r and merged_range_of(ws, r_done, c_done).count(":") == 1
    under = [ws.cell(row=r + 1, column=c_done + i).value for i in range(4)]
    assert under == ["Tổng số", "Trước hạn", "Đúng hạn", "Trễ hạn"]
    sections, data, total = table(ws)
    assert [s[0] for s in sections] == ["I. Cấp huyện", "II. Cấp xã"]
    assert [d[0] for d in data] == [1, 2, 1, 2]  # STT restarts in each section
    assert [d[1] for d in data] == ["UBND huyện A", "UBND thị trấn C", EVIL_UNIT, "UBND xã C"]
    for col in range(2, 15):  # every count column: total = sum of the rows
        assert total[col] == sum(d[col] for d in data), col
    assert total[2] == 26 and total[11] == 5  # to handle 22 + 4 carried over; late 5
    assert total[15] == pytest.approx(14 / 19)
    data_row = find(ws, "UBND huyện A")[0]
    assert ws.cell(row=data_row, column=3).number_format == workbook.COUNT_FORMAT == "[$-42A]#,##0"
    assert ws.cell(row=data_row, column=16).number_format == workbook.RATE_FORMAT == "[$-42A]0.0%"
    assert ws.cell(row=data_row, column=16).value == pytest.approx(11 / 14)  # a fraction, shown as 78,6%

    # --- table 2a: "Số lượng hồ sơ đã giải quyết" over "Đúng hạn" / "Trễ hạn" ----------------------
    ws = wb["Đơn giản hóa TTHC"]
    r, c = find(ws, "Số lượng hồ sơ đã giải quyết")
    assert merged_range_of(ws, r, c) is not None
    assert (ws.cell(row=r + 1, column=c).value, ws.cell(row=r + 1, column=c + 1).value) == ("Đúng hạn", "Trễ hạn")
    sections, data, total = table(ws)
    assert [s[0] for s in sections] == ["I. Thủ tục hành chính"]
    assert data[0][:3] == (1, "1.001653.000.00.00.H08", "Đổi, cấp lại Giấy xác nhận khuyết tật")
    assert (data[0][6], data[0][7]) == (1, 1) and (total[6], total[7]) == (1, 1)

    # --- table 2đ ---------------------------------------------------------------------------------
    ws = wb["Phân cấp, ủy quyền"]
    find(ws, "Số lượng hồ sơ phát sinh từ khi phân cấp/ủy quyền")
    _, data, total = table(ws)
    assert [d[1] for d in data] == ["1.000903.000.00.00.H08", "1.002425.000.00.00.H08"]
    assert (total[5], total[6]) == (1, 0)

    # --- online payment, late list, unpaid list: totals are sums -----------------------------------
    ws = wb["Thanh toán trực tuyến"]
    _, data, total = table(ws)
    for col in range(4, 12):
        assert total[col] == sum(d[col] for d in data), col
    assert (total[12], total[13]) == (pytest.approx(3 / 8), pytest.approx(3 / 4))
    ws = wb["Trễ hạn theo cán bộ"]
    _, data, total = table(ws)
    assert [total[c] for c in (5, 6, 7)] == [sum(d[c] for d in data) for c in (5, 6, 7)] == [5, 3, 8]
    ws = wb["Hồ sơ chưa nộp phí"]
    sections, data, total = table(ws)
    assert total[7] == sum(d[7] for d in data) == 1_665_000
    assert ws.cell(row=find(ws, "D32")[0], column=8).number_format == workbook.COUNT_FORMAT

    # --- indicators: one row per unit, system and paid-only side by side, '*' as the total ---------
    ws = wb["07 chỉ tiêu"]
    r, c = find(ws, "Tỷ lệ hồ sơ thanh toán trực tuyến")
    assert merged_range_of(ws, r, c) == f"{get_column_letter(c)}{r}:{get_column_letter(c + 1)}{r}"
    _, data, total = table(ws)
    assert len(data) == 4
    assert (total[2], total[3]) == (pytest.approx(14 / 19), pytest.approx(11 / 15))

    # --- summary: the headline of section II.2, the data cut, a chart --------------------------------
    ws = wb["Tổng hợp"]
    texts = [cell.value for row in ws.iter_rows() for cell in row if isinstance(cell.value, str)]
    assert any("05/19 hồ sơ trễ hạn, trong đó cấp huyện 04, cấp xã 01" in t for t in texts)
    assert any("số liệu tính đến 10/04/2024 12:00" in t for t in texts)
    assert len(ws._charts) == 1
    chart = ws._charts[0]
    assert chart.tagname == "barChart" and len(chart.series) == 2
    r, _ = find(ws, "Tỷ lệ hồ sơ giải quyết đúng hạn")
    assert ws.cell(row=r, column=5).value == pytest.approx(14 / 19)
    assert ws.cell(row=r, column=8).value == pytest.approx(11 / 15)
    assert ws.cell(row=r, column=5).number_format == workbook.RATE_FORMAT


def test_formula_like_text_stays_text(golden_workbook: tuple[sa.Engine, reports.Publication, Path]) -> None:
    _, _, path = golden_workbook
    wb = openpyxl.load_workbook(path)
    seen = set()
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if cell.value in (EVIL_OFFICIAL, EVIL_PROCEDURE, EVIL_UNIT, EVIL_DOSSIER):
                    assert cell.data_type == "s", (ws.title, cell.coordinate)
                    assert cell.quotePrefix, (ws.title, cell.coordinate)
                    seen.add(cell.value)
                if cell.data_type == "f":
                    raise AssertionError(f"formula in {ws.title}!{cell.coordinate}: {cell.value}")
    assert seen == {EVIL_OFFICIAL, EVIL_PROCEDURE, EVIL_UNIT, EVIL_DOSSIER}
    # and in the raw XML: no <f> element anywhere
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.startswith("xl/worksheets/sheet"):
                assert b"<f>" not in z.read(name), name


def test_workbook_of_a_period_and_of_an_old_publication(warehouse_url: str, tmp_path: Path) -> None:
    engine = fresh_warehouse(warehouse_url)
    load_golden(engine)
    first = reports.publish(engine, *PERIOD, run_id="r1", as_of=AS_OF, reference_dir=REFERENCE_DIR)
    second = reports.publish(engine, *PERIOD, run_id="r2", reference_dir=REFERENCE_DIR)
    by_period = openpyxl.load_workbook(workbook.write_workbook(engine, PERIOD, tmp_path / "current.xlsx"))
    assert second.publication_id in by_period["Tổng hợp"]["A4"].value
    old = openpyxl.load_workbook(workbook.write_workbook(engine, first.publication_id, tmp_path / "old.xlsx",
                                                         unit_name="UBND huyện Tuy Phước"))
    assert first.publication_id in old["Tổng hợp"]["A4"].value
    assert old["Tổng hợp"]["A1"].value == "UBND HUYỆN TUY PHƯỚC"


# ----------------------------------------------------------------------------------------------
# LibreOffice: what the official sees
# ----------------------------------------------------------------------------------------------
def soffice() -> str:
    exe = shutil.which("soffice") or shutil.which("libreoffice")
    if exe is None:
        pytest.fail("LibreOffice is required for the workbook rendering test: apt-get install -y libreoffice-calc")
    return exe


def convert(path: Path, target: str, outdir: Path) -> None:
    profile = outdir / "lo-profile"
    subprocess.run(
        [soffice(), f"-env:UserInstallation=file://{profile}", "--headless", "--convert-to", target,
         "--outdir", str(outdir), str(path)],
        check=True, capture_output=True, timeout=180,
    )


def test_libreoffice_renders_the_workbook(golden_workbook: tuple[sa.Engine, reports.Publication, Path],
                                          tmp_path: Path) -> None:
    _, _, path = golden_workbook
    out = tmp_path / "lo"
    out.mkdir()
    convert(path, "pdf", out)
    pdf = out / f"{path.stem}.pdf"
    assert pdf.exists() and pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 10_000
    # CSV "as shown" (token 9 = true), every sheet (token 12 = -1): the displayed text of each cell
    convert(path, "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true,false,false,-1", out)
    shown = {}
    for sheet in SHEETS:
        with open(out / f"{path.stem}-{sheet}.csv", encoding="utf-8", newline="") as f:
            shown[sheet] = list(csv.reader(f))
    progress = {r[1]: r for r in shown["Tiến độ giải quyết"] if len(r) > 1}
    assert progress["UBND huyện A"][15] == "78,6%"  # decimal comma
    unpaid = {r[1]: r for r in shown["Hồ sơ chưa nộp phí"] if len(r) > 1}
    assert unpaid["D32"][7] == "1.500.000"  # '.' thousands separator
    assert unpaid[EVIL_DOSSIER][1] == EVIL_DOSSIER  # shown as typed, not evaluated
    summary = {r[1]: r for r in shown["Tổng hợp"] if len(r) > 1}
    assert summary["Tỷ lệ hồ sơ thanh toán trực tuyến"][4] == "37,5%"
    assert summary["Tỷ lệ hồ sơ thanh toán trực tuyến"][7] == "75,0%"
    late = {r[4]: r for r in shown["Trễ hạn theo cán bộ"] if len(r) > 4}
    assert EVIL_OFFICIAL in late
