"""tasks.source_files against a corpus of ugly clerk exports (tests/fixtures/files/).

The corpus is built by tests/fixtures/make_files.py and checked in; the expected parse of each
file is written out here by hand, row by row.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.source_files import (
    FileFormatError,
    ParsedFile,
    content_hash,
    normalize_label,
    parse_file,
)

FILES = Path(__file__).parent / "fixtures" / "files"


def parse(name: str) -> ParsedFile:
    return parse_file(FILES / name)


# --- the corpus: expected rows ----------------------------------------------------------------


def test_titles_sections_total_one_row_header() -> None:
    p = parse("01_dossiers_titles_sections.xlsx")
    assert (p.entity, p.sheet, p.header_row, p.header_rows) == ("dossiers", "Sổ theo dõi", 5, 1)
    assert p.skipped == {"section": 2, "total": 1} and p.rows_skipped == 3
    assert p.unknown_columns == [] and p.warnings == []
    assert p.records == [
        {
            "MaHoSo": "000.00.15.H08-240115-00012", "MaTTHC": "1.001653.000.00.00.H08",
            "TenTTHC": "Đăng ký khai sinh", "TenLinhVuc": "Hộ tịch", "MaDonVi": "000.00.15.H08",
            "TenDonVi": "UBND huyện Tuy Phước", "KenhThucHien": 2, "ChuHoSo": "Nguyễn Văn An",
            "SoGiayToChuHoSo": "079123456789", "SoDienThoai": "0912345678", "NgayNopHoSo": "20240115080500",
            "NgayTiepNhan": "20240115083000", "NgayHenTra": "20240118000000", "NgayKetThucXuLy": "20240117164510",
            "NgayTra": "20240118090000", "TrangThaiHoSo": 10, "CanBoXuLy": "Trần Thị Bình", "MaCanBoXuLy": "CB001",
            "DuocThanhToanTrucTuyen": 1, "_CoKetQuaDienTu": 1, "_TaiSuDungDuLieu": 0,
            "NgayCapNhat": "20240118090005", "_row_number": 7,
        },
        {
            "MaHoSo": "000.00.15.H08-240116-00013", "MaTTHC": "2.002621.H08", "TenTTHC": "Chứng thực bản sao",
            "TenLinhVuc": "Chứng thực", "MaDonVi": "000.00.15.H08", "TenDonVi": "UBND huyện Tuy Phước",
            "KenhThucHien": 1, "ChuHoSo": "Lê Văn Cường", "SoGiayToChuHoSo": "012345678",
            "SoDienThoai": "0987654321", "NgayNopHoSo": "20240116000000", "NgayTiepNhan": "20240116074500",
            "NgayHenTra": "20240119170000", "NgayKetThucXuLy": None, "NgayTra": None, "TrangThaiHoSo": 4,
            "CanBoXuLy": "Trần Thị Bình", "MaCanBoXuLy": "CB001", "DuocThanhToanTrucTuyen": 0,
            "_CoKetQuaDienTu": None, "_TaiSuDungDuLieu": None, "NgayCapNhat": "20240116074500", "_row_number": 8,
        },
        {
            "MaHoSo": "000.31.15.H08-240120-00001", "MaTTHC": "1.004227.000.00.00.H08",
            "TenTTHC": "Đăng ký kết hôn", "TenLinhVuc": "Hộ tịch", "MaDonVi": "000.31.15.H08",
            "TenDonVi": "UBND xã Phước Lộc", "KenhThucHien": 3, "ChuHoSo": "Phạm Thị Dung",
            "SoGiayToChuHoSo": None, "SoDienThoai": None, "NgayNopHoSo": "20240120100000",
            "NgayTiepNhan": "20240122080000", "NgayHenTra": "20240125000000", "NgayKetThucXuLy": None,
            "NgayTra": None, "TrangThaiHoSo": 5, "CanBoXuLy": "Võ Văn Em", "MaCanBoXuLy": "CB031",
            "DuocThanhToanTrucTuyen": 0, "_CoKetQuaDienTu": 0, "_TaiSuDungDuLieu": 1,
            "NgayCapNhat": "20240123141000", "_row_number": 10,
        },
    ]


def test_two_row_header_with_merged_groups_and_excel_dates() -> None:
    p = parse("02_dossiers_two_row_header.xlsx")
    assert (p.entity, p.sheet, p.header_row, p.header_rows) == ("dossiers", "HoSo", 4, 2)
    assert p.columns["NgayTiepNhan"] == "Ngày tiếp nhận"  # group "Ngày" + sub-label "tiếp nhận"
    assert p.columns["NgayKetThucXuLy"] == "Ngày có kết quả"
    assert p.unknown_columns == ["Ghi chú"]
    assert p.warnings == ["unknown columns ignored: 'Ghi chú'"]
    assert p.skipped == {"blank": 1}  # the blank row inside; formatted empty rows under the table are not rows
    assert p.records == [
        {
            "MaHoSo": "000.31.15.H08-240201-00004", "MaTTHC": "1.001653.000.00.00.H08",
            "TenTTHC": "Đăng ký khai sinh", "NgayNopHoSo": "20240201091500", "NgayTiepNhan": "20240201092000",
            "NgayHenTra": "20240202000000", "NgayKetThucXuLy": "20240201150030", "NgayTra": "20240202080000",
            "TrangThaiHoSo": 10, "KenhThucHien": 1, "_CoKetQuaDienTu": 1, "_TaiSuDungDuLieu": 1, "_row_number": 6,
        },
        {
            "MaHoSo": "000.31.15.H08-240205-00007", "MaTTHC": "1.001653.000.00.00.H08",
            "TenTTHC": "Đăng ký khai sinh", "NgayNopHoSo": "20240205140000", "NgayTiepNhan": "20240205140000",
            "NgayHenTra": "20240206140000", "NgayKetThucXuLy": None, "NgayTra": None, "TrangThaiHoSo": 9,
            "KenhThucHien": None, "_CoKetQuaDienTu": 0, "_TaiSuDungDuLieu": None, "_row_number": 8,
        },
    ]


def test_labels_in_nfd_case_spacing_and_alternatives() -> None:
    p = parse("03_dossiers_label_variants.xlsx")
    assert (p.header_row, p.unknown_columns) == (2, [])
    assert p.columns == {
        "MaHoSo": "MÃ HỒ SƠ", "MaTTHC": "Mã thủ tục", "TenTTHC": "Tên thủ tục", "NgayTiepNhan": "Ngày tiếp nhận",
        "NgayHenTra": "ngày hẹn trả", "NgayKetThucXuLy": "Ngày có kết quả", "TrangThaiHoSo": "Trạng thái",
        "KenhThucHien": "Kênh nộp", "ChuHoSo": "Chủ hồ sơ:", "SoGiayToChuHoSo": "Số giấy tờ",
    }
    assert p.records == [
        {
            "MaHoSo": "000.00.15.H08-240301-00021", "MaTTHC": "1.001653.000.00.00.H08",
            "TenTTHC": "Đăng ký khai sinh", "NgayTiepNhan": "20240301080500", "NgayHenTra": "20240305000000",
            "NgayKetThucXuLy": "20240304100000", "TrangThaiHoSo": 4, "KenhThucHien": 2,
            "ChuHoSo": "Nguyễn Văn Giang", "SoGiayToChuHoSo": "79123456789", "_row_number": 3,
        },
        {
            "MaHoSo": "000.00.15.H08-240302-00022", "MaTTHC": "2.002621.H08", "TenTTHC": "Chứng thực",
            "NgayTiepNhan": "20240302073000", "NgayHenTra": "20240304000000", "NgayKetThucXuLy": "20240304160000",
            "TrangThaiHoSo": 2, "KenhThucHien": 1, "ChuHoSo": "Hồ Thị Hoa", "SoGiayToChuHoSo": None,
            "_row_number": 4,
        },
    ]
    assert p.records[0]["ChuHoSo"] == "Nguy\u1ec5n V\u0103n Giang"  # NFC, single spaces
    assert p.warnings == [
        "column 'Số giấy tờ' holds numbers instead of text (rows 3): leading zeros may have been lost"
    ]


def test_unconvertible_values_are_kept_as_the_original_strings() -> None:
    p = parse("04_dossiers_bad_values.xlsx")
    assert p.unknown_columns == ["Ghi chú", "Người ký"]
    assert p.records == [
        {
            "MaHoSo": "H08-BAD-001", "NgayTiepNhan": "31/02/2024", "NgayHenTra": "2024/01/15",
            "TrangThaiHoSo": "Đang chờ duyệt", "KenhThucHien": "Qua Zalo", "DuocThanhToanTrucTuyen": "Có lẽ",
            "NgayCapNhat": "15/13/2024 10:00", "_row_number": 3,
        },
        {  # no key: still a record, for the checks to quarantine
            "MaHoSo": None, "NgayTiepNhan": "20240201080000", "NgayHenTra": "20240205000000", "TrangThaiHoSo": 4,
            "KenhThucHien": 1, "DuocThanhToanTrucTuyen": 0, "NgayCapNhat": "20240201080000", "_row_number": 4,
        },
        {  # a number in a date cell is not guessed to be an Excel serial; codes are not labels
            "MaHoSo": "H08-BAD-003", "NgayTiepNhan": "45306.5", "NgayHenTra": "25:00", "TrangThaiHoSo": "4",
            "KenhThucHien": "2", "DuocThanhToanTrucTuyen": 1, "NgayCapNhat": "01/02/2024 25:61", "_row_number": 5,
        },
    ]
    assert p.warnings == [
        "unknown columns ignored: 'Ghi chú', 'Người ký'",
        "2 value(s) in column 'Ngày tiếp nhận' are not a date (dd/MM/yyyy[ HH:mm[:ss]]) (rows 3, 5); "
        "kept as text for the quality checks",
        "2 value(s) in column 'Ngày hẹn trả' are not a date (dd/MM/yyyy[ HH:mm[:ss]]) (rows 3, 5); "
        "kept as text for the quality checks",
        "2 value(s) in column 'Trạng thái' are not a status label of table 1.5 (rows 3, 5); "
        "kept as text for the quality checks",
        "2 value(s) in column 'Kênh nộp' are not a channel label (Trực tiếp, Trực tuyến, Bưu chính công ích) "
        "(rows 3, 5); kept as text for the quality checks",
        "1 value(s) in column 'Thanh toán trực tuyến' are not Có/Không (rows 3); kept as text for the quality checks",
        "2 value(s) in column 'Ngày cập nhật' are not a date (dd/MM/yyyy[ HH:mm[:ss]]) (rows 3, 5); "
        "kept as text for the quality checks",
    ]


def test_csv_with_bom_semicolons_titles_sections_total() -> None:
    p = parse("05_dossiers_bom_semicolon.csv")
    assert (p.entity, p.sheet, p.delimiter, p.header_row) == ("dossiers", None, ";", 4)
    assert p.skipped == {"section": 2, "blank": 1, "total": 1}
    assert p.records == [
        {
            "MaHoSo": "000.00.15.H08-240401-00031", "TenTTHC": "Cấp giấy phép; gia hạn",
            "ChuHoSo": "Nguyễn Văn A, đại diện", "NgayTiepNhan": "20240401080059", "TrangThaiHoSo": 8,
            "KenhThucHien": 2, "_row_number": 6,
        },
        {
            "MaHoSo": "000.31.15.H08-240402-00032", "TenTTHC": "Đăng ký kết hôn", "ChuHoSo": "Trần Thị B",
            "NgayTiepNhan": "20240402133000", "TrangThaiHoSo": 7, "KenhThucHien": 1, "_row_number": 9,
        },
    ]


def test_csv_with_commas_no_bom_and_absent_fields() -> None:
    p = parse("06_dossiers_comma_nobom.csv")
    assert (p.delimiter, p.header_row, p.rows_skipped) == (",", 1, 0)
    assert p.records == [
        {
            "MaHoSo": "000.00.15.H08-240501-00041", "TrangThaiHoSo": 1, "NgayTiepNhan": "20240501070000",
            "KenhThucHien": None, "NgayCapNhat": "20240501070000", "_row_number": 2,
        },
        {
            "MaHoSo": "000.00.15.H08-240502-00042", "TrangThaiHoSo": 3, "NgayTiepNhan": "20240502000000",
            "KenhThucHien": 2, "NgayCapNhat": "20240503091000", "_row_number": 3,
        },
    ]
    # what the file does not carry stays absent (null downstream), never false
    assert all("DuocThanhToanTrucTuyen" not in r and "_CoKetQuaDienTu" not in r for r in p.records)


def test_payments_amounts_labels_and_total_row() -> None:
    p = parse("07_payments_titles_total.xlsx")
    assert (p.entity, p.sheet, p.header_row, p.skipped) == ("payments", "Thanh toán", 5, {"total": 1})
    assert p.warnings == []
    assert p.records == [
        {
            "Ma": "TT-0001", "MaHoSo": "000.00.15.H08-240115-00012", "SoTien": 1234000, "Phi": 1000000,
            "LePhi": 234000, "TrangThai": "Đã thanh toán", "HinhThucThanhToan": "truc-tuyen",
            "HinhThucThu": "Thu trước", "NgayYeuCau": "20240115083000", "NgayThuPhi": "20240115090211",
            "MaGiaoDich": "PAY123456", "NgayCapNhat": "20240115090211", "_row_number": 6,
        },
        {
            "Ma": "TT-0002", "MaHoSo": "000.00.15.H08-240116-00013", "SoTien": 50000, "Phi": 50000, "LePhi": 0,
            "TrangThai": "Chờ thanh toán", "HinhThucThanhToan": "tien-mat", "HinhThucThu": "Thu sau",
            "NgayYeuCau": "20240116074500", "NgayThuPhi": None, "MaGiaoDich": None,
            "NgayCapNhat": "20240116074500", "_row_number": 7,
        },
        {
            "Ma": "TT-0003", "MaHoSo": "000.31.15.H08-240120-00001", "SoTien": 20000, "Phi": 20000, "LePhi": 0,
            "TrangThai": "Đã hoàn phí", "HinhThucThanhToan": "chuyen-khoan", "HinhThucThu": "Đối tượng miễn phí",
            "NgayYeuCau": "20240122080000", "NgayThuPhi": "20240122090000", "MaGiaoDich": "CK-778",
            "NgayCapNhat": "20240201100000", "_row_number": 8,
        },
    ]


def test_payments_csv_alternative_labels_and_bad_amount() -> None:
    p = parse("08_payments_alt_labels_semicolon.csv")
    assert (p.entity, p.delimiter, p.header_row) == ("payments", ";", 2)
    assert p.columns["NgayThuPhi"] == "Ngày thanh toán"
    assert p.records == [
        {
            "Ma": "TT-0101", "MaHoSo": "H08-0101", "SoTien": "abc", "TrangThai": "Đã thanh toán",
            "HinhThucThanhToan": "Ví điện tử", "HinhThucThu": "Thu trước", "NgayThuPhi": "20240605101100",
            "_row_number": 3,
        },
        {
            "Ma": "TT-0102", "MaHoSo": "H08-0102", "SoTien": 300000, "TrangThai": "Hủy thanh toán",
            "HinhThucThanhToan": None, "HinhThucThu": "Thu sau", "NgayThuPhi": None, "_row_number": 4,
        },
    ]
    assert p.records[0]["TrangThai"] == "\u0110\u00e3 thanh to\u00e1n"  # NFC although the file is NFD
    assert len(p.warnings) == 2 and "'Số tiền'" in p.warnings[0] and "'Hình thức thanh toán'" in p.warnings[1]


def test_second_sheet_five_titles_repeated_header_and_notes() -> None:
    p = parse("09_dossiers_second_sheet.xlsx")
    assert (p.sheet, p.header_row) == ("Dữ liệu", 7)
    assert p.skipped == {"header": 1, "blank": 1, "note": 2}
    assert p.records == [
        {"MaHoSo": "H08-SHEET-001", "NgayTiepNhan": "20240603080000", "TrangThaiHoSo": 6,
         "NgayCapNhat": "20240603080000", "_row_number": 8},
        {"MaHoSo": "H08-SHEET-002", "NgayTiepNhan": "20240604090000", "TrangThaiHoSo": 8,
         "NgayCapNhat": "20240604093000", "_row_number": 10},
    ]
    assert p.warnings == [
        "row 12: note row skipped: 'Người lập biểu'",
        "row 13: note row skipped: 'Tuy Phước, ngày 30 tháng 6 năm 2024'",
    ]


def test_payments_two_row_header() -> None:
    p = parse("10_payments_two_row_header.xlsx")
    assert (p.entity, p.header_row, p.header_rows, p.unknown_columns) == ("payments", 2, 2, [])
    assert p.columns["Phi"] == "Phí (đồng)"
    assert p.records == [
        {
            "Ma": "TT-0201", "MaHoSo": "H08-0201", "SoTien": 100000, "Phi": 100000, "LePhi": 0,
            "HinhThucThanhToan": "truc-tuyen", "TrangThai": "Đã thanh toán", "NgayThuPhi": "20240610100005",
            "MaGiaoDich": "VNPAY-1", "NgayYeuCau": "20240610090000", "HinhThucThu": "Thu trước", "_row_number": 4,
        },
        {
            "Ma": "TT-0202", "MaHoSo": "H08-0202", "SoTien": 0, "Phi": 0, "LePhi": 0, "HinhThucThanhToan": None,
            "TrangThai": "Chưa thanh toán", "NgayThuPhi": None, "MaGiaoDich": None, "NgayYeuCau": "20240611000000",
            "HinhThucThu": "Đối tượng miễn phí", "_row_number": 5,
        },
    ]


# --- the corpus: broken files -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("broken_empty.csv", "empty file (0 bytes)"),
        ("broken_corrupt.xlsx", "not a readable .xlsx workbook"),
        ("broken_legacy.xls", "not a readable Excel 97-2003 (.xls) workbook"),
        ("broken_cp1258.csv", "not UTF-8 text (byte 2); read as cp1258"),  # '?' for letters cp1258 lacks
        ("broken_no_header.xlsx", "no header row found in the first 30 rows of sheet(s) 'Sheet'"),
        ("broken_missing_ma_ho_so.xlsx", "missing required column 'Mã hồ sơ' (dossier list; header row 2"),
        ("broken_payments_missing_ma.csv", "missing required column 'Mã thanh toán' (payment list"),
        ("broken_empty_sheet.xlsx", "empty workbook: no sheet has any cell"),
    ],
)
def test_broken_files_raise_a_file_level_error(name: str, message: str) -> None:
    with pytest.raises(FileFormatError) as err:
        parse(name)
    assert message in str(err.value)
    assert str(err.value).startswith(str(FILES / name) + ": ")  # names the file
    assert err.value.path == FILES / name and message in err.value.message


def test_corpus_files_once_refused_are_read_now() -> None:
    """A UTF-16 CSV (Excel's "Unicode Text") and an HTML table saved as .xls (issue 16)."""
    utf16 = parse("broken_utf16.csv")
    assert (utf16.entity, utf16.format, utf16.encoding) == ("dossiers", "csv", "utf-16")
    assert utf16.records == [{"MaHoSo": "H08-1", "TrangThaiHoSo": 4, "_row_number": 2}]
    html = parse("broken_html.xls")
    assert (html.entity, html.format, html.records, html.warnings) == (
        "dossiers", "html", [], ["no data rows under the header"])


def test_missing_file_is_a_file_level_error(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="cannot read the file"):
        parse_file(tmp_path / "nope.xlsx")


def test_corpus_has_at_least_ten_good_and_five_broken_files() -> None:
    names = [p.name for p in FILES.iterdir()]
    assert sum(not n.startswith("broken_") for n in names) >= 10
    assert sum(n.startswith("broken_") for n in names) >= 5


# --- smaller behaviours -----------------------------------------------------------------------


def _csv(tmp_path: Path, text: str, name: str = "x.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_format_is_told_by_content_not_extension(tmp_path: Path) -> None:
    path = _csv(tmp_path, "Mã hồ sơ,Trạng thái\nH08-1,Đang xử lý\n", name="export.xlsx")
    assert parse_file(path).records == [{"MaHoSo": "H08-1", "TrangThaiHoSo": 4, "_row_number": 2}]


def test_ambiguous_list_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path, "Mã hồ sơ,Ngày tiếp nhận,Số tiền\nH08-1,01/01/2024,1.000\n")
    with pytest.raises(FileFormatError, match="cannot tell a dossier list from a payment list"):
        parse_file(path)


def test_every_data_row_becomes_a_record(tmp_path: Path) -> None:
    lines = ["Mã hồ sơ;Trạng thái;Ngày tiếp nhận"] + [f"H08-{i};???;xx/{i}" for i in range(50)] + [";Đang xử lý;"]
    parsed = parse_file(_csv(tmp_path, "\n".join(lines)))
    assert len(parsed.records) == 51 and parsed.rows_skipped == 0
    assert parsed.records[-1] == {"MaHoSo": None, "TrangThaiHoSo": 4, "NgayTiepNhan": None, "_row_number": 52}


def test_duplicate_column_reads_the_first(tmp_path: Path) -> None:
    parsed = parse_file(_csv(tmp_path, "Mã hồ sơ,Mã TTHC,Mã thủ tục\nH08-1,A.1,B.2\n"))
    assert parsed.records == [{"MaHoSo": "H08-1", "MaTTHC": "A.1", "_row_number": 2}]
    assert parsed.warnings == ["column 'Mã thủ tục' repeats 'Mã TTHC' (MaTTHC); the first one is read"]


def test_header_only_file_has_no_records_and_says_so(tmp_path: Path) -> None:
    parsed = parse_file(_csv(tmp_path, "\ufeffMã hồ sơ;Trạng thái\n"))
    assert parsed.records == [] and parsed.warnings == ["no data rows under the header"]


def test_normalize_label() -> None:
    nfd = "Nga\u0300y tie\u0302\u0301p nha\u0323\u0302n"
    assert normalize_label(nfd) == normalize_label("NGÀY  TIẾP\u00a0NHẬN ") == "ngày tiếp nhận"
    assert normalize_label("Chủ hồ sơ (*):") != "chủ hồ sơ"  # parentheses are handled at lookup only
    assert normalize_label("Mã hồ sơ:") == "mã hồ sơ"


def test_content_hash(tmp_path: Path) -> None:
    src = FILES / "01_dossiers_titles_sections.xlsx"
    copy = tmp_path / "renamed.xlsx"
    shutil.copy(src, copy)
    assert content_hash(src) == content_hash(copy) == hashlib.sha256(src.read_bytes()).hexdigest()
    assert content_hash(src) != content_hash(FILES / "02_dossiers_two_row_header.xlsx")


_moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2035, 12, 31)).map(
    lambda d: d.replace(microsecond=0)
)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(_moments, st.sampled_from(["%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y"]),
                  st.integers(0, 10**10), st.booleans()),
        min_size=1, max_size=15,
    )
)
def test_dates_and_amounts_round_trip(tmp_path_factory: pytest.TempPathFactory, rows: list[Any]) -> None:
    lines = ["Mã thanh toán;Mã hồ sơ;Ngày yêu cầu;Số tiền"]
    expected = []
    for i, (moment, fmt, amount, dotted) in enumerate(rows):
        text_amount = f"{amount:,}".replace(",", ".") if dotted else str(amount)
        lines.append(f"P{i};H{i};{moment.strftime(fmt)};{text_amount}")
        shown = datetime.strptime(moment.strftime(fmt), fmt)
        expected.append({"Ma": f"P{i}", "MaHoSo": f"H{i}", "NgayYeuCau": shown.strftime("%Y%m%d%H%M%S"),
                         "SoTien": amount, "_row_number": i + 2})
    path = tmp_path_factory.mktemp("rt") / "p.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    assert parse_file(path).records == expected


