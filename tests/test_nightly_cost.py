"""The nightly run's work after the loads, kept proportional to what is due (issue: the nightly on a
big warehouse): the retention purge takes a cheap first look before it scans the raw layer, and
the workbook's cells go through a shorter writer that must write XlsxWriter's bytes exactly."""

from __future__ import annotations

import zipfile
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import xlsxwriter
from xlsxwriter.worksheet import Worksheet

from tasks import landing
from tasks.load import RAW_COLUMNS
from tasks.retention import purge
from tasks.warehouse import connect, upgrade
from tasks.workbook import WORKBOOK_OPTIONS
from tasks.workbook_xlsx import FastWorksheet


def _land(engine: sa.Engine, rows: list[tuple], run_id: str) -> None:
    frame = pd.DataFrame([("s", k, h, u, "{}", "api", run_id, t) for k, h, u, t in rows], columns=RAW_COLUMNS)
    with engine.begin() as conn:
        landing.record(conn, landing.land(engine, "dossiers", "s", run_id, frame, rows[0][3]))


def _manifest(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text("SELECT path, rows, bytes FROM dq.landed_files ORDER BY path"))]


def test_the_purge_scans_nothing_when_no_row_is_old_enough(duckdb_url, monkeypatch):
    eng = connect(duckdb_url)
    upgrade(eng)
    loaded, later = datetime(2024, 6, 1, 8), datetime(2024, 6, 20, 8)
    _land(eng, [("A", "a1", "20240501000000", loaded), ("B", "b1", "20240501000000", loaded)], "r1")
    _land(eng, [("A", "a2", "20240515000000", later), ("B", "b1", "20240501000000", later)], "r2")
    with eng.connect() as c:
        assert not landing.loaded_before(c, "dossiers", loaded)  # loaded at the cutoff: not before it
        assert landing.loaded_before(c, "dossiers", datetime(2024, 6, 1, 8, 0, 1))
        assert not landing.loaded_before(c, "payments", later)  # nothing landed
    manifest = _manifest(eng)

    def no_scan(*a, **k):
        raise AssertionError("the raw layer was scanned with nothing due")

    with monkeypatch.context() as m:
        m.setattr(landing, "drop_rows", no_scan)
        res = purge(eng, raw_retention_days=30, quarantine_raw_retention_days=30, now=datetime(2024, 6, 30))
    assert res.raw_versions == {e: 0 for e in res.raw_versions} and res.raw_versions
    assert _manifest(eng) == manifest
    # once a1 and b1's extra copy are old enough, the purge takes its full path and drops them
    res = purge(eng, raw_retention_days=30, quarantine_raw_retention_days=30, now=datetime(2024, 7, 10))
    assert res.raw_versions["dossiers"] == 1
    with eng.connect() as c:
        assert sorted(r[0] for r in c.execute(sa.text("SELECT record_hash FROM raw.dossiers"))) == ["a2", "b1"]
    eng.dispose()


def test_a_missing_landed_file_is_not_taken_for_nothing_due(duckdb_url):
    eng = connect(duckdb_url)
    upgrade(eng)
    _land(eng, [("A", "a1", "20240501000000", datetime(2024, 6, 1, 8))], "r1")
    (landing.landing_dir(eng) / _manifest(eng)[0][0]).unlink()
    with eng.connect() as c:
        assert landing.loaded_before(c, "dossiers", datetime(2024, 1, 1))  # the full path says what is wrong
    eng.dispose()


def _book(path: Path, worksheet_class: type[Worksheet]) -> None:
    book = xlsxwriter.Workbook(str(path), WORKBOOK_OPTIONS)
    book.set_properties({"created": datetime(2024, 7, 1, 8)})
    plain, dated = book.add_format({"border": 1}), book.add_format({"num_format": "dd/mm/yyyy"})
    ws = book.add_worksheet("Sheet 1", worksheet_class=worksheet_class)
    values = ["text", "Hồ sơ & <b> \"quoted\" 'x'", "  spaces ", "=SUM(A1)", "ctrl\x01char", "", 0, -3, 0.1, 1e20,
              1e-7, 1 / 3, 123456789012, 2.5, float("nan"), float("inf"), True, False, None]
    for r, value in enumerate(values):
        for c, fmt in enumerate((None, plain)):
            if value is None:
                ws.write_blank(r, c, None, fmt)
            elif isinstance(value, bool):
                ws.write_boolean(r, c, value, fmt)
            elif isinstance(value, str):
                ws.write_string(r, c, value, fmt)
            else:
                ws.write_number(r, c, value, fmt)
    ws.write_datetime(0, 3, datetime(2024, 6, 30, 17, 45), dated)
    ws.write_datetime(1, 3, date(2024, 6, 30), dated)
    ws.write_datetime(2, 3, datetime(2024, 6, 30), None)
    ws.write_formula(3, 3, "=SUM(A1:A3)", plain, 7)
    ws.write_formula(4, 3, '=IF(A1=0,"N/A",A2/A1)', plain, "N/A")
    ws.merge_range(20, 0, 21, 3, "merged", plain)
    ws.set_row(22, 30)
    book.close()


