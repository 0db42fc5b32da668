"""The sheets of the official workbook (shared/spec/reports.md section 6), in their order.

Each function lays out one report table with the machinery of :mod:`tasks.workbook` (heading,
merged header, sections, total row with formulas, signature). :data:`SHEETS` is the workbook: a
sheet name and its writer, called as ``write(sheet, doc, data, headline)`` where ``data`` maps each
``mart.rpt_*`` table to the publication's rows and ``headline()`` returns
:func:`tasks.reports.headline`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks.workbook import (
    BOLD,
    BORDER,
    CENTER,
    ITALIC_SMALL,
    LEVEL_LABELS,
    WRAP,
    Column,
    CountIf,
    Doc,
    Ratio,
    Section,
    Sheet,
    by_level,
    empty_of,
    number_format,
    print_setup,
    roman,
    write_header,
    write_heading,
    write_signature,
    write_table,
)

Rows = list[dict[str, Any]]
Data = dict[str, Rows]

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

STT = Column(("STT",), None, "text", 6)
UNIT = Column(("Đơn vị",), "ten_don_vi", "text", 28)
PROCEDURE = (Column(("Mã TTHC",), "ma_tthc", "text", 22), Column(("Tên TTHC",), "ten_tthc", "text", 34))


def _yes(flag: Any) -> str | None:
    return "Có" if flag else None


def form06_sheet(ws: Sheet, doc: Doc, data: Data, _: Callable[[], dict[str, Any]]) -> None:
    recv, among = "Số hồ sơ nhận giải quyết", "Trong đó"
    done, open_ = "Số hồ sơ đã giải quyết", "Số hồ sơ đang giải quyết"
    columns = [
        STT,
        Column(("Lĩnh vực, công việc giải quyết theo cấp",),
               lambda r: r["ten_linh_vuc"] or r["ma_linh_vuc"] or "Chưa xác định lĩnh vực", "text", 36),
        Column((recv, "Tổng số"), "received_total", "count", 10, "sum"),
        Column((recv, among, "Trực tuyến"), "received_online", "count", 10, "sum"),
        Column((recv, among, "Trực tiếp, dịch vụ bưu chính"), "received_direct_postal", "count", 12, "sum"),
        Column((recv, among, "Từ kỳ trước"), "carried_over", "count", 10, "sum"),
        Column((done, "Tổng số"), "resolved_total", "count", 10, "sum"),
        Column((done, "Trước hạn"), "resolved_before_due", "count", 10, "sum"),
        Column((done, "Đúng hạn"), "resolved_on_time", "count", 10, "sum"),
        Column((done, "Quá hạn"), "resolved_late", "count", 10, "sum"),
        Column((open_, "Tổng số"), "in_progress_total", "count", 10, "sum"),
        Column((open_, "Trong hạn"), "in_progress_in_time", "count", 10, "sum"),
        Column((open_, "Quá hạn"), "in_progress_overdue", "count", 10, "sum"),
    ]
    write_table(ws, doc, title="TÌNH HÌNH, KẾT QUẢ GIẢI QUYẾT TTHC TẠI CƠ QUAN, ĐƠN VỊ TRỰC TIẾP GIẢI QUYẾT TTHC",
                form_code="Biểu số 06/VPCP/KSTT", unit_line="Đơn vị tính: Số hồ sơ TTHC", numbered=True,
                columns=columns,
                sections=by_level(data["rpt_form06"], lambda r: (r["stt"], r["ma_linh_vuc"] or "")),
                notes=["Theo Biểu số 06/VPCP/KSTT (Thông tư số 01/2020/TT-VPCP). Cột (3) = (4) + (5) + (6); "
                       "trước hạn, đúng hạn, quá hạn so sánh theo ngày; công dân rút hồ sơ tính đúng hạn."])


def progress_sheet(ws: Sheet, doc: Doc, data: Data, _: Callable[[], dict[str, Any]]) -> None:
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
        Column(("Tỷ lệ giải quyết đúng hạn",), "on_time_rate", "rate", 12,
               Ratio(("resolved_before_due", "resolved_on_time"), "resolved_total")),
        Column(("Từ chối tiếp nhận",), "rejected_at_intake", "count", 10, "sum"),
    ]
    write_table(ws, doc, title="TÌNH HÌNH, KẾT QUẢ GIẢI QUYẾT THỦ TỤC HÀNH CHÍNH", columns=columns,
                sections=by_level(data["rpt_progress"], lambda r: (r["ma_don_vi"] or "")),
                notes=["Đúng hạn gồm hồ sơ có ngày kết thúc xử lý trùng ngày hẹn trả, không có ngày hẹn trả "
                       "hoặc công dân rút hồ sơ; so sánh theo ngày (Biểu số 06/VPCP/KSTT). Từ chối tiếp nhận: "
                       "hồ sơ không được tiếp nhận trong kỳ, không tính vào số hồ sơ nhận giải quyết.",
                       "N/A: không có hồ sơ đã giải quyết trong kỳ."])


def payment_sheet(ws: Sheet, doc: Doc, data: Data, _: Callable[[], dict[str, Any]]) -> None:
    paid, unpaid, rate = ("Đã hoàn thành nghĩa vụ tài chính", "Chưa hoàn thành nghĩa vụ tài chính",
                          "Tỷ lệ thanh toán trực tuyến")
    columns = [
        STT, UNIT, *PROCEDURE,
        Column(("Số hồ sơ có nghĩa vụ tài chính",), "with_obligation", "count", 12, "sum"),
        Column((paid, "Tổng số"), "obligation_completed", "count", 10, "sum"),
        Column((paid, "Thanh toán trực tuyến"), "paid_online_completed", "count", 11, "sum"),
        Column((paid, "Thanh toán trực tiếp"), "paid_offline", "count", 11, "sum"),
        Column((unpaid, "Đã có kết quả"), "unpaid_result_issued", "count", 10, "sum"),
        Column((unpaid, "Đang giải quyết"), "unpaid_in_progress", "count", 10, "sum"),
        Column((unpaid, "Số tiền chưa nộp (đồng)"), "amount_due", "count", 13, "sum"),
        Column(("Số hồ sơ thanh toán trực tuyến (theo hệ thống)",), "paid_online", "count", 13, "sum"),
        Column((rate, "Theo hệ thống"), "rate_system", "rate", 11, Ratio(("paid_online",), "with_obligation")),
        Column((rate, PAID_ONLY), "rate_paid_only", "rate", 13,
               Ratio(("paid_online_completed",), "obligation_completed")),
    ]
    write_table(ws, doc, title="KẾT QUẢ THANH TOÁN TRỰC TUYẾN PHÍ, LỆ PHÍ", columns=columns,
                sections=by_level(data["rpt_online_payment"], lambda r: (r["ma_don_vi"] or "", r["ma_tthc"] or "")),
                notes=["Theo hệ thống: số hồ sơ thanh toán trực tuyến / tổng số hồ sơ có nghĩa vụ tài chính. "
                       + PAID_ONLY_NOTE + " N/A: mẫu số bằng 0."])


def _verdict(r: dict[str, Any]) -> str | None:
    met = r.get("meets_target")
    return None if met is None else "Đạt" if met else "Chưa đạt"


def indicator_sheet(ws: Sheet, doc: Doc, data: Data, _: Callable[[], dict[str, Any]]) -> None:
    """One section per unit, the jurisdiction ('*') first; one row per indicator."""
    system, excluded = "Theo hệ thống", "Số hồ sơ loại trừ"
    columns = [
        STT,
        Column(("Mã chỉ số (QĐ 766)",), "code_766", "text", 9),
        Column(("Chỉ số",), "indicator_label", "text", 40),
        Column((system, "Tử số"), "numerator_system", "count", 9),
        Column((system, "Mẫu số"), "denominator_system", "count", 9),
        Column((system, "Tỷ lệ"), "rate_system", "rate", 10),
        Column((PAID_ONLY, "Tử số"), "numerator_paid_only", "count", 9),
        Column((PAID_ONLY, "Mẫu số"), "denominator_paid_only", "count", 9),
        Column((PAID_ONLY, "Tỷ lệ"), "rate_paid_only", "rate", 10),
        Column((excluded, "Chưa hoàn thành NVTC"), "excluded_unpaid", "count", 11),
        Column((excluded, "Theo danh sách loại trừ"), "excluded_by_list", "count", 11),
        Column(("Số hồ sơ không xác định được",), "unknown", "count", 11),
        Column(("Mức đạt điểm tối đa",), "full_score_at", "threshold", 10),
        Column(("Chỉ tiêu giao",), "target", "threshold", 10),
        Column(("Đánh giá",), _verdict, "text", 10),
    ]
    rows = data["rpt_service_indicators"]
    units = sorted({(r["ma_don_vi"], r["cap_don_vi"], r["ten_don_vi"]) for r in rows if r["ma_don_vi"] != "*"},
                   key=lambda u: (u[1] is None, u[1] or 0, u[0] or ""))
    sections = [Section("Toàn địa bàn", [r for r in rows if r["ma_don_vi"] == "*"])]
    for ma, cap, ten in units:
        level = LEVEL_LABELS.get(cap, "Chưa xác định cấp")
        sections.append(Section(f"{ten or ma} ({level})",
                                [r for r in rows if (r["ma_don_vi"], r["cap_don_vi"]) == (ma, cap)]))
    sections = [Section(f"{roman(i)}. {s.label}", sorted(s.rows, key=lambda r: r["indicator_order"]))
                for i, s in enumerate(sections, start=1)]
    write_table(ws, doc, title="KẾT QUẢ CÁC CHỈ SỐ PHỤC VỤ NGƯỜI DÂN, DOANH NGHIỆP (QUYẾT ĐỊNH 766/QĐ-TTg)",
                columns=columns, sections=sections, total_label=None,
                notes=["Toàn địa bàn: mọi đơn vị; ở hai chỉ số về thủ tục (3.2 và thanh toán trực tuyến có phát "
                       "sinh giao dịch) mỗi thủ tục được đếm một lần. " + PAID_ONLY_NOTE,
                       "Không xác định được: hồ sơ thiếu thông tin để tính, không có ở tử số và mẫu số. Mức đạt "
                       "điểm tối đa: tỷ lệ Bộ chỉ số 766 chấm đủ điểm. Đánh giá: tỷ lệ theo hệ thống so với chỉ "
                       "tiêu giao (để trống khi không có chỉ tiêu). N/A: mẫu số bằng 0."])


def simplified_sheet(ws: Sheet, doc: Doc, data: Data, _: Callable[[], dict[str, Any]]) -> None:
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
    write_table(ws, doc, title="KẾT QUẢ RÀ SOÁT, ĐƠN GIẢN HÓA THỦ TỤC HÀNH CHÍNH", columns=columns,
                sections=[Section("I. Thủ tục hành chính", data["rpt_simplified_procedures"])],
                notes=["Số hồ sơ đã giải quyết trong kỳ, tiếp nhận từ ngày quyết định; đúng hạn gồm cả trước hạn."])


def delegated_sheet(ws: Sheet, doc: Doc, data: Data, _: Callable[[], dict[str, Any]]) -> None:
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
    write_table(ws, doc, title="KẾT QUẢ PHÂN CẤP/ỦY QUYỀN GIẢI QUYẾT THỦ TỤC HÀNH CHÍNH", columns=columns,
                sections=[Section("", data["rpt_delegated_procedures"])],
                notes=["Số hồ sơ đã giải quyết trong kỳ, tiếp nhận từ ngày hiệu lực của văn bản; khi có nhiều "
                       "văn bản, lấy ngày của văn bản ban hành sau cùng."])


def late_sheet(ws: Sheet, doc: Doc, data: Data, _: Callable[[], dict[str, Any]]) -> None:
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
    write_table(ws, doc, title="DANH SÁCH CÁ NHÂN GIẢI QUYẾT HỒ SƠ TRỄ HẠN", columns=columns,
                sections=by_level(data["rpt_late_by_official"],
                                  lambda r: (r["month"], r["ma_don_vi"] or "", r["ma_can_bo"] or "")),
                notes=["Cán bộ đang hoặc đã xử lý hồ sơ sau cùng (MaCanBoXuLy); hồ sơ đang giải quyết tính "
                       "quá hạn tại ngày cuối tháng."])


def unpaid_sheet(ws: Sheet, doc: Doc, data: Data, _: Callable[[], dict[str, Any]]) -> None:
    columns = [
        STT,
        Column(("Mã hồ sơ",), "ma_ho_so", "text", 28),
        *PROCEDURE,
        Column(("Đơn vị",), "ten_don_vi", "text", 24),
        Column(("Trạng thái",), lambda r: STATUS_LABELS.get(r["trang_thai"], r["trang_thai"]), "text", 16),
        Column(("Ngày có kết quả",), "ngay_ket_thuc_xu_ly", "date", 12),
        Column(("Số tiền chưa nộp (đồng)",), "amount_due", "count", 13, "sum"),
        Column(("Số ngày chưa nộp",), "days_outstanding", "count", 10),
        Column(("Ngưỡng (ngày)",), "threshold_days", "count", 9),
        Column(("Quá ngưỡng",), lambda r: _yes(r["over_threshold"]), "text", 9, CountIf("Có")),
        Column(("Hệ thống nguồn",), "source", "text", 12),
    ]
    write_table(ws, doc, title="DANH SÁCH HỒ SƠ ĐÃ CÓ KẾT QUẢ NHƯNG CHƯA NỘP PHÍ, LỆ PHÍ", columns=columns,
                sections=by_level(data["rpt_unpaid_results"], lambda r: (-(r["days_outstanding"] or 0), r["ma_ho_so"])),
                notes=["Số ngày tính từ ngày có kết quả đến ngày số liệu. Ngưỡng mặc định theo cấu hình; "
                       "đăng ký kết hôn có yếu tố nước ngoài 60 ngày (mục III.5 Báo cáo 340/BC-UBND năm 2024)."])


def uncollected_sheet(ws: Sheet, doc: Doc, data: Data, _: Callable[[], dict[str, Any]]) -> None:
    columns = [
        STT,
        Column(("Mã hồ sơ",), "ma_ho_so", "text", 28),
        *PROCEDURE,
        Column(("Đơn vị",), "ten_don_vi", "text", 24),
        Column(("Ngày có kết quả",), "ngay_ket_thuc_xu_ly", "date", 12),
        Column(("Số ngày chờ trả",), "days_waiting", "count", 10),
        Column(("Thời hạn lưu giữ kết quả (ngày)",), "window_days", "count", 11),
        Column(("Căn cứ",), "can_cu", "text", 26),
        Column(("Quá thời hạn",), lambda r: None if r["over_window"] is None else "Có" if r["over_window"] else "Không",
               "text", 9, CountIf("Có")),
        Column(("Chưa nộp phí, lệ phí",), lambda r: _yes(r["fees_unpaid"]), "text", 10, CountIf("Có")),
        Column(("Hệ thống nguồn",), "source", "text", 12),
    ]
    write_table(ws, doc, title="DANH SÁCH HỒ SƠ ĐÃ CÓ KẾT QUẢ NHƯNG CHƯA TRẢ CHO NGƯỜI DÂN", columns=columns,
                sections=by_level(data["rpt_uncollected_results"],
                                  lambda r: (-(r["days_waiting"] or 0), r["ma_ho_so"])),
                notes=["Hồ sơ đã xử lý xong (trạng thái 9), chưa có ngày trả kết quả, tính đến ngày số liệu. Thời "
                       "hạn theo danh mục lưu giữ kết quả (ví dụ đăng ký kết hôn có yếu tố nước ngoài 60 ngày, mục "
                       "III.5 Báo cáo 340/BC-UBND năm 2024); để trống khi thủ tục không có thời hạn."])


def late_acceptance_sheet(ws: Sheet, doc: Doc, data: Data, _: Callable[[], dict[str, Any]]) -> None:
    waiting = "Chưa tiếp nhận"
    columns = [
        STT,
        Column(("Mã hồ sơ",), "ma_ho_so", "text", 28),
        *PROCEDURE,
        Column(("Đơn vị",), "ten_don_vi", "text", 24),
        Column(("Thời điểm nộp hồ sơ",), "ngay_nop_ho_so", "datetime", 16),
        Column(("Thời điểm tiếp nhận hoặc từ chối",), lambda r: r["ngay_tiep_nhan"] or waiting, "datetime", 16,
               CountIf(waiting)),
        Column(("Số giờ làm việc đã chờ",), "working_hours_waited", "hours", 11),
        Column(("Hệ thống nguồn",), "source", "text", 12),
    ]
    write_table(ws, doc, title="DANH SÁCH HỒ SƠ TRỰC TUYẾN TIẾP NHẬN QUÁ 08 GIỜ LÀM VIỆC", columns=columns,
                sections=by_level(data["rpt_late_acceptance"],
                                  lambda r: (-(r["working_hours_waited"] or 0), r["ma_ho_so"])),
                notes=["Hồ sơ nộp trực tuyến trong kỳ, tiếp nhận hoặc từ chối sau hơn 08 giờ làm việc (07:00-11:30, "
                       "13:30-17:00 các ngày làm việc), hoặc chưa tiếp nhận sau 08 giờ làm việc tại thời điểm số "
                       "liệu (mục III.3 Báo cáo 340/BC-UBND năm 2024). Dòng Tổng cộng đếm hồ sơ chưa tiếp nhận."])


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
    system, excluded = "Theo hệ thống", "Số hồ sơ loại trừ"
    columns = [
        STT, Column(("Chỉ số",), "indicator_label", "text", 46),
        Column((system, "Tử số"), "numerator_system", "count", 10),
        Column((system, "Mẫu số"), "denominator_system", "count", 10),
        Column((system, "Tỷ lệ"), "rate_system", "rate", 10),
        Column((PAID_ONLY, "Tử số"), "numerator_paid_only", "count", 10),
        Column((PAID_ONLY, "Mẫu số"), "denominator_paid_only", "count", 10),
        Column((PAID_ONLY, "Tỷ lệ"), "rate_paid_only", "rate", 10),
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
        for col, title in ((5, system), (8, PAID_ONLY)):  # the two 'Tỷ lệ' columns
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