def test_a_large_csv_parses_every_row(tmp_path: Path) -> None:
    header = "STT;Mã hồ sơ;Mã TTHC;Chủ hồ sơ;Ngày nộp;Ngày tiếp nhận;Ngày hẹn trả;Trạng thái;Kênh nộp;Ngày cập nhật"
    row = "{i};H08-{i:06d};1.001653.000.00.00.H08;Nguyễn Văn A;01/02/2024 08:00;01/02/2024 08:10;05/02/2024;" \
          "Đã trả kết quả;Trực tuyến;05/02/2024 10:00:00"
    path = tmp_path / "big.csv"
    path.write_text("\n".join([header] + [row.format(i=i) for i in range(50_000)]), encoding="utf-8")
    parsed = parse_file(path)
    assert len(parsed.records) == 50_000
    assert parsed.records[-1]["MaHoSo"] == "H08-049999" and parsed.records[-1]["TrangThaiHoSo"] == 10


# --- the project's simulator exports (if present) ---------------------------------------------

_HAS_EXPORT = all(
    importlib.util.find_spec(m) is not None for m in ("simulator.export", "simulator.dataset")
)


@pytest.mark.skipif(not _HAS_EXPORT, reason="simulator/export.py not built yet")
def test_simulator_exports_round_trip(tmp_path: Path) -> None:
    """Every export layout of the simulator parses back to the dataset's records, for the fields
    files can carry (dates only to the precision the layout prints)."""
    from simulator.dataset import generate
    from simulator.export import export_files

    dataset = generate(seed=5, n_dossiers=300)
    paths = export_files(dataset, tmp_path)
    truth = {"dossiers": {r["MaHoSo"]: r for r in dataset.dossiers}, "payments": {r["Ma"]: r for r in dataset.payments}}
    key = {"dossiers": "MaHoSo", "payments": "Ma"}
    assert len(paths) == 8
    for path in paths:
        parsed = parse_file(path)
        assert parsed.entity == path.name.split("_")[0]
        assert set(parsed.unknown_columns) <= {"Ghi chú"}, path.name
        assert [w for w in parsed.warnings if not w.startswith("unknown columns")] == [], path.name
        assert sorted(r[key[parsed.entity]] for r in parsed.records) == sorted(truth[parsed.entity]), path.name
        for record in parsed.records:
            expected = _file_view(parsed.entity, truth[parsed.entity][record[key[parsed.entity]]])
            for name, value in record.items():
                if name != "_row_number":
                    assert _same(value, expected[name]), (path.name, record["_row_number"], name, value)