def test_the_fast_worksheet_writes_xlsxwriters_bytes(tmp_path):
    _book(tmp_path / "plain.xlsx", Worksheet)
    _book(tmp_path / "fast.xlsx", FastWorksheet)
    plain, fast = zipfile.ZipFile(tmp_path / "plain.xlsx"), zipfile.ZipFile(tmp_path / "fast.xlsx")
    assert plain.namelist() == fast.namelist()
    for name in plain.namelist():
        assert plain.read(name) == fast.read(name), name
    assert (tmp_path / "plain.xlsx").read_bytes() == (tmp_path / "fast.xlsx").read_bytes()


def test_the_sheets_cell_writer_writes_what_xlsxwriters_public_methods_write(tmp_path):
    """``Sheet.write`` calls the methods behind XlsxWriter's ``write_*`` (skipping the decorator that
    reads "A1" references); every kind of value it takes gives the bytes the public methods give."""
    import uuid
    from decimal import Decimal

    from tasks.workbook_cells import BIG_COUNT, Sheet

    class PublicSheet(Sheet):
        WRITERS = "write_"  # XlsxWriter's public methods, as the writer called them before

    assert Sheet.WRITERS != PublicSheet.WRITERS
    values = ["text", "=SUM(A1)", "+1", "", None, True, False, 0, -3, 2.5, Decimal("12.50"), BIG_COUNT + 1,
              date(2024, 6, 30), datetime(2024, 6, 30, 17, 45), uuid.UUID(int=7), "Hồ sơ & <b>"]
    for name, cls in (("private.xlsx", Sheet), ("public.xlsx", PublicSheet)):
        book = xlsxwriter.Workbook(str(tmp_path / name), WORKBOOK_OPTIONS)
        book.set_properties({"created": datetime(2024, 7, 1, 8)})
        sheet = cls(book, {}, "Sheet 1")
        for col, styles in enumerate((sheet.style({"border": 1}, empty="-"), sheet.style({"num_format": "0"})), 1):
            for row, value in enumerate(values, 1):
                sheet.write(row, col, value, styles)
        book.close()
    assert (tmp_path / "private.xlsx").read_bytes() == (tmp_path / "public.xlsx").read_bytes()


def test_the_report_workbook_deflates_its_parts_at_its_level_and_only_its_own(tmp_path):
    """``ReportWorkbook`` zips its parts at ``ZIP_LEVEL`` instead of zlib's default (6): the same
    parts, smaller work; XlsxWriter's own workbooks keep the default."""
    import zlib

    from tasks.workbook_xlsx import ZIP_LEVEL, ReportWorkbook

    assert ZIP_LEVEL != zlib.Z_DEFAULT_COMPRESSION and ZIP_LEVEL != 6

    def deflated(data: bytes, level: int) -> int:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
        return len(c.compress(data) + c.flush())

    rows = [(f"Hồ sơ {i:06d} của ông Nguyễn Văn {i % 997}", i * 7.5, i) for i in range(20_000)]
    for name, cls, level in (("ours.xlsx", ReportWorkbook, ZIP_LEVEL), ("theirs.xlsx", xlsxwriter.Workbook, 6)):
        book = cls(str(tmp_path / name), WORKBOOK_OPTIONS)
        ws = book.add_worksheet("Sheet1")
        for r, row in enumerate(rows):
            ws.write_row(r, 0, row)
        book.close()
        with zipfile.ZipFile(tmp_path / name) as z:
            info = z.getinfo("xl/worksheets/sheet1.xml")
            data = z.read(info)
            assert deflated(data, level) != deflated(data, 6 if level != 6 else ZIP_LEVEL)  # the test tells them apart
            assert info.compress_size == deflated(data, level), name
    with zipfile.ZipFile(tmp_path / "ours.xlsx") as ours, zipfile.ZipFile(tmp_path / "theirs.xlsx") as theirs:
        assert ours.namelist() == theirs.namelist()
        assert all(ours.read(n) == theirs.read(n) for n in ours.namelist() if n != "docProps/core.xml")


