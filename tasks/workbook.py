"""The official workbook of a publication (shared/spec/reports.md section 5).

:func:`write_workbook` reads one publication from the ``mart.rpt_*_history`` tables (so any past
publication can be written again, exactly) and writes an ``.xlsx`` an official can send upward as
it is: one sheet per report table laid out like the 2024 report's tables (Vietnamese multi-row
merged headers, ``STT``, units grouped into ``I. Cấp huyện`` / ``II. Cấp xã`` sections, a
``Tổng cộng`` row), and a summary sheet ``Tổng hợp`` with the headline of section II.2, the data
cut, and a chart of the system vs paid-only rates of the seven indicators.

Display: rates as ``12,5%`` and counts as ``1.234`` through Vietnamese-locale number formats
(``[$-42A]``); text that starts with ``=``, ``+``, ``-`` or ``@`` is stored as text (a string cell
with Excel's quote prefix), never as a formula.

Written with XlsxWriter, which streams each sheet's XML from compact cell records: ~4x faster than
building openpyxl cell objects (a province's unpaid list is tens of thousands of rows, and the
nightly run writes two workbooks). The file is written next to its target and renamed over it,
so a reader never sees half a workbook.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import xlsxwriter
from sqlalchemy.engine import Engine
from xlsxwriter.format import Format
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import Worksheet

from tasks.reports import Publication, headline, resolve_publication

log = logging.getLogger(__name__)

# Vietnamese locale (LCID 0x042A): decimal comma, '.' thousands separator.
COUNT_FORMAT = "[$-42A]#,##0"
RATE_FORMAT = "[$-42A]0.0%"
NUMBER_FORMAT = "[$-42A]General"
DATE_FORMAT = "dd/mm/yyyy"
DATETIME_FORMAT = "dd/mm/yyyy hh:mm"

FORMULA_PREFIXES = ("=", "+", "-", "@")

LEVEL_LABELS = {1: "Cấp tỉnh", 2: "Cấp huyện", 3: "Cấp xã"}
ROMAN = ("I", "II", "III", "IV", "V", "VI")
STATUS_LABELS = {
    1: "Mới đăng ký", 2: "Được tiếp nhận", 3: "Không được tiếp nhận", 4: "Đang xử lý",
    5: "Yêu cầu bổ sung giấy tờ", 6: "Yêu cầu thực hiện nghĩa vụ tài chính",
    7: "Công dân yêu cầu rút hồ sơ", 8: "Dừng xử lý", 9: "Đã xử lý xong", 10: "Đã trả kết quả",
}

SHEET_SUMMARY = "Tổng hợp"
SHEET_PROGRESS = "Tiến độ giải quyết"
SHEET_PAYMENT = "Thanh toán trực tuyến"
SHEET_INDICATORS = "07 chỉ tiêu"
SHEET_SIMPLIFIED = "Đơn giản hóa TTHC"
SHEET_DELEGATED = "Phân cấp, ủy quyền"
SHEET_LATE = "Trễ hạn theo cán bộ"
SHEET_UNPAID = "Hồ sơ chưa nộp phí"

# cell styles, as XlsxWriter format properties (combined with ``|``)
FONT = {"font_name": "Times New Roman"}
BOLD = {"bold": True}
ITALIC_SMALL = {"italic": True, "font_size": 10}
BORDER = {"border": 1, "border_color": "#000000"}
HEADER_FILL = {"pattern": 1, "bg_color": "#DDEBF7"}
SECTION_FILL = {"pattern": 1, "bg_color": "#F2F2F2"}
CENTER = {"align": "center", "valign": "vcenter", "text_wrap": True}
WRAP = {"valign": "vcenter", "text_wrap": True}


def _num(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


# ----------------------------------------------------------------------------------------------
# cells
# ----------------------------------------------------------------------------------------------
class Sheet:
    """One worksheet, addressed 1-based like the report's tables, with the workbook's formats
    cached by their properties (XlsxWriter needs one Format object per distinct style)."""

    def __init__(self, book: Workbook, formats: dict[tuple, Format], name: str) -> None:
        self.book, self.name, self._formats = book, name, formats
        self.ws: Worksheet = book.add_worksheet(name)

    def fmt(self, style: dict[str, Any]) -> Format:
        key = tuple(sorted(style.items()))
        found = self._formats.get(key)
        if found is None:
            found = self._formats[key] = self.book.add_format({**FONT, **style})
        return found

    def style(self, style: dict[str, Any] | None = None) -> tuple[Format, Format]:
        """The formats of a style for ordinary values and for formula-like text (quote prefix)."""
        style = style or {}
        return self.fmt(style), self.fmt(style | {"quote_prefix": True})

    def put(self, row: int, col: int, value: Any, style: dict[str, Any] | None = None) -> None:
        """Write one cell. Text that looks like a formula stays text (string cell, quote prefix)."""
        self.write(row, col, value, self.style(style))

    def write(self, row: int, col: int, value: Any, formats: tuple[Format, Format]) -> None:
        """:meth:`put` with the formats resolved (:meth:`style`): the per-cell path of big tables."""
        r, c, ws = row - 1, col - 1, self.ws
        if isinstance(value, str):
            ws.write_string(r, c, value, formats[1] if value.startswith(FORMULA_PREFIXES) else formats[0])
        elif value is None:
            ws.write_blank(r, c, None, formats[0])
        elif isinstance(value, bool):
            ws.write_boolean(r, c, value, formats[0])
        elif isinstance(value, (int, float, Decimal)):
            ws.write_number(r, c, _num(value), formats[0])
        elif isinstance(value, (date, datetime)):
            ws.write_datetime(r, c, value, formats[0])
        else:
            ws.write_string(r, c, str(value), formats[0])

    def merge(self, row: int, col: int, last_row: int, last_col: int, value: Any,
              style: dict[str, Any] | None = None) -> None:
        """Merge a range (every cell gets ``style``: borders and fills) and write ``value`` in its
        first cell; a one-cell range is just the cell."""
        if (last_row, last_col) != (row, col):
            self.ws.merge_range(row - 1, col - 1, last_row - 1, last_col - 1, "", self.fmt(style or {}))
        self.put(row, col, value, style)

    def freeze(self, row: int, col: int) -> None:
        """Freeze the rows above ``row`` and the columns left of ``col``."""
        self.ws.freeze_panes(row - 1, col - 1)


def vn_date(d: date | datetime) -> str:
    return f"{d:%d/%m/%Y}"


def _ratio(num: float, den: float) -> float | None:
    return None if not den else num / den


# ----------------------------------------------------------------------------------------------
# a table laid out like the report's: heading, merged multi-row header, sections, total row
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One column: ``path`` = its header labels from the top group to the leaf."""

    path: tuple[str, ...]
    value: str | Callable[[dict[str, Any]], Any] | None  # row key, function, or None (STT)
    kind: str = "text"  # text | count | rate | date | datetime | number
    width: float = 12
    total: str | Callable[[list[dict[str, Any]]], Any] | None = None  # 'sum', a function, or None

    def get(self, row: dict[str, Any]) -> Any:
        if self.value is None:
            return None
        return self.value(row) if callable(self.value) else row.get(self.value)