def _file_view(entity: str, api: dict[str, Any]) -> dict[str, Any]:
    """What an export can say about an API record, in the parser's conventions."""
    view = {k: (None if v in ("", None) else v) for k, v in api.items()}
    if entity == "dossiers":
        view["KenhThucHien"] = int(api["KenhThucHien"]) if api.get("KenhThucHien") else None
        view["DuocThanhToanTrucTuyen"] = int(api["DuocThanhToanTrucTuyen"] in (1, 2))
        view["_CoKetQuaDienTu"] = int(any(r.get("DuongDanTepTinKetQua") for r in api["DanhSachGiayToKetQua"]))
        view["_TaiSuDungDuLieu"] = int(any(t.get("DuocTaiSuDung") == 1 for t in api["TaiLieuNop"]))
    return view


def _same(parsed: Any, original: Any) -> bool:
    if isinstance(original, str) and len(original) == 14 and original.isdigit() and isinstance(parsed, str):
        # a layout may print only the minutes or only the day
        return parsed in (original, original[:12] + "00", original[:8] + "000000")
    if isinstance(original, str):
        return parsed == " ".join(original.split())
    return parsed == original


# --- hostile files (issue 14): refused with a reason, never an unhandled error ----------------
#
# The builders below are shared with tests/test_inbox.py (the same files through the inbox flow
# and `dvc-etl ingest-files`, next to a good file).