def _table_book(path: Path, blocks: bool, sections: list[list[dict]], *, chart: bool = False) -> list:
    """Two sheets of ``write_table`` over ``sections`` (every kind of column), rows written at once
    (``blocks``) or cell by cell, one with a row's height and a comment set, the other with a
    default row height; returns the block rows each sheet's cell table holds."""
    from tasks.reports import Publication
    from tasks.workbook_cells import Column, Doc, Section, Sheet
    from tasks.workbook_sheets import write_table
    from tasks.workbook_xlsx import ReportWorkbook

    class _Sheet(Sheet):
        BLOCKS = blocks

    pub = Publication("p1", date(2024, 6, 1), date(2024, 6, 30), datetime(2024, 7, 1, 2), datetime(2024, 7, 1, 3),
                      "r1", period_label="2024-06")
    columns = [Column(("STT",), None, "count", 5),
               Column(("Mã",), "code", "text", 14),
               Column(("Số", "Đếm"), "n", "count", 9, "sum"),
               Column(("Số", "Tỷ lệ"), "rate", "rate", 9),
               Column(("Giờ",), "hours", "hours", 9),
               Column(("Ngày",), "day", "date", 11),
               Column(("Lúc",), "at", "datetime", 15),
               Column(("Có",), lambda r: "Có" if r["flag"] else "Không", "text", 6)]
    book = ReportWorkbook(str(path), WORKBOOK_OPTIONS)
    book.set_properties({"created": datetime(2024, 7, 1, 8)})
    formats: dict = {}
    held = []
    for name in ("Một", "Hai"):
        ws = _Sheet(book, formats, name)
        write_table(ws, Doc(pub, "UBND"), title="DANH SÁCH", columns=columns,
                    sections=[Section(f"{i}. Cấp", rows) for i, rows in enumerate(sections, 1)],
                    notes=["Ghi chú"])
        held.append([r for r, entry in ws.ws.table.items() if type(entry).__name__ == "_BlockRow"])
        if name == "Một":  # a row of the first section with a height, another with a comment
            ws.ws.set_row(15, 24)
            ws.ws.write_comment(16, 20, "ghi chú")
            ws.ws.write_comment(300, 2, "cuối")  # and two rows of no cell below the table
            ws.ws.set_row(301, 30)
        else:  # every row of the sheet with a height of its own
            ws.ws.set_default_row(18)
        if chart:
            c = book.add_chart({"type": "bar"})
            c.add_series({"values": [name, 12, 2, 14, 2]})
            ws.ws.insert_chart(0, 10, c)
    book.close()
    return held


def _records(count: int, **odd: object) -> list[dict]:
    from decimal import Decimal

    from tasks.workbook_cells import BIG_COUNT

    out = [{"code": ["HS-1", "=HYPERLINK(1)", "", "+84", "Hồ sơ & <b>", "-", "@x"][i % 7] if i % 5 else f"K{i % 3}",
            "n": [i, BIG_COUNT + i, -i, 2**60][i % 4] if i % 6 else None,
            "rate": [None, 0.25, 1 / 3, Decimal("0.5")][i % 4],
            "hours": [8.5, 12, None, 1e20][i % 4],
            "day": date(2024, 6, 1 + i % 30) if i % 9 else None,
            "at": datetime(2024, 6, 1 + i % 30, 7, i % 60, i % 59) if i % 4 else None,
            "flag": i % 2 == 0} for i in range(count)]
    for i, (key, value) in enumerate(odd.items()):
        out[i][key] = value
    return out