_FORMATS = {"count": COUNT_FORMAT, "rate": RATE_FORMAT, "date": DATE_FORMAT, "datetime": DATETIME_FORMAT,
            "number": NUMBER_FORMAT}


def _number_format(kind: str) -> dict[str, Any]:
    return {"num_format": _FORMATS[kind]} if kind in _FORMATS else {}


@dataclass(frozen=True)
class Section:
    label: str  # e.g. 'I. Cấp huyện'; '' for no section row
    rows: list[dict[str, Any]]


def write_heading(ws: Sheet, ncols: int, unit_name: str, title: str, pub: Publication) -> int:
    """Unit, title, period and data cut; returns the next free row."""
    lines = [
        (unit_name.upper(), {"bold": True, "font_size": 12}),
        (title, {"bold": True, "font_size": 14}),
        (f"Từ ngày {vn_date(pub.period_start)} đến ngày {vn_date(pub.period_end)}", {"italic": True}),
        (f"Số liệu tính đến {pub.as_of:%d/%m/%Y %H:%M} (mã công bố {pub.publication_id})", ITALIC_SMALL),
    ]
    for i, (text, font) in enumerate(lines, start=1):
        ws.merge(i, 1, i, max(ncols, 1), text, font | CENTER)
    return len(lines) + 2


def write_header(ws: Sheet, top: int, columns: Sequence[Column]) -> int:
    """The multi-row header: a label spanning consecutive columns with the same path prefix is
    merged across them; a path shorter than the header depth is merged down. Returns its depth."""
    depth = max(len(c.path) for c in columns)
    style = BOLD | CENTER | BORDER | HEADER_FILL
    for level in range(depth):
        col = 0
        while col < len(columns):
            path = columns[col].path
            if level >= len(path):
                col += 1
                continue
            # extend across the following columns that share this label and its ancestors
            end = col
            while (end + 1 < len(columns) and len(columns[end + 1].path) > level
                   and columns[end + 1].path[: level + 1] == path[: level + 1]
                   and len(path) > level + 1):
                end += 1
            last_level = level if level < len(path) - 1 else depth - 1
            ws.merge(top + level, col + 1, top + last_level, end + 1, path[level], style)
            col = end + 1
    for i, c in enumerate(columns):
        ws.ws.set_column(i, i, c.width)
    for r in range(top, top + depth):  # room for labels that wrap onto two lines
        ws.ws.set_row(r - 1, 30)
    return depth