HOSTILE_HEADER = ["STT", "Mã hồ sơ", "Trạng thái", "Ngày cập nhật"]
LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                     for i in range(1, 10))
          + b']>\n<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" '
            b'uniqueCount="1"><si><t>&lol9;</t></si></sst>')
EXTERNAL = b'<?xml version="1.0"?>\n<!DOCTYPE w [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'


def make_xlsx(path: Path, rows: list[list[Any]]) -> Path:
    """A small dossier export written by xlsxwriter (shared strings, styles, one sheet)."""
    import xlsxwriter

    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("HoSo")
    for r, row in enumerate(rows):
        ws.write_row(r, 0, row)
    wb.close()
    return path


def good_rows(prefix: str, n: int = 3) -> list[list[Any]]:
    return [HOSTILE_HEADER] + [[i, f"{prefix}-{i:05d}", "Đang xử lý", "15/01/2024 08:00"] for i in range(1, n + 1)]


def rezip(src: Path, dst: Path, replace: dict[str, bytes] | None = None, stored: bool = False) -> Path:
    """``src`` with some parts replaced or added (the other parts as they are)."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(
        dst, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    ) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, (replace or {}).get(info.filename, zin.read(info.filename)))
        for name in set(replace or {}) - set(zin.namelist()):  # new parts
            zout.writestr(name, (replace or {})[name])
    return dst


def part(path: Path, name: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return z.read(name)


def bad_crc_xlsx(dst: Path, base: Path) -> Path:
    """``base`` stored uncompressed, then one byte of its last sheet value changed in place: the
    XML still parses, the zip's CRC-32 no longer matches (found at the end of the sheet, while
    its rows are read, when the sheet is larger than openpyxl's first read)."""
    sheet = part(base, "xl/worksheets/sheet1.xml")
    rezip(base, dst, stored=True)
    blob = bytearray(dst.read_bytes())
    at = blob.index(sheet) + sheet.rindex(b"<v>") + 3
    blob[at] = ord("7") if blob[at] != ord("7") else ord("8")
    dst.write_bytes(bytes(blob))
    return dst