@pytest.mark.parametrize("rows_at_a_time", [2048, 7])
def test_rows_written_at_once_are_the_rows_written_cell_by_cell(tmp_path, monkeypatch, rows_at_a_time):
    """``Sheet.write_rows`` makes a table's rows at once: the same bytes as writing every cell
    through ``Sheet.write`` (shared strings and styles numbered in the same order, quoted
    formula-like text, N/A for a rate without a value, big counts, dates); a section holding a
    value it does not make (a boolean, NaN, any other object) is written cell by cell instead.
    Made a few rows at a time too: the same bytes."""
    import uuid

    monkeypatch.setattr("tasks.workbook_cells._SLICE", rows_at_a_time)

    from tasks.workbook_cells import BIG_COUNT

    def counts(values: list[int]) -> list[dict]:  # a column of integers only
        return [{**r, "n": values[i % len(values)]} for i, r in enumerate(_records(8))]

    sections = [_records(40), _records(7, n=True), _records(5, hours=float("nan")), _records(3, code=uuid.UUID(int=3)),
                _records(20), [], counts([BIG_COUNT, 7]), counts([-(2**60), 0])]
    held = _table_book(tmp_path / "blocks.xlsx", True, sections)
    assert _table_book(tmp_path / "cells.xlsx", False, sections) == [[], []]
    assert [len(h) for h in held] == [76, 76]  # the first, fifth and last two sections, on both sheets
    with zipfile.ZipFile(tmp_path / "blocks.xlsx") as a, zipfile.ZipFile(tmp_path / "cells.xlsx") as b:
        assert a.namelist() == b.namelist()
        for name in a.namelist():
            assert a.read(name) == b.read(name), name
        assert b'<c r="C21" s="' in a.read("xl/worksheets/sheet1.xml")


def test_rows_made_a_few_at_a_time_number_their_styles_by_their_first_cells(tmp_path, monkeypatch):
    """A style first used in a later slice of rows is numbered where its first cell is, as
    XlsxWriter numbers it: the texts of the first seven rows look like formulas (quoted), the
    rest do not, and the first slice is seven rows."""
    monkeypatch.setattr("tasks.workbook_cells._SLICE", 7)
    rows = [{**r, "code": "=x" if i < 7 else "K"} for i, r in enumerate(_records(20))]
    assert [len(h) for h in _table_book(tmp_path / "blocks.xlsx", True, [rows])] == [20, 20]
    _table_book(tmp_path / "cells.xlsx", False, [rows])
    with zipfile.ZipFile(tmp_path / "blocks.xlsx") as a, zipfile.ZipFile(tmp_path / "cells.xlsx") as b:
        for name in a.namelist():
            assert a.read(name) == b.read(name), name


def test_rows_written_at_once_take_no_other_cell_and_no_chart(tmp_path):
    """A block's rows are whole: a cell written into one again fails loudly, and so does a chart
    over them (XlsxWriter reads a chart's values cell by cell)."""
    from tasks.workbook_cells import Sheet

    book = xlsxwriter.Workbook(str(tmp_path / "x.xlsx"), WORKBOOK_OPTIONS)
    ws = Sheet(book, {}, "S")
    styles = ws.style({"border": 1})
    assert ws.write_rows(3, [{"a": "x"}, {"a": 2}], [(None, 1, styles), (lambda r: r["a"], 2, styles)]) == 5
    with pytest.raises(TypeError):
        ws.write(4, 2, "again", styles)
    book.close()
    with pytest.raises(NotImplementedError, match="chart"):
        _table_book(tmp_path / "chart.xlsx", True, [_records(20)], chart=True)
    assert _table_book(tmp_path / "chart.xlsx", False, [_records(20)], chart=True) == [[], []]


def test_a_publications_workbook_is_the_same_with_its_rows_written_at_once(tmp_path, monkeypatch):
    from tasks import reports
    from tasks.workbook import lay_out, read_layout
    from tasks.workbook_cells import Sheet
    from tasks.workbook_xlsx import FastWorksheet
    from tests.test_reports import PERIOD, REFERENCE_DIR, fresh_warehouse, load_golden

    engine = fresh_warehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    load_golden(engine)
    pub = reports.publish(engine, *PERIOD, run_id="blocks", reference_dir=REFERENCE_DIR)
    layout = read_layout(engine, pub.publication_id)
    engine.dispose()
    blocks = []
    add_rows = FastWorksheet.add_rows
    monkeypatch.setattr(FastWorksheet, "add_rows", lambda self, *a: blocks.append(a[0]) or add_rows(self, *a))
    lay_out(layout, tmp_path / "blocks.xlsx")
    assert len(blocks) >= 8  # every table sheet's sections
    monkeypatch.setattr(Sheet, "BLOCKS", False)
    lay_out(layout, tmp_path / "cells.xlsx")
    with zipfile.ZipFile(tmp_path / "blocks.xlsx") as a, zipfile.ZipFile(tmp_path / "cells.xlsx") as b:
        assert a.namelist() == b.namelist()
        for name in a.namelist():
            if name != "docProps/core.xml":
                assert a.read(name) == b.read(name), name