def write_table(
    ws: Sheet,
    *,
    unit_name: str,
    title: str,
    pub: Publication,
    columns: Sequence[Column],
    sections: Sequence[Section],
    total_label: str = "Tổng cộng",
    total_row: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> None:
    """A whole report sheet. ``total_row`` (precomputed values by column index) overrides the sums."""
    ncols = len(columns)
    top = write_heading(ws, ncols, unit_name, title, pub)
    depth = write_header(ws, top, columns)
    row = top + depth
    ws.freeze(row, 3)
    all_rows: list[dict[str, Any]] = []
    # the formats of a data cell of each column, resolved once
    styles = [ws.style(BORDER | _number_format(c.kind) | (CENTER if c.kind != "text" or c.value is None else WRAP))
              for c in columns]
    label_span = next((i for i, c in enumerate(columns) if c.kind != "text"), ncols) or 1
    write = ws.write
    for section in sections:
        if section.label:
            ws.merge(row, 1, row, ncols, section.label, BOLD | BORDER | SECTION_FILL)
            row += 1
        for stt, record in enumerate(section.rows, start=1):
            for i, column in enumerate(columns):
                write(row, i + 1, stt if column.value is None else column.get(record), styles[i])
            row += 1
        all_rows.extend(section.rows)
    # total row
    total_style = BOLD | BORDER | CENTER
    ws.merge(row, 1, row, label_span, total_label, total_style)
    for i, column in enumerate(columns, start=1):
        if i <= label_span:
            continue
        if total_row is not None:
            value = total_row.get(i - 1)
        elif column.total == "sum":
            value = sum((column.get(r) or 0) for r in all_rows)
        elif callable(column.total):
            value = column.total(all_rows)
        else:
            value = None
        ws.put(row, i, value, total_style | _number_format(column.kind))
    row += 1
    for note in notes:
        row += 1
        ws.put(row, 1, note, ITALIC_SMALL)
    _print_setup(ws, top, top + depth - 1)


def _print_setup(ws: Sheet, header_top: int, header_bottom: int) -> None:
    """A4 landscape, one page wide, centred, the header rows repeated on every page."""
    page = ws.ws
    page.set_landscape()
    page.set_paper(9)  # A4
    page.fit_to_pages(1, 0)
    page.center_horizontally()
    page.set_margins(left=0.4, right=0.4, top=0.5, bottom=0.5)
    page.repeat_rows(header_top - 1, header_bottom - 1)


def by_level(records: Sequence[dict[str, Any]], sort_key: Callable[[dict[str, Any]], Any]) -> list[Section]:
    """Sections 'I. Cấp huyện', 'II. Cấp xã'... (levels in order, unknown level last)."""
    levels = sorted({r.get("cap_don_vi") for r in records}, key=lambda c: (c is None, c or 0))
    sections = []
    for i, level in enumerate(levels):
        label = LEVEL_LABELS.get(level, "Chưa xác định cấp") if level is not None else "Chưa xác định cấp"
        rows = sorted((r for r in records if r.get("cap_don_vi") == level), key=sort_key)
        sections.append(Section(f"{ROMAN[i] if i < len(ROMAN) else i + 1}. {label}", rows))
    return sections


# ----------------------------------------------------------------------------------------------
# reading a publication
# ----------------------------------------------------------------------------------------------
def _history(conn: sa.Connection, table: str, publication_id: str, order_by: str) -> list[dict[str, Any]]:
    history = sa.table(f"{table}_history", sa.column("publication_id"), schema="mart")
    stmt = (sa.select(sa.text("*")).select_from(history)
            .where(history.c.publication_id == publication_id).order_by(sa.text(order_by)))
    return [dict(r) for r in conn.execute(stmt).mappings()]


def _load(engine: Engine, pub: Publication) -> dict[str, list[dict[str, Any]]]:
    order = {
        "rpt_progress": "cap_don_vi, ma_don_vi",
        "rpt_online_payment": "cap_don_vi, ma_don_vi, ma_tthc",
        "rpt_service_indicators": "cap_don_vi, ma_don_vi, indicator_order",
        "rpt_simplified_procedures": "stt",
        "rpt_delegated_procedures": "stt",
        "rpt_late_by_official": "month, cap_don_vi, ma_don_vi, ma_can_bo",
        "rpt_unpaid_results": "cap_don_vi, ma_don_vi, ma_ho_so, source",
    }
    with engine.connect() as conn:
        return {t: _history(conn, t, pub.publication_id, o) for t, o in order.items()}


def _default_unit_name(progress: list[dict[str, Any]]) -> str:
    """The highest-level unit of the publication (the reporting authority), by dossiers handled."""
    if not progress:
        return "Đơn vị báo cáo"
    best = min(progress, key=lambda r: (r["cap_don_vi"] or 9, -(r["to_handle_total"] or 0), r["ma_don_vi"] or ""))
    return best["ten_don_vi"] or best["ma_don_vi"] or "Đơn vị báo cáo"


# ----------------------------------------------------------------------------------------------
# sheets
# ----------------------------------------------------------------------------------------------
STT = Column(("STT",), None, "text", 6)
UNIT = Column(("Đơn vị",), "ten_don_vi", "text", 28)


def _progress_sheet(ws: Sheet, unit_name: str, pub: Publication, data: list[dict[str, Any]]) -> None:
    recv, new = "Số hồ sơ nhận giải quyết", "Mới tiếp nhận trong kỳ"
    done, open_ = "Số lượng hồ sơ đã giải quyết", "Số lượng hồ sơ đang giải quyết"
    columns = [
        STT, UNIT,
        Column((recv, "Tổng số"), "to_handle_total", "count", 10, "sum"),
        Column((recv, "Từ kỳ trước chuyển sang"), "carried_over", "count", 11, "sum"),
        Column((recv, new, "Tổng số"), "received_total", "count", 10, "sum"),
        Column((recv, new, "Trực tuyến"), "received_online", "count", 10, "sum"),
        Column((recv, new, "Trực tiếp"), "received_direct", "count", 10, "sum"),
        Column((recv, new, "Bưu chính công ích"), "received_postal", "count", 10, "sum"),
        Column((done, "Tổng số"), "resolved_total", "count", 10, "sum"),
        Column((done, "Trước hạn"), "resolved_before_due", "count", 10, "sum"),
        Column((done, "Đúng hạn"), "resolved_on_time", "count", 10, "sum"),
        Column((done, "Trễ hạn"), "resolved_late", "count", 10, "sum"),
        Column((open_, "Tổng số"), "in_progress_total", "count", 10, "sum"),
        Column((open_, "Trong hạn"), "in_progress_in_time", "count", 10, "sum"),
        Column((open_, "Quá hạn"), "in_progress_overdue", "count", 10, "sum"),
        Column(("Tỷ lệ giải quyết đúng hạn",), "on_time_rate", "rate", 12, lambda rows: _ratio(
            sum(r["resolved_before_due"] + r["resolved_on_time"] for r in rows),
            sum(r["resolved_total"] for r in rows))),
    ]
    write_table(ws, unit_name=unit_name, title="TÌNH HÌNH, KẾT QUẢ GIẢI QUYẾT THỦ TỤC HÀNH CHÍNH",
                pub=pub, columns=columns, sections=by_level(data, lambda r: (r["ma_don_vi"] or "")),
                notes=["Đúng hạn gồm hồ sơ có ngày kết thúc xử lý trùng ngày hẹn trả, không có ngày hẹn trả "
                       "hoặc công dân rút hồ sơ; so sánh theo ngày (Biểu số 06/VPCP/KSTT).",
                       "Tỷ lệ để trống: không có hồ sơ đã giải quyết trong kỳ."])


def _payment_sheet(ws: Sheet, unit_name: str, pub: Publication, data: list[dict[str, Any]]) -> None:
    paid, unpaid, rate = ("Đã hoàn thành nghĩa vụ tài chính", "Chưa hoàn thành nghĩa vụ tài chính",
                          "Tỷ lệ thanh toán trực tuyến")
    columns = [
        STT, UNIT,
        Column(("Mã TTHC",), "ma_tthc", "text", 22),
        Column(("Tên TTHC",), "ten_tthc", "text", 36),
        Column(("Số hồ sơ có nghĩa vụ tài chính",), "with_obligation", "count", 12, "sum"),
        Column((paid, "Tổng số"), "obligation_completed", "count", 10, "sum"),
        Column((paid, "Thanh toán trực tuyến"), "paid_online_completed", "count", 11, "sum"),
        Column((paid, "Thanh toán trực tiếp"), "paid_offline", "count", 11, "sum"),
        Column((unpaid, "Đã có kết quả"), "unpaid_result_issued", "count", 10, "sum"),
        Column((unpaid, "Đang giải quyết"), "unpaid_in_progress", "count", 10, "sum"),
        Column((unpaid, "Số tiền chưa nộp (đồng)"), "amount_due", "count", 13, "sum"),
        Column(("Số hồ sơ thanh toán trực tuyến (theo hệ thống)",), "paid_online", "count", 13, "sum"),
        Column((rate, "Theo hệ thống"), "rate_system", "rate", 11, lambda rows: _ratio(
            sum(r["paid_online"] for r in rows), sum(r["with_obligation"] for r in rows))),
        Column((rate, "Chỉ tính hồ sơ đã hoàn thành NVTC"), "rate_paid_only", "rate", 13, lambda rows: _ratio(
            sum(r["paid_online_completed"] for r in rows), sum(r["obligation_completed"] for r in rows))),
    ]
    write_table(ws, unit_name=unit_name, title="KẾT QUẢ THANH TOÁN TRỰC TUYẾN PHÍ, LỆ PHÍ",
                pub=pub, columns=columns,
                sections=by_level(data, lambda r: (r["ma_don_vi"] or "", r["ma_tthc"] or "")),
                notes=["Theo hệ thống: số hồ sơ thanh toán trực tuyến / tổng số hồ sơ có nghĩa vụ tài chính. "
                       "Chỉ tính hồ sơ đã hoàn thành NVTC: theo đề nghị tại mục III.2, III.3 Báo cáo số "
                       "340/BC-UBND năm 2024 (hồ sơ đã có kết quả nhưng chưa nộp phí không tính vào mẫu số)."])


def _indicator_sheet(ws: Sheet, unit_name: str, pub: Publication, data: list[dict[str, Any]]) -> None:
    labels = sorted({(r["indicator_order"], r["indicator"], r["indicator_label"]) for r in data})
    units: dict[tuple, dict[str, Any]] = {}
    for r in data:
        key = (r["ma_don_vi"], r["cap_don_vi"])
        unit = units.setdefault(key, {"ma_don_vi": r["ma_don_vi"], "ten_don_vi": r["ten_don_vi"],
                                      "cap_don_vi": r["cap_don_vi"]})
        unit[f"{r['indicator']}:system"] = r["rate_system"]
        unit[f"{r['indicator']}:paid_only"] = r["rate_paid_only"]
    columns = [STT, UNIT]
    for _, code, label in labels:
        columns.append(Column((label, "Theo hệ thống"), f"{code}:system", "rate", 11))
        columns.append(Column((label, "Chỉ tính hồ sơ đã hoàn thành NVTC"), f"{code}:paid_only", "rate", 12))
    jurisdiction = units.pop(("*", None), {})
    total = {i: jurisdiction.get(c.value) for i, c in enumerate(columns) if isinstance(c.value, str)}
    write_table(ws, unit_name=unit_name, title="KẾT QUẢ 07 CHỈ TIÊU DỊCH VỤ CÔNG", pub=pub, columns=columns,
                sections=by_level(list(units.values()), lambda r: (r["ma_don_vi"] or "")),
                total_label="Tổng cộng (toàn địa bàn)", total_row=total,
                notes=["Dòng Tổng cộng tính trên toàn địa bàn: mỗi thủ tục được đếm một lần ở hai chỉ tiêu "
                       "về thủ tục (DVC trực tuyến, thanh toán trực tuyến có phát sinh).",
                       "Tỷ lệ để trống: mẫu số bằng 0."])


def _simplified_sheet(ws: Sheet, unit_name: str, pub: Publication, data: list[dict[str, Any]]) -> None:
    form, count = "Hình thức đơn giản hóa", "Số lượng hồ sơ đã giải quyết"
    columns = [
        STT,
        Column(("Mã TTHC",), "ma_tthc", "text", 24),
        Column(("Tên TTHC",), "ten_tthc", "text", 34),
        Column(("Quyết định của UBND tỉnh thông qua Phương án đơn giản hóa",), "quyet_dinh", "text", 28),
        Column((form, "Giảm thời gian giải quyết (ngày)"), "so_ngay_cat_giam", "number", 12),
        Column((form, "Nội dung cắt giảm (thời gian, thành phần hồ sơ, các bước thực hiện)"),
               "noi_dung_cat_giam", "text", 34),
        Column((count, "Đúng hạn"), "resolved_on_time", "count", 10, "sum"),
        Column((count, "Trễ hạn"), "resolved_late", "count", 10, "sum"),
        Column(("Đánh giá hiệu quả mang lại",), "danh_gia", "text", 36),
    ]
    write_table(ws, unit_name=unit_name, title="KẾT QUẢ RÀ SOÁT, ĐƠN GIẢN HÓA THỦ TỤC HÀNH CHÍNH",
                pub=pub, columns=columns, sections=[Section("I. Thủ tục hành chính", data)],
                notes=["Số hồ sơ đã giải quyết trong kỳ, tiếp nhận từ ngày quyết định; đúng hạn gồm cả trước hạn."])


def _delegated_sheet(ws: Sheet, unit_name: str, pub: Publication, data: list[dict[str, Any]]) -> None:
    count = "Số lượng hồ sơ phát sinh từ khi phân cấp/ủy quyền"
    columns = [
        STT,
        Column(("Mã TTHC",), "ma_tthc", "text", 24),
        Column(("Tên TTHC",), "ten_tthc", "text", 40),
        Column(("Văn bản phân cấp/ủy quyền",), "van_ban", "text", 40),
        Column(("Ngày hiệu lực",), "ngay_hieu_luc", "date", 12),
        Column((count, "Đúng hạn"), "resolved_on_time", "count", 10, "sum"),
        Column((count, "Trễ hạn"), "resolved_late", "count", 10, "sum"),
        Column(("Đánh giá hiệu quả mang lại",), "danh_gia", "text", 30),
    ]
    write_table(ws, unit_name=unit_name, title="KẾT QUẢ PHÂN CẤP/ỦY QUYỀN GIẢI QUYẾT THỦ TỤC HÀNH CHÍNH",
                pub=pub, columns=columns, sections=[Section("", data)],
                notes=["Số hồ sơ đã giải quyết trong kỳ, tiếp nhận từ ngày hiệu lực của văn bản; khi có nhiều "
                       "văn bản, lấy ngày của văn bản ban hành sau cùng."])


def _late_sheet(ws: Sheet, unit_name: str, pub: Publication, data: list[dict[str, Any]]) -> None:
    late = "Số hồ sơ trễ hạn"
    columns = [
        STT,
        Column(("Tháng",), lambda r: f"{r['month'][5:]}/{r['month'][:4]}", "text", 10),
        Column(("Đơn vị",), "ten_don_vi", "text", 28),
        Column(("Mã cán bộ",), "ma_can_bo", "text", 14),
        Column(("Cán bộ xử lý",), "can_bo", "text", 26),
        Column((late, "Đã giải quyết"), "late_resolved", "count", 11, "sum"),
        Column((late, "Đang giải quyết (quá hạn)"), "late_in_progress", "count", 13, "sum"),
        Column((late, "Tổng số"), lambda r: r["late_resolved"] + r["late_in_progress"], "count", 10, "sum"),
    ]
    write_table(ws, unit_name=unit_name, title="DANH SÁCH CÁ NHÂN GIẢI QUYẾT HỒ SƠ TRỄ HẠN", pub=pub,
                columns=columns,
                sections=by_level(data, lambda r: (r["month"], r["ma_don_vi"] or "", r["ma_can_bo"] or "")),
                notes=["Cán bộ đang hoặc đã xử lý hồ sơ sau cùng (MaCanBoXuLy); hồ sơ đang giải quyết tính "
                       "quá hạn tại ngày cuối tháng."])


def _unpaid_sheet(ws: Sheet, unit_name: str, pub: Publication, data: list[dict[str, Any]]) -> None:
    columns = [
        STT,
        Column(("Mã hồ sơ",), "ma_ho_so", "text", 28),
        Column(("Mã TTHC",), "ma_tthc", "text", 22),
        Column(("Tên TTHC",), "ten_tthc", "text", 34),
        Column(("Đơn vị",), "ten_don_vi", "text", 24),
        Column(("Trạng thái",), lambda r: STATUS_LABELS.get(r["trang_thai"], r["trang_thai"]), "text", 16),
        Column(("Ngày có kết quả",), "ngay_ket_thuc_xu_ly", "date", 12),
        Column(("Số tiền chưa nộp (đồng)",), "amount_due", "count", 13, "sum"),
        Column(("Số ngày chưa nộp",), "days_outstanding", "count", 10),
        Column(("Ngưỡng (ngày)",), "threshold_days", "count", 9),
        Column(("Quá ngưỡng",), lambda r: "Có" if r["over_threshold"] else "", "text", 9,
               lambda rows: sum(1 for r in rows if r["over_threshold"])),
        Column(("Hệ thống nguồn",), "source", "text", 12),
    ]
    write_table(ws, unit_name=unit_name, title="DANH SÁCH HỒ SƠ ĐÃ CÓ KẾT QUẢ NHƯNG CHƯA NỘP PHÍ, LỆ PHÍ",
                pub=pub, columns=columns,
                sections=by_level(data, lambda r: (-(r["days_outstanding"] or 0), r["ma_ho_so"])),
                notes=["Số ngày tính từ ngày có kết quả đến ngày số liệu. Ngưỡng mặc định theo cấu hình; "
                       "đăng ký kết hôn có yếu tố nước ngoài 60 ngày (mục III.5 Báo cáo 340/BC-UBND năm 2024)."])


def _summary_sheet(ws: Sheet, unit_name: str, pub: Publication, head: dict[str, Any],
                   indicators: list[dict[str, Any]]) -> None:
    ncols = 11
    row = write_heading(ws, ncols, unit_name, "BÁO CÁO TỔNG HỢP KẾT QUẢ GIẢI QUYẾT THỦ TỤC HÀNH CHÍNH", pub)
    ws.put(row, 1, "1. Kết quả giải quyết hồ sơ", BOLD)
    row += 1
    figures = [
        ("Số hồ sơ tiếp nhận trong kỳ", head["received"], COUNT_FORMAT),
        ("Số hồ sơ đã giải quyết trong kỳ", head["resolved"], COUNT_FORMAT),
        ("Số hồ sơ giải quyết trễ hạn", head["late"], COUNT_FORMAT),
        ("   trong đó cấp huyện", head["late_district"], COUNT_FORMAT),
        ("   trong đó cấp xã", head["late_commune"], COUNT_FORMAT),
        ("Tỷ lệ giải quyết đúng hạn (theo hệ thống)", head["on_time_rate_system"], RATE_FORMAT),
        ("Tỷ lệ giải quyết đúng hạn (chỉ tính hồ sơ đã hoàn thành NVTC)", head["on_time_rate_paid_only"],
         RATE_FORMAT),
        ("Tỷ lệ thanh toán trực tuyến (theo hệ thống)", head["online_payment_rate_system"], RATE_FORMAT),
        ("Tỷ lệ thanh toán trực tuyến (chỉ tính hồ sơ đã hoàn thành NVTC)",
         head["online_payment_rate_paid_only"], RATE_FORMAT),
    ]
    for label, value, fmt in figures:
        ws.merge(row, 1, row, 4, label)
        ws.put(row, 5, value, BOLD | {"num_format": fmt})
        row += 1
    row += 1
    ws.merge(row, 1, row, ncols, f"Hồ sơ thủ tục hành chính giải quyết trễ hạn: {head['sentence']} "
                                 f"(số liệu tính đến {pub.as_of:%d/%m/%Y %H:%M}).", BOLD | WRAP)
    ws.ws.set_row(row - 1, 32)
    row += 2
    ws.put(row, 1, "2. Bảy chỉ tiêu dịch vụ công, toàn địa bàn: theo hệ thống và chỉ tính hồ sơ đã hoàn thành "
                   "nghĩa vụ tài chính", BOLD)
    row += 1
    system, paid, excluded = "Theo hệ thống", "Chỉ tính hồ sơ đã hoàn thành NVTC", "Số hồ sơ loại trừ"
    columns = [
        STT, Column(("Chỉ tiêu",), "indicator_label", "text", 46),
        Column((system, "Tử số"), "numerator_system", "count", 10),
        Column((system, "Mẫu số"), "denominator_system", "count", 10),
        Column((system, "Tỷ lệ"), "rate_system", "rate", 10),
        Column((paid, "Tử số"), "numerator_paid_only", "count", 10),
        Column((paid, "Mẫu số"), "denominator_paid_only", "count", 10),
        Column((paid, "Tỷ lệ"), "rate_paid_only", "rate", 10),
        Column((excluded, "Tổng số"), "excluded_unpaid", "count", 10),
        Column((excluded, "Đã có kết quả, chưa nộp phí"), "excluded_result_issued", "count", 13),
        Column((excluded, "Đang giải quyết, chưa nộp phí"), "excluded_in_progress", "count", 13),
    ]
    header_top = row
    depth = write_header(ws, row, columns)
    row += depth
    first_data = row
    for stt, record in enumerate(indicators, start=1):
        for i, column in enumerate(columns, start=1):
            value = stt if column.value is None else column.get(record)
            ws.put(row, i, value, BORDER | _number_format(column.kind) | (WRAP if i == 2 else CENTER))
        row += 1
    last_data = row - 1
    ws.freeze(header_top, 1)
    ws.put(row + 1, 1, "Chỉ tính hồ sơ đã hoàn thành NVTC: cùng công thức, chỉ trên hồ sơ không có nghĩa vụ tài "
                       "chính hoặc đã nộp đủ phí, lệ phí (đề nghị tại mục III.2, III.3 Báo cáo số 340/BC-UBND "
                       "năm 2024). Tỷ lệ để trống: mẫu số bằng 0.", ITALIC_SMALL)

    if indicators:
        # horizontal clustered bars; in a bar chart XlsxWriter's x axis is the (horizontal) value axis
        chart = ws.book.add_chart({"type": "bar"})
        for col, title in ((5, system), (8, paid)):  # the two 'Tỷ lệ' columns
            chart.add_series({
                "name": title,
                "categories": [ws.name, first_data - 1, 1, last_data - 1, 1],
                "values": [ws.name, first_data - 1, col - 1, last_data - 1, col - 1],
            })
        chart.set_title({"name": "Bảy chỉ tiêu: theo hệ thống và chỉ tính hồ sơ đã hoàn thành NVTC"})
        chart.set_x_axis({"name": "Tỷ lệ", "num_format": "0%", "min": 0, "max": 1})
        chart.set_y_axis({"reverse": True})  # indicator 1 on top, as in the table
        chart.set_size({"width": 907, "height": 416})  # 24 x 11 cm
        ws.ws.insert_chart(row + 2, 0, chart)
    _print_setup(ws, header_top, header_top + depth - 1)


# ----------------------------------------------------------------------------------------------
# the workbook
# ----------------------------------------------------------------------------------------------
WORKBOOK_OPTIONS = {
    "strings_to_formulas": False,  # belt and braces: Sheet.put writes text as text anyway
    "strings_to_numbers": False,
    "strings_to_urls": False,
    "nan_inf_to_errors": True,
    "remove_timezone": True,
}


def build_workbook(engine: Engine, publication: Publication | str | tuple[date, date], path: Path, *,
                   unit_name: str | None = None) -> Publication:
    """Write the workbook of a publication to ``path`` (no rename, no record: see
    :func:`write_workbook`) and return the publication."""
    pub = resolve_publication(engine, publication)
    data = _load(engine, pub)
    head = headline(engine, pub)
    name = unit_name or _default_unit_name(data["rpt_progress"])
    book = xlsxwriter.Workbook(str(path), WORKBOOK_OPTIONS)
    formats: dict[tuple, Format] = {}
    try:
        def sheet(title: str) -> Sheet:
            return Sheet(book, formats, title)

        star = [r for r in data["rpt_service_indicators"] if r["ma_don_vi"] == "*"]
        _summary_sheet(sheet(SHEET_SUMMARY), name, pub, head, sorted(star, key=lambda r: r["indicator_order"]))
        _progress_sheet(sheet(SHEET_PROGRESS), name, pub, data["rpt_progress"])
        _payment_sheet(sheet(SHEET_PAYMENT), name, pub, data["rpt_online_payment"])
        _indicator_sheet(sheet(SHEET_INDICATORS), name, pub, data["rpt_service_indicators"])
        _simplified_sheet(sheet(SHEET_SIMPLIFIED), name, pub, data["rpt_simplified_procedures"])
        _delegated_sheet(sheet(SHEET_DELEGATED), name, pub, data["rpt_delegated_procedures"])
        _late_sheet(sheet(SHEET_LATE), name, pub, data["rpt_late_by_official"])
        _unpaid_sheet(sheet(SHEET_UNPAID), name, pub, data["rpt_unpaid_results"])
        book.set_properties({"title": f"Báo cáo TTHC {vn_date(pub.period_start)} - {vn_date(pub.period_end)}",
                             "author": "dvc-etl", "comments": f"publication {pub.publication_id}"})
    finally:
        book.close()
    return pub


def write_workbook(
    engine: Engine,
    publication_id_or_period: Publication | str | tuple[date, date],
    path: Path,
    *,
    unit_name: str | None = None,
) -> Path:
    """Write the workbook of a publication (an id, a Publication, or a period -> its current
    publication) to ``path`` and record the path in ``mart.publications.workbook_path``.

    The file is written beside ``path`` and renamed over it: a reader (or a crash) never sees half
    a workbook. ``unit_name`` heads every sheet; by default the highest-level unit of the
    publication.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        pub = build_workbook(engine, publication_id_or_period, partial, unit_name=unit_name)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE mart.publications SET workbook_path = :w WHERE publication_id = :p"),
                     {"w": str(path), "p": pub.publication_id})
    log.info("workbook of %s written to %s", pub.publication_id, path)
    return path