def malformed(xml: bytes) -> bytes:
    return xml[: len(xml) // 2]


def hostile_files(folder: Path) -> dict[str, tuple[bytes | None, str]]:
    """Hostile exports written into ``folder``: name -> (None, what the failure reason says).
    Each is refused under the default limits (and under the small ones of :data:`SMALL_LIMITS`)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = make_xlsx(folder / ".base.xlsx", good_rows("HOSTILE"))
    files: dict[str, str] = {}

    def add(name: str, reason: str, replace: dict[str, bytes]) -> None:
        rezip(base, folder / name, replace)
        files[name] = reason

    unreadable = "not a readable .xlsx workbook"
    for i, name in enumerate(["[Content_Types].xml", "xl/workbook.xml", "xl/styles.xml", "xl/sharedStrings.xml",
                              "xl/worksheets/sheet1.xml"]):
        add(f"m{i}_malformed.xlsx", f"{unreadable}: part {name!r}", {name: malformed(part(base, name))})
    strings = part(base, "xl/sharedStrings.xml").split(b"?>", 1)[-1].lstrip()
    add("m5_encoding.xlsx", "unknown encoding",
        {"xl/sharedStrings.xml": b'<?xml version="1.0" encoding="x-klingon"?>\n' + strings})
    add("m6_laughs.xlsx", "declares a DTD or entities", {"xl/sharedStrings.xml": LAUGHS})
    sheet = part(base, "xl/worksheets/sheet1.xml")
    body = sheet.split(b"?>", 1)[-1].lstrip() if sheet.startswith(b"<?xml") else sheet
    add("m7_xxe.xlsx", "declares a DTD or entities",
        {"xl/worksheets/sheet1.xml": EXTERNAL + body.replace(b"<sheetData>", b"<sheetData>&xxe;", 1)})
    add("m8_xfd_value.xlsx", "column XFD", {"xl/worksheets/sheet1.xml": sheet.replace(
        b"</row>", b'<c r="XFD1" t="inlineStr"><is><t>padding</t></is></c></row>', 1)})
    add("m9_row_1048576.xlsx", "DVC_FILE_MAX_ROWS", {"xl/worksheets/sheet1.xml": sheet.replace(
        b"</sheetData>", b'<row r="1048576"><c r="A1048576" t="inlineStr"><is><t>x</t></is></c></row></sheetData>')})
    bad_crc_xlsx(folder / "m10_bad_crc.xlsx", make_xlsx(folder / ".large.xlsx", good_rows("CRC", 2000)))
    (folder / ".large.xlsx").unlink()
    files["m10_bad_crc.xlsx"] = "Bad CRC-32"
    (folder / "m11_cp1258.csv").write_bytes(
        "Mã hồ sơ,Trạng thái\nH-1,Đang xử lý\n".encode().replace(b"\xc3\xa3", b"\xe3"))
    files["m11_cp1258.csv"] = "not UTF-8 text"
    (folder / "m12_long_cell.csv").write_text(f"Mã hồ sơ,Trạng thái\nH-1,{'x' * 40_000}\n", encoding="utf-8")
    files["m12_long_cell.csv"] = "DVC_FILE_MAX_CELL_CHARS"
    (folder / "m13_wide.csv").write_text("Mã hồ sơ,Trạng thái\nH-1,Đang xử lý" + "," * 300 + "x\n", encoding="utf-8")
    files["m13_wide.csv"] = "DVC_FILE_MAX_COLUMNS"
    (folder / ".base.xlsx").unlink()
    return {n: (None, r) for n, r in files.items()}


def xfd_padded_xlsx(dst: Path, base_rows: list[list[Any]]) -> Path:
    """A good export whose every row is padded with an empty formatted cell at column XFD, and
    whose ``<dimension>`` claims A1:XFD1048576: openpyxl's row reader would make 16,384 cells of
    every row; the parser reads the filled cells only."""
    import re as _re

    base = make_xlsx(dst.with_suffix(".base.xlsx"), base_rows)
    sheet = part(base, "xl/worksheets/sheet1.xml")
    sheet = _re.sub(rb'<dimension ref="[^"]*"\s*/>', b'<dimension ref="A1:XFD1048576"/>', sheet)
    sheet = _re.sub(rb'<row r="(\d+)"([^>]*)>(.*?)</row>',
                    lambda m: b'<row r="%s"%s>%s<c r="XFD%s" s="0"/></row>' % (m[1], m[2], m[3], m[1]), sheet)
    rezip(base, dst, {"xl/worksheets/sheet1.xml": sheet})
    base.unlink()
    return dst


def test_hostile_xlsx_and_csv_are_refused_with_their_reason(tmp_path: Path) -> None:
    """Every hostile file: a FileFormatError naming the file and the reason, never another error."""
    files = hostile_files(tmp_path)
    assert len(files) == 14
    for name, (_, reason) in files.items():
        with pytest.raises(FileFormatError) as err:
            parse_file(tmp_path / name)
        assert reason in err.value.message and str(err.value).startswith(str(tmp_path / name)), (name, err.value)


def test_openpyxl_reads_through_defusedxml() -> None:
    import openpyxl.xml

    assert openpyxl.xml.DEFUSEDXML is True  # installed: openpyxl's iterparse is defusedxml's


def test_a_row_padded_to_column_xfd_is_read_cheaply(tmp_path: Path) -> None:
    from tasks.source_files import FileLimits, _read_xlsx

    rows = good_rows("XFD", n=200)
    path = xfd_padded_xlsx(tmp_path / "xfd.xlsx", rows)
    assert b'<c r="XFD5" s="0"/>' in part(path, "xl/worksheets/sheet1.xml")
    table = _read_xlsx(path, path.read_bytes(), FileLimits())
    assert max(len(r) for r in table.rows) == len(HOSTILE_HEADER)  # not 16,384
    parsed = parse_file(path)
    assert [r["MaHoSo"] for r in parsed.records] == [r[1] for r in rows[1:]]


@pytest.mark.parametrize("setting,value,content,reason", [
    ("max_bytes", 100, "Mã hồ sơ,Trạng thái\n" + "H-1,Đang xử lý\n" * 20, "DVC_FILE_MAX_BYTES"),
    ("max_rows", 5, "Mã hồ sơ,Trạng thái\n" + "H-1,Đang xử lý\n" * 20, "DVC_FILE_MAX_ROWS"),
    ("max_columns", 3, "Mã hồ sơ,Trạng thái,a,b,c\nH-1,x,1,2,3\n", "DVC_FILE_MAX_COLUMNS"),
    ("max_cell_chars", 5, "Mã hồ sơ,Trạng thái\nH-1,Đang xử lý\n", "DVC_FILE_MAX_CELL_CHARS"),
])
def test_each_limit_is_a_setting(tmp_path: Path, setting: str, value: int, content: str, reason: str) -> None:
    from dataclasses import replace

    from tasks.settings import Settings
    from tasks.source_files import FileLimits

    path = _csv(tmp_path, content)
    assert parse_file(path).records  # fine under the defaults
    with pytest.raises(FileFormatError, match=reason):
        parse_file(path, replace(FileLimits(), **{setting: value}))
    env_name = reason.removeprefix("DVC_").lower()
    assert getattr(FileLimits.from_settings(Settings(**{env_name: value})), setting) == value


def test_unpacked_size_limit_refuses_a_zip_bomb(tmp_path: Path) -> None:
    from tasks.source_files import FileLimits

    base = make_xlsx(tmp_path / "base.xlsx", good_rows("BOMB"))
    bomb = rezip(base, tmp_path / "bomb.xlsx", {"xl/media/zeros.bin": b"\0" * (8 * 2**20)})
    assert bomb.stat().st_size < 100_000
    assert parse_file(bomb).records  # 8 MiB unpacked: under the default limit
    with pytest.raises(FileFormatError, match="DVC_FILE_MAX_UNPACKED_BYTES"):
        parse_file(bomb, FileLimits(max_unpacked_bytes=4 * 2**20))


def test_quote_name_escapes_newlines_and_control_characters() -> None:
    from tasks.source_files import quote_name

    assert quote_name("Sổ theo dõi hồ sơ (1).xlsx") == "Sổ theo dõi hồ sơ (1).xlsx"
    for name in ("a\nERROR forged line.csv", "b\r.csv", "c\x1b[31m.csv", "d\u2028.csv", "e\x00.csv"):
        shown = quote_name(name)
        assert shown.isprintable() and shown != name and "\n" not in shown
    err = FileFormatError(Path("/in/x\ny.csv"), "boom")
    assert "\n" not in str(err) and "x\\ny.csv" in str(err)


def test_symlink_refused_when_links_are_not_followed(tmp_path: Path) -> None:
    from tasks.source_files import read_limited

    target = _csv(tmp_path, "Mã hồ sơ,Trạng thái\nH-1,Đang xử lý\n", name="real.csv")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert read_limited(link) == target.read_bytes()  # a path named on the command line may be a link
    with pytest.raises(FileFormatError, match="symbolic link"):
        read_limited(link, follow_symlinks=False)


def test_a_fifo_never_hangs_the_reader(tmp_path: Path) -> None:
    import os

    from tasks.source_files import read_limited

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(FileFormatError, match="not a regular file"):
        read_limited(fifo)


def test_write_private_new_never_follows_a_link(tmp_path: Path) -> None:
    import os
    import stat

    from tasks.file_guard import write_private_new

    note = tmp_path / "x.csv.error.txt"
    write_private_new(note, "lý do\n")
    assert note.read_text(encoding="utf-8") == "lý do\n" and stat.S_IMODE(note.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_private_new(note, "again")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    planted = tmp_path / "y.csv.error.txt"
    planted.symlink_to(victim)
    with pytest.raises(OSError):
        write_private_new(planted, "overwrite?")
    dangling = tmp_path / "z.csv.error.txt"
    dangling.symlink_to(tmp_path / "created-through-link.txt")
    with pytest.raises(OSError):
        write_private_new(dangling, "create?")
    assert victim.read_text() == "keep" and not (tmp_path / "created-through-link.txt").exists()
    assert os.path.islink(planted)


# --- the child process: memory and time limits --------------------------------------------------


def big_csv(path: Path, rows: int = 60_000, columns: int = 64) -> Path:
    """A legal but memory-hungry dossier list: ~4 million small distinct cells."""
    head = "Mã hồ sơ,Trạng thái," + ",".join(f"c{i}" for i in range(columns - 2))
    body = "\n".join(f"H-{r}," + ",".join(str(10 + (r + c) % 90) for c in range(columns - 1)) for r in range(rows))
    path.write_text(head + "\n" + body + "\n", encoding="utf-8")
    return path


def test_child_parse_matches_in_process_parse(tmp_path: Path) -> None:
    from tasks.file_guard import parse_in_child, read_file
    from tasks.settings import Settings

    s = Settings()
    for name in ("01_dossiers_titles_sections.xlsx", "08_payments_alt_labels_semicolon.csv"):
        child = parse_in_child(FILES / name, read_file(FILES / name, s), s)
        here = parse(name)
        assert (child.entity, child.records, child.skipped, child.warnings) == (
            here.entity, here.records, here.skipped, here.warnings)


def test_child_over_its_memory_limit_fails_the_file_with_the_reason(tmp_path: Path) -> None:
    from tasks.file_guard import parse_in_child, read_file
    from tasks.settings import Settings

    s = Settings(file_parse_memory_mb=256)
    path = big_csv(tmp_path / "big.csv")
    with pytest.raises(FileFormatError, match="DVC_FILE_PARSE_MEMORY_MB"):
        parse_in_child(path, read_file(path, s), s)
    small = FILES / "01_dossiers_titles_sections.xlsx"
    assert parse_in_child(small, read_file(small, s), s).records  # the same limit parses a normal export


def test_child_over_its_time_limit_is_stopped(tmp_path: Path) -> None:
    import time

    from tasks.file_guard import parse_in_child, read_file
    from tasks.settings import Settings

    s = Settings(file_parse_timeout=0.2)
    path = big_csv(tmp_path / "slow.csv", rows=20_000)
    started = time.monotonic()
    with pytest.raises(FileFormatError, match="DVC_FILE_PARSE_TIMEOUT"):
        parse_in_child(path, read_file(path, s), s)
    assert time.monotonic() - started < 30


# --- clerks' real files (issue 16): .xls, HTML saved as .xls, CSV in UTF-16 and Windows-1258 ---
#
# One dossier list as an official's screen shows it (title rows, a two-row header with merged
# cells, section rows, a total row and a signature line under the table), written by the test in
# every format a clerk's office produces. Each must parse to the same records as the .xlsx, and
# those are checked against the rows written. The builders are shared with tests/test_inbox.py.

# (Mã hồ sơ, Chủ hồ sơ, Ngày tiếp nhận, Ngày cập nhật, Trạng thái, Kênh nộp, Số giấy tờ) and the parse
REAL_ROWS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("000.00.15.H08-240115-00012", "Nguyễn Thị Hằng", "15/01/2024 08:05", "18/01/2024 09:00:05",
      "Được tiếp nhận", "Trực tuyến", "079123456789"),
     {"NgayTiepNhan": "20240115080500", "NgayCapNhat": "20240118090005", "TrangThaiHoSo": 2, "KenhThucHien": 2}),
    (("000.00.15.H08-240116-00013", "Trần Văn Đức", "16/01/2024", "16/01/2024 07:45",
      "Đang xử lý", "Trực tiếp", "012345678"),
     {"NgayTiepNhan": "20240116000000", "NgayCapNhat": "20240116074500", "TrangThaiHoSo": 4, "KenhThucHien": 1}),
    (("000.00.15.H08-240117-00020", "Lê Thị Ánh Tuyết", "17/01/2024 14:30", "19/01/2024 10:11:12",
      "Yêu cầu bổ sung giấy tờ", "Bưu chính công ích", ""),
     {"NgayTiepNhan": "20240117143000", "NgayCapNhat": "20240119101112", "TrangThaiHoSo": 5, "KenhThucHien": 3}),
    (("000.31.15.H08-240120-00001", "Phạm Quốc Việt", "22/01/2024 08:00", "25/01/2024",
      "Yêu cầu thực hiện nghĩa vụ tài chính", "Trực tiếp", "036098001234"),
     {"NgayTiepNhan": "20240122080000", "NgayCapNhat": "20240125000000", "TrangThaiHoSo": 6, "KenhThucHien": 1}),
    (("000.31.15.H08-240121-00002", "Võ Thị Mỹ Dung", "23/01/2024 09:15", "23/01/2024 09:15:00",
      "Mới đăng ký", "Trực tuyến", "052187000111"),
     {"NgayTiepNhan": "20240123091500", "NgayCapNhat": "20240123091500", "TrangThaiHoSo": 1, "KenhThucHien": 2}),
    (("000.31.15.H08-240122-00003", "Đặng Hữu Phước", "24/01/2024 16:45", "30/01/2024 17:00",
      "Đang xử lý", "Trực tiếp", "001099012345"),
     {"NgayTiepNhan": "20240124164500", "NgayCapNhat": "20240130170000", "TrangThaiHoSo": 4, "KenhThucHien": 1}),
]
REAL_WIDTH = 8


def real_grid() -> tuple[list[list[Any]], list[tuple[int, int, int, int]], list[dict[str, Any]]]:
    """The list's cells (row by row, None: empty), its merged ranges ``(row, column, rows,
    columns)``, 0-based, and the records it must parse to."""
    full = (REAL_WIDTH,)
    grid: list[list[Any]] = [
        ["UBND HUYỆN TUY PHƯỚC"], ["SỔ THEO DÕI HỒ SƠ"], ["Từ ngày 01/01/2024 đến ngày 31/01/2024"], [],
        ["STT", "Mã hồ sơ", "Chủ hồ sơ", "Ngày", None, "Trạng\nthái", "Kênh nộp", "Số giấy tờ"],
        [None, None, None, "tiếp nhận", "cập nhật"],
    ]
    merges = [(0, 0, 1, *full), (1, 0, 1, *full), (2, 0, 1, *full), (4, 3, 1, 2),
              *((4, c, 2, 1) for c in (0, 1, 2, 5, 6, 7))]
    expected = []
    for i, (cells, parsed) in enumerate(REAL_ROWS):
        if i in (0, 3):
            merges.append((len(grid), 0, 1, REAL_WIDTH))
            grid.append(["I. Cấp huyện" if i == 0 else "II. Cấp xã"])
        ma, chu, tiep_nhan, cap_nhat, trang_thai, kenh, giay_to = cells
        grid.append([i + 1, ma, chu, tiep_nhan, cap_nhat, trang_thai, kenh, giay_to or None])
        expected.append({"MaHoSo": ma, "ChuHoSo": chu, "SoGiayToChuHoSo": giay_to or None, **parsed,
                         "_row_number": len(grid)})
    merges.append((len(grid), 0, 1, 2))
    grid += [["Tổng cộng", None, f"{len(REAL_ROWS)} hồ sơ"], [], [None] * 5 + ["Người lập biểu"]]
    return grid, merges, expected


def write_real_xlsx(path: Path) -> Path:
    from openpyxl import Workbook

    grid, merges, _ = real_grid()
    wb = Workbook()
    ws = wb.active
    ws.title = "Sổ theo dõi"
    for r, row in enumerate(grid, 1):
        for c, value in enumerate(row, 1):
            if value is not None:
                ws.cell(r, c, value)
    for r, c, h, w in merges:
        ws.merge_cells(start_row=r + 1, start_column=c + 1, end_row=r + h, end_column=c + w)
    wb.save(path)
    return path


def real_html(charset: str = "utf-8") -> str:
    """The list as the HTML page a provincial system saves under .xls: Excel's namespaces, a
    declared charset, rowspan/colspan for merged cells, ``&nbsp;`` for empty cells, ``<br>``."""
    import html

    grid, merges, _ = real_grid()
    spans = {(r, c): (h, w) for r, c, h, w in merges}
    covered = {(r + i, c + j) for r, c, h, w in merges for i in range(h) for j in range(w)} - set(spans)
    lines = ['<html xmlns:o="urn:schemas-microsoft-com:office:office" '
             'xmlns:x="urn:schemas-microsoft-com:office:excel" xmlns="http://www.w3.org/TR/REC-html40">',
             f'<head><meta http-equiv="Content-Type" content="text/html; charset={charset}">',
             "<style>td {mso-number-format:'\\@';} br {mso-data-placement:same-cell;}</style></head>",
             '<body><table border="1">']
    for r, row in enumerate(grid):
        cells = []
        for c in range(REAL_WIDTH):
            if (r, c) in covered:
                continue
            value = row[c] if c < len(row) else None
            text = "&nbsp;" if value is None else html.escape(str(value)).replace("\n", "<br>")
            h, w = spans.get((r, c), (1, 1))
            attrs = (f' rowspan="{h}"' if h > 1 else "") + (f' colspan="{w}"' if w > 1 else "")
            tag = "th" if r in (4, 5) else "td"
            cells.append(f"<{tag}{attrs}>{text}</{tag}>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join([*lines, "</table>", "<p>Ghi chú: xuất từ hệ thống một cửa</p></body></html>"])


def real_csv() -> str:
    """The list as Excel saves a sheet with merged cells as CSV: each merged value in its first cell."""
    import csv
    import io

    grid, _, _ = real_grid()
    out = io.StringIO()
    csv.writer(out, delimiter=";").writerows([["" if v is None else v for v in row] for row in grid])
    return out.getvalue()


_TONE_MARKS = "\u0300\u0301\u0303\u0309\u0323"


def encode_cp1258(text: str) -> bytes:
    """``text`` as Windows-1258 writes it: the letters with a circumflex, breve or horn (â ê ô ă ơ
    ư) precomposed, the five tone marks as combining characters after them (Python's cp1258 codec
    maps characters one to one and cannot encode ``ế`` or ``ạ`` as they are)."""
    import unicodedata

    out = bytearray()
    for ch in unicodedata.normalize("NFC", text):
        try:
            out += ch.encode("cp1258")
        except UnicodeEncodeError:
            parts = unicodedata.normalize("NFD", ch)
            base = unicodedata.normalize("NFC", "".join(p for p in parts if p not in _TONE_MARKS))
            out += (base + "".join(p for p in parts if p in _TONE_MARKS)).encode("cp1258")
    return bytes(out)


def soffice() -> str:
    exe = shutil.which("soffice") or shutil.which("libreoffice")
    if exe is None:  # make test installs it (make system-deps): missing is a failure, not a skip
        pytest.fail("LibreOffice is required to make the .xls test files: apt-get install -y libreoffice-calc")
    return exe


def to_xls(sources: list[Path], outdir: Path) -> dict[str, Path]:
    """Real Excel 97-2003 (BIFF8) copies of ``sources`` (by stem), converted by LibreOffice."""
    import subprocess

    outdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [soffice(), f"-env:UserInstallation=file://{outdir / 'lo-profile'}", "--headless", "--convert-to", "xls",
         "--outdir", str(outdir), *map(str, sources)],
        check=True, capture_output=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(outdir)},
    )
    out = {p.stem: outdir / f"{p.stem}.xls" for p in sources}
    for path in out.values():
        assert path.read_bytes()[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", path  # an OLE2 file, not renamed XML
    return out


REAL_TEXT_FILES: dict[str, tuple[str, str, Any]] = {  # name -> (format, encoding, bytes)
    "so_theo_doi.html.xls": ("html", "utf-8", lambda: real_html().encode("utf-8")),
    "so_theo_doi_1258.html.xls": ("html", "cp1258", lambda: encode_cp1258(real_html("windows-1258"))),
    "so_theo_doi_utf8.csv": ("csv", "utf-8", lambda: real_csv().encode("utf-8")),
    "so_theo_doi_bom.csv": ("csv", "utf-8", lambda: real_csv().encode("utf-8-sig")),
    "so_theo_doi_utf16.csv": ("csv", "utf-16", lambda: real_csv().encode("utf-16")),
    "so_theo_doi_1258.csv": ("csv", "cp1258", lambda: encode_cp1258(real_csv())),
}


def write_real_files(folder: Path) -> dict[str, Path]:
    """The list in every format but .xls (which needs LibreOffice): name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"so_theo_doi.xlsx": write_real_xlsx(folder / "so_theo_doi.xlsx")}
    for name, (_, _, content) in REAL_TEXT_FILES.items():
        (folder / name).write_bytes(content())
        paths[name] = folder / name
    return paths


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_real_files(tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="module")
def real_xls(real_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return to_xls([real_files["so_theo_doi.xlsx"]], tmp_path_factory.mktemp("xls"))["so_theo_doi"]


def _same_parse(got: ParsedFile, want: ParsedFile) -> None:
    assert (got.entity, got.records, got.skipped, got.warnings, got.header_row, got.header_rows) == (
        want.entity, want.records, want.skipped, want.warnings, want.header_row, want.header_rows)


def test_the_real_xlsx_parses_to_the_rows_written(real_files: dict[str, Path]) -> None:
    _, _, expected = real_grid()
    p = parse_file(real_files["so_theo_doi.xlsx"])
    assert (p.entity, p.format, p.sheet, p.header_row, p.header_rows) == ("dossiers", "xlsx", "Sổ theo dõi", 5, 2)
    assert p.records == expected
    assert p.skipped == {"section": 2, "total": 1, "blank": 1, "note": 1}
    assert p.warnings == ["row 17: note row skipped: 'Người lập biểu'"]
    assert p.columns["TrangThaiHoSo"] == "Trạng thái" and p.columns["NgayCapNhat"] == "Ngày cập nhật"


def test_a_real_xls_reads_like_the_xlsx(real_files: dict[str, Path], real_xls: Path) -> None:
    """A BIFF8 workbook (LibreOffice's "MS Excel 97" filter), read with python-calamine."""
    p = parse_file(real_xls)
    assert (p.format, p.encoding, p.sheet) == ("xls", None, "Sổ theo dõi")
    _same_parse(p, parse_file(real_files["so_theo_doi.xlsx"]))


@pytest.mark.parametrize("name", sorted(REAL_TEXT_FILES))
def test_html_and_csv_in_every_encoding_read_like_the_xlsx(real_files: dict[str, Path], name: str) -> None:
    fmt, encoding, _ = REAL_TEXT_FILES[name]
    p = parse_file(real_files[name])
    assert (p.format, p.encoding) == (fmt, encoding)
    _same_parse(p, parse_file(real_files["so_theo_doi.xlsx"]))


def test_windows_1258_tone_marks_become_the_letters_utf8_carries(real_files: dict[str, Path]) -> None:
    """cp1258 writes 'ế' as 'ê' + a combining acute: decoded, then NFC, every value equals the
    UTF-8 one, also a value kept as it was because it is no status (the note row's text)."""
    import unicodedata

    data = real_files["so_theo_doi_1258.csv"].read_bytes()
    assert "\u0301".encode("cp1258") in data and unicodedata.is_normalized("NFC", data.decode("cp1258")) is False
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    bad = real_files["so_theo_doi_1258.csv"].with_name("trang_thai_sai.csv")
    bad.write_bytes(encode_cp1258("Mã hồ sơ;Trạng thái\nH-1;Đã tiếp nhận hồ sơ\n"))
    (record,) = parse_file(bad).records
    assert record["TrangThaiHoSo"] == "Đã tiếp nhận hồ sơ" and unicodedata.is_normalized("NFC", record["TrangThaiHoSo"])


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("excel2003.xls", b'<?xml version="1.0"?>\n<?mso-application progid="Excel.Sheet"?>\n<Workbook '
     b'xmlns="urn:schemas-microsoft-com:office:spreadsheet"><Worksheet/></Workbook>', "an Excel 2003 XML spreadsheet"),
    ("data.csv", b'<?xml version="1.0"?><hoSo><ma>H-1</ma></hoSo>', "an XML file, not a spreadsheet"),
    ("word.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 1000, "not a readable Excel 97-2003 (.xls) workbook"),
    ("password.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500 + "EncryptedPackage".encode("utf-16-le"),
     "a password-protected workbook"),
    ("page.xls", "<html><body><p>Không có dữ liệu</p></body></html>".encode(), "an HTML page without a table"),
    ("menu.xls", "<html><table><tr><td>Trang chủ</td><td>Tra cứu</td></tr></table></html>".encode(),
     "no header row found in the first 30 rows of the HTML table(s)"),
    ("koi8.csv", "Mã hồ sơ;Trạng thái\nH-1;Đang xử lý\n".encode().replace(b"\xc3", b"\x81"),
     "not UTF-8 text (byte 1)"),
    ("unicode.csv", b"\xff\xfe" + "Mã hồ sơ".encode("utf-16-le") + b"\x00", "not valid UTF-16 text"),
    ("picture.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a binary file"),
])
def test_a_wrong_or_undetectable_format_is_refused_naming_the_file(
        tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FileFormatError) as err:
        parse_file(path)
    assert str(err.value).startswith(f"{path}: ") and reason in err.value.message, err.value


