"""The sheets of the official workbook (the reports specification, section 6), in their order.

:func:`write_table` lays out one report table with the machinery of :mod:`tasks.workbook` (heading,
merged header, sections, total row with formulas, signature); each :class:`TableSheet` describes
one such sheet (its ``mart.rpt_*`` table, title, columns, sections and notes). :data:`SHEETS` is
the workbook: a sheet name and its writer, called as ``write(sheet, doc, data, headline)`` where
``data`` maps each ``mart.rpt_*`` table to the publication's rows and ``headline()`` returns
:func:`tasks.reports.headline`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.workbook_cells import (
    BOLD,
    BORDER,
    CENTER,
    ITALIC,
    ITALIC_SMALL,
    LEVEL_LABELS,
    NOT_AVAILABLE,
    SECTION_FILL,
    WRAP,
    Column,
    CountIf,
    Doc,
    Ratio,
    Section,
    Sheet,
    cell,
    empty_of,
    number_format,
    print_setup,
    ratio,
    roman,
    write_header,
    write_heading,
    write_signature,
)

Rows = list[dict[str, Any]]
Data = Mapping[str, Rows]  # each table by name (tasks.workbook_layout.Layout.data)


# ----------------------------------------------------------------------------------------------
# a table laid out like the report's: heading, merged multi-row header, sections, total row
# ----------------------------------------------------------------------------------------------
def _write_total(ws: Sheet, row: int, columns: Sequence[Column], rows: list[dict[str, Any]],
                 first: int, last: int, label_span: int, label: str) -> None:
    """The total row: formulas over the data rows ``first..last`` (section rows hold only text)."""
    style = BOLD | BORDER | CENTER
    ws.merge(row, 1, row, label_span, label, style)
    where = {c.value: i for i, c in enumerate(columns, start=1) if isinstance(c.value, str)}

    def rng(col: int) -> str:
        return f"{cell(first, col)}:{cell(last, col)}"

    for i, column in enumerate(columns, start=1):
        if i <= label_span:
            continue
        total, kind = column.total, column.kind
        if isinstance(total, CountIf):
            kind = "count"
            value = sum(1 for r in rows if column.get(r) == total.text)
            formula = f'=COUNTIF({rng(i)},"{total.text}")'
        elif isinstance(total, Ratio):
            num = sum(sum(r[k] or 0 for k in total.num) for r in rows)
            value = ratio(num, sum(r[total.den] or 0 for r in rows))
            den = f"SUM({rng(where[total.den])})"
            nums = "+".join(f"SUM({rng(where[k])})" for k in total.num)
            formula = f'=IF({den}=0,"{NOT_AVAILABLE}",({nums})/{den})'
        elif total == "sum":
            value = sum((column.get(r) or 0) for r in rows)
            formula = f"=SUM({rng(i)})"
        else:  # a fixed figure, or nothing
            ws.put(row, i, total(rows) if callable(total) else None,
                   style | number_format(kind), empty_of(kind) if callable(total) else None)
            continue
        if not rows:  # no data rows: nothing to add up
            ws.put(row, i, value, style | number_format(kind), empty_of(kind))
        else:
            ws.formula(row, i, formula, value, style | number_format(kind), empty_of(kind))


def write_table(
    ws: Sheet,
    doc: Doc,
    *,
    title: str,
    columns: Sequence[Column],
    sections: Sequence[Section],
    total_label: str | None = "Tổng cộng",
    notes: Sequence[str] = (),
    form_code: str | None = None,
    unit_line: str | None = None,
    numbered: bool = False,
) -> None:
    """A whole report sheet: heading, header (``numbered``: then a row '(1)', '(2)', ...), the
    sections, the total row (none when ``total_label`` is None), notes, signature."""
    ncols = len(columns)
    top = write_heading(ws, ncols, doc, title, form_code=form_code, unit_line=unit_line)
    depth = write_header(ws, top, columns)
    row = top + depth
    if numbered:
        for i in range(1, ncols + 1):
            ws.put(row, i, f"({i})", ITALIC | CENTER | BORDER)
        row += 1
    header_bottom = row - 1
    ws.freeze(row, 3)
    all_rows: list[dict[str, Any]] = []
    # the formats of a data cell of each column, resolved once
    styles = [ws.style(BORDER | number_format(c.kind) | (CENTER if c.kind != "text" or c.value is None else WRAP),
                       empty_of(c.kind))
              for c in columns]
    # each column's value of a row (None: the row's number) with its formats, resolved once
    cells = [(c.getter(), col, styles[col - 1]) for col, c in enumerate(columns, start=1)]
    first = row
    for section in sections:
        if section.label:
            ws.merge(row, 1, row, ncols, section.label, BOLD | BORDER | SECTION_FILL)
            row += 1
        row = ws.write_rows(row, section.rows, cells)
        all_rows.extend(section.rows)
    if total_label is not None:
        label_span = next((i for i, c in enumerate(columns) if c.kind != "text" or c.total), ncols) or 1
        _write_total(ws, row, columns, all_rows, first, row - 1, label_span, total_label)
        row += 1
    for note in notes:
        row += 1
        ws.merge(row, 1, row, ncols, note, ITALIC_SMALL | WRAP)
        ws.ws.set_row(row - 1, 28)
    write_signature(ws, row + 2, ncols, doc)
    print_setup(ws, top, header_bottom)


def by_level(records: Sequence[dict[str, Any]], sort_key: Callable[[dict[str, Any]], Any]) -> list[Section]:
    """Sections 'I. Cấp huyện', 'II. Cấp xã'... (levels present, in order, unknown level last)."""
    levels = sorted({r.get("cap_don_vi") for r in records}, key=lambda c: (c is None, c or 0))
    sections = []
    for i, level in enumerate(levels, start=1):
        label = LEVEL_LABELS.get(level, "Chưa xác định cấp") if level is not None else "Chưa xác định cấp"
        rows = sorted((r for r in records if r.get("cap_don_vi") == level), key=sort_key)
        sections.append(Section(f"{roman(i)}. {label}", rows))
    return sections


# ----------------------------------------------------------------------------------------------
# the sheets
# ----------------------------------------------------------------------------------------------

SHEET_SUMMARY = "Tổng hợp"
SHEET_FORM06 = "Biểu 06"
SHEET_PROGRESS = "Tiến độ giải quyết"
SHEET_PAYMENT = "Thanh toán trực tuyến"
SHEET_INDICATORS = "Chỉ số 766"
SHEET_SIMPLIFIED = "Đơn giản hóa TTHC"
SHEET_DELEGATED = "Phân cấp, ủy quyền"
SHEET_LATE = "Trễ hạn theo cán bộ"
SHEET_UNPAID = "Hồ sơ chưa nộp phí"
SHEET_UNCOLLECTED = "Hồ sơ chưa trả kết quả"
SHEET_LATE_ACCEPTANCE = "Hồ sơ tiếp nhận trễ"

STATUS_LABELS = {
    1: "Mới đăng ký", 2: "Được tiếp nhận", 3: "Không được tiếp nhận", 4: "Đang xử lý",
    5: "Yêu cầu bổ sung giấy tờ", 6: "Yêu cầu thực hiện nghĩa vụ tài chính",
    7: "Công dân yêu cầu rút hồ sơ", 8: "Dừng xử lý", 9: "Đã xử lý xong", 10: "Đã trả kết quả",
}
PAID_ONLY = "Chỉ tính hồ sơ đã hoàn thành NVTC"
PAID_ONLY_NOTE = ("Chỉ tính hồ sơ đã hoàn thành NVTC: cùng công thức, chỉ trên hồ sơ không có nghĩa vụ tài chính "
                  "hoặc đã nộp đủ phí, lệ phí (đề nghị tại mục III.2, III.3 Báo cáo số 340/BC-UBND năm 2024).")
SYSTEM, EXCLUDED = "Theo hệ thống", "Số hồ sơ loại trừ"

STT = Column(("STT",), None, "text", 6)
UNIT = Column(("Đơn vị",), "ten_don_vi", "text", 28)
PROCEDURE = (Column(("Mã TTHC",), "ma_tthc", "text", 22), Column(("Tên TTHC",), "ten_tthc", "text", 34))


def _yes(flag: Any) -> str | None:
    return "Có" if flag else None


def _sums(*group: str, leaves: Sequence[tuple[Any, ...]]) -> list[Column]:
    """Count columns under the header labels ``group``, one a leaf ``(label, row key[, width])``
    (width 10), totalled by =SUM."""
    return [Column((*group, label), key, "count", width[0] if width else 10, "sum") for label, key, *width in leaves]


def _rates(width: float) -> list[Column]:
    """An indicator's 'Tử số', 'Mẫu số', 'Tỷ lệ' under 'Theo hệ thống' and under :data:`PAID_ONLY`
    (the counts ``width`` wide)."""
    return [Column((group, label), f"{key}_{basis}", kind, width if kind == "count" else 10)
            for group, basis in ((SYSTEM, "system"), (PAID_ONLY, "paid_only"))
            for label, key, kind in (("Tử số", "numerator", "count"), ("Mẫu số", "denominator", "count"),
                                     ("Tỷ lệ", "rate", "rate"))]


def _dossiers(*middle: Column) -> list[Column]:
    """The columns of a list of dossiers: number, procedure and unit, ``middle``, source system."""
    return [STT, Column(("Mã hồ sơ",), "ma_ho_so", "text", 28), *PROCEDURE,
            Column(("Đơn vị",), "ten_don_vi", "text", 24), *middle, Column(("Hệ thống nguồn",), "source", "text", 12)]


def _procedures(name_width: float, middle: Sequence[Column], count: str, assessment_width: float) -> list[Column]:
    """The columns of a list of procedures: code and name, ``middle``, the dossiers resolved on
    time and late (under ``count``), the assessment."""
    return [STT, Column(("Mã TTHC",), "ma_tthc", "text", 24), Column(("Tên TTHC",), "ten_tthc", "text", name_width),
            *middle, *_sums(count, leaves=(("Đúng hạn", "resolved_on_time"), ("Trễ hạn", "resolved_late"))),
            Column(("Đánh giá hiệu quả mang lại",), "danh_gia", "text", assessment_width)]


def _by_level(sort_key: Callable[[dict[str, Any]], Any]) -> Callable[[Rows], list[Section]]:
    """Sections by level (:func:`by_level`), rows in ``sort_key`` order."""
    return lambda rows: by_level(rows, sort_key)


@dataclass(frozen=True)
class TableSheet:
    """A sheet that is one table, of the rows of ``mart.<table>`` grouped by ``sections``
    (:func:`write_table`; ``options``: its other arguments)."""

    table: str
    title: str
    columns: Sequence[Column]
    sections: Callable[[Rows], Sequence[Section]]
    notes: Sequence[str]
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, ws: Sheet, doc: Doc, data: Data, _: Callable[[], dict[str, Any]]) -> None:
        write_table(ws, doc, title=self.title, columns=self.columns, sections=self.sections(data[self.table]),
                    notes=self.notes, **self.options)


_RECEIVED = "Số hồ sơ nhận giải quyết"
_RESOLVED_ON_TIME = (("Trước hạn", "resolved_before_due"), ("Đúng hạn", "resolved_on_time"))
_IN_PROGRESS = (("Tổng số", "in_progress_total"), ("Trong hạn", "in_progress_in_time"),
                ("Quá hạn", "in_progress_overdue"))
_PAID, _UNPAID = "Đã hoàn thành nghĩa vụ tài chính", "Chưa hoàn thành nghĩa vụ tài chính"
_PAYMENT_RATE, _NEW, _WAITING = "Tỷ lệ thanh toán trực tuyến", "Mới tiếp nhận trong kỳ", "Chưa tiếp nhận"

form06_sheet = TableSheet(
    "rpt_form06", "TÌNH HÌNH, KẾT QUẢ GIẢI QUYẾT TTHC TẠI CƠ QUAN, ĐƠN VỊ TRỰC TIẾP GIẢI QUYẾT TTHC",
    [STT,
     Column(("Lĩnh vực, công việc giải quyết theo cấp",),
            lambda r: r["ten_linh_vuc"] or r["ma_linh_vuc"] or "Chưa xác định lĩnh vực", "text", 36),
     *_sums(_RECEIVED, leaves=[("Tổng số", "received_total")]),
     *_sums(_RECEIVED, "Trong đó", leaves=[("Trực tuyến", "received_online"),
                                           ("Trực tiếp, dịch vụ bưu chính", "received_direct_postal", 12),
                                           ("Từ kỳ trước", "carried_over")]),
     *_sums("Số hồ sơ đã giải quyết", leaves=[("Tổng số", "resolved_total"), *_RESOLVED_ON_TIME,
                                              ("Quá hạn", "resolved_late")]),
     *_sums("Số hồ sơ đang giải quyết", leaves=_IN_PROGRESS)],
    _by_level(lambda r: (r["stt"], r["ma_linh_vuc"] or "")),
    ["Theo Biểu số 06/VPCP/KSTT (Thông tư số 01/2020/TT-VPCP). Cột (3) = (4) + (5) + (6); "
     "trước hạn, đúng hạn, quá hạn so sánh theo ngày; công dân rút hồ sơ tính đúng hạn."],
    {"form_code": "Biểu số 06/VPCP/KSTT", "unit_line": "Đơn vị tính: Số hồ sơ TTHC", "numbered": True},
)

progress_sheet = TableSheet(
    "rpt_progress", "TÌNH HÌNH, KẾT QUẢ GIẢI QUYẾT THỦ TỤC HÀNH CHÍNH",
    [STT, UNIT,
     *_sums(_RECEIVED, leaves=[("Tổng số", "to_handle_total"), ("Từ kỳ trước chuyển sang", "carried_over", 11)]),
     *_sums(_RECEIVED, _NEW, leaves=[("Tổng số", "received_total"), ("Trực tuyến", "received_online"),
                                     ("Trực tiếp", "received_direct"), ("Bưu chính công ích", "received_postal")]),
     *_sums("Số lượng hồ sơ đã giải quyết", leaves=[("Tổng số", "resolved_total"), *_RESOLVED_ON_TIME,
                                                    ("Trễ hạn", "resolved_late")]),
     *_sums("Số lượng hồ sơ đang giải quyết", leaves=_IN_PROGRESS),
     Column(("Tỷ lệ giải quyết đúng hạn",), "on_time_rate", "rate", 12,
            Ratio(("resolved_before_due", "resolved_on_time"), "resolved_total")),
     Column(("Từ chối tiếp nhận",), "rejected_at_intake", "count", 10, "sum")],
    _by_level(lambda r: (r["ma_don_vi"] or "")),
    ["Đúng hạn gồm hồ sơ có ngày kết thúc xử lý trùng ngày hẹn trả, không có ngày hẹn trả "
     "hoặc công dân rút hồ sơ; so sánh theo ngày (Biểu số 06/VPCP/KSTT). Từ chối tiếp nhận: "
     "hồ sơ không được tiếp nhận trong kỳ, không tính vào số hồ sơ nhận giải quyết.",
     "N/A: không có hồ sơ đã giải quyết trong kỳ."],
)

payment_sheet = TableSheet(
    "rpt_online_payment", "KẾT QUẢ THANH TOÁN TRỰC TUYẾN PHÍ, LỆ PHÍ",
    [STT, UNIT, *PROCEDURE,
     Column(("Số hồ sơ có nghĩa vụ tài chính",), "with_obligation", "count", 12, "sum"),
     *_sums(_PAID, leaves=[("Tổng số", "obligation_completed"), ("Thanh toán trực tuyến", "paid_online_completed", 11),
                           ("Thanh toán trực tiếp", "paid_offline", 11)]),
     *_sums(_UNPAID, leaves=[("Đã có kết quả", "unpaid_result_issued"), ("Đang giải quyết", "unpaid_in_progress"),
                             ("Số tiền chưa nộp (đồng)", "amount_due", 13)]),
     Column(("Số hồ sơ thanh toán trực tuyến (theo hệ thống)",), "paid_online", "count", 13, "sum"),
     Column((_PAYMENT_RATE, "Theo hệ thống"), "rate_system", "rate", 11, Ratio(("paid_online",), "with_obligation")),
     Column((_PAYMENT_RATE, PAID_ONLY), "rate_paid_only", "rate", 13,
            Ratio(("paid_online_completed",), "obligation_completed"))],
    _by_level(lambda r: (r["ma_don_vi"] or "", r["ma_tthc"] or "")),
    ["Theo hệ thống: số hồ sơ thanh toán trực tuyến / tổng số hồ sơ có nghĩa vụ tài chính. "
     + PAID_ONLY_NOTE + " N/A: mẫu số bằng 0."],
)


def _verdict(r: dict[str, Any]) -> str | None:
    met = r.get("meets_target")
    return None if met is None else "Đạt" if met else "Chưa đạt"


def _indicator_sections(rows: Rows) -> list[Section]:
    """One section per unit, the jurisdiction ('*') first; one row per indicator."""
    units = sorted({(r["ma_don_vi"], r["cap_don_vi"], r["ten_don_vi"]) for r in rows if r["ma_don_vi"] != "*"},
                   key=lambda u: (u[1] is None, u[1] or 0, u[0] or ""))
    sections = [Section("Toàn địa bàn", [r for r in rows if r["ma_don_vi"] == "*"])]
    for ma, cap, ten in units:
        level = LEVEL_LABELS.get(cap, "Chưa xác định cấp")
        sections.append(Section(f"{ten or ma} ({level})",
                                [r for r in rows if (r["ma_don_vi"], r["cap_don_vi"]) == (ma, cap)]))
    return [Section(f"{roman(i)}. {s.label}", sorted(s.rows, key=lambda r: r["indicator_order"]))
            for i, s in enumerate(sections, start=1)]


indicator_sheet = TableSheet(
    "rpt_service_indicators", "KẾT QUẢ CÁC CHỈ SỐ PHỤC VỤ NGƯỜI DÂN, DOANH NGHIỆP (QUYẾT ĐỊNH 766/QĐ-TTg)",
    [STT, Column(("Mã chỉ số (QĐ 766)",), "code_766", "text", 9), Column(("Chỉ số",), "indicator_label", "text", 40),
     *_rates(9), Column((EXCLUDED, "Chưa hoàn thành NVTC"), "excluded_unpaid", "count", 11),
     Column((EXCLUDED, "Theo danh sách loại trừ"), "excluded_by_list", "count", 11),
     Column(("Số hồ sơ không xác định được",), "unknown", "count", 11),
     Column(("Mức đạt điểm tối đa",), "full_score_at", "threshold", 10),
     Column(("Chỉ tiêu giao",), "target", "threshold", 10),
     Column(("Đánh giá",), _verdict, "text", 10)],
    _indicator_sections,
    ["Toàn địa bàn: mọi đơn vị; ở hai chỉ số về thủ tục (3.2 và thanh toán trực tuyến có phát "
     "sinh giao dịch) mỗi thủ tục được đếm một lần. " + PAID_ONLY_NOTE,
     "Không xác định được: hồ sơ thiếu thông tin để tính, không có ở tử số và mẫu số. Mức đạt "
     "điểm tối đa: tỷ lệ Bộ chỉ số 766 chấm đủ điểm. Đánh giá: tỷ lệ theo hệ thống so với chỉ "
     "tiêu giao (để trống khi không có chỉ tiêu). N/A: mẫu số bằng 0."],
    {"total_label": None},
)

simplified_sheet = TableSheet(
    "rpt_simplified_procedures", "KẾT QUẢ RÀ SOÁT, ĐƠN GIẢN HÓA THỦ TỤC HÀNH CHÍNH",
    _procedures(34, [
        Column(("Quyết định của UBND tỉnh thông qua Phương án đơn giản hóa",), "quyet_dinh", "text", 28),
        Column(("Hình thức đơn giản hóa", "Giảm thời gian giải quyết (ngày)"), "so_ngay_cat_giam", "number", 12),
        Column(("Hình thức đơn giản hóa", "Nội dung cắt giảm (thời gian, thành phần hồ sơ, các bước thực hiện)"),
               "noi_dung_cat_giam", "text", 34)], "Số lượng hồ sơ đã giải quyết", 36),
    lambda rows: [Section("I. Thủ tục hành chính", rows)],
    ["Số hồ sơ đã giải quyết trong kỳ, tiếp nhận từ ngày quyết định; đúng hạn gồm cả trước hạn."],
)

delegated_sheet = TableSheet(
    "rpt_delegated_procedures", "KẾT QUẢ PHÂN CẤP/ỦY QUYỀN GIẢI QUYẾT THỦ TỤC HÀNH CHÍNH",
    _procedures(40, [Column(("Văn bản phân cấp/ủy quyền",), "van_ban", "text", 40),
                     Column(("Ngày hiệu lực",), "ngay_hieu_luc", "date", 12)],
                "Số lượng hồ sơ phát sinh từ khi phân cấp/ủy quyền", 30),
    lambda rows: [Section("", rows)],
    ["Số hồ sơ đã giải quyết trong kỳ, tiếp nhận từ ngày hiệu lực của văn bản; khi có nhiều "
     "văn bản, lấy ngày của văn bản ban hành sau cùng."],
)

late_sheet = TableSheet(
    "rpt_late_by_official", "DANH SÁCH CÁ NHÂN GIẢI QUYẾT HỒ SƠ TRỄ HẠN",
    [STT, Column(("Tháng",), lambda r: f"{r['month'][5:]}/{r['month'][:4]}", "text", 10),
     UNIT, Column(("Mã cán bộ",), "ma_can_bo", "text", 14),
     Column(("Cán bộ xử lý",), "can_bo", "text", 26),
     *_sums("Số hồ sơ trễ hạn", leaves=[("Đã giải quyết", "late_resolved", 11),
                                        ("Đang giải quyết (quá hạn)", "late_in_progress", 13)]),
     Column(("Số hồ sơ trễ hạn", "Tổng số"), lambda r: r["late_resolved"] + r["late_in_progress"], "count", 10,
            "sum")],
    _by_level(lambda r: (r["month"], r["ma_don_vi"] or "", r["ma_can_bo"] or "")),
    ["Cán bộ đang hoặc đã xử lý hồ sơ sau cùng (MaCanBoXuLy); hồ sơ đang giải quyết tính "
     "quá hạn tại ngày cuối tháng."],
)

unpaid_sheet = TableSheet(
    "rpt_unpaid_results", "DANH SÁCH HỒ SƠ ĐÃ CÓ KẾT QUẢ NHƯNG CHƯA NỘP PHÍ, LỆ PHÍ",
    _dossiers(Column(("Trạng thái",), lambda r: STATUS_LABELS.get(r["trang_thai"], r["trang_thai"]), "text", 16),
              Column(("Ngày có kết quả",), "ngay_ket_thuc_xu_ly", "date", 12),
              Column(("Số tiền chưa nộp (đồng)",), "amount_due", "count", 13, "sum"),
              Column(("Số ngày chưa nộp",), "days_outstanding", "count", 10),
              Column(("Ngưỡng (ngày)",), "threshold_days", "count", 9),
              Column(("Quá ngưỡng",), lambda r: _yes(r["over_threshold"]), "text", 9, CountIf("Có"))),
    _by_level(lambda r: (-(r["days_outstanding"] or 0), r["ma_ho_so"])),
    ["Số ngày tính từ ngày có kết quả đến ngày số liệu. Ngưỡng mặc định theo cấu hình; "
     "đăng ký kết hôn có yếu tố nước ngoài 60 ngày (mục III.5 Báo cáo 340/BC-UBND năm 2024)."],
)

uncollected_sheet = TableSheet(
    "rpt_uncollected_results", "DANH SÁCH HỒ SƠ ĐÃ CÓ KẾT QUẢ NHƯNG CHƯA TRẢ CHO NGƯỜI DÂN",
    _dossiers(Column(("Ngày có kết quả",), "ngay_ket_thuc_xu_ly", "date", 12),
              Column(("Số ngày chờ trả",), "days_waiting", "count", 10),
              Column(("Thời hạn lưu giữ kết quả (ngày)",), "window_days", "count", 11),
              Column(("Căn cứ",), "can_cu", "text", 26),
              Column(("Quá thời hạn",),
                     lambda r: None if r["over_window"] is None else "Có" if r["over_window"] else "Không",
                     "text", 9, CountIf("Có")),
              Column(("Chưa nộp phí, lệ phí",), lambda r: _yes(r["fees_unpaid"]), "text", 10, CountIf("Có"))),
    _by_level(lambda r: (-(r["days_waiting"] or 0), r["ma_ho_so"])),
    ["Hồ sơ đã xử lý xong (trạng thái 9), chưa có ngày trả kết quả, tính đến ngày số liệu. Thời "
     "hạn theo danh mục lưu giữ kết quả (ví dụ đăng ký kết hôn có yếu tố nước ngoài 60 ngày, mục "
     "III.5 Báo cáo 340/BC-UBND năm 2024); để trống khi thủ tục không có thời hạn."],
)

late_acceptance_sheet = TableSheet(
    "rpt_late_acceptance", "DANH SÁCH HỒ SƠ TRỰC TUYẾN TIẾP NHẬN QUÁ 08 GIỜ LÀM VIỆC",
    _dossiers(Column(("Thời điểm nộp hồ sơ",), "ngay_nop_ho_so", "datetime", 16),
              Column(("Thời điểm tiếp nhận hoặc từ chối",), lambda r: r["ngay_tiep_nhan"] or _WAITING, "datetime",
                     16, CountIf(_WAITING)),
              Column(("Số giờ làm việc đã chờ",), "working_hours_waited", "hours", 11)),
    _by_level(lambda r: (-(r["working_hours_waited"] or 0), r["ma_ho_so"])),
    ["Hồ sơ nộp trực tuyến trong kỳ, tiếp nhận hoặc từ chối sau hơn 08 giờ làm việc (07:00-11:30, "
     "13:30-17:00 các ngày làm việc), hoặc chưa tiếp nhận sau 08 giờ làm việc tại thời điểm số "
     "liệu (mục III.3 Báo cáo 340/BC-UBND năm 2024). Dòng Tổng cộng đếm hồ sơ chưa tiếp nhận."],
)


def summary_sheet(ws: Sheet, doc: Doc, data: Data, headline: Callable[[], dict[str, Any]]) -> None:
    head = headline()
    indicators = sorted((r for r in data["rpt_service_indicators"] if r["ma_don_vi"] == "*"),
                        key=lambda r: r["indicator_order"])
    ncols = 11
    row = write_heading(ws, ncols, doc, "BÁO CÁO TỔNG HỢP KẾT QUẢ GIẢI QUYẾT THỦ TỤC HÀNH CHÍNH")
    ws.put(row, 1, "1. Kết quả giải quyết hồ sơ", BOLD)
    row += 1
    figures = [
        ("Số hồ sơ tiếp nhận trong kỳ", head["received"], "count"),
        ("Số hồ sơ đã giải quyết trong kỳ", head["resolved"], "count"),
        ("Số hồ sơ giải quyết trễ hạn", head["late"], "count"),
        ("   trong đó cấp huyện", head["late_district"], "count"),
        ("   trong đó cấp xã", head["late_commune"], "count"),
        ("Tỷ lệ giải quyết đúng hạn (theo hệ thống)", head["on_time_rate_system"], "rate"),
        (f"Tỷ lệ giải quyết đúng hạn ({PAID_ONLY[0].lower()}{PAID_ONLY[1:]})", head["on_time_rate_paid_only"], "rate"),
        ("Tỷ lệ thanh toán trực tuyến (theo hệ thống)", head["online_payment_rate_system"], "rate"),
        (f"Tỷ lệ thanh toán trực tuyến ({PAID_ONLY[0].lower()}{PAID_ONLY[1:]})",
         head["online_payment_rate_paid_only"], "rate"),
    ]
    for label, value, kind in figures:
        ws.merge(row, 1, row, 4, label)
        ws.put(row, 5, value, BOLD | number_format(kind), empty_of(kind))
        row += 1
    row += 1
    ws.merge(row, 1, row, ncols, f"Hồ sơ thủ tục hành chính giải quyết trễ hạn: {head['sentence']} "
                                 f"(số liệu tính đến {doc.pub.as_of:%d/%m/%Y %H:%M}).", BOLD | WRAP)
    ws.ws.set_row(row - 1, 32)
    row += 2
    ws.put(row, 1, "2. Các chỉ số dịch vụ công (Quyết định 766/QĐ-TTg), toàn địa bàn: theo hệ thống và chỉ tính "
                   "hồ sơ đã hoàn thành nghĩa vụ tài chính", BOLD)
    row += 1
    columns = [
        STT, Column(("Chỉ số",), "indicator_label", "text", 46), *_rates(10),
        Column((EXCLUDED, "Tổng số"), "excluded_unpaid", "count", 10),
        Column((EXCLUDED, "Đã có kết quả, chưa nộp phí"), "excluded_result_issued", "count", 13),
        Column((EXCLUDED, "Đang giải quyết, chưa nộp phí"), "excluded_in_progress", "count", 13),
    ]
    header_top = row
    depth = write_header(ws, row, columns)
    row += depth
    first_data = row
    for stt, record in enumerate(indicators, start=1):
        for i, column in enumerate(columns, start=1):
            value = stt if column.value is None else column.get(record)
            ws.put(row, i, value, BORDER | number_format(column.kind) | (WRAP if i == 2 else CENTER),
                   empty_of(column.kind))
        row += 1
    last_data = row - 1
    ws.freeze(header_top, 1)
    ws.merge(row + 1, 1, row + 1, ncols, PAID_ONLY_NOTE + " N/A: mẫu số bằng 0.", ITALIC_SMALL | WRAP)
    ws.ws.set_row(row, 28)
    chart_row = row + 3
    if indicators:
        # horizontal clustered bars; in a bar chart XlsxWriter's x axis is the (horizontal) value axis
        chart = ws.book.add_chart({"type": "bar"})
        for col, title in ((5, SYSTEM), (8, PAID_ONLY)):  # the two 'Tỷ lệ' columns
            chart.add_series({
                "name": title,
                "categories": [ws.name, first_data - 1, 1, last_data - 1, 1],
                "values": [ws.name, first_data - 1, col - 1, last_data - 1, col - 1],
            })
        chart.set_title({"name": "Các chỉ số: theo hệ thống và chỉ tính hồ sơ đã hoàn thành NVTC"})
        chart.set_x_axis({"name": "Tỷ lệ", "num_format": "0%", "min": 0, "max": 1})
        chart.set_y_axis({"reverse": True})  # indicator 1 on top, as in the table
        chart.set_size({"width": 907, "height": 416})  # 24 x 11 cm
        ws.ws.insert_chart(chart_row - 1, 0, chart)
        chart_row += 22  # the chart's height in default rows
    write_signature(ws, chart_row, ncols, doc)
    print_setup(ws, header_top, header_top + depth - 1)


SHEETS: list[tuple[str, Callable[[Sheet, Doc, Data, Callable[[], dict[str, Any]]], None]]] = [
    (SHEET_SUMMARY, summary_sheet),
    (SHEET_FORM06, form06_sheet),
    (SHEET_PROGRESS, progress_sheet),
    (SHEET_PAYMENT, payment_sheet),
    (SHEET_INDICATORS, indicator_sheet),
    (SHEET_SIMPLIFIED, simplified_sheet),
    (SHEET_DELEGATED, delegated_sheet),
    (SHEET_LATE, late_sheet),
    (SHEET_UNPAID, unpaid_sheet),
    (SHEET_UNCOLLECTED, uncollected_sheet),
    (SHEET_LATE_ACCEPTANCE, late_acceptance_sheet),
]