@pytest.mark.parametrize("name", ["so_theo_doi.xls", "so_theo_doi.html.xls", "so_theo_doi_utf16.csv",
                                  "so_theo_doi_1258.csv"])
@pytest.mark.parametrize(("setting", "value", "reason"), [
    ("max_rows", 12, "DVC_FILE_MAX_ROWS"),
    ("max_columns", 6, "DVC_FILE_MAX_COLUMNS"),
    ("max_cell_chars", 20, "DVC_FILE_MAX_CELL_CHARS"),
    ("max_bytes", 1000, "DVC_FILE_MAX_BYTES"),
])
def test_the_limits_apply_to_every_format(real_files: dict[str, Path], real_xls: Path, name: str, setting: str,
                                         value: int, reason: str) -> None:
    from dataclasses import replace

    from tasks.source_files import FileLimits

    path = real_xls if name.endswith(".xls") and "html" not in name else real_files[name]
    assert parse_file(path).records  # fine under the defaults
    with pytest.raises(FileFormatError, match=reason):
        parse_file(path, replace(FileLimits(), **{setting: value}))


def test_html_is_streamed_spans_are_bounded_and_entities_never_expanded(tmp_path: Path) -> None:
    from tasks.source_files import FileLimits

    bomb = ('<!DOCTYPE html [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            '<html><table><tr><td>Mã hồ sơ</td><td>Trạng thái</td></tr><tr><td>H-&b;</td><td>Đang xử lý</td></tr>'
            "</table></html>")
    path = tmp_path / "bomb.xls"
    path.write_text(bomb, encoding="utf-8")
    assert parse_file(path).records == [{"MaHoSo": "H-&b;", "TrangThaiHoSo": 4, "_row_number": 2}]
    # a colspan of a million cells is one cell wide per column the limit allows, never a million
    wide = ('<html><table><tr><td colspan="1000000">UBND</td></tr><tr><td>Mã hồ sơ</td><td>Trạng thái</td></tr>'
            '<tr><td rowspan="1000000">H-1</td><td colspan="99999999">Đang xử lý</td></tr><tr><td>x</td></tr>'
            "</table></html>")
    path.write_text(wide, encoding="utf-8")
    assert parse_file(path).records[0] == {"MaHoSo": "H-1", "TrangThaiHoSo": 4, "_row_number": 3}
    late = wide.replace("<tr><td>x</td></tr>", "<tr><td>H-2</td><td colspan=\"300\"></td><td>x</td></tr>")
    path.write_text(late, encoding="utf-8")
    with pytest.raises(FileFormatError, match="DVC_FILE_MAX_COLUMNS"):
        parse_file(path, FileLimits(max_columns=256))
    # a 30,000-row page (more than one piece fed to the parser) reads in one pass
    rows = "".join(f"<tr><td>H-{i}</td><td>Đang xử lý</td></tr>" for i in range(30_000))
    page = f"<html><body><table><tr><th>Mã hồ sơ</th><th>Trạng thái</th></tr>{rows}</table></body></html>"
    assert len(page) > 1 << 20
    path.write_text(page, encoding="utf-8")
    assert [r["MaHoSo"] for r in parse_file(path).records] == [f"H-{i}" for i in range(30_000)]
    # a page cut short keeps its last, partial row (its status kept as text for the checks), never drops it
    path.write_text(page[: page.index("<tr><td>H-3</td>") + len("<tr><td>H-3</td><td>Đang")], encoding="utf-8")
    assert parse_file(path).records[-1] == {"MaHoSo": "H-3", "TrangThaiHoSo": "Đang", "_row_number": 5}


def test_child_parses_every_format_under_its_limits(real_files: dict[str, Path], real_xls: Path) -> None:
    """The parser process (RLIMIT_AS 256 MiB) reads .xls, HTML and every CSV encoding like this one."""
    from tasks.file_guard import parse_in_child, read_file
    from tasks.settings import Settings

    s = Settings(file_parse_memory_mb=256)
    for path in (real_xls, real_files["so_theo_doi_1258.html.xls"], real_files["so_theo_doi_1258.csv"],
                 real_files["so_theo_doi_utf16.csv"]):
        child = parse_in_child(path, read_file(path, s), s)
        here = parse_file(path)
        assert (child.entity, child.records, child.warnings, child.format, child.encoding) == (
            here.entity, here.records, here.warnings, here.format, here.encoding), path.name
